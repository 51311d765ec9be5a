//! Provider API keys, read from a directory laid out as Kubernetes mounts a
//! Secret: `DIR/<secretName>/<key>` (one file per key).
//!
//! Keys are read when a config is loaded (so a rotated Secret is picked up
//! on the next reload) and never logged: [`ApiKey`]'s `Debug` prints a
//! fingerprint-free placeholder.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use tokenwarden_core::workload::SecretRef;

/// A provider API key. Its `Debug`/`Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The secret value, for the outgoing header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Keys by (secret name, key).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: HashMap<(String, String), Result<ApiKey, String>>,
}

impl Keys {
    /// Read every referenced key from `dir`. A missing or unreadable key is
    /// remembered as an error (requests to that provider fail with a clear
    /// 503) rather than failing the whole config: other providers still work.
    pub fn load<'a>(dir: Option<&Path>, refs: impl IntoIterator<Item = &'a SecretRef>) -> Self {
        let mut keys = HashMap::new();
        for r in refs {
            let id = (r.name.clone(), r.key.clone());
            if keys.contains_key(&id) {
                continue;
            }
            let value = match dir {
                None => Err("no --secrets-dir given".to_string()),
                Some(dir) => read_key(&dir.join(&r.name).join(&r.key)),
            };
            keys.insert(id, value);
        }
        Keys { keys }
    }

    /// The key for a reference.
    pub fn get(&self, r: &SecretRef) -> Result<&ApiKey, String> {
        match self.keys.get(&(r.name.clone(), r.key.clone())) {
            Some(Ok(k)) => Ok(k),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("Secret {}/{} was not loaded", r.name, r.key)),
        }
    }

    /// References that could not be read, with the reason.
    pub fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .keys
            .iter()
            .filter_map(|((s, k), r)| r.as_ref().err().map(|e| format!("Secret {s} key {k}: {e}")))
            .collect();
        v.sort();
        v
    }
}

fn read_key(path: &PathBuf) -> Result<ApiKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // `kubectl create secret --from-file` keeps a trailing newline; keys never contain one.
    let key = text.trim_end_matches(['\n', '\r']).to_string();
    if key.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(format!("{} contains control characters", path.display()));
    }
    Ok(ApiKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubernetes_secret_layout_and_never_prints_the_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("llm-keys")).unwrap();
        std::fs::write(dir.path().join("llm-keys/openai"), "sk-live-123\n").unwrap();
        std::fs::write(dir.path().join("llm-keys/empty"), "\n").unwrap();
        let refs = [
            SecretRef {
                name: "llm-keys".into(),
                key: "openai".into(),
            },
            SecretRef {
                name: "llm-keys".into(),
                key: "empty".into(),
            },
            SecretRef {
                name: "other".into(),
                key: "k".into(),
            },
        ];
        let keys = Keys::load(Some(dir.path()), refs.iter());
        let k = keys.get(&refs[0]).unwrap();
        assert_eq!(k.expose(), "sk-live-123");
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        assert!(!format!("{keys:?}").contains("sk-live"));
        assert!(keys.get(&refs[1]).unwrap_err().contains("is empty"));
        assert!(keys.get(&refs[2]).unwrap_err().contains("cannot read"));
        assert_eq!(keys.problems().len(), 2);
    }
}
