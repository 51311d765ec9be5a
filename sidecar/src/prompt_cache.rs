//! The sidecar's side of the provider's prompt cache: the
//! prefix-stability monitor's state ([`PromptCache`]) and what a settled
//! attempt's record says about the cache ([`PromptCache::figures`]).
//!
//! Every metered attempt's body, as sent upstream, is fingerprinted
//! (hashes, lengths and offsets: never text, see
//! [`tokenwarden_core::prompt_cache`]); when its usage is settled the
//! monitor compares it with the recent prompts of the same provider and
//! model and names a cache bust, which is priced into the record with
//! what the cache saved. The last busts are kept for `/ledger`.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokenwarden_core::{
    catalog::{ModelPrices, cache_minimums::anthropic_min_cacheable_tokens},
    money::Usd,
    prompt_cache::{Fingerprint, Monitor, MonitorLimits},
    tokens::TokenCounts,
    usage::cache::{CacheBust, CacheFigures},
    workload::{CachingConfig, Endpoint},
};

use crate::{
    metrics::Metrics,
    request::{self, BreakpointPlan, CacheEdit},
    sync::lock,
};

/// How the sidecar changed a request to make the provider's cache hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    /// Anthropic `cache_control` breakpoints inserted.
    Breakpoints,
    /// OpenAI `prompt_cache_key` set.
    PromptCacheKey,
}

impl Rewrite {
    /// The `x-tokenwarden-cache-control` response header's value.
    pub const fn header_value(self) -> &'static str {
        match self {
            Rewrite::Breakpoints => "inserted",
            Rewrite::PromptCacheKey => "prompt-cache-key",
        }
    }

    /// The `kind` label of `tokenwarden_cache_rewrites_total`.
    pub const fn metric_kind(self) -> &'static str {
        match self {
            Rewrite::Breakpoints => "breakpoints",
            Rewrite::PromptCacheKey => "prompt_cache_key",
        }
    }
}

/// The body to send with the policy's cache settings applied (`caching`
/// in the RoutingPolicy): Anthropic breakpoints inserted into a request
/// that carries no `cache_control`, above the model's minimum cacheable
/// length; an OpenAI `prompt_cache_key` set where the request has none.
/// Anything else, and every request the settings do not apply to, is
/// returned as it is.
pub fn apply(
    caching: &CachingConfig,
    endpoint: Endpoint,
    model: &str,
    body: Bytes,
) -> (Bytes, Option<Rewrite>) {
    match endpoint {
        Endpoint::Messages => {
            let Some(bp) = &caching.anthropic_breakpoints else {
                return (body, None);
            };
            let mut plan = BreakpointPlan::for_model(model, bp.ttl);
            if let Some(tokens) = bp.minimum_override(model) {
                plan.min_tokens = u64::from(tokens);
            }
            match request::insert_anthropic_breakpoints(&body, &plan) {
                CacheEdit::Inserted { body, .. } => (body, Some(Rewrite::Breakpoints)),
                _ => (body, None),
            }
        }
        Endpoint::ChatCompletions | Endpoint::Responses => {
            let Some(key) = &caching.openai_prompt_cache_key else {
                return (body, None);
            };
            match request::insert_prompt_cache_key(&body, endpoint, key) {
                CacheEdit::KeySet { body } => (body, Some(Rewrite::PromptCacheKey)),
                _ => (body, None),
            }
        }
        Endpoint::Embeddings => (body, None),
    }
}

/// The fingerprint of a body about to be sent to `model`, with the
/// model's minimum cacheable length for Anthropic (the policy's override,
/// else the built-in table): a prefix the provider cannot cache is never
/// expected to be read. `None` for a prompt the provider cannot cache at
/// all ([`Fingerprint::can_matter`]): short OpenAI prompts and Anthropic
/// prompts without breakpoints cost the monitor nothing.
pub fn fingerprint(
    caching: &CachingConfig,
    endpoint: Endpoint,
    model: &str,
    body: &[u8],
) -> Option<Fingerprint> {
    if !Fingerprint::can_matter(endpoint, body) {
        return None;
    }
    let fp = Fingerprint::of(endpoint, body)?;
    if endpoint != Endpoint::Messages {
        return Some(fp);
    }
    let min = caching
        .anthropic_breakpoints
        .as_ref()
        .and_then(|b| b.minimum_override(model))
        .map_or_else(|| anthropic_min_cacheable_tokens(model), u64::from);
    Some(fp.with_min_cacheable_tokens(min))
}

/// The top-level `prompt_cache_key` of an OpenAI body, if it has one (a
/// substring check first: most bodies have none and are not parsed again).
pub fn prompt_cache_key(endpoint: Endpoint, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Key {
        prompt_cache_key: Option<String>,
    }
    if !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Responses)
        || memchr::memmem::find(body, b"prompt_cache_key").is_none()
    {
        return None;
    }
    serde_json::from_slice::<Key>(body).ok()?.prompt_cache_key
}

