//! Prompt-cache busts per RoutingPolicy and workload over the last day:
//! what the `PromptCacheUnstable` condition and its Events say.
//!
//! Every counted usage record with a bust (the sidecar's prefix-stability
//! monitor found one) is noted under the policy the sidecar runs. The
//! condition is True while a workload the policy selects had a bust in the
//! last 24 hours, and names the workload, the model, the section and kind
//! of change that broke the prefix most often and the dollars wasted in
//! that window. The window lives in the leader's memory: a new leader
//! starts it empty (the busts and waste stay in the cluster ledger's
//! totals). Bounded: at most [`MAX_BUSTS`] busts per workload and
//! [`MAX_WORKLOADS`] workloads per policy are kept.

use std::collections::{BTreeMap, VecDeque};

use jiff::{SignedDuration, Timestamp};
use tokenwarden_core::{
    money::Usd,
    usage::{
        UsageRecord,
        cache::{BustReason, ChangeKind},
    },
    workload::ObjectRef,
};

/// The window the condition looks at.
pub(super) const WINDOW: SignedDuration = SignedDuration::from_hours(24);
/// Busts kept per workload (the oldest go first).
pub(super) const MAX_BUSTS: usize = 4096;
/// Workloads kept per policy (the one with the oldest last bust goes).
pub(super) const MAX_WORKLOADS: usize = 256;
/// At most one Event per policy and this interval, unless what broke the
/// cache changed.
pub(super) const EVENT_INTERVAL: SignedDuration = SignedDuration::from_hours(1);

/// One bust, without any prompt text.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    at: Timestamp,
    model: String,
    section: String,
    offset: u64,
    change: ChangeKind,
    reason: BustReason,
    wasted: Usd,
}

/// Busts told apart for the condition: model, section, offset, change, reason.
type Group<'a> = (&'a str, &'a str, u64, ChangeKind, BustReason);

/// What broke one policy's cache: the condition's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Unstable {
    /// The condition's reason: the dominant bust's reason, UpperCamelCase.
    pub(super) reason: &'static str,
    /// The condition's (and Event's) message.
    pub(super) message: String,
    /// Workload, model, section and change of the dominant bust: a new
    /// one is worth a new Event.
    signature: (String, String, String, ChangeKind),
}

#[derive(Debug, Default)]
struct Workload {
    busts: VecDeque<Seen>,
}

#[derive(Debug, Default)]
struct Policy {
    workloads: BTreeMap<String, Workload>,
    /// The signature of the last Event and when it was sent.
    evented: Option<((String, String, String, ChangeKind), Timestamp)>,
}

/// The busts of the last day, by policy and workload.
#[derive(Debug, Default)]
pub(super) struct CacheWatch {
    policies: BTreeMap<ObjectRef, Policy>,
}

// === impl CacheWatch ===

