//! API objects → the core compiler's inputs, validating on the way.
//!
//! Arrows point into core: core knows nothing of these types. Each
//! conversion checks every rule the schema and the CEL rules state (so that
//! standalone mode, which has no apiserver, rejects what a cluster would) plus
//! the rules only Rust can check (time zones, globs, known classifier
//! features), and reports every problem with its field path.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sSelector;
use kube::ResourceExt;
use tokenwarden_core::{
    catalog::{ModelPrices, Price, PriceOverride},
    classify::ClassifierConfig,
    compile::{BudgetInput, PolicyInput},
    money::{PricePerMtok, Usd},
    period::{self, Period},
    selector::{LabelSelector, Operator, Requirement},
    workload::{
        Api, BudgetConfig, DEFAULT_MAX_OUTPUT_TOKENS, DowngradeTarget, Endpoint, Escalation,
        FailMode, Fallback, HeaderMatch, LoopGuard, ObjectRef, Provider, Range, RepeatRule, Route,
        RouteMatch, RoutingConfig, SecretRef, Target, Threshold, ThresholdAction, Tier,
    },
};

use crate::{
    routing_policy::{
        ComplexityClass, ProviderApi, RequestApi, RouteMatchSpec, RouteTargetSpec, RoutingPolicy,
    },
    token_budget::{self, BudgetPeriod, ThresholdActionKind, TokenBudget},
    validate::{Errors, ValidationErrors},
};

/// Namespace assumed for objects that state none (as kubectl does).
pub const DEFAULT_NAMESPACE: &str = "default";
/// Longest duration accepted for windows, cool-downs and timeouts.
const MAX_WINDOW_MS: u64 = 24 * 3600 * 1000;
/// Longest per-try timeout.
const MAX_TRY_TIMEOUT_MS: u64 = 3600 * 1000;
/// Default loop-guard cool-down.
const DEFAULT_COOLDOWN_MS: u64 = 5 * 60 * 1000;

// === impl RoutingPolicy ===

