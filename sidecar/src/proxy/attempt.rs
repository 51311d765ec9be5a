//! The context the request path's stages pass along: the request once
//! read and routed ([`Plan`], the same for every attempt) and the current
//! upstream attempt ([`Attempt`], what its budgets, journal and metrics
//! record).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, uri::PathAndQuery};
use jiff::Timestamp;
use tokenwarden_core::{
    budget::Held,
    classify::Classification,
    money::Usd,
    prompt_cache::Fingerprint,
    route::{Choice, Router},
    tokens::TokenCounts,
    usage::ReplayFacts,
    workload::{Endpoint, ObjectRef, RoutingConfig},
};

use crate::{
    answer::Reason,
    request::ParsedRequest,
    state::{Active, Shared},
};

/// A metered request once read, parsed and routed: what every attempt
/// shares. Borrows the request's head and body.
pub(crate) struct Plan<'a> {
    /// Shared state.
    pub shared: &'a Arc<Shared>,
    /// The config the request runs under.
    pub active: &'a Arc<Active>,
    /// The routing policy's router.
    pub router: &'a Router,
    /// The routing policy.
    pub cfg: &'a RoutingConfig,
    /// The app's request headers.
    pub app_headers: &'a HeaderMap,
    /// The app's path and query, sent upstream as is.
    pub path_and_query: PathAndQuery,
    /// The app's request body.
    pub body: &'a Bytes,
    /// What the body says.
    pub parsed: ParsedRequest<'a>,
    /// The route that matched, or `none` (for metrics).
    pub route_name: String,
    /// The classifier's verdict, when a route looks at the score.
    pub classification: Option<Classification>,
    /// The body's digest for the repeat and loop rules (`0` when no rule
    /// needs it).
    pub digest: u64,
    /// When the request was routed; its budgets are checked at this time.
    pub now: Timestamp,
    /// The output tokens every attempt reserves (all choices of `n`).
    pub max_output: u64,
    /// A streamed chat completion that did not ask for usage: the sidecar
    /// asks for it and strips the usage chunk from the app's stream.
    pub ensure_usage: bool,
    /// What changed the model (`escalated`, `downgraded`, `fallback`), in order.
    pub adjusted: Vec<&'static str>,
    /// Why each escalation in `adjusted` happened, in order.
    pub escalations: Vec<Reason>,
    /// Shadow budgets that would have refused, as `budget:reason`.
    pub shadow_blocks: Vec<String>,
    /// What the response cache made of the request, when it is on for it.
    pub cache: Option<crate::response_cache::CacheState>,
}

// === impl Plan ===

impl Plan<'_> {
    /// Send the attempt to another model (`to`; `None` keeps it, for a
    /// fallback to the same one): said in `x-tokenwarden-adjusted` and
    /// counted as `how` (`escalated`, `downgraded`, `fallback`).
    pub fn adjust(&mut self, attempt: &mut Attempt, how: &'static str, to: Option<Choice>) {
        if let Some(choice) = to {
            attempt.choice = choice;
        }
        self.adjusted.push(how);
        attempt.replay.adjusted.push(how.to_string());
        self.traced(attempt);
        self.shared
            .metrics
            .route(&self.route_name, &attempt.choice.model, how);
    }

    /// Tell the request's span what changed the model and why.
    fn traced(&self, attempt: &Attempt) {
        if let Some(span) = &attempt.trace.request {
            let reasons: Vec<&'static str> = self.escalations.iter().map(|r| r.as_str()).collect();
            span.adjusted(&self.adjusted, &reasons);
        }
    }

    /// Send the attempt one tier up, to `up`, for `reason`: said in
    /// `x-tokenwarden-adjusted` (`escalated`) and
    /// `x-tokenwarden-escalation-reason`, counted per reason and workload.
    pub fn escalate(&mut self, attempt: &mut Attempt, reason: Reason, up: Choice) {
        self.adjust(attempt, "escalated", Some(up));
        if let Some(last) = attempt.replay.adjusted.last_mut() {
            *last = format!("escalated:{}", reason.as_str());
        }
        self.escalations.push(reason);
        self.traced(attempt);
        self.shared
            .metrics
            .escalation(reason.as_str(), &self.shared.options.workload);
    }
}

