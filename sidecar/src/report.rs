//! The tables people read: `report` (the ledger under a state dir, per
//! model and per budget) and the `--check-config` summary.

use std::{collections::BTreeMap, fmt::Write as _};

use tokenwarden_core::{
    forecast::BurnSamples,
    money::Usd,
    selector::Labels,
    tokens::TokenCounts,
    usage::{Aggregate, cache::HitRatio},
    workload::{
        BudgetConfig, DowngradeTarget, FailMode, ObjectRef, Target, ThresholdAction, WorkloadConfig,
    },
};

use crate::policy_file::PolicySet;

/// The budget part of `report`. With the compiled budgets (`configured`):
/// a table of each one's current period at `now`, as `GET /ledger` shows
/// it, then a line for each budget the ledger holds that the config no
/// longer has. Without: the ledger's latest period of each budget. Under
/// the table, each configured budget's forecast from the burn samples
/// `burn` the sidecar left in its state dir ([`crate::forecast::load`])
/// and the ledger's totals at `now`.
pub fn report_budgets(
    agg: &Aggregate,
    configured: Option<&[BudgetConfig]>,
    burn: &BTreeMap<ObjectRef, BurnSamples>,
    now: jiff::Timestamp,
) -> String {
    use tokenwarden_core::budget::BudgetState;
    let mut s = String::new();
    let note = match configured {
        None => {
            " (limits and state: give report the sidecar's --policy-file, --namespace and --labels)"
        }
        Some([]) => {
            " (no TokenBudget in the policy file selects this workload: check --namespace and --labels)"
        }
        Some(_) => " (no longer in the policy file)",
    };
    let configured = configured.unwrap_or_default();
    if !configured.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<32} {:<8} {:<22} {:<22} {:>14} {:>14} {:>14} {:>6} {:>11} {:>11} {:<9}",
            "BUDGET",
            "PERIOD",
            "START",
            "END",
            "SPENT USD",
            "LIMIT USD",
            "REMAINING USD",
            "USED",
            "TOKENS",
            "LIMIT TOK",
            "STATE"
        );
    }
    for cfg in configured {
        let id = cfg.source.to_string();
        let state = BudgetState::from_ledger(cfg.clone(), now, |start| {
            agg.budget_period(&cfg.source, start)
        });
        let Ok(b) = state else {
            let _ = writeln!(s, "{:<32} invalid period or time zone", truncate(&id, 32));
            continue;
        };
        let t = b.totals();
        let dash = || "-".to_string();
        let _ = writeln!(
            s,
            "{:<32} {:<8} {:<22} {:<22} {:>14} {:>14} {:>14} {:>6} {:>11} {:>11} {:<9}",
            truncate(&id, 32),
            cfg.period.to_string(),
            b.window().start.to_string(),
            b.window().end.to_string(),
            money(t.spent),
            cfg.limit_usd.map_or_else(dash, money),
            b.remaining_usd().map_or_else(dash, money),
            format!("{}%", b.percent_spent()),
            t.tokens(),
            cfg.limit_tokens.map_or_else(dash, |l| l.to_string()),
            format!(
                "{}{}",
                b.state().as_str(),
                if cfg.shadow { " (shadow)" } else { "" }
            ),
        );
    }
    report_forecasts(&mut s, agg, configured, burn, now);
    for cfg in configured {
        if let Ok(b) = BudgetState::from_ledger(cfg.clone(), now, |start| {
            agg.budget_period(&cfg.source, start)
        }) {
            report_hits(&mut s, &b.config().source, &b.totals().cache);
            report_keys(&mut s, &b);
        }
    }
    for (budget, periods) in &agg.budgets {
        if configured.iter().any(|c| &c.source == budget) {
            continue;
        }
        if let Some((start, t)) = periods.last_key_value() {
            let _ = writeln!(
                s,
                "budget {budget}: period from {start}: spent {} over {} requests, {} tokens{}",
                money(t.spent),
                t.requests,
                t.tokens(),
                note
            );
            report_hits(&mut s, budget, &t.cache);
        }
    }
    trim_lines(&s)
}

