//! Share-GRPO and GRPO advantages as plain functions (no dataflow), following the R1-ShareVL
//! release (`verl/trainer/core_algos.py::compute_grpo_outcome_advantage` with the row layout of
//! `ray_trainer.py` / `vllm_rollout_spmd.py`; see `tests/golden/advantages/README.md`).
//!
//! For one seed question with m variants and n responses per variant, rewards `r[j][i]`:
//! - global: `(r - mean_g) / (std_g + eps)`; the reference computes mean/std over the m*m*n
//!   training rows, i.e. every response counted m times ([`StdConvention::Reference`]); the paper's
//!   reading uses the m*n unique responses ([`StdConvention::Paper`]). Same mean, different std.
//! - local: `(r - mean_j) / (std_j + eps)` over the n responses of variant j;
//! - row (k, j, i), response i of variant j under variant k's prompt: global + local if k == j,
//!   global only otherwise (so with m = 1 the advantage is twice the GRPO one, as in the release).
//!
//! std is unbiased (n - 1), eps = 1e-6 added to the std. Groups of one response have no unbiased
//! std: the release produces NaN (n = 1) or asserts (m = n = 1); here they are errors.

use serde::{Deserialize, Serialize};

/// The reference release's epsilon, added to the standard deviation.
pub const EPS: f64 = 1e-6;

/// Which population the global standard deviation is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StdConvention {
    /// Over the m*m*n training rows (each response counted m times), as the released code does.
    #[default]
    Reference,
    /// Over the m*n unique responses, as the paper's equations read.
    Paper,
}

impl std::str::FromStr for StdConvention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reference" => Ok(Self::Reference),
            "paper" => Ok(Self::Paper),
            other => Err(format!(
                "unknown std convention `{other}` (use reference or paper)"
            )),
        }
    }
}

/// Why advantages could not be computed for a group.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdvantageError {
    /// Fewer than two values: the unbiased standard deviation is undefined.
    #[error("{what} has {count} response(s); normalisation needs at least 2 (increase rollout n)")]
    TooFew {
        /// Which group (e.g. "variant 1").
        what: String,
        /// How many values it had.
        count: usize,
    },
    /// A reward is NaN or infinite.
    #[error("reward {value} is not finite")]
    NonFinite {
        /// The offending value.
        value: f64,
    },
    /// The rewards do not form an m x n grid.
    #[error("expected {expected} rewards for m = {m}, n = {n}, got {got}")]
    Shape {
        /// Variants.
        m: usize,
        /// Responses per variant.
        n: usize,
        /// m * n.
        expected: usize,
        /// Number of rewards given.
        got: usize,
    },
}

/// Mean and unbiased standard deviation of `values`, each counted `multiplicity` times.
pub fn mean_std(
    values: &[f64],
    multiplicity: usize,
    what: &str,
) -> Result<(f64, f64), AdvantageError> {
    let count = values.len() * multiplicity;
    if count < 2 {
        return Err(AdvantageError::TooFew {
            what: what.to_string(),
            count,
        });
    }
    if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
        return Err(AdvantageError::NonFinite { value });
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    let var = multiplicity as f64 * ss / (count - 1) as f64;
    Ok((mean, var.sqrt()))
}

/// `(r - mean) / (std + eps)` for every value.
fn standardise(values: &[f64], mean: f64, std: f64) -> Vec<f64> {
    values.iter().map(|r| (r - mean) / (std + EPS)).collect()
}

/// Plain GRPO advantages of one group: `(r - mean) / (std + eps)`, unbiased std.
pub fn grpo_advantages(rewards: &[f64]) -> Result<Vec<f64>, AdvantageError> {
    let (mean, std) = mean_std(rewards, 1, "the group")?;
    Ok(standardise(rewards, mean, std))
}

/// Dr. GRPO advantages of one group (Liu et al., "Understanding R1-Zero-Like Training"): `r -
/// mean`, without the division by the std that biases questions of low reward variance.
pub fn dr_grpo_advantages(rewards: &[f64]) -> Result<Vec<f64>, AdvantageError> {
    let (mean, _) = mean_std(rewards, 1, "the group")?;
    Ok(rewards.iter().map(|r| r - mean).collect())
}

/// RLOO advantages of one group (Ahmadian et al., "Back to Basics"): each response's reward minus
/// the mean of the *other* responses' rewards, `r_i - (sum_j r_j - r_i) / (n - 1)`.
pub fn rloo_advantages(rewards: &[f64]) -> Result<Vec<f64>, AdvantageError> {
    mean_std(rewards, 1, "the group")?;
    let n = rewards.len() as f64;
    let sum: f64 = rewards.iter().sum();
    Ok(rewards.iter().map(|r| r - (sum - r) / (n - 1.0)).collect())
}

/// The baseline of a one-group-per-seed estimator (see [`crate::NormalizeGrpo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupBaseline {
    /// GRPO: `(r - mean) / (std + eps)` ([`grpo_advantages`]).
    MeanStd,
    /// Dr. GRPO: `r - mean` ([`dr_grpo_advantages`]).
    Mean,
    /// RLOO: `r - mean of the others` ([`rloo_advantages`]).
    LeaveOneOut,
}

impl GroupBaseline {
    /// The group's advantages under this baseline.
    pub fn advantages(self, rewards: &[f64]) -> Result<Vec<f64>, AdvantageError> {
        match self {
            Self::MeanStd => grpo_advantages(rewards),
            Self::Mean => dr_grpo_advantages(rewards),
            Self::LeaveOneOut => rloo_advantages(rewards),
        }
    }
}

