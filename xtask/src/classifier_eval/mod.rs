//! `cargo xtask classifier-eval`: evaluates the complexity classifier on a
//! labelled request set.
//!
//! ```text
//! cargo xtask classifier-eval [PATH.jsonl] [--threshold N] [--verbose]
//! cargo run --release -p xtask -- classifier-eval    # representative timings
//! ```
//!
//! PATH defaults to `core/data/routing-eval/dev.jsonl`. Prints, per source and
//! overall, how many hard items stay on the strong tier and how many easy
//! ones go cheap; the AUC of the score vs the AUC of prompt length alone
//! (overall and on the same-format pairs); the threshold trade-off; the cost
//! of all-strong vs routed; and the classification time per request.
//!
//! - [`dataset`]: the labelled-request format and the AUC.
//! - `tests`: the regression floors on the development set.

mod dataset;
pub mod reword;
#[cfg(test)]
mod tests;
mod train;
pub mod train_cmd;

use std::{
    collections::BTreeMap,
    hint::black_box,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokenwarden_core::classify::{ClassifierConfig, Role, classify};

use dataset::{LabeledRequest, auc, parse_jsonl, view};

/// The arguments of `cargo xtask classifier-eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled requests, one JSON object a line (default: core/data/routing-eval/dev.jsonl).
    path: Option<PathBuf>,
    /// The hard threshold to evaluate (default: the classifier's default).
    #[arg(long)]
    threshold: Option<u16>,
    /// Print every item's label, score and reason.
    #[arg(long, short)]
    verbose: bool,
}

/// Output tokens assumed per request.
const OUTPUT_TOKENS: u64 = 500;

/// Prices in USD per million tokens = micro-dollars per token.
#[derive(Clone, Copy)]
struct Price {
    input: u64,
    output: u64,
}

/// claude-sonnet-4-5: $3 in / $15 out per MTok.
const STRONG: Price = Price {
    input: 3,
    output: 15,
};
/// claude-opus-4-5, the flagship: $5 in / $25 out per MTok.
const FLAGSHIP: Price = Price {
    input: 5,
    output: 25,
};
/// claude-haiku-4-5: $1 in / $5 out per MTok.
const CHEAP: Price = Price {
    input: 1,
    output: 5,
};

/// Cost of one request in micro-dollars (prompt tokens ≈ bytes / 4).
fn cost_micro_usd(price: Price, prompt_bytes: u64) -> u64 {
    prompt_bytes.div_ceil(4) * price.input + OUTPUT_TOKENS * price.output
}

fn usd(micro: u64) -> String {
    format!("${}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// Percent with one decimal, from integers (no float money).
fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    let tenths = (part * 1000 + whole / 2) / whole;
    format!("{}.{}%", tenths / 10, tenths % 10)
}

struct Item {
    id: String,
    source: String,
    hard: bool,
    score: u16,
    bytes: u64,
    reason: String,
}

#[derive(Default)]
struct Tally {
    hard: u64,
    hard_strong: u64,
    easy: u64,
    easy_cheap: u64,
}

impl Tally {
    fn add(&mut self, item: &Item, threshold: u16) {
        if item.hard {
            self.hard += 1;
            self.hard_strong += u64::from(item.score >= threshold);
        } else {
            self.easy += 1;
            self.easy_cheap += u64::from(item.score < threshold);
        }
    }
}

fn aucs<'a>(items: impl Iterator<Item = &'a Item> + Clone) -> (String, String) {
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    let score: Vec<_> = items
        .clone()
        .map(|i| (f64::from(i.score), i.hard))
        .collect();
    let len: Vec<_> = items.map(|i| (i.bytes as f64, i.hard)).collect();
    (fmt(auc(&score)), fmt(auc(&len)))
}

struct Costs {
    all_strong: u64,
    all_flagship: u64,
    routed: u64,
    oracle: u64,
}

