//! The committed CRD YAML equals what the types generate, and the drift check
//! catches a hand edit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, process::Command};

use tokenwarden_crds::generate;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let outputs = generate::outputs().unwrap();
    assert_eq!(outputs.len(), 3);
    let drifts = generate::check(&outputs, |p| {
        std::fs::read_to_string(repo_root().join(p)).ok()
    });
    assert!(
        drifts.is_empty(),
        "generated CRD YAML is stale: {drifts:?}\nrun `cargo run -p tokenwarden-crds --bin crdgen`"
    );
}

#[test]
fn crdgen_check_catches_a_hand_edit() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_crdgen");
    // Generate into a scratch root, then check it: clean.
    let out = Command::new(bin)
        .args(["--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .args(["--check", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Hand-edit one line (loosen a bound) and check again: caught, with the line.
    let path = dir.path().join("deploy/crds.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("maxItems: 16", "maxItems: 17", 1);
    assert_ne!(
        text, edited,
        "the generated YAML bounds providers to 16 items"
    );
    std::fs::write(&path, edited).unwrap();
    let out = Command::new(bin)
        .args(["--check", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deploy/crds.yaml is stale"), "{stderr}");
    assert!(stderr.contains("maxItems: 17"), "{stderr}");

    // A deleted file is caught too.
    std::fs::remove_file(
        dir.path()
            .join("charts/tokenwarden/crds/tokenbudgets.tokenwarden.dev.yaml"),
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["--check", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("tokenbudgets.tokenwarden.dev.yaml is stale (missing)")
    );
}

#[test]
fn crds_have_the_promised_shape() {
    use kube::CustomResourceExt;
    let tb = tokenwarden_crds::TokenBudget::crd();
    assert_eq!(tb.spec.group, "tokenwarden.dev");
    assert_eq!(tb.spec.scope, "Namespaced");
    assert_eq!(
        tb.spec.names.short_names.as_deref(),
        Some(&["tb".to_string(), "tbudget".to_string()][..])
    );
    let v = &tb.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let cols: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for want in [
        "Period",
        "Limit",
        "Spent",
        "Remaining",
        "State",
        "Ready",
        "Age",
    ] {
        assert!(
            cols.contains(&want),
            "TokenBudget lacks printer column {want}: {cols:?}"
        );
    }
    let rp = tokenwarden_crds::RoutingPolicy::crd();
    let cols: Vec<_> = rp.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for want in ["Routes", "Ready", "Age"] {
        assert!(
            cols.contains(&want),
            "RoutingPolicy lacks printer column {want}: {cols:?}"
        );
    }
    // Conditions are a list-map keyed by type.
    let json = serde_json::to_value(&tb).unwrap();
    let cond = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["conditions"];
    assert_eq!(cond["x-kubernetes-list-type"], "map", "{cond}");
    assert_eq!(
        cond["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
}