/// The forecast table: per configured budget, the spend and tokens
/// projected at the period's end, when a limit is reached before it, and
/// how (the estimator's windows and the instant the projection starts
/// from), or why there is none.
fn report_forecasts(
    s: &mut String,
    agg: &Aggregate,
    configured: &[BudgetConfig],
    burn: &BTreeMap<ObjectRef, BurnSamples>,
    now: jiff::Timestamp,
) {
    use tokenwarden_core::{budget::BudgetState, forecast::Forecast};
    if configured.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n{:<32} {:>14} {:>14} {:<22} PROJECTION",
        "BUDGET", "PROJECTED USD", "PROJECTED TOK", "EXHAUSTION"
    );
    for cfg in configured {
        let Ok(b) = BudgetState::from_ledger(cfg.clone(), now, |start| {
            agg.budget_period(&cfg.source, start)
        }) else {
            continue;
        };
        let f = crate::forecast::offline(burn, &b, now);
        let dash = || "-".to_string();
        let how = match &f {
            None => "no history (no burn samples of this period in the state dir's forecast.json)"
                .to_string(),
            Some(Forecast::Projected(p)) => format!(
                "{} as of {}",
                p.windows.describe(),
                tokenwarden_core::period::rfc3339_seconds(p.as_of)
            ),
            Some(f @ Forecast::WarmingUp { .. }) => f.note(),
        };
        let _ = writeln!(
            s,
            "{:<32} {:>14} {:>14} {:<22} {}",
            truncate(&cfg.source.to_string(), 32),
            f.and_then(|f| f.projected_spend()).map_or_else(dash, money),
            f.and_then(|f| f.projected_tokens())
                .map_or_else(dash, |t| t.to_string()),
            f.and_then(|f| f.projected_exhaustion())
                .map_or_else(dash, tokenwarden_core::period::rfc3339_seconds),
            how
        );
    }
}

/// A budget's response-cache hits this period and what they saved (not
/// charged to it), when there were any.
fn report_hits(
    s: &mut String,
    budget: &tokenwarden_core::workload::ObjectRef,
    cache: &tokenwarden_core::usage::cache::CacheTotals,
) {
    if cache.response_hits > 0 {
        let _ = writeln!(
            s,
            "budget {budget}: response cache answered {} requests this period at $0, saving {} (not charged to the budget)",
            cache.response_hits,
            money(cache.response_saved)
        );
    }
}

/// Most keys `report` lists per budget split per key.
const REPORT_TOP_KEYS: usize = 10;

/// The top keys of a budget split per key (`spec.perKey`), current period:
/// spend and tokens against the per-key limits, requests, state.
fn report_keys(s: &mut String, b: &tokenwarden_core::budget::BudgetState) {
    let Some(pk) = b.per_key() else {
        return;
    };
    let all = b.key_totals().len();
    let _ = writeln!(
        s,
        "\nTOP KEYS of {} (by {}; {} of {} keys this period, at most {} + (none) + (other))",
        b.config().source,
        pk.by,
        all.min(REPORT_TOP_KEYS),
        all,
        pk.max_keys,
    );
    let _ = writeln!(
        s,
        "{:<36} {:>14} {:>14} {:>11} {:>11} {:>9} {:<9}",
        "KEY", "SPENT USD", "LIMIT USD", "TOKENS", "LIMIT TOK", "REQUESTS", "STATE"
    );
    let dash = || "-".to_string();
    for (key, t) in b.top_keys(REPORT_TOP_KEYS) {
        let _ = writeln!(
            s,
            "{:<36} {:>14} {:>14} {:>11} {:>11} {:>9} {:<9}",
            truncate(key, 36),
            money(t.spent),
            pk.limit_usd.map_or_else(dash, money),
            t.tokens(),
            pk.limit_tokens.map_or_else(dash, |l| l.to_string()),
            t.requests,
            if b.key_exhausted(key) {
                "Exhausted"
            } else {
                "Ok"
            },
        );
    }
}

/// The text with no padding left at the ends of its lines.
fn trim_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for line in s.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The prompt-cache hit ratio column: `87.3%`, `-` without input.
fn hit(u: &TokenCounts) -> String {
    HitRatio::of(u).map_or_else(|| "-".into(), |r| r.to_string())
}

