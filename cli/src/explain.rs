//! `kubectl tokenwarden explain-request`: why a request went where it went,
//! from the response headers the sidecar set (`x-tokenwarden-route`,
//! `x-tokenwarden-score`, `x-tokenwarden-model`; docs/sidecar.md "Headers
//! and errors") and the RoutingPolicy that applied, recompiled the way the
//! operator compiles it (`PolicySet` + `core::compile` for the workload's
//! namespace and labels): from `--policy FILE`, or the cluster's
//! RoutingPolicies in `-n NS` for `--workload W` / `--labels k=v,…`.
//!
//! Routes are tried in order and the first whose conditions all hold (and
//! whose target speaks the request's API) decides (core/src/route.rs). For
//! every route up to the one named, each condition is checked against what
//! is known about the request: the score (against the route's complexity
//! range, which `complexityClass` turns into `< hardThreshold` / `≥
//! hardThreshold` at compile time), and, when given, the requested model,
//! endpoint, prompt-token estimate, tools and headers. A condition whose
//! input was not given is "unknown"; an earlier route with no failed
//! condition then must have failed one of its unknown ones, and the output
//! says which. The chosen target (tier, provider, model) and where escalation
//! would go from it (`Router::escalate`) follow.

use std::{fmt::Write as _, path::PathBuf};

use serde::Serialize;
use tokenwarden_core::{
    route::{Choice, Router},
    selector::{Labels, parse_labels},
    workload::{Api, Endpoint, Range, Route, RoutingConfig, Target, WORKLOAD_NAME_LABELS},
};
use tokenwarden_crds::policy_file::PolicySet;

use crate::{Global, kube, output::Format};

/// The subcommand's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The route that matched (`x-tokenwarden-route`; `none`: passthrough).
    #[arg(long)]
    pub route: String,
    /// The classifier score (`x-tokenwarden-score`), 0..=100.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub score: Option<u16>,
    /// The model the request was sent to (`x-tokenwarden-model`).
    #[arg(long)]
    pub model: Option<String>,
    /// The model the app asked for (checks the routes' `models` globs).
    #[arg(long, value_name = "MODEL")]
    pub requested_model: Option<String>,
    /// The endpoint called: chatCompletions, responses, embeddings, messages.
    #[arg(long, value_parser = parse_endpoint)]
    pub endpoint: Option<Endpoint>,
    /// The prompt-token estimate (body bytes / 4) routes match `promptTokens` on.
    #[arg(long, value_name = "N")]
    pub prompt_tokens: Option<u64>,
    /// Whether the request defined tools.
    #[arg(long, value_name = "BOOL")]
    pub tools: Option<bool>,
    /// A request header routes match on, `name=value` (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// A RoutingPolicy YAML file (or directory) instead of the cluster's.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The workload: its pods carry `app.kubernetes.io/name=W`, `app=W` or
    /// `tokenwarden.dev/workload=W` (the first a policy selects is used; give
    /// `--labels` when the policy selects on other labels).
    #[arg(long, value_name = "W")]
    pub workload: Option<String>,
    /// The pod's labels, `k=v,k2=v2` (what the policies' workloadSelector sees).
    #[arg(long, value_name = "LABELS")]
    pub labels: Option<String>,
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    Endpoint::from_serde_name(s).ok_or_else(|| {
        format!("{s:?}: expected one of chatCompletions, responses, embeddings, messages")
    })
}

