//! `RoutingPolicy`: where a workload's LLM requests go.
//!
//! `spec.caching` follows the providers' prompt-caching rules: Anthropic's
//! `cache_control` breakpoints (at most 4), per-model minimum cacheable
//! lengths and `5m`/`1h` TTLs with their write prices
//! (<https://docs.claude.com/en/docs/build-with-claude/prompt-caching>), and
//! OpenAI's `prompt_cache_key`
//! (<https://platform.openai.com/docs/guides/prompt-caching>).
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
#[x_kube(validation = kube::core::Rule::new("!has(self.caching) || !has(self.caching.anthropic) || !has(self.caching.anthropic.automaticBreakpoints) || !self.caching.anthropic.automaticBreakpoints || self.providers.exists(p, p.api == 'anthropic')").message("caching.anthropic.automaticBreakpoints needs a provider with api: anthropic in spec.providers").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("!has(self.caching) || !has(self.caching.openai) || !has(self.caching.openai.promptCacheKey) || !self.caching.openai.promptCacheKey || self.providers.exists(p, p.api == 'openai')").message("caching.openai.promptCacheKey needs a provider with api: openai in spec.providers").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("!has(self.cache) || !has(self.cache.semantic) || self.providers.exists(p, p.name == self.cache.semantic.embedding.provider && p.api == 'openai')").message("cache.semantic.embedding.provider must name a provider with api: openai in spec.providers").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("!has(self.cache) || !has(self.cache.exact) || !has(self.cache.exact.maxEntryBytes) || !has(self.cache.exact.maxBytes) || self.cache.exact.maxEntryBytes <= self.cache.exact.maxBytes").message("cache.exact.maxEntryBytes must not exceed cache.exact.maxBytes").reason(kube::core::Reason::FieldValueInvalid))]
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

    /// When a request moves one tier up. Defaults: every rule on, but
    /// repeated prompts are not tracked. The answer rules judge
    /// non-streaming answers only, each at most once per request, within
    /// `fallback.maxAttempts`.
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

    /// Help the providers' prompt caches hit, opt-in per setting: Anthropic
    /// breakpoints inserted into requests that carry none, a per-workload
    /// OpenAI `prompt_cache_key`, and a report of volatile prompt prefixes
    /// that keep breaking the cache. Absent = all off: requests are
    /// forwarded as sent (cache busts are still detected and priced).
    /// Requests that carry their own `cache_control` or `prompt_cache_key`
    /// are never changed, and nothing else in a body is ever changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caching: Option<CachingSpec>,

    /// The sidecar's response cache: an identical request (same routed
    /// provider and model, path, and body up to key order and the members
    /// that do not change the answer) is answered from a stored response,
    /// at $0, without calling the provider. Absent = off (a route can still
    /// turn it on with `routes[].cache.enabled`). Apps bypass it per request
    /// with `Cache-Control: no-cache` or `no-store`, or
    /// `x-tokenwarden-cache: bypass`. See docs/response-cache.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ResponseCacheSpec>,
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
    /// Override the policy's response cache (`spec.cache`) for this
    /// route's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<RouteCacheSpec>,
}

/// A route's response-cache override.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteCacheSpec {
    /// `false`: this route's requests are never answered from or stored in
    /// the response cache; `true`: they are, with `spec.cache`'s settings
    /// (its defaults when `spec.cache` is absent). Absent: as `spec.cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `false`: this route's requests are never answered from or added to
    /// the semantic cache (`spec.cache.semantic`); the exact cache still
    /// applies. Absent or `true`: as `spec.cache.semantic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<bool>,
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