impl RoutingPolicy {
    /// Check the object; `Ok` means the operator and sidecars accept it.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.to_input().map(|_| ())
    }

    /// Validate and convert into the compiler's input.
    pub fn to_input(&self) -> Result<PolicyInput, ValidationErrors> {
        let mut e = Errors::default();
        let source = object_ref(self, &mut e);
        let spec = &self.spec;
        let selector = selector(
            &mut e,
            "spec.workloadSelector",
            spec.workload_selector.as_ref(),
        );
        if !(-1000..=1000).contains(&spec.priority) {
            e.push("spec.priority", "must be between -1000 and 1000");
        }

        // Providers.
        if spec.providers.is_empty() {
            e.push("spec.providers", "at least one provider is required");
        }
        e.max_items("spec.providers", &spec.providers, 16);
        e.unique(
            "spec.providers",
            "name",
            spec.providers.iter().map(|p| p.name.as_str()),
        );
        let providers: Vec<Provider> = spec
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let path = format!("spec.providers[{i}]");
                e.dns_label(&format!("{path}.name"), &p.name);
                check_base_url(&mut e, &format!("{path}.baseUrl"), &p.base_url);
                secret_ref(
                    &mut e,
                    &format!("{path}.apiKeySecretRef"),
                    &p.api_key_secret_ref,
                );
                e.max_items(&format!("{path}.prices"), &p.prices, 64);
                e.unique(
                    &format!("{path}.prices"),
                    "model",
                    p.prices.iter().map(|x| x.model.as_str()),
                );
                let prices = p
                    .prices
                    .iter()
                    .enumerate()
                    .filter_map(|(j, o)| {
                        let pp = format!("{path}.prices[{j}]");
                        e.length(&format!("{pp}.model"), &o.model, 1, 256);
                        let input =
                            price(&mut e, &format!("{pp}.inputPerMTok"), &o.input_per_m_tok);
                        let output =
                            price(&mut e, &format!("{pp}.outputPerMTok"), &o.output_per_m_tok);
                        let cache_read = o
                            .cache_read_per_m_tok
                            .as_deref()
                            .map(|s| price(&mut e, &format!("{pp}.cacheReadPerMTok"), s));
                        let cache_write = o
                            .cache_write_per_m_tok
                            .as_deref()
                            .map(|s| price(&mut e, &format!("{pp}.cacheWritePerMTok"), s));
                        Some(PriceOverride {
                            model: o.model.clone(),
                            prices: ModelPrices {
                                input: Price::Flat(input?),
                                output: Some(Price::Flat(output?)),
                                cache_read: match cache_read {
                                    Some(p) => Some(Price::Flat(p?)),
                                    None => None,
                                },
                                cache_write: match cache_write {
                                    Some(p) => Some(Price::Flat(p?)),
                                    None => None,
                                },
                            },
                        })
                    })
                    .collect();
                Provider {
                    name: p.name.clone(),
                    api: match p.api {
                        ProviderApi::Openai => Api::OpenAi,
                        ProviderApi::Anthropic => Api::Anthropic,
                    },
                    base_url: p.base_url.trim_end_matches('/').to_string(),
                    api_key: SecretRef {
                        name: p.api_key_secret_ref.name.clone(),
                        key: p.api_key_secret_ref.key.clone(),
                    },
                    prices,
                }
            })
            .collect();
        let provider_names: Vec<&str> = spec.providers.iter().map(|p| p.name.as_str()).collect();
        let known_provider = |n: &str| provider_names.contains(&n);

        // Tiers.
        e.max_items("spec.tiers", &spec.tiers, 8);
        e.unique(
            "spec.tiers",
            "name",
            spec.tiers.iter().map(|t| t.name.as_str()),
        );
        let tiers: Vec<Tier> = spec
            .tiers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let path = format!("spec.tiers[{i}]");
                e.dns_label(&format!("{path}.name"), &t.name);
                if !known_provider(&t.provider) {
                    e.push(
                        format!("{path}.provider"),
                        format!(
                            "provider {:?} is not defined in spec.providers (have: {})",
                            t.provider,
                            provider_names.join(", ")
                        ),
                    );
                }
                e.length(&format!("{path}.model"), &t.model, 1, 256);
                Tier {
                    name: t.name.clone(),
                    provider: t.provider.clone(),
                    model: t.model.clone(),
                }
            })
            .collect();
        let tier_names: Vec<&str> = spec.tiers.iter().map(|t| t.name.as_str()).collect();

        // Classifier (before routes: `complexityClass` needs its threshold).
        let classifier = classifier(&mut e, spec.classifier.as_ref());

        // Routes.
        e.max_items("spec.routes", &spec.routes, 64);
        e.unique(
            "spec.routes",
            "name",
            spec.routes.iter().map(|r| r.name.as_str()),
        );
        let routes: Vec<Route> = spec
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let path = format!("spec.routes[{i}]");
                e.dns_label(&format!("{path}.name"), &r.name);
                let matcher = route_match(
                    &mut e,
                    &format!("{path}.match"),
                    r.matches.as_ref(),
                    classifier.hard_threshold,
                );
                let target = target(
                    &mut e,
                    &format!("{path}.target"),
                    &r.target,
                    &tier_names,
                    &provider_names,
                );
                Route {
                    name: r.name.clone(),
                    matcher,
                    target,
                }
            })
            .collect();

        // Escalation.
        let esc = spec.escalation.clone().unwrap_or_default();
        let repeated_prompt = esc.repeated_prompt.as_ref().and_then(|rp| {
            if !(2..=100).contains(&rp.count) {
                e.push(
                    "spec.escalation.repeatedPrompt.count",
                    "must be between 2 and 100",
                );
            }
            let window = duration(
                &mut e,
                "spec.escalation.repeatedPrompt.window",
                &rp.window,
                MAX_WINDOW_MS,
            );
            Some(RepeatRule {
                count: rp.count,
                window_ms: window?,
            })
        });
        let escalation = Escalation {
            on_upstream_error: esc.on_upstream_error.unwrap_or(true),
            repeated_prompt,
        };

        // Fallback.
        let fb = spec.fallback.clone().unwrap_or_default();
        let defaults = Fallback::default();
        let per_try_timeout_ms = fb
            .per_try_timeout
            .as_deref()
            .and_then(|s| duration(&mut e, "spec.fallback.perTryTimeout", s, MAX_TRY_TIMEOUT_MS))
            .unwrap_or(defaults.per_try_timeout_ms);
        let max_attempts = fb.max_attempts.unwrap_or(defaults.max_attempts);
        if !(1..=5).contains(&max_attempts) {
            e.push("spec.fallback.maxAttempts", "must be between 1 and 5");
        }
        let fallback = Fallback {
            on_rate_limit: fb.on_rate_limit.unwrap_or(defaults.on_rate_limit),
            on_server_error: fb.on_server_error.unwrap_or(defaults.on_server_error),
            on_connect_error: fb.on_connect_error.unwrap_or(defaults.on_connect_error),
            on_timeout: fb.on_timeout.unwrap_or(defaults.on_timeout),
            per_try_timeout_ms,
            max_attempts,
        };

        let default_max_output_tokens = spec
            .default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        if !(1..=1_000_000).contains(&default_max_output_tokens) {
            e.push(
                "spec.defaultMaxOutputTokens",
                "must be between 1 and 1000000",
            );
        }

        let object = format!("RoutingPolicy {source}");
        let input = PolicyInput {
            selector,
            priority: spec.priority,
            routing: RoutingConfig {
                source,
                generation: self.metadata.generation.unwrap_or(0),
                providers,
                tiers,
                routes,
                escalation,
                fallback,
                classifier,
                default_max_output_tokens,
                unseen_input_tokens: spec.unseen_input_tokens,
            },
        };
        e.finish(object, input)
    }
}

