//! Tests of `what-if`: replay through changed policies, re-pricing of
//! records and aggregates, budgets, and the exact table/JSON/CSV output.

use std::io::Write as _;

use pretty_assertions::assert_eq;
use tokenwarden_core::{
    book::Spend,
    classify::{Features, classify_features},
    cluster_ledger::{ClusterLedgerState, LedgerKey},
    tokens::TokenCounts,
    usage::{ReplayFacts, UsageRecord},
    whatif::reprice::Repricer,
    workload::Endpoint,
};
use tokenwarden_crds::policy_file::PolicySet;

use super::*;
use crate::{Global, output::Format};

const PROVIDERS: &str = r#"
  workloadSelector: { matchLabels: { app: agent } }
  providers:
    - name: anthropic
      api: anthropic
      baseUrl: https://api.anthropic.com
      apiKeySecretRef: { name: llm-keys, key: anthropic }
  tiers:
    - { name: cheap, provider: anthropic, model: claude-haiku-4-5 }
    - { name: standard, provider: anthropic, model: claude-sonnet-4-5 }
"#;

/// A RoutingPolicy for app=agent with `routes` and `classifier` (YAML
/// under `spec`, indented two spaces).
fn policy(routes: &str, classifier: &str) -> String {
    format!(
        "apiVersion: tokenwarden.dev/v1alpha1\nkind: RoutingPolicy\nmetadata: {{ name: agent, namespace: agents }}\nspec:{PROVIDERS}  routes:\n{routes}  classifier:\n{classifier}"
    )
}

const HARD_ROUTES: &str = "    - name: hard\n      match: { apis: [Messages], complexityClass: Hard }\n      target: { tier: standard }\n    - name: default\n      target: { tier: cheap }\n";

const BUDGET: &str = "---\napiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: { name: daily, namespace: agents }\nspec:\n  workloadSelector: { matchLabels: { app: agent } }\n  period: Daily\n  timeZone: UTC\n  limit: { usd: \"0.04\" }\n";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        p
    }
}

fn global(output: Format) -> Global {
    Global {
        kubeconfig: None,
        context: None,
        namespace: Some("agents".into()),
        all_namespaces: false,
        output,
    }
}

fn args() -> Args {
    Args {
        labels: "app=agent".into(),
        ..Args::default()
    }
}

fn usage(input: u64, output: u64) -> TokenCounts {
    TokenCounts {
        input_tokens: input,
        output_tokens: output,
        ..TokenCounts::default()
    }
}

/// A settled record served by `served`, priced from the catalog.
fn rec(seq: u64, hour: u8, served: &str, score: Option<u16>, u: TokenCounts) -> UsageRecord {
    UsageRecord {
        seq,
        ts: format!("2026-12-02T{hour:02}:00:00Z").parse().unwrap(),
        endpoint: Endpoint::Messages,
        requested_model: "claude-opus-4-6".into(),
        served_model: served.into(),
        provider: "anthropic".into(),
        route: None,
        score,
        reason: None,
        attempt: 1,
        status: 200,
        usage: u,
        cost: Repricer::new(vec![], vec![]).cost(Some("anthropic"), served, &u),
        estimated: false,
        budgets: vec![],
        cache: Default::default(),
        intent: None,
        replay: None,
    }
}

/// Recorded under hardThreshold 30: score 20 went cheap.
fn threshold_records() -> Vec<UsageRecord> {
    vec![
        // $0.01 + $0.005 on haiku; $0.03 + $0.015 on sonnet.
        rec(1, 9, "claude-haiku-4-5", Some(20), usage(10_000, 1_000)),
        // $0.06 + $0.03 on sonnet.
        rec(2, 10, "claude-sonnet-4-5", Some(50), usage(20_000, 2_000)),
        // $0.001 + $0.0005 on haiku.
        rec(3, 11, "claude-haiku-4-5", Some(5), usage(1_000, 100)),
    ]
}

fn cells(text: &str, first: &str, second: &str) -> Vec<String> {
    text.lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .find(|c| c.first().is_some_and(|c| c == first) && c.get(2).is_some_and(|c| c == second))
        .unwrap_or_else(|| panic!("no row {first} … {second} in\n{text}"))
}

