//! Budget forecasts: where a TokenBudget's spend (and tokens) will be at the
//! end of its period, and when it will reach its limit, from the burn seen so
//! far in the period.
//!
//! # Estimator
//!
//! The burn rate is `min(mean rate over a long window, mean rate over a short
//! window)`, each mean rate being `Δcumulative / Δt` between two samples of the
//! period's cumulative totals. This is the multiwindow rule of the SRE
//! workbook ("Multiwindow, Multi-Burn-Rate Alerts",
//! <https://sre.google/workbook/alerting-on-slos/>): the long window gives
//! significance (one burst barely moves a six-hour mean), the short window
//! makes the estimate drop quickly once traffic stops. Compared with the
//! least-squares slope Prometheus' `deriv()` computes
//! (<https://prometheus.io/docs/prometheus/latest/querying/functions/#deriv>),
//! a single burst never projects an overrun on its own, and a quiet spell
//! clears a projection within the short window. A median of bucket rates is
//! robust too, but under-projects sparse agent traffic (spend in 3 of 12
//! buckets has a median of zero), which is the wrong failure for a cap.
//!
//! Window lengths follow the period's absolute length `len` (so a 23 h or 25 h
//! DST day gets its own): long = `min(6 h, len / 4)`, short = `min(1 h, len /
//! 12)`, both whole minutes: 6 h / 1 h for a day or longer, 15 min / 5 min
//! for an hour. Until the samples span the short window the forecast is
//! [`Forecast::WarmingUp`]; while they span less than the long window, the
//! long mean uses what there is.
//!
//! The price of ignoring bursts: a *sustained* rise shows in the projection
//! only as fast as the long mean follows it (the minimum takes the lower,
//! older rate until the long window fills with the new one). Thresholds and
//! the hard cap act on spend itself and do not wait for the forecast.
//!
//! # Arithmetic
//!
//! Everything is exact integers: money in pico-USD ([`Usd`], `i128`), time in
//! milliseconds. A rate is kept as the rational `Δ / Δt`; a projection is
//! `current + Δ × (end − as_of) / Δt` rounded down, and never below the
//! current total (cumulative totals do not shrink; if a sample says they did,
//! the rate is taken as zero). The time left is the absolute time to the
//! period's end ([`Window::end`]), so daylight-saving days need no special
//! case: at local noon on Berlin's 23 h spring day, 11 h have passed and
//! 12 h are left.
//!
//! # Samples
//!
//! [`BurnSamples`] is a small bounded ring of `(instant, spent, tokens)`
//! samples of one period: older samples are kept at least a bucket
//! (short window / 12) apart, the newest sample always replaces a newer-than-
//! a-bucket predecessor, and samples older than the long window are dropped
//! (one is kept as the anchor). Recording a sample from another period resets
//! the ring, so a roll-over starts cold. It serializes (RFC 3339 instants,
//! decimal-string money) so an operator can persist it in the budget's status
//! and a new leader does not start cold.

use std::collections::VecDeque;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{money::Usd, period::Window};

/// Upper bound on the samples a [`BurnSamples`] keeps (the long window at
/// most spans 72 buckets, plus the anchor and the newest sample).
pub const MAX_SAMPLES: usize = 80;

/// Buckets per short window: older samples are kept `short / 12` apart.
const BUCKETS_PER_SHORT: i32 = 12;

/// One sample of a period's cumulative totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurnSample {
    /// When the totals were read.
    pub at: Timestamp,
    /// Spend so far in the period.
    pub spent: Usd,
    /// Tokens so far in the period.
    pub tokens: u64,
}

/// The burn samples of one budget period (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BurnSamples {
    /// Start of the period the samples belong to.
    pub period_start: Timestamp,
    /// Samples, oldest first.
    pub samples: VecDeque<BurnSample>,
}

/// The estimator's two window lengths for one period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForecastWindows {
    /// The long window (significance).
    pub long: SignedDuration,
    /// The short window (reacts to a quiet spell).
    pub short: SignedDuration,
}