/// Busts `/ledger` lists (the most recent).
const RECENT_BUSTS: usize = 32;

/// One recent bust, for `/ledger`.
#[derive(Clone, Debug)]
struct Recent {
    at: Timestamp,
    model: String,
    bust: CacheBust,
    wasted: Usd,
    repeats: u32,
}

/// The monitor and the recent busts.
#[derive(Debug)]
pub struct PromptCache {
    monitor: Mutex<Monitor>,
    recent: Mutex<VecDeque<Recent>>,
    ttl_override: Option<Duration>,
}

/// What one settled attempt needs to know about the cache.
pub struct Settling<'a> {
    /// The attempt's body as sent, fingerprinted; `None` when it has no
    /// prompt sections (embeddings) or failed before it was sent.
    pub fingerprint: Option<Fingerprint>,
    /// Provider name and the model the attempt asked for: the monitor's key.
    pub provider: &'a str,
    /// The model the attempt asked for.
    pub model: &'a str,
    /// The request's OpenAI `prompt_cache_key`: the provider keeps a cache
    /// per key, so the monitor does too.
    pub cache_key: Option<String>,
    /// The usage billed.
    pub usage: &'a TokenCounts,
    /// The serving model's prices, when priced.
    pub prices: Option<&'a ModelPrices>,
    /// Whether the usage is the provider's (not an estimate, a 2xx).
    pub exact: bool,
    /// When the attempt was sent (the provider's cache state that applies).
    pub sent: Timestamp,
}

// === impl PromptCache ===

impl PromptCache {
    /// An empty monitor with the default limits; `ttl_override` replaces
    /// the providers' TTLs (`--prompt-cache-ttl-ms`).
    pub fn new(ttl_override: Option<Duration>) -> Self {
        PromptCache {
            // The sidecar gives both times of a request (sent, settled),
            // which tell requests sent together apart exactly: no grace.
            monitor: Mutex::new(Monitor::new(MonitorLimits {
                miss_grace: Duration::ZERO,
                ..MonitorLimits::default()
            })),
            recent: Mutex::new(VecDeque::new()),
            ttl_override,
        }
    }

    /// The saved and wasted figures of a settled attempt and its bust,
    /// if the monitor finds one; counts them in the metrics.
    pub fn figures(&self, metrics: &Metrics, s: Settling<'_>, settled: Timestamp) -> CacheFigures {
        let now = s.sent;
        let mut figures = CacheFigures {
            saved: s.prices.map_or(Usd::ZERO, |p| p.cache_saved(s.usage)),
            ..CacheFigures::default()
        };
        // Only the provider's own numbers say how the cache did.
        let Some(fp) = s.fingerprint.filter(|_| s.exact) else {
            return figures;
        };
        let key = format!(
            "{}\u{0}{}\u{0}{}",
            s.provider,
            s.model,
            s.cache_key.as_deref().unwrap_or("")
        );
        let obs =
            lock(&self.monitor).observe_sent(&key, fp, now, settled, s.usage, self.ttl_override);
        if obs.expired {
            metrics.cache_expiry();
        }
        if let Some(bust) = obs.bust {
            let wasted = s
                .prices
                .map_or(Usd::ZERO, |p| p.cache_wasted(s.usage, bust.lost_tokens));
            tracing::info!(
                model = s.model,
                reason = bust.reason.as_str(),
                section = %bust.section,
                offset = bust.offset,
                change = bust.change.as_str(),
                lost_tokens = bust.lost_tokens,
                wasted_usd = %wasted,
                repeats = obs.repeats,
                "prompt-cache bust"
            );
            let mut recent = lock(&self.recent);
            if recent.len() >= RECENT_BUSTS {
                recent.pop_front();
            }
            recent.push_back(Recent {
                at: now,
                model: s.model.to_string(),
                bust: bust.clone(),
                wasted,
                repeats: obs.repeats,
            });
            drop(recent);
            figures.wasted = wasted;
            figures.bust = Some(bust);
        }
        figures
    }

    /// The heap memory the monitor holds (`tokenwarden_cache_monitor_bytes`,
    /// set when `/metrics` is scraped).
    pub fn heap_bytes(&self) -> usize {
        lock(&self.monitor).heap_bytes()
    }

    /// The `prompt_cache` member of `/ledger`: the monitor's memory and the
    /// most recent busts, newest first.
    pub fn json(&self) -> Value {
        let bytes = self.heap_bytes();
        let recent: Vec<Value> = lock(&self.recent)
            .iter()
            .rev()
            .map(|r| {
                json!({
                    "at": r.at.to_string(),
                    "model": r.model,
                    "reason": r.bust.reason.as_str(),
                    "section": r.bust.section,
                    "offset": r.bust.offset,
                    "change": r.bust.change.as_str(),
                    "lost_tokens": r.bust.lost_tokens,
                    "wasted_usd": r.wasted.to_string(),
                    "repeats": r.repeats,
                })
            })
            .collect();
        json!({ "monitor_bytes": bytes, "recent_busts": recent })
    }
}
