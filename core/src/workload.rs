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
//!
//! Prompt caching ([`CachingConfig`]) follows the providers' documented
//! rules: Anthropic's `cache_control` breakpoints and their `5m`/`1h` TTLs
//! (<https://docs.claude.com/en/docs/build-with-claude/prompt-caching>), and
//! OpenAI's `prompt_cache_key`, at most 64 characters
//! (<https://platform.openai.com/docs/guides/prompt-caching>,
//! <https://platform.openai.com/docs/api-reference/responses/create>).

use serde::{Deserialize, Serialize};

use crate::{
    catalog::PriceOverride, classify::ClassifierConfig, money::Usd, period::Period,
    selector::Labels,
};

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
/// Default `volatilePrefixGuard.repeats`: busts by the same volatile run
/// before the policy's condition names it.
pub const DEFAULT_VOLATILE_GUARD_REPEATS: u32 = 3;
/// Longest `prompt_cache_key` OpenAI accepts (longer keys are a 400).
pub const OPENAI_PROMPT_CACHE_KEY_MAX_LEN: usize = 64;
/// Labels that name a pod's workload, in order of preference.
pub const WORKLOAD_NAME_LABELS: [&str; 3] =
    ["app.kubernetes.io/name", "app", "tokenwarden.dev/workload"];

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
    /// The route's `cache.enabled`: `Some(false)` keeps its requests out
    /// of the response cache, `Some(true)` caches them (with the policy's
    /// `spec.cache` settings, else the defaults); `None`: as the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_cache: Option<bool>,
    /// The route's `cache.semantic`: `false` keeps its requests out of the
    /// semantic cache (the exact cache still applies); `true` (the
    /// default): as the policy's `spec.cache.semantic`.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub semantic_cache: bool,
}

/// When a request moves one tier up.
///
/// The answer rules (`on_truncation` … `on_invalid_response_format`) judge
/// a non-streaming answer before it reaches the app; `on_app_signal` reads
/// the app's `x-tokenwarden-escalate` header. Each is on by default, and
/// each is left out of the JSON while on, so configs that keep the defaults
/// keep their version digest (and a sidecar reading an older compiler's
/// JSON gets the defaults).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Escalation {
    /// Retry one tier up after an upstream error or timeout.
    pub on_upstream_error: bool,
    /// Move one tier up when the same prompt is seen this often in a window.
    pub repeated_prompt: Option<RepeatRule>,
    /// Retry one tier up when the answer was cut by an output limit the
    /// app did not set (the model's own limit).
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub on_truncation: bool,
    /// Retry one tier up when the answer has no text and no tool call.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub on_empty_answer: bool,
    /// Retry one tier up when the model refused.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub on_refusal: bool,
    /// Retry one tier up when a tool call's arguments are not valid JSON or
    /// do not match the tool's declared schema.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub on_invalid_tool_call: bool,
    /// Retry one tier up when the answer does not match the structured
    /// output the request asked for (JSON schema, or JSON at all).
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub on_invalid_response_format: bool,
    /// Start one tier up when the app sends `x-tokenwarden-escalate: 1`.
    #[serde(default = "on", skip_serializing_if = "is_on")]
    pub on_app_signal: bool,
}

fn on() -> bool {
    true
}

fn is_on(b: &bool) -> bool {
    *b
}

// === impl Escalation ===

impl Default for Escalation {
    /// Every rule on, no repeated-prompt tracking.
    fn default() -> Self {
        Escalation {
            on_upstream_error: true,
            repeated_prompt: None,
            on_truncation: true,
            on_empty_answer: true,
            on_refusal: true,
            on_invalid_tool_call: true,
            on_invalid_response_format: true,
            on_app_signal: true,
        }
    }
}

impl Escalation {
    /// Whether any rule judges answers (so a non-streaming answer is held
    /// and checked before it goes to the app).
    pub fn checks_answers(&self) -> bool {
        self.on_truncation
            || self.on_empty_answer
            || self.on_refusal
            || self.on_invalid_tool_call
            || self.on_invalid_response_format
    }
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
    /// The exact response cache (`spec.cache`); `None`: off (routes may
    /// still turn it on with the defaults, see [`Route::response_cache`]).
    /// Left out of the JSON when off, so configs without it keep their
    /// version digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_cache: Option<crate::response_cache::ResponseCacheConfig>,
}