#[test]
fn a_lower_hard_threshold_flips_easy_requests_from_the_recorded_score_alone() {
    let f = Files::new();
    let new = f.write(
        "new.yaml",
        &format!("{}{BUDGET}", policy(HARD_ROUTES, "    hardThreshold: 10\n")),
    );
    let a = Args {
        policy: Some(new),
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    let moved = cells(&out, "agent", "claude-sonnet-4-5");
    // haiku → sonnet: the score-20 request is Hard at threshold 10.
    assert_eq!(moved[1], "claude-haiku-4-5", "{out}");
    assert_eq!(
        &moved[3..],
        [
            "1",
            "10,000",
            "1,000",
            "1,000",
            "0",
            "0",
            "$0.015",
            "$0.045",
            "$0.03",
            "-",
            "observed ratio"
        ]
    );
    let stays = cells(&out, "agent", "claude-haiku-4-5");
    assert_eq!(&stays[9..12], ["$0.0015", "$0.0015", "$0.00"]);
    let total = out.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(
        total.contains("$0.1065") && total.contains("$0.1365") && total.contains("$0.03"),
        "{total}"
    );
    // The budget ($0.04/day): recorded, $0.105 by 10:00; what-if $0.045 at 09:00.
    let b = out.lines().find(|l| l.starts_with("agents/daily")).unwrap();
    let b: Vec<&str> = b
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        b,
        [
            "agents/daily",
            "2026-12-02T00:00:00Z",
            "$0.04",
            "$0.1065",
            "2026-12-02T10:00:00Z",
            "$0.1365",
            "2026-12-02T09:00:00Z",
            // The 10:00 and 11:00 requests come after: the cap refuses them.
            "2"
        ]
    );
}

#[test]
fn changed_weights_need_features_and_say_which_requests_could_not_be_replayed() {
    let f = Files::new();
    let base_yaml = policy(HARD_ROUTES, "    hardThreshold: 30\n");
    let new_yaml = policy(
        HARD_ROUTES,
        "    hardThreshold: 30\n    weights: { stackTraceLines: \"-3.0\" }\n",
    );
    let base = f.write("base.yaml", &base_yaml);
    let new = f.write("new.yaml", &new_yaml);
    let cfg = |y: &str| {
        PolicySet::from_yaml("p", y)
            .unwrap()
            .compile(
                "agents",
                "",
                &[("app".to_string(), "agent".to_string())].into(),
            )
            .routing
            .unwrap()
            .classifier
    };
    let traced = Features {
        prompt_bytes: 2_000,
        scanned_bytes: 2_000,
        stack_trace_lines: 12,
        conversation_turns: 1,
        ..Features::default()
    };
    let old_score = classify_features(&cfg(&base_yaml), &traced).score;
    let new_score = classify_features(&cfg(&new_yaml), &traced).score;
    assert!(old_score >= 30 && new_score < 30, "{old_score} {new_score}");
    let mut with = rec(
        1,
        9,
        "claude-sonnet-4-5",
        Some(old_score),
        usage(10_000, 1_000),
    );
    with.replay = Some(Box::new(ReplayFacts {
        request: 1,
        features: Some(traced),
        ..ReplayFacts::default()
    }));
    let without = rec(2, 10, "claude-haiku-4-5", Some(3), usage(1_000, 100));
    let records = [with, without];
    for baseline in [Some(base), None] {
        // With the baseline policy, or detected from the featured record.
        let a = Args {
            policy: Some(new.clone()),
            baseline_policy: baseline,
            ..args()
        };
        let out = report_records(&global(Format::Table), &a, "state", &records).unwrap();
        let moved = cells(&out, "agent", "claude-haiku-4-5");
        assert_eq!(moved[1], "claude-sonnet-4-5", "{out}");
        assert!(
            out.contains("  weights changed, no features recorded: 1 requests, $0.0015 recorded\n"),
            "{out}"
        );
    }
}

