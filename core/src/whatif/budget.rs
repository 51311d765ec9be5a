//! Budget impact of a what-if: each TokenBudget's spend per period under
//! the alternative and the instant it would have been exhausted.
//!
//! Recorded traffic ([`impact`]): the charges are placed in the budget's
//! calendar periods ([`Period::window`] in its time zone, so DST days are
//! 23 or 25 hours), summed in order, and the period is exhausted at the
//! first charge whose running total reaches the USD or token limit, the
//! way a sidecar's [`crate::budget::BudgetState`] counts spend. The
//! requests after that instant are counted: the limit is a hard cap, so an
//! enforcing budget would have refused them. The spend is the demand of
//! the alternative unless the what-if applies the threshold actions and
//! hard caps itself ([`Enforcer`]); per-key limits (`spec.perKey`) are not
//! replayed, and the figures are the whole budget's.
//!
//! A token mix ([`uniform`]) has no timestamps: its daily spend is assumed
//! to arrive at a constant rate over each 24 hours, so a limit `L` against a
//! daily spend `D` runs out `L / D × 86,400` seconds into each period when
//! that comes before the period's end (nominal lengths: an hour, a day, 7
//! days, 30 days).

use jiff::{Timestamp, tz::TimeZone};
use serde::Serialize;

use crate::{
    money::Usd,
    period::{Period, PeriodError, Window, time_zone},
    workload::{BudgetConfig, DowngradeTarget, ObjectRef, ThresholdAction},
};

/// One priced request, at the instant it finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    /// When it finished.
    pub ts: Timestamp,
    /// Its cost; `None`: unpriced (counted apart, never as $0).
    pub cost: Option<Usd>,
    /// Its tokens (all kinds).
    pub tokens: u64,
}

/// One budget period under the alternative.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeriodImpact {
    /// The period.
    pub window: Window,
    /// Priced spend.
    pub spend: Usd,
    /// Tokens.
    pub tokens: u64,
    /// Requests charged.
    pub requests: u64,
    /// Requests whose model had no price.
    pub unpriced: u64,
    /// When the running spend (or tokens) reached the limit, if it did.
    pub exhausted_at: Option<Timestamp>,
    /// Requests of the period after that instant: an enforcing budget's
    /// hard cap would have refused them (0 for a `shadow` budget).
    pub after_exhaustion: u64,
}

/// One budget under the alternative, period by period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetImpact {
    /// The TokenBudget.
    pub budget: ObjectRef,
    /// Its period.
    pub period: Period,
    /// Its USD limit.
    pub limit_usd: Option<Usd>,
    /// Its token limit.
    pub limit_tokens: Option<u64>,
    /// The periods with traffic, oldest first.
    pub periods: Vec<PeriodImpact>,
}

/// A budget against a token mix's uniform daily spend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UniformImpact {
    /// The TokenBudget.
    pub budget: ObjectRef,
    /// Its period.
    pub period: Period,
    /// Its USD limit.
    pub limit_usd: Option<Usd>,
    /// Its token limit.
    pub limit_tokens: Option<u64>,
    /// Spend per (nominal) period.
    pub spend_per_period: Usd,
    /// Tokens per (nominal) period.
    pub tokens_per_period: u64,
    /// Seconds into each period at which a limit is reached; `None`: never.
    pub exhausted_after_secs: Option<u64>,
}

/// The spend of `charges` (any order) in each of `budget`'s periods, and
/// when each period's limit was reached.
pub fn impact(budget: &BudgetConfig, charges: &[Charge]) -> Result<BudgetImpact, PeriodError> {
    let tz = time_zone(&budget.time_zone)?;
    let mut sorted: Vec<&Charge> = charges.iter().collect();
    sorted.sort_by_key(|c| c.ts);
    let mut periods: Vec<PeriodImpact> = Vec::new();
    for c in sorted {
        let window = budget.period.window(&tz, c.ts)?;
        if periods.last().is_none_or(|p| p.window != window) {
            periods.push(PeriodImpact {
                window,
                spend: Usd::ZERO,
                tokens: 0,
                requests: 0,
                unpriced: 0,
                exhausted_at: None,
                after_exhaustion: 0,
            });
        }
        let Some(p) = periods.last_mut() else {
            continue;
        };
        if p.exhausted_at.is_some() && !budget.shadow {
            p.after_exhaustion += 1;
        }
        p.requests += 1;
        p.tokens = p.tokens.saturating_add(c.tokens);
        match c.cost {
            Some(cost) => p.spend += cost,
            None => p.unpriced += 1,
        }
        let over_usd = budget.limit_usd.is_some_and(|l| p.spend >= l);
        let over_tokens = budget.limit_tokens.is_some_and(|l| p.tokens >= l);
        if p.exhausted_at.is_none() && (over_usd || over_tokens) {
            p.exhausted_at = Some(c.ts);
        }
    }
    Ok(BudgetImpact {
        budget: budget.source.clone(),
        period: budget.period,
        limit_usd: budget.limit_usd,
        limit_tokens: budget.limit_tokens,
        periods,
    })
}

