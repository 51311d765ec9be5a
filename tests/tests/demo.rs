//! The README's first command: the demo runs end to end and tells the story.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::PathBuf, process::Command};

#[test]
fn the_demo_routes_meters_and_compares_with_the_flagship() {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_tokenwarden-demo"));
    let sidecar = demo.with_file_name("tokenwarden-sidecar");
    assert!(
        sidecar.exists(),
        "{} is missing: run the workspace tests (cargo test --workspace builds it)",
        sidecar.display()
    );
    let out = Command::new(&demo)
        .env("TOKENWARDEN_SIDECAR_BIN", &sidecar)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("229 requests (137 trivial edits/exercises, 92 hard design/debugging tasks)"),
        "{stdout}"
    );
    assert!(stdout.contains("; 0 failed"), "{stdout}");
    let saved: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("saved ").and_then(|r| r.split('%').next()))
        .unwrap_or_else(|| panic!("no savings line: {stdout}"))
        .parse()
        .unwrap();
    assert!(
        saved > 50.0,
        "routing should save most of the flagship bill: {saved}%\n{stdout}"
    );
    for model in ["claude-haiku-4-5", "claude-sonnet-4-5"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(model)),
            "no ledger row for {model}: {stdout}"
        );
    }
}
