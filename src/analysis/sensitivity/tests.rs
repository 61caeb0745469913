use super::*;
use crate::analysis::judge::sequential::split_alpha;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::function::gamma::ln_gamma;

/// The detection bench's sequential configuration (benches/detection.rs): α = 1% split over
/// two metrics, fail margin 0, pass margin 25%.
fn bench_config() -> CountTestConfig {
    CountTestConfig {
        alpha: split_alpha(0.01, 2),
        fail_margin: 0.0,
        pass_margin: 0.25,
        ..CountTestConfig::default()
    }
}

fn per_minute(count: u64) -> GateSchedule {
    GateSchedule {
        initial_delay: Duration::ZERO,
        interval: Duration::from_secs(60),
        count,
    }
}

/// benches/detection.rs `poisson`, copied so that this test draws exactly as the bench does.
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

/// The bench's plain cell for the error metric: each arm 3 pods of Poisson traffic, `rate`
/// requests/minute per arm, errors with probability 0.5% (canary × `ratio`), one check per
/// minute for 60 minutes. Returns the minute the count test fails, if it does.
fn simulated_fail_minute(seed: u64, rate_per_minute: f64, ratio: f64) -> Option<u64> {
    const PODS: usize = 3;
    const BASE_ERROR_RATE: f64 = 0.005;
    let test = CountTest::new(bench_config()).expect("valid config");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = CountState::default();
    let arm = |rng: &mut StdRng, error_rate: f64| {
        let (mut errors, mut requests) = (0, 0);
        for _ in 0..PODS {
            let pod_rate = rate_per_minute / PODS as f64;
            let e = poisson(rng, pod_rate * error_rate);
            let s = poisson(rng, pod_rate * (1.0 - error_rate));
            errors += e;
            requests += e + s;
        }
        (errors, requests)
    };
    for minute in 1..=60 {
        let (canary_errors, canary_requests) = arm(&mut rng, BASE_ERROR_RATE * ratio);
        let (baseline_errors, baseline_requests) = arm(&mut rng, BASE_ERROR_RATE);
        let increment = CountIncrement {
            canary_errors,
            canary_requests,
            baseline_errors,
            baseline_requests,
        };
        test.update(&mut state, &increment)
            .expect("consistent counts");
        match test.decide(&mut state, false) {
            SequentialDecision::Fail => return Some(minute),
            SequentialDecision::Pass => return None,
            _ => {}
        }
    }
    None
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[test]
fn preview_matches_the_detection_benchs_simulation() {
    // Errors x2 and x3 at 2000 and 200 requests/minute per arm, the bench's plain cells.
    for (rate_per_minute, ratio) in [(2000.0, 2.0), (2000.0, 3.0), (200.0, 3.0)] {
        let traffic = GateTraffic {
            canary_rps: rate_per_minute / 60.0,
            baseline_rps: rate_per_minute / 60.0,
            baseline_event_rate: 0.005,
        };
        let preview = time_to_fail(&bench_config(), &traffic, &per_minute(60), ratio)
            .expect("valid")
            .expect("detected within a day");
        let fails: Vec<u64> = (0..200)
            .filter_map(|seed| simulated_fail_minute(seed, rate_per_minute, ratio))
            .collect();
        assert!(
            fails.len() > 100,
            "the simulation detects x{ratio} at {rate_per_minute}/min in most runs: {}",
            fails.len()
        );
        let simulated = median(fails) as f64;
        let predicted = preview.measurements as f64;
        eprintln!(
            "x{ratio} at {rate_per_minute}/min: preview {predicted} min, simulated median {simulated} min"
        );
        // The expected path is the typical run: within a quarter (and a minute) of the median.
        assert!(
            (predicted - simulated).abs() <= 1.0 + 0.25 * simulated,
            "x{ratio} at {rate_per_minute}/min: preview {predicted} min, simulated median \
             {simulated} min"
        );
    }
}

#[test]
fn larger_regressions_are_detected_sooner_and_the_null_never_fails() {
    let traffic = GateTraffic::split(25.0, 20, 0.01);
    let schedule = per_minute(10);
    let config = CountTestConfig {
        fail_margin: 0.2,
        pass_margin: 0.1,
        ..CountTestConfig::default()
    };
    let at = |ratio| {
        time_to_fail(&config, &traffic, &schedule, ratio)
            .expect("valid")
            .map(|d| d.measurements)
    };
    let (x5, x2) = (at(5.0).expect("x5"), at(2.0).expect("x2"));
    assert!(x5 < x2, "x5 at {x5}, x2 at {x2}");
    assert_eq!(
        at(1.0),
        None,
        "a canary as good as the baseline never fails"
    );
    assert_eq!(at(1.2), None, "a canary exactly at the margin never fails");
}

#[test]
fn smallest_detectable_ratio_is_detected_within_the_gate_and_below_it_is_not() {
    let traffic = GateTraffic::split(25.0, 20, 0.01);
    let schedule = per_minute(10);
    let config = CountTestConfig {
        fail_margin: 0.2,
        ..CountTestConfig::default()
    };
    let ratio = smallest_detectable_ratio(&config, &traffic, &schedule)
        .expect("valid")
        .expect("detectable");
    let detection = |r| time_to_fail(&config, &traffic, &schedule, r).expect("valid");
    assert!(detection(ratio).is_some_and(|d| d.within_gate));
    assert!(!detection(ratio * 0.97).is_some_and(|d| d.within_gate));
}

#[test]
fn no_traffic_detects_nothing_and_bad_input_is_an_error() {
    let schedule = per_minute(10);
    let idle = GateTraffic::split(0.0, 20, 0.01);
    let config = CountTestConfig::default();
    assert_eq!(
        smallest_detectable_ratio(&config, &idle, &schedule),
        Ok(None)
    );
    let bad = GateTraffic {
        baseline_event_rate: 2.0,
        ..idle
    };
    assert!(matches!(
        time_to_fail(&config, &bad, &schedule, 2.0),
        Err(SensitivityError::ValidateTraffic {
            field: "errorRate",
            ..
        })
    ));
    let zero = GateSchedule {
        interval: Duration::ZERO,
        ..schedule
    };
    assert_eq!(
        time_to_fail(&config, &idle, &zero, 2.0),
        Err(SensitivityError::ValidateInterval)
    );
}

#[test]
fn human_durations() {
    assert_eq!(human_duration(Duration::from_secs(30)), "30 s");
    assert_eq!(human_duration(Duration::from_secs(14 * 60)), "14 min");
    assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3.0 h");
}
