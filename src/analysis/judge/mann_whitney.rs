//! Mann–Whitney U (Wilcoxon rank-sum) test, Hodges–Lehmann shift with exact order-statistic
//! confidence intervals, and a Kayenta-compatible classification and scoring on top.
//!
//! Everything here is pure and deterministic: no I/O, no clock, no random noise. Conventions:
//! the *canary* plays the role of R's `x` and the *baseline* of `y`; `U` is the canary's statistic
//! (pairs with canary > baseline, ties counted ½); shifts are `canary − baseline`.
//!
//! Differences from Kayenta's `NetflixACAJudge-v1.0`, all deliberate:
//! * the confidence interval and the estimate are exact order statistics of the pairwise
//!   differences (no root finder with an absolute tolerance), so verdicts are scale-invariant;
//! * exact (tie-aware, conditional) p-values when both samples have at most
//!   [`EXACT_SAMPLE_LIMIT`] values; the interval's ranks are R's (exact without ties below 50
//!   values per arm, else the tie- and continuity-corrected normal statistic's roots);
//! * constant-but-different series are tested as they are, without Gaussian noise;
//! * an empty series is `Nodata` (never a silent `Pass`, even with `nanStrategy: replace`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Largest per-arm sample size for which exact distributions are computed (as R's
/// `wilcox.test`, which switches to the normal approximation at 50). The dynamic programme over
/// rank sums costs O(N · min(n, m) · max rank sum), about 20 million additions at 50 + 50.
pub const EXACT_SAMPLE_LIMIT: usize = 50;

/// R's `wilcox.test` computes the exact interval only when both samples have fewer values than
/// this (and no ties).
const R_EXACT_INTERVAL_LIMIT: usize = 50;

/// Below this many pairwise differences they are materialised and sorted; above it the
/// order statistics are selected in the implicit sorted matrix without materialising it.
const MATERIALISE_LIMIT: u64 = 1 << 16;

/// Relative slack under which two computed quantities count as equal in the classification
/// rules: it absorbs floating-point rounding of the data's units (e.g. after multiplying by
/// 1e-6), so that a tie in exact arithmetic decides the same way at every scale.
const RELATIVE_TIE: f64 = 1e-9;

/// Errors of the rank test; each variant names the action that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MannWhitneyError {
    /// One of the samples is empty.
    #[error("cannot rank empty samples (n_canary={n_canary}, n_baseline={n_baseline})")]
    RankSamples {
        /// Canary sample size.
        n_canary: usize,
        /// Baseline sample size.
        n_baseline: usize,
    },
    /// A sample contains NaN or an infinity (clean it with a [`NanStrategy`] first).
    #[error("cannot rank a non-finite value {value} in the {arm} sample")]
    RankNonFiniteValue {
        /// `canary` or `baseline`.
        arm: &'static str,
        /// The offending value.
        value: f64,
    },
    /// The confidence level is not strictly between 0 and 1.
    #[error("confidence must be strictly between 0 and 1, got {confidence}")]
    ValidateConfidence {
        /// The rejected level.
        confidence: f64,
    },
    /// Exact distributions were requested beyond [`EXACT_SAMPLE_LIMIT`].
    #[error(
        "cannot compute the exact distribution for n_canary={n}, n_baseline={m} (limit {EXACT_SAMPLE_LIMIT} per arm)"
    )]
    ComputeExactDistribution {
        /// Canary sample size.
        n: usize,
        /// Baseline sample size.
        m: usize,
    },
}

/// When to compute exact (permutation) p-values and CI ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExactMode {
    /// Exact when both samples have at most [`EXACT_SAMPLE_LIMIT`] values.
    #[default]
    Auto,
    /// Always the normal approximation (Kayenta's behaviour).
    Never,
}

/// Options of [`mann_whitney`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitneyOptions {
    /// Two-sided confidence level of the shift interval, e.g. 0.98.
    pub confidence: f64,
    /// Exact or asymptotic p-values and CI ranks.
    pub exact: ExactMode,
}

impl Default for MannWhitneyOptions {
    fn default() -> Self {
        Self {
            confidence: 0.98,
            exact: ExactMode::Auto,
        }
    }
}

/// p-values for the three alternatives (canary vs baseline).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PValues {
    /// H1: the distributions differ by a shift in either direction.
    pub two_sided: f64,
    /// H1: the canary is stochastically larger.
    pub greater: f64,
    /// H1: the canary is stochastically smaller.
    pub less: f64,
}

/// How the confidence interval ranks were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IntervalMethod {
    /// Quantiles of the exact null distribution of U (Bauer's construction); as R, only for
    /// untied samples of fewer than 50 values each.
    Exact,
    /// Normal approximation with tie-corrected sd and continuity correction (R's asymptotic
    /// `wilcox.test(conf.int = TRUE)`).
    Asymptotic,
}

/// Result of the two-sample rank test with the Hodges–Lehmann shift and its interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MannWhitneyResult {
    /// Canary sample size.
    pub n_canary: usize,
    /// Baseline sample size.
    pub n_baseline: usize,
    /// The canary's U: #(canary > baseline) + ½ #(ties). Equals R's `W` for `wilcox.test(canary, baseline)`.
    pub u: f64,
    /// Tie-corrected standard deviation of U under H0.
    pub sd_u: f64,
    /// Asymptotic p-values with continuity correction (R's default, SciPy's `use_continuity=True`).
    pub p_value: PValues,
    /// Asymptotic p-values without continuity correction.
    pub p_value_uncorrected: PValues,
    /// Exact conditional (tie-aware) p-values, when computed.
    pub p_value_exact: Option<PValues>,
    /// Hodges–Lehmann estimate: median of all differences canary − baseline.
    pub hodges_lehmann: f64,
    /// Lower end of the shift confidence interval (an actual pairwise difference).
    pub ci_lower: f64,
    /// Upper end of the shift confidence interval (an actual pairwise difference).
    pub ci_upper: f64,
    /// 1-based ranks of `ci_lower` and `ci_upper` among the sorted pairwise differences.
    pub ci_ranks: (u64, u64),
    /// Confidence level of the interval.
    pub confidence: f64,
    /// How the interval ranks were obtained.
    pub interval_method: IntervalMethod,
}

/// Runs the Mann–Whitney test on two finite, non-empty samples (any order).
pub fn mann_whitney(
    canary: &[f64],
    baseline: &[f64],
    options: &MannWhitneyOptions,
) -> Result<MannWhitneyResult, MannWhitneyError> {
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(MannWhitneyError::ValidateConfidence {
            confidence: options.confidence,
        });
    }
    let canary = sorted_finite(canary, "canary")?;
    let baseline = sorted_finite(baseline, "baseline")?;
    let (n, m) = (canary.len(), baseline.len());
    if n == 0 || m == 0 {
        return Err(MannWhitneyError::RankSamples {
            n_canary: n,
            n_baseline: m,
        });
    }
    let exact =
        options.exact == ExactMode::Auto && n <= EXACT_SAMPLE_LIMIT && m <= EXACT_SAMPLE_LIMIT;
    let ranks = rank_pooled(&canary, &baseline, exact);
    let nm = (n as f64) * (m as f64);
    let big_n = (n + m) as f64;
    let u = (ranks.doubled_rank_sum as f64 - (n as f64) * (n as f64 + 1.0)) / 2.0;
    let tie_fraction = if big_n > 1.0 {
        ranks.tie_term / (big_n * (big_n - 1.0))
    } else {
        0.0
    };
    let sd_u = (nm / 12.0 * ((big_n + 1.0) - tie_fraction)).max(0.0).sqrt();
    let p_value = asymptotic_p_values(u, nm / 2.0, sd_u, true);
    let p_value_uncorrected = asymptotic_p_values(u, nm / 2.0, sd_u, false);

    let p_value_exact = match &ranks.doubled_scores {
        Some(scores) => Some(exact_p_values(scores, &ranks, n, m)?),
        None => None,
    };

    let total = (n as u64) * (m as u64);
    let alpha = 1.0 - options.confidence;
    // R's `wilcox.test` (and so Kayenta's port of it) uses the exact interval only for untied
    // samples of fewer than 50 values each; with any tie it root-finds the tie-corrected,
    // continuity-corrected normal statistic, and so does this.
    let exact_interval =
        exact && n < R_EXACT_INTERVAL_LIMIT && m < R_EXACT_INTERVAL_LIMIT && ranks.tie_term == 0.0;
    let (ci_ranks, interval_method) = if exact_interval {
        (exact_interval_ranks(n, m, alpha)?, IntervalMethod::Exact)
    } else {
        // Within-arm ties only: cross ties exist only exactly at a pairwise difference, where the
        // normal-approximation statistic jumps anyway.
        let within = tie_term(&canary) + tie_term(&baseline);
        let sd_within = (nm / 12.0 * ((big_n + 1.0) - within / (big_n * (big_n - 1.0).max(1.0))))
            .max(0.0)
            .sqrt();
        (
            asymptotic_interval_ranks(total, alpha, sd_within),
            IntervalMethod::Asymptotic,
        )
    };
    let median_low_rank = total.div_ceil(2);
    let wanted = [ci_ranks.0, ci_ranks.1, median_low_rank];
    let stats = pairwise_difference_order_statistics(&canary, &baseline, &wanted);
    let hodges_lehmann = if total.is_multiple_of(2) {
        let above = next_pairwise_difference(&canary, &baseline, stats[2], median_low_rank);
        stats[2] / 2.0 + above / 2.0
    } else {
        stats[2]
    };
    Ok(MannWhitneyResult {
        n_canary: n,
        n_baseline: m,
        u,
        sd_u,
        p_value,
        p_value_uncorrected,
        p_value_exact,
        hodges_lehmann,
        ci_lower: stats[0],
        ci_upper: stats[1],
        ci_ranks,
        confidence: options.confidence,
        interval_method,
    })
}

