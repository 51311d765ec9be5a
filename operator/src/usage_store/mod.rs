//! The optional per-request usage store: every usage record the operator
//! ingests, one row each, in PostgreSQL, for history at fleet scale (the
//! cluster ledger keeps only bounded aggregates).
//!
//! - Exactly once: a row is keyed by (sidecar id, seq) and inserted with
//!   `ON CONFLICT DO NOTHING`, so a record a sidecar resends (it does, for
//!   every record it holds unacked when its stream drops) is written once
//!   however often it arrives. The engine acks a batch to the sidecar only
//!   after the transaction that holds its rows has committed (the store is
//!   one of the engine's sinks, like a TokenBudget status), so a record
//!   acked is a record in Postgres, and a record not acked stays in the
//!   sidecar's journal and is resent.
//! - Never in the request path: sidecars serve from their leases whatever
//!   Postgres does; the engine hands rows to [`UsageSink::write`] on a task
//!   and learns the outcome as a message, retrying with backoff. Its
//!   backlog is bounded (see `engine/usage.rs`).
//! - Schema: versioned SQL migrations embedded in the binary
//!   ([`migrations`]), applied in one transaction under an advisory lock,
//!   recorded in `tokenwarden.schema_migrations`; the table is partitioned
//!   by month of the request time, partitions are made as rows need them
//!   (late rows too) and one month ahead, and a retention setting drops
//!   whole months.
//!
//! Declarative partitioning and `ON CONFLICT` on a partitioned table:
//! <https://www.postgresql.org/docs/15/ddl-partitioning.html>,
//! <https://www.postgresql.org/docs/15/sql-insert.html#SQL-ON-CONFLICT>;
//! advisory locks: <https://www.postgresql.org/docs/15/explicit-locking.html#ADVISORY-LOCKS>.

pub mod history;
pub mod metrics;
pub mod migrations;
pub mod pg;

use std::{future::Future, pin::Pin, time::Duration};

use jiff::Timestamp;
use tokenwarden_core::usage::UsageRecord;

pub use self::{metrics::UsageStoreMetrics, pg::PgStore};

/// One row of `tokenwarden.usage`: a usage record with the identity of the
/// sidecar that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The sending sidecar's id.
    pub sidecar_id: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's workload (`workload` label or pod name without suffixes).
    pub workload: String,
    /// The pod.
    pub pod: String,
    /// The record.
    pub record: UsageRecord,
}

/// Where usage rows go: Postgres in production, a fake in engine tests.
pub trait UsageSink: Send + Sync + 'static {
    /// Insert `rows` in one transaction, skipping those whose (sidecar id,
    /// seq) is there already; `Ok` only once committed.
    fn write<'a>(
        &'a self,
        rows: &'a [UsageRow],
    ) -> Pin<Box<dyn Future<Output = Result<Written, StoreError>> + Send + 'a>>;
}

/// What a committed write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows new to the table.
    pub inserted: u64,
    /// Rows that were there already (resends).
    pub duplicate: u64,
    /// Rows older than the retention keeps (not written).
    pub expired: u64,
}

/// Why the usage store could not be used (retried).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres refused or the connection failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A call took longer than [`CALL_TIMEOUT`].
    #[error("postgres: no answer within {0:?}")]
    Timeout(Duration),
    /// A migration in the database is newer than this binary knows.
    #[error(
        "the usage store's schema is at version {found}, newer than this operator's {known}; \
         upgrade the operator"
    )]
    SchemaTooNew {
        /// The highest version applied.
        found: i32,
        /// The highest version this binary has.
        known: i32,
    },
    /// A row could not be encoded.
    #[error("{0}")]
    Encode(String),
}

/// The longest one Postgres call (connect, migrate, a write) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the usage store (from the command line).
#[derive(Clone)]
pub struct UsageStoreConfig {
    /// Where: a `postgres://` URL or a libpq key=value string (it may hold
    /// a password: never logged, not even in `Debug`).
    pub url: String,
    /// Months kept besides the current one (0: keep everything).
    pub retention_months: u32,
    /// Most rows held in memory waiting for Postgres.
    pub max_backlog: usize,
}

impl std::fmt::Debug for UsageStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageStoreConfig")
            .field("url", &redact(&self.url))
            .field("retention_months", &self.retention_months)
            .field("max_backlog", &self.max_backlog)
            .finish()
    }
}

/// Default of [`UsageStoreConfig::max_backlog`].
pub const DEFAULT_MAX_BACKLOG: usize = 100_000;

