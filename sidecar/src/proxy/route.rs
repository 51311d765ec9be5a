//! The routing stages of a metered request: parse the body, classify it
//! when a route looks at the score, pick the route and the model, go one
//! tier up for a prompt sent again and again or when the app asks for it
//! ([`plan`]); after a failed attempt, pick the next one ([`next_choice`]).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, uri::PathAndQuery};
use jiff::Timestamp;
use tokenwarden_core::{
    classify::{self, Classification, RequestView},
    route::RequestFacts,
    usage::{ReplayFacts, cap_header_value},
    workload::{Endpoint, RoutingConfig},
};

use super::{
    attempt::{Attempt, Plan},
    forward::Failure,
};
use crate::{
    answer::Reason,
    error::ProxyError,
    request::{self, ParsedRequest},
    state::{Active, Shared},
};

/// The longest `model` a request may name (real ones are under 100 bytes).
pub const MAX_MODEL_BYTES: usize = 256;

/// Parse, classify and route a metered request; the first attempt goes to
/// the routed model (one tier up when its prompt repeats).
pub(super) fn plan<'a>(
    shared: &'a Arc<Shared>,
    active: &'a Arc<Active>,
    endpoint: Endpoint,
    app_headers: &'a HeaderMap,
    path_and_query: PathAndQuery,
    body: &'a Bytes,
) -> Result<(Plan<'a>, Attempt), ProxyError> {
    let parsed = parse(active, endpoint, body)?;
    let requested_model = requested_model(&parsed)?;
    let router = active.router.as_ref().ok_or_else(|| no_policy(active))?;
    let cfg = router.config();
    let now = Timestamp::now();
    let classification = active.needs_score.then(|| classify(cfg, &parsed));
    let header_pairs: Vec<(&str, &str)> = app_headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)))
        .collect();
    let prompt_estimate = (body.len() as u64).div_ceil(4);
    let facts = RequestFacts {
        endpoint,
        model: &requested_model,
        headers: &header_pairs,
        score: classification.as_ref().map_or(0, |c| c.score),
        prompt_tokens: prompt_estimate,
        tools_present: parsed.tool_definitions > 0,
    };
    let decision = router
        .decide(&facts)
        .map_err(|e| ProxyError::NoRoute(e.to_string()))?;
    let replay = ReplayFacts {
        request: 0,
        prompt_estimate,
        tools_present: facts.tools_present,
        features: classification.as_ref().map(|c| c.features),
        tier: None,
        adjusted: Vec::new(),
        headers: replay_headers(&active.replay_headers, &header_pairs),
    };
    let route_name = decision.route.clone().unwrap_or_else(|| "none".into());
    shared
        .metrics
        .route(&route_name, &decision.choice.model, "routed");
    // Hashing the body costs ~0.2 µs/KB: only when a rule needs it.
    let digest = if active.needs_digest {
        request::digest(body, &parsed)
    } else {
        0
    };
    let attempt = Attempt {
        endpoint,
        requested_model,
        route: decision.route,
        score: classification.as_ref().map(|c| c.score),
        reason: classification.as_ref().map(|c| c.reason.clone()),
        number: 0,
        choice: decision.choice,
        prompt_estimate,
        holds: Vec::new(),
        keys: Vec::new(),
        leased: Vec::new(),
        intent: None,
        fingerprint: None,
        cache_rewrite: None,
        sent_at: None,
        cache_key: None,
        trace: Default::default(),
        replay: Box::new(replay),
    };
    let mut plan = Plan {
        shared,
        active,
        router,
        cfg,
        app_headers,
        path_and_query,
        body,
        max_output: max_output(cfg, endpoint, &parsed),
        ensure_usage: endpoint == Endpoint::ChatCompletions
            && parsed.stream
            && parsed.include_usage != Some(true),
        parsed,
        route_name,
        classification,
        digest,
        now,
        adjusted: Vec::new(),
        escalations: Vec::new(),
        shadow_blocks: Vec::new(),
        cache: None,
    };
    let mut attempt = attempt;
    escalate_at_start(&mut plan, &mut attempt);
    Ok((plan, attempt))
}

/// The values of the headers the routes match on (`names`: lower-case,
/// credentials already left out), in the order the request sent them,
/// each capped (see [`cap_header_value`]).
fn replay_headers(names: &[String], headers: &[(&str, &str)]) -> Vec<(String, String)> {
    if names.is_empty() {
        return Vec::new();
    }
    headers
        .iter()
        .filter(|(n, _)| names.iter().any(|x| x.eq_ignore_ascii_case(n)))
        .map(|(n, v)| (n.to_ascii_lowercase(), cap_header_value(v).to_string()))
        .collect()
}

