//! Typed measurements and provider errors. Pure data: no I/O, no clock.
//!
//! A query result is never coerced into a pass or a fail here. An empty result is
//! [`Measurement::NoData`], NaN and ±Inf keep their own class, and asking for one value from a
//! result holding several series is an error that names those series.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// The label set of one series, ordered by label name (so it prints deterministically).
pub type Labels = BTreeMap<String, String>;

/// How many series names an error keeps: enough to diagnose, bounded so a query returning
/// thousands of series cannot blow up a status field or a log line.
pub const MAX_SERIES_NAMED: usize = 10;

/// The most bytes of one text vigil stores in status or prints (a reason, a value, a message,
/// a provider error, a label value): enough to diagnose, small enough that a run's status with
/// many metrics and their retained measurements stays within its budget. A 5 MB error body or
/// a 1 MB label value is cut here, never copied whole into an object etcd must store.
pub const MAX_TEXT_BYTES: usize = 1024;

/// `text` cut to [`MAX_TEXT_BYTES`] on a char boundary, with `… (N bytes cut)` appended when
/// cut. Every string that reaches status, events or output passes through here.
pub fn bounded(text: &str) -> Cow<'_, str> {
    bounded_to(text, MAX_TEXT_BYTES)
}

/// `text` cut to at most `limit` bytes (plus the suffix saying how much was cut).
pub fn bounded_to(text: &str, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return Cow::Borrowed(text);
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!(
        "{}… ({} bytes cut)",
        &text[..cut],
        text.len() - cut
    ))
}

/// [`bounded`] for an owned string: no copy when it is already short.
pub fn bounded_owned(text: String) -> String {
    match bounded(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

/// The result type Prometheus reports (`data.resultType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultType {
    /// One number without labels.
    Scalar,
    /// One sample per series at the evaluation time.
    Vector,
    /// A list of samples per series over a range.
    Matrix,
    /// A string literal (not a measurement; reported as an error by providers).
    String,
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResultType::Scalar => "scalar",
            ResultType::Vector => "vector",
            ResultType::Matrix => "matrix",
            ResultType::String => "string",
        })
    }
}

/// The class of a floating-point value. NaN and infinities are not numbers a threshold can be
/// compared with, so judges must handle them explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueClass {
    /// An ordinary finite number.
    Finite,
    /// Not a number (e.g. `0/0`, a ratio over a window without traffic).
    NaN,
    /// Positive infinity (e.g. `1/0`).
    PosInf,
    /// Negative infinity.
    NegInf,
}

impl ValueClass {
    /// Classifies a value.
    pub fn of(value: f64) -> ValueClass {
        if value.is_nan() {
            ValueClass::NaN
        } else if value == f64::INFINITY {
            ValueClass::PosInf
        } else if value == f64::NEG_INFINITY {
            ValueClass::NegInf
        } else {
            ValueClass::Finite
        }
    }
}

impl fmt::Display for ValueClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueClass::Finite => "finite",
            ValueClass::NaN => "NaN",
            ValueClass::PosInf => "+Inf",
            ValueClass::NegInf => "-Inf",
        })
    }
}

/// One series of an instant vector: its labels and its value at the evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    /// The series' labels (including `__name__` when Prometheus keeps it).
    pub labels: Labels,
    /// The sample's timestamp as reported by Prometheus.
    pub at: Timestamp,
    /// The value (may be NaN or ±Inf).
    pub value: f64,
    /// How many raw observations stand behind the value, when known. Prometheus does not
    /// report it; the analysis layer fills it from a companion count query.
    pub sample_count: Option<u64>,
}

/// One series of a range query: its labels and its points in increasing time order.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: Labels,
    /// `(timestamp, value)` points, oldest first.
    pub points: Vec<(Timestamp, f64)>,
}

/// A typed query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Measurement {
    /// A scalar result.
    Scalar {
        /// Evaluation time.
        at: Timestamp,
        /// The value (may be NaN or ±Inf).
        value: f64,
    },
    /// A non-empty instant vector.
    Vector(Vec<VectorSample>),
    /// A non-empty range result.
    Matrix(Vec<RangeSeries>),
    /// The query returned no series at all (an empty vector or matrix).
    NoData {
        /// The result type of the empty result.
        result_type: ResultType,
    },
}