/// When a request goes one tier up (the next tier of `tiers` whose
/// provider speaks the request's API). The answer rules (`onTruncation`,
/// `onEmptyAnswer`, `onRefusal`, `onInvalidToolCall`,
/// `onInvalidResponseFormat`) judge non-streaming answers before they
/// reach the app and retry one tier up, each at most once per request and
/// within `fallback.maxAttempts`; every attempt is metered. Streams only
/// see `repeatedPrompt` and `onAppSignal`.
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
    /// Retry one tier up when a non-streaming answer was cut by an output
    /// limit the app did not set: OpenAI chat `finish_reason: "length"`
    /// without `max_tokens`/`max_completion_tokens` in the request,
    /// Responses `incomplete_details.reason: "max_output_tokens"` without
    /// `max_output_tokens`, Anthropic `stop_reason:
    /// "model_context_window_exceeded"`. A cut at the app's own limit is
    /// what the app asked for and is never escalated. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_truncation: Option<bool>,
    /// Retry one tier up when a non-streaming answer has no text (empty or
    /// whitespace) and no tool call. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_empty_answer: Option<bool>,
    /// Retry one tier up when the model refused: OpenAI `message.refusal`
    /// (chat) or a `refusal` content part (Responses), Anthropic
    /// `stop_reason: "refusal"`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_refusal: Option<bool>,
    /// Retry one tier up when a tool call's arguments are not valid JSON
    /// or do not match the JSON schema the request declared for that tool
    /// (OpenAI `parameters`, Anthropic `input_schema`). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_invalid_tool_call: Option<bool>,
    /// Retry one tier up when the answer does not match the structured
    /// output the request asked for: the JSON schema of OpenAI
    /// `response_format` / Responses `text.format` / Anthropic
    /// `output_config.format`, or valid JSON for `json_object`. Default
    /// true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_invalid_response_format: Option<bool>,
    /// Start one tier up when the app sends the request header
    /// `x-tokenwarden-escalate: 1` (an agent retrying an answer it judged
    /// wrong); the header is not forwarded. Applies to streams too.
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_app_signal: Option<bool>,
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
    /// `match.complexityClass`. The score estimates, in percent, the chance
    /// that the request needs the strong tier, so this is the risk accepted
    /// for a request sent cheap. Default 11 (see docs/classifier.md).
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

/// Prompt-cache settings, each off unless set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CachingSpec {
    /// Anthropic Messages requests: automatic `cache_control` breakpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<AnthropicCachingSpec>,
    /// OpenAI requests: a stable `prompt_cache_key` per workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiCachingSpec>,
    /// Report a volatile run at the start of the prompt (e.g. a timestamp in
    /// the system prompt) that keeps breaking the cache. Absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volatile_prefix_guard: Option<VolatilePrefixGuardSpec>,
}

/// Automatic `cache_control` breakpoints for Anthropic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("(has(self.automaticBreakpoints) && self.automaticBreakpoints) || (!has(self.ttl) && (!has(self.minimumTokens) || size(self.minimumTokens) == 0))").message("ttl and minimumTokens apply only to inserted breakpoints: set automaticBreakpoints: true or remove them").reason(kube::core::Reason::FieldValueInvalid))]
pub struct AnthropicCachingSpec {
    /// Insert `cache_control` breakpoints into requests that carry none
    /// anywhere: at the end of the tools, the end of the system prompt and
    /// on the last message (so an agent's conversation prefix is read from
    /// the cache turn after turn), within Anthropic's limit of 4, and only
    /// when the prompt up to a breakpoint reaches the model's minimum
    /// cacheable length. A request that carries any `cache_control` is
    /// forwarded untouched; nothing else in a body changes. Responses to
    /// rewritten requests carry `x-tokenwarden-cache-control: inserted`.
    /// Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_breakpoints: Option<bool>,
    /// Lifetime of the cache entries the inserted breakpoints write: `5m`
    /// (default; writes bill at 1.25× the input price) or `1h` (writes bill
    /// at 2× the input price; pays off when the same prefix is reused after
    /// more than 5 minutes of quiet). Reads bill at 0.1× either way and
    /// refresh the lifetime. Only with `automaticBreakpoints: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<CacheTtlSpec>,
    /// Overrides of the built-in per-model minimum cacheable length (1024,
    /// 2048 or 4096 tokens depending on the model, as Anthropic documents):
    /// no breakpoint is inserted before a prefix this long. Raise it to
    /// cache only prefixes big enough to pay for their writes; set it for
    /// model names the built-in table does not know. The first entry whose
    /// `model` matches the model sent upstream applies. Model names are
    /// unique. At most 32. Only with `automaticBreakpoints: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["model".into()]))]
    pub minimum_tokens: Vec<MinimumTokensSpec>,
}

