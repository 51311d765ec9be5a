//! The forecast part of a TokenBudget's status: `projectedSpendUsd`,
//! `projectedTokens`, `projectedExhaustion`, `projection`, the
//! `ProjectedOverrun` condition (and the text its Events share), and the
//! burn samples persisted in `status.ledger.burn` so a new leader does not
//! start cold. The estimator is [`tokenwarden_core::forecast`]'s.

use jiff::{Timestamp, tz::TimeZone};
use tokenwarden_core::{
    book::Book,
    forecast::{BurnSample, BurnSamples, Forecast, forecast},
    money::Usd,
    period::Window,
};
use tokenwarden_crds::{TokenBudgetStatus, common::conditions as c, token_budget::BurnLedger};

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

use tokenwarden_core::period::rfc3339_seconds as rfc3339;

/// The forecast of `book`'s period from its burn samples, as of `now`,
/// against the budget's limits.
pub fn forecast_of(book: &Book, burn: &BurnSamples, now: Timestamp) -> Forecast {
    let cfg = book.config();
    forecast(burn, &book.window(), now, cfg.limit_usd, cfg.limit_tokens)
}

/// Write the projected fields of `f` into `st`.
pub fn fill(st: &mut TokenBudgetStatus, f: &Forecast) {
    st.projected_spend_usd = f.projected_spend().map(|u| u.to_string());
    st.projected_tokens = f.projected_tokens().map(i64_of);
    st.projected_exhaustion = f.projected_exhaustion().map(rfc3339);
    st.projection = Some(f.note());
}

/// The `ProjectedOverrun` condition: (status, reason, message). True
/// while the projection reaches a limit by the period's end.
pub fn condition(book: &Book, f: &Forecast) -> (bool, &'static str, String) {
    let reason = match f {
        Forecast::WarmingUp { .. } => c::REASON_WARMING_UP,
        _ if f.overrun() => c::REASON_PROJECTED_OVER_LIMIT,
        _ => c::REASON_PROJECTED_WITHIN_LIMIT,
    };
    (f.overrun(), reason, message(book, f))
}

/// What the condition and its Events say: the projection against the
/// limits, and when a limit is reached at this rate.
pub fn message(book: &Book, f: &Forecast) -> String {
    let p = match f {
        Forecast::WarmingUp { ready_at } => {
            return format!(
                "not enough history this period for a forecast: warming up until {}",
                rfc3339(*ready_at)
            );
        }
        Forecast::Projected(p) => p,
    };
    let cfg = book.config();
    let mut parts = Vec::new();
    if let Some(l) = cfg.limit_usd {
        parts.push(format!("${} of ${l}", p.spend));
    }
    if let Some(l) = cfg.limit_tokens {
        parts.push(format!("{} of {l} tokens", p.tokens));
    }
    let head = format!(
        "projected {} by the period's end at {} (burn rate {})",
        parts.join(" and "),
        rfc3339(book.window().end),
        p.windows.describe()
    );
    match (p.overrun, p.exhaustion) {
        (true, Some(at)) => format!(
            "{head}: the limit is reached at {} ({}) at this rate",
            rfc3339(at),
            local(at, &cfg.time_zone)
        ),
        (true, None) => format!("{head}: the limit is already reached"),
        (false, _) => head,
    }
}

/// `at` in the budget's time zone, e.g. `2026-03-29 16:40 CEST`.
fn local(at: Timestamp, tz: &str) -> String {
    let tz = TimeZone::get(tz).unwrap_or(TimeZone::UTC);
    at.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string()
}

/// The burn samples as `status.ledger.burn`.
pub fn burn_ledger(burn: &BurnSamples) -> Vec<BurnLedger> {
    burn.samples
        .iter()
        .map(|s| BurnLedger {
            at_unix_millis: s.at.as_millisecond(),
            spent_picos: s.spent.picos().to_string(),
            tokens: i64_of(s.tokens),
        })
        .collect()
}

/// The burn samples a saved status left for the period `window` (empty
/// for another period or without a status).
pub fn burn_samples(status: Option<&TokenBudgetStatus>, window: &Window) -> BurnSamples {
    let mut burn = BurnSamples::new(window);
    let Some(l) = status.and_then(|s| s.ledger.as_ref()) else {
        return burn;
    };
    if l.period_start_unix != window.start.as_second() {
        return burn;
    }
    burn.samples = l
        .burn
        .iter()
        .filter_map(|b| {
            Some(BurnSample {
                at: Timestamp::from_millisecond(b.at_unix_millis).ok()?,
                spent: Usd::from_picos(b.spent_picos.parse().ok()?),
                tokens: u64::try_from(b.tokens).ok()?,
            })
        })
        .collect();
    burn
}
