//! `tokenwarden-demo`: the main job on one machine, no cluster, no real provider.
//!
//! 1. Starts the fake provider (OpenAI + Anthropic APIs) on 127.0.0.1.
//! 2. Starts the real `tokenwarden-operator` in local mode: it watches a
//!    directory of RoutingPolicy/TokenBudget YAML (the same objects a
//!    cluster uses) for three teams, and keeps the cluster-wide ledger.
//! 3. Starts one real `tokenwarden-sidecar` per simulated pod (four pods of
//!    three workloads, each with its own labels), connected to the operator
//!    over gRPC: each gets its config, budget leases and reports usage.
//! 4. Plays a mixed workload through the sidecars:
//!    - `agents/coding-agent`: a coding agent that always asks for the
//!      flagship: 229 real public coding requests
//!      (`core/data/routing-eval/dev.jsonl`: 137 trivial exercises and edits,
//!      92 hard design/debugging tasks) behind a cached 6 KB system prompt;
//!    - `search/search-agent`: asks for gpt-4o; a dollar budget downgrades
//!      it to gpt-4o-mini at 30%;
//!    - `research/summarizer` (two pods): a token budget shared by both pods
//!      is a hard cap: requests past it are refused with a 429.
//! 5. Prints the operator's ledger per namespace, workload and model, the
//!    budgets, and the coding agent's bill next to "everything on the
//!    flagship".
//!
//! Run: `cargo build --release -p tokenwarden-operator -p tokenwarden-sidecar -p tokenwarden-tests && target/release/tokenwarden-demo`

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use tokenwarden_core::{catalog::Catalog, money::Usd, tokens::TokenCounts};
use tokenwarden_tests::fake_provider::{FakeConfig, FakeProvider};

const DEV_SET: &str = include_str!("../../../core/data/routing-eval/dev.jsonl");
const FLAGSHIP: &str = "claude-opus-4-1";
const SECRET: &str = "demo-shared-secret-not-for-production";

#[derive(Deserialize)]
struct Item {
    label: String,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    content: String,
}

struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenwarden-demo: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenwarden-demo: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn binary(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tokenwarden-operator \
             -p tokenwarden-sidecar -p tokenwarden-tests) or set {env}",
            p.display()
        );
    }
    Ok(p)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The platform team's objects: one file per team, as they would be applied
/// with kubectl.
fn objects(base_url: &str) -> [(&'static str, String); 3] {
    [
        (
            "agents.yaml",
            format!(
                r#"# Cheap by default, a strong model for hard work, the flagship only when a
# request escalates (upstream error, or the same prompt retried).
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: coding-agent, namespace: agents}}
spec:
  workloadSelector: {{matchLabels: {{app: coding-agent}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
  tiers:
    - {{name: cheap, provider: anthropic, model: claude-haiku-4-5}}
    - {{name: standard, provider: anthropic, model: claude-sonnet-4-5}}
    - {{name: frontier, provider: anthropic, model: {FLAGSHIP}}}
  routes:
    - {{name: hard, match: {{apis: [Messages], complexityClass: Hard}}, target: {{tier: standard}}}}
    - {{name: easy, match: {{apis: [Messages]}}, target: {{tier: cheap}}}}
  escalation:
    onUpstreamError: true
    repeatedPrompt: {{count: 2, window: 10m}}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: agents-daily, namespace: agents}}
spec:
  period: Daily
  limit: {{usd: "50.00"}}
  thresholds:
    - {{percent: 50, action: Alert}}
    - {{percent: 80, action: Downgrade, downgradeTo: {{tier: cheap}}}}
"#
            ),
        ),
        (
            "search.yaml",
            format!(
                r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: search-agent, namespace: search}}
spec:
  workloadSelector: {{matchLabels: {{app: search-agent}}}}
  providers:
    - {{name: openai, api: openai, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
  tiers:
    - {{name: mini, provider: openai, model: gpt-4o-mini}}
    - {{name: full, provider: openai, model: gpt-4o}}
  routes:
    - {{name: hard, match: {{apis: [ChatCompletions], complexityClass: Hard}}, target: {{tier: full}}}}
    - {{name: easy, match: {{apis: [ChatCompletions]}}, target: {{tier: mini}}}}
---
# A small hourly dollar budget: from 30% every pod of the team is moved to
# the cheap tier, cluster-wide.
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: search-hourly, namespace: search}}
spec:
  period: Hourly
  limit: {{usd: "0.50"}}
  thresholds:
    - {{percent: 30, action: Downgrade, downgradeTo: {{tier: mini}}}}
"#
            ),
        ),
        (
            "research.yaml",
            format!(
                r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: summarizer, namespace: research}}