/// The per-model table of `report`: tokens by kind, cost and share, then
/// the prompt cache's economics (hit ratio, what it saved, what busts
/// wasted, how many).
pub fn report(agg: &Aggregate) -> String {
    macro_rules! row {
        () => {
            "{:<32} {:>9} {:>12} {:>11} {:>11} {:>11} {:>14} {:>6} {:>9} {:>12} {:>12} {:>6}"
        };
    }
    let mut s = String::new();
    let total = agg.total();
    let mut models: Vec<_> = agg.models.iter().collect();
    models.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then(a.0.cmp(b.0)));
    let _ = writeln!(
        s,
        row!(),
        "MODEL (served)",
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "CACHE WRITE",
        "COST USD",
        "SHARE",
        "CACHE HIT",
        "SAVED USD",
        "WASTED USD",
        "BUSTS"
    );
    for (model, t) in &models {
        let share = if total.cost.picos() > 0 {
            format!(
                "{:.1}%",
                t.cost.picos() as f64 * 100.0 / total.cost.picos() as f64
            )
        } else {
            "-".into()
        };
        let cost = if t.unpriced_requests == t.requests && t.requests > 0 {
            "unpriced".to_string()
        } else {
            format!(
                "{}{}",
                money(t.cost),
                if t.unpriced_requests > 0 { "+?" } else { "" }
            )
        };
        let _ = writeln!(
            s,
            row!(),
            truncate(model, 32),
            t.requests,
            t.usage.input_tokens,
            t.usage.output_tokens,
            t.usage.cache_read_tokens,
            t.usage.cache_write_tokens,
            cost,
            share,
            hit(&t.usage),
            money(t.cache.saved),
            money(t.cache.wasted),
            t.cache.busts
        );
    }
    let _ = writeln!(
        s,
        row!(),
        "TOTAL",
        total.requests,
        total.usage.input_tokens,
        total.usage.output_tokens,
        total.usage.cache_read_tokens,
        total.usage.cache_write_tokens,
        money(total.cost),
        "",
        hit(&total.usage),
        money(total.cache.saved),
        money(total.cache.wasted),
        total.cache.busts
    );
    if total.cache.response_hits > 0 {
        let _ = writeln!(
            s,
            "response cache: {} requests answered from stored responses at $0 (in REQUESTS), saving {} (docs/response-cache.md)",
            total.cache.response_hits,
            money(total.cache.response_saved)
        );
    }
    if total.cache.embedding_calls > 0 || total.cache.semantic_hits > 0 {
        let _ = writeln!(
            s,
            "semantic cache: {} of those hits answered a similar prompt; {} embedding calls cost {} (in REQUESTS): net saving {}",
            total.cache.semantic_hits,
            total.cache.embedding_calls,
            money(total.cache.embedding_cost),
            money(total.cache.response_net_saved())
        );
    }
    if total.unpriced_requests > 0 {
        let _ = writeln!(
            s,
            "{} requests to unpriced models are not in the cost (marked +? / unpriced)",
            total.unpriced_requests
        );
    }
    if total.estimated_requests > 0 {
        let _ = writeln!(
            s,
            "{} requests have estimated usage (cut off or answered without usage, or in flight when the sidecar stopped: see docs/guarantees.md)",
            total.estimated_requests
        );
    }
    trim_lines(&s)
}

/// The exact amount in dollars, at least to the cent: `$8.50`,
/// `$0.00041125`, `-$1.00`. Never rounded, so the columns of a report add
/// up to its total and match `GET /ledger` digit for digit.
pub fn money(u: Usd) -> String {
    let exact = u.to_string();
    let (sign, digits) = match exact.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", exact.as_str()),
    };
    let pad = match digits.find('.') {
        None => ".00",
        Some(dot) if digits.len() - dot == 2 => "0",
        Some(_) => "",
    };
    format!("{sign}${digits}{pad}")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The human summary of a compiled config.
