//! Reading history back: `tokenwarden-operator history` queries the
//! usage store's views (read-only: it applies no migration and makes no
//! partition) and prints one line per day and namespace, workload, model,
//! or per budget period. The same views serve any other reader (a cost
//! forecast, Grafana's Postgres data source).

use jiff::{Timestamp, civil::Date};
use tokenwarden_core::money::Usd;
use tokio_postgres::Client;

use super::StoreError;

/// What history is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// `tokenwarden.daily_cost_by_namespace`.
    Namespace,
    /// `tokenwarden.daily_cost_by_workload`.
    Workload,
    /// `tokenwarden.daily_cost_by_model`.
    Model,
    /// `tokenwarden.cost_by_budget_period`.
    Budget,
}

/// One line of history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The UTC day, or the budget period's start.
    pub when: String,
    /// The namespace, `namespace/workload`, `provider/model` or
    /// `namespace/budget`.
    pub key: String,
    /// Attempts.
    pub requests: i64,
    /// Uncached input, output, cache read, cache write tokens.
    pub tokens: [i64; 4],
    /// Cost (priced attempts).
    pub cost: Usd,
}

/// The view and its key and time columns for `by`.
fn view(by: By) -> (&'static str, &'static str, &'static str) {
    match by {
        By::Namespace => ("daily_cost_by_namespace", "namespace", "day"),
        By::Workload => (
            "daily_cost_by_workload",
            "namespace || '/' || workload",
            "day",
        ),
        By::Model => ("daily_cost_by_model", "provider || '/' || model", "day"),
        By::Budget => (
            "cost_by_budget_period",
            "budget_namespace || '/' || budget_name",
            "period_start",
        ),
    }
}

/// History from `since` (a UTC day; for budgets, periods starting then or
/// later), oldest first, then by cost, highest first.
pub async fn query(client: &Client, by: By, since: Date) -> Result<Vec<HistoryRow>, StoreError> {
    let (view, key, when) = view(by);
    let since_ts = since
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_or(Timestamp::UNIX_EPOCH, |z| z.timestamp());
    let filter = if by == By::Budget {
        "period_start >= $1"
    } else {
        "day >= ($1 AT TIME ZONE 'UTC')::date"
    };
    let sql = format!(
        "SELECT {when}::text, {key}, requests, input_tokens, output_tokens, \
         cache_read_tokens, cache_write_tokens, cost_pusd::text \
         FROM tokenwarden.{view} WHERE {filter} \
         ORDER BY {when}, cost_pusd DESC, 2"
    );
    let rows = client.query(&sql, &[&since_ts]).await?;
    rows.iter()
        .map(|r| {
            let picos: &str = r.get(7);
            let picos: i128 = picos
                .parse()
                .map_err(|_| StoreError::Encode(format!("cost {picos:?} is not an integer")))?;
            Ok(HistoryRow {
                when: r.get(0),
                key: r.get(1),
                requests: r.get(2),
                tokens: [r.get(3), r.get(4), r.get(5), r.get(6)],
                cost: Usd::from_picos(picos),
            })
        })
        .collect()
}

/// A table: one header line, one line per row, columns separated by two
/// spaces and aligned.
pub fn render(by: By, rows: &[HistoryRow]) -> String {
    let head = [
        if by == By::Budget {
            "PERIOD_START"
        } else {
            "DAY"
        },
        match by {
            By::Namespace => "NAMESPACE",
            By::Workload => "WORKLOAD",
            By::Model => "MODEL",
            By::Budget => "BUDGET",
        },
        "REQUESTS",
        "INPUT",
        "OUTPUT",
        "CACHE_READ",
        "CACHE_WRITE",
        "COST_USD",
    ];
    let mut lines: Vec<[String; 8]> = vec![head.map(str::to_string)];
    for r in rows {
        lines.push([
            r.when.clone(),
            r.key.clone(),
            r.requests.to_string(),
            r.tokens[0].to_string(),
            r.tokens[1].to_string(),
            r.tokens[2].to_string(),
            r.tokens[3].to_string(),
            r.cost.to_string(),
        ]);
    }
    let mut widths = [0usize; 8];
    for l in &lines {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `tokenwarden-operator history`: print cost history from the usage store.
/// (`Debug` shows the URL without its password.)
#[derive(Clone, clap::Args)]
pub struct HistoryArgs {
    /// The usage store (as for the operator).
    #[arg(
        long,
        env = "TOKENWARDEN_OPERATOR_USAGE_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub usage_store_url: String,

    /// First UTC day shown (`YYYY-MM-DD`; default: the first of this month).
    /// With `--by budget`: periods that start on or after it.
    #[arg(long, value_name = "DATE")]
    pub since: Option<jiff::civil::Date>,

    /// Group by namespace, workload, model (provider/model) or budget period.
    #[arg(long, value_enum, default_value_t = By::Namespace)]
    pub by: By,
}

impl std::fmt::Debug for HistoryArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryArgs")
            .field("usage_store_url", &super::redact(&self.usage_store_url))
            .field("since", &self.since)
            .field("by", &self.by)
            .finish()
    }
}

impl HistoryArgs {
    /// `--since`, or the first of the current UTC month.
    pub fn since(&self, now: Timestamp) -> jiff::civil::Date {
        self.since.unwrap_or_else(|| {
            let d = now.to_zoned(jiff::tz::TimeZone::UTC).date();
            d.first_of_month()
        })
    }
}

/// Run `history`: query and print; the error names no password.
pub async fn run(args: &HistoryArgs) -> Result<String, String> {
    let config = super::pg::parse_url(&args.usage_store_url).map_err(|e| e.to_string())?;
    let target = super::redact(&args.usage_store_url);
    let client = super::pg::connect(&config)
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    let rows = query(&client, args.by, args.since(Timestamp::now()))
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    Ok(render(args.by, &rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_with_exact_dollars() {
        let rows = vec![HistoryRow {
            when: "2026-12-01".into(),
            key: "team/search".into(),
            requests: 3,
            tokens: [30, 15, 0, 0],
            cost: Usd::from_picos(1_500_000_000_000),
        }];
        assert_eq!(
            render(By::Workload, &rows),
            "DAY         WORKLOAD     REQUESTS  INPUT  OUTPUT  CACHE_READ  CACHE_WRITE  COST_USD\n\
             2026-12-01  team/search  3         30     15      0           0            1.50\n"
        );
    }
}
