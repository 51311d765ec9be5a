//! Re-routing replay: each recorded request through a changed
//! RoutingPolicy's [`Router::decide`], from the facts its usage records
//! hold ([`ReplayFacts`]: prompt estimate, tools, header values, classifier
//! features), never from prompt text.
//!
//! - Attempts of one app request share `replay.request`; the request is
//!   routed once, from its first attempt (its requested model, endpoint and
//!   facts). Retries, fallbacks and escalations are not re-simulated (their
//!   answers are unknown under another policy).
//! - Score: the recorded features scored with the new policy's classifier
//!   ([`classify_features`]: bit for bit the live score when the weights are
//!   unchanged); else the recorded score, which stays right for a new
//!   `hardThreshold` or new score ranges (the score does not depend on
//!   them). When the weights or bias changed ([`ReplayOptions::rescore`]) a
//!   request without features is not replayable.
//! - A fact a rule of the new policy needs and the record lacks makes the
//!   request not replayable ([`NotReplayable`]); nothing is guessed.
//!   Header values are recorded only for the headers the recording policy
//!   matched on, so an absent header counts as absent only when it is in
//!   [`ReplayOptions::known_headers`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    classify::{ClassifierConfig, classify_features},
    route::{Choice, RequestFacts, Router},
    usage::{ReplayFacts, UsageRecord},
    workload::Api,
};

/// How to replay.
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// The classifier's weights or bias changed: recorded scores no longer
    /// hold, only recorded features do.
    pub rescore: bool,
    /// Header names (lower-case) the recording policy matched on, so their
    /// absence on a record means the request did not send them.
    pub known_headers: Vec<String>,
}

/// Why a request cannot be replayed through the new policy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NotReplayable {
    /// A route matches on complexity and the request was neither scored nor
    /// has features.
    NoScore,
    /// The classifier weights changed and the request has no features.
    NoFeatures,
    /// A route matches `promptTokens` and no prompt estimate was recorded.
    NoPromptEstimate,
    /// A route matches `toolsPresent` and it was not recorded.
    NoToolsFact,
    /// A route matches this header and its value was not recorded.
    HeaderNotRecorded(String),
    /// No provider of the new policy speaks the request's API.
    NoProvider,
}

/// Where the new policy sends a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    /// The route that matched (`None`: passthrough).
    pub route: Option<String>,
    /// The model it would be sent to.
    pub model: String,
    /// The choice (provider, model, tier), for budget downgrades.
    pub choice: Choice,
    /// The API of the provider it would be sent to (the price hint).
    pub api: Api,
    /// The score it was routed with.
    pub score: Option<u16>,
}

/// What the new policy's routes look at.
#[derive(Clone, Debug, Default)]
struct Needs {
    score: bool,
    prompt: bool,
    tools: bool,
    headers: Vec<String>,
}

// === impl NotReplayable ===

impl NotReplayable {
    /// A short reason for the output.
    pub fn reason(&self) -> String {
        match self {
            NotReplayable::NoScore => "no score or features recorded".into(),
            NotReplayable::NoFeatures => "weights changed, no features recorded".into(),
            NotReplayable::NoPromptEstimate => "no prompt estimate recorded".into(),
            NotReplayable::NoToolsFact => "tools presence not recorded".into(),
            NotReplayable::HeaderNotRecorded(h) => format!("header {h} not recorded"),
            NotReplayable::NoProvider => "no provider speaks its API".into(),
        }
    }
}

/// The attempts of each app request, in order of their first record:
/// grouped by `replay.request` (non-zero), else one request per record.
pub fn group(records: &[UsageRecord]) -> Vec<Vec<&UsageRecord>> {
    let mut index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut out: Vec<Vec<&UsageRecord>> = Vec::new();
    for r in records {
        let id = r.replay.as_ref().map_or(0, |f| f.request);
        if id == 0 {
            out.push(vec![r]);
            continue;
        }
        match index.get(&id) {
            Some(&i) => out[i].push(r),
            None => {
                index.insert(id, out.len());
                out.push(vec![r]);
            }
        }
    }
    for g in &mut out {
        g.sort_by_key(|r| (r.attempt, r.seq));
    }
    out
}

/// Whether records that carry features score differently under `cfg` than
/// they were scored: evidence that the weights or bias changed.
pub fn scores_changed(cfg: &ClassifierConfig, records: &[UsageRecord]) -> bool {
    records.iter().any(|r| {
        let f = r.replay.as_ref().and_then(|f| f.features.as_ref());
        matches!((f, r.score), (Some(f), Some(s)) if classify_features(cfg, f).score != s)
    })
}