/// The enforcing budgets' state while a what-if replays requests in time
/// order: the threshold actions and hard caps a sidecar would apply
/// (`Downgrade` re-routes, `Block` and a reached limit refuse), from the
/// what-if's own spend. `shadow` budgets never enforce.
#[derive(Debug)]
pub struct Enforcer<'a> {
    budgets: Vec<Enforced<'a>>,
}

#[derive(Debug)]
struct Enforced<'a> {
    cfg: &'a BudgetConfig,
    tz: TimeZone,
    window: Option<Window>,
    spend: Usd,
    tokens: u64,
}

/// What the budgets do to a request at an instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// Refused by this budget (a `Block` threshold or its limit reached).
    pub refused_by: Option<&'a ObjectRef>,
    /// The downgrade target of the first budget with an active `Downgrade`.
    pub downgrade: Option<&'a DowngradeTarget>,
}

impl<'a> Enforcer<'a> {
    /// The enforcing (non-shadow) budgets among `budgets`.
    pub fn new(budgets: &'a [BudgetConfig]) -> Result<Self, PeriodError> {
        let mut out = Vec::new();
        for cfg in budgets.iter().filter(|b| !b.shadow) {
            out.push(Enforced {
                cfg,
                tz: time_zone(&cfg.time_zone)?,
                window: None,
                spend: Usd::ZERO,
                tokens: 0,
            });
        }
        Ok(Self { budgets: out })
    }

    /// What the budgets do to a request at `ts` (periods roll over first).
    pub fn verdict(&mut self, ts: Timestamp) -> Result<Verdict<'a>, PeriodError> {
        let mut v = Verdict::default();
        for b in &mut self.budgets {
            let w = b.cfg.period.window(&b.tz, ts)?;
            if b.window != Some(w) {
                *b = Enforced {
                    cfg: b.cfg,
                    tz: b.tz.clone(),
                    window: Some(w),
                    spend: Usd::ZERO,
                    tokens: 0,
                };
            }
            let pct = percent(b.cfg, b.spend, b.tokens);
            let action = b.cfg.active_threshold(pct).map(|t| &t.action);
            if pct >= 100 || matches!(action, Some(ThresholdAction::Block)) {
                v.refused_by = v.refused_by.or(Some(&b.cfg.source));
            } else if let Some(ThresholdAction::Downgrade(t)) = action {
                v.downgrade = v.downgrade.or(Some(t));
            }
        }
        Ok(v)
    }

    /// Counts a request let through at `ts` (after [`Enforcer::verdict`]).
    pub fn charge(&mut self, cost: Option<Usd>, tokens: u64) {
        for b in &mut self.budgets {
            b.spend += cost.unwrap_or(Usd::ZERO);
            b.tokens = b.tokens.saturating_add(tokens);
        }
    }
}

/// Spend as a percentage of the limit, the larger of USD and tokens,
/// rounded down (as [`crate::budget::BudgetState::local_percent_spent`]).
fn percent(cfg: &BudgetConfig, spend: Usd, tokens: u64) -> u64 {
    let usd = cfg.limit_usd.map_or(0, |l| {
        if l.picos() <= 0 {
            100
        } else {
            u64::try_from(spend.picos().max(0).saturating_mul(100) / l.picos()).unwrap_or(u64::MAX)
        }
    });
    let tok = cfg.limit_tokens.map_or(0, |l| {
        u64::try_from(u128::from(tokens) * 100 / u128::from(l.max(1))).unwrap_or(u64::MAX)
    });
    usd.max(tok)
}

/// The nominal length of a period in seconds (a month is 30 days).
pub fn nominal_secs(period: Period) -> u64 {
    match period {
        Period::Hourly => 3_600,
        Period::Daily => 86_400,
        Period::Weekly => 7 * 86_400,
        Period::Monthly => 30 * 86_400,
    }
}

