//! The Postgres side of the usage store: one connection, (re)made on
//! demand; on each connect the migrations are applied; partitions are made
//! for the months rows fall in (and the current and next month) before the
//! rows are inserted; once an hour months older than the retention are
//! dropped. Every call is bounded by [`CALL_TIMEOUT`]; a failed call drops
//! the connection, so the next one starts clean.
//!
//! Rows go in with one `INSERT … SELECT FROM unnest($1, $2, …) ON CONFLICT
//! DO NOTHING` per write (one round trip for thousands of rows); the
//! affected-row count tells inserted from duplicate.

use std::{
    collections::BTreeSet,
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio::sync::Mutex;
use tokio_postgres::{Client, Config, GenericClient, NoTls};

use super::{
    CALL_TIMEOUT, StoreError, UsageRow, UsageSink, UsageStoreConfig, Written, migrations, month_of,
    redact, year_month,
};

/// How often months past the retention are looked for.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// The usage store in Postgres.
pub struct PgStore {
    config: Config,
    target: String,
    retention_months: u32,
    conn: Mutex<Option<Conn>>,
}

/// A live connection and what it knows of the schema.
struct Conn {
    client: Client,
    /// Months whose partition exists.
    months: BTreeSet<(i16, i8)>,
    last_retention: Option<Instant>,
}

/// The usage store URL cannot be used (exit 64). Never holds the URL.
#[derive(Debug, thiserror::Error)]
#[error("--usage-store-url is not a valid PostgreSQL URL or key=value string: {0}")]
pub struct UrlError(String);

impl PgStore {
    /// A store for `cfg` (nothing is connected yet).
    pub fn new(cfg: &UsageStoreConfig) -> Result<PgStore, UrlError> {
        Ok(PgStore {
            config: parse_url(&cfg.url)?,
            target: redact(&cfg.url),
            retention_months: cfg.retention_months,
            conn: Mutex::new(None),
        })
    }

    /// Where it points, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Connect (if not connected), migrate and make this month's and next
    /// month's partitions: what a write would do first.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.write_rows(&[]).await.map(|_| ())
    }

    async fn write_rows(&self, rows: &[UsageRow]) -> Result<Written, StoreError> {
        let mut guard = self.conn.lock().await;
        let r = tokio::time::timeout(CALL_TIMEOUT, self.write_locked(&mut guard, rows)).await;
        let r = r.unwrap_or(Err(StoreError::Timeout(CALL_TIMEOUT)));
        if r.is_err() {
            // Start clean next time (a half-done transaction, a dead socket).
            *guard = None;
        }
        r
    }

    async fn write_locked(
        &self,
        conn: &mut Option<Conn>,
        rows: &[UsageRow],
    ) -> Result<Written, StoreError> {
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            *conn = Some(self.connect().await?);
        }
        let Some(c) = conn.as_mut() else {
            return Err(StoreError::Encode("no connection".into()));
        };
        let now = Timestamp::now();
        let horizon = horizon(self.retention_months, now);
        let (keep, expired): (Vec<&UsageRow>, Vec<&UsageRow>) = rows
            .iter()
            .partition(|r| horizon.is_none_or(|h| r.record.ts >= h));
        let (y, m) = year_month(now);
        let mut months: BTreeSet<(i16, i8)> =
            keep.iter().map(|r| year_month(r.record.ts)).collect();
        months.insert((y, m));
        months.insert(year_month(month_of(y, m + 1)));
        for (y, m) in months {
            if !c.months.contains(&(y, m)) {
                ensure_month(&mut c.client, y, m).await?;
                c.months.insert((y, m));
            }
        }
        if c.last_retention
            .is_none_or(|t| t.elapsed() >= RETENTION_EVERY)
        {
            if self.retention_months > 0 {
                for (y, m) in drop_expired(&mut c.client, self.retention_months, now).await? {
                    c.months.remove(&(y, m));
                    tracing::info!(month = %format!("{y:04}-{m:02}"), "usage store: dropped a month past the retention");
                }
            }
            c.last_retention = Some(Instant::now());
        }
        let inserted = match insert(&mut c.client, &keep).await {
            Ok(n) => n,
            Err(e) => {
                // A month dropped by someone else: look again next time.
                c.months.clear();
                return Err(e);
            }
        };
        let n = keep.len() as u64;
        Ok(Written {
            inserted,
            duplicate: n.saturating_sub(inserted),
            expired: expired.len() as u64,
        })
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let mut client = connect(&self.config).await?;
        let applied = migrations::apply(&mut client).await?;
        if !applied.is_empty() {
            tracing::info!(target = %self.target, versions = ?applied, "usage store: migrations applied");
        }
        tracing::info!(target = %self.target, "usage store: connected");
        Ok(Conn {
            client,
            months: BTreeSet::new(),
            last_retention: None,
        })
    }
}

