//! Request handling: parse, classify, route, reserve, forward (with
//! fallbacks), meter, settle.
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

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
    uri::PathAndQuery,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use jiff::Timestamp;
use tokenwarden_core::{
    budget::{Ask, Held},
    catalog::Usage,
    classify::{self, RequestView},
    config::{Api, Endpoint},
    ledger::{BudgetPeriodRef, UsageRecord},
    money::Usd,
    route::{Choice, RequestFacts},
};

use crate::{
    body::{ProxyBody, Settlement, TapBody, TapMode},
    error::ProxyError,
    link::Link,
    meter::{self, Flavor, SseTap},
    redact, request,
    state::{Active, Shared, lock},
};

/// Response headers set by the sidecar.
pub mod headers {
    /// The model that served (as routed; the body's `model` has the provider's exact name).
    pub const MODEL: &str = "x-tokenwarden-model";
    /// The route that matched, or `none`.
    pub const ROUTE: &str = "x-tokenwarden-route";
    /// Upstream attempts made.
    pub const ATTEMPTS: &str = "x-tokenwarden-attempts";
    /// Complexity score and why, when computed.
    pub const SCORE: &str = "x-tokenwarden-score";
    /// Cost of the response in USD, when known before the body is sent.
    pub const COST: &str = "x-tokenwarden-cost-usd";
    /// What changed the model: `escalated`, `downgraded`, `fallback`.
    pub const ADJUSTED: &str = "x-tokenwarden-adjusted";
    /// Budgets that would have refused the request in shadow mode.
    pub const SHADOW: &str = "x-tokenwarden-shadow-block";
}

/// The longest `model` a request may name (real ones are under 100 bytes).
pub const MAX_MODEL_BYTES: usize = 256;

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

/// Counts a request in `tokenwarden_in_flight_requests` while alive.
pub struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.metrics.in_flight().inc();
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight().dec();
    }
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlight")
    }
}

fn path_and_query(req: &Request<Incoming>) -> PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

async fn read_body(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), ProxyError> {
    let limit = shared.options.max_body_bytes;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let timeout = shared.options.body_timeout;
    let bytes = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| ProxyError::RequestTimeout(timeout.as_millis() as u64))?
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ProxyError::BodyTooLarge { limit }
            } else {
                ProxyError::InvalidRequest(format!("could not read the request body: {e}"))
            }
        })?
        .to_bytes();
    Ok((parts, bytes))
}

