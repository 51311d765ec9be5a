//! The sidecar's own budget forecast: the burn samples of each budget's
//! current period, sampled once a second by the budget ticker, persisted
//! under `--state-dir` as `forecast.json`, and the projection `GET /ledger`
//! and `report` show. The estimator and its arithmetic are
//! [`tokenwarden_core::forecast`]'s, the same the operator writes into a
//! TokenBudget's status (`projectedSpendUsd`, `projectedTokens`,
//! `projectedExhaustion`, `projection`).
//!
//! # Why a file of its own
//!
//! The journal keeps per-period totals, not their history: after a
//! compaction the per-request lines are gone, and a period's spend over
//! time cannot be rebuilt from the snapshot. So the samples themselves are
//! written to `forecast.json` (atomically, at most every
//! [`PERSIST_EVERY`] and at shutdown). Every sample is a period's
//! cumulative totals at an instant, read from the live budgets, so a
//! restart loses nothing it could not measure again: the samples of the
//! file (of the current period only) are kept, and the first sample after
//! the restart is the journal's totals at that instant — the spend of the
//! gap, whenever it happened, lands between the two. Without the file (no
//! state dir, a first start, a period that rolled while stopped) the
//! forecast warms up again: no projection until the samples span the short
//! window. A file whose latest sample spent more than the journal holds
//! (a journal reset under it) is ignored for that budget.
//!
//! `report` reads the same file offline and adds one sample: the journal's
//! totals now (nothing is spent through a stopped sidecar). A budget with
//! no samples of its current period shows "no history": report never
//! guesses a rate from the period's total alone.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokenwarden_core::{
    budget::BudgetState,
    forecast::{BurnSamples, Forecast, forecast},
    period::Window,
    usage::Totals,
    workload::ObjectRef,
};

/// The file under the state dir.
pub const FILE: &str = "forecast.json";

/// How often the ticker writes the samples to [`FILE`] (the shortest
/// bucket the estimator keeps, an hourly budget's, is 25 s; daily ones
/// keep 5-minute buckets).
pub const PERSIST_EVERY: Duration = Duration::from_secs(30);

/// Every budget's burn samples, and what the forecast last said.
#[derive(Debug, Default)]
pub struct BurnBook {
    rings: BTreeMap<ObjectRef, BurnSamples>,
    /// Samples loaded from the file, checked against the live totals at
    /// their first use.
    loaded: BTreeMap<ObjectRef, BurnSamples>,
    /// Whether each budget's forecast last reached a limit.
    overrun: BTreeMap<ObjectRef, bool>,
    dir: Option<PathBuf>,
    written: Option<Timestamp>,
}

/// One budget's samples in [`FILE`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    namespace: String,
    name: String,
    #[serde(flatten)]
    burn: BurnSamples,
}

/// The contents of [`FILE`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    budgets: Vec<Entry>,
}

/// A change of a budget's projected-overrun state (see
/// [`BurnBook::observe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The forecast now reaches a limit before the period's end.
    On,
    /// It no longer does.
    Off,
}

// === impl BurnBook ===

