//! Budget books ↔ TokenBudget status, and RoutingPolicy status.

use std::collections::BTreeMap;

pub mod projection;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use tokenwarden_core::{
    book::{Book, BookState, SidecarEntry, Spend},
    budget::State,
    forecast::BurnSamples,
    money::Usd,
    tokens::TokenCounts,
    usage::{
        KeyTotals, Totals,
        cache::{CacheTotals, HitRatio},
    },
    workload::ThresholdAction,
};
use tokenwarden_crds::{
    KeyLeaseLedger, LedgerSpend, LedgerStatus, SidecarLedger, TokenBudgetStatus,
    common::conditions as c,
    token_budget::{
        BudgetState as CrdState, PromptCacheSummary, ResponseCacheSummary, SpendEntry,
        TokenCounts as CrdCounts,
    },
};

/// How many models / workloads the status lists.
const TOP: usize = 10;

fn picos(s: &str) -> Usd {
    Usd::from_picos(s.parse::<i128>().unwrap_or(0))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn counts(u: &TokenCounts) -> CrdCounts {
    CrdCounts {
        input: i64_of(u.input_tokens),
        output: i64_of(u.output_tokens),
        cache_read: i64_of(u.cache_read_tokens),
        cache_write: i64_of(u.cache_write_tokens),
        cache_write1h: i64_of(u.cache_write_1h_tokens),
        total: i64_of(u.total_tokens()),
    }
}

fn usage(t: &CrdCounts) -> TokenCounts {
    TokenCounts {
        input_tokens: u64_of(t.input),
        output_tokens: u64_of(t.output),
        cache_read_tokens: u64_of(t.cache_read),
        cache_write_tokens: u64_of(t.cache_write),
        cache_write_1h_tokens: u64_of(t.cache_write1h),
    }
}

fn spend_out(name: &str, s: &Spend) -> LedgerSpend {
    LedgerSpend {
        name: name.to_string(),
        picos: s.cost.picos().to_string(),
        requests: i64_of(s.requests),
        tokens: counts(&s.usage),
        unpriced: i64_of(s.unpriced),
        estimated: i64_of(s.estimated),
        cache_saved_picos: nonzero_picos(s.cache.saved),
        cache_wasted_picos: nonzero_picos(s.cache.wasted),
        cache_busts: i64_of(s.cache.busts),
    }
}

fn nonzero_picos(v: Usd) -> Option<String> {
    (!v.is_zero()).then(|| v.picos().to_string())
}

fn spend_in(s: &LedgerSpend) -> Spend {
    Spend {
        cost: picos(&s.picos),
        requests: u64_of(s.requests),
        usage: usage(&s.tokens),
        unpriced: u64_of(s.unpriced),
        estimated: u64_of(s.estimated),
        cache: CacheTotals {
            saved: s.cache_saved_picos.as_deref().map_or(Usd::ZERO, picos),
            wasted: s.cache_wasted_picos.as_deref().map_or(Usd::ZERO, picos),
            busts: u64_of(s.cache_busts),
            // A budget's response-cache figures are its own ledger
            // fields (hits are in no model's or workload's spend).
            ..CacheTotals::default()
        },
    }
}

/// One per-key key's exact spend, as the status persists it.
fn key_out(key: &str, k: &KeyTotals) -> LedgerSpend {
    LedgerSpend {
        name: key.to_string(),
        picos: k.spent.picos().to_string(),
        requests: i64_of(k.requests),
        tokens: counts(&k.usage),
        unpriced: i64_of(k.unpriced_requests),
        ..LedgerSpend::default()
    }
}

fn key_in(s: &LedgerSpend) -> KeyTotals {
    KeyTotals {
        spent: picos(&s.picos),
        usage: usage(&s.tokens),
        requests: u64_of(s.requests),
        unpriced_requests: u64_of(s.unpriced),
    }
}

/// The keys that spent most, for `status.topKeys`.
fn top_keys(t: &Totals) -> Vec<SpendEntry> {
    tokenwarden_core::usage::top_keys(&t.keys, TOP)
        .into_iter()
        .map(|(key, k)| SpendEntry {
            name: key.clone(),
            spent_usd: k.spent.to_string(),
            requests: i64_of(k.requests),
            ..SpendEntry::default()
        })
        .collect()
}

fn sidecars_in(l: &[SidecarLedger]) -> BTreeMap<String, SidecarEntry> {
    l.iter()
        .map(|s| {
            (
                s.id.clone(),
                SidecarEntry {
                    seq: u64_of(s.seq),
                    granted: picos(&s.granted_picos),
                    granted_tokens: u64_of(s.granted_tokens),
                    charged: picos(&s.charged_picos),
                    charged_tokens: u64_of(s.charged_tokens),
                    expires_ms: s.expires_unix_millis,
                    version: u64_of(s.version),
                },
            )
        })
        .collect()
}

fn sidecars_out(book: &Book) -> Vec<SidecarLedger> {
    book.sidecars()
        .iter()
        .map(|(id, e)| SidecarLedger {
            id: id.clone(),
            seq: i64_of(e.seq),
            granted_picos: e.granted.picos().to_string(),
            granted_tokens: i64_of(e.granted_tokens),
            charged_picos: e.charged.picos().to_string(),
            charged_tokens: i64_of(e.charged_tokens),
            expires_unix_millis: e.expires_ms,
            version: i64_of(e.version),
        })
        .collect()
}

/// The persisted lease pools of a budget's per-key keys → their book
/// states, for the period the ledger is of.
pub fn key_pool_states(status: Option<&TokenBudgetStatus>) -> Vec<(String, BookState)> {
    let Some(l) = status.and_then(|s| s.ledger.as_ref()) else {
        return Vec::new();
    };
    let Ok(period_start) = Timestamp::from_second(l.period_start_unix) else {
        return Vec::new();
    };
    l.key_leases
        .iter()
        .map(|k| {
            let state = BookState {
                period_start,
                epoch: u64_of(k.epoch),
                totals: Totals {
                    spent: picos(&k.spent_picos),
                    usage: TokenCounts {
                        input_tokens: u64_of(k.spent_tokens),
                        ..TokenCounts::default()
                    },
                    ..Totals::default()
                },
                sidecars: sidecars_in(&k.sidecars),
                ..BookState::default()
            };
            (k.key.clone(), state)
        })
        .collect()
}

/// The persisted ledger in a status → a book state (`None`: no ledger yet
/// or unreadable, start empty).
pub fn book_state(status: Option<&TokenBudgetStatus>) -> Option<BookState> {
    let l = status?.ledger.as_ref()?;
    let period_start = Timestamp::from_second(l.period_start_unix).ok()?;
    let sum = |f: fn(&TokenCounts) -> u64, m: &[LedgerSpend]| -> u64 {
        m.iter().map(|s| f(&usage(&s.tokens))).sum()
    };
    Some(BookState {
        period_start,
        epoch: u64_of(l.epoch),
        totals: Totals {
            spent: picos(&l.spent_picos),
            usage: TokenCounts {
                input_tokens: sum(|u| u.input_tokens, &l.models),
                output_tokens: sum(|u| u.output_tokens, &l.models),
                cache_read_tokens: sum(|u| u.cache_read_tokens, &l.models),
                cache_write_tokens: sum(|u| u.cache_write_tokens, &l.models),
                cache_write_1h_tokens: sum(|u| u.cache_write_1h_tokens, &l.models),
            },
            requests: l.models.iter().map(|m| u64_of(m.requests)).sum(),
            unpriced_requests: l.models.iter().map(|m| u64_of(m.unpriced)).sum(),
            cache: CacheTotals {
                response_hits: u64_of(l.response_cache_hits),
                response_saved: l
                    .response_cache_saved_picos
                    .as_deref()
                    .map_or(Usd::ZERO, picos),
                ..l.models.iter().fold(CacheTotals::default(), |mut t, m| {
                    t.merge(&spend_in(m).cache);
                    t
                })
            },
            keys: l.keys.iter().map(|k| (k.name.clone(), key_in(k))).collect(),
        },
        sidecars: sidecars_in(&l.sidecars),
        models: l
            .models
            .iter()
            .map(|m| (m.name.clone(), spend_in(m)))
            .collect(),
        workloads: l
            .workloads
            .iter()
            .map(|m| (m.name.clone(), spend_in(m)))
            .collect(),
        unmet: l.unmet_picos.as_deref().map(picos),
        unmet_tokens: l.unmet_tokens.map(u64_of),
    })
}

fn top(m: &BTreeMap<String, Spend>) -> Vec<SpendEntry> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then(a.0.cmp(b.0)));
    v.into_iter()
        .take(TOP)
        .map(|(name, s)| {
            let cached = s.usage.cache_read_tokens > 0 || s.usage.cache_write_tokens > 0;
            SpendEntry {
                name: name.clone(),
                spent_usd: s.cost.to_string(),
                requests: i64_of(s.requests),
                cache_hit_ratio: cached
                    .then(|| HitRatio::of(&s.usage).map(HitRatio::as_decimal))
                    .flatten(),
                cache_saved_usd: cached.then(|| s.cache.saved.to_string()),
                cache_wasted_usd: (!s.cache.wasted.is_zero()).then(|| s.cache.wasted.to_string()),
                cache_busts: (s.cache.busts > 0).then(|| i64_of(s.cache.busts)),
            }
        })
        .collect()
}

