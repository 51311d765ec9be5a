//! The compiled per-workload configuration: what one sidecar runs.
//!
//! These types are produced by [`crate::compile`] from the RoutingPolicies and
//! TokenBudgets that select a pod, after validation. They carry no Kubernetes
//! types: the crds crate converts the API objects into the inputs of the
//! compiler, and the operator ships the result to sidecars. Everything is
//! serde-serializable, with a stable field order, so a snapshot has a stable
//! digest. Deserializing is lenient the way the control protocol promises
//! (`proto/control.proto`): unknown fields are ignored, and collections and
//! flags a newer or older compiler may leave out default to empty/false.

use serde::{Deserialize, Serialize};

use crate::{catalog::PriceOverride, classify::ClassifierConfig, money::Usd, period::Period};

/// Default `defaultMaxOutputTokens`: the output tokens assumed for budget
/// reservations when a request sets no max-tokens field.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u32 = 4096;
/// Input tokens assumed for what a request references but does not carry,
/// when neither the policy nor the catalog (a context window) says.
pub const DEFAULT_UNSEEN_INPUT_TOKENS: u64 = 200_000;
/// Default per-try timeout for upstream calls, in milliseconds.
pub const DEFAULT_PER_TRY_TIMEOUT_MS: u64 = 120_000;
/// Default bound on upstream attempts per request (first try included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 2;

/// Namespace and name of an API object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

/// The wire API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI's REST API (chat completions, responses, embeddings).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// The request endpoint an app called, as routes match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

/// A reference to one key of a Kubernetes Secret holding a provider API key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SecretRef {
    /// Secret name, in the workload's namespace.
    pub name: String,
    /// Key within the Secret's data.
    pub key: String,
}

/// An upstream LLM provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Name routes and tiers refer to.
    pub name: String,
    /// The API it speaks.
    pub api: Api,
    /// Base URL without the `/v1/...` path, e.g. `https://api.openai.com`.
    pub base_url: String,
    /// Where its API key lives.
    pub api_key: SecretRef,
    /// Price overrides for models served by this provider (exact name or `prefix*`).
    pub prices: Vec<PriceOverride>,
}

/// One step of the escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tier {
    /// Tier name, e.g. `cheap`, `standard`, `frontier`.
    pub name: String,
    /// Provider that serves it.
    pub provider: String,
    /// Model sent upstream.
    pub model: String,
}

/// An inclusive integer range; `None` bounds are open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Range {
    /// Smallest value that matches.
    pub min: Option<u64>,
    /// Largest value that matches.
    pub max: Option<u64>,
}

/// A header condition: the header is present and its value matches the glob.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Header name, lower-case.
    pub name: String,
    /// Glob (`*`, `?`, `[...]`) the value must match.
    pub value: String,
}

/// What a route matches on. Every stated condition must hold; an empty match
/// matches every request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteMatch {
    /// Globs on the model the app requested; empty = any.
    pub models: Vec<String>,
    /// Endpoints the route applies to; empty = any.
    pub endpoints: Vec<Endpoint>,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderMatch>,
    /// Complexity score range (0..=100).
    pub complexity: Option<Range>,
    /// Estimated prompt-token range.
    pub prompt_tokens: Option<Range>,
    /// Whether the request must (true) or must not (false) define tools.
    pub tools_present: Option<bool>,
}

/// Where a matched request goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Target {
    /// A tier of the ladder (escalation moves up from here).
    Tier(String),
    /// A fixed provider and model (escalation moves to the first tier above
    /// the cheapest tier serving this model, if any).
    Model {
        /// Provider name.
        provider: String,
        /// Model sent upstream.
        model: String,
    },
    /// Forward with the requested model, to the first provider speaking the
    /// request's API.
    Passthrough,
}

/// An ordered routing rule; the first route whose match holds decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// Route name, reported in `x-tokenwarden-route` and metrics.
    pub name: String,
    /// Conditions.
    pub matcher: RouteMatch,
    /// Destination.
    pub target: Target,
}

