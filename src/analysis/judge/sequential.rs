//! Anytime-valid sequential tests, safe to evaluate at every scrape (statistics.md §2.3).
//!
//! * [`CountTest`]: error counts, canary vs baseline, with the traffic share taken from the
//!   request counters of each interval. Conditional on a batch's error total `K_t`, an error is
//!   the canary's with probability `θ_t(δ) = ρ_t e^δ / (1 − ρ_t + ρ_t e^δ)`, where `ρ_t` is the
//!   canary's request share in the batch and `e^δ` the rate ratio (canary / baseline). The
//!   e-value is a fixed half-normal mixture over `δ` of the likelihood ratios of those
//!   Bernoulli trials (a conditional Beta-binomial-style mixture), so it is a supermartingale
//!   under the null whatever the traffic does over time. Ville's inequality makes
//!   "fail when the e-value reaches 1/α" an α-level test at every look.
//! * [`HistogramTest`]: latency from Prometheus histogram buckets as counts of slow requests
//!   (above a bucket bound) per arm, one count test per bound with α split among the bounds
//!   (§2.3c); plus [`quantile_bounds`], a time-uniform DKW band for any quantile of one arm
//!   (§2.3b).
//!
//! Small state: instead of the whole history of `(K_t, ρ_t)` the state keeps `Σ K_t ρ_t` and
//! `Σ K_t ρ_t²`. The likelihood then uses the error-weighted mean share `ρ̄`; because
//! `ln(1 + ρ(e^δ − 1))` is concave in ρ this is exact when the share is constant and otherwise
//! off by at most `½ Σ K_t (ρ_t − ρ̄)² · sup|∂²/∂ρ²|`, a bound that is subtracted from every
//! log e-value so the tests stay conservative.
//!
//! Overdispersion. Conditioning on each interval's error total makes the test exact whatever
//! the *common* error rate does from interval to interval: an incident hitting both arms,
//! traffic that drifts or bursts in both, errors overdispersed alike in both arms. What
//! conditioning cannot absorb is noise of one arm's own, e.g. one canary pod whose error rate
//! jumps about: then the canary's share of the errors varies more than binomially. For that,
//! the counts can be given per stratum (pod, instance, zone: [`CountTest::update_stratified`]).
//! Noise of a pod of its own shows as heterogeneity *between the strata of one arm* (a
//! Pearson χ² of the strata's errors given the arm's total, with their request counts as the
//! expected shares), which a regression of the whole canary does not produce. Log likelihood
//! ratios are divided by the resulting dispersion φ ≥ 1 (quasi-likelihood, see
//! `dispersion`); without strata φ = 1 and the test is the exact conditional one.
//!
//! Tempering is approximate: heavy-tailed noise in the pods of *both* arms still fails it
//! (2% of A/A runs at α = 0.5% in the detection bench). So with strata of comparable traffic a
//! second, exact e-process must agree before a Fail: the pod-permutation test
//! (`permutation`). Without a regression, pods of both arms with the same traffic and noise
//! alike are exchangeable: given the multiset of the strata's error counts in an interval,
//! every way to label which of them are the canary's is equally likely, whatever the noise's
//! size or shape. Betting on the canary's labelling at each interval gives an e-process that is
//! valid under that exchangeability alone. Failing only when both e-processes have crossed 1/α
//! happens with probability at most α if *either* is valid: under the binomial model (no noise
//! of one arm's own) or under exchangeable strata (any noise, alike in every pod).

use serde::{Deserialize, Serialize};

use super::Verdict;
use super::mann_whitney::fmt_num;

/// Number of mixture components of the half-normal prior on the log rate ratio offset.
const MIXTURE_NODES: usize = 64;
/// The prior is truncated at this many prior scales.
const MIXTURE_SPAN: f64 = 4.0;
/// Log rate ratios searched by the confidence-sequence bisection: ratios in [1e-4, 1e4].
const LOG_RATIO_LIMIT: f64 = 9.21;

/// Errors of the sequential judges; each variant names the action that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequentialError {
    /// An interval reports more errors than requests in one arm.
    #[error("cannot update with {errors} errors out of {requests} requests in the {arm}")]
    UpdateCounts {
        /// `canary` or `baseline`.
        arm: &'static str,
        /// Errors (or slow requests) in the interval.
        errors: u64,
        /// Requests in the interval.
        requests: u64,
    },
    /// A parameter is out of range.
    #[error("invalid {name} {value}: {requirement}")]
    ValidateConfig {
        /// Parameter name.
        name: &'static str,
        /// Its value.
        value: f64,
        /// What it must satisfy.
        requirement: &'static str,
    },
    /// An interval gives more strata than [`MAX_STRATA`] for one arm.
    #[error(
        "cannot update with {strata} strata in the {arm}: at most {MAX_STRATA} (stratify by a label with fewer values)"
    )]
    UpdateStrata {
        /// `canary` or `baseline`.
        arm: &'static str,
        /// Strata given.
        strata: usize,
    },
    /// Histogram bucket vectors of the two arms do not line up.
    #[error(
        "cannot read histogram buckets: {detail} (bounds must be increasing, the same for both arms, ending with +Inf)"
    )]
    ReadBuckets {
        /// What was wrong.
        detail: String,
    },
}

/// Splits a run-level α among `metrics` sequential metrics (Bonferroni), so that the chance
/// that any of them falsely fails during the run stays below `total_alpha`.
pub fn split_alpha(total_alpha: f64, metrics: usize) -> f64 {
    total_alpha / metrics.max(1) as f64
}

/// Configuration of a count test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CountTestConfig {
    /// Level of this test (already split across metrics, see [`split_alpha`]).
    pub alpha: f64,
    /// Fail when the rate ratio is confidently above `1 + fail_margin` (≥ 0).
    pub fail_margin: f64,
    /// Pass early when the rate ratio is confidently below `1 + pass_margin` (≥ 0). Below
    /// `fail_margin` it leaves an indifference zone that ends Inconclusive at the deadline;
    /// above it every ratio is eventually decided.
    pub pass_margin: f64,
    /// Scale (sd) of the half-normal mixing distribution of the log rate ratio: the test is
    /// most sensitive to log-ratio offsets of about this size.
    pub prior_scale: f64,
    /// Guard against noise of one arm's own with the strata: temper the likelihood by the
    /// overdispersion φ ≥ 1 seen between the strata of each arm (quasi-likelihood: when one
    /// pod's errors vary more than the others', log likelihood ratios are divided by φ), and,
    /// while the strata of both arms have comparable traffic, fail only when the
    /// pod-permutation e-process agrees. Without strata there is nothing to estimate from:
    /// φ = 1 and no permutation test (the exact conditional test alone).
    pub temper_overdispersion: bool,
    /// Keep testing after a Pass (background analysis): a Pass starts a fresh test instead of
    /// ending this one, so a regression that starts later is still caught. Test number k
    /// (from 0) spends α / 2^(k+1), so all of them together spend at most α.
    #[serde(default)]
    pub keep_watching: bool,
}

impl Default for CountTestConfig {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            fail_margin: 0.0,
            pass_margin: 0.25,
            prior_scale: 0.5,
            temper_overdispersion: true,
            keep_watching: false,
        }
    }
}

impl CountTestConfig {
    fn validate(&self) -> Result<(), SequentialError> {
        let check = |ok: bool, name, value, requirement| {
            if ok {
                Ok(())
            } else {
                Err(SequentialError::ValidateConfig {
                    name,
                    value,
                    requirement,
                })
            }
        };
        check(
            self.alpha > 0.0 && self.alpha < 1.0,
            "alpha",
            self.alpha,
            "must be in (0, 1)",
        )?;
        check(
            self.fail_margin >= 0.0 && self.fail_margin.is_finite(),
            "failMargin",
            self.fail_margin,
            "must be ≥ 0",
        )?;
        check(
            self.pass_margin >= 0.0 && self.pass_margin.is_finite(),
            "passMargin",
            self.pass_margin,
            "must be ≥ 0",
        )?;
        check(
            self.prior_scale > 0.0 && self.prior_scale.is_finite(),
            "priorScale",
            self.prior_scale,
            "must be > 0",
        )
    }
}

