//! `RoutingPolicy`: where a workload's LLM requests go.
#![expect(
    clippy::duplicated_attributes,
    reason = "kube's printcolumn(...) repeats `type_` once per column"
)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Conditions, SecretKeyRef, conditions_schema};

/// Routes the LLM requests of the selected pods: which providers exist, the
/// ladder of models from cheap to strong, ordered routes that pick a model
/// per request, escalation, fallbacks and the complexity classifier.
///
/// When several RoutingPolicies select one pod, exactly one applies: the
/// highest `priority`, then the most specific `workloadSelector` (most
/// matchLabels + matchExpressions entries), then the alphabetically first
/// name. The others report a `Conflicted` condition.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "tokenwarden.dev",
    version = "v1alpha1",
    kind = "RoutingPolicy",
    plural = "routingpolicies",
    singular = "routingpolicy",
    shortname = "rp",
    shortname = "rpol",
    category = "tokenwarden",
    namespaced,
    status = "RoutingPolicyStatus",
    derive = "PartialEq",
    doc = "RoutingPolicy routes the LLM requests of the selected pods to the cheapest model that can do the job, escalating when needed.",
    printcolumn(
        name = "Routes",
        type_ = "integer",
        json_path = ".status.routeCount",
        description = "Number of routes in the policy"
    ),
    printcolumn(
        name = "Sidecars",
        type_ = "string",
        json_path = ".status.sidecars",
        description = "Sidecars running the current version / selected",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("self.routes.all(r, !has(r.target.tier) || self.tiers.exists(t, t.name == r.target.tier))").message("every route's target.tier must name a tier in spec.tiers").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("self.routes.all(r, !has(r.target.provider) || self.providers.exists(p, p.name == r.target.provider))").message("every route's target.provider must name a provider in spec.providers").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("self.tiers.all(t, self.providers.exists(p, p.name == t.provider))").message("every tier's provider must name a provider in spec.providers").reason(kube::core::Reason::FieldValueInvalid))]
pub struct RoutingPolicySpec {
    /// Which pods in this namespace the policy applies to, by label. An empty
    /// or absent selector selects every injected pod in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,

    /// Precedence when several RoutingPolicies select the same pod: higher
    /// wins. Default 0. Ties go to the more specific selector, then to the
    /// alphabetically first name.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,

    /// Upstream LLM providers. Names are unique; routes and tiers refer to
    /// them. At least one, at most 16.
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub providers: Vec<ProviderSpec>,

    /// The escalation ladder, ordered from cheapest to strongest. Escalation
    /// moves a request one tier up; a budget's `Downgrade` threshold can name
    /// a tier. Names are unique. At most 8.
    #[serde(default)]
    #[schemars(length(max = 8))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub tiers: Vec<TierSpec>,

    /// Ordered routing rules: the first route whose `match` holds picks the
    /// target. A request no route matches is forwarded unchanged (same model)
    /// to the first provider that speaks its API. Names are unique. At most 64.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub routes: Vec<RouteSpec>,

    /// When a request moves one tier up. Defaults: on upstream error yes;
    /// repeated prompts not tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationSpec>,

    /// Retries on transient upstream failures. Defaults: retry on 429, 5xx,
    /// connect errors and timeouts; 2 attempts; 120s per try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackSpec>,

    /// Tuning of the embedded complexity classifier whose 0–100 score routes
    /// can match on. Defaults are documented in docs/classifier.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<ClassifierSpec>,

    /// Output tokens assumed when a request sets no max-tokens field
    /// (`max_tokens`, `max_completion_tokens`, `max_output_tokens`); used to
    /// reserve the worst-case cost against budgets. Default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub default_max_output_tokens: Option<u32>,

    /// Input tokens assumed, on top of what the request body carries, for a
    /// request that references input the sidecar cannot see: a Responses
    /// `previous_response_id`, `conversation` or stored `prompt`; files and
    /// images given by id or URL; server-side tools (web search, file
    /// search, code execution, MCP servers) whose results the provider
    /// bills as input. Counted in the worst case reserved against budgets,
    /// so the hard cap holds as long as the hidden input stays within it.
    /// Default: the target model's context window from the price catalog,
    /// else 200000. 0 counts nothing beyond the body (the cap then holds
    /// only for requests that carry their whole prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub unseen_input_tokens: Option<u32>,
}

