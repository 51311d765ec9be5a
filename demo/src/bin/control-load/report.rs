//! The run's report: totals over every simulated sidecar, the Markdown
//! tables (load, ingest, ack latency, config propagation, the operator
//! process, the ledger check) and the JSON summary.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokenwarden_core::money::Usd;

use crate::{
    args::RunArgs,
    sidecar::{SidecarResult, identity},
};

/// What the operator process used, from `/proc`.
pub struct ProcStats {
    /// (VmRSS, VmHWM) KiB before the load.
    pub rss_before: (u64, u64),
    /// (VmRSS, VmHWM) KiB after the drain.
    pub rss_after: (u64, u64),
    /// CPU ticks before the load, at its end, after the drain.
    pub cpu: (u64, u64, u64),
    /// RSS sampled every second during the load, the peak, KiB.
    pub rss_peak: u64,
}

/// Everything the run measured.
pub struct Measured {
    pub connections: usize,
    pub connect_secs: f64,
    pub duration: Duration,
    pub results: Vec<SidecarResult>,
    /// From the end of the load to the last report.
    pub drained_after: Duration,
    /// When the objects file was edited, and how many replacements.
    pub edited: Option<(Instant, usize)>,
    pub edit_at: Duration,
    pub operator: Option<ProcStats>,
    /// The load tool's own CPU seconds.
    pub self_cpu_secs: f64,
}