/// Incremental state of a count test: a handful of numbers, serialisable into a status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountState {
    /// Canary errors so far.
    pub canary_errors: u64,
    /// Baseline errors so far.
    pub baseline_errors: u64,
    /// Canary requests so far.
    pub canary_requests: u64,
    /// Baseline requests so far.
    pub baseline_requests: u64,
    /// Σ K_t ρ_t over intervals (K_t = errors of both arms, ρ_t = canary request share).
    pub share_sum: f64,
    /// Σ K_t ρ_t².
    pub share_square_sum: f64,
    /// Smallest and largest ρ_t among intervals with errors.
    pub share_range: Option<(f64, f64)>,
    /// Heterogeneity between the canary's strata: Σ over intervals of the Pearson χ² of the
    /// strata's errors given the arm's errors and the strata's request shares.
    #[serde(default)]
    pub canary_heterogeneity: f64,
    /// Degrees of freedom of that sum (Σ strata with traffic − 1, over intervals with errors).
    #[serde(default)]
    pub canary_heterogeneity_degrees: u64,
    /// The same between the baseline's strata.
    #[serde(default)]
    pub baseline_heterogeneity: f64,
    /// Its degrees of freedom.
    #[serde(default)]
    pub baseline_heterogeneity_degrees: u64,
    /// log e-values of the pod-permutation test, one per bet in [`PERMUTATION_BETS`] (empty
    /// until an interval with strata and errors).
    #[serde(default)]
    pub permutation_log_e: Vec<f64>,
    /// The largest log e-value the permutation mixture has reached in this test.
    #[serde(default)]
    pub permutation_log_e_reached: f64,
    /// The strata could not be exchangeable in some interval (no strata, unequal traffic,
    /// too many strata): the count test decides alone from then on.
    #[serde(default)]
    pub permutation_waived: bool,
    /// Fresh tests started after a pass (background analysis keeps testing); test number
    /// `restarts` (from 0) spends α / 2^(restarts + 1), so the whole run spends at most α.
    #[serde(default)]
    pub restarts: u32,
    /// Intervals seen.
    pub updates: u64,
    /// First decisive verdict (Fail or Pass); later evidence does not revoke it.
    pub decided: Option<Verdict>,
}

impl CountState {
    /// A fresh test after a Pass, for analysis that keeps watching (background analysis): the
    /// evidence about the rate ratio starts again from nothing and the new test spends half
    /// the α of the last one. What the strata showed about each arm's own dispersion is kept:
    /// it describes the pods, not the hypothesis, and is known before the fresh test's first
    /// interval (predictable), so the fresh test does not start from the prior's φ = 1 again.
    pub fn restarted(&self) -> CountState {
        CountState {
            restarts: self.restarts.saturating_add(1),
            canary_heterogeneity: self.canary_heterogeneity,
            canary_heterogeneity_degrees: self.canary_heterogeneity_degrees,
            baseline_heterogeneity: self.baseline_heterogeneity,
            baseline_heterogeneity_degrees: self.baseline_heterogeneity_degrees,
            ..CountState::default()
        }
    }
}

/// One interval's increments of a count metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountIncrement {
    /// New canary errors.
    pub canary_errors: u64,
    /// New canary requests (errors included).
    pub canary_requests: u64,
    /// New baseline errors.
    pub baseline_errors: u64,
    /// New baseline requests.
    pub baseline_requests: u64,
}

/// Verdict of a sequential test after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SequentialDecision {
    /// The canary is worse than the fail margin (anytime-valid at level α).
    Fail,
    /// The canary is within the pass margin (anytime-valid at level α).
    Pass,
    /// Not decided yet: keep measuring.
    Continue,
    /// Deadline reached without a decision.
    Inconclusive,
}

impl SequentialDecision {
    /// The three-way verdict, once the run stops (Continue maps to Inconclusive).
    pub fn verdict(self) -> Verdict {
        match self {
            SequentialDecision::Fail => Verdict::Fail,
            SequentialDecision::Pass => Verdict::Pass,
            SequentialDecision::Continue | SequentialDecision::Inconclusive => {
                Verdict::Inconclusive
            }
        }
    }
}

/// What a count test reports after each update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CountReport {
    /// The decision.
    pub decision: SequentialDecision,
    /// Point estimate of the rate ratio canary / baseline (per request), if any errors.
    pub ratio_estimate: Option<f64>,
    /// Anytime-valid confidence sequence for the rate ratio: lower end (level 1 − α).
    pub ratio_lower: f64,
    /// Upper end.
    pub ratio_upper: f64,
    /// e-value against "ratio ≤ 1 + fail_margin".
    pub e_fail: f64,
    /// e-value against "ratio ≥ 1 + pass_margin".
    pub e_pass: f64,
    /// Smallest rate ratio the data so far could have detected (at the observed error count
    /// and shares); `None` when even a 10⁴× regression would not have been.
    pub detectable_ratio: Option<f64>,
    /// Human explanation.
    pub reason: String,
}

/// The count test: a stateless function object around [`CountState`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountTest {
    config: CountTestConfig,
    /// Offsets and log weights of the discrete half-normal mixture.
    offsets: [f64; MIXTURE_NODES],
    log_weights: [f64; MIXTURE_NODES],
}

