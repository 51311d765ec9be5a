//! The usage store's schema, as versioned SQL migrations embedded in the
//! binary (`migrations/NNNN_name.sql`). [`apply`] runs the missing ones in
//! one transaction under a transaction-level advisory lock, so operator
//! replicas starting together never race (the second waits, then finds
//! nothing left to do), and records each in
//! `tokenwarden.schema_migrations(version, name, applied_at)`. A migration
//! is never edited once released: a change is a new file.
//! (Advisory locks: <https://www.postgresql.org/docs/15/explicit-locking.html#ADVISORY-LOCKS>.)

use tokio_postgres::Client;

use super::StoreError;

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version (the file's number).
    pub version: i32,
    /// Its name (the rest of the file name).
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "usage",
        sql: include_str!("migrations/0001_usage.sql"),
    },
    Migration {
        version: 2,
        name: "views",
        sql: include_str!("migrations/0002_views.sql"),
    },
    Migration {
        version: 3,
        name: "response_cache",
        sql: include_str!("migrations/0003_response_cache.sql"),
    },
    Migration {
        version: 4,
        name: "semantic_cache",
        sql: include_str!("migrations/0004_semantic_cache.sql"),
    },
    Migration {
        version: 5,
        name: "replay",
        sql: include_str!("migrations/0005_replay.sql"),
    },
];

/// The advisory lock key every schema change (migrations, partitions,
/// retention) of the usage store takes: `tokenwarden` in ASCII, as a
/// bigint.
pub const LOCK_KEY: i64 = 0x746f_6b65_6e77_6172;

/// The newest version this binary knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Apply the migrations the database lacks; returns the versions applied
/// now (empty when it was up to date).
pub async fn apply(client: &mut Client) -> Result<Vec<i32>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS tokenwarden;
         CREATE TABLE IF NOT EXISTS tokenwarden.schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await?;
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tokenwarden.schema_migrations",
            &[],
        )
        .await?
        .get(0);
    if found > latest() {
        return Err(StoreError::SchemaTooNew {
            found,
            known: latest(),
        });
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version > found) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO tokenwarden.schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await?;
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i32::try_from(i + 1).unwrap(), "{}", m.name);
            assert!(m.sql.contains("tokenwarden."), "{}", m.name);
        }
        assert_eq!(latest(), 5);
    }
}
