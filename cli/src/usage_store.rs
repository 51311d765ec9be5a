//! `what-if --usage-store URL`: the operator's PostgreSQL usage store
//! (`tokenwarden.usage`, written by `operator/src/usage_store`, migrations
//! 0001..0005) as a what-if source: every usage record of the fleet, one
//! row per upstream attempt, with its namespace, workload and (migration
//! 0005) the replay facts a re-routing needs.
//!
//! - Scope: `-n NS --workload W` replays one workload (every pod of it);
//!   `-A` every workload, its rows tagged `namespace/workload` (as the
//!   cluster ledger's rows are), re-pricing only: RoutingPolicies and
//!   TokenBudgets select pods by labels, which the store does not keep.
//! - Read-only: one `SELECT` on `tokenwarden.usage` in a `READ ONLY`
//!   transaction; no migration, no partition, no write. The user needs
//!   `USAGE` on schema `tokenwarden` and `SELECT` on `tokenwarden.usage`
//!   (a query on the partitioned parent checks the parent's privileges
//!   only: <https://www.postgresql.org/docs/15/ddl-partitioning.html>).
//! - `--since`/`--until` go into the `WHERE` on `ts` (the partition key),
//!   so months outside the window are pruned, not scanned.
//! - Streaming: the rows come through a portal [`BATCH_ROWS`] at a time
//!   (<https://www.postgresql.org/docs/15/protocol-flow.html#PROTOCOL-FLOW-EXT-QUERY>,
//!   `Execute` with a row limit), ordered by namespace, workload, `ts`,
//!   sidecar and seq; each batch becomes usage records at once, and a
//!   workload's records are replayed when the next workload begins. Memory
//!   is one batch of rows plus one workload's records (the replay needs a
//!   workload's requests together: attempts grouped, output ratios
//!   observed, budgets in time order).
//! - Rows → [`UsageRecord`]: `replay` is `Some` when `request_id` is not
//!   NULL (rows written before migration 0005, or by older sidecars, have
//!   none). The store does not keep a record's classifier `reason`, its
//!   prompt-cache bust details beyond the reason (so `cache.bust` is
//!   `None`) or the sidecar-local `intent`; what-if uses none of them.
//!   Request ids are unique per sidecar, so they are renumbered per
//!   (sidecar, request) before the replay ([`replay_records`]): two pods'
//!   request 7 are two requests.
//! - Connection: a `postgres://` URL or a libpq key=value string, parsed by
//!   `tokio_postgres::Config` as the operator's `--usage-store-url` is, and
//!   like the operator without TLS (`sslmode=prefer` falls back to
//!   plaintext; `sslmode=require` fails). The operator's parsing lives in
//!   the operator crate, which the plugin does not depend on, so the few
//!   lines are repeated here. The password is never printed: the target is
//!   shown as `postgres://host:port/db`, `Debug` of the URL is redacted, and
//!   a bad URL's error names the option, not its value.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context as _, anyhow, bail};
use jiff::Timestamp;
use tokenwarden_core::{
    classify::Features,
    money::Usd,
    tokens::TokenCounts,
    usage::{BudgetPeriodRef, ReplayFacts, UsageRecord, cache::CacheFigures},
    whatif::{Report, Source},
    workload::{Endpoint, ObjectRef},
};
use tokio_postgres::{Client, Config, NoTls, Row, config::Host, types::ToSql};

use crate::whatif::{Args, StoreUrl, records_report, render};

/// Rows fetched per round trip.
pub const BATCH_ROWS: i32 = 1_000;

/// The longest the connection may take to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One row of `tokenwarden.usage` as a usage record, with the sidecar
/// that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The sending sidecar's id (its `seq` and `replay.request` are
    /// unique only within it).
    pub sidecar_id: String,
    /// The pod.
    pub pod: String,
    /// The record, as the store holds it.
    pub record: UsageRecord,
}

/// Which rows to read.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// One workload (`namespace`, `workload`), or every one (`None`).
    pub workload: Option<(String, String)>,
    /// Rows with `ts >= since`.
    pub since: Option<Timestamp>,
    /// Rows with `ts < until`.
    pub until: Option<Timestamp>,
}

/// The connection settings of `url`, with this plugin's application name
/// and a connect timeout unless the URL sets them. The error names the
/// offending option, never the URL.
pub fn config(url: &StoreUrl) -> anyhow::Result<Config> {
    let mut c: Config = url.0.parse().map_err(|e: tokio_postgres::Error| {
        anyhow!("--usage-store is not a valid PostgreSQL URL or key=value string: {e}")
    })?;
    if c.get_application_name().is_none() {
        c.application_name("kubectl-tokenwarden");
    }
    if c.get_connect_timeout().is_none() {
        c.connect_timeout(CONNECT_TIMEOUT);
    }
    Ok(c)
}