impl CountTest {
    /// Validates the configuration and precomputes the mixture.
    pub fn new(config: CountTestConfig) -> Result<Self, SequentialError> {
        config.validate()?;
        let step = MIXTURE_SPAN * config.prior_scale / MIXTURE_NODES as f64;
        let mut offsets = [0.0; MIXTURE_NODES];
        let mut weights = [0.0; MIXTURE_NODES];
        for (j, (offset, weight)) in offsets.iter_mut().zip(weights.iter_mut()).enumerate() {
            *offset = (j as f64 + 0.5) * step;
            let z = *offset / config.prior_scale;
            *weight = (-0.5 * z * z).exp();
        }
        let total: f64 = weights.iter().sum();
        let log_weights = weights.map(|w| (w / total).ln());
        Ok(Self {
            config,
            offsets,
            log_weights,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CountTestConfig {
        &self.config
    }

    /// Adds one interval's increments to the state (arm totals: no strata, so no
    /// permutation test; see [`Self::update_stratified`]).
    pub fn update(
        &self,
        state: &mut CountState,
        increment: &CountIncrement,
    ) -> Result<(), SequentialError> {
        self.add_totals(state, increment)?;
        state.permutation_waived = true;
        Ok(())
    }

    fn add_totals(
        &self,
        state: &mut CountState,
        increment: &CountIncrement,
    ) -> Result<(), SequentialError> {
        for (arm, errors, requests) in [
            ("canary", increment.canary_errors, increment.canary_requests),
            (
                "baseline",
                increment.baseline_errors,
                increment.baseline_requests,
            ),
        ] {
            if errors > requests {
                return Err(SequentialError::UpdateCounts {
                    arm,
                    errors,
                    requests,
                });
            }
        }
        state.updates += 1;
        state.canary_requests += increment.canary_requests;
        state.baseline_requests += increment.baseline_requests;
        let requests = increment.canary_requests + increment.baseline_requests;
        let errors = increment.canary_errors + increment.baseline_errors;
        if requests == 0 || errors == 0 {
            return Ok(());
        }
        let share = increment.canary_requests as f64 / requests as f64;
        state.canary_errors += increment.canary_errors;
        state.baseline_errors += increment.baseline_errors;
        state.share_sum += errors as f64 * share;
        state.share_square_sum += errors as f64 * share * share;
        state.share_range = Some(match state.share_range {
            Some((low, high)) => (low.min(share), high.max(share)),
            None => (share, share),
        });
        Ok(())
    }

    /// Adds one interval given per stratum (pod, instance, zone): each arm's strata as
    /// (errors, requests), in any order and number (at most [`MAX_STRATA`] per arm). The
    /// comparison uses the arms' totals, exactly as [`Self::update`]; the strata add how much
    /// each arm's errors vary between its strata beyond what their traffic explains.
    pub fn update_stratified(
        &self,
        state: &mut CountState,
        canary: &[StratumCounts],
        baseline: &[StratumCounts],
    ) -> Result<(), SequentialError> {
        for (arm, strata) in [("canary", canary), ("baseline", baseline)] {
            if strata.len() > MAX_STRATA {
                return Err(SequentialError::UpdateStrata {
                    arm,
                    strata: strata.len(),
                });
            }
            if let Some(bad) = strata.iter().find(|s| s.errors > s.requests) {
                return Err(SequentialError::UpdateCounts {
                    arm,
                    errors: bad.errors,
                    requests: bad.requests,
                });
            }
        }
        let total = |strata: &[StratumCounts]| {
            strata.iter().fold((0u64, 0u64), |(e, r), s| {
                (e.saturating_add(s.errors), r.saturating_add(s.requests))
            })
        };
        let (canary_errors, canary_requests) = total(canary);
        let (baseline_errors, baseline_requests) = total(baseline);
        self.add_totals(
            state,
            &CountIncrement {
                canary_errors,
                canary_requests,
                baseline_errors,
                baseline_requests,
            },
        )?;
        if let Some((x2, degrees)) = heterogeneity(canary) {
            state.canary_heterogeneity += x2;
            state.canary_heterogeneity_degrees += degrees;
        }
        if let Some((x2, degrees)) = heterogeneity(baseline) {
            state.baseline_heterogeneity += x2;
            state.baseline_heterogeneity_degrees += degrees;
        }
        if !state.permutation_waived {
            match permutation::log_e_values(canary, baseline) {
                permutation::Interval::Bets(log_e) => {
                    if state.permutation_log_e.len() != log_e.len() {
                        state.permutation_log_e = vec![0.0; log_e.len()];
                    }
                    for (sum, l) in state.permutation_log_e.iter_mut().zip(log_e) {
                        *sum += l;
                    }
                    state.permutation_log_e_reached = state
                        .permutation_log_e_reached
                        .max(permutation::mixture(&state.permutation_log_e));
                }
                permutation::Interval::NoErrors => {}
                permutation::Interval::NotExchangeable => state.permutation_waived = true,
            }
        }
        Ok(())
    }

    /// Whether the pod-permutation e-process lets a Fail through: it has crossed the threshold
    /// in this test, or it does not apply (no tempering asked, no strata, strata that cannot be
    /// exchangeable).
    fn permutation_agrees(&self, state: &CountState, threshold: f64) -> bool {
        !self.config.temper_overdispersion
            || state.permutation_waived
            || state.permutation_log_e_reached >= threshold
    }

    /// ln(1/α') of the state's test: α' = α, or α / 2^(k+1) for the k-th test of analysis that
    /// keeps watching.
    fn log_threshold(&self, state: &CountState) -> f64 {
        let halvings = if self.config.keep_watching {
            f64::from(state.restarts.min(1000)) + 1.0
        } else {
            0.0
        };
        (1.0 / self.config.alpha).ln() + halvings * std::f64::consts::LN_2
    }

    /// Decides from the state without building a report (the cheap path for every scrape);
    /// `at_deadline` turns an undecided test into Inconclusive. A decision, once reached, is
    /// recorded in the state and kept.
    pub fn decide(&self, state: &mut CountState, at_deadline: bool) -> SequentialDecision {
        self.decide_with_evidence(state, at_deadline).0
    }

    fn decide_with_evidence(
        &self,
        state: &mut CountState,
        at_deadline: bool,
    ) -> (SequentialDecision, Evidence, f64, f64) {
        let evidence = Evidence::from_state(state);
        let threshold = self.log_threshold(state);
        let log_e_fail = self.log_e_above(&evidence, self.config.fail_margin.ln_1p());
        let log_e_pass = self.log_e_below(&evidence, self.config.pass_margin.ln_1p());
        if state.decided.is_none() {
            if log_e_fail >= threshold && self.permutation_agrees(state, threshold) {
                state.decided = Some(Verdict::Fail);
            } else if log_e_pass >= threshold && self.config.keep_watching {
                // Passed: watch on with a fresh test (the evidence so far is spent).
                *state = state.restarted();
            } else if log_e_pass >= threshold {
                state.decided = Some(Verdict::Pass);
            }
        }
        let decision = match state.decided {
            Some(Verdict::Fail) => SequentialDecision::Fail,
            Some(Verdict::Pass) => SequentialDecision::Pass,
            _ if at_deadline => SequentialDecision::Inconclusive,
            _ => SequentialDecision::Continue,
        };
        (decision, evidence, log_e_fail, log_e_pass)
    }

    /// Decides like [`Self::decide`] and reports the estimate, the confidence sequence, the
    /// e-values, the detectable ratio and a reason.
    pub fn evaluate(&self, state: &mut CountState, at_deadline: bool) -> CountReport {
        // The test as it stood: a pass of analysis that keeps watching resets `state`.
        let tested = state.clone();
        let (decision, evidence, log_e_fail, log_e_pass) =
            self.decide_with_evidence(state, at_deadline);
        let restarted = state.restarts != tested.restarts;
        let threshold = self.log_threshold(&tested);
        let (lower, upper) = self.confidence_sequence(&evidence, threshold);
        let ratio_estimate = evidence.ratio_estimate();
        let detectable_ratio = self.detectable_ratio(&evidence, threshold);
        let level = super::mann_whitney::format_percent(1.0 - (-threshold).exp());
        let estimate = ratio_estimate.map_or("n/a".to_string(), fmt_num);
        let interval = format!(
            "error-rate ratio canary/baseline {estimate} ({level} CS [{}, {}])",
            fmt_num(lower),
            fmt_num(upper)
        );
        let counts = format!(
            "errors canary {}/{} baseline {}/{}",
            tested.canary_errors,
            tested.canary_requests,
            tested.baseline_errors,
            tested.baseline_requests
        );
        let dispersion = if evidence.dispersion > 1.0 {
            format!(
                "; overdispersion between strata {}",
                fmt_num(evidence.dispersion)
            )
        } else {
            String::new()
        };
        let counts = format!("{counts}{dispersion}");
        let reason = match decision {
            SequentialDecision::Continue if restarted => format!(
                "passed: {interval} below 1 + pass margin {}; {counts}; watching on with test {} at α/{}",
                fmt_num(self.config.pass_margin),
                state.restarts + 1,
                2u64.saturating_pow(state.restarts.min(63) + 1)
            ),
            SequentialDecision::Fail => format!(
                "{interval} above 1 + fail margin {}; {counts}",
                fmt_num(self.config.fail_margin)
            ),
            SequentialDecision::Pass => format!(
                "{interval} below 1 + pass margin {}; {counts}",
                fmt_num(self.config.pass_margin)
            ),
            SequentialDecision::Continue if log_e_fail >= threshold => format!(
                "{interval} above 1 + fail margin {} by the counts, not yet by the pods' \
                 permutation test (e-value {} of {} needed); {counts}",
                fmt_num(self.config.fail_margin),
                fmt_num(tested.permutation_log_e_reached.exp()),
                fmt_num(threshold.exp())
            ),
            SequentialDecision::Continue => format!("{interval} undecided; {counts}"),
            SequentialDecision::Inconclusive => format!(
                "{interval} undecided at deadline; smallest detectable ratio {}; {counts}",
                detectable_ratio.map_or("none (too few errors)".to_string(), fmt_num)
            ),
        };
        CountReport {
            decision,
            ratio_estimate,
            ratio_lower: lower,
            ratio_upper: upper,
            e_fail: log_e_fail.exp(),
            e_pass: log_e_pass.exp(),
            detectable_ratio,
            reason,
        }
    }

    /// log e-value against "δ ≤ null" (alternatives above it).
    fn log_e_above(&self, evidence: &Evidence, null: f64) -> f64 {
        self.log_mixture(evidence, null, 1.0)
    }

    /// log e-value against "δ ≥ null" (alternatives below it).
    fn log_e_below(&self, evidence: &Evidence, null: f64) -> f64 {
        self.log_mixture(evidence, null, -1.0)
    }

    fn log_mixture(&self, evidence: &Evidence, null: f64, side: f64) -> f64 {
        let at_null = evidence.log_likelihood(null);
        let mut terms = [0.0; MIXTURE_NODES];
        let mut max = f64::NEG_INFINITY;
        let temper = if self.config.temper_overdispersion {
            evidence.dispersion
        } else {
            1.0
        };
        for (term, (&u, &lw)) in terms
            .iter_mut()
            .zip(self.offsets.iter().zip(&self.log_weights))
        {
            *term = lw + (evidence.log_likelihood(null + side * u) - at_null) / temper;
            max = max.max(*term);
        }
        let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
        max + sum.ln() - evidence.share_slack(null)
    }

    /// Anytime-valid CS for the rate ratio from the two one-sided families of tests, each at α.
    fn confidence_sequence(&self, evidence: &Evidence, threshold: f64) -> (f64, f64) {
        // e_above(null) is non-increasing in null: the lower end is where it drops below 1/α.
        let lower = bisect(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT, |null| {
            self.log_e_above(evidence, null) >= threshold
        });
        let upper = bisect(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT, |null| {
            self.log_e_below(evidence, null) < threshold
        });
        // At the search limits the data exclude nothing on that side.
        let lower = if lower <= -LOG_RATIO_LIMIT {
            0.0
        } else {
            lower.exp()
        };
        let upper = if upper >= LOG_RATIO_LIMIT {
            f64::INFINITY
        } else {
            upper.exp()
        };
        (lower, upper)
    }

    /// Smallest ratio whose expected canary error count (given the observed error total and
    /// shares) would have made the fail test reject.
    fn detectable_ratio(&self, evidence: &Evidence, threshold: f64) -> Option<f64> {
        let fail_null = self.config.fail_margin.ln_1p();
        let rejects = |delta: f64| {
            let expected = Evidence {
                canary_errors: evidence.total_errors * evidence.theta(delta),
                ..*evidence
            };
            self.log_e_above(&expected, fail_null) >= threshold
        };
        if evidence.total_errors == 0.0 || !rejects(LOG_RATIO_LIMIT) {
            return None;
        }
        Some(bisect(fail_null, LOG_RATIO_LIMIT, |d| !rejects(d)).exp())
    }
}

/// Most strata per arm and interval ([`CountTest::update_stratified`]).
pub const MAX_STRATA: usize = 64;

/// Bets of the pod-permutation e-process: log rate ratios canary / baseline from ×1.1 to ×5.5
/// (the count test's prior covers the same range), mixed with equal weights.
pub const PERMUTATION_BETS: [f64; 8] = [0.1, 0.15, 0.225, 0.34, 0.5, 0.76, 1.14, 1.7];

/// The pod-permutation e-process: exact under exchangeable strata, whatever their noise.
mod permutation {
    use super::{PERMUTATION_BETS, StratumCounts};

    /// Most strata of both arms together whose labellings are enumerated (C(16, 8) = 12870).
    const MAX_PERMUTED_STRATA: usize = 16;

    /// Strata are exchangeable only with the same expected traffic; requests of one interval
    /// within this factor of each other are taken as that. It is a bound on what "comparable"
    /// means, not a tuned constant: Poisson noise of a pod's requests is a few percent at the
    /// rates this test needs, and a canary of 5% of the traffic is 19 times smaller.
    const COMPARABLE_TRAFFIC: f64 = 2.0;

    pub(super) enum Interval {
        /// log e-value of this interval per bet.
        Bets(Vec<f64>),
        /// No errors: nothing to bet on (factor 1).
        NoErrors,
        /// The strata cannot be exchangeable (traffic, count): the test does not apply.
        NotExchangeable,
    }

    /// One interval's bets. Given the multiset of the strata's error counts, under
    /// exchangeability each labelling of `m` of them as the canary's is equally likely; under a
    /// regression ×e^d of the whole canary (Poisson counts, equal traffic) the labelling has
    /// likelihood ∝ exp(d·S), S = the canary's errors. The bet `exp(d·S) / mean over labellings
    /// of exp(d·S')` is that likelihood ratio: expectation exactly 1 under exchangeability.
    pub(super) fn log_e_values(canary: &[StratumCounts], baseline: &[StratumCounts]) -> Interval {
        let strata: Vec<&StratumCounts> = canary.iter().chain(baseline).collect();
        let (fewest, most) = strata.iter().fold((u64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.requests), hi.max(s.requests))
        });
        if canary.is_empty()
            || baseline.is_empty()
            || strata.len() > MAX_PERMUTED_STRATA
            || fewest == 0
            || most as f64 > COMPARABLE_TRAFFIC * fewest as f64
        {
            return Interval::NotExchangeable;
        }
        let errors: Vec<f64> = strata.iter().map(|s| s.errors as f64).collect();
        if errors.iter().all(|&e| e == 0.0) {
            return Interval::NoErrors;
        }
        let observed: f64 = errors[..canary.len()].iter().sum();
        let sums = labelling_sums(&errors, canary.len());
        let bets = PERMUTATION_BETS
            .iter()
            .map(|&bet| {
                let max = sums.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(bet * s));
                let mean =
                    sums.iter().map(|&s| (bet * s - max).exp()).sum::<f64>() / sums.len() as f64;
                bet * observed - (max + mean.ln())
            })
            .collect();
        Interval::Bets(bets)
    }

