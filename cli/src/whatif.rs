//! `kubectl tokenwarden what-if`: what recorded traffic would have cost at
//! other prices (`--prices`), on other models (`--model A=B`) or under a
//! changed RoutingPolicy (`--policy`), and what that does to each
//! TokenBudget (`--budgets`, or the budgets in the policy file).
//!
//! Sources, by priority: `--state-dir` (a sidecar's journal: per-request
//! records, so exact re-pricing, re-routing and budgets) and
//! `--ledger-file` (the operator's cluster ledger, `ClusterLedgerState`
//! JSON: aggregates, so re-pricing only), then `--usage-store` (the
//! operator's PostgreSQL usage store: per-request records of every
//! workload, [`crate::usage_store`]). [`report_ledger_json`] takes the
//! same JSON as text, for `--cluster` (the `tokenwarden-ledger` ConfigMap's
//! `ledger.json`). The arithmetic is `tokenwarden_core::whatif`; this module loads, renders and
//! says how every figure was made.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokenwarden_core::{
    catalog::{ModelPrices, PriceOverride},
    classify::ClassifierConfig,
    cluster_ledger::ClusterLedgerState,
    money::{PricePerMtok, Usd},
    route::Router,
    selector::parse_labels,
    usage::UsageRecord,
    whatif::{
        self, BudgetPair, Plan, Report, Row, Source,
        replay::{ReplayOptions, scores_changed},
        reprice::Repricer,
    },
    workload::{BudgetConfig, WorkloadConfig, workload_name},
};
use tokenwarden_crds::policy_file::PolicySet;

use crate::output::{Format, Table, count, json, money};

/// The subcommand's flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Args {
    /// A sidecar's state dir: its journal's per-request records (exact
    /// re-pricing, re-routing and budget impact).
    #[arg(long, value_name = "DIR", conflicts_with = "ledger_file")]
    pub state_dir: Option<PathBuf>,
    /// The operator's cluster ledger JSON (local mode: `<state>/ledger.json`):
    /// aggregates, so re-pricing only.
    #[arg(long, value_name = "FILE")]
    pub ledger_file: Option<PathBuf>,
    /// Read the cluster ledger from the cluster (the `tokenwarden-ledger`
    /// ConfigMap): re-pricing only.
    #[arg(long, conflicts_with_all = ["state_dir", "ledger_file"])]
    pub cluster: bool,
    /// The operator's PostgreSQL usage store (a `postgres://` URL or a
    /// libpq key=value string; never printed): per-request records of one
    /// workload (`-n NS --workload W`: exact re-pricing, re-routing and
    /// budgets) or of every workload (`-A`: re-pricing). Used when no
    /// other source is given.
    #[arg(
        long,
        env = "TOKENWARDEN_USAGE_STORE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub usage_store: Option<StoreUrl>,
    /// Price model A's usage as model B (repeatable): `--model claude-opus-4-1=claude-sonnet-4-5`.
    #[arg(long = "model", value_name = "A=B")]
    pub models: Vec<String>,
    /// Price overrides: YAML `prices:` list, entries like a RoutingPolicy
    /// provider's (`model`, `inputPerMTok`, `outputPerMTok`,
    /// `cacheReadPerMTok`, `cacheWritePerMTok`) or `{model, prices: {input,
    /// output, cache_read, cache_write}}` (tiered prices allowed).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// The changed RoutingPolicy (and TokenBudgets), YAML file or directory:
    /// every recorded request is routed through it (`--state-dir` only).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// The policy the traffic was recorded under: tells which header values
    /// were recorded and whether the classifier weights changed.
    #[arg(long, value_name = "FILE")]
    pub baseline_policy: Option<PathBuf>,
    /// TokenBudgets to show the impact on (default: those in `--policy`).
    #[arg(long, value_name = "FILE")]
    pub budgets: Option<PathBuf>,
    /// The workload's pod labels (`k=v,k2=v2`), which policies and budgets select on.
    #[arg(long, value_name = "K=V,...", default_value = "")]
    pub labels: String,
    /// The workload's name in the output (default: from the labels); with
    /// `--usage-store`, the workload whose rows are read (with `-n`).
    #[arg(long)]
    pub workload: Option<String>,
    /// Only requests that finished at or after this instant (RFC 3339;
    /// `--state-dir`, `--usage-store`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<jiff::Timestamp>,
    /// Only requests that finished before this instant (RFC 3339;
    /// `--state-dir`, `--usage-store`).
    #[arg(long, value_name = "TIME")]
    pub until: Option<jiff::Timestamp>,
    /// Apply the budgets' threshold actions and hard caps to the what-if,
    /// in time order from its own spend: `Downgrade` re-routes (with
    /// `--policy`), `Block` and a reached limit refuse (`--state-dir`).
    #[arg(long)]
    pub enforce_budgets: bool,
    /// Output tokens on another model: `observed` (scaled by the ratios the
    /// same ledger observed, with a range) or `unchanged`.
    #[arg(long, value_enum, default_value_t = OutputRatio::Observed)]
    pub output_ratio: OutputRatio,
}

