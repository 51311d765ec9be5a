//! The semantic cache's stage, after an exact miss (`proxy::cache`): an
//! eligible request's user text is embedded by the policy's embeddings
//! provider, its scope's index searched, and the most similar stored
//! prompt at or above `minSimilarity` that every guard
//! (`tokenwarden_core::semantic_guard`) lets through answers it — with the
//! exact store's entry under that prompt's key, at $0, with
//! `x-tokenwarden-cache: hit` and `x-tokenwarden-cache-similarity`. A miss
//! goes on to the provider, and its answer, once stored, enters the index
//! with the embedding already made. What may be answered and the scope:
//! `tokenwarden_core::semantic_cache`; docs/response-cache.md.
//!
//! The embedding call is `POST {base URL}/v1/embeddings` with
//! `{"model", "input"}` (OpenAI's embeddings API,
//! <https://platform.openai.com/docs/api-reference/embeddings/create>),
//! with the embeddings provider's own key from its Secret — the app's
//! credentials never leave for it — under the policy's timeout. It is
//! metered: a ledger line for the `embeddings` endpoint with the model and
//! the cost the provider's usage comes to (marked `embedding`, so reports
//! net it against what the hits saved); it is charged to no budget. Any
//! failure (no answer, a timeout, an error status, a body without a
//! vector) makes the request a miss, counted (`embed_error`) and logged
//! without the prompt; never a failed request.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, header, uri::PathAndQuery};
use http_body_util::{BodyExt, Full, Limited};
use jiff::Timestamp;
use serde_json::Value;
use tokenwarden_core::{
    money::Usd,
    response_cache::{KeyParts, semantic_scope_input},
    semantic_cache::{SemanticCacheConfig, Shape, eligible},
    semantic_guard::{GuardMiss, compare},
    tokens::TokenCounts,
    usage::{UsageRecord, cache::CacheFigures},
    workload::Endpoint,
};

use super::attempt::{Attempt, Plan};
use crate::{
    response_cache::{
        Entry, Fill, SemanticFill, key_of,
        semantic::{Scope, SemanticIndex, normalised},
    },
    state::Shared,
};

/// Largest embeddings response read (a 3072-float vector as JSON is ~70 KB).
const MAX_EMBEDDING_RESPONSE: usize = 4 << 20;

/// What the semantic stage found.
pub(super) enum Found {
    /// A stored answer to a similar prompt, and how similar.
    Hit(Arc<Entry>, u16),
    /// None; the fill (with its index entry when the prompt was embedded).
    Miss(Box<Fill>),
}

/// After an exact miss: look the request up by meaning. `fill` is the
/// exact miss's; `parts` its key's parts; `body` the parsed request.
pub(super) async fn lookup(
    plan: &Plan<'_>,
    attempt: &Attempt,
    sem: &SemanticCacheConfig,
    index: Arc<SemanticIndex>,
    parts: &KeyParts<'_>,
    body: &Value,
    fill: Fill,
) -> Found {
    let shared = plan.shared;
    let workload = shared.options.workload.as_str();
    let shape = match attempt.endpoint {
        Endpoint::ChatCompletions => Some(Shape::ChatCompletions),
        Endpoint::Responses => Some(Shape::Responses),
        Endpoint::Messages => Some(Shape::Messages),
        Endpoint::Embeddings => None,
    };
    let Ok(e) = eligible(&sem.eligibility, shape, body) else {
        shared.metrics.semantic_cache("ineligible", workload);
        return Found::Miss(Box::new(fill));
    };
    let scope: Scope = key_of(&semantic_scope_input(parts, &e.blanked, &sem.embedding));
    let embedding = match embed(plan, sem, &e.text).await {
        Ok(v) => Arc::new(v),
        Err(why) => {
            shared.metrics.semantic_cache("embed_error", workload);
            tracing::warn!(
                provider = %sem.embedding.provider,
                model = %sem.embedding.model,
                error = %why,
                "semantic cache: the embedding call failed; the request goes on as a miss"
            );
            return Found::Miss(Box::new(fill));
        }
    };
    let found = index.lookup(&scope, &embedding, sem.min_similarity);
    let mut result = match found.best {
        None => "no_entry",
        Some(_) => "below_threshold",
    };
    for c in &found.candidates {
        if let Err(g) = compare(&c.prompt, &e.text, &sem.guards) {
            if result == "below_threshold" || result == "no_entry" {
                result = guard_label(g);
            }
            continue;
        }
        match fill.get_other(&c.key).await {
            Ok(Some(entry)) => {
                index.touch(&scope, &c.key);
                shared.metrics.semantic_cache("hit", workload);
                shared.metrics.semantic_hit_similarity(c.similarity);
                return Found::Hit(entry, c.similarity);
            }
            Ok(None) => {
                index.remove(&scope, &c.key);
                result = "gone";
            }
            // A shared backend that cannot answer now (counted as its
            // error): the entry stays, to be served once it can.
            Err(_) => result = "store_error",
        }
    }
    shared.metrics.semantic_cache(result, workload);
    let fill = fill.with_semantic(SemanticFill {
        index,
        scope,
        embedding,
        prompt: e.text.into(),
    });
    Found::Miss(Box::new(fill))
}

