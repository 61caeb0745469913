//! Criterion benches: Mann–Whitney with the Hodges–Lehmann interval at growing sizes, and one
//! update of the sequential count judge.
//!
//! Run: `CARGO_TARGET_DIR=/work/main/target cargo bench --bench mann_whitney`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vigil::analysis::judge::mann_whitney::{MannWhitneyOptions, mann_whitney};
use vigil::analysis::judge::sequential::{
    CountIncrement, CountState, CountTest, CountTestConfig, HistogramIncrement, HistogramState,
    HistogramTest, HistogramTestConfig,
};

/// Log-normal latencies (Box–Muller), seeded.
fn latencies(rng: &mut StdRng, count: usize, scale: f64) -> Vec<f64> {
    (0..count)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            scale * (0.5 * z).exp()
        })
        .collect()
}

fn bench_mann_whitney(c: &mut Criterion) {
    let mut group = c.benchmark_group("mann_whitney_hl_interval");
    group.sample_size(10);
    for size in [1_000usize, 10_000, 100_000] {
        let mut rng = StdRng::seed_from_u64(size as u64);
        let baseline = latencies(&mut rng, size, 0.100);
        let canary = latencies(&mut rng, size, 0.105);
        let options = MannWhitneyOptions::default();
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| mann_whitney(black_box(&canary), black_box(&baseline), &options))
        });
    }
    group.finish();
}

/// One scrape: update the count test and decide (the per-scrape cost in the controller), and
/// the same with the full report (confidence sequence, detectable ratio, reason).
fn bench_sequential(c: &mut Criterion) {
    let test = CountTest::new(CountTestConfig::default()).expect("valid config");
    let mut state = CountState::default();
    let increment = CountIncrement {
        canary_errors: 12,
        canary_requests: 2000,
        baseline_errors: 10,
        baseline_requests: 1990,
    };
    for _ in 0..30 {
        test.update(&mut state, &increment).expect("consistent");
    }
    c.bench_function("sequential_count_update_and_decide", |b| {
        b.iter(|| {
            let mut s = state.clone();
            test.update(&mut s, black_box(&increment))
                .expect("consistent");
            test.decide(&mut s, false)
        })
    });
    c.bench_function("sequential_count_update_and_report", |b| {
        b.iter(|| {
            let mut s = state.clone();
            test.update(&mut s, black_box(&increment))
                .expect("consistent");
            test.evaluate(&mut s, false)
        })
    });
    let histogram = HistogramTest::new(HistogramTestConfig {
        bounds: vec![0.1, 0.25, 0.5],
        ..HistogramTestConfig::default()
    })
    .expect("valid config");
    let buckets = HistogramIncrement {
        bounds: vec![
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
        ],
        canary: vec![0, 0, 1, 40, 1000, 1900, 1990, 1998, 2000, 2000, 2000, 2000],
        baseline: vec![0, 0, 2, 45, 990, 1905, 1992, 1999, 2000, 2000, 2000, 2000],
    };
    let mut histogram_state = HistogramState::default();
    histogram
        .update(&mut histogram_state, &buckets)
        .expect("valid");
    c.bench_function("sequential_histogram_update_and_decide", |b| {
        b.iter(|| {
            let mut s = histogram_state.clone();
            histogram
                .update(&mut s, black_box(&buckets))
                .expect("valid");
            histogram.decide(&mut s, false).expect("valid")
        })
    });
}

criterion_group!(benches, bench_mann_whitney, bench_sequential);
criterion_main!(benches);
