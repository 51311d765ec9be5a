//! `tokenwarden-demo`: the main job on one machine, no cluster, no real provider.
//!
//! 1. Starts the fake provider (OpenAI + Anthropic APIs) on 127.0.0.1.
//! 2. Starts the real `tokenwarden-operator` in local mode: it watches a
//!    directory of RoutingPolicy/TokenBudget YAML (the same objects a
//!    cluster uses) for three teams, and keeps the cluster-wide ledger.
//! 3. Starts one real `tokenwarden-sidecar` per simulated pod (eight pods of
//!    seven workloads, each with its own labels), connected to the operator
//!    over gRPC: each gets its config, budget leases and reports usage.
//! 4. Plays a mixed workload through the sidecars:
//!    - `agents/coding-agent`: a coding agent that always asks for the
//!      flagship: 229 real public coding requests
//!      (`core/data/routing-eval/dev.jsonl`: 137 trivial exercises and edits,
//!      92 hard design/debugging tasks) behind a 20 KB system prompt it marks
//!      for caching;
//!    - `search/search-agent`: asks for gpt-4o; a dollar budget downgrades
//!      it to gpt-4o-mini at 30%;
//!    - `research/summarizer` (two pods): a token budget shared by both pods
//!      is a hard cap: requests past it are refused with a 429.
//!    - `ops/planner` and `ops/planner-cached`: one multi-turn agent trace
//!      without `cache_control`, through a policy without and one with
//!      automatic prompt-cache breakpoints;
//!    - `ops/ticket-agent`: a system prompt that starts with the current
//!      time, which breaks the provider's prompt cache on every request;
//!    - `support/faq-bot`: a FAQ bot whose questions repeat, paraphrase
//!      each other and come with near-misses (another order number, a
//!      negation) under a RoutingPolicy with the response cache on: exact,
//!      and semantic with the real self-hosted `tokenwarden-embedder` when
//!      a model directory is found ([`embedder`]).
//! 5. Prints the operator's ledger per namespace, workload and model, the
//!    budgets, the coding agent's bill next to "everything on the
//!    flagship", the prompt cache's hit ratio and savings with automatic
//!    breakpoints off and on, and the busts the ticket agent caused with the
//!    `PromptCacheUnstable` condition on its RoutingPolicy, and the FAQ
//!    bot's response-cache hits (exact, semantic), hit rate, saved dollars,
//!    embeddings' cost and net saving from the ledger, and that the
//!    near-misses reached the provider.
//! 6. The what-if check ([`whatif`]): `kubectl tokenwarden what-if`
//!    replays the coding agent's recorded requests through a changed
//!    RoutingPolicy, a sidecar then runs that policy on the same requests
//!    for real, and the demo prints how close the projection came.
//!
//! With `TOKENWARDEN_DEMO_SCRAPE_TARGETS=FILE`, the demo writes the
//! operator's and the sidecars' `/metrics` addresses to `FILE` (Prometheus
//! file_sd JSON) once they are ready, and after its report keeps them
//! running until its stdin closes: `tests/chart/test_monitoring.py` scrapes
//! them with a real Prometheus and evaluates the chart's dashboard and alerts.
//!
//! Run: `cargo build --release -p tokenwarden-operator -p tokenwarden-sidecar -p tokenwarden-embedder -p tokenwarden-cli -p tokenwarden-demo && target/release/tokenwarden-demo`
//!
//! The steps: [`processes`] starts the operator and the sidecars,
//! [`workload`] plays the traffic, [`report`] waits for the operator's
//! ledger and prints it; [`objects`] holds the teams' YAML.

mod caching;
mod embedder;
mod faq;
mod objects;
mod processes;
mod report;
mod requests;
mod whatif;
mod workload;

use std::{path::Path, process::ExitCode, time::Instant};

use tokenwarden_fake_provider::{FakeConfig, FakeProvider};

use crate::{processes::HttpClient, workload::FLAGSHIP};

/// The shared secret of the local control plane (the demo's own).
const SECRET: &str = "demo-shared-secret-not-for-production";

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