impl UsageSink for PgStore {
    fn write<'a>(
        &'a self,
        rows: &'a [UsageRow],
    ) -> Pin<Box<dyn Future<Output = Result<Written, StoreError>> + Send + 'a>> {
        Box::pin(self.write_rows(rows))
    }
}

/// Parse a `postgres://` URL or key=value string; the error never quotes it.
pub fn parse_url(url: &str) -> Result<Config, UrlError> {
    let mut config: Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // The parser's message names the offending option, not its value.
        UrlError(e.to_string())
    })?;
    if config.get_application_name().is_none() {
        config.application_name("tokenwarden-operator");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    Ok(config)
}

/// A connection (plaintext, or TLS-less `sslmode=prefer` falling back to
/// plaintext); its driver runs on a task until the connection ends.
pub async fn connect(config: &Config) -> Result<Client, StoreError> {
    let fut = config.connect(NoTls);
    let (client, connection) = tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .map_err(|_| StoreError::Timeout(CALL_TIMEOUT))??;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "usage store: connection ended");
        }
    });
    Ok(client)
}

/// The first month kept with `retention_months` besides the current one
/// (`None`: keep everything).
pub fn horizon(retention_months: u32, now: Timestamp) -> Option<Timestamp> {
    if retention_months == 0 {
        return None;
    }
    let (y, m) = year_month(now);
    // Whole years first, so the month stays within i8.
    let years = i16::try_from(retention_months / 12).unwrap_or(i16::MAX);
    let rest = i8::try_from(retention_months % 12).unwrap_or(0);
    Some(month_of(y.saturating_sub(years), m - rest))
}

/// The partition name of a month: `usage_yYYYYmMM`.
pub fn partition_name(year: i16, month: i8) -> String {
    format!("usage_y{year:04}m{month:02}")
}

/// Make the partition of month (`year`, `month`) unless it exists.
pub async fn ensure_month(client: &mut Client, year: i16, month: i8) -> Result<(), StoreError> {
    let from = month_of(year, month);
    let to = month_of(year, month + 1);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&migrations::LOCK_KEY])
        .await?;
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS tokenwarden.{} PARTITION OF tokenwarden.usage \
         FOR VALUES FROM ('{from}') TO ('{to}')",
        partition_name(year, month)
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The months whose partition exists, oldest first.
pub async fn months(client: &impl GenericClient) -> Result<Vec<(i16, i8)>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = 'tokenwarden' AND p.relname = 'usage'",
            &[],
        )
        .await?;
    let mut out: Vec<(i16, i8)> = rows
        .iter()
        .filter_map(|r| parse_partition(r.get::<_, &str>(0)))
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn parse_partition(name: &str) -> Option<(i16, i8)> {
    let rest = name.strip_prefix("usage_y")?;
    let (y, m) = rest.split_once('m')?;
    Some((y.parse().ok()?, m.parse().ok()?))
}

/// Drop the partitions of months before the retention horizon; returns
/// the months dropped.
pub async fn drop_expired(
    client: &mut Client,
    retention_months: u32,
    now: Timestamp,
) -> Result<Vec<(i16, i8)>, StoreError> {
    let Some(h) = horizon(retention_months, now) else {
        return Ok(Vec::new());
    };
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&migrations::LOCK_KEY])
        .await?;
    let mut dropped = Vec::new();
    for (y, m) in months(&tx).await? {
        if month_of(y, m) < h {
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS tokenwarden.{}",
                partition_name(y, m)
            ))
            .await?;
            dropped.push((y, m));
        }
    }
    tx.commit().await?;
    Ok(dropped)
}

