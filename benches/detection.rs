//! Detection benchmark: three judges on identical simulated canaries.
//!
//! Run: `cargo bench --bench detection -- --runs=N` (N runs per A/A cell, N/2 per regression;
//! `--quick` for a smoke run with fewer runs per cell, `--no-tempering` to switch the
//! sequential judge's guards against one arm's own noise off (between-strata dispersion and
//! the pod-permutation test), `--no-strata` to give it arm totals,
//! `--step-gate` to end its test at the first pass, `--only=TEXT` to run only the cells
//! whose "<rate> req/min, <scenario>" contains TEXT; `DETECTION_DEBUG=1` prints the
//! sequential judge's fail minutes per cell to stderr). Writes a markdown table to stdout and
//! to `$CARGO_TARGET_DIR/detection.md` (else `target/detection.md`), and JSON next to it.
//!
//! Scenario (seeded, one seed per cell): canary and baseline arms of 3 pods each, Poisson
//! traffic of `rate` requests/minute per arm, errors with probability 0.5% (canary × the error
//! multiplier), latency log-normal (median 100 ms, σ = 0.5) reported as a Prometheus classic
//! histogram with the default buckets; one check per minute for 60 minutes; the regression is
//! present from the start. Pathologies: scrape gaps (each arm's scrape missing with
//! probability 20%, counters carry over), one noisy canary pod (its error rate, and in one
//! scenario also its latency scale, multiplied each minute by mean-one log-normal noise).
//!
//! Judges (each watches an error metric and a latency metric; a run fails when any fails):
//! * threshold (Argo/Flagger style): canary only; per minute error ratio > 1% or
//!   `histogram_quantile(0.99)` > 0.5 s is a failed measurement; the run fails at the third
//!   failed measurement (`failureLimit: 2`); minutes without data are skipped.
//! * Kayenta-style: per-minute step values (error ratio, p99 via histogram_quantile) of both
//!   arms, NaN removed, re-judged every minute on the growing window once each arm has 10
//!   values, `classify` with Kayenta defaults (98%, tolerance 0.25, direction increase,
//!   asymptotic interval as Kayenta), equal group weights, fail when score ≤ marginal 75
//!   (one High out of two metrics).
//! * sequential: the count test on error counters and the histogram test on slow requests
//!   above 0.1 / 0.25 / 0.5 s (about the baseline's p50 / p97 / p99.9 bucket bounds, as an
//!   operator would pick from the stable version's dashboard), run-level α = 1% split over the
//!   two metrics (and over the three bounds), fail margin 0, pass margin 25% (the shipped
//!   defaults), error counts given per pod (strata: between-pod dispersion and the
//!   pod-permutation test guard against one arm's own noise), evaluated at every scrape, as background
//!   analysis: a pass of both metrics starts fresh tests (α/2^k each) instead of ending.

use std::fmt::Write as _;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::gamma::ln_gamma;
use vigil::analysis::judge::mann_whitney::{
    Direction, ExactMode, KayentaConfig, Label, ScoreClass, ScoreThresholds, ScoredMetric,
    classify, score,
};
use vigil::analysis::judge::sequential::{
    CountState, CountTest, CountTestConfig, HistogramIncrement, HistogramState, HistogramTest,
    HistogramTestConfig, SequentialDecision, StratumCounts, split_alpha,
};
use vigil::api::SequentialJudge;

const MINUTES: usize = 60;
const PODS: usize = 3;
const BASE_ERROR_RATE: f64 = 0.005;
const LATENCY_MEDIAN: f64 = 0.1;
const LATENCY_SIGMA: f64 = 0.5;
const BUCKETS: [f64; 12] = [
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    f64::INFINITY,
];
const SLO_SECONDS: f64 = 0.5;
const KAYENTA_MIN_POINTS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Latency {
    Same,
    /// Every latency multiplied by this factor.
    Scale(f64),
    /// Latencies above the baseline's 98th percentile multiplied by this factor (p99 +50%
    /// with factor 1.5, p50 unchanged).
    Tail(f64),
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    error_multiplier: f64,
    latency: Latency,
    scrape_gap: f64,
    /// Pods (from pod 0) of the canary and of the baseline whose error rate is multiplied each
    /// minute by its own mean-one log-normal noise (σ = 1): overdispersed counts, same mean.
    noisy_pods: [usize; 2],
    /// The noisy canary pod 0's latency scale is noisy too (σ = 0.2): its tail is really
    /// heavier (≈ +33% requests above 0.5 s), so this is not an A/A.
    noisy_latency: bool,
    /// What the traffic of both arms does through the hour.
    traffic: Traffic,
    /// Both arms' error rate ×8 in minutes 20–24.
    incident: bool,
    /// The canary's share of all requests (0.5: equal arms of `rate` each).
    canary_share: f64,
    /// First minute with the regression (1: from the start).
    regression_from: usize,
    /// The error multiplier applies to canary pod 0 only.
    confined_to_one_pod: bool,
    /// Held out: not used to choose any constant of any judge (reported in its own table).
    held_out: bool,
}

