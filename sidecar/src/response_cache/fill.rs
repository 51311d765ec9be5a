//! A miss's way into the cache: where its answer goes ([`Fill`]), what the
//! cache made of the request ([`CacheState`]), and the rule of what is
//! stored ([`store`]): only a complete success, as the module docs of the
//! request-path stage (`proxy::cache`) and docs/response-cache.md say.
//!
//! Finish reasons that say an answer ended on its own: OpenAI chat
//! `stop`/`tool_calls`/`function_call`
//! (<https://platform.openai.com/docs/api-reference/chat/object>),
//! Responses `completed`
//! (<https://platform.openai.com/docs/api-reference/responses/object>),
//! Anthropic `end_turn`/`stop_sequence`/`tool_use`
//! (<https://docs.anthropic.com/en/api/messages>); embeddings have none.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use tokenwarden_core::{money::Usd, route::Choice, tokens::TokenCounts};

use super::{
    Entry, Key, ResponseStore, replicate,
    semantic::{Scope, SemanticEntry, SemanticIndex, now_ms},
};
use crate::meter::{self, Flavor};

/// The provider headers stored with an entry and replayed on a hit.
const KEPT_HEADERS: [&str; 6] = [
    "content-type",
    "content-encoding",
    "x-request-id",
    "request-id",
    "openai-version",
    "openai-model",
];

/// Finish reasons that say an answer ended on its own (see the module docs).
const COMPLETE_REASONS: [&str; 7] = [
    "stop",
    "tool_calls",
    "function_call",
    "completed",
    "end_turn",
    "stop_sequence",
    "tool_use",
];

/// What the cache made of a request, for its response header.
#[derive(Clone, Debug)]
pub struct CacheState {
    /// `miss` or `bypass` (a hit is answered before).
    pub header: &'static str,
    /// Where the answer is stored, unless the app said `no-store`.
    pub fill: Option<Fill>,
}

/// Where a miss's answer goes once it is known to be storable.
#[derive(Clone)]
pub struct Fill {
    store: Arc<dyn ResponseStore>,
    key: Key,
    max_entry_bytes: u64,
    /// The choice the key names: an answer from another is not stored.
    choice: Choice,
    /// The response's headers as forwarded (set when it arrives).
    headers: HeaderMap,
    /// What the semantic index gains once the answer is stored.
    semantic: Option<SemanticFill>,
}

/// A semantic miss's entry, added to its index once the exact store holds
/// the answer (with the embedding the lookup already computed).
#[derive(Clone)]
pub struct SemanticFill {
    /// The policy's index.
    pub index: Arc<SemanticIndex>,
    /// The request's scope.
    pub scope: Scope,
    /// The prompt's normalised embedding.
    pub embedding: Arc<Vec<f32>>,
    /// The prompt (memory only).
    pub prompt: Arc<str>,
}

impl std::fmt::Debug for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fill")
            .field("model", &self.choice.model)
            .finish_non_exhaustive()
    }
}

// === impl Fill ===

impl Fill {
    /// Store into `store` under `key` what `choice` answers, up to
    /// `max_entry_bytes`.
    pub fn new(
        store: Arc<dyn ResponseStore>,
        key: Key,
        max_entry_bytes: u64,
        choice: Choice,
    ) -> Fill {
        Fill {
            store,
            key,
            max_entry_bytes,
            choice,
            headers: HeaderMap::new(),
            semantic: None,
        }
    }

    /// The same fill, adding `semantic` to its index once stored.
    pub fn with_semantic(self, semantic: SemanticFill) -> Fill {
        Fill {
            semantic: Some(semantic),
            ..self
        }
    }

    /// The entry under another `key` of the same store (a semantic
    /// neighbour's answer), if present and fresh; `Err`: the backend could
    /// not say (see [`ResponseStore::lookup`]).
    pub async fn get_other(&self, key: &Key) -> Result<Option<Arc<Entry>>, super::redis::Failure> {
        self.store.lookup(key).await
    }

