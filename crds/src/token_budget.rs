//! `TokenBudget`: how much the selected workloads may spend per period.
#![expect(
    clippy::duplicated_attributes,
    reason = "kube's printcolumn(...) repeats `type_` once per column"
)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, conditions_schema};

/// A spending limit per calendar period for the selected pods, enforced by
/// their sidecars as a hard cap across pods (through leases granted by the
/// operator), with thresholds that alert, downgrade to a cheaper model, or
/// block.
///
/// Every TokenBudget that selects a pod applies to it; a request must fit
/// all of them (the strictest decides).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tokenwarden.dev",
    version = "v1alpha1",
    kind = "TokenBudget",
    plural = "tokenbudgets",
    singular = "tokenbudget",
    shortname = "tb",
    shortname = "tbudget",
    category = "tokenwarden",
    namespaced,
    status = "TokenBudgetStatus",
    derive = "PartialEq",
    doc = "TokenBudget caps what the selected pods spend on LLM APIs per calendar period.",
    printcolumn(name = "Period", type_ = "string", json_path = ".spec.period"),
    printcolumn(
        name = "Limit",
        type_ = "string",
        json_path = ".spec.limit.usd",
        description = "USD limit per period"
    ),
    printcolumn(
        name = "Spent",
        type_ = "string",
        json_path = ".status.spentUsd",
        description = "USD spent this period"
    ),
    printcolumn(
        name = "Remaining",
        type_ = "string",
        json_path = ".status.remainingUsd",
        description = "USD left this period"
    ),
    printcolumn(
        name = "Projected",
        type_ = "string",
        json_path = ".status.projectedSpendUsd",
        description = "USD projected at the period's end at the current burn rate"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Token-Limit",
        type_ = "integer",
        json_path = ".spec.limit.tokens",
        priority = 1
    ),
    printcolumn(
        name = "Tokens",
        type_ = "integer",
        json_path = ".status.tokens.total",
        description = "Tokens used this period",
        priority = 1
    ),
    printcolumn(
        name = "Requests",
        type_ = "integer",
        json_path = ".status.requests",
        priority = 1
    ),
    printcolumn(
        name = "Cache-Saved",
        type_ = "string",
        json_path = ".status.responseCache.savedUsd",
        description = "USD the response cache saved this period (not charged)",
        priority = 1
    ),
    printcolumn(
        name = "Resets",
        type_ = "string",
        json_path = ".status.periodEnd",
        priority = 1
    ),
    printcolumn(
        name = "Exhaustion",
        type_ = "string",
        json_path = ".status.projectedExhaustion",
        description = "When the limit is projected to be reached, if before the period's end",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenBudgetSpec {
    /// Which pods in this namespace the budget covers, by label. An empty or
    /// absent selector covers every injected pod in the namespace. Spend of
    /// all selected pods is pooled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,

    /// How often the budget resets: `Hourly`, `Daily`, `Weekly` (Monday
    /// 00:00) or `Monthly` (the 1st, 00:00), aligned to the calendar in
    /// `timeZone`.
    pub period: BudgetPeriod,

    /// IANA time zone the period is aligned in, e.g. `Europe/Berlin`.
    /// Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z][A-Za-z0-9_+/-]*$")
    )]
    pub time_zone: Option<String>,

    /// The limit per period: USD, tokens, or both (whichever is reached
    /// first).
    pub limit: BudgetLimit,

    /// Actions at percentages of the limit, strictly ascending by `percent`.
    /// Reaching 100% always blocks (unless `shadow`), with or without a
    /// threshold saying so. At most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = kube::core::Rule::new("self.map(t, t.percent).isSorted() && self.all(t, self.exists_one(u, u.percent == t.percent))").message("thresholds must be strictly ascending by percent").reason(kube::core::Reason::FieldValueInvalid))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["percent".into()]))]
    pub thresholds: Vec<ThresholdSpec>,

    /// What to do while the forecast (`status.projectedSpendUsd`,
    /// `status.projectedTokens`) reaches the limit before the period ends:
    /// `Alert` (the `ProjectedOverrun` condition and Event only; they are
    /// written whether or not this is set) or `Downgrade` to `downgradeTo`,
    /// so requests move to a cheaper model before the hard stop. A reached
    /// `Downgrade` threshold takes precedence over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_projected_overrun: Option<ProjectedOverrunSpec>,

    /// Refuse any single request whose worst-case cost (prompt estimate plus
    /// max output tokens, at the target model's price) exceeds this many USD,
    /// as a decimal string, e.g. `"0.50"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$"))]
    pub per_request_max_usd: Option<String>,

    /// Block a workload that sends the same request body over and over (a
    /// runaway agent loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_guard: Option<LoopGuardSpec>,

    /// Split the cap per key within the selected pods: each agent session
    /// (a request header), pod, or app credential (a hash of its API key)
    /// gets its own limit per period under the pooled `limit`; a request
    /// must fit both, so a runaway agent loop stops at its key's limit
    /// while the other keys keep working. With `perKey`, `loopGuard`
    /// counts identical requests per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<PerKeySpec>,

    /// What a sidecar does when it cannot reach the operator and its lease is
    /// spent or expired: `Closed` refuses requests (the cap holds), `Open`
    /// lets them through and records them for later. Default `Closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_mode: Option<FailMode>,

    /// Dry run: meter, evaluate thresholds and report (status, metrics,
    /// headers) but never block or downgrade. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
}