/// Runs the subcommand; returns what to print.
pub async fn run(g: &Global, a: &Args) -> anyhow::Result<String> {
    let candidates = label_candidates(a)?;
    let (set, namespace, origin) = match &a.policy {
        Some(path) => {
            let set = PolicySet::from_path(path)?;
            let ns = g
                .namespace
                .clone()
                .or_else(|| {
                    set.policies
                        .first()
                        .map(|p| p.routing.source.namespace.clone())
                })
                .unwrap_or_else(|| "default".into());
            (set, ns, path.display().to_string())
        }
        None => {
            anyhow::ensure!(
                !g.all_namespaces,
                "explain-request compiles one workload's policy: give -n NAMESPACE, not -A"
            );
            let cluster = kube::connect(g).await?;
            let set = cluster_policies(&cluster).await?;
            let ns = cluster.namespace.clone();
            (
                set,
                ns.clone(),
                format!("the cluster's RoutingPolicies in {ns}"),
            )
        }
    };
    let cfg = candidates
        .iter()
        .map(|labels| set.compile(&namespace, "", labels))
        .find(|cfg| cfg.routing.is_some());
    let Some((routing, cfg)) = cfg.and_then(|mut c| c.routing.take().map(|r| (r, c))) else {
        let tried: Vec<String> = candidates.iter().map(|l| format!("{l:?}")).collect();
        anyhow::bail!(
            "no RoutingPolicy in {origin} selects a pod in namespace {namespace} with labels \
             {}: give the pod's labels with --labels",
            tried.join(" or ")
        );
    };
    let mut e = explain(&routing, &Facts::from_args(a)?);
    if let Some(c) = &cfg.conflict {
        e.notes.push(format!(
            "policies {} also select this pod and do not apply",
            c.shadowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    match g.output {
        Format::Json => Ok(format!("{}\n", serde_json::to_string_pretty(&e)?)),
        Format::Table => Ok(e.to_text()),
        Format::Csv => anyhow::bail!("explain-request prints a table or json, not csv"),
    }
}

/// The label sets to compile for: `--labels`, else one per label a
/// workload takes its name from (`app.kubernetes.io/name`, `app`,
/// `tokenwarden.dev/workload`, core `WORKLOAD_NAME_LABELS`), in that order;
/// the first a policy selects is used.
fn label_candidates(a: &Args) -> anyhow::Result<Vec<Labels>> {
    if let Some(s) = &a.labels {
        return Ok(vec![
            parse_labels(s).map_err(|e| anyhow::anyhow!("--labels: {e}"))?,
        ]);
    }
    match &a.workload {
        Some(w) => Ok(WORKLOAD_NAME_LABELS
            .iter()
            .map(|k| Labels::from([((*k).to_string(), w.clone())]))
            .collect()),
        None if a.policy.is_some() => Ok(vec![Labels::new()]),
        None => anyhow::bail!(
            "say which workload: --workload W or --labels k=v,… (the labels its pods carry)"
        ),
    }
}

/// The RoutingPolicies of the cluster's namespace as a [`PolicySet`]
/// (status and server fields dropped; each validated as the webhook does).
pub async fn cluster_policies(cluster: &kube::Cluster) -> anyhow::Result<PolicySet> {
    let items = kube::list(cluster, "routingpolicies", "RoutingPolicy").await?;
    let docs: Vec<String> = items
        .iter()
        .map(|o| {
            let meta = &o["metadata"];
            serde_json::json!({
                "apiVersion": "tokenwarden.dev/v1alpha1",
                "kind": "RoutingPolicy",
                "metadata": {
                    "name": meta["name"], "namespace": meta["namespace"],
                    "generation": meta["generation"],
                },
                "spec": o["spec"],
            })
            .to_string()
        })
        .collect();
    Ok(PolicySet::from_yaml(
        "the cluster's RoutingPolicies",
        &docs.join("\n---\n"),
    )?)
}

/// What is known about the request.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `x-tokenwarden-route` (`none`: passthrough).
    pub route: String,
    /// `x-tokenwarden-score`.
    pub score: Option<u16>,
    /// `x-tokenwarden-model`.
    pub served_model: Option<String>,
    /// The model the app asked for.
    pub requested_model: Option<String>,
    /// The endpoint.
    pub endpoint: Option<Endpoint>,
    /// The prompt-token estimate.
    pub prompt_tokens: Option<u64>,
    /// Tools defined.
    pub tools: Option<bool>,
    /// Headers given (names lower-case); `None`: none given.
    pub headers: Option<Vec<(String, String)>>,
}

impl Facts {
    fn from_args(a: &Args) -> anyhow::Result<Facts> {
        let headers = a
            .headers
            .iter()
            .map(|h| {
                h.split_once('=')
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.to_string()))
                    .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected name=value"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Facts {
            route: a.route.clone(),
            score: a.score,
            served_model: a.model.clone(),
            requested_model: a.requested_model.clone(),
            endpoint: a.endpoint,
            prompt_tokens: a.prompt_tokens,
            tools: a.tools,
            headers: (!headers.is_empty()).then_some(headers),
        })
    }
}

/// The outcome of one condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// It holds for this request.
    Holds,
    /// It does not.
    Fails,
    /// Its input was not given.
    Unknown,
}

/// One condition of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The condition, as the policy states it.
    pub condition: String,
    /// Whether it holds.
    pub outcome: Outcome,
    /// Why.
    pub detail: String,
}