/// Copy app headers that may go upstream: not hop-by-hop, not the app's own
/// credentials, not the app's `accept-encoding`: the sidecar reads usage
/// from the response, so it asks for `accept-encoding: identity` (a reply
/// compressed anyway is decoded for the taps, see [`meter::Coding`]). Then
/// add the provider's credential header.
fn upstream_headers(from: &HeaderMap, auth: (&HeaderName, &HeaderValue)) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(from.len() + 2);
    for (name, value) in from {
        if is_hop_header(name)
            || matches!(
                name.as_str(),
                "host"
                    | "proxy-authorization"
                    | "content-length"
                    | "authorization"
                    | "x-api-key"
                    | "accept-encoding"
                    | "http2-settings"
            )
        {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    h.insert(auth.0.clone(), auth.1.clone());
    h
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

fn no_policy(active: &Active) -> ProxyError {
    ProxyError::NoRoute(format!(
        "no RoutingPolicy selects this workload (namespace {}): there is no provider to send the request to",
        active.cfg.namespace
    ))
}

/// Hop-by-hop headers: never forwarded, to the provider or back to the app.
fn is_hop_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn strip_hop_headers(h: &mut HeaderMap) {
    // One look at the names the response has (usually a handful, and none
    // of these) rather than a hashed lookup per hop-by-hop name.
    if !h.keys().any(is_hop_header) {
        return;
    }
    let hop: Vec<HeaderName> = h.keys().filter(|n| is_hop_header(n)).cloned().collect();
    for name in hop {
        h.remove(name);
    }
}

/// Everything known about a request once it is parsed and routed.
#[derive(Debug)]
pub struct Context {
    /// Endpoint called.
    pub endpoint: Endpoint,
    /// Model the app asked for.
    pub requested_model: String,
    /// Route that matched.
    pub route: Option<String>,
    /// Complexity score, when computed.
    pub score: Option<u16>,
    /// The classifier's reason for the score.
    pub reason: Option<String>,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Where this attempt goes.
    pub choice: Choice,
    /// Rough prompt-token estimate (bytes / 4) for routing and cut streams.
    pub prompt_estimate: u64,
    /// Holds per budget (`None` for a shadow budget that would have refused).
    pub holds: Vec<(tokenwarden_core::config::ObjectRef, Option<Held>)>,
    /// Connected mode: budgets whose lease also holds this attempt's
    /// reservation (the same amount as its entry in `holds`).
    pub leased: Vec<tokenwarden_core::config::ObjectRef>,
    /// The attempt's intent in the durable ledger, once written.
    pub intent: Option<u64>,
}

async fn metered(
    shared: &Arc<Shared>,
    endpoint: Endpoint,
    req: Request<Incoming>,
    app: &AppLink,
) -> Result<Response<ProxyBody>, ProxyError> {
    let api = endpoint.api();
    let active = shared.active.load_full().ok_or(ProxyError::NotReady)?;
    let path_and_query = path_and_query(&req);
    let (parts, body) = read_body(shared, req).await?;
    // The classifier is the only reader of the conversation's texts.
    let parsed = if active.needs_score {
        request::parse(endpoint, &body)
    } else {
        request::parse_without_texts(endpoint, &body)
    }
    .map_err(|e| ProxyError::InvalidRequest(e.to_string()))?;
    let requested_model = parsed
        .model
        .as_deref()
        .ok_or(ProxyError::MissingModel)?
        .to_string();
    // Model names are short; an unbounded one would be copied into every
    // ledger line, snapshot and metric of the request.
    if requested_model.len() > MAX_MODEL_BYTES {
        return Err(ProxyError::InvalidRequest(format!(
            "`model` is {} bytes long; the longest model name accepted is {MAX_MODEL_BYTES} bytes",
            requested_model.len()
        )));
    }
    let router = active.router.as_ref().ok_or_else(|| no_policy(&active))?;
    let cfg = router.config();
    let now = Timestamp::now();

    // Classify only when a route looks at the score.
    let classification = active.needs_score.then(|| {
        let msgs: Vec<(classify::Role, &str)> = parsed
            .messages
            .iter()
            .map(|(r, t)| (*r, t.as_ref()))
            .collect();
        classify::classify(
            &cfg.classifier,
            &RequestView {
                messages: &msgs,
                tool_definitions: parsed.tool_definitions,
            },
        )
    });
    let header_pairs: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let prompt_estimate = (body.len() as u64).div_ceil(4);
    let facts = RequestFacts {
        endpoint,
        model: &requested_model,
        headers: &header_pairs,
        score: classification.as_ref().map_or(0, |c| c.score),
        prompt_tokens: prompt_estimate,
        tools_present: parsed.tool_definitions > 0,
    };
    let decision = router
        .decide(&facts)
        .map_err(|e| ProxyError::NoRoute(e.to_string()))?;
    let route_name = decision.route.clone().unwrap_or_else(|| "none".into());
    let mut choice = decision.choice;
    let mut adjusted: Vec<&'static str> = Vec::new();
    shared.metrics.route(&route_name, &choice.model, "routed");

    // Same prompt again and again: one tier up.
    // Hashing the body costs ~0.2 µs/KB: only when a rule needs it.
    let digest = if active.needs_digest {
        request::digest(&body, &parsed)
    } else {
        0
    };
    if let Some(rule) = cfg.escalation.repeated_prompt
        && shared.repeated(digest, now, rule)
        && let Some(up) = router.escalate(&choice, api)
    {
        choice = up;
        adjusted.push("escalated");
        shared
            .metrics
            .route(&route_name, &choice.model, "escalated");
    }

    // Budgets: loop guard, then downgrade.
    let mut shadow_blocks: Vec<String> = Vec::new();
    {
        let mut budgets = lock(&shared.budgets);
        for b in &active.cfg.budgets {
            let Some(state) = budgets.get_mut(&b.source) else {
                continue;
            };
            if let Err(refusal) = state.check_loop(now, digest) {
                shared
                    .metrics
                    .budget_block(&b.source.to_string(), refusal.reason, b.shadow);
                if b.shadow {
                    shadow_blocks.push(format!("{}:{}", b.source, refusal.reason));
                } else {
                    return Err(ProxyError::BudgetBlocked {
                        reason: refusal.reason,
                        message: refusal.message,
                        retry_after_secs: Some(refusal.retry_after_secs),
                    });
                }
            }
            if let Some(target) = state.downgrade()
                && let Some(down) = router.downgrade(&choice, target, api)
                && down != choice
            {
                choice = down;
                adjusted.push("downgraded");
                shared
                    .metrics
                    .route(&route_name, &choice.model, "downgraded");
            }
        }
    }

    let mut ctx = Context {
        endpoint,
        requested_model,
        route: decision.route,
        score: classification.as_ref().map(|c| c.score),
        reason: classification.as_ref().map(|c| c.reason.clone()),
        attempt: 0,
        choice,
        prompt_estimate,
        holds: Vec::new(),
        leased: Vec::new(),
        intent: None,
    };
    let max_attempts = cfg.fallback.max_attempts.max(1);
    let per_try = std::time::Duration::from_millis(cfg.fallback.per_try_timeout_ms);
    // Every choice (`n`) may use the whole output cap: all are billed.
    let max_output = match endpoint {
        Endpoint::Embeddings => 0,
        _ => parsed
            .max_output_tokens
            .unwrap_or(u64::from(cfg.default_max_output_tokens))
            .saturating_mul(parsed.choices),
    };
    loop {
        ctx.attempt += 1;
        let provider = &cfg.providers[ctx.choice.provider];
        let link = active.link(ctx.choice.provider)?;
        let auth = link.auth()?;
        // Before anything is reserved: an early return here holds nothing.
        let uri = link.uri(&path_and_query)?;

        // Reserve with the cheap bound (bytes); only if that would refuse,
        // refine the prompt bound once (tokenizer / count_tokens) and retry.
        // When only what other requests in flight reserved leaves no room,
        // wait (bounded) for them to settle: they usually cost less than
        // their worst case.
        // Input the request references but does not carry (a
        // previous_response_id, a file by id, a server-side tool) is billed
        // too: the policy's allowance for it, else the model's context.
        let unseen = parsed
            .unseen_input
            .map_or(0, |_| unseen_input_tokens(&active, cfg, &ctx));
        let mut prompt_bound = (body.len() as u64).saturating_add(unseen);
        let mut refined = false;
        let mut shadow = Vec::new();
        let mut at = now;
        let reserving = Instant::now();
        let wait_until = reserving + shared.options.reservation_wait;
        let mut waited = false;
        loop {
            // Registered for wake-ups only once a request has to wait (then
            // before the retry, so a release in between is not missed).
            let freed = shared.reservations_freed.notified();
            tokio::pin!(freed);
            if waited {
                freed.as_mut().enable();
            }
            let Err(blocked) = reserve(
                shared,
                &active,
                &mut ctx,
                prompt_bound,
                max_output,
                at,
                &mut shadow,
            ) else {
                break;
            };
            let refinable = !refined
                && matches!(&blocked.error, ProxyError::BudgetBlocked { reason, .. }
                    if matches!(*reason, "limit" | "threshold" | "request_cap"))
                // Refining only helps when the prompt is what does not fit:
                // an exhausted budget refuses without asking anyone.
                && fits_without_prompt(shared, &active, &mut ctx, max_output, at);
            if refinable {
                refined = true;
                let tighter = refine_prompt_bound(shared, link, &ctx, &parts.headers, &body).await;
                if let Some(b) = tighter
                    .map(|b| b.saturating_add(unseen))
                    .filter(|b| *b < prompt_bound)
                {
                    shared
                        .metrics
                        .route(&route_name, &ctx.choice.model, "bound_refined");
                    prompt_bound = b;
                    continue;
                }
            }
            let left = wait_until.saturating_duration_since(Instant::now());
            if blocked.in_flight && !left.is_zero() {
                if !waited {
                    waited = true;
                    shared.metrics.reservation_wait(&blocked.budget);
                    continue;
                }
                let _ = tokio::time::timeout(left, freed).await;
                at = Timestamp::now();
                continue;
            }
            shared
                .metrics
                .budget_block(&blocked.budget, blocked.error.label(), false);
            let mut error = blocked.error;
            if let (Some(what), ProxyError::BudgetBlocked { message, .. }) =
                (parsed.unseen_input, &mut error)
            {
                message.push_str(&format!(
                    " The worst case counts {unseen} input tokens for {what} that the request \
                     references but does not carry (RoutingPolicy spec.unseenInputTokens)."
                ));
            }
            return Err(error);
        }
        // Connected: the reservation must also fit this sidecar's leases.
        if let Some(control) = &shared.control {
            let wants = lease_wants(shared, &ctx);
            match crate::control::leases::reserve(control, &shared.metrics, &wants, reserving).await
            {
                Ok(r) => ctx.leased = r.leased,
                Err(e) => {
                    release_holds(shared, &mut ctx);
                    return Err(e);
                }
            }
        }
        for (budget, reason) in &shadow {
            shared.metrics.budget_block(budget, reason, true);
            shadow_blocks.push(format!("{budget}:{reason}"));
        }

        let model_changed = ctx.choice.model != ctx.requested_model;
        let ensure_usage = endpoint == Endpoint::ChatCompletions
            && parsed.stream
            && parsed.include_usage != Some(true);
        let out_body = request::rewrite(
            &body,
            &parsed,
            model_changed.then_some(ctx.choice.model.as_str()),
            ensure_usage,
        );
        let mut up = Request::new(Full::new(out_body));
        *up.method_mut() = Method::POST;
        *up.uri_mut() = uri;
        *up.headers_mut() = upstream_headers(&parts.headers, auth);
        up.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );

        if app.gone() {
            // Nobody waits for the answer: do not buy it.
            release_unforwarded(shared, &mut ctx);
            return Err(ProxyError::ClientGone);
        }
        if let Err(e) = intend(shared, &active, &mut ctx, prompt_bound, max_output) {
            release_unforwarded(shared, &mut ctx);
            return Err(e);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(per_try, shared.client.request(up)).await;
        shared
            .metrics
            .upstream_latency(&provider.name, started.elapsed().as_secs_f64());
        let retry_allowed = ctx.attempt < max_attempts;
        let failure = match result {
            Ok(Ok(resp)) => {
                let status = resp.status();
                let retryable = (status == StatusCode::TOO_MANY_REQUESTS
                    && cfg.fallback.on_rate_limit)
                    || (matches!(status.as_u16(), 500 | 502 | 503 | 504 | 529)
                        && cfg.fallback.on_server_error);
                if !(retryable && retry_allowed) {
                    return Ok(respond(
                        shared,
                        &active,
                        ctx,
                        resp,
                        parsed.stream,
                        ensure_usage,
                        &adjusted,
                        &shadow_blocks,
                        classification.as_ref(),
                    )
                    .await);
                }
                // Drain the error body so the connection can be reused; it is small.
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    resp.into_body().collect(),
                )
                .await;
                Failure::Status(status.as_u16())
            }
            Ok(Err(e)) if cfg.fallback.on_connect_error && retry_allowed => {
                Failure::Connect(e.to_string())
            }
            Ok(Err(e)) => {
                settle_failed(shared, &active, &mut ctx, 0);
                return Err(ProxyError::UpstreamUnreachable(e.to_string()));
            }
            Err(_) if cfg.fallback.on_timeout && retry_allowed => Failure::Timeout,
            Err(_) => {
                settle_failed(shared, &active, &mut ctx, 0);
                return Err(ProxyError::UpstreamTimeout(cfg.fallback.per_try_timeout_ms));
            }
        };
        // Meter the failed attempt (no usage) and go again, one tier up when
        // escalation on errors is on.
        let status = match failure {
            Failure::Status(s) => s,
            Failure::Connect(_) | Failure::Timeout => 0,
        };
        settle_failed(shared, &active, &mut ctx, status);
        shared.metrics.error(match failure {
            Failure::Status(429) => "upstream_rate_limited",
            Failure::Status(_) => "upstream_server_error",
            Failure::Connect(_) => "upstream_connect_error",
            Failure::Timeout => "upstream_timeout",
        });
        if cfg.escalation.on_upstream_error
            && let Some(up) = router.escalate(&ctx.choice, api)
        {
            ctx.choice = up;
            adjusted.push("escalated");
            shared
                .metrics
                .route(&route_name, &ctx.choice.model, "escalated");
        } else {
            adjusted.push("fallback");
            shared
                .metrics
                .route(&route_name, &ctx.choice.model, "fallback");
        }
    }
}

/// What the leases must hold for this attempt: every enforcing budget's
/// reservation, in its current period.
fn lease_wants(shared: &Shared, ctx: &Context) -> Vec<crate::control::leases::Want> {
    let budgets = lock(&shared.budgets);
    ctx.holds
        .iter()
        .filter_map(|(id, held)| {
            let held = (*held)?;
            let state = budgets.get(id)?;
            (!state.config().shadow).then(|| crate::control::leases::Want {
                budget: id.clone(),
                held,
                period_start_unix: state.window().start.as_second(),
                fail_mode: state.config().fail_mode,
            })
        })
        .collect()
}

/// Give back every local hold of the attempt (it will not be forwarded).
fn release_holds(shared: &Shared, ctx: &mut Context) {
    let holds = std::mem::take(&mut ctx.holds);
    let mut budgets = lock(&shared.budgets);
    for (id, held) in holds {
        if let (Some(state), Some(h)) = (budgets.get_mut(&id), held) {
            state.release(h);
        }
    }
    drop(budgets);
    shared.reservations_freed.notify_waiters();
}

/// Give back every hold of an attempt that was reserved but will not be
/// forwarded: the local ones and the lease holds.
fn release_unforwarded(shared: &Shared, ctx: &mut Context) {
    if let Some(control) = &shared.control {
        for (id, held) in &ctx.holds {
            if let Some(h) = held
                && ctx.leased.contains(id)
            {
                control.leases.release(id, *h);
            }
        }
    }
    ctx.leased.clear();
    release_holds(shared, ctx);
}

/// Whether the request would fit every budget with a prompt of zero tokens
/// (probe: reserves and releases at once).
fn fits_without_prompt(
    shared: &Shared,
    active: &Active,
    ctx: &mut Context,
    max_output: u64,
    now: Timestamp,
) -> bool {
    let mut shadow = Vec::new();
    if reserve(shared, active, ctx, 0, max_output, now, &mut shadow).is_err() {
        return false;
    }
    release_holds(shared, ctx);
    true
}

/// A tighter upper bound on the prompt tokens than the body's size (see
/// [`crate::tokens`]); `None` when none can be had.
async fn refine_prompt_bound(
    shared: &Shared,
    link: &Link,
    ctx: &Context,
    app_headers: &HeaderMap,
    body: &Bytes,
) -> Option<u64> {
    match ctx.endpoint.api() {
        Api::OpenAi => {
            let model = ctx.choice.model.clone();
            let body = body.clone();
            tokio::task::spawn_blocking(move || crate::tokens::openai_prompt_bound(&model, &body))
                .await
                .ok()
                .flatten()
        }
        Api::Anthropic => {
            if ctx.endpoint != Endpoint::Messages {
                return None;
            }
            let count_body = crate::tokens::count_tokens_body(&ctx.choice.model, body)?;
            let mut req = Request::new(Full::new(Bytes::from(count_body)));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = link
                .uri(&PathAndQuery::from_static("/v1/messages/count_tokens"))
                .ok()?;
            let mut h = upstream_headers(app_headers, link.auth().ok()?);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if !h.contains_key("anthropic-version") {
                h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
            *req.headers_mut() = h;
            let resp = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                shared.client.request(req),
            )
            .await
            .ok()?
            .ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let bytes = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                resp.into_body().collect(),
            )
            .await
            .ok()?
            .ok()?
            .to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            v.get("input_tokens")?.as_u64()
        }
    }
}

