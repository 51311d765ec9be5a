//! Fitting the classifier's weights: an L2-regularised, sign-constrained
//! logistic regression over the classifier's own feature values
//! ([`tokenwarden_core::classify::feature_values`]), by damped Newton steps.
//!
//! Why this model: the features are a dozen counts that describe the request
//! (size, code, traces, what is asked); a linear model in log-odds over them
//! is what the sidecar already evaluates in microseconds, its weights can be
//! read and overridden in a RoutingPolicy, and its output is a probability,
//! so the score is calibrated by construction on the data it was fitted on.
//!
//! - Each source counts the same and, within a source, each label counts the
//!   same (sample weights), so a large source or a skewed source cannot set
//!   the base rate: the fitted score is P(hard) at even odds.
//! - Signs are fixed in advance (size, code, traces and the keyword groups
//!   can only raise the score; the two push-down groups can only lower it):
//!   a feature whose fitted sign would flip is held at 0 instead.
//! - Features the training data never varies (tool definitions and
//!   conversation depth: every item is one user message without tools) are
//!   not fitted; they keep their prior weight.
//! - The L2 strength is chosen by cross-validated log loss on the training
//!   set alone (folds by a hash of the item id), never on the development set.

use tokenwarden_core::classify::{FEATURE_COUNT, FeatureWeights, extract, feature_values};

use super::dataset::{LabeledRequest, view};

/// Which way a feature may push the score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// Only upwards (weight ≥ 0).
    Up,
    /// Only downwards (weight ≤ 0).
    Down,
    /// Not fitted: the weight stays at its prior.
    Fixed,
}

/// The constraint of each feature, in [`FeatureWeights::named`] order.
pub const SIGNS: [Sign; FEATURE_COUNT] = [
    Sign::Up,    // promptSize
    Sign::Up,    // codeBlocks
    Sign::Up,    // codeLines
    Sign::Up,    // stackTraceLines
    Sign::Up,    // reasoningKeywords
    Sign::Up,    // designKeywords
    Sign::Up,    // concurrencyKeywords
    Sign::Up,    // debuggingKeywords
    Sign::Down,  // simpleMarkers
    Sign::Down,  // solutionHints
    Sign::Fixed, // toolDefinitions
    Sign::Fixed, // conversationTurns
];

/// The L2 strengths tried by cross-validation.
pub const LAMBDAS: [f64; 6] = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0];

/// Folds of the cross-validation.
pub const FOLDS: u64 = 5;

/// One training row: feature values, label, sample weight.
#[derive(Clone, Debug)]
pub struct Row {
    /// Item id (for the fold assignment).
    pub id: String,
    /// Index of the item's source (its own intercept in the fit).
    pub group: usize,
    /// [`feature_values`] of the request.
    pub x: [f64; FEATURE_COUNT],
    /// Label.
    pub hard: bool,
    /// Sample weight: each source weighs 1, split evenly between its labels.
    pub weight: f64,
}

/// Feature rows of labelled requests, with the balancing sample weights.
pub fn rows(items: &[LabeledRequest]) -> Vec<Row> {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<(&str, bool), usize> = BTreeMap::new();
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for it in items {
        *counts.entry((it.source.as_str(), it.hard)).or_default() += 1;
        let next = groups.len();
        groups.entry(it.source.as_str()).or_insert(next);
    }
    items
        .iter()
        .map(|it| {
            let refs = it.message_refs();
            let labels_in_source = usize::from(counts.contains_key(&(it.source.as_str(), true)))
                + usize::from(counts.contains_key(&(it.source.as_str(), false)));
            let n = counts[&(it.source.as_str(), it.hard)];
            Row {
                id: it.id.clone(),
                group: groups[it.source.as_str()],
                x: feature_values(&extract(&view(&refs))),
                hard: it.hard,
                weight: 1.0 / (labels_in_source as f64 * n as f64),
            }
        })
        .collect()
}

/// A fitted model.
#[derive(Clone, Debug, PartialEq)]
pub struct Fit {
    /// Log-odds at all-zero features: the mean of the per-source intercepts
    /// (the base rate of a source the fit has not seen, at even odds).
    pub bias: f64,
    /// Per-feature weights.
    pub weights: FeatureWeights,
    /// Each source's own intercept, by [`Row::group`].
    pub intercepts: Vec<f64>,
}

impl Fit {
    /// The deployed model's log-odds for a row (with [`Fit::bias`]).
    pub fn logit(&self, x: &[f64; FEATURE_COUNT]) -> f64 {
        self.bias + self.linear(x)
    }

    /// The log-odds the fit itself uses: the row's source intercept.
    fn fitted_logit(&self, r: &Row) -> f64 {
        self.intercepts.get(r.group).copied().unwrap_or(self.bias) + self.linear(&r.x)
    }

