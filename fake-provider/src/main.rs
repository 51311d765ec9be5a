//! `tokenwarden-fake-provider`: the fake OpenAI/Anthropic API as a standalone process (for the
//! Python SDK tests and benchmarks). Prints `listening on 127.0.0.1:PORT` as its first stdout line,
//! then serves until SIGINT/SIGTERM. See `tokenwarden_fake_provider` for the behaviour and headers.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokenwarden_fake_provider::{FakeConfig, FakeProvider};

#[derive(Debug, Parser)]
#[command(
    name = "tokenwarden-fake-provider",
    about = "A fake OpenAI/Anthropic API for tests, demos and benchmarks"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "FAKE_PROVIDER_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Output tokens per response before max_tokens capping.
    #[arg(long, env = "FAKE_PROVIDER_OUTPUT_TOKENS", default_value_t = 40)]
    output_tokens: u64,
    /// Deltas per streamed response.
    #[arg(long, env = "FAKE_PROVIDER_CHUNKS", default_value_t = 8)]
    chunks: usize,
    /// Pause between streamed deltas, in milliseconds.
    #[arg(long, env = "FAKE_PROVIDER_CHUNK_DELAY_MS", default_value_t = 0)]
    chunk_delay_ms: u64,
    /// The OpenAI key accepted (Authorization: Bearer …).
    #[arg(
        long,
        env = "FAKE_PROVIDER_OPENAI_KEY",
        default_value = "sk-fake-openai"
    )]
    openai_key: String,
    /// The Anthropic key accepted (x-api-key).
    #[arg(
        long,
        env = "FAKE_PROVIDER_ANTHROPIC_KEY",
        default_value = "sk-fake-anthropic"
    )]
    anthropic_key: String,
    /// Model-level faults, e.g. `gpt-5-mini=503,claude-haiku-4-5=429`.
    #[arg(long, env = "FAKE_PROVIDER_FAIL_MODELS", default_value = "")]
    fail_models: String,
    /// Do not simulate the providers' prompt caches (cache figures only from the x-fake-* knobs).
    #[arg(long, env = "FAKE_PROVIDER_NO_PROMPT_CACHE")]
    no_prompt_cache: bool,
    /// Replace every prompt-cache TTL (5 m, 1 h, 24 h) with this many milliseconds.
    #[arg(long, env = "FAKE_PROVIDER_CACHE_TTL_MS")]
    cache_ttl_ms: Option<u64>,
    /// Do not keep the request log (for benchmarks).
    #[arg(long, env = "FAKE_PROVIDER_NO_LOG")]
    no_log: bool,
    /// Runtime worker threads (default: one per core).
    #[arg(long, env = "FAKE_PROVIDER_THREADS")]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = FakeConfig {
        openai_key: args.openai_key,
        anthropic_key: args.anthropic_key,
        output_tokens: args.output_tokens,
        chunks: args.chunks,
        chunk_delay_ms: args.chunk_delay_ms,
        log: !args.no_log,
        fail_models: args.fail_models,
        prompt_cache: !args.no_prompt_cache,
        cache_ttl_override: args.cache_ttl_ms.map(Duration::from_millis),
    };
    let fake = FakeProvider::start_on(args.listen, cfg).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", fake.addr())?;
        out.flush()?;
    }
    shutdown_signal().await;
    fake.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
