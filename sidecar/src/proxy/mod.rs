//! Request handling: parse, classify, route, reserve, forward (with
//! fallbacks), meter, settle.
//!
//! A metered request passes named stages, each in its own file:
//! `route::plan` (parse, classify, route: the `attempt::Plan` and the
//! first `attempt::Attempt`), `enforce::screen` (loop guard,
//! downgrade), then per attempt `enforce::admit` (budget and lease
//! reservations), `settle::intend` (the durable intent),
//! `forward::send`, `judge::judge` for a non-streaming answer the
//! escalation rules may send one tier up (the failed answer is settled and
//! kept, in case the attempt above cannot be made), and `respond::respond`
//! with the attempt's `settle::Settlement` for the body; a failed attempt
//! is settled (`settle::failed`) before `route::next_choice`.
//!
//! Paths:
//!
//! | request | handling |
//! |---|---|
//! | `POST /v1/chat/completions`, `/v1/responses`, `/v1/embeddings` | OpenAI API: routed, budgeted, metered |
//! | `POST /v1/messages` | Anthropic API: routed, budgeted, metered |
//! | `POST /v1/messages/count_tokens` | passed to the first Anthropic provider, not metered (it costs nothing) |
//! | `GET /v1/models` | passed to the first OpenAI provider (first Anthropic provider when the request carries `anthropic-version`), not metered |
//! | anything else | 404 in the provider's error shape (`x-tokenwarden-error: unknown_path`), counted in `tokenwarden_errors_total{reason="unknown_path"}` |

mod attempt;
mod budget_key;
mod cache;
mod enforce;
mod forward;
mod judge;
mod respond;
mod route;
mod semantic;
mod settle;

use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokenwarden_core::workload::{Api, Endpoint};

use self::{
    attempt::{Attempt, Plan},
    forward::{Sent, path_and_query, read_body, strip_hop_headers, upstream_headers},
    judge::Judged,
    respond::Kept,
    route::no_policy,
};
pub use self::{
    respond::headers,
    route::{ESCALATE_HEADER, MAX_MODEL_BYTES},
};
use crate::{
    body::{InFlight, ProxyBody, TapBody},
    error::ProxyError,
    redact,
    state::Shared,
};

/// What kind of request this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Metered(Endpoint),
    Passthrough(Api),
}

fn classify_path(method: &Method, path: &str, headers: &HeaderMap) -> Option<Kind> {
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => Some(Kind::Metered(Endpoint::ChatCompletions)),
        (&Method::POST, "/v1/responses") => Some(Kind::Metered(Endpoint::Responses)),
        (&Method::POST, "/v1/embeddings") => Some(Kind::Metered(Endpoint::Embeddings)),
        (&Method::POST, "/v1/messages") => Some(Kind::Metered(Endpoint::Messages)),
        (&Method::POST, "/v1/messages/count_tokens") => Some(Kind::Passthrough(Api::Anthropic)),
        (&Method::GET, "/v1/models") => {
            Some(Kind::Passthrough(if guess_api(headers) == Api::Anthropic {
                Api::Anthropic
            } else {
                Api::OpenAi
            }))
        }
        _ => None,
    }
}

/// Which provider's error shape an app most likely expects.
fn guess_api(headers: &HeaderMap) -> Api {
    if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        Api::Anthropic
    } else {
        Api::OpenAi
    }
}

/// Handle one app request. Never fails: every error becomes a provider-shaped response.
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    // In flight until the response body is done (streams included).
    let in_flight = InFlight::new(&shared);
    let kind = classify_path(req.method(), req.uri().path(), req.headers());
    let api = match kind {
        Some(Kind::Metered(e)) => e.api(),
        Some(Kind::Passthrough(a)) => a,
        None => guess_api(req.headers()),
    };
    let result = match kind {
        Some(Kind::Metered(endpoint)) => detached(shared.clone(), endpoint, req).await,
        Some(Kind::Passthrough(api)) => passthrough(&shared, api, req).await,
        None => Err(ProxyError::UnknownPath {
            method: req.method().to_string(),
            path: req.uri().path().chars().take(200).collect(),
        }),
    };
    let mut resp = result.unwrap_or_else(|e| {
        shared.metrics.error(e.label());
        e.to_response(api)
    });
    if let ProxyBody::Tap(tap) = resp.body_mut() {
        tap.hold(in_flight);
    }
    resp
}

