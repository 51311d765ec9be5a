//! `kubectl tokenwarden costs`: the cluster ledger (every usage record the
//! operator counted, all-time, by namespace, workload and served model),
//! read from the ConfigMap `tokenwarden-ledger` (key `ledger.json`, a
//! `ClusterLedgerState`) in the operator's namespace, summed by the keys of
//! `--by`, with requests, tokens by kind, exact cost and cache savings.
//!
//! Cache savings: what the provider's prompt cache saved (cache reads
//! priced at the input rate minus what they cost, core `usage::cache`) plus
//! what the response cache saved, net of its embedding calls. Shown as `-`
//! where nothing was cached.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokenwarden_core::{
    book::Spend,
    cluster_ledger::{ClusterLedgerState, LedgerKey},
    money::Usd,
    usage::add_usage,
};

use crate::{
    Global,
    kube::{self, Call, Cluster},
    output::{Format, Table, money},
};

/// What to sum by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum By {
    /// The namespace.
    Namespace,
    /// The workload (`app.kubernetes.io/name`, `app`, or the pod's owner).
    Workload,
    /// The model that served.
    Model,
}

/// The subcommand's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sum by these keys, comma-separated (`--by model`: per model across
    /// the namespaces shown).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [By::Namespace, By::Workload, By::Model])]
    pub by: Vec<By>,
    /// The namespace the tokenwarden operator runs in (its ledger ConfigMap
    /// is there).
    #[arg(long, value_name = "NAMESPACE", default_value = kube::DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
}

/// Runs the subcommand; returns what to print.
pub async fn run(g: &Global, a: &Args) -> anyhow::Result<String> {
    let cluster = kube::connect(g).await?;
    run_on(&cluster, a, g.output).await
}

/// [`run`] with a connected client.
pub async fn run_on(cluster: &Cluster, a: &Args, format: Format) -> anyhow::Result<String> {
    let text = fetch_ledger(cluster, &a.operator_namespace).await?;
    let state: ClusterLedgerState = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "ConfigMap {}/{} key {}: not a cluster ledger: {e}",
            a.operator_namespace,
            kube::LEDGER_CONFIGMAP,
            kube::LEDGER_KEY
        )
    })?;
    Ok(render(&state, cluster.scope(), &a.by, format))
}

/// `what-if`: its flags (`whatif::Args`) plus, for `--cluster`, where the
/// operator's ledger is.
#[derive(Debug, clap::Args)]
pub struct WhatIfArgs {
    /// The what-if flags.
    #[command(flatten)]
    pub what_if: crate::whatif::Args,
    /// With `--cluster`: the namespace the tokenwarden operator runs in (its
    /// ledger ConfigMap is there).
    #[arg(long, value_name = "NAMESPACE", default_value = kube::DEFAULT_OPERATOR_NAMESPACE)]
    pub operator_namespace: String,
}

/// Runs `what-if`: with `--cluster` over the cluster ledger's ConfigMap
/// (re-pricing of its aggregates, `whatif::report_ledger_json`); with
/// `--usage-store` and no local source over the operator's usage store
/// (`usage_store::report`); else as `whatif::run` does.
pub async fn what_if(g: &Global, a: &WhatIfArgs) -> anyhow::Result<String> {
    let w = &a.what_if;
    if !w.cluster {
        if w.state_dir.is_none()
            && w.ledger_file.is_none()
            && let Some(url) = &w.usage_store
        {
            return crate::usage_store::report(g, w, url).await;
        }
        return crate::whatif::run(g, w).await;
    }
    let cluster = kube::connect(g).await?;
    let text = fetch_ledger(&cluster, &a.operator_namespace).await?;
    let origin = format!(
        "ConfigMap {}/{}",
        a.operator_namespace,
        kube::LEDGER_CONFIGMAP
    );
    crate::whatif::report_ledger_json(g, &a.what_if, &origin, &text)
}