/// When a request moves one tier up.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Escalation {
    /// Retry one tier up after an upstream error or timeout.
    pub on_upstream_error: bool,
    /// Move one tier up when the same prompt is seen this often in a window.
    pub repeated_prompt: Option<RepeatRule>,
}

/// "The same thing N times within a window".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepeatRule {
    /// Occurrences (including the current one) that trigger the rule.
    pub count: u32,
    /// Sliding window, in milliseconds.
    pub window_ms: u64,
}

/// Retries against the next provider/tier on transient failures.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fallback {
    /// Retry on HTTP 429.
    pub on_rate_limit: bool,
    /// Retry on HTTP 500, 502, 503, 504 and 529.
    pub on_server_error: bool,
    /// Retry when the connection cannot be made.
    pub on_connect_error: bool,
    /// Retry when a try exceeds `per_try_timeout_ms` before the response head.
    pub on_timeout: bool,
    /// Time allowed for one try to produce a response head, in milliseconds.
    pub per_try_timeout_ms: u64,
    /// Upper bound on tries per request, the first included (1 = no retry).
    pub max_attempts: u32,
}

/// The routing half of a workload's config: one RoutingPolicy, compiled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingConfig {
    /// The RoutingPolicy this came from.
    pub source: ObjectRef,
    /// Its `metadata.generation`.
    pub generation: i64,
    /// Upstream providers.
    pub providers: Vec<Provider>,
    /// Escalation ladder, cheapest first.
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Ordered routes.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Escalation rules.
    pub escalation: Escalation,
    /// Fallback rules.
    #[serde(default)]
    pub fallback: Fallback,
    /// Complexity classifier settings.
    pub classifier: ClassifierConfig,
    /// Output tokens assumed when a request sets no max-tokens field.
    pub default_max_output_tokens: u32,
    /// Input tokens assumed for what a request references but does not
    /// carry (`None`: the target model's context window, else
    /// [`DEFAULT_UNSEEN_INPUT_TOKENS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_input_tokens: Option<u32>,
}

/// What a budget threshold does once spend reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ThresholdAction {
    /// Report only (status condition, Event, metric).
    Alert,
    /// Rewrite requests to a cheaper target.
    Downgrade(DowngradeTarget),
    /// Refuse requests with a provider-shaped 429.
    Block,
}

/// Where a `Downgrade` threshold sends requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DowngradeTarget {
    /// A tier of the selecting RoutingPolicy.
    Tier(String),
    /// A model name on the request's own provider.
    Model(String),
}

/// A budget threshold.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Threshold {
    /// Percent of the limit (1..=100) at which the action starts.
    pub percent: u8,
    /// The action.
    pub action: ThresholdAction,
}

/// Loop guard: N identical requests within a window block for a cool-down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoopGuard {
    /// Identical requests (same body digest) that trip the guard.
    pub max_identical: u32,
    /// Sliding window, in milliseconds.
    pub window_ms: u64,
    /// How long identical requests stay blocked once tripped, in milliseconds.
    pub cooldown_ms: u64,
}

/// What a sidecar does when it cannot reach the control plane and its lease
/// is spent or expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailMode {
    /// Refuse requests (the cap holds).
    Closed,
    /// Allow requests and record them (availability wins).
    Open,
}

/// One TokenBudget, compiled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetConfig {
    /// The TokenBudget this came from.
    pub source: ObjectRef,
    /// Its `metadata.generation`.
    pub generation: i64,
    /// Reset period.
    pub period: Period,
    /// IANA time zone the period is aligned in.
    pub time_zone: String,
    /// USD limit per period.
    pub limit_usd: Option<Usd>,
    /// Token limit per period (all four kinds summed).
    pub limit_tokens: Option<u64>,
    /// Ascending thresholds.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// Largest worst-case cost a single request may have.
    pub per_request_cap_usd: Option<Usd>,
    /// Loop guard.
    pub loop_guard: Option<LoopGuard>,
    /// Behaviour without control plane and lease.
    pub fail_mode: FailMode,
    /// Evaluate and report, never enforce.
    #[serde(default)]
    pub shadow: bool,
}

