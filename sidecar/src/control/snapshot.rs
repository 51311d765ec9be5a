//! Config snapshots from the operator: check, install, persist.
//!
//! A snapshot is checked before it replaces anything (protocol and schema
//! versions, the JSON against `WorkloadConfig` with the failing field's
//! path, the namespace, and the references a sidecar relies on: tiers and
//! routes naming known providers, upstream URLs, budget time zones). The
//! last good one is written to `STATE/config-snapshot.json` (temp file,
//! fsync, rename), so a sidecar restarted while the operator is down
//! serves with it — without the response cache's Redis password the
//! operator put in it (never written to disk: such a restored config's
//! Redis lookups are misses until the operator sends the config again).

use std::path::Path;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokenwarden_core::workload::{Target, WorkloadConfig};
use tokenwarden_durable::write_atomic;
use tokenwarden_proto::{CONFIG_SCHEMA, ConfigSnapshot, PROTOCOL_VERSION};

const FILE: &str = "config-snapshot.json";

/// Why a snapshot cannot be used: the NACK's reason, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The operator speaks a newer control protocol.
    #[error("protocol_version {0} is newer than this sidecar speaks ({PROTOCOL_VERSION})")]
    ProtocolTooNew(u32),
    /// The config is in a newer `WorkloadConfig` schema.
    #[error("config_schema {0} is newer than this sidecar understands ({CONFIG_SCHEMA})")]
    SchemaTooNew(u32),
    /// `config_json` does not deserialize; `path` is the failing field.
    #[error("config_json: {path}: {source}")]
    Json {
        /// The JSON path of the failing field.
        path: String,
        /// What was wrong there.
        source: serde_json::Error,
    },
    /// The config deserializes but is not one this pod can run.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field, as a path (`routing.tiers[0].provider`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A budget's time zone or period does not resolve.
    #[error("{field}: {source}")]
    Period {
        /// The field, as a path (`budgets[0].time_zone`).
        field: String,
        /// Why it does not resolve.
        source: tokenwarden_core::period::PeriodError,
    },
}

fn invalid(field: String, problem: String) -> SnapshotError {
    SnapshotError::Invalid { field, problem }
}

/// Check a snapshot for this pod; the config, or why it cannot be used.
pub fn check(snap: &ConfigSnapshot, namespace: &str) -> Result<WorkloadConfig, SnapshotError> {
    // 0 = not stated (an older operator): the first version.
    if snap.protocol_version > PROTOCOL_VERSION {
        return Err(SnapshotError::ProtocolTooNew(snap.protocol_version));
    }
    if snap.config_schema > CONFIG_SCHEMA {
        return Err(SnapshotError::SchemaTooNew(snap.config_schema));
    }
    let de = &mut serde_json::Deserializer::from_slice(&snap.config_json);
    let cfg: WorkloadConfig =
        serde_path_to_error::deserialize(de).map_err(|e| SnapshotError::Json {
            path: e.path().to_string(),
            source: e.into_inner(),
        })?;
    validate(&cfg, namespace)?;
    Ok(cfg)
}

/// What the sidecar relies on beyond the types.
pub fn validate(cfg: &WorkloadConfig, namespace: &str) -> Result<(), SnapshotError> {
    if cfg.namespace != namespace {
        return Err(invalid(
            "namespace".into(),
            format!(
                "the snapshot is for namespace {:?}, this pod runs in {namespace:?}",
                cfg.namespace
            ),
        ));
    }
    if let Some(r) = &cfg.routing {
        for (i, p) in r.providers.iter().enumerate() {
            let ok = p
                .base_url
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")));
            if !ok {
                return Err(invalid(
                    format!("routing.providers[{i}].base_url"),
                    format!("{:?} is not an http(s) URL", p.base_url),
                ));
            }
        }
        for (i, t) in r.tiers.iter().enumerate() {
            if r.provider(&t.provider).is_none() {
                return Err(invalid(
                    format!("routing.tiers[{i}].provider"),
                    format!("no provider named {:?}", t.provider),
                ));
            }
        }
        for (i, route) in r.routes.iter().enumerate() {
            match &route.target {
                Target::Tier(t) if r.tier_index(t).is_none() => {
                    return Err(invalid(
                        format!("routing.routes[{i}].target.tier"),
                        format!("no tier named {t:?}"),
                    ));
                }
                Target::Model { provider, .. } if r.provider(provider).is_none() => {
                    return Err(invalid(
                        format!("routing.routes[{i}].target.model.provider"),
                        format!("no provider named {provider:?}"),
                    ));
                }
                _ => {}
            }
        }
    }
    for (i, b) in cfg.budgets.iter().enumerate() {
        let tz = tokenwarden_core::period::time_zone(&b.time_zone).map_err(|source| {
            SnapshotError::Period {
                field: format!("budgets[{i}].time_zone"),
                source,
            }
        })?;
        b.period
            .window(&tz, Timestamp::now())
            .map_err(|source| SnapshotError::Period {
                field: format!("budgets[{i}].period"),
                source,
            })?;
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Persisted<'a> {
    version: String,
    #[serde(borrow)]
    config: &'a RawValue,
}

/// Write the last good snapshot, without secrets (see the module docs).
pub fn persist(dir: &Path, version: &str, config_json: &[u8]) -> std::io::Result<()> {
    let mut value: serde_json::Value = serde_json::from_slice(config_json)?;
    strip_secrets(&mut value);
    let stripped = serde_json::to_string(&value)?;
    let raw: &RawValue = serde_json::from_str(&stripped)?;
    let bytes = serde_json::to_vec(&Persisted {
        version: version.to_string(),
        config: raw,
    })?;
    write_atomic(&dir.join(FILE), &bytes, true)
}

/// Remove the `password` of every `redis` object (the response cache's
/// Redis credentials the operator resolved).
fn strip_secrets(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(redis)) = map.get_mut("redis") {
                redis.remove("password");
            }
            map.values_mut().for_each(strip_secrets);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_secrets),
        _ => {}
    }
}

