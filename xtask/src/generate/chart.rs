//! `deploy/tokenwarden.yaml`: the chart rendered with its default values.
//!
//! The render is the real Helm library through helm-python-sdk, so it runs
//! `tests/chart/chartlib.py` (the chart tests render with the same code) in
//! Python: `$PYTHON` if set, else the repository's `.venv/bin/python`
//! (made by `scripts/test`), else `python3` from `PATH`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::Output;

/// The generated manifest, relative to the repository root.
const MANIFEST: &str = "deploy/tokenwarden.yaml";

/// Prints `chartlib.manifest()` to stdout.
const RENDER: &str = "import sys, chartlib; sys.stdout.write(chartlib.manifest())";

/// The Python interpreter that has helm-python-sdk.
fn python(root: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("PYTHON") {
        return PathBuf::from(p);
    }
    let venv = root.join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The rendered manifest of the chart under `root`.
pub fn outputs(root: &Path) -> anyhow::Result<Vec<Output>> {
    let python = python(root);
    let out = Command::new(&python)
        .args(["-c", RENDER])
        .env("PYTHONPATH", root.join("tests/chart"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(root)
        .output()
        .with_context(|| format!("chart: cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "chart: rendering charts/tokenwarden with {} failed ({}); it needs the Python tools \
             of scripts/requirements-test.txt (scripts/test installs them in .venv, or set $PYTHON):\n{}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let contents = String::from_utf8(out.stdout).context("chart: the render is not UTF-8")?;
    Ok(vec![Output {
        path: MANIFEST.to_owned(),
        contents,
    }])
}
