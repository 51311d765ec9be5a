//! The admin port: `/healthz`, `/readyz`, `/metrics`, `/ledger`.
//!
//! In a pod the admin port listens on the pod network (kubelet probes,
//! Prometheus), so usage data stays behind loopback: `/ledger` answers
//! only clients on the pod's own loopback (an app or `kubectl exec` in the
//! pod, `kubectl port-forward`); others get 403. Health and metrics carry
//! no per-request data and are open.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;
use tokenwarden_core::{
    usage::{Aggregate, cache::HitRatio},
    workload::ProjectedOverrunAction,
};

use crate::{body::ProxyBody, state::Shared, sync::lock};

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::from(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Handle one admin request from `peer`.
pub async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if shared.active.load().is_none() {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "no valid configuration loaded\n",
                );
            }
            if let Some(why) = ledger_broken(&shared) {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "the ledger cannot be written ({why}): requests are refused until it can\n"
                    ),
                );
            }
            text(StatusCode::OK, "text/plain", "ready\n")
        }
        "/metrics" => {
            // Measured when scraped, not on every request that settles.
            shared
                .metrics
                .cache_monitor_bytes(shared.prompt_cache.heap_bytes());
            // Replicated semantic entries arrive between requests.
            shared
                .metrics
                .semantic_entries(shared.response_cache.semantic_entries());
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                shared.metrics.render(),
            )
        }
        "/ledger" if !usage_visible_to(peer.ip()) => text(
            StatusCode::FORBIDDEN,
            "text/plain",
            "/ledger is served to loopback clients only (from inside the pod, or through kubectl port-forward)\n",
        ),
        "/ledger" => text(
            StatusCode::OK,
            "application/json",
            ledger_json(&shared).to_string(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: /healthz /readyz /metrics /ledger\n",
        ),
    }
}

/// Whether `peer` may read usage data: a loopback client (IPv4, IPv6, or
/// IPv4 loopback mapped into IPv6 on a dual-stack listener).
fn usage_visible_to(peer: std::net::IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

/// Why the durable ledger refuses writes, when it does and requests are
/// refused for it (not with `--ledger-fail-open`). Probes the state dir
/// first, so readiness comes back once there is room again.
fn ledger_broken(shared: &Shared) -> Option<String> {
    if shared.options.ledger_fail_open {
        return None;
    }
    let mut journal = lock(&shared.journal);
    if journal.probe() {
        shared.metrics.ledger_writable(true);
        return None;
    }
    journal.broken().map(str::to_string)
}

/// Per-model rows of an aggregate, dearest first.
pub fn model_rows(agg: &Aggregate) -> Vec<serde_json::Value> {
    let mut models: Vec<_> = agg.models.iter().collect();
    models.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then(a.0.cmp(b.0)));
    models
        .into_iter()
        .map(|(model, t)| {
            json!({
                "model": model,
                "requests": t.requests,
                "input_tokens": t.usage.input_tokens,
                "output_tokens": t.usage.output_tokens,
                "cache_read_tokens": t.usage.cache_read_tokens,
                "cache_write_tokens": t.usage.cache_write_tokens,
                "cache_write_1h_tokens": t.usage.cache_write_1h_tokens,
                "cost_usd": t.cost.to_string(),
                "unpriced_requests": t.unpriced_requests,
                "estimated_requests": t.estimated_requests,
                "cache_hit_ratio": HitRatio::of(&t.usage).map(HitRatio::as_decimal),
                "cache_saved_usd": t.cache.saved.to_string(),
                "cache_wasted_usd": t.cache.wasted.to_string(),
                "cache_busts": t.cache.busts,
                "response_cache_hits": t.cache.response_hits,
                "response_cache_saved_usd": t.cache.response_saved.to_string(),
            "semantic_cache_hits": t.cache.semantic_hits,
            "cache_embedding_calls": t.cache.embedding_calls,
            "cache_embedding_cost_usd": t.cache.embedding_cost.to_string(),
            "response_cache_net_saved_usd": t.cache.response_net_saved().to_string(),
            })
        })
        .collect()
}

/// A budget's per-key split for `/ledger`: the source, the per-key
/// limits, and every key of the period by spend (at most `maxKeys` plus
/// `(none)` and `(other)`); `null` when the budget is not split.
fn per_key_json(b: &tokenwarden_core::budget::BudgetState) -> serde_json::Value {
    let Some(pk) = b.per_key() else {
        return serde_json::Value::Null;
    };
    let keys: Vec<_> = b
        .top_keys(usize::MAX)
        .into_iter()
        .map(|(key, t)| {
            let reserved = b.key_reserved(key);
            json!({
                "key": key,
                "spent_usd": t.spent.to_string(),
                "remaining_usd": pk.limit_usd.map(|l| l.saturating_sub(t.spent).max(tokenwarden_core::money::Usd::ZERO).to_string()),
                "tokens_used": t.tokens(),
                "remaining_tokens": pk.limit_tokens.map(|l| l.saturating_sub(t.tokens())),
                "requests": t.requests,
                "unpriced_requests": t.unpriced_requests,
                "reserved_usd": reserved.cost.to_string(),
                "reserved_tokens": reserved.tokens,
                "state": if b.key_exhausted(key) { "Exhausted" } else { "Ok" },
                "cluster_spent_usd": b.cluster_key_spent(key).map(|(usd, _)| usd.to_string()),
            })
        })
        .collect();
    json!({
        "by": pk.by.to_string(),
        "limit_usd": pk.limit_usd.map(|l| l.to_string()),
        "limit_tokens": pk.limit_tokens,
        "max_keys": pk.max_keys,
        "keys": keys,
    })
}