    /// The canary's error sum under every labelling of `chosen` of the strata as the canary's.
    fn labelling_sums(errors: &[f64], chosen: usize) -> Vec<f64> {
        let mut sums = Vec::new();
        let n = errors.len();
        // Bit masks with `chosen` bits set, n ≤ 16.
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize == chosen {
                sums.push(
                    (0..n)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| errors[i])
                        .sum(),
                );
            }
        }
        sums
    }

    /// log of the equal-weight mixture of the bets' e-values.
    pub(super) fn mixture(log_e: &[f64]) -> f64 {
        let max = log_e.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l));
        if !max.is_finite() {
            return 0.0;
        }
        let mean = log_e.iter().map(|l| (l - max).exp()).sum::<f64>() / log_e.len() as f64;
        max + mean.ln()
    }
}

/// Pseudo degrees of freedom at φ = 1 added to each arm's heterogeneity, so that the first
/// interval's χ² (two degrees of freedom with three pods) does not swing φ alone.
const HETEROGENEITY_PRIOR_DEGREES: f64 = 2.0;

/// One stratum's counts in one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StratumCounts {
    /// Errors (or slow requests) of the stratum in the interval.
    pub errors: u64,
    /// Requests of the stratum in the interval (errors included).
    pub requests: u64,
}

/// Pearson χ² of one arm's strata: their errors given the arm's total, against the shares of
/// the arm's requests they served, and its degrees of freedom; None when fewer than two strata
/// had traffic or the arm had no errors. Under "no stratum differs" its expectation is exactly
/// the degrees of freedom (multinomial given the total), whatever the error rate.
fn heterogeneity(strata: &[StratumCounts]) -> Option<(f64, u64)> {
    let errors: u64 = strata.iter().map(|s| s.errors).sum();
    let requests: u64 = strata.iter().map(|s| s.requests).sum();
    let active = strata.iter().filter(|s| s.requests > 0).count();
    if errors == 0 || active < 2 {
        return None;
    }
    let x2 = strata
        .iter()
        .filter(|s| s.requests > 0)
        .map(|s| {
            let expected = errors as f64 * s.requests as f64 / requests as f64;
            (s.errors as f64 - expected).powi(2) / expected
        })
        .sum();
    Some((x2, active as u64 - 1))
}

/// An arm's dispersion φ ≥ 1 from its strata's heterogeneity (1 without strata).
fn arm_dispersion(heterogeneity: f64, degrees: u64) -> f64 {
    if degrees == 0 {
        return 1.0;
    }
    ((heterogeneity + HETEROGENEITY_PRIOR_DEGREES) / (degrees as f64 + HETEROGENEITY_PRIOR_DEGREES))
        .max(1.0)
}

/// The overdispersion of the canary's share of the errors, φ = (1 − ρ̄)·φ_canary + ρ̄·φ_baseline.
///
/// If each arm's error count varies φ_arm times more than Poisson (quasi-Poisson; the
/// strata's χ² per degree of freedom estimates φ_arm), the canary's excess over its expected
/// share, `N_B − ρK = (1 − ρ)N_B − ρN_A`, has variance `((1 − ρ)φ_canary + ρφ_baseline)`
/// times the binomial `Kρ(1 − ρ)`. A regression of the whole canary moves every canary stratum
/// alike and leaves φ at 1; a burst of one pod raises φ in the same interval, so its evidence
/// is bounded whatever its size.
fn dispersion(state: &CountState, mean_share: f64) -> f64 {
    let canary = arm_dispersion(
        state.canary_heterogeneity,
        state.canary_heterogeneity_degrees,
    );
    let baseline = arm_dispersion(
        state.baseline_heterogeneity,
        state.baseline_heterogeneity_degrees,
    );
    (1.0 - mean_share) * canary + mean_share * baseline
}

/// Sufficient statistics of the likelihood in δ.
#[derive(Debug, Clone, Copy)]
struct Evidence {
    canary_errors: f64,
    total_errors: f64,
    mean_share: f64,
    /// Σ K_t (ρ_t − ρ̄)².
    share_spread: f64,
    /// Range of the per-interval shares.
    share_range: (f64, f64),
    /// Overdispersion factor dividing log likelihood ratios (1 = binomial).
    dispersion: f64,
}

impl Evidence {
    fn from_state(state: &CountState) -> Self {
        let total = (state.canary_errors + state.baseline_errors) as f64;
        let mean_share = if total > 0.0 {
            (state.share_sum / total).clamp(0.0, 1.0)
        } else {
            0.5
        };
        let spread = if total > 0.0 {
            (state.share_square_sum - state.share_sum * state.share_sum / total).max(0.0)
        } else {
            0.0
        };
        Self {
            canary_errors: state.canary_errors as f64,
            total_errors: total,
            mean_share,
            share_spread: spread,
            share_range: state.share_range.unwrap_or((mean_share, mean_share)),
            dispersion: dispersion(state, mean_share),
        }
    }

    /// Probability that an error is the canary's under log rate ratio δ.
    fn theta(&self, delta: f64) -> f64 {
        let r = self.mean_share;
        r * delta.exp() / (1.0 - r + r * delta.exp())
    }

    /// log L(δ) up to a constant: N_B·δ − K·ln(1 + ρ̄(e^δ − 1)).
    fn log_likelihood(&self, delta: f64) -> f64 {
        let normaliser = (self.mean_share * delta.exp_m1()).ln_1p();
        if self.total_errors == 0.0 {
            return 0.0;
        }
        self.canary_errors * delta - self.total_errors * normaliser
    }

    /// Upper bound on how much using ρ̄ instead of the per-interval shares can inflate a log
    /// likelihood ratio against the null δ: ½ Σ K_t (ρ_t − ρ̄)² · sup_ρ |∂²/∂ρ² ln(1 + ρ a)|
    /// with a = e^δ − 1 and ρ over the observed share range; |∂²/∂ρ²| = a²/(1 + ρa)² is
    /// largest at the smallest share for a ≥ 0 and at the largest for a < 0.
    fn share_slack(&self, null: f64) -> f64 {
        if self.share_spread == 0.0 {
            return 0.0;
        }
        let a = null.exp_m1();
        let (low, high) = self.share_range;
        let worst = if a >= 0.0 { low } else { high };
        let curvature = (a / (1.0 + worst * a)).powi(2);
        0.5 * self.share_spread * curvature
    }

    fn ratio_estimate(&self) -> Option<f64> {
        let baseline_errors = self.total_errors - self.canary_errors;
        if self.total_errors == 0.0 || self.mean_share <= 0.0 || self.mean_share >= 1.0 {
            return None;
        }
        Some(
            (self.canary_errors * (1.0 - self.mean_share))
                / (baseline_errors * self.mean_share).max(f64::MIN_POSITIVE),
        )
    }
}

/// Boundary of a predicate that is true below and false above it, on [lo, hi]: returns the
/// largest point known true (or lo when it is false everywhere, hi when true everywhere).
fn bisect(mut lo: f64, mut hi: f64, true_below: impl Fn(f64) -> bool) -> f64 {
    if !true_below(lo) {
        return lo;
    }
    if true_below(hi) {
        return hi;
    }
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if true_below(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-6 {
            break;
        }
    }
    lo
}

// ---------------------------------------------------------------------------------------------
// Latency from histogram buckets
// ---------------------------------------------------------------------------------------------