/// Several RoutingPolicies selected the pod; one was chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyConflict {
    /// The policy that applies.
    pub chosen: ObjectRef,
    /// The policies that also selected the pod and do not apply.
    pub shadowed: Vec<ObjectRef>,
}

/// Everything one sidecar runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    /// The pod's namespace.
    pub namespace: String,
    /// Routing, when a RoutingPolicy selects the pod. Without one the sidecar
    /// forwards requests unchanged (and cannot, having no provider keys).
    pub routing: Option<RoutingConfig>,
    /// Every TokenBudget selecting the pod, in name order; each applies and
    /// the strictest decides each request.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// Present when more than one RoutingPolicy selected the pod.
    pub conflict: Option<PolicyConflict>,
    /// Cross-object problems found while compiling (e.g. a budget that
    /// downgrades to a tier the chosen policy does not define). The config is
    /// still usable; these surface as conditions and log lines.
    #[serde(default)]
    pub warnings: Vec<String>,
}

// === impl ObjectRef ===

impl ObjectRef {
    /// Build from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl Range ===

impl Range {
    /// Whether `v` lies within the inclusive bounds.
    pub fn contains(&self, v: u64) -> bool {
        self.min.is_none_or(|m| v >= m) && self.max.is_none_or(|m| v <= m)
    }
}

// === impl Fallback ===

impl Default for Fallback {
    fn default() -> Self {
        Self {
            on_rate_limit: true,
            on_server_error: true,
            on_connect_error: true,
            on_timeout: true,
            per_try_timeout_ms: DEFAULT_PER_TRY_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

// === impl RoutingConfig ===

impl RoutingConfig {
    /// The provider with this name.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// Index of the tier with this name.
    pub fn tier_index(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.name == name)
    }
}

// === impl BudgetConfig ===

impl BudgetConfig {
    /// The action of the highest threshold reached at `percent_spent`
    /// (thresholds are ascending), if any.
    pub fn active_threshold(&self, percent_spent: u64) -> Option<&Threshold> {
        self.thresholds
            .iter()
            .rev()
            .find(|t| percent_spent >= u64::from(t.percent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_bounds_are_inclusive_and_optional() {
        let r = Range {
            min: Some(10),
            max: Some(20),
        };
        assert!(!r.contains(9) && r.contains(10) && r.contains(20) && !r.contains(21));
        assert!(
            Range {
                min: None,
                max: Some(5)
            }
            .contains(0)
        );
        assert!(
            Range {
                min: Some(5),
                max: None
            }
            .contains(u64::MAX)
        );
    }

    #[test]
    fn active_threshold_is_the_highest_reached() {
        let b = BudgetConfig {
            source: ObjectRef::new("ns", "b"),
            generation: 1,
            period: Period::Daily,
            time_zone: "UTC".into(),
            limit_usd: Some(Usd::from_picos(1)),
            limit_tokens: None,
            thresholds: vec![
                Threshold {
                    percent: 50,
                    action: ThresholdAction::Alert,
                },
                Threshold {
                    percent: 80,
                    action: ThresholdAction::Downgrade(DowngradeTarget::Tier("cheap".into())),
                },
                Threshold {
                    percent: 100,
                    action: ThresholdAction::Block,
                },
            ],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
        };
        assert_eq!(b.active_threshold(49), None);
        assert_eq!(b.active_threshold(50).map(|t| t.percent), Some(50));
        assert_eq!(b.active_threshold(99).map(|t| t.percent), Some(80));
        assert_eq!(b.active_threshold(250).map(|t| t.percent), Some(100));
    }
}
