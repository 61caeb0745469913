//! The measurement parse path without network: one Prometheus `/api/v1/query` vector response
//! body into a typed `Measurement`, the single value a gate judges, and the threshold verdict.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vigil::analysis::judge::threshold::{ThresholdInput, ThresholdJudge};
use vigil::analysis::provider::prometheus::parse_response;

/// A vector response with `n` series labelled like a per-pod error ratio.
fn vector_body(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"metric":{{"rollout":"checkout","revision":"def456","role":"canary","namespace":"shop","pod":"checkout-def456-{i:05}"}},"value":[1700000000.123,"0.0{i}5"]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        items.join(",")
    )
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_vector_response");
    for n in [1usize, 10, 100] {
        let body = vector_body(n);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| parse_response(black_box(body.as_bytes())))
        });
    }
    group.finish();

    let one = vector_body(1);
    c.bench_function("parse_and_single_value/1", |b| {
        b.iter(|| {
            parse_response(black_box(one.as_bytes()))
                .and_then(|m| m.single_value())
                .map(|v| v.finite())
        })
    });
}

/// The whole path of one threshold measurement after the network: parse the body, take the
/// single value, judge it with compiled CEL conditions.
fn parse_and_judge(c: &mut Criterion) {
    let judge = ThresholdJudge::new(Some("result < 0.01"), Some("result >= 0.05"))
        .unwrap_or_else(|e| panic!("bench conditions compile: {e}"));
    let one = vector_body(1);
    c.bench_function("parse_and_judge/threshold", |b| {
        b.iter(|| {
            let value = parse_response(black_box(one.as_bytes()))
                .and_then(|m| m.single_value())
                .ok()
                .and_then(|v| v.finite())
                .unwrap_or(f64::NAN);
            judge.judge(&ThresholdInput::Number(value))
        })
    });
    c.bench_function("judge/threshold", |b| {
        b.iter(|| judge.judge(black_box(&ThresholdInput::Number(0.02))))
    });
}

criterion_group!(benches, parse, parse_and_judge);
criterion_main!(benches);
