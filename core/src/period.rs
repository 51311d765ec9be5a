//! Calendar-aligned budget periods in an IANA time zone.
//!
//! A TokenBudget resets at the start of each calendar period as seen in its
//! time zone: the top of the hour, local midnight, Monday 00:00 (ISO weeks), or
//! the first of the month at 00:00. Days are not assumed to be 24 hours: a
//! daily period that spans a daylight-saving change is 23 or 25 hours long.
//!
//! Time zones come from the tz database bundled into the binary (jiff's
//! `tzdb-bundle-always`), so results do not depend on the host's
//! `/usr/share/zoneinfo` (distroless images have none).

use jiff::{Timestamp, ToSpan, Zoned, tz::TimeZone};
use serde::{Deserialize, Serialize};

/// How often a budget resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Period {
    /// From the top of each hour.
    Hourly,
    /// From local midnight.
    Daily,
    /// From Monday 00:00 local time (ISO 8601 weeks).
    Weekly,
    /// From the first day of the month, 00:00 local time.
    Monthly,
}

/// One period: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First instant of the period (inclusive).
    pub start: Timestamp,
    /// First instant of the next period (exclusive).
    pub end: Timestamp,
}

/// Errors from time-zone lookup or calendar arithmetic.
#[derive(Debug, thiserror::Error)]
pub enum PeriodError {
    /// The name is not in the bundled tz database.
    #[error("unknown time zone {0:?}: use an IANA name such as \"UTC\" or \"Europe/Berlin\"")]
    UnknownTimeZone(String),
    /// Calendar arithmetic left the supported range (years -9999..=9999).
    #[error("period arithmetic out of range: {0}")]
    OutOfRange(String),
}