impl CacheWatch {
    /// Note a counted record of `workload` (`namespace/name`), running
    /// `policy`. Records without a bust are ignored.
    pub(super) fn note(&mut self, policy: &ObjectRef, workload: &str, rec: &UsageRecord) {
        let Some(b) = &rec.cache.bust else { return };
        let p = self.policies.entry(policy.clone()).or_default();
        if !p.workloads.contains_key(workload) && p.workloads.len() >= MAX_WORKLOADS {
            let oldest = p
                .workloads
                .iter()
                .min_by_key(|(_, w)| w.busts.back().map(|s| s.at))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                p.workloads.remove(&k);
            }
        }
        let w = p.workloads.entry(workload.to_string()).or_default();
        if w.busts.len() >= MAX_BUSTS {
            w.busts.pop_front();
        }
        w.busts.push_back(Seen {
            at: rec.ts,
            model: rec.served_model.clone(),
            section: b.section.clone(),
            offset: b.offset,
            change: b.change,
            reason: b.reason,
            wasted: rec.cache.wasted,
        });
    }

    /// Forget busts older than the window, and policies left with none.
    /// Returns whether a bust was forgotten (a condition may change).
    pub(super) fn prune(&mut self, now: Timestamp) -> bool {
        let cutoff = now - WINDOW;
        let mut forgot = false;
        for p in self.policies.values_mut() {
            for w in p.workloads.values_mut() {
                while w.busts.front().is_some_and(|s| s.at < cutoff) {
                    w.busts.pop_front();
                    forgot = true;
                }
            }
            p.workloads.retain(|_, w| !w.busts.is_empty());
        }
        self.policies.retain(|_, p| {
            !p.workloads.is_empty() || p.evented.as_ref().is_some_and(|(_, t)| *t >= cutoff)
        });
        forgot
    }

    /// What `policy`'s condition says now; `None`: no bust in the window.
    /// `guard`: the volatile-prefix guard's repeat threshold, when the
    /// policy turned it on; a dominant run that busted at least that often
    /// is named with what to do about it.
    pub(super) fn unstable(
        &self,
        policy: &ObjectRef,
        now: Timestamp,
        guard: Option<u32>,
    ) -> Option<Unstable> {
        let p = self.policies.get(policy)?;
        let cutoff = now - WINDOW;
        // The workload that wasted most (then had most busts).
        let (workload, busts) = p
            .workloads
            .iter()
            .map(|(k, w)| {
                (
                    k,
                    w.busts
                        .iter()
                        .filter(|s| s.at >= cutoff)
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, b)| !b.is_empty())
            .max_by_key(|(k, b)| {
                let wasted: Usd = b.iter().map(|s| s.wasted).sum();
                (wasted, b.len(), std::cmp::Reverse((*k).clone()))
            })?;
        let wasted: Usd = busts.iter().map(|s| s.wasted).sum();
        // The dominant (model, section, offset, change).
        let mut groups: BTreeMap<Group<'_>, (usize, Usd)> = BTreeMap::new();
        for s in &busts {
            let g = groups
                .entry((&s.model, &s.section, s.offset, s.change, s.reason))
                .or_default();
            g.0 += 1;
            g.1 = g.1.saturating_add(s.wasted);
        }
        let ((model, section, offset, change, reason), (count, _)) = groups
            .into_iter()
            .max_by_key(|(k, (n, usd))| (*usd, *n, std::cmp::Reverse(*k)))?;
        let place = if section.is_empty() {
            "with no change in the request (the provider read less than the prefix it had cached)"
                .to_string()
        } else {
            format!("at {section} offset {offset} ({})", change.describe())
        };
        let mut message = format!(
            "workload {workload}: {} in the last 24h, wasting ${wasted}; most often on {model} \
             {place}: {}",
            plural(busts.len(), "prompt-cache bust"),
            times(count),
        );
        let repeated = guard.is_some_and(|g| count >= usize::try_from(g).unwrap_or(usize::MAX));
        if repeated && !section.is_empty() {
            message.push_str(
                ". The same volatile run keeps breaking the cached prefix: make it stable, or \
                 move it after the last cache breakpoint (the end of the prompt)",
            );
        }
        Some(Unstable {
            reason: match reason {
                BustReason::PrefixDiverged => "PrefixDiverged",
                BustReason::VolatilePrefix => "VolatilePrefix",
                BustReason::ProviderMiss => "ProviderMiss",
            },
            message,
            signature: (
                workload.clone(),
                model.to_string(),
                section.to_string(),
                change,
            ),
        })
    }

    /// Whether `u` on `policy` deserves an Event now: the first time, when
    /// what broke the cache changed, or an hour after the last one. Marks
    /// it sent.
    pub(super) fn should_event(
        &mut self,
        policy: &ObjectRef,
        u: &Unstable,
        now: Timestamp,
    ) -> bool {
        let Some(p) = self.policies.get_mut(policy) else {
            return false;
        };
        let due = match &p.evented {
            None => true,
            Some((sig, at)) => *sig != u.signature || now.duration_since(*at) >= EVENT_INTERVAL,
        };
        if due {
            p.evented = Some((u.signature.clone(), now));
        }
        due
    }
}

/// `1 prompt-cache bust`, `4 prompt-cache busts`.
fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `once`, `twice`, `3 times`.
fn times(n: usize) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

#[cfg(test)]
mod tests {
    use tokenwarden_core::{
        tokens::TokenCounts,
        usage::cache::{CacheBust, CacheFigures},
        workload::Endpoint,
    };

    use super::*;