/// The cluster ledger's JSON text (`ClusterLedgerState`) from the ConfigMap
/// in `operator_namespace`. A missing ConfigMap or key is an error that
/// says what it means.
pub async fn fetch_ledger(cluster: &Cluster, operator_namespace: &str) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: ::kube::Api<ConfigMap> =
        ::kube::Api::namespaced(cluster.client.clone(), operator_namespace);
    let call = Call {
        verb: "get",
        group: "",
        resource: "configmaps",
        name: Some(kube::LEDGER_CONFIGMAP),
        namespace: Some(operator_namespace),
    };
    let cm = match api.get(kube::LEDGER_CONFIGMAP).await {
        Ok(cm) => cm,
        Err(::kube::Error::Api(s)) if s.code == 404 => anyhow::bail!(
            "no cluster ledger: ConfigMap {operator_namespace}/{} does not exist. The operator \
             creates it when it counts its first usage record; is the operator installed in \
             namespace {operator_namespace:?} (--operator-namespace), and has any sidecar sent usage?",
            kube::LEDGER_CONFIGMAP
        ),
        Err(e) => return Err(kube::api_error(e, &call)),
    };
    cm.data
        .and_then(|mut d| d.remove(kube::LEDGER_KEY))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "ConfigMap {operator_namespace}/{} has no key {}: not written by the tokenwarden \
                 operator",
                kube::LEDGER_CONFIGMAP,
                kube::LEDGER_KEY
            )
        })
}

type Group = (Option<String>, Option<String>, Option<String>);

/// The ledger's rows in `namespace` (all when `None`), summed by `by`.
pub fn summarize(
    state: &ClusterLedgerState,
    namespace: Option<&str>,
    by: &[By],
) -> BTreeMap<Group, Spend> {
    let mut out: BTreeMap<Group, Spend> = BTreeMap::new();
    for (key, spend) in &state.rows {
        if namespace.is_some_and(|ns| ns != key.namespace) {
            continue;
        }
        let pick = |b: By, v: &String| by.contains(&b).then(|| v.clone());
        let LedgerKey {
            namespace: ns,
            workload,
            model,
        } = key;
        let group = (
            pick(By::Namespace, ns),
            pick(By::Workload, workload),
            pick(By::Model, model),
        );
        add(out.entry(group).or_default(), spend);
    }
    out
}

fn add(a: &mut Spend, b: &Spend) {
    a.cost = a.cost.saturating_add(b.cost);
    a.requests = a.requests.saturating_add(b.requests);
    add_usage(&mut a.usage, &b.usage);
    a.unpriced = a.unpriced.saturating_add(b.unpriced);
    a.estimated = a.estimated.saturating_add(b.estimated);
    let (c, d) = (&mut a.cache, &b.cache);
    c.saved = c.saved.saturating_add(d.saved);
    c.wasted = c.wasted.saturating_add(d.wasted);
    c.busts = c.busts.saturating_add(d.busts);
    c.response_hits = c.response_hits.saturating_add(d.response_hits);
    c.response_saved = c.response_saved.saturating_add(d.response_saved);
    c.semantic_hits = c.semantic_hits.saturating_add(d.semantic_hits);
    c.embedding_calls = c.embedding_calls.saturating_add(d.embedding_calls);
    c.embedding_cost = c.embedding_cost.saturating_add(d.embedding_cost);
}

/// Net cache savings (prompt cache saved + response cache saved − its
/// embedding calls), `None` where nothing was cached.
fn cache_saved(s: &Spend) -> Option<Usd> {
    let c = &s.cache;
    let any = !c.saved.is_zero()
        || !c.wasted.is_zero()
        || c.response_hits > 0
        || c.embedding_calls > 0
        || s.usage.cache_read_tokens > 0;
    any.then(|| {
        c.saved
            .saturating_add(c.response_saved)
            .saturating_sub(c.embedding_cost)
    })
}

/// The ledger as a table, JSON or CSV.
pub fn render(
    state: &ClusterLedgerState,
    namespace: Option<&str>,
    by: &[By],
    format: Format,
) -> String {
    let rows = summarize(state, namespace, by);
    let mut total = Spend::default();
    for s in rows.values() {
        add(&mut total, s);
    }
    match format {
        Format::Json => {
            let doc = json!({
                "namespace": namespace,
                "rows": rows.iter().map(|(g, s)| row_json(g, s)).collect::<Vec<_>>(),
                "total": row_json(&(None, None, None), &total),
            });
            format!("{doc:#}\n")
        }
        Format::Csv => table(&rows, None, by, true).to_csv(),
        Format::Table if rows.is_empty() => match namespace {
            Some(ns) => format!("No usage recorded in namespace {ns}.\n"),
            None => "No usage recorded.\n".to_string(),
        },
        Format::Table => table(&rows, Some(&total), by, false).to_text(),
    }
}