impl BurnBook {
    /// A book persisted under `dir` (`--state-dir`), starting from what
    /// [`FILE`] there holds; in memory only without one. A file that
    /// cannot be read is logged and ignored (the forecast warms up again).
    pub fn open(dir: Option<&Path>) -> BurnBook {
        let loaded = match dir.map(load) {
            None => BTreeMap::new(),
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the forecast's burn samples cannot be read: budget forecasts warm up again");
                BTreeMap::new()
            }
        };
        BurnBook {
            loaded,
            dir: dir.map(Path::to_path_buf),
            ..BurnBook::default()
        }
    }

    /// Record `b`'s totals at `now` (after rolling it to `now`'s period).
    pub fn sample(&mut self, b: &BudgetState, now: Timestamp) {
        let id = &b.config().source;
        let window = b.window();
        let t = b.totals();
        if !self.rings.contains_key(id) {
            let start = self
                .loaded
                .remove(id)
                .filter(|r| consistent(r, &window, t))
                .unwrap_or_else(|| BurnSamples::new(&window));
            self.rings.insert(id.clone(), start);
        }
        if let Some(ring) = self.rings.get_mut(id) {
            ring.record(&window, now, t.spent, t.tokens());
        }
    }

    /// The forecast of `b`'s current period as of `now` (`None`: no
    /// samples yet).
    pub fn forecast(&self, b: &BudgetState, now: Timestamp) -> Option<Forecast> {
        let ring = self.rings.get(&b.config().source)?;
        Some(of(ring, b, now))
    }

    /// Sample `b` and note whether its forecast reaches a limit; returns
    /// the change, if the state changed (a first observation that reaches
    /// no limit is no change).
    pub fn observe(&mut self, b: &BudgetState, now: Timestamp) -> Option<Transition> {
        self.sample(b, now);
        let on = self.forecast(b, now).is_some_and(|f| f.overrun());
        let id = &b.config().source;
        let was = self.overrun.insert(id.clone(), on).unwrap_or(false);
        match (was, on) {
            (false, true) => Some(Transition::On),
            (true, false) => Some(Transition::Off),
            _ => None,
        }
    }

    /// Whether `b`'s forecast reached a limit when last observed.
    pub fn overrun(&self, id: &ObjectRef) -> bool {
        self.overrun.get(id).copied().unwrap_or(false)
    }

    /// Forget budgets that are no longer configured.
    pub fn retain(&mut self, keep: impl Fn(&ObjectRef) -> bool) {
        self.rings.retain(|id, _| keep(id));
        self.loaded.retain(|id, _| keep(id));
        self.overrun.retain(|id, _| keep(id));
    }

    /// The bytes of [`FILE`] and where they go, when a state dir is set
    /// and the last write is at least [`PERSIST_EVERY`] old (always with
    /// `force`). The caller writes them outside its locks ([`save`]).
    pub fn due(&mut self, now: Timestamp, force: bool) -> Option<(PathBuf, Vec<u8>)> {
        let dir = self.dir.as_ref()?;
        if self.rings.is_empty() && self.loaded.is_empty() && self.written.is_none() {
            return None;
        }
        let every = jiff::SignedDuration::try_from(PERSIST_EVERY).unwrap_or_default();
        if !force && self.written.is_some_and(|w| now.duration_since(w) < every) {
            return None;
        }
        self.written = Some(now);
        // Loaded rings not yet used (their budget's config not installed
        // yet) are kept on file.
        let budgets = self
            .rings
            .iter()
            .chain(self.loaded.iter())
            .map(|(id, burn)| Entry {
                namespace: id.namespace.clone(),
                name: id.name.clone(),
                burn: burn.clone(),
            })
            .collect();
        let bytes = serde_json::to_vec(&Saved { budgets }).ok()?;
        Some((dir.join(FILE), bytes))
    }
}

/// Whether samples from the file can continue with the live totals `t`:
/// the same period, and no sample above what the journal holds.
fn consistent(ring: &BurnSamples, window: &Window, t: &Totals) -> bool {
    ring.period_start == window.start
        && ring
            .latest()
            .is_none_or(|s| s.spent <= t.spent && s.tokens <= t.tokens())
}

/// The forecast of `b`'s current period from `ring`, against its limits
/// (as the operator's status does).
pub fn of(ring: &BurnSamples, b: &BudgetState, now: Timestamp) -> Forecast {
    let cfg = b.config();
    forecast(ring, &b.window(), now, cfg.limit_usd, cfg.limit_tokens)
}

/// Write [`BurnBook::due`]'s bytes; a failure is logged (the forecast
/// then warms up after a restart, nothing else depends on the file).
pub fn save(path: &Path, bytes: &[u8]) {
    if let Err(e) = tokenwarden_durable::write_atomic(path, bytes, false) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the forecast's burn samples");
    }
}