/// Run a metered request in a task of its own, so that it outlives the
/// app's connection: an app that goes away (an HTTP/1.1 close, an h2
/// `RST_STREAM`, a client timeout) while the upstream request is in flight
/// drops only this future, not the request. The provider bills a request
/// it answers whether or not anyone reads the answer; the task reads it to
/// its end (bounded by the per-try timeout) so the attempt is settled from
/// the provider's usage, and its reservation released, either way. A
/// request whose app left before it was forwarded is not forwarded.
async fn detached(
    shared: Arc<Shared>,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Boxed: the request's future is several KB, and spawning moves it.
    tokio::spawn(Box::pin(async move {
        let app = AppLink(tx);
        let result = metered(&shared, endpoint, req, &app).await;
        if let Err(Ok(resp)) = app.0.send(result) {
            shared.metrics.error("client_gone");
            drain(&shared, resp).await;
        }
    }));
    // The task only drops its sender unanswered if it panicked.
    rx.await.unwrap_or(Err(ProxyError::Internal))
}

/// The way back to the app's connection.
struct AppLink(tokio::sync::oneshot::Sender<Result<Response<ProxyBody>, ProxyError>>);

impl AppLink {
    /// The app went away (its connection closed or its stream was reset).
    fn gone(&self) -> bool {
        self.0.is_closed()
    }
}

/// Read a response nobody will receive to its end, so its tap settles the
/// attempt from the provider's usage. Bounded by the per-try timeout of
/// the active config: past it the body is dropped and the attempt settled
/// as cut (an estimate from what passed).
async fn drain(shared: &Shared, mut resp: Response<ProxyBody>) {
    let bound = shared
        .active
        .load()
        .as_ref()
        .and_then(|a| a.router.as_ref())
        .map_or(crate::args::DEFAULT_DRAIN, |r| {
            std::time::Duration::from_millis(r.config().fallback.per_try_timeout_ms)
        });
    let body = resp.body_mut();
    let _ = tokio::time::timeout(bound, async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    })
    .await;
}

async fn passthrough(
    shared: &Shared,
    api: Api,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let active = shared.active.load_full().ok_or(ProxyError::NotReady)?;
    let router = active.router.as_ref().ok_or_else(|| no_policy(&active))?;
    let cfg = router.config();
    let provider = cfg
        .providers
        .iter()
        .position(|p| p.api == api)
        .ok_or_else(|| {
            ProxyError::NoRoute(format!(
                "no provider in RoutingPolicy {} speaks the {} API",
                cfg.source,
                api.as_str()
            ))
        })?;
    let link = active.link(provider)?;
    let auth = link.auth()?;
    let path_and_query = path_and_query(&req);
    let (parts, body) = read_body(shared, req).await?;
    let mut up = Request::new(Full::new(body));
    *up.method_mut() = parts.method.clone();
    *up.uri_mut() = link.uri(&path_and_query)?;
    *up.headers_mut() = upstream_headers(&parts.headers, auth);
    let resp = shared
        .client
        .request(up)
        .await
        .map_err(|e| ProxyError::UpstreamUnreachable(e.to_string()))?;
    shared.metrics.route("passthrough", "", "routed");
    let (mut parts, body) = resp.into_parts();
    strip_hop_headers(&mut parts.headers);
    let secret = link.secret_finder();
    if let Some(s) = secret {
        redact::redact_headers(s, &mut parts.headers);
    }
    let tap = if parts.status.is_success() {
        TapBody::plain(body)
    } else {
        TapBody::plain(body).redacting(secret)
    };
    Ok(Response::from_parts(parts, ProxyBody::Tap(Box::new(tap))))
}

/// A metered request; when traced, a failure (a budget's refusal, an
/// upstream that cannot be reached) is said on its span.
async fn metered(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    app: &AppLink,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut trace = None;
    let result = metered_stages(shared, endpoint, req, app, &mut trace).await;
    if let (Err(e), Some(span)) = (&result, trace) {
        span.failed(e.label());
    }
    result
}