fn row_json(g: &Group, s: &Spend) -> Value {
    let mut v = json!({});
    for (k, x) in [("namespace", &g.0), ("workload", &g.1), ("model", &g.2)] {
        if let Some(x) = x {
            v[k] = json!(x);
        }
    }
    let c = &s.cache;
    v["requests"] = json!(s.requests);
    v["tokens"] = json!({
        "input": s.usage.input_tokens,
        "output": s.usage.output_tokens,
        "cacheRead": s.usage.cache_read_tokens,
        "cacheWrite": s.usage.cache_write_tokens,
    });
    v["costUsd"] = json!(s.cost.to_string());
    v["unpricedRequests"] = json!(s.unpriced);
    v["estimatedRequests"] = json!(s.estimated);
    v["cacheSavedUsd"] = json!(cache_saved(s).map(|u| u.to_string()));
    v["promptCache"] = json!({
        "savedUsd": c.saved.to_string(),
        "wastedUsd": c.wasted.to_string(),
        "busts": c.busts,
    });
    v["responseCache"] = json!({
        "hits": c.response_hits,
        "semanticHits": c.semantic_hits,
        "savedUsd": c.response_saved.to_string(),
        "embeddingCalls": c.embedding_calls,
        "embeddingCostUsd": c.embedding_cost.to_string(),
    });
    v
}

