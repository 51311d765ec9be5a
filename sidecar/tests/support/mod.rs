//! Three-party harness: the fake provider (in-process), the real sidecar
//! binary between it and the test, which plays the app. The process, its
//! ports and the app's client are `tokenwarden_tests::sidecar`; this file
//! lays out what these tests give it (provider keys, policy, namespace
//! `apps`, labels `app=agent,team=search`).

#![allow(
    dead_code,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::{
    ffi::OsString,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
};

pub use tokenwarden_tests::{
    fake_provider::{FakeConfig, FakeProvider},
    process::free_port,
    sidecar::{Reply, SidecarProc},
};

/// A sidecar process in its own directory: `secrets/`, `policy.yaml`,
/// `credential`, `state/`.
pub struct Sidecar {
    proc: SidecarProc,
    pub dir: tempfile::TempDir,
    extra_args: Vec<String>,
    /// Connected mode: the control plane URL (instead of the policy file).
    pub control_plane: Option<String>,
}

impl Deref for Sidecar {
    type Target = SidecarProc;
    fn deref(&self) -> &SidecarProc {
        &self.proc
    }
}

impl DerefMut for Sidecar {
    fn deref_mut(&mut self) -> &mut SidecarProc {
        &mut self.proc
    }
}

/// A policy file for `provider` with the given extra YAML documents appended.
pub fn policy(fake: &FakeProvider, routing_spec_extra: &str, more_docs: &str) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: test-policy, namespace: apps}}
spec:
  providers:
    - {{name: openai, api: openai, baseUrl: "{url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
    - {{name: anthropic, api: anthropic, baseUrl: "{url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
{routing_spec_extra}
{more_docs}"#,
        url = fake.base_url()
    )
}

/// A directory with the provider keys.
fn keys_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("secrets/llm-keys")).unwrap();
    std::fs::write(
        dir.path().join("secrets/llm-keys/openai"),
        "sk-fake-openai\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("secrets/llm-keys/anthropic"),
        "sk-fake-anthropic\n",
    )
    .unwrap();
    dir
}

impl Sidecar {
    /// Start with `policy_yaml`; waits for /readyz.
    pub fn start(policy_yaml: &str) -> Sidecar {
        Self::start_with(policy_yaml, &[])
    }

    pub fn start_with(policy_yaml: &str, extra: &[&str]) -> Sidecar {
        let mut s = Self::unstarted(policy_yaml, extra);
        s.spawn();
        s
    }

    fn laid_out(dir: tempfile::TempDir, extra: &[&str], control_plane: Option<&str>) -> Sidecar {
        Sidecar {
            proc: SidecarProc::with_bin(PathBuf::from(env!("CARGO_BIN_EXE_tokenwarden-sidecar"))),
            dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            control_plane: control_plane.map(str::to_string),
        }
    }

    /// Everything laid out (keys, policy, ports), the process not started:
    /// for tests that prepare the state dir first.
    pub fn unstarted(policy_yaml: &str, extra: &[&str]) -> Sidecar {
        let dir = keys_dir();
        std::fs::write(dir.path().join("policy.yaml"), policy_yaml).unwrap();
        Self::laid_out(dir, extra, None)
    }

    /// Start in connected mode against `url`, with the credential file
    /// `DIR/credential` holding `credential`. Waits for /readyz when
    /// `wait_ready` (the operator must send a snapshot).
    pub fn start_connected(
        url: &str,
        credential: &str,
        extra: &[&str],
        wait_ready: bool,
    ) -> Sidecar {
        let dir = keys_dir();
        std::fs::write(dir.path().join("credential"), format!("{credential}\n")).unwrap();
        let mut s = Self::laid_out(dir, extra, Some(url));
        s.proc.wait_ready = wait_ready;
        s.spawn();
        s
    }

    pub fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    /// The flags for the current directory (which a test may swap).
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match &self.control_plane {
            None => a.extend(["--policy-file".into(), self.policy_path().into()]),
            Some(url) => a.extend([
                "--control-plane".into(),
                url.into(),
                "--credential-file".into(),
                self.dir.path().join("credential").into(),
                "--pod-name".into(),
                "agent-0".into(),
                "--pod-uid".into(),
                "uid-1234".into(),
            ]),
        }
        a.extend([
            "--secrets-dir".into(),
            self.secrets_dir().into(),
            "--state-dir".into(),
            self.state_dir().into(),
        ]);
        for s in [
            "--namespace",
            "apps",
            "--labels",
            "app=agent,team=search",
            "--reload-interval-ms",
            "100",
            "--threads",
            "2",
        ] {
            a.push(s.into());
        }
        a.extend(self.extra_args.iter().map(OsString::from));
        a
    }

    /// (Re)start the process on the same ports and state dir.
    pub fn spawn(&mut self) {
        self.proc.args = self.args();
        self.proc.spawn();
    }
}

/// Concatenated `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: ").map(str::to_string))
        })
        .collect()
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// `"0.000123"` (a decimal amount in USD) → picodollars.
pub fn picos(s: &str) -> i128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<12}");
    int.parse::<i128>().unwrap() * 1_000_000_000_000 + frac.parse::<i128>().unwrap()
}

/// A JSON decimal string (`cost_usd`, `spent_usd`) → picodollars.
pub fn cost_str(v: &serde_json::Value) -> i128 {
    picos(
        v.as_str()
            .unwrap_or_else(|| panic!("not a decimal string: {v}")),
    )
}

/// A TokenBudget document in namespace `apps` with `spec` lines (indented
/// two spaces), to append to [`policy`].
pub fn budget(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{spec}\n"
    )
}

/// The value of a sample of `name` whose labels include every `labels`
/// pair, if any.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (lbls, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let all = labels
            .iter()
            .all(|(k, v)| lbls.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        all.then(|| value.trim().parse().unwrap())
    })
}

/// The sidecar's `/metrics` text.
pub async fn metrics(sc: &Sidecar) -> String {
    sc.admin_get("/metrics").await.text()
}