/// A budget refused a reservation.
struct Blocked {
    /// The budget, as `namespace/name`.
    budget: String,
    /// The request fits the budget's spend; only what requests in flight
    /// reserved leaves no room (it may fit once they settle).
    in_flight: bool,
    /// The refusal for the app.
    error: ProxyError,
}

enum Failure {
    Status(u16),
    Connect(#[allow(dead_code)] String),
    Timeout,
}

/// Reserve the worst case of this attempt in every budget (all or nothing).
/// Counts nothing: the caller records the outcome once it is final (a
/// refusal may be retried with a refined bound). `shadow` receives the
/// shadow budgets that would have refused.
fn reserve(
    shared: &Shared,
    active: &Active,
    ctx: &mut Context,
    body_bytes: u64,
    max_output: u64,
    now: Timestamp,
    shadow: &mut Vec<(String, &'static str)>,
) -> Result<(), Blocked> {
    shadow.clear();
    if active.cfg.budgets.is_empty() {
        return Ok(());
    }
    let (_, cost) = worst_case(active, ctx, body_bytes, max_output);
    let ask = Ask {
        cost,
        tokens: body_bytes.saturating_add(max_output),
    };
    let mut budgets = lock(&shared.budgets);
    let mut holds = Vec::new();
    for b in &active.cfg.budgets {
        let Some(state) = budgets.get_mut(&b.source) else {
            continue;
        };
        match state.reserve(now, ask) {
            Ok(h) => holds.push((b.source.clone(), Some(h))),
            Err(refusal) => {
                if b.shadow {
                    shadow.push((b.source.to_string(), refusal.reason));
                    holds.push((b.source.clone(), None));
                    continue;
                }
                let gave_back = holds.iter().any(|(_, h)| h.is_some());
                for (id, h) in holds {
                    if let (Some(s), Some(h)) = (budgets.get_mut(&id), h) {
                        s.release(h);
                    }
                }
                drop(budgets);
                if gave_back {
                    shared.reservations_freed.notify_waiters();
                }
                return Err(Blocked {
                    budget: b.source.to_string(),
                    in_flight: refusal.in_flight,
                    error: ProxyError::BudgetBlocked {
                        reason: refusal.reason,
                        message: refusal.message,
                        retry_after_secs: Some(refusal.retry_after_secs),
                    },
                });
            }
        }
    }
    ctx.holds = holds;
    Ok(())
}

/// The worst case of an attempt: `prompt` tokens (an upper bound) as
/// uncached input plus `max_output` output tokens, and its cost with every
/// prompt token at the dearest input rate of the target model (uncached
/// input or cache write); `None` when the model is unpriced.
fn worst_case(
    active: &Active,
    ctx: &Context,
    prompt: u64,
    max_output: u64,
) -> (Usage, Option<Usd>) {
    let cfg = active.router.as_ref().map(|r| r.config());
    let hint = cfg.map(|c| c.providers[ctx.choice.provider].api.as_str());
    let as_input = Usage {
        input_tokens: prompt,
        output_tokens: max_output,
        ..Default::default()
    };
    let as_write = Usage {
        cache_write_tokens: prompt,
        output_tokens: max_output,
        ..Default::default()
    };
    let cost = active
        .prices
        .price(hint, &ctx.choice.model)
        .prices()
        .map(|p| p.cost(&as_input).max(p.cost(&as_write)));
    (as_input, cost)
}

/// The input tokens assumed for what a request references but does not
/// carry, on the attempt's target model: the policy's
/// `unseenInputTokens`, else the model's context window, else
/// [`tokenwarden_core::config::DEFAULT_UNSEEN_INPUT_TOKENS`].
fn unseen_input_tokens(
    active: &Active,
    cfg: &tokenwarden_core::config::RoutingConfig,
    ctx: &Context,
) -> u64 {
    match cfg.unseen_input_tokens {
        Some(n) => u64::from(n),
        None => {
            let hint = cfg.providers[ctx.choice.provider].api.as_str();
            active
                .prices
                .context_window(Some(hint), &ctx.choice.model)
                .unwrap_or(tokenwarden_core::config::DEFAULT_UNSEEN_INPUT_TOKENS)
        }
    }
}

/// Write the attempt's intent (its worst case) to the durable ledger
/// before it is forwarded, so that a sidecar killed with the request in
/// flight still records it. Without a state dir there is nothing to write.
/// A failed write refuses the request (a provider-shaped 503), unless
/// `--ledger-fail-open`.
fn intend(
    shared: &Shared,
    active: &Active,
    ctx: &mut Context,
    prompt: u64,
    max_output: u64,
) -> Result<(), ProxyError> {
    if !lock(&shared.journal).is_durable() {
        return Ok(());
    }
    let (usage, cost) = worst_case(active, ctx, prompt, max_output);
    // Before the ledger's lock: a reload takes the budgets' lock, then the
    // ledger's (new budgets start from the ledger's totals).
    let budgets = {
        let states = lock(&shared.budgets);
        ctx.holds
            .iter()
            .filter_map(|(id, _)| {
                Some(BudgetPeriodRef {
                    budget: id.clone(),
                    period_start: states.get(id)?.window().start,
                })
            })
            .collect()
    };
    let provider = active
        .router
        .as_ref()
        .map(|r| r.config().providers[ctx.choice.provider].name.clone())
        .unwrap_or_default();
    let record = UsageRecord {
        seq: 0,
        ts: Timestamp::now(),
        endpoint: ctx.endpoint,
        requested_model: ctx.requested_model.clone(),
        served_model: ctx.choice.model.clone(),
        provider,
        route: ctx.route.clone(),
        score: ctx.score,
        reason: None,
        attempt: ctx.attempt,
        status: 0,
        usage,
        cost,
        estimated: true,
        budgets,
        intent: None,
    };
    let intended = lock(&shared.journal).intend(record);
    match intended {
        Ok(id) => {
            ctx.intent = Some(id);
            shared.metrics.ledger_writable(true);
            Ok(())
        }
        Err(e) => {
            shared.metrics.ledger_writable(false);
            shared.metrics.error("ledger_write");
            if shared.options.ledger_fail_open {
                tracing::error!(error = %e, "cannot write the ledger; forwarding anyway (--ledger-fail-open): this request's spend is kept in memory only");
                Ok(())
            } else {
                tracing::error!(error = %e, "cannot write the ledger; refusing the request (fail-closed)");
                Err(ProxyError::LedgerUnavailable(e.to_string()))
            }
        }
    }
}

/// Meter an attempt that produced no usage.
fn settle_failed(shared: &Shared, active: &Active, ctx: &mut Context, status: u16) {
    let holds = std::mem::take(&mut ctx.holds);
    let model = ctx.choice.model.clone();
    settle(
        shared,
        active,
        ctx,
        holds,
        status,
        Usage::default(),
        model,
        false,
        Commit::Now,
    );
    ctx.leased.clear();
    ctx.intent = None;
}

/// How a settlement's ledger line reaches the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Written before `settle` returns.
    Now,
    /// Staged; the caller holds a [`LedgerFlush`] that writes it, together
    /// with the lines other requests staged meanwhile, before the response
    /// leaves.
    Deferred,
}

/// What [`settle`] did.
pub struct Settled {
    /// The attempt's cost, when its model is priced.
    pub cost: Option<Usd>,
    /// With [`Commit::Deferred`] and a durable ledger: the seq of the staged
    /// line, not yet written.
    pub staged: Option<u64>,
}

/// Writes a staged ledger line when dropped, unless a flush by another
/// request took it along already. Dropped after the response future
/// yielded once, so the requests that settled in the same turn of the
/// runtime share one `write(2)`; dropped as well when the future is
/// cancelled (the client went away), so a line is never left behind.
pub(crate) struct LedgerFlush<'a> {
    shared: &'a Shared,
    seq: u64,
}

