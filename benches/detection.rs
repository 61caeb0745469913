//! Detection benchmark: three judges on identical simulated canaries.
//!
//! Run: `CARGO_TARGET_DIR=/work/main/target cargo bench --bench detection`
//! (`-- --quick` for a smoke run with fewer runs per cell). Writes a markdown table to stdout and
//! to `$CARGO_TARGET_DIR/detection.md` (else `target/detection.md`), and JSON next to it.
//!
//! Scenario (seeded, one seed per cell): canary and baseline arms of 3 pods each, Poisson
//! traffic of `rate` requests/minute per arm, errors with probability 0.5% (canary × the error
//! multiplier), latency log-normal (median 100 ms, σ = 0.5) reported as a Prometheus classic
//! histogram with the default buckets; one check per minute for 60 minutes; the regression is
//! present from the start. Pathologies: scrape gaps (each arm's scrape missing with
//! probability 20%, counters carry over), one noisy canary pod (its error rate and latency
//! scale are multiplied each minute by mean-one log-normal noise).
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
//!   two metrics (and over the three bounds), fail margin 0, pass margin 25%, evaluated at
//!   every scrape; an early Pass of both metrics ends the run.

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
    CountIncrement, CountState, CountTest, CountTestConfig, HistogramIncrement, HistogramState,
    HistogramTest, HistogramTestConfig, SequentialDecision, split_alpha,
};

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
    noisy_pod: bool,
}

impl Scenario {
    fn is_null(&self) -> bool {
        self.error_multiplier == 1.0 && self.latency == Latency::Same
    }
}