/// Where `c` points, without user or password: `postgres://host:port/db`.
pub fn target(c: &Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            let port = c.get_ports().get(i).or(c.get_ports().first());
            port.map_or(host.clone(), |p| format!("{host}:{p}"))
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        c.get_dbname().unwrap_or_default()
    )
}

/// A Postgres error for people: the server's message and SQLSTATE, and
/// what to do about a missing grant or table. Never the URL.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let code = db.code().code();
    let hint = match code {
        "42501" => {
            "; the user needs USAGE on schema tokenwarden and SELECT on tokenwarden.usage (docs/cost-foresight.md)"
        }
        "42P01" | "3F000" => {
            "; no tokenwarden.usage table here: point --usage-store at the operator's usage store (--usage-store-url)"
        }
        _ => "",
    };
    format!("{} (SQLSTATE {code}){hint}", db.message())
}

/// Connect to the store (no TLS, as the operator); the connection's driver
/// runs on a task until the client is dropped.
pub async fn connect(c: &Config) -> anyhow::Result<Client> {
    let target = target(c);
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT * 2, c.connect(NoTls))
        .await
        .map_err(|_| anyhow!("the usage store {target} did not answer"))?
        .map_err(|e| {
            anyhow!(
                "cannot connect to the usage store {target}: {}",
                pg_error(&e)
            )
        })?;
    tokio::spawn(async move {
        // A failed connection surfaces as the next query's error.
        let _ = conn.await;
    });
    Ok(client)
}

/// The `SELECT` of [`for_each_workload`]: the columns [`stored_record`]
/// reads, in its order.
const COLUMNS: &str = "namespace, workload, sidecar_id, pod, seq, ts, endpoint, provider, \
     requested_model, served_model, route, score, attempt, status, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, cache_write_1h_tokens, cost_pusd, estimated, \
     cache_saved_pusd, cache_wasted_pusd, budgets::text, response_cache_hit, \
     response_cache_saved_pusd, response_cache_similarity, cache_embedding, \
     cache_embedding_cost_pusd, request_id, prompt_estimate, tools_present, features::text, \
     tier, adjusted, route_headers::text";

/// The query and its parameters for `f`.
fn select(f: &Filter) -> (String, Vec<&(dyn ToSql + Sync)>) {
    let mut wh: Vec<String> = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some((ns, wl)) = &f.workload {
        params.push(ns);
        wh.push(format!("namespace = ${}", params.len()));
        params.push(wl);
        wh.push(format!("workload = ${}", params.len()));
    }
    if let Some(t) = &f.since {
        params.push(t);
        wh.push(format!("ts >= ${}", params.len()));
    }
    if let Some(t) = &f.until {
        params.push(t);
        wh.push(format!("ts < ${}", params.len()));
    }
    let wh = if wh.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", wh.join(" AND "))
    };
    (
        format!(
            "SELECT {COLUMNS} FROM tokenwarden.usage{wh} \
             ORDER BY namespace, workload, ts, sidecar_id, seq"
        ),
        params,
    )
}

