//! The admin `/ledger` view: the cluster ledger's rows, each budget's
//! period and spend, and the connected sidecars.

use serde_json::{Value, json};
use tokenwarden_core::{
    book::{Book, Spend},
    cluster_ledger::LedgerKey,
    money::Usd,
    usage::cache::HitRatio,
    workload::ObjectRef,
};

use super::{Engine, state::Session};

impl Engine {
    pub(super) fn render_ledger(&self) -> Value {
        let rows: Vec<Value> = self
            .ledger
            .iter()
            .flat_map(|l| l.ledger.rows().iter())
            .map(|(k, v)| ledger_row(k, v))
            .collect();
        let budgets: Vec<Value> = self
            .books
            .iter()
            .map(|(id, s)| budget_row(id, &s.book))
            .collect();
        let sidecars: Vec<Value> = self.sessions.values().map(sidecar_row).collect();
        json!({ "ledger": rows, "budgets": budgets, "sidecars": sidecars })
    }
}

fn ledger_row(k: &LedgerKey, v: &Spend) -> Value {
    json!({
        "namespace": k.namespace,
        "workload": k.workload,
        "model": k.model,
        "requests": v.requests,
        "input_tokens": v.usage.input_tokens,
        "output_tokens": v.usage.output_tokens,
        "cache_read_tokens": v.usage.cache_read_tokens,
        "cache_write_tokens": v.usage.cache_write_tokens,
        "cache_write_1h_tokens": v.usage.cache_write_1h_tokens,
        "cost_usd": v.cost.to_string(),
        "unpriced_requests": v.unpriced,
        "estimated_requests": v.estimated,
        "cache_hit_ratio": HitRatio::of(&v.usage).map(HitRatio::as_decimal),
        "cache_saved_usd": v.cache.saved.to_string(),
        "cache_wasted_usd": v.cache.wasted.to_string(),
        "cache_busts": v.cache.busts,
        "response_cache_hits": v.cache.response_hits,
        "response_cache_saved_usd": v.cache.response_saved.to_string(),
            "semantic_cache_hits": v.cache.semantic_hits,
            "cache_embedding_calls": v.cache.embedding_calls,
            "cache_embedding_cost_usd": v.cache.embedding_cost.to_string(),
            "response_cache_net_saved_usd": v.cache.response_net_saved().to_string(),
    })
}

fn budget_row(id: &ObjectRef, b: &Book) -> Value {
    let w = b.window();
    let (out, _) = b.outstanding();
    json!({
        "namespace": id.namespace,
        "name": id.name,
        "period_start": w.start.to_string(),
        "period_end": w.end.to_string(),
        "spent_usd": b.totals().spent.to_string(),
        "period": b.config().period.to_string(),
        "limit_usd": b.config().limit_usd.map(|l| l.to_string()),
        "limit_tokens": b.config().limit_tokens,
        "remaining_usd": b.config().limit_usd.map(|l| l.saturating_sub(b.totals().spent).max(Usd::ZERO).to_string()),
        "leased_usd": out.to_string(),
        "requests": b.totals().requests,
        "tokens": b.totals().tokens(),
        "response_cache_hits": b.totals().cache.response_hits,
        "response_cache_saved_usd": b.totals().cache.response_saved.to_string(),
        "state": b.budget_state().as_str(),
        "percent_spent": b.percent_spent(),
        "per_key": per_key_row(b),
    })
}

/// A budget split per key (`perKey`): its per-key limits and every key's
/// cluster-wide spend this period, by spend; `null` without a split.
fn per_key_row(b: &Book) -> Value {
    let Some(pk) = b.config().per_key.as_ref() else {
        return Value::Null;
    };
    let keys: Vec<Value> = tokenwarden_core::usage::top_keys(&b.totals().keys, usize::MAX)
        .into_iter()
        .map(|(key, t)| {
            json!({
                "key": key,
                "spent_usd": t.spent.to_string(),
                "tokens": t.tokens(),
                "requests": t.requests,
                "unpriced_requests": t.unpriced_requests,
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

fn sidecar_row(s: &Session) -> Value {
    json!({
        "sidecar_id": s.sidecar_id,
        "pod": format!("{}/{}", s.identity.namespace, s.identity.pod_name),
        "workload": s.workload,
        "config_version": s.sent_version,
        "acked_version": s.acked_version,
        "unacked_batches": s.pending.len(),
    })
}
