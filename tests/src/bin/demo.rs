//! `tokenwarden-demo`: the main job on one machine, no cluster, no real provider.
//!
//! 1. Starts the fake provider (OpenAI + Anthropic APIs) on 127.0.0.1.
//! 2. Starts the real `tokenwarden-sidecar` in standalone mode in front of it,
//!    with a cheap-by-default RoutingPolicy and a daily TokenBudget.
//! 3. Plays a coding agent that always asks for the flagship model: 229 real
//!    public coding requests (`core/data/routing-eval/dev.jsonl`: 137 trivial
//!    exercises and edits, 92 hard design/debugging tasks), each behind the
//!    same 6 KB agent system prompt (cached after the first call), with
//!    output lengths typical of each kind.
//! 4. Prints the sidecar's per-model ledger next to the bill the same tokens
//!    would have cost with everything on the flagship.
//!
//! Run: `cargo build --release -p tokenwarden-sidecar -p tokenwarden-tests && target/release/tokenwarden-demo`

use std::{
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
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
use tokenwarden_core::{catalog::Catalog, catalog::Usage, money::Usd};
use tokenwarden_tests::fake_provider::{FakeConfig, FakeProvider};

const DEV_SET: &str = include_str!("../../../core/data/routing-eval/dev.jsonl");
const FLAGSHIP: &str = "claude-opus-4-1";

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

fn sidecar_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("TOKENWARDEN_SIDECAR_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name("tokenwarden-sidecar");
    if !p.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p tokenwarden-sidecar -p tokenwarden-tests) \
             or set TOKENWARDEN_SIDECAR_BIN",
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

fn policy(base_url: &str) -> String {
    format!(
        r#"# The demo's platform config: cheap by default, a strong model for hard work,
# the flagship only when a request escalates (upstream error, or the same prompt retried).
apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: coding-agent, namespace: demo}}
spec:
  workloadSelector: {{matchLabels: {{app: coding-agent}}}}
  providers:
    - {{name: anthropic, api: anthropic, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
    - {{name: openai, api: openai, baseUrl: "{base_url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
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
metadata: {{name: agents-daily, namespace: demo}}
spec:
  period: Daily
  limit: {{usd: "50.00"}}
  thresholds:
    - {{percent: 50, action: Alert}}
    - {{percent: 80, action: Downgrade, downgradeTo: {{tier: cheap}}}}
"#
    )
}

async fn run() -> anyhow::Result<()> {
    let fake = FakeProvider::start(FakeConfig {
        log: false,
        ..FakeConfig::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("secrets/llm-keys"))?;
    std::fs::write(
        dir.path().join("secrets/llm-keys/anthropic"),
        "sk-fake-anthropic",
    )?;
    std::fs::write(dir.path().join("secrets/llm-keys/openai"), "sk-fake-openai")?;
    std::fs::write(dir.path().join("policy.yaml"), policy(&fake.base_url()))?;
    let (app, admin) = (free_port()?, free_port()?);
    let started = Instant::now();
    let child = Command::new(sidecar_binary()?)
        .arg("--policy-file")
        .arg(dir.path().join("policy.yaml"))
        .arg("--secrets-dir")
        .arg(dir.path().join("secrets"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--namespace", "demo", "--labels", "app=coding-agent"])
        .args([
            "--listen",
            &format!("127.0.0.1:{app}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting tokenwarden-sidecar")?;
    let _guard = Guard(Some(child));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let get = |path: String| {
        let client = client.clone();
        async move {
            let req = http::Request::get(path).body(Full::new(Bytes::new()))?;
            let resp = client.request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        }
    };
    loop {
        if let Ok((s, _)) = get(format!("http://127.0.0.1:{admin}/readyz")).await
            && s == 200
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the sidecar did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_ms = started.elapsed().as_millis();

    let items: Vec<Item> = DEV_SET
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let system = agent_system_prompt();
    println!("tokenwarden demo: a coding agent that always asks for {FLAGSHIP}");
    println!(
        "  {} requests ({} trivial edits/exercises, {} hard design/debugging tasks) through the sidecar (ready in {ready_ms} ms)",
        items.len(),
        items.iter().filter(|i| i.label == "easy").count(),
        items.iter().filter(|i| i.label == "hard").count()
    );
    let mut hard_strong = 0;
    let mut easy_cheap = 0;
    let mut tasks = Vec::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    for (i, item) in items.iter().enumerate() {
        let prompt = item
            .messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let hard = item.label == "hard";
        let body = serde_json::json!({
            "model": FLAGSHIP,
            "max_tokens": 8192,
            "system": system,
            "messages": [{"role": "user", "content": prompt}],
        })
        .to_string();
        // Typical answers: a short patch for an exercise, a long reasoned one for a design task.
        let output = if hard { 1800 } else { 350 };
        // The system prompt is cached after the first call (prompt caching).
        let cached = if i == 0 { 0 } else { system.len() / 4 };
        let written = if i == 0 { system.len() / 4 } else { 0 };
        let client = client.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await?;
            let req = http::Request::post(format!("http://127.0.0.1:{app}/v1/messages"))
                .header("content-type", "application/json")
                .header("x-api-key", "the-app-has-no-real-key")
                .header("anthropic-version", "2023-06-01")
                .header("x-fake-output-tokens", output.to_string())
                .header("x-fake-cached-tokens", cached.to_string())
                .header("x-fake-cache-write-tokens", written.to_string())
                .body(Full::new(Bytes::from(body)))?;
            let resp = client.request(req).await?;
            let status = resp.status();
            let model = resp
                .headers()
                .get("x-tokenwarden-model")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let _ = resp.into_body().collect().await?;
            anyhow::Ok((hard, status.as_u16(), model))
        }));
    }
    let mut failures = 0;
    for t in tasks {
        let (hard, status, model) = t.await??;
        if status != 200 {
            failures += 1;
        }
        if hard && model != "claude-haiku-4-5" {
            hard_strong += 1;
        }
        if !hard && model == "claude-haiku-4-5" {
            easy_cheap += 1;
        }
    }

    let (_, body) = get(format!("http://127.0.0.1:{admin}/ledger")).await?;
    let ledger: serde_json::Value = serde_json::from_slice(&body)?;
    print_ledger(&ledger)?;
    let hard_total = items.iter().filter(|i| i.label == "hard").count();
    let easy_total = items.len() - hard_total;
    println!();
    println!(
        "routing: {hard_strong}/{hard_total} hard tasks went to a strong model; {easy_cheap}/{easy_total} easy ones went to claude-haiku-4-5; {failures} failed"
    );
    if let Some(b) = ledger["budgets"].as_array().and_then(|b| b.first()) {
        println!(
            "budget demo/agents-daily: spent ${} of ${} today, state {}",
            b["spent_usd"].as_str().unwrap_or("?"),
            b["limit_usd"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?")
        );
    }
    println!(
        "ledger kept in {} (tokenwarden-sidecar report --state-dir DIR prints it)",
        dir.path().join("state").display()
    );
    Ok(())
}

fn print_ledger(ledger: &serde_json::Value) -> anyhow::Result<()> {
    let flagship = Catalog::builtin()
        .lookup(Some("anthropic"), FLAGSHIP)
        .context("the flagship has a price")?
        .prices
        .clone();
    let rows = ledger["models"].as_array().context("ledger models")?;
    let mut total = Usd::ZERO;
    let mut baseline = Usd::ZERO;
    println!();
    println!(
        "{:<20} {:>9} {:>12} {:>10} {:>11} {:>11} {:>12} {:>7}",
        "served by", "requests", "input", "output", "cache read", "cache write", "cost", "share"
    );
    let mut parsed = Vec::new();
    for r in rows {
        let usage = Usage {
            input_tokens: r["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: r["output_tokens"].as_u64().unwrap_or(0),
            cache_read_tokens: r["cache_read_tokens"].as_u64().unwrap_or(0),
            cache_write_tokens: r["cache_write_tokens"].as_u64().unwrap_or(0),
        };
        let cost: Usd = r["cost_usd"].as_str().unwrap_or("0").parse()?;
        total += cost;
        // The same tokens, billed at the flagship's prices.
        baseline += flagship.cost(&usage);
        parsed.push((
            r["model"].as_str().unwrap_or("?").to_string(),
            r["requests"].as_u64().unwrap_or(0),
            usage,
            cost,
        ));
    }
    for (model, requests, u, cost) in &parsed {
        let share = if total.picos() > 0 {
            cost.picos() as f64 * 100.0 / total.picos() as f64
        } else {
            0.0
        };
        println!(
            "{:<20} {:>9} {:>12} {:>10} {:>11} {:>11} {:>12} {:>6.1}%",
            model,
            requests,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            dollars(*cost),
            share
        );
    }
    println!(
        "{:<20} {:>9} {:>12} {:>10} {:>11} {:>11} {:>12}",
        "total (routed)",
        "",
        "",
        "",
        "",
        "",
        dollars(total)
    );
    println!(
        "{:<20} {:>9} {:>12} {:>10} {:>11} {:>11} {:>12}",
        format!("all on {FLAGSHIP}"),
        "",
        "",
        "",
        "",
        "",
        dollars(baseline)
    );
    if baseline.picos() > 0 {
        let saved = 100.0 - total.picos() as f64 * 100.0 / baseline.picos() as f64;
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
