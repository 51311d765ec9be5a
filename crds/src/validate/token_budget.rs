//! `TokenBudget::validate()` and `to_input()`: the checks of a budget and
//! its conversion into the compiler's [`BudgetInput`], section by section.

use tokenwarden_core::{
    compile::BudgetInput,
    money::Usd,
    period::{self, Period},
    workload::{BudgetConfig, DowngradeTarget, FailMode, LoopGuard, Threshold, ThresholdAction},
};

use super::{
    ValidationErrors,
    fields::{Errors, MAX_WINDOW_MS, duration, object_ref, selector, usd},
};
use crate::token_budget::{
    self, BudgetLimit, BudgetPeriod, DowngradeSpec, LoopGuardSpec, ThresholdActionKind,
    ThresholdSpec, TokenBudget,
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
        let (limit_usd, limit_tokens) = limit(&mut e, &spec.limit);
        let thresholds = thresholds(&mut e, &spec.thresholds);
        let per_request_cap_usd = spec
            .per_request_max_usd
            .as_deref()
            .and_then(|s| usd(&mut e, "spec.perRequestMaxUsd", s));
        let loop_guard = spec
            .loop_guard
            .as_ref()
            .and_then(|lg| loop_guard(&mut e, lg));

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

/// `spec.limit`: the USD and token limits (at least one).
fn limit(e: &mut Errors, limit: &BudgetLimit) -> (Option<Usd>, Option<u64>) {
    let limit_usd = limit
        .usd
        .as_deref()
        .and_then(|s| usd(e, "spec.limit.usd", s));
    let limit_tokens = match limit.tokens {
        Some(t) if !(1..=1_000_000_000_000).contains(&t) => {
            e.push("spec.limit.tokens", "must be between 1 and 1000000000000");
            None
        }
        Some(t) => u64::try_from(t).ok(),
        None => None,
    };
    if limit.usd.is_none() && limit.tokens.is_none() {
        e.push("spec.limit", "limit needs at least one of usd or tokens");
    }
    (limit_usd, limit_tokens)
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
