//! The demo's report: waits until the operator's ledger counts every
//! request the provider billed, then prints the cluster ledger, the budgets
//! and the coding agent's bill next to "everything on the flagship".

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokenwarden_core::{catalog::Catalog, money::Usd, tokens::TokenCounts, usage::cache::HitRatio};

use crate::{
    faq::{self, FaqSeen, Kind},
    processes::{HttpClient, get},
    requests::Item,
    workload::{FLAGSHIP, Tally},
};

/// The operator's `/ledger` once it counts `billed` requests (the
/// requests the provider answered: every request but the response cache's
/// hits and the embedding calls), `embedded` embedding calls (what the
/// embedder answered) and every budget has a status (20 s).
pub async fn wait_for_ledger(
    client: &HttpClient,
    admin: u16,
    billed: u64,
    embedded: u64,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(client, format!("http://127.0.0.1:{admin}/ledger")).await?;
        let ledger: serde_json::Value = serde_json::from_slice(&body)?;
        let rows = ledger["ledger"].as_array().map_or(&[][..], Vec::as_slice);
        let of = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or(0);
        let counted: u64 = rows
            .iter()
            .map(|r| {
                of(r, "requests")
                    .saturating_sub(of(r, "response_cache_hits"))
                    .saturating_sub(of(r, "cache_embedding_calls"))
            })
            .sum();
        let embeddings: u64 = rows.iter().map(|r| of(r, "cache_embedding_calls")).sum();
        let budgets_done = ledger["budgets"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["requests"].as_u64().is_some()));
        if counted == billed && embeddings == embedded && budgets_done {
            return Ok(ledger);
        }
        if Instant::now() > deadline {
            bail!(
                "the operator's ledger counted {counted} of {billed} billed requests and {embeddings} of {embedded} embedding calls"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What routing, the downgrade and the token cap did.
pub fn print_summary(t: &Tally, items: &[Item], billed: u64) {
    let hard_total = items.iter().filter(|i| i.hard()).count();
    let easy_total = items.len() - hard_total;
    println!();
    println!(
        "routing: {}/{hard_total} hard coding tasks went to a strong model; {}/{easy_total} easy ones went to claude-haiku-4-5",
        t.hard_strong, t.easy_cheap
    );
    println!(
        "search-agent: {} answered by gpt-4o, {} by gpt-4o-mini (easy, or after the 30% downgrade), {} refused",
        t.search_full, t.search_mini, t.search_refused
    );
    println!(
        "summarizer (2 pods, one token budget): {} served, {} refused with 429 once the cap was reached",
        t.summarized, t.refused
    );
    println!(
        "{} failed; the ledger equals what the provider billed ({billed} requests)",
        t.failures
    );
}

pub fn print_ledger(ledger: &serde_json::Value) -> anyhow::Result<()> {
    let flagship = Catalog::builtin()
        .lookup(Some("anthropic"), FLAGSHIP)
        .context("the flagship has a price")?
        .prices
        .clone();
    let rows = ledger["ledger"].as_array().context("ledger rows")?;
    println!();
    println!("cluster ledger (operator), by namespace, workload and model that served:");
    println!(
        "{:<10} {:<14} {:<19} {:>8} {:>9} {:>9} {:>10} {:>11} {:>9} {:>10}",
        "namespace",
        "workload",
        "model",
        "requests",
        "input",
        "output",
        "cache read",
        "cache write",
        "cache hit",
        "cost"
    );
    let mut agent_total = Usd::ZERO;
    let mut baseline = Usd::ZERO;
    let mut total = Usd::ZERO;
    for r in rows {
        let usage = TokenCounts {
            input_tokens: r["input_tokens"].as_u64().unwrap_or(0),
            output_tokens: r["output_tokens"].as_u64().unwrap_or(0),
            cache_read_tokens: r["cache_read_tokens"].as_u64().unwrap_or(0),
            cache_write_tokens: r["cache_write_tokens"].as_u64().unwrap_or(0),
            cache_write_1h_tokens: r["cache_write_1h_tokens"].as_u64().unwrap_or(0),
        };
        let cost: Usd = r["cost_usd"].as_str().unwrap_or("0").parse()?;
        total += cost;
        if r["namespace"] == "agents" {
            agent_total += cost;
            // The same tokens, billed at the flagship's prices.
            baseline += flagship.cost(&usage);
        }
        println!(
            "{:<10} {:<14} {:<19} {:>8} {:>9} {:>9} {:>10} {:>11} {:>9} {:>10}",
            r["namespace"].as_str().unwrap_or("?"),
            r["workload"].as_str().unwrap_or("?"),
            r["model"].as_str().unwrap_or("?"),
            r["requests"].as_u64().unwrap_or(0),
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            HitRatio::of(&usage).map_or_else(|| "-".into(), |h| h.to_string()),
            dollars(cost)
        );
    }
    println!("{:<56} {:>65}", "total", dollars(total));
    print_budgets(ledger)?;
    println!();
    println!(
        "agents/coding-agent: {} routed, {} if everything had gone to {FLAGSHIP}",
        dollars(agent_total),
        dollars(baseline)
    );
    if baseline.picos() > 0 {
        let saved = 100.0 - agent_total.picos() as f64 * 100.0 / baseline.picos() as f64;
        println!("saved {saved:.1}% against sending everything to the flagship");
    }
    Ok(())
}

/// The budgets as `kubectl get tokenbudgets -A` shows them.
fn print_budgets(ledger: &serde_json::Value) -> anyhow::Result<()> {
    println!();
    println!("budgets (TokenBudget status, as `kubectl get tokenbudgets -A` shows it):");
    println!(
        "{:<10} {:<18} {:>8} {:>10} {:>10} {:>8} state",
        "namespace", "name", "period", "spent", "limit", "used"
    );
    for b in ledger["budgets"].as_array().context("budgets")? {
        let usd = |k: &str| -> String {
            b[k].as_str()
                .and_then(|v| v.parse::<Usd>().ok())
                .map_or_else(|| "?".into(), dollars)
        };
        let limit = if b["limit_usd"].is_string() {
            usd("limit_usd")
        } else {
            format!("{} tok", b["limit_tokens"].as_u64().unwrap_or(0))
        };
        let spent = if b["limit_usd"].is_string() {
            usd("spent_usd")
        } else {
            format!("{} tok", b["tokens"].as_u64().unwrap_or(0))
        };
        println!(
            "{:<10} {:<18} {:>8} {:>10} {:>10} {:>7}% {}",
            b["namespace"].as_str().unwrap_or("?"),
            b["name"].as_str().unwrap_or("?"),
            b["period"].as_str().unwrap_or("?"),
            spent,
            limit,
            b["percent_spent"].as_u64().unwrap_or(0),
            b["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn dollars(u: Usd) -> String {
    let cents = u.picos() / 10_000_000_000;
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// A dollar amount to the hundredth of a cent (`$0.0123`): cache savings
/// and waste of a short demo are small.
fn dollars4(u: Usd) -> String {
    let tenths = u.picos() / 100_000_000;
    format!("${}.{:04}", tenths / 10_000, tenths % 10_000)
}

/// What the demo knows about the FAQ bot's run besides the ledger.
pub struct FaqRun<'a> {
    /// What the sidecar said about each kind of question.
    pub seen: &'a FaqSeen,
    /// Why the semantic cache is off (no model, no binary); `None`: on.
    pub semantic_off: Option<&'a str>,
    /// Near-miss requests the provider answered (its request log).
    pub near_misses_at_provider: usize,
    /// The FAQ sidecar's `tokenwarden_semantic_cache_requests_total` by
    /// `result`.
    pub lookups: &'a [(String, u64)],
}

/// The response cache's part: the FAQ bot's requests, exact and semantic
/// hits, hit rate, saved dollars, the embeddings' cost and the net saving
/// as the operator's cluster ledger counted them; the near-misses (sent,
/// served from the cache, answered by the provider); the sidecar's
/// semantic lookups by result; the budget's status (spend, and apart what
/// the hits saved).
pub fn print_response_cache(ledger: &serde_json::Value, run: &FaqRun<'_>) -> anyhow::Result<()> {
    let rows: Vec<&serde_json::Value> = ledger["ledger"]
        .as_array()
        .context("ledger rows")?
        .iter()
        .filter(|r| r["namespace"] == "support" && r["workload"] == "faq-bot")
        .collect();
    let count = |k: &str| -> u64 { rows.iter().filter_map(|r| r[k].as_u64()).sum() };
    let sum = |k: &str| -> Usd { rows.iter().map(|r| usd_of(&r[k])).sum() };
    // The embedding calls are requests of the ledger too (to the embedder).
    let embeddings = count("cache_embedding_calls");
    let requests = count("requests") - embeddings;
    let (hits, semantic) = (count("response_cache_hits"), count("semantic_cache_hits"));
    let embedding_cost = sum("cache_embedding_cost_usd");
    let rate = if requests == 0 {
        0.0
    } else {
        hits as f64 * 100.0 / requests as f64
    };
    let (paraphrases, near) = (faq::count(Kind::Paraphrase), faq::count(Kind::NearMiss));
    println!();
    println!(
        "response cache (support/faq-bot: {} base questions asked {} times each, then {paraphrases} paraphrases and {near} near-misses; {}):",
        faq::FAQS.len(),
        faq::ROUNDS,
        if run.semantic_off.is_some() {
            "exact cache only"
        } else {
            "exact and semantic cache on"
        },
    );
    println!(
        "  support/faq-bot: {requests} requests, {hits} answered from the cache (hit rate {rate:.1}%): {} exact, {semantic} semantic; cost {}, the ledger's saved dollars {}",
        hits - semantic,
        dollars4(sum("cost_usd") - embedding_cost),
        dollars4(sum("response_cache_saved_usd")),
    );
    match run.semantic_off {
        Some(why) => println!(
            "  semantic cache off: {why}, so the {paraphrases} paraphrases went to the provider like any exact miss; to answer them from the cache: {}",
            crate::embedder::HOW_TO_ENABLE
        ),
        None => println!(
            "  embeddings: {embeddings} calls to the self-hosted embedder ({}), cost {}; net saving {} (saved minus the embeddings' cost)",
            crate::embedder::MODEL,
            dollars4(embedding_cost),
            dollars4(sum("response_cache_net_saved_usd")),
        ),
    }
    let kinds: Vec<String> = faq::near_miss_kinds()
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let nm = &run.seen.near_misses;
    println!(
        "  near-misses ({}): {} asked, {} served from the cache, {} answered by the provider",
        kinds.join(", "),
        nm.asked,
        nm.exact + nm.semantic,
        run.near_misses_at_provider,
    );
    if run.semantic_off.is_none() {
        let guards: Vec<String> = run
            .lookups
            .iter()
            .filter_map(|(r, n)| Some(format!("{} {n}", r.strip_prefix("guard:")?)))
            .collect();
        let of = |r: &str| -> u64 {
            run.lookups
                .iter()
                .filter(|(k, _)| k == r)
                .map(|(_, n)| n)
                .sum()
        };
        let guarded: u64 = run
            .lookups
            .iter()
            .filter(|(r, _)| r.starts_with("guard:"))
            .map(|(_, n)| n)
            .sum();
        println!(
            "  the sidecar's semantic lookups: {} hit, {guarded} told apart by a guard ({}), {} below the threshold, {} with nothing stored yet",
            of("hit"),
            guards.join(", "),
            of("below_threshold"),
            of("no_entry"),
        );
    }
    let budget = ledger["budgets"]
        .as_array()
        .context("budgets")?
        .iter()
        .find(|b| b["namespace"] == "support")
        .context("the support budget")?;
    println!(
        "  TokenBudget support/{}: spent {} over {} requests; responseCache: {} hits, saved {} (not charged)",
        budget["name"].as_str().unwrap_or("?"),
        dollars4(usd_of(&budget["spent_usd"])),
        budget["requests"].as_u64().unwrap_or(0),
        budget["response_cache_hits"].as_u64().unwrap_or(0),
        dollars4(usd_of(&budget["response_cache_saved_usd"])),
    );
    Ok(())
}

/// The cluster ledger's row of an `ops` workload.
fn ops_row<'a>(ledger: &'a serde_json::Value, workload: &str) -> Option<&'a serde_json::Value> {
    ledger["ledger"]
        .as_array()?
        .iter()
        .find(|r| r["namespace"] == "ops" && r["workload"] == workload)
}

fn usd_of(v: &serde_json::Value) -> Usd {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or(Usd::ZERO)
}

/// The prompt cache's part: the planner trace without and with automatic
/// breakpoints, the ticket agent's busts as its sidecar saw them, and the
/// `PromptCacheUnstable` condition the operator put on its RoutingPolicy
/// (waited for up to 10 s: status writes follow the ledger).
pub async fn print_prompt_cache(
    client: &HttpClient,
    ledger: &serde_json::Value,
    ticket_admin: u16,
    state: &std::path::Path,
) -> anyhow::Result<()> {
    println!();
    println!(
        "prompt cache (same planner trace, 4 conversations x 10 turns, no cache_control of its own):"
    );
    for (workload, how) in [
        ("planner", "automatic breakpoints off"),
        ("planner-cached", "automatic breakpoints on "),
    ] {
        let row = ops_row(ledger, workload).context("a planner row in the ledger")?;
        println!(
            "  ops/{workload:<15} {how}: {} of its input read from cache, cost {}, cache saved {}",
            row["cache_hit_ratio"]
                .as_str()
                .and_then(|r| r.parse::<f64>().ok())
                .map_or_else(|| "0.0%".into(), |r| format!("{:.1}%", r * 100.0)),
            dollars4(usd_of(&row["cost_usd"])),
            dollars4(usd_of(&row["cache_saved_usd"])),
        );
    }
    let tickets = ops_row(ledger, "ticket-agent").context("a ticket-agent row in the ledger")?;
    let (_, body) = get(client, format!("http://127.0.0.1:{ticket_admin}/ledger")).await?;
    let sidecar: serde_json::Value = serde_json::from_slice(&body)?;
    let last = &sidecar["prompt_cache"]["recent_busts"][0];
    println!(
        "  ops/ticket-agent (timestamp at the start of its cached system prompt): {} cache busts, {} wasted; the sidecar's last: {} at {} offset {} ({})",
        tickets["cache_busts"].as_u64().unwrap_or(0),
        dollars4(usd_of(&tickets["cache_wasted_usd"])),
        last["reason"].as_str().unwrap_or("-"),
        last["section"].as_str().unwrap_or("-"),
        last["offset"].as_u64().unwrap_or(0),
        last["change"].as_str().unwrap_or("-"),
    );
    // The status catches up with the ledger within a tick or two: wait
    // for the condition that counts every bust the ledger has.
    let counted = format!(
        "{} prompt-cache bust",
        tickets["cache_busts"].as_u64().unwrap_or(0)
    );
    let path = state.join("status/routingpolicies/ops.ticket-agent.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: Option<serde_json::Value> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let cond = status.as_ref().and_then(|s| {
            s["conditions"]
                .as_array()?
                .iter()
                .find(|c| {
                    c["type"] == "PromptCacheUnstable"
                        && c["status"] == "True"
                        && c["message"].as_str().is_some_and(|m| m.contains(&counted))
                })
                .cloned()
        });
        if let Some(c) = cond {
            println!(
                "  RoutingPolicy ops/ticket-agent: PromptCacheUnstable=True ({}): {}",
                c["reason"].as_str().unwrap_or("?"),
                c["message"].as_str().unwrap_or("?")
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no PromptCacheUnstable condition on RoutingPolicy ops/ticket-agent");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
