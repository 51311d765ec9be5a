//! The response-cache stage: after routing, before the budgets. Under a
//! RoutingPolicy (or route) with `cache` on, a request is looked up by its
//! key (`tokenwarden_core::response_cache`): a hit is answered from the
//! stored response at $0 — charged to no budget, not even reserved, so a
//! hit is served under an exhausted budget too — and recorded in the
//! ledger with what it saved, counted as a hit and a saving in the budgets
//! it would have been charged to; a miss goes on to the provider with a
//! [`Fill`], which stores the answer once it is known to be a complete
//! success (see [`store`]). Every response of such a policy says which it
//! was in `x-tokenwarden-cache` (`hit`, `miss`, `bypass`).
//!
//! The app bypasses the cache per request with `Cache-Control: no-cache`
//! (not read; the fresh answer is stored), `Cache-Control: no-store`
//! (neither read nor stored) — the request directives of RFC 9111 §5.2.1
//! (<https://www.rfc-editor.org/rfc/rfc9111#section-5.2.1>) — or
//! `x-tokenwarden-cache: bypass` (neither). A request the routing rules
//! already moved (a repeated prompt or the app's escalation signal) is not
//! looked up either: its app wants another answer.
//!
//! What is stored: the body exactly as the app received it (the JSON, or
//! the event stream as it passed, copied aside into a buffer bounded by
//! `maxEntryBytes` and dropped once over it — a stream is never held back),
//! with the headers an SDK reads (`content-type`, `content-encoding`, the
//! provider's request id). Only a 2xx whose usage the provider reported
//! (not estimated), a stream that ended with its terminal event and no
//! error event, and an answer every finish reason of which says it ended
//! on its own: OpenAI chat `stop`/`tool_calls`/`function_call`
//! (<https://platform.openai.com/docs/api-reference/chat/object>),
//! Responses `completed`
//! (<https://platform.openai.com/docs/api-reference/responses/object>),
//! Anthropic `end_turn`/`stop_sequence`/`tool_use`
//! (<https://docs.anthropic.com/en/api/messages>); embeddings have none.
//! Truncated (`length`, `max_tokens`, `max_output_tokens`), filtered
//! (`content_filter`, `refusal`) or paused (`pause_turn`) answers are never
//! stored. And only an answer from the model the key names (not one a
//! fallback, escalation or budget downgrade sent elsewhere).

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use jiff::Timestamp;
use tokenwarden_core::{
    money::Usd,
    response_cache::{
        KEYED_HEADERS, KeyParts, ResponseCacheConfig, cacheable, canonical_key_input,
    },
    semantic_cache::format_similarity,
    tokens::TokenCounts,
    usage::{UsageRecord, cache::CacheFigures},
};

use super::{
    attempt::{Attempt, Plan},
    respond::headers,
    semantic,
};
use crate::{
    body::ProxyBody,
    response_cache::{CacheState, Entry, Fill, key_of},
};

/// What the app asked of the cache in its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asked {
    /// Read and store.
    Normal,
    /// Do not read; store (`no-cache`).
    NoRead,
    /// Neither (`no-store`, `x-tokenwarden-cache: bypass`).
    Nothing,
}

fn asked(h: &HeaderMap) -> Asked {
    let bypass = h.get_all(headers::CACHE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("bypass"))
    });
    let (mut no_store, mut no_cache) = (false, false);
    for d in h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
    {
        no_store |= d == "no-store";
        no_cache |= d == "no-cache";
    }
    if bypass || no_store {
        Asked::Nothing
    } else if no_cache {
        Asked::NoRead
    } else {
        Asked::Normal
    }
}