fn sorted_finite(values: &[f64], arm: &'static str) -> Result<Vec<f64>, MannWhitneyError> {
    if let Some(&value) = values.iter().find(|v| !v.is_finite()) {
        return Err(MannWhitneyError::RankNonFiniteValue { arm, value });
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    // -0.0 and 0.0 must tie.
    for v in &mut sorted {
        if *v == 0.0 {
            *v = 0.0;
        }
    }
    Ok(sorted)
}

/// Σ (t³ − t) over the tie groups of a sorted sample.
fn tie_term(sorted: &[f64]) -> f64 {
    let mut term = 0.0;
    let mut start = 0;
    while start < sorted.len() {
        let mut end = start + 1;
        while end < sorted.len() && sorted[end] == sorted[start] {
            end += 1;
        }
        let t = (end - start) as f64;
        term += t * t * t - t;
        start = end;
    }
    term
}

struct PooledRanks {
    /// Σ 2·midrank over the canary (an integer even with ties).
    doubled_rank_sum: u64,
    /// Σ (t³ − t) over the pooled tie groups.
    tie_term: f64,
    /// Doubled midranks of the whole pooled sample, ascending (only for exact computations).
    doubled_scores: Option<Vec<u64>>,
}

fn rank_pooled(canary: &[f64], baseline: &[f64], keep_scores: bool) -> PooledRanks {
    let (n, m) = (canary.len(), baseline.len());
    let mut scores = keep_scores.then(|| Vec::with_capacity(n + m));
    let (mut i, mut j) = (0usize, 0usize);
    let mut position = 0u64; // number of pooled values already ranked
    let mut doubled_rank_sum = 0u64;
    let mut tie_term = 0.0;
    while i < n || j < m {
        let value = match (canary.get(i), baseline.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let from_canary = canary[i..].iter().take_while(|&&v| v == value).count();
        let from_baseline = baseline[j..].iter().take_while(|&&v| v == value).count();
        let t = (from_canary + from_baseline) as u64;
        // Positions position+1 ..= position+t share the midrank; doubled it is an integer.
        let doubled_midrank = 2 * position + t + 1;
        doubled_rank_sum += doubled_midrank * from_canary as u64;
        let tf = t as f64;
        tie_term += tf * tf * tf - tf;
        if let Some(s) = scores.as_mut() {
            s.extend(std::iter::repeat_n(doubled_midrank, t as usize));
        }
        i += from_canary;
        j += from_baseline;
        position += t;
    }
    PooledRanks {
        doubled_rank_sum,
        tie_term,
        doubled_scores: scores,
    }
}

fn standard_normal() -> Normal {
    Normal::standard()
}

fn asymptotic_p_values(u: f64, mean: f64, sd: f64, continuity: bool) -> PValues {
    let deviation = u - mean;
    if sd <= 0.0 {
        // All observations tied: U sits at its mean; no evidence in any direction.
        return PValues {
            two_sided: 1.0,
            greater: 1.0,
            less: 1.0,
        };
    }
    let normal = standard_normal();
    let correction = if continuity { 0.5 } else { 0.0 };
    let greater = normal.sf((deviation - correction) / sd);
    let less = normal.cdf((deviation + correction) / sd);
    let two_sided_z = (deviation.abs() - correction).max(0.0) / sd;
    let two_sided = (2.0 * normal.sf(two_sided_z)).min(1.0);
    PValues {
        two_sided,
        greater: greater.min(1.0),
        less: less.min(1.0),
    }
}

/// Number of ways to choose `k` of `scores` (ascending, non-negative integers) with each sum,
/// as a vector indexed by the sum. Counts are kept in f64 (C(100, 50) ≈ 1e29 fits).
fn subset_sum_counts(scores: &[u64], k: usize) -> Vec<f64> {
    let max_sum: u64 = scores.iter().rev().take(k).sum();
    let width = max_sum as usize + 1;
    let mut table = vec![0.0f64; (k + 1) * width];
    table[0] = 1.0;
    // reach[j] = largest sum reachable with j items so far.
    let mut reach = vec![0usize; k + 1];
    for (processed, &score) in scores.iter().enumerate() {
        let score = score as usize;
        let top = k.min(processed + 1);
        for j in (1..=top).rev() {
            let new_reach = reach[j].max(reach[j - 1] + score);
            let (lower, upper) = table.split_at_mut(j * width);
            let previous = &lower[(j - 1) * width..];
            let current = &mut upper[..width];
            for s in score..=reach[j - 1] + score {
                current[s] += previous[s - score];
            }
            reach[j] = new_reach;
        }
    }
    table.split_off(k * width)
}

fn exact_p_values(
    scores: &[u64],
    ranks: &PooledRanks,
    n: usize,
    m: usize,
) -> Result<PValues, MannWhitneyError> {
    if n > EXACT_SAMPLE_LIMIT || m > EXACT_SAMPLE_LIMIT {
        return Err(MannWhitneyError::ComputeExactDistribution { n, m });
    }
    // Enumerate subsets of the smaller arm; the canary's doubled U follows from it.
    let canary_is_chosen = n <= m;
    let k = if canary_is_chosen { n } else { m };
    let counts = subset_sum_counts(scores, k);
    let total_doubled: u64 = scores.iter().sum();
    let nn = n as u64;
    let observed_doubled_u = ranks.doubled_rank_sum - nn * (nn + 1);
    let total: f64 = counts.iter().sum();
    let (mut at_least, mut at_most) = (0.0, 0.0);
    for (sum, &count) in counts.iter().enumerate() {
        if count == 0.0 {
            continue;
        }
        let canary_sum = if canary_is_chosen {
            sum as u64
        } else {
            total_doubled - sum as u64
        };
        let doubled_u = canary_sum - nn * (nn + 1);
        if doubled_u >= observed_doubled_u {
            at_least += count;
        }
        if doubled_u <= observed_doubled_u {
            at_most += count;
        }
    }
    let greater = (at_least / total).min(1.0);
    let less = (at_most / total).min(1.0);
    Ok(PValues {
        two_sided: (2.0 * greater.min(less)).min(1.0),
        greater,
        less,
    })
}

/// Exact CI ranks as R's `wilcox.test(exact = TRUE, conf.int = TRUE)`: `qu = qwilcox(α/2)`
/// (at least 1), interval `[D_(qu), D_(nm − qu + 1)]`. Uses the untied null distribution of U.
fn exact_interval_ranks(n: usize, m: usize, alpha: f64) -> Result<(u64, u64), MannWhitneyError> {
    if n > EXACT_SAMPLE_LIMIT || m > EXACT_SAMPLE_LIMIT {
        return Err(MannWhitneyError::ComputeExactDistribution { n, m });
    }
    let k = n.min(m);
    let scores: Vec<u64> = (1..=(n + m) as u64).collect();
    let counts = subset_sum_counts(&scores, k);
    let offset = (k * (k + 1) / 2) as u64; // smallest rank sum
    let total: f64 = counts.iter().sum();
    let mut cumulative = 0.0;
    let mut quantile = 0u64;
    for (sum, &count) in counts.iter().enumerate().skip(offset as usize) {
        cumulative += count;
        if cumulative / total >= alpha / 2.0 * (1.0 - 1e-12) {
            quantile = sum as u64 - offset;
            break;
        }
    }
    let qu = quantile.max(1);
    let total_pairs = (n as u64) * (m as u64);
    Ok((qu, total_pairs - qu + 1))
}

/// Asymptotic CI ranks: the points where R's continuity-corrected statistic
/// `(U(d) − nm/2 ∓ ½)/σ` crosses `±z`, i.e. ranks `nm − ⌊nm/2 ± (zσ + ½)⌋`, clamped to [1, nm].
fn asymptotic_interval_ranks(total: u64, alpha: f64, sd: f64) -> (u64, u64) {
    let z = standard_normal().inverse_cdf(1.0 - alpha / 2.0);
    let half = total as f64 / 2.0;
    let reach = z * sd + 0.5;
    let rank = |c: f64| -> u64 {
        let r = total as f64 - c.floor();
        r.clamp(1.0, total as f64) as u64
    };
    (rank(half + reach), rank(half - reach))
}

/// Order statistics (1-based ranks) of the pairwise differences `canary_i − baseline_j` of two
/// sorted samples, without materialising them when there are many.
pub fn pairwise_difference_order_statistics(
    canary_sorted: &[f64],
    baseline_sorted: &[f64],
    ranks: &[u64],
) -> Vec<f64> {
    let total = canary_sorted.len() as u64 * baseline_sorted.len() as u64;
    if total <= MATERIALISE_LIMIT {
        let mut all: Vec<f64> = canary_sorted
            .iter()
            .flat_map(|&c| baseline_sorted.iter().map(move |&b| c - b))
            .collect();
        all.sort_unstable_by(f64::total_cmp);
        return ranks
            .iter()
            .map(|&r| all[(r.clamp(1, total) - 1) as usize])
            .collect();
    }
    ranks
        .iter()
        .map(|&r| select_pairwise_difference(canary_sorted, baseline_sorted, r.clamp(1, total) - 1))
        .collect()
}

/// Given `value` = the `rank`-th smallest (1-based) pairwise difference, the `rank + 1`-th:
/// `value` again when it is tied, else the smallest difference above it (one O(n + m) sweep).
pub fn next_pairwise_difference(x: &[f64], y: &[f64], value: f64, rank: u64) -> f64 {
    let m = y.len();
    let cell = |i: usize, j: usize| x[i] - y[m - 1 - j];
    let mut j = m;
    let mut at_most = 0u64;
    let mut smallest_above = f64::INFINITY;
    for i in 0..x.len() {
        while j > 0 && cell(i, j - 1) > value {
            j -= 1;
        }
        at_most += j as u64;
        if j < m {
            smallest_above = smallest_above.min(cell(i, j));
        }
    }
    if at_most > rank || !smallest_above.is_finite() {
        value
    } else {
        smallest_above
    }
}

/// The `k`-th smallest (0-based) of `x_i − y_j` for sorted `x`, `y`, exactly, in
/// O((n + m) · iterations) time and O(n) memory, without materialising the n·m differences.
///
/// Selection in the implicit sorted matrix `D[i][j] = x[i] − y[m−1−j]` (rows and columns
/// non-decreasing, also after rounding because subtraction is monotone). Each row keeps an
/// active column range that surely contains the answer's rank. Each iteration takes an evenly
/// spaced (deterministic) sample of the active cells, picks two sample order statistics that
/// bracket the target rank (Floyd–Rivest style), counts the cells below/at both pivots with
/// monotone sweeps, and shrinks every row's range to the cells strictly between them. A few
/// iterations shrink n·m = 10^10 cells to O(n + m), which are then selected directly. The
/// answer is always an actual computed difference.
pub fn select_pairwise_difference(x: &[f64], y: &[f64], k: u64) -> f64 {
    const SPREAD: f64 = 2.5; // sample standard deviations on each side of the target rank
    let (n, m) = (x.len(), y.len());
    let cell = |i: usize, j: usize| x[i] - y[m - 1 - j];
    let mut lo = vec![0usize; n];
    let mut hi = vec![m; n];
    // Per-row boundaries: cells < p_low and cells <= p_high (usual case), and all four
    // [lt_low, le_low, lt_high, le_high] for the tie fallback.
    let mut below_low_row = vec![0usize; n];
    let mut upto_high_row = vec![0usize; n];
    let mut boundaries = vec![[0usize; 4]; n];
    let mut prefix = vec![0u64; n + 1];
    let mut sample: Vec<f64> = Vec::with_capacity(8192);
    let gather_limit = (4 * (n + m)).max(4096) as u64;
    loop {
        for i in 0..n {
            prefix[i + 1] = prefix[i] + (hi[i] - lo[i]) as u64;
        }
        let active = prefix[n];
        let below: u64 = lo.iter().map(|&l| l as u64).sum();
        let target = k - below;
        if active <= gather_limit {
            let mut rest: Vec<f64> = Vec::with_capacity(active as usize);
            for i in 0..n {
                rest.extend((lo[i]..hi[i]).map(|j| cell(i, j)));
            }
            let (_, value, _) = rest.select_nth_unstable_by(target as usize, f64::total_cmp);
            return *value;
        }
        // About √active sample cells (256–16384): enough for a tight bracket, cheap to sort.
        let sample_size = (active as f64).sqrt().clamp(256.0, 16384.0) as usize;
        sample.clear();
        for s in 0..sample_size as u64 {
            let position = ((2 * s + 1) * active) / (2 * sample_size as u64);
            let row = prefix.partition_point(|&p| p <= position) - 1;
            sample.push(cell(row, lo[row] + (position - prefix[row]) as usize));
        }
        sample.sort_unstable_by(f64::total_cmp);
        let centre = (target as f64 + 0.5) / active as f64 * sample_size as f64;
        let reach = SPREAD * (sample_size as f64).sqrt();
        let pick = |r: f64| sample[(r.max(0.0) as usize).min(sample_size - 1)];
        let (p_low, p_high) = (pick(centre - reach), pick(centre + reach));
        // Usual case, two monotone pointers (boundaries only move left as the row index
        // grows): cells < p_low and cells <= p_high per row.
        let (mut a, mut d) = (m, m);
        let (mut below_low, mut upto_high) = (0u64, 0u64);
        for (i, (low_row, high_row)) in below_low_row
            .iter_mut()
            .zip(upto_high_row.iter_mut())
            .enumerate()
        {
            while a > 0 && cell(i, a - 1) >= p_low {
                a -= 1;
            }
            while d > 0 && cell(i, d - 1) > p_high {
                d -= 1;
            }
            *low_row = a;
            *high_row = d;
            below_low += a as u64;
            upto_high += d as u64;
        }
        if k < below_low {
            for (h, &b) in hi.iter_mut().zip(&below_low_row) {
                *h = (*h).min(b);
            }
            continue;
        }
        if k >= upto_high {
            for (l, &u) in lo.iter_mut().zip(&upto_high_row) {
                *l = (*l).max(u);
            }
            continue;
        }
        if p_low == p_high {
            return p_low;
        }
        if upto_high - below_low < active {
            // The answer lies in [p_low, p_high]: keep exactly those cells.
            for i in 0..n {
                lo[i] = lo[i].max(below_low_row[i]);
                hi[i] = hi[i].min(upto_high_row[i]);
            }
            continue;
        }
        // Every active cell lies in [p_low, p_high] (heavy ties): split at both pivots with
        // strict and non-strict counts so that a pivot leaves the active set.
        let (mut a, mut b, mut c, mut d) = (m, m, m, m);
        let mut counts = [0u64; 4];
        for (i, row) in boundaries.iter_mut().enumerate() {
            while a > 0 && cell(i, a - 1) >= p_low {
                a -= 1;
            }
            while b > 0 && cell(i, b - 1) > p_low {
                b -= 1;
            }
            while c > 0 && cell(i, c - 1) >= p_high {
                c -= 1;
            }
            while d > 0 && cell(i, d - 1) > p_high {
                d -= 1;
            }
            *row = [a, b, c, d];
            counts[0] += a as u64;
            counts[1] += b as u64;
            counts[2] += c as u64;
            counts[3] += d as u64;
        }
        let [lt_low, le_low, lt_high, le_high] = counts;
        if (lt_low..le_low).contains(&k) {
            return p_low;
        }
        if (lt_high..le_high).contains(&k) {
            return p_high;
        }
        let lower_slot = if k >= le_high {
            Some(3)
        } else if k >= le_low {
            Some(1)
        } else {
            None
        };
        let upper_slot = if k < lt_low {
            Some(0)
        } else if k < lt_high {
            Some(2)
        } else {
            None
        };
        for (i, row) in boundaries.iter().enumerate() {
            if let Some(slot) = lower_slot {
                lo[i] = lo[i].max(row[slot]);
            }
            if let Some(slot) = upper_slot {
                hi[i] = hi[i].min(row[slot]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kayenta-compatible classification
// ---------------------------------------------------------------------------------------------

/// Per-metric label, as Kayenta's `NetflixACAJudge` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Label {
    /// No significant deviation in a failing direction.
    Pass,
    /// The canary is significantly higher.
    High,
    /// The canary is significantly lower.
    Low,
    /// No data in one of the arms (neutral in the score).
    Nodata,
    /// No data in one of the arms for a `mustHaveData` metric (counts as a failure).
    NodataFailMetric,
    /// The classification could not be computed.
    Error,
}

impl Label {
    /// The three-way verdict this label stands for.
    pub fn verdict(self) -> super::Verdict {
        match self {
            Label::Pass => super::Verdict::Pass,
            Label::High | Label::Low | Label::NodataFailMetric => super::Verdict::Fail,
            Label::Nodata | Label::Error => super::Verdict::Inconclusive,
        }
    }
}

/// Which deviation fails the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Only an increase (canary higher) fails.
    Increase,
    /// Only a decrease fails.
    Decrease,
    /// Either fails.
    #[default]
    Either,
}

/// What to do with NaN and infinite values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NanStrategy {
    /// Drop them.
    #[default]
    Remove,
    /// Replace them with 0 (for counters that report nothing when zero).
    Replace,
}

/// Effect size measure of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EffectMeasure {
    /// mean(canary) / mean(baseline); undefined (no gate) when a mean is 0.
    #[default]
    MeanRatio,
    /// Common-language effect size U / (n·m): P(canary > baseline) + ½ P(tie).
    Cles,
}

/// Effect-size gate for High/Low and for marking them critical. Unset bounds take Kayenta's
/// defaults: 1.0 for `meanRatio`, 0.5 for `cles`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EffectSizeConfig {
    /// Measure used by all four bounds.
    pub measure: EffectMeasure,
    /// High requires effect ≥ this.
    pub allowed_increase: Option<f64>,
    /// Low requires effect ≤ this.
    pub allowed_decrease: Option<f64>,
    /// A High of a critical metric is critical when effect ≥ this.
    pub critical_increase: Option<f64>,
    /// A Low of a critical metric is critical when effect ≤ this.
    pub critical_decrease: Option<f64>,
}

impl EffectSizeConfig {
    fn neutral(&self) -> f64 {
        match self.measure {
            EffectMeasure::MeanRatio => 1.0,
            EffectMeasure::Cles => 0.5,
        }
    }
}

/// Outlier handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutlierStrategy {
    /// Keep every value.
    #[default]
    Keep,
    /// Drop values outside the IQR fences (per series).
    Remove,
}

/// IQR outlier removal: fences `min(P1, Q1 − k·IQR)` and `max(P99, Q3 + k·IQR)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutlierConfig {
    /// Keep or remove.
    pub strategy: OutlierStrategy,
    /// The IQR multiplier k.
    pub outlier_factor: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            strategy: OutlierStrategy::Keep,
            outlier_factor: 3.0,
        }
    }
}