/// Configuration of the histogram (latency) test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HistogramTestConfig {
    /// α and margins shared by the per-bound count tests; α is split among the bounds.
    /// Margins apply to the ratio of slow-request fractions (canary / baseline).
    pub counts: CountTestConfig,
    /// Latency bounds (bucket `le` values) at which slow requests are counted. When empty,
    /// bounds are chosen from the first interval's baseline at [`Self::quantiles`].
    pub bounds: Vec<f64>,
    /// Baseline quantile levels used to choose bounds when `bounds` is empty.
    pub quantiles: Vec<f64>,
    /// Baseline requests needed before bounds are chosen from data.
    pub min_requests_to_choose: u64,
}

impl Default for HistogramTestConfig {
    fn default() -> Self {
        Self {
            counts: CountTestConfig::default(),
            bounds: Vec::new(),
            quantiles: vec![0.5, 0.9, 0.99],
            min_requests_to_choose: 1000,
        }
    }
}

/// One interval of histogram increments: per-bucket counts (not cumulative over buckets),
/// aligned with the bucket upper bounds `le` (the last being +Inf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramIncrement {
    /// Bucket upper bounds, increasing, last = +Inf.
    pub bounds: Vec<f64>,
    /// Cumulative `le` counts of the canary in this interval (Prometheus `_bucket` deltas).
    pub canary: Vec<u64>,
    /// Cumulative `le` counts of the baseline in this interval.
    pub baseline: Vec<u64>,
}

/// State of the histogram test: the chosen bounds and one count state per bound.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramState {
    /// Latency bounds under test (empty until chosen).
    pub bounds: Vec<f64>,
    /// Slow-request count state per bound.
    pub per_bound: Vec<CountState>,
    /// Baseline cumulative bucket counts accumulated while waiting to choose bounds (not used
    /// as evidence; emptied once the bounds are chosen).
    pub warmup_baseline: Vec<u64>,
    /// First decisive verdict.
    pub decided: Option<Verdict>,
    /// Fresh tests started after a pass of every bound (analysis that keeps watching).
    #[serde(default)]
    pub restarts: u32,
}

/// Report of the histogram test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramReport {
    /// The decision.
    pub decision: SequentialDecision,
    /// Per-bound reports, aligned with the state's bounds.
    pub per_bound: Vec<(f64, CountReport)>,
    /// Human explanation.
    pub reason: String,
}

/// Time-uniform test that the canary is slower: slow-request counts at a few bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramTest {
    config: HistogramTestConfig,
}

impl HistogramTest {
    /// Validates the configuration.
    pub fn new(config: HistogramTestConfig) -> Result<Self, SequentialError> {
        config.counts.validate()?;
        if config.bounds.is_empty() && config.quantiles.is_empty() {
            return Err(SequentialError::ValidateConfig {
                name: "quantiles",
                value: 0.0,
                requirement: "give bounds or at least one quantile",
            });
        }
        Ok(Self { config })
    }

    /// The count test of each bound: α split among the bounds and, for analysis that keeps
    /// watching, halved once more per test (the k-th spends α / 2^(k+1)); the histogram test
    /// restarts all bounds together, so the per-bound tests do not restart on their own.
    fn per_bound_test(&self, state: &HistogramState) -> Result<CountTest, SequentialError> {
        let mut alpha = split_alpha(self.config.counts.alpha, state.bounds.len());
        if self.config.counts.keep_watching {
            alpha /= 2f64.powi(state.restarts.min(1000) as i32 + 1);
        }
        CountTest::new(CountTestConfig {
            alpha: alpha.max(f64::MIN_POSITIVE),
            keep_watching: false,
            ..self.config.counts
        })
    }

    /// Records the first decisive verdict of the bounds' `decisions` (Fail as soon as one
    /// fails, Pass once all pass; a Pass restarts every bound when keeping watch) and returns
    /// the test's decision.
    fn settle(
        &self,
        state: &mut HistogramState,
        decisions: &[SequentialDecision],
        at_deadline: bool,
    ) -> SequentialDecision {
        if state.decided.is_none() && !decisions.is_empty() {
            if decisions.contains(&SequentialDecision::Fail) {
                state.decided = Some(Verdict::Fail);
            } else if decisions.iter().all(|d| *d == SequentialDecision::Pass) {
                if self.config.counts.keep_watching {
                    state.per_bound = vec![CountState::default(); state.bounds.len()];
                    state.restarts = state.restarts.saturating_add(1);
                } else {
                    state.decided = Some(Verdict::Pass);
                }
            }
        }
        match state.decided {
            Some(Verdict::Fail) => SequentialDecision::Fail,
            Some(Verdict::Pass) => SequentialDecision::Pass,
            _ if at_deadline => SequentialDecision::Inconclusive,
            _ => SequentialDecision::Continue,
        }
    }

    /// Adds one interval of bucket counts.
    pub fn update(
        &self,
        state: &mut HistogramState,
        increment: &HistogramIncrement,
    ) -> Result<(), SequentialError> {
        validate_buckets(increment)?;
        if state.bounds.is_empty() {
            if !self.config.bounds.is_empty() {
                state.bounds = self.config.bounds.clone();
            } else {
                // Choose bounds from baseline data of this interval only, and do not use it as
                // evidence: the choice must not peek at the evidence it is tested on.
                if state.warmup_baseline.len() != increment.baseline.len() {
                    state.warmup_baseline = vec![0; increment.baseline.len()];
                }
                for (total, count) in state.warmup_baseline.iter_mut().zip(&increment.baseline) {
                    *total += count;
                }
                let seen = state.warmup_baseline.last().copied().unwrap_or(0);
                if seen >= self.config.min_requests_to_choose {
                    state.bounds = choose_bounds(
                        &increment.bounds,
                        &state.warmup_baseline,
                        &self.config.quantiles,
                    );
                    state.warmup_baseline = Vec::new();
                }
                state.per_bound = vec![CountState::default(); state.bounds.len()];
                return Ok(());
            }
            state.per_bound = vec![CountState::default(); state.bounds.len()];
        }
        let test = self.per_bound_test(state)?;
        let canary_total = increment.canary.last().copied().unwrap_or(0);
        let baseline_total = increment.baseline.last().copied().unwrap_or(0);
        for (bound, count_state) in state.bounds.iter().zip(state.per_bound.iter_mut()) {
            let at_or_below = |cumulative: &[u64]| -> u64 {
                // Counts at the largest bucket bound ≤ the tested bound.
                increment
                    .bounds
                    .iter()
                    .zip(cumulative)
                    .take_while(|(le, _)| **le <= *bound)
                    .last()
                    .map_or(0, |(_, &c)| c)
            };
            let slow = CountIncrement {
                canary_errors: canary_total.saturating_sub(at_or_below(&increment.canary)),
                canary_requests: canary_total,
                baseline_errors: baseline_total.saturating_sub(at_or_below(&increment.baseline)),
                baseline_requests: baseline_total,
            };
            test.update(count_state, &slow)?;
        }
        Ok(())
    }

    /// The cheap per-scrape decision (no reports): Fail as soon as any bound fails, Pass once
    /// every bound passes.
    pub fn decide(
        &self,
        state: &mut HistogramState,
        at_deadline: bool,
    ) -> Result<SequentialDecision, SequentialError> {
        let mut decisions = Vec::with_capacity(state.bounds.len());
        if !state.bounds.is_empty() {
            let test = self.per_bound_test(state)?;
            decisions.extend(
                state
                    .per_bound
                    .iter_mut()
                    .map(|s| test.decide(s, at_deadline)),
            );
        }
        Ok(self.settle(state, &decisions, at_deadline))
    }

    /// Decides like [`Self::decide`] and reports every bound with its reason.
    pub fn evaluate(
        &self,
        state: &mut HistogramState,
        at_deadline: bool,
    ) -> Result<HistogramReport, SequentialError> {
        if state.bounds.is_empty() {
            let decision = if at_deadline {
                SequentialDecision::Inconclusive
            } else {
                SequentialDecision::Continue
            };
            return Ok(HistogramReport {
                decision,
                per_bound: Vec::new(),
                reason: format!(
                    "waiting for {} baseline requests to choose latency bounds ({} so far)",
                    self.config.min_requests_to_choose,
                    state.warmup_baseline.last().copied().unwrap_or(0)
                ),
            });
        }
        let test = self.per_bound_test(state)?;
        let per_bound: Vec<(f64, CountReport)> = state
            .bounds
            .iter()
            .zip(state.per_bound.iter_mut())
            .map(|(&bound, s)| (bound, test.evaluate(s, at_deadline)))
            .collect();
        let failing: Vec<&(f64, CountReport)> = per_bound
            .iter()
            .filter(|(_, r)| r.decision == SequentialDecision::Fail)
            .collect();
        let decisions: Vec<SequentialDecision> =
            per_bound.iter().map(|(_, r)| r.decision).collect();
        let restarts = state.restarts;
        let decision = self.settle(state, &decisions, at_deadline);
        let restarted = state.restarts != restarts;
        let describe = |(bound, r): &(f64, CountReport)| {
            format!(
                "slower than {}: {}",
                fmt_num(*bound),
                r.reason.replace("error-rate ratio", "slow-fraction ratio")
            )
        };
        let reason = match decision {
            SequentialDecision::Fail if !failing.is_empty() => failing
                .iter()
                .map(|r| describe(r))
                .collect::<Vec<_>>()
                .join("; "),
            _ => per_bound
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; "),
        };
        let reason = if restarted {
            format!(
                "passed ({reason}); watching on with test {} at α/{}",
                state.restarts + 1,
                2u64.saturating_pow(state.restarts.min(63) + 1)
            )
        } else {
            reason
        };
        Ok(HistogramReport {
            decision,
            per_bound,
            reason,
        })
    }
}