fn table(rows: &BTreeMap<Group, Spend>, total: Option<&Spend>, by: &[By], csv: bool) -> Table {
    let keys: Vec<(By, &str, &str)> = [
        (By::Namespace, "NAMESPACE", "namespace"),
        (By::Workload, "WORKLOAD", "workload"),
        (By::Model, "MODEL", "model"),
    ]
    .into_iter()
    .filter(|(b, _, _)| by.contains(b))
    .collect();
    let unpriced = csv || rows.values().any(|s| s.unpriced > 0);
    let mut headers: Vec<&str> = keys
        .iter()
        .map(|(_, t, c)| if csv { *c } else { *t })
        .collect();
    let numbers: &[(&str, &str)] = &[
        ("REQUESTS", "requests"),
        ("INPUT", "input_tokens"),
        ("OUTPUT", "output_tokens"),
        ("CACHE-READ", "cache_read_tokens"),
        ("CACHE-WRITE", "cache_write_tokens"),
        ("COST", "cost_usd"),
        ("CACHE-SAVED", "cache_saved_usd"),
    ];
    headers.extend(numbers.iter().map(|(t, c)| if csv { *c } else { *t }));
    if unpriced {
        headers.push(if csv { "unpriced_requests" } else { "UNPRICED" });
    }
    let first_number = keys.len();
    let mut t =
        Table::new(&headers).right_aligned(&(first_number..headers.len()).collect::<Vec<_>>());
    let usd = |u: Usd| if csv { u.to_string() } else { money(u) };
    let line = |cells: Vec<String>, s: &Spend| {
        let mut row = cells;
        row.extend([
            s.requests.to_string(),
            s.usage.input_tokens.to_string(),
            s.usage.output_tokens.to_string(),
            s.usage.cache_read_tokens.to_string(),
            s.usage.cache_write_tokens.to_string(),
            usd(s.cost),
            cache_saved(s).map_or_else(|| if csv { String::new() } else { "-".into() }, usd),
        ]);
        if unpriced {
            row.push(s.unpriced.to_string());
        }
        row
    };
    for ((ns, wl, model), s) in rows {
        let cells = keys
            .iter()
            .map(|(b, _, _)| {
                match b {
                    By::Namespace => ns,
                    By::Workload => wl,
                    By::Model => model,
                }
                .clone()
                .unwrap_or_default()
            })
            .collect();
        t.push(line(cells, s));
    }
    if let Some(total) = total {
        let mut cells = vec![String::new(); keys.len()];
        if let Some(c) = cells.first_mut() {
            *c = "TOTAL".into();
        }
        t.push(line(cells, total));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use tokenwarden_core::tokens::TokenCounts;

    fn spend(cost_micros: i128, requests: u64, input: u64, output: u64, read: u64) -> Spend {
        Spend {
            cost: Usd::from_picos(cost_micros * 1_000_000),
            requests,
            usage: TokenCounts {
                input_tokens: input,
                output_tokens: output,
                cache_read_tokens: read,
                ..TokenCounts::default()
            },
            ..Spend::default()
        }
    }

    fn key(ns: &str, wl: &str, m: &str) -> LedgerKey {
        LedgerKey {
            namespace: ns.into(),
            workload: wl.into(),
            model: m.into(),
        }
    }

    /// Two namespaces, three models: sums by model keep the exact
    /// micro-dollars.
    pub(crate) fn sample() -> ClusterLedgerState {
        let mut cached = spend(1_500, 2, 100, 40, 9_000);
        // 9,000 cache reads at Opus 4.6's $5 input instead of $0.50: $0.0405.
        cached.cache.saved = Usd::from_picos(40_500_000_000);
        ClusterLedgerState {
            rows: vec![
                (
                    key("agents", "coder", "claude-haiku-4-5"),
                    spend(2_250, 3, 1_000, 250, 0),
                ),
                (key("agents", "coder", "claude-opus-4-6"), cached),
                (
                    key("support", "bot", "claude-haiku-4-5"),
                    spend(1, 1, 1, 0, 0),
                ),
            ],
            ..ClusterLedgerState::default()
        }
    }

    #[test]
    fn sums_by_model_across_namespaces_exactly() {
        let rows = summarize(&sample(), None, &[By::Model]);
        let haiku = &rows[&(None, None, Some("claude-haiku-4-5".into()))];
        assert_eq!(haiku.requests, 4);
        assert_eq!(haiku.cost, Usd::from_picos(2_251_000_000));
        assert_eq!(haiku.usage.input_tokens, 1_001);
        let only = summarize(&sample(), Some("support"), &[By::Namespace]);
        assert_eq!(only.len(), 1);
        assert_eq!(only[&(Some("support".into()), None, None)].requests, 1);
    }

    #[test]
    fn table_json_and_csv() {
        let text = render(
            &sample(),
            Some("agents"),
            &[By::Workload, By::Model],
            Format::Table,
        );
        assert_eq!(
            text,
            "\
WORKLOAD  MODEL             REQUESTS  INPUT  OUTPUT  CACHE-READ  CACHE-WRITE      COST  CACHE-SAVED
coder     claude-haiku-4-5         3   1000     250           0            0  $0.00225            -
coder     claude-opus-4-6          2    100      40        9000            0   $0.0015      $0.0405
TOTAL                              5   1100     290        9000            0  $0.00375      $0.0405
"
        );
        let csv = render(&sample(), None, &[By::Model], Format::Csv);
        assert_eq!(
            csv,
            "model,requests,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,cost_usd,cache_saved_usd,unpriced_requests\r\n\
             claude-haiku-4-5,4,1001,250,0,0,0.002251,,0\r\n\
             claude-opus-4-6,2,100,40,9000,0,0.0015,0.0405,0\r\n"
        );
        let doc: Value =
            serde_json::from_str(&render(&sample(), None, &[By::Namespace], Format::Json)).unwrap();
        assert_eq!(doc["rows"][0]["namespace"], "agents");
        assert_eq!(doc["rows"][0]["costUsd"], "0.00375");
        assert_eq!(doc["rows"][1]["cacheSavedUsd"], Value::Null);
        assert_eq!(doc["total"]["costUsd"], "0.003751");
        assert_eq!(doc["total"]["tokens"]["cacheRead"], 9000);
    }

    #[test]
    fn empty_namespace_says_so() {
        assert_eq!(
            render(&sample(), Some("none"), &[By::Model], Format::Table),
            "No usage recorded in namespace none.\n"
        );
    }
}