/// The burn samples [`FILE`] under `dir` holds, by budget (empty when
/// there is no file).
pub fn load(dir: &Path) -> Result<BTreeMap<ObjectRef, BurnSamples>, String> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let saved: Saved =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(saved
        .budgets
        .into_iter()
        .map(|e| {
            let id = ObjectRef {
                namespace: e.namespace,
                name: e.name,
            };
            (id, e.burn)
        })
        .collect())
}

/// `report`'s forecast of `b` from the samples on file, plus one sample
/// of the journal's totals at `now`; `None` when the file has no sample
/// of the current period ("no history").
pub fn offline(
    saved: &BTreeMap<ObjectRef, BurnSamples>,
    b: &BudgetState,
    now: Timestamp,
) -> Option<Forecast> {
    let window = b.window();
    let mut ring = saved
        .get(&b.config().source)
        .filter(|r| !r.is_empty() && consistent(r, &window, b.totals()))?
        .clone();
    ring.record(&window, now, b.totals().spent, b.totals().tokens());
    Some(of(&ring, b, now))
}

/// A downgrade target as `/ledger` and the logs say it: `tier cheap`,
/// `model gpt-5-nano`.
pub fn target(to: &tokenwarden_core::workload::DowngradeTarget) -> String {
    use tokenwarden_core::workload::DowngradeTarget;
    match to {
        DowngradeTarget::Tier(t) => format!("tier {t}"),
        DowngradeTarget::Model(m) => format!("model {m}"),
    }
}

use tokenwarden_core::period::rfc3339_seconds as rfc3339;

