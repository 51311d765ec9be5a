//! Floors measured on the development set with the default config (see
//! `docs/classifier.md`), minus a small margin: a change that makes the
//! classifier clearly worse fails here.

use tokenwarden_core::classify::{ClassifierConfig, classify};

use super::dataset::{auc, parse_jsonl, view};

const DEV_SET: &str = include_str!("../../../core/data/routing-eval/dev.jsonl");

// Measured (default config): AUC 0.900 (prompt length 0.766), hard recall 0.891,
// easy sent cheap 0.774, Exercism vs polyglot 0.785, SWE-bench easy vs hard 0.714.
const MIN_AUC: f64 = 0.88;
const MIN_AUC_OVER_LENGTH: f64 = 0.10;
const MIN_HARD_RECALL: f64 = 0.86;
const MIN_EASY_CHEAP: f64 = 0.74;
const MIN_PAIR_AUC_EXERCISM_POLYGLOT: f64 = 0.75;
const MIN_PAIR_AUC_SWEBENCH: f64 = 0.68;

struct Scored {
    source: String,
    hard: bool,
    score: u16,
    bytes: u64,
}

fn scored() -> Vec<Scored> {
    let cfg = ClassifierConfig::default();
    parse_jsonl(DEV_SET)
        .unwrap()
        .iter()
        .map(|item| {
            let refs = item.message_refs();
            Scored {
                source: item.source.clone(),
                hard: item.hard,
                score: classify(&cfg, &view(&refs)).score,
                bytes: item.prompt_bytes(),
            }
        })
        .collect()
}

fn aucs(items: &[&Scored]) -> (f64, f64) {
    let by_score: Vec<_> = items.iter().map(|s| (f64::from(s.score), s.hard)).collect();
    let by_len: Vec<_> = items.iter().map(|s| (s.bytes as f64, s.hard)).collect();
    (auc(&by_score).unwrap(), auc(&by_len).unwrap())
}

#[test]
fn beats_prompt_length_and_keeps_recall() {
    let items = scored();
    assert_eq!(items.len(), 229);
    let all: Vec<&Scored> = items.iter().collect();
    let (score_auc, len_auc) = aucs(&all);
    assert!(score_auc >= MIN_AUC, "AUC {score_auc:.3}");
    assert!(
        score_auc >= len_auc + MIN_AUC_OVER_LENGTH,
        "AUC {score_auc:.3} vs length {len_auc:.3}"
    );

    let threshold = ClassifierConfig::default().hard_threshold;
    let hard: Vec<_> = all.iter().filter(|s| s.hard).collect();
    let easy: Vec<_> = all.iter().filter(|s| !s.hard).collect();
    let recall = hard.iter().filter(|s| s.score >= threshold).count() as f64 / hard.len() as f64;
    let cheap = easy.iter().filter(|s| s.score < threshold).count() as f64 / easy.len() as f64;
    assert!(recall >= MIN_HARD_RECALL, "hard recall {recall:.3}");
    assert!(cheap >= MIN_EASY_CHEAP, "easy sent cheap {cheap:.3}");

    for (sources, floor) in [
        (
            &["exercism_python", "aider_polyglot"][..],
            MIN_PAIR_AUC_EXERCISM_POLYGLOT,
        ),
        (&["swebench_lite"][..], MIN_PAIR_AUC_SWEBENCH),
    ] {
        let pair: Vec<&Scored> = items
            .iter()
            .filter(|s| sources.contains(&s.source.as_str()))
            .collect();
        let (score_auc, len_auc) = aucs(&pair);
        assert!(score_auc >= floor, "{sources:?}: AUC {score_auc:.3}");
        assert!(
            score_auc > len_auc,
            "{sources:?}: AUC {score_auc:.3} vs length {len_auc:.3}"
        );
    }
}
