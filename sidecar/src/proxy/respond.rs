//! The response stage: the provider's answer to the app, with the
//! sidecar's headers, the provider key masked, and the attempt settled
//! when its body is done: an event stream and a large body through a tap
//! as they pass, a small body buffered so its cost goes in a header.

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
    /// The sidecar changed the request to make the provider's prompt cache
    /// hit: `inserted` (Anthropic `cache_control` breakpoints) or
    /// `prompt-cache-key` (OpenAI `prompt_cache_key`).
    pub const CACHE_CONTROL: &str = "x-tokenwarden-cache-control";
}

type Secret = memchr::memmem::Finder<'static>;

/// Answer the app with the provider's response to `attempt`.
pub(super) async fn respond(
    plan: &Plan<'_>,
    attempt: Attempt,
    resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
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
    let is_sse = status.is_success()
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    let settlement = Settlement {
        shared: plan.shared.clone(),
        active: plan.active.clone(),
        attempt,
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
        return buffered(plan, parts, body, settlement, &coding, secret).await;
    }
    let idle = plan.shared.options.upstream_idle;
    let tap = if status.is_success() {
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
    Response::from_parts(parts, ProxyBody::Tap(Box::new(tap)))
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
    if let Some(r) = attempt.cache_rewrite {
        set(h, headers::CACHE_CONTROL, r.header_value());
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
    let tap = SseTap::new(settlement.flavor, strip_usage);
    let decoder = coding.decoder();
    if strip_usage && decoder.is_some() {
        // Stripping rewrites events: they go to the app decoded.
        parts.headers.remove(header::CONTENT_ENCODING);
    }
    let idle = plan.shared.options.upstream_idle;
    Response::from_parts(
        parts,
        ProxyBody::Tap(Box::new(
            TapBody::new(
                body,
                TapMode::Sse(Box::new(tap)),
                Box::new(settlement),
                idle,
            )
            .decoding(decoder),
        )),
    )
}

/// A small body: buffered (it arrives at once) to put the cost in a header.
async fn buffered(
    plan: &Plan<'_>,
    mut parts: Parts,
    mut body: Incoming,
    mut settlement: Settlement,
    coding: &meter::Coding,
    secret: Option<&Secret>,
) -> Response<ProxyBody> {
    let shared = plan.shared;
    let status = parts.status;
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
        let api = flavor_api(settlement.flavor);
        let decoded = meter::decode_all(coding, &buf);
        settlement.finish_json(decoded.as_deref().unwrap_or(&buf));
        shared.metrics.error("upstream_body_error");
        let e = ProxyError::UpstreamUnreachable(
            "the provider closed the connection mid-response".into(),
        );
        return e.to_response(api);
    }
    if !status.is_success()
        && let Some(s) = secret
    {
        redact::redact_body(s, &mut buf);
    }
    settlement.commit = Commit::Deferred;
    let decoded = meter::decode_all(coding, &buf);
    let settled = settlement.finish_json(decoded.as_deref().unwrap_or(&buf));
    if let Some(c) = settled.cost {
        set(&mut parts.headers, headers::COST, &c.to_string());
    }
    settle::flush_staged(shared.as_ref(), settled.staged).await;
    Response::from_parts(parts, ProxyBody::Full(Full::new(Bytes::from(buf))))
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