const SCENARIOS: [Scenario; 8] = [
    Scenario {
        name: "A/A",
        error_multiplier: 1.0,
        latency: Latency::Same,
        scrape_gap: 0.0,
        noisy_pod: false,
    },
    Scenario {
        name: "A/A, 20% scrape gaps",
        error_multiplier: 1.0,
        latency: Latency::Same,
        scrape_gap: 0.2,
        noisy_pod: false,
    },
    Scenario {
        name: "A/A, one noisy canary pod",
        error_multiplier: 1.0,
        latency: Latency::Same,
        scrape_gap: 0.0,
        noisy_pod: true,
    },
    Scenario {
        name: "errors ×1.5",
        error_multiplier: 1.5,
        latency: Latency::Same,
        scrape_gap: 0.0,
        noisy_pod: false,
    },
    Scenario {
        name: "errors ×2",
        error_multiplier: 2.0,
        latency: Latency::Same,
        scrape_gap: 0.0,
        noisy_pod: false,
    },
    Scenario {
        name: "errors ×5",
        error_multiplier: 5.0,
        latency: Latency::Same,
        scrape_gap: 0.0,
        noisy_pod: false,
    },
    Scenario {
        name: "latency +10%",
        error_multiplier: 1.0,
        latency: Latency::Scale(1.1),
        scrape_gap: 0.0,
        noisy_pod: false,
    },
    Scenario {
        name: "latency tail p99 +50%",
        error_multiplier: 1.0,
        latency: Latency::Tail(1.5),
        scrape_gap: 0.0,
        noisy_pod: false,
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

/// One arm's minute: request count, error count, cumulative bucket counts.
#[derive(Debug, Clone, Default)]
struct ArmMinute {
    requests: u64,
    errors: u64,
    buckets: [u64; 12],
    slow: u64,
}

fn simulate_arm(
    rng: &mut StdRng,
    rate: f64,
    error_rate: f64,
    probabilities: &[f64; 12],
    noisy_probabilities: Option<&dyn Fn(f64) -> [f64; 12]>,
) -> ArmMinute {
    let mut minute = ArmMinute::default();
    for pod in 0..PODS {
        let pod_rate = rate / PODS as f64;
        let (pod_error_rate, pod_probabilities) = match (pod, noisy_probabilities) {
            (0, Some(probabilities_at)) => {
                let error_noise = noise(rng, 1.0);
                let latency_noise = noise(rng, 0.2);
                (
                    (error_rate * error_noise).min(1.0),
                    probabilities_at(latency_noise),
                )
            }
            _ => (error_rate, *probabilities),
        };
        // Poisson splitting: errors and successes are independent Poisson counts.
        let errors = poisson(rng, pod_rate * pod_error_rate);
        let successes = poisson(rng, pod_rate * (1.0 - pod_error_rate));
        minute.errors += errors;
        minute.requests += errors + successes;
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
}

struct SequentialJudges {
    counts: CountTest,
    latency: HistogramTest,
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
    let noisy_ref: Option<&dyn Fn(f64) -> [f64; 12]> = if scenario.noisy_pod {
        Some(&noisy)
    } else {
        None
    };
    let canary_error_rate = BASE_ERROR_RATE * scenario.error_multiplier;

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
    let mut pending_counts = [CountIncrement::default(); 1];
    let mut pending_canary_buckets = [0u64; 12];
    let mut pending_baseline_buckets = [0u64; 12];
    let (mut canary_seen, mut baseline_seen) = (true, true);
    let (mut sequential_done, mut threshold_done, mut kayenta_done) = (false, false, false);
    bad_per_minute.clear();

    for minute in 1..=MINUTES {
        let canary = simulate_arm(
            rng,
            rate,
            canary_error_rate,
            &canary_probabilities,
            noisy_ref,
        );
        let baseline = simulate_arm(rng, rate, BASE_ERROR_RATE, &baseline_probabilities, None);
        bad_per_minute.push(if scenario.latency == Latency::Same {
            canary.errors
        } else {
            canary.slow
        });
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
        pending_counts[0].canary_errors += canary.errors;
        pending_counts[0].canary_requests += canary.requests;
        pending_counts[0].baseline_errors += baseline.errors;
        pending_counts[0].baseline_requests += baseline.requests;
        for k in 0..12 {
            pending_canary_buckets[k] += canary.buckets[k];
            pending_baseline_buckets[k] += baseline.buckets[k];
        }
        if !sequential_done && canary_scraped && baseline_scraped {
            let at_deadline = minute == MINUTES;
            judges
                .counts
                .update(&mut count_state, &pending_counts[0])
                .expect("consistent counts");
            let increment = HistogramIncrement {
                bounds: BUCKETS.to_vec(),
                canary: pending_canary_buckets.to_vec(),
                baseline: pending_baseline_buckets.to_vec(),
            };
            judges
                .latency
                .update(&mut histogram_state, &increment)
                .expect("valid buckets");
            pending_counts[0] = CountIncrement::default();
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
            } else if errors == SequentialDecision::Pass && latency == SequentialDecision::Pass {
                outcome.pass_minute[2] = Some(minute);
                sequential_done = true;
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
        let canary = simulate_arm(
            rng,
            rate,
            canary_error_rate,
            &canary_probabilities,
            noisy_ref,
        );
        bad_per_minute.push(if scenario.latency == Latency::Same {
            canary.errors
        } else {
            canary.slow
        });
    }
    outcome
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
}

#[derive(Debug, Clone, Serialize)]
struct Cell {
    rate_per_arm_per_minute: f64,
    scenario: &'static str,
    null_scenario: bool,
    runs: usize,
    seed: u64,
    judges: Vec<JudgeCell>,
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
            let stop = outcome.fail_minute[j]
                .or(outcome.pass_minute[j])
                .unwrap_or(MINUTES);
            // A passed canary keeps serving: count the whole hour for early passes.
            let served = if outcome.pass_minute[j].is_some() {
                MINUTES
            } else {
                stop
            };
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
            }
        })
        .collect();
    Cell {
        rate_per_arm_per_minute: rate,
        scenario: scenario.name,
        null_scenario: scenario.is_null(),
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
         Cells: fail rate within 60 min (false-fail rate for A/A rows, power otherwise), \
         median minute to fail over all runs (\"never\" when fewer than half fail), \
         mean canary bad requests served before the verdict.\n"
    );
    let _ = writeln!(
        out,
        "| req/min/arm | scenario | threshold | Kayenta-style | sequential |\n|---:|---|---|---|---|"
    );
    for cell in cells {
        let text = |j: &JudgeCell| {
            let median = j
                .median_minutes_to_fail
                .map_or("never".to_string(), |m| format!("{m:.0} min"));
            format!(
                "{:.3}, {median}, {:.0} bad",
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
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `--quick` shrinks the run for smoke tests.
    let quick = args.iter().any(|a| a == "--quick");
    let (runs_null, runs_effect) = if quick { (100, 50) } else { (1000, 500) };
    let sequential = SequentialJudges {
        counts: CountTest::new(CountTestConfig {
            alpha: split_alpha(0.01, 2),
            fail_margin: 0.0,
            pass_margin: 0.25,
            prior_scale: 0.5,
        })
        .expect("valid config"),
        latency: HistogramTest::new(HistogramTestConfig {
            counts: CountTestConfig {
                alpha: split_alpha(0.01, 2),
                fail_margin: 0.0,
                pass_margin: 0.25,
                prior_scale: 0.5,
            },
            bounds: vec![0.1, 0.25, 0.5],
            ..HistogramTestConfig::default()
        })
        .expect("valid config"),
    };
    let mut work = Vec::new();
    for (r, &rate) in RATES.iter().enumerate() {
        for (s, scenario) in SCENARIOS.iter().enumerate() {
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