// === impl TokenBudget ===

impl TokenBudget {
    /// Check the object; `Ok` means the operator and sidecars accept it.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        self.to_input().map(|_| ())
    }

    /// Validate and convert into the compiler's input.
    pub fn to_input(&self) -> Result<BudgetInput, ValidationErrors> {
        let mut e = Errors::default();
        let source = object_ref(self, &mut e);
        let spec = &self.spec;
        let selector = selector(
            &mut e,
            "spec.workloadSelector",
            spec.workload_selector.as_ref(),
        );

        let time_zone = spec.time_zone.clone().unwrap_or_else(|| "UTC".to_string());
        if let Err(err) = period::time_zone(&time_zone) {
            e.push("spec.timeZone", err.to_string());
        }

        let limit_usd = spec
            .limit
            .usd
            .as_deref()
            .and_then(|s| usd(&mut e, "spec.limit.usd", s));
        let limit_tokens = match spec.limit.tokens {
            Some(t) if !(1..=1_000_000_000_000).contains(&t) => {
                e.push("spec.limit.tokens", "must be between 1 and 1000000000000");
                None
            }
            Some(t) => u64::try_from(t).ok(),
            None => None,
        };
        if spec.limit.usd.is_none() && spec.limit.tokens.is_none() {
            e.push("spec.limit", "limit needs at least one of usd or tokens");
        }

        e.max_items("spec.thresholds", &spec.thresholds, 10);
        let mut thresholds = Vec::new();
        let mut last: Option<u8> = None;
        for (i, t) in spec.thresholds.iter().enumerate() {
            let path = format!("spec.thresholds[{i}]");
            if !(1..=100).contains(&t.percent) {
                e.push(format!("{path}.percent"), "must be between 1 and 100");
            }
            if let Some(prev) = last
                && t.percent <= prev
            {
                e.push(
                    format!("{path}.percent"),
                    format!(
                        "thresholds must be strictly ascending by percent: {} follows {prev}",
                        t.percent
                    ),
                );
            }
            last = Some(t.percent);
            let action = match (t.action, &t.downgrade_to) {
                (ThresholdActionKind::Alert, None) => Some(ThresholdAction::Alert),
                (ThresholdActionKind::Block, None) => Some(ThresholdAction::Block),
                (ThresholdActionKind::Downgrade, Some(d)) => {
                    downgrade(&mut e, &format!("{path}.downgradeTo"), d)
                        .map(ThresholdAction::Downgrade)
                }
                (ThresholdActionKind::Downgrade, None) => {
                    e.push(
                        format!("{path}.downgradeTo"),
                        "downgradeTo is required for action Downgrade",
                    );
                    None
                }
                (kind, Some(_)) => {
                    e.push(
                        format!("{path}.downgradeTo"),
                        format!("downgradeTo is only allowed for action Downgrade, not {kind:?}"),
                    );
                    None
                }
            };
            if let Some(action) = action {
                thresholds.push(Threshold {
                    percent: t.percent,
                    action,
                });
            }
        }

        let per_request_cap_usd = spec
            .per_request_max_usd
            .as_deref()
            .and_then(|s| usd(&mut e, "spec.perRequestMaxUsd", s));

        let loop_guard = spec.loop_guard.as_ref().and_then(|lg| {
            if !(2..=1000).contains(&lg.max_identical_requests) {
                e.push(
                    "spec.loopGuard.maxIdenticalRequests",
                    "must be between 2 and 1000",
                );
            }
            let window = duration(&mut e, "spec.loopGuard.window", &lg.window, MAX_WINDOW_MS);
            let cooldown = match lg.cooldown.as_deref() {
                Some(c) => duration(&mut e, "spec.loopGuard.cooldown", c, MAX_WINDOW_MS),
                None => Some(DEFAULT_COOLDOWN_MS),
            };
            Some(LoopGuard {
                max_identical: lg.max_identical_requests,
                window_ms: window?,
                cooldown_ms: cooldown?,
            })
        });

        let object = format!("TokenBudget {source}");
        let input = BudgetInput {
            selector,
            budget: BudgetConfig {
                source,
                generation: self.metadata.generation.unwrap_or(0),
                period: match spec.period {
                    BudgetPeriod::Hourly => Period::Hourly,
                    BudgetPeriod::Daily => Period::Daily,
                    BudgetPeriod::Weekly => Period::Weekly,
                    BudgetPeriod::Monthly => Period::Monthly,
                },
                time_zone,
                limit_usd,
                limit_tokens,
                thresholds,
                per_request_cap_usd,
                loop_guard,
                fail_mode: match spec.fail_mode.unwrap_or(token_budget::FailMode::Closed) {
                    token_budget::FailMode::Closed => FailMode::Closed,
                    token_budget::FailMode::Open => FailMode::Open,
                },
                shadow: spec.shadow.unwrap_or(false),
            },
        };
        e.finish(object, input)
    }
}