/// Look the request up: a hit's response, or `None` to go on (with
/// `plan.cache` set when the cache is on for it).
pub(super) async fn lookup(plan: &mut Plan<'_>, attempt: &Attempt) -> Option<Response<ProxyBody>> {
    let cfg = plan.cfg.response_cache_for(attempt.route.as_deref())?;
    let shared = plan.shared;
    let workload = &shared.options.workload;
    let model = attempt.choice.model.clone();
    let asked = if plan.adjusted.is_empty() {
        asked(plan.app_headers)
    } else {
        Asked::Nothing
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(plan.body) else {
        return uncacheable(plan, &model);
    };
    if cacheable(&cfg, &body).is_err() {
        return uncacheable(plan, &model);
    }
    let keyed = keyed_headers(plan.app_headers);
    let parts = key_parts(plan, attempt, &keyed);
    let fill = fill(plan, attempt, &cfg, &parts, &body);
    if asked != Asked::Normal {
        shared.metrics.response_cache("bypass", workload, &model);
        plan.cache = Some(CacheState {
            header: "bypass",
            fill: (asked == Asked::NoRead).then_some(fill),
        });
        return None;
    }
    if let Some(entry) = fill.get().await {
        shared.metrics.response_cache("hit", workload, &model);
        return Some(hit(plan, attempt, &entry, None));
    }
    shared.metrics.response_cache("miss", workload, &model);
    let mut fill = fill;
    if let Some(sem) = &cfg.semantic
        && let Some(index) = shared.response_cache.semantic_index(&plan.cfg.source, &cfg)
    {
        match semantic::lookup(plan, attempt, sem, index, &parts, &body, fill).await {
            semantic::Found::Hit(entry, similarity) => {
                return Some(hit(plan, attempt, &entry, Some(similarity)));
            }
            semantic::Found::Miss(f) => fill = *f,
        }
    }
    plan.cache = Some(CacheState {
        header: "miss",
        fill: Some(fill),
    });
    None
}

/// A request the cache may not answer (not JSON, or sampled): `bypass`.
fn uncacheable(plan: &mut Plan<'_>, model: &str) -> Option<Response<ProxyBody>> {
    let shared = plan.shared;
    shared
        .metrics
        .response_cache("uncacheable", &shared.options.workload, model);
    plan.cache = Some(CacheState {
        header: "bypass",
        fill: None,
    });
    None
}

/// The values of the [`KEYED_HEADERS`] the app sent: forwarded upstream,
/// they select provider behaviour, so they are keyed by value.
fn keyed_headers(h: &HeaderMap) -> [String; KEYED_HEADERS.len()] {
    KEYED_HEADERS.map(|name| {
        let values: Vec<String> = h
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        values.join(",")
    })
}

/// What scopes and routes the request, for its key.
fn key_parts<'a>(
    plan: &'a Plan<'_>,
    attempt: &'a Attempt,
    keyed: &'a [String; KEYED_HEADERS.len()],
) -> KeyParts<'a> {
    let provider = &plan.cfg.providers[attempt.choice.provider];
    let source = &plan.cfg.source;
    KeyParts {
        namespace: &source.namespace,
        policy: &source.name,
        provider: &provider.name,
        model: &attempt.choice.model,
        api: provider.api.as_str(),
        path: plan.path_and_query.as_str(),
        stream: plan.parsed.stream,
        headers: std::array::from_fn(|i| keyed[i].as_str()),
    }
}

/// The request's key and store.
fn fill(
    plan: &Plan<'_>,
    attempt: &Attempt,
    cfg: &ResponseCacheConfig,
    parts: &KeyParts<'_>,
    body: &serde_json::Value,
) -> Fill {
    let canonical = canonical_key_input(parts, body);
    Fill::new(
        plan.shared.response_cache.store(&plan.cfg.source, cfg),
        key_of(&canonical),
        cfg.max_entry_bytes,
        attempt.choice.clone(),
    )
}
/// Answer from `entry`: its status, headers and body as stored, with the
/// sidecar's headers; recorded in the ledger at $0 with what it saved. A
/// semantic hit (`similarity`: how alike the prompts were, parts per
/// 10,000) says so in `x-tokenwarden-cache-similarity`.
fn hit(
    plan: &Plan<'_>,
    attempt: &Attempt,
    entry: &Entry,
    similarity: Option<u16>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Full(Full::new(entry.body.clone())));
    *resp.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    for (n, v) in &entry.headers {
        h.append(n.clone(), v.clone());
    }
    let set = |h: &mut HeaderMap, n: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(n), v);
        }
    };
    set(h, headers::CACHE, "hit");
    set(h, headers::MODEL, &attempt.choice.model);
    set(
        h,
        headers::ROUTE,
        attempt.route.as_deref().unwrap_or("none"),
    );
    set(h, headers::ATTEMPTS, "0");
    set(h, headers::COST, &Usd::ZERO.to_string());
    if let Some(s) = similarity {
        set(h, headers::CACHE_SIMILARITY, &format_similarity(s));
    }
    record_hit(plan, attempt, entry, similarity.unwrap_or(0));
    resp
}

/// The hit's line in the ledger: no provider call (status 200, no tokens),
/// cost $0, `response_hit` with the stored answer's cost as
/// `response_saved` (and a semantic hit's `response_similarity`), and the
/// periods of the budgets it would have been charged to, which count the
/// hit and the saving (never as spend).
fn record_hit(plan: &Plan<'_>, attempt: &Attempt, entry: &Entry, similarity: u16) {
    let shared = plan.shared;
    let saved = entry.cost.unwrap_or(Usd::ZERO);
    let provider = &plan.cfg.providers[attempt.choice.provider];
    let now = Timestamp::now();
    let cache = CacheFigures {
        response_hit: true,
        response_saved: saved,
        response_similarity: similarity,
        ..CacheFigures::default()
    };
    let budgets = super::settle::count_hit(shared, plan.active, &cache, now);
    let mut record = UsageRecord {
        seq: 0,
        ts: now,
        endpoint: attempt.endpoint,
        requested_model: attempt.requested_model.clone(),
        served_model: entry.served_model.clone(),
        provider: provider.name.clone(),
        route: attempt.route.clone(),
        score: attempt.score,
        reason: attempt.reason.clone(),
        attempt: 0,
        status: entry.status,
        usage: TokenCounts::default(),
        cost: Some(Usd::ZERO),
        estimated: false,
        budgets,
        cache,
        intent: None,
        replay: None,
    };
    shared
        .metrics
        .response_cache_saved(&shared.options.workload, &entry.served_model, saved);
    super::settle::write_record(shared, &mut record);
}