/// A usage store URL as given (`--usage-store`,
/// `TOKENWARDEN_USAGE_STORE_URL`); `Debug` hides it, as it may hold a
/// password. Parsed only when used, so a bad one is never quoted back.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(pub String);

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreUrl(<redacted>)")
    }
}

impl FromStr for StoreUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(StoreUrl(s.to_string()))
    }
}

/// `--output-ratio`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputRatio {
    /// Scale by the observed output/input ratios.
    #[default]
    Observed,
    /// Keep the recorded output.
    Unchanged,
}

/// A `--prices` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesFile {
    prices: Vec<PriceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PriceEntry {
    Core(PriceOverride),
    Policy(PolicyPrice),
}

/// A RoutingPolicy provider's price entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyPrice {
    model: String,
    input_per_m_tok: PricePerMtok,
    output_per_m_tok: PricePerMtok,
    #[serde(default)]
    cache_read_per_m_tok: Option<PricePerMtok>,
    #[serde(default)]
    cache_write_per_m_tok: Option<PricePerMtok>,
}

/// Runs the subcommand on a local source (`--state-dir`, `--ledger-file`);
/// returns what to print. `--cluster` and `--usage-store` are dispatched
/// by [`crate::costs::what_if`]. `--cluster` is handled by
/// [`crate::costs::what_if`], which fetches the ledger and calls
/// [`report_ledger_json`].
pub async fn run(g: &crate::Global, a: &Args) -> anyhow::Result<String> {
    if let Some(dir) = &a.state_dir {
        let records = load_state_dir(dir)?;
        return report_records(g, a, &dir.display().to_string(), &records);
    }
    if let Some(f) = &a.ledger_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        return report_ledger_json(g, a, &f.display().to_string(), &text);
    }
    bail!(
        "what-if needs a source: --state-dir DIR, --ledger-file FILE, --usage-store URL or --cluster"
    )
}

/// The settled usage records a sidecar's state dir holds, in seq order,
/// each once: the replay segments its compactions kept
/// (`--replay-keep-bytes`) and the journal
/// ([`tokenwarden_durable::records`], read under the shared compaction
/// lock, so a running sidecar is not disturbed).
pub fn load_state_dir(dir: &Path) -> anyhow::Result<Vec<UsageRecord>> {
    tokenwarden_durable::records(dir)
        .with_context(|| format!("cannot read the usage records in {}", dir.display()))
}