/// One route, as far as the request got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    /// Its name.
    pub name: String,
    /// Its target, e.g. `tier standard (anthropic/claude-sonnet-4-5)`.
    pub target: String,
    /// Its conditions.
    pub checks: Vec<Check>,
    /// `chosen`, `did not match`, `would have matched`, `not reached`.
    pub verdict: String,
}

/// The explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `namespace/name` of the RoutingPolicy.
    pub policy: String,
    /// Its hardThreshold.
    pub hard_threshold: u16,
    /// Where the score sits.
    pub score: String,
    /// Every route, in order.
    pub routes: Vec<RouteReport>,
    /// The chosen target.
    pub chosen: String,
    /// Where escalation would go from it.
    pub escalation: String,
    /// Anything that does not add up, and other remarks.
    pub notes: Vec<String>,
}

fn range_text(r: &Range) -> String {
    match (r.min, r.max) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "any".into(),
    }
}

fn check(condition: String, known: Option<bool>, detail: String, unknown: &str) -> Check {
    let (outcome, detail) = match known {
        Some(true) => (Outcome::Holds, detail),
        Some(false) => (Outcome::Fails, detail),
        None => (Outcome::Unknown, unknown.to_string()),
    };
    Check {
        condition,
        outcome,
        detail,
    }
}

fn glob_any(globs: &[String], v: &str) -> bool {
    globs
        .iter()
        .any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(v)))
}

/// Every condition of `route`, checked against `f`.
fn checks(route: &Route, cfg: &RoutingConfig, f: &Facts, api: Option<Api>) -> Vec<Check> {
    let m = &route.matcher;
    let mut out = Vec::new();
    if !m.endpoints.is_empty() {
        let names: Vec<&str> = m.endpoints.iter().map(|e| e.serde_name()).collect();
        let cond = format!("apis [{}]", names.join(", "));
        let c = match (f.endpoint, api) {
            (Some(e), _) => check(
                cond,
                Some(m.endpoints.contains(&e)),
                format!("endpoint {}", e.serde_name()),
                "",
            ),
            // Only the API is known (from the chosen target: requests are
            // never translated): enough when no listed endpoint has it, or
            // every endpoint of it is listed.
            (None, Some(a)) => {
                let of_api: Vec<Endpoint> =
                    Endpoint::ALL.into_iter().filter(|e| e.api() == a).collect();
                let known = if !m.endpoints.iter().any(|e| e.api() == a) {
                    Some(false)
                } else if of_api.iter().all(|e| m.endpoints.contains(e)) {
                    Some(true)
                } else {
                    None
                };
                check(
                    cond,
                    known,
                    format!(
                        "the request spoke the {} API (the chosen target's)",
                        a.as_str()
                    ),
                    "endpoint not given (--endpoint)",
                )
            }
            (None, None) => check(cond, None, String::new(), "endpoint not given (--endpoint)"),
        };
        out.push(c);
    }
    if !m.models.is_empty() {
        let cond = format!("models [{}]", m.models.join(", "));
        let known = f.requested_model.as_deref().map(|r| glob_any(&m.models, r));
        let detail = format!("requested {}", f.requested_model.as_deref().unwrap_or(""));
        out.push(check(
            cond,
            known,
            detail,
            "requested model not given (--requested-model)",
        ));
    }
    for h in &m.headers {
        let cond = format!("header {}: {}", h.name, h.value);
        let known = f.headers.as_ref().map(|hs| {
            hs.iter().any(|(n, v)| {
                *n == h.name && glob::Pattern::new(&h.value).is_ok_and(|p| p.matches(v))
            })
        });
        out.push(check(
            cond,
            known,
            "from --header".into(),
            "headers not given (--header)",
        ));
    }
    if let Some(r) = &m.complexity {
        let t = cfg.classifier.hard_threshold;
        let class = match (r.min, r.max) {
            (Some(min), None) if min == u64::from(t) => " (complexityClass Hard)",
            (None, Some(max)) if max + 1 == u64::from(t) => " (complexityClass Easy)",
            _ => "",
        };
        let cond = format!("complexity {}{class}", range_text(r));
        let known = f.score.map(|s| r.contains(u64::from(s)));
        let detail = match (f.score, known) {
            (Some(s), Some(true)) => format!("score {s} is in range"),
            (Some(s), _) if r.min.is_some_and(|m| u64::from(s) < m) => {
                format!("score {s} is below {}", r.min.unwrap_or_default())
            }
            (Some(s), _) => format!("score {s} is above {}", r.max.unwrap_or_default()),
            (None, _) => String::new(),
        };
        out.push(check(
            cond,
            known,
            detail,
            "no score (--score; x-tokenwarden-score)",
        ));
    }
    if let Some(r) = &m.prompt_tokens {
        let cond = format!("promptTokens {}", range_text(r));
        let known = f.prompt_tokens.map(|p| r.contains(p));
        let detail = format!("estimate {}", f.prompt_tokens.unwrap_or_default());
        out.push(check(
            cond,
            known,
            detail,
            "prompt estimate not given (--prompt-tokens)",
        ));
    }
    if let Some(t) = m.tools_present {
        let known = f.tools.map(|x| x == t);
        let detail = format!("tools {}", f.tools.unwrap_or_default());
        out.push(check(
            format!("toolsPresent {t}"),
            known,
            detail,
            "not given (--tools)",
        ));
    }
    out
}

