//! What a sequential gate can detect, before it runs: the sensitivity preview of `vigil plan`
//! and the lint that warns about gates too short for their traffic.
//!
//! Pure: no I/O, no clock. The count test is fed the *expected* counts of a canary whose error
//! (or slow-request) rate is `ratio` × the baseline's, interval by interval, at the given
//! traffic, and the first interval at which it fails is the detection time. Expected counts
//! are accumulated and handed over as whole numbers (the floor of the running total, so that
//! 0.4 errors per interval arrive as one error every 2–3 intervals): the typical path, close to
//! the median of simulated runs (checked in tests against the detection bench's simulation).

use std::time::Duration;

use crate::analysis::judge::sequential::{
    CountIncrement, CountState, CountTest, CountTestConfig, SequentialDecision, SequentialError,
};

/// Longest horizon searched: beyond a day of intervals a gate "cannot detect" the ratio.
const HORIZON: Duration = Duration::from_secs(24 * 3600);
/// At most this many intervals are simulated per question (bounds the work for 1 s intervals).
const MAX_INTERVALS: u64 = 20_000;
/// Ratios the preview reports, from large to small.
pub const PREVIEW_RATIOS: [f64; 6] = [5.0, 3.0, 2.0, 1.5, 1.2, 1.1];

/// Traffic through one gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateTraffic {
    /// Requests per second reaching the canary.
    pub canary_rps: f64,
    /// Requests per second reaching the baseline (stable).
    pub baseline_rps: f64,
    /// Share of the baseline's requests that count as events: errors, or slow requests for a
    /// latency test.
    pub baseline_event_rate: f64,
}

impl GateTraffic {
    /// Traffic split by the canary weight (percent) of a total request rate.
    pub fn split(total_rps: f64, canary_weight: u8, baseline_event_rate: f64) -> Self {
        let share = f64::from(canary_weight.min(100)) / 100.0;
        Self {
            canary_rps: total_rps * share,
            baseline_rps: total_rps * (1.0 - share),
            baseline_event_rate,
        }
    }
}

/// When a gate measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSchedule {
    /// Before the first measurement.
    pub initial_delay: Duration,
    /// Between measurements; each one counts the events of one interval.
    pub interval: Duration,
    /// Measurements in the gate.
    pub count: u64,
}

impl GateSchedule {
    /// The time from the gate's start to its last measurement.
    pub fn duration(&self) -> Duration {
        self.initial_delay
            + self
                .interval
                .saturating_mul(self.count.min(u32::MAX as u64) as u32)
    }
}

/// When a ratio is detected on the expected path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The measurement (1-based) at which the test fails.
    pub measurements: u64,
    /// Time from the gate's start to that measurement.
    pub after: Duration,
    /// Requests the canary served until then.
    pub canary_requests: f64,
    /// Whether that is within the gate's `count`.
    pub within_gate: bool,
}

/// Why a preview could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SensitivityError {
    /// The test's configuration is invalid.
    #[error("cannot build the count test: {0}")]
    BuildTest(#[from] SequentialError),
    /// A traffic figure is negative, not finite, or a rate is above 1.
    #[error("invalid traffic: {field} = {value} ({requirement})")]
    ValidateTraffic {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        requirement: &'static str,
    },
    /// The interval is zero.
    #[error("the gate's interval must be longer than 0")]
    ValidateInterval,
}

fn validate(traffic: &GateTraffic, schedule: &GateSchedule) -> Result<(), SensitivityError> {
    for (field, value) in [
        ("canaryRps", traffic.canary_rps),
        ("baselineRps", traffic.baseline_rps),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(SensitivityError::ValidateTraffic {
                field,
                value,
                requirement: "a finite rate ≥ 0",
            });
        }
    }
    if !(0.0..=1.0).contains(&traffic.baseline_event_rate) {
        return Err(SensitivityError::ValidateTraffic {
            field: "errorRate",
            value: traffic.baseline_event_rate,
            requirement: "a share between 0 and 1",
        });
    }
    if schedule.interval.is_zero() {
        return Err(SensitivityError::ValidateInterval);
    }
    Ok(())
}

/// How far ahead the preview looks for a decision with this interval: a day, or
/// [`MAX_INTERVALS`] measurements when that is shorter.
pub fn search_horizon(interval: Duration) -> Duration {
    HORIZON.min(interval.saturating_mul(MAX_INTERVALS as u32))
}

/// The first measurement at which the count test fails a canary whose event rate is `ratio`
/// × the baseline's, on the expected path; `None` when it does not within a day (or
/// [`MAX_INTERVALS`] measurements).
pub fn time_to_fail(
    config: &CountTestConfig,
    traffic: &GateTraffic,
    schedule: &GateSchedule,
    ratio: f64,
) -> Result<Option<Detection>, SensitivityError> {
    first_decision(
        config,
        traffic,
        schedule,
        ratio,
        SequentialDecision::Fail,
        MAX_INTERVALS,
    )
}

