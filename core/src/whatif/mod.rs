//! Cost foresight: what recorded traffic would have cost under another
//! price list, model map or RoutingPolicy ([`records`], [`aggregates`]),
//! and what a hand-written token mix will cost before deploying ([`mix`]).
//!
//! All money is exact integer pico-USD ([`Usd`]), the same arithmetic the
//! ledger bills with ([`crate::catalog::ModelPrices::cost`]); an unpriced
//! model is counted apart, never as $0.
//!
//! - [`reprice`]: prices and the `--model A=B` map.
//! - [`replay`](mod@replay): each recorded request through a changed RoutingPolicy.
//! - [`ratio`]: the output-token estimate on another model, with a range.
//! - [`budget`]: each TokenBudget's spend and exhaustion instant.
//! - [`mix`]: the `kind: TokenMix` projection.
//!
//! Per-request records (a sidecar's journal) give exact re-pricing (tiered
//! prices pick their rate per request), re-routing and budget impact.
//! Aggregates (the operator's cluster ledger) give re-pricing only, and a
//! tiered target price is then approximate ([`Row::approximate`]).

pub mod budget;
pub mod mix;
pub mod ratio;
pub mod replay;
pub mod reprice;

use std::collections::BTreeMap;

use serde::Serialize;

use self::{
    budget::{BudgetImpact, Charge, Enforcer, impact},
    ratio::{Method, Ratios},
    replay::{NotReplayable, ReplayOptions, group, replay},
    reprice::Repricer,
};
use crate::{
    book::Spend, cluster_ledger::LedgerKey, money::Usd, period::PeriodError, route::Router,
    tokens::TokenCounts, usage::UsageRecord, workload::BudgetConfig,
};

/// What the what-if changes.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// Prices and model map.
    pub prices: &'a Repricer,
    /// The changed RoutingPolicy, compiled for the workload (records only).
    pub router: Option<&'a Router>,
    /// How to replay through it.
    pub replay: &'a ReplayOptions,
    /// Budgets to show the impact on (records only).
    pub budgets: &'a [BudgetConfig],
    /// Estimate output on another model from observed ratios (else keep it).
    pub estimate_output: bool,
    /// Apply the budgets' threshold actions and hard caps to the what-if
    /// (`Downgrade` re-routes, `Block` and a reached limit refuse), in
    /// time order from its own spend (records with a router only for
    /// downgrades).
    pub enforce_budgets: bool,
}

/// Where the figures came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// Per-request records: exact re-pricing, re-routing, budgets.
    Records,
    /// Aggregate totals: re-pricing only.
    Aggregates,
}

/// One workload and (served model → what-if model).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The workload (`namespace/workload` for the cluster ledger).
    pub workload: String,
    /// The model that served.
    pub served: String,
    /// The model of the what-if.
    pub whatif: String,
    /// App requests (records or rows' requests for aggregates).
    pub requests: u64,
    /// Recorded tokens.
    pub usage: TokenCounts,
    /// The output tokens under the what-if (estimate) and its range.
    pub output: u64,
    /// Low end of the output range.
    pub output_low: u64,
    /// High end of the output range.
    pub output_high: u64,
    /// How the output was estimated.
    pub method: Option<Method>,
    /// Recorded cost (priced records).
    pub actual: Usd,
    /// Recorded requests without a price.
    pub actual_unpriced: u64,
    /// What-if cost (priced requests).
    pub cost: Usd,
    /// What-if cost with the low and high output estimates.
    pub cost_low: Usd,
    /// What-if cost with the high output estimate.
    pub cost_high: Usd,
    /// Requests whose what-if model has no price.
    pub unpriced: u64,
    /// A tiered price applied to summed tokens (aggregates only).
    pub approximate: bool,
}

/// A what-if over recorded usage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Where the figures came from.
    pub source: Source,
    /// Rows, in (workload, served, what-if) order.
    pub rows: Vec<Row>,
    /// Requests not replayable, by reason: (requests, recorded cost).
    pub not_replayable: BTreeMap<String, (u64, Usd)>,
    /// Budget impact: per budget, recorded and what-if.
    pub budgets: Vec<BudgetPair>,
    /// Requests the sidecar's response cache answered (no provider call,
    /// $0): left out, as the cache would answer them under any prices.
    pub response_hits: u64,
    /// With [`Plan::enforce_budgets`]: requests an enforcing budget would
    /// have refused, by budget: (requests, recorded cost); left out of the
    /// rows.
    pub refused: BTreeMap<String, (u64, Usd)>,
    /// With [`Plan::enforce_budgets`]: requests a `Downgrade` threshold
    /// moved to another model.
    pub downgraded: u64,
}

/// One budget, as recorded and under the what-if.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetPair {
    /// As recorded.
    pub actual: BudgetImpact,
    /// Under the what-if (not-replayable requests at their recorded cost).
    pub whatif: BudgetImpact,
}