/// How long an Anthropic cache entry written through an inserted breakpoint
/// lives without being read (each read refreshes it). On the wire:
/// `"cache_control": {"type": "ephemeral"}` for 5 minutes (the provider's
/// default), `{"type": "ephemeral", "ttl": "1h"}` for one hour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheTtl {
    /// 5 minutes; writes bill at 1.25× the input price.
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    /// 1 hour; writes bill at 2× the input price.
    #[serde(rename = "1h")]
    OneHour,
}

impl CacheTtl {
    /// As the policy and the API spell it: `5m`, `1h`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheTtl::FiveMinutes => "5m",
            CacheTtl::OneHour => "1h",
        }
    }
}

/// A policy's override of the built-in minimum cacheable prompt length for
/// the models that match `model`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MinimumTokens {
    /// Exact model name or glob (`*`, `?`, `[abc]`, as routes match
    /// models), matched against the model sent upstream.
    pub model: String,
    /// Prompt tokens (tools, system and messages up to the breakpoint) below
    /// which no breakpoint is inserted.
    pub tokens: u32,
}

/// Automatic Anthropic breakpoints: insert `cache_control` at the end of
/// the tools, the end of the system prompt and the last message of
/// requests that carry no `cache_control` at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct AnthropicBreakpoints {
    /// TTL of the inserted breakpoints.
    pub ttl: CacheTtl,
    /// Overrides of the built-in per-model minimum cacheable length, in the
    /// policy's order; the first entry whose `model` matches applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub minimum_overrides: Vec<MinimumTokens>,
}

/// The volatile-prefix guard: report a volatile run (e.g. a timestamp in
/// the system prompt) that busts the cache again and again. Report-only:
/// prompt content is never rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolatileGuard {
    /// Busts by the same volatile run before the condition names it.
    pub repeats: u32,
}

/// A workload's prompt-cache settings, resolved by [`crate::compile`] from
/// its RoutingPolicy's `spec.caching` (that policy is
/// [`RoutingConfig::source`]). The default is everything off: what a
/// workload without a policy, or whose policy has no `caching`, gets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct CachingConfig {
    /// Insert Anthropic `cache_control` breakpoints into requests that
    /// carry none; `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anthropic_breakpoints: Option<AnthropicBreakpoints>,
    /// The `prompt_cache_key` set on OpenAI requests that carry none:
    /// stable per workload, the same on every pod of it, no secret in it
    /// (see [`openai_prompt_cache_key`]); `None`: never set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub openai_prompt_cache_key: Option<String>,
    /// Report repeated busts by the same volatile run; `None`: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volatile_guard: Option<VolatileGuard>,
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

/// How a budget splits its cap per key (TokenBudget `spec.perKey`): each
/// key (an agent session, a pod, an app credential) gets its own limit
/// under the pooled one, and a request must fit both.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PerKeyConfig {
    /// Where a request's key comes from.
    pub by: KeySource,
    /// USD per key per period.
    pub limit_usd: Option<Usd>,
    /// Tokens per key per period (all four kinds).
    pub limit_tokens: Option<u64>,
    /// Most distinct keys a period tracks; requests of further keys share
    /// [`OVERFLOW_KEY`] (with the per-key limit), so fresh keys cannot
    /// escape the cap. [`MISSING_KEY`] and [`OVERFLOW_KEY`] come on top.
    pub max_keys: u32,
}

/// Where a request's per-key budget key comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeySource {
    /// A request header the app sends (e.g. an agent session id), by its
    /// lower-case name.
    Header(String),
    /// The pod the sidecar serves (its name).
    Pod,
    /// The app's own credential (`Authorization: Bearer …`, else
    /// `x-api-key`), as a short prefix of a keyed SHA-256 (never the
    /// credential itself).
    ApiKeyHash,
}

// === impl KeySource ===

