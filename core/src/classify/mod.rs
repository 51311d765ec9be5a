//! The embedded request-complexity classifier.
//!
//! Pure, no I/O, microseconds per request: a handful of cheap features of the
//! request (prompt size, code, stack traces, keyword groups, tools, depth), a
//! weighted sum in log-odds, and a logistic squash to an integer score
//! `0..=100`. Routes match score ranges (e.g. `score >= 60` → strong tier);
//! [`ClassifierConfig::hard_threshold`] (default [`DEFAULT_HARD_THRESHOLD`])
//! is the one-number "hard or not" cut.
//!
//! Cost is bounded on any prompt size: `prompt_bytes` is a sum of lengths,
//! and the text features scan at most [`SCAN_FIRST_USER_BYTES`] of the first
//! user message plus [`SCAN_LAST_USER_BYTES`] of the last one, in one pass
//! with an ASCII-case-insensitive keyword table (no regex). System messages
//! are not scanned: they are per-application constants, better matched by
//! workload labels than scored per request.
//!
//! See `docs/classifier.md` for the features, the defaults and the evaluation
//! on `core/data/routing-eval/dev.jsonl` (`cargo xtask classifier-eval`).

mod config;
mod features;
mod keywords;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

pub use config::{
    ClassifierConfig, ClassifierConfigError, DEFAULT_BIAS, DEFAULT_HARD_THRESHOLD, FeatureWeights,
    MAX_WEIGHT_MAGNITUDE,
};
pub use features::{Features, SCAN_FIRST_USER_BYTES, SCAN_LAST_USER_BYTES, extract};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System / developer instructions.
    System,
    /// The user (in the Anthropic API also tool results, if the proxy does
    /// not split them out as [`Role::Tool`]).
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// The part of a request the classifier looks at, extracted cheaply by the
/// proxy: message texts in order (a message with several text blocks may be
/// passed as one entry per block), and the number of tool definitions.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Message texts (system, user, assistant, tool) in conversation order.
    pub messages: &'a [(Role, &'a str)],
    /// Number of tool (function) definitions sent with the request.
    pub tool_definitions: usize,
}

/// The result of classifying one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Classification {
    /// Complexity score, `0..=100`; higher needs a stronger model.
    pub score: u16,
    /// `score >= hard_threshold`.
    pub hard: bool,
    /// What was measured.
    pub features: Features,
    /// Short explanation: the score and up to three strongest contributions,
    /// e.g. `"score 72: +stack trace (14 lines), +concurrency keywords (3), +9 turns"`.
    pub reason: String,
}

/// Classifies a request. Deterministic; never panics.
pub fn classify(cfg: &ClassifierConfig, req: &RequestView<'_>) -> Classification {
    classify_features(cfg, &extract(req))
}

/// Classifies already extracted features: what [`classify`] does after
/// [`extract`], with the same floating-point operations in the same order,
/// so a score recomputed from recorded features (a what-if replay under new
/// weights) equals the live one bit for bit.
pub fn classify_features(cfg: &ClassifierConfig, f: &Features) -> Classification {
    let features = *f;
    let parts = contributions(&cfg.weights, &features);
    let logit = cfg.bias + parts.iter().map(|p| p.logit).sum::<f64>();
    let score = score_from_logit(logit);
    Classification {
        score,
        hard: score >= cfg.hard_threshold,
        reason: reason(score, &features, parts),
        features,
    }
}