pub fn summary(origin: &str, set: &PolicySet, labels: &Labels, cfg: &WorkloadConfig) -> String {
    let mut s = String::new();
    let label_text = if labels.is_empty() {
        "(none)".to_string()
    } else {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let _ = writeln!(
        s,
        "{origin}: {} RoutingPolicy, {} TokenBudget, all valid",
        set.policies.len(),
        set.budgets.len()
    );
    let _ = writeln!(
        s,
        "workload: namespace {}, labels {label_text}",
        cfg.namespace
    );
    summary_routing(&mut s, cfg);
    if let Some(c) = &cfg.conflict {
        let shadowed: Vec<_> = c.shadowed.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            s,
            "conflict: {} applies; shadowed: {}",
            c.chosen,
            shadowed.join(", ")
        );
    }
    if cfg.budgets.is_empty() {
        let _ = writeln!(s, "budgets: none select this workload");
    }
    for b in &cfg.budgets {
        let _ = writeln!(s, "{}", summary_budget(b));
    }
    for w in &cfg.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

/// The summary's routing lines: the policy, its tier ladder and routes.
fn summary_routing(s: &mut String, cfg: &WorkloadConfig) {
    let Some(r) = &cfg.routing else {
        let _ = writeln!(s, "routing: no RoutingPolicy selects this workload");
        return;
    };
    let _ = writeln!(
        s,
        "routing: RoutingPolicy {} ({} providers, {} tiers, {} routes)",
        r.source,
        r.providers.len(),
        r.tiers.len(),
        r.routes.len()
    );
    if !r.tiers.is_empty() {
        let ladder: Vec<_> = r
            .tiers
            .iter()
            .map(|t| format!("{} ({}/{})", t.name, t.provider, t.model))
            .collect();
        let _ = writeln!(s, "  tiers: {}", ladder.join(" -> "));
    }
    for route in &r.routes {
        let target = match &route.target {
            Target::Tier(t) => format!("tier {t}"),
            Target::Model { provider, model } => format!("{provider}/{model}"),
            Target::Passthrough => "passthrough".to_string(),
        };
        let _ = writeln!(s, "  route {:<20} -> {target}", route.name);
    }
    summary_caching(s, &cfg.caching);
}

/// The summary's prompt-cache line, when the policy turns anything on.
fn summary_caching(s: &mut String, c: &tokenwarden_core::workload::CachingConfig) {
    let mut on = Vec::new();
    if let Some(b) = &c.anthropic_breakpoints {
        let mut text = format!("Anthropic breakpoints (ttl {}", b.ttl.as_str());
        for o in &b.minimum_overrides {
            text.push_str(&format!(", minimum {} tokens for {}", o.tokens, o.model));
        }
        text.push(')');
        on.push(text);
    }
    if let Some(k) = &c.openai_prompt_cache_key {
        on.push(format!("OpenAI prompt_cache_key {k:?}"));
    }
    if let Some(g) = &c.volatile_guard {
        on.push(format!(
            "volatile-prefix guard (report after {} busts)",
            g.repeats
        ));
    }
    if !on.is_empty() {
        let _ = writeln!(s, "  caching: {}", on.join("; "));
    }
}

/// The summary's line of one budget: limits, thresholds and rules.
fn summary_budget(b: &BudgetConfig) -> String {
    let mut limit = Vec::new();
    if let Some(u) = b.limit_usd {
        limit.push(format!("${u}"));
    }
    if let Some(t) = b.limit_tokens {
        limit.push(format!("{t} tokens"));
    }
    let mut notes: Vec<_> = b
        .thresholds
        .iter()
        .map(|t| match &t.action {
            ThresholdAction::Alert => format!("{}% alert", t.percent),
            ThresholdAction::Block => format!("{}% block", t.percent),
            ThresholdAction::Downgrade(DowngradeTarget::Tier(tier)) => {
                format!("{}% downgrade to tier {tier}", t.percent)
            }
            ThresholdAction::Downgrade(DowngradeTarget::Model(m)) => {
                format!("{}% downgrade to model {m}", t.percent)
            }
        })
        .collect();
    match &b.on_projected_overrun {
        Some(tokenwarden_core::workload::ProjectedOverrunAction::Alert) => {
            notes.push("projected overrun: alert".into());
        }
        Some(tokenwarden_core::workload::ProjectedOverrunAction::Downgrade(to)) => {
            notes.push(format!(
                "projected overrun: downgrade to {}",
                crate::forecast::target(to)
            ))
        }
        None => {}
    }
    if let Some(cap) = b.per_request_cap_usd {
        notes.push(format!("per-request cap ${cap}"));
    }
    if let Some(lg) = b.loop_guard {
        notes.push(format!(
            "loop guard {} identical in {}s, cool-down {}s",
            lg.max_identical,
            lg.window_ms / 1000,
            lg.cooldown_ms / 1000
        ));
    }
    if let Some(pk) = &b.per_key {
        let mut each = Vec::new();
        if let Some(u) = pk.limit_usd {
            each.push(format!("${u}"));
        }
        if let Some(t) = pk.limit_tokens {
            each.push(format!("{t} tokens"));
        }
        notes.push(format!(
            "per key by {}: {} each, at most {} keys",
            pk.by,
            each.join(" / "),
            pk.max_keys
        ));
    }
    if b.fail_mode == FailMode::Open {
        notes.push("fail open".to_string());
    }
    format!(
        "budget: TokenBudget {} {} {} ({}){}{}",
        b.source,
        b.period,
        limit.join(" / "),
        b.time_zone,
        if notes.is_empty() {
            String::new()
        } else {
            format!(": {}", notes.join(", "))
        },
        if b.shadow { " [shadow]" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use tokenwarden_core::{
        selector::parse_labels, tokens::TokenCounts, usage::Totals, workload::ObjectRef,
    };

    use super::*;

    const BUDGETS: &str = r#"
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: team, namespace: apps}
spec:
  workloadSelector: {matchLabels: {app: agent}}
  period: Daily
  timeZone: Europe/Berlin
  limit: {usd: "10.00"}
  thresholds:
    - {percent: 80, action: Alert}
    - {percent: 100, action: Block}
---
apiVersion: tokenwarden.dev/v1alpha1
kind: TokenBudget
metadata: {name: tokens, namespace: apps}
spec:
  workloadSelector: {matchLabels: {app: agent}}
  period: Monthly
  limit: {tokens: 1000}
  thresholds:
    - {percent: 100, action: Block}
"#;

    fn id(name: &str) -> ObjectRef {
        ObjectRef {
            namespace: "apps".into(),
            name: name.into(),
        }
    }

    fn spent(agg: &mut Aggregate, name: &str, start: &str, usd: &str, tokens: u64) {
        let totals = Totals {
            spent: usd.parse().unwrap(),
            usage: TokenCounts {
                input_tokens: tokens,
                ..TokenCounts::default()
            },
            requests: 3,
            unpriced_requests: 0,
            cache: Default::default(),
            keys: Default::default(),
        };
        agg.budgets
            .entry(id(name))
            .or_default()
            .insert(start.parse().unwrap(), totals);
    }

    fn configured(labels: &str) -> Vec<tokenwarden_core::workload::BudgetConfig> {
        let set = PolicySet::from_yaml("budgets.yaml", BUDGETS).unwrap();
        set.compile("apps", "", &parse_labels(labels).unwrap())
            .budgets
    }

    fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{table}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn the_model_table_shows_what_the_prompt_cache_saved_and_wasted() {
        use tokenwarden_core::usage::cache::{BustReason, CacheBust, CacheFigures, ChangeKind};
        let mut agg = Aggregate::default();
        for (seq, bust) in [(1, false), (2, true)] {
            agg.add(&tokenwarden_core::usage::UsageRecord {
                seq,
                ts: "2026-12-03T10:00:00Z".parse().unwrap(),
                endpoint: tokenwarden_core::workload::Endpoint::Messages,
                requested_model: "claude-sonnet-4-5".into(),
                served_model: "claude-sonnet-4-5".into(),
                provider: "anthropic".into(),
                route: None,
                score: None,
                reason: None,
                attempt: 1,
                status: 200,
                usage: TokenCounts {
                    input_tokens: 100,
                    cache_read_tokens: 9_000,
                    cache_write_tokens: 900,
                    ..TokenCounts::default()
                },
                cost: Some("0.01".parse().unwrap()),
                estimated: false,
                budgets: vec![],
                intent: None,
                replay: None,
                cache: CacheFigures {
                    saved: "0.0243".parse().unwrap(),
                    wasted: if bust {
                        "0.0031".parse().unwrap()
                    } else {
                        Usd::ZERO
                    },
                    bust: bust.then(|| CacheBust {
                        reason: BustReason::VolatilePrefix,
                        section: "system".into(),
                        offset: 14,
                        change: ChangeKind::Timestamp,
                        lost_tokens: 900,
                    }),
                    ..Default::default()
                },
            });
        }
        let text = report(&agg);
        let header = row(&text, "MODEL");
        assert_eq!(
            &header[header.len() - 7..],
            ["CACHE", "HIT", "SAVED", "USD", "WASTED", "USD", "BUSTS"]
        );
        // 18,000 of 20,000 input tokens read from the cache.
        let r = row(&text, "claude-sonnet-4-5");
        assert_eq!(&r[r.len() - 4..], ["90.0%", "$0.0486", "$0.0031", "1"]);
        let t = row(&text, "TOTAL");
        assert_eq!(&t[t.len() - 4..], ["90.0%", "$0.0486", "$0.0031", "1"]);
    }

    #[test]
    fn response_cache_hits_and_their_savings_are_said() {
        use tokenwarden_core::usage::cache::CacheFigures;
        let mut agg = Aggregate::default();
        let record = |seq, hit: bool| tokenwarden_core::usage::UsageRecord {
            seq,
            ts: "2026-12-03T10:00:00Z".parse().unwrap(),
            endpoint: tokenwarden_core::workload::Endpoint::ChatCompletions,
            requested_model: "gpt-4o-mini".into(),
            served_model: "gpt-4o-mini".into(),
            provider: "openai".into(),
            route: None,
            score: None,
            reason: None,
            attempt: u32::from(!hit),
            status: 200,
            usage: TokenCounts::default(),
            cost: Some(Usd::ZERO),
            estimated: false,
            budgets: vec![],
            intent: None,
            replay: None,
            cache: CacheFigures {
                response_hit: hit,
                response_saved: if hit {
                    "0.0125".parse().unwrap()
                } else {
                    Usd::ZERO
                },
                ..Default::default()
            },
        };
        agg.add(&record(1, false));
        assert!(!report(&agg).contains("response cache"));
        assert!(!report(&agg).contains("semantic cache"));
        agg.add(&record(2, true));
        agg.add(&record(3, true));
        assert!(
            report(&agg).contains(
                "response cache: 2 requests answered from stored responses at $0 (in REQUESTS), saving $0.025 (docs/response-cache.md)"
            ),
            "{}",
            report(&agg)
        );
        // A semantic hit, and the embedding call the cache paid for.
        let mut similar = record(4, true);
        similar.cache.response_similarity = 9_731;
        agg.add(&similar);
        let mut embedding = record(5, false);
        embedding.cost = Some("0.00002".parse().unwrap());
        embedding.cache.embedding = true;
        embedding.cache.embedding_cost = "0.00002".parse().unwrap();
        agg.add(&embedding);
        assert!(
            report(&agg).contains(
                "semantic cache: 1 of those hits answered a similar prompt; 1 embedding calls cost $0.00002 (in REQUESTS): net saving $0.03748"
            ),
            "{}",
            report(&agg)
        );
    }

    #[test]
    fn estimated_rows_are_explained_for_every_cause() {
        let mut agg = Aggregate::default();
        let mut rec = |estimated| {
            let r = tokenwarden_core::usage::UsageRecord {
                seq: agg.last_seq + 1,
                ts: "2026-12-03T10:00:00Z".parse().unwrap(),
                endpoint: tokenwarden_core::workload::Endpoint::ChatCompletions,
                requested_model: "m".into(),
                served_model: "m".into(),
                provider: "openai".into(),
                route: None,
                score: None,
                reason: None,
                attempt: 1,
                status: 200,
                usage: TokenCounts::default(),
                cost: Some(Usd::ZERO),
                estimated,
                budgets: vec![],
                intent: None,
                replay: None,
                cache: Default::default(),
            };
            agg.add(&r);
        };
        rec(true);
        rec(false);
        let text = report(&agg);
        assert!(
            text.contains("1 requests have estimated usage (cut off or answered without usage, or in flight when the sidecar stopped"),
            "{text}"
        );
        assert!(!text.contains("streams cut off"), "{text}");
    }

    #[test]
    fn money_is_exact_and_at_least_to_the_cent() {
        let m = |s: &str| money(s.parse().unwrap());
        assert_eq!(m("0"), "$0.00");
        assert_eq!(m("100"), "$100.00");
        assert_eq!(m("8.5"), "$8.50");
        assert_eq!(m("2.25"), "$2.25");
        assert_eq!(m("0.00041125"), "$0.00041125");
        assert_eq!(m("0.000000000001"), "$0.000000000001");
        assert_eq!(money(Usd::from_picos(-1_000_000_000_000)), "-$1.00");
        assert_eq!(money(Usd::from_picos(-500_000_000_000)), "-$0.50");
    }

    #[test]
    fn budgets_show_the_current_period_with_limit_remaining_and_state() {
        let mut agg = Aggregate::default();
        // Berlin is UTC+1 in December: the day began at 23:00 UTC.
        spent(&mut agg, "team", "2026-12-02T23:00:00Z", "8.5", 40);
        spent(&mut agg, "tokens", "2026-11-30T23:00:00Z", "0.01", 1000);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let text = report_budgets(&agg, Some(&configured("app=agent")), &BTreeMap::new(), now);
        assert_eq!(
            row(&text, "apps/team"),
            [
                "apps/team",
                "Daily",
                "2026-12-02T23:00:00Z",
                "2026-12-03T23:00:00Z",
                "$8.50",
                "$10.00",
                "$1.50",
                "85%",
                "40",
                "-",
                "Threshold"
            ]
        );
        // No time zone: UTC; the month's tokens are used up.
        let tokens = row(&text, "apps/tokens");
        assert_eq!(tokens[2], "2026-12-01T00:00:00Z");
        assert_eq!(tokens[3], "2027-01-01T00:00:00Z");
        // The ledger's period began in Berlin's November 30th, 23:00 UTC;
        // the UTC month begins an hour later: another period, nothing spent.
        assert_eq!(&tokens[4..], ["$0.00", "-", "-", "0%", "0", "1000", "Ok"]);
        assert!(text.lines().all(|l| l == l.trim_end()), "{text:?}");
        let models = report(&agg);
        assert!(models.lines().all(|l| l == l.trim_end()), "{models:?}");
    }

    #[test]
    fn a_budget_s_response_cache_hits_are_said_under_the_table() {
        let mut agg = Aggregate::default();
        spent(&mut agg, "team", "2026-12-02T23:00:00Z", "8.5", 40);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let text = report_budgets(&agg, Some(&configured("app=agent")), &BTreeMap::new(), now);
        assert!(!text.contains("response cache"), "{text}");
        let t = agg
            .budgets
            .get_mut(&id("team"))
            .and_then(|p| p.values_mut().last())
            .unwrap();
        t.cache.response_hits = 3;
        t.cache.response_saved = "0.0375".parse().unwrap();
        let text = report_budgets(&agg, Some(&configured("app=agent")), &BTreeMap::new(), now);
        assert!(
            text.contains(
                "budget apps/team: response cache answered 3 requests this period at $0, saving $0.0375 (not charged to the budget)"
            ),
            "{text}"
        );
        // The budget's row is unchanged: the hits are not spend.
        assert_eq!(
            row(&text, "apps/team")[4..9],
            ["$8.50", "$10.00", "$1.50", "85%", "40"]
        );
    }

    #[test]
    fn a_period_that_ended_counts_nothing_in_the_current_one() {
        let mut agg = Aggregate::default();
        spent(&mut agg, "team", "2026-12-01T23:00:00Z", "9.99", 10);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let text = report_budgets(&agg, Some(&configured("app=agent")), &BTreeMap::new(), now);
        let team = row(&text, "apps/team");
        assert_eq!(team[2], "2026-12-02T23:00:00Z");
        assert_eq!(&team[4..8], ["$0.00", "$10.00", "$10.00", "0%"]);
        assert_eq!(team[10], "Ok");
    }

    #[test]
    fn without_a_matching_policy_the_ledger_s_latest_period_is_shown_and_why() {
        let mut agg = Aggregate::default();
        spent(&mut agg, "team", "2026-12-01T23:00:00Z", "1", 10);
        spent(&mut agg, "team", "2026-12-02T23:00:00Z", "2.25", 20);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        let line = "budget apps/team: period from 2026-12-02T23:00:00Z: spent $2.25 over 3 requests, 20 tokens";

        let text = report_budgets(&agg, None, &BTreeMap::new(), now);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with(line), "{text}");
        assert!(
            text.contains("give report the sidecar's --policy-file"),
            "{text}"
        );

        let text = report_budgets(&agg, Some(&configured("app=other")), &BTreeMap::new(), now);
        assert!(text.starts_with(line), "{text}");
        assert!(text.contains("check --namespace and --labels"), "{text}");

        // A budget the policy dropped is still listed, after the table.
        let only_tokens: Vec<_> = configured("app=agent")
            .into_iter()
            .filter(|b| b.source.name == "tokens")
            .collect();
        let text = report_budgets(&agg, Some(&only_tokens), &BTreeMap::new(), now);
        assert!(row(&text, "apps/tokens").len() == 11, "{text}");
        assert!(
            text.contains(&format!("{line} (no longer in the policy file)")),
            "{text}"
        );
    }

    /// Burn samples of `name`'s period starting at `start`: `(at, usd, tokens)`.
    fn ring(start: &str, samples: &[(&str, &str, u64)]) -> BurnSamples {
        BurnSamples {
            period_start: start.parse().unwrap(),
            samples: samples
                .iter()
                .map(|(at, usd, tokens)| tokenwarden_core::forecast::BurnSample {
                    at: at.parse().unwrap(),
                    spent: usd.parse().unwrap(),
                    tokens: *tokens,
                })
                .collect(),
        }
    }

    #[test]
    fn budgets_show_the_forecast_from_the_samples_on_file_or_say_there_is_none() {
        let mut agg = Aggregate::default();
        spent(&mut agg, "team", "2026-12-02T23:00:00Z", "8.5", 40);
        spent(&mut agg, "tokens", "2026-12-01T00:00:00Z", "0.01", 900);
        let now = "2026-12-03T10:00:00Z".parse().unwrap();
        // The sidecar last wrote its samples at 09:30; report adds the
        // ledger's totals at 10:00 ($8.50, 40 tokens). Money: $6.00 over
        // the 6 h since 04:00 and $1.00 over the last hour are both $1/h:
        // 8.50 + 13 h × 1 = $21.50, and the $10 limit is reached 1.5 h
        // after 10:00. Tokens: 30 over 6 h (5/h) is below 10 over the last
        // hour: 40 + 13 × 5 = 105.
        let mut burn = BTreeMap::new();
        burn.insert(
            id("team"),
            ring(
                "2026-12-02T23:00:00Z",
                &[
                    ("2026-12-03T04:00:00Z", "2.50", 10),
                    ("2026-12-03T09:00:00Z", "7.50", 30),
                    ("2026-12-03T09:30:00Z", "8.00", 35),
                ],
            ),
        );
        let text = report_budgets(&agg, Some(&configured("app=agent")), &burn, now);
        let table: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("PROJECTED USD"))
            .take(3)
            .collect();
        assert_eq!(
            table,
            [
                "BUDGET                            PROJECTED USD  PROJECTED TOK EXHAUSTION             PROJECTION",
                "apps/team                                $21.50            105 2026-12-03T11:30:00Z   min(mean 6h, mean 1h) as of 2026-12-03T10:00:00Z",
                "apps/tokens                                   -              - -                      no history (no burn samples of this period in the state dir's forecast.json)",
            ],
            "{text}"
        );

        // Samples spanning less than the short window (09:30 on file, 10:00
        // added): warming up until an hour after the first.
        burn.insert(
            id("tokens"),
            ring(
                "2026-12-01T00:00:00Z",
                &[("2026-12-03T09:30:00Z", "0.01", 850)],
            ),
        );
        let text = report_budgets(&agg, Some(&configured("app=agent")), &burn, now);
        let tokens = text
            .lines()
            .filter(|l| l.starts_with("apps/tokens"))
            .nth(1)
            .unwrap();
        assert!(
            tokens.ends_with("- -                      warming up until 2026-12-03T10:30:00Z"),
            "{tokens}"
        );
        // A sample of another period, or one above the ledger's totals
        // (a journal reset under the file), is no history.
        burn.insert(
            id("tokens"),
            ring(
                "2026-11-01T00:00:00Z",
                &[("2026-11-30T09:30:00Z", "0.01", 850)],
            ),
        );
        burn.insert(
            id("team"),
            ring(
                "2026-12-02T23:00:00Z",
                &[("2026-12-03T04:00:00Z", "9.00", 10)],
            ),
        );
        let text = report_budgets(&agg, Some(&configured("app=agent")), &burn, now);
        assert_eq!(text.matches("no history").count(), 2, "{text}");
    }
}