    fn rec(at: &str, section: &str, change: ChangeKind, wasted: &str) -> UsageRecord {
        UsageRecord {
            seq: 1,
            ts: at.parse().unwrap(),
            endpoint: Endpoint::Messages,
            requested_model: "claude-sonnet-4-5".into(),
            served_model: "claude-sonnet-4-5".into(),
            provider: "anthropic".into(),
            route: None,
            score: None,
            reason: None,
            attempt: 1,
            status: 200,
            usage: TokenCounts::default(),
            cost: None,
            estimated: false,
            budgets: vec![],
            intent: None,
            replay: None,
            cache: CacheFigures {
                saved: Usd::ZERO,
                wasted: wasted.parse().unwrap(),
                bust: Some(CacheBust {
                    reason: BustReason::VolatilePrefix,
                    section: section.into(),
                    offset: 14,
                    change,
                    lost_tokens: 1000,
                }),
                ..Default::default()
            },
        }
    }

    #[test]
    fn names_the_dominant_change_and_the_waste_of_the_last_day() {
        let p = ObjectRef::new("apps", "agent-routing");
        let mut w = CacheWatch::default();
        w.note(
            &p,
            "apps/agent",
            &rec("2026-12-05T09:00:00Z", "system", ChangeKind::Timestamp, "5"),
        );
        for h in 10..13 {
            let at = format!("2026-12-06T{h}:00:00Z");
            w.note(
                &p,
                "apps/agent",
                &rec(&at, "system", ChangeKind::Timestamp, "0.25"),
            );
        }
        w.note(
            &p,
            "apps/agent",
            &rec(
                "2026-12-06T12:30:00Z",
                "tools[0]",
                ChangeKind::ToolsReordered,
                "0.01",
            ),
        );
        let now: Timestamp = "2026-12-06T13:00:00Z".parse().unwrap();
        let u = w.unstable(&p, now, None).unwrap();
        assert_eq!(u.reason, "VolatilePrefix");
        assert_eq!(
            u.message,
            "workload apps/agent: 4 prompt-cache busts in the last 24h, wasting $0.76; most often \
             on claude-sonnet-4-5 at system offset 14 (a timestamp-like value changed): 3 times"
        );
        // With the volatile-prefix guard at 3 repeats, it says what to do.
        let g = w.unstable(&p, now, Some(3)).unwrap();
        assert!(
            g.message
                .ends_with("move it after the last cache breakpoint (the end of the prompt)"),
            "{}",
            g.message
        );
        assert!(
            !w.unstable(&p, now, Some(4))
                .unwrap()
                .message
                .contains("volatile run")
        );
        // An Event the first time, not again within the hour, again once
        // what broke the cache changes.
        assert!(w.should_event(&p, &u, now));
        assert!(!w.should_event(&p, &u, now + SignedDuration::from_mins(30)));
        assert!(w.should_event(&p, &u, now + SignedDuration::from_mins(61)));
        // A day later the window is empty: the condition clears.
        let later = now + SignedDuration::from_hours(25);
        w.prune(later);
        assert_eq!(w.unstable(&p, later, None), None);
        assert_eq!(
            w.unstable(&ObjectRef::new("apps", "other"), now, None),
            None
        );
    }

    #[test]
    fn records_without_a_bust_and_bounds() {
        let p = ObjectRef::new("apps", "r");
        let mut w = CacheWatch::default();
        let mut plain = rec("2026-12-06T10:00:00Z", "system", ChangeKind::Timestamp, "1");
        plain.cache.bust = None;
        w.note(&p, "apps/a", &plain);
        assert!(w.policies.is_empty());
        for i in 0..(MAX_BUSTS + 10) {
            let mut r = rec("2026-12-06T10:00:00Z", "system", ChangeKind::Date, "0");
            r.seq = i as u64;
            w.note(&p, "apps/a", &r);
        }
        assert_eq!(w.policies[&p].workloads["apps/a"].busts.len(), MAX_BUSTS);
        for i in 0..(MAX_WORKLOADS + 5) {
            w.note(
                &p,
                &format!("apps/w{i}"),
                &rec("2026-12-06T11:00:00Z", "system", ChangeKind::Date, "0"),
            );
        }
        assert_eq!(w.policies[&p].workloads.len(), MAX_WORKLOADS);
    }
}
