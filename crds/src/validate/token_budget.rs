//! `TokenBudget::validate()` and `to_input()`: the checks of a budget and
//! its conversion into the compiler's [`BudgetInput`], section by section.

use tokenwarden_core::{
    compile::BudgetInput,
    money::Usd,
    period::{self, Period},
    workload::{
        BudgetConfig, DEFAULT_MAX_KEYS, DowngradeTarget, FailMode, KeySource, LoopGuard,
        MAX_MAX_KEYS, PerKeyConfig, ProjectedOverrunAction, Threshold, ThresholdAction,
    },
};

use super::{
    ValidationErrors,
    fields::{Errors, MAX_WINDOW_MS, duration, object_ref, selector, usd},
};
use crate::token_budget::{
    self, BudgetLimit, BudgetPeriod, DowngradeSpec, LoopGuardSpec, PerKeySpec,
    ProjectedOverrunActionKind, ProjectedOverrunSpec, ThresholdActionKind, ThresholdSpec,
    TokenBudget,
};

/// Default loop-guard cool-down.
const DEFAULT_COOLDOWN_MS: u64 = 5 * 60 * 1000;

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
        let (limit_usd, limit_tokens) = limit(&mut e, "spec.limit", &spec.limit);
        let thresholds = thresholds(&mut e, &spec.thresholds);
        let on_projected_overrun = spec
            .on_projected_overrun
            .as_ref()
            .and_then(|p| projected_overrun(&mut e, p));
        let per_request_cap_usd = spec
            .per_request_max_usd
            .as_deref()
            .and_then(|s| usd(&mut e, "spec.perRequestMaxUsd", s));
        let loop_guard = spec
            .loop_guard
            .as_ref()
            .and_then(|lg| loop_guard(&mut e, lg));
        let per_key = spec.per_key.as_ref().and_then(|pk| per_key(&mut e, pk));

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
                per_key,
                on_projected_overrun,
            },
        };
        e.finish(object, input)
    }
}

/// `spec.limit` (or `spec.perKey.limit` at `path`): the USD and token
/// limits (at least one).
fn limit(e: &mut Errors, path: &str, limit: &BudgetLimit) -> (Option<Usd>, Option<u64>) {
    let limit_usd = limit
        .usd
        .as_deref()
        .and_then(|s| usd(e, &format!("{path}.usd"), s));
    let limit_tokens = match limit.tokens {
        Some(t) if !(1..=1_000_000_000_000).contains(&t) => {
            e.push(
                format!("{path}.tokens"),
                "must be between 1 and 1000000000000",
            );
            None
        }
        Some(t) => u64::try_from(t).ok(),
        None => None,
    };
    if limit.usd.is_none() && limit.tokens.is_none() {
        e.push(path, "limit needs at least one of usd or tokens");
    }
    (limit_usd, limit_tokens)
}

/// Request headers a per-key budget may not key on: hop-by-hop headers
/// (RFC 9110 §7.6.1, and those a proxy rewrites) and credentials, whose
/// values must never become a key in the ledger (`apiKeyHash` hashes
/// credentials instead).
const FORBIDDEN_KEY_HEADERS: [&str; 17] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-type",
];

/// `spec.perKey`: exactly one key source, the per-key limit, `maxKeys`.
fn per_key(e: &mut Errors, pk: &PerKeySpec) -> Option<PerKeyConfig> {
    let by = &pk.by;
    let chosen = [
        by.header.is_some(),
        by.pod.is_some(),
        by.api_key_hash.is_some(),
    ];
    let by = match chosen {
        [true, false, false] => key_header(e, by.header.as_deref().unwrap_or_default()),
        [false, true, false] => Some(KeySource::Pod),
        [false, false, true] => Some(KeySource::ApiKeyHash),
        _ => {
            e.push(
                "spec.perKey.by",
                "by needs exactly one of header, pod or apiKeyHash",
            );
            None
        }
    };
    let (limit_usd, limit_tokens) = limit(e, "spec.perKey.limit", &pk.limit);
    let max_keys = match pk.max_keys {
        None => DEFAULT_MAX_KEYS,
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=MAX_MAX_KEYS).contains(&n) => n,
            _ => {
                e.push(
                    "spec.perKey.maxKeys",
                    format!("must be between 1 and {MAX_MAX_KEYS}"),
                );
                return None;
            }
        },
    };
    Some(PerKeyConfig {
        by: by?,
        limit_usd,
        limit_tokens,
        max_keys,
    })
}