fn validate_buckets(increment: &HistogramIncrement) -> Result<(), SequentialError> {
    let bounds = &increment.bounds;
    let fail = |detail: String| Err(SequentialError::ReadBuckets { detail });
    if bounds.is_empty() || bounds.last().is_none_or(|b| *b != f64::INFINITY) {
        return fail("the last bound is not +Inf".into());
    }
    if bounds
        .windows(2)
        .any(|w| w[0].partial_cmp(&w[1]) != Some(std::cmp::Ordering::Less))
    {
        return fail("bounds are not strictly increasing".into());
    }
    for (arm, counts) in [
        ("canary", &increment.canary),
        ("baseline", &increment.baseline),
    ] {
        if counts.len() != bounds.len() {
            return fail(format!(
                "{arm} has {} buckets for {} bounds",
                counts.len(),
                bounds.len()
            ));
        }
        if counts.windows(2).any(|w| w[0] > w[1]) {
            return fail(format!("{arm} bucket counts are not cumulative"));
        }
    }
    Ok(())
}

/// The smallest finite bucket bounds at which the baseline's cumulative fraction reaches each
/// quantile level (deduplicated, increasing).
fn choose_bounds(bounds: &[f64], baseline: &[u64], quantiles: &[f64]) -> Vec<f64> {
    let total = baseline.last().copied().unwrap_or(0) as f64;
    let mut chosen: Vec<f64> = quantiles
        .iter()
        .filter_map(|&q| {
            bounds
                .iter()
                .zip(baseline)
                .find(|(le, c)| le.is_finite() && **c as f64 >= q * total)
                .map(|(le, _)| *le)
        })
        .collect();
    chosen.sort_by(f64::total_cmp);
    chosen.dedup();
    chosen
}