/// The operator's usage store flags (`Debug` shows the URL without its
/// password).
#[derive(Clone, clap::Args)]
pub struct UsageStoreArgs {
    /// Write every usage record to PostgreSQL: a `postgres://user:password@host:port/db`
    /// URL or a libpq key=value string. Off when unset. The chart takes it
    /// from a Secret (`usageStore.postgres.existingSecret`); it is never
    /// logged.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_USAGE_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub usage_store_url: Option<String>,

    /// Months of usage kept besides the current one; older months'
    /// partitions are dropped (checked hourly). 0 keeps everything.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_USAGE_STORE_RETENTION_MONTHS",
        default_value_t = 0
    )]
    pub usage_store_retention_months: u32,

    /// Most usage rows held in memory while PostgreSQL is slow or down;
    /// past it, records wait in the sidecars' journals (unacked) and are
    /// resent once the store has caught up.
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_USAGE_STORE_MAX_BACKLOG",
        default_value_t = DEFAULT_MAX_BACKLOG
    )]
    pub usage_store_max_backlog: usize,
}

impl std::fmt::Debug for UsageStoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageStoreArgs")
            .field(
                "usage_store_url",
                &self.usage_store_url.as_deref().map(redact),
            )
            .field(
                "usage_store_retention_months",
                &self.usage_store_retention_months,
            )
            .field("usage_store_max_backlog", &self.usage_store_max_backlog)
            .finish()
    }
}

impl UsageStoreArgs {
    /// The settings, when a URL is given.
    pub fn config(&self) -> Option<UsageStoreConfig> {
        Some(UsageStoreConfig {
            url: self.usage_store_url.clone()?,
            retention_months: self.usage_store_retention_months,
            max_backlog: self.usage_store_max_backlog,
        })
    }
}

/// Where a usage store URL points, without its password: `host:port/db`
/// for a URL, `<key=value settings>` otherwise (such a string is not
/// parsed here, so nothing of it is shown).
pub fn redact(url: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return "<key=value settings>".to_string();
    };
    // Userinfo ends at the last '@' before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = rest[authority_end..]
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    format!("postgres://{host}{path}")
}

/// The first instant of the UTC month holding `ts`.
pub fn month_start(ts: Timestamp) -> Timestamp {
    let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
    month_of(d.year(), d.month())
}

/// The first instant of UTC month `month` (1-12) of `year`; months past 12
/// or below 1 roll into the next or previous years.
pub fn month_of(year: i16, month: i8) -> Timestamp {
    let m0 = i32::from(year) * 12 + i32::from(month) - 1;
    let (y, m) = (m0.div_euclid(12), m0.rem_euclid(12) + 1);
    let (Ok(y), Ok(m)) = (i16::try_from(y), i8::try_from(m)) else {
        return Timestamp::UNIX_EPOCH;
    };
    jiff::civil::date(y, m, 1)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_or(Timestamp::UNIX_EPOCH, |z| z.timestamp())
}

/// (year, month) of `ts` in UTC.
pub fn year_month(ts: Timestamp) -> (i16, i8) {
    let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
    (d.year(), d.month())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_keeps_the_host_and_database_and_drops_the_password() {
        assert_eq!(
            redact("postgres://tw:s3cret@db.example:5433/usage?sslmode=disable"),
            "postgres://db.example:5433/usage"
        );
        assert_eq!(
            redact("postgresql://tw:p@ss@word@db/usage"),
            "postgres://db/usage"
        );
        assert_eq!(redact("postgres://db"), "postgres://db");
        assert_eq!(
            redact("host=db user=tw password=s3cret"),
            "<key=value settings>"
        );
        let cfg = UsageStoreConfig {
            url: "postgres://tw:s3cret@db/usage".into(),
            retention_months: 3,
            max_backlog: 10,
        };
        assert!(!format!("{cfg:?}").contains("s3cret"));
        let args = UsageStoreArgs {
            usage_store_url: Some("postgres://tw:s3cret@db/usage".into()),
            usage_store_retention_months: 0,
            usage_store_max_backlog: 1,
        };
        let shown = format!("{args:?}");
        assert!(
            shown.contains("postgres://db/usage") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn months_roll_over_years() {
        let ts: Timestamp = "2026-12-31T23:59:59Z".parse().unwrap();
        assert_eq!(month_start(ts).to_string(), "2026-12-01T00:00:00Z");
        assert_eq!(month_of(2026, 13).to_string(), "2027-01-01T00:00:00Z");
        assert_eq!(month_of(2026, 0).to_string(), "2025-12-01T00:00:00Z");
        assert_eq!(month_of(2026, -11).to_string(), "2025-01-01T00:00:00Z");
        assert_eq!(year_month(ts), (2026, 12));
    }
}
