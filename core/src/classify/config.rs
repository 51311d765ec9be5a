//! Classifier weights and thresholds.
//!
//! The shape is deliberately flat (named fields, no maps) because it is
//! embedded as the `classifier` field of a RoutingPolicy. Every field has a
//! serde default, so a partial object overrides only what it names:
//!
//! ```json
//! { "weights": { "toolDefinitions": 0.8 }, "hardThreshold": 55 }
//! ```

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Default `hardThreshold`: a score at or above this means "needs the strong
/// tier". The score estimates, in percent, the probability that the request
/// is hard (the cheap model would fail it), so the threshold is the risk a
/// platform accepts. 11 is the largest value that sends at most 5% of the
/// hard requests of the development set and of its reworded copy cheap (it
/// sends none, and 2% of the easy ones; 30: 12% / 55%; see
/// `docs/classifier.md`). It equals the score of a request with no signal,
/// so such a request stays strong: only evidence of an easy task sends a
/// request cheap.
pub const DEFAULT_HARD_THRESHOLD: u16 = 11;

/// Default `bias`: the log-odds of a request of at most 256 bytes with no
/// other signal (score 11), fitted by `cargo xtask classifier-train`.
pub const DEFAULT_BIAS: f64 = -2.07;

/// Largest accepted magnitude for the bias and any weight. Scores saturate
/// long before this; the bound only rejects nonsense from a config.
pub const MAX_WEIGHT_MAGNITUDE: f64 = 100.0;

/// Weights and thresholds of the classifier. `Default` gives the defaults
/// fitted by `cargo xtask classifier-train`.
///
/// The score is `round(100 * sigmoid(bias + Σ weight × feature value))`, an
/// integer in `0..=100`. Feature values are documented on [`FeatureWeights`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClassifierConfig {
    /// Per-feature weights, in log-odds per unit of feature value.
    pub weights: FeatureWeights,
    /// Log-odds added to every request. Default [`DEFAULT_BIAS`] (−2.07).
    /// Lower it to send more traffic to the cheap tier, raise it to send less.
    pub bias: f64,
    /// Score (0..=100) at or above which a request counts as hard
    /// ([`super::Classification::hard`]). Routes may also match score ranges
    /// directly. Default [`DEFAULT_HARD_THRESHOLD`] (11).
    pub hard_threshold: u16,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        Self {
            weights: FeatureWeights::default(),
            bias: DEFAULT_BIAS,
            hard_threshold: DEFAULT_HARD_THRESHOLD,
        }
    }
}

/// One weight per feature, in log-odds per unit of the feature's value.
/// Positive weights push the score up (towards the strong tier), negative
/// weights push it down. A weight of 0 switches the feature off.
///
/// Feature values: `promptSize` uses `clamp(log2(prompt bytes / 256), 0, 12)`
/// (one unit per doubling above 256 bytes); `conversationTurns` uses
/// `ln(turns)`; the two push-down groups use `ln(1 + min(hits, 3))`; every
/// other feature uses `ln(1 + count)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FeatureWeights {
    /// Prompt size: all message bytes, log2-scaled. Default 1.35 (+1.35 per
    /// doubling: 1 KiB → +2.7, 16 KiB → +8.1; capped at 1 MiB).
    pub prompt_size: f64,
    /// Fenced code blocks (```` ``` ```` or `~~~`) in the scanned text.
    /// Default 0 (code lines carry the signal; kept for tuning).
    pub code_blocks: f64,
    /// Code-like lines: syntactic code inside fences, or lines outside fences
    /// that end in `;`/`{`/`}` or start with a declaration keyword.
    /// Default 0.56.
    pub code_lines: f64,
    /// Stack-trace / error-dump lines (`Traceback`, `File "…", line N`,
    /// `at pkg.Class.method(…)`, `panicked at`, `FooError: …`, backtrace
    /// frames). Default 0.5.
    pub stack_trace_lines: f64,
    /// Reasoning keywords: "why", "prove", "step by step", "trade-off",
    /// "root cause", "edge case", "invariant", … Default 0.79.
    pub reasoning_keywords: f64,
    /// Design / architecture keywords: "architecture", "design", "refactor",
    /// "migrate", "API", "protocol", "schema", "scalability", … Default 0.75.
    pub design_keywords: f64,
    /// Concurrency, performance and security keywords: "thread", "race",
    /// "deadlock", "mutex", "async", "latency", "optimize", "vulnerability",
    /// "injection", "unsafe", … Default 0 (the training set gives these
    /// words no weight: they are as common in cheap issues as in expensive
    /// ones).
    pub concurrency_keywords: f64,
    /// Debugging keywords: "why does", "intermittent", "flaky", "regression",
    /// "no longer", "does not work", "unexpected", "wrong", "crash", "bug",
    /// "reproduce", … Default 0.22.
    pub debugging_keywords: f64,
    /// Simple-task markers (push down): "rename", "typo", "docstring", "add a
    /// comment", "unused import", "quick fix", "hello world", … (no benchmark
    /// harness wording). Default −2.4.
    pub simple_markers: f64,
    /// The fix is supplied in the request (push down): "should be changed to",
    /// "would solve", "the fix is", "something like this", "replace it with",
    /// "pull request", … Default −2.0.
    pub solution_hints: f64,
    /// Tool definitions sent with the request (agentic use). Default 0.5
    /// (1 tool → +0.35, 10 → +1.2, 40 → +1.9).
    pub tool_definitions: f64,
    /// Conversation depth: user/assistant/tool messages (consecutive messages
    /// of one role count once; system messages not counted), value `ln(turns)`.
    /// Default 0.5 (1 turn → 0, 9 turns → +1.1).
    pub conversation_turns: f64,
}