// === helpers ===

fn object_ref<K: ResourceExt>(obj: &K, e: &mut Errors) -> ObjectRef {
    let name = obj.meta().name.clone().unwrap_or_default();
    if name.is_empty() {
        e.push("metadata.name", "is required");
    } else if name.len() > 253
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        e.push(
            "metadata.name",
            format!("{name:?} is not a valid DNS subdomain name"),
        );
    }
    let namespace = obj
        .namespace()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    ObjectRef { namespace, name }
}

fn secret_ref(e: &mut Errors, path: &str, s: &crate::common::SecretKeyRef) {
    e.length(&format!("{path}.name"), &s.name, 1, 253);
    if e.length(&format!("{path}.key"), &s.key, 1, 253)
        && !s
            .key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        e.push(
            format!("{path}.key"),
            "a Secret key consists of letters, digits, '-', '_' and '.'",
        );
    }
}

fn check_base_url(e: &mut Errors, path: &str, url: &str) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        None => e.push(path, format!("{url:?} must start with https:// or http://")),
        Some(rest) => {
            let host = rest.split('/').next().unwrap_or_default();
            if host.is_empty()
                || rest.contains(char::is_whitespace)
                || rest.contains(['?', '#'])
                || url.len() > 2048
            {
                e.push(
                    path,
                    format!("{url:?} is not a base URL: scheme and host, optional path, no query"),
                );
            }
        }
    }
}

