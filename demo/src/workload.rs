//! The demo's traffic: a coding agent that always asks for the flagship
//! (real public coding requests behind a cached system prompt), a search
//! agent under a dollar budget that downgrades it, and two summarizer pods
//! under one token cap, and (from [`crate::caching`]) the prompt-cache
//! agents; and the tally of what happened to each request.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::{
    caching, faq,
    processes::{HttpClient, Pod},
    requests::{Item, Tasks, send},
};

/// The model the coding agent asks for.
pub const FLAGSHIP: &str = "claude-opus-4-1";

/// What happened to the requests.
#[derive(Default)]
pub struct Tally {
    pub hard_strong: usize,
    pub easy_cheap: usize,
    pub failures: usize,
    pub search_full: usize,
    pub search_mini: usize,
    pub search_refused: usize,
    pub summarized: usize,
    pub refused: usize,
    /// Planner conversations answered (every turn), without and with
    /// automatic breakpoints, and ticket-agent runs.
    pub planner: usize,
    pub planner_cached: usize,
    pub tickets: usize,
    /// What the sidecar said about the FAQ bot's questions.
    pub faq: faq::FaqSeen,
}

/// Play the three workloads through the pods' sidecars (24 requests at a
/// time) and count the outcomes.
pub async fn play(client: &HttpClient, items: &[Item], pods: &[Pod]) -> anyhow::Result<Tally> {
    let sem = Arc::new(Semaphore::new(24));
    let mut tasks = Tasks::new();
    coding_agent(&mut tasks, client, &sem, items, pods[0].port);
    search_agent(&mut tasks, client, &sem, items, pods[1].port);
    summarizers(
        &mut tasks,
        client,
        &sem,
        items,
        [pods[2].port, pods[3].port],
    );
    caching::planner(&mut tasks, client, &sem, items, pods[4].port, "planner");
    caching::planner(
        &mut tasks,
        client,
        &sem,
        items,
        pods[5].port,
        "planner-cached",
    );
    caching::ticket_agent(&mut tasks, client, &sem, items, pods[6].port);
    let faq = tokio::spawn(faq::faq_bot(client.clone(), pods[7].port));
    let mut t = tally(tasks).await?;
    t.faq = faq.await??;
    t.failures += t.faq.failed();
    Ok(t)
}

/// The coding agent: every dev-set item, asked of the flagship.
fn coding_agent(
    tasks: &mut Tasks,
    client: &HttpClient,
    sem: &Arc<Semaphore>,
    items: &[Item],
    port: u16,
) {
    let system = Arc::new(agent_system_prompt());
    for item in items {
        let hard = item.hard();
        // The agent marks its system prompt for caching, as coding agents do.
        let body = serde_json::json!({
            "model": FLAGSHIP,
            "max_tokens": 8192,
            "system": [{"type": "text", "text": *system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": item.prompt()}],
        })
        .to_string();
        // Typical answers: a short patch for an exercise, a long reasoned one for a design task.
        let output = if hard { 1800 } else { 350 };
        let (client, sem) = (client.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let headers = vec![
                ("x-api-key", "the-app-has-no-real-key".to_string()),
                ("anthropic-version", "2023-06-01".to_string()),
                ("x-fake-output-tokens", output.to_string()),
            ];
            let (status, model) = send(&client, port, "/v1/messages", headers, body).await?;
            anyhow::Ok(("coding", hard, status, model))
        }));
    }
}

/// The coding agent's requests alone, through the sidecar on `port` (24 at
/// a time, like [`play`]): how many failed.
pub async fn coding_agent_alone(
    client: &HttpClient,
    items: &[Item],
    port: u16,
) -> anyhow::Result<usize> {
    let sem = Arc::new(Semaphore::new(24));
    let mut tasks = Tasks::new();
    coding_agent(&mut tasks, client, &sem, items, port);
    Ok(tally(tasks).await?.failures)
}

/// The search agent: the same kinds of question, asked of gpt-4o.
fn search_agent(
    tasks: &mut Tasks,
    client: &HttpClient,
    sem: &Arc<Semaphore>,
    items: &[Item],
    port: u16,
) {
    for item in items.iter().step_by(2) {
        let hard = item.hard();
        let body = serde_json::json!({
            "model": "gpt-4o",
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": item.prompt()}],
        })
        .to_string();
        let output = if hard { 900 } else { 200 };
        let (client, sem) = (client.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let headers = vec![
                (
                    "authorization",
                    "Bearer the-app-has-no-real-key".to_string(),
                ),
                ("x-fake-output-tokens", output.to_string()),
            ];
            let (status, model) =
                send(&client, port, "/v1/chat/completions", headers, body).await?;
            anyhow::Ok(("search", hard, status, model))
        }));
    }
}

/// The summarizer: two pods sharing one token budget.
fn summarizers(
    tasks: &mut Tasks,
    client: &HttpClient,
    sem: &Arc<Semaphore>,
    items: &[Item],
    ports: [u16; 2],
) {
    for i in 0..200usize {
        let port = ports[i % 2];
        let text = items[i % items.len()].prompt().repeat(3);
        let body = serde_json::json!({
            "model": "gpt-4.1-mini",
            "max_tokens": 400,
            "messages": [
                {"role": "system", "content": "Summarize the text in five bullet points."},
                {"role": "user", "content": text},
            ],
        })
        .to_string();
        let (client, sem) = (client.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let headers = vec![
                (
                    "authorization",
                    "Bearer the-app-has-no-real-key".to_string(),
                ),
                ("x-fake-output-tokens", "300".to_string()),
            ];
            let (status, model) =
                send(&client, port, "/v1/chat/completions", headers, body).await?;
            anyhow::Ok(("summarizer", false, status, model))
        }));
    }
}

async fn tally(tasks: Tasks) -> anyhow::Result<Tally> {
    let mut t = Tally::default();
    for task in tasks {
        let (who, hard, status, model) = task.await??;
        match (who, status) {
            ("coding", 200) => {
                if hard && model != "claude-haiku-4-5" {
                    t.hard_strong += 1;
                }
                if !hard && model == "claude-haiku-4-5" {
                    t.easy_cheap += 1;
                }
            }
            ("search", 200) if model == "gpt-4o" => t.search_full += 1,
            ("search", 200) => t.search_mini += 1,
            ("search", 429) => t.search_refused += 1,
            ("summarizer", 200) => t.summarized += 1,
            ("planner", 200) => t.planner += 1,
            ("planner-cached", 200) => t.planner_cached += 1,
            ("tickets", 200) => t.tickets += 1,
            ("summarizer", 429) => t.refused += 1,
            _ => t.failures += 1,
        }
    }
    Ok(t)
}

/// A realistic agent system prompt (~20 KB, above every model's minimum
/// cacheable length): tool rules, repository conventions, output format.
/// Identical on every call, so the provider caches it.
fn agent_system_prompt() -> String {
    let mut s = String::from(
        "You are a coding agent working in a large monorepo. Follow the repository conventions: \
         run the formatter, keep changes minimal, write tests for every behaviour change, never \
         commit secrets, explain the root cause before proposing a fix.\n",
    );
    for i in 0..190 {
        s.push_str(&format!(
            "Rule {i}: when editing module {i}, read its README first, keep public APIs stable, and update the changelog.\n"
        ));
    }
    s
}