/// Budget period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BudgetPeriod {
    /// Resets at the top of every hour.
    Hourly,
    /// Resets at local midnight.
    Daily,
    /// Resets on Monday at 00:00 local time.
    Weekly,
    /// Resets on the first of the month at 00:00 local time.
    Monthly,
}

/// The limit: at least one of `usd` and `tokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("has(self.usd) || has(self.tokens)").message("limit needs at least one of usd or tokens").reason(kube::core::Reason::FieldValueRequired))]
pub struct BudgetLimit {
    /// USD per period as a decimal string with up to 6 decimals, e.g. `"50.00"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$"))]
    pub usd: Option<String>,
    /// Tokens per period, all kinds counted (uncached input, output, cache
    /// read, cache write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000_i64))]
    pub tokens: Option<i64>,
}

/// What happens at a threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ThresholdActionKind {
    /// Report only: a condition, an Event and a metric.
    Alert,
    /// Send requests to `downgradeTo` instead of their routed model.
    Downgrade,
    /// Refuse requests with HTTP 429 in the provider's error format.
    Block,
}

/// A threshold: from `percent` of the limit on, `action` applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("self.action == 'Downgrade' ? has(self.downgradeTo) : !has(self.downgradeTo)").message("downgradeTo is required for action Downgrade and only allowed there").reason(kube::core::Reason::FieldValueInvalid))]
pub struct ThresholdSpec {
    /// Percent of the limit, 1–100.
    #[schemars(range(min = 1, max = 100))]
    pub percent: u8,
    /// `Alert`, `Downgrade` or `Block`.
    pub action: ThresholdActionKind,
    /// For `Downgrade`: where requests go instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade_to: Option<DowngradeSpec>,
}

/// What a projected overrun does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProjectedOverrunActionKind {
    /// Report only: the `ProjectedOverrun` condition and an Event.
    Alert,
    /// Send requests to `downgradeTo` instead of their routed model.
    Downgrade,
}

/// The action on a projected overrun.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("self.action == 'Downgrade' ? has(self.downgradeTo) : !has(self.downgradeTo)").message("downgradeTo is required for action Downgrade and only allowed there").reason(kube::core::Reason::FieldValueInvalid))]
pub struct ProjectedOverrunSpec {
    /// `Alert` or `Downgrade`.
    pub action: ProjectedOverrunActionKind,
    /// For `Downgrade`: where requests go instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade_to: Option<DowngradeSpec>,
}