/// The what-if over a cluster ledger given as JSON text
/// (`ClusterLedgerState`: the `tokenwarden-ledger` ConfigMap's
/// `ledger.json`, or local mode's `<state>/ledger.json`); `origin` names it
/// in the output. Re-pricing only.
pub fn report_ledger_json(
    g: &crate::Global,
    a: &Args,
    origin: &str,
    text: &str,
) -> anyhow::Result<String> {
    if a.since.is_some() || a.until.is_some() {
        bail!(
            "{origin} holds all-time totals: --since/--until need per-request records (--state-dir)"
        );
    }
    if a.policy.is_some() || a.budgets.is_some() || a.enforce_budgets {
        bail!(
            "{origin} holds aggregates (totals per workload and model), not requests: re-routing (--policy) and budgets (--budgets, --enforce-budgets) need per-request records (--state-dir)"
        );
    }
    let state: ClusterLedgerState =
        serde_json::from_str(text).with_context(|| format!("{origin}: not a cluster ledger"))?;
    let mut rows = state.rows;
    if !g.all_namespaces
        && let Some(ns) = &g.namespace
    {
        rows.retain(|(k, _)| &k.namespace == ns);
    }
    let prices = repricer(a)?;
    let opts = ReplayOptions::default();
    let plan = Plan {
        prices: &prices,
        router: None,
        replay: &opts,
        budgets: &[],
        estimate_output: a.output_ratio == OutputRatio::Observed,
        enforce_budgets: false,
    };
    let report = whatif::aggregates(&rows, &plan);
    render(g.output, origin, &report, &[])
}

/// The what-if over one workload's per-request records (a sidecar's
/// journal); `origin` names them in the output.
pub fn report_records(
    g: &crate::Global,
    a: &Args,
    origin: &str,
    records: &[UsageRecord],
) -> anyhow::Result<String> {
    let namespace = g.namespace.clone().unwrap_or_else(|| "default".into());
    let (report, notes) = records_report(a, &namespace, None, records)?;
    render(g.output, origin, &report, &notes)
}

/// The what-if over one workload's per-request records in `namespace`
/// (what policies and budgets are compiled for), its rows named `workload`
/// (default: `--workload`, else from `--labels`), and the notes that say
/// how it was made.
pub fn records_report(
    a: &Args,
    namespace: &str,
    workload: Option<&str>,
    records: &[UsageRecord],
) -> anyhow::Result<(Report, Vec<String>)> {
    let labels = parse_labels(&a.labels).map_err(anyhow::Error::msg)?;
    let workload = workload
        .map(str::to_string)
        .or_else(|| a.workload.clone())
        .unwrap_or_else(|| workload_name(&labels, ""));
    let prices = repricer(a)?;
    let records: Vec<UsageRecord> = records
        .iter()
        .filter(|r| a.since.is_none_or(|t| r.ts >= t) && a.until.is_none_or(|t| r.ts < t))
        .cloned()
        .collect();
    let records = records.as_slice();
    let compiled = |p: &Path| -> anyhow::Result<WorkloadConfig> {
        let set = PolicySet::from_path(p)?;
        Ok(set.compile(namespace, "", &labels))
    };
    let policy = a.policy.as_deref().map(compiled).transpose()?;
    let router = policy
        .as_ref()
        .and_then(|c| c.routing.clone())
        .map(Router::new);
    if policy.is_some() && router.is_none() {
        bail!(
            "no RoutingPolicy in the policy file selects namespace {namespace} with labels {labels:?}"
        );
    }
    let budgets: Vec<BudgetConfig> = match &a.budgets {
        Some(f) => compiled(f)?.budgets,
        None => policy
            .as_ref()
            .map(|c| c.budgets.clone())
            .unwrap_or_default(),
    };
    let baseline = a.baseline_policy.as_deref().map(compiled).transpose()?;
    let mut opts = ReplayOptions::default();
    let mut notes = Vec::new();
    if let Some(r) = &router {
        let new = &r.config().classifier;
        if let Some(base) = baseline.as_ref().and_then(|b| b.routing.as_ref()) {
            opts.rescore = weights_differ(&base.classifier, new);
            opts.known_headers = base
                .routes
                .iter()
                .flat_map(|r| {
                    r.matcher
                        .headers
                        .iter()
                        .map(|h| h.name.to_ascii_lowercase())
                })
                .collect();
        }
        if !opts.rescore && scores_changed(new, records) {
            opts.rescore = true;
            notes.push("recorded features score differently under the new classifier: the weights changed, so requests without features are not replayable".to_string());
        }
        notes.push(format!(
            "re-routing through RoutingPolicy {}: each request routed once from its first attempt; retries, fallbacks and escalations are not re-simulated (a request's what-if is its last attempt's tokens on the replayed model)",
            r.config().source
        ));
    }
    let plan = Plan {
        prices: &prices,
        router: router.as_ref(),
        replay: &opts,
        budgets: &budgets,
        estimate_output: a.output_ratio == OutputRatio::Observed,
        enforce_budgets: a.enforce_budgets,
    };
    let report = whatif::records(&workload, records, &plan)?;
    Ok((report, notes))
}

