//! The demo's prompt-cache traffic (namespace `ops`):
//!
//! - `ops/planner` and `ops/planner-cached`: the same agent trace (four
//!   conversations of ten turns with three tools and an 8 KB system
//!   prompt, no `cache_control` of its own) through two pods: the first
//!   under a RoutingPolicy without `caching`, the second with automatic
//!   Anthropic breakpoints. The first reads nothing from the cache; the
//!   second reads most of its input from it, turn after turn.
//! - `ops/ticket-agent`: an agent that marks its system prompt for caching
//!   itself but starts it with the current time, which changes on every
//!   request (the seed article's failure): every request re-bills the whole
//!   prompt, the sidecars' monitor calls each one a cache bust at the
//!   system prompt's timestamp, and the operator puts `PromptCacheUnstable`
//!   on the policy.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::{
    processes::HttpClient,
    requests::{Item, Tasks, send},
};

/// The model of the `ops` agents.
pub const OPS_MODEL: &str = "claude-sonnet-4-5";
/// Conversations of the planner trace, and turns per conversation.
pub const CONVERSATIONS: usize = 4;
/// Turns per planner conversation.
pub const TURNS: usize = 10;
/// Requests of the ticket agent.
pub const TICKETS: usize = 12;

fn anthropic_headers(output: u32) -> Vec<(&'static str, String)> {
    vec![
        ("x-api-key", "the-app-has-no-real-key".to_string()),
        ("anthropic-version", "2023-06-01".to_string()),
        ("x-fake-output-tokens", output.to_string()),
    ]
}

/// The planner's tools: what an agent framework sends on every turn.
fn tools() -> Value {
    let tool = |name: &str, what: &str| {
        json!({
            "name": name,
            "description": format!(
                "{what}. Use it whenever the plan needs it; paths are relative to the \
                 repository root and must stay inside it. Returns a JSON object with the \
                 result, or an error message the agent should read before retrying."
            ),
            "input_schema": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "A repository-relative path."},
                    "content": {"type": "string", "description": "Text, for tools that write."}
                },
                "required": ["path"]
            }
        })
    };
    json!([
        tool("read_file", "Read a file of the repository"),
        tool(
            "write_file",
            "Replace a file of the repository with new content"
        ),
        tool(
            "run_tests",
            "Run the test suite of the package that holds a path"
        ),
    ])
}

/// An agent's standing instructions (~8 KB).
fn instructions(role: &str) -> String {
    let mut s = format!(
        "You are the {role} of a platform team. Work in small, reviewable steps, explain \
         what you change and why, and never touch production without a ticket.\n"
    );
    for i in 0..70 {
        s.push_str(&format!(
            "Rule {i}: before step {i} of a plan, check the runbook section {i}, record the \
             outcome in the ticket, and ask before anything irreversible.\n"
        ));
    }
    s
}

/// Play the planner trace through one pod: conversations in parallel,
/// turns of a conversation in order (each turn resends the conversation).
pub fn planner(
    tasks: &mut Tasks,
    client: &HttpClient,
    sem: &Arc<Semaphore>,
    items: &[Item],
    port: u16,
    who: &'static str,
) {
    let system = Arc::new(instructions("planning agent"));
    let tools = Arc::new(tools());
    for c in 0..CONVERSATIONS {
        let asks: Vec<String> = (0..TURNS)
            .map(|t| items[(c * TURNS + t) % items.len()].prompt())
            .collect();
        let (client, sem, system, tools) =
            (client.clone(), sem.clone(), system.clone(), tools.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let mut messages: Vec<Value> = Vec::new();
            let mut worst = (200, String::new());
            for (t, ask) in asks.iter().enumerate() {
                messages.push(json!({"role": "user", "content": ask}));
                let body = json!({
                    "model": OPS_MODEL,
                    "max_tokens": 2048,
                    "tools": *tools,
                    "system": *system,
                    "messages": messages,
                })
                .to_string();
                let (status, model) =
                    send(&client, port, "/v1/messages", anthropic_headers(300), body).await?;
                if status != 200 {
                    worst = (status, model.clone());
                } else if worst.0 == 200 {
                    worst.1 = model;
                }
                messages.push(json!({
                    "role": "assistant",
                    "content": format!(
                        "Step {t} done: I read the files the request names, made the smallest \
                         change that does it, and ran the tests of the package; they pass. \
                         Next I will check the runbook before the following step."
                    ),
                }));
            }
            anyhow::Ok((who, false, worst.0, worst.1))
        }));
    }
}

/// Play the ticket agent: its own breakpoint on a system prompt that
/// starts with the current time (a simulated clock, 37 s per ticket).
pub fn ticket_agent(
    tasks: &mut Tasks,
    client: &HttpClient,
    sem: &Arc<Semaphore>,
    items: &[Item],
    port: u16,
) {
    let rules = instructions("ticket triage agent");
    let tickets: Vec<String> = (0..TICKETS)
        .map(|i| items[i * 7 % items.len()].prompt())
        .collect();
    let (client, sem) = (client.clone(), sem.clone());
    tasks.push(tokio::spawn(async move {
        let _permit = sem.acquire().await?;
        let mut worst = (200, String::new());
        for (i, ticket) in tickets.iter().enumerate() {
            let secs = 9 * 3600 + i * 37;
            let now = format!(
                "2026-12-06T{:02}:{:02}:{:02}Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
            let body = json!({
                "model": OPS_MODEL,
                "max_tokens": 1024,
                "system": [{
                    "type": "text",
                    "text": format!("Current time: {now}\n{rules}"),
                    "cache_control": {"type": "ephemeral"},
                }],
                "messages": [{"role": "user", "content": ticket}],
            })
            .to_string();
            let (status, model) =
                send(&client, port, "/v1/messages", anthropic_headers(200), body).await?;
            if status != 200 {
                worst = (status, model);
            } else if worst.0 == 200 {
                worst.1 = model;
            }
        }
        anyhow::Ok(("tickets", false, worst.0, worst.1))
    }));
}