/// A downgrade target: a tier of the selecting RoutingPolicy, or a model on
/// the request's own provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("has(self.tier) != has(self.model)").message("downgradeTo needs exactly one of tier or model").reason(kube::core::Reason::FieldValueInvalid))]
pub struct DowngradeSpec {
    /// Tier name from the RoutingPolicy that selects the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub tier: Option<String>,
    /// Model name, sent to the provider the request was routed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
}

/// Loop guard settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoopGuardSpec {
    /// Identical requests (same body) within `window` that trip the guard, 2–1000.
    #[schemars(range(min = 2, max = 1000))]
    pub max_identical_requests: u32,
    /// Sliding window, e.g. `60s`; at most 24h.
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub window: String,
    /// How long identical requests stay blocked once tripped, e.g. `5m`.
    /// Default `5m`, at most 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub cooldown: Option<String>,
}

/// A per-key split of the budget's cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PerKeySpec {
    /// Where a request's key comes from: exactly one of `header`, `pod`
    /// and `apiKeyHash`.
    pub by: KeyBy,
    /// The limit of each key per period: USD, tokens, or both. A request
    /// without the key (no such header, no credential) counts under the
    /// key `(none)`, which has this limit too.
    pub limit: BudgetLimit,
    /// Most distinct keys per period, 1–1000, default 100. Requests of
    /// keys beyond it in a period share the one key `(other)`, with the
    /// same limit, so fresh keys (e.g. random session ids) cannot escape
    /// the cap. `(none)` and `(other)` come on top. Keys reset with the
    /// period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_keys: Option<i32>,
}

/// The source of a request's key: exactly one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("(has(self.header) ? 1 : 0) + (has(self.pod) ? 1 : 0) + (has(self.apiKeyHash) ? 1 : 0) == 1").message("by needs exactly one of header, pod or apiKeyHash").reason(kube::core::Reason::FieldValueInvalid))]
pub struct KeyBy {
    /// A request header the app sends, e.g. `x-agent-session` (an agent
    /// session id or a virtual key). Its value (up to 128 characters of
    /// letters, digits and `._:@/+=-`; other values by a hash prefix) is
    /// the key. Not a credential or hop-by-hop header (`authorization`,
    /// `x-api-key`, `cookie`, `connection`, …): use `apiKeyHash` for
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    )]
    pub header: Option<String>,
    /// The pod: each pod the budget selects gets its own limit (`{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Empty>,
    /// The app's own API key (`Authorization: Bearer …`, else
    /// `x-api-key`), as `sha256:` and the first 12 hex digits of a keyed
    /// SHA-256 of it (`{}`). The key itself is never stored, exported or
    /// logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_hash: Option<Empty>,
}

/// An empty object: the option is chosen by being present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

// Behaviour without control plane (documented on the field: a type doc
// would replace the field's in the schema of an optional field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailMode {
    /// Refuse requests.
    Closed,
    /// Allow and record requests.
    Open,
}

// Budget state for the current period (documented on the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BudgetState {
    /// Below every threshold.
    Ok,
    /// At or above a threshold, below the limit.
    Threshold,
    /// The limit is reached.
    Exhausted,
}

/// Token counts by kind. The four kinds are disjoint and add up to every
/// token billed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCounts {
    /// Uncached input tokens.
    #[serde(default)]
    pub input: i64,
    /// Output tokens (reasoning included).
    #[serde(default)]
    pub output: i64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default)]
    pub cache_read: i64,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default)]
    pub cache_write: i64,
    /// Of `cacheWrite`, those written with a 1-hour TTL (billed at twice
    /// the input price).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write1h: i64,
    /// Sum of the four kinds.
    #[serde(default)]
    pub total: i64,
}