/// The files the operator and the sidecars read: provider keys, the shared
/// secret, the teams' objects.
fn lay_out(root: &Path, base_url: &str, embedder_url: Option<&str>) -> anyhow::Result<()> {
    std::fs::create_dir_all(root.join("secrets/llm-keys"))?;
    std::fs::write(root.join("secrets/llm-keys/anthropic"), "sk-fake-anthropic")?;
    std::fs::write(root.join("secrets/llm-keys/openai"), "sk-fake-openai")?;
    // The self-hosted embedder ignores it; the sidecar sends the key the
    // policy names, never the app's.
    std::fs::write(root.join("secrets/llm-keys/embedder"), "sk-self-hosted")?;
    std::fs::write(root.join("shared-secret"), SECRET)?;
    std::fs::create_dir_all(root.join("objects"))?;
    for (file, text) in objects::objects(base_url, embedder_url) {
        std::fs::write(root.join("objects").join(file), text)?;
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    // The request log shows which FAQ questions reached the provider.
    let fake = FakeProvider::start(FakeConfig::default()).await?;
    let embedder = tokio::task::spawn_blocking(embedder::Embedder::start).await??;
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let embedder_url = embedder.as_ref().ok().map(|e| e.url.as_str());
    lay_out(root, &fake.base_url(), embedder_url)?;
    let client: HttpClient = processes::http_client();

    let started = Instant::now();
    let operator = processes::start_operator(&client, root).await?;
    let pods = processes::start_pods(&client, root, operator.grpc).await?;
    let ready_ms = started.elapsed().as_millis();
    let scrape_targets = std::env::var_os("TOKENWARDEN_DEMO_SCRAPE_TARGETS");
    if let Some(file) = &scrape_targets {
        let targets = processes::scrape_targets(operator.admin, &pods);
        std::fs::write(file, serde_json::to_vec_pretty(&targets)?)?;
    }

    let items = requests::dev_set()?;
    let hard_total = items.iter().filter(|i| i.hard()).count();
    println!(
        "tokenwarden demo: one operator (local mode), {} sidecars, a simulated provider",
        pods.len()
    );
    println!("  control plane and sidecars ready in {ready_ms} ms");
    println!(
        "  agents/coding-agent: {} requests for {FLAGSHIP} ({} trivial edits/exercises, {hard_total} hard design/debugging tasks)",
        items.len(),
        items.len() - hard_total
    );

    let tally = workload::play(&client, &items, &pods).await?;
    // Every record reaches the operator's ledger (acked once durable).
    let billed: u64 = fake.usage_totals().values().map(|u| u.requests).sum();
    let embedded = match &embedder {
        Ok(e) => e.served(&client).await?,
        Err(_) => 0,
    };
    let ledger = report::wait_for_ledger(&client, operator.admin, billed, embedded).await?;
    report::print_ledger(&ledger)?;
    report::print_prompt_cache(
        &client,
        &ledger,
        pods[6].admin(),
        &root.join("operator-state"),
    )
    .await?;
    let lookups = processes::semantic_lookups(&client, pods[7].admin()).await?;
    report::print_response_cache(
        &ledger,
        &report::FaqRun {
            seen: &tally.faq,
            semantic_off: embedder.as_ref().err().map(String::as_str),
            near_misses_at_provider: faq::at_provider(&fake.log(), faq::Kind::NearMiss),
            lookups: &lookups,
        },
    )?;
    let check = whatif::check(&client, root, &root.join("pods").join(pods[0].name), &items).await?;
    whatif::print(&check);
    report::print_summary(&tally, &items, billed);
    if scrape_targets.is_some() {
        hold(&pods).await?;
    }
    Ok(())
}

/// Keep the operator and the sidecars running (for a scraper) until stdin
/// closes; say where each pod's app port is, for more traffic.
async fn hold(pods: &[processes::Pod]) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    for p in pods {
        println!("pod {}/{} app 127.0.0.1:{}", p.namespace, p.name, p.port);
    }
    println!("holding the processes for scrapes until stdin closes");
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    Ok(())
}