/// `round(100 * sigmoid(logit))`, clamped to `0..=100` (NaN → 0).
fn score_from_logit(logit: f64) -> u16 {
    let p = 1.0 / (1.0 + (-logit).exp());
    let s = (100.0 * p).round();
    if s.is_nan() {
        0
    } else {
        // In range by construction; the clamp makes it obvious.
        s.clamp(0.0, 100.0) as u16
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PromptSize,
    CodeBlocks,
    CodeLines,
    StackTrace,
    Reasoning,
    Design,
    Concurrency,
    Debugging,
    Simple,
    Hints,
    Tools,
    Turns,
}

#[derive(Clone, Copy, Debug)]
struct Part {
    kind: Kind,
    logit: f64,
}

/// Cap on hits of the push-down groups, so a long prompt that happens to say
/// "simple" a few times is not dragged to zero.
const MAX_PUSH_DOWN_HITS: u32 = 3;
/// `prompt_bytes` at which the size feature is 0.
const SIZE_REFERENCE_BYTES: f64 = 256.0;
/// Cap on the size feature (doublings above the reference: 1 MiB).
const MAX_SIZE_DOUBLINGS: f64 = 12.0;

fn ln1p(count: u32) -> f64 {
    f64::from(count).ln_1p()
}

/// Number of features, and the length of [`feature_values`] and
/// [`FeatureWeights::named`].
pub const FEATURE_COUNT: usize = 12;

/// The transformed value of every feature, in [`FeatureWeights::named`]
/// order: the numbers the weights multiply. Training (`cargo xtask
/// classifier-train`) fits the weights on exactly these values.
pub fn feature_values(f: &Features) -> [f64; FEATURE_COUNT] {
    let size = ((f.prompt_bytes.max(1) as f64) / SIZE_REFERENCE_BYTES)
        .log2()
        .clamp(0.0, MAX_SIZE_DOUBLINGS);
    [
        size,
        ln1p(f.code_blocks),
        ln1p(f.code_lines),
        ln1p(f.stack_trace_lines),
        ln1p(f.reasoning_keywords),
        ln1p(f.design_keywords),
        ln1p(f.concurrency_keywords),
        ln1p(f.debugging_keywords),
        ln1p(f.simple_markers.min(MAX_PUSH_DOWN_HITS)),
        ln1p(f.solution_hints.min(MAX_PUSH_DOWN_HITS)),
        ln1p(f.tool_definitions),
        f64::from(f.conversation_turns.max(1)).ln(),
    ]
}

/// The kind of each feature, in [`feature_values`] order.
const KINDS: [Kind; FEATURE_COUNT] = [
    Kind::PromptSize,
    Kind::CodeBlocks,
    Kind::CodeLines,
    Kind::StackTrace,
    Kind::Reasoning,
    Kind::Design,
    Kind::Concurrency,
    Kind::Debugging,
    Kind::Simple,
    Kind::Hints,
    Kind::Tools,
    Kind::Turns,
];

/// Transformed feature values times weights, in a fixed order.
fn contributions(w: &FeatureWeights, f: &Features) -> [Part; FEATURE_COUNT] {
    let values = feature_values(f);
    let weights = w.named();
    std::array::from_fn(|i| Part {
        kind: KINDS[i],
        logit: weights[i].1 * values[i],
    })
}

/// Contributions smaller than this (in log-odds) are not worth naming.
const REASON_MIN_LOGIT: f64 = 0.25;

fn reason(score: u16, f: &Features, mut parts: [Part; FEATURE_COUNT]) -> String {
    parts.sort_by(|a, b| b.logit.abs().total_cmp(&a.logit.abs()));
    let mut out = format!("score {score}:");
    let mut named = 0;
    for part in parts
        .iter()
        .filter(|p| p.logit.abs() >= REASON_MIN_LOGIT)
        .take(3)
    {
        let sign = if part.logit > 0.0 { '+' } else { '-' };
        let sep = if named == 0 { " " } else { ", " };
        let _ = write!(out, "{sep}{sign}");
        let _ = match part.kind {
            Kind::PromptSize => write!(out, "{:.1} KB prompt", f.prompt_bytes as f64 / 1024.0),
            Kind::CodeBlocks => write!(out, "{}", counted(f.code_blocks, "code block")),
            Kind::CodeLines => write!(out, "{}", counted(f.code_lines, "code line")),
            Kind::StackTrace => {
                write!(
                    out,
                    "stack trace ({})",
                    counted(f.stack_trace_lines, "line")
                )
            }
            Kind::Reasoning => write!(out, "reasoning keywords ({})", f.reasoning_keywords),
            Kind::Design => write!(out, "design keywords ({})", f.design_keywords),
            Kind::Concurrency => {
                write!(
                    out,
                    "concurrency/perf/security keywords ({})",
                    f.concurrency_keywords
                )
            }
            Kind::Debugging => write!(out, "debugging keywords ({})", f.debugging_keywords),
            Kind::Simple => write!(out, "simple-task markers ({})", f.simple_markers),
            Kind::Hints => write!(out, "fix given in request ({})", f.solution_hints),
            Kind::Tools => write!(out, "{}", counted(f.tool_definitions, "tool")),
            Kind::Turns => write!(out, "{}", counted(f.conversation_turns, "turn")),
        };
        named += 1;
    }
    if named == 0 {
        out.push_str(" no strong signals");
    }
    out
}

/// `"1 line"`, `"3 lines"`.
fn counted(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