impl Default for FeatureWeights {
    /// The weights `cargo xtask classifier-train` fits on
    /// `core/data/routing-train/train.jsonl` (see `docs/classifier.md`).
    fn default() -> Self {
        Self {
            prompt_size: 1.35,
            code_blocks: 0.0,
            code_lines: 0.56,
            stack_trace_lines: 0.5,
            reasoning_keywords: 0.79,
            design_keywords: 0.75,
            concurrency_keywords: 0.0,
            debugging_keywords: 0.22,
            simple_markers: -2.4,
            solution_hints: -2.0,
            tool_definitions: 0.5,
            conversation_turns: 0.5,
        }
    }
}

impl FeatureWeights {
    /// Weights in [`FeatureWeights::named`] order (the inverse of taking the
    /// values of `named`).
    pub fn from_values(v: [f64; super::FEATURE_COUNT]) -> Self {
        let [
            prompt_size,
            code_blocks,
            code_lines,
            stack_trace_lines,
            reasoning_keywords,
            design_keywords,
            concurrency_keywords,
            debugging_keywords,
            simple_markers,
            solution_hints,
            tool_definitions,
            conversation_turns,
        ] = v;
        Self {
            prompt_size,
            code_blocks,
            code_lines,
            stack_trace_lines,
            reasoning_keywords,
            design_keywords,
            concurrency_keywords,
            debugging_keywords,
            simple_markers,
            solution_hints,
            tool_definitions,
            conversation_turns,
        }
    }

    /// All weights with their camelCase field names, in declaration order.
    pub fn named(&self) -> [(&'static str, f64); super::FEATURE_COUNT] {
        [
            ("promptSize", self.prompt_size),
            ("codeBlocks", self.code_blocks),
            ("codeLines", self.code_lines),
            ("stackTraceLines", self.stack_trace_lines),
            ("reasoningKeywords", self.reasoning_keywords),
            ("designKeywords", self.design_keywords),
            ("concurrencyKeywords", self.concurrency_keywords),
            ("debuggingKeywords", self.debugging_keywords),
            ("simpleMarkers", self.simple_markers),
            ("solutionHints", self.solution_hints),
            ("toolDefinitions", self.tool_definitions),
            ("conversationTurns", self.conversation_turns),
        ]
    }
}

/// A classifier config that cannot be used.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum ClassifierConfigError {
    /// A weight (or the bias) is NaN, infinite or larger than
    /// [`MAX_WEIGHT_MAGNITUDE`] in magnitude.
    #[error(
        "classifier {field} must be a finite number within ±{MAX_WEIGHT_MAGNITUDE}, got {value}"
    )]
    BadWeight {
        /// camelCase name of the field (`bias` or `weights.<name>`).
        field: String,
        /// The offending value.
        value: f64,
    },
    /// `hardThreshold` is above 100.
    #[error("classifier hardThreshold must be within 0..=100, got {0}")]
    BadThreshold(u16),
}

impl ClassifierConfig {
    /// Checks that every number is usable. [`super::classify`] never panics
    /// on a bad config, but its scores would be meaningless.
    pub fn validate(&self) -> Result<(), ClassifierConfigError> {
        let ok = |v: f64| v.is_finite() && v.abs() <= MAX_WEIGHT_MAGNITUDE;
        if !ok(self.bias) {
            return Err(ClassifierConfigError::BadWeight {
                field: "bias".to_owned(),
                value: self.bias,
            });
        }
        for (name, value) in self.weights.named() {
            if !ok(value) {
                return Err(ClassifierConfigError::BadWeight {
                    field: format!("weights.{name}"),
                    value,
                });
            }
        }
        if self.hard_threshold > 100 {
            return Err(ClassifierConfigError::BadThreshold(self.hard_threshold));
        }
        Ok(())
    }
}
