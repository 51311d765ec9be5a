//! `kubectl tokenwarden budgets`: every TokenBudget of a namespace (`-n`,
//! else the context's) or of all (`-A`), with what its status says: spend
//! against the limit, the share used, the operator's forecast for the end of
//! the period (`status.projectedSpendUsd`, `status.projectedExhaustion`,
//! `status.projectedTokens`, shown when the operator writes them), the state
//! (with `ProjectedOverrun` while that condition is True) and when the
//! period ends.
//!
//! The objects are read as untyped JSON, so the plugin shows what any
//! operator version wrote (fields it does not know are ignored, fields an
//! older operator does not write are blank). The share used is exact integer
//! arithmetic on the decimal strings (per mille, rounded down).

use serde_json::{Value, json};
use tokenwarden_core::money::Usd;

use crate::{
    Global, kube,
    output::{Format, Table, money},
};

/// The subcommand's flags.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand; returns what to print.
pub async fn run(g: &Global, _a: &Args) -> anyhow::Result<String> {
    let cluster = kube::connect(g).await?;
    run_on(&cluster, g.output).await
}

/// [`run`] with a connected client.
pub async fn run_on(cluster: &kube::Cluster, format: Format) -> anyhow::Result<String> {
    let items = kube::list(cluster, "tokenbudgets", "TokenBudget").await?;
    Ok(render(&items, cluster.scope(), format))
}

/// One budget as the plugin shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `Hourly`, `Daily`, `Weekly`, `Monthly`.
    pub period: String,
    /// `spec.limit.usd`.
    pub limit_usd: Option<Usd>,
    /// `spec.limit.tokens`.
    pub limit_tokens: Option<i64>,
    /// `status.spentUsd`.
    pub spent_usd: Option<Usd>,
    /// `status.tokens.total`.
    pub tokens: Option<i64>,
    /// Share of the limit used, per mille (USD when there is a USD limit,
    /// else tokens), rounded down.
    pub used_permille: Option<i128>,
    /// `status.projectedSpendUsd`.
    pub projected_usd: Option<Usd>,
    /// `status.projectedTokens`.
    pub projected_tokens: Option<i64>,
    /// `status.projectedExhaustion`.
    pub projected_exhaustion: Option<String>,
    /// `status.state`.
    pub state: Option<String>,
    /// The `ProjectedOverrun` condition is True: the forecast reaches the
    /// limit before the period ends.
    pub projected_overrun: bool,
    /// `status.periodEnd`.
    pub period_end: Option<String>,
}

fn usd(v: &Value) -> Option<Usd> {
    v.as_str().and_then(|s| Usd::parse_signed(s).ok())
}

/// Read one TokenBudget object.
pub fn row(o: &Value) -> Row {
    let s = &o["status"];
    let limit_usd = usd(&o["spec"]["limit"]["usd"]);
    let limit_tokens = o["spec"]["limit"]["tokens"].as_i64();
    let spent_usd = usd(&s["spentUsd"]);
    let tokens = s["tokens"]["total"].as_i64();
    let used_permille = match (limit_usd, spent_usd, limit_tokens, tokens) {
        (Some(l), Some(sp), _, _) if l.picos() > 0 => Some(sp.picos() * 1000 / l.picos()),
        (None, _, Some(l), Some(t)) if l > 0 => Some(i128::from(t) * 1000 / i128::from(l)),
        _ => None,
    };
    let text = |v: &Value| v.as_str().map(str::to_string);
    Row {
        namespace: text(&o["metadata"]["namespace"]).unwrap_or_default(),
        name: text(&o["metadata"]["name"]).unwrap_or_default(),
        period: text(&o["spec"]["period"]).unwrap_or_default(),
        limit_usd,
        limit_tokens,
        spent_usd,
        tokens,
        used_permille,
        projected_usd: usd(&s["projectedSpendUsd"]),
        projected_tokens: s["projectedTokens"].as_i64(),
        projected_exhaustion: text(&s["projectedExhaustion"]),
        state: text(&s["state"]),
        projected_overrun: s["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "ProjectedOverrun" && c["status"] == "True")
        }),
        period_end: text(&s["periodEnd"]),
    }
}

fn percent(permille: i128) -> String {
    format!("{}.{}%", permille / 10, permille % 10)
}

/// The budgets as a table, JSON or CSV (`namespace`: the one listed, `None`
/// for all, which adds a NAMESPACE column).
pub fn render(items: &[Value], namespace: Option<&str>, format: Format) -> String {
    let rows: Vec<Row> = items.iter().map(row).collect();
    match format {
        Format::Json => {
            let out: Vec<Value> = rows.iter().map(row_json).collect();
            format!("{:#}\n", json!({ "budgets": out }))
        }
        Format::Table if rows.is_empty() => match namespace {
            Some(ns) => format!("No TokenBudgets found in namespace {ns}.\n"),
            None => "No TokenBudgets found.\n".to_string(),
        },
        Format::Table => table(&rows, namespace.is_none(), false).to_text(),
        Format::Csv => table(&rows, true, true).to_csv(),
    }
}

fn row_json(r: &Row) -> Value {
    let s = |u: Option<Usd>| u.map(|u| u.to_string());
    json!({
        "namespace": r.namespace,
        "name": r.name,
        "period": r.period,
        "limitUsd": s(r.limit_usd),
        "limitTokens": r.limit_tokens,
        "spentUsd": s(r.spent_usd),
        "tokens": r.tokens,
        "usedPercent": r.used_permille.map(percent),
        "projectedSpendUsd": s(r.projected_usd),
        "projectedTokens": r.projected_tokens,
        "projectedExhaustion": r.projected_exhaustion,
        "state": r.state,
        "projectedOverrun": r.projected_overrun,
        "periodEnd": r.period_end,
    })
}

