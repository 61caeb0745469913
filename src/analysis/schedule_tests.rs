//! Measurements on time: a run's schedule survives the trip through its stored status (JSON,
//! as the API server and the local state directory keep it) without losing the sub-second
//! part of its times, so `interval: 3s` never yields a gap under three seconds.

use jiff::{SignedDuration, Timestamp};

use crate::analysis::run::{plan, record};
use crate::api::{
    AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, MeasurementRecord, Metric, MetricProvider,
};

fn every_three_seconds() -> AnalysisRunSpec {
    AnalysisRunSpec {
        metrics: vec![Metric {
            name: "errors".to_owned(),
            provider: MetricProvider::default(),
            success_condition: Some("result < 1".to_owned()),
            interval: Some("3s".to_owned()),
            count: Some(8),
            ..Metric::default()
        }],
        ..AnalysisRunSpec::default()
    }
}

/// The status as the next reconcile reads it: written as JSON and read back.
fn stored(status: &AnalysisRunStatus) -> AnalysisRunStatus {
    let json = serde_json::to_string(status).expect("a status serializes");
    serde_json::from_str(&json).expect("a stored status reads back")
}

fn millis(ms: i64) -> SignedDuration {
    SignedDuration::from_millis(ms)
}

/// Drives the run like the controller: every reconcile reads the stored status, measures
/// what is due at `now` (live: the query is evaluated at now), stores the status, and comes
/// back at the planned time; each status write also wakes a reconcile 40 ms later (the watch
/// event of its own patch). Returns the recorded measurement starts.
fn measurement_starts(start: Timestamp) -> Vec<Timestamp> {
    let spec = every_three_seconds();
    let mut status = AnalysisRunStatus::default();
    let mut wakes = vec![start];
    let mut starts = Vec::new();
    while let Some(now) = wakes.pop() {
        let read = stored(&status);
        let planned = plan(&spec, &read, now).expect("plan");
        let mut next = planned.status;
        for due in &planned.due {
            let measurement = MeasurementRecord {
                phase: AnalysisPhase::Successful,
                started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
                value: Some("0".to_owned()),
                reason: Some("0 < 1".to_owned()),
                critical: false,
            };
            record(&spec, &mut next, &due.metric, measurement, false, 10, now).expect("record");
        }
        let replanned = plan(&spec, &next, now).expect("plan");
        if next != read {
            status = stored(&next);
            wakes.push(now.checked_add(millis(40)).expect("in range"));
        }
        if let Some(at) = replanned.next_measurement_at {
            wakes.push(at.max(now));
        }
        wakes.sort_by(|a, b| b.cmp(a));
        wakes.dedup();
        if next.phase.is_some_and(AnalysisPhase::is_completed) {
            break;
        }
    }
    for result in &status.metric_results {
        starts.extend(result.measurements.iter().map(|m| m.started_at.0));
    }
    starts
}

#[test]
fn with_interval_3s_measurement_starts_are_at_least_3s_apart_across_stored_statuses() {
    // A start 0.9 s into a second: stored to the second, the next measurement fell due
    // 2.1 s after this one.
    for offset_ms in [0, 1, 250, 500, 900, 999] {
        let start = Timestamp::from_second(1_700_000_000)
            .and_then(|t| t.checked_add(millis(offset_ms)))
            .expect("in range");
        let starts = measurement_starts(start);
        assert_eq!(starts.len(), 8, "offset {offset_ms} ms: {starts:?}");
        for pair in starts.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= SignedDuration::from_secs(3),
                "offset {offset_ms} ms: a gap of {gap:?} between {} and {}",
                pair[0],
                pair[1]
            );
        }
    }
}

#[test]
fn a_status_stored_with_whole_seconds_still_reads() {
    let json = serde_json::json!({
        "phase": "Running",
        "startedAt": "2023-11-14T22:13:20Z",
        "metricResults": [{"name": "errors", "phase": "Running", "count": 1, "successful": 1,
            "measurements": [{"phase": "Successful", "startedAt": "2023-11-14T22:13:20Z"}]}]
    });
    let status: AnalysisRunStatus = serde_json::from_value(json).expect("an old status reads");
    let started = Timestamp::from_second(1_700_000_000).expect("in range");
    assert_eq!(status.started_at.as_ref().map(|t| t.0), Some(started));
    assert_eq!(
        status.metric_results[0].measurements[0].started_at.0,
        started
    );
    // Written back, it keeps its sub-second digits from now on.
    let later = started.checked_add(millis(900)).expect("in range");
    let mut status = status;
    status.metric_results[0].measurements[0].started_at =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(later);
    assert_eq!(
        stored(&status).metric_results[0].measurements[0]
            .started_at
            .0,
        later
    );
}