impl Drop for LedgerFlush<'_> {
    fn drop(&mut self) {
        let mut journal = lock(&self.shared.journal);
        if journal.written_seq() < self.seq && journal.flush().is_err() {
            self.shared.metrics.error("ledger_write");
            self.shared.metrics.ledger_writable(false);
        }
        drop(journal);
        // The record is on file (by this flush or an earlier one): the
        // session may send it.
        if let Some(control) = &self.shared.control {
            control.spool_added.notify_one();
        }
    }
}

/// Replace holds by actual usage: budgets, ledger, metrics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle(
    shared: &Shared,
    active: &Active,
    ctx: &Context,
    holds: Vec<(tokenwarden_core::config::ObjectRef, Option<Held>)>,
    status: u16,
    usage: Usage,
    served_model: String,
    estimated: bool,
    commit: Commit,
) -> Settled {
    let now = Timestamp::now();
    let cfg = active.router.as_ref().map(|r| r.config());
    let provider = cfg.map(|c| &c.providers[ctx.choice.provider]);
    let hint = provider.map(|p| p.api.as_str());
    let cost: Option<Usd> = if usage == Usage::default() {
        Some(Usd::ZERO)
    } else {
        active.prices.cost(hint, &served_model, &usage)
    };
    let mut periods = Vec::new();
    let mut lease_holds = Vec::new();
    {
        let mut budgets = lock(&shared.budgets);
        for (id, held) in holds {
            let Some(state) = budgets.get_mut(&id) else {
                continue;
            };
            if let Some(h) = held
                && ctx.leased.contains(&id)
            {
                lease_holds.push((id.clone(), h));
            }
            if usage != Usage::default() || status != 0 {
                match held {
                    Some(h) => state.settle(now, h, &usage, cost),
                    None => {
                        state.roll(now);
                        state.record(&usage, cost);
                    }
                }
            } else if let Some(h) = held {
                state.release(h);
            }
            periods.push(BudgetPeriodRef {
                budget: id.clone(),
                period_start: state.window().start,
            });
            shared.metrics.budget(state);
        }
    }
    if !periods.is_empty() {
        shared.reservations_freed.notify_waiters();
    }
    let mut record = UsageRecord {
        seq: 0,
        ts: now,
        endpoint: ctx.endpoint,
        requested_model: ctx.requested_model.clone(),
        served_model: served_model.clone(),
        provider: provider.map(|p| p.name.clone()).unwrap_or_default(),
        route: ctx.route.clone(),
        score: ctx.score,
        reason: ctx.reason.clone(),
        attempt: ctx.attempt,
        status,
        usage,
        cost,
        estimated,
        budgets: periods,
        intent: ctx.intent,
    };
    shared.metrics.attempt(&crate::metrics::Attempt {
        endpoint: ctx.endpoint.as_str(),
        requested_model: &ctx.requested_model,
        served_model: &served_model,
        route: ctx.route.as_deref().unwrap_or("none"),
        status,
        usage: &usage,
        cost_usd: cost.map(crate::metrics::usd_f64),
        estimated,
    });
    // One journal line, one seq: the ledger's record and, in connected
    // mode, the spool's (held until the operator acks it).
    let mut staged = None;
    let mut journal = lock(&shared.journal);
    let seq = journal.stage(&mut record);
    if journal.is_durable() {
        if commit == Commit::Deferred {
            staged = Some(seq);
        } else if journal.flush().is_err() {
            // flush() logged the lines it could not write.
            shared.metrics.error("ledger_write");
            shared.metrics.ledger_writable(false);
        }
    }
    if shared.control.is_some() {
        shared.metrics.spool(journal.depth(), journal.oldest());
    }
    drop(journal);
    if let Some(control) = &shared.control {
        let spent = usage != Usage::default() || status != 0;
        let actual = Held {
            cost: cost.unwrap_or(Usd::ZERO),
            tokens: usage.total_tokens(),
        };
        for (id, h) in lease_holds {
            if spent {
                let period = record
                    .budgets
                    .iter()
                    .find(|b| b.budget == id)
                    .map_or(0, |b| b.period_start.as_second());
                control.leases.settle(&id, h, record.seq, period, actual);
            } else {
                control.leases.release(&id, h);
            }
        }
        control.spool_added.notify_one();
    }
    Settled { cost, staged }
}