fn table(rows: &[Row], with_namespace: bool, csv: bool) -> Table {
    let cols: &[(&str, &str)] = &[
        ("NAMESPACE", "namespace"),
        ("NAME", "name"),
        ("PERIOD", "period"),
        ("SPENT", "spent_usd"),
        ("LIMIT", "limit_usd"),
        ("TOKENS", "tokens"),
        ("TOKEN-LIMIT", "limit_tokens"),
        ("USED", "used_percent"),
        ("PROJECTED", "projected_spend_usd"),
        ("PROJECTED-TOKENS", "projected_tokens"),
        ("EXHAUSTED-AT", "projected_exhaustion"),
        ("STATE", "state"),
        ("PERIOD-END", "period_end"),
    ];
    let tokens = csv || rows.iter().any(|r| r.limit_tokens.is_some());
    let keep = |h: &str| {
        (with_namespace || h != "NAMESPACE")
            && (tokens || !matches!(h, "TOKENS" | "TOKEN-LIMIT" | "PROJECTED-TOKENS"))
    };
    let kept: Vec<(&str, &str)> = cols.iter().copied().filter(|(h, _)| keep(h)).collect();
    let headers: Vec<&str> = kept
        .iter()
        .map(|(h, c)| if csv { *c } else { *h })
        .collect();
    let right: Vec<usize> = kept
        .iter()
        .enumerate()
        .filter(|(_, (h, _))| {
            matches!(
                *h,
                "SPENT"
                    | "LIMIT"
                    | "TOKENS"
                    | "TOKEN-LIMIT"
                    | "USED"
                    | "PROJECTED"
                    | "PROJECTED-TOKENS"
            )
        })
        .map(|(i, _)| i)
        .collect();
    let mut t = Table::new(&headers).right_aligned(&right);
    let blank = if csv { "" } else { "-" };
    let m = |u: Option<Usd>| match u {
        Some(u) if csv => u.to_string(),
        Some(u) => money(u),
        None => blank.to_string(),
    };
    let n = |v: Option<i64>| v.map_or_else(|| blank.to_string(), |v| v.to_string());
    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| blank.to_string());
    for r in rows {
        let cells = [
            r.namespace.clone(),
            r.name.clone(),
            r.period.clone(),
            m(r.spent_usd),
            m(r.limit_usd),
            n(r.tokens),
            n(r.limit_tokens),
            r.used_permille.map_or_else(|| blank.to_string(), percent),
            m(r.projected_usd),
            n(r.projected_tokens),
            o(&r.projected_exhaustion),
            match (&r.state, r.projected_overrun) {
                (Some(st), true) => format!("{st}, ProjectedOverrun"),
                (None, true) => "ProjectedOverrun".into(),
                (st, false) => o(st),
            },
            o(&r.period_end),
        ];
        t.push(
            cols.iter()
                .zip(cells)
                .filter(|((h, _), _)| keep(h))
                .map(|(_, c)| c)
                .collect(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    fn budget(ns: &str, name: &str, limit: &str, status: Value) -> Value {
        json!({
            "apiVersion": "tokenwarden.dev/v1alpha1", "kind": "TokenBudget",
            "metadata": {"namespace": ns, "name": name},
            "spec": {"period": "Monthly", "limit": {"usd": limit}},
            "status": status,
        })
    }

    #[test]
    fn shows_the_forecast_when_the_status_has_it() {
        let items = vec![
            budget(
                "agents",
                "coder",
                "50.00",
                json!({"spentUsd": "37.5", "state": "Threshold",
                       "conditions": [{"type": "ProjectedOverrun", "status": "True"}],
                       "periodEnd": "2026-01-01T00:00:00Z",
                       "projectedSpendUsd": "61.25",
                       "projectedExhaustion": "2025-12-26T09:00:00Z"}),
            ),
            budget("agents", "new", "10", json!({})),
        ];
        assert_eq!(
            render(&items, Some("agents"), Format::Table),
            "\
NAME   PERIOD    SPENT   LIMIT   USED  PROJECTED  EXHAUSTED-AT          STATE                        PERIOD-END
coder  Monthly  $37.50  $50.00  75.0%     $61.25  2025-12-26T09:00:00Z  Threshold, ProjectedOverrun  2026-01-01T00:00:00Z
new    Monthly       -  $10.00      -          -  -                     -                            -
"
        );
        let doc: Value = serde_json::from_str(&render(&items, None, Format::Json)).unwrap();
        assert_eq!(doc["budgets"][0]["usedPercent"], "75.0%");
        assert_eq!(doc["budgets"][0]["projectedSpendUsd"], "61.25");
        assert_eq!(doc["budgets"][0]["projectedOverrun"], true);
        assert_eq!(doc["budgets"][1]["spentUsd"], Value::Null);
        assert_eq!(doc["budgets"][1]["projectedOverrun"], false);
    }

    #[test]
    fn token_limits_use_the_token_share() {
        let mut b = budget("a", "t", "1", json!({"tokens": {"total": 333}}));
        b["spec"]["limit"] = json!({"tokens": 1000});
        let r = row(&b);
        assert_eq!(r.used_permille, Some(333));
        assert_eq!(
            render(&[b], None, Format::Csv),
            "namespace,name,period,spent_usd,limit_usd,tokens,limit_tokens,used_percent,\
             projected_spend_usd,projected_tokens,projected_exhaustion,state,period_end\r\n\
             a,t,Monthly,,,333,1000,33.3%,,,,,\r\n"
        );
    }
}