/// The `/ledger` document: per-model totals (by the model that served)
/// and the live per-budget totals of the current periods.
pub fn ledger_json(shared: &Shared) -> serde_json::Value {
    let agg = lock(&shared.journal).aggregate().clone();
    let now = jiff::Timestamp::now();
    let mut states = lock(&shared.budgets);
    let mut burn = lock(&shared.burn);
    // Periods roll over on schedule, with or without traffic; the forecast
    // projects from a sample taken now.
    for b in states.values_mut() {
        b.roll(now);
        burn.sample(b, now);
    }
    let budgets: Vec<_> = states
        .values()
        .map(|b| {
            let forecast = burn.forecast(b, now);
            let cfg = b.config();
            let t = b.totals();
            let (cluster, lease) = match &shared.control {
                Some(c) => (
                    c.leases.status(&cfg.source).map_or(serde_json::Value::Null, |s| {
                        json!({
                            "period_start_unix": s.period_start_unix,
                            "spent_usd": tokenwarden_core::money::Usd::from_picos(i128::from(s.spent_picos)).to_string(),
                            "spent_tokens": s.spent_tokens,
                            "percent_spent": s.percent_spent,
                            "state": s.state,
                        })
                    }),
                    c.leases.describe(&cfg.source, b.window().start.as_second()),
                ),
                None => (serde_json::Value::Null, serde_json::Value::Null),
            };
            let mut entry = json!({
                "namespace": cfg.source.namespace,
                "name": cfg.source.name,
                "period": cfg.period.to_string(),
                "time_zone": cfg.time_zone,
                "period_start": b.window().start.to_string(),
                "period_end": b.window().end.to_string(),
                "spent_usd": t.spent.to_string(),
                "limit_usd": cfg.limit_usd.map(|l| l.to_string()),
                "remaining_usd": b.remaining_usd().map(|r| r.to_string()),
                "tokens_used": t.tokens(),
                "limit_tokens": cfg.limit_tokens,
                "remaining_tokens": cfg.limit_tokens.map(|l| l.saturating_sub(t.tokens())),
                "requests": t.requests,
                "unpriced_requests": t.unpriced_requests,
                "response_cache_hits": t.cache.response_hits,
                "response_cache_saved_usd": t.cache.response_saved.to_string(),
                "reserved_usd": b.reserved().cost.to_string(),
                "reserved_tokens": b.reserved().tokens,
                "state": b.state().as_str(),
                "shadow": cfg.shadow,
                "percent_spent": b.percent_spent(),
                "local_percent_spent": b.local_percent_spent(),
                "cluster": cluster,
                "lease": lease,
                "per_key": per_key_json(b),
                "on_projected_overrun": match &cfg.on_projected_overrun {
                    None => serde_json::Value::Null,
                    Some(ProjectedOverrunAction::Alert) => json!({"action": "Alert"}),
                    Some(ProjectedOverrunAction::Downgrade(to)) => {
                        json!({"action": "Downgrade", "downgrade_to": crate::forecast::target(to)})
                    }
                },
                "downgrade_to": b.downgrade().map(crate::forecast::target),
            });
            merge(&mut entry, crate::forecast::json_fields(forecast.as_ref()));
            entry
        })
        .collect();
    drop(burn);
    drop(states);
    let total = agg.total();
    json!({
        "models": model_rows(&agg),
        "total": {
            "requests": total.requests,
            "input_tokens": total.usage.input_tokens,
            "output_tokens": total.usage.output_tokens,
            "cache_read_tokens": total.usage.cache_read_tokens,
            "cache_write_tokens": total.usage.cache_write_tokens,
            "cache_write_1h_tokens": total.usage.cache_write_1h_tokens,
            "cost_usd": total.cost.to_string(),
            "cache_hit_ratio": HitRatio::of(&total.usage).map(HitRatio::as_decimal),
            "cache_saved_usd": total.cache.saved.to_string(),
            "cache_wasted_usd": total.cache.wasted.to_string(),
            "cache_busts": total.cache.busts,
            "response_cache_hits": total.cache.response_hits,
            "response_cache_saved_usd": total.cache.response_saved.to_string(),
            "semantic_cache_hits": total.cache.semantic_hits,
            "cache_embedding_calls": total.cache.embedding_calls,
            "cache_embedding_cost_usd": total.cache.embedding_cost.to_string(),
            "response_cache_net_saved_usd": total.cache.response_net_saved().to_string(),
        },
        "budgets": budgets,
        "prompt_cache": shared.prompt_cache.json(),
        "last_seq": agg.last_seq,
        "control": shared.control.as_ref().map(|c| {
            let spool = lock(&shared.journal);
            json!({
                "sidecar_id": c.sidecar_id,
                "connected": c.connected(),
                "config_version": c.config_version(),
                "spool_records": spool.depth(),
                "acked_seq": spool.acked(),
                "next_seq": spool.next_seq(),
            })
        }),
    })
}

/// Add `extra`'s keys to the object `into`.
fn merge(into: &mut serde_json::Value, extra: serde_json::Value) {
    if let (Some(into), serde_json::Value::Object(extra)) = (into.as_object_mut(), extra) {
        into.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_data_is_for_loopback_clients_only() {
        for ip in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            assert!(usage_visible_to(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "10.0.0.7",
            "192.168.1.2",
            "::ffff:10.0.0.7",
            "fd00::2",
            "0.0.0.0",
        ] {
            assert!(!usage_visible_to(ip.parse().unwrap()), "{ip}");
        }
    }
}