/// The one value a gate judges, with its class made explicit.
#[derive(Debug, Clone, PartialEq)]
pub enum SingleValue {
    /// A finite number.
    Finite {
        /// The value.
        value: f64,
        /// The labels of the series it came from (empty for a scalar).
        labels: Labels,
        /// The raw observation count, when known.
        sample_count: Option<u64>,
    },
    /// NaN: typically a ratio over a window with no traffic.
    NaN {
        /// The labels of the series it came from.
        labels: Labels,
    },
    /// Positive infinity.
    PosInf {
        /// The labels of the series it came from.
        labels: Labels,
    },
    /// Negative infinity.
    NegInf {
        /// The labels of the series it came from.
        labels: Labels,
    },
    /// No series at all.
    NoData,
}

impl SingleValue {
    fn classify(value: f64, labels: Labels, sample_count: Option<u64>) -> SingleValue {
        match ValueClass::of(value) {
            ValueClass::Finite => SingleValue::Finite {
                value,
                labels,
                sample_count,
            },
            ValueClass::NaN => SingleValue::NaN { labels },
            ValueClass::PosInf => SingleValue::PosInf { labels },
            ValueClass::NegInf => SingleValue::NegInf { labels },
        }
    }

    /// The finite value, if there is one.
    pub fn finite(&self) -> Option<f64> {
        match self {
            SingleValue::Finite { value, .. } => Some(*value),
            _ => None,
        }
    }
}

impl Measurement {
    /// Builds a measurement from instant-vector samples; an empty vector is `NoData`.
    pub fn from_vector(samples: Vec<VectorSample>) -> Measurement {
        if samples.is_empty() {
            Measurement::NoData {
                result_type: ResultType::Vector,
            }
        } else {
            Measurement::Vector(samples)
        }
    }

    /// Builds a measurement from range series; an empty matrix is `NoData`.
    pub fn from_matrix(series: Vec<RangeSeries>) -> Measurement {
        if series.is_empty() {
            Measurement::NoData {
                result_type: ResultType::Matrix,
            }
        } else {
            Measurement::Matrix(series)
        }
    }

    /// The result type this measurement came from.
    pub fn result_type(&self) -> ResultType {
        match self {
            Measurement::Scalar { .. } => ResultType::Scalar,
            Measurement::Vector(_) => ResultType::Vector,
            Measurement::Matrix(_) => ResultType::Matrix,
            Measurement::NoData { result_type } => *result_type,
        }
    }

    /// The single value of a scalar or a one-series vector.
    ///
    /// An empty result gives [`SingleValue::NoData`]; NaN and ±Inf keep their class. A vector
    /// with several series is [`ProviderError::TooManySeries`] naming them, and a matrix is
    /// [`ProviderError::UnexpectedResultType`]: neither is silently reduced to one value.
    pub fn single_value(&self) -> Result<SingleValue, ProviderError> {
        match self {
            Measurement::Scalar { value, .. } => {
                Ok(SingleValue::classify(*value, Labels::new(), None))
            }
            Measurement::NoData { .. } => Ok(SingleValue::NoData),
            Measurement::Vector(samples) => match samples.as_slice() {
                [] => Ok(SingleValue::NoData),
                [one] => Ok(SingleValue::classify(
                    one.value,
                    one.labels.clone(),
                    one.sample_count,
                )),
                several => Err(ProviderError::too_many_series(
                    several.iter().map(|s| &s.labels),
                    several.len(),
                )),
            },
            Measurement::Matrix(_) => Err(ProviderError::UnexpectedResultType {
                expected: "scalar or vector",
                got: ResultType::Matrix,
            }),
        }
    }

    /// The single series of a range result: `None` when there is no data, an error naming the
    /// series when there are several.
    pub fn single_series(&self) -> Result<Option<&RangeSeries>, ProviderError> {
        match self {
            Measurement::NoData { .. } => Ok(None),
            Measurement::Matrix(series) => match series.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(one)),
                several => Err(ProviderError::too_many_series(
                    several.iter().map(|s| &s.labels),
                    several.len(),
                )),
            },
            other => Err(ProviderError::UnexpectedResultType {
                expected: "matrix",
                got: other.result_type(),
            }),
        }
    }
}

