//! `kubectl tokenwarden project`: a hand-written token mix (`kind:
//! TokenMix`) through a RoutingPolicy (+ TokenBudgets) before deploying:
//! the projected daily and 30-day cost per model, against sending every
//! request to the model it asks for, and when each budget would run out.
//! The arithmetic is `tokenwarden_core::whatif::mix`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tokenwarden_core::{
    money::Usd,
    whatif::{
        budget::UniformImpact,
        mix::{Projection, TokenMix, project, times},
        reprice::Repricer,
    },
    workload::WorkloadConfig,
};
use tokenwarden_crds::policy_file::PolicySet;

use crate::output::{Format, Table, count, json, money, percent};

/// The subcommand's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The token mix (YAML, `kind: TokenMix`).
    #[arg(long, value_name = "FILE")]
    pub mix: PathBuf,
    /// The RoutingPolicy (and TokenBudgets), YAML file or directory;
    /// without it every request stays on the model it asks for.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// TokenBudgets (default: those in `--policy`).
    #[arg(long, value_name = "FILE")]
    pub budgets: Option<PathBuf>,
    /// Price overrides (the `what-if --prices` format).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
}

/// Runs the subcommand; returns what to print.
pub async fn run(g: &crate::Global, a: &Args) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(&a.mix)
        .with_context(|| format!("cannot read {}", a.mix.display()))?;
    let load = |p: &Option<PathBuf>| -> anyhow::Result<Option<PolicySet>> {
        p.as_deref()
            .map(|p: &Path| PolicySet::from_path(p).map_err(anyhow::Error::from))
            .transpose()
    };
    let policy = load(&a.policy)?;
    let budgets = load(&a.budgets)?;
    let overrides = match &a.prices {
        Some(p) => crate::whatif::load_prices(p)?,
        None => Vec::new(),
    };
    projection_text(
        g.output,
        &a.mix.display().to_string(),
        &text,
        policy.as_ref(),
        budgets.as_ref(),
        &Repricer::new(overrides, Vec::new()),
    )
}

/// Projects the mix `text` (`origin` names it) through `policy` with the
/// budgets of `budgets` (else of `policy`) and renders it.
pub fn projection_text(
    format: Format,
    origin: &str,
    text: &str,
    policy: Option<&PolicySet>,
    budgets: Option<&PolicySet>,
    prices: &Repricer,
) -> anyhow::Result<String> {
    let mix: TokenMix =
        serde_norway::from_str(text).with_context(|| format!("{origin}: not a token mix"))?;
    let configs: Vec<WorkloadConfig> = mix
        .workloads
        .iter()
        .map(|w| {
            let none = PolicySet {
                policies: Vec::new(),
                budgets: Vec::new(),
            };
            let mut cfg = policy.unwrap_or(&none).compile(&w.namespace, "", &w.labels);
            if let Some(b) = budgets {
                cfg.budgets = b.compile(&w.namespace, "", &w.labels).budgets;
            }
            cfg
        })
        .collect();
    let p = project(&mix, &configs, prices)?;
    let name = mix.metadata.get("name").map_or(origin, String::as_str);
    render(format, name, &p)
}

