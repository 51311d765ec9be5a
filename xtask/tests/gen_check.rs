//! `cargo xtask gen --check` catches a hand edit of a generated file, and a
//! deleted one, naming the file and the line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn xtask(args: &[&str], root: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn gen_check_catches_a_hand_edit() {
    let dir = tempfile::tempdir().unwrap();
    // Generate the CRDs into a scratch root, then check it: clean.
    let out = xtask(&["gen", "crds"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = xtask(&["gen", "--check", "crds"], dir.path());
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
    let out = xtask(&["gen", "--check", "crds"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("deploy/crds.yaml is stale"), "{stderr}");
    assert!(stderr.contains("maxItems: 17"), "{stderr}");
    assert!(stderr.contains("run `cargo xtask gen`"), "{stderr}");

    // A deleted file is caught too.
    std::fs::remove_file(
        dir.path()
            .join("charts/tokenwarden/crds/tokenbudgets.tokenwarden.dev.yaml"),
    )
    .unwrap();
    let out = xtask(&["gen", "--check", "crds"], dir.path());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("tokenbudgets.tokenwarden.dev.yaml is stale (missing)")
    );
}

#[test]
fn gen_without_the_catalog_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = xtask(&["gen", "--check", "catalog"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("catalog: cannot read") && stderr.contains("data_slim.json"),
        "{stderr}"
    );
}