/// The period's prompt-cache summary; `None` before any input.
fn prompt_cache(t: &Totals) -> Option<PromptCacheSummary> {
    let ratio = HitRatio::of(&t.usage)?;
    Some(PromptCacheSummary {
        hit_ratio: Some(ratio.as_decimal()),
        saved_usd: t.cache.saved.to_string(),
        wasted_usd: t.cache.wasted.to_string(),
        busts: i64_of(t.cache.busts),
    })
}

use tokenwarden_core::period::rfc3339_seconds as rfc3339;

/// Set a condition, keeping its transition time when the status is unchanged.
#[allow(
    clippy::too_many_arguments,
    reason = "one call per condition field; a struct adds nothing"
)]
pub fn set_condition(
    conds: &mut Vec<Condition>,
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|p| p.type_ == type_ && p.status == status)
        .map(|p| p.last_transition_time.clone());
    conds.push(Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: since.unwrap_or_else(|| Time(now_k8s(now))),
    });
}

fn now_k8s(now: Timestamp) -> jiff::Timestamp {
    // k8s-openapi 0.29 uses jiff timestamps; truncate to seconds (metav1.Time).
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// The status of a budget from its book, its per-key lease pools
/// (`key_pools`) and its burn samples (`burn`, for the forecast).
/// `previous` keeps condition transition times.
pub fn budget_status<'a>(
    book: &Book,
    key_pools: impl Iterator<Item = (&'a String, &'a Book)>,
    burn: &BurnSamples,
    previous: Option<&TokenBudgetStatus>,
    now: Timestamp,
) -> TokenBudgetStatus {
    let cfg = book.config();
    let t = book.totals();
    let w = book.window();
    let prev: &[Condition] = previous.map_or(&[], |p| &p.conditions);
    let forecast = projection::forecast_of(book, burn, now);
    let mut conditions = budget_conditions(book, prev, now);
    let (overrun, reason, message) = projection::condition(book, &forecast);
    set_condition(
        &mut conditions,
        prev,
        c::PROJECTED_OVERRUN,
        overrun,
        reason,
        message,
        cfg.generation,
        now,
    );
    let mut ledger = ledger_status(book, key_pools);
    ledger.burn = projection::burn_ledger(burn);
    let mut st = TokenBudgetStatus {
        observed_generation: Some(cfg.generation),
        period_start: Some(rfc3339(w.start)),
        period_end: Some(rfc3339(w.end)),
        spent_usd: Some(t.spent.to_string()),
        remaining_usd: cfg
            .limit_usd
            .map(|l| l.saturating_sub(t.spent).max(Usd::ZERO).to_string()),
        tokens: Some(counts(&t.usage)),
        remaining_tokens: cfg
            .limit_tokens
            .map(|l| i64_of(l.saturating_sub(t.tokens()))),
        requests: Some(i64_of(t.requests)),
        unpriced_requests: Some(i64_of(t.unpriced_requests)),
        top_models: top(book.models()),
        top_workloads: top(book.workloads()),
        top_keys: top_keys(t),
        prompt_cache: prompt_cache(t),
        response_cache: (t.cache.response_hits > 0).then(|| ResponseCacheSummary {
            hits: i64_of(t.cache.response_hits),
            saved_usd: t.cache.response_saved.to_string(),
        }),
        state: Some(match book.budget_state() {
            State::Ok => CrdState::Ok,
            State::Threshold => CrdState::Threshold,
            State::Exhausted => CrdState::Exhausted,
        }),
        conditions,
        ledger: Some(ledger),
        ..TokenBudgetStatus::default()
    };
    projection::fill(&mut st, &forecast);
    st
}

