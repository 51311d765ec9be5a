//! The judge stage: a non-streaming answer, held whole before any byte of
//! it reaches the app, is judged by the escalation rules (see
//! [`crate::answer`]); one that fails goes one tier up.
//!
//! An answer is held only when a failure could change something: an
//! answer rule is on, the request does not stream, the answer is a 2xx
//! JSON body in a coding the sidecar decodes, another attempt is allowed
//! (`fallback.maxAttempts`), no budget downgraded the request (its
//! downgrade is a spending decision the rules do not undo), and a tier
//! above the current choice speaks the request's API. Otherwise it goes to the app exactly as before, with
//! no added latency. Holding is bounded by the buffered-response size
//! (1 MiB, the size below which the sidecar already reads a body whole to
//! put its cost in a header): a body whose `content-length` is larger is
//! not held, and one without a length that grows past it is forwarded
//! from where the hold stopped (its bytes read so far first), unchecked.
//! Each rule escalates a request at most once.

use http::{Response, header};
use hyper::body::Incoming;
use tokenwarden_core::{route::Choice, workload::Endpoint};

use super::{
    attempt::{Attempt, Plan},
    respond::{self, Kept, Read},
};
use crate::{answer, body::ProxyBody, meter};

/// What came of judging an answer.
pub(super) enum Judged {
    /// The answer goes to the app.
    Done(Response<ProxyBody>),
    /// It failed a rule: kept (settled), and the attempt (holding
    /// nothing) goes one tier up.
    Again(Kept, Box<Attempt>),
}

/// Where an answer that fails a rule would go: one tier up, when the
/// answer may be held and judged (see the module docs).
pub(super) fn next_up(
    plan: &Plan<'_>,
    attempt: &Attempt,
    resp: &Response<Incoming>,
) -> Option<Choice> {
    let headers = resp.headers();
    let too_long = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > plan.shared.options.buffer_response_bytes);
    let holdable = plan.cfg.escalation.checks_answers()
        && !plan.parsed.stream
        && attempt.endpoint != Endpoint::Embeddings
        && resp.status().is_success()
        && !respond::is_event_stream(headers)
        && !matches!(meter::Coding::of(headers), meter::Coding::Unknown(_))
        && !too_long
        && attempt.number < plan.cfg.fallback.max_attempts.max(1)
        // A budget's downgrade is a spending decision: not undone.
        && !plan.adjusted.contains(&"downgraded");
    if !holdable {
        return None;
    }
    plan.router
        .escalate(&attempt.choice, attempt.endpoint.api())
}

/// Hold the answer and judge it; one that fails a rule (not used on this
/// request yet) is settled and kept, and `attempt` goes to `up`.
pub(super) async fn judge(
    plan: &mut Plan<'_>,
    mut attempt: Attempt,
    resp: Response<Incoming>,
    up: Choice,
) -> Judged {
    let (parts, body) = resp.into_parts();
    let limit = plan.shared.options.buffer_response_bytes;
    let buf = match respond::read_held(plan.shared, body, limit).await {
        Read::Whole(buf) => buf,
        Read::Over(prefix, rest) => {
            return Judged::Done(respond::over(plan, attempt, parts, prefix, rest));
        }
        Read::Broke(buf) => return Judged::Done(respond::broke(plan, attempt, parts, &buf)),
    };
    let decoded = meter::decode_all(&meter::Coding::of(&parts.headers), &buf);
    let answer = decoded.as_deref().unwrap_or(&buf);
    let request = answer::Request {
        endpoint: attempt.endpoint,
        body: plan.body,
        app_limit: plan.parsed.max_output_tokens.is_some(),
    };
    let failed = answer::judge(&request, answer, &plan.cfg.escalation)
        .filter(|r| !plan.escalations.contains(r));
    let Some(reason) = failed else {
        return Judged::Done(respond::held(plan, attempt, parts, buf).await);
    };
    let kept = respond::keep(plan, &mut attempt, parts, buf, decoded.as_deref());
    plan.escalate(&mut attempt, reason, up);
    Judged::Again(kept, Box::new(attempt))
}
