//! The generated files and their drift check, behind `cargo xtask gen`.
//!
//! Each generator turns sources in the repository into files committed next
//! to them:
//!
//! | generator | from | writes |
//! |---|---|---|
//! | `crds` | the Rust types in `crds/src` | `charts/tokenwarden/crds/*.yaml`, `deploy/crds.yaml` |
//! | `catalog` | `core/data/genai-prices/data_slim.json` | `core/src/catalog/generated.rs` |
//! | `chart` | `charts/tokenwarden` (rendered by `tests/chart/chartlib.py`) | `deploy/tokenwarden.yaml` |
//!
//! `--check` writes nothing and fails when a committed file differs from what
//! its generator produces, naming the file and its first differing line, so a
//! hand edit, or a source change without regeneration, cannot land.

mod catalog;
mod chart;
mod crds;

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

/// One generator, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// The CRD YAML from the Rust types.
    Crds,
    /// The built-in price catalog from the genai-prices data.
    Catalog,
    /// `deploy/tokenwarden.yaml` rendered from the chart (needs Python with helm-python-sdk).
    Chart,
    /// The reworded development set of the classifier (harness wrappers paraphrased).
    Reworded,
}

impl Generator {
    const ALL: [Generator; 4] = [
        Generator::Crds,
        Generator::Catalog,
        Generator::Chart,
        Generator::Reworded,
    ];

    /// The files this generator produces from the sources under `root`.
    fn outputs(self, root: &Path) -> anyhow::Result<Vec<Output>> {
        match self {
            Generator::Crds => crds::outputs().context("crds: cannot serialize the CRDs"),
            Generator::Catalog => catalog::outputs(root),
            Generator::Chart => chart::outputs(root),
            Generator::Reworded => reworded_outputs(root),
        }
    }
}

/// `core/data/routing-eval/dev-reworded.jsonl` from `dev.jsonl`.
fn reworded_outputs(root: &Path) -> anyhow::Result<Vec<Output>> {
    use crate::classifier_eval::reword::{DEV_PATH, REWORDED_PATH, reword_jsonl};
    let dev = std::fs::read_to_string(root.join(DEV_PATH))
        .with_context(|| format!("reworded: cannot read {DEV_PATH}"))?;
    Ok(vec![Output {
        path: REWORDED_PATH.to_owned(),
        contents: reword_jsonl(&dev)?,
    }])
}

/// One generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    /// The generated contents.
    pub contents: String,
}

/// A committed file that differs from what its generator produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// Path relative to the repository root.
    pub path: String,
    /// How it differs.
    pub kind: DriftKind,
}

/// How a committed file differs from the generated one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriftKind {
    /// The file is not there.
    Missing,
    /// The first line that differs (1-based), in both versions
    /// (`<end of file>` where one is shorter).
    Line {
        /// 1-based line number.
        line: usize,
        /// That line in the committed file.
        committed: String,
        /// That line as generated.
        generated: String,
    },
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DriftKind::Missing => write!(f, "{} is stale (missing)", self.path),
            DriftKind::Line {
                line,
                committed,
                generated,
            } => write!(
                f,
                "{} is stale (line {line}: committed {committed:?}, generated {generated:?})",
                self.path
            ),
        }
    }
}

/// Compares a committed file (`None`: missing) with its generated contents.
pub fn compare(output: &Output, committed: Option<&str>) -> Option<Drift> {
    let kind = match committed {
        None => DriftKind::Missing,
        Some(have) if have == output.contents => return None,
        Some(have) => first_difference(have, &output.contents),
    };
    Some(Drift {
        path: output.path.clone(),
        kind,
    })
}

/// The first line where two different texts differ.
fn first_difference(committed: &str, generated: &str) -> DriftKind {
    let (mut c, mut g) = (committed.split('\n'), generated.split('\n'));
    let mut line = 1;
    loop {
        match (c.next(), g.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (a, b) => {
                let show = |l: Option<&str>| l.unwrap_or("<end of file>").to_owned();
                return DriftKind::Line {
                    line,
                    committed: show(a),
                    generated: show(b),
                };
            }
        }
    }
}

/// Reads a committed file; `None` if it does not exist.
fn read_committed(root: &Path, path: &str) -> anyhow::Result<Option<String>> {
    let full = root.join(path);
    match fs::read_to_string(&full) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", full.display())),
    }
}

/// The drifts of `outputs` against the files under `root`.
pub fn check(root: &Path, outputs: &[Output]) -> anyhow::Result<Vec<Drift>> {
    let mut drifts = Vec::new();
    for output in outputs {
        let committed = read_committed(root, &output.path)?;
        drifts.extend(compare(output, committed.as_deref()));
    }
    Ok(drifts)
}

/// Writes the outputs that differ from the files under `root`; returns the
/// paths written.
pub fn write(root: &Path, outputs: &[Output]) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    for output in outputs {
        if read_committed(root, &output.path)?.as_deref() == Some(output.contents.as_str()) {
            continue;
        }
        let full: PathBuf = root.join(&output.path);
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::write(&full, &output.contents)
            .with_context(|| format!("cannot write {}", full.display()))?;
        written.push(output.path.clone());
    }
    Ok(written)
}

/// `cargo xtask gen [--check] [GENERATOR...]`: 0 when done (or up to date),
/// 1 when `--check` found drift; generator failures are errors.
pub fn run(root: &Path, check_only: bool, only: &[Generator]) -> anyhow::Result<ExitCode> {
    let selected: &[Generator] = if only.is_empty() {
        &Generator::ALL
    } else {
        only
    };
    let mut outputs = Vec::new();
    for g in selected {
        outputs.extend(g.outputs(root)?);
    }
    if !check_only {
        let written = write(root, &outputs)?;
        for path in &written {
            println!("gen: wrote {path}");
        }
        println!(
            "gen: {} generated files, {} rewritten",
            outputs.len(),
            written.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let drifts = check(root, &outputs)?;
    if drifts.is_empty() {
        println!("gen: {} generated files are up to date", outputs.len());
        return Ok(ExitCode::SUCCESS);
    }
    for d in &drifts {
        eprintln!("gen: {d}");
    }
    eprintln!(
        "gen: generated files are edited by hand or out of date: run `cargo xtask gen` and commit the result"
    );
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests;
