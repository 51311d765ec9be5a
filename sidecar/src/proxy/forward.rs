//! Talking to the provider: reading the app's body, the headers that may
//! cross in either direction, the upstream request of an attempt, sending
//! it under the per-try timeout and telling what a failure allows
//! ([`send`]), and the provider's `count_tokens` for a tighter prompt bound.

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header,
    uri::{PathAndQuery, Uri},
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokenwarden_core::workload::{Api, Endpoint};

use super::attempt::{Attempt, Plan};
use crate::{error::ProxyError, link::Link, request, state::Shared};

pub(super) fn path_and_query(req: &Request<Incoming>) -> PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

pub(super) async fn read_body(
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
/// credentials, not the sidecar's own `x-tokenwarden-escalate` (a request
/// to the sidecar), not the app's `accept-encoding`: the sidecar reads usage
/// from the response, so it asks for `accept-encoding: identity` (a reply
/// compressed anyway is decoded for the taps, see [`crate::meter::Coding`]).
/// Then add the provider's credential header.
pub(super) fn upstream_headers(from: &HeaderMap, auth: (&HeaderName, &HeaderValue)) -> HeaderMap {
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
                    | super::route::ESCALATE_HEADER
                    // The app's response-cache bypass (`respond::headers::CACHE`).
                    | "x-tokenwarden-cache"
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

pub(super) fn strip_hop_headers(h: &mut HeaderMap) {
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

/// The request an attempt sends: the app's body with only the fields the
/// sidecar changes rewritten (the model, and the usage a stream must
/// report), to `uri`, with the provider's credential.
pub(super) fn upstream_request(
    plan: &Plan<'_>,
    attempt: &mut Attempt,
    uri: Uri,
    auth: (&HeaderName, &HeaderValue),
) -> Request<Full<Bytes>> {
    let model_changed = attempt.choice.model != attempt.requested_model;
    let out_body = request::rewrite(
        plan.body,
        &plan.parsed,
        model_changed.then_some(attempt.choice.model.as_str()),
        plan.ensure_usage,
    );
    let (out_body, rewrite) = crate::prompt_cache::apply(
        &plan.active.cfg.caching,
        attempt.endpoint,
        &attempt.choice.model,
        out_body,
    );
    if let Some(r) = rewrite {
        plan.shared.metrics.cache_rewrite(r.metric_kind());
    }
    attempt.cache_rewrite = rewrite;
    // The prompt as the provider's cache will see it, sent now.
    attempt.fingerprint = crate::prompt_cache::fingerprint(
        &plan.active.cfg.caching,
        attempt.endpoint,
        &attempt.choice.model,
        &out_body,
    );
    if attempt.fingerprint.is_some() {
        attempt.cache_key = crate::prompt_cache::prompt_cache_key(attempt.endpoint, &out_body);
    }
    attempt.sent_at = Some(jiff::Timestamp::now());
    let mut up = Request::new(Full::new(out_body));
    *up.method_mut() = Method::POST;
    *up.uri_mut() = uri;
    *up.headers_mut() = upstream_headers(plan.app_headers, auth);
    up.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    up
}

/// How an attempt failed.
pub(super) enum Failure {
    Status(u16),
    Connect,
    Timeout,
}

// === impl Failure ===

impl Failure {
    /// The status the attempt is settled with (`0`: no answer).
    pub(super) fn status(&self) -> u16 {
        match self {
            Failure::Status(s) => *s,
            Failure::Connect | Failure::Timeout => 0,
        }
    }

    /// The error counted for it.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Failure::Status(429) => "upstream_rate_limited",
            Failure::Status(_) => "upstream_server_error",
            Failure::Connect => "upstream_connect_error",
            Failure::Timeout => "upstream_timeout",
        }
    }
}

/// What came of sending an attempt.
pub(super) enum Sent {
    /// The provider answered, and the answer goes to the app.
    Answer(Response<Incoming>),
    /// A failure the fallback policy retries (another attempt is allowed).
    Retry(Failure),
    /// A failure that ends the request (no answer came).
    Fail(ProxyError),
}

/// Send an attempt under the per-try timeout; a retryable error status is
/// drained (it is small) so the connection can be reused.
pub(super) async fn send(plan: &Plan<'_>, attempt: &Attempt, up: Request<Full<Bytes>>) -> Sent {
    let cfg = plan.cfg;
    let shared = plan.shared;
    let per_try = std::time::Duration::from_millis(cfg.fallback.per_try_timeout_ms);
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(per_try, shared.client.request(up)).await;
    shared.metrics.upstream_latency(
        &cfg.providers[attempt.choice.provider].name,
        started.elapsed().as_secs_f64(),
    );
    let retry_allowed = attempt.number < cfg.fallback.max_attempts.max(1);
    match result {
        Ok(Ok(resp)) => {
            let status = resp.status();
            let retryable = (status == StatusCode::TOO_MANY_REQUESTS && cfg.fallback.on_rate_limit)
                || (matches!(status.as_u16(), 500 | 502 | 503 | 504 | 529)
                    && cfg.fallback.on_server_error);
            if !(retryable && retry_allowed) {
                return Sent::Answer(resp);
            }
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                resp.into_body().collect(),
            )
            .await;
            Sent::Retry(Failure::Status(status.as_u16()))
        }
        Ok(Err(_)) if cfg.fallback.on_connect_error && retry_allowed => {
            Sent::Retry(Failure::Connect)
        }
        Ok(Err(e)) => Sent::Fail(ProxyError::UpstreamUnreachable(e.to_string())),
        Err(_) if cfg.fallback.on_timeout && retry_allowed => Sent::Retry(Failure::Timeout),
        Err(_) => Sent::Fail(ProxyError::UpstreamTimeout(cfg.fallback.per_try_timeout_ms)),
    }
}

/// A tighter upper bound on the prompt tokens than the body's size (see
/// [`crate::tokens`]); `None` when none can be had.
pub(super) async fn refine_prompt_bound(
    shared: &Shared,
    link: &Link,
    attempt: &Attempt,
    app_headers: &HeaderMap,
    body: &Bytes,
) -> Option<u64> {
    match attempt.endpoint.api() {
        Api::OpenAi => {
            let model = attempt.choice.model.clone();
            let body = body.clone();
            tokio::task::spawn_blocking(move || crate::tokens::openai_prompt_bound(&model, &body))
                .await
                .ok()
                .flatten()
        }
        Api::Anthropic => {
            if attempt.endpoint != Endpoint::Messages {
                return None;
            }
            count_tokens(shared, link, &attempt.choice.model, app_headers, body).await
        }
    }
}

/// Ask the provider's `count_tokens` for the prompt's size.
async fn count_tokens(
    shared: &Shared,
    link: &Link,
    model: &str,
    app_headers: &HeaderMap,
    body: &Bytes,
) -> Option<u64> {
    let count_body = crate::tokens::count_tokens_body(model, body)?;
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
            ("x-tokenwarden-escalate", "1"),
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