fn models_table(p: &Projection, csv: bool) -> Table {
    let mut t = if csv {
        Table::new(&[
            "model",
            "baseline_requests_per_day",
            "baseline_per_day",
            "baseline_unpriced",
            "requests_per_day",
            "per_day",
            "per_30_days",
            "unpriced",
        ])
    } else {
        Table::new(&[
            "MODEL",
            "BASELINE REQ/DAY",
            "BASELINE/DAY",
            "BASELINE SHARE",
            "REQ/DAY",
            "PROJECTED/DAY",
            "PROJECTED/30D",
            "SHARE",
        ])
        .right_aligned(&[1, 2, 3, 4, 5, 6, 7])
    };
    let cell = |u: Usd, unpriced: u64| match unpriced {
        0 => money(u),
        n => format!("{} + {} unpriced", money(u), count(n)),
    };
    let mut rows: Vec<(String, &tokenwarden_core::whatif::mix::ModelDay)> =
        p.models.iter().map(|(m, d)| (m.clone(), d)).collect();
    let total = tokenwarden_core::whatif::mix::ModelDay {
        requests: p.models.values().map(|d| d.requests).sum(),
        cost: p.per_day,
        unpriced: p.models.values().map(|d| d.unpriced).sum(),
        baseline_requests: p.models.values().map(|d| d.baseline_requests).sum(),
        baseline_cost: p.baseline_per_day,
        baseline_unpriced: p.models.values().map(|d| d.baseline_unpriced).sum(),
        ..Default::default()
    };
    rows.push(("TOTAL".into(), &total));
    for (m, d) in rows {
        if csv {
            t.push(vec![
                m,
                d.baseline_requests.to_string(),
                d.baseline_cost.to_string(),
                d.baseline_unpriced.to_string(),
                d.requests.to_string(),
                d.cost.to_string(),
                times(d.cost, 30).to_string(),
                d.unpriced.to_string(),
            ]);
        } else {
            t.push(vec![
                m,
                count(d.baseline_requests),
                cell(d.baseline_cost, d.baseline_unpriced),
                percent(d.baseline_cost, p.baseline_per_day),
                count(d.requests),
                cell(d.cost, d.unpriced),
                money(times(d.cost, 30)),
                percent(d.cost, p.per_day),
            ]);
        }
    }
    t
}

fn classes_table(p: &Projection) -> Table {
    let mut t = Table::new(&[
        "WORKLOAD",
        "CLASS",
        "REQ/DAY",
        "SCORE",
        "REQUESTED",
        "ROUTE",
        "MODEL",
        "BASELINE/DAY",
        "PROJECTED/DAY",
    ])
    .right_aligned(&[2, 3, 7, 8]);
    let cost = |c: Option<Usd>| c.map_or("unpriced".into(), money);
    for c in &p.classes {
        t.push(vec![
            c.workload.clone(),
            c.class.clone(),
            count(c.requests_per_day),
            c.score.map_or("-".into(), |s| s.to_string()),
            c.requested_model.clone(),
            c.route.clone().unwrap_or_else(|| "-".into()),
            c.model.clone(),
            cost(c.baseline_per_day),
            cost(c.cost_per_day),
        ]);
    }
    t
}

/// `3h 2m 44s`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else {
        format!("{h}h {m}m {s}s")
    }
}

fn budgets_table(budgets: &[UniformImpact]) -> Table {
    let mut t = Table::new(&["BUDGET", "PERIOD", "LIMIT", "PROJECTED/PERIOD", "RUNS OUT"])
        .right_aligned(&[2, 3]);
    for b in budgets {
        let limit = match (b.limit_usd, b.limit_tokens) {
            (Some(u), Some(n)) => format!("{} / {} tokens", money(u), count(n)),
            (Some(u), None) => money(u),
            (None, Some(n)) => format!("{} tokens", count(n)),
            (None, None) => "-".into(),
        };
        t.push(vec![
            b.budget.to_string(),
            format!("{:?}", b.period),
            limit,
            format!(
                "{} / {} tokens",
                money(b.spend_per_period),
                count(b.tokens_per_period)
            ),
            b.exhausted_after_secs
                .map_or("not within the period".into(), |s| {
                    format!("after {} of each period", duration(s))
                }),
        ]);
    }
    t
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonProjection<'a> {
    name: &'a str,
    #[serde(flatten)]
    projection: &'a Projection,
    per_month: Usd,
    baseline_per_month: Usd,
    saved_per_day: Usd,
}

/// A model's cost is `null` when none of its requests was priced (never
/// `"0.00"` for an unknown price).
fn null_unpriced_costs(v: &mut serde_json::Value) {
    let Some(models) = v.get_mut("models").and_then(|m| m.as_object_mut()) else {
        return;
    };
    for day in models.values_mut() {
        for (cost, requests, unpriced) in [
            ("cost", "requests", "unpriced"),
            ("baselineCost", "baselineRequests", "baselineUnpriced"),
        ] {
            let n = |k: &str| day.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            if n(unpriced) > 0 && n(unpriced) == n(requests) {
                day[cost] = serde_json::Value::Null;
            }
        }
    }
}

