//! Budget enforcement on the request path, all of it: the loop guard and
//! the downgrade once per request ([`screen`]), then for every attempt the
//! reservation of its worst case in every budget, refined or waited for
//! when it does not fit, and in connected mode in the leases too
//! ([`admit`]); and the release of what an attempt that is not forwarded
//! holds ([`release_unforwarded`]). Settling what was forwarded is
//! [`super::settle`]'s.

use std::time::Instant;

use jiff::Timestamp;
use tokenwarden_core::budget::{Ask, RefusalReason};

use super::{
    attempt::{Attempt, Plan},
    budget_key, forward,
};
use crate::{
    control::leases::{self, Want},
    error::ProxyError,
    link::Link,
    state::{Active, Shared},
    sync::lock,
};

/// Once per request, before any attempt: the per-key key of every budget
/// split per key, the loop guard of every budget (per key where split; a
/// shadow budget only reports), then each budget's downgrade target.
pub(super) fn screen(plan: &mut Plan<'_>, attempt: &mut Attempt) -> Result<(), ProxyError> {
    let (shared, active) = (plan.shared, plan.active);
    let mut budgets = lock(&shared.budgets);
    for b in &active.cfg.budgets {
        let Some(state) = budgets.get_mut(&b.source) else {
            continue;
        };
        let key = b.per_key.as_ref().and_then(|pk| {
            let raw = budget_key::raw_key(
                &pk.by,
                &b.source,
                plan.app_headers,
                &shared.options.pod_name,
            );
            state.key_for(plan.now, raw.as_deref())
        });
        if let Some(k) = &key {
            attempt.keys.push((b.source.clone(), k.clone()));
        }
        if let Err(refusal) = state.check_loop_for(plan.now, plan.digest, key.as_deref()) {
            shared
                .metrics
                .budget_block(&b.source.to_string(), refusal.reason.as_str(), b.shadow);
            if b.shadow {
                plan.shadow_blocks
                    .push(format!("{}:{}", b.source, refusal.reason));
            } else {
                return Err(ProxyError::BudgetBlocked {
                    reason: refusal.reason,
                    message: refusal.message,
                    retry_after_secs: Some(refusal.retry_after_secs),
                });
            }
        }
        if let Some(target) = state.downgrade()
            && let Some(down) =
                plan.router
                    .downgrade(&attempt.choice, target, attempt.endpoint.api())
            && down != attempt.choice
        {
            plan.adjust(attempt, "downgraded", Some(down));
        }
    }
    Ok(())
}

/// Reserve this attempt's worst case in every budget and, connected, in
/// the leases; count the shadow budgets that would have refused. Returns
/// the prompt bound reserved. On an error nothing stays held.
pub(super) async fn admit(
    plan: &mut Plan<'_>,
    attempt: &mut Attempt,
    link: &Link,
) -> Result<u64, ProxyError> {
    let reserving = Instant::now();
    let local = reserve_local(plan, attempt, link, reserving).await?;
    reserve_leases(plan.shared, attempt, reserving).await?;
    for (budget, reason) in &local.shadow {
        plan.shared
            .metrics
            .budget_block(budget, reason.as_str(), true);
        plan.shadow_blocks.push(format!("{budget}:{reason}"));
    }
    Ok(local.prompt_bound)
}

/// What the local budgets hold for an attempt.
struct Reserved {
    /// The prompt bound reserved.
    prompt_bound: u64,
    /// Shadow budgets that would have refused, with why.
    shadow: Vec<(String, RefusalReason)>,
}