/// One upstream attempt of a request: where it goes, what it holds in the
/// budgets and leases, and what its journal line and metrics say.
#[derive(Debug)]
pub struct Attempt {
    /// Endpoint called.
    pub endpoint: Endpoint,
    /// Model the app asked for.
    pub requested_model: String,
    /// Route that matched.
    pub route: Option<String>,
    /// Complexity score, when computed.
    pub score: Option<u16>,
    /// The classifier's reason for the score.
    pub reason: Option<String>,
    /// Attempt number, from 1.
    pub number: u32,
    /// Where this attempt goes.
    pub choice: Choice,
    /// Rough prompt-token estimate (bytes / 4) for routing and cut streams.
    pub prompt_estimate: u64,
    /// Holds per budget (`None` for a shadow budget that would have refused).
    pub holds: Vec<(ObjectRef, Option<Held>)>,
    /// The per-key key (`spec.perKey`) of each budget split per key, as
    /// the budget bounded it; the same for every attempt of the request.
    pub keys: Vec<(ObjectRef, String)>,
    /// Connected mode: the leases (a budget's, a key's) that also hold
    /// this attempt's reservation (the same amount as its entry in
    /// `holds`).
    pub leased: Vec<crate::control::leases::LeaseId>,
    /// The attempt's intent in the durable ledger, once written.
    pub intent: Option<u64>,
    /// The prompt as sent, fingerprinted for the prefix-stability monitor
    /// (taken when the attempt settles).
    pub fingerprint: Option<Fingerprint>,
    /// How the sidecar changed the body to make the prompt cache hit, if
    /// it did.
    pub cache_rewrite: Option<crate::prompt_cache::Rewrite>,
    /// When the attempt was sent upstream.
    pub sent_at: Option<Timestamp>,
    /// The OpenAI `prompt_cache_key` the attempt was sent with.
    pub cache_key: Option<String>,
    /// The request's and this attempt's OpenTelemetry spans (empty when
    /// traces are off).
    pub trace: crate::otel::AttemptTrace,
    /// What a what-if replay needs, the same for every attempt of the
    /// request except `adjusted` (grows as the model changes), `request`
    /// (the first settled attempt's seq, once it has one) and `tier` (set
    /// from `choice` when a record is written). Boxed, like the record's:
    /// the request's future moves by value.
    pub replay: Box<ReplayFacts>,
}

// === impl Attempt ===

impl Attempt {
    /// This attempt's replay facts as its record carries them: the tier
    /// named from `cfg`'s ladder.
    pub fn replay_facts(&self, cfg: Option<&RoutingConfig>) -> Box<ReplayFacts> {
        Box::new(ReplayFacts {
            tier: self
                .choice
                .tier
                .and_then(|t| cfg?.tiers.get(t))
                .map(|t| t.name.clone()),
            ..(*self.replay).clone()
        })
    }

    /// The request's per-key key in `budget`, if the budget is split per
    /// key.
    pub fn key_of(&self, budget: &ObjectRef) -> Option<&str> {
        self.keys
            .iter()
            .find(|(b, _)| b == budget)
            .map(|(_, k)| k.as_str())
    }

    /// The worst case of this attempt: `prompt` tokens (an upper bound) as
    /// uncached input plus `max_output` output tokens, and its cost with
    /// every prompt token at the dearest input rate of the target model
    /// (uncached input or cache write); `None` when the model is unpriced.
    pub fn worst_case(
        &self,
        active: &Active,
        prompt: u64,
        max_output: u64,
    ) -> (TokenCounts, Option<Usd>) {
        let cfg = active.router.as_ref().map(|r| r.config());
        let hint = cfg.map(|c| c.providers[self.choice.provider].api.as_str());
        let as_input = TokenCounts {
            input_tokens: prompt,
            output_tokens: max_output,
            ..Default::default()
        };
        let as_write = TokenCounts {
            cache_write_tokens: prompt,
            output_tokens: max_output,
            ..Default::default()
        };
        let cost = active
            .prices
            .price(hint, &self.choice.model)
            .prices()
            .map(|p| p.cost(&as_input).max(p.cost(&as_write)));
        (as_input, cost)
    }
}