/// The wire API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderApi {
    /// OpenAI REST API: `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings`.
    Openai,
    /// Anthropic Messages API: `/v1/messages`.
    Anthropic,
}

/// An upstream LLM provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderSpec {
    /// Name that tiers and routes refer to (DNS label, e.g. `openai`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The API it speaks: `openai` or `anthropic`.
    pub api: ProviderApi,

    /// Base URL without the `/v1/...` path, e.g. `https://api.openai.com` or
    /// `https://api.anthropic.com`. `http://` is allowed for in-cluster
    /// gateways and tests.
    #[schemars(
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
    )]
    pub base_url: String,

    /// The Secret key holding this provider's API key. Only the sidecar
    /// mounts it; the app's own `Authorization` / `x-api-key` is replaced.
    pub api_key_secret_ref: SecretKeyRef,

    /// Price overrides for this provider's models, applied on top of the
    /// built-in catalog (e.g. negotiated discounts or fine-tuned models). At
    /// most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["model".into()]))]
    pub prices: Vec<PriceOverrideSpec>,
}

/// A per-model price, in USD per million tokens, as a decimal string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceOverrideSpec {
    /// The model name as the provider reports it, exact, or a prefix ending in
    /// `*` (e.g. `ft:gpt-4o-mini:acme:*`).
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// USD per million uncached input tokens, e.g. `"1.25"`.
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,9})?$"))]
    pub input_per_m_tok: String,
    /// USD per million output tokens.
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,9})?$"))]
    pub output_per_m_tok: String,
    /// USD per million cache-read input tokens. Default: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,9})?$"))]
    pub cache_read_per_m_tok: Option<String>,
    /// USD per million cache-write input tokens. Default: the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,9})?$"))]
    pub cache_write_per_m_tok: Option<String>,
}

/// One rung of the escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    /// Tier name (DNS label), e.g. `cheap`, `standard`, `frontier`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Name of the provider in `spec.providers` that serves this tier.
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// Model name sent upstream, e.g. `gpt-5-mini`.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
}

/// An ordered routing rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Route name (DNS label), reported to the app in the
    /// `x-tokenwarden-route` header and in metrics.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Conditions, all of which must hold. Absent or empty matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<RouteMatchSpec>,
    /// Where matching requests go.
    pub target: RouteTargetSpec,
}

/// A request endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RequestApi {
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// OpenAI `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic `POST /v1/messages`.
    Messages,
}

// Coarse complexity class, split at `spec.classifier.hardThreshold`
// (documented on the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ComplexityClass {
    /// Score below the hard threshold.
    Easy,
    /// Score at or above the hard threshold.
    Hard,
}

/// Route conditions. Every stated condition must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatchSpec {
    /// Globs on the model the app asked for (`*`, `?`, `[abc]`), e.g.
    /// `gpt-5*` or `claude-opus-*`. Any glob may match. Empty = any model. At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    pub models: Vec<String>,
    /// Endpoints the route applies to. Empty = any. At most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub apis: Vec<RequestApi>,
    /// Request headers that must be present with a value matching the glob.
    /// Names are case-insensitive. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub headers: Vec<HeaderMatchSpec>,
    /// Complexity class from the classifier (`Easy` or `Hard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity_class: Option<ComplexityClass>,
    /// Classifier score range, 0–100 inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<ScoreRangeSpec>,
    /// Estimated prompt-token range, inclusive (estimated from bytes, see docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<TokenRangeSpec>,
    /// `true`: only requests that define tools; `false`: only requests without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_present: Option<bool>,
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatchSpec {
    /// Header name (case-insensitive), e.g. `x-task-kind`.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub name: String,
    /// Glob the value must match, e.g. `review*`. `*` matches any value.
    #[schemars(length(min = 1, max = 256))]
    pub value: String,
}