    /// The entry under the key, if present and fresh.
    pub async fn get(&self) -> Option<Arc<Entry>> {
        self.store.get(&self.key).await
    }

    /// The same fill for the answer of `choice` with `status` and
    /// `headers`: `None` when it cannot be stored (not a 2xx, or from
    /// another model than the key names).
    pub fn for_answer(
        &self,
        choice: &Choice,
        status: http::StatusCode,
        headers: &HeaderMap,
    ) -> Option<Fill> {
        (status.is_success() && *choice == self.choice).then(|| Fill {
            headers: headers.clone(),
            ..self.clone()
        })
    }

    /// The largest body stored (the capture bound of a tapped body).
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_entry_bytes
    }

    /// The model the key names (for metrics).
    pub fn model(&self) -> &str {
        &self.choice.model
    }
}

/// What a settled attempt came to, as the cache judges it.
pub struct Answer {
    /// Upstream status.
    pub status: u16,
    /// The body as the app received it; `None`: over `maxEntryBytes`.
    pub body: Option<Bytes>,
    /// The response flavor.
    pub flavor: Flavor,
    /// An event stream ended with its terminal event, its usage and no
    /// error event; a JSON body's usage was read (not estimated).
    pub complete: bool,
    /// Finish reasons (a stream's from its tap; a JSON body's are read here).
    pub reasons: Vec<String>,
    /// The provider's usage.
    pub usage: TokenCounts,
    /// The model that served.
    pub served_model: String,
    /// What it cost.
    pub cost: Option<Usd>,
}

/// Store a settled answer if it is a complete success; returns the
/// metric result: `stored` or `store_skipped`.
pub fn store(fill: Fill, a: Answer) -> &'static str {
    let Some(body) = a.body.filter(|b| b.len() as u64 <= fill.max_entry_bytes) else {
        return "store_skipped";
    };
    let sse = fill
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let reasons = if sse {
        a.reasons
    } else {
        let coding = meter::Coding::of(&fill.headers);
        let decoded = meter::decode_all(&coding, &body);
        meter::ResponseFacts::from_json(a.flavor, decoded.as_deref().unwrap_or(&body))
            .finish_reasons()
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let ended = if a.flavor == Flavor::OpenAiEmbeddings {
        reasons.is_empty()
    } else {
        !reasons.is_empty()
            && reasons
                .iter()
                .all(|r| COMPLETE_REASONS.contains(&r.as_str()))
    };
    if !(a.complete && ended && (200..300).contains(&a.status)) {
        return "store_skipped";
    }
    let kept = KEPT_HEADERS
        .iter()
        .flat_map(|n| {
            fill.headers
                .get_all(*n)
                .iter()
                .map(|v| (HeaderName::from_static(n), v.clone()))
        })
        .collect();
    let entry = Arc::new(Entry {
        status: a.status,
        headers: kept,
        body,
        served_model: a.served_model,
        usage: a.usage,
        cost: a.cost,
        stored_at: std::time::Instant::now(),
    });
    let Some(s) = fill.semantic else {
        fill.store.put(fill.key, entry);
        return "stored";
    };
    let sem = SemanticEntry {
        embedding: s.embedding.as_ref().clone(),
        prompt: s.prompt.to_string(),
        key: fill.key,
        stored_at_ms: now_ms(),
    };
    match s.index.log() {
        // Shared: published once the answer is in Redis (see
        // `replicate`); a failure is counted by the log.
        Some(log) => {
            let (log, ttl) = (log.clone(), s.index.ttl());
            let (id, bytes) = (
                replicate::id_of(&fill.key),
                replicate::encode(&s.scope, &sem),
            );
            let publish = async move {
                let _ = log.publish(&id, &bytes, ttl).await;
            };
            fill.store.put_then(fill.key, entry, Box::pin(publish));
        }
        None => fill.store.put(fill.key, entry),
    }
    s.index.insert(s.scope, sem);
    "stored"
}
