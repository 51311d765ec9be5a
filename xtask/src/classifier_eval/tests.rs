//! What the shipped classifier promises on the development set and its
//! reworded copy (see `docs/classifier.md`): the default threshold sends at
//! most 5% of the hard requests cheap on both; the score beats prompt length;
//! rewording the harness text does not move the result; and the shipped
//! defaults are exactly what training on `core/data/routing-train/` gives.

use std::path::Path;

use tokenwarden_core::classify::{ClassifierConfig, classify};

use super::dataset::{auc, parse_jsonl, view};

const DEV_SET: &str = include_str!("../../../core/data/routing-eval/dev.jsonl");
const REWORDED: &str = include_str!("../../../core/data/routing-eval/dev-reworded.jsonl");

// Measured (default config) on both files: AUC 0.800 (prompt length 0.766),
// 0/92 hard sent cheap, 3/137 easy sent cheap.
const MIN_AUC: f64 = 0.78;
const MIN_AUC_OVER_LENGTH: f64 = 0.02;
/// The promise: at most this share of hard requests goes cheap at the default.
const MAX_HARD_CHEAP: f64 = 0.05;
/// Largest AUC difference between the published and the reworded set.
const MAX_REWORD_AUC_DROP: f64 = 0.01;

struct Scored {
    hard: bool,
    score: u16,
    bytes: u64,
}

fn scored(text: &str) -> Vec<Scored> {
    let cfg = ClassifierConfig::default();
    parse_jsonl(text)
        .unwrap()
        .iter()
        .map(|item| {
            let refs = item.message_refs();
            Scored {
                hard: item.hard,
                score: classify(&cfg, &view(&refs)).score,
                bytes: item.prompt_bytes(),
            }
        })
        .collect()
}

fn aucs(items: &[Scored]) -> (f64, f64) {
    let by_score: Vec<_> = items.iter().map(|s| (f64::from(s.score), s.hard)).collect();
    let by_len: Vec<_> = items.iter().map(|s| (s.bytes as f64, s.hard)).collect();
    (auc(&by_score).unwrap(), auc(&by_len).unwrap())
}

#[test]
fn default_threshold_keeps_hard_requests_strong_on_both_sets() {
    let threshold = ClassifierConfig::default().hard_threshold;
    let mut score_aucs = Vec::new();
    for (name, text) in [("dev", DEV_SET), ("reworded", REWORDED)] {
        let items = scored(text);
        assert_eq!(items.len(), 229, "{name}");
        let (score_auc, len_auc) = aucs(&items);
        assert!(score_auc >= MIN_AUC, "{name}: AUC {score_auc:.3}");
        assert!(
            score_auc >= len_auc + MIN_AUC_OVER_LENGTH,
            "{name}: AUC {score_auc:.3} vs length {len_auc:.3}"
        );
        let hard = items.iter().filter(|s| s.hard).count();
        let hard_cheap = items
            .iter()
            .filter(|s| s.hard && s.score < threshold)
            .count();
        assert!(
            hard_cheap as f64 <= MAX_HARD_CHEAP * hard as f64,
            "{name}: {hard_cheap}/{hard} hard requests sent cheap at {threshold}"
        );
        score_aucs.push(score_auc);
    }
    assert!(
        score_aucs[0] - score_aucs[1] <= MAX_REWORD_AUC_DROP,
        "rewording the harness text moves the AUC: {score_aucs:?}"
    );
}

#[test]
fn shipped_defaults_are_what_training_gives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let (outcome, _) = super::train_cmd::train(root).unwrap();
    assert_eq!(
        outcome.config,
        ClassifierConfig::default(),
        "run `cargo xtask classifier-train` and copy its weights into core/src/classify/config.rs"
    );
}