/// Local advantages of one variant's n responses.
pub fn local_advantages(rewards: &[f64], variant: u32) -> Result<Vec<f64>, AdvantageError> {
    let (mean, std) = mean_std(rewards, 1, &format!("variant {variant}"))?;
    Ok(standardise(rewards, mean, std))
}

/// Global advantages of a seed's m*n responses (any order) under a std convention.
pub fn global_advantages(
    rewards: &[f64],
    m: usize,
    convention: StdConvention,
) -> Result<Vec<f64>, AdvantageError> {
    let multiplicity = match convention {
        StdConvention::Reference => m.max(1),
        StdConvention::Paper => 1,
    };
    let (mean, std) = mean_std(rewards, multiplicity, "the seed")?;
    Ok(standardise(rewards, mean, std))
}

/// Global and local advantages of one seed, responses in (variant, sample) order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedAdvantages {
    /// Number of variants.
    pub m: usize,
    /// Responses per variant.
    pub n: usize,
    /// Global advantage of response `j * n + i`.
    pub global: Vec<f64>,
    /// Local advantage of response `j * n + i`.
    pub local: Vec<f64>,
}

impl SeedAdvantages {
    /// The advantage of training row (context k, variant j, sample i).
    pub fn row(&self, k: usize, j: usize, i: usize) -> f64 {
        let idx = j * self.n + i;
        if k == j {
            self.global[idx] + self.local[idx]
        } else {
            self.global[idx]
        }
    }

    /// All m*m*n rows as `(k, j, i, advantage)` in (k, j, i) order — the release's layout.
    pub fn rows(&self) -> impl Iterator<Item = (usize, usize, usize, f64)> + '_ {
        (0..self.m).flat_map(move |k| {
            (0..self.m).flat_map(move |j| (0..self.n).map(move |i| (k, j, i, self.row(k, j, i))))
        })
    }
}

/// Share-GRPO advantages of one seed: `rewards[j * n + i]` is response i of variant j.
pub fn share_grpo_advantages(
    rewards: &[f64],
    m: usize,
    n: usize,
    convention: StdConvention,
) -> Result<SeedAdvantages, AdvantageError> {
    if rewards.len() != m * n || m == 0 {
        return Err(AdvantageError::Shape {
            m,
            n,
            expected: m * n,
            got: rewards.len(),
        });
    }
    let global = global_advantages(rewards, m, convention)?;
    let mut local = Vec::with_capacity(rewards.len());
    for (j, chunk) in rewards.chunks(n).enumerate() {
        local.extend(local_advantages(chunk, j as u32)?);
    }
    Ok(SeedAdvantages {
        m,
        n,
        global,
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn grpo_matches_hand_computation() -> Result<(), AdvantageError> {
        // mean 0.5, unbiased std of [1, 0.5, 0] is 0.5.
        let a = grpo_advantages(&[1.0, 0.5, 0.0])?;
        assert!(close(a[0], 0.5 / (0.5 + EPS)) && close(a[1], 0.0) && close(a[2], -a[0]));
        // All ties: advantage vanishes.
        assert_eq!(grpo_advantages(&[1.0, 1.0, 1.0])?, vec![0.0; 3]);
        Ok(())
    }

    #[test]
    fn reference_std_counts_each_response_m_times() -> Result<(), AdvantageError> {
        let r = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]; // m = 2, n = 3
        let ss: f64 = r.iter().map(|v| (v - 0.5f64).powi(2)).sum();
        let paper = global_advantages(&r, 2, StdConvention::Paper)?;
        let refr = global_advantages(&r, 2, StdConvention::Reference)?;
        assert!(close(paper[0], 0.5 / ((ss / 5.0).sqrt() + EPS)));
        assert!(close(refr[0], 0.5 / ((2.0 * ss / 11.0).sqrt() + EPS)));
        Ok(())
    }

    #[test]
    fn rows_add_local_on_the_diagonal_only() -> Result<(), AdvantageError> {
        let r = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0];
        let s = share_grpo_advantages(&r, 2, 3, StdConvention::Reference)?;
        let rows: Vec<_> = s.rows().collect();
        assert_eq!(rows.len(), 12);
        assert_eq!((rows[0].0, rows[0].1, rows[0].2), (0, 0, 0));
        assert!(close(rows[0].3, s.global[0] + s.local[0]));
        assert!(close(rows[3].3, s.global[3])); // k = 0, j = 1, i = 0
        assert!(close(rows[9].3, s.global[3] + s.local[3])); // k = 1, j = 1, i = 0
        Ok(())
    }

    #[test]
    fn m_one_is_twice_grpo() -> Result<(), AdvantageError> {
        let r = [0.9, 0.1, 0.0, 1.0];
        let s = share_grpo_advantages(&r, 1, 4, StdConvention::Reference)?;
        let g = grpo_advantages(&r)?;
        for (row, g) in s.rows().zip(g) {
            assert!(close(row.3, 2.0 * g));
        }
        Ok(())
    }

    #[test]
    fn degenerate_groups_are_errors_not_nans() {
        assert!(matches!(
            share_grpo_advantages(&[1.0, 0.0], 2, 1, StdConvention::Reference),
            Err(AdvantageError::TooFew { count: 1, .. })
        ));
        assert!(matches!(
            grpo_advantages(&[1.0]),
            Err(AdvantageError::TooFew { .. })
        ));
        assert!(matches!(
            grpo_advantages(&[1.0, f64::NAN]),
            Err(AdvantageError::NonFinite { .. })
        ));
        assert!(matches!(
            share_grpo_advantages(&[1.0, 0.0, 1.0], 2, 2, StdConvention::Paper),
            Err(AdvantageError::Shape { .. })
        ));
    }
}