/// An instant as Kubernetes status fields carry it (metav1.Time): RFC 3339,
/// whole seconds, UTC (`2026-12-07T00:00:00Z`). The operator's TokenBudget
/// status and the sidecar's `/ledger` forecast both write it.
pub fn rfc3339_seconds(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Look up an IANA time zone name in the bundled database.
pub fn time_zone(name: &str) -> Result<TimeZone, PeriodError> {
    TimeZone::get(name).map_err(|_| PeriodError::UnknownTimeZone(name.to_string()))
}

// === impl Period ===

impl Period {
    /// The period that contains `at`, aligned to the calendar in `tz`.
    pub fn window(self, tz: &TimeZone, at: Timestamp) -> Result<Window, PeriodError> {
        let oor = |e: jiff::Error| PeriodError::OutOfRange(e.to_string());
        let local = at.to_zoned(tz.clone());
        let start: Zoned = match self {
            Period::Hourly => local
                .with()
                .minute(0)
                .second(0)
                .subsec_nanosecond(0)
                .build()
                .map_err(oor)?,
            Period::Daily => local.start_of_day().map_err(oor)?,
            Period::Weekly => {
                let back = i64::from(local.weekday().to_monday_zero_offset());
                local
                    .date()
                    .checked_sub(back.days())
                    .map_err(oor)?
                    .to_zoned(tz.clone())
                    .map_err(oor)?
                    .start_of_day()
                    .map_err(oor)?
            }
            Period::Monthly => local
                .first_of_month()
                .map_err(oor)?
                .start_of_day()
                .map_err(oor)?,
        };
        // An hour boundary can be ambiguous (a repeated hour in autumn): the
        // "compatible" rule picks the earlier instant, which can lie after `at`
        // only if `at` is in the repeated hour's second pass. Step back then.
        let start = if start.timestamp() > at {
            start.checked_sub(1.hour()).map_err(oor)?
        } else {
            start
        };
        let end = match self {
            // Hours are exact: one hour after the start, whatever the offset does.
            Period::Hourly => start.checked_add(1.hour()).map_err(oor)?,
            Period::Daily => next_civil(&start, 1.day(), tz).map_err(oor)?,
            Period::Weekly => next_civil(&start, 1.week(), tz).map_err(oor)?,
            Period::Monthly => next_civil(&start, 1.month(), tz).map_err(oor)?,
        };
        Ok(Window {
            start: start.timestamp(),
            end: end.timestamp(),
        })
    }

    /// The next period after the one containing `at`.
    pub fn next_window(self, tz: &TimeZone, at: Timestamp) -> Result<Window, PeriodError> {
        let current = self.window(tz, at)?;
        self.window(tz, current.end)
    }
}

/// Start of the calendar period `span` after `start`'s local date, at local
/// midnight (which may not be 00:00 where DST begins at midnight).
fn next_civil(start: &Zoned, span: jiff::Span, tz: &TimeZone) -> Result<Zoned, jiff::Error> {
    start
        .date()
        .checked_add(span)?
        .to_zoned(tz.clone())?
        .start_of_day()
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Period::Hourly => "Hourly",
            Period::Daily => "Daily",
            Period::Weekly => "Weekly",
            Period::Monthly => "Monthly",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn win(p: Period, tz: &str, at: &str) -> (String, String) {
        let w = p.window(&time_zone(tz).unwrap(), ts(at)).unwrap();
        (w.start.to_string(), w.end.to_string())
    }

    #[test]
    fn utc_periods() {
        let at = "2026-11-22T08:30:15.5Z";
        assert_eq!(
            win(Period::Hourly, "UTC", at),
            ("2026-11-22T08:00:00Z".into(), "2026-11-22T09:00:00Z".into())
        );
        assert_eq!(
            win(Period::Daily, "UTC", at),
            ("2026-11-22T00:00:00Z".into(), "2026-11-23T00:00:00Z".into())
        );
        // 2026-11-22 is a Sunday: the ISO week began on Monday the 16th.
        assert_eq!(
            win(Period::Weekly, "UTC", at),
            ("2026-11-16T00:00:00Z".into(), "2026-11-23T00:00:00Z".into())
        );
        assert_eq!(
            win(Period::Monthly, "UTC", at),
            ("2026-11-01T00:00:00Z".into(), "2026-12-01T00:00:00Z".into())
        );
    }

    #[test]
    fn daily_in_berlin_is_local_midnight() {
        // 23:30 UTC on the 21st is 00:30 on the 22nd in Berlin (UTC+1 in November).
        assert_eq!(
            win(Period::Daily, "Europe/Berlin", "2026-11-21T23:30:00Z"),
            ("2026-11-21T23:00:00Z".into(), "2026-11-22T23:00:00Z".into())
        );
    }

    #[test]
    fn daylight_saving_days_are_23_and_25_hours() {
        // Europe/Berlin springs forward on 2026-03-29 and falls back on 2026-10-25.
        let (s, e) = win(Period::Daily, "Europe/Berlin", "2026-03-29T12:00:00Z");
        assert_eq!(
            (s.as_str(), e.as_str()),
            ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")
        );
        let (s, e) = win(Period::Daily, "Europe/Berlin", "2026-10-25T12:00:00Z");
        assert_eq!(
            (s.as_str(), e.as_str()),
            ("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z")
        );
    }

    #[test]
    fn hourly_across_a_repeated_hour() {
        // 2026-11-01 in New York: 01:00-02:00 local happens twice (EDT then EST).
        // 05:30Z is 01:30 EDT (first pass), 06:30Z is 01:30 EST (second pass).
        assert_eq!(
            win(Period::Hourly, "America/New_York", "2026-11-01T05:30:00Z"),
            ("2026-11-01T05:00:00Z".into(), "2026-11-01T06:00:00Z".into())
        );
        assert_eq!(
            win(Period::Hourly, "America/New_York", "2026-11-01T06:30:00Z"),
            ("2026-11-01T06:00:00Z".into(), "2026-11-01T07:00:00Z".into())
        );
    }

    #[test]
    fn half_hour_zone_hours() {
        // India is UTC+05:30: local hours start at :30 UTC.
        assert_eq!(
            win(Period::Hourly, "Asia/Kolkata", "2026-11-22T08:10:00Z"),
            ("2026-11-22T07:30:00Z".into(), "2026-11-22T08:30:00Z".into())
        );
    }

    #[test]
    fn monthly_rolls_over_year_end_and_february() {
        assert_eq!(
            win(Period::Monthly, "UTC", "2026-12-31T23:59:59Z"),
            ("2026-12-01T00:00:00Z".into(), "2027-01-01T00:00:00Z".into())
        );
        assert_eq!(
            win(Period::Monthly, "UTC", "2028-02-29T10:00:00Z"),
            ("2028-02-01T00:00:00Z".into(), "2028-03-01T00:00:00Z".into())
        );
    }

    #[test]
    fn boundaries_are_half_open_and_contiguous() {
        let tz = time_zone("Australia/Lord_Howe").unwrap(); // 30-minute DST shift
        for p in [
            Period::Hourly,
            Period::Daily,
            Period::Weekly,
            Period::Monthly,
        ] {
            let mut at = ts("2026-01-01T00:00:00Z");
            for _ in 0..400 {
                let w = p.window(&tz, at).unwrap();
                assert!(w.start <= at && at < w.end, "{p} {at} not in {w:?}");
                let next = p.window(&tz, w.end).unwrap();
                assert_eq!(
                    next.start, w.end,
                    "{p}: next period starts where this one ends"
                );
                assert_eq!(p.next_window(&tz, at).unwrap(), next);
                at = w
                    .end
                    .checked_add(jiff::SignedDuration::from_mins(17))
                    .unwrap();
            }
        }
    }

    #[test]
    fn unknown_time_zone_is_an_error() {
        let err = time_zone("Mars/Olympus_Mons").unwrap_err().to_string();
        assert!(
            err.contains("Mars/Olympus_Mons") && err.contains("IANA"),
            "{err}"
        );
    }
}
