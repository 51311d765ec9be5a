//! The sidecar's shared state: the active config (swapped atomically on
//! reload), the live budgets, the usage journal, metrics and the upstream
//! client.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwapOption;
use jiff::Timestamp;
use tokenwarden_core::{
    budget::BudgetState,
    catalog::{PriceBook, PriceOverride},
    route::Router,
    usage::Totals,
    workload::{ObjectRef, RepeatRule, WorkloadConfig},
};
use tokenwarden_durable::Journal;

use crate::sync::lock;
use crate::{link::Link, metrics::Metrics, secrets::Keys, upstream::UpstreamClient};

/// Settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Provider keys directory.
    pub secrets_dir: Option<PathBuf>,
    /// Response bodies up to this size are buffered so the cost can be sent
    /// in a header; larger ones (and every stream) are forwarded as they come.
    pub buffer_response_bytes: usize,
    /// How long a request waits for in-flight reservations to settle when
    /// only they leave no room for it in a budget.
    pub reservation_wait: std::time::Duration,
    /// Forward requests whose intent cannot be written to the ledger
    /// (default: refuse them).
    pub ledger_fail_open: bool,
    /// How long an app may take to send a request body.
    pub body_timeout: std::time::Duration,
    /// How long the provider may stay silent after its response head (a
    /// stream stalled mid-body) before the attempt is cut.
    pub upstream_idle: std::time::Duration,
    /// Replaces the providers' prompt-cache TTLs in the prefix-stability
    /// monitor (`--prompt-cache-ttl-ms`; simulators and tests).
    pub prompt_cache_ttl: Option<std::time::Duration>,
    /// This workload, `namespace/name` (the name from the naming labels
    /// or the pod name; just `namespace` when neither gives one): the
    /// `workload` label of the escalation metric.
    pub workload: String,
    /// This pod's name (`--pod-name`): the key of budgets split per pod
    /// (`spec.perKey.by.pod`); empty when not given.
    pub pod_name: String,
}

/// One loaded, valid configuration.
#[derive(Debug)]
pub struct Active {
    /// The compiled config.
    pub cfg: WorkloadConfig,
    /// The router, when a RoutingPolicy selects the workload.
    pub router: Option<Router>,
    /// Catalog plus the policy's price overrides.
    pub prices: PriceBook,
    /// Provider keys.
    pub keys: Keys,
    /// How each provider is reached (base URL, credential), by provider index.
    pub links: Vec<Link>,
    /// Whether any route looks at the complexity score.
    pub needs_score: bool,
    /// Whether a rule needs the request digest (repeated-prompt escalation
    /// or a loop guard).
    pub needs_digest: bool,
    /// The request headers the routes match on (lower-case, each once,
    /// credentials left out): their values go in each record's replay
    /// facts.
    pub replay_headers: Vec<String>,
}

/// Everything request handling shares.
#[derive(Debug)]
pub struct Shared {
    /// Start-up settings.
    pub options: Options,
    /// The active config; `None` until one is valid.
    pub active: ArcSwapOption<Active>,
    /// Live budgets, by object.
    pub budgets: Mutex<BTreeMap<ObjectRef, BudgetState>>,
    /// The budgets' burn samples and forecasts. Lock order: `budgets`
    /// first, then this.
    pub burn: Mutex<crate::forecast::BurnBook>,
    /// Woken whenever budget reservations are settled or released (room
    /// may have been made for a waiting request).
    pub reservations_freed: tokio::sync::Notify,
    /// The usage journal: the ledger's totals and, in connected mode, the
    /// records the operator has not acked (on file under `--state-dir`,
    /// else in memory).
    pub journal: Mutex<Journal>,
    /// Metrics.
    pub metrics: Metrics,
    /// Pooled upstream client.
    pub client: UpstreamClient,
    /// Recent request digests, for the repeated-prompt escalation rule.
    pub repeats: Mutex<HashMap<u64, VecDeque<Timestamp>>>,
    /// Connected mode: the operator session's state (spool, leases).
    pub control: Option<Arc<crate::control::Control>>,
    /// The prefix-stability monitor and the recent cache busts.
    pub prompt_cache: crate::prompt_cache::PromptCache,
    /// OpenTelemetry traces, when the `OTEL_*` environment turns them on.
    pub otel: Option<crate::otel::Otel>,
    /// OpenTelemetry metrics, when the `OTEL_*` environment turns them on.
    pub otel_metrics: Option<crate::otel::OtelMetrics>,
    /// The response cache's stores, per RoutingPolicy.
    pub response_cache: crate::response_cache::ResponseCache,
}

/// Most digests the repeated-prompt tracker remembers.
const MAX_REPEAT_KEYS: usize = 10_000;

