//! Criterion benches: Mann–Whitney with the Hodges–Lehmann interval at growing sizes, and one
//! update of the sequential count judge.
//!
//! Run: `CARGO_TARGET_DIR=/work/main/target cargo bench --bench mann_whitney`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vigil::analysis::judge::mann_whitney::{MannWhitneyOptions, mann_whitney};

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

criterion_group!(benches, bench_mann_whitney);
criterion_main!(benches);