fn price(e: &mut Errors, path: &str, s: &str) -> Option<PricePerMtok> {
    match s.parse::<PricePerMtok>() {
        Ok(p) => Some(p),
        Err(err) => {
            e.push(path, format!("{err}"));
            None
        }
    }
}

fn usd(e: &mut Errors, path: &str, s: &str) -> Option<Usd> {
    let valid_shape = s
        .split_once('.')
        .map_or(s.len() <= 9, |(i, f)| i.len() <= 9 && f.len() <= 6);
    match s.parse::<Usd>() {
        Ok(v) if valid_shape => Some(v),
        Ok(_) => {
            e.push(
                path,
                format!("{s:?} has too many digits: at most 9 before and 6 after '.'"),
            );
            None
        }
        Err(err) => {
            e.push(path, err.to_string());
            None
        }
    }
}

/// Parse a duration of the form `1h30m`, `90s`, `250ms`, `1.5s` into
/// milliseconds; must be positive and at most `max_ms`.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration: use numbers with units ms, s, m or h, e.g. \"30s\" or \"1m30s\""
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty()
            || int.len() > 6
            || frac.len() > 3
            || (num.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let int: u64 = int.parse().map_err(|_| bad())?;
        let frac_scaled: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        // value = int + frac/1000 units; in ms: int*unit + frac_scaled*unit/1000.
        total = total
            .saturating_add(int.saturating_mul(unit_ms))
            .saturating_add(frac_scaled.saturating_mul(unit_ms) / 1000);
        rest = tail;
    }
    Ok(total)
}

fn duration(e: &mut Errors, path: &str, s: &str, max_ms: u64) -> Option<u64> {
    match parse_duration_ms(s) {
        Ok(0) => {
            e.push(path, "must be greater than zero");
            None
        }
        Ok(ms) if ms > max_ms => {
            e.push(
                path,
                format!("{s:?} is longer than the maximum of {}", human_ms(max_ms)),
            );
            None
        }
        Ok(ms) => Some(ms),
        Err(msg) => {
            e.push(path, msg);
            None
        }
    }
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}s", ms / 1000)
    }
}

fn selector(e: &mut Errors, path: &str, sel: Option<&K8sSelector>) -> LabelSelector {
    let Some(sel) = sel else {
        return LabelSelector::default();
    };
    let mut out = LabelSelector::default();
    for (k, v) in sel.match_labels.iter().flatten() {
        label_key(e, &format!("{path}.matchLabels"), k);
        label_value(e, &format!("{path}.matchLabels[{k}]"), v);
        out.match_labels.insert(k.clone(), v.clone());
    }
    let exprs = sel.match_expressions.as_deref().unwrap_or_default();
    e.max_items(&format!("{path}.matchExpressions"), exprs, 32);
    for (i, r) in exprs.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        label_key(e, &format!("{p}.key"), &r.key);
        let values = r.values.clone().unwrap_or_default();
        let operator = match r.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                e.push(
                    format!("{p}.operator"),
                    format!(
                        "unsupported operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                    ),
                );
                continue;
            }
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => e.push(
                format!("{p}.values"),
                format!("must be non-empty for operator {}", r.operator),
            ),
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => e.push(
                format!("{p}.values"),
                format!("must be empty for operator {}", r.operator),
            ),
            _ => {}
        }
        for (j, v) in values.iter().enumerate() {
            label_value(e, &format!("{p}.values[{j}]"), v);
        }
        out.match_expressions.push(Requirement {
            key: r.key.clone(),
            operator,
            values,
        });
    }
    out
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

fn label_key(e: &mut Errors, path: &str, key: &str) {
    let (prefix, name) = key
        .rsplit_once('/')
        .map_or((None, key), |(p, n)| (Some(p), n));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    if !prefix_ok || !is_label_name(name) {
        e.push(path, format!("{key:?} is not a valid label key"));
    }
}