/// Traffic common to both arms.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Traffic {
    Steady,
    /// Requests per minute × mean-one log-normal noise (σ = 0.7), the same for both arms.
    Bursty,
    /// Requests × (1 + 0.8 sin(2π m/60)) and the error rate × (1 + m/60) in both arms.
    Drifting,
}

impl Scenario {
    const BASE: Scenario = Scenario {
        name: "",
        error_multiplier: 1.0,
        latency: Latency::Same,
        scrape_gap: 0.0,
        noisy_pods: [0, 0],
        noisy_latency: false,
        traffic: Traffic::Steady,
        incident: false,
        canary_share: 0.5,
        regression_from: 1,
        confined_to_one_pod: false,
        held_out: false,
    };

    fn is_null(&self) -> bool {
        self.error_multiplier == 1.0 && self.latency == Latency::Same && !self.noisy_latency
    }

    /// Bad requests counted for this scenario: requests slower than the SLO when latency is
    /// what changes, errors otherwise.
    fn counts_slow_requests(&self) -> bool {
        self.latency != Latency::Same || self.noisy_latency
    }
}

const SCENARIOS: [Scenario; 20] = [
    Scenario {
        name: "A/A",
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, 20% scrape gaps",
        scrape_gap: 0.2,
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, one noisy canary pod (errors overdispersed)",
        noisy_pods: [1, 0],
        ..Scenario::BASE
    },
    Scenario {
        name: "noisy canary pod, errors + latency (tail +33% > 0.5 s)",
        noisy_pods: [1, 0],
        noisy_latency: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×1.5",
        error_multiplier: 1.5,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×2",
        error_multiplier: 2.0,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×5",
        error_multiplier: 5.0,
        ..Scenario::BASE
    },
    Scenario {
        name: "latency +10%",
        latency: Latency::Scale(1.1),
        ..Scenario::BASE
    },
    Scenario {
        name: "latency tail p99 +50%",
        latency: Latency::Tail(1.5),
        ..Scenario::BASE
    },
    // Held out: nothing was chosen on these.
    Scenario {
        name: "A/A, two noisy canary pods",
        noisy_pods: [2, 0],
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, errors overdispersed in both arms (every pod noisy)",
        noisy_pods: [3, 3],
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, bursty traffic in both arms",
        traffic: Traffic::Bursty,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, traffic and error rate drifting in both arms",
        traffic: Traffic::Drifting,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, incident in both arms (errors ×8, minutes 20–24)",
        incident: true,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "A/A, canary 5% / baseline 95% of the traffic",
        canary_share: 0.05,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×2, canary 5% / baseline 95%",
        error_multiplier: 2.0,
        canary_share: 0.05,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×2 from minute 21",
        error_multiplier: 2.0,
        regression_from: 21,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×1.5 from minute 21",
        error_multiplier: 1.5,
        regression_from: 21,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×2 confined to one of three canary pods",
        error_multiplier: 2.0,
        confined_to_one_pod: true,
        held_out: true,
        ..Scenario::BASE
    },
    Scenario {
        name: "errors ×2, one noisy canary pod",
        error_multiplier: 2.0,
        noisy_pods: [1, 0],
        held_out: true,
        ..Scenario::BASE
    },
];

const RATES: [f64; 3] = [20.0, 200.0, 2000.0];

// ---------------------------------------------------------------------------------------------
// Sampling
// ---------------------------------------------------------------------------------------------

/// Poisson sampler: multiplication for small means, Hörmann's PTRS otherwise (exact).
fn poisson(rng: &mut StdRng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 10.0 {
        let limit = (-mean).exp();
        let mut product: f64 = rng.random();
        let mut count = 0;
        while product > limit {
            product *= rng.random::<f64>();
            count += 1;
        }
        return count;
    }
    let slam = mean.sqrt();
    let loglam = mean.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = rng.random::<f64>() - 0.5;
        let v: f64 = rng.random();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + mean + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -mean + k * loglam - ln_gamma(k + 1.0)
        {
            return k as u64;
        }
    }
}

/// Mean-one log-normal noise factor.
fn noise(rng: &mut StdRng, sigma: f64) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (sigma * z - 0.5 * sigma * sigma).exp()
}