fn render(format: Format, name: &str, p: &Projection) -> anyhow::Result<String> {
    let saved = p.baseline_per_day - p.per_day;
    match format {
        Format::Json => {
            let mut v = serde_json::to_value(JsonProjection {
                name,
                projection: p,
                per_month: p.per_month(),
                baseline_per_month: p.baseline_per_month(),
                saved_per_day: saved,
            })?;
            null_unpriced_costs(&mut v);
            json(&v)
        }
        Format::Csv => Ok(models_table(p, true).to_csv()),
        Format::Table => {
            let requests: u64 = p.classes.iter().map(|c| c.requests_per_day).sum();
            let mut s = format!(
                "token mix {name}: {} requests/day; baseline: every request on the model it asks for; 30 days = a month\n\n",
                count(requests)
            );
            s.push_str(&models_table(p, false).to_text());
            s.push_str(&format!(
                "\nprojected {}/day ({} per 30 days) against {}/day ({} per 30 days): {} less per day ({})\n\n",
                money(p.per_day),
                money(p.per_month()),
                money(p.baseline_per_day),
                money(p.baseline_per_month()),
                money(saved),
                percent(saved, p.baseline_per_day),
            ));
            s.push_str(&classes_table(p).to_text());
            if !p.budgets.is_empty() {
                s.push_str("\nbudgets (the day's spend at a constant rate):\n");
                s.push_str(&budgets_table(&p.budgets).to_text());
            }
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIX: &str = include_str!("../../deploy/examples/mix/agent-day.yaml");
    const POLICY: &str = include_str!("../../deploy/examples/mix/agent-day-policy.yaml");
    const DOCS: &str = include_str!("../../docs/cost-foresight.md");

    fn agent_day(format: Format, policy: bool) -> String {
        let set = PolicySet::from_yaml("agent-day-policy.yaml", POLICY).unwrap();
        projection_text(
            format,
            "agent-day.yaml",
            MIX,
            policy.then_some(&set),
            None,
            &Repricer::new(vec![], vec![]),
        )
        .unwrap()
    }

    fn row<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
        text.lines()
            .find(|l| l.starts_with(first))
            .unwrap_or_else(|| panic!("no {first} in\n{text}"))
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn the_agent_day_costs_788_with_the_flagship_at_78_percent() {
        let text = agent_day(Format::Table, true);
        // Baseline: 2,561 × $0.24 + 411 × $0.42 + 500 × $0.0008 + 100 × $0.0034.
        assert_eq!(
            row(&text, "claude-opus-4-6")[..4],
            ["claude-opus-4-6", "2,561", "$614.64", "78.0%"]
        );
        assert_eq!(
            row(&text, "TOTAL")[..4],
            ["TOTAL", "3,572", "$788.00", "100.0%"]
        );
        // Projected: 1,024 hard calls stay at $0.24; 1,537 easy ones go to
        // haiku at $0.001 + $0.012 + $0.0185 + $0.0165 = $0.048 each.
        assert_eq!(
            row(&text, "TOTAL")[4..],
            ["3,572", "$492.896", "$14786.88", "100.0%"]
        );
        assert_eq!(
            row(&text, "coding-agent  flagship-easy")[5..],
            ["flagship-easy", "claude-haiku-4-5", "$368.88", "$73.776"]
        );
        // $400/day at $492.896/day: 400/492.896 × 86,400 s = 70,116.9 s.
        assert_eq!(
            row(&text, "agents/agents-daily")[4],
            "after 19h 28m 36s of each period"
        );
        // Without a policy the projection is the baseline.
        let flat = agent_day(Format::Table, false);
        assert_eq!(
            row(&flat, "TOTAL")[1..6],
            ["3,572", "$788.00", "100.0%", "3,572", "$788.00"]
        );
    }

    #[test]
    fn the_docs_show_the_exact_output_of_the_example() {
        let text = agent_day(Format::Table, true);
        let fenced = format!(
            "```text\n$ kubectl tokenwarden project --mix deploy/examples/mix/agent-day.yaml --policy deploy/examples/mix/agent-day-policy.yaml\n{text}```"
        );
        assert!(
            DOCS.contains(&fenced),
            "docs/cost-foresight.md must show the current output:\n{fenced}"
        );
    }

    #[test]
    fn json_and_csv_keep_money_exact() {
        let json: serde_json::Value = serde_json::from_str(&agent_day(Format::Json, true)).unwrap();
        assert_eq!(json["baselinePerDay"], "788.00");
        assert_eq!(json["perDay"], "492.896");
        assert_eq!(json["perMonth"], "14786.88");
        assert_eq!(json["savedPerDay"], "295.104");
        assert_eq!(json["budgets"][0]["exhaustedAfterSecs"], 70_116);
        assert_eq!(json["models"]["claude-opus-4-6"]["cost"], "245.76");
        // A model nobody prices: null, never "0.00".
        let set = PolicySet::from_yaml("p", POLICY).unwrap();
        let unknown = MIX.replace(
            "requestedModel: claude-haiku-4-5",
            "requestedModel: no-such-model-q",
        );
        let text = projection_text(
            Format::Json,
            "m",
            &unknown,
            Some(&set),
            None,
            &Repricer::new(vec![], vec![]),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let q = &v["models"]["no-such-model-q"];
        assert_eq!(
            (&q["cost"], &q["baselineCost"], &q["unpriced"]),
            (
                &serde_json::Value::Null,
                &serde_json::Value::Null,
                &600.into()
            )
        );
        let csv = agent_day(Format::Csv, true);
        assert_eq!(
            csv.lines().next().unwrap(),
            "model,baseline_requests_per_day,baseline_per_day,baseline_unpriced,requests_per_day,per_day,per_30_days,unpriced"
        );
        assert!(
            csv.contains("\r\nclaude-opus-4-6,2561,614.64,0,1024,245.76,7372.80,0\r\n"),
            "{csv}"
        );
    }

    #[test]
    fn a_class_without_a_score_under_complexity_routes_is_an_error() {
        let set = PolicySet::from_yaml("p", POLICY).unwrap();
        let mix = MIX.replace("        score: 64\n", "");
        let err = projection_text(
            Format::Table,
            "m",
            &mix,
            Some(&set),
            None,
            &Repricer::new(vec![], vec![]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("class flagship-hard: the RoutingPolicy routes on complexity"),
            "{err}"
        );
        let wrong = MIX.replace("kind: TokenMix", "kind: Mix");
        assert!(
            projection_text(
                Format::Table,
                "m",
                &wrong,
                None,
                None,
                &Repricer::new(vec![], vec![])
            )
            .unwrap_err()
            .to_string()
            .contains("not a token mix")
        );
    }

    #[test]
    fn classes_with_features_are_scored_with_the_policys_weights() {
        let weighted = POLICY.replace(
            "    hardThreshold: 30\n",
            "    hardThreshold: 30\n    weights: { stackTraceLines: \"4.0\" }\n",
        );
        let set = PolicySet::from_yaml("p", &weighted).unwrap();
        let features = "        features: { promptBytes: 4000, scannedBytes: 4000, stackTraceLines: 9, conversationTurns: 2 }\n";
        let mix = MIX.replace("        score: 6\n", features);
        let cfg = set
            .compile(
                "agents",
                "",
                &[("app".to_string(), "coding-agent".to_string())].into(),
            )
            .routing
            .unwrap()
            .classifier;
        let f = tokenwarden_core::classify::Features {
            prompt_bytes: 4_000,
            scanned_bytes: 4_000,
            stack_trace_lines: 9,
            conversation_turns: 2,
            ..Default::default()
        };
        let score = tokenwarden_core::classify::classify_features(&cfg, &f).score;
        assert!(score >= 30, "{score}");
        let text = projection_text(
            Format::Table,
            "m",
            &mix,
            Some(&set),
            None,
            &Repricer::new(vec![], vec![]),
        )
        .unwrap();
        let easy = row(&text, "coding-agent  flagship-easy");
        assert_eq!(easy[3], score.to_string());
        assert_eq!(easy[5..7], ["flagship-hard", "claude-opus-4-6"]);
    }

    #[test]
    fn the_mix_shape_in_the_docs_parses() {
        let start = DOCS
            .find("```yaml\napiVersion: tokenwarden.dev/v1alpha1\nkind: TokenMix")
            .unwrap();
        let body = &DOCS[start + "```yaml\n".len()..];
        let body = &body[..body.find("```").unwrap()];
        let mix: TokenMix = serde_norway::from_str(body).unwrap();
        let class = &mix.workloads[0].classes[0];
        assert_eq!(
            (class.requests_per_day, class.tokens.cache_read),
            (1024, 185_000)
        );
        assert_eq!(class.headers.get("x-team").map(String::as_str), Some("a"));
    }
}
