//! Types and constants shared by both kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// API group of every tokenwarden kind.
pub const GROUP: &str = "tokenwarden.dev";
/// API version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Pattern for decimal USD amounts: digits, optionally `.` and 1–6 decimals.
pub const USD_PATTERN: &str = r"^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$";
/// Pattern for prices in USD per million tokens: up to 9 decimals.
pub const PRICE_PATTERN: &str = r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,9})?$";
/// Pattern for durations: Go syntax restricted to ms, s, m, h (e.g. `30s`, `1m30s`).
pub const DURATION_PATTERN: &str = r"^([0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h))+$";
/// Pattern for names that other fields refer to (DNS-1123 label).
pub const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Condition types and reasons written to `.status.conditions`.
pub mod conditions {
    /// The object is valid and in effect.
    pub const READY: &str = "Ready";
    /// Another RoutingPolicy with higher precedence selects some of the same pods.
    pub const CONFLICTED: &str = "Conflicted";
    /// A budget threshold has been crossed in the current period.
    pub const THRESHOLD_CROSSED: &str = "ThresholdCrossed";
    /// The budget's limit is spent for the current period.
    pub const EXHAUSTED: &str = "Exhausted";
    /// A workload the RoutingPolicy selects broke the provider's prompt
    /// cache in the last 24 hours (a cache bust): the message names the
    /// workload, model, section and kind of change, and the USD wasted.
    pub const PROMPT_CACHE_UNSTABLE: &str = "PromptCacheUnstable";
    /// The response cache's Redis credentials could not be resolved (only
    /// on a RoutingPolicy with `spec.cache.redis.credentialsSecret`, in
    /// Kubernetes mode when the operator reads Secrets): every lookup is a
    /// miss, requests still flow. The message says which Secret and why.
    pub const RESPONSE_CACHE_DEGRADED: &str = "ResponseCacheDegraded";
    /// A TokenBudget's forecast (`status.projectedSpendUsd`,
    /// `status.projectedTokens`) reaches its limit before the period ends.
    pub const PROJECTED_OVERRUN: &str = "ProjectedOverrun";

    /// Reason: the spec is valid and was compiled.
    pub const REASON_ACCEPTED: &str = "Accepted";
    /// Reason: `validate()` rejected the spec; the message lists field paths.
    pub const REASON_INVALID: &str = "InvalidSpec";
    /// Reason: every selected sidecar runs the current version.
    pub const REASON_IN_SYNC: &str = "AllSidecarsInSync";
    /// Reason: some sidecars have not acknowledged the current version yet.
    pub const REASON_PROPAGATING: &str = "Propagating";
    /// Reason: a sidecar rejected (NACKed) the current version.
    pub const REASON_REJECTED: &str = "RejectedBySidecar";
    /// Reason: shadowed by a RoutingPolicy of higher precedence.
    pub const REASON_SHADOWED: &str = "ShadowedByHigherPrecedence";
    /// Reason: spend is below every threshold.
    pub const REASON_WITHIN_BUDGET: &str = "WithinBudget";
    /// Reason: spend reached an `Alert` threshold.
    pub const REASON_ALERT: &str = "AlertThresholdReached";
    /// Reason: spend reached a `Downgrade` threshold.
    pub const REASON_DOWNGRADE: &str = "DowngradeThresholdReached";
    /// Reason: spend reached a `Block` threshold.
    pub const REASON_BLOCK: &str = "BlockThresholdReached";
    /// Reason: spend reached the limit.
    pub const REASON_LIMIT_REACHED: &str = "LimitReached";
    /// Reason: a new period started.
    pub const REASON_PERIOD_RESET: &str = "PeriodReset";
    /// Reason: the forecast reaches the limit before the period ends.
    pub const REASON_PROJECTED_OVER_LIMIT: &str = "ProjectedOverLimit";
    /// Reason: the forecast stays under the limit to the period's end.
    pub const REASON_PROJECTED_WITHIN_LIMIT: &str = "ProjectedWithinLimit";
    /// Reason: not enough history in this period for a forecast yet.
    pub const REASON_WARMING_UP: &str = "WarmingUp";
    /// Reason: no prompt-cache bust in the last 24 hours.
    pub const REASON_CACHE_STABLE: &str = "PrefixStable";
    /// Reason: the Redis credentials' Secret is missing, unreadable or
    /// lacks the key.
    pub const REASON_CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
    /// Reason: the Redis credentials were read and sent to the sidecars.
    pub const REASON_CREDENTIALS_RESOLVED: &str = "CredentialsResolved";
}

/// A key in a Kubernetes Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object. The sidecar
    /// mounts it; app containers never see it.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Key within the Secret's `data` whose value is the API key.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// Status conditions: a list-map keyed by `type`.
pub(crate) type Conditions = Vec<Condition>;

/// Schema for `conditions`: standard `metav1.Condition` items, a list-map
/// keyed by `type`, at most 16.
pub(crate) fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    obj.insert("maxItems".into(), 16.into());
    schema
}
