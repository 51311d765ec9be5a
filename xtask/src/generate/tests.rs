use std::path::Path;

use super::*;

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let outputs = crds::outputs().unwrap();
    assert_eq!(outputs.len(), 3);
    let drifts = check(repo_root(), &outputs).unwrap();
    assert!(
        drifts.is_empty(),
        "generated CRD YAML is stale: {drifts:?}\nrun `cargo xtask gen`"
    );
}

#[test]
fn first_difference_names_the_line() {
    let out = Output {
        path: "x.yaml".into(),
        contents: "a\nb\nc\n".into(),
    };
    assert_eq!(compare(&out, Some("a\nb\nc\n")), None);
    assert_eq!(
        compare(&out, None).unwrap().to_string(),
        "x.yaml is stale (missing)"
    );
    assert_eq!(
        compare(&out, Some("a\nB\nc\n")).unwrap().to_string(),
        r#"x.yaml is stale (line 2: committed "B", generated "b")"#
    );
    // A lost trailing newline is a difference on the last line.
    assert_eq!(
        compare(&out, Some("a\nb\nc")).unwrap().kind,
        DriftKind::Line {
            line: 4,
            committed: "<end of file>".into(),
            generated: String::new()
        }
    );
}

#[test]
fn write_rewrites_only_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let outputs = vec![
        Output {
            path: "a/one.txt".into(),
            contents: "1\n".into(),
        },
        Output {
            path: "two.txt".into(),
            contents: "2\n".into(),
        },
    ];
    assert_eq!(
        write(dir.path(), &outputs).unwrap(),
        ["a/one.txt", "two.txt"]
    );
    assert!(check(dir.path(), &outputs).unwrap().is_empty());
    std::fs::write(dir.path().join("two.txt"), "3\n").unwrap();
    assert_eq!(write(dir.path(), &outputs).unwrap(), ["two.txt"]);
    assert!(write(dir.path(), &outputs).unwrap().is_empty());
}
