//! `cargo xtask classifier-train`: fits the classifier's weights on the
//! training set (`core/data/routing-train/train.jsonl`), chooses the default
//! `hardThreshold` on the development set and its reworded copy, and prints
//! the calibration tables. `--check` fails unless the shipped defaults are
//! exactly what this produces, so the defaults cannot drift from the data.

use std::{path::Path, process::ExitCode};

use anyhow::Context as _;
use tokenwarden_core::classify::{
    ClassifierConfig, DEFAULT_BIAS, DEFAULT_HARD_THRESHOLD, FEATURE_COUNT, FeatureWeights, classify,
};

use super::{
    dataset::{LabeledRequest, auc, parse_jsonl, view},
    reword::{DEV_PATH, REWORDED_PATH},
    train::{self, Fit, Row, Selection},
};

/// The training set, relative to the repository root.
pub const TRAIN_PATH: &str = "core/data/routing-train/train.jsonl";

/// The most hard requests of each evaluation set the default threshold may
/// send cheap, in percent.
pub const MAX_HARD_CHEAP_PERCENT: usize = 5;

/// The arguments of `cargo xtask classifier-train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fail unless the shipped defaults are what training gives.
    #[arg(long)]
    check: bool,
}

/// The weights set by hand before there was a training set (issue 12), one
/// of the two priors the cross-validation chooses between.
pub fn hand_prior() -> FeatureWeights {
    FeatureWeights::from_values([
        0.4, 0.0, 0.6, 0.5, 0.75, 0.75, 0.75, 0.75, -2.5, -2.0, 0.5, 0.5,
    ])
}

/// The other prior: zero for every fitted feature (tools and conversation
/// depth, which the data cannot inform, keep the hand-set value).
pub fn zero_prior() -> FeatureWeights {
    let hand = hand_prior();
    FeatureWeights {
        tool_definitions: hand.tool_definitions,
        conversation_turns: hand.conversation_turns,
        ..FeatureWeights::from_values([0.0; FEATURE_COUNT])
    }
}

fn load(root: &Path, rel: &str) -> anyhow::Result<Vec<LabeledRequest>> {
    let text =
        std::fs::read_to_string(root.join(rel)).with_context(|| format!("cannot read {rel}"))?;
    parse_jsonl(&text).with_context(|| rel.to_owned())
}

/// The shipped form of a fit: weights and bias rounded to two decimals.
fn rounded(fit: &Fit) -> (f64, FeatureWeights) {
    let r = |v: f64| {
        let x = (v * 100.0).round() / 100.0;
        if x == 0.0 { 0.0 } else { x }
    };
    let w = fit.weights.named().map(|(_, v)| r(v));
    (r(fit.bias), FeatureWeights::from_values(w))
}

/// Everything training decides.
pub struct Outcome {
    /// The prior the cross-validation chose, and its selection.
    pub prior: &'static str,
    /// The selection of the chosen prior.
    pub selection: Selection,
    /// The default config (rounded weights, chosen threshold).
    pub config: ClassifierConfig,
}