#[test]
fn prompt_token_routes_match_the_recorded_prompt_estimate_not_billed_input() {
    let f = Files::new();
    let routes = "    - name: long-context\n      match: { apis: [Messages], promptTokens: { min: 60000 } }\n      target: { tier: standard }\n    - name: default\n      target: { tier: cheap }\n";
    let new = f.write("new.yaml", &policy(routes, "    hardThreshold: 30\n"));
    let facts = |request, prompt_estimate| ReplayFacts {
        request,
        prompt_estimate,
        ..ReplayFacts::default()
    };
    // A big body (70k estimated prompt tokens) billed as 1,000 uncached input.
    let mut big = rec(1, 9, "claude-haiku-4-5", None, usage(1_000, 100));
    big.replay = Some(Box::new(facts(1, 70_000)));
    // A small body whose billed input is large (cache writes, say).
    let mut small = rec(2, 10, "claude-haiku-4-5", None, usage(80_000, 100));
    small.replay = Some(Box::new(facts(2, 100)));
    let old = rec(3, 11, "claude-haiku-4-5", None, usage(10, 10));
    let a = Args {
        policy: Some(new),
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &[big, small, old]).unwrap();
    assert_eq!(cells(&out, "agent", "claude-sonnet-4-5")[3], "1", "{out}");
    assert_eq!(
        cells(&out, "agent", "claude-haiku-4-5")[3..5],
        ["1", "80,000"]
    );
    assert!(
        out.contains("  no prompt estimate recorded: 1 requests, $0.00006 recorded\n"),
        "{out}"
    );
}

#[test]
fn attempts_of_one_request_are_replayed_once_from_the_first() {
    let f = Files::new();
    let new = f.write("new.yaml", &policy(HARD_ROUTES, "    hardThreshold: 10\n"));
    // A failed first try and its retry: one app request.
    let mut first = rec(1, 9, "claude-haiku-4-5", Some(20), usage(0, 0));
    first.status = 529;
    first.replay = Some(Box::new(ReplayFacts {
        request: 7,
        ..ReplayFacts::default()
    }));
    let mut retry = rec(2, 9, "claude-haiku-4-5", Some(20), usage(10_000, 1_000));
    retry.attempt = 2;
    retry.replay = Some(Box::new(ReplayFacts {
        request: 7,
        ..ReplayFacts::default()
    }));
    let a = Args {
        policy: Some(new),
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &[first, retry]).unwrap();
    let row = cells(&out, "agent", "claude-sonnet-4-5");
    assert_eq!(&row[3..5], ["1", "10,000"]);
    assert_eq!(&row[9..11], ["$0.015", "$0.045"]);
}

/// The cluster ledger rows the records add up to (one per served model).
fn ledger_of(records: &[UsageRecord]) -> String {
    let mut rows: Vec<(LedgerKey, Spend)> = Vec::new();
    for r in records {
        let key = LedgerKey {
            namespace: "agents".into(),
            workload: "agent".into(),
            model: r.served_model.clone(),
        };
        let i = match rows.iter().position(|(k, _)| k == &key) {
            Some(i) => i,
            None => {
                rows.push((key, Spend::default()));
                rows.len() - 1
            }
        };
        let s = &mut rows[i].1;
        s.requests += 1;
        s.cost += r.cost.unwrap();
        tokenwarden_core::usage::add_usage(&mut s.usage, &r.usage);
    }
    serde_json::to_string(&ClusterLedgerState {
        rows,
        ..ClusterLedgerState::default()
    })
    .unwrap()
}

