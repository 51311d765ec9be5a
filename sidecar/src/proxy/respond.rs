//! The response stage: the provider's answer to the app, with the
//! sidecar's headers, the provider key masked, and the attempt settled
//! when its body is done: an event stream and a large body through a tap
//! as they pass, a small body buffered so its cost goes in a header. The
//! judge stage holds a non-streaming answer before this one; what it held
//! goes out through [`held`], [`over`] or [`broke`], and an answer it
//! failed is settled and kept by [`keep`].

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, header, response::Parts};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokenwarden_core::workload::{Api, Endpoint};

use super::{
    attempt::{Attempt, Plan},
    forward::strip_hop_headers,
    settle::{self, Commit, Settlement},
};
use crate::{
    body::{ProxyBody, TapBody, TapMode},
    error::ProxyError,
    link::Link,
    meter::{self, Flavor, SseTap},
    redact,
    response_cache::Fill,
    state::Shared,
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
    /// Why each `escalated` in [`ADJUSTED`] happened, in the same order:
    /// `upstream_error`, `repeated_prompt`, `app_signal`, `truncated`,
    /// `empty`, `refusal`, `tool_arguments`, `response_format`.
    pub const ESCALATION_REASON: &str = "x-tokenwarden-escalation-reason";
    /// Budgets that would have refused the request in shadow mode.
    pub const SHADOW: &str = "x-tokenwarden-shadow-block";
    /// The sidecar changed the request to make the provider's prompt cache
    /// hit: `inserted` (Anthropic `cache_control` breakpoints) or
    /// `prompt-cache-key` (OpenAI `prompt_cache_key`).
    pub const CACHE_CONTROL: &str = "x-tokenwarden-cache-control";
    /// The response cache's verdict when it is on for the request: `hit`,
    /// `miss` or `bypass` (see docs/response-cache.md). Also the request
    /// header an app sends (`bypass`) to skip the cache.
    pub const CACHE: &str = "x-tokenwarden-cache";
    /// On a semantic hit: how alike the app's prompt and the stored one
    /// were (cosine, four decimals, e.g. `0.9731`).
    pub const CACHE_SIMILARITY: &str = "x-tokenwarden-cache-similarity";
}

type Secret = memchr::memmem::Finder<'static>;

/// Answer the app with the provider's response to `attempt`.
pub(super) async fn respond(
    plan: &Plan<'_>,
    attempt: Attempt,
    resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let (parts, body) = resp.into_parts();
    let p = prepare(plan, attempt, parts);
    let Prepared {
        parts,
        settlement,
        secret,
        coding,
        is_sse,
    } = p;
    // A provider may compress although asked not to: the taps read the
    // decoded body. A coding the sidecar cannot decode is counted by its
    // size (the JSON tap reads it as text).
    let unreadable = matches!(coding, meter::Coding::Unknown(_));
    if is_sse && !unreadable {
        return stream(plan, parts, body, settlement, &coding);
    }
    let small = !is_sse
        && parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n <= plan.shared.options.buffer_response_bytes);
    if small {
        let limit = plan.shared.options.buffer_response_bytes;
        return match read_held(plan.shared, body, limit).await {
            Read::Whole(buf) => finish_held(plan, parts, buf, settlement, &coding, secret).await,
            // The body is longer than its content-length said: hyper
            // ends it with an error first; what passed counts.
            Read::Over(buf, _) | Read::Broke(buf) => broken(plan, settlement, &coding, &buf),
        };
    }
    tapped(plan, parts, body, settlement, &coding, secret, Bytes::new())
}

/// A response head made ready for the app (hop-by-hop headers dropped,
/// the provider key masked, the sidecar's headers set) with the
/// settlement of its attempt.
struct Prepared<'p> {
    parts: Parts,
    settlement: Settlement,
    secret: Option<&'p Secret>,
    coding: meter::Coding,
    is_sse: bool,
}

fn prepare<'p>(plan: &'p Plan<'_>, attempt: Attempt, mut parts: Parts) -> Prepared<'p> {
    strip_hop_headers(&mut parts.headers);
    let status = parts.status;
    // The provider key never reaches the app, even when an upstream
    // echoes it: masked in every header and in error bodies.
    let secret = plan
        .active
        .link(attempt.choice.provider)
        .ok()
        .and_then(Link::secret_finder);
    if let Some(s) = secret {
        redact::redact_headers(s, &mut parts.headers);
    }
    set_headers(plan, &attempt, &mut parts.headers);
    let flavor = flavor(attempt.endpoint);
    // Error bodies are never tapped (their usage is 0), only redacted.
    let is_sse = status.is_success() && is_event_stream(&parts.headers);
    let coding = meter::Coding::of(&parts.headers);
    let fill = plan
        .cache
        .as_ref()
        .and_then(|c| c.fill.as_ref())
        .and_then(|f| f.for_answer(&attempt.choice, status, &parts.headers));
    Prepared {
        parts,
        settlement: Settlement {
            shared: plan.shared.clone(),
            active: plan.active.clone(),
            attempt,
            status: status.as_u16(),
            flavor,
            commit: Commit::Now,
            fill,
            captured: None,
            stream_complete: None,
        },
        secret,
        coding,
        is_sse,
    }
}