/// A projection to the end of the period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Projection {
    /// The instant the projection starts from (the newest sample).
    pub as_of: Timestamp,
    /// Spend at the period's end at the estimated rate (≥ the current spend).
    pub spend: Usd,
    /// Tokens at the period's end at the estimated rate (≥ the current tokens).
    pub tokens: u64,
    /// When a limit is reached at the estimated rate, if that is after
    /// `as_of` and before the period's end (the earlier of the money and the
    /// token limit). `None` when no limit is reached in the period, or when a
    /// limit is already reached at `as_of`.
    pub exhaustion: Option<Timestamp>,
    /// True when the projected spend or tokens reach a limit by the period's
    /// end (including a limit already reached).
    pub overrun: bool,
    /// The windows the estimate used (the long one shortened to the history
    /// available).
    pub windows: ForecastWindows,
}

/// The outcome of [`forecast`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forecast {
    /// Not enough history in this period yet: no projection until `ready_at`
    /// (at the earliest; samples must span the short window).
    WarmingUp {
        /// When the samples will span the short window, if sampling goes on.
        ready_at: Timestamp,
    },
    /// A projection.
    Projected(Projection),
}

// === impl ForecastWindows ===

impl ForecastWindows {
    /// The default windows for a period: long = `min(6 h, len / 4)`, short =
    /// `min(1 h, len / 12)`, rounded down to whole minutes (at least one).
    pub fn for_window(window: &Window) -> ForecastWindows {
        let len = window.end.duration_since(window.start);
        let minutes = |d: SignedDuration| SignedDuration::from_mins((d.as_secs() / 60).max(1));
        ForecastWindows {
            long: minutes(SignedDuration::from_hours(6).min(len / 4)),
            short: minutes(SignedDuration::from_hours(1).min(len / 12)),
        }
    }

    /// The spacing of older samples: `short / 12`, at least one second.
    pub fn bucket(&self) -> SignedDuration {
        (self.short / BUCKETS_PER_SHORT).max(SignedDuration::from_secs(1))
    }

    /// A short text for a status: `min(mean 6h, mean 1h)`.
    pub fn describe(&self) -> String {
        format!("min(mean {}, mean {})", human(self.long), human(self.short))
    }
}

