//! `cargo xtask`: the repository's build tooling, kept out of the shipped crates.
//!
//! ```text
//! cargo xtask gen                   # write every generated file
//! cargo xtask gen --check           # exit 1 if a committed generated file is stale
//! cargo xtask gen crds catalog      # only some generators (also: chart)
//! cargo xtask lint                  # functions over 120 lines, import cycles between modules
//! cargo xtask classifier-eval       # the classifier's report on core/data/routing-eval/dev.jsonl
//! ```
//!
//! - [`generate`]: the generators (CRD YAML, price catalog, rendered chart) and
//!   their drift check.
//! - [`lint`]: the structure check (function length, module import cycles).
//! - [`classifier_eval`]: the evaluation of the request-complexity classifier.

mod classifier_eval;
mod generate;
mod lint;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "tokenwarden's build tooling")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Write the generated files (CRD YAML, price catalog, deploy/tokenwarden.yaml).
    Gen {
        /// Write nothing; exit 1 if a committed file differs from what is generated.
        #[arg(long)]
        check: bool,
        /// Repository root (default: the workspace xtask was built from).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Generators to run (default: all).
        #[arg(value_enum)]
        only: Vec<generate::Generator>,
    },
    /// Check the structure: no function over the limit outside tests and
    /// generated code, no import cycle between the modules of a crate.
    Lint {
        /// Longest function allowed, in lines (from `fn` to its closing brace).
        #[arg(long, default_value_t = lint::MAX_FN_LINES)]
        max_lines: usize,
        /// Repository root (default: the workspace xtask was built from).
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Evaluate the request-complexity classifier on a labelled request set.
    ClassifierEval(classifier_eval::Args),
    /// Fit the classifier's weights on the training set and report them.
    ClassifierTrain(classifier_eval::train_cmd::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Gen { check, root, only } => {
            generate::run(&root.unwrap_or_else(repo_root), check, &only)
        }
        Task::Lint { max_lines, root } => lint::run(&root.unwrap_or_else(repo_root), max_lines),
        Task::ClassifierEval(args) => classifier_eval::run(&args).map(|()| ExitCode::SUCCESS),
        Task::ClassifierTrain(args) => classifier_eval::train_cmd::run(&repo_root(), &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The repository root: the parent of this package's directory.
fn repo_root() -> PathBuf {
    let xtask_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().unwrap_or(xtask_dir).to_path_buf()
}