/// Routes `first` (a request's first attempt) through `router`.
pub fn replay(
    router: &Router,
    first: &UsageRecord,
    opts: &ReplayOptions,
) -> Result<Replayed, NotReplayable> {
    let needs = needs(router);
    let facts: Option<&ReplayFacts> = first.replay.as_deref();
    let features = facts.and_then(|f| f.features.as_ref());
    let score = match (features, first.score) {
        (Some(f), _) => Some(classify_features(&router.config().classifier, f).score),
        (None, _) if opts.rescore && needs.score => return Err(NotReplayable::NoFeatures),
        (None, s) => s,
    };
    if needs.score && score.is_none() {
        return Err(NotReplayable::NoScore);
    }
    if needs.prompt && facts.is_none() {
        return Err(NotReplayable::NoPromptEstimate);
    }
    if needs.tools && facts.is_none() {
        return Err(NotReplayable::NoToolsFact);
    }
    let recorded: &[(String, String)] = facts.map_or(&[], |f| &f.headers);
    for h in &needs.headers {
        let have = recorded.iter().any(|(n, _)| n.eq_ignore_ascii_case(h));
        if !have && !opts.known_headers.iter().any(|k| k.eq_ignore_ascii_case(h)) {
            return Err(NotReplayable::HeaderNotRecorded(h.clone()));
        }
    }
    let headers: Vec<(&str, &str)> = recorded
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = RequestFacts {
        endpoint: first.endpoint,
        model: &first.requested_model,
        headers: &headers,
        score: score.unwrap_or(0),
        prompt_tokens: facts.map_or(0, |f| f.prompt_estimate),
        tools_present: facts.is_some_and(|f| f.tools_present),
    };
    let d = router
        .decide(&request)
        .map_err(|_| NotReplayable::NoProvider)?;
    Ok(Replayed {
        route: d.route,
        api: router.config().providers[d.choice.provider].api,
        model: d.choice.model.clone(),
        choice: d.choice,
        score,
    })
}

fn needs(router: &Router) -> Needs {
    let mut n = Needs::default();
    for r in &router.config().routes {
        let m = &r.matcher;
        n.score |= m.complexity.is_some();
        n.prompt |= m.prompt_tokens.is_some();
        n.tools |= m.tools_present.is_some();
        for h in &m.headers {
            let name = h.name.to_ascii_lowercase();
            if !n.headers.contains(&name) {
                n.headers.push(name);
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{classify::Features, tokens::TokenCounts, workload::Endpoint};

    fn rec(seq: u64, request: Option<u64>, attempt: u32) -> UsageRecord {
        UsageRecord {
            seq,
            ts: jiff::Timestamp::UNIX_EPOCH,
            endpoint: Endpoint::Messages,
            requested_model: "m".into(),
            served_model: "m".into(),
            provider: "p".into(),
            route: None,
            score: Some(40),
            reason: None,
            attempt,
            status: 200,
            usage: TokenCounts::default(),
            cost: None,
            estimated: false,
            budgets: vec![],
            cache: Default::default(),
            intent: None,
            replay: request.map(|request| {
                Box::new(ReplayFacts {
                    request,
                    ..ReplayFacts::default()
                })
            }),
        }
    }

    #[test]
    fn attempts_group_by_request_id_in_attempt_order_and_unknown_ids_stand_alone() {
        let recs = [
            rec(1, Some(7), 2),
            rec(2, None, 1),
            rec(3, Some(7), 1),
            rec(4, Some(0), 1),
            rec(5, Some(8), 1),
        ];
        let seqs: Vec<Vec<u64>> = group(&recs)
            .iter()
            .map(|g| g.iter().map(|r| r.seq).collect())
            .collect();
        assert_eq!(seqs, [vec![3, 1], vec![2], vec![4], vec![5]]);
    }

    #[test]
    fn scores_changed_only_when_a_featured_record_scores_differently() {
        let cfg = ClassifierConfig::default();
        let f = Features {
            prompt_bytes: 3_000,
            conversation_turns: 3,
            ..Features::default()
        };
        let live = classify_features(&cfg, &f).score;
        let mut r = rec(1, Some(1), 1);
        r.score = Some(live);
        r.replay = Some(Box::new(ReplayFacts {
            request: 1,
            features: Some(f),
            ..ReplayFacts::default()
        }));
        assert!(!scores_changed(&cfg, std::slice::from_ref(&r)));
        let mut other = cfg.clone();
        other.bias += 3.0;
        assert!(scores_changed(&other, std::slice::from_ref(&r)));
        // Records without features say nothing.
        assert!(!scores_changed(&other, &[rec(2, None, 1)]));
    }
}
