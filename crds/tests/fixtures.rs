//! Fixture tables for the three validation layers.
//!
//! - `tests/valid/*.yaml` and `deploy/examples/*.yaml` must pass all three:
//!   `validate()`, the CRD's CEL rules (evaluated locally by kube-cel) and the
//!   CRD's `openAPIV3Schema` (as the apiserver and `kubectl --validate=strict`
//!   apply it).
//! - each `tests/invalid/*.yaml` states what must reject it, in header
//!   comments: `# expect:` (the `load_yaml` + `validate()` message, always),
//!   `# cel:` (a CEL rule message) and `# schema:` (a schema error mentioning
//!   this text).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/openapi.rs"]
mod openapi;

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use serde::Deserialize;
use tokenwarden_crds::{RoutingPolicy, TokenBudget, load};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

/// The openAPIV3Schema of the CRD for `kind`, as JSON.
fn schema_for(kind: &str) -> serde_json::Value {
    let crd = match kind {
        "RoutingPolicy" => RoutingPolicy::crd(),
        "TokenBudget" => TokenBudget::crd(),
        other => panic!("no CRD for kind {other}"),
    };
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(s).unwrap()
}

/// Every document of a YAML file as JSON.
fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|de| serde_json::Value::deserialize(de).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn cel_errors(doc: &serde_json::Value) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap();
    match kube::core::cel::Validator::new().validate(&schema_for(kind), doc, None) {
        Ok(()) => vec![],
        Err(errs) => errs
            .as_slice()
            .iter()
            .map(|e| format!("{}: {}", e.field_path, e.message))
            .collect(),
    }
}

fn schema_errors(doc: &serde_json::Value) -> Vec<String> {
    let kind = doc["kind"].as_str().unwrap();
    openapi::validate(&schema_for(kind), doc)
        .into_iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect()
}

fn header(text: &str, key: &str) -> Option<String> {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_string))
}

fn assert_passes_every_layer(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let objects = load::load_yaml(&text)
        .unwrap_or_else(|e| panic!("{}: validate() rejected it: {e}", path.display()));
    assert!(!objects.is_empty(), "{}: no objects", path.display());
    for doc in documents(&text) {
        let cel = cel_errors(&doc);
        assert!(
            cel.is_empty(),
            "{}: CEL rejected it: {cel:?}",
            path.display()
        );
        let schema = schema_errors(&doc);
        assert!(
            schema.is_empty(),
            "{}: schema rejected it: {schema:?}",
            path.display()
        );
    }
}

#[test]
fn valid_fixtures_pass_every_layer() {
    let files = yaml_files(&crate_dir().join("tests/valid"));
    assert!(files.len() >= 3);
    for f in files {
        assert_passes_every_layer(&f);
    }
}

#[test]
fn deploy_examples_pass_every_layer() {
    let files = yaml_files(&crate_dir().join("../deploy/examples"));
    assert!(
        files.len() >= 4,
        "deploy/examples needs at least four examples"
    );
    for f in files {
        assert_passes_every_layer(&f);
    }
}

#[test]
fn invalid_fixtures_are_rejected_with_their_messages() {
    let files = yaml_files(&crate_dir().join("tests/invalid"));
    assert!(
        files.len() >= 15,
        "at least 15 invalid cases, have {}",
        files.len()
    );
    let mut cel_cases = 0;
    let mut schema_cases = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let expect = header(&text, "expect")
            .unwrap_or_else(|| panic!("{name}: needs a '# expect: <message>' header"));
        match load::load_yaml(&text) {
            Ok(_) => panic!("{name}: accepted, expected an error containing {expect:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&expect),
                    "{name}:\n  got:      {msg}\n  expected: {expect}"
                );
            }
        }
        let doc = documents(&text).remove(0);
        if let Some(want) = header(&text, "cel") {
            cel_cases += 1;
            let errs = cel_errors(&doc);
            assert!(
                errs.iter().any(|e| e.contains(&want)),
                "{name}: CEL errors {errs:?} do not contain {want:?}"
            );
        }
        if let Some(want) = header(&text, "schema") {
            schema_cases += 1;
            let errs = schema_errors(&doc);
            assert!(
                errs.iter().any(|e| e.contains(&want)),
                "{name}: schema errors {errs:?} do not contain {want:?}"
            );
        }
    }
    assert!(
        cel_cases >= 10,
        "CEL rules need coverage, have {cel_cases} cases"
    );
    assert!(
        schema_cases >= 10,
        "schema rules need coverage, have {schema_cases} cases"
    );
}

#[test]
fn cel_rules_compile_and_accept_an_empty_policy_list() {
    // A RoutingPolicy with no tiers/routes exercises the `all`/`exists`
    // rules on empty lists; a compile error in any rule would surface here.
    let doc = serde_json::json!({
        "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "RoutingPolicy",
        "metadata": {"name": "p"},
        "spec": {"providers": [{"name": "o", "api": "openai", "baseUrl": "https://x.y",
                 "apiKeySecretRef": {"name": "k", "key": "k"}}], "tiers": [], "routes": []}
    });
    assert_eq!(cel_errors(&doc), Vec::<String>::new());
}