// === impl Report ===

impl Report {
    /// The sum of every row.
    pub fn total(&self) -> Row {
        let mut t = Row {
            workload: "TOTAL".into(),
            ..Row::default()
        };
        for r in &self.rows {
            t.requests += r.requests;
            crate::usage::add_usage(&mut t.usage, &r.usage);
            t.output = t.output.saturating_add(r.output);
            t.output_low = t.output_low.saturating_add(r.output_low);
            t.output_high = t.output_high.saturating_add(r.output_high);
            t.actual += r.actual;
            t.actual_unpriced += r.actual_unpriced;
            t.cost += r.cost;
            t.cost_low += r.cost_low;
            t.cost_high += r.cost_high;
            t.unpriced += r.unpriced;
            t.approximate |= r.approximate;
        }
        t
    }
}

/// One request's what-if: model, output estimate and costs.
struct Priced {
    model: String,
    method: Method,
    output: (u64, u64, u64),
    cost: Option<(Usd, Usd, Usd)>,
}

fn price(
    plan: &Plan<'_>,
    ratios: &Ratios,
    hint: Option<&str>,
    served: &str,
    routed: &str,
    usage: &TokenCounts,
) -> Priced {
    let model = plan.prices.target(routed).to_string();
    let out = usage.output_tokens;
    let e = if plan.estimate_output {
        ratios.estimate(served, &model, out)
    } else {
        let method = if served.eq_ignore_ascii_case(&model) {
            Method::Recorded
        } else {
            Method::Unchanged
        };
        ratio::Estimate {
            output: out,
            low: out,
            high: out,
            method,
        }
    };
    let at = |o: u64| {
        let mut u = *usage;
        u.output_tokens = o;
        plan.prices.cost(hint, &model, &u)
    };
    let cost = match (at(e.output), at(e.low), at(e.high)) {
        (Some(c), Some(l), Some(h)) => Some((c, l, h)),
        _ => None,
    };
    Priced {
        model,
        method: e.method,
        output: (e.output, e.low, e.high),
        cost,
    }
}

fn add_priced(row: &mut Row, p: &Priced) {
    row.method = Some(p.method);
    row.output = row.output.saturating_add(p.output.0);
    row.output_low = row.output_low.saturating_add(p.output.1);
    row.output_high = row.output_high.saturating_add(p.output.2);
    match p.cost {
        Some((c, l, h)) => {
            row.cost += c;
            row.cost_low += l;
            row.cost_high += h;
        }
        None => row.unpriced += 1,
    }
}