/// Bucket probabilities (non-cumulative) of the latency distribution.
fn bucket_probabilities(latency: Latency, extra_scale: f64) -> [f64; 12] {
    let normal = Normal::standard();
    let tail_start = LATENCY_MEDIAN * (LATENCY_SIGMA * normal.inverse_cdf(0.98)).exp();
    let cdf = |x: f64| -> f64 {
        if x.is_infinite() {
            return 1.0;
        }
        let base =
            |y: f64| normal.cdf(((y / extra_scale).ln() - LATENCY_MEDIAN.ln()) / LATENCY_SIGMA);
        match latency {
            Latency::Same => base(x),
            Latency::Scale(f) => base(x / f),
            // Values beyond the tail start are stretched: P(X' ≤ x) = P(X ≤ x) below the
            // tail start, P(X ≤ tail_start) + P(tail_start < X ≤ x / f) above it (x/f ≥ ts),
            // and P(X ≤ tail_start) in between.
            Latency::Tail(f) => {
                if x <= tail_start {
                    base(x)
                } else if x / f <= tail_start {
                    base(tail_start)
                } else {
                    base(x / f)
                }
            }
        }
    };
    let mut probabilities = [0.0; 12];
    let mut previous = 0.0;
    for (p, &le) in probabilities.iter_mut().zip(&BUCKETS) {
        let c = cdf(le);
        *p = (c - previous).max(0.0);
        previous = c;
    }
    probabilities
}

/// One arm's minute: request count, error count, cumulative bucket counts, per-pod counts.
#[derive(Debug, Clone, Default)]
struct ArmMinute {
    requests: u64,
    errors: u64,
    buckets: [u64; 12],
    slow: u64,
    pods: [StratumCounts; PODS],
}

/// How one arm's pods behave in one minute.
struct ArmConditions<'a> {
    /// Requests per minute of the whole arm.
    rate: f64,
    /// Error probability of every pod (before noise).
    error_rate: f64,
    /// Error probability of pod 0 when it differs (a regression confined to it).
    pod0_error_rate: f64,
    /// Pods (from 0) whose error rate is noisy.
    noisy_pods: usize,
    probabilities: &'a [f64; 12],
    /// Pod 0's bucket probabilities at a latency noise factor, when its latency is noisy.
    noisy_latency: Option<&'a dyn Fn(f64) -> [f64; 12]>,
}

fn simulate_arm(rng: &mut StdRng, arm: &ArmConditions<'_>) -> ArmMinute {
    let mut minute = ArmMinute::default();
    for pod in 0..PODS {
        let pod_rate = arm.rate / PODS as f64;
        let mut pod_error_rate = if pod == 0 {
            arm.pod0_error_rate
        } else {
            arm.error_rate
        };
        if pod < arm.noisy_pods {
            pod_error_rate *= noise(rng, 1.0);
        }
        let pod_error_rate = pod_error_rate.min(1.0);
        let pod_probabilities = match (pod, arm.noisy_latency) {
            (0, Some(probabilities_at)) => probabilities_at(noise(rng, 0.2)),
            _ => *arm.probabilities,
        };
        // Poisson splitting: errors and successes are independent Poisson counts.
        let errors = poisson(rng, pod_rate * pod_error_rate);
        let successes = poisson(rng, pod_rate * (1.0 - pod_error_rate));
        minute.errors += errors;
        minute.requests += errors + successes;
        minute.pods[pod] = StratumCounts {
            errors,
            requests: errors + successes,
        };
        let mut cumulative = 0;
        for (k, p) in pod_probabilities.iter().enumerate() {
            cumulative += poisson(rng, pod_rate * p);
            minute.buckets[k] += cumulative;
        }
    }
    let at_slo = BUCKETS.iter().position(|&b| b == SLO_SECONDS).unwrap_or(0);
    minute.slow = minute.buckets[11] - minute.buckets[at_slo];
    minute
}

/// Prometheus `histogram_quantile` on one interval's cumulative buckets.
fn histogram_quantile(q: f64, buckets: &[u64; 12]) -> f64 {
    let total = buckets[11] as f64;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let index = buckets.iter().position(|&c| c as f64 >= rank).unwrap_or(11);
    if index == 11 {
        return BUCKETS[10];
    }
    let (lower_bound, lower_count) = if index == 0 {
        (0.0, 0.0)
    } else {
        (BUCKETS[index - 1], buckets[index - 1] as f64)
    };
    let in_bucket = buckets[index] as f64 - lower_count;
    if in_bucket == 0.0 {
        return BUCKETS[index];
    }
    lower_bound + (BUCKETS[index] - lower_bound) * (rank - lower_count) / in_bucket
}

// ---------------------------------------------------------------------------------------------
// Judges
// ---------------------------------------------------------------------------------------------

/// Minute (1-based) at which each judge failed the run, if it did; plus canary bad requests.
#[derive(Debug, Clone, Copy, Default)]
struct RunOutcome {
    fail_minute: [Option<usize>; 3],
    /// Minute at which the judge stopped the run without failing (early pass), if any.
    pass_minute: [Option<usize>; 3],
    /// Minute at which the oracle SPRT (knowing the true ratio) rejected, if it did.
    oracle_minute: Option<usize>,
    /// Whether the most powerful fixed-sample test at minute [`FIXED_SAMPLE_MINUTE`] rejected.
    fixed_sample_rejects: bool,
}

struct SequentialJudges {
    counts: CountTest,
    latency: HistogramTest,
    /// Feed the error counts per pod (strata), so heterogeneity between pods tempers.
    stratify: bool,
    /// Keep testing after both metrics passed (background analysis).
    keep_watching: bool,
}

