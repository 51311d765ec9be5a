//! Token-mix projection before deploying: a hand-written `kind: TokenMix`
//! (per workload, classes of requests with an integer number per day and
//! their tokens per request) routed through a RoutingPolicy, priced, and
//! compared with sending every class to the model it asks for.
//!
//! Each class is routed once with [`Router::decide`] (its `score`, or the
//! score [`classify_features`] gives its `features` under the policy's
//! classifier; its `promptTokensEstimate`, else its total input tokens;
//! `toolsPresent`; `headers`) and costs `requestsPerDay ×` the cost of one
//! request on the chosen model, so every figure is an exact integer of
//! pico-USD. A class keeps its token counts on the routed model (the mix
//! states them per request; no output estimate is applied). Monthly = 30
//! days. Budgets: [`super::budget::uniform`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    budget::{UniformImpact, uniform},
    reprice::Repricer,
};
use crate::{
    classify::{Features, classify_features},
    money::Usd,
    route::{RequestFacts, RouteError, Router},
    selector::Labels,
    tokens::TokenCounts,
    usage::add_usage,
    workload::{Endpoint, ObjectRef, WorkloadConfig},
};

/// The `apiVersion` of a token mix.
pub const API_VERSION: &str = "tokenwarden.dev/v1alpha1";
/// The `kind` of a token mix.
pub const KIND: &str = "TokenMix";

/// A token mix (not a CRD: a file for `kubectl tokenwarden project`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenMix {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// Optional metadata (`name`).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The workloads.
    pub workloads: Vec<MixWorkload>,
}

/// One workload of a mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MixWorkload {
    /// Its name (as reported).
    pub name: String,
    /// Its namespace (policies and budgets select it there).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Its pod labels (policies and budgets select on them).
    #[serde(default)]
    pub labels: Labels,
    /// The model its requests ask for, unless a class says otherwise.
    pub requested_model: String,
    /// The endpoint it calls (default `messages`).
    #[serde(default = "default_endpoint")]
    pub endpoint: Endpoint,
    /// Its classes of requests.
    pub classes: Vec<MixClass>,
}

/// A class of alike requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MixClass {
    /// A name for the output.
    #[serde(default)]
    pub name: Option<String>,
    /// Requests per day (an integer keeps the money exact).
    pub requests_per_day: u64,
    /// The model these requests ask for (default: the workload's).
    #[serde(default)]
    pub requested_model: Option<String>,
    /// The classifier score (0..=100) of these requests.
    #[serde(default)]
    pub score: Option<u16>,
    /// Or their classifier features (scored with the policy's weights);
    /// features left out are 0.
    #[serde(default, deserialize_with = "features_or_zero")]
    pub features: Option<Features>,
    /// The prompt-size estimate `promptTokens` routes match (body bytes / 4);
    /// default: the class's total input tokens.
    #[serde(default)]
    pub prompt_tokens_estimate: Option<u64>,
    /// Whether the requests define tools.
    #[serde(default)]
    pub tools_present: bool,
    /// Request headers routes may match (names lower-cased).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Tokens of one request.
    pub tokens: MixTokens,
}

/// Tokens of one request, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MixTokens {
    /// Uncached input.
    #[serde(default)]
    pub input: u64,
    /// Output.
    #[serde(default)]
    pub output: u64,
    /// Cache reads.
    #[serde(default)]
    pub cache_read: u64,
    /// Cache writes (5-minute TTL).
    #[serde(default)]
    pub cache_write: u64,
    /// Of those, cache writes with a 1-hour TTL.
    #[serde(default)]
    pub cache_write_1h: u64,
}

/// Why a mix cannot be projected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// Wrong `apiVersion`/`kind`.
    #[error("not a token mix: expected apiVersion {API_VERSION} and kind {KIND}, got {0} {1}")]
    NotAMix(String, String),
    /// The policy routes on complexity and the class has no score.
    #[error(
        "workload {workload} class {class}: the RoutingPolicy routes on complexity, so the class needs `score` or `features`"
    )]
    NeedsScore {
        /// The workload.
        workload: String,
        /// The class.
        class: String,
    },
    /// No provider can serve it.
    #[error("workload {workload}: {source}")]
    Route {
        /// The workload.
        workload: String,
        /// The routing error.
        source: RouteError,
    },
    /// A score above 100.
    #[error("workload {workload} class {class}: score {score} is above 100")]
    BadScore {
        /// The workload.
        workload: String,
        /// The class.
        class: String,
        /// The score.
        score: u16,
    },
}

