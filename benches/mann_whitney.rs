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

/// CPU time (user + system) of the calling thread in seconds, from /proc (Linux; 10 ms ticks).
/// The build machine is shared, so wall-clock figures overstate the cost under load.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; after the name they are 11th and 12th.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn report_cpu_time(canary: &[f64], baseline: &[f64], options: &MannWhitneyOptions) {
    let calls = 20;
    if let Some(start) = thread_cpu_seconds() {
        for _ in 0..calls {
            black_box(mann_whitney(black_box(canary), black_box(baseline), options).ok());
        }
        if let Some(end) = thread_cpu_seconds() {
            eprintln!(
                "mann_whitney_hl_interval/{}: {:.1} ms CPU time per call ({calls} calls)",
                canary.len(),
                (end - start) * 1000.0 / f64::from(calls)
            );
        }
    }
}

fn bench_mann_whitney(c: &mut Criterion) {
    let mut group = c.benchmark_group("mann_whitney_hl_interval");
    group.sample_size(10);
    for size in [1_000usize, 10_000, 100_000] {
        let mut rng = StdRng::seed_from_u64(size as u64);
        let baseline = latencies(&mut rng, size, 0.100);
        let canary = latencies(&mut rng, size, 0.105);
        let options = MannWhitneyOptions::default();
        report_cpu_time(&canary, &baseline, &options);
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