fn weights_differ(a: &ClassifierConfig, b: &ClassifierConfig) -> bool {
    a.weights != b.weights || a.bias.to_bits() != b.bias.to_bits()
}

fn repricer(a: &Args) -> anyhow::Result<Repricer> {
    let mut map = Vec::new();
    for m in &a.models {
        let Some((from, to)) = m.split_once('=') else {
            bail!("--model {m:?}: expected FROM=TO, e.g. claude-opus-4-1=claude-sonnet-4-5");
        };
        let (from, to) = (from.trim(), to.trim());
        if from.is_empty() || to.is_empty() {
            bail!("--model {m:?}: both models must be named");
        }
        map.push((from.to_string(), to.to_string()));
    }
    let overrides = match &a.prices {
        Some(p) => load_prices(p)?,
        None => Vec::new(),
    };
    Ok(Repricer::new(overrides, map))
}

/// Reads a `--prices` file.
pub fn load_prices(path: &Path) -> anyhow::Result<Vec<PriceOverride>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: PricesFile = serde_norway::from_str(&text)
        .with_context(|| format!("{}: expected `prices:` with model entries", path.display()))?;
    let mut out = Vec::new();
    for e in file.prices {
        let o = match e {
            PriceEntry::Core(o) => o,
            PriceEntry::Policy(p) => PriceOverride {
                model: p.model,
                prices: ModelPrices {
                    input: p.input_per_m_tok.into(),
                    output: Some(p.output_per_m_tok.into()),
                    cache_read: p.cache_read_per_m_tok.map(Into::into),
                    cache_write: p.cache_write_per_m_tok.map(Into::into),
                },
            },
        };
        o.validate()
            .with_context(|| format!("{}: model {:?}", path.display(), o.model))?;
        out.push(o);
    }
    Ok(out)
}

/// A row's what-if cost for people: exact, `~` when approximate, with the
/// unpriced requests, `unpriced` when nothing was priced.
fn whatif_cell(r: &Row) -> String {
    let approx = if r.approximate { "~" } else { "" };
    match (r.unpriced, r.requests) {
        (0, _) => format!("{approx}{}", money(r.cost)),
        (u, n) if u >= n => "unpriced".into(),
        (u, _) => format!("{approx}{} + {u} unpriced", money(r.cost)),
    }
}

fn actual_cell(r: &Row) -> String {
    match r.actual_unpriced {
        0 => money(r.actual),
        u if u >= r.requests => "unpriced".into(),
        u => format!("{} + {u} unpriced", money(r.actual)),
    }
}

fn range_cell(r: &Row) -> String {
    if r.cost_low == r.cost_high {
        return "-".into();
    }
    format!("{}..{}", money(r.cost_low), money(r.cost_high))
}

fn method_cell(r: &Row) -> &'static str {
    r.method.map_or("-", |m| m.as_str())
}