// Lifetime of an Anthropic prompt-cache entry (documented on the field: a
// doc comment here would replace the field's in the schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CacheTtlSpec {
    /// 5 minutes (Anthropic's default).
    #[serde(rename = "5m")]
    FiveMinutes,
    /// 1 hour.
    #[serde(rename = "1h")]
    OneHour,
}

/// A minimum cacheable length for some models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MinimumTokensSpec {
    /// An exact model name or a glob (`*`, `?`, `[abc]`, as in
    /// `routes[].match.models`), e.g. `claude-sonnet-4-5` or `claude-opus-*`,
    /// matched against the model sent upstream (after routing).
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Prompt tokens (tools, system and messages up to the breakpoint)
    /// needed before a breakpoint is inserted, 1–1000000.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub tokens: u32,
}

/// OpenAI prompt-cache routing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenAiCachingSpec {
    /// Set `prompt_cache_key` on Chat Completions and Responses requests
    /// that carry none, to `tokenwarden:<namespace>/<workload>` (hashed
    /// down to OpenAI's 64 characters when longer): the same on every pod
    /// of a workload, different between workloads, no secret in it. OpenAI
    /// routes requests with the same key and prefix to the same cache, so
    /// a workload's replicas share their cached prefixes. A request's own
    /// key is kept. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<bool>,
}

/// The volatile-prefix guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("self.mode == 'Report' || !has(self.repeats)").message("repeats applies only with mode: Report").reason(kube::core::Reason::FieldValueInvalid))]
pub struct VolatilePrefixGuardSpec {
    /// `Disabled`, or `Report`: when the same volatile run (a timestamp, date or
    /// id-like run that changes between requests) has broken the cache
    /// `repeats` times, the `PromptCacheUnstable` condition and an Event on
    /// this policy name its section and offset and the money it wastes per
    /// day. Report-only: prompt content is never rewritten.
    pub mode: GuardMode,
    /// Cache busts by the same volatile run before it is reported, 2–100.
    /// Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 100))]
    pub repeats: Option<u32>,
}

/// What the volatile-prefix guard does. (Not `Off`: YAML 1.1 parsers,
/// kubectl's among them, read an unquoted `Off` as `false`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GuardMode {
    /// Nothing.
    Disabled,
    /// Name the volatile run in a condition and an Event; change nothing.
    Report,
}

/// The response cache (see docs/response-cache.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("has(self.redis) == (has(self.backend) && self.backend == 'redis')").message("cache.redis is required with backend: redis, and only then").reason(kube::core::Reason::FieldValueInvalid))]
pub struct ResponseCacheSpec {
    /// Where entries live: `memory` (the default): in each sidecar,
    /// bounded by `exact.maxEntries` and `exact.maxBytes`, lost when the
    /// pod restarts; `redis`: in the Redis server of `redis`, shared by
    /// every sidecar of the policy (bounded by the server's `maxmemory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<CacheBackendSpec>,
    /// The Redis server of `backend: redis` (required then, and only then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCacheSpec>,
    /// The exact cache: a request is answered from a stored response only
    /// when its key (a SHA-256 of the routed provider and model, the path,
    /// the canonical body, the namespace and this policy) is the same.
    /// Absent = on, with the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactCacheSpec>,
    /// The semantic cache, on top of the exact one: after an exact miss, a
    /// single-turn text request is embedded and answered with the stored
    /// answer of an earlier request whose user text is at least
    /// `minSimilarity` alike, whose everything else (system prompt, model,
    /// sampling parameters, path, stream flag) is identical, and which no
    /// guard tells apart (numbers, negations, names, code). The answer is
    /// read from the exact cache, so `exact`'s ttl and bounds apply. Any
    /// failure (embedder down, timeout) is a miss, never a failed
    /// request. Absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<SemanticCacheSpec>,
}