fn costs(items: &[Item], threshold: u16) -> Costs {
    let mut c = Costs {
        all_strong: 0,
        all_flagship: 0,
        routed: 0,
        oracle: 0,
    };
    for i in items {
        let strong = cost_micro_usd(STRONG, i.bytes);
        let cheap = cost_micro_usd(CHEAP, i.bytes);
        c.all_strong += strong;
        c.all_flagship += cost_micro_usd(FLAGSHIP, i.bytes);
        c.routed += if i.score >= threshold { strong } else { cheap };
        c.oracle += if i.hard { strong } else { cheap };
    }
    c
}

/// Runs the evaluation and prints the report.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let path = args.path.clone().unwrap_or_else(|| {
        let xtask_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        xtask_dir
            .parent()
            .unwrap_or(xtask_dir)
            .join("core/data/routing-eval/dev.jsonl")
    });
    let mut cfg = ClassifierConfig::default();
    if let Some(t) = args.threshold {
        cfg.hard_threshold = t;
    }
    cfg.validate()?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let requests: Vec<LabeledRequest> =
        parse_jsonl(&text).with_context(|| format!("{}", path.display()))?;
    let items = score_all(&cfg, &requests);

    println!("# classifier eval: {}", path.display());
    println!(
        "{} requests, hardThreshold {} (score >= threshold stays strong)",
        items.len(),
        cfg.hard_threshold
    );
    let weights: Vec<String> = cfg
        .weights
        .named()
        .iter()
        .map(|(n, w)| format!("{n}={w}"))
        .collect();
    println!("bias={} {}", cfg.bias, weights.join(" "));
    println!();
    if args.verbose {
        print_items(&items);
    }
    print_sources(&items, cfg.hard_threshold);
    print_pairs(&items);
    print_thresholds(&items, cfg.hard_threshold);
    print_timing(&cfg, &requests, &items);
    Ok(())
}

fn score_all(cfg: &ClassifierConfig, requests: &[LabeledRequest]) -> Vec<Item> {
    requests
        .iter()
        .map(|r| {
            let refs = r.message_refs();
            let c = classify(cfg, &view(&refs));
            Item {
                id: r.id.clone(),
                source: r.source.clone(),
                hard: r.hard,
                score: c.score,
                bytes: r.prompt_bytes(),
                reason: c.reason,
            }
        })
        .collect()
}

fn print_items(items: &[Item]) {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| (&a.source, a.hard, a.score).cmp(&(&b.source, b.hard, b.score)));
    for i in sorted {
        let label = if i.hard { "hard" } else { "easy" };
        println!("{label} {:>3} {:<55} {}", i.score, i.id, i.reason);
    }
    println!();
}

/// Per source, then overall.
fn print_sources(items: &[Item], threshold: u16) {
    let mut by_source: BTreeMap<&str, Vec<&Item>> = BTreeMap::new();
    for i in items {
        by_source.entry(i.source.as_str()).or_default().push(i);
    }
    println!(
        "| source | hard kept strong | easy sent cheap | AUC score | AUC length |\n|---|---|---|---|---|"
    );
    let mut total = Tally::default();
    for (source, group) in &by_source {
        let mut t = Tally::default();
        for i in group {
            t.add(i, threshold);
            total.add(i, threshold);
        }
        let (a, l) = aucs(group.iter().copied());
        println!(
            "| {source} | {} | {} | {a} | {l} |",
            frac(t.hard_strong, t.hard),
            frac(t.easy_cheap, t.easy)
        );
    }
    let (a, l) = aucs(items.iter());
    println!(
        "| **all** | {} | {} | {a} | {l} |",
        frac(total.hard_strong, total.hard),
        frac(total.easy_cheap, total.easy)
    );
    println!();
}