/// Per-metric configuration, field names as Kayenta's `analysisConfigurations.canary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KayentaConfig {
    /// Which deviation fails.
    pub direction: Direction,
    /// Relative precision band: High needs `ci_lower > tolerance·|estimate|`.
    pub tolerance: f64,
    /// Confidence level of the shift interval.
    pub confidence: f64,
    /// NaN / infinity handling.
    pub nan_strategy: NanStrategy,
    /// A non-Pass result of this metric (past its critical effect gate) zeroes the score.
    pub critical: bool,
    /// Missing data fails the metric instead of being neutral.
    pub must_have_data: bool,
    /// Effect-size gate.
    pub effect_size: EffectSizeConfig,
    /// Outlier removal.
    pub outliers: OutlierConfig,
    /// Exact or asymptotic interval.
    pub exact: ExactMode,
}

impl Default for KayentaConfig {
    fn default() -> Self {
        Self {
            direction: Direction::Either,
            tolerance: 0.25,
            confidence: 0.98,
            nan_strategy: NanStrategy::Remove,
            critical: false,
            must_have_data: false,
            effect_size: EffectSizeConfig::default(),
            outliers: OutlierConfig::default(),
            exact: ExactMode::Auto,
        }
    }
}

/// Outcome of [`classify`] for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The label.
    pub label: Label,
    /// Whether this result zeroes the summary score (critical metric failing past its gate,
    /// or a critical metric without data).
    pub critical: bool,
    /// Human explanation with the numbers behind the label.
    pub reason: String,
    /// Canary values used (after NaN and outlier handling).
    pub n_canary: usize,
    /// Baseline values used.
    pub n_baseline: usize,
    /// The effect size of the gate, if defined.
    pub effect_size: Option<f64>,
    /// The rank test, when it ran.
    pub test: Option<MannWhitneyResult>,
}

