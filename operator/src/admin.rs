//! The operator's admin endpoints: `/healthz`, `/readyz`, `/metrics`,
//! `/ledger` (JSON: the cluster ledger, budgets and connected sidecars).
//!
//! `/healthz`, `/readyz` and `/metrics` answer every client (probes and
//! scrapers come over the pod network). `/ledger` is usage data: it answers
//! loopback clients (`kubectl port-forward` arrives on loopback too) and,
//! when the mode provides a [`LedgerAccess`] (Kubernetes: TokenReview and
//! SubjectAccessReview, as kube-rbac-proxy does), a request whose
//! `Authorization: Bearer` token it accepts. Anyone else gets 401 (no or an
//! invalid token) or 403 (not allowed) with the reason in plain text.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::oneshot,
};

use crate::{
    control::EngineHandle,
    metrics::Metrics,
    source::{BoxFuture, Leadership},
};

/// Why a bearer token does not open `/ledger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDenied {
    /// The token is not valid (401).
    Unauthenticated(String),
    /// The token is valid, but its user may not read the ledger (403).
    Forbidden(String),
    /// The token could not be checked (503): the API server failed.
    Unavailable(String),
}

/// Decides whether the holder of a bearer token may read `/ledger`.
pub trait LedgerAccess: Send + Sync {
    /// `Ok(user)` when the token's user may read the cluster ledger.
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<String, AccessDenied>>;
}

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
    /// Who besides loopback clients may read `/ledger` (`None`: nobody).
    pub ledger_access: Option<Arc<dyn LedgerAccess>>,
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The bearer token of an `Authorization` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(why: &str) -> Response<Full<Bytes>> {
    let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", format!("{why}\n"));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"tokenwarden-operator\""),
    );
    r
}

/// `None` when `peer` may read `/ledger`, else the refusal.
async fn ledger_refusal(
    state: &AdminState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    if crate::args::is_loopback(peer.ip()) {
        return None;
    }
    let Some(access) = &state.ledger_access else {
        return Some(reply(
            StatusCode::FORBIDDEN,
            "text/plain",
            "forbidden: /ledger answers loopback clients only\n",
        ));
    };
    let Some(token) = bearer(headers) else {
        return Some(unauthorized(
            "unauthorized: /ledger needs `Authorization: Bearer <token>` \
             (a service-account token whose user may get tokenbudgets.tokenwarden.dev)",
        ));
    };
    match access.review(token).await {
        Ok(user) => {
            tracing::debug!(%peer, %user, "/ledger read");
            None
        }
        Err(denied) => {
            tracing::debug!(%peer, ?denied, "/ledger refused");
            Some(match denied {
                AccessDenied::Unauthenticated(why) => {
                    unauthorized(&format!("unauthorized: invalid bearer token: {why}"))
                }
                AccessDenied::Forbidden(why) => reply(
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    format!("forbidden: {why}\n"),
                ),
                AccessDenied::Unavailable(why) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("cannot check the bearer token: {why}\n"),
                ),
            })
        }
    }
}

async fn handle<B>(state: AdminState, peer: SocketAddr, req: Request<B>) -> Response<Full<Bytes>> {
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
            if let Some(refusal) = ledger_refusal(&state, peer, req.headers()).await {
                return refusal;
            }
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
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(serve_connection(stream, peer, state.clone()));
    }
}

/// Serve one connection from `peer` (HTTP/1.1 or HTTP/2).
pub async fn serve_connection<I>(io: I, peer: SocketAddr, state: AdminState)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, peer, req).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}