/// Same-format pairs, where prompt length says little.
fn print_pairs(items: &[Item]) {
    println!("| same-format pair | AUC score | AUC length |\n|---|---|---|");
    for (name, sources) in [
        (
            "exercism_python (easy) vs aider_polyglot (hard)",
            &["exercism_python", "aider_polyglot"][..],
        ),
        ("swebench_lite easy vs hard", &["swebench_lite"][..]),
        ("arena_bench_v1 easy vs hard", &["arena_bench_v1"][..]),
    ] {
        let (a, l) = aucs(
            items
                .iter()
                .filter(|i| sources.contains(&i.source.as_str())),
        );
        println!("| {name} | {a} | {l} |");
    }
    println!();
}

/// Threshold trade-off and cost.
fn print_thresholds(items: &[Item], threshold: u16) {
    println!(
        "Cost: prompt tokens = bytes/4, {OUTPUT_TOKENS} output tokens; routed = cheap tier below the \
         threshold, standard tier at or above it. cheap = claude-haiku-4-5 ($1/$5 per MTok), \
         standard = claude-sonnet-4-5 ($3/$15), flagship = claude-opus-4-5 ($5/$25)."
    );
    println!(
        "| threshold | hard sent cheap | easy sent cheap | routed | saved vs all-standard | saved vs all-flagship |\n|---|---|---|---|---|---|"
    );
    let mut thresholds = vec![threshold, 20, 30, 40, 50, 60];
    thresholds.sort_unstable();
    thresholds.dedup();
    for t in thresholds {
        let mut tally = Tally::default();
        for i in items {
            tally.add(i, t);
        }
        let c = costs(items, t);
        let marker = if t == threshold { " (default)" } else { "" };
        println!(
            "| {t}{marker} | {} | {} | {} | {} | {} |",
            frac(tally.hard - tally.hard_strong, tally.hard),
            frac(tally.easy_cheap, tally.easy),
            usd(c.routed),
            pct(c.all_strong - c.routed, c.all_strong),
            pct(c.all_flagship - c.routed, c.all_flagship),
        );
    }
    let c = costs(items, threshold);
    println!(
        "\nall-standard {}, all-flagship {}; routing by the true labels: {} (saves {} vs all-standard, {} vs all-flagship)\n",
        usd(c.all_strong),
        usd(c.all_flagship),
        usd(c.oracle),
        pct(c.all_strong - c.oracle, c.all_strong),
        pct(c.all_flagship - c.oracle, c.all_flagship),
    );
}

/// Classification time per request, and on one huge request.
fn print_timing(cfg: &ClassifierConfig, requests: &[LabeledRequest], items: &[Item]) {
    if cfg!(debug_assertions) {
        println!(
            "(a debug build: for representative timings run `cargo run --release -p xtask -- classifier-eval`)"
        );
    }
    let views: Vec<Vec<_>> = requests.iter().map(LabeledRequest::message_refs).collect();
    let mut runs = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        for refs in &views {
            black_box(classify(cfg, &view(black_box(refs))));
        }
        runs += 1;
    }
    let per_request = start.elapsed().as_secs_f64() * 1e6 / (runs as f64 * views.len() as f64);
    let mean_kb = items.iter().map(|i| i.bytes).sum::<u64>() as f64 / items.len() as f64 / 1024.0;
    println!(
        "classification time: {per_request:.2} µs per request (mean over {runs} passes; mean prompt {mean_kb:.1} KB)"
    );
    // One huge request: every prompt of the set pasted into one user message.
    let big: String = requests
        .iter()
        .flat_map(|r| r.messages.iter().map(|(_, t)| t.as_str()))
        .collect::<Vec<_>>()
        .join("\n\n");
    let big_refs = [(Role::User, big.as_str())];
    let start = Instant::now();
    let n = 200;
    for _ in 0..n {
        black_box(classify(cfg, &view(black_box(&big_refs))));
    }
    println!(
        "classification time on a {} KB prompt (scan capped): {:.1} µs",
        big.len() / 1024,
        start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}

fn frac(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{part}/{whole} ({})", pct(part, whole))
}
