//! The labelled-request JSONL format of `core/data/routing-eval/`, and the
//! AUC the evaluation and its regression floors measure with.

use serde::Deserialize;
use thiserror::Error;
use tokenwarden_core::classify::{RequestView, Role};

/// One labelled request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabeledRequest {
    /// Item id, e.g. `"humaneval:HumanEval/11"`.
    pub id: String,
    /// Source benchmark, e.g. `"swebench_lite"`.
    pub source: String,
    /// `true` for label `"hard"` (needs a frontier model), `false` for `"easy"`.
    pub hard: bool,
    /// The messages, in order.
    pub messages: Vec<(Role, String)>,
}

impl LabeledRequest {
    /// Borrowed message texts, for building a [`RequestView`].
    pub fn message_refs(&self) -> Vec<(Role, &str)> {
        self.messages
            .iter()
            .map(|(r, t)| (*r, t.as_str()))
            .collect()
    }

    /// UTF-8 bytes of all messages.
    pub fn prompt_bytes(&self) -> u64 {
        self.messages.iter().map(|(_, t)| t.len() as u64).sum()
    }
}

/// Builds the view of a request without tools from borrowed messages.
pub fn view<'a>(messages: &'a [(Role, &'a str)]) -> RequestView<'a> {
    RequestView {
        messages,
        tool_definitions: 0,
    }
}

/// A line of a labelled-request file that cannot be used.
#[derive(Debug, Error)]
pub enum EvalError {
    /// Not a JSON object of the expected shape.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// The parse error.
        source: serde_json::Error,
    },
    /// `label` is neither `"easy"` nor `"hard"`.
    #[error("line {line}: label must be \"easy\" or \"hard\", got {label:?}")]
    Label {
        /// 1-based line number.
        line: usize,
        /// The label found.
        label: String,
    },
}

#[derive(Deserialize)]
struct RawItem {
    id: String,
    source: String,
    label: String,
    messages: Vec<RawMessage>,
}

#[derive(Deserialize)]
struct RawMessage {
    role: Role,
    content: String,
}

/// Parses JSONL lines `{"id", "source", "label": "easy"|"hard", "messages":
/// [{"role", "content"}]}`; blank lines are skipped.
pub fn parse_jsonl(text: &str) -> Result<Vec<LabeledRequest>, EvalError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawItem = serde_json::from_str(line).map_err(|source| EvalError::Json {
            line: i + 1,
            source,
        })?;
        let hard = match raw.label.as_str() {
            "hard" => true,
            "easy" => false,
            _ => {
                return Err(EvalError::Label {
                    line: i + 1,
                    label: raw.label,
                });
            }
        };
        out.push(LabeledRequest {
            id: raw.id,
            source: raw.source,
            hard,
            messages: raw
                .messages
                .into_iter()
                .map(|m| (m.role, m.content))
                .collect(),
        });
    }
    Ok(out)
}

/// FNV-1a of an item id: a stable, platform-independent hash for the
/// choices that must not change between runs (the rewording's paraphrase,
/// the training's cross-validation fold).
pub fn id_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Area under the ROC curve of `score` for separating `hard == true` from
/// `false`: the probability that a random hard item scores above a random
/// easy one, ties counting one half. `None` if either class is empty.
pub fn auc(items: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = items.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = sorted.iter().filter(|(_, h)| *h).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mann-Whitney U with mid-ranks for ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0.total_cmp(&sorted[i].0).is_eq() {
            j += 1;
        }
        let mid_rank = (i + j + 1) as f64 / 2.0; // ranks i+1..=j
        rank_sum += mid_rank * sorted[i..j].iter().filter(|(_, h)| *h).count() as f64;
        i = j;
    }
    let p = positives as f64;
    let u = rank_sum - p * (p + 1.0) / 2.0;
    Some(u / (p * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_basics() {
        assert_eq!(auc(&[(1.0, false), (2.0, true)]), Some(1.0));
        assert_eq!(auc(&[(2.0, false), (1.0, true)]), Some(0.0));
        assert_eq!(auc(&[(1.0, false), (1.0, true)]), Some(0.5));
        assert_eq!(auc(&[(1.0, true)]), None);
        // 2 positives x 2 negatives: pairs (3>1, 3>2, 2=2 half, 2>1) = 3.5 / 4
        let items = [(3.0, true), (2.0, true), (2.0, false), (1.0, false)];
        assert_eq!(auc(&items), Some(0.875));
    }

    #[test]
    fn parse_rejects_bad_labels() {
        let line = r#"{"id":"x","source":"s","label":"medium","messages":[]}"#;
        assert!(matches!(
            parse_jsonl(line),
            Err(EvalError::Label { line: 1, .. })
        ));
        assert!(matches!(
            parse_jsonl("{"),
            Err(EvalError::Json { line: 1, .. })
        ));
    }
}