fn run_once(
    rng: &mut StdRng,
    rate: f64,
    scenario: &Scenario,
    judges: &SequentialJudges,
    bad_per_minute: &mut Vec<u64>,
) -> RunOutcome {
    let baseline_probabilities = bucket_probabilities(Latency::Same, 1.0);
    let canary_probabilities = bucket_probabilities(scenario.latency, 1.0);
    let latency = scenario.latency;
    let noisy = move |scale: f64| bucket_probabilities(latency, scale);
    let noisy_latency: Option<&dyn Fn(f64) -> [f64; 12]> = if scenario.noisy_latency {
        Some(&noisy)
    } else {
        None
    };

    let mut outcome = RunOutcome::default();
    // Threshold judge state.
    let mut threshold_failures = 0;
    // Kayenta-style series.
    let (mut canary_ratio, mut baseline_ratio) = (Vec::new(), Vec::new());
    let (mut canary_p99, mut baseline_p99) = (Vec::new(), Vec::new());
    let kayenta = KayentaConfig {
        direction: Direction::Increase,
        exact: ExactMode::Never,
        ..KayentaConfig::default()
    };
    let thresholds = ScoreThresholds {
        pass: 95.0,
        marginal: 75.0,
    };
    // Sequential state: increments accumulate while scrapes are missing.
    let mut count_state = CountState::default();
    let mut histogram_state = HistogramState::default();
    let mut pending_canary_pods = [StratumCounts::default(); PODS];
    let mut pending_baseline_pods = [StratumCounts::default(); PODS];
    let mut pending_canary_buckets = [0u64; 12];
    let mut pending_baseline_buckets = [0u64; 12];
    let (mut canary_seen, mut baseline_seen) = (true, true);
    let mut oracle = Oracle::new(scenario, judges.counts.config().alpha);
    let (mut sequential_done, mut threshold_done, mut kayenta_done) = (false, false, false);
    bad_per_minute.clear();

    let simulate_minute = |rng: &mut StdRng, minute: usize| -> (ArmMinute, ArmMinute) {
        let (volume, drift) = match scenario.traffic {
            Traffic::Steady => (1.0, 1.0),
            Traffic::Bursty => (noise(rng, 0.7), 1.0),
            Traffic::Drifting => (
                1.0 + 0.8 * (std::f64::consts::TAU * minute as f64 / MINUTES as f64).sin(),
                1.0 + minute as f64 / MINUTES as f64,
            ),
        };
        let incident = if scenario.incident && (20..=24).contains(&minute) {
            8.0
        } else {
            1.0
        };
        let base_error_rate = BASE_ERROR_RATE * drift * incident;
        let multiplier = if minute >= scenario.regression_from {
            scenario.error_multiplier
        } else {
            1.0
        };
        let canary_error_rate = if scenario.confined_to_one_pod {
            base_error_rate
        } else {
            base_error_rate * multiplier
        };
        let canary = simulate_arm(
            rng,
            &ArmConditions {
                rate: 2.0 * rate * scenario.canary_share * volume,
                error_rate: canary_error_rate,
                pod0_error_rate: base_error_rate * multiplier,
                noisy_pods: scenario.noisy_pods[0],
                probabilities: &canary_probabilities,
                noisy_latency,
            },
        );
        let baseline = simulate_arm(
            rng,
            &ArmConditions {
                rate: 2.0 * rate * (1.0 - scenario.canary_share) * volume,
                error_rate: base_error_rate,
                pod0_error_rate: base_error_rate,
                noisy_pods: scenario.noisy_pods[1],
                probabilities: &baseline_probabilities,
                noisy_latency: None,
            },
        );
        (canary, baseline)
    };
    let bad = |canary: &ArmMinute| {
        if scenario.counts_slow_requests() {
            canary.slow
        } else {
            canary.errors
        }
    };

    for minute in 1..=MINUTES {
        let (canary, baseline) = simulate_minute(rng, minute);
        bad_per_minute.push(bad(&canary));
        oracle.observe(minute, &canary, &baseline, &mut outcome);
        let canary_scraped = rng.random::<f64>() >= scenario.scrape_gap;
        let baseline_scraped = rng.random::<f64>() >= scenario.scrape_gap;

        // Threshold: canary only, this minute's rate; no scrape → no measurement.
        if !threshold_done && canary_scraped && canary_seen && canary.requests > 0 {
            let ratio = canary.errors as f64 / canary.requests as f64;
            let p99 = histogram_quantile(0.99, &canary.buckets);
            if ratio > 0.01 || p99 > SLO_SECONDS {
                threshold_failures += 1;
                if threshold_failures > 2 {
                    outcome.fail_minute[0] = Some(minute);
                    threshold_done = true;
                }
            }
        }

        // Kayenta: a step value exists when both the scrape of this minute and the previous
        // one exist (rate over one minute), else NaN (removed).
        let step = |arm: &ArmMinute, ok: bool| -> (f64, f64) {
            if !ok || arm.requests == 0 {
                return (f64::NAN, f64::NAN);
            }
            (
                arm.errors as f64 / arm.requests as f64,
                histogram_quantile(0.99, &arm.buckets),
            )
        };
        let (cr, cp) = step(&canary, canary_scraped && canary_seen);
        let (br, bp) = step(&baseline, baseline_scraped && baseline_seen);
        canary_ratio.push(cr);
        canary_p99.push(cp);
        baseline_ratio.push(br);
        baseline_p99.push(bp);
        let finite = |v: &[f64]| v.iter().filter(|x| x.is_finite()).count();
        if !kayenta_done && finite(&canary_ratio).min(finite(&baseline_ratio)) >= KAYENTA_MIN_POINTS
        {
            let errors = classify(&canary_ratio, &baseline_ratio, &kayenta);
            let latency = classify(&canary_p99, &baseline_p99, &kayenta);
            let metrics = [("errors", errors.label), ("latency", latency.label)].map(
                |(name, label): (&str, Label)| ScoredMetric {
                    name: name.into(),
                    groups: vec![name.into()],
                    label,
                    critical: false,
                    muted: false,
                },
            );
            let summary = score(&metrics, &Default::default(), &thresholds);
            if summary.score <= thresholds.marginal || summary.classification == ScoreClass::Fail {
                outcome.fail_minute[1] = Some(minute);
                kayenta_done = true;
            }
        }

        // Sequential: counters are cumulative, so a missing scrape only delays the increment.
        for (pending, now) in pending_canary_pods.iter_mut().zip(&canary.pods) {
            pending.errors += now.errors;
            pending.requests += now.requests;
        }
        for (pending, now) in pending_baseline_pods.iter_mut().zip(&baseline.pods) {
            pending.errors += now.errors;
            pending.requests += now.requests;
        }
        for k in 0..12 {
            pending_canary_buckets[k] += canary.buckets[k];
            pending_baseline_buckets[k] += baseline.buckets[k];
        }
        if !sequential_done && canary_scraped && baseline_scraped {
            let at_deadline = minute == MINUTES;
            if judges.stratify {
                judges
                    .counts
                    .update_stratified(
                        &mut count_state,
                        &pending_canary_pods,
                        &pending_baseline_pods,
                    )
                    .expect("consistent counts");
            } else {
                let total = |pods: &[StratumCounts]| {
                    pods.iter()
                        .fold((0, 0), |(e, r), p| (e + p.errors, r + p.requests))
                };
                let ((canary_errors, canary_requests), (baseline_errors, baseline_requests)) =
                    (total(&pending_canary_pods), total(&pending_baseline_pods));
                judges
                    .counts
                    .update(
                        &mut count_state,
                        &vigil::analysis::judge::sequential::CountIncrement {
                            canary_errors,
                            canary_requests,
                            baseline_errors,
                            baseline_requests,
                        },
                    )
                    .expect("consistent counts");
            }
            let increment = HistogramIncrement {
                bounds: BUCKETS.to_vec(),
                canary: pending_canary_buckets.to_vec(),
                baseline: pending_baseline_buckets.to_vec(),
            };
            judges
                .latency
                .update(&mut histogram_state, &increment)
                .expect("valid buckets");
            pending_canary_pods = [StratumCounts::default(); PODS];
            pending_baseline_pods = [StratumCounts::default(); PODS];
            pending_canary_buckets = [0; 12];
            pending_baseline_buckets = [0; 12];
            let errors = judges.counts.decide(&mut count_state, at_deadline);
            let latency = judges
                .latency
                .decide(&mut histogram_state, at_deadline)
                .expect("valid");
            if errors == SequentialDecision::Fail || latency == SequentialDecision::Fail {
                outcome.fail_minute[2] = Some(minute);
                sequential_done = true;
            } else if outcome.pass_minute[2].is_none()
                && passed(errors, count_state.restarts)
                && passed(latency, histogram_state.restarts)
            {
                // Both metrics passed: a step gate would end here; background analysis
                // (`keep_watching`) tests on.
                outcome.pass_minute[2] = Some(minute);
                sequential_done = !judges.keep_watching;
            }
        }
        canary_seen = canary_scraped;
        baseline_seen = baseline_scraped;
        if sequential_done && threshold_done && kayenta_done {
            break;
        }
    }
    // Finish the bad-request tally for the full hour (needed for judges that never stop).
    while bad_per_minute.len() < MINUTES {
        let minute = bad_per_minute.len() + 1;
        let (canary, _) = simulate_minute(rng, minute);
        bad_per_minute.push(bad(&canary));
    }
    outcome
}