    fn linear(&self, x: &[f64; FEATURE_COUNT]) -> f64 {
        let w = self.weights.named();
        (0..FEATURE_COUNT).map(|j| w[j].1 * x[j]).sum::<f64>()
    }
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Weighted mean log loss of a model on rows, each with its source's
/// intercept (`within` = true) or with the deployed bias.
pub fn log_loss(fit: &Fit, rows: &[Row], within: bool) -> f64 {
    let (mut loss, mut total) = (0.0, 0.0);
    for r in rows {
        let z = if within {
            fit.fitted_logit(r)
        } else {
            fit.logit(&r.x)
        };
        let p = sigmoid(z).clamp(1e-12, 1.0 - 1e-12);
        loss -= r.weight * if r.hard { p.ln() } else { (1.0 - p).ln() };
        total += r.weight;
    }
    loss / total
}

/// Fits the weights and one intercept per source on rows, with L2 strength
/// `lambda` (per unit of total sample weight) on the weights, towards
/// `prior`. With an intercept per source, a weight is learned only from
/// differences *within* a source: what is constant across a source's items
/// (its format, its harness text, its typical length) cannot be learned.
pub fn fit(rows: &[Row], prior: &FeatureWeights, lambda: f64) -> Fit {
    let groups = rows.iter().map(|r| r.group + 1).max().unwrap_or(0);
    let n = FEATURE_COUNT + groups;
    let prior_w: Vec<f64> = prior.named().iter().map(|(_, v)| *v).collect();
    let mut theta = vec![0.0; n];
    for j in 0..FEATURE_COUNT {
        theta[j] = if SIGNS[j] == Sign::Fixed {
            prior_w[j]
        } else {
            0.0
        };
    }
    let objective = |t: &[f64]| -> f64 {
        let reg: f64 = (0..FEATURE_COUNT)
            .filter(|&j| SIGNS[j] != Sign::Fixed)
            .map(|j| (t[j] - prior_w[j]).powi(2))
            .sum();
        log_loss(&to_fit(t), rows, true) + 0.5 * lambda * reg
    };
    let mut current = objective(&theta);
    for _ in 0..200 {
        let (grad, hess) = gradient_hessian(&theta, rows, lambda, &prior_w);
        let Some(step) = solve(hess, grad) else { break };
        // Damped, projected step: halve until the objective does not grow.
        let mut scale = 1.0;
        let mut moved = false;
        for _ in 0..30 {
            let mut next = theta.clone();
            for (t, s) in next.iter_mut().zip(&step) {
                *t -= scale * s;
            }
            project(&mut next, &prior_w);
            let value = objective(&next);
            if value <= current {
                moved = current - value > 1e-12;
                theta = next;
                current = value;
                break;
            }
            scale /= 2.0;
        }
        if !moved {
            break;
        }
    }
    to_fit(&theta)
}

fn to_fit(t: &[f64]) -> Fit {
    let mut w = [0.0; FEATURE_COUNT];
    w.copy_from_slice(&t[..FEATURE_COUNT]);
    let intercepts = t[FEATURE_COUNT..].to_vec();
    let bias = if intercepts.is_empty() {
        0.0
    } else {
        intercepts.iter().sum::<f64>() / intercepts.len() as f64
    };
    Fit {
        bias,
        weights: FeatureWeights::from_values(w),
        intercepts,
    }
}

/// Clamps each weight to its allowed sign; fixed ones back to the prior.
fn project(t: &mut [f64], prior_w: &[f64]) {
    for j in 0..FEATURE_COUNT {
        let w = &mut t[j];
        match SIGNS[j] {
            Sign::Up => *w = w.max(0.0),
            Sign::Down => *w = w.min(0.0),
            Sign::Fixed => *w = prior_w[j],
        }
    }
}

/// Gradient and Hessian of the mean weighted log loss plus the L2 term.
/// Fixed features get an identity row, so their step is zero.
fn gradient_hessian(
    t: &[f64],
    rows: &[Row],
    lambda: f64,
    prior_w: &[f64],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = t.len();
    let fit = to_fit(t);
    let total: f64 = rows.iter().map(|r| r.weight).sum();
    let mut g = vec![0.0; n];
    let mut h = vec![vec![0.0; n]; n];
    let mut x = vec![0.0; n];
    for r in rows {
        let p = sigmoid(fit.fitted_logit(r));
        x.iter_mut().for_each(|v| *v = 0.0);
        x[..FEATURE_COUNT].copy_from_slice(&r.x);
        x[FEATURE_COUNT + r.group] = 1.0;
        let err = r.weight * (p - f64::from(u8::from(r.hard))) / total;
        let curv = r.weight * p * (1.0 - p) / total;
        for a in 0..n {
            if x[a] == 0.0 {
                continue;
            }
            g[a] += err * x[a];
            for b in 0..n {
                h[a][b] += curv * x[a] * x[b];
            }
        }
    }
    for j in 0..FEATURE_COUNT {
        if SIGNS[j] == Sign::Fixed {
            g[j] = 0.0;
            h[j].iter_mut().for_each(|v| *v = 0.0);
            for row in h.iter_mut() {
                row[j] = 0.0;
            }
            h[j][j] = 1.0;
        } else {
            g[j] += lambda * (t[j] - prior_w[j]);
            h[j][j] += lambda;
        }
    }
    // A tiny ridge keeps the system solvable when a feature never varies.
    for (k, row) in h.iter_mut().enumerate() {
        row[k] += 1e-9;
    }
    (g, h)
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-15 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for (offset, row) in lower.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            for (v, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *v -= f * p;
            }
            b[col + 1 + offset] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// The fold of an item: a hash of its id, modulo [`FOLDS`].
pub fn fold(id: &str) -> u64 {
    super::dataset::id_hash(id) % FOLDS
}

/// Cross-validated log loss of each L2 strength, and out-of-fold
/// probabilities at the best one (for the calibration table).
pub struct Selection {
    /// `(lambda, mean held-out log loss)`, in [`LAMBDAS`] order.
    pub losses: Vec<(f64, f64)>,
    /// The chosen strength.
    pub lambda: f64,
    /// Out-of-fold P(hard) of every row at the chosen strength.
    pub held_out: Vec<f64>,
}

impl Selection {
    /// The held-out log loss of the chosen strength.
    pub fn best_loss(&self) -> f64 {
        self.losses
            .iter()
            .find(|(l, _)| *l == self.lambda)
            .map_or(f64::INFINITY, |(_, loss)| *loss)
    }
}

/// Picks the L2 strength by `FOLDS`-fold cross-validation on `rows`.
pub fn select(rows: &[Row], prior: &FeatureWeights) -> Selection {
    let mut losses = Vec::new();
    let mut best = (f64::INFINITY, LAMBDAS[0], Vec::new());
    for lambda in LAMBDAS {
        let mut held_out = vec![0.0; rows.len()];
        let mut loss = 0.0;
        for k in 0..FOLDS {
            let train: Vec<Row> = rows.iter().filter(|r| fold(&r.id) != k).cloned().collect();
            let test: Vec<Row> = rows.iter().filter(|r| fold(&r.id) == k).cloned().collect();
            let model = fit(&train, prior, lambda);
            loss += log_loss(&model, &test, true) / FOLDS as f64;
            for (i, r) in rows.iter().enumerate() {
                if fold(&r.id) == k {
                    held_out[i] = sigmoid(model.fitted_logit(r));
                }
            }
        }
        losses.push((lambda, loss));
        if loss < best.0 {
            best = (loss, lambda, held_out);
        }
    }
    Selection {
        losses,
        lambda: best.1,
        held_out: best.2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, size: f64, hard: bool) -> Row {
        let mut x = [0.0; FEATURE_COUNT];
        x[0] = size;
        Row {
            id: id.to_owned(),
            group: 0,
            x,
            hard,
            weight: 1.0,
        }
    }

    #[test]
    fn recovers_a_known_logistic_model() {
        // P(hard | size) = sigmoid(-2 + 1 * size), as exact weighted rows.
        let mut rows = Vec::new();
        for i in 0..=40 {
            let size = f64::from(i) / 5.0;
            let p = sigmoid(-2.0 + size);
            rows.push(Row {
                weight: p,
                ..row(&format!("h{i}"), size, true)
            });
            rows.push(Row {
                weight: 1.0 - p,
                ..row(&format!("e{i}"), size, false)
            });
        }
        let m = fit(
            &rows,
            &FeatureWeights::from_values([0.0; FEATURE_COUNT]),
            0.0,
        );
        assert!((m.bias + 2.0).abs() < 1e-3, "{m:?}");
        assert!((m.weights.prompt_size - 1.0).abs() < 1e-3, "{m:?}");
    }

    #[test]
    fn a_feature_with_the_wrong_sign_is_held_at_zero() {
        // Larger prompts are *easier* here; size may only push up, so 0.
        let rows: Vec<Row> = (0..20)
            .map(|i| row(&format!("r{i}"), f64::from(i % 10), i % 10 < 5))
            .collect();
        let m = fit(
            &rows,
            &FeatureWeights::from_values([0.0; FEATURE_COUNT]),
            0.01,
        );
        assert_eq!(m.weights.prompt_size, 0.0);
    }

    #[test]
    fn fixed_features_keep_their_prior() {
        let rows: Vec<Row> = (0..20)
            .map(|i| row(&format!("r{i}"), f64::from(i % 10), i % 10 >= 5))
            .collect();
        let mut prior = [0.0; FEATURE_COUNT];
        prior[10] = 0.5;
        prior[11] = 0.25;
        let m = fit(&rows, &FeatureWeights::from_values(prior), 0.01);
        assert_eq!(m.weights.tool_definitions, 0.5);
        assert_eq!(m.weights.conversation_turns, 0.25);
    }
}