#[allow(clippy::too_many_arguments)]
async fn respond(
    shared: &Arc<Shared>,
    active: &Arc<Active>,
    mut ctx: Context,
    resp: Response<Incoming>,
    stream_requested: bool,
    strip_usage: bool,
    adjusted: &[&'static str],
    shadow_blocks: &[String],
    classification: Option<&classify::Classification>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_headers(&mut parts.headers);
    let status = parts.status;
    // The provider key never reaches the app, even when an upstream
    // echoes it: masked in every header and in error bodies.
    let secret = active
        .link(ctx.choice.provider)
        .ok()
        .and_then(Link::secret_finder);
    if let Some(s) = secret {
        redact::redact_headers(s, &mut parts.headers);
    }
    let h = &mut parts.headers;
    let set = |h: &mut HeaderMap, name: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set(h, headers::MODEL, &ctx.choice.model);
    set(h, headers::ROUTE, ctx.route.as_deref().unwrap_or("none"));
    set(h, headers::ATTEMPTS, &ctx.attempt.to_string());
    if let Some(c) = classification {
        set(h, headers::SCORE, &c.score.to_string());
    }
    if !adjusted.is_empty() {
        set(h, headers::ADJUSTED, &adjusted.join(","));
    }
    if !shadow_blocks.is_empty() {
        let mut unique: Vec<&String> = shadow_blocks.iter().collect();
        unique.sort();
        unique.dedup();
        set(
            h,
            headers::SHADOW,
            &unique
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let flavor = match ctx.endpoint {
        Endpoint::ChatCompletions => Flavor::OpenAiChat,
        Endpoint::Responses => Flavor::OpenAiResponses,
        Endpoint::Embeddings => Flavor::OpenAiEmbeddings,
        Endpoint::Messages => Flavor::Anthropic,
    };
    // Error bodies are never tapped (their usage is 0), only redacted.
    let is_sse = status.is_success()
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    let holds = std::mem::take(&mut ctx.holds);
    let settlement = Settlement {
        shared: shared.clone(),
        active: active.clone(),
        ctx,
        holds,
        status: status.as_u16(),
        flavor,
        commit: Commit::Now,
    };

    // A provider may compress although asked not to: the taps read the
    // decoded body. A coding the sidecar cannot decode is counted by its
    // size (the JSON tap reads it as text).
    let coding = meter::Coding::of(&parts.headers);
    let unreadable = matches!(coding, meter::Coding::Unknown(_));
    if is_sse && !unreadable {
        // Forward event by event; the stripped usage chunk changes the length.
        parts.headers.remove(header::CONTENT_LENGTH);
        let _ = stream_requested;
        let tap = SseTap::new(flavor, strip_usage);
        let decoder = coding.decoder();
        if strip_usage && decoder.is_some() {
            // Stripping rewrites events: they go to the app decoded.
            parts.headers.remove(header::CONTENT_ENCODING);
        }
        return Response::from_parts(
            parts,
            ProxyBody::Tap(Box::new(
                TapBody::new(body, TapMode::Sse(Box::new(tap)), settlement).decoding(decoder),
            )),
        );
    }
    let small = !is_sse
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= shared.options.buffer_response_bytes);
    if small {
        // Buffer (it is small and arrives at once) to put the cost in a header.
        let mut body = body;
        let mut buf = Vec::new();
        let idle = shared.options.upstream_idle;
        let broke = loop {
            match tokio::time::timeout(idle, body.frame()).await {
                Ok(None) => break false,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(_))) => break true,
                Err(_) => {
                    shared.metrics.error("upstream_stalled");
                    break true;
                }
            }
        };
        if broke {
            // What passed still counts (its usage, else an estimate).
            let decoded = meter::decode_all(&coding, &buf);
            settlement.finish_json(decoded.as_deref().unwrap_or(&buf));
            shared.metrics.error("upstream_body_error");
            let e = ProxyError::UpstreamUnreachable(
                "the provider closed the connection mid-response".into(),
            );
            return e.to_response(flavor_api(flavor));
        }
        if !status.is_success()
            && let Some(s) = secret
        {
            redact::redact_body(s, &mut buf);
        }
        let mut settlement = settlement;
        settlement.commit = Commit::Deferred;
        let decoded = meter::decode_all(&coding, &buf);
        let settled = settlement.finish_json(decoded.as_deref().unwrap_or(&buf));
        if let Some(c) = settled.cost {
            set(&mut parts.headers, headers::COST, &c.to_string());
        }
        if let Some(seq) = settled.staged {
            let flush = LedgerFlush {
                shared: shared.as_ref(),
                seq,
            };
            // Let the other requests that are ready settle first and
            // share the write; alone, write at once (a yield would
            // only cost a trip through the scheduler).
            if shared.metrics.in_flight().get() > 1 {
                tokio::task::yield_now().await;
            }
            drop(flush);
        }
        return Response::from_parts(parts, ProxyBody::Full(Full::new(Bytes::from(buf))));
    }
    let mode = if status.is_success() {
        TapMode::Json(Box::default())
    } else {
        TapMode::Plain
    };
    let tap = if status.is_success() {
        TapBody::new(body, mode, settlement).decoding(coding.decoder())
    } else {
        TapBody::new(body, mode, settlement).redacting(secret)
    };
    Response::from_parts(parts, ProxyBody::Tap(Box::new(tap)))
}

