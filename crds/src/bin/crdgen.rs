//! Writes the CRD YAML generated from the Rust types.
//!
//! ```text
//! crdgen            # write charts/tokenwarden/crds/*.yaml and deploy/crds.yaml
//! crdgen --check    # write nothing; exit 1 if a committed file differs
//! crdgen --root DIR # repository root (default: the workspace this was built from)
//! ```

use std::{path::PathBuf, process::ExitCode};

use tokenwarden_crds::generate;

fn main() -> ExitCode {
    let mut check = false;
    let mut root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--root" => match args.next() {
                Some(r) => root = PathBuf::from(r),
                None => return usage("--root needs a directory"),
            },
            "-h" | "--help" => {
                println!("usage: crdgen [--check] [--root DIR]");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let outputs = match generate::outputs() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("crdgen: cannot serialize CRDs: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        let drifts = generate::check(&outputs, |p| std::fs::read_to_string(root.join(p)).ok());
        if drifts.is_empty() {
            println!("crdgen: {} generated files are up to date", outputs.len());
            return ExitCode::SUCCESS;
        }
        for d in &drifts {
            eprintln!("crdgen: {} is stale ({})", d.path, d.detail);
        }
        eprintln!("crdgen: run `cargo run -p tokenwarden-crds --bin crdgen` and commit the result");
        return ExitCode::from(1);
    }
    for (path, contents) in &outputs {
        let full = root.join(path);
        if let Some(dir) = full.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!("crdgen: cannot create {}: {e}", dir.display());
            return ExitCode::from(2);
        }
        if let Err(e) = std::fs::write(&full, contents) {
            eprintln!("crdgen: cannot write {}: {e}", full.display());
            return ExitCode::from(2);
        }
        println!("crdgen: wrote {path}");
    }
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("crdgen: {msg}\nusage: crdgen [--check] [--root DIR]");
    ExitCode::from(64)
}
