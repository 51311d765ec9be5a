//! What every demo workload shares: the routing-eval dev set the requests
//! are made of, and sending one request to a pod's sidecar.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::processes::HttpClient;

const DEV_SET: &str = include_str!("../../core/data/routing-eval/dev.jsonl");

/// One request of the routing-eval dev set.
#[derive(Deserialize)]
pub struct Item {
    label: String,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    content: String,
}

impl Item {
    /// A hard design/debugging task (not a trivial edit or exercise).
    pub fn hard(&self) -> bool {
        self.label == "hard"
    }

    pub fn prompt(&self) -> String {
        self.messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// The dev set (`core/data/routing-eval/dev.jsonl`).
pub fn dev_set() -> anyhow::Result<Vec<Item>> {
    DEV_SET
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).context("routing-eval dev set"))
        .collect()
}

/// (workload, hard, status, served model) of one request.
type Outcome = (&'static str, bool, u16, String);
pub type Tasks = Vec<JoinHandle<anyhow::Result<Outcome>>>;

/// Send `body` to a pod's sidecar; returns (status, served model).
pub async fn send(
    client: &HttpClient,
    port: u16,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let (status, h) = send_with_headers(client, port, path, headers, body).await?;
    let model = h
        .get("x-tokenwarden-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((status, model))
}

/// Send `body` to a pod's sidecar; returns (status, response headers).
pub async fn send_with_headers(
    client: &HttpClient,
    port: u16,
    path: &str,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> anyhow::Result<(u16, http::HeaderMap)> {
    let mut req = http::Request::post(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    if status != 200 && std::env::var_os("DEMO_DEBUG").is_some() {
        eprintln!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok((status, parts.headers))
}