/// The last good snapshot persisted in `dir`, re-checked.
pub fn load(dir: &Path, namespace: &str) -> Option<(String, WorkloadConfig)> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    let p: Persisted<'_> = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable persisted config snapshot");
            return None;
        }
    };
    let snap = ConfigSnapshot {
        version: p.version.clone(),
        protocol_version: PROTOCOL_VERSION,
        config_schema: CONFIG_SCHEMA,
        config_json: p.config.get().as_bytes().to_vec(),
    };
    match check(&snap, namespace) {
        Ok(cfg) => Some((p.version, cfg)),
        Err(e) => {
            tracing::warn!(reason = %e, "ignoring the persisted config snapshot");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(json: &str) -> ConfigSnapshot {
        ConfigSnapshot {
            version: "v1".into(),
            protocol_version: PROTOCOL_VERSION,
            config_schema: CONFIG_SCHEMA,
            config_json: json.as_bytes().to_vec(),
        }
    }

    #[test]
    fn rejections_name_the_field() {
        let ok = r#"{"namespace":"apps","routing":null,"budgets":[],"conflict":null,"warnings":[],"future_field":1}"#;
        assert!(check(&snap(ok), "apps").is_ok(), "unknown fields ignored");
        let minimal = check(&snap(r#"{"namespace":"apps"}"#), "apps").unwrap();
        assert!(
            minimal.budgets.is_empty() && minimal.routing.is_none(),
            "missing = default"
        );
        let err = check(&snap(ok), "other").unwrap_err().to_string();
        assert!(err.starts_with("namespace:"), "{err}");
        let bad = r#"{"namespace":"apps","routing":null,"budgets":[{"source":{"namespace":"apps","name":"b"},"generation":1,"period":"Daily","time_zone":"UTC","limit_usd":"x"}],"conflict":null,"warnings":[]}"#;
        let err = check(&snap(bad), "apps").unwrap_err().to_string();
        assert!(err.contains("budgets[0].limit_usd"), "{err}");
        let mut s = snap(ok);
        s.config_schema = CONFIG_SCHEMA + 1;
        let err = check(&s, "apps").unwrap_err().to_string();
        assert!(err.contains("config_schema"), "{err}");
    }

    #[test]
    fn the_redis_password_is_never_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"routing":{"response_cache":{"backend":"redis","redis":{"url":"redis://r:6379","password":"hunter2","username":"app"}}},"other":{"password":"kept"}}"#;
        persist(dir.path(), "v9", json.as_bytes()).unwrap();
        let on_disk = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(!on_disk.contains("hunter2"), "{on_disk}");
        assert!(on_disk.contains(r#""username":"app""#), "{on_disk}");
        assert!(
            on_disk.contains(r#""other":{"password":"kept"}"#),
            "{on_disk}"
        );
    }

    #[test]
    fn persisted_snapshot_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let json =
            r#"{"namespace":"apps","routing":null,"budgets":[],"conflict":null,"warnings":["w"]}"#;
        persist(dir.path(), "abc", json.as_bytes()).unwrap();
        let (v, cfg) = load(dir.path(), "apps").unwrap();
        assert_eq!(v, "abc");
        assert_eq!(cfg.warnings, vec!["w".to_string()]);
        assert!(load(dir.path(), "elsewhere").is_none());
    }
}
