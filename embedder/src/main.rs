//! The `tokenwarden-embedder` binary: loads a model directory and serves
//! OpenAI-compatible `POST /v1/embeddings` until SIGTERM/SIGINT.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use tokenwarden_embedder::{
    Embedder,
    server::{AppState, ServerConfig, serve},
};

/// Serve OpenAI-compatible embeddings from a local sentence-embedding model.
#[derive(Debug, Parser)]
#[command(name = "tokenwarden-embedder", version)]
struct Args {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    #[arg(
        long,
        env = "TOKENWARDEN_EMBEDDER_LISTEN",
        default_value = "127.0.0.1:8090"
    )]
    listen: SocketAddr,
    /// Directory with config.json, tokenizer.json and model.safetensors.
    #[arg(long, env = "TOKENWARDEN_EMBEDDER_MODEL_DIR")]
    model_dir: PathBuf,
    /// The model id clients send in `model` and see in responses.
    #[arg(
        long,
        env = "TOKENWARDEN_EMBEDDER_MODEL_NAME",
        default_value = "all-minilm-l6-v2"
    )]
    model_name: String,
    /// Most inputs per request.
    #[arg(long, default_value_t = 256)]
    max_inputs: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Embeddings requests admitted at once; more are answered 503.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Inference batches run at once (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Seconds requests in progress may take to finish after SIGTERM.
    #[arg(long, default_value_t = 20)]
    shutdown_grace_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let started = std::time::Instant::now();
    let embedder = Embedder::load(&args.model_dir).context("loading the model")?;
    tracing::info!(
        dir = %args.model_dir.display(),
        dimensions = embedder.dimensions(),
        fingerprint = embedder.fingerprint(),
        ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let config = ServerConfig {
        model_name: args.model_name,
        max_inputs: args.max_inputs,
        max_body_bytes: args.max_body_bytes,
        max_in_flight: args.max_in_flight,
        workers,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_seconds),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("tokenwarden-embedder listening on {addr}");
    tracing::info!(%addr, workers, "listening");
    serve(
        listener,
        AppState::new(Arc::new(embedder), config),
        shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
