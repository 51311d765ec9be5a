//! deploy/krew/tokenwarden.yaml, the Krew plugin manifest template, has the
//! fields Krew requires (https://krew.sigs.k8s.io/docs/developer-guide/plugin-manifest/):
//! the name of its file, a `v`-prefixed version equal to the workspace's, and
//! per platform an os/arch selector, a release archive URI of that version and
//! platform, a sha256 placeholder naming the platform, the binary among the
//! extracted files, and `bin: kubectl-tokenwarden` (the name kubectl looks up).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;

#[test]
fn the_krew_manifest_is_complete() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/krew/tokenwarden.yaml"
    );
    let m: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "tokenwarden", "the file's name");
    let spec = &m["spec"];
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(spec["version"], version.as_str());
    for f in ["homepage", "shortDescription", "description"] {
        assert!(!spec[f].as_str().unwrap_or("").is_empty(), "{f}");
    }
    let platforms = spec["platforms"].as_array().unwrap();
    let mut seen = Vec::new();
    for p in platforms {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap(),
        );
        seen.push(format!("{os}/{arch}"));
        assert_eq!(
            p["uri"],
            format!(
                "https://github.com/tokenwarden/tokenwarden/releases/download/{version}/\
                 kubectl-tokenwarden_{version}_{os}_{arch}.tar.gz"
            )
            .as_str()
        );
        assert_eq!(p["sha256"], format!("@SHA256_{os}_{arch}@").as_str());
        assert_eq!(p["bin"], "kubectl-tokenwarden");
        let files: Vec<&str> = p["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["from"].as_str().unwrap())
            .collect();
        assert!(files.contains(&"kubectl-tokenwarden"), "{files:?}");
    }
    assert_eq!(
        seen,
        ["linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"]
    );
}