/// Ready, ThresholdCrossed and Exhausted of a budget.
fn budget_conditions(book: &Book, prev: &[Condition], now: Timestamp) -> Vec<Condition> {
    let generation = book.config().generation;
    let pct = book.percent_spent();
    let mut conds = Vec::new();
    set_condition(
        &mut conds,
        prev,
        c::READY,
        true,
        c::REASON_ACCEPTED,
        "the budget is valid and enforced by leases".into(),
        generation,
        now,
    );
    let (th_on, th_reason, th_msg) = match book.config().active_threshold(pct) {
        Some(th) => (
            true,
            match th.action {
                ThresholdAction::Alert => c::REASON_ALERT,
                ThresholdAction::Downgrade(_) => c::REASON_DOWNGRADE,
                ThresholdAction::Block => c::REASON_BLOCK,
            },
            format!("{pct}% spent this period (threshold {}%)", th.percent),
        ),
        None => (
            false,
            c::REASON_WITHIN_BUDGET,
            format!("{pct}% spent this period"),
        ),
    };
    set_condition(
        &mut conds,
        prev,
        c::THRESHOLD_CROSSED,
        th_on,
        th_reason,
        th_msg,
        generation,
        now,
    );
    let exhausted = book.budget_state() == State::Exhausted;
    set_condition(
        &mut conds,
        prev,
        c::EXHAUSTED,
        exhausted,
        if exhausted {
            c::REASON_LIMIT_REACHED
        } else {
            c::REASON_WITHIN_BUDGET
        },
        exhausted_message(book),
        generation,
        now,
    );
    conds
}

