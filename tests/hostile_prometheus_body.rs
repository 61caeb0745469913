//! Property tests of the Prometheus body parser against hostile answers: arbitrary bytes, and
//! arbitrary JSON shaped like Prometheus answers (keys in any order, wrong types, odd numbers,
//! escapes, nesting). The parser must never panic, and its work must stay bounded.
//!
//! Work is counted, not timed: what the parser produces (series and points) is bounded by the
//! input's length and by `MAX_SERIES_PER_ANSWER`, and serde_json reads the input once, with
//! its own nesting limit. The CI runs 256 cases per property; `PROPTEST_CASES` raises it (the
//! figures of a longer run are in `benches/README.md`).

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use vigil::analysis::provider::prometheus::{MAX_SERIES_PER_ANSWER, parse_response};
use vigil::analysis::provider::{MAX_TEXT_BYTES, Measurement};

/// Cases per property: 256 in CI, `PROPTEST_CASES` for longer campaigns.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Series and points the parser produced: its output, which bounds the work after reading.
fn decoded_elements(m: &Measurement) -> usize {
    match m {
        Measurement::Scalar { .. } => 1,
        Measurement::NoData { .. } => 0,
        Measurement::Vector(samples) => samples.len(),
        Measurement::Matrix(series) => series.iter().map(|s| 1 + s.points.len()).sum(),
    }
}

/// Parses `body` and checks the bounds every answer, hostile or not, must keep.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    match parse_response(body) {
        Ok(m) => {
            let elements = decoded_elements(&m);
            // Each series or point takes several bytes of input: output is linear in input.
            prop_assert!(
                elements <= body.len(),
                "{elements} from {} bytes",
                body.len()
            );
            let series = match &m {
                Measurement::Vector(s) => s.len(),
                Measurement::Matrix(s) => s.len(),
                _ => 1,
            };
            prop_assert!(series <= MAX_SERIES_PER_ANSWER);
        }
        Err(error) => {
            // Errors end up in status: bounded whatever the answer held.
            let text = error.to_string();
            prop_assert!(
                text.len() <= 2 * MAX_TEXT_BYTES + 256,
                "{} bytes",
                text.len()
            );
        }
    }
    Ok(())
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Sample times: ordinary, fractional, huge, negative, or not a number at all.
fn sample_time() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => (1_600_000_000i64..1_800_000_000).prop_map(|t| json!(t)),
        4 => (1.6e9f64..1.8e9).prop_map(|t| json!(t)),
        1 => any::<f64>().prop_map(|t| json!(t)),
        1 => any::<i64>().prop_map(|t| json!(t)),
        1 => ".{0,6}".prop_map(Value::String),
    ]
}

/// Sample values: Prometheus' spellings, numbers as text, garbage, or the wrong type.
fn sample_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop_oneof![
            Just("NaN"),
            Just("+Inf"),
            Just("-Inf"),
            Just("Inf"),
            Just("1e308"),
            Just("1e999"),
            Just("-0"),
        ]
        .prop_map(|s| json!(s)),
        12 => any::<f64>().prop_map(|v| json!(v.to_string())),
        1 => ".{0,10}".prop_map(Value::String),
        1 => any::<f64>().prop_map(|v| json!(v)),
    ]
}

fn sample() -> impl Strategy<Value = Value> {
    prop_oneof![
        40 => (sample_time(), sample_value()).prop_map(|(t, v)| json!([t, v])),
        1 => any_json(),
    ]
}

fn labels() -> impl Strategy<Value = Value> {
    prop_oneof![
        40 => prop::collection::btree_map("[a-z_]{1,6}", ".{0,16}", 0..5)
            .prop_map(|m| json!(m)),
        1 => any_json(),
    ]
}

/// A series object of a vector or a matrix, with some fields missing, doubled or wrong.
fn series() -> impl Strategy<Value = Value> {
    (
        labels(),
        prop::option::weighted(0.8, sample()),
        prop::option::weighted(0.5, prop::collection::vec(sample(), 0..6)),
        prop::option::weighted(0.1, any_json()),
    )
        .prop_map(|(metric, value, values, histogram)| {
            let mut object = Map::new();
            object.insert("metric".into(), metric);
            if let Some(value) = value {
                object.insert("value".into(), value);
            }
            if let Some(values) = values {
                object.insert("values".into(), Value::Array(values));
            }
            if let Some(histogram) = histogram {
                object.insert("histogram".into(), histogram);
            }
            Value::Object(object)
        })
}

fn result_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        16 => prop_oneof![Just("scalar"), Just("vector"), Just("matrix"), Just("string")]
            .prop_map(|s| json!(s)),
        1 => any_json(),
    ]
}

fn result() -> impl Strategy<Value = Value> {
    prop_oneof![
        12 => prop::collection::vec(series(), 0..6).prop_map(Value::Array),
        3 => sample(),
        1 => any_json(),
    ]
}

/// A whole answer: envelope, data, result type and result; any part may be missing or odd.
fn answer() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            12 => Just(json!("success")),
            1 => Just(json!("error")),
            1 => any_json()
        ],
        prop::option::weighted(
            0.95,
            (
                prop::option::weighted(0.95, result_type()),
                prop::option::weighted(0.95, result()),
            ),
        ),
        prop::option::weighted(0.2, ".{0,40}"),
        prop::option::of(prop::collection::vec(".{0,10}", 0..20)),
    )
        .prop_map(|(status, data, error, warnings)| {
            let mut object = Map::new();
            object.insert("status".into(), status);
            if let Some((result_type, result)) = data {
                let mut data = Map::new();
                if let Some(t) = result_type {
                    data.insert("resultType".into(), t);
                }
                if let Some(r) = result {
                    data.insert("result".into(), r);
                }
                object.insert("data".into(), Value::Object(data));
            }
            if let Some(error) = error {
                object.insert("errorType".into(), json!("execution"));
                object.insert("error".into(), json!(error));
            }
            if let Some(warnings) = warnings {
                object.insert("warnings".into(), json!(warnings));
            }
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&body)?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        check(value.to_string().as_bytes())?;
    }

    #[test]
    fn prometheus_shaped_answers_never_panic(value in answer()) {
        check(value.to_string().as_bytes())?;
    }

    #[test]
    fn truncated_answers_never_panic(value in answer(), cut in any::<prop::sample::Index>()) {
        let text = value.to_string();
        let end = cut.index(text.len() + 1);
        check(&text.as_bytes()[..end])?;
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let depth = 100_000;
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(parse_response(body.as_bytes()).is_err());
}