#[test]
fn repricing_aggregates_equals_the_sum_of_the_records_for_flat_prices() {
    let records = threshold_records();
    let a = Args {
        models: vec!["claude-haiku-4-5=claude-opus-4-1".into()],
        output_ratio: OutputRatio::Unchanged,
        ..args()
    };
    let total = |out: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.starts_with("TOTAL"))
            .unwrap()
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let by_records = report_records(&global(Format::Table), &a, "state", &records).unwrap();
    let by_rows = report_ledger_json(
        &global(Format::Table),
        &a,
        "ledger.json",
        &ledger_of(&records),
    )
    .unwrap();
    // haiku → opus 4.1 ($15/$75): 11,000 in + 1,100 out = $0.165 + $0.0825;
    // sonnet stays at $0.09.
    assert_eq!(
        total(&by_records)[..],
        [
            "TOTAL", "3", "31,000", "3,100", "3,100", "0", "0", "$0.1065", "$0.3375", "$0.231", "-"
        ]
    );
    // The same amounts; summed sonnet tokens are flagged (its price is tiered).
    let mut rows_total = total(&by_rows);
    assert_eq!(rows_total[8], "~$0.3375");
    rows_total[8] = rows_total[8].replace('~', "");
    assert_eq!(rows_total, total(&by_records));
    assert!(
        by_rows.contains("aggregates per workload and model, so re-pricing only"),
        "{by_rows}"
    );
    // A tiered target on aggregates is flagged approximate.
    let tiered = Args {
        models: vec!["claude-haiku-4-5=claude-sonnet-4-5".into()],
        ..a
    };
    let out = report_ledger_json(
        &global(Format::Table),
        &tiered,
        "ledger.json",
        &ledger_of(&records),
    )
    .unwrap();
    assert!(out.contains(" ~$0.0495 "), "{out}");
    // Re-routing needs records.
    let routed = Args {
        policy: Some("p.yaml".into()),
        ..args()
    };
    let err = report_ledger_json(
        &global(Format::Table),
        &routed,
        "ledger.json",
        &ledger_of(&records),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("need per-request records"),
        "{err}"
    );
}

#[test]
fn an_unknown_target_model_is_unpriced_never_zero() {
    let a = Args {
        models: vec!["claude-haiku-4-5=no-such-model-z".into()],
        ..args()
    };
    let json: serde_json::Value = serde_json::from_str(
        &report_records(&global(Format::Json), &a, "state", &threshold_records()).unwrap(),
    )
    .unwrap();
    let z = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["whatif"] == "no-such-model-z")
        .unwrap();
    assert_eq!(
        (&z["cost"], &z["unpriced"], &z["actual"]),
        (&serde_json::Value::Null, &2.into(), &"0.0165".into())
    );
    assert_eq!(
        (&json["total"]["cost"], &json["total"]["unpriced"]),
        (&"0.09".into(), &2.into())
    );
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    let row = cells(&out, "agent", "no-such-model-z");
    assert_eq!(&row[9..11], ["$0.0165", "unpriced"], "{out}");
    assert_eq!(row[13], "unchanged");
    let total = out.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(total.contains("$0.09 + 2 unpriced"), "{total}");
}