/// `spec.perKey.by.header`: an HTTP field name (RFC 9110 §5.1, restricted
/// to letters, digits, `-`, `_` and `.`), not hop-by-hop, not a credential,
/// kept lower-case (field names are case-insensitive).
fn key_header(e: &mut Errors, name: &str) -> Option<KeySource> {
    let path = "spec.perKey.by.header";
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        e.push(
            path,
            format!(
                "{name:?} is not a header name (1-64 letters, digits, '-', '_' or '.', \
                 starting with a letter or digit)"
            ),
        );
        return None;
    }
    let lower = name.to_ascii_lowercase();
    if FORBIDDEN_KEY_HEADERS.contains(&lower.as_str()) {
        e.push(
            path,
            format!(
                "{name:?} cannot be a key: it is a credential or hop-by-hop header \
                 (to key by the app's API key, use apiKeyHash: {{}})"
            ),
        );
        return None;
    }
    Some(KeySource::Header(lower))
}

/// `spec.thresholds`, strictly ascending by percent.
fn thresholds(e: &mut Errors, specs: &[ThresholdSpec]) -> Vec<Threshold> {
    e.max_items("spec.thresholds", specs, 10);
    let mut thresholds = Vec::new();
    let mut last: Option<u8> = None;
    for (i, t) in specs.iter().enumerate() {
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
        if let Some(action) = threshold_action(e, &path, t) {
            thresholds.push(Threshold {
                percent: t.percent,
                action,
            });
        }
    }
    thresholds
}

/// `spec.onProjectedOverrun`: `Alert`, or `Downgrade` with its `downgradeTo`.
fn projected_overrun(e: &mut Errors, p: &ProjectedOverrunSpec) -> Option<ProjectedOverrunAction> {
    let path = "spec.onProjectedOverrun.downgradeTo";
    match (p.action, &p.downgrade_to) {
        (ProjectedOverrunActionKind::Alert, None) => Some(ProjectedOverrunAction::Alert),
        (ProjectedOverrunActionKind::Downgrade, Some(d)) => {
            downgrade(e, path, d).map(ProjectedOverrunAction::Downgrade)
        }
        (ProjectedOverrunActionKind::Downgrade, None) => {
            e.push(path, "downgradeTo is required for action Downgrade");
            None
        }
        (ProjectedOverrunActionKind::Alert, Some(_)) => {
            e.push(
                path,
                "downgradeTo is only allowed for action Downgrade, not Alert",
            );
            None
        }
    }
}

/// A threshold's `action` with its `downgradeTo`.
fn threshold_action(e: &mut Errors, path: &str, t: &ThresholdSpec) -> Option<ThresholdAction> {
    match (t.action, &t.downgrade_to) {
        (ThresholdActionKind::Alert, None) => Some(ThresholdAction::Alert),
        (ThresholdActionKind::Block, None) => Some(ThresholdAction::Block),
        (ThresholdActionKind::Downgrade, Some(d)) => {
            downgrade(e, &format!("{path}.downgradeTo"), d).map(ThresholdAction::Downgrade)
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
    }
}

/// A threshold's `downgradeTo`: a tier or a model.
fn downgrade(e: &mut Errors, path: &str, d: &DowngradeSpec) -> Option<DowngradeTarget> {
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

/// `spec.loopGuard`.
fn loop_guard(e: &mut Errors, lg: &LoopGuardSpec) -> Option<LoopGuard> {
    if !(2..=1000).contains(&lg.max_identical_requests) {
        e.push(
            "spec.loopGuard.maxIdenticalRequests",
            "must be between 2 and 1000",
        );
    }
    let window = duration(e, "spec.loopGuard.window", &lg.window, MAX_WINDOW_MS);
    let cooldown = match lg.cooldown.as_deref() {
        Some(c) => duration(e, "spec.loopGuard.cooldown", c, MAX_WINDOW_MS),
        None => Some(DEFAULT_COOLDOWN_MS),
    };
    Some(LoopGuard {
        max_identical: lg.max_identical_requests,
        window_ms: window?,
        cooldown_ms: cooldown?,
    })
}