/// An inclusive score range within 0–100.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max").reason(kube::core::Reason::FieldValueInvalid))]
pub struct ScoreRangeSpec {
    /// Lowest score that matches (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min: Option<u16>,
    /// Highest score that matches (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max: Option<u16>,
}

/// An inclusive token-count range.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max").reason(kube::core::Reason::FieldValueInvalid))]
pub struct TokenRangeSpec {
    /// Fewest tokens that match (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000_000))]
    pub min: Option<u64>,
    /// Most tokens that match (default unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000_000))]
    pub max: Option<u64>,
}

/// Route destination: either a `tier`, or a `provider` and `model`, or
/// `passthrough: true` (keep the requested model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("(has(self.tier) ? 1 : 0) + (has(self.model) ? 1 : 0) + ((has(self.passthrough) && self.passthrough) ? 1 : 0) == 1").message("target needs exactly one of tier, model (with provider) or passthrough").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("has(self.model) == has(self.provider)").message("target.model and target.provider go together").reason(kube::core::Reason::FieldValueInvalid))]
pub struct RouteTargetSpec {
    /// A tier name from `spec.tiers`. Escalation moves up from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub tier: Option<String>,
    /// A provider name from `spec.providers` (with `model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub provider: Option<String>,
    /// The model to send upstream (with `provider`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub model: Option<String>,
    /// Forward the requested model unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<bool>,
}

/// Escalation rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EscalationSpec {
    /// Retry one tier up after an upstream error or timeout. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_upstream_error: Option<bool>,
    /// Move a request one tier up when the same prompt was seen `count` times
    /// within `window` (an app retrying because the answer was not good
    /// enough). Absent = not tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated_prompt: Option<RepeatSpec>,
}

/// "N times within a window".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepeatSpec {
    /// Occurrences, the current one included, that trigger the rule (2–100).
    #[schemars(range(min = 2, max = 100))]
    pub count: u32,
    /// Sliding window, as a duration (`90s`, `10m`, `1h`), at most 24h.
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub window: String,
}

/// Fallback rules for transient upstream failures. Each retry goes to the
/// next tier up (or the same target when it is not on the ladder), and every
/// attempt is metered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FallbackSpec {
    /// Retry on HTTP 429 (rate limited). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_rate_limit: Option<bool>,
    /// Retry on HTTP 500, 502, 503, 504 and 529. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_server_error: Option<bool>,
    /// Retry when no connection can be made. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_connect_error: Option<bool>,
    /// Retry when a try exceeds `perTryTimeout`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<bool>,
    /// Time one try may take to return response headers (streams may run
    /// longer once started), e.g. `30s`. Default `120s`, at most `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub per_try_timeout: Option<String>,
    /// Upper bound on tries per request, the first included (1 = never
    /// retry). Default 2, at most 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub max_attempts: Option<u32>,
}

/// Classifier tuning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassifierSpec {
    /// Score (0–100) at and above which a request is `Hard` for
    /// `match.complexityClass`. Default: see docs/classifier.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub hard_threshold: Option<u16>,
    /// Feature weights, replacing the built-in ones, as decimal strings
    /// (e.g. `"0.75"`, `"-2.5"`; magnitude at most 100). `"0"` switches a
    /// feature off. Keys are the feature names of docs/classifier.md, e.g.
    /// `{stackTraceLines: "0.9", promptSize: "0"}`. Unlisted features keep
    /// their defaults. At most 32 entries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32), inner(regex(pattern = r"^-?(0|[1-9][0-9]{0,2})(\.[0-9]{1,4})?$")))]
    pub weights: BTreeMap<String, String>,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingPolicyStatus {
    /// `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of routes (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_count: Option<i32>,
    /// Sidecars on the current version / sidecars selected, e.g. `3/4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecars: Option<String>,
    /// Conditions: `Ready` (valid, compiled, and how many sidecars run it),
    /// `Conflicted` (shadowed for some pods by a higher-precedence policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}