/// Reserve with the cheap bound (bytes); only if that would refuse, refine
/// the prompt bound once (tokenizer / count_tokens) and retry. When only
/// what other requests in flight reserved leaves no room, wait (bounded)
/// for them to settle: they usually cost less than their worst case.
/// Input the request references but does not carry (a
/// previous_response_id, a file by id, a server-side tool) is billed too:
/// the policy's allowance for it, else the model's context.
async fn reserve_local(
    plan: &Plan<'_>,
    attempt: &mut Attempt,
    link: &Link,
    reserving: Instant,
) -> Result<Reserved, ProxyError> {
    let shared = plan.shared;
    let unseen = plan
        .parsed
        .unseen_input
        .map_or(0, |_| unseen_input_tokens(plan, attempt));
    let mut prompt_bound = (plan.body.len() as u64).saturating_add(unseen);
    let mut refined = false;
    let mut shadow = Vec::new();
    let mut at = plan.now;
    let wait_until = reserving + shared.options.reservation_wait;
    let mut waited = false;
    loop {
        // Registered for wake-ups only once a request has to wait (then
        // before the retry, so a release in between is not missed).
        let freed = shared.reservations_freed.notified();
        tokio::pin!(freed);
        if waited {
            freed.as_mut().enable();
        }
        let Err(blocked) = reserve(
            shared,
            plan.active,
            attempt,
            prompt_bound,
            plan.max_output,
            at,
            &mut shadow,
        ) else {
            return Ok(Reserved {
                prompt_bound,
                shadow,
            });
        };
        let refinable = !refined
            && matches!(&blocked.error, ProxyError::BudgetBlocked { reason, .. }
                if reason.is_about_size())
            // Refining only helps when the prompt is what does not fit:
            // an exhausted budget refuses without asking anyone.
            && fits_without_prompt(shared, plan.active, attempt, plan.max_output, at);
        if refinable {
            refined = true;
            let tighter =
                forward::refine_prompt_bound(shared, link, attempt, plan.app_headers, plan.body)
                    .await;
            if let Some(b) = tighter
                .map(|b| b.saturating_add(unseen))
                .filter(|b| *b < prompt_bound)
            {
                shared
                    .metrics
                    .route(&plan.route_name, &attempt.choice.model, "bound_refined");
                prompt_bound = b;
                continue;
            }
        }
        let left = wait_until.saturating_duration_since(Instant::now());
        if blocked.in_flight && !left.is_zero() {
            if !waited {
                waited = true;
                shared.metrics.reservation_wait(&blocked.budget);
                continue;
            }
            let _ = tokio::time::timeout(left, freed).await;
            at = Timestamp::now();
            continue;
        }
        return Err(refuse(plan, blocked, unseen));
    }
}

/// The refusal of a reservation that neither a refined bound nor waiting
/// made fit: counted, and for a request that references input it does not
/// carry, says how much of the worst case that input is.
fn refuse(plan: &Plan<'_>, blocked: Blocked, unseen: u64) -> ProxyError {
    plan.shared
        .metrics
        .budget_block(&blocked.budget, blocked.error.label(), false);
    let mut error = blocked.error;
    if let (Some(what), ProxyError::BudgetBlocked { message, .. }) =
        (plan.parsed.unseen_input, &mut error)
    {
        message.push_str(&format!(
            " The worst case counts {unseen} input tokens for {what} that the request \
             references but does not carry (RoutingPolicy spec.unseenInputTokens)."
        ));
    }
    error
}

/// Connected: the reservation must also fit this sidecar's leases. On a
/// refusal the local holds are given back.
async fn reserve_leases(
    shared: &Shared,
    attempt: &mut Attempt,
    reserving: Instant,
) -> Result<(), ProxyError> {
    let Some(control) = &shared.control else {
        return Ok(());
    };
    let wants = lease_wants(shared, attempt);
    match leases::reserve(control, &shared.metrics, &wants, reserving).await {
        Ok(r) => {
            attempt.leased = r.leased;
            Ok(())
        }
        Err(e) => {
            release_holds(shared, attempt);
            Err(e)
        }
    }
}

/// What the leases must hold for this attempt: every enforcing budget's
/// reservation, in its current period, in the budget's lease and, for a
/// budget split per key, in its key's lease too.
fn lease_wants(shared: &Shared, attempt: &Attempt) -> Vec<Want> {
    let budgets = lock(&shared.budgets);
    let mut wants = Vec::new();
    for (id, held) in &attempt.holds {
        let (Some(held), Some(state)) = (*held, budgets.get(id)) else {
            continue;
        };
        if state.config().shadow {
            continue;
        }
        let want = Want {
            budget: id.clone(),
            key: String::new(),
            held,
            period_start_unix: state.window().start.as_second(),
            fail_mode: state.config().fail_mode,
        };
        if let Some(key) = attempt.key_of(id) {
            wants.push(Want {
                key: key.to_string(),
                ..want.clone()
            });
        }
        wants.push(want);
    }
    wants
}

/// Give back every local hold of the attempt (it will not be forwarded).
fn release_holds(shared: &Shared, attempt: &mut Attempt) {
    let holds = std::mem::take(&mut attempt.holds);
    let mut budgets = lock(&shared.budgets);
    for (id, held) in holds {
        if let (Some(state), Some(h)) = (budgets.get_mut(&id), held) {
            state.release_for(h, attempt.key_of(&id));
        }
    }
    drop(budgets);
    shared.reservations_freed.notify_waiters();
}