/// Where one class goes and what it costs per day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassProjection {
    /// The workload.
    pub workload: String,
    /// The class (its name, else its position from 1).
    pub class: String,
    /// Requests per day.
    pub requests_per_day: u64,
    /// The score it was routed with.
    pub score: Option<u16>,
    /// The model asked for.
    pub requested_model: String,
    /// The route that matched (`None`: passthrough).
    pub route: Option<String>,
    /// The model routed to.
    pub model: String,
    /// Per day on the routed model; `None`: unpriced.
    pub cost_per_day: Option<Usd>,
    /// Per day on the requested model; `None`: unpriced.
    pub baseline_per_day: Option<Usd>,
}

/// One model's day: what the policy sends it and what the requests asked
/// of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDay {
    /// Requests per day routed to it.
    pub requests: u64,
    /// Their tokens per day.
    pub tokens: TokenCounts,
    /// Their cost per day (priced ones).
    pub cost: Usd,
    /// Requests per day routed to it without a price.
    pub unpriced: u64,
    /// Requests per day that ask for it (the baseline).
    pub baseline_requests: u64,
    /// Their cost per day on it (priced ones).
    pub baseline_cost: Usd,
    /// Baseline requests per day without a price.
    pub baseline_unpriced: u64,
}

/// A projected mix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Projection {
    /// Per class.
    pub classes: Vec<ClassProjection>,
    /// Per model (name as written), in name order.
    pub models: BTreeMap<String, ModelDay>,
    /// Projected cost per day (priced requests).
    pub per_day: Usd,
    /// Baseline (every request on the model it asks for) per day.
    pub baseline_per_day: Usd,
    /// Each TokenBudget selecting a workload, against its projected daily spend.
    pub budgets: Vec<UniformImpact>,
}

/// [`Features`] with every field optional (0 when left out); unknown
/// names are errors.
fn features_or_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Features>, D::Error> {
    use serde::de::Error as _;
    let given: Option<BTreeMap<String, u64>> = Option::deserialize(d)?;
    let Some(given) = given else {
        return Ok(None);
    };
    let mut all = match serde_json::to_value(Features::default()) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(D::Error::custom("features are not an object")),
    };
    for (k, v) in given {
        if !all.contains_key(&k) {
            let names: Vec<&String> = all.keys().collect();
            return Err(D::Error::custom(format!(
                "unknown feature {k:?}; features are {names:?}"
            )));
        }
        all.insert(k, v.into());
    }
    serde_json::from_value(serde_json::Value::Object(all))
        .map(Some)
        .map_err(D::Error::custom)
}

fn default_namespace() -> String {
    "default".into()
}

fn default_endpoint() -> Endpoint {
    Endpoint::Messages
}

// === impl MixTokens ===

impl MixTokens {
    /// As [`TokenCounts`].
    pub fn counts(&self) -> TokenCounts {
        TokenCounts {
            input_tokens: self.input,
            output_tokens: self.output,
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
            cache_write_1h_tokens: self.cache_write_1h,
        }
    }
}

// === impl Projection ===

impl Projection {
    /// Monthly (30 days) projected cost.
    pub fn per_month(&self) -> Usd {
        times(self.per_day, 30)
    }

    /// Monthly (30 days) baseline cost.
    pub fn baseline_per_month(&self) -> Usd {
        times(self.baseline_per_day, 30)
    }
}

/// `u × n`, saturating.
pub fn times(u: Usd, n: u64) -> Usd {
    Usd::from_picos(u.picos().saturating_mul(i128::from(n)))
}