fn target_text(t: &Target, cfg: &RoutingConfig) -> String {
    match t {
        Target::Tier(name) => match cfg.tiers.iter().find(|x| &x.name == name) {
            Some(x) => format!("tier {name} ({}/{})", x.provider, x.model),
            None => format!("tier {name} (not defined)"),
        },
        Target::Model { provider, model } => format!("{provider}/{model}"),
        Target::Passthrough => "passthrough (the requested model)".into(),
    }
}

/// The choice a target resolves to (`requested`: the model for passthrough).
fn resolve(t: &Target, cfg: &RoutingConfig, f: &Facts) -> Option<Choice> {
    let pos = |name: &str| cfg.providers.iter().position(|p| p.name == name);
    let tier_of = |p: usize, model: &str| {
        cfg.tiers
            .iter()
            .position(|t| t.provider == cfg.providers[p].name && t.model == model)
    };
    match t {
        Target::Tier(name) => {
            let i = cfg.tier_index(name)?;
            let tier = &cfg.tiers[i];
            Some(Choice {
                provider: pos(&tier.provider)?,
                model: tier.model.clone(),
                tier: Some(i),
            })
        }
        Target::Model { provider, model } => {
            let p = pos(provider)?;
            Some(Choice {
                provider: p,
                model: model.clone(),
                tier: tier_of(p, model),
            })
        }
        Target::Passthrough => {
            let model = f.requested_model.as_deref().or(f.served_model.as_deref())?;
            // The first provider speaking the request's API.
            let api = f.endpoint.map(Endpoint::api);
            let p = cfg
                .providers
                .iter()
                .position(|p| api.is_none_or(|a| p.api == a))?;
            Some(Choice {
                provider: p,
                model: model.to_string(),
                tier: tier_of(p, model),
            })
        }
    }
}

/// Explain a request under `cfg`.
pub fn explain(cfg: &RoutingConfig, f: &Facts) -> Explanation {
    let t = cfg.classifier.hard_threshold;
    let score = match f.score {
        Some(s) if s >= t => format!("{s}: hard (>= hardThreshold {t})"),
        Some(s) => format!("{s}: easy (< hardThreshold {t})"),
        None => format!("not given (hardThreshold {t})"),
    };
    let passthrough = matches!(f.route.as_str(), "none" | "");
    let chosen_at = cfg.routes.iter().position(|r| r.name == f.route);
    let mut notes = Vec::new();
    if chosen_at.is_none() && !passthrough {
        let names: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
        notes.push(format!(
            "the policy has no route {:?} (routes: {}): it changed since the request",
            f.route,
            names.join(", ")
        ));
    }
    let target = match chosen_at {
        Some(c) => cfg.routes[c].target.clone(),
        None => Target::Passthrough,
    };
    let choice = resolve(&target, cfg, f);
    let api = f
        .endpoint
        .map(Endpoint::api)
        .or_else(|| match (&target, &choice) {
            (Target::Passthrough, _) | (_, None) => None,
            (_, Some(c)) => Some(cfg.providers[c.provider].api),
        });
    let routes = cfg
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route_report(cfg, f, api, r, chosen_at.map(|c| i.cmp(&c)), &mut notes))
        .collect();
    let chosen = describe_choice(&target, choice.as_ref(), cfg, passthrough);
    let escalation = escalation(cfg, choice.as_ref());
    served_note(cfg, f, choice.as_ref(), &mut notes);
    Explanation {
        policy: cfg.source.to_string(),
        hard_threshold: t,
        score,
        routes,
        chosen,
        escalation,
        notes,
    }
}