/// Spend attributed to one model or one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpendEntry {
    /// Model that served (for `topModels`), workload `namespace/name` (for
    /// `topWorkloads`) or per-key key (for `topKeys`).
    pub name: String,
    /// USD spent, decimal string.
    pub spent_usd: String,
    /// Requests.
    pub requests: i64,
    /// Share of input read from the provider's prompt cache: cache read /
    /// (cache read + cache write + uncached input), a decimal fraction such
    /// as `0.873`. Absent when nothing was cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_ratio: Option<String>,
    /// USD the prompt cache saved (cache reads at the input price minus
    /// their cost), decimal string. Absent when nothing was cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_saved_usd: Option<String>,
    /// USD wasted by prompt-cache busts (shared content billed above the
    /// cache-read price), decimal string. Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_wasted_usd: Option<String>,
    /// Requests that suffered a prompt-cache bust. Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_busts: Option<i64>,
}

/// The period's prompt-cache economics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromptCacheSummary {
    /// Share of input read from the provider's prompt cache (decimal
    /// fraction, e.g. `0.873`); absent when there was no input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<String>,
    /// USD the prompt cache saved, decimal string.
    pub saved_usd: String,
    /// USD wasted by prompt-cache busts, decimal string.
    pub wasted_usd: String,
    /// Requests that suffered a prompt-cache bust.
    pub busts: i64,
}

/// The period's response-cache hits among the budget's workloads: what the
/// sidecars' response cache (RoutingPolicy `spec.cache`) answered at $0
/// that would otherwise have been charged to this budget. Never part of
/// `spentUsd`, `tokens` or `requests`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResponseCacheSummary {
    /// Requests answered from the response cache this period.
    pub hits: i64,
    /// USD those answers cost when the provider made them, which the
    /// budget did not spend again (decimal string).
    pub saved_usd: String,
}

/// Observed state, written by the operator (the ledger of record).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBudgetStatus {
    /// `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Start of the current period (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<String>,
    /// End of the current period, when it resets (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<String>,
    /// USD spent this period (decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_usd: Option<String>,
    /// USD left this period (decimal string, never negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_usd: Option<String>,
    /// Tokens used this period, by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenCounts>,
    /// Tokens left this period (for token limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_tokens: Option<i64>,
    /// Requests this period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<i64>,
    /// Requests to models with no known price this period (counted, not priced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_requests: Option<i64>,
    /// The models that spent most this period (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub top_models: Vec<SpendEntry>,
    /// The workloads that spent most this period (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub top_workloads: Vec<SpendEntry>,
    /// The per-key keys (`spec.perKey`) that spent most this period (at
    /// most 10; `name` is the key, a `sha256:` prefix for credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub top_keys: Vec<SpendEntry>,
    /// Prompt-cache economics this period: hit ratio, USD saved and
    /// wasted, busts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache: Option<PromptCacheSummary>,
    /// Response-cache hits this period and the USD they saved (not
    /// charged); absent before the first hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_cache: Option<ResponseCacheSummary>,
    /// USD projected at the period's end at the current burn rate
    /// (decimal string, never below `spentUsd`); absent while the forecast
    /// warms up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_spend_usd: Option<String>,
    /// Tokens projected at the period's end; absent while warming up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_tokens: Option<i64>,
    /// When the limit is projected to be reached (RFC 3339), present only
    /// when that is before the period's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projected_exhaustion: Option<String>,
    /// How the projection was made: the estimator and its windows, e.g.
    /// `min(mean 6h, mean 1h)`, or `warming up until <RFC 3339>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
    /// `Ok`, `Threshold` or `Exhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BudgetState>,
    /// Conditions: `Ready`, `ThresholdCrossed`, `Exhausted`,
    /// `ProjectedOverrun`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
    /// The ledger's exact integer state, so a restarted operator resumes
    /// where it stopped. Written by the operator; not for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerStatus>,
}