fn human(d: SignedDuration) -> String {
    let mins = d.as_secs() / 60;
    match (mins / 60, mins % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

// === impl BurnSamples ===

impl BurnSamples {
    /// An empty ring for the period `window`.
    pub fn new(window: &Window) -> BurnSamples {
        BurnSamples {
            period_start: window.start,
            samples: VecDeque::new(),
        }
    }

    /// Record the period's cumulative totals at `at`. A sample of another
    /// period than the ring's (a roll-over) resets the ring first; a sample
    /// older than the newest one is ignored.
    pub fn record(&mut self, window: &Window, at: Timestamp, spent: Usd, tokens: u64) {
        if self.period_start != window.start {
            *self = BurnSamples::new(window);
        }
        if self.samples.back().is_some_and(|last| at <= last.at) {
            return;
        }
        let windows = ForecastWindows::for_window(window);
        let sample = BurnSample { at, spent, tokens };
        // The newest sample replaces its predecessor when that one is less
        // than a bucket after the sample before it: older samples stay a
        // bucket apart, the newest is always current.
        let n = self.samples.len();
        if n >= 2
            && self.samples[n - 1]
                .at
                .duration_since(self.samples[n - 2].at)
                < windows.bucket()
        {
            self.samples[n - 1] = sample;
        } else {
            self.samples.push_back(sample);
        }
        // Keep one anchor at or before `at - long`; drop what is older.
        let horizon = at - windows.long;
        while self.samples.len() >= 2 && self.samples[1].at <= horizon {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The newest sample, if any.
    pub fn latest(&self) -> Option<&BurnSample> {
        self.samples.back()
    }

    /// True when the ring holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// A mean rate `Δ / Δt_ms` (Δ in pico-USD or tokens).
#[derive(Clone, Copy, Debug)]
struct Rate {
    delta: i128,
    millis: i128,
}

impl Rate {
    fn between(old: &BurnSample, new: &BurnSample, value: fn(&BurnSample) -> i128) -> Rate {
        Rate {
            delta: (value(new) - value(old)).max(0),
            millis: new.at.duration_since(old.at).as_millis().max(1),
        }
    }

    /// The smaller of two rates, compared exactly by cross-multiplying.
    fn min(self, other: Rate) -> Rate {
        let lhs = self.delta.saturating_mul(other.millis);
        let rhs = other.delta.saturating_mul(self.millis);
        if lhs <= rhs { self } else { other }
    }

    /// The amount burnt over `millis`, rounded down.
    fn over(self, millis: i128) -> i128 {
        self.delta.saturating_mul(millis) / self.millis
    }

    /// Milliseconds to burn `amount`, rounded up; `None` at rate zero.
    fn time_to(self, amount: i128) -> Option<i128> {
        (self.delta > 0).then(|| {
            let n = amount.saturating_mul(self.millis);
            n / self.delta + i128::from(n % self.delta != 0)
        })
    }
}

/// Forecast the period `window` from `samples` as of `now`.
///
/// The projection starts at the newest sample (its totals are the current
/// ones; the burn between it and `now` is projected at the same rate). Samples
/// of another period than `window`, or fewer than two samples spanning the
/// short window, give [`Forecast::WarmingUp`]. `limit_usd` / `limit_tokens`
/// are the budget's limits, where set.
pub fn forecast(
    samples: &BurnSamples,
    window: &Window,
    now: Timestamp,
    limit_usd: Option<Usd>,
    limit_tokens: Option<u64>,
) -> Forecast {
    let windows = ForecastWindows::for_window(window);
    let warming = |from: Timestamp| Forecast::WarmingUp {
        ready_at: (from + windows.short).min(window.end),
    };
    if samples.period_start != window.start {
        return warming(now.max(window.start));
    }
    let (Some(first), Some(last)) = (samples.samples.front(), samples.samples.back()) else {
        return warming(now.max(window.start));
    };
    let span = last.at.duration_since(first.at);
    if span < windows.short {
        return warming(first.at);
    }
    let anchor = |len: SignedDuration| {
        let horizon = last.at - len;
        samples
            .samples
            .iter()
            .rev()
            .find(|s| s.at <= horizon)
            .unwrap_or(first)
    };
    let (long_anchor, short_anchor) = (anchor(windows.long), anchor(windows.short));
    let rate = |value: fn(&BurnSample) -> i128| {
        Rate::between(long_anchor, last, value).min(Rate::between(short_anchor, last, value))
    };
    let usd_rate = rate(|s| s.spent.picos());
    let token_rate = rate(|s| i128::from(s.tokens));
    let left = window.end.duration_since(last.at).as_millis().max(0);
    let spend = Usd::from_picos(last.spent.picos().saturating_add(usd_rate.over(left)));
    let tokens = i128::from(last.tokens).saturating_add(token_rate.over(left));
    let tokens = u64::try_from(tokens).unwrap_or(u64::MAX);

    let mut overrun = false;
    let mut exhaustion: Option<Timestamp> = None;
    let mut consider = |current: i128, projected: i128, limit: i128, r: Rate| {
        if projected < limit {
            return;
        }
        overrun = true;
        if current >= limit {
            return;
        }
        let at = r
            .time_to(limit - current)
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| last.at.checked_add(SignedDuration::from_millis(ms)).ok())
            .filter(|at| *at < window.end);
        if let Some(at) = at {
            exhaustion = Some(exhaustion.map_or(at, |e| e.min(at)));
        }
    };
    if let Some(limit) = limit_usd {
        consider(last.spent.picos(), spend.picos(), limit.picos(), usd_rate);
    }
    if let Some(limit) = limit_tokens {
        consider(
            i128::from(last.tokens),
            i128::from(tokens),
            i128::from(limit),
            token_rate,
        );
    }
    let long = last.at.duration_since(long_anchor.at).min(windows.long);
    Forecast::Projected(Projection {
        as_of: last.at,
        spend,
        tokens,
        exhaustion,
        overrun,
        windows: ForecastWindows {
            long,
            short: windows.short,
        },
    })
}

// === impl Forecast ===

impl Forecast {
    /// The projected spend at the period's end, unless warming up.
    pub fn projected_spend(&self) -> Option<Usd> {
        self.projection().map(|p| p.spend)
    }

    /// The projected tokens at the period's end, unless warming up.
    pub fn projected_tokens(&self) -> Option<u64> {
        self.projection().map(|p| p.tokens)
    }

    /// When a limit is projected to be reached, if before the period's end.
    pub fn projected_exhaustion(&self) -> Option<Timestamp> {
        self.projection().and_then(|p| p.exhaustion)
    }

    /// True when a limit is projected to be reached by the period's end.
    pub fn overrun(&self) -> bool {
        self.projection().is_some_and(|p| p.overrun)
    }

    /// The projection, unless warming up.
    pub fn projection(&self) -> Option<&Projection> {
        match self {
            Forecast::Projected(p) => Some(p),
            Forecast::WarmingUp { .. } => None,
        }
    }

    /// A short note for a status: the estimator and its windows, or
    /// `warming up until <RFC 3339>`.
    pub fn note(&self) -> String {
        match self {
            Forecast::Projected(p) => p.windows.describe(),
            Forecast::WarmingUp { ready_at } => format!("warming up until {ready_at}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::tz::TimeZone;

    use super::*;
    use crate::period::{Period, time_zone};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn usd(s: &str) -> Usd {
        s.parse().unwrap()
    }

    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }

    /// A budget period with a synthetic clock ticking once a minute.
    struct Clock {
        tz: TimeZone,
        period: Period,
        samples: Option<BurnSamples>,
        now: Timestamp,
        spent: Usd,
        tokens: u64,
    }

    impl Clock {
        fn new(period: Period, tz: &str, start: &str) -> Clock {
            Clock {
                tz: time_zone(tz).unwrap(),
                period,
                samples: None,
                now: ts(start),
                spent: Usd::ZERO,
                tokens: 0,
            }
        }

        fn window(&self) -> Window {
            self.period.window(&self.tz, self.now).unwrap()
        }

        /// Sample now, then let `minutes` pass burning `per_min` and
        /// `tokens_per_min` each minute, sampling after every minute.
        fn run(&mut self, minutes: i64, per_min: &str, tokens_per_min: u64) {
            self.sample();
            for _ in 0..minutes {
                self.now += mins(1);
                let w = self.window();
                if self
                    .samples
                    .as_ref()
                    .is_some_and(|s| s.period_start != w.start)
                {
                    // Roll-over: the minute just ended belongs to the old
                    // period; the new period's totals start at zero.
                    self.spent = Usd::ZERO;
                    self.tokens = 0;
                } else {
                    self.spent += usd(per_min);
                    self.tokens += tokens_per_min;
                }
                self.sample();
            }
        }

        fn burst(&mut self, amount: &str) {
            self.spent += usd(amount);
            self.sample();
        }

        fn sample(&mut self) {
            let w = self.window();
            let ring = self.samples.get_or_insert_with(|| BurnSamples::new(&w));
            ring.record(&w, self.now, self.spent, self.tokens);
        }

        fn forecast(&self, limit: Option<&str>, limit_tokens: Option<u64>) -> Forecast {
            forecast(
                self.samples.as_ref().unwrap(),
                &self.window(),
                self.now,
                limit.map(usd),
                limit_tokens,
            )
        }
    }

    #[test]
    fn steady_load_projects_linearly() {
        let mut c = Clock::new(Period::Daily, "UTC", "2026-06-01T00:00:00Z");
        c.run(720, "0.01", 1000); // $0.60 and 60k tokens an hour until noon
        let f = c.forecast(Some("10.00"), None);
        let p = f.projection().unwrap();
        assert_eq!(p.as_of, ts("2026-06-01T12:00:00Z"));
        assert_eq!(p.spend, usd("14.40"), "7.20 spent + 720 min × 0.01");
        assert_eq!(p.tokens, 1_440_000);
        assert!(p.overrun);
        // (10.00 - 7.20) / 0.01 per minute = 280 minutes after noon.
        assert_eq!(p.exhaustion, Some(ts("2026-06-01T16:40:00Z")));
        assert_eq!(f.note(), "min(mean 6h, mean 1h)");

        let f = c.forecast(Some("20.00"), None);
        assert_eq!(f.projected_spend(), Some(usd("14.40")));
        assert!(!f.overrun());
        assert_eq!(f.projected_exhaustion(), None);

        // The token limit is reached first: 1.2M tokens at 1000/min is 480
        // minutes after noon (20:00), the money limit never.
        let f = c.forecast(Some("20.00"), Some(1_200_000));
        assert!(f.overrun());
        assert_eq!(f.projected_exhaustion(), Some(ts("2026-06-01T20:00:00Z")));
        // Both: the earlier instant wins.
        let f = c.forecast(Some("10.00"), Some(1_200_000));
        assert_eq!(f.projected_exhaustion(), Some(ts("2026-06-01T16:40:00Z")));
    }

    #[test]
    fn a_limit_already_reached_is_an_overrun_without_an_exhaustion_time() {
        let mut c = Clock::new(Period::Daily, "UTC", "2026-06-01T00:00:00Z");
        c.run(720, "0.01", 0);
        let f = c.forecast(Some("5.00"), None);
        assert!(f.overrun());
        assert_eq!(f.projected_exhaustion(), None);
    }

    #[test]
    fn one_burst_does_not_project_an_overrun() {
        let mut c = Clock::new(Period::Daily, "UTC", "2026-06-01T00:00:00Z");
        c.run(690, "0.01", 0);
        c.burst("20.00"); // at 11:30
        c.run(30, "0.01", 0);
        // Long (06:00-12:00): 23.60 over 360 min; short (11:00-12:00): 20.60
        // over 60 min. The long mean is the smaller one.
        let f = c.forecast(Some("100.00"), None);
        assert_eq!(
            f.projected_spend(),
            Some(usd("74.40")),
            "27.20 + 23.60 × 720/360"
        );
        assert!(!f.overrun());
        // Once the burst has left the short window, the baseline rate is back.
        c.run(60, "0.01", 0);
        assert_eq!(
            c.forecast(Some("100.00"), None).projected_spend(),
            Some(usd("34.40")),
            "27.80 + 660 min × 0.01"
        );
    }

    #[test]
    fn a_quiet_period_clears_the_projection_within_the_short_window() {
        let mut c = Clock::new(Period::Daily, "UTC", "2026-06-01T00:00:00Z");
        c.run(720, "0.01", 10);
        assert!(c.forecast(Some("12.00"), None).overrun(), "14.40 projected");
        c.run(30, "0", 0);
        // Half a short window quiet: the short mean has halved.
        let f = c.forecast(Some("12.00"), None);
        assert_eq!(
            f.projected_spend(),
            Some(usd("10.65")),
            "7.20 + 0.30 × 690/60"
        );
        assert!(!f.overrun());
        c.run(30, "0", 0);
        let f = c.forecast(Some("12.00"), None);
        assert_eq!(
            f.projected_spend(),
            Some(usd("7.20")),
            "never below the spend"
        );
        assert_eq!(f.projected_tokens(), Some(7200));
        assert_eq!(f.projected_exhaustion(), None);
    }

    #[test]
    fn warming_up_until_the_samples_span_the_short_window() {
        let mut c = Clock::new(Period::Daily, "UTC", "2026-06-01T08:00:00Z");
        c.run(59, "0.01", 0);
        let f = c.forecast(Some("1.00"), None);
        assert_eq!(
            f,
            Forecast::WarmingUp {
                ready_at: ts("2026-06-01T09:00:00Z")
            }
        );
        assert_eq!(f.note(), "warming up until 2026-06-01T09:00:00Z");
        assert_eq!(f.projected_spend(), None);
        assert!(!f.overrun());
        c.run(1, "0.01", 0);
        // An hour of history: long and short mean are both the last hour.
        let f = c.forecast(Some("1.00"), None);
        assert_eq!(
            f.projected_spend(),
            Some(usd("9.60")),
            "0.60 + 900 min × 0.01"
        );
        assert_eq!(f.note(), "min(mean 1h, mean 1h)");
    }

    #[test]
    fn roll_over_resets_the_samples() {
        let mut c = Clock::new(Period::Daily, "UTC", "2026-06-01T20:00:00Z");
        c.run(239, "0.01", 0);
        assert!(c.forecast(None, None).projection().is_some());
        c.run(1, "0.01", 0); // 2026-06-02T00:00:00Z: a new period
        let ring = c.samples.as_ref().unwrap();
        assert_eq!(ring.period_start, ts("2026-06-02T00:00:00Z"));
        assert_eq!(ring.samples.len(), 1);
        assert_eq!(ring.latest().unwrap().spent, Usd::ZERO);
        assert_eq!(
            c.forecast(None, None),
            Forecast::WarmingUp {
                ready_at: ts("2026-06-02T01:00:00Z")
            }
        );
        // Samples of the old period never project the new one.
        let old_w = Period::Daily
            .window(&c.tz, ts("2026-06-01T20:00:00Z"))
            .unwrap();
        let mut old = BurnSamples::new(&old_w);
        old.record(&old_w, ts("2026-06-01T20:00:00Z"), Usd::ZERO, 0);
        old.record(&old_w, ts("2026-06-01T23:00:00Z"), usd("1.80"), 0);
        assert!(
            forecast(&old, &old_w, ts("2026-06-01T23:00:00Z"), None, None)
                .projection()
                .is_some()
        );
        assert!(matches!(
            forecast(&old, &c.window(), c.now, None, None),
            Forecast::WarmingUp { .. }
        ));
    }

    #[test]
    fn a_23_hour_day_projects_with_the_absolute_time_left() {
        // Berlin springs forward at 02:00 on 2026-03-29: the day is 23 h,
        // [03-28T23:00Z, 03-29T22:00Z).
        let mut c = Clock::new(Period::Daily, "Europe/Berlin", "2026-03-28T23:00:00Z");
        c.run(660, "0.01", 0); // to 12:00 CEST = 10:00Z: 11 h elapsed
        let w = c.window();
        assert_eq!(w.end.duration_since(c.now), SignedDuration::from_hours(12));
        let f = c.forecast(None, None);
        // 6.60 + 12 h × 0.60: the rate over 23 h, not 24 h (14.40).
        assert_eq!(f.projected_spend(), Some(usd("13.80")));
        assert_eq!(f.note(), "min(mean 5h45m, mean 1h)");
    }

    #[test]
    fn a_25_hour_day_projects_with_the_absolute_time_left() {
        // Berlin falls back at 03:00 on 2026-10-25: [10-24T22:00Z, 10-25T23:00Z).
        let mut c = Clock::new(Period::Daily, "Europe/Berlin", "2026-10-24T22:00:00Z");
        c.run(780, "0.01", 0); // to 12:00 CET = 11:00Z: 13 h elapsed
        let f = c.forecast(Some("14.99"), None);
        assert_eq!(f.projected_spend(), Some(usd("15.00")), "25 h × 0.60");
        // (14.99 - 7.80) / 0.01 = 719 minutes after 11:00Z.
        assert_eq!(f.projected_exhaustion(), Some(ts("2026-10-25T22:59:00Z")));
    }

    #[test]
    fn an_hourly_budget_in_a_repeated_hour() {
        // New York, 2026-11-01: 01:00-02:00 local happens twice. Each pass is
        // its own hourly period of 60 minutes.
        let mut c = Clock::new(Period::Hourly, "America/New_York", "2026-11-01T05:00:00Z");
        c.run(30, "0.02", 0);
        let f = c.forecast(Some("1.00"), None);
        assert_eq!(f.projected_spend(), Some(usd("1.20")));
        assert_eq!(f.note(), "min(mean 15m, mean 5m)");
        assert_eq!(f.projected_exhaustion(), Some(ts("2026-11-01T05:50:00Z")));
        c.run(60, "0.01", 0); // into the second 01:xx (EST), to 06:30Z
        let ring = c.samples.as_ref().unwrap();
        assert_eq!(ring.period_start, ts("2026-11-01T06:00:00Z"));
        let f = c.forecast(Some("1.00"), None);
        assert_eq!(
            f.projected_spend(),
            Some(usd("0.60")),
            "0.30 + 30 min × 0.01"
        );
        assert!(!f.overrun());
    }

    #[test]
    fn the_ring_stays_bounded_and_round_trips() {
        let mut c = Clock::new(Period::Monthly, "UTC", "2026-06-01T00:00:00Z");
        c.run(3 * 24 * 60, "0.01", 1);
        let ring = c.samples.clone().unwrap();
        assert!(ring.samples.len() <= MAX_SAMPLES, "{}", ring.samples.len());
        // The anchor six hours back, then one sample per 5-minute bucket.
        assert_eq!(ring.samples.len(), 73);
        assert_eq!(ring.samples[0].at, c.now - SignedDuration::from_hours(6));

        let mut one = BurnSamples::new(&c.window());
        one.record(&c.window(), ts("2026-06-04T00:00:00Z"), usd("1.5"), 7);
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"periodStart":"2026-06-01T00:00:00Z","samples":[{"at":"2026-06-04T00:00:00Z","spent":"1.50","tokens":7}]}"#
        );
        let json = serde_json::to_string(&ring).unwrap();
        assert_eq!(serde_json::from_str::<BurnSamples>(&json).unwrap(), ring);
    }
}