/// The semantic cache (see docs/response-cache.md, "Semantic cache").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SemanticCacheSpec {
    /// Least cosine similarity of the two user texts' embeddings for a
    /// stored answer to be served, as a decimal string from `"0.80"` to
    /// `"1"` with at most 4 decimals. Default `"0.95"`: strict; the guards
    /// keep apart what stays this close but asks something else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0\.[0-9]{1,4}|1(\.0{1,4})?)$"))]
    pub min_similarity: Option<String>,
    /// Where the embeddings come from.
    pub embedding: EmbeddingSpec,
    /// The checks a stored answer must pass before it answers a similar
    /// prompt. Each is on by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guards: Option<SemanticGuardsSpec>,
    /// Which requests are eligible. The defaults are the safe ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligibility: Option<SemanticEligibilitySpec>,
    /// Most entries in the similarity index per sidecar and policy (each
    /// holds a 384-float embedding and the prompt, in memory only); the
    /// least recently used goes first. Default 10000, 1–100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_entries: Option<u32>,
}

/// An OpenAI-compatible `/v1/embeddings` endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmbeddingSpec {
    /// Name of a provider in `spec.providers` with `api: openai` that
    /// serves `POST /v1/embeddings`: the self-hosted
    /// `tokenwarden-embedder` (free) or a paid API, whose calls are
    /// metered in the ledger like any request and count against the
    /// cache's saving. It is called with its own key, never the app's.
    #[schemars(length(min = 1, max = 63))]
    pub provider: String,
    /// The embedding model asked for, e.g. `all-MiniLM-L6-v2` or
    /// `text-embedding-3-small`. Part of every entry's scope: changing it
    /// starts an empty index.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Time an embedding call may take before the request goes on as a
    /// miss, e.g. `500ms`. Default `2s`, at most `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub timeout: Option<String>,
}

/// The semantic cache's guards.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SemanticGuardsSpec {
    /// The two prompts must hold the same numbers and operators ("what is
    /// 2+2" never answers "what is 2+3"). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numbers: Option<bool>,
    /// A negation in one prompt must be in the other ("Is Python slow?"
    /// never answers "Is Python not slow?"). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negations: Option<bool>,
    /// Names and identifiers (capitalised words, quoted strings, emails,
    /// URLs, ids, paths) must be the same. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<bool>,
    /// Code (fenced or inline spans, code-like tokens) must be the same.
    /// Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<bool>,
    /// Most content words (stop words removed) one prompt may have that the
    /// other lacks, counted both ways. Default 2, at most 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 20))]
    pub max_content_word_diff: Option<u32>,
}

/// Which requests the semantic cache may answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SemanticEligibilitySpec {
    /// Only a single user message (after optional system/developer
    /// messages). `false`: the last user message is embedded and every
    /// earlier turn must be identical. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_turn_only: Option<bool>,
    /// No tool definitions, tool choice or tool results. `false`: they must
    /// be identical. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_tools: Option<bool>,
    /// The user message is text only. `false`: images, audio and files
    /// must be identical and only the text is compared. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_only: Option<bool>,
    /// Longest user text embedded, in bytes; a longer one is not looked
    /// up (an embedder reads a bounded number of tokens, so two long
    /// prompts that differ at the end would embed alike). Default 1000,
    /// 1–100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_prompt_bytes: Option<u32>,
}

// Where response-cache entries live (documented on the field: a doc
// comment here would replace the field's in the schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CacheBackendSpec {
    /// In the sidecar's memory.
    Memory,
    /// In a shared Redis server.
    Redis,
}