spec:
  workloadSelector: {{matchLabels: {{app: summarizer}}}}
  providers:
    - {{name: openai, api: openai, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
---
# A token cap shared by every summarizer pod: leases make it hold across pods.
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {{name: summarizer-tokens, namespace: research}}
spec:
  workloadSelector: {{matchLabels: {{app: summarizer}}}}
  period: Monthly
  limit: {{tokens: 150000}}
"#
            ),
        ),
    ]
}

struct Pod {
    name: &'static str,
    port: u16,
    admin: u16,
}

async fn get(client: &HttpClient, url: String) -> anyhow::Result<(u16, Bytes)> {
    let req = http::Request::get(url).body(Full::new(Bytes::new()))?;
    let resp = client.request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

async fn wait_ready(client: &HttpClient, admin: u16, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = get(client, format!("http://127.0.0.1:{admin}/readyz")).await {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("{what} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Guard> {
    let child = cmd
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    Ok(Guard(Some(child)))
}

/// Send `body` to a pod's sidecar; returns (status, served model).
async fn send(
    client: &HttpClient,
    port: u16,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let mut req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let model = resp
        .headers()
        .get("x-tokenwarden-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != 200 && std::env::var_os("DEMO_DEBUG").is_some() {
        eprintln!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((status, model))
}

fn prompt_of(item: &Item) -> String {
    item.messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n\n")
}

async fn run() -> anyhow::Result<()> {
    let fake = FakeProvider::start(FakeConfig {
        log: false,
        ..FakeConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let root: &Path = dir.path();
    std::fs::create_dir_all(root.join("secrets/llm-keys"))?;
    std::fs::write(root.join("secrets/llm-keys/anthropic"), "sk-fake-anthropic")?;
    std::fs::write(root.join("secrets/llm-keys/openai"), "sk-fake-openai")?;
    std::fs::write(root.join("shared-secret"), SECRET)?;
    std::fs::create_dir_all(root.join("objects"))?;
    for (file, text) in objects(&fake.base_url()) {
        std::fs::write(root.join("objects").join(file), text)?;
    }
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());

    let started = Instant::now();
    let (grpc, op_admin) = (free_port()?, free_port()?);
    let _operator = spawn(
        Command::new(binary("tokenwarden-operator", "TOKENWARDEN_OPERATOR_BIN")?)
            .arg("--local-dir")
            .arg(root.join("objects"))
            .arg("--state-dir")
            .arg(root.join("operator-state"))
            .arg("--shared-secret-file")
            .arg(root.join("shared-secret"))
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--admin-listen", &format!("127.0.0.1:{op_admin}")]),
        "tokenwarden-operator",
    )?;
    wait_ready(&client, op_admin, "the operator").await?;

    let pods = [
        ("agents", "coding-agent-7d9f8-x2x4p", "coding-agent"),
        ("search", "search-agent-5c4b9-k8s7q", "search-agent"),
        ("research", "summarizer-66f7c-a1b2c", "summarizer"),
        ("research", "summarizer-66f7c-d3e4f", "summarizer"),
    ];
    let sidecar = binary("tokenwarden-sidecar", "TOKENWARDEN_SIDECAR_BIN")?;
    let mut guards = Vec::new();
    let mut running = Vec::new();
    for (namespace, name, app) in pods {
        let (port, admin) = (free_port()?, free_port()?);
        guards.push(spawn(
            Command::new(&sidecar)
                .args(["--control-plane", &format!("http://127.0.0.1:{grpc}")])
                .arg("--credential-file")
                .arg(root.join("shared-secret"))
                .args(["--namespace", namespace, "--pod-name", name])
                .args(["--pod-uid", &format!("uid-{name}")])
                .args(["--labels", &format!("app={app},pod-template-hash=demo")])
                .arg("--secrets-dir")
                .arg(root.join("secrets"))
                .arg("--state-dir")
                .arg(root.join("pods").join(name))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--admin-listen", &format!("127.0.0.1:{admin}")]),
            name,
        )?);
        running.push(Pod { name, port, admin });
    }
    for p in &running {
        wait_ready(&client, p.admin, p.name).await?;
    }
    let ready_ms = started.elapsed().as_millis();

    let items: Vec<Item> = DEV_SET
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let hard_total = items.iter().filter(|i| i.label == "hard").count();
    let easy_total = items.len() - hard_total;
    println!(
        "tokenwarden demo: one operator (local mode), {} sidecars, a simulated provider",
        running.len()
    );
    println!("  control plane and sidecars ready in {ready_ms} ms");
    println!(
        "  agents/coding-agent: {} requests for {FLAGSHIP} ({easy_total} trivial edits/exercises, {hard_total} hard design/debugging tasks)",
        items.len()
    );

    let sem = Arc::new(tokio::sync::Semaphore::new(24));
    let system = Arc::new(agent_system_prompt());
    let mut tasks = Vec::new();
    // The coding agent.
    let agent = running[0].port;
    for (i, item) in items.iter().enumerate() {
        let hard = item.label == "hard";
        let body = serde_json::json!({
            "model": FLAGSHIP,
            "max_tokens": 8192,
            "system": *system,
            "messages": [{"role": "user", "content": prompt_of(item)}],
        })
        .to_string();
        // Typical answers: a short patch for an exercise, a long reasoned one for a design task.
        let output = if hard { 1800 } else { 350 };
        // The system prompt is cached after the first call (prompt caching).
        let cached = if i == 0 { 0 } else { system.len() / 4 };
        let written = if i == 0 { system.len() / 4 } else { 0 };
        let (client, sem) = (client.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let headers = vec![
                ("x-api-key", "the-app-has-no-real-key".to_string()),
                ("anthropic-version", "2023-06-01".to_string()),
                ("x-fake-output-tokens", output.to_string()),
                ("x-fake-cached-tokens", cached.to_string()),
                ("x-fake-cache-write-tokens", written.to_string()),
            ];
            let (status, model) = send(&client, agent, "/v1/messages", headers, body).await?;
            anyhow::Ok(("coding", hard, status, model))
        }));
    }
    // The search agent: the same kinds of question, asked of gpt-4o.
    let search = running[1].port;
    for item in items.iter().step_by(2) {
        let hard = item.label == "hard";
        let body = serde_json::json!({
            "model": "gpt-4o",
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": prompt_of(item)}],
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
                send(&client, search, "/v1/chat/completions", headers, body).await?;
            anyhow::Ok(("search", hard, status, model))
        }));
    }
    // The summarizer: two pods sharing one token budget.
    for i in 0..200usize {
        let port = running[2 + i % 2].port;
        let text = prompt_of(&items[i % items.len()]).repeat(3);
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
    let (mut hard_strong, mut easy_cheap, mut failures) = (0, 0, 0);
    let (mut search_full, mut search_mini, mut search_refused) = (0, 0, 0);
    let (mut summarized, mut refused) = (0, 0);
    for t in tasks {
        let (who, hard, status, model) = t.await??;
        match (who, status) {
            ("coding", 200) => {
                if hard && model != "claude-haiku-4-5" {
                    hard_strong += 1;
                }
                if !hard && model == "claude-haiku-4-5" {
                    easy_cheap += 1;
                }
            }
            ("search", 200) if model == "gpt-4o" => search_full += 1,
            ("search", 200) => search_mini += 1,
            ("search", 429) => search_refused += 1,
            ("summarizer", 200) => summarized += 1,
            ("summarizer", 429) => refused += 1,
            _ => failures += 1,
        }
    }

    // Every record reaches the operator's ledger (acked once durable).
    let billed: u64 = fake.usage_totals().values().map(|u| u.requests).sum();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ledger = loop {
        let (_, body) = get(&client, format!("http://127.0.0.1:{op_admin}/ledger")).await?;
        let ledger: serde_json::Value = serde_json::from_slice(&body)?;
        let counted: u64 = ledger["ledger"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r["requests"].as_u64()).sum())
            .unwrap_or(0);
        let budgets_done = ledger["budgets"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["requests"].as_u64().is_some()));
        if counted == billed && budgets_done {
            break ledger;
        }
        if Instant::now() > deadline {
            bail!("the operator's ledger counted {counted} of {billed} billed requests");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    print_ledger(&ledger)?;
    println!();
    println!(
        "routing: {hard_strong}/{hard_total} hard coding tasks went to a strong model; {easy_cheap}/{easy_total} easy ones went to claude-haiku-4-5"
    );
    println!(
        "search-agent: {search_full} answered by gpt-4o, {search_mini} by gpt-4o-mini (easy, or after the 30% downgrade), {search_refused} refused"
    );
    println!(
        "summarizer (2 pods, one token budget): {summarized} served, {refused} refused with 429 once the cap was reached"
    );
    println!("{failures} failed; the ledger equals what the provider billed ({billed} requests)");
    Ok(())
}

fn print_ledger(ledger: &serde_json::Value) -> anyhow::Result<()> {
    let flagship = Catalog::builtin()
        .lookup(Some("anthropic"), FLAGSHIP)
        .context("the flagship has a price")?
        .prices
        .clone();
    let rows = ledger["ledger"].as_array().context("ledger rows")?;
    println!();
    println!("cluster ledger (operator), by namespace, workload and model that served:");
    println!(
        "{:<10} {:<14} {:<19} {:>8} {:>9} {:>9} {:>10} {:>11} {:>10}",
        "namespace",
        "workload",
        "model",
        "requests",
        "input",
        "output",
        "cache read",
        "cache write",
        "cost"
    );
    let mut agent_total = Usd::ZERO;
    let mut baseline = Usd::ZERO;
    let mut total = Usd::ZERO;
    for r in rows {
        let usage = TokenCounts {
            input_tokens: r["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: r["output_tokens"].as_u64().unwrap_or(0),
            cache_read_tokens: r["cache_read_tokens"].as_u64().unwrap_or(0),
            cache_write_tokens: r["cache_write_tokens"].as_u64().unwrap_or(0),
        };
        let cost: Usd = r["cost_usd"].as_str().unwrap_or("0").parse()?;
        total += cost;
        if r["namespace"] == "agents" {
            agent_total += cost;
            // The same tokens, billed at the flagship's prices.
            baseline += flagship.cost(&usage);
        }
        println!(
            "{:<10} {:<14} {:<19} {:>8} {:>9} {:>9} {:>10} {:>11} {:>10}",
            r["namespace"].as_str().unwrap_or("?"),
            r["workload"].as_str().unwrap_or("?"),
            r["model"].as_str().unwrap_or("?"),
            r["requests"].as_u64().unwrap_or(0),
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            dollars(cost)
        );
    }
    println!("{:<56} {:>55}", "total", dollars(total));
    println!();
    println!("budgets (TokenBudget status, as `kubectl get tokenbudgets -A` shows it):");
    println!(
        "{:<10} {:<18} {:>8} {:>10} {:>10} {:>8} state",
        "namespace", "name", "period", "spent", "limit", "used"
    );
    for b in ledger["budgets"].as_array().context("budgets")? {
        let usd = |k: &str| -> String {
            b[k].as_str()
                .and_then(|v| v.parse::<Usd>().ok())
                .map_or_else(|| "?".into(), dollars)
        };
        let limit = if b["limit_usd"].is_string() {
            usd("limit_usd")
        } else {
            format!("{} tok", b["limit_tokens"].as_u64().unwrap_or(0))
        };
        let spent = if b["limit_usd"].is_string() {
            usd("spent_usd")
        } else {
            format!("{} tok", b["tokens"].as_u64().unwrap_or(0))
        };
        println!(
            "{:<10} {:<18} {:>8} {:>10} {:>10} {:>7}% {}",
            b["namespace"].as_str().unwrap_or("?"),
            b["name"].as_str().unwrap_or("?"),
            b["period"].as_str().unwrap_or("?"),
            spent,
            limit,
            b["percent_spent"].as_u64().unwrap_or(0),
            b["state"].as_str().unwrap_or("?")
        );
    }
    println!();
    println!(
        "agents/coding-agent: {} routed, {} if everything had gone to {FLAGSHIP}",
        dollars(agent_total),
        dollars(baseline)
    );
    if baseline.picos() > 0 {
        let saved = 100.0 - agent_total.picos() as f64 * 100.0 / baseline.picos() as f64;
        println!("saved {saved:.1}% against sending everything to the flagship");
    }
    Ok(())
}

fn dollars(u: Usd) -> String {
    let cents = u.picos() / 10_000_000_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// A realistic agent system prompt (~6 KB): tool rules, repository
/// conventions, output format. Identical on every call, so it is cached.
fn agent_system_prompt() -> String {
    let mut s = String::from(
        "You are a coding agent working in a large monorepo. Follow the repository conventions: \
         run the formatter, keep changes minimal, write tests for every behaviour change, never \
         commit secrets, explain the root cause before proposing a fix.\n",
    );
    for i in 0..60 {
        s.push_str(&format!(
            "Rule {i}: when editing module {i}, read its README first, keep public APIs stable, and update the changelog.\n"
        ));
    }
    s
}