/// The forecast fields of a budget in `GET /ledger`: the TokenBudget
/// status fields (`projectedSpendUsd`, …) in the document's snake case,
/// plus whether the projection reaches a limit.
pub fn json_fields(f: Option<&Forecast>) -> serde_json::Value {
    serde_json::json!({
        "projected_spend_usd": f.and_then(Forecast::projected_spend).map(|u| u.to_string()),
        "projected_tokens": f.and_then(Forecast::projected_tokens),
        "projected_exhaustion": f.and_then(Forecast::projected_exhaustion).map(rfc3339),
        "projection": f.map_or_else(|| "no history".to_string(), Forecast::note),
        "projection_as_of": f.and_then(Forecast::projection).map(|p| p.as_of.to_string()),
        "projected_overrun": f.is_some_and(Forecast::overrun),
    })
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;
    use tokenwarden_core::{money::Usd, tokens::TokenCounts};

    use super::*;
    use crate::policy_file::PolicySet;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The budget `apps/team`: daily in UTC, $10.
    fn budget(now: Timestamp) -> BudgetState {
        let yaml = "apiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {name: team, namespace: apps}\nspec:\n  period: Daily\n  limit: {usd: \"10.00\"}\n";
        let set = PolicySet::from_yaml("b.yaml", yaml).unwrap();
        let labels = tokenwarden_core::selector::Labels::default();
        let cfg = set.compile("apps", "", &labels).budgets.remove(0);
        BudgetState::new(cfg, now, Totals::default()).unwrap()
    }

    /// Let `minutes` pass, spending `per_min` each, observing every
    /// minute like the ticker; returns the transitions with their instant.
    fn run(
        book: &mut BurnBook,
        b: &mut BudgetState,
        now: &mut Timestamp,
        minutes: i64,
        per_min: &str,
    ) -> Vec<(Timestamp, Transition)> {
        let mut seen = Vec::new();
        for _ in 0..minutes {
            *now += SignedDuration::from_mins(1);
            b.roll(*now);
            let usage = TokenCounts {
                input_tokens: 100,
                ..TokenCounts::default()
            };
            if per_min != "0" {
                b.record(&usage, Some(per_min.parse().unwrap()));
            }
            if let Some(t) = book.observe(b, *now) {
                seen.push((*now, t));
            }
        }
        seen
    }

    #[test]
    fn the_overrun_turns_on_and_off_once_per_change() {
        let mut now = ts("2026-06-01T00:00:00Z");
        let mut b = budget(now);
        let mut book = BurnBook::open(None);
        assert_eq!(book.observe(&b, now), None, "warming up is no overrun");
        // $0.01 a minute projects $14.40 over a $10 limit as soon as an
        // hour of samples exists.
        let on = run(&mut book, &mut b, &mut now, 120, "0.01");
        assert_eq!(on, [(ts("2026-06-01T01:00:00Z"), Transition::On)]);
        assert!(book.overrun(&b.config().source));
        let f = book.forecast(&b, now).unwrap();
        assert_eq!(
            f.projected_spend(),
            Some(Usd::from_picos(14_400_000_000_000))
        );
        assert_eq!(f.projected_exhaustion(), Some(ts("2026-06-01T16:40:00Z")));
        // Quiet: the short mean falls and the overrun clears once, within
        // the short window (at $1.20 spent, in about 20 minutes).
        let off = run(&mut book, &mut b, &mut now, 180, "0");
        assert_eq!(off.len(), 1, "{off:?}");
        let (at, t) = off[0];
        assert_eq!(t, Transition::Off);
        assert!(
            at >= ts("2026-06-01T02:15:00Z") && at <= ts("2026-06-01T02:25:00Z"),
            "{at}"
        );
        assert!(!book.overrun(&b.config().source));
        // The next day (at 00:00) starts cold.
        let next = run(&mut book, &mut b, &mut now, 1140, "0");
        assert!(next.is_empty(), "{next:?}");
        assert_eq!(b.window().start, ts("2026-06-02T00:00:00Z"));
        assert!(matches!(
            book.forecast(&b, now),
            Some(Forecast::WarmingUp { .. })
        ));
    }

    #[test]
    fn the_samples_survive_a_restart_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut now = ts("2026-06-01T06:00:00Z");
        let mut b = budget(now);
        let mut book = BurnBook::open(Some(dir.path()));
        book.observe(&b, now);
        run(&mut book, &mut b, &mut now, 360, "0.01");
        let before = book.forecast(&b, now).unwrap();
        assert!(before.projection().is_some());
        let (path, bytes) = book.due(now, false).unwrap();
        assert_eq!(path, dir.path().join(FILE));
        save(&path, &bytes);
        // Written at most every 30 s, unless forced (shutdown).
        assert!(
            book.due(now + SignedDuration::from_secs(29), false)
                .is_none()
        );
        assert!(
            book.due(now + SignedDuration::from_secs(29), true)
                .is_some()
        );

        // A new process at the same instant: the same forecast.
        let mut again = BurnBook::open(Some(dir.path()));
        let mut b2 = budget(now);
        let usage = TokenCounts {
            input_tokens: b.totals().tokens(),
            ..TokenCounts::default()
        };
        b2.record(&usage, Some(b.totals().spent));
        again.observe(&b2, now);
        assert_eq!(again.forecast(&b2, now), Some(before));
        // Without the file: warming up again.
        let mut cold = BurnBook::open(None);
        cold.observe(&b2, now);
        assert_eq!(
            cold.forecast(&b2, now),
            Some(Forecast::WarmingUp {
                ready_at: now + SignedDuration::from_hours(1)
            })
        );
        // A corrupt file is ignored (logged): warming up too.
        std::fs::write(dir.path().join(FILE), b"{").unwrap();
        assert!(load(dir.path()).is_err());
        let mut broken = BurnBook::open(Some(dir.path()));
        broken.observe(&b2, now);
        assert!(matches!(
            broken.forecast(&b2, now),
            Some(Forecast::WarmingUp { .. })
        ));
    }

    #[test]
    fn ledger_fields_name_the_status_fields() {
        assert_eq!(
            json_fields(None).to_string(),
            r#"{"projected_spend_usd":null,"projected_tokens":null,"projected_exhaustion":null,"projection":"no history","projection_as_of":null,"projected_overrun":false}"#
        );
    }
}