/// Projects `mix`; `configs[i]` is the compiled config of `mix.workloads[i]`
/// (its namespace and labels against the RoutingPolicy and TokenBudgets).
pub fn project(
    mix: &TokenMix,
    configs: &[WorkloadConfig],
    prices: &Repricer,
) -> Result<Projection, MixError> {
    if mix.api_version != API_VERSION || mix.kind != KIND {
        return Err(MixError::NotAMix(mix.api_version.clone(), mix.kind.clone()));
    }
    let mut out = Projection {
        classes: Vec::new(),
        models: BTreeMap::new(),
        per_day: Usd::ZERO,
        baseline_per_day: Usd::ZERO,
        budgets: Vec::new(),
    };
    let mut per_budget: BTreeMap<ObjectRef, (Usd, u64)> = BTreeMap::new();
    for (w, cfg) in mix.workloads.iter().zip(configs) {
        let router = cfg.routing.clone().map(Router::new);
        let (mut spend, mut tokens) = (Usd::ZERO, 0u64);
        for (i, c) in w.classes.iter().enumerate() {
            let p = project_class(w, i, c, router.as_ref(), prices)?;
            let usage = c.tokens.counts();
            let n = c.requests_per_day;
            let day = out.models.entry(p.model.clone()).or_default();
            day.requests += n;
            add_usage(&mut day.tokens, &times_tokens(&usage, n));
            match p.cost_per_day {
                Some(cost) => {
                    day.cost += cost;
                    out.per_day += cost;
                    spend += cost;
                }
                None => day.unpriced += n,
            }
            tokens = tokens.saturating_add(usage.total_tokens().saturating_mul(n));
            let base = out.models.entry(p.requested_model.clone()).or_default();
            base.baseline_requests += n;
            match p.baseline_per_day {
                Some(cost) => {
                    base.baseline_cost += cost;
                    out.baseline_per_day += cost;
                }
                None => base.baseline_unpriced += n,
            }
            out.classes.push(p);
        }
        for b in &cfg.budgets {
            let e = per_budget.entry(b.source.clone()).or_default();
            e.0 += spend;
            e.1 = e.1.saturating_add(tokens);
        }
    }
    let mut seen = Vec::new();
    for b in configs.iter().flat_map(|c| &c.budgets) {
        if seen.contains(&&b.source) {
            continue;
        }
        seen.push(&b.source);
        let (spend, tokens) = per_budget.get(&b.source).copied().unwrap_or_default();
        out.budgets.push(uniform(b, spend, tokens));
    }
    Ok(out)
}

fn project_class(
    w: &MixWorkload,
    i: usize,
    c: &MixClass,
    router: Option<&Router>,
    prices: &Repricer,
) -> Result<ClassProjection, MixError> {
    let class = c.name.clone().unwrap_or_else(|| (i + 1).to_string());
    let requested = c.requested_model.as_deref().unwrap_or(&w.requested_model);
    let usage = c.tokens.counts();
    let needs_score = router.is_some_and(|r| {
        r.config()
            .routes
            .iter()
            .any(|x| x.matcher.complexity.is_some())
    });
    let score = match (&c.features, c.score, router) {
        (Some(f), _, Some(r)) => Some(classify_features(&r.config().classifier, f).score),
        (_, Some(s), _) if s > 100 => {
            return Err(MixError::BadScore {
                workload: w.name.clone(),
                class,
                score: s,
            });
        }
        (_, s, _) => s,
    };
    if needs_score && score.is_none() {
        return Err(MixError::NeedsScore {
            workload: w.name.clone(),
            class,
        });
    }
    let (route, model, hint) = match router {
        Some(r) => {
            let headers: Vec<(&str, &str)> = c
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let facts = RequestFacts {
                endpoint: w.endpoint,
                model: requested,
                headers: &headers,
                score: score.unwrap_or(0),
                prompt_tokens: c
                    .prompt_tokens_estimate
                    .unwrap_or(usage.total_input_tokens()),
                tools_present: c.tools_present,
            };
            let d = r.decide(&facts).map_err(|source| MixError::Route {
                workload: w.name.clone(),
                source,
            })?;
            let api = r.config().providers[d.choice.provider].api;
            (d.route, d.choice.model, api)
        }
        None => (None, requested.to_string(), w.endpoint.api()),
    };
    let base_hint = Some(w.endpoint.api().as_str());
    let n = c.requests_per_day;
    Ok(ClassProjection {
        workload: w.name.clone(),
        class,
        requests_per_day: n,
        score,
        requested_model: requested.to_string(),
        route,
        cost_per_day: prices
            .cost(Some(hint.as_str()), &model, &usage)
            .map(|u| times(u, n)),
        baseline_per_day: prices
            .cost(base_hint, requested, &usage)
            .map(|u| times(u, n)),
        model,
    })
}

fn times_tokens(t: &TokenCounts, n: u64) -> TokenCounts {
    TokenCounts {
        input_tokens: t.input_tokens.saturating_mul(n),
        output_tokens: t.output_tokens.saturating_mul(n),
        cache_read_tokens: t.cache_read_tokens.saturating_mul(n),
        cache_write_tokens: t.cache_write_tokens.saturating_mul(n),
        cache_write_1h_tokens: t.cache_write_1h_tokens.saturating_mul(n),
    }
}
