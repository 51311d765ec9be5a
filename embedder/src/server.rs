//! The HTTP server: OpenAI-compatible `POST /v1/embeddings` plus `/healthz`,
//! `/readyz` and Prometheus `/metrics`, on hyper 1 (HTTP/1.1).
//!
//! Bounded by construction: a body larger than `max_body_bytes` is refused
//! with 413 (by `Content-Length` before reading, and while reading), a request
//! with more than `max_inputs` inputs with 400, and at most `max_in_flight`
//! embeddings requests are admitted at once — the next one gets 503 at once
//! (OpenAI's SDKs retry 503). Inference runs on `spawn_blocking`, at most
//! `workers` batches at a time. On shutdown `/readyz` turns 503, the listener
//! closes, and requests in progress finish within the grace period.
//!
//! Input text is never logged: log lines carry counts, statuses and durations.

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    task::JoinSet,
};

use crate::{
    api::{self, ApiError, RequestRules},
    metrics::{ErrorLabels, Metrics, RequestLabels},
    model::Embedder,
};

/// Limits and names of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model name clients send in `model` and see in responses.
    pub model_name: String,
    /// Most inputs per request.
    pub max_inputs: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Embeddings requests admitted at once; more get 503.
    pub max_in_flight: usize,
    /// Inference batches run at once (blocking threads).
    pub workers: usize,
    /// How long requests in progress may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

/// What every connection shares.
#[derive(Debug)]
pub struct AppState {
    embedder: Arc<Embedder>,
    config: ServerConfig,
    /// The server's metrics (also served on `/metrics`).
    pub metrics: Metrics,
    in_flight: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    draining: AtomicBool,
}

impl AppState {
    /// State for a server of `embedder` under `config`.
    pub fn new(embedder: Arc<Embedder>, config: ServerConfig) -> Arc<AppState> {
        Arc::new(AppState {
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            workers: Arc::new(Semaphore::new(config.workers.max(1))),
            embedder,
            config,
            metrics: Metrics::new(),
            draining: AtomicBool::new(false),
        })
    }
}

/// Serves connections from `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        }
        while conns.try_join_next().is_some() {}
    }
    state.draining.store(true, Ordering::SeqCst);
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(state.config.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "shutdown grace period over; closing connections"
        );
        conns.abort_all();
    }
    Ok(())
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn error_response(state: &AppState, err: &ApiError, reason: &'static str) -> Response<Full<Bytes>> {
    state
        .metrics
        .errors
        .get_or_create(&ErrorLabels { reason })
        .inc();
    respond(err.status, "application/json", err.body())
}

async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let (route, resp) = match path.as_str() {
        "/v1/embeddings" if method == Method::POST => ("embeddings", embeddings(&state, req).await),
        "/healthz" | "/readyz" | "/metrics" if method == Method::GET || method == Method::HEAD => {
            (route_name(&path), probe(&state, &path))
        }
        "/v1/embeddings" | "/healthz" | "/readyz" | "/metrics" => {
            let allow = if path == "/v1/embeddings" {
                "POST"
            } else {
                "GET, HEAD"
            };
            let err = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                None,
                format!("Method {method} is not allowed on {path}; use {allow}"),
            );
            let mut resp = error_response(&state, &err, "method_not_allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            (route_name(&path), resp)
        }
        _ => {
            let err = ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                format!("Invalid URL ({method} {path})"),
            );
            ("other", error_response(&state, &err, "not_found"))
        }
    };
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    Ok(resp)
}

fn route_name(path: &str) -> &'static str {
    match path {
        "/v1/embeddings" => "embeddings",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        _ => "metrics",
    }
}

fn probe(state: &AppState, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => respond(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        "/readyz" if state.draining.load(Ordering::SeqCst) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            b"shutting down\n".to_vec(),
        ),
        "/readyz" => respond(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
        _ => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode().into_bytes(),
        ),
    }
}

async fn embeddings(state: &Arc<AppState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let Ok(_admitted) = state.in_flight.clone().try_acquire_owned() else {
        let err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            Some("overloaded"),
            "The embedder is overloaded; retry shortly",
        );
        return error_response(state, &err, "overloaded");
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!(
                "The request body exceeds {} bytes",
                state.config.max_body_bytes
            ),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.config.max_body_bytes as u64) {
        return error_response(state, &too_large(), "too_large");
    }
    let body = match Limited::new(req.into_body(), state.config.max_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error_response(state, &too_large(), "too_large");
        }
        Err(_) => {
            let err = ApiError::invalid(None, "The request body could not be read");
            return error_response(state, &err, "invalid_request");
        }
    };
    let rules = RequestRules {
        model_name: &state.config.model_name,
        dimensions: state.embedder.dimensions(),
        max_inputs: state.config.max_inputs,
    };
    let request = match api::parse_request(&body, &rules) {
        Ok(r) => r,
        Err(e) => {
            let reason = if e.code == Some("model_not_found") {
                "model_not_found"
            } else {
                "invalid_request"
            };
            return error_response(state, &e, reason);
        }
    };
    let Ok(worker) = state.workers.clone().acquire_owned().await else {
        let err = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            None,
            "The embedder is shutting down",
        );
        return error_response(state, &err, "overloaded");
    };
    let embedder = state.embedder.clone();
    let inputs = request.inputs;
    let joined = tokio::task::spawn_blocking(move || {
        let _worker = worker;
        let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
        embedder.embed_counted(&texts)
    })
    .await;
    let embedded = match joined {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "embedding failed");
            let err = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "The model failed to embed the input",
            );
            return error_response(state, &err, "internal");
        }
        Err(e) => {
            tracing::error!(error = %e, "embedding task failed");
            let err = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                "The embedding task failed",
            );
            return error_response(state, &err, "internal");
        }
    };
    let tokens: usize = embedded.tokens.iter().sum();
    let body = api::response_body(
        &request.model,
        &embedded.vectors,
        tokens,
        request.encoding_format,
    );
    let m = &state.metrics;
    m.inputs.inc_by(embedded.vectors.len() as u64);
    m.tokens.inc_by(tokens as u64);
    let elapsed = started.elapsed();
    m.latency.observe(elapsed.as_secs_f64());
    tracing::debug!(
        inputs = embedded.vectors.len(),
        tokens,
        ms = elapsed.as_secs_f64() * 1000.0,
        "embedded"
    );
    respond(StatusCode::OK, "application/json", body)
}