/// `budget` against a spend of `per_day` and `tokens_per_day` arriving at a
/// constant rate.
pub fn uniform(budget: &BudgetConfig, per_day: Usd, tokens_per_day: u64) -> UniformImpact {
    const DAY: u128 = 86_400;
    let secs = nominal_secs(budget.period);
    let spend_picos = per_day.picos().max(0).unsigned_abs();
    let spend_per_period = (spend_picos * u128::from(secs)).div_ceil(DAY);
    let tokens_per_period = (u128::from(tokens_per_day) * u128::from(secs)).div_ceil(DAY);
    // Seconds to reach `limit` at `rate` per day, floored (the limit is
    // reached during that second).
    let reach = |limit: u128, per_day: u128| (per_day > 0).then(|| limit * DAY / per_day);
    let usd_at = budget
        .limit_usd
        .and_then(|l| reach(l.picos().max(0).unsigned_abs(), spend_picos));
    let tokens_at = budget
        .limit_tokens
        .and_then(|l| reach(u128::from(l), u128::from(tokens_per_day)));
    let at = match (usd_at, tokens_at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    UniformImpact {
        budget: budget.source.clone(),
        period: budget.period,
        limit_usd: budget.limit_usd,
        limit_tokens: budget.limit_tokens,
        spend_per_period: Usd::from_picos(i128::try_from(spend_per_period).unwrap_or(i128::MAX)),
        tokens_per_period: u64::try_from(tokens_per_period).unwrap_or(u64::MAX),
        exhausted_after_secs: at
            .filter(|&s| s < u128::from(secs))
            .and_then(|s| u64::try_from(s).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::FailMode;

    fn budget(period: Period, tz: &str, usd: &str) -> BudgetConfig {
        BudgetConfig {
            source: ObjectRef::new("agents", "team"),
            generation: 1,
            period,
            time_zone: tz.into(),
            limit_usd: Some(usd.parse().unwrap()),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: None,
            on_projected_overrun: None,
        }
    }

    fn charge(ts: &str, cost: Option<&str>) -> Charge {
        Charge {
            ts: ts.parse().unwrap(),
            cost: cost.map(|c| c.parse().unwrap()),
            tokens: 10,
        }
    }

    #[test]
    fn exhausted_at_the_charge_that_reaches_the_limit_per_local_day() {
        let b = budget(Period::Daily, "Europe/Berlin", "1.00");
        let charges = [
            // Out of order on purpose; Berlin days start 23:00 UTC in December.
            charge("2026-12-02T10:00:00Z", Some("0.60")),
            charge("2026-12-02T09:00:00Z", Some("0.30")),
            charge("2026-12-02T11:00:00Z", None),
            charge("2026-12-02T12:30:00Z", Some("0.10")),
            charge("2026-12-02T13:00:00Z", Some("0.50")),
            charge("2026-12-02T23:30:00Z", Some("0.20")),
        ];
        let i = impact(&b, &charges).unwrap();
        assert_eq!(i.periods.len(), 2);
        let day = &i.periods[0];
        assert_eq!(day.window.start, "2026-12-01T23:00:00Z".parse().unwrap());
        assert_eq!(day.spend, "1.50".parse().unwrap());
        assert_eq!((day.requests, day.unpriced, day.tokens), (5, 1, 50));
        // 0.30 + 0.60 + 0.10 = 1.00 at 12:30: reaching the limit exhausts.
        assert_eq!(
            day.exhausted_at,
            Some("2026-12-02T12:30:00Z".parse().unwrap())
        );
        let next = &i.periods[1];
        assert_eq!(next.window.start, "2026-12-02T23:00:00Z".parse().unwrap());
        assert_eq!(next.exhausted_at, None);
    }

    #[test]
    fn a_uniform_daily_spend_runs_out_at_limit_over_rate() {
        // $788/day against $100/day: 100/788 of a day = 10,964.46… s.
        let b = budget(Period::Daily, "UTC", "100");
        let u = uniform(&b, "788".parse().unwrap(), 0);
        assert_eq!(u.spend_per_period, "788".parse().unwrap());
        assert_eq!(u.exhausted_after_secs, Some(10_964));
        // Monthly $5000: 30 × 788 = 23,640 per period; 5000/788 days.
        let m = uniform(
            &budget(Period::Monthly, "UTC", "5000"),
            "788".parse().unwrap(),
            0,
        );
        assert_eq!(m.spend_per_period, "23640".parse().unwrap());
        assert_eq!(m.exhausted_after_secs, Some(548_223));
        // Enough money: never.
        let rich = uniform(
            &budget(Period::Hourly, "UTC", "40"),
            "788".parse().unwrap(),
            0,
        );
        assert_eq!(rich.spend_per_period, "32.833333333334".parse().unwrap());
        assert_eq!(rich.exhausted_after_secs, None);
    }

    #[test]
    fn the_enforcer_downgrades_blocks_and_resets_each_period() {
        use crate::workload::{DowngradeTarget, Threshold, ThresholdAction};
        let mut b = budget(Period::Daily, "UTC", "1.00");
        b.thresholds = vec![
            Threshold {
                percent: 50,
                action: ThresholdAction::Downgrade(DowngradeTarget::Tier("cheap".into())),
            },
            Threshold {
                percent: 90,
                action: ThresholdAction::Block,
            },
        ];
        let mut shadow = budget(Period::Daily, "UTC", "0.01");
        shadow.shadow = true;
        let budgets = [b, shadow];
        let mut e = Enforcer::new(&budgets).unwrap();
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        let v = e.verdict(at("2026-12-02T09:00:00Z")).unwrap();
        assert_eq!(v, Verdict::default());
        e.charge(Some("0.50".parse().unwrap()), 10);
        let v = e.verdict(at("2026-12-02T10:00:00Z")).unwrap();
        assert_eq!(v.downgrade, Some(&DowngradeTarget::Tier("cheap".into())));
        assert_eq!(v.refused_by, None);
        e.charge(Some("0.40".parse().unwrap()), 10);
        let v = e.verdict(at("2026-12-02T11:00:00Z")).unwrap();
        assert_eq!(v.refused_by, Some(&ObjectRef::new("agents", "team")));
        // The next day starts from zero; the shadow budget never enforces.
        let v = e.verdict(at("2026-12-03T00:00:00Z")).unwrap();
        assert_eq!(v, Verdict::default());
    }
}