fn flavor_api(f: Flavor) -> Api {
    match f {
        Flavor::Anthropic => Api::Anthropic,
        _ => Api::OpenAi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    fn pairs(h: &HeaderMap) -> Vec<(&str, &str)> {
        h.iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect()
    }

    #[test]
    fn hop_by_hop_response_headers_are_dropped_and_the_rest_kept() {
        let mut h = header_map(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-request-id", "req_1"),
            ("upgrade", "h2c"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("te", "trailers"),
            ("trailer", "x-done"),
            ("proxy-connection", "close"),
        ]);
        strip_hop_headers(&mut h);
        let mut left = pairs(&h);
        // HeaderMap keeps the order of one name's values, not across names.
        left.sort_by_key(|(n, _)| *n);
        assert_eq!(
            left,
            [
                ("content-type", "application/json"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-request-id", "req_1"),
            ]
        );
        // Nothing to drop: untouched.
        let before = h.clone();
        strip_hop_headers(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn app_credentials_and_hop_headers_never_go_upstream() {
        let from = header_map(&[
            ("authorization", "Bearer app-token"),
            ("x-api-key", "app-key"),
            ("host", "127.0.0.1:15800"),
            ("connection", "keep-alive"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("anthropic-version", "2023-06-01"),
            ("x-trace", "t1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
        ]);
        let name = HeaderName::from_static("x-api-key");
        let mut value = HeaderValue::from_static("sk-provider");
        value.set_sensitive(true);
        let h = upstream_headers(&from, (&name, &value));
        assert_eq!(
            pairs(&h),
            [
                ("anthropic-version", "2023-06-01"),
                ("x-trace", "t1"),
                ("accept-encoding", "identity"),
                ("x-api-key", "sk-provider"),
            ]
        );
        assert!(h["x-api-key"].is_sensitive());
    }
}