#[test]
fn prices_files_take_routing_policy_entries_and_tiered_prices() {
    let f = Files::new();
    let p = f.write(
        "prices.yaml",
        "prices:\n  - { model: claude-haiku-4-5, inputPerMTok: \"0.5\", outputPerMTok: \"2.5\" }\n  - model: my-model\n    prices: { input: { base: \"1\", tiers: [{ start: 5000, price: \"2\" }] } }\n",
    );
    let a = Args {
        prices: Some(p),
        models: vec!["claude-sonnet-4-5=my-model".into()],
        output_ratio: OutputRatio::Unchanged,
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    // haiku at $0.50/$2.50: 10k+1k in, 1.1k out = $0.0055 + $0.00275.
    assert_eq!(
        cells(&out, "agent", "claude-haiku-4-5")[10],
        "$0.00825",
        "{out}"
    );
    // my-model: 20k input > 5k → $2 for all 22k tokens (output at input rate).
    assert_eq!(cells(&out, "agent", "my-model")[10], "$0.044", "{out}");
}

#[test]
fn table_json_and_csv_are_exact_golden_outputs() {
    let f = Files::new();
    let new = f.write(
        "new.yaml",
        &format!("{}{BUDGET}", policy(HARD_ROUTES, "    hardThreshold: 10\n")),
    );
    let a = Args {
        policy: Some(new),
        workload: Some("agents, team \"a\"".into()),
        ..args()
    };
    let records = threshold_records();
    let csv = report_records(&global(Format::Csv), &a, "state", &records).unwrap();
    assert_eq!(
        csv,
        "workload,served,whatif,requests,input,output,output_whatif,output_low,output_high,cache_read,cache_write,actual,actual_unpriced,whatif_cost,whatif_low,whatif_high,whatif_unpriced,delta,method,approximate\r\n\
         \"agents, team \"\"a\"\"\",claude-haiku-4-5,claude-haiku-4-5,1,1000,100,100,100,100,0,0,0.0015,0,0.0015,0.0015,0.0015,0,0.00,recorded,false\r\n\
         \"agents, team \"\"a\"\"\",claude-haiku-4-5,claude-sonnet-4-5,1,10000,1000,1000,1000,1000,0,0,0.015,0,0.045,0.045,0.045,0,0.03,observed ratio,false\r\n\
         \"agents, team \"\"a\"\"\",claude-sonnet-4-5,claude-sonnet-4-5,1,20000,2000,2000,2000,2000,0,0,0.09,0,0.09,0.09,0.09,0,0.00,recorded,false\r\n\
         TOTAL,,,3,31000,3100,3100,3100,3100,0,0,0.1065,0,0.1365,0.1365,0.1365,0,0.03,,false\r\n"
    );
    let json: serde_json::Value = serde_json::from_str(
        &report_records(&global(Format::Json), &a, "state", &records).unwrap(),
    )
    .unwrap();
    assert_eq!(json["source"], "records");
    assert_eq!(json["total"]["actual"], "0.1065");
    assert_eq!(json["total"]["cost"], "0.1365");
    assert_eq!(json["rows"][1]["whatif"], "claude-sonnet-4-5");
    assert_eq!(json["rows"][1]["method"], "observedRatio");
    assert_eq!(json["rows"][1]["cost"], "0.045");
    assert_eq!(
        json["budgets"][0]["whatif"]["periods"][0]["exhaustedAt"],
        "2026-12-02T09:00:00Z"
    );
    assert_eq!(
        json["budgets"][0]["whatif"]["periods"][0]["spend"],
        "0.1365"
    );
    let table = report_records(&global(Format::Table), &a, "state", &records).unwrap();
    let expected = include_str!("../tests/golden/whatif-table.txt");
    assert_eq!(table, expected);
}

#[test]
fn the_docs_show_the_exact_what_if_example() {
    let f = Files::new();
    let new = f.write(
        "new.yaml",
        &format!("{}{BUDGET}", policy(HARD_ROUTES, "    hardThreshold: 10\n")),
    );
    let a = Args {
        policy: Some(new),
        ..args()
    };
    let text = report_records(
        &global(Format::Table),
        &a,
        "/var/lib/tokenwarden",
        &threshold_records(),
    )
    .unwrap();
    let fenced = format!(
        "```text\n$ kubectl-tokenwarden what-if --state-dir /var/lib/tokenwarden -n agents --labels app=agent --policy new.yaml\n{text}```"
    );
    let docs = include_str!("../../docs/cost-foresight.md");
    assert!(
        docs.contains(&fenced),
        "docs/cost-foresight.md must show:\n{fenced}"
    );
}

#[test]
fn header_routes_replay_recorded_values_and_known_absences_only() {
    let f = Files::new();
    let routes = "    - name: batch\n      match: { headers: [{ name: X-Job, value: \"batch*\" }] }\n      target: { tier: cheap }\n    - name: default\n      target: { tier: standard }\n";
    let new = f.write("new.yaml", &policy(routes, "    hardThreshold: 30\n"));
    let base = f.write("base.yaml", &policy(routes, "    hardThreshold: 30\n"));
    let with_header = |seq, value: Option<&str>| {
        let mut r = rec(seq, 9, "claude-sonnet-4-5", None, usage(1_000, 100));
        r.replay = Some(Box::new(ReplayFacts {
            request: seq,
            headers: value
                .map(|v| vec![("x-job".to_string(), v.to_string())])
                .unwrap_or_default(),
            ..ReplayFacts::default()
        }));
        r
    };
    let records = [with_header(1, Some("batch-nightly")), with_header(2, None)];
    let a = Args {
        policy: Some(new.clone()),
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &records).unwrap();
    assert_eq!(cells(&out, "agent", "claude-haiku-4-5")[3], "1", "{out}");
    // Without the recording policy, a missing header may just not have been recorded.
    assert!(
        out.contains("  header x-job not recorded: 1 requests, $0.0045 recorded\n"),
        "{out}"
    );
    // The recording policy matched on it, so its absence means it was not sent.
    let known = Args {
        policy: Some(new),
        baseline_policy: Some(base),
        ..args()
    };
    let out = report_records(&global(Format::Table), &known, "state", &records).unwrap();
    assert_eq!(cells(&out, "agent", "claude-sonnet-4-5")[3], "1", "{out}");
    assert!(!out.contains("not replayable"), "{out}");
}

#[test]
fn since_and_until_select_the_records() {
    let a = Args {
        since: Some("2026-12-02T10:00:00Z".parse().unwrap()),
        until: Some("2026-12-02T11:00:00Z".parse().unwrap()),
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    let total = out.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(
        total.contains("$0.09") && !total.contains("$0.1065"),
        "{out}"
    );
    let err = report_ledger_json(
        &global(Format::Table),
        &a,
        "l",
        &ledger_of(&threshold_records()),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("--since/--until need per-request records"),
        "{err}"
    );
}

#[test]
fn response_cache_hits_are_left_out_and_counted() {
    let mut records = threshold_records();
    let mut hit = rec(4, 12, "claude-haiku-4-5", Some(20), TokenCounts::default());
    hit.attempt = 0;
    hit.cache.response_hit = true;
    records.push(hit);
    let a = Args {
        models: vec!["claude-haiku-4-5=no-such-model-z".into()],
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &records).unwrap();
    let total = out.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(
        total.contains(" 3 ") && total.contains("$0.09 + 2 unpriced"),
        "{out}"
    );
    assert!(
        out.contains(
            "\n1 requests answered by the response cache ($0, no provider call) are left out\n"
        ),
        "{out}"
    );
}

#[test]
fn enforced_budgets_downgrade_past_a_threshold_and_refuse_past_the_limit() {
    let f = Files::new();
    let budget = |limit: &str, thresholds: &str| {
        format!(
            "---\napiVersion: tokenwarden.dev/v1alpha1\nkind: TokenBudget\nmetadata: {{ name: daily, namespace: agents }}\nspec:\n  workloadSelector: {{ matchLabels: {{ app: agent }} }}\n  period: Daily\n  timeZone: UTC\n  limit: {{ usd: \"{limit}\" }}\n{thresholds}"
        )
    };
    let routed = policy(HARD_ROUTES, "    hardThreshold: 10\n");
    // $0.10 with a downgrade to the cheap tier at 40%: 09:00 sonnet $0.045
    // (45%), 10:00 downgraded to haiku $0.02 + $0.01, 11:00 haiku $0.0015.
    let down = f.write(
        "down.yaml",
        &format!("{routed}{}", budget("0.10", "  thresholds:\n    - { percent: 40, action: Downgrade, downgradeTo: { tier: cheap } }\n")),
    );
    let a = Args {
        policy: Some(down),
        enforce_budgets: true,
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    let total = out.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert!(total.contains("$0.1065  $0.0765"), "{out}");
    assert_eq!(
        cells(&out, "agent", "claude-haiku-4-5")[1..4],
        ["claude-haiku-4-5", "claude-haiku-4-5", "1"]
    );
    assert!(
        out.contains("\n1 requests downgraded by budget thresholds (--enforce-budgets)\n"),
        "{out}"
    );
    // $0.05 and no thresholds: 09:00 $0.045, 10:00 $0.09 (at 90%), then the cap refuses.
    let cap = f.write("cap.yaml", &format!("{routed}{}", budget("0.05", "")));
    let a = Args {
        policy: Some(cap),
        enforce_budgets: true,
        ..args()
    };
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    assert!(out.contains("refused by budgets (left out of the rows):\n  agents/daily: 1 requests, $0.0015 recorded\n"), "{out}");
    let total: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(total[1..3], ["2", "30,000"], "{out}");
    assert_eq!(total[7..9], ["$0.105", "$0.135"], "{out}");
    // Without --enforce-budgets the same file only reports.
    let a = Args {
        enforce_budgets: false,
        ..a
    };
    let out = report_records(&global(Format::Table), &a, "state", &threshold_records()).unwrap();
    assert!(!out.contains("refused by budgets"), "{out}");
}