/// The Redis server of the response cache.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = kube::core::Rule::new("!self.url.matches('^rediss?://[^/?#@]*:[^/?#@]*@') && !self.url.matches('[?&]password=')").message("cache.redis.url must not hold a password: put it in a Secret named by credentialsSecret").reason(kube::core::Reason::FieldValueInvalid))]
#[x_kube(validation = kube::core::Rule::new("!has(self.tls) || self.url.startsWith('rediss://')").message("cache.redis.tls needs a rediss:// url").reason(kube::core::Reason::FieldValueInvalid))]
pub struct RedisCacheSpec {
    /// `redis://host:port[/db]`, or `rediss://…` for TLS (verified against
    /// the system's root certificates, or against `tls.caSecret` when set).
    /// A user name may be in the URL; a password may not: it comes from
    /// `credentialsSecret`.
    #[schemars(length(min = 10, max = 2048), regex(pattern = r"^rediss?://"))]
    pub url: String,
    /// The Secret (in the policy's namespace) holding the password, and
    /// optionally the ACL user name. The operator reads it (connected
    /// mode; see docs/install.md for the RBAC this needs); a standalone
    /// sidecar reads `<secrets dir>/<name>/<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<RedisCredentialsSpec>,
    /// TLS to a `rediss://` server signed by a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RedisTlsSpec>,
    /// Bound on each Redis operation (and on connecting), e.g. `50ms`:
    /// past it a lookup is a miss and a store is dropped, so a slow or
    /// hung Redis never stalls a request. Default `100ms`, at most `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub timeout: Option<String>,
    /// First part of every key (`<keyPrefix>:<namespace>:<policy>:…`).
    /// Default `tw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_.-]+$"))]
    pub key_prefix: Option<String>,
}

/// TLS to the Redis server (`rediss://` only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisTlsSpec {
    /// The key of a Secret (in the policy's namespace) holding the PEM
    /// certificate(s) of the CA that signed the server's certificate: the
    /// server is verified against these and not the system roots (the
    /// host name in the URL must be in the certificate). Resolved like
    /// `credentialsSecret`: the operator reads it (connected mode), a
    /// standalone sidecar reads `<secrets dir>/<name>/<key>`. A
    /// cert-manager Certificate's Secret has the CA under `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<RedisCaSecretSpec>,
}

/// A Secret key holding PEM CA certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisCaSecretSpec {
    /// Name of the Secret, in the policy's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key within the Secret whose value is the PEM, e.g. `ca.crt`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Where the Redis credentials are: keys of a Secret in the policy's
/// namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisCredentialsSpec {
    /// Name of the Secret, in the policy's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key within the Secret whose value is the password.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
    /// Key within the Secret whose value is the ACL user name (absent: the
    /// URL's user, or Redis's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub username_key: Option<String>,
}

/// The exact response cache's lifetime and bounds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExactCacheSpec {
    /// How long a stored response is served, e.g. `10m`, `24h`. Default
    /// `1h`, at least `1s`, at most `720h` (30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$")
    )]
    pub ttl: Option<String>,
    /// Most responses kept per sidecar; the least recently used is evicted
    /// first. Default 10000, 1–1000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_entries: Option<u32>,
    /// Most bytes of stored responses kept per sidecar (bodies as the
    /// provider sent them, plus their headers); the least recently used is
    /// evicted first. Default 67108864 (64 MiB), 65536–4294967296.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 65_536, max = 4_294_967_296_u64))]
    pub max_bytes: Option<u64>,
    /// Largest response stored; a larger one is forwarded and not stored
    /// (a stream is never held back: it is copied aside as it passes, and
    /// the copy dropped once over this size). Default 1048576 (1 MiB), at
    /// most 67108864 and at most `maxBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67_108_864))]
    pub max_entry_bytes: Option<u64>,
    /// Cache only requests that do not ask for variety: `temperature`
    /// absent or 0, and `n` absent or 1. `false` caches sampled requests
    /// too (the same sample is then replayed). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_deterministic: Option<bool>,
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
    /// `Conflicted` (shadowed for some pods by a higher-precedence policy),
    /// `PromptCacheUnstable` (a selected workload keeps breaking its prompt
    /// cache: the section, the kind of change and the money wasted per day).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Conditions,
}
