//! The measurement parse path without network: one Prometheus `/api/v1/query` vector response
//! body into a typed `Measurement`, the single value a gate judges, and the threshold verdict.
//! Also the hostile case of issue 9: an answer of 500,000 series (25 MB), once 1.48 GB and 15 s
//! of CPU, now refused after decoding at most `MAX_SERIES_PER_ANSWER` series; its peak memory
//! is printed before the timings.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use vigil::analysis::judge::threshold::{ThresholdInput, ThresholdJudge};
use vigil::analysis::provider::prometheus::{MAX_SERIES_PER_ANSWER, parse_response};

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

/// A vector answer with `n` series of one short label: 500,000 of them make 25 MB, the size
/// of the answer in issue 9.
fn small_series_body(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"metric":{{"pod":"p{i:06}"}},"value":[1700000000,"1"]}}"#))
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

/// The process' peak resident memory (`VmHWM`) in KiB, from `/proc` (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Set in the child that measures one parse's memory: the file holding the body.
const PEAK_CHILD_ENV: &str = "VIGIL_BENCH_PARSE_PEAK_OF";

/// In the child: reads the body (one exact allocation), resets the peak to the current
/// resident size (Linux `clear_refs`, value 5), parses once and prints the growth. A fresh
/// process, so no memory freed earlier can hide the parse's own.
fn measure_peak_in_child(path: &str) {
    let Ok(body) = std::fs::read(path) else {
        eprintln!("cannot read {path}");
        return;
    };
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("cannot reset the peak RSS here; memory figure skipped");
        return;
    }
    let before = peak_rss_kib();
    let started = std::time::Instant::now();
    let result = parse_response(black_box(&body));
    let elapsed = started.elapsed();
    let after = peak_rss_kib();
    let outcome = match &result {
        Ok(m) => format!("Ok({:?})", m.result_type()),
        Err(e) => e.to_string(),
    };
    if let (Some(before), Some(after)) = (before, after) {
        println!(
            "body {:.1} MB, peak RSS +{:.1} MiB over the body, one parse {elapsed:?}: {outcome}",
            body.len() as f64 / 1e6,
            after.saturating_sub(before) as f64 / 1024.0
        );
    }
}

/// Parses `body` once in a fresh child process and prints how much its peak memory grew.
fn print_peak(label: &str, body: &str) {
    let path = std::env::temp_dir().join(format!("vigil-bench-body-{}", std::process::id()));
    let figure = std::fs::write(&path, body)
        .and_then(|()| std::env::current_exe())
        .and_then(|exe| {
            std::process::Command::new(exe)
                .env(PEAK_CHILD_ENV, &path)
                .output()
        });
    let _ = std::fs::remove_file(&path);
    match figure {
        Ok(output) => eprint!("{label}: {}", String::from_utf8_lossy(&output.stdout)),
        Err(error) => eprintln!("{label}: memory figure skipped ({error})"),
    }
}

/// An 8 MiB-class matrix answer: one series of `n` points `[1,"1"]` (review finding 2).
fn one_long_series_body(n: usize) -> String {
    let points = vec![r#"[1,"1"]"#; n].join(",");
    format!(
        r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{points}]}}]}}}}"#
    )
}

/// A vector answer of one series with `n` tiny labels `"l<i>":""` (review finding 2).
fn one_wide_series_body(n: usize) -> String {
    let labels: Vec<String> = (0..n).map(|i| format!(r#""l{i}":"""#)).collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{{}}},"value":[1,"1"]}}]}}}}"#,
        labels.join(",")
    )
}

/// A vector answer of `series` series with `labels` labels each (review finding 2).
fn many_labelled_series_body(series: usize, labels: usize) -> String {
    let metric: Vec<String> = (0..labels).map(|i| format!(r#""l{i}":"v""#)).collect();
    let metric = metric.join(",");
    let items: Vec<String> = (0..series)
        .map(|i| format!(r#"{{"metric":{{"pod":"p{i}",{metric}}},"value":[1,"1"]}}"#))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        items.join(",")
    )
}

/// Answers with many series: past the cap (skipped, counted) and exactly at it (decoded);
/// and the three 8 MiB-class shapes of review finding 2 (points, labels, labelled series).
fn hostile(c: &mut Criterion) {
    let half_a_million = small_series_body(500_000);
    let at_the_cap = vector_body(MAX_SERIES_PER_ANSWER);
    print_peak("500k series", &half_a_million);
    print_peak("10k series (the cap)", &at_the_cap);
    print_peak("1M points in one series", &one_long_series_body(1_000_000));
    print_peak("640k labels in one series", &one_wide_series_body(640_000));
    print_peak(
        "10k series x 60 labels",
        &many_labelled_series_body(10_000, 60),
    );
    let mut group = c.benchmark_group("parse_hostile_response");
    group.sample_size(10);
    for (name, body) in [
        ("500k_series", &half_a_million),
        ("10k_series", &at_the_cap),
    ] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), body, |b, body| {
            b.iter(|| parse_response(black_box(body.as_bytes())))
        });
    }
    group.finish();
}

criterion_group!(benches, parse, parse_and_judge, hostile);

// `criterion_main!`, plus the child that measures one parse's memory.
fn main() {
    if let Ok(path) = std::env::var(PEAK_CHILD_ENV) {
        measure_peak_in_child(&path);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
