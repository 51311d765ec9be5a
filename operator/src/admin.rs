//! The operator's admin endpoints: `/healthz`, `/readyz`, `/metrics`,
//! `/ledger` (JSON: the cluster ledger, budgets and connected sidecars).

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::oneshot};

use crate::{control::EngineHandle, metrics::Metrics, source::Leadership};

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The engine, once leading and synced.
    pub engine: EngineHandle,
    /// Leadership.
    pub leadership: tokio::sync::watch::Receiver<Leadership>,
    /// Whether the object source has synced.
    pub synced: tokio::sync::watch::Receiver<bool>,
    /// The control server's certificate, when it speaks TLS (not ready
    /// until one is loaded).
    pub tls: Option<crate::webhook::server::CertStore>,
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

async fn handle(state: AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            // Ready once the objects are synced: every replica serves the
            // webhook; only the leader serves sidecars (see the leader label).
            if state.tls.as_ref().is_some_and(|t| t.current().is_none()) {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no TLS certificate loaded yet\n",
                )
            } else if *state.synced.borrow() {
                let role = if state.leadership.borrow().leader {
                    "leader"
                } else {
                    "standby"
                };
                reply(StatusCode::OK, "text/plain", format!("ok ({role})\n"))
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "objects not synced yet\n",
                )
            }
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.render(),
        ),
        "/ledger" => {
            let engine = state.engine.borrow().clone();
            let Some(engine) = engine else {
                let leader = state.leadership.borrow().leader_address.clone();
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "application/json",
                    serde_json::json!({
                        "error": "this replica does not hold the ledger (not the leader, or starting)",
                        "leader": leader,
                    })
                    .to_string(),
                );
            };
            let (tx, rx) = oneshot::channel();
            if engine.send(crate::engine::Cmd::Ledger(tx)).await.is_err() {
                return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n");
            }
            match rx.await {
                Ok(v) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(&v).unwrap_or_default(),
                ),
                Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n"),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz, /metrics or /ledger\n",
        ),
    }
}

/// Serve the admin endpoints until the process ends.
pub async fn serve(listener: TcpListener, state: AdminState) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