/// Totals over the sidecars.
pub struct Totals {
    errors: Vec<String>,
    sent: u64,
    acked: u64,
    acked_window: u64,
    batches: u64,
    unacked: usize,
    max_lag: Duration,
    /// Ack latencies, sorted, microseconds.
    lat: Vec<u64>,
    cost_sent: i128,
    /// Per budget: (cost, requests) expected.
    expected: BTreeMap<String, (i128, u64)>,
    /// Config propagation: (times µs sorted, streams without the change, replacements).
    propagation: Option<(Vec<u64>, usize, usize)>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn usd(picos: i128) -> String {
    Usd::from_picos(picos).to_string()
}

/// Add up what every sidecar saw and did.
pub fn totals(m: &Measured, args: &RunArgs) -> Totals {
    let results = &m.results;
    let mut lat: Vec<u64> = results
        .iter()
        .flat_map(|r| r.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let mut expected: BTreeMap<String, (i128, u64)> = BTreeMap::new();
    for r in results {
        for (b, c) in &r.cost_by_budget {
            expected.entry(b.clone()).or_default().0 += c;
        }
    }
    // Requests per budget: every record of a sidecar counts in each of its budgets.
    for (i, r) in results.iter().enumerate() {
        let id = identity(i, args.namespaces, args.seed);
        for b in [
            format!("{}/team-daily", id.namespace),
            format!("{}/{}-daily", id.namespace, id.app),
        ] {
            expected.entry(b).or_default().1 += r.records_sent;
        }
    }
    Totals {
        errors: results.iter().filter_map(|r| r.error.clone()).collect(),
        sent: results.iter().map(|r| r.records_sent).sum(),
        acked: results.iter().map(|r| r.records_acked).sum(),
        acked_window: results.iter().map(|r| r.records_acked_in_window).sum(),
        batches: results.iter().map(|r| r.batches_sent).sum(),
        unacked: results.iter().map(|r| r.unacked_batches).sum(),
        max_lag: results
            .iter()
            .map(|r| r.max_send_lag)
            .max()
            .unwrap_or_default(),
        lat,
        cost_sent: results.iter().map(|r| r.cost_sent).sum(),
        expected,
        propagation: m.edited.map(|(at, n)| propagation(results, at, n)),
    }
}

/// Config propagation: from the file write to each stream's new snapshot.
fn propagation(
    results: &[SidecarResult],
    at: Instant,
    replacements: usize,
) -> (Vec<u64>, usize, usize) {
    let mut times = Vec::with_capacity(results.len());
    let mut missing = 0;
    for r in results {
        let before = r
            .snapshots
            .iter()
            .rev()
            .find(|(_, t)| *t < at)
            .map(|(v, _)| v);
        match r
            .snapshots
            .iter()
            .find(|(v, t)| *t >= at && Some(v) != before)
        {
            Some((_, t)) => times.push(u64::try_from((*t - at).as_micros()).unwrap_or(u64::MAX)),
            None => missing += 1,
        }
    }
    times.sort_unstable();
    (times, missing, replacements)
}

/// The Markdown report and whether the run passed (no stream error, every
/// batch acked, every stream got the edit, the ledgers match).
pub fn render(m: &Measured, t: &Totals, args: &RunArgs) -> anyhow::Result<(String, bool)> {
    let mut out = String::new();
    let mut pass = t.errors.is_empty() && t.unacked == 0;
    load_section(&mut out, m, args);
    ingest_section(&mut out, m, t);
    pass &= propagation_section(&mut out, m, t, args);
    if let Some(p) = &m.operator {
        process_section(&mut out, m, t, p, args.clk_tck.max(1));
    }
    let _ = writeln!(
        out,
        "\nLoad tool CPU over the same time: {:.2} s (it shares the 2 cores with the operator).",
        m.self_cpu_secs
    );
    pass &= ledger_section(&mut out, t, args.state_dir.as_deref())?;
    if let Some(first) = t.errors.first() {
        let _ = writeln!(out, "\n{} stream errors, first: {first}", t.errors.len());
    }
    Ok((out, pass))
}

fn load_section(out: &mut String, m: &Measured, args: &RunArgs) {
    let n = m.results.len();
    let _ = writeln!(out, "### Load\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| simulated sidecars (streams) | {n} over {} HTTP/2 connections |",
        m.connections
    );
    let _ = writeln!(
        out,
        "| target rate | {:.0} records/s ({:.1}/s per sidecar), batches of {}–{} records |",
        args.rate,
        args.rate / n as f64,
        args.batch_min,
        args.batch_max
    );
    let _ = writeln!(out, "| duration | {:.0} s |", m.duration.as_secs_f64());
    let _ = writeln!(
        out,
        "| streams connected + configured in | {:.2} s |",
        m.connect_secs
    );
}

fn ingest_section(out: &mut String, m: &Measured, t: &Totals) {
    let secs = m.duration.as_secs_f64();
    let _ = writeln!(out, "\n### Ingest\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| records sent | {} in {} batches = **{:.0} records/s** |",
        t.sent,
        t.batches,
        t.sent as f64 / secs
    );
    let _ = writeln!(
        out,
        "| records acked during the load | {} = **{:.0} records/s** |",
        t.acked_window,
        t.acked_window as f64 / secs
    );
    let _ = writeln!(
        out,
        "| records acked in total | {} (last ack {:.2} s after the load ended) |",
        t.acked,
        m.drained_after.as_secs_f64().max(0.0)
    );
    let _ = writeln!(out, "| batches never acked | {} |", t.unacked);
    let _ = writeln!(
        out,
        "| load tool behind schedule (worst) | {:.1} ms |",
        t.max_lag.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        out,
        "\n### Ack latency (batch sent → `UsageAck` covering it), {} batches\n",
        t.lat.len()
    );
    let _ = writeln!(out, "| p50 | p90 | p99 | max |\n|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} ms | {} ms | {} ms | {} ms |",
        ms(percentile(&t.lat, 0.5)),
        ms(percentile(&t.lat, 0.9)),
        ms(percentile(&t.lat, 0.99)),
        ms(t.lat.last().copied().unwrap_or(0))
    );
}

/// The propagation table; false when a stream never got the edit.
fn propagation_section(out: &mut String, m: &Measured, t: &Totals, args: &RunArgs) -> bool {
    let Some((times, missing, replacements)) = &t.propagation else {
        return true;
    };
    let _ = writeln!(
        out,
        "\n### Config propagation (file write → new snapshot received), {} streams\n",
        m.results.len()
    );
    let _ = writeln!(
        out,
        "Edit: {replacements} × `{}` → `{}` in one file, written atomically at t={:.1} s.\n",
        args.edit_from,
        args.edit_to,
        m.edit_at.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| first stream | p50 | p99 | **last stream** | streams without the new snapshot |\n|---|---|---|---|---|"
    );
    let _ = writeln!(
        out,
        "| {} ms | {} ms | {} ms | **{} ms** | {missing} |",
        ms(times.first().copied().unwrap_or(0)),
        ms(percentile(times, 0.5)),
        ms(percentile(times, 0.99)),
        ms(times.last().copied().unwrap_or(0))
    );
    *missing == 0
}

fn process_section(out: &mut String, m: &Measured, t: &Totals, p: &ProcStats, clk: u64) {
    let secs = m.duration.as_secs_f64();
    let (c0, cl, c1) = p.cpu;
    let cpu_s = (c1 - c0) as f64 / clk as f64;
    let cpu_load_s = (cl - c0) as f64 / clk as f64;
    let _ = writeln!(out, "\n### Operator process (/proc)\n");
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| RSS before the load (streams connected) | {:.1} MiB |",
        p.rss_before.0 as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| RSS after the load (streams connected) | {:.1} MiB |",
        p.rss_after.0 as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| RSS peak (VmHWM) | {:.1} MiB |",
        p.rss_after.1 as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| CPU time during the load | {cpu_load_s:.2} s in {secs:.0} s = {:.0}% of one core |",
        cpu_load_s / secs * 100.0
    );
    let _ = writeln!(
        out,
        "| CPU time load + drain, per 1k records acked | {:.2} ms |",
        if t.acked > 0 {
            cpu_s * 1000.0 / (t.acked as f64 / 1000.0)
        } else {
            0.0
        }
    );
    let _ = writeln!(
        out,
        "| RSS sampled peak (1 s) | {:.1} MiB |",
        p.rss_peak as f64 / 1024.0
    );
}

/// The ledger check against the operator's state dir; false on a mismatch.
fn ledger_section(out: &mut String, t: &Totals, state_dir: Option<&Path>) -> anyhow::Result<bool> {
    let (sent, cost_sent) = (t.sent, t.cost_sent);
    let _ = writeln!(out, "\n### Ledger check (after the last ack)\n");
    let _ = writeln!(out, "Cost sent: ${} in {sent} records.\n", usd(cost_sent));
    let Some(state) = state_dir else {
        return Ok(true);
    };
    let (budgets, ledger_cost, ledger_requests) = read_ledgers(state)?;
    let _ = writeln!(out, "| ledger | expected | operator | |\n|---|---|---|---|");
    let ok_mark = |b: bool| if b { "ok" } else { "**MISMATCH**" };
    let lok = ledger_cost == cost_sent && ledger_requests == sent;
    let mut all = lok;
    let _ = writeln!(
        out,
        "| cluster ledger (`ledger.json`) | ${} / {sent} req | ${} / {ledger_requests} req | {} |",
        usd(cost_sent),
        usd(ledger_cost),
        ok_mark(lok)
    );
    let budgets_total: i128 = budgets.values().map(|v| v.0).sum();
    let expected_total: i128 = t.expected.values().map(|v| v.0).sum();
    for (b, (cost, reqs)) in &t.expected {
        let got = budgets.get(b).copied().unwrap_or_default();
        let good = got.0 == *cost && got.1 == *reqs;
        all &= good;
        let _ = writeln!(
            out,
            "| TokenBudget {b} `.ledger.spentPicos` | {cost} / {reqs} req | {} / {} req | {} |",
            got.0,
            got.1,
            ok_mark(good)
        );
    }
    let _ = writeln!(
        out,
        "| all TokenBudgets (each record counts in 2) | ${} | ${} | {} |",
        usd(expected_total),
        usd(budgets_total),
        ok_mark(budgets_total == expected_total)
    );
    all &= budgets_total == expected_total;
    let _ = writeln!(out, "\nLEDGER CHECK: {}", if all { "PASS" } else { "FAIL" });
    Ok(all)
}

/// The JSON summary (`--out-json`).
pub fn json(m: &Measured, t: &Totals, args: &RunArgs, pass: bool) -> serde_json::Value {
    let secs = m.duration.as_secs_f64();
    let clk = args.clk_tck.max(1);
    let lat = &t.lat;
    serde_json::json!({
        "sidecars": m.results.len(),
        "connections": m.connections,
        "rate_target": args.rate,
        "duration_secs": secs,
        "records_sent": t.sent,
        "records_acked": t.acked,
        "records_acked_in_window": t.acked_window,
        "sent_per_sec": t.sent as f64 / secs,
        "acked_per_sec_in_window": t.acked_window as f64 / secs,
        "ack_latency_ms": {
            "p50": percentile(lat, 0.5) as f64 / 1000.0,
            "p90": percentile(lat, 0.9) as f64 / 1000.0,
            "p99": percentile(lat, 0.99) as f64 / 1000.0,
            "max": lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        },
        "propagation_ms": t.propagation.as_ref().map(|(t, missing, _)| serde_json::json!({
            "first": t.first().copied().unwrap_or(0) as f64 / 1000.0,
            "p50": percentile(t, 0.5) as f64 / 1000.0,
            "last": t.last().copied().unwrap_or(0) as f64 / 1000.0,
            "missing": missing,
        })),
        "operator_rss_kib": {
            "before": m.operator.as_ref().map(|p| p.rss_before.0),
            "after": m.operator.as_ref().map(|p| p.rss_after.0),
            "hwm": m.operator.as_ref().map(|p| p.rss_after.1),
        },
        "operator_cpu_secs": m.operator.as_ref().map(|p| (p.cpu.2 - p.cpu.0) as f64 / clk as f64),
        "cost_sent_picos": t.cost_sent.to_string(),
        "errors": t.errors.len(),
        "pass": pass,
    })
}

/// The operator's ledgers: (per budget spentPicos and requests, cluster
/// ledger cost picos and requests).
type Ledgers = (BTreeMap<String, (i128, u64)>, i128, u64);

fn read_ledgers(state: &Path) -> anyhow::Result<Ledgers> {
    let mut budgets = BTreeMap::new();
    let dir = state.join("status/tokenbudgets");
    for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let p = e?.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p)?).with_context(|| p.display().to_string())?;
        let spent: i128 = v["ledger"]["spentPicos"]
            .as_str()
            .with_context(|| format!("{}: no .ledger.spentPicos", p.display()))?
            .parse()?;
        let requests = v["requests"].as_u64().unwrap_or(0);
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .context("file name")?;
        let key = stem.replacen('.', "/", 1);
        budgets.insert(key, (spent, requests));
    }
    let lp = state.join("ledger.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&lp).with_context(|| lp.display().to_string())?)?;
    let mut cost = 0i128;
    let mut requests = 0u64;
    for row in v["rows"].as_array().context("ledger.json: no rows")? {
        let spend = &row[1];
        let c: Usd = spend["cost"]
            .as_str()
            .context("ledger.json: row without cost")?
            .parse()
            .map_err(|e| anyhow::anyhow!("ledger.json cost: {e}"))?;
        cost += c.picos();
        requests += spend["requests"].as_u64().unwrap_or(0);
    }
    Ok((budgets, cost, requests))
}