/// Fits, rounds and picks the threshold.
pub fn train(root: &Path) -> anyhow::Result<(Outcome, Vec<Row>)> {
    let items = load(root, TRAIN_PATH)?;
    let rows = train::rows(&items);
    let mut best: Option<(&'static str, FeatureWeights, Selection)> = None;
    for (name, prior) in [("zero", zero_prior()), ("hand-set", hand_prior())] {
        let sel = train::select(&rows, &prior);
        let loss = sel.best_loss();
        if best.as_ref().is_none_or(|b| loss < b.2.best_loss()) {
            best = Some((name, prior, sel));
        }
    }
    let (name, prior, selection) = best.context("no prior")?;
    let fit = train::fit(&rows, &prior, selection.lambda);
    let (bias, weights) = rounded(&fit);
    let mut config = ClassifierConfig {
        weights,
        bias,
        hard_threshold: 0,
    };
    let dev = load(root, DEV_PATH)?;
    let reworded = load(root, REWORDED_PATH)?;
    config.hard_threshold = (0..=100u16)
        .filter(|&t| {
            [&dev, &reworded]
                .iter()
                .all(|set| hard_cheap(&config, set, t) * 100 <= MAX_HARD_CHEAP_PERCENT * hard(set))
        })
        .max()
        .unwrap_or(0);
    Ok((
        Outcome {
            prior: name,
            selection,
            config,
        },
        rows,
    ))
}

fn hard(set: &[LabeledRequest]) -> usize {
    set.iter().filter(|r| r.hard).count()
}

fn score(cfg: &ClassifierConfig, r: &LabeledRequest) -> u16 {
    let refs = r.message_refs();
    classify(cfg, &view(&refs)).score
}

/// Hard requests scoring below `threshold` (sent cheap).
fn hard_cheap(cfg: &ClassifierConfig, set: &[LabeledRequest], threshold: u16) -> usize {
    set.iter()
        .filter(|r| r.hard && score(cfg, r) < threshold)
        .count()
}

/// Runs the training and prints the report.
pub fn run(root: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    let (out, rows) = train(root)?;
    let sel = &out.selection;
    println!(
        "# classifier training: {TRAIN_PATH} ({} requests)",
        rows.len()
    );
    println!(
        "prior chosen by cross-validation: {} (held-out log loss {:.4})",
        out.prior,
        sel.best_loss()
    );
    println!("| L2 strength | held-out log loss |\n|---|---|");
    for (l, loss) in &sel.losses {
        let mark = if *l == sel.lambda { " (chosen)" } else { "" };
        println!("| {l}{mark} | {loss:.4} |");
    }
    let held: Vec<(f64, bool)> = sel
        .held_out
        .iter()
        .zip(&rows)
        .map(|(p, r)| (*p, r.hard))
        .collect();
    println!(
        "\ntraining AUC, out of fold, within source: {:.3}",
        auc(&held).unwrap_or(0.0)
    );
    let cfg = &out.config;
    println!("\nbias: {}", cfg.bias);
    for (n, w) in cfg.weights.named() {
        println!("weights.{n}: {w}");
    }
    println!(
        "hardThreshold: {} (the largest with at most {MAX_HARD_CHEAP_PERCENT}% of the hard requests of {DEV_PATH} and of {REWORDED_PATH} sent cheap)",
        cfg.hard_threshold
    );
    println!("\nCalibration, training set (out-of-fold P(hard) in percent, sample-weighted):");
    calibration(&held, &rows.iter().map(|r| r.weight).collect::<Vec<_>>());
    for rel in [DEV_PATH, REWORDED_PATH] {
        let set = load(root, rel)?;
        let scored: Vec<(f64, bool)> = set
            .iter()
            .map(|r| (f64::from(score(cfg, r)) / 100.0, r.hard))
            .collect();
        println!("\nCalibration, {rel} (score):");
        calibration(&scored, &vec![1.0; scored.len()]);
    }
    if args.check {
        let shipped = ClassifierConfig::default();
        if shipped != *cfg {
            eprintln!(
                "classifier-train: the shipped defaults (bias {DEFAULT_BIAS}, hardThreshold {DEFAULT_HARD_THRESHOLD}, weights {:?}) are not what training gives; update core/src/classify/config.rs",
                shipped.weights
            );
            return Ok(ExitCode::FAILURE);
        }
        println!("\nthe shipped defaults are what training gives");
    }
    Ok(ExitCode::SUCCESS)
}

/// Observed hard share per band of predicted probability.
fn calibration(scored: &[(f64, bool)], weights: &[f64]) {
    println!("| score | requests | hard (observed) |\n|---|---|---|");
    for band in 0..5 {
        let lo = f64::from(band) * 0.2;
        let hi = lo + 0.2;
        let (mut n, mut w, mut wh) = (0, 0.0, 0.0);
        for ((p, hard), weight) in scored.iter().zip(weights) {
            if *p >= lo && (*p < hi || (band == 4 && *p <= 1.0)) {
                n += 1;
                w += weight;
                if *hard {
                    wh += weight;
                }
            }
        }
        let observed = if n == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}%", 100.0 * wh / w)
        };
        println!(
            "| {}–{} | {n} | {observed} |",
            band * 20,
            if band == 4 { 100 } else { band * 20 + 19 }
        );
    }
}