/// Formats a label set the way PromQL writes a series: `name{a="x", b="y"}`.
pub fn format_series(labels: &Labels) -> String {
    let mut out = String::new();
    if let Some(name) = labels.get("__name__") {
        out.push_str(name);
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().filter(|(k, _)| k.as_str() != "__name__") {
        if !first {
            out.push_str(", ");
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A cap on what one provider answer may hold (see `provider::prometheus` for the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerCap {
    /// Points in one series of a range answer.
    PointsPerSeries,
    /// Points in all series of a range answer together.
    PointsPerAnswer,
    /// Labels on one series.
    LabelsPerSeries,
    /// Labels on all series of an answer together.
    LabelsPerAnswer,
    /// Bytes in one label name.
    LabelNameBytes,
    /// Bytes in one label value.
    LabelValueBytes,
    /// Values (numbers, strings, lists, objects...) in one JSON answer of a web metric.
    JsonValuesPerAnswer,
}

impl fmt::Display for AnswerCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerCap::PointsPerSeries => "points in one series (points per series)",
            AnswerCap::PointsPerAnswer => "points in all series (points per answer)",
            AnswerCap::LabelsPerSeries => "labels on one series (labels per series)",
            AnswerCap::LabelsPerAnswer => "labels in all series (labels per answer)",
            AnswerCap::LabelNameBytes => "bytes in one label name (label name bytes)",
            AnswerCap::LabelValueBytes => "bytes in one label value (label value bytes)",
            AnswerCap::JsonValuesPerAnswer => "JSON values in one answer (JSON values per answer)",
        })
    }
}

/// Why a measurement could not be taken. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider could not be reached (connection refused, reset, DNS, TLS), even after
    /// retrying.
    // The whole cause chain: reqwest's top-level message ("error sending request") alone
    // does not say why.
    #[error(
        "cannot reach {address} after {attempts} attempt(s): {}",
        error_chain(source.as_ref())
    )]
    Unreachable {
        /// The provider address (credentials removed).
        address: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last connection error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The destination is one outbound requests may not reach (a cloud metadata server, a
    /// link-local address): refused before any connection was made.
    #[error("{0}")]
    RefuseDestination(#[from] crate::http_client::EgressError),
    /// The configured address itself is one outbound requests may not reach: refused when
    /// the client is built, naming the field that holds it.
    #[error("{field}: {refused}")]
    RefuseAddress {
        /// The field holding the address, e.g. `provider.prometheus.address`.
        field: &'static str,
        /// Why it was refused.
        refused: crate::http_client::EgressError,
    },
    /// No answer within the query timeout (retries and queueing included).
    #[error("no answer within {after:?} (after {attempts} attempt(s))")]
    Timeout {
        /// The timeout that elapsed.
        after: Duration,
        /// How many attempts had started.
        attempts: u32,
    },
    /// The provider answered with an HTTP error status and no structured error.
    #[error("HTTP {status} after {attempts} attempt(s): {body_excerpt}")]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The beginning of the response body.
        body_excerpt: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// Prometheus rejected or failed the query (`"status": "error"`), e.g. `bad_data` for a
    /// syntax error or `execution` for an evaluation error.
    #[error("Prometheus error {error_type}: {error}")]
    PrometheusError {
        /// Prometheus' `errorType`.
        error_type: String,
        /// Prometheus' `error` message.
        error: String,
    },
    /// The response body is not a valid Prometheus API response.
    #[error("malformed response: {detail}")]
    MalformedBody {
        /// What was wrong.
        detail: String,
    },
    /// The result's type is not the one the caller needs (e.g. a matrix where one value was
    /// expected).
    #[error("expected a {expected} result, got a {got}")]
    UnexpectedResultType {
        /// What was expected.
        expected: &'static str,
        /// What came back.
        got: ResultType,
    },
    /// Several series came back where exactly one was expected.
    #[error(
        "expected {expected} series, got {got}: {}{}",
        series.join("; "),
        if *got > series.len() { "; ..." } else { "" }
    )]
    TooManySeries {
        /// How many series were expected (always 1).
        expected: usize,
        /// How many came back.
        got: usize,
        /// The first series (at most [`MAX_SERIES_NAMED`]), formatted as PromQL selectors.
        series: Vec<String>,
    },
    /// The server answered with a redirect. vigil never follows one: credentials and custom
    /// headers (tenant IDs, API keys) would go to whatever host the answer names.
    #[error(
        "HTTP {status} redirect to {location}: redirects are not followed (credentials must not reach another host); set the provider's address (provider.prometheus.address, provider.web.url) to the final URL"
    )]
    Redirected {
        /// The 3xx status code.
        status: u16,
        /// Where the answer pointed (credentials and query removed), or `(no Location)`.
        location: String,
    },
    /// The answer body is larger than the client reads.
    #[error(
        "the answer is larger than {limit} bytes, more than vigil reads; aggregate the query (e.g. sum by (...)) so it returns what the gate judges"
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer holds more series than the client decodes.
    #[error(
        "too many series: the answer holds {got}, at most {limit} are decoded; aggregate the query (e.g. sum by (...))"
    )]
    TooManySeriesInAnswer {
        /// How many series are decoded at most.
        limit: usize,
        /// How many the answer holds.
        got: usize,
    },
    /// The answer is over one of the caps on what one answer may hold; decoding stopped there.
    #[error(
        "the answer holds more than {limit} {cap}, more than vigil decodes; aggregate the query (e.g. sum by (...)), drop labels or shorten its range"
    )]
    AnswerOverCap {
        /// Which cap the answer is over.
        cap: AnswerCap,
        /// The cap's value.
        limit: usize,
    },
    /// A web metric's answer is not JSON.
    #[error("the answer is not JSON: {detail}")]
    NotJson {
        /// The parser's message and the beginning of the body.
        detail: String,
    },
    /// A web metric's `jsonPath` selects nothing in the answer.
    #[error("no value at jsonPath {path} in the answer: {excerpt}")]
    NoValueAtPath {
        /// The path, as written.
        path: String,
        /// The beginning of the answer, to see what it holds.
        excerpt: String,
    },
    /// The client configuration is invalid (bad CA bundle, header name, address).
    #[error("invalid provider configuration: {detail}")]
    InvalidConfig {
        /// What was wrong.
        detail: String,
    },
}