/// Minute at which the fixed-sample bound is taken: a third of the Kayenta-style judge's
/// median of 10 minutes for errors ×2 at 2000 req/min.
const FIXED_SAMPLE_MINUTE: usize = 3;

/// The oracle for whole-canary error regressions from minute 1: Wald's SPRT of the
/// conditional binomial likelihood (given each minute's error total, an error is the canary's
/// with probability θ(δ)) at the *true* log ratio δ against δ = 0, at the count test's α
/// (threshold 1/α, Ville). No valid test that reads the same counts can have a smaller expected
/// time to reject at that α (Wald–Wolfowitz); it bounds what any mixture can reach. Beside it,
/// the most powerful fixed-sample test at minute [`FIXED_SAMPLE_MINUTE`] (one-sided exact
/// binomial at level α, the error budget spent on that one look): its power is the most any
/// level-α test can have of rejecting by then.
struct Oracle {
    delta: Option<f64>,
    alpha: f64,
    log_ratio: f64,
    canary_errors: u64,
    total_errors: u64,
    share_sum: f64,
}

impl Oracle {
    fn new(scenario: &Scenario, alpha: f64) -> Self {
        let applies = scenario.error_multiplier > 1.0
            && scenario.regression_from == 1
            && !scenario.confined_to_one_pod
            && scenario.noisy_pods == [0, 0]
            && scenario.latency == Latency::Same;
        Self {
            delta: applies.then(|| scenario.error_multiplier.ln()),
            alpha,
            log_ratio: 0.0,
            canary_errors: 0,
            total_errors: 0,
            share_sum: 0.0,
        }
    }