/// Reads the rows `f` selects in a read-only transaction, [`BATCH_ROWS`]
/// at a time, and calls `each(namespace, workload, records)` once per
/// workload, in (namespace, workload) order, each workload's records in
/// time order; a workload is handed over (and its records dropped) before
/// the next one is gathered.
pub async fn for_each_workload(
    client: &mut Client,
    f: &Filter,
    each: impl FnMut(&str, &str, Vec<StoredRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for_each_workload_in(client, f, BATCH_ROWS, each).await
}

/// [`for_each_workload`], `batch` rows per round trip.
async fn for_each_workload_in(
    client: &mut Client,
    f: &Filter,
    batch: i32,
    mut each: impl FnMut(&str, &str, Vec<StoredRecord>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| anyhow!("the usage store: {}", pg_error(&e)))?;
    let (sql, params) = select(f);
    let portal = tx
        .bind(sql.as_str(), &params)
        .await
        .map_err(|e| anyhow!("the usage store: {}", pg_error(&e)))?;
    let mut current: Option<(String, String, Vec<StoredRecord>)> = None;
    loop {
        let rows = tx
            .query_portal(&portal, batch)
            .await
            .map_err(|e| anyhow!("the usage store: {}", pg_error(&e)))?;
        let done = rows.len() < usize::try_from(batch).unwrap_or(usize::MAX);
        for row in rows {
            let (ns, wl): (String, String) = (get(&row, 0)?, get(&row, 1)?);
            let rec = stored_record(&row)?;
            match &mut current {
                Some((n, w, recs)) if *n == ns && *w == wl => recs.push(rec),
                _ => {
                    if let Some((n, w, recs)) = current.take() {
                        each(&n, &w, recs)?;
                    }
                    current = Some((ns, wl, vec![rec]));
                }
            }
        }
        if done {
            break;
        }
    }
    if let Some((n, w, recs)) = current.take() {
        each(&n, &w, recs)?;
    }
    tx.commit()
        .await
        .map_err(|e| anyhow!("the usage store: {}", pg_error(&e)))?;
    Ok(())
}

/// Column `i` of `row`, with the column's name in the error.
fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> anyhow::Result<T> {
    row.try_get(i).map_err(|e| {
        let name = row.columns().get(i).map_or("?", |c| c.name());
        anyhow!("the usage store's column {name}: {e}")
    })
}

/// A bigint count as u64 (a negative one is refused).
fn count(row: &Row, i: usize) -> anyhow::Result<u64> {
    let v: i64 = get(row, i)?;
    u64::try_from(v).map_err(|_| anyhow!("the usage store: negative count {v} in column {i}"))
}

fn picos(row: &Row, i: usize) -> anyhow::Result<Usd> {
    Ok(Usd::from_picos(i128::from(get::<i64>(row, i)?)))
}

/// One row (in [`COLUMNS`] order) as a record.
fn stored_record(row: &Row) -> anyhow::Result<StoredRecord> {
    let endpoint: String = get(row, 6)?;
    let endpoint: Endpoint = serde_json::from_value(serde_json::Value::String(endpoint.clone()))
        .map_err(|_| anyhow!("the usage store: unknown endpoint {endpoint:?}"))?;
    let score: Option<i32> = get(row, 11)?;
    let score = score
        .map(u16::try_from)
        .transpose()
        .context("the usage store: a score out of range")?;
    let attempt = u32::try_from(get::<i32>(row, 12)?).context("the usage store: attempt")?;
    let status = u16::try_from(get::<i32>(row, 13)?).context("the usage store: status")?;
    let cost: Option<i64> = get(row, 19)?;
    let similarity = u16::try_from(get::<i32>(row, 26)?).context("the usage store: similarity")?;
    let record = UsageRecord {
        seq: count(row, 4)?,
        ts: get(row, 5)?,
        endpoint,
        provider: get(row, 7)?,
        requested_model: get(row, 8)?,
        served_model: get(row, 9)?,
        route: get(row, 10)?,
        score,
        reason: None,
        attempt,
        status,
        usage: TokenCounts {
            input_tokens: count(row, 14)?,
            output_tokens: count(row, 15)?,
            cache_read_tokens: count(row, 16)?,
            cache_write_tokens: count(row, 17)?,
            cache_write_1h_tokens: count(row, 18)?,
        },
        cost: cost.map(|c| Usd::from_picos(i128::from(c))),
        estimated: get(row, 20)?,
        budgets: budgets(&get::<String>(row, 23)?)?,
        cache: CacheFigures {
            saved: picos(row, 21)?,
            wasted: picos(row, 22)?,
            bust: None,
            response_hit: get(row, 24)?,
            response_saved: picos(row, 25)?,
            response_similarity: similarity,
            embedding: get(row, 27)?,
            embedding_cost: picos(row, 28)?,
        },
        intent: None,
        replay: replay_facts(row)?.map(Box::new),
    };
    Ok(StoredRecord {
        sidecar_id: get(row, 2)?,
        pod: get(row, 3)?,
        record,
    })
}

/// The replay facts of a row (columns 29..=35): `None` when `request_id`
/// is NULL.
fn replay_facts(row: &Row) -> anyhow::Result<Option<ReplayFacts>> {
    let Some(request) = get::<Option<i64>>(row, 29)? else {
        return Ok(None);
    };
    let features: Option<String> = get(row, 32)?;
    let features: Option<Features> = features
        .map(|f| serde_json::from_str(&f))
        .transpose()
        .context("the usage store: features")?;
    let headers: Option<String> = get(row, 35)?;
    let headers: Vec<(String, String)> = headers
        .map(|h| serde_json::from_str(&h))
        .transpose()
        .context("the usage store: route_headers")?
        .unwrap_or_default();
    Ok(Some(ReplayFacts {
        request: u64::try_from(request).context("the usage store: request_id")?,
        prompt_estimate: get::<Option<i64>>(row, 30)?
            .map(u64::try_from)
            .transpose()
            .context("the usage store: prompt_estimate")?
            .unwrap_or(0),
        tools_present: get::<Option<bool>>(row, 31)?.unwrap_or(false),
        features,
        tier: get(row, 33)?,
        adjusted: get::<Option<Vec<String>>>(row, 34)?.unwrap_or_default(),
        headers,
    }))
}

/// The `budgets` column: `[{namespace, name, periodStart, key?}]`.
fn budgets(text: &str) -> anyhow::Result<Vec<BudgetPeriodRef>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Entry {
        namespace: String,
        name: String,
        period_start: Timestamp,
        #[serde(default)]
        key: Option<String>,
    }
    let v: Vec<Entry> = serde_json::from_str(text).context("the usage store: budgets")?;
    Ok(v.into_iter()
        .map(|e| BudgetPeriodRef {
            budget: ObjectRef::new(e.namespace, e.name),
            period_start: e.period_start,
            key: e.key,
        })
        .collect())
}

