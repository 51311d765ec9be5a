//! Writes `core/src/catalog/generated.rs` from
//! `core/data/genai-prices/data_slim.json`.
//!
//! ```text
//! cargo run -p tokenwarden-core --bin catalog-gen            # regenerate
//! cargo run -p tokenwarden-core --bin catalog-gen -- --check # exit 1 if stale
//! ```

use std::{error::Error, fs, io, path::Path, process::ExitCode};

use tokenwarden_core::catalog::codegen::{self, DriftError};

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("catalog-gen: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args.as_slice() {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => {
            eprintln!("usage: catalog-gen [--check]");
            return Ok(ExitCode::from(64));
        }
    };

    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data_path = crate_dir.join(codegen::DATA_FILE);
    let out_path = crate_dir.join(codegen::GENERATED_FILE);
    let data = fs::read_to_string(&data_path)
        .map_err(|e| format!("cannot read {}: {e}", data_path.display()))?;
    let committed = match fs::read_to_string(&out_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", out_path.display()).into()),
    };

    if check {
        return match codegen::check_drift(committed.as_deref().unwrap_or(""), &data) {
            Ok(()) => {
                println!("{} is up to date", out_path.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ DriftError::Stale { .. }) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
            Err(DriftError::Codegen(e)) => Err(e.into()),
        };
    }

    let rendered = codegen::render(&data)?;
    if committed.as_deref() == Some(rendered.as_str()) {
        println!("{} is up to date", out_path.display());
    } else {
        fs::write(&out_path, rendered)
            .map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
        println!("wrote {}", out_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