/// One route's checks and verdict; `order`: where it sits against the
/// chosen route (`None`: no route was chosen).
fn route_report(
    cfg: &RoutingConfig,
    f: &Facts,
    api: Option<Api>,
    r: &Route,
    order: Option<std::cmp::Ordering>,
    notes: &mut Vec<String>,
) -> RouteReport {
    use std::cmp::Ordering;
    let mut checks = checks(r, cfg, f, api);
    let fails = checks.iter().any(|c| c.outcome == Outcome::Fails);
    let unknown: Vec<&str> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Unknown)
        .map(|c| c.condition.as_str())
        .collect();
    // A route whose target speaks another API is skipped even when it matches.
    let target_api = resolve(&r.target, cfg, f).map(|c| cfg.providers[c.provider].api);
    let other_api = match (api, target_api) {
        (Some(a), Some(t)) if a != t && r.target != Target::Passthrough => Some((a, t)),
        _ => None,
    };
    let verdict = match order {
        Some(Ordering::Equal) if fails => {
            notes.push(format!(
                "route {} was chosen, but a condition fails for the facts given: the policy \
                 changed since the request, or a fact is wrong",
                r.name
            ));
            "chosen (a condition fails now)".to_string()
        }
        Some(Ordering::Equal) => {
            for c in &mut checks {
                if c.outcome == Outcome::Unknown {
                    c.detail = format!("held: the route was chosen ({})", c.detail);
                }
            }
            "chosen".to_string()
        }
        Some(Ordering::Greater) => "not reached".to_string(),
        _ if fails => "did not match".to_string(),
        _ => match other_api {
            Some((a, t)) => format!(
                "skipped: its target speaks the {} API, the request the {} API (never translated)",
                t.as_str(),
                a.as_str()
            ),
            None if !unknown.is_empty() => {
                format!(
                    "did not match, so one of these failed: {}",
                    unknown.join("; ")
                )
            }
            None => {
                notes.push(format!(
                    "route {} matches the facts given and comes first: the policy changed \
                     since the request, or a fact is wrong",
                    r.name
                ));
                "would have matched".to_string()
            }
        },
    };
    RouteReport {
        name: r.name.clone(),
        target: target_text(&r.target, cfg),
        checks,
        verdict,
    }
}

fn describe_choice(t: &Target, c: Option<&Choice>, cfg: &RoutingConfig, none: bool) -> String {
    let prefix = if none {
        "no route matched: passthrough, "
    } else {
        ""
    };
    match c {
        Some(c) => {
            let p = &cfg.providers[c.provider];
            let tier = c
                .tier
                .map(|i| {
                    format!(
                        " (tier {} of {}: {})",
                        i + 1,
                        cfg.tiers.len(),
                        cfg.tiers[i].name
                    )
                })
                .unwrap_or_default();
            format!(
                "{prefix}{}/{}{tier}, {} API",
                p.name,
                c.model,
                p.api.as_str()
            )
        }
        None => format!("{prefix}{}", target_text(t, cfg)),
    }
}