/// The first measurement at which the count test passes a canary whose event rate is `ratio`
/// × the baseline's (1.0: as good as the baseline), on the expected path.
pub fn time_to_pass(
    config: &CountTestConfig,
    traffic: &GateTraffic,
    schedule: &GateSchedule,
    ratio: f64,
) -> Result<Option<Detection>, SensitivityError> {
    first_decision(
        config,
        traffic,
        schedule,
        ratio,
        SequentialDecision::Pass,
        MAX_INTERVALS,
    )
}

fn first_decision(
    config: &CountTestConfig,
    traffic: &GateTraffic,
    schedule: &GateSchedule,
    ratio: f64,
    wanted: SequentialDecision,
    max_measurements: u64,
) -> Result<Option<Detection>, SensitivityError> {
    validate(traffic, schedule)?;
    if !(ratio.is_finite() && ratio >= 0.0) {
        return Err(SensitivityError::ValidateTraffic {
            field: "ratio",
            value: ratio,
            requirement: "a finite ratio ≥ 0",
        });
    }
    let test = CountTest::new(*config)?;
    let seconds = schedule.interval.as_secs_f64();
    let limit = ((HORIZON.as_secs_f64() / seconds) as u64)
        .clamp(1, max_measurements.clamp(1, MAX_INTERVALS));
    let canary_event_rate = (traffic.baseline_event_rate * ratio).min(1.0);
    let mut state = CountState::default();
    let mut expected = [0.0f64; 4];
    let mut handed = [0u64; 4];
    for k in 1..=limit {
        let canary_requests = traffic.canary_rps * seconds;
        let baseline_requests = traffic.baseline_rps * seconds;
        let increments = [
            canary_requests * canary_event_rate,
            canary_requests,
            baseline_requests * traffic.baseline_event_rate,
            baseline_requests,
        ];
        let mut whole = [0u64; 4];
        for i in 0..4 {
            expected[i] += increments[i];
            let total = expected[i].floor() as u64;
            whole[i] = total - handed[i];
            handed[i] = total;
        }
        let increment = CountIncrement {
            canary_errors: whole[0].min(whole[1]),
            canary_requests: whole[1],
            baseline_errors: whole[2].min(whole[3]),
            baseline_requests: whole[3],
        };
        test.update(&mut state, &increment)?;
        if test.decide(&mut state, false) == wanted {
            return Ok(Some(Detection {
                measurements: k,
                after: schedule.initial_delay + schedule.interval.saturating_mul(k as u32),
                canary_requests: expected[1],
                within_gate: k <= schedule.count,
            }));
        }
        if state.decided.is_some() {
            // Decided the other way: on this path the wanted verdict never comes.
            return Ok(None);
        }
    }
    Ok(None)
}

/// The smallest ratio the gate fails within its `count` measurements on the expected path
/// (searched between 1 + failMargin and 10⁴), or `None` when not even 10⁴× is.
pub fn smallest_detectable_ratio(
    config: &CountTestConfig,
    traffic: &GateTraffic,
    schedule: &GateSchedule,
) -> Result<Option<f64>, SensitivityError> {
    let within = |ratio: f64| -> Result<bool, SensitivityError> {
        let detection = first_decision(
            config,
            traffic,
            schedule,
            ratio,
            SequentialDecision::Fail,
            schedule.count,
        )?;
        Ok(detection.is_some_and(|d| d.within_gate))
    };
    let (mut low, mut high) = ((1.0 + config.fail_margin).ln(), 1e4f64.ln());
    if !within(high.exp())? {
        return Ok(None);
    }
    // Detection is monotone in the ratio on the expected path: bisect in log space.
    for _ in 0..40 {
        let middle = 0.5 * (low + high);
        if within(middle.exp())? {
            high = middle;
        } else {
            low = middle;
        }
    }
    Ok(Some(high.exp()))
}

/// The fewest measurements after which the count test can decide at all: it is fed the most
/// extreme evidence (1000 requests per arm and interval, every error the canary's) until it
/// fails. Computed from the test itself, so it follows the test's own rules (e.g. its
/// overdispersion tempering weighs no evidence before a few intervals with errors). `None`
/// when it never fails within 100 measurements (an invalid configuration included).
pub fn fewest_measurements_to_decide(config: &CountTestConfig) -> Option<u64> {
    let test = CountTest::new(*config).ok()?;
    let mut state = CountState::default();
    let overwhelming = CountIncrement {
        canary_errors: 1000,
        canary_requests: 1000,
        baseline_errors: 0,
        baseline_requests: 1000,
    };
    for k in 1..=100 {
        test.update(&mut state, &overwhelming).ok()?;
        if test.decide(&mut state, false) == SequentialDecision::Fail {
            return Some(k);
        }
    }
    None
}

/// A duration as people say it: `45 s`, `14 min`, `2.5 h`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 2.0 * 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

#[cfg(test)]
mod tests;
