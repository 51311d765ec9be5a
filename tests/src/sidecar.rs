//! The real sidecar binary as a child process, and the app in front of it:
//! its ports, its command line, restart on the same ports, waiting for
//! `/readyz`, and an HTTP client that sends requests as the OpenAI and
//! Anthropic SDKs do and reads the admin endpoints.

use std::{
    ffi::OsString,
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    probe::wait_http,
    process::{Proc, free_port, workspace_bin},
};

/// The app's HTTP client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A response as the app saw it.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    #[allow(clippy::panic)]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A sidecar process (not started until [`SidecarProc::spawn`]).
pub struct SidecarProc {
    /// The binary.
    pub bin: PathBuf,
    /// The app listener (`--listen`).
    pub app: SocketAddr,
    /// The admin listener (`--admin-listen`).
    pub admin: SocketAddr,
    /// The flags besides the two listeners.
    pub args: Vec<OsString>,
    /// `RUST_LOG` (default `warn`).
    pub rust_log: String,
    /// Environment variables set for the process besides the inherited
    /// ones (e.g. `OTEL_*`).
    pub env: Vec<(OsString, OsString)>,
    /// stderr into this file (truncated at each start); `None`: inherited.
    pub log: Option<PathBuf>,
    /// Wait for `/readyz` after spawning (default: yes).
    pub wait_ready: bool,
    /// How long [`SidecarProc::send`] waits for an answer (default 20 s).
    pub timeout: Duration,
    /// The running process.
    pub proc: Proc,
    /// The app's client.
    pub client: HttpClient,
}

impl SidecarProc {
    /// The workspace's sidecar binary, on two free ports, no flags yet.
    pub fn new() -> SidecarProc {
        Self::with_bin(workspace_bin("tokenwarden-sidecar"))
    }

    /// `bin`, on two free ports, no flags yet.
    pub fn with_bin(bin: PathBuf) -> SidecarProc {
        SidecarProc {
            bin,
            app: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            args: Vec::new(),
            rust_log: "warn".into(),
            env: Vec::new(),
            log: None,
            wait_ready: true,
            timeout: Duration::from_secs(20),
            proc: Proc(None),
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    /// Add one flag or value.
    pub fn arg(&mut self, a: impl Into<OsString>) -> &mut SidecarProc {
        self.args.push(a.into());
        self
    }

    /// Add flags and values.
    pub fn args<I, S>(&mut self, args: I) -> &mut SidecarProc
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The command line, ready to run.
    ///
    /// # Panics
    /// When the log file cannot be created.
    #[allow(clippy::expect_used)]
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .args([
                "--listen",
                &self.app.to_string(),
                "--admin-listen",
                &self.admin.to_string(),
            ])
            .env("RUST_LOG", &self.rust_log)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null());
        match &self.log {
            Some(p) => cmd.stderr(std::fs::File::create(p).expect("the sidecar's log file")),
            None => cmd.stderr(Stdio::inherit()),
        };
        cmd
    }

    /// (Re)start it on the same ports and flags; waits (10 s) for `/readyz`
    /// when [`SidecarProc::wait_ready`].
    ///
    /// # Panics
    /// When it cannot be started or does not become ready.
    #[allow(clippy::expect_used)]
    pub fn spawn(&mut self) {
        let child = self.command().spawn().expect("the sidecar starts");
        self.proc = Proc(Some(child));
        if self.wait_ready {
            wait_http(self.admin, "/readyz", 10);
        }
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        self.proc.kill9();
    }

    /// Send a request as the app.
    ///
    /// # Panics
    /// When the sidecar does not answer within [`SidecarProc::timeout`].
    #[allow(clippy::expect_used)]
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
        let req = req.body(Full::new(body.into())).expect("a request");
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .unwrap_or_else(|_| panic_timeout(self.timeout))
            .expect("the sidecar answers");
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

    /// GET on the admin port.
    ///
    /// # Panics
    /// When nothing answers.
    #[allow(clippy::expect_used)]
    pub async fn admin_get(&self, path: &str) -> Reply {
        let req = Request::get(format!("http://{}{path}", self.admin))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let resp = self.client.request(req).await.expect("the admin answers");
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("a body").to_bytes(),
        }
    }

    /// `/ledger` as JSON.
    pub async fn ledger(&self) -> serde_json::Value {
        self.admin_get("/ledger").await.json()
    }

    /// The per-model ledger row of `model` (served).
    ///
    /// # Panics
    /// When there is none.
    #[allow(clippy::panic)]
    pub async fn model_row(&self, model: &str) -> serde_json::Value {
        let l = self.ledger().await;
        l["models"]
            .as_array()
            .and_then(|rows| rows.iter().find(|m| m["model"] == model))
            .cloned()
            .unwrap_or_else(|| panic!("no ledger row for {model}: {l}"))
    }
}

impl Default for SidecarProc {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(clippy::panic)]
fn panic_timeout(t: Duration) -> ! {
    panic!("sidecar answered within {} s", t.as_secs())
}