fn label_value(e: &mut Errors, path: &str, v: &str) {
    if !v.is_empty() && !is_label_name(v) {
        e.push(path, format!("{v:?} is not a valid label value"));
    }
}

fn glob_ok(e: &mut Errors, path: &str, g: &str) {
    if e.length(path, g, 1, 256)
        && let Err(err) = glob::Pattern::new(g)
    {
        e.push(path, format!("{g:?} is not a valid glob: {}", err.msg));
    }
}

fn route_match(
    e: &mut Errors,
    path: &str,
    m: Option<&RouteMatchSpec>,
    hard_threshold: u16,
) -> RouteMatch {
    let Some(m) = m else {
        return RouteMatch::default();
    };
    e.max_items(&format!("{path}.models"), &m.models, 32);
    for (i, g) in m.models.iter().enumerate() {
        glob_ok(e, &format!("{path}.models[{i}]"), g);
    }
    e.max_items(&format!("{path}.apis"), &m.apis, 4);
    e.max_items(&format!("{path}.headers"), &m.headers, 16);
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let hp = format!("{path}.headers[{i}]");
            if e.length(&format!("{hp}.name"), &h.name, 1, 128)
                && !h
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b))
            {
                e.push(
                    format!("{hp}.name"),
                    format!("{:?} is not a valid HTTP header name", h.name),
                );
            }
            glob_ok(e, &format!("{hp}.value"), &h.value);
            HeaderMatch {
                name: h.name.to_ascii_lowercase(),
                value: h.value.clone(),
            }
        })
        .collect();

    let mut complexity = m.complexity.as_ref().map(|c| {
        for (v, f) in [(c.min, "min"), (c.max, "max")] {
            if v.is_some_and(|v| v > 100) {
                e.push(
                    format!("{path}.complexity.{f}"),
                    "must be between 0 and 100",
                );
            }
        }
        if let (Some(a), Some(b)) = (c.min, c.max)
            && a > b
        {
            e.push(format!("{path}.complexity"), "min must not exceed max");
        }
        Range {
            min: c.min.map(u64::from),
            max: c.max.map(u64::from),
        }
    });
    if let Some(class) = m.complexity_class {
        if complexity.is_some() {
            e.push(
                format!("{path}.complexityClass"),
                "use either complexityClass or complexity, not both",
            );
        }
        let t = u64::from(hard_threshold);
        complexity = Some(match class {
            ComplexityClass::Hard => Range {
                min: Some(t),
                max: None,
            },
            ComplexityClass::Easy if t == 0 => Range {
                min: Some(1),
                max: Some(0),
            },
            ComplexityClass::Easy => Range {
                min: None,
                max: Some(t - 1),
            },
        });
    }
    let prompt_tokens = m.prompt_tokens.as_ref().map(|r| {
        if let (Some(a), Some(b)) = (r.min, r.max)
            && a > b
        {
            e.push(format!("{path}.promptTokens"), "min must not exceed max");
        }
        Range {
            min: r.min,
            max: r.max,
        }
    });
    let mut endpoints: Vec<Endpoint> = m
        .apis
        .iter()
        .map(|a| match a {
            RequestApi::ChatCompletions => Endpoint::ChatCompletions,
            RequestApi::Responses => Endpoint::Responses,
            RequestApi::Embeddings => Endpoint::Embeddings,
            RequestApi::Messages => Endpoint::Messages,
        })
        .collect();
    let before = endpoints.len();
    endpoints.sort();
    endpoints.dedup();
    if endpoints.len() != before {
        e.push(format!("{path}.apis"), "duplicate entries");
    }
    RouteMatch {
        models: m.models.clone(),
        endpoints,
        headers,
        complexity,
        prompt_tokens,
        tools_present: m.tools_present,
    }
}