impl std::fmt::Display for KeySource {
    /// As `/ledger` and `report` name it: `header x-agent-session`, `pod`,
    /// `apiKeyHash`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Header(h) => write!(f, "header {h}"),
            KeySource::Pod => f.write_str("pod"),
            KeySource::ApiKeyHash => f.write_str("apiKeyHash"),
        }
    }
}

/// `spec.perKey.maxKeys` when absent.
pub const DEFAULT_MAX_KEYS: u32 = 100;
/// The largest `spec.perKey.maxKeys`.
pub const MAX_MAX_KEYS: u32 = 1000;
/// The key of requests that carry no key (the header or credential is
/// missing); it has the per-key limit like any key.
pub const MISSING_KEY: &str = "(none)";
/// The longest per-key key: a longer header value is hashed by the
/// sidecar, and a longer key on the wire counts as [`OVERFLOW_KEY`].
pub const MAX_KEY_LEN: usize = 128;
/// The key shared by every key past `maxKeys` in a period; it has the
/// per-key limit like any key.
pub const OVERFLOW_KEY: &str = "(other)";

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
    /// The cap split per key, if the budget has one (left out of the JSON
    /// when absent, so configs without it keep their version digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_key: Option<PerKeyConfig>,
    /// What a projected overrun does (`spec.onProjectedOverrun`): the
    /// operator forecasts the period's spend and tells connected sidecars
    /// when it reaches the limit before the period ends. Left out of the
    /// JSON when absent, so configs without it keep their version digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_projected_overrun: Option<ProjectedOverrunAction>,
}

/// What a TokenBudget does while its spend is projected to reach the limit
/// before the period ends (`spec.onProjectedOverrun`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProjectedOverrunAction {
    /// Report only (the `ProjectedOverrun` condition, an Event, a metric).
    Alert,
    /// Also send requests to this target, before any threshold is reached.
    Downgrade(DowngradeTarget),
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
    /// Prompt-cache settings from the chosen RoutingPolicy (all off without
    /// one; left out of the JSON when all off, so configs that do not use
    /// caching keep their version digest).
    #[serde(default, skip_serializing_if = "CachingConfig::is_off")]
    pub caching: CachingConfig,
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

/// The workload a pod belongs to: the first non-empty label of
/// [`WORKLOAD_NAME_LABELS`], else the pod name without the suffixes a
/// Deployment adds (`<deployment>-<replicaset hash>-<pod suffix>`, told by
/// the `pod-template-hash` label). Every pod of a Deployment gets the same
/// name.
pub fn workload_name(labels: &Labels, pod_name: &str) -> String {
    for key in WORKLOAD_NAME_LABELS {
        if let Some(v) = labels.get(key)
            && !v.is_empty()
        {
            return v.clone();
        }
    }
    let mut name = pod_name;
    if labels.contains_key("pod-template-hash") {
        for _ in 0..2 {
            if let Some(i) = name.rfind('-') {
                name = &name[..i];
            }
        }
    }
    name.to_string()
}

/// The OpenAI `prompt_cache_key` of a workload:
/// `tokenwarden:<namespace>/<workload>` (`tokenwarden:<namespace>` when the
/// workload has no name: a standalone sidecar given neither a naming label
/// nor a pod name), or, when that exceeds
/// [`OPENAI_PROMPT_CACHE_KEY_MAX_LEN`], its first 47 bytes, `~` and the
/// 64-bit FNV-1a hash of the whole in hex (64 characters). Only names, no
/// secret; a pure function of its inputs, so every pod (and every operator
/// replica) computes the same key.
pub fn openai_prompt_cache_key(namespace: &str, workload: &str) -> String {
    let full = if workload.is_empty() {
        format!("tokenwarden:{namespace}")
    } else {
        format!("tokenwarden:{namespace}/{workload}")
    };
    if full.len() <= OPENAI_PROMPT_CACHE_KEY_MAX_LEN {
        return full;
    }
    let mut cut = OPENAI_PROMPT_CACHE_KEY_MAX_LEN - 17;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:016x}", &full[..cut], fnv1a64(full.as_bytes()))
}

/// 64-bit FNV-1a: stable across platforms and releases (unlike std's
/// `DefaultHasher`), which a key shared by pods needs.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// === impl AnthropicBreakpoints ===