    fn observe(
        &mut self,
        minute: usize,
        canary: &ArmMinute,
        baseline: &ArmMinute,
        outcome: &mut RunOutcome,
    ) {
        let Some(delta) = self.delta else { return };
        let requests = canary.requests + baseline.requests;
        let errors = canary.errors + baseline.errors;
        if requests > 0 && errors > 0 {
            let share = canary.requests as f64 / requests as f64;
            let theta = share * delta.exp() / (1.0 - share + share * delta.exp());
            self.log_ratio += canary.errors as f64 * (theta / share).ln()
                + baseline.errors as f64 * ((1.0 - theta) / (1.0 - share)).ln();
            self.canary_errors += canary.errors;
            self.total_errors += errors;
            self.share_sum += errors as f64 * share;
        }
        if outcome.oracle_minute.is_none() && self.log_ratio >= (1.0 / self.alpha).ln() {
            outcome.oracle_minute = Some(minute);
        }
        if minute == FIXED_SAMPLE_MINUTE && self.total_errors > 0 {
            // Exact one-sided binomial test at the error-weighted mean share.
            let share = self.share_sum / self.total_errors as f64;
            let binomial = statrs::distribution::Binomial::new(share, self.total_errors)
                .expect("share in [0, 1]");
            use statrs::distribution::DiscreteCDF;
            let upper_tail = if self.canary_errors == 0 {
                1.0
            } else {
                binomial.sf(self.canary_errors - 1)
            };
            outcome.fixed_sample_rejects = upper_tail <= self.alpha;
        }
    }
}

/// Whether a sequential metric has passed at least once (a Pass, or a restart after one).
fn passed(decision: SequentialDecision, restarts: u32) -> bool {
    decision == SequentialDecision::Pass || restarts > 0
}

