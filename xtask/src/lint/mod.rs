//! `cargo xtask lint`: the structure check.
//!
//! Reads every crate target of the workspace (libraries, binaries, examples,
//! build scripts; not test or bench targets) from its root file through its
//! `mod` declarations, parses each file with `syn`, and reports:
//!
//! - **Long functions**: a `fn` (free, method, trait default, nested) longer
//!   than the limit, counted from the line of `fn` to the line of its closing
//!   brace, printed as `path:line fn name (N lines)`. Test code is skipped:
//!   items under `#[cfg(test)]`, `#[test]` functions, files named `tests.rs`
//!   or `proptests.rs`, test targets (each crate's `tests/` directory), and
//!   generated files (a first line containing `@generated`).
//! - **Import cycles**: strongly connected components of more than one
//!   module in a crate's module graph, printed as the cycle path with the
//!   line of each edge. The rules of the graph are in [`cycles`].
//!
//! Exit status 1 when anything is reported.

mod cycles;
mod tree;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The default longest function, in lines.
pub const MAX_FN_LINES: usize = 120;

/// One compiled crate: a target of a workspace package.
#[derive(Debug)]
struct Target {
    /// `package (kind name)`, for messages.
    label: String,
    /// The crate root file.
    root: PathBuf,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    targets: Vec<MetaTarget>,
}

#[derive(Deserialize)]
struct MetaTarget {
    name: String,
    kind: Vec<String>,
    src_path: PathBuf,
}

/// The workspace's crate targets, from `cargo metadata`.
fn targets(root: &Path) -> anyhow::Result<Vec<Target>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Metadata = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    let mut targets = Vec::new();
    for p in meta.packages {
        for t in p.targets {
            let Some(kind) = t.kind.first() else { continue };
            if matches!(kind.as_str(), "test" | "bench") {
                continue;
            }
            targets.push(Target {
                label: format!("{} ({kind} {})", p.name, t.name),
                root: t.src_path,
            });
        }
    }
    Ok(targets)
}

/// `cargo xtask lint`.
pub fn run(root: &Path, max_lines: usize) -> anyhow::Result<ExitCode> {
    let targets = targets(root)?;
    let mut long_fns = BTreeSet::new();
    let mut cycle_reports = Vec::new();
    let mut files = BTreeSet::new();
    for target in &targets {
        let krate = tree::Crate::load(&target.root)
            .with_context(|| format!("cannot read {}", target.label))?;
        for m in &krate.modules {
            files.insert(m.file.clone());
        }
        for f in krate.long_fns(max_lines) {
            long_fns.insert((f.file.clone(), f.line, f.name.clone(), f.lines));
        }
        for cycle in cycles::find(&krate) {
            cycle_reports.push(cycle.render(&target.label, root));
        }
    }
    for (file, line, name, lines) in &long_fns {
        println!("{}:{line} fn {name} ({lines} lines)", relative(root, file));
    }
    for report in &cycle_reports {
        println!("{report}");
    }
    let problems = long_fns.len() + cycle_reports.len();
    println!(
        "lint: {} functions over {max_lines} lines, {} import cycles ({} files in {} crates)",
        long_fns.len(),
        cycle_reports.len(),
        files.len(),
        targets.len()
    );
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `file` relative to `root`, for messages.
fn relative(root: &Path, file: &Path) -> String {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    file.strip_prefix(&root)
        .unwrap_or(file)
        .display()
        .to_string()
}