/// Classifies one metric from raw samples, following `MannWhitneyClassifier` (statistics.md
/// §1.6) with the deterministic, exact-order-statistic test above.
pub fn classify(canary: &[f64], baseline: &[f64], config: &KayentaConfig) -> Classification {
    let canary = clean(canary, config);
    let baseline = clean(baseline, config);
    let (n, m) = (canary.len(), baseline.len());
    let sizes = format!("n_canary={n} n_baseline={m}");
    let base = |label: Label, critical: bool, reason: String| Classification {
        label,
        critical,
        reason,
        n_canary: n,
        n_baseline: m,
        effect_size: None,
        test: None,
    };
    if n == 0 || m == 0 {
        let label = if config.must_have_data && !config.critical {
            Label::NodataFailMetric
        } else {
            Label::Nodata
        };
        return base(
            label,
            config.critical,
            format!("no data after removing NaN/outliers; {sizes}"),
        );
    }
    let mut sorted_c = canary.clone();
    let mut sorted_b = baseline.clone();
    sorted_c.sort_unstable_by(f64::total_cmp);
    sorted_b.sort_unstable_by(f64::total_cmp);
    let options = MannWhitneyOptions {
        confidence: config.confidence,
        exact: config.exact,
    };
    let test = mann_whitney(&canary, &baseline, &options);
    // Identical data pass with the test's figures (U = n·m/2, p = 1, shift 0, as SciPy), not
    // with empty ones.
    let identical = if sorted_c == sorted_b {
        Some("data are identical".to_string())
    } else if sorted_c[0] == sorted_c[n - 1]
        && sorted_b[0] == sorted_b[m - 1]
        && sorted_c[0] == sorted_b[0]
    {
        Some(format!("all values equal {}", fmt_num(sorted_c[0])))
    } else {
        None
    };
    if let Some(why) = identical {
        let effect = test
            .as_ref()
            .ok()
            .and_then(|t| effect_size(&canary, &baseline, t, config.effect_size.measure));
        return Classification {
            effect_size: effect,
            test: test.ok(),
            ..base(Label::Pass, false, format!("{why}; {sizes}"))
        };
    }
    let test = match test {
        Ok(test) => test,
        Err(error) => {
            return base(
                Label::Error,
                false,
                format!("metric classification failed: {error}; {sizes}"),
            );
        }
    };
    let effect = effect_size(&canary, &baseline, &test, config.effect_size.measure);
    let neutral = config.effect_size.neutral();
    let allowed_increase = config.effect_size.allowed_increase.unwrap_or(neutral);
    let allowed_decrease = config.effect_size.allowed_decrease.unwrap_or(neutral);
    let critical_increase = config.effect_size.critical_increase.unwrap_or(neutral);
    let critical_decrease = config.effect_size.critical_decrease.unwrap_or(neutral);
    let band = config.tolerance * test.hodges_lehmann.abs();
    let (lower, upper) = (test.ci_lower, test.ci_upper);
    let gate_up = |bound: f64| effect.is_none_or(|e| ge_relative(e, bound));
    let gate_down = |bound: f64| effect.is_none_or(|e| ge_relative(bound, e));
    let watches_increase = matches!(config.direction, Direction::Increase | Direction::Either);
    let watches_decrease = matches!(config.direction, Direction::Decrease | Direction::Either);
    let level = format_percent(config.confidence);
    let interval = format!(
        "canary shift {} ({level} CI [{}, {}])",
        fmt_signed(test.hodges_lehmann),
        fmt_num(lower),
        fmt_num(upper)
    );
    let effect_text = match effect {
        Some(e) => format!(
            "{} {}",
            measure_name(config.effect_size.measure),
            fmt_num(e)
        ),
        None => format!("{} undefined", measure_name(config.effect_size.measure)),
    };
    let tol = fmt_num(config.tolerance);
    let (label, critical, verdict_text) = if watches_increase
        && gt_relative(lower, band)
        && gate_up(allowed_increase)
    {
        let critical = config.critical && gate_up(critical_increase);
        (
            Label::High,
            critical,
            format!("{interval} > tolerance {tol}·|estimate|, {effect_text}"),
        )
    } else if watches_decrease && gt_relative(-band, upper) && gate_down(allowed_decrease) {
        let critical = config.critical && gate_down(critical_decrease);
        (
            Label::Low,
            critical,
            format!("{interval} < −tolerance {tol}·|estimate|, {effect_text}"),
        )
    } else {
        (
            Label::Pass,
            false,
            format!("{interval} within tolerance {tol}·|estimate| or effect gate ({effect_text})"),
        )
    };
    Classification {
        label,
        critical,
        reason: format!("{verdict_text}; {sizes}"),
        n_canary: n,
        n_baseline: m,
        effect_size: effect,
        test: Some(test),
    }
}

fn measure_name(measure: EffectMeasure) -> &'static str {
    match measure {
        EffectMeasure::MeanRatio => "meanRatio",
        EffectMeasure::Cles => "cles",
    }
}

fn gt_relative(a: f64, b: f64) -> bool {
    a > b + RELATIVE_TIE * a.abs().max(b.abs())
}

fn ge_relative(a: f64, b: f64) -> bool {
    a >= b - RELATIVE_TIE * a.abs().max(b.abs())
}

fn effect_size(
    canary: &[f64],
    baseline: &[f64],
    test: &MannWhitneyResult,
    measure: EffectMeasure,
) -> Option<f64> {
    match measure {
        EffectMeasure::MeanRatio => {
            let mean_c = canary.iter().sum::<f64>() / canary.len() as f64;
            let mean_b = baseline.iter().sum::<f64>() / baseline.len() as f64;
            let ratio = mean_c / mean_b;
            (mean_c != 0.0 && mean_b != 0.0 && ratio.is_finite()).then_some(ratio)
        }
        EffectMeasure::Cles => Some(test.u / (test.n_canary as f64 * test.n_baseline as f64)),
    }
}

fn clean(values: &[f64], config: &KayentaConfig) -> Vec<f64> {
    let finite: Vec<f64> = match config.nan_strategy {
        NanStrategy::Remove => values.iter().copied().filter(|v| v.is_finite()).collect(),
        NanStrategy::Replace => values
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect(),
    };
    match config.outliers.strategy {
        OutlierStrategy::Keep => finite,
        OutlierStrategy::Remove => remove_outliers(finite, config.outliers.outlier_factor),
    }
}

/// Kayenta's IQR detector with `reduceSensitivity`: R-7 percentiles, fences
/// `[min(P1, Q1 − k·IQR), max(P99, Q3 + k·IQR)]`, values strictly outside dropped.
fn remove_outliers(values: Vec<f64>, factor: f64) -> Vec<f64> {
    if values.len() < 2 {
        return values;
    }
    let mut sorted = values.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    let q = |p: f64| percentile_r7(&sorted, p);
    let (q1, q3) = (q(0.25), q(0.75));
    let iqr = q3 - q1;
    let lower = q(0.01).min(q1 - factor * iqr);
    let upper = q(0.99).max(q3 + factor * iqr);
    let slack = RELATIVE_TIE * lower.abs().max(upper.abs());
    values
        .into_iter()
        .filter(|&v| v >= lower - slack && v <= upper + slack)
        .collect()
}

fn percentile_r7(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let below = h.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    sorted[below] + (h - below as f64) * (sorted[above] - sorted[below])
}

// ---------------------------------------------------------------------------------------------
// Scoring
// ---------------------------------------------------------------------------------------------

/// One metric's result as the scorer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredMetric {
    /// Metric name (for the reason).
    pub name: String,
    /// Groups the metric belongs to; none means group `default`.
    pub groups: Vec<String>,
    /// Its label.
    pub label: Label,
    /// Its result-level critical flag ([`Classification::critical`]).
    pub critical: bool,
    /// Muted metrics are reported but not scored.
    pub muted: bool,
}

/// Summary score thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreThresholds {
    /// The summary passes at or above this.
    pub pass: f64,
    /// Between marginal and pass it is Marginal; below, Fail.
    pub marginal: f64,
}

/// Classification of the summary score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScoreClass {
    /// score ≥ pass.
    Pass,
    /// marginal ≤ score < pass.
    Marginal,
    /// score < marginal.
    Fail,
}

/// Summary of a judgement over many metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    /// 0–100, rounded to two decimals.
    pub score: f64,
    /// Pass / Marginal / Fail.
    pub classification: ScoreClass,
    /// Per-group scores (0–100).
    pub group_scores: BTreeMap<String, f64>,
    /// Why.
    pub reason: String,
}

/// Kayenta's `WeightedSumScorer` and `ThresholdScoreClassifier` (statistics.md §1.7).
pub fn score(
    metrics: &[ScoredMetric],
    group_weights: &BTreeMap<String, f64>,
    thresholds: &ScoreThresholds,
) -> ScoreSummary {
    let scored: Vec<&ScoredMetric> = metrics.iter().filter(|m| !m.muted).collect();
    let mut tallies: BTreeMap<String, (u32, u32)> = BTreeMap::new(); // (pass, counted)
    for metric in &scored {
        let default_group = ["default".to_string()];
        let groups: &[String] = if metric.groups.is_empty() {
            &default_group
        } else {
            &metric.groups
        };
        for group in groups {
            let tally = tallies.entry(group.clone()).or_default();
            match metric.label {
                Label::Pass => {
                    tally.0 += 1;
                    tally.1 += 1;
                }
                Label::High | Label::Low | Label::NodataFailMetric => tally.1 += 1,
                Label::Nodata | Label::Error => {}
            }
        }
    }
    let group_scores: BTreeMap<String, f64> = tallies
        .iter()
        .map(|(g, &(pass, counted))| {
            let s = if counted == 0 {
                100.0
            } else {
                100.0 * f64::from(pass) / f64::from(counted)
            };
            (g.clone(), s)
        })
        .collect();
    let given: f64 = group_scores
        .keys()
        .filter_map(|g| group_weights.get(g))
        .sum();
    let unweighted = group_scores
        .keys()
        .filter(|g| !group_weights.contains_key(*g))
        .count();
    let share = if unweighted > 0 {
        (100.0 - given) / unweighted as f64
    } else {
        0.0
    };
    let raw: f64 = group_scores
        .iter()
        .map(|(g, s)| s * group_weights.get(g).copied().unwrap_or(share) / 100.0)
        .sum();
    let mut summary = (raw * 100.0).round() / 100.0;
    let mut reason = String::new();
    let failed_critical: Vec<&str> = scored
        .iter()
        .filter(|m| m.critical && m.label != Label::Pass)
        .map(|m| m.name.as_str())
        .collect();
    let nodata = scored.iter().filter(|m| m.label == Label::Nodata).count();
    if !failed_critical.is_empty() {
        summary = 0.0;
        let _ = write!(
            reason,
            "canary failed critical metric(s): {}",
            failed_critical.join(", ")
        );
    } else if !scored.is_empty() && nodata * 2 >= scored.len() {
        summary = 0.0;
        let _ = write!(
            reason,
            "{nodata} of {} metrics have no data (≥ 50%)",
            scored.len()
        );
    } else {
        let _ = write!(
            reason,
            "weighted group score {summary} (pass {}, marginal {})",
            thresholds.pass, thresholds.marginal
        );
    }
    let classification = if summary >= thresholds.pass {
        ScoreClass::Pass
    } else if summary >= thresholds.marginal {
        ScoreClass::Marginal
    } else {
        ScoreClass::Fail
    };
    ScoreSummary {
        score: summary,
        classification,
        group_scores,
        reason,
    }
}