/// The records of one workload for the replay: request ids renumbered per
/// (sidecar, request), in order of first appearance (0, unknown, stays
/// 0), so the attempts of one app request group together and two pods'
/// requests never do.
pub fn replay_records(rows: Vec<StoredRecord>) -> Vec<UsageRecord> {
    let mut ids: HashMap<(String, u64), u64> = HashMap::new();
    rows.into_iter()
        .map(|s| {
            let mut r = s.record;
            if let Some(f) = r.replay.as_mut()
                && f.request != 0
            {
                let next = ids.len() as u64 + 1;
                f.request = *ids.entry((s.sidecar_id, f.request)).or_insert(next);
            }
            r
        })
        .collect()
}

/// `what-if --usage-store`: the rows `-n NS --workload W` (or `-A`) and
/// `--since`/`--until` select, replayed as `--state-dir`'s records are.
pub async fn report(g: &crate::Global, a: &Args, url: &StoreUrl) -> anyhow::Result<String> {
    let one = match (g.all_namespaces, &g.namespace, &a.workload) {
        (true, _, Some(_)) => {
            bail!("--usage-store: -A replays every workload; drop --workload, or -A for one")
        }
        (true, _, None) => None,
        (false, Some(ns), Some(w)) => Some((ns.clone(), w.clone())),
        _ => bail!(
            "--usage-store needs -n NAMESPACE --workload NAME (one workload) or -A (every workload)"
        ),
    };
    if one.is_none()
        && (a.policy.is_some()
            || a.budgets.is_some()
            || a.baseline_policy.is_some()
            || a.enforce_budgets)
    {
        bail!(
            "--usage-store -A re-prices only: RoutingPolicies and TokenBudgets select pods by labels, which the usage store does not keep; replay one workload with -n NAMESPACE --workload NAME --labels k=v,... for --policy, --budgets and --enforce-budgets"
        );
    }
    let cfg = config(url)?;
    let target = target(&cfg);
    let mut client = connect(&cfg).await?;
    let filter = Filter {
        workload: one.clone(),
        since: a.since,
        until: a.until,
    };
    let mut out: Option<(Report, Vec<String>)> = None;
    for_each_workload(&mut client, &filter, |ns, wl, rows| {
        let records = replay_records(rows);
        let name = one.is_none().then(|| format!("{ns}/{wl}"));
        let (r, notes) = records_report(a, ns, name.as_deref(), &records)?;
        merge(&mut out, r, notes);
        Ok(())
    })
    .await?;
    let (report, mut notes) = match (out, &one) {
        (Some(o), _) => o,
        // No rows: the workload's (empty) what-if, budgets included.
        (None, Some((ns, _))) => records_report(a, ns, None, &[])?,
        (None, None) => (empty(), Vec::new()),
    };
    if one.is_none() {
        notes.insert(0, "every workload, rows tagged namespace/workload, each replayed on its own: re-pricing only (RoutingPolicies and TokenBudgets select pods by labels, which the usage store does not keep)".to_string());
    }
    let origin = match &one {
        Some((ns, w)) => format!("usage store {target} (workload {ns}/{w})"),
        None => format!("usage store {target} (every workload)"),
    };
    render(g.output, &origin, &report, &notes)
}

fn empty() -> Report {
    Report {
        source: Source::Records,
        rows: Vec::new(),
        not_replayable: Default::default(),
        budgets: Vec::new(),
        response_hits: 0,
        refused: Default::default(),
        downgraded: 0,
    }
}

/// Adds one workload's report to `into` (rows in workload order).
fn merge(into: &mut Option<(Report, Vec<String>)>, r: Report, notes: Vec<String>) {
    let Some((m, ns)) = into else {
        *into = Some((r, notes));
        return;
    };
    m.rows.extend(r.rows);
    for (k, (n, u)) in r.not_replayable {
        let s = m.not_replayable.entry(k).or_insert((0, Usd::ZERO));
        s.0 += n;
        s.1 += u;
    }
    for (k, (n, u)) in r.refused {
        let s = m.refused.entry(k).or_insert((0, Usd::ZERO));
        s.0 += n;
        s.1 += u;
    }
    m.budgets.extend(r.budgets);
    m.response_hits += r.response_hits;
    m.downgraded += r.downgraded;
    for n in notes {
        if !ns.contains(&n) {
            ns.push(n);
        }
    }
}

#[cfg(test)]
#[path = "usage_store_tests.rs"]
mod tests;