/// The ledger of one budget period, exactly (money in integer pico-USD,
/// as decimal strings, since it can exceed 64 bits).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerStatus {
    /// Start of the period this ledger counts (Unix seconds).
    pub period_start_unix: i64,
    /// Lease epoch: bumped when the limit changes, voiding older grants.
    #[serde(default)]
    pub epoch: i64,
    /// Spent this period, pico-USD.
    #[serde(default)]
    pub spent_picos: String,
    /// Tokens this period, all kinds.
    #[serde(default)]
    pub spent_tokens: i64,
    /// Per sidecar: the dedupe watermark and its lease.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<SidecarLedger>,
    /// Spend by model that served, exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<LedgerSpend>,
    /// Spend by workload (`namespace/name`), exactly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<LedgerSpend>,
    /// Spend by per-key key (`spec.perKey`), exactly; at most `maxKeys`
    /// keys plus `(none)` and `(other)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<LedgerSpend>,
    /// The lease pool of each per-key key (`spec.perKey`): its spend and
    /// the sidecars' leases of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_leases: Vec<KeyLeaseLedger>,
    /// The smallest lease a sidecar needed this period that what was left
    /// could not cover (pico-USD); it makes the budget `Exhausted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmet_picos: Option<String>,
    /// The same for tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmet_tokens: Option<i64>,
    /// Response-cache hits counted this period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub response_cache_hits: i64,
    /// What they saved, pico-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_cache_saved_picos: Option<String>,
    /// Samples of this period's cumulative spend for the forecast, oldest
    /// first (at most 80).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 80))]
    pub burn: Vec<BurnLedger>,
}

/// One sample of a period's cumulative spend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BurnLedger {
    /// When (Unix milliseconds).
    pub at_unix_millis: i64,
    /// Spent so far this period, pico-USD.
    pub spent_picos: String,
    /// Tokens so far this period.
    #[serde(default)]
    pub tokens: i64,
}

/// The lease pool of one per-key key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyLeaseLedger {
    /// The key.
    pub key: String,
    /// Lease epoch of the key's pool.
    #[serde(default)]
    pub epoch: i64,
    /// The key's spend this period, pico-USD.
    #[serde(default)]
    pub spent_picos: String,
    /// The key's tokens this period.
    #[serde(default)]
    pub spent_tokens: i64,
    /// Per sidecar: its dedupe watermark and its lease of the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<SidecarLedger>,
}

/// One sidecar's standing with a budget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarLedger {
    /// Sidecar id.
    pub id: String,
    /// Highest usage-record sequence number counted (dedupe watermark).
    #[serde(default)]
    pub seq: i64,
    /// Lease granted this period, pico-USD (cumulative).
    #[serde(default)]
    pub granted_picos: String,
    /// Lease granted this period, tokens (cumulative).
    #[serde(default)]
    pub granted_tokens: i64,
    /// Spend of this sidecar counted this period, pico-USD.
    #[serde(default)]
    pub charged_picos: String,
    /// Tokens of this sidecar counted this period.
    #[serde(default)]
    pub charged_tokens: i64,
    /// When the lease expires (Unix milliseconds; 0: no lease).
    #[serde(default)]
    pub expires_unix_millis: i64,
    /// Lease version, bumped whenever the granted amount changes.
    #[serde(default)]
    pub version: i64,
}

/// Exact spend of one model or workload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerSpend {
    /// Model, `namespace/workload` or per-key key.
    pub name: String,
    /// Pico-USD.
    pub picos: String,
    /// Requests.
    pub requests: i64,
    /// Tokens by kind.
    #[serde(default)]
    pub tokens: TokenCounts,
    /// Requests to models with no known price.
    #[serde(default)]
    pub unpriced: i64,
    /// Requests whose usage was estimated (stream cut short).
    #[serde(default)]
    pub estimated: i64,
    /// Prompt-cache savings, pico-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_saved_picos: Option<String>,
    /// Prompt-cache waste, pico-USD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_wasted_picos: Option<String>,
    /// Requests with a prompt-cache bust.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_busts: i64,
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_zero(n: &i64) -> bool {
    *n == 0
}