// ---------------------------------------------------------------------------------------------
// Formatting for reasons
// ---------------------------------------------------------------------------------------------

/// A number with about four significant digits, plain when readable, scientific otherwise.
pub(crate) fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs();
    if (1e-3..1e6).contains(&magnitude) {
        let decimals = (3 - magnitude.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        format!("{x:.3e}")
    }
}

fn fmt_signed(x: f64) -> String {
    if x > 0.0 {
        format!("+{}", fmt_num(x))
    } else {
        fmt_num(x)
    }
}

pub(crate) fn format_percent(level: f64) -> String {
    format!("{}%", fmt_num(level * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_close(actual: f64, expected: f64, rel: f64) {
        assert!(
            (actual - expected).abs() <= rel * expected.abs().max(1e-12),
            "actual {actual} expected {expected}"
        );
    }

    fn run(canary: &[f64], baseline: &[f64], confidence: f64) -> MannWhitneyResult {
        let options = MannWhitneyOptions {
            confidence,
            exact: ExactMode::Auto,
        };
        mann_whitney(canary, baseline, &options).expect("valid samples")
    }

    // Reference values: SciPy 1.17.1 (`stats.mannwhitneyu`) plus brute-force Python in
    // /tmp/ref/ref.py of the judges worktree session, reproduced here for each case:
    //   a = stats.mannwhitneyu(x, y, alternative=ALT, method='asymptotic', use_continuity=C)
    //   exact tie-aware: enumerate itertools.combinations(range(N), n) over
    //     stats.rankdata(x + y) and count rank sums >= / <= the observed one
    //   HL: float(np.median(np.subtract.outer(x, y).ravel()))
    //   exact CI: sorted differences d, qu = max(1, qwilcox(alpha/2, n, m)) by enumeration,
    //     CI = (d[qu-1], d[n*m-qu])
    //   R-asymptotic CI: roots of R's corrected W(d) with sigma(d) recomputed at each d,
    //     located on the step function by scanning midpoints between differences.

    #[test]
    fn r_documentation_two_sample_example() {
        // R ?wilcox.test: x <- c(0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46)
        // y <- c(1.15, 0.88, 0.90, 0.74, 1.21); wilcox.test(x, y, alternative = "g")
        // prints W = 35, p-value = 0.1272 (exact). The two-sided exact p is 0.2544, which is
        // the figure sometimes quoted for "greater" by mistake.
        // SciPy: stats.mannwhitneyu(x, y, alternative='greater', method='exact').pvalue
        //   = 0.1272061272061272; asymptotic, use_continuity=False: 0.11033568095992347
        //   (R: "H&W large sample approximation" p-value = 0.1103).
        let x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
        let y = [1.15, 0.88, 0.90, 0.74, 1.21];
        let r = run(&x, &y, 0.95);
        assert_eq!(r.u, 35.0);
        let exact = r.p_value_exact.expect("small samples are exact");
        assert_close(exact.greater, 0.1272061272061272, 1e-12);
        assert_close(exact.two_sided, 0.2544122544122544, 1e-12);
        assert_close(exact.less, 0.8967698967698968, 1e-12);
        assert_close(r.p_value_uncorrected.greater, 0.11033568095992347, 1e-9);
        assert_close(r.p_value.two_sided, 0.24462360512698333, 1e-9);
        assert_close(r.p_value_uncorrected.two_sided, 0.22067136191984693, 1e-9);
        assert_close(r.p_value.less, 0.9007753482039937, 1e-9);
        // R: wilcox.test(x, y, conf.int = TRUE): 95% CI -0.15 0.76, difference in location 0.305.
        assert_close(r.hodges_lehmann, 0.30500000000000005, 1e-12);
        assert_eq!(r.ci_ranks, (9, 42));
        assert_close(r.ci_lower, -0.15000000000000002, 1e-12);
        assert_close(r.ci_upper, 0.7599999999999999, 1e-12);
        assert_eq!(r.interval_method, IntervalMethod::Exact);
    }

    #[test]
    fn tied_samples_use_conditional_exact_distribution() {
        let x = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0];
        let y = [0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0];
        let r = run(&x, &y, 0.98);
        assert_eq!(r.u, 44.5);
        assert_close(r.p_value.two_sided, 0.0560628116846353, 1e-9);
        assert_close(r.p_value_uncorrected.two_sided, 0.04880953465767796, 1e-9);
        assert_close(r.p_value.greater, 0.02803140584231765, 1e-9);
        let exact = r.p_value_exact.expect("exact");
        assert_close(exact.greater, 0.0331002331002331, 1e-12);
        assert_close(exact.less, 0.9855477855477855, 1e-12);
        assert_close(exact.two_sided, 0.0662004662004662, 1e-12);
        assert_eq!(r.hodges_lehmann, 1.0);
        assert_eq!(r.ci_ranks, (8, 49));
        assert_eq!((r.ci_lower, r.ci_upper), (0.0, 3.0));
    }

    #[test]
    fn zero_inflated_samples() {
        let x = [
            0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.02, 0.0, 0.03, 0.0, 0.0, 0.01,
        ];
        let y = [0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let r = run(&x, &y, 0.98);
        assert_eq!(r.u, 91.0);
        assert_close(r.p_value.two_sided, 0.13191487330599713, 1e-9);
        assert_close(r.p_value_uncorrected.two_sided, 0.12178796003634014, 1e-9);
        let exact = r.p_value_exact.expect("exact");
        assert_close(exact.greater, 0.10248447204968944, 1e-12);
        assert_close(exact.two_sided, 0.20496894409937888, 1e-12);
        assert_eq!(r.hodges_lehmann, 0.0);
        // Tied: R root-finds its corrected statistic (exact untied ranks would be 32 and 113);
        // R 4.2.2 prints the interval [-9.0e-05, 0.0100135], i.e. the differences 0 and 0.01.
        assert_eq!(r.ci_ranks, (34, 111));
        assert_eq!(r.interval_method, IntervalMethod::Asymptotic);
        assert_eq!((r.ci_lower, r.ci_upper), (0.0, 0.01));
    }

    #[test]
    fn heavy_tailed_samples() {
        let x = [0.3, 0.5, 0.9, 1.2, 2.5, 40.0, 0.7, 1.1, 3.3, 1000.0];
        let y = [0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 0.9, 25.0, 0.35];
        let r = run(&x, &y, 0.98);
        assert_eq!(r.u, 61.5);
        assert_close(r.p_value.two_sided, 0.19122361813768174, 1e-9);
        let exact = r.p_value_exact.expect("exact");
        assert_close(exact.greater, 0.09481694775812423, 1e-12);
        assert_close(exact.two_sided, 0.18963389551624846, 1e-12);
        assert_eq!(r.hodges_lehmann, 0.5);
        assert_eq!(r.ci_ranks, (17, 74));
        assert_close(r.ci_lower, -0.4, 1e-12);
        assert_close(r.ci_upper, 38.5, 1e-12);
    }

    #[test]
    fn larger_samples_use_the_asymptotic_interval_like_r() {
        // x = [((i*7919) % 1000)/100.0 + 0.5 for i in range(80)]
        // y = [((i*104729) % 997)/100.0 for i in range(70)]
        let x: Vec<f64> = (0..80u64)
            .map(|i| ((i * 7919) % 1000) as f64 / 100.0 + 0.5)
            .collect();
        let y: Vec<f64> = (0..70u64)
            .map(|i| ((i * 104_729) % 997) as f64 / 100.0)
            .collect();
        let r = run(&x, &y, 0.98);
        assert_eq!(r.u, 3194.0);
        assert!(r.p_value_exact.is_none());
        assert_close(r.p_value.two_sided, 0.13824316834619907, 1e-9);
        assert_close(r.p_value_uncorrected.two_sided, 0.13774295719399385, 1e-9);
        assert_close(r.p_value.greater, 0.06912158417309953, 1e-9);
        assert_close(r.hodges_lehmann, 0.7199999999999999, 1e-12);
        assert_eq!(r.interval_method, IntervalMethod::Asymptotic);
        assert_close(r.ci_lower, -0.4400000000000004, 1e-12);
        assert_close(r.ci_upper, 1.9300000000000006, 1e-12);
    }

    /// One reference case computed by R.
    struct RCase {
        canary: &'static [f64],
        baseline: &'static [f64],
        confidence: f64,
        /// `exact = FALSE` in R, `ExactMode::Never` here (Kayenta's setting).
        asymptotic_only: bool,
        u: f64,
        p_two_sided: f64,
        /// The pairwise differences nearest to R's interval ends.
        ci: (f64, f64),
        /// R's interval ends as printed (uniroot roots with tolerance 1e-4 when not exact).
        r_roots: (f64, f64),
    }

    // Provenance: R 4.2.2 (Debian r-base-core), script tests/fixtures/mann_whitney_reference.R
    // (seed 14; tied samples: values rounded to a grid, or one canary value copied into the
    // baseline; sizes 5..60 per arm, across R's 50-value switch to the normal statistic):
    //   wilcox.test(x, y, conf.int = TRUE, conf.level = CONF, correct = TRUE[, exact = FALSE])
    // With ties R root-finds its tie- and continuity-corrected statistic; `ci` is the pairwise
    // difference nearest each root (distinct differences are at least 0.003 apart, roots within 1e-4). Each case's comment
    // gives the interval the exact untied ranks would give (vigil's before issue 14).
    const R_CASES: &[RCase] = &[
        RCase {
            canary: &[
                11.766, 13.725, 13.223, 10.271, 12.176, 7.466, 9.603, 10.278, 9.441, 11.418,
            ],
            baseline: &[11.766, 12.887, 11.69, 9.201, 7.144],
            confidence: 0.95,
            asymptotic_only: false,
            u: 28.5,
            p_two_sided: 0.713058194262284,
            ci: (-2.249, 3.127),
            r_roots: (-2.24904451052982, 3.1270080783647),
        }, // untied exact ranks 9, 42 give -2.249, 3.127
        RCase {
            canary: &[
                14.66, 9.018, 8.099, 10.97, 12.073, 9.378, 10.363, 13.223, 10.717, 10.589, 9.638,
                10.914,
            ],
            baseline: &[
                14.66, 8.455, 8.163, 10.178, 8.485, 13.496, 10.341, 11.651, 9.966,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 61.5,
            p_two_sided: 0.618744902228405,
            ci: (-2.526, 2.485),
            r_roots: (-2.52596397911857, 2.4849827733266),
        }, // untied exact ranks 22, 87 give -2.273, 2.459
        RCase {
            canary: &[
                12.928, 10.493, 13.056, 14.311, 8.498, 10.814, 8.743, 10.533, 9.411, 9.507, 7.263,
                10.374, 13.846, 8.573, 9.652, 11.849, 9.738, 12.315, 11.225, 6.521,
            ],
            baseline: &[
                12.928, 9.685, 11.437, 11.605, 8.371, 7.546, 10.315, 7.126, 9.361, 12.468, 8.483,
                12.67, 11.793, 10.637, 8.659, 8.983, 12.834, 8.312, 12.278, 10.395,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 216.5,
            p_two_sided: 0.665144288181769,
            ci: (-1.699, 1.843),
            r_roots: (-1.6990229341326, 1.84300119284522),
        }, // untied exact ranks 115, 286 give -1.654, 1.834
        RCase {
            canary: &[12.0, 10.0, 10.0, 8.0, 11.0, 8.0, 9.0, 8.0],
            baseline: &[7.0, 9.0, 11.0, 11.0, 13.0, 11.0, 12.0],
            confidence: 0.98,
            asymptotic_only: false,
            u: 17.5,
            p_two_sided: 0.239894217129179,
            ci: (-3.0, 1.0),
            r_roots: (-3.00000416326155, 1.00002545223201),
        }, // untied exact ranks 8, 49 give -3.0, 1.0
        RCase {
            canary: &[
                10.5, 9.5, 10.5, 9.5, 11.0, 11.0, 12.5, 11.0, 10.0, 9.0, 11.0, 10.5, 10.0, 12.0,
                5.0,
            ],
            baseline: &[
                7.5, 10.0, 11.0, 9.5, 11.5, 10.0, 13.0, 11.0, 11.0, 11.0, 10.5, 12.5,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 72.0,
            p_two_sided: 0.385129978613768,
            ci: (-1.5, 1.0),
            r_roots: (-1.50005727489623, 0.999988800096081),
        }, // untied exact ranks 43, 138 give -1.5, 1.0
        RCase {
            canary: &[
                14.0, 9.0, 12.0, 15.0, 9.0, 14.0, 10.0, 11.0, 13.0, 14.0, 14.0, 11.0, 8.0, 10.0,
                13.0, 12.0, 12.0, 11.0, 10.0, 14.0, 7.0, 12.0, 14.0, 14.0, 13.0, 15.0, 12.0, 11.0,
                8.0, 14.0,
            ],
            baseline: &[
                8.0, 9.0, 8.0, 7.0, 9.0, 13.0, 10.0, 12.0, 11.0, 9.0, 8.0, 11.0, 10.0, 8.0, 12.0,
                8.0, 11.0, 9.0, 9.0, 14.0, 12.0, 7.0, 14.0, 12.0, 8.0,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 549.5,
            p_two_sided: 0.00298868595966906,
            ci: (0.0, 4.0),
            r_roots: (1.3610941972336e-05, 3.99996981111714),
        }, // untied exact ranks 238, 513 give 0.0, 4.0
        RCase {
            canary: &[
                7.5, 14.0, 6.0, 12.5, 13.0, 11.0, 6.5, 9.0, 8.5, 6.5, 8.0, 10.0, 8.0, 10.0, 11.0,
                9.0, 13.0, 9.0, 11.0, 13.5, 11.0, 11.0, 9.5, 10.0, 8.0, 10.5, 9.5, 10.5, 10.0,
                11.0, 11.5, 7.5, 10.0, 7.5, 7.5, 11.0, 8.5, 15.5, 11.0, 11.0, 12.5, 8.5, 10.5, 9.5,
                7.5, 12.5, 8.0, 10.0, 11.0,
            ],
            baseline: &[
                12.5, 7.0, 14.5, 9.0, 8.5, 10.0, 8.5, 15.5, 10.5, 10.0, 12.0, 8.5, 8.5, 8.5, 10.0,
                10.5, 7.5, 14.0, 8.0, 9.0, 12.0, 6.0, 7.5, 10.5, 7.0, 8.5, 9.0, 10.0, 8.0, 8.0,
                10.5, 6.0, 9.5, 9.0, 10.5, 8.5, 9.5, 13.5, 9.5, 10.5, 13.5, 9.5, 13.0, 11.5, 8.5,
                11.0, 7.5, 11.0, 7.0,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 1308.5,
            p_two_sided: 0.443415332570944,
            ci: (-0.5, 1.5),
            r_roots: (-0.500035337655773, 1.49998143995407),
        }, // untied exact ranks 874, 1528 give -0.5, 1.5
        RCase {
            canary: &[
                13.0, 10.0, 9.0, 12.0, 9.0, 10.0, 14.0, 10.0, 8.0, 15.0, 16.0, 11.0, 8.0, 12.0,
                9.0, 7.0, 11.0, 12.0, 9.0, 10.0, 8.0, 8.0, 14.0, 12.0, 11.0, 12.0, 10.0, 6.0, 8.0,
                14.0, 11.0, 9.0, 11.0, 13.0, 12.0, 11.0, 12.0, 12.0, 10.0, 11.0, 8.0, 9.0, 10.0,
                6.0, 10.0, 9.0, 10.0, 13.0, 12.0, 8.0,
            ],
            baseline: &[
                8.0, 9.0, 11.0, 8.0, 13.0, 12.0, 9.0, 12.0, 14.0, 9.0, 8.0, 7.0, 8.0, 13.0, 7.0,
                13.0, 7.0, 10.0, 10.0, 7.0, 5.0, 13.0, 8.0, 6.0, 6.0, 9.0, 13.0, 9.0, 9.0, 10.0,
                10.0, 7.0, 15.0, 11.0, 11.0, 9.0, 7.0, 10.0, 9.0, 10.0, 11.0, 12.0, 8.0, 6.0, 12.0,
                12.0, 11.0, 8.0, 11.0, 12.0,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 1485.0,
            p_two_sided: 0.103163067577329,
            ci: (0.0, 2.0),
            r_roots: (-2.93896072765024e-05, 1.99998659012168),
        }, // untied exact ranks 914, 1587 give 0.0, 2.0
        RCase {
            canary: &[
                16.0, 8.25, 12.75, 11.5, 11.0, 14.25, 14.0, 13.25, 11.25, 9.25, 8.0, 8.5, 9.5, 9.0,
                15.25, 10.75, 14.25, 10.25, 10.0, 7.25, 9.75, 11.75, 10.5, 15.0, 11.75, 9.25, 13.0,
                11.25, 11.5, 7.75, 11.25, 10.75, 11.75, 15.0, 11.25, 13.0, 9.75, 9.5, 5.25, 9.0,
                12.25, 12.75, 11.25, 10.25, 11.25, 14.25, 9.5, 13.0, 10.5, 11.25, 12.5, 9.5, 9.25,
                11.25, 7.75, 14.25, 12.5, 8.0, 12.0, 12.0,
            ],
            baseline: &[
                7.25, 10.75, 12.25, 12.75, 8.5, 7.25, 9.0, 9.75, 4.75, 9.75, 10.0, 9.5, 8.5, 8.25,
                9.25, 5.75, 5.5, 9.25, 10.75, 9.75, 7.5, 10.0, 7.5, 8.25, 9.0, 9.25, 9.0, 10.25,
                10.5, 7.5, 8.5, 8.5, 13.25, 8.75, 11.0, 10.75, 8.0, 9.0, 7.5, 6.5, 7.0, 12.5, 11.5,
                9.5, 10.75,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 2046.0,
            p_two_sided: 6.56168562244004e-06,
            ci: (1.0, 3.0),
            r_roots: (0.999938944218359, 2.99999432425686),
        }, // untied exact ranks 992, 1709 give 1.0, 3.0
        RCase {
            canary: &[
                9.819, 10.79, 7.271, 8.597, 6.019, 11.884, 11.28, 13.069, 7.556, 12.113, 8.047,
                9.067, 8.9, 6.273, 10.663, 7.053, 10.045, 8.672, 8.686, 7.636, 10.818, 10.705,
                8.088, 7.952, 9.036, 7.944, 8.418, 10.12, 9.705, 12.319, 6.161, 12.072, 13.401,
                9.676, 11.263, 9.977, 9.5, 8.996, 10.58, 12.849,
            ],
            baseline: &[
                9.819, 13.745, 12.284, 7.504, 11.798, 10.803, 7.358, 9.668, 9.537, 8.462, 13.477,
                4.074, 7.611, 11.069, 11.354, 10.909, 8.298, 13.011, 11.368, 8.954, 12.152, 12.909,
                11.574, 7.436, 11.934, 10.225, 14.622, 9.204, 13.155, 10.75, 10.954, 13.277, 9.093,
                10.284, 8.06, 7.674, 6.768, 10.216, 7.367, 12.536,
            ],
            confidence: 0.98,
            asymptotic_only: true,
            u: 635.5,
            p_two_sided: 0.114542641910332,
            ci: (-2.014, 0.452),
            r_roots: (-2.01394856731598, 0.451981042185785),
        }, // untied exact ranks 559, 1042 give -2.009, 0.448
        RCase {
            canary: &[
                11.3, 11.4, 10.0, 13.6, 6.8, 8.0, 12.9, 10.9, 10.1, 14.7, 11.0, 11.8, 11.6, 9.2,
                9.3, 9.4, 9.6, 9.5, 9.4, 10.1, 11.4, 8.0, 9.0, 12.7, 13.8,
            ],
            baseline: &[
                11.0, 11.4, 9.1, 13.2, 7.8, 7.9, 7.3, 11.6, 9.4, 7.7, 15.8, 9.5, 9.2, 11.6, 14.0,
                9.7, 11.9, 11.5, 7.9, 9.9, 13.8, 13.3, 11.9, 10.8, 9.4, 8.8, 8.8, 13.8, 7.8, 11.2,
            ],
            confidence: 0.95,
            asymptotic_only: true,
            u: 392.5,
            p_two_sided: 0.77371935159015,
            ci: (-1.1, 1.4),
            r_roots: (-1.10005521718603, 1.40002892653069),
        }, // untied exact ranks 259, 492 give -1.1, 1.4
        RCase {
            canary: &[
                11.547, 7.799, 9.764, 11.244, 7.109, 6.351, 11.17, 9.246, 12.5, 10.365, 9.887,
                11.386, 12.573, 9.318,
            ],
            baseline: &[
                11.547, 9.425, 12.217, 7.613, 14.316, 11.014, 9.226, 10.242, 13.727, 9.627, 8.21,
                9.224, 8.035, 10.158, 7.023, 14.069, 12.825, 9.156, 10.266, 8.181, 9.451, 6.013,
                10.774,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 169.5,
            p_two_sided: 0.802165517568818,
            ci: (-1.828, 1.92),
            r_roots: (-1.82804690012529, 1.92008144939848),
        }, // untied exact ranks 88, 235 give -1.816, 1.852
        RCase {
            canary: &[6.113, 6.79, 13.883, 6.549, 11.372],
            baseline: &[6.113, 12.648, 8.639, 9.371, 10.261, 9.727],
            confidence: 0.98,
            asymptotic_only: false,
            u: 13.5,
            p_two_sided: 0.854805435691019,
            ci: (-6.099, 5.259),
            r_roots: (-6.09896898884205, 5.25898838423202),
        }, // untied exact ranks 3, 28 give -5.858, 5.244
        RCase {
            canary: &[
                10.95, 6.497, 7.754, 12.668, 9.632, 9.371, 9.75, 9.439, 11.675, 9.188, 10.309,
                5.25, 9.095,
            ],
            baseline: &[
                10.95, 11.127, 12.098, 10.64, 7.788, 8.458, 10.956, 9.351, 11.175, 6.949, 12.415,
            ],
            confidence: 0.98,
            asymptotic_only: false,
            u: 52.5,
            p_two_sided: 0.283693451095797,
            ci: (-2.783, 1.4),
            r_roots: (-2.78295647861393, 1.39992860167909),
        }, // untied exact ranks 32, 112 give -2.727, 1.307
        RCase {
            canary: &[
                13.566, 11.876, 8.655, 10.068, 12.712, 6.407, 5.543, 8.613, 10.908, 11.879, 8.846,
                9.8, 12.351, 12.486, 11.706, 12.203, 10.332, 12.525, 15.965, 10.419, 12.388,
            ],
            baseline: &[13.566, 6.961, 8.589, 10.82, 10.774],
            confidence: 0.98,
            asymptotic_only: false,
            u: 63.5,
            p_two_sided: 0.49445086960145,
            ci: (-2.182, 3.947),
            r_roots: (-2.18202019441013, 3.9470020998838),
        }, // untied exact ranks 18, 88 give -2.165, 3.936
    ];

    #[test]
    fn intervals_with_ties_are_rs_order_statistics() {
        for (index, case) in R_CASES.iter().enumerate() {
            let options = MannWhitneyOptions {
                confidence: case.confidence,
                exact: if case.asymptotic_only {
                    ExactMode::Never
                } else {
                    ExactMode::Auto
                },
            };
            let r = mann_whitney(case.canary, case.baseline, &options).expect("valid samples");
            let context = format!("case {index}: ours {r:?}");
            assert_eq!(r.u, case.u, "{context}");
            assert!(
                (r.p_value.two_sided - case.p_two_sided).abs() <= 1e-9,
                "{context}"
            );
            for (ours, theirs, root) in [
                (r.ci_lower, case.ci.0, case.r_roots.0),
                (r.ci_upper, case.ci.1, case.r_roots.1),
            ] {
                assert!((theirs - root).abs() < 1e-3, "reference sanity, {context}");
                assert!(
                    (ours - theirs).abs() <= 1e-9,
                    "interval end {ours} vs R's {theirs}; {context}"
                );
            }
        }
    }

    #[test]
    fn a_single_tie_switches_to_rs_corrected_interval() {
        // R: wilcox.test(x, y, conf.int = TRUE, conf.level = 0.98) with y[1] = x[1] has ties,
        // so it root-finds; the exact untied ranks would give another interval.
        let case = &R_CASES[12];
        let r = run(case.canary, case.baseline, case.confidence);
        assert_eq!(r.interval_method, IntervalMethod::Asymptotic);
    }

    #[test]
    fn identical_samples_classify_with_the_tests_figures() {
        // SciPy: mannwhitneyu([4]*5, [4]*8) gives U = 20.0, p = 1.0.
        let c = classify(&[4.0; 5], &[4.0; 8], &KayentaConfig::default());
        assert_eq!(c.label, Label::Pass);
        let test = c.test.expect("the test's figures, not nulls");
        assert_eq!((test.u, test.p_value.two_sided), (20.0, 1.0));
        assert_eq!(
            (test.hodges_lehmann, test.ci_lower, test.ci_upper),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(c.effect_size, Some(1.0));
        // mannwhitneyu([1, 2, 3], [3, 2, 1]): U = 4.5, p = 1.0.
        let c = classify(
            &[1.0, 2.0, 3.0],
            &[3.0, 2.0, 1.0],
            &KayentaConfig::default(),
        );
        let test = c.test.expect("figures");
        assert_eq!(
            (test.u, test.p_value.two_sided, test.hodges_lehmann),
            (4.5, 1.0, 0.0)
        );
    }

    #[test]
    fn all_equal_samples_have_unit_p_value() {
        let r = run(&[2.0; 5], &[2.0; 7], 0.98);
        assert_eq!(r.u, 17.5);
        assert_eq!(r.sd_u, 0.0);
        assert_eq!(r.p_value.two_sided, 1.0);
        assert_eq!(r.p_value_exact.expect("exact").two_sided, 1.0);
        assert_eq!((r.ci_lower, r.hodges_lehmann, r.ci_upper), (0.0, 0.0, 0.0));
    }

    #[test]
    fn tiny_samples_give_the_full_range_interval() {
        // One value each: qwilcox(0.01, 1, 1) = 0, so qu = 1 and the interval is the only difference.
        let r = run(&[3.0], &[1.0], 0.98);
        assert_eq!(r.u, 1.0);
        assert_eq!((r.ci_lower, r.hodges_lehmann, r.ci_upper), (2.0, 2.0, 2.0));
        assert_eq!(r.p_value_exact.expect("exact").two_sided, 1.0);
    }

    #[test]
    fn empty_or_non_finite_input_is_an_error_not_a_panic() {
        let options = MannWhitneyOptions::default();
        assert_eq!(
            mann_whitney(&[], &[1.0], &options),
            Err(MannWhitneyError::RankSamples {
                n_canary: 0,
                n_baseline: 1
            })
        );
        assert!(matches!(
            mann_whitney(&[f64::NAN], &[1.0], &options),
            Err(MannWhitneyError::RankNonFiniteValue { arm: "canary", .. })
        ));
        let bad_confidence = MannWhitneyOptions {
            confidence: 1.0,
            ..options
        };
        assert!(mann_whitney(&[1.0], &[1.0], &bad_confidence).is_err());
    }

    #[test]
    fn exact_and_asymptotic_agree_at_the_cutoff() {
        let x: Vec<f64> = (0..50u64).map(|i| ((i * 37) % 101) as f64).collect();
        let y: Vec<f64> = (0..50u64).map(|i| ((i * 53) % 97) as f64 + 8.0).collect();
        let r = run(&x, &y, 0.98);
        let exact = r.p_value_exact.expect("50 + 50 is exact");
        assert!(
            (exact.two_sided - r.p_value.two_sided).abs() < 0.01,
            "{exact:?} {:?}",
            r.p_value
        );
    }

    #[test]
    fn selection_matches_brute_force_with_ties() {
        // Integer-valued samples give many tied differences.
        let mut xs: Vec<f64> = (0..173).map(|i| ((i * 37) % 41) as f64).collect();
        let mut ys: Vec<f64> = (0..211).map(|i| ((i * 17) % 29) as f64 * 0.5).collect();
        xs.sort_by(f64::total_cmp);
        ys.sort_by(f64::total_cmp);
        let mut all: Vec<f64> = xs
            .iter()
            .flat_map(|&a| ys.iter().map(move |&b| a - b))
            .collect();
        all.sort_by(f64::total_cmp);
        let last = all.len() as u64 - 1;
        for k in [0u64, 1, 100, 5000, 18_000, 36_502, last] {
            assert_eq!(
                select_pairwise_difference(&xs, &ys, k),
                all[k as usize],
                "k={k}"
            );
        }
    }

    #[test]
    fn selection_matches_brute_force_on_zero_inflated_data() {
        // Mostly zeros with a few small integers: huge tie groups among the differences.
        let mut xs: Vec<f64> = (0..900u64)
            .map(|i| if i % 7 == 0 { (i % 5) as f64 } else { 0.0 })
            .collect();
        let mut ys: Vec<f64> = (0..700u64)
            .map(|i| if i % 11 == 0 { (i % 3) as f64 } else { 0.0 })
            .collect();
        xs.sort_by(f64::total_cmp);
        ys.sort_by(f64::total_cmp);
        let mut all: Vec<f64> = xs
            .iter()
            .flat_map(|&a| ys.iter().map(move |&b| a - b))
            .collect();
        all.sort_by(f64::total_cmp);
        let last = all.len() as u64 - 1;
        for k in [0u64, 12_345, 100_000, 315_000, 500_000, 629_999, last] {
            assert_eq!(
                select_pairwise_difference(&xs, &ys, k),
                all[k as usize],
                "k={k}"
            );
        }
        for k in [0usize, 2_000, 315_000, 629_000, 629_998] {
            let next = next_pairwise_difference(&xs, &ys, all[k], k as u64 + 1);
            assert_eq!(next, all[k + 1], "k={k}");
        }
    }

    #[test]
    fn selection_matches_brute_force_continuous() {
        let mut xs: Vec<f64> = (0..300)
            .map(|i| ((i as f64) * 0.7548).sin() * 3.0 + 1.0)
            .collect();
        let mut ys: Vec<f64> = (0..250).map(|i| ((i as f64) * 1.3).cos().powi(3)).collect();
        xs.sort_by(f64::total_cmp);
        ys.sort_by(f64::total_cmp);
        let mut all: Vec<f64> = xs
            .iter()
            .flat_map(|&a| ys.iter().map(move |&b| a - b))
            .collect();
        all.sort_by(f64::total_cmp);
        for k in [0u64, 7, 37_499, 37_500, 74_999] {
            assert_eq!(
                select_pairwise_difference(&xs, &ys, k),
                all[k as usize],
                "k={k}"
            );
        }
    }

    #[test]
    fn classify_detects_a_clear_increase_with_a_reason() {
        let baseline: Vec<f64> = (0..60).map(|i| 1.0 + (i % 10) as f64 * 0.01).collect();
        let canary: Vec<f64> = baseline.iter().map(|v| v + 0.5).collect();
        let c = classify(&canary, &baseline, &KayentaConfig::default());
        assert_eq!(c.label, Label::High);
        assert!(!c.critical);
        assert!(
            c.reason.contains("canary shift +0.5 (98% CI [0.49, 0.51])"),
            "{}",
            c.reason
        );
        assert!(
            c.reason.contains("n_canary=60 n_baseline=60"),
            "{}",
            c.reason
        );
        let down = classify(&baseline, &canary, &KayentaConfig::default());
        assert_eq!(down.label, Label::Low);
        let only_increase = KayentaConfig {
            direction: Direction::Increase,
            ..KayentaConfig::default()
        };
        assert_eq!(
            classify(&baseline, &canary, &only_increase).label,
            Label::Pass
        );
    }

    #[test]
    fn classify_effect_gate_and_critical() {
        let baseline: Vec<f64> = (0..30).map(|i| 10.0 + (i % 7) as f64).collect();
        let canary: Vec<f64> = baseline.iter().map(|v| v * 1.3).collect();
        let gated = KayentaConfig {
            effect_size: EffectSizeConfig {
                allowed_increase: Some(1.5),
                ..EffectSizeConfig::default()
            },
            ..KayentaConfig::default()
        };
        assert_eq!(classify(&canary, &baseline, &gated).label, Label::Pass);
        let critical = KayentaConfig {
            critical: true,
            effect_size: EffectSizeConfig {
                allowed_increase: Some(1.1),
                critical_increase: Some(1.2),
                ..EffectSizeConfig::default()
            },
            ..KayentaConfig::default()
        };
        let c = classify(&canary, &baseline, &critical);
        assert_eq!((c.label, c.critical), (Label::High, true));
        assert_close(c.effect_size.expect("means are positive"), 1.3, 1e-12);
        let not_critical_enough = KayentaConfig {
            effect_size: EffectSizeConfig {
                critical_increase: Some(2.0),
                ..critical.effect_size
            },
            ..critical.clone()
        };
        let c = classify(&canary, &baseline, &not_critical_enough);
        assert_eq!((c.label, c.critical), (Label::High, false));
        let cles = KayentaConfig {
            effect_size: EffectSizeConfig {
                measure: EffectMeasure::Cles,
                ..EffectSizeConfig::default()
            },
            ..KayentaConfig::default()
        };
        let c = classify(&canary, &baseline, &cles);
        assert_eq!(c.label, Label::High);
        assert!(c.effect_size.expect("cles") > 0.5);
    }

    #[test]
    fn classify_no_data_rules() {
        let nan = [f64::NAN, f64::NAN];
        let some = [1.0, 2.0];
        assert_eq!(
            classify(&[], &some, &KayentaConfig::default()).label,
            Label::Nodata
        );
        assert_eq!(
            classify(&nan, &some, &KayentaConfig::default()).label,
            Label::Nodata
        );
        let must = KayentaConfig {
            must_have_data: true,
            ..KayentaConfig::default()
        };
        assert_eq!(classify(&nan, &some, &must).label, Label::NodataFailMetric);
        let critical = KayentaConfig {
            critical: true,
            must_have_data: true,
            ..KayentaConfig::default()
        };
        let c = classify(&some, &[], &critical);
        assert_eq!((c.label, c.critical), (Label::Nodata, true));
        // Replace: NaN counts as 0, so the canary is all zeros against positive values.
        let replace = KayentaConfig {
            nan_strategy: NanStrategy::Replace,
            ..KayentaConfig::default()
        };
        let c = classify(&[f64::NAN; 6], &[1.0, 1.0, 2.0, 1.5, 1.2, 1.1], &replace);
        assert_eq!((c.label, c.n_canary), (Label::Low, 6));
        assert_eq!(classify(&[], &[], &replace).label, Label::Nodata);
    }

    #[test]
    fn classify_identical_and_constant_series_deterministically() {
        let c = classify(
            &[1.0, 2.0, 3.0],
            &[3.0, 2.0, 1.0],
            &KayentaConfig::default(),
        );
        assert_eq!(c.label, Label::Pass);
        let c = classify(&[4.0; 5], &[4.0; 8], &KayentaConfig::default());
        assert_eq!(c.label, Label::Pass);
        // Constant but different: Kayenta adds random noise; here the test runs as is.
        let first = classify(&[5.0; 6], &[4.0; 6], &KayentaConfig::default());
        assert_eq!(first.label, Label::High);
        assert_eq!(
            first,
            classify(&[5.0; 6], &[4.0; 6], &KayentaConfig::default())
        );
    }

    #[test]
    fn classify_removes_outliers_when_asked() {
        let baseline: Vec<f64> = (0..20).map(|i| 1.0 + (i % 5) as f64 * 0.1).collect();
        let mut canary = baseline.clone();
        canary[3] = 1e6;
        let remove = KayentaConfig {
            outliers: OutlierConfig {
                strategy: OutlierStrategy::Remove,
                outlier_factor: 3.0,
            },
            ..KayentaConfig::default()
        };
        assert_eq!(classify(&canary, &baseline, &remove).n_canary, 19);
        assert_eq!(
            classify(&canary, &baseline, &KayentaConfig::default()).n_canary,
            20
        );
    }

    fn metric(name: &str, group: &str, label: Label, critical: bool) -> ScoredMetric {
        ScoredMetric {
            name: name.into(),
            groups: vec![group.into()],
            label,
            critical,
            muted: false,
        }
    }

    #[test]
    fn score_weights_groups_and_applies_overrides() {
        let thresholds = ScoreThresholds {
            pass: 95.0,
            marginal: 75.0,
        };
        let weights = BTreeMap::from([("errors".to_string(), 60.0)]);
        let metrics = vec![
            metric("5xx", "errors", Label::Pass, false),
            metric("timeouts", "errors", Label::High, false),
            metric("p99", "latency", Label::Pass, false),
            metric("p50", "latency", Label::Nodata, false),
        ];
        let s = score(&metrics, &weights, &thresholds);
        // errors 50 * 0.6 + latency 100 * 0.4 = 70.
        assert_eq!(s.score, 70.0);
        assert_eq!(s.classification, ScoreClass::Fail);
        assert_eq!(s.group_scores["errors"], 50.0);

        let mut with_critical = metrics.clone();
        with_critical[1].label = Label::Pass;
        with_critical[2] = metric("p99", "latency", Label::High, true);
        let s = score(&with_critical, &weights, &thresholds);
        assert_eq!(s.score, 0.0);
        assert!(s.reason.contains("p99"), "{}", s.reason);

        let mostly_nodata = vec![
            metric("a", "g", Label::Nodata, false),
            metric("b", "g", Label::Pass, false),
        ];
        assert_eq!(
            score(&mostly_nodata, &BTreeMap::new(), &thresholds).score,
            0.0
        );

        let mut muted = metrics.clone();
        muted[1].muted = true;
        let s = score(&muted, &weights, &thresholds);
        assert_eq!((s.score, s.classification), (100.0, ScoreClass::Pass));
    }

    #[test]
    fn reason_numbers_are_readable() {
        assert_eq!(fmt_num(0.041), "0.041");
        assert_eq!(fmt_num(1234.5678), "1235");
        assert_eq!(fmt_num(2.5e-7), "2.500e-7");
        assert_eq!(format_percent(0.98), "98%");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Multiplying both samples by 1e-6 (or 1e6) never changes the verdict.
        #[test]
        fn verdicts_are_scale_invariant(
            canary in prop::collection::vec(-2000i32..2000, 0..30),
            baseline in prop::collection::vec(-2000i32..2000, 0..30),
            shift in -500i32..500,
            measure_cles in any::<bool>(),
            remove_outliers in any::<bool>(),
        ) {
            let canary: Vec<f64> = canary.iter().map(|&v| f64::from(v + shift) / 8.0).collect();
            let baseline: Vec<f64> = baseline.iter().map(|&v| f64::from(v) / 8.0).collect();
            let config = KayentaConfig {
                effect_size: EffectSizeConfig {
                    measure: if measure_cles { EffectMeasure::Cles } else { EffectMeasure::MeanRatio },
                    ..EffectSizeConfig::default()
                },
                outliers: OutlierConfig {
                    strategy: if remove_outliers { OutlierStrategy::Remove } else { OutlierStrategy::Keep },
                    outlier_factor: 3.0,
                },
                ..KayentaConfig::default()
            };
            let reference = classify(&canary, &baseline, &config);
            for factor in [1e-6, 1e6, 3.7e-9] {
                let c: Vec<f64> = canary.iter().map(|v| v * factor).collect();
                let b: Vec<f64> = baseline.iter().map(|v| v * factor).collect();
                let scaled = classify(&c, &b, &config);
                prop_assert_eq!(scaled.label, reference.label);
                prop_assert_eq!(scaled.critical, reference.critical);
                prop_assert_eq!((scaled.n_canary, scaled.n_baseline), (reference.n_canary, reference.n_baseline));
            }
        }
    }
}