fn target(
    e: &mut Errors,
    path: &str,
    t: &RouteTargetSpec,
    tiers: &[&str],
    providers: &[&str],
) -> Target {
    let passthrough = t.passthrough == Some(true);
    let kinds =
        usize::from(t.tier.is_some()) + usize::from(t.model.is_some()) + usize::from(passthrough);
    if kinds != 1 {
        e.push(
            path,
            "target needs exactly one of tier, model (with provider) or passthrough",
        );
    }
    if t.model.is_some() != t.provider.is_some() {
        e.push(path, "target.model and target.provider go together");
    }
    if let Some(tier) = &t.tier
        && !tiers.contains(&tier.as_str())
    {
        e.push(
            format!("{path}.tier"),
            format!(
                "tier {tier:?} is not defined in spec.tiers (have: {})",
                tiers.join(", ")
            ),
        );
    }
    if let Some(p) = &t.provider
        && !providers.contains(&p.as_str())
    {
        e.push(
            format!("{path}.provider"),
            format!(
                "provider {p:?} is not defined in spec.providers (have: {})",
                providers.join(", ")
            ),
        );
    }
    if let Some(m) = &t.model {
        e.length(&format!("{path}.model"), m, 1, 256);
    }
    match (&t.tier, &t.provider, &t.model) {
        (Some(tier), _, _) => Target::Tier(tier.clone()),
        (None, Some(provider), Some(model)) => Target::Model {
            provider: provider.clone(),
            model: model.clone(),
        },
        _ => Target::Passthrough,
    }
}

fn downgrade(
    e: &mut Errors,
    path: &str,
    d: &token_budget::DowngradeSpec,
) -> Option<DowngradeTarget> {
    match (&d.tier, &d.model) {
        (Some(t), None) => e
            .dns_label(&format!("{path}.tier"), t)
            .then(|| DowngradeTarget::Tier(t.clone())),
        (None, Some(m)) => e
            .length(&format!("{path}.model"), m, 1, 256)
            .then(|| DowngradeTarget::Model(m.clone())),
        _ => {
            e.push(path, "downgradeTo needs exactly one of tier or model");
            None
        }
    }
}

fn classifier(
    e: &mut Errors,
    spec: Option<&crate::routing_policy::ClassifierSpec>,
) -> ClassifierConfig {
    let mut cfg = ClassifierConfig::default();
    let Some(spec) = spec else {
        return cfg;
    };
    if let Some(t) = spec.hard_threshold {
        if t > 100 {
            e.push("spec.classifier.hardThreshold", "must be between 0 and 100");
        }
        cfg.hard_threshold = t;
    }
    if spec.weights.len() > 32 {
        e.push("spec.classifier.weights", "must have at most 32 entries");
    }
    // Weights are set by their serialized (camelCase) names, so the CRD
    // accepts exactly the features core defines, with no list to keep in sync.
    let mut weights = match serde_json::to_value(&cfg.weights) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let known: Vec<String> = weights.keys().cloned().collect();
    for (name, text) in &spec.weights {
        let path = format!("spec.classifier.weights.{name}");
        if !weights.contains_key(name) {
            e.push(
                path,
                format!(
                    "unknown classifier feature {name:?} (known: {})",
                    known.join(", ")
                ),
            );
            continue;
        }
        match parse_weight(text) {
            Some(w) => {
                weights.insert(name.clone(), serde_json::json!(w));
            }
            None => e.push(
                path,
                format!("{text:?} is not a weight: a decimal between -100 and 100, e.g. \"0.75\""),
            ),
        }
    }
    match serde_json::from_value(serde_json::Value::Object(weights)) {
        Ok(w) => cfg.weights = w,
        Err(err) => e.push("spec.classifier.weights", err.to_string()),
    }
    cfg
}

/// A weight: optional '-', up to 3 integer digits, up to 4 decimals, |w| <= 100.
fn parse_weight(s: &str) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let shape_ok = !int.is_empty()
        && int.len() <= 3
        && frac.len() <= 4
        && !(digits.contains('.') && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    let w: f64 = s.parse().ok()?;
    (shape_ok && w.abs() <= 100.0).then_some(w)
}
