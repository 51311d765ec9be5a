//! A policy file (the sidecar's standalone mode, the kubectl plugin's what-if):
//! RoutingPolicy and TokenBudget YAML,
//! compiled for one workload.

use std::path::Path;

use crate::load::{self, LoadError, Object};
use tokenwarden_core::{
    compile::{BudgetInput, Pod, PolicyInput, compile},
    selector::Labels,
    workload::WorkloadConfig,
};

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or an object is invalid.
    #[error("{path}: {source}")]
    Load {
        /// The file.
        path: String,
        /// What is wrong, with field paths.
        source: Box<LoadError>,
    },
}

/// The validated contents of a policy file.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Every RoutingPolicy, converted.
    pub policies: Vec<PolicyInput>,
    /// Every TokenBudget, converted.
    pub budgets: Vec<BudgetInput>,
}

// === impl PolicySet ===

impl PolicySet {
    /// Parse and validate YAML text; `origin` names it in errors.
    pub fn from_yaml(origin: &str, text: &str) -> Result<Self, PolicyFileError> {
        let objects = load::load_yaml(text).map_err(|source| PolicyFileError::Load {
            path: origin.to_string(),
            source: Box::new(source),
        })?;
        let mut set = PolicySet {
            policies: Vec::new(),
            budgets: Vec::new(),
        };
        for (i, o) in objects.into_iter().enumerate() {
            let invalid = |errors| PolicyFileError::Load {
                path: origin.to_string(),
                source: Box::new(LoadError::Invalid { doc: i + 1, errors }),
            };
            match o {
                Object::RoutingPolicy(p) => set.policies.push(p.to_input().map_err(invalid)?),
                Object::TokenBudget(b) => set.budgets.push(b.to_input().map_err(invalid)?),
            }
        }
        Ok(set)
    }

    /// Read, parse and validate a file, or every `*.yaml`/`*.yml` file of a
    /// directory (in name order, as one set).
    pub fn from_path(path: &Path) -> Result<Self, PolicyFileError> {
        let shown = path.display().to_string();
        let read_err = |source| PolicyFileError::Read {
            path: shown.clone(),
            source,
        };
        if !path.is_dir() {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            return Self::from_yaml(&shown, &text);
        }
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut set = PolicySet {
            policies: Vec::new(),
            budgets: Vec::new(),
        };
        for f in files {
            let one = Self::from_path(&f)?;
            set.policies.extend(one.policies);
            set.budgets.extend(one.budgets);
        }
        Ok(set)
    }

    /// No RoutingPolicy and no TokenBudget (an empty or comment-only file).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty() && self.budgets.is_empty()
    }

    /// Compile the config for the pod `pod_name` (may be empty) in
    /// `namespace` with `labels`.
    pub fn compile(&self, namespace: &str, pod_name: &str, labels: &Labels) -> WorkloadConfig {
        let pod = Pod {
            namespace,
            name: pod_name,
            labels,
        };
        compile(&pod, &self.policies, &self.budgets)
    }
}