/// The response is an event stream.
pub(super) fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A JSON body forwarded as it arrives through the constant-memory tap
/// (an error body: redacted instead); `prefix`, already read from it,
/// goes first.
fn tapped(
    plan: &Plan<'_>,
    parts: Parts,
    body: Incoming,
    settlement: Settlement,
    coding: &meter::Coding,
    secret: Option<&Secret>,
    prefix: Bytes,
) -> Response<ProxyBody> {
    let idle = plan.shared.options.upstream_idle;
    let limit = settlement.fill.as_ref().map(Fill::max_entry_bytes);
    let tap = if parts.status.is_success() {
        TapBody::new(
            body,
            TapMode::Json(Box::default()),
            Box::new(settlement),
            idle,
        )
        .decoding(coding.decoder())
    } else {
        TapBody::new(body, TapMode::Plain, Box::new(settlement), idle).redacting(secret)
    };
    let tap = match limit {
        Some(l) => tap.capturing(l),
        None => tap,
    };
    let tap = tap.with_prefix(prefix);
    Response::from_parts(parts, ProxyBody::Tap(Box::new(tap)))
}

/// A response the judge held whole and let through: to the app as read,
/// its cost in a header.
pub(super) async fn held(
    plan: &Plan<'_>,
    attempt: Attempt,
    parts: Parts,
    buf: Vec<u8>,
) -> Response<ProxyBody> {
    let p = prepare(plan, attempt, parts);
    finish_held(plan, p.parts, buf, p.settlement, &p.coding, p.secret).await
}

/// A response the judge started to hold and found over the limit: the
/// bytes read so far, then the rest as it arrives, through the tap.
pub(super) fn over(
    plan: &Plan<'_>,
    attempt: Attempt,
    parts: Parts,
    prefix: Vec<u8>,
    rest: Incoming,
) -> Response<ProxyBody> {
    let p = prepare(plan, attempt, parts);
    let prefix = Bytes::from(prefix);
    tapped(
        plan,
        p.parts,
        rest,
        p.settlement,
        &p.coding,
        p.secret,
        prefix,
    )
}

/// A response whose body broke while the judge held it: settled from
/// what passed; the app gets a provider-shaped 502.
pub(super) fn broke(
    plan: &Plan<'_>,
    attempt: Attempt,
    parts: Parts,
    buf: &[u8],
) -> Response<ProxyBody> {
    let p = prepare(plan, attempt, parts);
    broken(plan, p.settlement, &p.coding, buf)
}

/// An answer that failed an escalation rule, kept (already settled, with
/// its headers and cost) in case the attempt one tier up cannot be made:
/// the app then gets it unchanged.
pub(super) struct Kept(Response<ProxyBody>);

// === impl Kept ===

impl Kept {
    /// The kept answer, saying how many attempts were made in all.
    pub(super) fn into_response(self, attempts: u32) -> Response<ProxyBody> {
        let mut resp = self.0;
        set(resp.headers_mut(), headers::ATTEMPTS, &attempts.to_string());
        resp
    }
}

/// Settle an answer that failed an escalation rule (from its whole body,
/// `decoded` when the provider compressed it) and keep it; the attempt
/// holds nothing after and can go again.
pub(super) fn keep(
    plan: &Plan<'_>,
    attempt: &mut Attempt,
    mut parts: Parts,
    buf: Vec<u8>,
    decoded: Option<&[u8]>,
) -> Kept {
    strip_hop_headers(&mut parts.headers);
    if let Some(s) = plan
        .active
        .link(attempt.choice.provider)
        .ok()
        .and_then(Link::secret_finder)
    {
        redact::redact_headers(s, &mut parts.headers);
    }
    set_headers(plan, attempt, &mut parts.headers);
    let settled = settle::answered(
        plan.shared,
        plan.active,
        attempt,
        parts.status.as_u16(),
        flavor(attempt.endpoint),
        decoded.unwrap_or(&buf),
    );
    if let Some(c) = settled.cost {
        set(&mut parts.headers, headers::COST, &c.to_string());
    }
    Kept(Response::from_parts(
        parts,
        ProxyBody::Full(Full::new(Bytes::from(buf))),
    ))
}