fn escalation(cfg: &RoutingConfig, c: Option<&Choice>) -> String {
    let Some(c) = c else {
        return "unknown (the target does not resolve; give --requested-model for passthrough)"
            .into();
    };
    let e = &cfg.escalation;
    let triggers: Vec<&str> = [
        (e.on_upstream_error, "upstream error"),
        (e.repeated_prompt.is_some(), "repeated prompt"),
        (e.on_truncation, "truncation"),
        (e.on_empty_answer, "empty answer"),
        (e.on_refusal, "refusal"),
        (e.on_invalid_tool_call, "invalid tool call"),
        (e.on_invalid_response_format, "invalid response format"),
        (e.on_app_signal, "x-tokenwarden-escalate: 1"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let api = cfg.providers[c.provider].api;
    match Router::new(cfg.clone()).escalate(c, api) {
        Some(up) => format!(
            "one tier up to {} ({}/{}) on: {}",
            up.tier.map_or("", |i| cfg.tiers[i].name.as_str()),
            cfg.providers[up.provider].name,
            up.model,
            if triggers.is_empty() {
                "nothing (every trigger is off)".into()
            } else {
                triggers.join(", ")
            }
        ),
        None if c.tier.is_none() => "none: the target is not on the tier ladder".into(),
        None => "none: already at the top of the ladder (for this API)".into(),
    }
}

fn served_note(cfg: &RoutingConfig, f: &Facts, c: Option<&Choice>, notes: &mut Vec<String>) {
    let (Some(served), Some(c)) = (f.served_model.as_deref(), c) else {
        return;
    };
    if served == c.model {
        return;
    }
    let tier = cfg.tiers.iter().position(|t| t.model == served);
    let how = match (tier, c.tier) {
        (Some(s), Some(ct)) if s > ct => format!(
            "tier {} is above the route's: escalated (see x-tokenwarden-adjusted and \
             x-tokenwarden-escalation-reason)",
            cfg.tiers[s].name
        ),
        (Some(s), Some(ct)) if s < ct => format!(
            "tier {} is below the route's: downgraded by a budget threshold (see \
             x-tokenwarden-adjusted)",
            cfg.tiers[s].name
        ),
        _ => "adjusted after routing (escalation, a budget downgrade or a fallback: see \
              x-tokenwarden-adjusted)"
            .into(),
    };
    notes.push(format!(
        "served by {served}, not the route's {}: {how}",
        c.model
    ));
}

impl Explanation {
    /// For people.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "RoutingPolicy {}", self.policy);
        let _ = writeln!(s, "Score {}", self.score);
        let _ = writeln!(s, "Routes (the first whose conditions all hold decides):");
        for (i, r) in self.routes.iter().enumerate() {
            let _ = writeln!(s, "  {}. {} -> {}: {}", i + 1, r.name, r.target, r.verdict);
            if r.verdict == "not reached" {
                continue;
            }
            for c in &r.checks {
                let mark = match c.outcome {
                    Outcome::Holds => "holds",
                    Outcome::Fails => "FAILS",
                    Outcome::Unknown => "unknown",
                };
                let _ = writeln!(s, "       {:<7}  {}: {}", mark, c.condition, c.detail);
            }
            if r.checks.is_empty() {
                let _ = writeln!(s, "       holds    (no conditions: matches every request)");
            }
        }
        let _ = writeln!(s, "Chosen: {}", self.chosen);
        let _ = writeln!(s, "Escalation: {}", self.escalation);
        for n in &self.notes {
            let _ = writeln!(s, "Note: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// deploy/examples/01-coding-agent-routing.yaml (hardThreshold 30)
    /// compiled for a pod labelled app=coding-agent.
    fn example() -> RoutingConfig {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/01-coding-agent-routing.yaml"
        );
        let set = PolicySet::from_path(std::path::Path::new(path)).unwrap();
        let labels = parse_labels("app=coding-agent").unwrap();
        set.compile("agents", "", &labels).routing.unwrap()
    }

    fn facts(route: &str, score: u16, served: &str) -> Facts {
        Facts {
            route: route.into(),
            score: Some(score),
            served_model: Some(served.into()),
            ..Facts::default()
        }
    }

    #[test]
    fn a_hard_request_escalated_to_the_top_tier() {
        let e = explain(&example(), &facts("hard", 42, "claude-opus-4-1"));
        assert_eq!(
            e.to_text(),
            "\
RoutingPolicy agents/coding-agent
Score 42: hard (>= hardThreshold 30)
Routes (the first whose conditions all hold decides):
  1. embeddings -> passthrough (the requested model): did not match
       FAILS    apis [embeddings]: the request spoke the anthropic API (the chosen target's)
  2. openai-easy -> openai/gpt-5-mini: did not match
       FAILS    apis [chatCompletions, responses]: the request spoke the anthropic API (the chosen target's)
       unknown  models [gpt-5*, gpt-4.1*, o3*]: requested model not given (--requested-model)
       FAILS    complexity <= 29 (complexityClass Easy): score 42 is above 29
  3. openai-hard -> openai/gpt-5: did not match
       FAILS    apis [chatCompletions, responses]: the request spoke the anthropic API (the chosen target's)
       holds    complexity >= 30 (complexityClass Hard): score 42 is in range
  4. long-tool-context -> tier standard (anthropic/claude-sonnet-4-5): did not match, so one of these failed: promptTokens >= 60000; toolsPresent true
       holds    apis [messages]: the request spoke the anthropic API (the chosen target's)
       unknown  promptTokens >= 60000: prompt estimate not given (--prompt-tokens)
       unknown  toolsPresent true: not given (--tools)
  5. hard -> tier standard (anthropic/claude-sonnet-4-5): chosen
       holds    apis [messages]: the request spoke the anthropic API (the chosen target's)
       holds    complexity >= 30 (complexityClass Hard): score 42 is in range
  6. default -> tier cheap (anthropic/claude-haiku-4-5): not reached
Chosen: anthropic/claude-sonnet-4-5 (tier 2 of 3: standard), anthropic API
Escalation: one tier up to frontier (anthropic/claude-opus-4-1) on: upstream error, repeated prompt, truncation, empty answer, refusal, invalid tool call, invalid response format, x-tokenwarden-escalate: 1
Note: served by claude-opus-4-1, not the route's claude-sonnet-4-5: tier frontier is above the route's: escalated (see x-tokenwarden-adjusted and x-tokenwarden-escalation-reason)
"
        );
    }

    #[test]
    fn given_facts_settle_the_unknown_conditions() {
        let mut f = facts("default", 12, "claude-haiku-4-5");
        f.endpoint = Some(Endpoint::Messages);
        f.tools = Some(true);
        f.prompt_tokens = Some(59_999);
        let e = explain(&example(), &f);
        let long = &e.routes[3];
        assert_eq!(long.verdict, "did not match");
        assert_eq!(long.checks[1].outcome, Outcome::Fails);
        assert_eq!(long.checks[1].detail, "estimate 59999");
        assert_eq!(long.checks[2].outcome, Outcome::Holds);
        assert_eq!(e.routes[4].checks[1].detail, "score 12 is below 30");
        assert_eq!(e.routes[5].verdict, "chosen");
        assert_eq!(e.score, "12: easy (< hardThreshold 30)");
        assert!(e.notes.is_empty(), "{:?}", e.notes);
        // One more prompt token and the long-context route would have matched first.
        f.prompt_tokens = Some(60_000);
        let e = explain(&example(), &f);
        assert_eq!(e.routes[3].verdict, "would have matched");
        assert_eq!(
            e.notes,
            [
                "route long-tool-context matches the facts given and comes first: the policy \
              changed since the request, or a fact is wrong"
            ]
        );
    }

    #[test]
    fn an_openai_request_skips_routes_of_the_other_api() {
        let mut f = facts("openai-hard", 80, "gpt-5");
        f.requested_model = Some("gpt-5".into());
        let e = explain(&example(), &f);
        assert_eq!(
            e.routes[1].checks[1].outcome,
            Outcome::Holds,
            "gpt-5* matches"
        );
        assert_eq!(e.routes[1].verdict, "did not match");
        assert_eq!(e.chosen, "openai/gpt-5, openai API");
        assert_eq!(e.escalation, "none: the target is not on the tier ladder");
    }

    #[test]
    fn passthrough_and_unknown_routes() {
        let mut f = facts("none", 5, "text-embedding-3-small");
        f.endpoint = Some(Endpoint::Embeddings);
        let e = explain(&example(), &f);
        // The embeddings route passes through; "none" means no route matched,
        // which these facts contradict.
        assert_eq!(e.routes[0].verdict, "would have matched");
        assert_eq!(
            e.chosen,
            "no route matched: passthrough, openai/text-embedding-3-small, openai API"
        );
        let e = explain(&example(), &facts("gone", 5, "claude-haiku-4-5"));
        assert_eq!(
            e.notes[0],
            "the policy has no route \"gone\" (routes: embeddings, openai-easy, openai-hard, \
             long-tool-context, hard, default): it changed since the request"
        );
    }

    #[test]
    fn a_workload_name_is_tried_as_each_workload_label() {
        let a = Args {
            route: "x".into(),
            score: None,
            model: None,
            requested_model: None,
            endpoint: None,
            prompt_tokens: None,
            tools: None,
            headers: vec![],
            policy: None,
            workload: Some("coder".into()),
            labels: None,
        };
        assert_eq!(
            label_candidates(&a).unwrap(),
            [
                parse_labels("app.kubernetes.io/name=coder").unwrap(),
                parse_labels("app=coder").unwrap(),
                parse_labels("tokenwarden.dev/workload=coder").unwrap(),
            ]
        );
        let none = Args {
            workload: None,
            ..a
        };
        assert!(label_candidates(&none).is_err());
    }
}
