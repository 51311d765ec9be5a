//! The output-token estimate for a request moved to another model.
//!
//! How long an answer is depends on the model, and no recorded request says
//! what another model would have written. The estimate uses what the same
//! ledger observed: each model's output/input ratio (output tokens over all
//! input tokens: uncached, cache reads and writes), summed over the samples
//! it holds (requests, or aggregate rows). A request moved from `s` to `t`
//! with `out` output tokens is estimated at `out × ratio(t) / ratio(s)`,
//! rounded to the nearest token, with a range from the spread of `t`'s
//! per-sample ratios (the 10th and 90th percentile, nearest rank; min and
//! max below ten samples). Without data for either model the output is
//! kept unchanged, with the range `[out/2, 2·out]`. Integer arithmetic only.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::tokens::TokenCounts;

/// How an output estimate was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Method {
    /// Same model: the recorded output.
    Recorded,
    /// Scaled by the two models' observed output/input ratios.
    ObservedRatio,
    /// Kept as recorded: no observed ratio for one of the models, or the
    /// estimate was switched off.
    Unchanged,
}

/// An output-token estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Estimate {
    /// The point estimate.
    pub output: u64,
    /// The low end of the range.
    pub low: u64,
    /// The high end of the range.
    pub high: u64,
    /// How it was made.
    pub method: Method,
}

/// Observed output/input ratios per model.
#[derive(Clone, Debug, Default)]
pub struct Ratios {
    /// Per model (lower-cased): summed (output, input) and per-sample pairs.
    models: BTreeMap<String, Observed>,
}

#[derive(Clone, Debug, Default)]
struct Observed {
    output: u128,
    input: u128,
    samples: Vec<(u64, u64)>,
}

// === impl Method ===

impl Method {
    /// The label printed per row.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Recorded => "recorded",
            Method::ObservedRatio => "observed ratio",
            Method::Unchanged => "unchanged",
        }
    }
}

// === impl Ratios ===

impl Ratios {
    /// Counts one sample (a request, or an aggregate row) served by `model`.
    /// Samples without input tokens are skipped.
    pub fn observe(&mut self, model: &str, usage: &TokenCounts) {
        let input = usage.total_input_tokens();
        if input == 0 {
            return;
        }
        let o = self.models.entry(model.to_lowercase()).or_default();
        o.output += u128::from(usage.output_tokens);
        o.input += u128::from(input);
        o.samples.push((usage.output_tokens, input));
    }

    /// The estimate for `output` tokens written by `from`, had `to` served.
    pub fn estimate(&self, from: &str, to: &str, output: u64) -> Estimate {
        if from.eq_ignore_ascii_case(to) {
            return Estimate {
                output,
                low: output,
                high: output,
                method: Method::Recorded,
            };
        }
        let unchanged = Estimate {
            output,
            low: output / 2,
            high: output.saturating_mul(2),
            method: Method::Unchanged,
        };
        let (Some(s), Some(t)) = (
            self.models.get(&from.to_lowercase()),
            self.models.get(&to.to_lowercase()),
        ) else {
            return unchanged;
        };
        if s.output == 0 {
            return unchanged;
        }
        // out × (Ot/It) / (Os/Is) = out × Ot × Is / (It × Os)
        let scale = |num_out: u128, num_in: u128| -> Option<u64> {
            let num = u128::from(output)
                .checked_mul(num_out)?
                .checked_mul(s.input)?;
            let den = num_in.checked_mul(s.output)?;
            u64::try_from((num + den / 2) / den).ok()
        };
        let Some(point) = scale(t.output, t.input) else {
            return unchanged;
        };
        let mut sorted = t.samples.clone();
        sorted.sort_by(|a, b| {
            (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1)))
        });
        let (lo, hi) = percentiles(&sorted);
        let low = scale(u128::from(lo.0), u128::from(lo.1)).unwrap_or(point);
        let high = scale(u128::from(hi.0), u128::from(hi.1)).unwrap_or(point);
        Estimate {
            output: point,
            low: low.min(point),
            high: high.max(point),
            method: Method::ObservedRatio,
        }
    }
}

/// The 10th and 90th percentile samples (nearest rank) of a sorted,
/// non-empty list; the first and last below ten samples.
fn percentiles(sorted: &[(u64, u64)]) -> ((u64, u64), (u64, u64)) {
    let n = sorted.len();
    if n < 10 {
        return (sorted[0], sorted[n - 1]);
    }
    // Nearest rank: ceil(p·n), 1-based.
    let rank = |p: usize| (p * n).div_ceil(100).max(1) - 1;
    (sorted[rank(10)], sorted[rank(90)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(input: u64, output: u64) -> TokenCounts {
        TokenCounts {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        }
    }

    #[test]
    fn scales_by_the_observed_ratios_with_a_range_from_the_targets_spread() {
        let mut r = Ratios::default();
        // opus writes 0.5 output per input token overall.
        r.observe("claude-opus-4-1", &t(1_000, 500));
        r.observe("claude-opus-4-1", &t(3_000, 1_500));
        // haiku: 0.2 overall, samples at 0.1 and 0.3.
        r.observe("claude-haiku-4-5", &t(1_000, 100));
        r.observe("claude-haiku-4-5", &t(1_000, 300));
        let e = r.estimate("claude-opus-4-1", "claude-haiku-4-5", 1_000);
        // 1000 × 0.2 / 0.5 = 400; range 1000 × 0.1/0.5 .. 1000 × 0.3/0.5.
        assert_eq!(
            e,
            Estimate {
                output: 400,
                low: 200,
                high: 600,
                method: Method::ObservedRatio
            }
        );
        assert_eq!(e.method.as_str(), "observed ratio");
    }

    #[test]
    fn no_data_keeps_the_output_with_half_to_double_and_same_model_is_recorded() {
        let mut r = Ratios::default();
        r.observe("claude-opus-4-1", &t(1_000, 500));
        let e = r.estimate("claude-opus-4-1", "claude-sonnet-4-5", 1_001);
        assert_eq!(
            e,
            Estimate {
                output: 1_001,
                low: 500,
                high: 2_002,
                method: Method::Unchanged
            }
        );
        let same = r.estimate("claude-opus-4-1", "Claude-Opus-4-1", 7);
        assert_eq!((same.output, same.low, same.high), (7, 7, 7));
        assert_eq!(same.method, Method::Recorded);
    }

    #[test]
    fn percentiles_use_nearest_rank_from_ten_samples() {
        let s: Vec<(u64, u64)> = (1..=20).map(|i| (i, 100)).collect();
        // ceil(0.1·20) = 2nd, ceil(0.9·20) = 18th.
        assert_eq!(percentiles(&s), ((2, 100), (18, 100)));
        assert_eq!(percentiles(&s[..3]), ((1, 100), (3, 100)));
    }
}