fn set(h: &mut HeaderMap, name: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The sidecar's response headers (see [`headers`]), but the cost.
fn set_headers(plan: &Plan<'_>, attempt: &Attempt, h: &mut HeaderMap) {
    set(h, headers::MODEL, &attempt.choice.model);
    set(
        h,
        headers::ROUTE,
        attempt.route.as_deref().unwrap_or("none"),
    );
    set(h, headers::ATTEMPTS, &attempt.number.to_string());
    if let Some(c) = &plan.classification {
        set(h, headers::SCORE, &c.score.to_string());
    }
    if !plan.adjusted.is_empty() {
        set(h, headers::ADJUSTED, &plan.adjusted.join(","));
    }
    if !plan.escalations.is_empty() {
        let reasons: Vec<&str> = plan.escalations.iter().map(|r| r.as_str()).collect();
        set(h, headers::ESCALATION_REASON, &reasons.join(","));
    }
    if let Some(r) = attempt.cache_rewrite {
        set(h, headers::CACHE_CONTROL, r.header_value());
    }
    if let Some(c) = &plan.cache {
        set(h, headers::CACHE, c.header);
    }
    if !plan.shadow_blocks.is_empty() {
        let mut unique: Vec<&String> = plan.shadow_blocks.iter().collect();
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
}

/// An event stream: forwarded event by event through the SSE tap.
fn stream(
    plan: &Plan<'_>,
    mut parts: Parts,
    body: Incoming,
    settlement: Settlement,
    coding: &meter::Coding,
) -> Response<ProxyBody> {
    let strip_usage = plan.ensure_usage;
    // The stripped usage chunk changes the length.
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut tap = SseTap::new(settlement.flavor, strip_usage);
    // The response cache reads the finish reasons too.
    if settlement.attempt.trace.span.is_some() || settlement.fill.is_some() {
        tap = tap.with_facts();
    }
    let limit = settlement.fill.as_ref().map(Fill::max_entry_bytes);
    let decoder = coding.decoder();
    if strip_usage && decoder.is_some() {
        // Stripping rewrites events: they go to the app decoded.
        parts.headers.remove(header::CONTENT_ENCODING);
    }
    let idle = plan.shared.options.upstream_idle;
    let tap = TapBody::new(
        body,
        TapMode::Sse(Box::new(tap)),
        Box::new(settlement),
        idle,
    )
    .decoding(decoder);
    let tap = match limit {
        Some(l) => tap.capturing(l),
        None => tap,
    };
    Response::from_parts(parts, ProxyBody::Tap(Box::new(tap)))
}

/// What reading a body whole came to.
pub(super) enum Read {
    /// All of it.
    Whole(Vec<u8>),
    /// More than the limit: what was read (just over it), and the rest.
    Over(Vec<u8>, Incoming),
    /// It broke or stalled: what passed.
    Broke(Vec<u8>),
}

/// Read a body whole, up to `limit` bytes, each frame within the idle
/// timeout.
pub(super) async fn read_held(shared: &Shared, mut body: Incoming, limit: usize) -> Read {
    let mut buf = Vec::new();
    let idle = shared.options.upstream_idle;
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(None) => return Read::Whole(buf),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Read::Over(buf, body);
                    }
                }
            }
            Ok(Some(Err(_))) => return Read::Broke(buf),
            Err(_) => {
                shared.metrics.error("upstream_stalled");
                return Read::Broke(buf);
            }
        }
    }
}

/// A body that broke mid-read: what passed still counts (its usage, else
/// an estimate); the app gets a provider-shaped 502.
fn broken(
    plan: &Plan<'_>,
    settlement: Settlement,
    coding: &meter::Coding,
    buf: &[u8],
) -> Response<ProxyBody> {
    let api = flavor_api(settlement.flavor);
    let decoded = meter::decode_all(coding, buf);
    settlement.finish_json(decoded.as_deref().unwrap_or(buf));
    plan.shared.metrics.error("upstream_body_error");
    let e =
        ProxyError::UpstreamUnreachable("the provider closed the connection mid-response".into());
    e.to_response(api)
}

/// A body read whole: settled (its journal line shares a write with the
/// requests that settled meanwhile), its cost in a header, sent as read.
async fn finish_held(
    plan: &Plan<'_>,
    mut parts: Parts,
    mut buf: Vec<u8>,
    mut settlement: Settlement,
    coding: &meter::Coding,
    secret: Option<&Secret>,
) -> Response<ProxyBody> {
    let shared = plan.shared;
    if !parts.status.is_success()
        && let Some(s) = secret
    {
        redact::redact_body(s, &mut buf);
    }
    settlement.commit = Commit::Deferred;
    let buf = Bytes::from(buf);
    if settlement.fill.is_some() {
        settlement.captured = Some(buf.clone());
    }
    let decoded = meter::decode_all(coding, &buf);
    let settled = settlement.finish_json(decoded.as_deref().unwrap_or(&buf));
    if let Some(c) = settled.cost {
        set(&mut parts.headers, headers::COST, &c.to_string());
    }
    settle::flush_staged(shared.as_ref(), settled.staged).await;
    Response::from_parts(parts, ProxyBody::Full(Full::new(buf)))
}

fn flavor(endpoint: Endpoint) -> Flavor {
    match endpoint {
        Endpoint::ChatCompletions => Flavor::OpenAiChat,
        Endpoint::Responses => Flavor::OpenAiResponses,
        Endpoint::Embeddings => Flavor::OpenAiEmbeddings,
        Endpoint::Messages => Flavor::Anthropic,
    }
}

fn flavor_api(f: Flavor) -> Api {
    match f {
        Flavor::Anthropic => Api::Anthropic,
        _ => Api::OpenAi,
    }
}