/// What the Exhausted condition says: why the budget is exhausted (and
/// when it resets), or that it is not.
fn exhausted_message(book: &Book) -> String {
    let t = book.totals();
    let end = rfc3339(book.window().end);
    let exhausted = book.budget_state() == State::Exhausted;
    match (book.unmet(), book.config().limit_usd) {
        ((Some(need), _), Some(l)) if exhausted && t.spent < l => format!(
            "spent ${} of ${}; the ${} left is less than the ${need} a request needed; \
             resets at {end}",
            t.spent,
            l,
            book.cap_usd().unwrap_or(l).saturating_sub(t.spent),
        ),
        (_, Some(l)) if exhausted => format!("spent ${} of ${}; resets at {end}", t.spent, l),
        _ if exhausted => format!("token limit reached; resets at {end}"),
        _ => format!("within the limit; the period ends at {end}"),
    }
}

/// The persisted ledger of a book and its per-key lease pools (what a new
/// leader restores from).
fn ledger_status<'a>(
    book: &Book,
    key_pools: impl Iterator<Item = (&'a String, &'a Book)>,
) -> LedgerStatus {
    let t = book.totals();
    let sidecars = sidecars_out(book);
    let key_leases = key_pools
        .map(|(key, b)| KeyLeaseLedger {
            key: key.clone(),
            epoch: i64_of(b.epoch()),
            spent_picos: b.totals().spent.picos().to_string(),
            spent_tokens: i64_of(b.totals().tokens()),
            sidecars: sidecars_out(b),
        })
        .collect();
    let (unmet, unmet_tokens) = book.unmet();
    LedgerStatus {
        period_start_unix: book.window().start.as_second(),
        epoch: i64_of(book.epoch()),
        spent_picos: t.spent.picos().to_string(),
        spent_tokens: i64_of(t.tokens()),
        sidecars,
        models: book.models().iter().map(|(k, v)| spend_out(k, v)).collect(),
        workloads: book
            .workloads()
            .iter()
            .map(|(k, v)| spend_out(k, v))
            .collect(),
        keys: t.keys.iter().map(|(k, v)| key_out(k, v)).collect(),
        key_leases,
        unmet_picos: unmet.map(|u| u.picos().to_string()),
        unmet_tokens: unmet_tokens.map(i64_of),
        response_cache_hits: i64_of(t.cache.response_hits),
        response_cache_saved_picos: nonzero_picos(t.cache.response_saved),
        burn: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenwarden_core::{
        period::Period,
        usage::{BudgetPeriodRef, UsageRecord},
        workload::{BudgetConfig, Endpoint, FailMode, ObjectRef},
    };

    /// The status of a book without per-key pools or burn samples.
    fn status_of(book: &Book, now: Timestamp) -> TokenBudgetStatus {
        budget_status(
            book,
            std::iter::empty(),
            &BurnSamples::new(&book.window()),
            None,
            now,
        )
    }

    #[test]
    fn a_book_round_trips_through_status() {
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let cfg = BudgetConfig {
            source: ObjectRef::new("ns", "team"),
            generation: 3,
            period: Period::Daily,
            time_zone: "UTC".into(),
            limit_usd: Some("5".parse().unwrap()),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: None,
            on_projected_overrun: None,
        };
        let mut book = Book::new(cfg.clone(), now).unwrap();
        book.grant(
            "s1",
            tokenwarden_core::book::LeaseAsk::want("1".parse().unwrap()),
            now,
            30_000,
        );
        let rec = UsageRecord {
            seq: 7,
            ts: now,
            endpoint: Endpoint::Messages,
            requested_model: "claude-x".into(),
            served_model: "claude-y".into(),
            provider: "anthropic".into(),
            route: None,
            score: None,
            reason: None,
            attempt: 1,
            status: 200,
            usage: TokenCounts {
                input_tokens: 10,
                output_tokens: 20,
                cache_read_tokens: 30,
                cache_write_tokens: 40,
                cache_write_1h_tokens: 15,
            },
            cost: Some("0.000123456789".parse().unwrap()),
            estimated: true,
            budgets: vec![BudgetPeriodRef {
                budget: ObjectRef::new("ns", "team"),
                period_start: book.window().start,
                key: None,
            }],
            intent: None,
            replay: None,
            cache: tokenwarden_core::usage::cache::CacheFigures {
                saved: "0.000081".parse().unwrap(),
                wasted: "0.0000069".parse().unwrap(),
                bust: Some(tokenwarden_core::usage::cache::CacheBust {
                    reason: tokenwarden_core::usage::cache::BustReason::VolatilePrefix,
                    section: "system".into(),
                    offset: 14,
                    change: tokenwarden_core::usage::cache::ChangeKind::Timestamp,
                    lost_tokens: 2,
                }),
                ..Default::default()
            },
        };
        book.apply("s1", "ns/web", book.window().start, &rec, now);
        let st = status_of(&book, now);
        assert_eq!(st.response_cache, None);
        // Two response-cache hits: counted and saved, never spent.
        let mut hit = rec.clone();
        hit.usage = TokenCounts::default();
        hit.cost = Some(Usd::ZERO);
        hit.cache = tokenwarden_core::usage::cache::CacheFigures {
            response_hit: true,
            response_saved: "0.0002".parse().unwrap(),
            ..Default::default()
        };
        for seq in [8, 9] {
            hit.seq = seq;
            book.apply("s1", "ns/web", book.window().start, &hit, now);
        }
        let st = status_of(&book, now);
        assert_eq!(
            st.response_cache,
            Some(ResponseCacheSummary {
                hits: 2,
                saved_usd: "0.0004".into(),
            })
        );
        assert_eq!(st.requests, Some(1));
        assert_eq!(st.spent_usd.as_deref(), Some("0.000123456789"));
        assert_eq!(st.remaining_usd.as_deref(), Some("4.999876543211"));
        assert_eq!(st.top_models[0].name, "claude-y");
        // The prompt cache's economics: 30 of 80 input tokens read.
        let m = &st.top_models[0];
        assert_eq!(
            (
                m.cache_hit_ratio.as_deref(),
                m.cache_saved_usd.as_deref(),
                m.cache_wasted_usd.as_deref(),
                m.cache_busts
            ),
            (Some("0.375"), Some("0.000081"), Some("0.0000069"), Some(1))
        );
        assert_eq!(st.top_workloads[0].cache_busts, Some(1));
        assert_eq!(
            st.prompt_cache,
            Some(PromptCacheSummary {
                hit_ratio: Some("0.375".into()),
                saved_usd: "0.000081".into(),
                wasted_usd: "0.0000069".into(),
                busts: 1,
            })
        );
        assert_eq!(st.tokens.as_ref().map(|t| t.cache_write1h), Some(15));
        assert_eq!(st.period_start.as_deref(), Some("2026-11-22T00:00:00Z"));
        let json = serde_json::to_value(&st).unwrap();
        let back: TokenBudgetStatus = serde_json::from_value(json).unwrap();
        let state = book_state(Some(&back)).unwrap();
        assert_eq!(state, book.to_state());
        let restored = Book::restore(cfg, now, state).unwrap();
        assert_eq!(restored.lease("s1"), book.lease("s1"));
        assert_eq!(restored.totals().cache.response_hits, 2);
    }

    #[test]
    fn per_key_spend_is_in_status_and_survives_a_restart() {
        use tokenwarden_core::workload::{KeySource, PerKeyConfig};
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        let cfg = BudgetConfig {
            source: ObjectRef::new("ns", "agents"),
            generation: 1,
            period: Period::Daily,
            time_zone: "UTC".into(),
            limit_usd: Some("5".parse().unwrap()),
            limit_tokens: None,
            thresholds: vec![],
            per_request_cap_usd: None,
            loop_guard: None,
            fail_mode: FailMode::Closed,
            shadow: false,
            per_key: Some(PerKeyConfig {
                by: KeySource::Header("x-agent-session".into()),
                limit_usd: Some("1".parse().unwrap()),
                limit_tokens: None,
                max_keys: 2,
            }),
            on_projected_overrun: None,
        };
        let mut book = Book::new(cfg.clone(), now).unwrap();
        let rec = |seq: u64, key: &str, cost: &str| UsageRecord {
            seq,
            ts: now,
            endpoint: Endpoint::ChatCompletions,
            requested_model: "gpt-5".into(),
            served_model: "gpt-5-mini".into(),
            provider: "openai".into(),
            route: None,
            score: None,
            reason: None,
            attempt: 1,
            status: 200,
            usage: TokenCounts {
                input_tokens: 10,
                output_tokens: 5,
                ..TokenCounts::default()
            },
            cost: Some(cost.parse().unwrap()),
            estimated: false,
            budgets: vec![BudgetPeriodRef {
                budget: ObjectRef::new("ns", "agents"),
                period_start: "2026-11-22T00:00:00Z".parse().unwrap(),
                key: Some(key.into()),
            }],
            intent: None,
            replay: None,
            cache: Default::default(),
        };
        let start = book.window().start;
        book.apply("s1", "ns/web", start, &rec(1, "sess-a", "0.25"), now);
        book.apply("s2", "ns/web", start, &rec(1, "sess-a", "0.50"), now);
        book.apply("s2", "ns/web", start, &rec(2, "sess-b", "0.125"), now);
        // Past maxKeys (2): the operator bounds the keys too.
        book.apply("s2", "ns/web", start, &rec(3, "sess-c", "0.0625"), now);
        book.apply("s2", "ns/web", start, &rec(3, "sess-c", "9"), now);
        let st = status_of(&book, now);
        let top: Vec<(&str, &str, i64)> = st
            .top_keys
            .iter()
            .map(|e| (e.name.as_str(), e.spent_usd.as_str(), e.requests))
            .collect();
        assert_eq!(
            top,
            [
                ("sess-a", "0.75", 2),
                ("sess-b", "0.125", 1),
                ("(other)", "0.0625", 1)
            ]
        );
        let ledger = st.ledger.as_ref().unwrap();
        assert_eq!(ledger.keys.len(), 3);
        // In key order: "(other)", "sess-a", "sess-b".
        assert_eq!(ledger.keys[1].name, "sess-a");
        assert_eq!(ledger.keys[1].picos, "750000000000");
        assert_eq!(ledger.keys[1].tokens.total, 30);
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["topKeys"][0]["name"], "sess-a");
        let back: TokenBudgetStatus = serde_json::from_value(json).unwrap();
        let state = book_state(Some(&back)).unwrap();
        assert_eq!(state, book.to_state());
        let restored = Book::restore(cfg, now, state).unwrap();
        assert_eq!(restored.totals().keys, book.totals().keys);
    }
}
