//! Three-party harness: the fake provider (in-process), the real sidecar
//! binary between it and the test, which plays the app.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
pub use tokenwarden_tests::fake_provider::{FakeConfig, FakeProvider};

/// A free port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running sidecar process.
pub struct Sidecar {
    pub app: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub client: Client<HttpConnector, Full<Bytes>>,
    extra_args: Vec<String>,
    /// Connected mode: the control plane URL (instead of the policy file).
    pub control_plane: Option<String>,
    /// Wait for /readyz after spawning.
    pub wait_ready: bool,
}

/// A response as the app saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
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

    /// Everything laid out (keys, policy, ports), the process not started:
    /// for tests that prepare the state dir first.
    pub fn unstarted(policy_yaml: &str, extra: &[&str]) -> Sidecar {
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
        std::fs::write(dir.path().join("policy.yaml"), policy_yaml).unwrap();
        Sidecar {
            app: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            child: None,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            control_plane: None,
            wait_ready: true,
        }
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
        std::fs::write(dir.path().join("credential"), format!("{credential}\n")).unwrap();
        let mut s = Sidecar {
            app: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            child: None,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            control_plane: Some(url.to_string()),
            wait_ready,
        };
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

    /// (Re)start the process on the same ports and state dir.
    pub fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden-sidecar"));
        match &self.control_plane {
            None => cmd.arg("--policy-file").arg(self.policy_path()),
            Some(url) => cmd
                .args(["--control-plane", url, "--credential-file"])
                .arg(self.dir.path().join("credential"))
                .args(["--pod-name", "agent-0", "--pod-uid", "uid-1234"]),
        };
        let child = cmd
            .arg("--secrets-dir")
            .arg(self.secrets_dir())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(["--namespace", "apps", "--labels", "app=agent,team=search"])
            .args([
                "--listen",
                &self.app.to_string(),
                "--admin-listen",
                &self.admin.to_string(),
            ])
            .args(["--reload-interval-ms", "100", "--threads", "2"])
            .args(&self.extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        if self.wait_ready {
            wait_ready(self.admin);
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.app));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .request(req.body(Full::new(body.into())).unwrap()),
        )
        .await
        .expect("sidecar answered within 20 s")
        .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POST JSON as an OpenAI SDK would.
    pub async fn openai(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![
            ("content-type", "application/json"),
            ("authorization", "Bearer app-key-not-real"),
        ];
        h.extend_from_slice(headers);
        self.send(Method::POST, path, &h, body.to_string()).await
    }

    /// POST JSON as the Anthropic SDK would.
    pub async fn anthropic(&self, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![
            ("content-type", "application/json"),
            ("x-api-key", "app-key-not-real"),
            ("anthropic-version", "2023-06-01"),
        ];
        h.extend_from_slice(headers);
        self.send(Method::POST, "/v1/messages", &h, body.to_string())
            .await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        let req = Request::get(format!("http://{}{path}", self.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    pub async fn ledger(&self) -> serde_json::Value {
        self.admin_get("/ledger").await.json()
    }

    /// The per-model ledger row of `model` (served).
    pub async fn model_row(&self, model: &str) -> serde_json::Value {
        let l = self.ledger().await;
        l["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == model)
            .cloned()
            .unwrap_or_else(|| panic!("no ledger row for {model}: {l}"))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(admin) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "sidecar not ready on {admin} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
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