/// The rows and the total as a table (text or CSV).
fn rows_table(report: &Report, csv: bool) -> Table {
    let mut t = if csv {
        Table::new(&[
            "workload",
            "served",
            "whatif",
            "requests",
            "input",
            "output",
            "output_whatif",
            "output_low",
            "output_high",
            "cache_read",
            "cache_write",
            "actual",
            "actual_unpriced",
            "whatif_cost",
            "whatif_low",
            "whatif_high",
            "whatif_unpriced",
            "delta",
            "method",
            "approximate",
        ])
    } else {
        Table::new(&[
            "WORKLOAD",
            "SERVED",
            "WHAT-IF",
            "REQUESTS",
            "INPUT",
            "OUTPUT",
            "OUTPUT WHAT-IF",
            "CACHE R",
            "CACHE W",
            "ACTUAL",
            "WHAT-IF",
            "DELTA",
            "RANGE",
            "METHOD",
        ])
        .right_aligned(&[3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    };
    let total = report.total();
    for r in report.rows.iter().chain(std::iter::once(&total)) {
        let is_total = std::ptr::eq(r, &total);
        let delta = r.cost - r.actual;
        let u = &r.usage;
        if csv {
            t.push(vec![
                r.workload.clone(),
                r.served.clone(),
                r.whatif.clone(),
                r.requests.to_string(),
                u.input_tokens.to_string(),
                u.output_tokens.to_string(),
                r.output.to_string(),
                r.output_low.to_string(),
                r.output_high.to_string(),
                u.cache_read_tokens.to_string(),
                u.cache_write_tokens.to_string(),
                r.actual.to_string(),
                r.actual_unpriced.to_string(),
                r.cost.to_string(),
                r.cost_low.to_string(),
                r.cost_high.to_string(),
                r.unpriced.to_string(),
                delta.to_string(),
                if is_total { "" } else { method_cell(r) }.to_string(),
                r.approximate.to_string(),
            ]);
        } else {
            let out = if r.output_low == r.output_high {
                count(r.output)
            } else {
                format!(
                    "{} [{}..{}]",
                    count(r.output),
                    count(r.output_low),
                    count(r.output_high)
                )
            };
            t.push(vec![
                r.workload.clone(),
                r.served.clone(),
                r.whatif.clone(),
                count(r.requests),
                count(u.input_tokens),
                count(u.output_tokens),
                out,
                count(u.cache_read_tokens),
                count(u.cache_write_tokens),
                actual_cell(r),
                whatif_cell(r),
                money(delta),
                range_cell(r),
                if is_total { "" } else { method_cell(r) }.to_string(),
            ]);
        }
    }
    t
}

fn budgets_table(budgets: &[BudgetPair]) -> Table {
    let mut t = Table::new(&[
        "BUDGET",
        "PERIOD START",
        "LIMIT",
        "ACTUAL",
        "EXHAUSTED",
        "WHAT-IF",
        "EXHAUSTED (WHAT-IF)",
        "REFUSED AFTER (WHAT-IF)",
    ])
    .right_aligned(&[2, 3, 5, 7]);
    for b in budgets {
        let limit = match (b.actual.limit_usd, b.actual.limit_tokens) {
            (Some(u), Some(n)) => format!("{} / {} tokens", money(u), count(n)),
            (Some(u), None) => money(u),
            (None, Some(n)) => format!("{} tokens", count(n)),
            (None, None) => "-".into(),
        };
        let whatif: BTreeMap<_, _> = b
            .whatif
            .periods
            .iter()
            .map(|p| (p.window.start, p))
            .collect();
        for p in &b.actual.periods {
            let w = whatif.get(&p.window.start);
            let when = |t: Option<jiff::Timestamp>| t.map_or("-".into(), |t| t.to_string());
            t.push(vec![
                b.actual.budget.to_string(),
                p.window.start.to_string(),
                limit.clone(),
                money(p.spend),
                when(p.exhausted_at),
                w.map_or("-".into(), |w| money(w.spend)),
                when(w.and_then(|w| w.exhausted_at)),
                w.map_or("-".into(), |w| count(w.after_exhaustion)),
            ]);
        }
    }
    t
}

/// JSON form of a what-if.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    source: Source,
    origin: &'a str,
    rows: Vec<JsonRow<'a>>,
    total: JsonRow<'a>,
    not_replayable: Vec<NotReplayableJson<'a>>,
    response_hits: u64,
    downgraded: u64,
    refused: Vec<NotReplayableJson<'a>>,
    budgets: &'a [BudgetPair],
    notes: &'a [String],
}

/// A row in JSON: a cost is `null` when none of its requests was priced
/// (never `"0.00"` for an unknown price); `*Unpriced` count the requests
/// left out of a cost.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonRow<'a> {
    workload: &'a str,
    served: &'a str,
    whatif: &'a str,
    requests: u64,
    usage: &'a tokenwarden_core::tokens::TokenCounts,
    output: u64,
    output_low: u64,
    output_high: u64,
    method: Option<tokenwarden_core::whatif::ratio::Method>,
    actual: Option<Usd>,
    actual_unpriced: u64,
    unpriced: u64,
    approximate: bool,
    cost: Option<Usd>,
    cost_low: Option<Usd>,
    cost_high: Option<Usd>,
}