// ---------------------------------------------------------------------------------------------
// Cells and report
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
struct JudgeCell {
    judge: &'static str,
    /// Fraction of runs failed within 60 minutes (false-fail rate under A/A, power otherwise).
    fail_rate: f64,
    /// Wilson 95% interval of the fail rate.
    fail_rate_ci: (f64, f64),
    /// Median minute of failure over all runs; None = "never" (fewer than half failed).
    median_minutes_to_fail: Option<f64>,
    /// Mean canary bad requests (errors, or requests slower than the SLO for latency
    /// scenarios) served before the judge stopped the canary (the full hour if it never did).
    mean_bad_requests: f64,
    /// Fraction of runs the judge passed early (sequential only).
    early_pass_rate: f64,
    /// Fraction of runs failed before the first pass: the fail rate of a step gate, whose
    /// pass ends the test (sequential only; equals `fail_rate` for the others).
    fail_rate_if_pass_ends_test: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Cell {
    rate_per_arm_per_minute: f64,
    scenario: &'static str,
    null_scenario: bool,
    held_out: bool,
    runs: usize,
    seed: u64,
    judges: Vec<JudgeCell>,
    /// Median minute at which the oracle SPRT (true ratio known, the count test's α) rejected;
    /// only for whole-canary error regressions from the start.
    oracle_median_minutes_to_fail: Option<f64>,
    /// Fraction of runs the oracle SPRT rejected within the hour.
    oracle_fail_rate: Option<f64>,
    /// Power of the most powerful fixed-sample level-α test at minute 3 (same cells).
    fixed_sample_power_at_3_minutes: Option<f64>,
}

const JUDGE_NAMES: [&str; 3] = ["threshold", "kayenta", "sequential"];

fn wilson(successes: usize, runs: usize) -> (f64, f64) {
    let n = runs as f64;
    let p = successes as f64 / n;
    let z = 1.959_963_984_540_054_f64;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

fn run_cell(
    rate: f64,
    scenario: &Scenario,
    runs: usize,
    seed: u64,
    judges: &SequentialJudges,
) -> Cell {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut outcomes = Vec::with_capacity(runs);
    let mut bad = vec![[0u64; 3]; runs];
    let mut bad_per_minute = Vec::with_capacity(MINUTES);
    for run_bad in bad.iter_mut() {
        let outcome = run_once(&mut rng, rate, scenario, judges, &mut bad_per_minute);
        for (j, slot) in run_bad.iter_mut().enumerate() {
            // A canary serves until it is failed; a passed one keeps serving.
            let served = outcome.fail_minute[j].unwrap_or(MINUTES);
            *slot = bad_per_minute[..served].iter().sum();
        }
        outcomes.push(outcome);
    }
    let judges_out = (0..3)
        .map(|j| {
            let mut minutes: Vec<f64> = outcomes
                .iter()
                .map(|o| o.fail_minute[j].map_or(f64::INFINITY, |m| m as f64))
                .collect();
            minutes.sort_by(f64::total_cmp);
            if j == 2 && std::env::var_os("DETECTION_DEBUG").is_some() {
                eprintln!(
                    "sequential fail minutes: {:?}",
                    minutes.iter().filter(|m| m.is_finite()).collect::<Vec<_>>()
                );
            }
            let failures = minutes.iter().filter(|m| m.is_finite()).count();
            let median = if runs % 2 == 1 {
                minutes[runs / 2]
            } else {
                0.5 * (minutes[runs / 2 - 1] + minutes[runs / 2])
            };
            JudgeCell {
                judge: JUDGE_NAMES[j],
                fail_rate: failures as f64 / runs as f64,
                fail_rate_ci: wilson(failures, runs),
                median_minutes_to_fail: median.is_finite().then_some(median),
                mean_bad_requests: bad.iter().map(|b| b[j] as f64).sum::<f64>() / runs as f64,
                early_pass_rate: outcomes
                    .iter()
                    .filter(|o| o.pass_minute[j].is_some())
                    .count() as f64
                    / runs as f64,
                fail_rate_if_pass_ends_test: outcomes
                    .iter()
                    .filter(|o| match (o.fail_minute[j], o.pass_minute[j]) {
                        (Some(fail), Some(pass)) => fail < pass,
                        (Some(_), None) => true,
                        _ => false,
                    })
                    .count() as f64
                    / runs as f64,
            }
        })
        .collect();
    let oracle_applies = Oracle::new(scenario, 0.5).delta.is_some();
    let oracle_median = oracle_applies.then(|| {
        let mut minutes: Vec<f64> = outcomes
            .iter()
            .map(|o| o.oracle_minute.map_or(f64::INFINITY, |m| m as f64))
            .collect();
        minutes.sort_by(f64::total_cmp);
        if runs % 2 == 1 {
            minutes[runs / 2]
        } else {
            0.5 * (minutes[runs / 2 - 1] + minutes[runs / 2])
        }
    });
    let fraction = |count: usize| count as f64 / runs as f64;
    Cell {
        oracle_median_minutes_to_fail: oracle_median.filter(|m| m.is_finite()),
        oracle_fail_rate: oracle_applies.then(|| {
            fraction(
                outcomes
                    .iter()
                    .filter(|o| o.oracle_minute.is_some())
                    .count(),
            )
        }),
        fixed_sample_power_at_3_minutes: oracle_applies
            .then(|| fraction(outcomes.iter().filter(|o| o.fixed_sample_rejects).count())),
        rate_per_arm_per_minute: rate,
        scenario: scenario.name,
        null_scenario: scenario.is_null(),
        held_out: scenario.held_out,
        runs,
        seed,
        judges: judges_out,
    }
}

fn markdown(cells: &[Cell], runs_null: usize, runs_effect: usize, seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Runs per cell: {runs_null} (A/A) / {runs_effect} (regressions); 60 one-minute checks; \
         wall time {seconds:.0} s.\n\
         Cells: fail rate within 60 min (false-fail rate for A/A rows, with the upper end of its \
         Wilson 95% interval in brackets; power otherwise), median minute to fail over all runs \
         (\"never\" when fewer than half fail), mean canary bad requests served before the verdict.\n"
    );
    for (title, held_out) in [
        ("Scenarios the constants were chosen on", false),
        ("Held-out scenarios (nothing chosen on them)", true),
    ] {
        let rows: Vec<&Cell> = cells.iter().filter(|c| c.held_out == held_out).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{title}:\n\n| req/min/arm | scenario | threshold | Kayenta-style | sequential |\n|---:|---|---|---|---|"
        );
        for cell in rows {
            let text = |j: &JudgeCell| {
                let median = j
                    .median_minutes_to_fail
                    .map_or("never".to_string(), |m| format!("{m:.0} min"));
                let upper = if cell.null_scenario {
                    format!(" (≤ {:.3})", j.fail_rate_ci.1)
                } else {
                    String::new()
                };
                format!(
                    "{:.3}{upper}, {median}, {:.0} bad",
                    j.fail_rate, j.mean_bad_requests
                )
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell.rate_per_arm_per_minute,
                cell.scenario,
                text(&cell.judges[0]),
                text(&cell.judges[1]),
                text(&cell.judges[2])
            );
        }
        let _ = writeln!(out);
    }
    let oracle_rows: Vec<&Cell> = cells
        .iter()
        .filter(|c| c.oracle_fail_rate.is_some())
        .collect();
    if !oracle_rows.is_empty() {
        let _ = writeln!(
            out,
            "What any valid test could reach (same draws; the count test's α):\n\n\
             | req/min/arm | scenario | oracle SPRT: rate, median | most powerful test at minute 3: power | sequential median |\n|---:|---|---|---|---|"
        );
        for cell in oracle_rows {
            let median = |m: Option<f64>| m.map_or("never".to_string(), |m| format!("{m:.0} min"));
            let _ = writeln!(
                out,
                "| {} | {} | {:.3}, {} | {:.3} | {} |",
                cell.rate_per_arm_per_minute,
                cell.scenario,
                cell.oracle_fail_rate.unwrap_or(0.0),
                median(cell.oracle_median_minutes_to_fail),
                cell.fixed_sample_power_at_3_minutes.unwrap_or(0.0),
                median(cell.judges[2].median_minutes_to_fail)
            );
        }
        let _ = writeln!(out);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `--quick` shrinks the run for smoke tests.
    let quick = args.iter().any(|a| a == "--quick");
    // `--no-tempering` turns the sequential judge's guards against one arm's own noise off
    // (between-strata dispersion, pod-permutation test),
    // `--no-strata` feeds it arm totals instead of per-pod counts, `--step-gate` ends its test
    // at the first pass instead of watching on as background analysis does.
    let temper = !args.iter().any(|a| a == "--no-tempering");
    let stratify = !args.iter().any(|a| a == "--no-strata");
    let keep_watching = !args.iter().any(|a| a == "--step-gate");
    // `--runs=N`: N runs per A/A cell, N/2 per regression cell.
    let runs = args
        .iter()
        .find_map(|a| a.strip_prefix("--runs="))
        .and_then(|n| n.parse::<usize>().ok());
    let (runs_null, runs_effect) = match runs {
        Some(n) => (n.max(2), (n / 2).max(2)),
        None if quick => (100, 50),
        None => (1000, 500),
    };
    // `--only=TEXT` keeps the cells whose "<rate> req/min, <scenario>" contains TEXT.
    let only = args.iter().find_map(|a| a.strip_prefix("--only="));
    // The shipped defaults (SequentialJudge::DEFAULT_*), α split over the two metrics as a run
    // with both sequential templates splits it.
    let counts = CountTestConfig {
        alpha: split_alpha(SequentialJudge::DEFAULT_ALPHA, 2),
        fail_margin: SequentialJudge::DEFAULT_FAIL_MARGIN,
        pass_margin: SequentialJudge::DEFAULT_PASS_MARGIN,
        temper_overdispersion: temper,
        keep_watching,
        ..CountTestConfig::default()
    };
    let sequential = SequentialJudges {
        counts: CountTest::new(counts).expect("valid config"),
        latency: HistogramTest::new(HistogramTestConfig {
            counts,
            bounds: vec![0.1, 0.25, 0.5],
            ..HistogramTestConfig::default()
        })
        .expect("valid config"),
        stratify,
        keep_watching,
    };
    let mut work = Vec::new();
    for (r, &rate) in RATES.iter().enumerate() {
        for (s, scenario) in SCENARIOS.iter().enumerate() {
            if only.is_some_and(|text| !format!("{rate} req/min, {}", scenario.name).contains(text))
            {
                continue;
            }
            let runs = if scenario.is_null() {
                runs_null
            } else {
                runs_effect
            };
            work.push((rate, *scenario, runs, 1000 + (r * 100 + s) as u64));
        }
    }
    let started = Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(4);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; work.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(rate, scenario, runs, seed)) = work.get(i) else {
                        break;
                    };
                    let cell = run_cell(rate, &scenario, runs, seed, &sequential);
                    eprintln!(
                        "done {} req/min, {} ({:.0} s)",
                        rate,
                        scenario.name,
                        started.elapsed().as_secs_f64()
                    );
                    if let Ok(mut guard) = results.lock() {
                        guard[i] = Some(cell);
                    }
                }
            });
        }
    });
    let cells: Vec<Cell> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    let table = markdown(&cells, runs_null, runs_effect, seconds);
    println!("{table}");
    let directory = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_string());
    let json = serde_json::to_string_pretty(&cells).unwrap_or_default();
    for (name, content) in [("detection.md", &table), ("detection.json", &json)] {
        let path = std::path::Path::new(&directory).join(name);
        if let Err(error) = std::fs::write(&path, content) {
            eprintln!("cannot write {}: {error}", path.display());
        } else {
            eprintln!("wrote {}", path.display());
        }
    }
}