/// A metered request, stage by stage: routed once, screened by the
/// budgets once, then attempted (admitted, recorded, sent) until an
/// attempt is answered or fails for good. The request's span, once
/// started, goes in `trace` as well.
async fn metered_stages(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    app: &AppLink,
    trace: &mut Option<Arc<crate::otel::RequestSpan>>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // The latency the sidecar adds counts from here to the first send.
    let arrived = std::time::Instant::now();
    let active = shared.active.load_full().ok_or(ProxyError::NotReady)?;
    let path_and_query = path_and_query(&req);
    let (parts, body) = read_body(shared, req).await?;
    let (mut plan, mut attempt) = route::plan(
        shared,
        &active,
        endpoint,
        &parts.headers,
        path_and_query,
        &body,
    )?;
    if let Some(otel) = &shared.otel {
        attempt.trace.request = Some(otel.request(
            &parts.headers,
            crate::otel::RequestStart {
                endpoint,
                model: &attempt.requested_model,
                max_tokens: plan.parsed.max_output_tokens,
                route: attempt.route.as_deref(),
                score: attempt.score,
            },
        ));
        trace.clone_from(&attempt.trace.request);
    }
    // Before the budgets: a hit costs nothing and holds nothing.
    if let Some(resp) = cache::lookup(&mut plan, &attempt).await {
        return Ok(resp);
    }
    enforce::screen(&mut plan, &mut attempt)?;
    // The last answer that failed an escalation rule, for when the attempt
    // one tier up cannot be made or fails.
    let mut kept: Option<Kept> = None;
    loop {
        attempt.number += 1;
        let sent = match send_attempt(&mut plan, &mut attempt, app, arrived).await {
            Ok(sent) => sent,
            Err(e) => return kept.map(|k| k.into_response(attempt.number - 1)).ok_or(e),
        };
        match sent {
            Sent::Answer(resp) => {
                if !resp.status().is_success()
                    && let Some(k) = kept.take()
                {
                    // One tier up answered with an error: the kept answer
                    // serves the app better.
                    settle::failed(shared, &active, &mut attempt, resp.status().as_u16());
                    return Ok(k.into_response(attempt.number));
                }
                let Some(up) = judge::next_up(&plan, &attempt, &resp) else {
                    return Ok(respond::respond(&plan, attempt, resp).await);
                };
                match judge::judge(&mut plan, attempt, resp, up).await {
                    Judged::Done(resp) => return Ok(resp),
                    Judged::Again(k, again) => {
                        kept = Some(k);
                        attempt = *again;
                    }
                }
            }
            Sent::Fail(e) => {
                settle::failed(shared, &active, &mut attempt, 0);
                return kept.map(|k| k.into_response(attempt.number)).ok_or(e);
            }
            Sent::Retry(failure) => {
                // Meter the failed attempt (no usage) and go again.
                settle::failed(shared, &active, &mut attempt, failure.status());
                route::next_choice(&mut plan, &mut attempt, &failure);
            }
        }
    }
}

/// One attempt: admitted by the budgets, its intent recorded, sent. The
/// first attempt's send ends the latency the sidecar added (`arrived`: when
/// the request came in).
async fn send_attempt(
    plan: &mut Plan<'_>,
    attempt: &mut Attempt,
    app: &AppLink,
    arrived: std::time::Instant,
) -> Result<Sent, ProxyError> {
    let active = plan.active;
    let link = active.link(attempt.choice.provider)?;
    let auth = link.auth()?;
    // Before anything is reserved: an early return here holds nothing.
    let uri = link.uri(&plan.path_and_query)?;
    let prompt_bound = enforce::admit(plan, attempt, link).await?;
    let mut up = forward::upstream_request(plan, attempt, uri, auth);
    forwardable(plan, attempt, app, prompt_bound)?;
    if let Some(request) = &attempt.trace.request {
        let api = plan.cfg.providers[attempt.choice.provider].api;
        attempt.trace.span = Some(request.attempt(
            attempt.endpoint,
            api,
            &attempt.choice.model,
            attempt.number,
            up.headers_mut(),
        ));
    }
    if attempt.number == 1 {
        plan.shared
            .metrics
            .overhead(arrived.elapsed().as_secs_f64());
    }
    Ok(forward::send(plan, attempt, up).await)
}

/// The last checks before an admitted attempt is sent: the app still
/// waits for the answer (nobody would read it: do not buy it), and its
/// intent is in the durable ledger. Otherwise its holds are given back.
fn forwardable(
    plan: &Plan<'_>,
    attempt: &mut Attempt,
    app: &AppLink,
    prompt_bound: u64,
) -> Result<(), ProxyError> {
    let result = if app.gone() {
        Err(ProxyError::ClientGone)
    } else {
        settle::intend(plan, attempt, prompt_bound)
    };
    if result.is_err() {
        enforce::release_unforwarded(plan.shared, attempt);
    }
    result
}