impl<'a> From<&'a Row> for JsonRow<'a> {
    fn from(row: &'a Row) -> Self {
        let priced =
            |unpriced: u64, u: Usd| (row.requests == 0 || unpriced < row.requests).then_some(u);
        JsonRow {
            workload: &row.workload,
            served: &row.served,
            whatif: &row.whatif,
            requests: row.requests,
            usage: &row.usage,
            output: row.output,
            output_low: row.output_low,
            output_high: row.output_high,
            method: row.method,
            actual_unpriced: row.actual_unpriced,
            unpriced: row.unpriced,
            approximate: row.approximate,
            actual: priced(row.actual_unpriced, row.actual),
            cost: priced(row.unpriced, row.cost),
            cost_low: priced(row.unpriced, row.cost_low),
            cost_high: priced(row.unpriced, row.cost_high),
        }
    }
}

#[derive(Serialize)]
struct NotReplayableJson<'a> {
    reason: &'a str,
    requests: u64,
    actual: Usd,
}

/// The report as text, JSON or CSV; `origin` names the source.
pub(crate) fn render(
    format: Format,
    origin: &str,
    report: &Report,
    notes: &[String],
) -> anyhow::Result<String> {
    let mut notes = notes.to_vec();
    notes.insert(
        0,
        match report.source {
            Source::Records => format!("what-if over {origin}: per-request records (exact re-pricing, re-routing and budgets)"),
            Source::Aggregates => format!("what-if over {origin}: aggregates per workload and model, so re-pricing only (no re-routing or budgets); a tiered price applied to summed tokens is approximate (~)"),
        },
    );
    let total = report.total();
    match format {
        Format::Json => json(&JsonReport {
            source: report.source,
            origin,
            rows: report.rows.iter().map(JsonRow::from).collect(),
            total: JsonRow::from(&total),
            not_replayable: report
                .not_replayable
                .iter()
                .map(|(k, (n, u))| NotReplayableJson {
                    reason: k,
                    requests: *n,
                    actual: *u,
                })
                .collect(),
            response_hits: report.response_hits,
            downgraded: report.downgraded,
            refused: report
                .refused
                .iter()
                .map(|(k, (n, u))| NotReplayableJson {
                    reason: k,
                    requests: *n,
                    actual: *u,
                })
                .collect(),
            budgets: &report.budgets,
            notes: &notes,
        }),
        Format::Csv => Ok(rows_table(report, true).to_csv()),
        Format::Table => {
            let mut s = String::new();
            for n in &notes {
                s.push_str(n);
                s.push('\n');
            }
            s.push('\n');
            s.push_str(&rows_table(report, false).to_text());
            if report.response_hits > 0 {
                s.push_str(&format!(
                    "\n{} requests answered by the response cache ($0, no provider call) are left out\n",
                    count(report.response_hits)
                ));
            }
            if report.downgraded > 0 {
                s.push_str(&format!(
                    "\n{} requests downgraded by budget thresholds (--enforce-budgets)\n",
                    count(report.downgraded)
                ));
            }
            if !report.refused.is_empty() {
                s.push_str("\nrefused by budgets (left out of the rows):\n");
                for (budget, (n, u)) in &report.refused {
                    s.push_str(&format!(
                        "  {budget}: {} requests, {} recorded\n",
                        count(*n),
                        money(*u)
                    ));
                }
            }
            if !report.not_replayable.is_empty() {
                s.push_str("\nnot replayable (left out of the rows; in the budgets at their recorded cost):\n");
                for (reason, (n, u)) in &report.not_replayable {
                    s.push_str(&format!(
                        "  {reason}: {} requests, {} recorded\n",
                        count(*n),
                        money(*u)
                    ));
                }
            }
            if !report.budgets.is_empty() {
                s.push('\n');
                s.push_str(&budgets_table(&report.budgets).to_text());
            }
            Ok(s)
        }
    }
}

#[cfg(test)]
#[path = "whatif_tests.rs"]
mod tests;
