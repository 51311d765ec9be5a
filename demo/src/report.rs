//! The demo's report: waits until the operator's ledger counts every
//! request the provider billed, then prints the cluster ledger, the budgets
//! and the coding agent's bill next to "everything on the flagship".

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokenwarden_core::{catalog::Catalog, money::Usd, tokens::TokenCounts};

use crate::{
    processes::{HttpClient, get},
    workload::{FLAGSHIP, Item, Tally},
};

/// The operator's `/ledger` once it counts `billed` requests and every
/// budget has a status (20 s).
pub async fn wait_for_ledger(
    client: &HttpClient,
    admin: u16,
    billed: u64,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(client, format!("http://127.0.0.1:{admin}/ledger")).await?;
        let ledger: serde_json::Value = serde_json::from_slice(&body)?;
        let counted: u64 = ledger["ledger"]
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r["requests"].as_u64()).sum())
            .unwrap_or(0);
        let budgets_done = ledger["budgets"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["requests"].as_u64().is_some()));
        if counted == billed && budgets_done {
            return Ok(ledger);
        }
        if Instant::now() > deadline {
            bail!("the operator's ledger counted {counted} of {billed} billed requests");
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
        "{:<10} {:<14} {:<19} {:>8} {:>9} {:>9} {:>10} {:>11} {:>10}",
        "namespace",
        "workload",
        "model",
        "requests",
        "input",
        "output",
        "cache read",
        "cache write",
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
            cache_write_1h_tokens: 0,
        };
        let cost: Usd = r["cost_usd"].as_str().unwrap_or("0").parse()?;
        total += cost;
        if r["namespace"] == "agents" {
            agent_total += cost;
            // The same tokens, billed at the flagship's prices.
            baseline += flagship.cost(&usage);
        }
        println!(
            "{:<10} {:<14} {:<19} {:>8} {:>9} {:>9} {:>10} {:>11} {:>10}",
            r["namespace"].as_str().unwrap_or("?"),
            r["workload"].as_str().unwrap_or("?"),
            r["model"].as_str().unwrap_or("?"),
            r["requests"].as_u64().unwrap_or(0),
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            dollars(cost)
        );
    }
    println!("{:<56} {:>55}", "total", dollars(total));
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