/// Time-uniform bound on the `p`-quantile of one arm from its cumulative bucket counts since
/// the start of the analysis: with probability ≥ 1 − α, simultaneously at every time, the true
/// quantile lies in `[lower, upper]` (bucket bounds; −∞/+∞ when the band leaves the data).
/// Uses the Howard–Ramdas empirical-process boundary ε_t = 0.85·√((ln ln(e·t) + 0.8·ln(1612/α))/t)
/// (statistics.md §2.3b).
pub fn quantile_bounds(bounds: &[f64], cumulative: &[u64], p: f64, alpha: f64) -> (f64, f64) {
    let total = cumulative.last().copied().unwrap_or(0);
    if total == 0 || bounds.len() != cumulative.len() || !(0.0..=1.0).contains(&p) {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    let t = total as f64;
    let epsilon =
        0.85 * (((std::f64::consts::E * t).ln().ln() + 0.8 * (1612.0 / alpha).ln()) / t).sqrt();
    let quantile = |level: f64| -> f64 {
        if level > 1.0 {
            return f64::INFINITY;
        }
        if level <= 0.0 {
            return f64::NEG_INFINITY;
        }
        bounds
            .iter()
            .zip(cumulative)
            .find(|(_, c)| **c as f64 >= level * t)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    // The lower end: the largest bound whose fraction below stays under p − ε (the quantile
    // is above it); the upper end: the first bound reaching p + ε.
    let lower = bounds
        .iter()
        .zip(cumulative)
        .rev()
        .find(|(_, c)| (**c as f64) < (p - epsilon) * t)
        .map_or(f64::NEG_INFINITY, |(le, _)| *le);
    (lower, quantile(p + epsilon))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn state_with(canary_errors: u64, baseline_errors: u64) -> CountState {
        let test = CountTest::new(CountTestConfig::default()).expect("valid");
        let mut state = CountState::default();
        let increment = CountIncrement {
            canary_errors,
            canary_requests: 100_000,
            baseline_errors,
            baseline_requests: 100_000,
        };
        test.update(&mut state, &increment).expect("valid counts");
        state
    }

    fn assert_close(actual: f64, expected: f64, rel: f64) {
        assert!(
            (actual - expected).abs() <= rel * expected.abs(),
            "actual {actual} expected {expected}"
        );
    }

    #[test]
    fn e_values_match_an_independent_implementation() {
        // Python (numpy/scipy), /tmp/ref/seq.py of this session:
        //   u = (arange(64) + .5) * 4 * .5 / 64; lw = log of normalised exp(-.5 (u/.5)^2)
        //   ll(d) = NB d - K log1p(rho expm1(d)); e = exp(logsumexp(lw + ll(null ± u) - ll(null)))
        // with rho = 0.5, fail null 0 (alternatives above), pass null ln 1.25 (below).
        // Without strata there is no tempering (φ = 1).
        let config = CountTestConfig {
            alpha: 0.05,
            temper_overdispersion: false,
            ..CountTestConfig::default()
        };
        let test = CountTest::new(config).expect("valid");
        for (na, nb, e_fail, e_pass) in [
            (40, 70, 26.743964302677163, 0.14101808656733256),
            (40, 40, 0.40915898197501327, 1.0127234681246395),
            (5, 15, 5.281682902609641, 0.3009409687200066),
            (1000, 1150, 31.16297102535204, 1.0596506634296037),
        ] {
            let mut state = state_with(nb, na);
            let report = test.evaluate(&mut state, false);
            assert_close(report.e_fail, e_fail, 1e-9);
            assert_close(report.e_pass, e_pass, 1e-9);
        }
        // 95% CS by root finding in the same script: [1.0061043976420223, 1.3150268066809492].
        let report = test.evaluate(&mut state_with(1150, 1000), false);
        assert_close(report.ratio_lower, 1.0061043976420223, 1e-5);
        assert_close(report.ratio_upper, 1.3150268066809492, 1e-5);
        assert_eq!(report.decision, SequentialDecision::Fail);
        assert!(
            report.reason.contains("above 1 + fail margin 0"),
            "{}",
            report.reason
        );
    }

    #[test]
    fn no_errors_means_no_evidence_and_an_honest_deadline() {
        let test = CountTest::new(CountTestConfig::default()).expect("valid");
        let mut state = CountState::default();
        let report = test.evaluate(&mut state, false);
        assert_eq!(report.decision, SequentialDecision::Continue);
        assert_eq!(
            (report.ratio_lower, report.ratio_upper),
            (0.0, f64::INFINITY)
        );
        let report = test.evaluate(&mut state, true);
        assert_eq!(report.decision, SequentialDecision::Inconclusive);
        assert_eq!(report.detectable_ratio, None);
        assert!(
            report.reason.contains("too few errors"),
            "{}",
            report.reason
        );
        // With 40 errors in each arm, a ratio of a few would have been detectable.
        let report = test.evaluate(&mut state_with(40, 40), true);
        let detectable = report.detectable_ratio.expect("enough errors");
        assert!(detectable > 1.5 && detectable < 4.0, "{detectable}");
    }

    #[test]
    fn rejects_inconsistent_counts_and_config() {
        let test = CountTest::new(CountTestConfig::default()).expect("valid");
        let bad = CountIncrement {
            canary_errors: 5,
            canary_requests: 4,
            ..CountIncrement::default()
        };
        assert!(matches!(
            test.update(&mut CountState::default(), &bad),
            Err(SequentialError::UpdateCounts { arm: "canary", .. })
        ));
        for config in [
            CountTestConfig {
                pass_margin: -0.1,
                ..CountTestConfig::default()
            },
            CountTestConfig {
                alpha: 1.0,
                ..CountTestConfig::default()
            },
        ] {
            assert!(CountTest::new(config).is_err(), "{config:?}");
        }
    }

    /// Knuth's Poisson sampler; the means here are small.
    fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
        let limit = (-mean).exp();
        let mut product: f64 = rng.random();
        let mut count = 0;
        while product > limit {
            product *= rng.random::<f64>();
            count += 1;
        }
        count
    }

    /// Fraction of runs that fail within `minutes` with errors Poisson(requests·p) per arm.
    fn failure_rate(seed: u64, runs: usize, ratio: f64, shares_vary: bool) -> f64 {
        let config = CountTestConfig {
            alpha: 0.05,
            ..CountTestConfig::default()
        };
        let test = CountTest::new(config).expect("valid");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut failures = 0;
        for _ in 0..runs {
            let mut state = CountState::default();
            for minute in 0..60u64 {
                // Canary weight steps 10% → 25% → 50% when shares vary.
                let canary_requests = if shares_vary {
                    [40, 100, 200][minute as usize / 20]
                } else {
                    200
                };
                let baseline_requests = if shares_vary {
                    400 - canary_requests
                } else {
                    200
                };
                let p = 0.01;
                let increment = CountIncrement {
                    canary_errors: poisson(&mut rng, canary_requests as f64 * p * ratio)
                        .min(canary_requests),
                    canary_requests,
                    baseline_errors: poisson(&mut rng, baseline_requests as f64 * p)
                        .min(baseline_requests),
                    baseline_requests,
                };
                test.update(&mut state, &increment).expect("consistent");
                if test.decide(&mut state, minute == 59) != SequentialDecision::Continue {
                    break;
                }
            }
            failures += usize::from(state.decided == Some(Verdict::Fail));
        }
        failures as f64 / runs as f64
    }

    #[test]
    fn a_a_false_fail_rate_stays_below_alpha_with_a_look_every_minute() {
        let equal = failure_rate(7, 250, 1.0, false);
        let varying = failure_rate(8, 250, 1.0, true);
        eprintln!("A/A false-fail rates: equal shares {equal}, varying shares {varying}");
        assert!(equal <= 0.05, "A/A false-fail rate {equal}");
        assert!(
            varying <= 0.05,
            "A/A false-fail rate with varying shares {varying}"
        );
    }

    /// Mean-one log-normal noise (σ = 1), by Box–Muller.
    fn log_normal_noise(rng: &mut StdRng) -> f64 {
        let (u1, u2): (f64, f64) = (rng.random(), rng.random());
        let normal = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (normal - 0.5).exp()
    }

    /// Three pods per arm at 2000 requests/minute per arm, 0.5% errors (the bench's 2000
    /// req/min cells, benches/detection.rs, in small).
    #[derive(Clone, Copy)]
    struct Pods {
        /// Canary pods (from pod 0) whose error rate is multiplied each minute by its own
        /// mean-one log-normal noise (σ = 1): same mean, overdispersed, with rare large bursts.
        noisy: usize,
        /// Canary pod 0's error rate × this (a regression confined to one pod).
        pod0_ratio: f64,
        /// Give the counts per pod (strata) instead of the arms' totals.
        stratified: bool,
        /// Baseline pods (from pod 0) as noisy as the noisy canary pods.
        noisy_baseline: usize,
        /// Let the pod-permutation test vote (false: the between-strata tempering alone, as
        /// before it existed).
        permutation: bool,
    }

    /// Fraction of `runs` 60-minute runs that fail, looking every minute.
    fn pods_failure_rate(seed: u64, runs: usize, alpha: f64, pods: Pods) -> f64 {
        let test = CountTest::new(CountTestConfig {
            alpha,
            ..CountTestConfig::default()
        })
        .expect("valid");
        let mut rng = StdRng::seed_from_u64(seed);
        let (pod_requests, error_rate) = (667u64, 0.005);
        let mut failures = 0;
        for _ in 0..runs {
            let mut state = CountState::default();
            for minute in 0..60 {
                let mut canary = [StratumCounts::default(); 3];
                let mut baseline = [StratumCounts::default(); 3];
                for pod in 0..3 {
                    let mut rate = error_rate;
                    if pod == 0 {
                        rate *= pods.pod0_ratio;
                    }
                    if pod < pods.noisy {
                        rate *= log_normal_noise(&mut rng);
                    }
                    let errors = poisson(&mut rng, pod_requests as f64 * rate);
                    canary[pod] = StratumCounts {
                        errors,
                        requests: pod_requests.max(errors),
                    };
                    let baseline_rate = if pod < pods.noisy_baseline {
                        error_rate * log_normal_noise(&mut rng)
                    } else {
                        error_rate
                    };
                    let errors = poisson(&mut rng, pod_requests as f64 * baseline_rate);
                    baseline[pod] = StratumCounts {
                        errors,
                        requests: pod_requests.max(errors),
                    };
                }
                if pods.stratified {
                    test.update_stratified(&mut state, &canary, &baseline)
                } else {
                    let total = |arm: &[StratumCounts]| {
                        arm.iter()
                            .fold((0, 0), |(e, r), s| (e + s.errors, r + s.requests))
                    };
                    let ((canary_errors, canary_requests), (baseline_errors, baseline_requests)) =
                        (total(&canary), total(&baseline));
                    test.update(
                        &mut state,
                        &CountIncrement {
                            canary_errors,
                            canary_requests,
                            baseline_errors,
                            baseline_requests,
                        },
                    )
                }
                .expect("consistent");
                state.permutation_waived |= !pods.permutation;
                if test.decide(&mut state, minute == 59) != SequentialDecision::Continue {
                    break;
                }
            }
            failures += usize::from(state.decided == Some(Verdict::Fail));
        }
        failures as f64 / runs as f64
    }

    #[test]
    fn one_noisy_pod_among_three_stays_under_the_budget_across_seeds() {
        let noisy = Pods {
            noisy: 1,
            pod0_ratio: 1.0,
            stratified: true,
            noisy_baseline: 0,
            permutation: true,
        };
        for seed in 20..24 {
            let rate = pods_failure_rate(seed, 250, 0.05, noisy);
            eprintln!("seed {seed}: noisy-pod A/A false-fail rate {rate} (α 0.05)");
            assert!(
                rate <= 0.05,
                "seed {seed}: noisy-pod A/A false-fail rate {rate}"
            );
        }
        // The same counts as arm totals: nothing to tell a noisy pod from a worse canary, and
        // the exact conditional test goes over its budget (this is what the strata fix).
        let pooled = pods_failure_rate(
            20,
            250,
            0.05,
            Pods {
                stratified: false,
                ..noisy
            },
        );
        eprintln!("unstratified noisy-pod A/A false-fail rate {pooled}");
        assert!(pooled > 0.05, "unstratified: {pooled}");
    }

    #[test]
    fn a_regression_confined_to_one_pod_is_still_found() {
        // ×2 errors on one canary pod of three (the canary as a whole: ×1.33), at the α a
        // run with an error and a latency metric gives each (0.005).
        let power = pods_failure_rate(
            30,
            100,
            0.005,
            Pods {
                noisy: 0,
                pod0_ratio: 2.0,
                stratified: true,
                noisy_baseline: 0,
                permutation: true,
            },
        );
        eprintln!("one pod ×2: power within 60 minutes {power}");
        assert!(power >= 0.5, "power {power}");
    }

    #[test]
    fn noise_in_every_pod_of_both_arms_is_held_by_the_permutation_test() {
        // Every pod of both arms noisy (σ = 1 log-normal per minute): exchangeable pods, so the
        // permutation test is exact; the between-strata tempering alone is only approximate.
        let noisy = Pods {
            noisy: 3,
            pod0_ratio: 1.0,
            stratified: true,
            noisy_baseline: 3,
            permutation: true,
        };
        for seed in 40..43 {
            let rate = pods_failure_rate(seed, 250, 0.05, noisy);
            eprintln!("seed {seed}: every pod noisy, A/A false-fail rate {rate} (α 0.05)");
            assert!(rate <= 0.05, "seed {seed}: false-fail rate {rate}");
        }
        let tempering_alone: f64 = (40..43)
            .map(|seed| {
                pods_failure_rate(
                    seed,
                    250,
                    0.05,
                    Pods {
                        permutation: false,
                        ..noisy
                    },
                )
            })
            .sum::<f64>()
            / 3.0;
        eprintln!("every pod noisy, tempering alone: false-fail rate {tempering_alone}");
        assert!(tempering_alone > 0.05, "tempering alone: {tempering_alone}");
    }

    #[test]
    fn the_pod_permutation_bet_has_expectation_one_over_the_labellings() {
        // Given the multiset of the six pods' errors, exchangeability makes every labelling of
        // three as the canary's equally likely: the bets must average exactly 1 over them.
        let errors = [3u64, 9, 0, 14, 2, 5];
        let mut totals = vec![0.0; PERMUTATION_BETS.len()];
        let mut labellings = 0;
        for mask in 0u32..64 {
            if mask.count_ones() != 3 {
                continue;
            }
            let stratum = |e: u64| StratumCounts {
                errors: e,
                requests: 600,
            };
            let canary: Vec<_> = (0..6)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| stratum(errors[i]))
                .collect();
            let baseline: Vec<_> = (0..6)
                .filter(|i| mask & (1 << i) == 0)
                .map(|i| stratum(errors[i]))
                .collect();
            let permutation::Interval::Bets(log_e) = permutation::log_e_values(&canary, &baseline)
            else {
                panic!("comparable strata with errors are bet on");
            };
            for (total, l) in totals.iter_mut().zip(log_e) {
                *total += l.exp();
            }
            labellings += 1;
        }
        assert_eq!(labellings, 20);
        for total in totals {
            assert!(
                (total / 20.0 - 1.0).abs() < 1e-12,
                "mean e-value {}",
                total / 20.0
            );
        }
        // Strata of very different traffic cannot be exchangeable: the test stands aside.
        let small = [StratumCounts {
            errors: 1,
            requests: 30,
        }];
        let large = [StratumCounts {
            errors: 5,
            requests: 600,
        }];
        assert!(matches!(
            permutation::log_e_values(&small, &large),
            permutation::Interval::NotExchangeable
        ));
    }

    #[test]
    fn a_clear_regression_is_caught() {
        let power = failure_rate(9, 100, 3.0, false);
        assert!(power >= 0.95, "power {power}");
        let power_varying = failure_rate(10, 100, 3.0, true);
        assert!(power_varying >= 0.9, "power {power_varying}");
    }

    #[test]
    fn heterogeneity_between_strata_raises_the_dispersion_only_when_present() {
        let test = CountTest::new(CountTestConfig::default()).expect("valid");
        let mut rng = StdRng::seed_from_u64(11);
        let (mut calm, mut bursty, mut worse) = (
            CountState::default(),
            CountState::default(),
            CountState::default(),
        );
        let pods = |rng: &mut StdRng, means: [f64; 3]| {
            means.map(|mean| StratumCounts {
                errors: poisson(rng, mean),
                requests: 1000,
            })
        };
        for minute in 0..60 {
            let baseline = pods(&mut rng, [5.0; 3]);
            let canary = pods(&mut rng, [5.0; 3]);
            test.update_stratified(&mut calm, &canary, &baseline)
                .expect("consistent");
            // Same mean, but one canary pod's errors come in bursts every fourth minute.
            let burst = if minute % 4 == 0 { 20.0 } else { 0.0 };
            let canary = pods(&mut rng, [burst, 5.0, 5.0]);
            test.update_stratified(&mut bursty, &canary, &baseline)
                .expect("consistent");
            // The whole canary twice as bad: every pod alike, no heterogeneity.
            let canary = pods(&mut rng, [10.0; 3]);
            test.update_stratified(&mut worse, &canary, &baseline)
                .expect("consistent");
        }
        let phi = |state: &CountState| Evidence::from_state(state).dispersion;
        assert!(phi(&calm) < 1.3, "calm pods: φ = {}", phi(&calm));
        assert!(phi(&bursty) > 2.0, "one bursty pod: φ = {}", phi(&bursty));
        assert!(phi(&worse) < 1.3, "a worse canary: φ = {}", phi(&worse));
        assert_eq!(test.decide(&mut worse, false), SequentialDecision::Fail);
        let untempered = CountTest::new(CountTestConfig {
            temper_overdispersion: false,
            ..CountTestConfig::default()
        })
        .expect("valid");
        let tempered_e = test.evaluate(&mut bursty.clone(), false).e_fail;
        let raw_e = untempered.evaluate(&mut bursty.clone(), false).e_fail;
        assert!(tempered_e <= raw_e.max(1.0), "{tempered_e} vs {raw_e}");
        // Without strata nothing is estimated: φ = 1.
        assert_eq!(phi(&state_with(30, 10)), 1.0);
    }

    #[test]
    fn a_pass_of_analysis_that_keeps_watching_starts_a_fresh_test_with_half_the_alpha() {
        let config = CountTestConfig {
            keep_watching: true,
            ..CountTestConfig::default()
        };
        let test = CountTest::new(config).expect("valid");
        // Equal errors in a large sample: surely below 1.25.
        let mut state = state_with(2000, 2000);
        let report = test.evaluate(&mut state, false);
        assert_eq!(report.decision, SequentialDecision::Continue);
        assert!(report.reason.starts_with("passed"), "{}", report.reason);
        assert!(report.reason.contains("test 2 at α/4"), "{}", report.reason);
        assert_eq!(state.restarts, 1);
        assert_eq!((state.canary_errors, state.decided), (0, None));
        // The fresh test fails a regression that begins after the pass.
        let worse = CountIncrement {
            canary_errors: 300,
            canary_requests: 100_000,
            baseline_errors: 100,
            baseline_requests: 100_000,
        };
        test.update(&mut state, &worse).expect("consistent");
        assert_eq!(test.decide(&mut state, false), SequentialDecision::Fail);
        // A step gate's pass is final.
        let gate = CountTest::new(CountTestConfig::default()).expect("valid");
        let mut state = state_with(2000, 2000);
        assert_eq!(gate.decide(&mut state, false), SequentialDecision::Pass);
        assert_eq!(state.restarts, 0);
        // Each restart halves α: after k restarts the threshold is ln(2^(k+1)/α).
        let mut restarted = CountState {
            restarts: 3,
            ..CountState::default()
        };
        assert!(
            (test.log_threshold(&restarted) - (16.0f64 / 0.01).ln()).abs() < 1e-12,
            "{}",
            test.log_threshold(&restarted)
        );
        restarted.restarts = 0;
        assert!((gate.log_threshold(&restarted) - 100f64.ln()).abs() < 1e-12);
        // What the strata showed about each arm's dispersion survives a restart; the evidence
        // about the ratio does not.
        let noisy = CountState {
            canary_errors: 40,
            baseline_errors: 30,
            canary_heterogeneity: 12.0,
            canary_heterogeneity_degrees: 4,
            baseline_heterogeneity: 3.0,
            baseline_heterogeneity_degrees: 4,
            ..CountState::default()
        };
        let fresh = noisy.restarted();
        assert_eq!((fresh.canary_errors, fresh.baseline_errors), (0, 0));
        assert_eq!(
            (
                fresh.canary_heterogeneity,
                fresh.canary_heterogeneity_degrees,
                fresh.baseline_heterogeneity,
                fresh.baseline_heterogeneity_degrees
            ),
            (12.0, 4, 3.0, 4)
        );
    }

    #[test]
    fn state_survives_a_round_trip_through_json() {
        let mut state = state_with(12, 3);
        let test = CountTest::new(CountTestConfig::default()).expect("valid");
        test.decide(&mut state, false);
        let json = serde_json::to_string(&state).expect("serialise");
        let back: CountState = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, state);
        assert!(json.len() < 450, "{json}");
    }

    fn histogram_increment(
        rng: &mut StdRng,
        bounds: &[f64],
        requests: u64,
        slowdown: f64,
        baseline_requests: u64,
    ) -> HistogramIncrement {
        let sample = |rng: &mut StdRng, count: u64, factor: f64| -> Vec<u64> {
            let mut cumulative = vec![0u64; bounds.len()];
            for _ in 0..count {
                // Exponential latency with mean 0.1 s.
                let latency = -0.1 * factor * rng.random::<f64>().max(1e-300).ln();
                for (c, le) in cumulative.iter_mut().zip(bounds) {
                    if latency <= *le {
                        *c += 1;
                    }
                }
            }
            cumulative
        };
        HistogramIncrement {
            bounds: bounds.to_vec(),
            canary: sample(rng, requests, slowdown),
            baseline: sample(rng, baseline_requests, 1.0),
        }
    }

    fn run_histogram(seed: u64, slowdown: f64) -> (SequentialDecision, HistogramState) {
        let bounds = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, f64::INFINITY];
        let test = HistogramTest::new(HistogramTestConfig::default()).expect("valid");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut state = HistogramState::default();
        for minute in 0..30 {
            let increment = histogram_increment(&mut rng, &bounds, 200, slowdown, 200);
            test.update(&mut state, &increment).expect("valid buckets");
            let report = test.evaluate(&mut state, minute == 29).expect("valid");
            if report.decision != SequentialDecision::Continue {
                return (report.decision, state);
            }
        }
        (SequentialDecision::Continue, state)
    }

    #[test]
    fn histogram_test_catches_a_slow_canary_and_chooses_bounds_from_the_baseline() {
        let (decision, state) = run_histogram(3, 1.3);
        assert_eq!(decision, SequentialDecision::Fail);
        // Exponential(0.1 s): median 0.069, p90 0.23, p99 0.46, chosen from 1000 baseline
        // requests: the median's bucket is 0.1 for sure, the tail ones are noisier.
        assert_eq!(state.bounds.len(), 3, "{:?}", state.bounds);
        assert_eq!(state.bounds[0], 0.1);
        assert!(state.bounds[2] >= 0.5 && state.warmup_baseline.is_empty());
        let (decision, _) = run_histogram(4, 1.0);
        assert_ne!(decision, SequentialDecision::Fail);
    }

    #[test]
    fn histogram_input_is_validated() {
        let test = HistogramTest::new(HistogramTestConfig::default()).expect("valid");
        let not_cumulative = HistogramIncrement {
            bounds: vec![0.1, f64::INFINITY],
            canary: vec![5, 3],
            baseline: vec![1, 2],
        };
        assert!(matches!(
            test.update(&mut HistogramState::default(), &not_cumulative),
            Err(SequentialError::ReadBuckets { .. })
        ));
        let no_inf = HistogramIncrement {
            bounds: vec![0.1, 0.2],
            canary: vec![1, 2],
            baseline: vec![1, 2],
        };
        assert!(
            test.update(&mut HistogramState::default(), &no_inf)
                .is_err()
        );
    }

    #[test]
    fn quantile_bounds_cover_the_truth() {
        let bounds = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, f64::INFINITY];
        let mut rng = StdRng::seed_from_u64(5);
        let increment = histogram_increment(&mut rng, &bounds, 5000, 1.0, 0);
        // True median of Exponential(mean 0.1) is 0.0693: between 0.05 and 0.1.
        let (lower, upper) = quantile_bounds(&bounds, &increment.canary, 0.5, 0.05);
        assert!(lower <= 0.05 && upper >= 0.1, "[{lower}, {upper}]");
        assert!(lower > f64::NEG_INFINITY && upper < f64::INFINITY);
        assert_eq!(
            quantile_bounds(&bounds, &[0; 7], 0.5, 0.05),
            (f64::NEG_INFINITY, f64::INFINITY)
        );
    }
}