/// The what-if over one workload's per-request records.
pub fn records(
    workload: &str,
    recs: &[UsageRecord],
    plan: &Plan<'_>,
) -> Result<Report, PeriodError> {
    let mut ratios = Ratios::default();
    for r in recs.iter().filter(|r| r.status / 100 == 2) {
        ratios.observe(&r.served_model, &r.usage);
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut not_replayable: BTreeMap<String, (u64, Usd)> = BTreeMap::new();
    let (mut actual_charges, mut whatif_charges) = (Vec::new(), Vec::new());
    let response_hits = recs.iter().filter(|r| r.cache.response_hit).count() as u64;
    let upstream: Vec<UsageRecord> = recs
        .iter()
        .filter(|r| !r.cache.response_hit)
        .cloned()
        .collect();
    let mut requests = group(&upstream);
    // Budgets count in time order.
    requests.sort_by_key(|g| g.last().map(|r| r.ts));
    let mut enforcer = if plan.enforce_budgets {
        Some(Enforcer::new(plan.budgets)?)
    } else {
        None
    };
    let (mut refused, mut downgraded) = (BTreeMap::new(), 0u64);
    for attempts in requests {
        let (Some(first), Some(last)) = (attempts.first(), attempts.last()) else {
            continue;
        };
        let actual: Option<Usd> = attempts
            .iter()
            .map(|r| r.cost)
            .try_fold(Usd::ZERO, |a, c| c.map(|c| a + c));
        let tokens: u64 = attempts.iter().map(|r| r.usage.total_tokens()).sum();
        actual_charges.push(Charge {
            ts: last.ts,
            cost: actual,
            tokens,
        });
        let (model, hint) = match route_one(plan, first, last, enforcer.as_mut())? {
            Routed::To {
                model,
                hint,
                downgraded: d,
            } => {
                downgraded += u64::from(d);
                (model, hint)
            }
            Routed::Refused(budget) => {
                let slot = refused.entry(budget).or_insert((0, Usd::ZERO));
                slot.0 += 1;
                slot.1 += actual.unwrap_or(Usd::ZERO);
                continue;
            }
            Routed::NotReplayable(e) => {
                count_not_replayable(&mut not_replayable, &e, actual);
                whatif_charges.push(Charge {
                    ts: last.ts,
                    cost: actual,
                    tokens,
                });
                continue;
            }
        };
        let p = price(plan, &ratios, hint, &last.served_model, &model, &last.usage);
        let row = rows
            .entry((last.served_model.clone(), p.model.clone()))
            .or_insert_with(|| Row {
                workload: workload.to_string(),
                served: last.served_model.clone(),
                whatif: p.model.clone(),
                ..Row::default()
            });
        row.requests += 1;
        for r in &attempts {
            crate::usage::add_usage(&mut row.usage, &r.usage);
        }
        match actual {
            Some(c) => row.actual += c,
            None => row.actual_unpriced += 1,
        }
        add_priced(row, &p);
        let mut u = last.usage;
        u.output_tokens = p.output.0;
        if let Some(e) = enforcer.as_mut() {
            e.charge(p.cost.map(|c| c.0), u.total_tokens());
        }
        whatif_charges.push(Charge {
            ts: last.ts,
            cost: p.cost.map(|c| c.0),
            tokens: u.total_tokens(),
        });
    }
    let mut budgets = Vec::new();
    for b in plan.budgets {
        budgets.push(BudgetPair {
            actual: impact(b, &actual_charges)?,
            whatif: impact(b, &whatif_charges)?,
        });
    }
    Ok(Report {
        source: Source::Records,
        rows: rows.into_values().collect(),
        not_replayable,
        budgets,
        response_hits,
        refused,
        downgraded,
    })
}

/// Where one request goes under the plan.
enum Routed {
    /// Sent to `model`, priced through the `hint` API.
    To {
        model: String,
        hint: Option<&'static str>,
        /// A budget's `Downgrade` threshold changed the model.
        downgraded: bool,
    },
    /// An enforcing budget (named) refused it.
    Refused(String),
    /// It lacks a fact the new policy needs.
    NotReplayable(NotReplayable),
}

fn route_one(
    plan: &Plan<'_>,
    first: &UsageRecord,
    last: &UsageRecord,
    enforcer: Option<&mut Enforcer<'_>>,
) -> Result<Routed, PeriodError> {
    let (mut model, hint, choice) = match plan.router {
        Some(router) => match replay(router, first, plan.replay) {
            Ok(r) => (r.model, Some(r.api.as_str()), Some((r.choice, r.api))),
            Err(e) => return Ok(Routed::NotReplayable(e)),
        },
        None => (
            last.served_model.clone(),
            Some(last.endpoint.api().as_str()),
            None,
        ),
    };
    let mut downgraded = false;
    if let Some(e) = enforcer {
        let v = e.verdict(last.ts)?;
        if let Some(b) = v.refused_by {
            return Ok(Routed::Refused(b.to_string()));
        }
        if let (Some(t), Some(router), Some((c, api))) = (v.downgrade, plan.router, &choice)
            && let Some(d) = router.downgrade(c, t, *api)
        {
            downgraded = d.model != model;
            model = d.model;
        }
    }
    Ok(Routed::To {
        model,
        hint,
        downgraded,
    })
}

fn count_not_replayable(
    into: &mut BTreeMap<String, (u64, Usd)>,
    e: &NotReplayable,
    actual: Option<Usd>,
) {
    let slot = into.entry(e.reason()).or_insert((0, Usd::ZERO));
    slot.0 += 1;
    slot.1 += actual.unwrap_or(Usd::ZERO);
}

/// The re-pricing of aggregate rows (the cluster ledger): no re-routing,
/// no budgets; a tiered target price is marked approximate.
pub fn aggregates(rows: &[(LedgerKey, Spend)], plan: &Plan<'_>) -> Report {
    let mut ratios = Ratios::default();
    for (k, s) in rows {
        ratios.observe(&k.model, &s.usage);
    }
    let mut out: BTreeMap<(String, String, String), Row> = BTreeMap::new();
    for (k, s) in rows {
        let workload = format!("{}/{}", k.namespace, k.workload);
        let p = price(plan, &ratios, None, &k.model, &k.model, &s.usage);
        let row = out
            .entry((workload.clone(), k.model.clone(), p.model.clone()))
            .or_insert_with(|| Row {
                workload,
                served: k.model.clone(),
                whatif: p.model.clone(),
                ..Row::default()
            });
        row.requests += s.requests;
        crate::usage::add_usage(&mut row.usage, &s.usage);
        row.actual += s.cost;
        row.actual_unpriced += s.unpriced;
        row.approximate |= plan.prices.is_tiered(None, &p.model);
        add_priced(row, &p);
        if p.cost.is_none() {
            // Every request of the row is unpriced on the target.
            row.unpriced = row.unpriced - 1 + s.requests;
        }
    }
    Report {
        source: Source::Aggregates,
        rows: out.into_values().collect(),
        not_replayable: BTreeMap::new(),
        budgets: Vec::new(),
        response_hits: 0,
        refused: BTreeMap::new(),
        downgraded: 0,
    }
}