/// Clamp a counter into a bigint (no real count comes near).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Insert `rows` in one transaction; returns how many were new.
async fn insert(client: &mut Client, rows: &[&UsageRow]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: &dyn Fn(&UsageRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let opt =
        |f: &dyn Fn(&UsageRow) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let num = |f: &dyn Fn(&UsageRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let sidecar = col(&|r| r.sidecar_id.clone());
    let seq = num(&|r| big(r.record.seq));
    let ts: Vec<Timestamp> = rows.iter().map(|r| r.record.ts).collect();
    let namespace = col(&|r| r.namespace.clone());
    let workload = col(&|r| r.workload.clone());
    let pod = col(&|r| r.pod.clone());
    let endpoint = col(&|r| endpoint_name(r));
    let provider = col(&|r| r.record.provider.clone());
    let requested = col(&|r| r.record.requested_model.clone());
    let served = col(&|r| r.record.served_model.clone());
    let route = opt(&|r| r.record.route.clone());
    let score: Vec<Option<i32>> = rows.iter().map(|r| r.record.score.map(i32::from)).collect();
    let attempt = num(&|r| i64::from(r.record.attempt));
    let status = num(&|r| i64::from(r.record.status));
    let input = num(&|r| big(r.record.usage.input_tokens));
    let output = num(&|r| big(r.record.usage.output_tokens));
    let cread = num(&|r| big(r.record.usage.cache_read_tokens));
    let cwrite = num(&|r| big(r.record.usage.cache_write_tokens));
    let cwrite1h = num(&|r| big(r.record.usage.cache_write_1h_tokens));
    let cost: Vec<Option<i64>> = rows
        .iter()
        .map(|r| r.record.cost.map(|c| picos(c.picos())))
        .collect();
    let estimated: Vec<bool> = rows.iter().map(|r| r.record.estimated).collect();
    let saved = num(&|r| picos(r.record.cache.saved.picos()));
    let wasted = num(&|r| picos(r.record.cache.wasted.picos()));
    let bust = opt(&|r| {
        r.record
            .cache
            .bust
            .as_ref()
            .map(|b| b.reason.as_str().to_string())
    });
    let budgets = col(&budgets_json);
    let hit: Vec<bool> = rows.iter().map(|r| r.record.cache.response_hit).collect();
    let hit_saved = num(&|r| picos(r.record.cache.response_saved.picos()));
    let similarity = num(&|r| i64::from(r.record.cache.response_similarity));
    let embedding: Vec<bool> = rows.iter().map(|r| r.record.cache.embedding).collect();
    let embedding_cost = num(&|r| picos(r.record.cache.embedding_cost.picos()));
    let replay = ReplayColumns::of(rows);
    let tx = client.transaction().await?;
    let n = tx
        .execute(
            "INSERT INTO tokenwarden.usage (sidecar_id, seq, ts, namespace, workload, pod, \
             endpoint, provider, requested_model, served_model, route, score, attempt, status, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, \
             cache_write_1h_tokens, cost_pusd, estimated, cache_saved_pusd, cache_wasted_pusd, \
             cache_bust, budgets, response_cache_hit, response_cache_saved_pusd, \
             response_cache_similarity, cache_embedding, cache_embedding_cost_pusd, \
             request_id, prompt_estimate, tools_present, features, tier, adjusted, \
             route_headers) \
             SELECT s, q, t, ns, wl, p, e, pr, rm, sm, rt, sc, at::integer, st::integer, \
             i, o, cr, cw, cw1, c, es, sv, ws, b, bg::jsonb, rh, rs, rsim::integer, emb, embc, \
             rq, pe, tp, ft::jsonb, tr, \
             CASE WHEN adj IS NULL THEN NULL \
             ELSE ARRAY(SELECT jsonb_array_elements_text(adj::jsonb)) END, hd::jsonb \
             FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::integer[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], \
             $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::boolean[], \
             $22::bigint[], $23::bigint[], $24::text[], $25::text[], $26::boolean[], \
             $27::bigint[], $28::bigint[], $29::boolean[], $30::bigint[], $31::bigint[], \
             $32::bigint[], $33::boolean[], $34::text[], $35::text[], $36::text[], \
             $37::text[]) \
             AS x(s, q, t, ns, wl, p, e, pr, rm, sm, rt, sc, at, st, i, o, cr, cw, cw1, c, es, \
             sv, ws, b, bg, rh, rs, rsim, emb, embc, rq, pe, tp, ft, tr, adj, hd) \
             ON CONFLICT DO NOTHING",
            &[
                &sidecar,
                &seq,
                &ts,
                &namespace,
                &workload,
                &pod,
                &endpoint,
                &provider,
                &requested,
                &served,
                &route,
                &score,
                &attempt,
                &status,
                &input,
                &output,
                &cread,
                &cwrite,
                &cwrite1h,
                &cost,
                &estimated,
                &saved,
                &wasted,
                &bust,
                &budgets,
                &hit,
                &hit_saved,
                &similarity,
                &embedding,
                &embedding_cost,
                &replay.request,
                &replay.prompt_estimate,
                &replay.tools_present,
                &replay.features,
                &replay.tier,
                &replay.adjusted,
                &replay.headers,
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// The replay facts of a batch, one array per column (`None`: the record
/// has none, or that part is unknown). Lists and objects travel as JSON
/// text and are cast in SQL.
struct ReplayColumns {
    request: Vec<Option<i64>>,
    prompt_estimate: Vec<Option<i64>>,
    tools_present: Vec<Option<bool>>,
    features: Vec<Option<String>>,
    tier: Vec<Option<String>>,
    adjusted: Vec<Option<String>>,
    headers: Vec<Option<String>>,
}

impl ReplayColumns {
    fn of(rows: &[&UsageRow]) -> Self {
        let facts: Vec<_> = rows.iter().map(|r| r.record.replay.as_ref()).collect();
        let json = |v: serde_json::Value| v.to_string();
        ReplayColumns {
            request: facts.iter().map(|f| f.map(|f| big(f.request))).collect(),
            prompt_estimate: facts
                .iter()
                .map(|f| f.map(|f| big(f.prompt_estimate)))
                .collect(),
            tools_present: facts.iter().map(|f| f.map(|f| f.tools_present)).collect(),
            features: facts
                .iter()
                .map(|f| {
                    f.and_then(|f| f.features.as_ref())
                        .and_then(|x| serde_json::to_value(x).ok())
                        .map(json)
                })
                .collect(),
            tier: facts
                .iter()
                .map(|f| f.and_then(|f| f.tier.clone()))
                .collect(),
            adjusted: facts
                .iter()
                .map(|f| f.map(|f| json(serde_json::json!(f.adjusted))))
                .collect(),
            headers: facts
                .iter()
                .map(|f| f.map(|f| json(serde_json::json!(f.headers))))
                .collect(),
        }
    }
}

/// Clamp pico-USD into a bigint (±9.2 million USD per request).
fn picos(p: i128) -> i64 {
    i64::try_from(p).unwrap_or(if p < 0 { i64::MIN } else { i64::MAX })
}

/// The endpoint's wire name (`chatCompletions`, `responses`, …).
fn endpoint_name(r: &UsageRow) -> String {
    match serde_json::to_value(r.record.endpoint) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The budget periods as a JSON array of `{namespace, name, periodStart,
/// key}`.
fn budgets_json(r: &UsageRow) -> String {
    let v: Vec<serde_json::Value> = r
        .record
        .budgets
        .iter()
        .map(|b| {
            let mut o = serde_json::json!({
                "namespace": b.budget.namespace,
                "name": b.budget.name,
                "periodStart": b.period_start.to_string(),
            });
            if let Some(k) = &b.key {
                o["key"] = serde_json::Value::String(k.clone());
            }
            o
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_keeps_the_current_month_and_n_before_it() {
        let now: Timestamp = "2026-03-15T10:00:00Z".parse().unwrap();
        assert_eq!(horizon(0, now), None);
        assert_eq!(horizon(1, now).unwrap().to_string(), "2026-02-01T00:00:00Z");
        assert_eq!(horizon(3, now).unwrap().to_string(), "2025-12-01T00:00:00Z");
        assert_eq!(
            horizon(12, now).unwrap().to_string(),
            "2025-03-01T00:00:00Z"
        );
        assert_eq!(
            horizon(27, now).unwrap().to_string(),
            "2023-12-01T00:00:00Z"
        );
    }

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(partition_name(2026, 3), "usage_y2026m03");
        assert_eq!(parse_partition("usage_y2026m03"), Some((2026, 3)));
        assert_eq!(parse_partition("usage_default"), None);
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        let e = parse_url("postgres://tw:s3cret@db:notaport/usage").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(parse_url("postgres://tw:s3cret@db:5432/usage").is_ok());
    }
}