// === impl Active ===

impl Active {
    /// Build from a compiled config, reading keys from `secrets_dir`.
    pub fn new(cfg: WorkloadConfig, secrets_dir: Option<&std::path::Path>) -> Self {
        let router = cfg.routing.clone().map(Router::new);
        let overrides: Vec<PriceOverride> = cfg
            .routing
            .iter()
            .flat_map(|r| r.providers.iter().flat_map(|p| p.prices.iter().cloned()))
            .collect();
        let keys = Keys::load(
            secrets_dir,
            cfg.routing
                .iter()
                .flat_map(|r| r.providers.iter().map(|p| &p.api_key)),
        );
        let links = cfg
            .routing
            .iter()
            .flat_map(|r| r.providers.iter())
            .map(|p| Link::new(p, &keys))
            .collect();
        let needs_score = cfg
            .routing
            .as_ref()
            .is_some_and(|r| r.routes.iter().any(|x| x.matcher.complexity.is_some()));
        let needs_digest = cfg
            .routing
            .as_ref()
            .is_some_and(|r| r.escalation.repeated_prompt.is_some())
            || cfg.budgets.iter().any(|b| b.loop_guard.is_some());
        let replay_headers = replay_headers(cfg.routing.as_ref());
        Active {
            cfg,
            router,
            prices: PriceBook::new(overrides),
            keys,
            links,
            needs_score,
            needs_digest,
            replay_headers,
        }
    }
}

/// The header names the routes of `routing` match on, lower-case, sorted,
/// each once, never a credential (see
/// [`tokenwarden_core::usage::NEVER_RECORDED_HEADERS`]).
fn replay_headers(routing: Option<&tokenwarden_core::workload::RoutingConfig>) -> Vec<String> {
    let mut names: Vec<String> = routing
        .iter()
        .flat_map(|r| r.routes.iter())
        .flat_map(|route| route.matcher.headers.iter())
        .map(|h| h.name.to_ascii_lowercase())
        .filter(|n| tokenwarden_core::usage::header_recordable(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

// === impl Active (links) ===

impl Active {
    /// How to reach the provider at `index` in the routing config.
    pub fn link(&self, index: usize) -> Result<&Link, crate::error::ProxyError> {
        self.links
            .get(index)
            .ok_or_else(|| crate::error::ProxyError::NoRoute("provider index out of range".into()))
    }
}

// === impl Shared ===

impl Shared {
    /// Totals of a budget period from the ledger.
    pub fn ledger_period(&self, budget: &ObjectRef, start: Timestamp) -> Totals {
        lock(&self.journal).aggregate().budget_period(budget, start)
    }

    /// Install a new config: swap it in and bring the live budgets in line
    /// (new budgets start from the ledger's totals for their current period).
    pub fn install(&self, active: Active, now: Timestamp) {
        {
            let mut budgets = lock(&self.budgets);
            let wanted: BTreeMap<ObjectRef, _> = active
                .cfg
                .budgets
                .iter()
                .map(|b| (b.source.clone(), b.clone()))
                .collect();
            budgets.retain(|k, _| wanted.contains_key(k));
            for (id, cfg) in wanted {
                match budgets.get_mut(&id) {
                    Some(state) => {
                        if state.reconfigure(cfg, now).is_err() {
                            budgets.remove(&id);
                        }
                    }
                    None => {
                        let state = BudgetState::from_ledger(cfg, now, |start| {
                            self.ledger_period(&id, start)
                        });
                        if let Ok(state) = state {
                            budgets.insert(id, state);
                        }
                    }
                }
            }
        }
        self.response_cache.install(
            active
                .cfg
                .routing
                .as_ref()
                .map(|r| (&r.source, r.response_cache.as_ref())),
        );
        self.active.store(Some(Arc::new(active)));
    }

    /// Record `digest` and say whether it was seen `rule.count` times within
    /// the rule's window (this occurrence included).
    pub fn repeated(&self, digest: u64, now: Timestamp, rule: RepeatRule) -> bool {
        let window =
            jiff::SignedDuration::from_millis(i64::try_from(rule.window_ms).unwrap_or(i64::MAX));
        let mut map = lock(&self.repeats);
        if map.len() >= MAX_REPEAT_KEYS && !map.contains_key(&digest) {
            map.retain(|_, v| v.back().is_some_and(|t| now.duration_since(*t) < window));
            if map.len() >= MAX_REPEAT_KEYS {
                return false;
            }
        }
        let seen = map.entry(digest).or_default();
        while seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            seen.pop_front();
        }
        seen.push_back(now);
        seen.len() >= rule.count as usize
    }
}