impl AnthropicBreakpoints {
    /// The policy's minimum cacheable length for `model` (the model sent
    /// upstream): the first override whose exact name or glob matches it.
    /// `None`: the built-in table applies.
    pub fn minimum_override(&self, model: &str) -> Option<u32> {
        self.minimum_overrides
            .iter()
            .find(|o| {
                o.model == model || glob::Pattern::new(&o.model).is_ok_and(|g| g.matches(model))
            })
            .map(|o| o.tokens)
    }
}

// === impl CachingConfig ===

impl CachingConfig {
    /// Nothing enabled.
    pub fn is_off(&self) -> bool {
        self == &Self::default()
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
    /// The response-cache settings for a request that matched `route`
    /// (`None`: no route matched): the route's `cache.enabled` decides,
    /// else the policy's `spec.cache`; `None` when the cache is off.
    pub fn response_cache_for(
        &self,
        route: Option<&str>,
    ) -> Option<crate::response_cache::ResponseCacheConfig> {
        let by_route = route
            .and_then(|name| self.routes.iter().find(|r| r.name == name))
            .and_then(|r| r.response_cache);
        let semantic_off = route
            .and_then(|name| self.routes.iter().find(|r| r.name == name))
            .is_some_and(|r| !r.semantic_cache);
        let cfg = match by_route {
            Some(false) => None,
            Some(true) => Some(self.response_cache.clone().unwrap_or_default()),
            None => self.response_cache.clone(),
        };
        cfg.map(|mut c| {
            if semantic_off {
                c.semantic = None;
            }
            c
        })
    }

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
    /// The budget one per-key key is (`spec.perKey`): the per-key limits,
    /// the same source, period and fail mode, no thresholds or other
    /// rules. What the operator's lease pool of a key is kept against.
    /// `None` without a per-key split.
    pub fn key_config(&self) -> Option<BudgetConfig> {
        let pk = self.per_key.as_ref()?;
        Some(BudgetConfig {
            source: self.source.clone(),
            generation: self.generation,
            period: self.period,
            time_zone: self.time_zone.clone(),
            limit_usd: pk.limit_usd,
            limit_tokens: pk.limit_tokens,
            thresholds: Vec::new(),
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: self.fail_mode,
            shadow: self.shadow,
            per_key: None,
            on_projected_overrun: None,
        })
    }

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
    fn workload_names_come_from_labels_or_the_pod_name() {
        let mut l: Labels = [("pod-template-hash".to_string(), "7d9f8b6c5d".to_string())].into();
        assert_eq!(workload_name(&l, "checkout-7d9f8b6c5d-x2x4p"), "checkout");
        assert_eq!(workload_name(&Labels::new(), "worker-0"), "worker-0");
        l.insert("tokenwarden.dev/workload".into(), "w".into());
        assert_eq!(workload_name(&l, "checkout-7d9f8b6c5d-x2x4p"), "w");
        l.insert("app".into(), "".into());
        assert_eq!(workload_name(&l, "x"), "w", "an empty label is skipped");
        l.insert("app".into(), "cart".into());
        assert_eq!(workload_name(&l, "x"), "cart");
        l.insert("app.kubernetes.io/name".into(), "cart-api".into());
        assert_eq!(workload_name(&l, "x"), "cart-api");
    }

    #[test]
    fn prompt_cache_keys_are_readable_and_at_most_64_characters() {
        assert_eq!(
            openai_prompt_cache_key("shop", "checkout"),
            "tokenwarden:shop/checkout"
        );
        assert_eq!(openai_prompt_cache_key("shop", ""), "tokenwarden:shop");
        // Exactly 64 stays as is.
        let w = "w".repeat(64 - "tokenwarden:ns/".len());
        assert_eq!(openai_prompt_cache_key("ns", &w).len(), 64);
        assert_eq!(
            openai_prompt_cache_key("ns", &w),
            format!("tokenwarden:ns/{w}")
        );
        // Longer: a readable prefix and a hash of the whole, stable and distinct.
        let ns = "a-namespace-with-a-rather-long-name";
        let a = openai_prompt_cache_key(ns, "a-workload-with-a-long-name-too");
        let b = openai_prompt_cache_key(ns, "a-workload-with-a-long-name-two");
        assert_eq!(a.len(), 64, "{a}");
        assert_eq!(b.len(), 64, "{b}");
        assert_ne!(a, b);
        // 47 bytes of the readable form, '~', FNV-1a 64 of the whole (checked
        // against an independent implementation).
        assert_eq!(
            a,
            "tokenwarden:a-namespace-with-a-rather-long-name~69421638f3f4f1c6"
        );
        assert_eq!(
            a,
            openai_prompt_cache_key(ns, "a-workload-with-a-long-name-too")
        );
        // The hash is FNV-1a 64 (a fixed function: keys survive upgrades).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn minimum_overrides_match_exact_names_and_globs_first_wins() {
        let b = AnthropicBreakpoints {
            ttl: CacheTtl::FiveMinutes,
            minimum_overrides: vec![
                MinimumTokens {
                    model: "claude-haiku-4-5".into(),
                    tokens: 8192,
                },
                MinimumTokens {
                    model: "claude-*".into(),
                    tokens: 2048,
                },
            ],
        };
        assert_eq!(b.minimum_override("claude-haiku-4-5"), Some(8192));
        assert_eq!(b.minimum_override("claude-sonnet-4-5"), Some(2048));
        assert_eq!(b.minimum_override("gpt-5"), None);
        assert_eq!(
            AnthropicBreakpoints::default().minimum_override("claude-x"),
            None
        );
    }

    fn config_with_caching() -> WorkloadConfig {
        WorkloadConfig {
            namespace: "ns".into(),
            routing: None,
            budgets: vec![],
            conflict: None,
            caching: CachingConfig {
                anthropic_breakpoints: Some(AnthropicBreakpoints {
                    ttl: CacheTtl::OneHour,
                    minimum_overrides: vec![MinimumTokens {
                        model: "claude-haiku-*".into(),
                        tokens: 4096,
                    }],
                }),
                openai_prompt_cache_key: Some("tokenwarden:ns/agent".into()),
                volatile_guard: Some(VolatileGuard { repeats: 3 }),
            },
            warnings: vec![],
        }
    }

    #[test]
    fn caching_round_trips_in_its_wire_form() {
        let cfg = config_with_caching();
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(
            json,
            r#"{"namespace":"ns","routing":null,"budgets":[],"conflict":null,"caching":{"anthropic_breakpoints":{"ttl":"1h","minimum_overrides":[{"model":"claude-haiku-*","tokens":4096}]},"openai_prompt_cache_key":"tokenwarden:ns/agent","volatile_guard":{"repeats":3}},"warnings":[]}"#
        );
        let back: WorkloadConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg);
        // A 5-minute TTL without overrides, as a sidecar reads it.
        let c: CachingConfig =
            serde_json::from_str(r#"{"anthropic_breakpoints":{"ttl":"5m"}}"#).unwrap();
        assert_eq!(
            c.anthropic_breakpoints,
            Some(AnthropicBreakpoints::default())
        );
    }

    #[test]
    fn configs_from_before_caching_still_deserialize_with_caching_off() {
        let old = r#"{"namespace":"ns","routing":null,"budgets":[],"conflict":null,"warnings":[]}"#;
        let cfg: WorkloadConfig = serde_json::from_str(old).unwrap();
        assert!(cfg.caching.is_off());
        // ... and an off config serializes exactly as before.
        assert_eq!(serde_json::to_string(&cfg).unwrap(), old);
        // A newer compiler's fields this sidecar does not know are ignored.
        let newer = r#"{"namespace":"ns","routing":null,"conflict":null,"caching":{"openai_prompt_cache_key":"k","later":1}}"#;
        let cfg: WorkloadConfig = serde_json::from_str(newer).unwrap();
        assert_eq!(cfg.caching.openai_prompt_cache_key.as_deref(), Some("k"));
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
            per_key: None,
            on_projected_overrun: None,
        };
        assert_eq!(b.active_threshold(49), None);
        assert_eq!(b.active_threshold(50).map(|t| t.percent), Some(50));
        assert_eq!(b.active_threshold(99).map(|t| t.percent), Some(80));
        assert_eq!(b.active_threshold(250).map(|t| t.percent), Some(100));
    }
}