/// Parse the body; only the classifier reads the conversation's texts.
fn parse<'a>(
    active: &Active,
    endpoint: Endpoint,
    body: &'a Bytes,
) -> Result<ParsedRequest<'a>, ProxyError> {
    if active.needs_score {
        request::parse(endpoint, body)
    } else {
        request::parse_without_texts(endpoint, body)
    }
    .map_err(|e| ProxyError::InvalidRequest(e.to_string()))
}

/// The `model` the app asked for. Model names are short; an unbounded one
/// would be copied into every ledger line, snapshot and metric of the
/// request.
fn requested_model(parsed: &ParsedRequest<'_>) -> Result<String, ProxyError> {
    let model = parsed
        .model
        .as_deref()
        .ok_or(ProxyError::MissingModel)?
        .to_string();
    if model.len() > MAX_MODEL_BYTES {
        return Err(ProxyError::InvalidRequest(format!(
            "`model` is {} bytes long; the longest model name accepted is {MAX_MODEL_BYTES} bytes",
            model.len()
        )));
    }
    Ok(model)
}

fn classify(cfg: &RoutingConfig, parsed: &ParsedRequest<'_>) -> Classification {
    let msgs: Vec<(classify::Role, &str)> = parsed
        .messages
        .iter()
        .map(|(r, t)| (*r, t.as_ref()))
        .collect();
    classify::classify(
        &cfg.classifier,
        &RequestView {
            messages: &msgs,
            tool_definitions: parsed.tool_definitions,
        },
    )
}

/// The output tokens to reserve: every choice (`n`) may use the whole
/// output cap, and all are billed.
fn max_output(cfg: &RoutingConfig, endpoint: Endpoint, parsed: &ParsedRequest<'_>) -> u64 {
    match endpoint {
        Endpoint::Embeddings => 0,
        _ => parsed
            .max_output_tokens
            .unwrap_or(u64::from(cfg.default_max_output_tokens))
            .saturating_mul(parsed.choices),
    }
}

/// The request header an app sends to start one tier up.
pub const ESCALATE_HEADER: &str = "x-tokenwarden-escalate";

/// The app asks to start one tier up: `x-tokenwarden-escalate` is `1` or
/// `true` (any case). Any other value is ignored.
pub(super) fn app_signal(headers: &HeaderMap) -> bool {
    headers.get_all(ESCALATE_HEADER).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.trim() == "1" || v.trim().eq_ignore_ascii_case("true"))
    })
}

/// The same prompt again and again, or the app's signal: one tier up, one
/// step whichever (both) say so (the app's signal names it when both do).
fn escalate_at_start(plan: &mut Plan<'_>, attempt: &mut Attempt) {
    // Seen either way: the window counts every request.
    let repeated = plan
        .cfg
        .escalation
        .repeated_prompt
        .is_some_and(|rule| plan.shared.repeated(plan.digest, plan.now, rule));
    let signal = plan.cfg.escalation.on_app_signal && app_signal(plan.app_headers);
    let reason = match (signal, repeated) {
        (true, _) => Reason::AppSignal,
        (false, true) => Reason::RepeatedPrompt,
        (false, false) => return,
    };
    if let Some(up) = plan
        .router
        .escalate(&attempt.choice, attempt.endpoint.api())
    {
        plan.escalate(attempt, reason, up);
    }
}

/// After a failed attempt (already settled): count the failure and go
/// again, one tier up when escalation on errors is on, else to the same
/// choice as a fallback.
pub(super) fn next_choice(plan: &mut Plan<'_>, attempt: &mut Attempt, failure: &Failure) {
    plan.shared.metrics.error(failure.label());
    if plan.cfg.escalation.on_upstream_error
        && let Some(up) = plan
            .router
            .escalate(&attempt.choice, attempt.endpoint.api())
    {
        plan.escalate(attempt, Reason::UpstreamError, up);
    } else {
        plan.adjust(attempt, "fallback", None);
    }
}

/// No RoutingPolicy selects the workload: nothing to route to.
pub(super) fn no_policy(active: &Active) -> ProxyError {
    ProxyError::NoRoute(format!(
        "no RoutingPolicy selects this workload (namespace {}): there is no provider to send the request to",
        active.cfg.namespace
    ))
}