/// `error: cause: root cause`, skipping causes whose text the previous message already holds.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

impl ProviderError {
    fn too_many_series<'a>(labels: impl Iterator<Item = &'a Labels>, got: usize) -> ProviderError {
        ProviderError::TooManySeries {
            expected: 1,
            got,
            series: labels
                .take(MAX_SERIES_NAMED)
                .map(|l| bounded_owned(format_series(l)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sample(pairs: &[(&str, &str)], value: f64) -> VectorSample {
        VectorSample {
            labels: labels(pairs),
            at: Timestamp::UNIX_EPOCH,
            value,
            sample_count: None,
        }
    }

    #[test]
    fn classifies_values() {
        assert_eq!(ValueClass::of(1.5), ValueClass::Finite);
        assert_eq!(ValueClass::of(f64::NAN), ValueClass::NaN);
        assert_eq!(ValueClass::of(f64::INFINITY), ValueClass::PosInf);
        assert_eq!(ValueClass::of(f64::NEG_INFINITY), ValueClass::NegInf);
        assert_eq!(ValueClass::of(f64::MAX), ValueClass::Finite);
    }

    #[test]
    fn empty_vector_is_no_data() {
        let m = Measurement::from_vector(vec![]);
        assert_eq!(
            m,
            Measurement::NoData {
                result_type: ResultType::Vector
            }
        );
        assert_eq!(m.single_value().ok(), Some(SingleValue::NoData));
        // Even a hand-built empty vector is no data, never a value.
        assert_eq!(
            Measurement::Vector(vec![]).single_value().ok(),
            Some(SingleValue::NoData)
        );
    }

    #[test]
    fn one_series_gives_its_value_and_labels() {
        let m = Measurement::from_vector(vec![sample(&[("role", "canary")], 0.25)]);
        assert_eq!(
            m.single_value().ok(),
            Some(SingleValue::Finite {
                value: 0.25,
                labels: labels(&[("role", "canary")]),
                sample_count: None
            })
        );
    }

    #[test]
    fn nan_and_infinities_keep_their_class() {
        let nan = Measurement::Scalar {
            at: Timestamp::UNIX_EPOCH,
            value: f64::NAN,
        };
        assert_eq!(
            nan.single_value().ok(),
            Some(SingleValue::NaN {
                labels: Labels::new()
            })
        );
        let inf = Measurement::from_vector(vec![sample(&[], f64::INFINITY)]);
        assert!(matches!(inf.single_value(), Ok(SingleValue::PosInf { .. })));
        let ninf = Measurement::from_vector(vec![sample(&[], f64::NEG_INFINITY)]);
        assert!(matches!(
            ninf.single_value(),
            Ok(SingleValue::NegInf { .. })
        ));
    }

    #[test]
    fn several_series_is_an_error_naming_them() {
        let m = Measurement::from_vector(vec![
            sample(&[("__name__", "up"), ("role", "stable")], 1.0),
            sample(&[("__name__", "up"), ("role", "canary")], 1.0),
        ]);
        let err = m
            .single_value()
            .expect_err("two series must not give one value");
        match &err {
            ProviderError::TooManySeries {
                expected,
                got,
                series,
            } => {
                assert_eq!((*expected, *got), (1, 2));
                assert_eq!(series, &["up{role=\"stable\"}", "up{role=\"canary\"}"]);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "expected 1 series, got 2: up{role=\"stable\"}; up{role=\"canary\"}"
        );
    }

    #[test]
    fn too_many_series_is_bounded() {
        let many: Vec<_> = (0..50)
            .map(|i| sample(&[("pod", &format!("p{i}"))], 1.0))
            .collect();
        match Measurement::from_vector(many).single_value() {
            Err(ProviderError::TooManySeries { got, series, .. }) => {
                assert_eq!(got, 50);
                assert_eq!(series.len(), MAX_SERIES_NAMED);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn matrix_is_not_a_single_value() {
        let m = Measurement::from_matrix(vec![RangeSeries {
            labels: Labels::new(),
            points: vec![(Timestamp::UNIX_EPOCH, 1.0)],
        }]);
        assert!(matches!(
            m.single_value(),
            Err(ProviderError::UnexpectedResultType {
                got: ResultType::Matrix,
                ..
            })
        ));
        assert!(matches!(m.single_series(), Ok(Some(_))));
        assert!(matches!(
            Measurement::from_matrix(vec![]).single_series(),
            Ok(None)
        ));
    }

    #[test]
    fn bounded_cuts_on_a_char_boundary_and_says_how_much() {
        assert_eq!(bounded("short"), "short");
        let exact = "x".repeat(MAX_TEXT_BYTES);
        assert!(matches!(bounded(&exact), Cow::Borrowed(_)));
        // 'é' is two bytes: a cut at an odd offset must step back, not split it.
        let text = format!("a{}", "é".repeat(MAX_TEXT_BYTES));
        let cut = bounded(&text);
        let suffix = cut.rsplit_once('…').map(|(_, s)| s).unwrap_or_default();
        assert_eq!(
            suffix,
            format!(" ({} bytes cut)", text.len() - (MAX_TEXT_BYTES - 1))
        );
        assert!(cut.len() <= MAX_TEXT_BYTES + 32, "{}", cut.len());
        assert_eq!(bounded_to("ab", 0), "… (2 bytes cut)");
    }

    #[test]
    fn megabyte_label_values_are_bounded_in_too_many_series() {
        let huge = "v".repeat(1 << 20);
        let m = Measurement::from_vector(vec![
            sample(&[("pod", &huge)], 1.0),
            sample(&[("pod", "b")], 1.0),
        ]);
        let error = m.single_value().expect_err("two series");
        let text = error.to_string();
        assert!(
            text.len() <= 2 * MAX_TEXT_BYTES + 200,
            "{} bytes",
            text.len()
        );
        assert!(text.contains("bytes cut"), "{text}");
    }

    #[test]
    fn series_formatting_escapes_values() {
        assert_eq!(
            format_series(&labels(&[("a", "x\"y\\z")])),
            "{a=\"x\\\"y\\\\z\"}"
        );
    }
}