/// The metric label of a guard's miss.
fn guard_label(g: GuardMiss) -> &'static str {
    match g {
        GuardMiss::Numbers => "guard:numbers",
        GuardMiss::Negation => "guard:negation",
        GuardMiss::Entities => "guard:entities",
        GuardMiss::Code => "guard:code",
        GuardMiss::ContentWords => "guard:content_words",
    }
}

/// Why an embedding call gave no vector (for the log line; never the
/// prompt).
#[derive(Debug, thiserror::Error)]
enum EmbedError {
    #[error("the embeddings provider is not usable: {0}")]
    Provider(String),
    #[error("no answer: {0}")]
    Unreachable(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("status {0}")]
    Status(u16),
    #[error("the answer is not an embeddings response")]
    Shape,
}

/// The embeddings response's parts the cache reads.
struct Answer {
    status: u16,
    body: Bytes,
}

/// Embed `text` with the policy's embeddings provider: the normalised
/// vector. The call is metered when the provider answered.
async fn embed(
    plan: &Plan<'_>,
    sem: &SemanticCacheConfig,
    text: &str,
) -> Result<Vec<f32>, EmbedError> {
    let shared = plan.shared;
    let started = std::time::Instant::now();
    let result = call(plan, sem, text).await;
    shared
        .metrics
        .semantic_embedding(started.elapsed().as_secs_f64());
    let answer = result?;
    let parsed = serde_json::from_slice::<Value>(&answer.body).ok();
    let ok = (200..300).contains(&answer.status);
    let usage = parsed
        .as_ref()
        .filter(|_| ok)
        .and_then(|v| v.get("usage"))
        .map_or(TokenCounts::default(), |u| TokenCounts {
            input_tokens: u
                .get("prompt_tokens")
                .or_else(|| u.get("total_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
            ..TokenCounts::default()
        });
    let served = parsed
        .as_ref()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .unwrap_or(&sem.embedding.model)
        .to_string();
    record(plan, sem, answer.status, served, usage);
    if !ok {
        return Err(EmbedError::Status(answer.status));
    }
    let vector: Option<Vec<f32>> = parsed
        .as_ref()
        .and_then(|v| v.pointer("/data/0/embedding"))
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect());
    vector.and_then(normalised).ok_or(EmbedError::Shape)
}

/// `POST /v1/embeddings` to the embeddings provider, under the timeout.
async fn call(
    plan: &Plan<'_>,
    sem: &SemanticCacheConfig,
    text: &str,
) -> Result<Answer, EmbedError> {
    let provider = plan
        .cfg
        .providers
        .iter()
        .position(|p| p.name == sem.embedding.provider)
        .ok_or_else(|| EmbedError::Provider("not in the policy".into()))?;
    let link = plan
        .active
        .link(provider)
        .map_err(|e| EmbedError::Provider(e.label().to_string()))?;
    let (name, value) = link
        .auth()
        .map_err(|e| EmbedError::Provider(e.label().to_string()))?;
    let uri = link
        .uri(&PathAndQuery::from_static("/v1/embeddings"))
        .map_err(|e| EmbedError::Provider(e.label().to_string()))?;
    let body = serde_json::to_vec(&serde_json::json!({
        "model": sem.embedding.model,
        "input": text,
    }))
    .map_err(|_| EmbedError::Shape)?;
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    h.insert(name.clone(), value.clone());
    let timeout = sem.embedding.timeout_ms;
    let exchange = async {
        let resp = plan
            .shared
            .client
            .request(req)
            .await
            .map_err(|e| EmbedError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_EMBEDDING_RESPONSE)
            .collect()
            .await
            .map_err(|e| EmbedError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok(Answer { status, body })
    };
    tokio::time::timeout(Duration::from_millis(timeout), exchange)
        .await
        .map_err(|_| EmbedError::Timeout(timeout))?
}

/// The embedding call's line in the ledger and its request metrics: the
/// `embeddings` endpoint, the served model, its cost at the catalog's (or
/// the policy's) price, marked as the cache's own; no budget.
fn record(
    plan: &Plan<'_>,
    sem: &SemanticCacheConfig,
    status: u16,
    served: String,
    usage: TokenCounts,
) {
    let shared: &Shared = plan.shared;
    let cost = if usage == TokenCounts::default() {
        Some(Usd::ZERO)
    } else {
        plan.active
            .prices
            .price(Some("openai"), &served)
            .prices()
            .map(|p| p.cost(&usage))
    };
    shared.metrics.attempt(&crate::metrics::Attempt {
        endpoint: Endpoint::Embeddings.as_str(),
        requested_model: &sem.embedding.model,
        served_model: &served,
        route: "none",
        status,
        usage: &usage,
        cost_usd: cost.map(crate::metrics::usd_f64),
        estimated: false,
    });
    let mut record = UsageRecord {
        seq: 0,
        ts: Timestamp::now(),
        endpoint: Endpoint::Embeddings,
        requested_model: sem.embedding.model.clone(),
        served_model: served,
        provider: sem.embedding.provider.clone(),
        route: None,
        score: None,
        reason: None,
        attempt: 1,
        status,
        usage,
        cost,
        estimated: false,
        budgets: Vec::new(),
        cache: CacheFigures {
            embedding: true,
            embedding_cost: cost.unwrap_or(Usd::ZERO),
            ..CacheFigures::default()
        },
        intent: None,
        replay: None,
    };
    super::settle::write_record(shared, &mut record);
}
