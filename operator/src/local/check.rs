//! `--check-config`: validate every object of every YAML file of a
//! directory, one line per object.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use tokenwarden_crds::load::{self, Object};

use super::yaml_files;

/// The outcome for one file.
#[derive(Debug)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// One line per object (`ok Kind ns/name`), or the error.
    pub result: Result<Vec<String>, FileError>,
}

/// Why a file does not check out.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// An object in it does not parse or is invalid.
    #[error("{0}")]
    Invalid(#[from] load::LoadError),
}

/// The outcome for a directory.
#[derive(Debug, Default)]
pub struct DirReport {
    /// Per file, in name order.
    pub files: Vec<FileReport>,
    /// A problem with the directory itself.
    pub error: Option<String>,
}

// === impl DirReport ===

impl DirReport {
    /// Whether every object in every file is valid.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.files.iter().all(|f| f.result.is_ok())
    }

    /// One line per object or error.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if let Some(e) = &self.error {
            let _ = writeln!(s, "error: {e}");
        }
        for f in &self.files {
            match &f.result {
                Ok(lines) => {
                    for l in lines {
                        let _ = writeln!(s, "{}: {l}", f.path.display());
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "{}: invalid: {e}", f.path.display());
                }
            }
        }
        s
    }
}

/// Validate every object of every YAML file in `dir`.
pub fn check_dir(dir: &Path) -> DirReport {
    let files = match yaml_files(dir) {
        Ok(f) => f,
        Err(e) => {
            return DirReport {
                files: vec![],
                error: Some(format!("cannot read {}: {e}", dir.display())),
            };
        }
    };
    let mut report = DirReport::default();
    if files.is_empty() {
        report.error = Some(format!("{} has no *.yaml or *.yml files", dir.display()));
    }
    for path in files {
        let result = std::fs::read_to_string(&path)
            .map_err(FileError::from)
            .and_then(|text| Ok(load::load_yaml(&text)?))
            .map(|objects| {
                objects
                    .iter()
                    .map(|o| match o {
                        Object::RoutingPolicy(p) => format!(
                            "ok RoutingPolicy {}/{}",
                            p.metadata.namespace.as_deref().unwrap_or("default"),
                            p.metadata.name.as_deref().unwrap_or_default()
                        ),
                        Object::TokenBudget(b) => format!(
                            "ok TokenBudget {}/{}",
                            b.metadata.namespace.as_deref().unwrap_or("default"),
                            b.metadata.name.as_deref().unwrap_or_default()
                        ),
                    })
                    .collect()
            });
        report.files.push(FileReport { path, result });
    }
    report
}