/// Give back every hold of an attempt that was reserved but will not be
/// forwarded: the local ones and the lease holds.
pub(super) fn release_unforwarded(shared: &Shared, attempt: &mut Attempt) {
    if let Some(control) = &shared.control {
        for (id, held) in &attempt.holds {
            let Some(h) = held else {
                continue;
            };
            for lease in attempt.leased.iter().filter(|(b, _)| b == id) {
                control.leases.release(lease, *h);
            }
        }
    }
    attempt.leased.clear();
    release_holds(shared, attempt);
}

/// Whether the request would fit every budget with a prompt of zero tokens
/// (probe: reserves and releases at once).
fn fits_without_prompt(
    shared: &Shared,
    active: &Active,
    attempt: &mut Attempt,
    max_output: u64,
    now: Timestamp,
) -> bool {
    let mut shadow = Vec::new();
    if reserve(shared, active, attempt, 0, max_output, now, &mut shadow).is_err() {
        return false;
    }
    release_holds(shared, attempt);
    true
}

/// A budget refused a reservation.
struct Blocked {
    /// The budget, as `namespace/name`.
    budget: String,
    /// The request fits the budget's spend; only what requests in flight
    /// reserved leaves no room (it may fit once they settle).
    in_flight: bool,
    /// The refusal for the app.
    error: ProxyError,
}

/// Reserve the worst case of this attempt in every budget (all or nothing).
/// Counts nothing: the caller records the outcome once it is final (a
/// refusal may be retried with a refined bound). `shadow` receives the
/// shadow budgets that would have refused.
fn reserve(
    shared: &Shared,
    active: &Active,
    attempt: &mut Attempt,
    body_bytes: u64,
    max_output: u64,
    now: Timestamp,
    shadow: &mut Vec<(String, RefusalReason)>,
) -> Result<(), Blocked> {
    shadow.clear();
    if active.cfg.budgets.is_empty() {
        return Ok(());
    }
    let (_, cost) = attempt.worst_case(active, body_bytes, max_output);
    let ask = Ask {
        cost,
        tokens: body_bytes.saturating_add(max_output),
    };
    let mut budgets = lock(&shared.budgets);
    let mut holds = Vec::new();
    for b in &active.cfg.budgets {
        let Some(state) = budgets.get_mut(&b.source) else {
            continue;
        };
        match state.reserve_for(now, ask, attempt.key_of(&b.source)) {
            Ok(h) => holds.push((b.source.clone(), Some(h))),
            Err(refusal) => {
                if b.shadow {
                    shadow.push((b.source.to_string(), refusal.reason));
                    holds.push((b.source.clone(), None));
                    continue;
                }
                let gave_back = holds.iter().any(|(_, h)| h.is_some());
                for (id, h) in holds {
                    if let (Some(s), Some(h)) = (budgets.get_mut(&id), h) {
                        s.release_for(h, attempt.key_of(&id));
                    }
                }
                drop(budgets);
                if gave_back {
                    shared.reservations_freed.notify_waiters();
                }
                return Err(Blocked {
                    budget: b.source.to_string(),
                    in_flight: refusal.in_flight,
                    error: ProxyError::BudgetBlocked {
                        reason: refusal.reason,
                        message: refusal.message,
                        retry_after_secs: Some(refusal.retry_after_secs),
                    },
                });
            }
        }
    }
    attempt.holds = holds;
    Ok(())
}

/// The input tokens assumed for what a request references but does not
/// carry, on the attempt's target model: the policy's
/// `unseenInputTokens`, else the model's context window, else
/// [`tokenwarden_core::workload::DEFAULT_UNSEEN_INPUT_TOKENS`].
fn unseen_input_tokens(plan: &Plan<'_>, attempt: &Attempt) -> u64 {
    match plan.cfg.unseen_input_tokens {
        Some(n) => u64::from(n),
        None => {
            let hint = plan.cfg.providers[attempt.choice.provider].api.as_str();
            plan.active
                .prices
                .context_window(Some(hint), &attempt.choice.model)
                .unwrap_or(tokenwarden_core::workload::DEFAULT_UNSEEN_INPUT_TOKENS)
        }
    }
}
