//! Prometheus metrics of the sidecar (`GET /metrics` on the admin port).
//!
//! | metric | labels |
//! |---|---|
//! | `tokenwarden_requests_total` | endpoint, requested_model, served_model, route, status |
//! | `tokenwarden_tokens_total` | kind (input, output, cache_read, cache_write), requested_model, served_model |
//! | `tokenwarden_cost_usd_total` | requested_model, served_model |
//! | `tokenwarden_unpriced_requests_total` | served_model |
//! | `tokenwarden_estimated_usage_total` | served_model |
//! | `tokenwarden_route_decisions_total` | route, model, kind (routed, escalated, downgraded, fallback) |
//! | `tokenwarden_escalations_total` | reason (upstream_error, repeated_prompt, app_signal, truncated, empty, refusal, tool_arguments, response_format), workload (`namespace/name`) |
//! | `tokenwarden_errors_total` | reason |
//! | `tokenwarden_upstream_duration_seconds` | provider (time to response head) |
//! | `tokenwarden_request_overhead_seconds` | none: the latency the sidecar adds, from a metered request's arrival to its first upstream attempt being sent |
//! | `tokenwarden_budget_spent_usd`, `_limit_usd`, `_state` | budget (`namespace/name`); state 0 Ok, 1 Threshold, 2 Exhausted |
//! | `tokenwarden_budget_projected_spend_usd`, `tokenwarden_budget_projected_overrun` | budget: this sidecar's forecast of the period's spend at its end (absent while it warms up), and 1 while it reaches a limit before the period ends ([`crate::forecast`]) |
//! | `tokenwarden_budget_blocks_total` | budget, reason, shadow |
//! | `tokenwarden_budget_reservation_waits_total` | budget (requests that waited for in-flight reservations to settle) |
//! | `tokenwarden_config_reloads_total` | result (ok, rejected) |
//! | `tokenwarden_in_flight_requests` | |
//! | `tokenwarden_control_plane_connected` | (connected mode) 1 while the operator session is up |
//! | `tokenwarden_config_snapshots_total` | result (accepted, rejected) |
//! | `tokenwarden_config_info` | version (1 for the installed snapshot's version) |
//! | `tokenwarden_spool_records`, `tokenwarden_spool_oldest_unacked_age_seconds` | |
//! | `tokenwarden_lease_available_usd` | budget |
//! | `tokenwarden_lease_waits_total`, `tokenwarden_lease_fail_open_total` | budget |
//! | `tokenwarden_lease_refusals_total` | budget, reason (lease, fail_closed) |
//! | `tokenwarden_budget_cluster_percent_spent`, `tokenwarden_budget_cluster_spent_usd` | budget (from the operator) |
//! | `tokenwarden_budget_cluster_state`, `tokenwarden_budget_period_end_timestamp_seconds` | budget (from the operator): state 0 Ok, 1 Threshold, 2 Exhausted; when the period ends (Unix seconds) |
//! | `tokenwarden_budget_cluster_projected_overrun` | budget (from the operator): 1 while the operator reports a projected overrun for the current period (its TokenBudget's ProjectedOverrun condition, `BudgetStatus.projected_overrun`), else 0; back to 0 when the period rolls over until the operator reports the new one |
//! | `tokenwarden_cache_saved_usd_total` | served_model: what prompt-cache reads saved (reads at the input price minus their cost) |
//! | `tokenwarden_cache_wasted_usd_total` | served_model: what cache busts wasted (shared content billed above the cache-read price) |
//! | `tokenwarden_cache_busts_total` | reason (prefix_diverged, volatile_prefix, provider_miss), change (timestamp, date, uuid, number, whitespace, tools_reordered, tools_changed, system_replaced, content, none) |
//! | `tokenwarden_cache_expiries_total` | none: prompts whose earlier prefix had outlived the provider's cache TTL (not busts) |
//! | `tokenwarden_cache_rewrites_total` | kind (breakpoints, prompt_cache_key): requests the sidecar changed to make the cache hit |
//! | `tokenwarden_cache_monitor_bytes` | none: memory held by the prefix-stability monitor |
//! | `tokenwarden_otel_dropped_spans_total` | none: OpenTelemetry spans dropped (export queue full, or a batch the collector did not take) |
//! | `tokenwarden_semantic_cache_requests_total` | result (hit, below_threshold, no_entry, guard:numbers, guard:negation, guard:entities, guard:code, guard:content_words, gone, store_error, ineligible, embed_error), workload |
//! | `tokenwarden_semantic_cache_embedding_seconds` | none: the semantic cache's embedding calls |
//! | `tokenwarden_semantic_cache_hit_similarity` | none: the cosine of semantic hits' prompts |
//! | `tokenwarden_semantic_cache_entries` | none: prompts held by the semantic indexes |
//! | `tokenwarden_otel_metric_export_failures_total` | none: OTLP metric exports that failed or timed out (cumulative: the next export carries the totals) |
//!
//! Model names come from apps, so their label values are bounded: at most
//! [`MAX_MODEL_LABELS`] distinct values (then `other`), 64 characters each,
//! control characters replaced by U+FFFD.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64},
    },
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokenwarden_core::{usage::cache::CacheFigures, workload::ObjectRef};

/// Count one event of `budget` in `family`.
fn count_for(family: &Family<BudgetLabel, Counter>, budget: &str) {
    family
        .get_or_create(&BudgetLabel {
            budget: budget.to_string(),
        })
        .inc();
}

/// USD as a float, for metrics only: ledgers keep integers.
pub fn usd_f64(u: tokenwarden_core::money::Usd) -> f64 {
    u.picos() as f64 / 1e12
}

/// Distinct model label values before folding into `other`.
pub const MAX_MODEL_LABELS: usize = 200;

/// Label tuples of attempts whose counters are kept at hand (past that,
/// attempts are counted through the families' own lookups). The same bound
/// holds for route decisions.
const MAX_CACHED_ATTEMPT_SERIES: usize = 4096;

/// Budgets whose gauges are kept at hand.
const MAX_CACHED_BUDGETS: usize = 1024;

/// A label value's first 64 characters (as label values are cut).
fn label_prefix(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

/// A label value from a name that apps or providers chose: its first 64
/// characters, control characters (CR, NUL, …; the exposition format
/// escapes only `\n`, `\\` and `"`) replaced by U+FFFD.
fn label_text(s: &str) -> String {
    label_prefix(s)
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// The label tuple of an attempt, as the app and the provider named things
/// (cut to 64 characters): `model` maps these names to label values.
#[derive(Debug, PartialEq, Eq)]
struct AttemptKey {
    endpoint: &'static str,
    requested: String,
    served: String,
    route: String,
    status: u16,
}

impl AttemptKey {
    fn is(&self, endpoint: &str, requested: &str, served: &str, route: &str, status: u16) -> bool {
        self.status == status
            && self.endpoint == endpoint
            && self.requested == requested
            && self.served == served
            && self.route == route
    }
}

/// FNV-1a over a label tuple's parts and `tail`: cheap for these short
/// strings (SipHash, the families' hasher, is the cost the kept series save).
fn tuple_hash(parts: &[&str], tail: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        // A byte no UTF-8 string holds ends each part: ("ab","c") ≠ ("a","bc").
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    for &b in tail {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Metric handles kept per label tuple (`K`), found by [`tuple_hash`] plus
/// an exact key compare, at most `max` tuples.
///
/// A kept handle shares its value with the family's series, so this holds
/// only while those families are never cleared (only `config_info` is).
#[derive(Debug)]
struct Kept<K, S> {
    by_hash: HashMap<u64, Vec<(K, S)>>,
    len: usize,
    max: usize,
}

impl<K, S: Default> Kept<K, S> {
    fn new(max: usize) -> Self {
        Kept {
            by_hash: HashMap::new(),
            len: 0,
            max,
        }
    }

    /// The handles of the tuple that `is` recognises, kept under `key()`
    /// when new; `None` when it is new and `max` tuples are kept already.
    fn get(
        &mut self,
        hash: u64,
        is: impl Fn(&K) -> bool,
        key: impl FnOnce() -> K,
    ) -> Option<&mut S> {
        // Looked up before any insert: past `max`, new tuples must not
        // leave (empty) buckets behind either.
        let known = self
            .by_hash
            .get(&hash)
            .and_then(|bucket| bucket.iter().position(|(k, _)| is(k)));
        if known.is_none() && self.len >= self.max {
            return None;
        }
        let bucket = self.by_hash.entry(hash).or_default();
        match known {
            Some(i) => bucket.get_mut(i).map(|(_, s)| s),
            None => {
                self.len += 1;
                bucket.push((key(), S::default()));
                bucket.last_mut().map(|(_, s)| s)
            }
        }
    }
}

/// A route decision's label tuple, as routing named things (cut to 64
/// characters).
#[derive(Debug, PartialEq, Eq)]
struct RouteKey {
    route: String,
    model: String,
    kind: &'static str,
}

/// The gauges of one budget, each taken from its family when first set.
#[derive(Debug, Default)]
struct BudgetGauges {
    spent: Option<Gauge<f64, AtomicU64>>,
    limit: Option<Gauge<f64, AtomicU64>>,
    state: Option<Gauge<i64, AtomicI64>>,
    keys: Option<Gauge<i64, AtomicI64>>,
}

/// The counters one attempt label tuple updates, each taken from its family
/// when first needed (a series still appears only once it is counted) and
/// kept: later attempts of the tuple neither build nor hash label sets.
#[derive(Debug, Default)]
struct AttemptSeries {
    /// `model(requested)`, `model(served)`: the label values.
    labels: Option<(String, String)>,
    requests: Option<Counter>,
    tokens: [Option<Counter>; 4],
    cost: Option<Counter<f64, AtomicU64>>,
    unpriced: Option<Counter>,
    estimated: Option<Counter>,
}

/// The token kinds, in `AttemptSeries::tokens` order.
const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    requested_model: String,
    served_model: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    kind: &'static str,
    requested_model: String,
    served_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    requested_model: String,
    served_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    served_model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BustLabels {
    reason: &'static str,
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EscalationLabels {
    reason: &'static str,
    workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BlockLabels {
    budget: String,
    reason: &'static str,
    shadow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    budget: String,
    reason: &'static str,
}

/// One metered attempt, as metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Endpoint label.
    pub endpoint: &'static str,
    /// Requested model.
    pub requested_model: &'a str,
    /// Serving model.
    pub served_model: &'a str,
    /// Route name or `none`.
    pub route: &'a str,
    /// Upstream status (0 = none).
    pub status: u16,
    /// Tokens by kind.
    pub usage: &'a tokenwarden_core::tokens::TokenCounts,
    /// Cost in USD (for the metric only; the ledger keeps integers).
    pub cost_usd: Option<f64>,
    /// Usage was estimated.
    pub estimated: bool,
}

/// Every metric of the sidecar.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    unpriced: Family<ModelLabel, Counter>,
    estimated: Family<ModelLabel, Counter>,
    routes: Family<RouteLabels, Counter>,
    escalations: Family<EscalationLabels, Counter>,
    errors: Family<ReasonLabel, Counter>,
    upstream: Family<ProviderLabel, Histogram>,
    overhead: Histogram,
    budget_spent: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    budget_limit: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    budget_state: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    budget_projected: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    budget_projected_overrun: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    budget_keys: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    budget_blocks: Family<BlockLabels, Counter>,
    reservation_waits: Family<BudgetLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    in_flight: Gauge<i64, AtomicI64>,
    ledger_writable: Gauge<i64, AtomicI64>,
    models_seen: Mutex<HashSet<String>>,
    attempt_series: Mutex<Kept<AttemptKey, AttemptSeries>>,
    route_series: Mutex<Kept<RouteKey, Option<Counter>>>,
    budget_gauges: Mutex<Kept<ObjectRef, BudgetGauges>>,
    connected: Gauge<i64, AtomicI64>,
    snapshots: Family<ResultLabel, Counter>,
    config_info: Family<VersionLabel, Gauge<i64, AtomicI64>>,
    spool_records: Gauge<i64, AtomicI64>,
    spool_age: Gauge<f64, AtomicU64>,
    lease_available: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    lease_waits: Family<BudgetLabel, Counter>,
    lease_fail_open: Family<BudgetLabel, Counter>,
    lease_refusals: Family<RefusalLabels, Counter>,
    cluster_percent: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    cluster_spent: Family<BudgetLabel, Gauge<f64, AtomicU64>>,
    cluster_state: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    period_end: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    cluster_overrun: Family<BudgetLabel, Gauge<i64, AtomicI64>>,
    cache_saved: Family<ModelLabel, Counter<f64, AtomicU64>>,
    cache_wasted: Family<ModelLabel, Counter<f64, AtomicU64>>,
    cache_busts: Family<BustLabels, Counter>,
    cache_expiries: Counter,
    cache_rewrites: Family<KindLabel, Counter>,
    cache_monitor_bytes: Gauge<i64, AtomicI64>,
    otel_dropped: Counter,
    otel_metric_failures: Counter,
    response_cache_requests: Family<ResponseCacheLabels, Counter>,
    response_cache_saved: Family<WorkloadModelLabels, Counter<f64, AtomicU64>>,
    response_cache_entries: Gauge<i64, AtomicI64>,
    response_cache_bytes: Gauge<i64, AtomicI64>,
    response_cache_errors: CacheErrors,
    semantic_requests: Family<SemanticLabels, Counter>,
    semantic_embedding: Histogram,
    semantic_similarity: Histogram,
    semantic_entries: Gauge<i64, AtomicI64>,
}

/// `tokenwarden_response_cache_errors_total{backend,op,reason}`: a cache
/// backend that could not answer (a miss) or store (dropped). Cloned into
/// the stores.
#[derive(Clone, Debug, Default)]
pub struct CacheErrors(Family<CacheErrorLabels, Counter>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheErrorLabels {
    backend: &'static str,
    op: &'static str,
    reason: &'static str,
}

impl CacheErrors {
    /// Count one failed `op` (`get`, `put`, `publish`, `tail`) of `backend`
    /// for `reason` (`timeout`, `unavailable`, `oom`, `auth`, `tls`, `credentials`,
    /// `decode`, `error`).
    pub fn count(&self, backend: &'static str, op: &'static str, reason: &'static str) {
        self.0
            .get_or_create(&CacheErrorLabels {
                backend,
                op,
                reason,
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SemanticLabels {
    result: &'static str,
    workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseCacheLabels {
    result: &'static str,
    workload: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadModelLabels {
    workload: String,
    model: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Metrics ===

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokenwarden");
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            unpriced: Family::default(),
            estimated: Family::default(),
            routes: Family::default(),
            escalations: Family::default(),
            errors: Family::default(),
            upstream: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 18))
            }),
            // 0.1 ms to 3.3 s: routing takes microseconds, a lease wait seconds.
            overhead: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            budget_spent: Family::default(),
            budget_limit: Family::default(),
            budget_state: Family::default(),
            budget_projected: Family::default(),
            budget_projected_overrun: Family::default(),
            budget_keys: Family::default(),
            budget_blocks: Family::default(),
            reservation_waits: Family::default(),
            reloads: Family::default(),
            in_flight: Gauge::default(),
            ledger_writable: Gauge::default(),
            models_seen: Mutex::new(HashSet::new()),
            attempt_series: Mutex::new(Kept::new(MAX_CACHED_ATTEMPT_SERIES)),
            route_series: Mutex::new(Kept::new(MAX_CACHED_ATTEMPT_SERIES)),
            budget_gauges: Mutex::new(Kept::new(MAX_CACHED_BUDGETS)),
            connected: Gauge::default(),
            snapshots: Family::default(),
            config_info: Family::default(),
            spool_records: Gauge::default(),
            spool_age: Gauge::default(),
            lease_available: Family::default(),
            lease_waits: Family::default(),
            lease_fail_open: Family::default(),
            lease_refusals: Family::default(),
            cluster_percent: Family::default(),
            cluster_spent: Family::default(),
            cluster_state: Family::default(),
            period_end: Family::default(),
            cluster_overrun: Family::default(),
            cache_saved: Family::default(),
            cache_wasted: Family::default(),
            cache_busts: Family::default(),
            cache_expiries: Counter::default(),
            cache_rewrites: Family::default(),
            cache_monitor_bytes: Gauge::default(),
            otel_dropped: Counter::default(),
            otel_metric_failures: Counter::default(),
            response_cache_requests: Family::default(),
            response_cache_saved: Family::default(),
            response_cache_entries: Gauge::default(),
            response_cache_bytes: Gauge::default(),
            response_cache_errors: CacheErrors::default(),
            semantic_requests: Family::default(),
            // 1 ms to 8 s: a local embedder answers in 10-25 ms.
            semantic_embedding: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            // 0.80 to 1.00 in steps of 0.01: hits are at or above minSimilarity.
            semantic_similarity: Histogram::new((80..=100).map(|p| f64::from(p) / 100.0)),
            semantic_entries: Gauge::default(),
        };
        m.register_traffic(&mut registry);
        m.register_budgets(&mut registry);
        m.register_process(&mut registry);
        m.register_control(&mut registry);
        m.register_cache(&mut registry);
        m.register_response_cache(&mut registry);
        m.register_semantic_cache(&mut registry);
        Metrics { registry, ..m }
    }

    /// Register the response cache: lookups by result, saved USD, size.
    fn register_response_cache(&self, registry: &mut Registry) {
        registry.register(
            "response_cache_requests",
            "Requests under a policy with the response cache on, by result: hit, miss, bypass (the app asked), uncacheable (sampled), stored, store_skipped (not a complete success, too large, or no-store)",
            self.response_cache_requests.clone(),
        );
        registry.register(
            "response_cache_saved_usd",
            "What response-cache hits saved: the cost of the stored answers they replayed",
            self.response_cache_saved.clone(),
        );
        registry.register(
            "response_cache_entries",
            "Responses held by the response cache",
            self.response_cache_entries.clone(),
        );
        registry.register(
            "response_cache_bytes",
            "Bytes held by the response cache",
            self.response_cache_bytes.clone(),
        );
        registry.register(
            "response_cache_errors",
            "Response-cache backend operations that failed (a lookup became a miss, a store was dropped), by backend, op (get, put, publish, tail) and reason (timeout, unavailable, oom, auth, tls, credentials, decode, error)",
            self.response_cache_errors.0.clone(),
        );
    }

    /// The response cache's error counter, for its stores.
    pub fn response_cache_errors(&self) -> CacheErrors {
        self.response_cache_errors.clone()
    }

    /// Register the semantic cache: lookups by result, embedding latency,
    /// similarity of hits, index size.
    fn register_semantic_cache(&self, registry: &mut Registry) {
        registry.register(
            "semantic_cache_requests",
            "Exact misses under a policy with the semantic cache on, by result: hit, below_threshold, no_entry (nothing stored in the scope), guard:<numbers|negation|entities|code|content_words>, gone (the answer left the exact store), store_error (the Redis store could not answer; the entry is kept), ineligible, embed_error",
            self.semantic_requests.clone(),
        );
        registry.register(
            "semantic_cache_embedding_seconds",
            "Time of the semantic cache's embedding calls (failures included)",
            self.semantic_embedding.clone(),
        );
        registry.register(
            "semantic_cache_hit_similarity",
            "Similarity (cosine) of the prompts of semantic hits",
            self.semantic_similarity.clone(),
        );
        registry.register(
            "semantic_cache_entries",
            "Prompts held by the semantic cache's indexes",
            self.semantic_entries.clone(),
        );
    }

    /// Count one semantic-cache lookup's `result` for `workload`.
    pub fn semantic_cache(&self, result: &'static str, workload: &str) {
        self.semantic_requests
            .get_or_create(&SemanticLabels {
                result,
                workload: workload.to_string(),
            })
            .inc();
    }

    /// Observe an embedding call's duration.
    pub fn semantic_embedding(&self, seconds: f64) {
        self.semantic_embedding.observe(seconds);
    }

    /// Observe a semantic hit's similarity (parts per 10,000).
    pub fn semantic_hit_similarity(&self, parts: u16) {
        self.semantic_similarity.observe(
            f64::from(parts) / f64::from(tokenwarden_core::semantic_cache::SIMILARITY_SCALE),
        );
    }

    /// The semantic indexes' entries.
    pub fn semantic_entries(&self, entries: u64) {
        self.semantic_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Count one response-cache event (`result`) for `workload` and `model`.
    pub fn response_cache(&self, result: &'static str, workload: &str, model: &str) {
        self.response_cache_requests
            .get_or_create(&ResponseCacheLabels {
                result,
                workload: workload.to_string(),
                model: self.model(model),
            })
            .inc();
    }

    /// Count what a response-cache hit saved.
    pub fn response_cache_saved(
        &self,
        workload: &str,
        model: &str,
        saved: tokenwarden_core::money::Usd,
    ) {
        self.response_cache_saved
            .get_or_create(&WorkloadModelLabels {
                workload: workload.to_string(),
                model: self.model(model),
            })
            .inc_by(usd_f64(saved));
    }

    /// The response cache's entries and bytes.
    pub fn response_cache_size(&self, entries: u64, bytes: u64) {
        self.response_cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.response_cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Register the provider's prompt cache: saved, wasted, busts, rewrites.
    fn register_cache(&self, registry: &mut Registry) {
        registry.register(
            "cache_saved_usd",
            "What prompt-cache reads saved: their tokens at the uncached input price minus their cost",
            self.cache_saved.clone(),
        );
        registry.register(
            "cache_wasted_usd",
            "What prompt-cache busts wasted: shared content billed above the cache-read price",
            self.cache_wasted.clone(),
        );
        registry.register(
            "cache_busts",
            "Requests whose prompt prefix broke the provider's cache, by reason and kind of change",
            self.cache_busts.clone(),
        );
        registry.register(
            "cache_expiries",
            "Requests whose earlier prefix had outlived the provider's cache TTL (not busts)",
            self.cache_expiries.clone(),
        );
        registry.register(
            "cache_rewrites",
            "Requests the sidecar changed to make the prompt cache hit, by kind",
            self.cache_rewrites.clone(),
        );
        registry.register(
            "cache_monitor_bytes",
            "Memory held by the prefix-stability monitor",
            self.cache_monitor_bytes.clone(),
        );
    }

    /// Count one record's prompt-cache figures.
    pub fn cache(&self, served_model: &str, f: &CacheFigures) {
        if !f.saved.is_zero() || !f.wasted.is_zero() {
            let label = ModelLabel {
                served_model: self.model(served_model),
            };
            if !f.saved.is_zero() {
                self.cache_saved
                    .get_or_create(&label)
                    .inc_by(usd_f64(f.saved));
            }
            if !f.wasted.is_zero() {
                self.cache_wasted
                    .get_or_create(&label)
                    .inc_by(usd_f64(f.wasted));
            }
        }
        if let Some(b) = &f.bust {
            self.cache_busts
                .get_or_create(&BustLabels {
                    reason: b.reason.as_str(),
                    change: b.change.as_str(),
                })
                .inc();
        }
    }

    /// Count a prompt whose earlier prefix had expired from the provider's cache.
    pub fn cache_expiry(&self) {
        self.cache_expiries.inc();
    }

    /// Count a request changed to make the cache hit (`breakpoints`,
    /// `prompt_cache_key`).
    pub fn cache_rewrite(&self, kind: &'static str) {
        self.cache_rewrites.get_or_create(&KindLabel { kind }).inc();
    }

    /// The prefix-stability monitor's memory (set before a scrape).
    pub fn cache_monitor_bytes(&self, bytes: usize) {
        self.cache_monitor_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Register the traffic: attempts, tokens, cost, routes, errors, upstream latency.
    fn register_traffic(&self, registry: &mut Registry) {
        registry.register(
            "requests",
            "Upstream attempts metered",
            self.requests.clone(),
        );
        registry.register(
            "tokens",
            "Tokens metered, by kind (disjoint kinds)",
            self.tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "Cost in USD at the serving model's price",
            self.cost.clone(),
        );
        registry.register(
            "unpriced_requests",
            "Attempts to models with no known price",
            self.unpriced.clone(),
        );
        registry.register(
            "estimated_usage",
            "Attempts whose usage was estimated (stream cut off)",
            self.estimated.clone(),
        );
        registry.register("route_decisions", "Routing decisions", self.routes.clone());
        registry.register(
            "escalations",
            "Requests sent one tier up, by reason and workload",
            self.escalations.clone(),
        );
        registry.register("errors", "Errors, by reason", self.errors.clone());
        registry.register(
            "upstream_duration_seconds",
            "Time to the upstream response head",
            self.upstream.clone(),
        );
        registry.register(
            "request_overhead_seconds",
            "Latency the sidecar adds: from a metered request's arrival to its first upstream attempt being sent (body read, parse, classify, route, budget and lease admission)",
            self.overhead.clone(),
        );
    }

    /// Register the local budgets: spend, limits, state, refusals, waits.
    fn register_budgets(&self, registry: &mut Registry) {
        registry.register(
            "budget_spent_usd",
            "Committed spend this period",
            self.budget_spent.clone(),
        );
        registry.register(
            "budget_limit_usd",
            "Budget limit",
            self.budget_limit.clone(),
        );
        registry.register(
            "budget_state",
            "Budget state: 0 Ok, 1 Threshold, 2 Exhausted",
            self.budget_state.clone(),
        );
        registry.register(
            "budget_projected_spend_usd",
            "Spend projected at the period's end at the current burn rate (absent while the forecast warms up)",
            self.budget_projected.clone(),
        );
        registry.register(
            "budget_projected_overrun",
            "1 while the forecast reaches a limit before the period's end",
            self.budget_projected_overrun.clone(),
        );
        registry.register(
            "budget_keys",
            "Per-key keys (TokenBudget perKey) this period, (none) and (other) included",
            self.budget_keys.clone(),
        );
        registry.register(
            "budget_blocks",
            "Requests a budget refused (or would have, in shadow mode)",
            self.budget_blocks.clone(),
        );
        registry.register(
            "budget_reservation_waits",
            "Requests that fit a budget's spend but waited for the worst cases reserved by requests in flight to settle",
            self.reservation_waits.clone(),
        );
    }

    /// Register the process: reloads, requests in flight, the ledger's health.
    fn register_process(&self, registry: &mut Registry) {
        registry.register(
            "config_reloads",
            "Configuration reloads",
            self.reloads.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being proxied",
            self.in_flight.clone(),
        );
        registry.register(
            "ledger_writable",
            "1 while the durable ledger takes writes, 0 after a write failed (requests are refused unless --ledger-fail-open)",
            self.ledger_writable.clone(),
        );
        registry.register(
            "otel_dropped_spans",
            "OpenTelemetry spans dropped: the export queue was full, or the collector did not take a batch",
            self.otel_dropped.clone(),
        );
        registry.register(
            "otel_metric_export_failures",
            "OTLP metric exports that failed or timed out (the next export carries the cumulative totals)",
            self.otel_metric_failures.clone(),
        );
    }

    /// Register connected mode: the session, snapshots, the spool, leases, the cluster's view.
    fn register_control(&self, registry: &mut Registry) {
        registry.register(
            "control_plane_connected",
            "1 while the session with the operator is up (connected mode)",
            self.connected.clone(),
        );
        registry.register(
            "config_snapshots",
            "Config snapshots from the operator, by result",
            self.snapshots.clone(),
        );
        registry.register(
            "config_info",
            "The installed config snapshot's version",
            self.config_info.clone(),
        );
        registry.register(
            "spool_records",
            "Usage records not yet acked by the operator",
            self.spool_records.clone(),
        );
        registry.register(
            "spool_oldest_unacked_age_seconds",
            "Age of the oldest unacked usage record",
            self.spool_age.clone(),
        );
        registry.register(
            "lease_available_usd",
            "What is left of this sidecar's lease on a budget",
            self.lease_available.clone(),
        );
        registry.register(
            "lease_waits",
            "Requests that waited for a lease grant",
            self.lease_waits.clone(),
        );
        registry.register(
            "lease_fail_open",
            "Requests allowed without a lease (operator unreachable, failMode Open)",
            self.lease_fail_open.clone(),
        );
        registry.register(
            "lease_refusals",
            "Requests refused for want of a lease",
            self.lease_refusals.clone(),
        );
        registry.register(
            "budget_cluster_percent_spent",
            "Cluster-wide percent of the budget spent (from the operator)",
            self.cluster_percent.clone(),
        );
        registry.register(
            "budget_cluster_spent_usd",
            "Cluster-wide spend this period (from the operator)",
            self.cluster_spent.clone(),
        );
        registry.register(
            "budget_cluster_state",
            "Cluster-wide budget state (from the operator): 0 Ok, 1 Threshold, 2 Exhausted",
            self.cluster_state.clone(),
        );
        registry.register(
            "budget_period_end_timestamp_seconds",
            "When the budget's current period ends, Unix seconds (from the operator)",
            self.period_end.clone(),
        );
        registry.register(
            "budget_cluster_projected_overrun",
            "1 while the operator projects the budget's spend past its limit before the current period ends (its ProjectedOverrun condition)",
            self.cluster_overrun.clone(),
        );
    }

    /// Whether the last write to the durable ledger succeeded.
    pub fn ledger_writable(&self, ok: bool) {
        self.ledger_writable.set(i64::from(ok));
    }

    /// The operator session went up or down.
    pub fn control_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    /// A config snapshot was accepted or rejected.
    pub fn snapshot(&self, accepted: bool, version: &str) {
        self.snapshots
            .get_or_create(&ResultLabel {
                result: if accepted { "accepted" } else { "rejected" },
            })
            .inc();
        if accepted {
            self.config_info.clear();
            self.config_info
                .get_or_create(&VersionLabel {
                    version: label_prefix(version).to_string(),
                })
                .set(1);
        }
    }

    /// Spool depth and the settle time of the oldest unacked record.
    pub fn spool(&self, depth: usize, oldest: Option<jiff::Timestamp>) {
        self.spool_records
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let age = oldest.map_or(0.0, |t| {
            jiff::Timestamp::now()
                .duration_since(t)
                .as_secs_f64()
                .max(0.0)
        });
        self.spool_age.set(age);
    }

    /// What is left of a lease, in picos.
    pub fn lease_available(&self, budget: &str, picos: i128) {
        self.lease_available
            .get_or_create(&BudgetLabel {
                budget: budget.to_string(),
            })
            .set(picos as f64 / 1e12);
    }

    /// A request waited for in-flight reservations to settle.
    pub fn reservation_wait(&self, budget: &str) {
        count_for(&self.reservation_waits, budget);
    }

    /// A request waited for a grant.
    pub fn lease_wait(&self, budget: &str) {
        count_for(&self.lease_waits, budget);
    }

    /// A request went through without a lease (fail open).
    pub fn lease_fail_open(&self, budget: &str) {
        count_for(&self.lease_fail_open, budget);
    }

    /// A request was refused for want of a lease.
    pub fn lease_refusal(&self, budget: &str, reason: &'static str) {
        self.lease_refusals
            .get_or_create(&RefusalLabels {
                budget: budget.to_string(),
                reason,
            })
            .inc();
        self.budget_block(budget, reason, false);
    }

    /// The cluster-wide state of a budget.
    pub fn cluster_status(&self, budget: &str, s: &tokenwarden_proto::BudgetStatus) {
        let l = BudgetLabel {
            budget: budget.to_string(),
        };
        self.cluster_percent
            .get_or_create(&l)
            .set(i64::from(s.percent_spent));
        self.cluster_spent
            .get_or_create(&l)
            .set(s.spent_picos as f64 / 1e12);
        let state = match s.state.as_str() {
            "Exhausted" => 2,
            "Threshold" => 1,
            _ => 0,
        };
        self.cluster_state.get_or_create(&l).set(state);
        self.period_end.get_or_create(&l).set(s.period_end_unix);
        self.cluster_overrun
            .get_or_create(&l)
            .set(i64::from(s.projected_overrun));
    }

    /// Connected: align a budget's `budget_cluster_projected_overrun` with
    /// the operator's flag *for the budget's current period* (what the
    /// sidecar acts on: [`BudgetState::projected_overrun`]). A status of
    /// an earlier period, or one the sidecar has not rolled to yet, counts
    /// as no overrun. Budgets no BudgetStatus reported yet get no series.
    ///
    /// [`BudgetState::projected_overrun`]: tokenwarden_core::budget::BudgetState::projected_overrun
    pub fn cluster_overrun(&self, b: &tokenwarden_core::budget::BudgetState) {
        let l = BudgetLabel {
            budget: b.config().source.to_string(),
        };
        if let Some(g) = self.cluster_overrun.get(&l) {
            g.set(i64::from(b.projected_overrun()));
        }
    }

    /// Bound a model name for use as a label value.
    fn model(&self, name: &str) -> String {
        let name = label_text(name);
        let Ok(mut seen) = self.models_seen.lock() else {
            return "other".into();
        };
        if seen.contains(&name) {
            return name;
        }
        if seen.len() >= MAX_MODEL_LABELS {
            return "other".into();
        }
        seen.insert(name.clone());
        name
    }

    /// Record one metered attempt.
    pub fn attempt(&self, a: &Attempt<'_>) {
        let (requested, served, route) = (
            label_prefix(a.requested_model),
            label_prefix(a.served_model),
            label_prefix(a.route),
        );
        let hash = tuple_hash(
            &[a.endpoint, requested, served, route],
            &a.status.to_le_bytes(),
        );
        let Ok(mut kept) = self.attempt_series.lock() else {
            return self.attempt_uncached(a);
        };
        let series = kept.get(
            hash,
            |k| k.is(a.endpoint, requested, served, route, a.status),
            || AttemptKey {
                endpoint: a.endpoint,
                requested: requested.to_string(),
                served: served.to_string(),
                route: route.to_string(),
                status: a.status,
            },
        );
        match series {
            Some(series) => self.record(series, a, route),
            None => {
                drop(kept);
                self.attempt_uncached(a);
            }
        }
    }

    /// [`attempt`](Self::attempt) through the families' lookups alone: each
    /// counter is looked up for this attempt and not kept.
    fn attempt_uncached(&self, a: &Attempt<'_>) {
        self.record(&mut AttemptSeries::default(), a, label_prefix(a.route));
    }

    /// Counts `a` in `series`, taking from its family each counter the
    /// series does not hold yet (`route`: the route label value).
    fn record(&self, series: &mut AttemptSeries, a: &Attempt<'_>, route: &str) {
        let AttemptSeries {
            labels,
            requests,
            tokens,
            cost,
            unpriced,
            estimated,
        } = series;
        let (requested, served) = &*labels
            .get_or_insert_with(|| (self.model(a.requested_model), self.model(a.served_model)));
        requests
            .get_or_insert_with(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        endpoint: a.endpoint,
                        requested_model: requested.clone(),
                        served_model: served.clone(),
                        route: label_text(route),
                        status: a.status,
                    })
                    .clone()
            })
            .inc();
        let counts = [
            a.usage.input_tokens,
            a.usage.output_tokens,
            a.usage.cache_read_tokens,
            a.usage.cache_write_tokens,
        ];
        for ((slot, kind), n) in tokens.iter_mut().zip(TOKEN_KINDS).zip(counts) {
            if n > 0 {
                slot.get_or_insert_with(|| {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            kind,
                            requested_model: requested.clone(),
                            served_model: served.clone(),
                        })
                        .clone()
                })
                .inc_by(n);
            }
        }
        match a.cost_usd {
            Some(c) => {
                cost.get_or_insert_with(|| {
                    self.cost
                        .get_or_create(&CostLabels {
                            requested_model: requested.clone(),
                            served_model: served.clone(),
                        })
                        .clone()
                })
                .inc_by(c);
            }
            None if a.status != 0 && a.status < 400 => {
                unpriced
                    .get_or_insert_with(|| {
                        self.unpriced
                            .get_or_create(&ModelLabel {
                                served_model: served.clone(),
                            })
                            .clone()
                    })
                    .inc();
            }
            None => {}
        }
        if a.estimated {
            estimated
                .get_or_insert_with(|| {
                    self.estimated
                        .get_or_create(&ModelLabel {
                            served_model: served.clone(),
                        })
                        .clone()
                })
                .inc();
        }
    }

    /// Record a routing decision (`kind`: routed, escalated, downgraded, fallback).
    pub fn route(&self, route: &str, model: &str, kind: &'static str) {
        let (route, model) = (label_prefix(route), label_prefix(model));
        let hash = tuple_hash(&[route, model, kind], &[]);
        let Ok(mut kept) = self.route_series.lock() else {
            return self.route_uncached(route, model, kind);
        };
        let counter = kept.get(
            hash,
            |k| k.kind == kind && k.route == route && k.model == model,
            || RouteKey {
                route: route.to_string(),
                model: model.to_string(),
                kind,
            },
        );
        match counter {
            Some(c) => {
                c.get_or_insert_with(|| self.route_counter(route, model, kind))
                    .inc();
            }
            None => {
                drop(kept);
                self.route_uncached(route, model, kind);
            }
        }
    }

    /// [`route`](Self::route) through the family's lookup alone.
    fn route_uncached(&self, route: &str, model: &str, kind: &'static str) {
        self.route_counter(route, model, kind).inc();
    }

    fn route_counter(&self, route: &str, model: &str, kind: &'static str) -> Counter {
        self.routes
            .get_or_create(&RouteLabels {
                route: label_text(route),
                model: self.model(model),
                kind,
            })
            .clone()
    }

    /// Count an escalation by its reason (an `answer::Reason` label) and
    /// the sidecar's workload (fixed at start: one series per reason).
    pub fn escalation(&self, reason: &'static str, workload: &str) {
        self.escalations
            .get_or_create(&EscalationLabels {
                reason,
                workload: workload.to_string(),
            })
            .inc();
    }

    /// The counter of OpenTelemetry spans dropped (`tokenwarden_otel_dropped_spans_total`),
    /// for the span exporter to count its drops in.
    pub fn otel_dropped(&self) -> Counter {
        self.otel_dropped.clone()
    }

    /// The counter of failed OTLP metric exports
    /// (`tokenwarden_otel_metric_export_failures_total`).
    pub fn otel_metric_failures(&self) -> Counter {
        self.otel_metric_failures.clone()
    }

    /// Count an error by its label.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Observe time to an upstream response head.
    pub fn upstream_latency(&self, provider: &str, seconds: f64) {
        self.upstream
            .get_or_create(&ProviderLabel {
                provider: provider.to_string(),
            })
            .observe(seconds);
    }

    /// Observe the latency the sidecar added before a request's first
    /// upstream attempt was sent.
    pub fn overhead(&self, seconds: f64) {
        self.overhead.observe(seconds);
    }

    /// Update a budget's gauges from its live state.
    pub fn budget(&self, b: &tokenwarden_core::budget::BudgetState) {
        let id = &b.config().source;
        let hash = tuple_hash(&[&id.namespace, &id.name], &[]);
        let Ok(mut kept) = self.budget_gauges.lock() else {
            return self.budget_uncached(b);
        };
        match kept.get(hash, |k| k == id, || id.clone()) {
            Some(gauges) => self.set_budget(gauges, b),
            None => {
                drop(kept);
                self.budget_uncached(b);
            }
        }
    }

    /// [`budget`](Self::budget) through the families' lookups alone.
    fn budget_uncached(&self, b: &tokenwarden_core::budget::BudgetState) {
        self.set_budget(&mut BudgetGauges::default(), b);
    }

    /// A budget's forecast gauges (`None` or warming up: no projected
    /// spend series, overrun 0).
    pub fn budget_forecast(
        &self,
        id: &tokenwarden_core::workload::ObjectRef,
        f: Option<&tokenwarden_core::forecast::Forecast>,
    ) {
        let label = BudgetLabel {
            budget: id.to_string(),
        };
        match f.and_then(tokenwarden_core::forecast::Forecast::projected_spend) {
            Some(spend) => {
                self.budget_projected
                    .get_or_create(&label)
                    .set(usd_f64(spend));
            }
            None => {
                self.budget_projected.remove(&label);
            }
        }
        self.budget_projected_overrun
            .get_or_create(&label)
            .set(i64::from(
                f.is_some_and(tokenwarden_core::forecast::Forecast::overrun),
            ));
    }

    /// Sets `b`'s gauges, taking from its family each one `gauges` does not hold yet.
    fn set_budget(&self, gauges: &mut BudgetGauges, b: &tokenwarden_core::budget::BudgetState) {
        use tokenwarden_core::budget::State;
        let label = || BudgetLabel {
            budget: b.config().source.to_string(),
        };
        gauges
            .spent
            .get_or_insert_with(|| self.budget_spent.get_or_create(&label()).clone())
            .set(usd_f64(b.totals().spent));
        if let Some(limit) = b.config().limit_usd {
            gauges
                .limit
                .get_or_insert_with(|| self.budget_limit.get_or_create(&label()).clone())
                .set(usd_f64(limit));
        }
        let state = match b.state() {
            State::Ok => 0,
            State::Threshold => 1,
            State::Exhausted => 2,
        };
        gauges
            .state
            .get_or_insert_with(|| self.budget_state.get_or_create(&label()).clone())
            .set(state);
        if b.per_key().is_some() {
            gauges
                .keys
                .get_or_insert_with(|| self.budget_keys.get_or_create(&label()).clone())
                .set(i64::try_from(b.key_totals().len()).unwrap_or(i64::MAX));
        }
    }

    /// Count a budget refusal.
    pub fn budget_block(&self, budget: &str, reason: &'static str, shadow: bool) {
        self.budget_blocks
            .get_or_create(&BlockLabels {
                budget: budget.to_string(),
                reason,
                shadow: if shadow { "true" } else { "false" },
            })
            .inc();
    }

    /// Count a configuration reload.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: if ok { "ok" } else { "rejected" },
            })
            .inc();
    }

    /// The in-flight gauge.
    pub fn in_flight(&self) -> &Gauge<i64, AtomicI64> {
        &self.in_flight
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use tokenwarden_core::tokens::TokenCounts;

    use jiff::Timestamp;
    use tokenwarden_core::{
        budget::BudgetState,
        money::Usd,
        period::Period,
        usage::Totals,
        workload::{BudgetConfig, FailMode, ObjectRef},
    };

    use super::{
        Attempt, Kept, MAX_CACHED_ATTEMPT_SERIES, MAX_CACHED_BUDGETS, MAX_MODEL_LABELS, Metrics,
    };

    fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> TokenCounts {
        TokenCounts {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            cache_write_1h_tokens: 0,
        }
    }

    /// The exposition's sample lines, sorted (series order within a family
    /// follows a hash map's order, which differs between two registries).
    fn samples(m: &Metrics) -> Vec<String> {
        let mut lines: Vec<String> = m
            .render()
            .lines()
            .filter(|l| l.starts_with("tokenwarden_") && !l.starts_with("tokenwarden_in_flight"))
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    /// Records every attempt on two registries, one through the cache and
    /// one through the families' lookups, and returns both expositions.
    fn both(attempts: &[Attempt<'_>]) -> (Vec<String>, Vec<String>) {
        let (cached, plain) = (Metrics::new(), Metrics::new());
        for a in attempts {
            cached.attempt(a);
            plain.attempt_uncached(a);
        }
        (samples(&cached), samples(&plain))
    }

    #[test]
    fn cached_series_count_exactly_what_the_families_count() {
        let small = usage(10, 5, 0, 0);
        let all_kinds = usage(1, 2, 3, 4);
        let none = usage(0, 0, 0, 0);
        let long = format!("{}é-tail", "m".repeat(63));
        let a = |requested, served, route, status, usage, cost, estimated| Attempt {
            endpoint: "chat_completions",
            requested_model: requested,
            served_model: served,
            route,
            status,
            usage,
            cost_usd: cost,
            estimated,
        };
        let attempts = vec![
            a(
                "gpt-4o-mini",
                "gpt-4o-mini",
                "none",
                200,
                &small,
                Some(0.25),
                false,
            ),
            a(
                "gpt-4o-mini",
                "gpt-4o-mini",
                "none",
                200,
                &small,
                Some(0.5),
                false,
            ),
            a(
                "gpt-4o-mini",
                "gpt-4o-mini",
                "none",
                200,
                &all_kinds,
                Some(0.125),
                true,
            ),
            a(
                "gpt-4o-mini",
                "gpt-4o-mini",
                "none",
                500,
                &none,
                None,
                false,
            ),
            a("acme-7b", "acme-7b", "none", 200, &small, None, false),
            a("acme-7b", "acme-7b", "none", 200, &small, None, true),
            // A tuple that only differs in where one string ends.
            a("ab", "c", "r", 200, &small, Some(1.0), false),
            a("a", "bc", "r", 200, &small, Some(2.0), false),
            a(&long, &long, &long, 200, &small, Some(0.0625), false),
            a(&long, &long, &long, 200, &small, Some(0.0625), false),
        ];
        let (cached, plain) = both(&attempts);
        assert_eq!(cached, plain);
        // And what they count is what was recorded.
        let find = |prefix: &str| {
            cached
                .iter()
                .find(|l| l.starts_with(prefix))
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            find("tokenwarden_requests_total{endpoint=\"chat_completions\",requested_model=\"gpt-4o-mini\",served_model=\"gpt-4o-mini\",route=\"none\",status=\"200\"}")
                .ends_with(" 3"),
            "{cached:#?}"
        );
        assert!(
            find("tokenwarden_tokens_total{kind=\"input\",requested_model=\"gpt-4o-mini\"")
                .ends_with(" 21"),
            "{cached:#?}"
        );
        assert!(
            find("tokenwarden_tokens_total{kind=\"cache_write\",requested_model=\"gpt-4o-mini\"")
                .ends_with(" 4"),
            "{cached:#?}"
        );
        assert!(
            find("tokenwarden_cost_usd_total{requested_model=\"gpt-4o-mini\"").ends_with(" 0.875")
        );
        assert!(
            find("tokenwarden_unpriced_requests_total{served_model=\"acme-7b\"}").ends_with(" 2")
        );
        assert!(
            find("tokenwarden_estimated_usage_total{served_model=\"acme-7b\"}").ends_with(" 1")
        );
        assert!(
            find("tokenwarden_cost_usd_total{requested_model=\"ab\",served_model=\"c\"}")
                .ends_with(" 1.0")
        );
        assert!(
            find("tokenwarden_cost_usd_total{requested_model=\"a\",served_model=\"bc\"}")
                .ends_with(" 2.0")
        );
        let cut = format!("{}é", "m".repeat(63));
        assert!(
            find(&format!("tokenwarden_requests_total{{endpoint=\"chat_completions\",requested_model=\"{cut}\",served_model=\"{cut}\",route=\"{cut}\",status=\"200\"}}"))
                .ends_with(" 2"),
            "{cached:#?}"
        );
        // No series for a kind that was never counted.
        assert!(
            !cached
                .iter()
                .any(|l| l.contains("kind=\"cache_read\",requested_model=\"acme-7b\""))
        );
    }

    #[test]
    fn a_full_kept_cache_grows_no_further() {
        let mut kept: Kept<u64, u64> = Kept::new(3);
        for t in 0..3u64 {
            *kept.get(t, |k| *k == t, || t).unwrap() += 10 + t;
        }
        // Known tuples are still found, new ones are refused and leave nothing behind.
        for t in 3..1000u64 {
            assert!(kept.get(t, |k| *k == t, || t).is_none());
        }
        assert_eq!(kept.by_hash.len(), 3);
        assert_eq!(kept.len, 3);
        assert_eq!(kept.get(1, |k| *k == 1, || 1).copied(), Some(11));
        // Two tuples in one bucket (a hash collision) stay apart.
        let mut kept: Kept<u64, u64> = Kept::new(4);
        *kept.get(7, |k| *k == 1, || 1).unwrap() += 1;
        *kept.get(7, |k| *k == 2, || 2).unwrap() += 2;
        assert_eq!(kept.get(7, |k| *k == 1, || 1).copied(), Some(1));
        assert_eq!(kept.get(7, |k| *k == 2, || 2).copied(), Some(2));
        assert_eq!((kept.by_hash.len(), kept.len), (1, 2));
    }

    #[test]
    fn past_the_bounds_the_cache_still_counts_like_the_families() {
        // More tuples than the cache keeps, over more models than get labels.
        let u = usage(3, 1, 0, 0);
        let names: Vec<String> = (0..MAX_MODEL_LABELS + 10)
            .map(|i| format!("model-{i}"))
            .collect();
        let routes: Vec<String> = (0..MAX_CACHED_ATTEMPT_SERIES / names.len() + 2)
            .map(|i| format!("route-{i}"))
            .collect();
        let mut attempts = Vec::new();
        for route in &routes {
            for name in &names {
                attempts.push(Attempt {
                    endpoint: "messages",
                    requested_model: name,
                    served_model: name,
                    route,
                    status: 200,
                    usage: &u,
                    cost_usd: Some(0.5),
                    estimated: false,
                });
            }
        }
        assert!(attempts.len() > MAX_CACHED_ATTEMPT_SERIES);
        // Twice over: the second pass hits cached series and uncached ones.
        let twice: Vec<Attempt<'_>> = attempts.iter().chain(attempts.iter()).copied().collect();
        let (cached, plain) = both(&twice);
        assert_eq!(cached, plain);
        assert!(cached.iter().any(|l| l.contains("served_model=\"other\"")));
    }

    #[test]
    fn kept_route_counters_count_what_the_family_counts() {
        let long = format!("{}é-tail", "r".repeat(63));
        let mut decisions: Vec<(String, String, &'static str)> = vec![
            ("mini".into(), "gpt-5-mini".into(), "routed"),
            ("mini".into(), "gpt-5-mini".into(), "routed"),
            ("mini".into(), "gpt-5-mini".into(), "escalated"),
            ("mini".into(), "gpt-5".into(), "routed"),
            // Only where one string ends differs.
            ("ab".into(), "c".into(), "routed"),
            ("a".into(), "bc".into(), "routed"),
            (long.clone(), long.clone(), "fallback"),
            (long.clone(), long.clone(), "fallback"),
        ];
        // Past the kept bound and the model-label bound, twice over.
        for i in 0..MAX_CACHED_ATTEMPT_SERIES / MAX_MODEL_LABELS + 2 {
            for j in 0..MAX_MODEL_LABELS + 10 {
                decisions.push((format!("route-{i}"), format!("model-{j}"), "routed"));
            }
        }
        assert!(decisions.len() > MAX_CACHED_ATTEMPT_SERIES);
        let (kept, plain) = (Metrics::new(), Metrics::new());
        for _ in 0..2 {
            for (route, model, kind) in &decisions {
                kept.route(route, model, kind);
                plain.route_uncached(route, model, kind);
            }
        }
        let (kept, plain) = (samples(&kept), samples(&plain));
        assert_eq!(kept, plain);
        let value = |prefix: &str| {
            kept.iter()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or("missing")
                .to_string()
        };
        let line = |r: &str, m: &str, k: &str| {
            format!("tokenwarden_route_decisions_total{{route=\"{r}\",model=\"{m}\",kind=\"{k}\"}}")
        };
        assert_eq!(
            value(&line("mini", "gpt-5-mini", "routed")),
            "4",
            "{kept:#?}"
        );
        assert_eq!(value(&line("mini", "gpt-5-mini", "escalated")), "2");
        assert_eq!(value(&line("ab", "c", "routed")), "2");
        assert_eq!(value(&line("a", "bc", "routed")), "2");
        let cut = format!("{}é", "r".repeat(63));
        assert_eq!(value(&line(&cut, &cut, "fallback")), "4");
        assert!(kept.iter().any(|l| l.contains("model=\"other\"")));
    }

    fn budget_state(ns: &str, name: &str, limit: Option<&str>, spent: &str) -> BudgetState {
        let cfg = BudgetConfig {
            source: ObjectRef::new(ns, name),
            generation: 1,
            period: Period::Daily,
            time_zone: "UTC".into(),
            limit_usd: limit.map(|l| l.parse().unwrap()),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: None,
            on_projected_overrun: None,
        };
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let mut b = BudgetState::new(cfg, now, Totals::default()).unwrap();
        b.record(&usage(1, 1, 0, 0), Some(spent.parse::<Usd>().unwrap()));
        b
    }

    #[test]
    fn kept_budget_gauges_show_the_latest_state() {
        let (kept, plain) = (Metrics::new(), Metrics::new());
        let mut states = vec![
            budget_state("apps", "team", Some("10.00"), "2.50"),
            budget_state("apps", "team", Some("10.00"), "10.00"),
            budget_state("apps", "tea", None, "1.25"),
            // Only where one string ends differs.
            budget_state("ab", "c", Some("3.00"), "1.00"),
            budget_state("a", "bc", Some("3.00"), "2.00"),
        ];
        for i in 0..MAX_CACHED_BUDGETS + 5 {
            states.push(budget_state(
                "apps",
                &format!("b-{i}"),
                Some("1.00"),
                "0.50",
            ));
        }
        for b in states.iter().chain(states.iter()) {
            kept.budget(b);
            plain.budget_uncached(b);
        }
        let (kept, plain) = (samples(&kept), samples(&plain));
        assert_eq!(kept, plain);
        let has = |l: &str| kept.iter().any(|x| x == l);
        assert!(
            has("tokenwarden_budget_spent_usd{budget=\"apps/team\"} 10.0"),
            "{kept:#?}"
        );
        assert!(has(
            "tokenwarden_budget_limit_usd{budget=\"apps/team\"} 10.0"
        ));
        assert!(has("tokenwarden_budget_state{budget=\"apps/team\"} 2"));
        assert!(has(
            "tokenwarden_budget_spent_usd{budget=\"apps/tea\"} 1.25"
        ));
        assert!(has("tokenwarden_budget_state{budget=\"apps/tea\"} 0"));
        assert!(has("tokenwarden_budget_spent_usd{budget=\"ab/c\"} 1.0"));
        assert!(has("tokenwarden_budget_spent_usd{budget=\"a/bc\"} 2.0"));
        // No limit, no limit series.
        assert!(
            !kept
                .iter()
                .any(|l| l.contains("limit_usd{budget=\"apps/tea\"}"))
        );
        let last = format!(
            "tokenwarden_budget_spent_usd{{budget=\"apps/b-{}\"}} 0.5",
            MAX_CACHED_BUDGETS + 4
        );
        assert!(has(&last), "{last}");
    }
}
