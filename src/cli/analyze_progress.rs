//! `vigil analyze`'s progress while a live run goes: one line per new measurement, on stderr,
//! so that a run of several minutes is not silent (issue 16, friction 8). `--quiet` drops it.

use std::collections::BTreeMap;

use crate::api::AnalysisRunStatus;

/// Longest reason shown on a progress line (the table at the end has the whole reason).
const MAX_REASON_CHARS: usize = 160;

/// How many measurements of each metric were already shown.
#[derive(Debug, Default)]
pub struct Progress {
    shown: BTreeMap<String, i32>,
}

impl Progress {
    /// The lines for the measurements `status` holds that were not shown yet, oldest first:
    /// `HH:MM:SSZ  METRIC #N  PHASE  VALUE  REASON`.
    pub fn new_lines(&mut self, status: &AnalysisRunStatus) -> Vec<String> {
        let mut lines = Vec::new();
        for metric in &status.metric_results {
            let shown = self.shown.entry(metric.name.clone()).or_insert(0);
            let new = usize::try_from(metric.count - *shown).unwrap_or(0);
            // Only the most recent measurements are stored; show those of the new ones kept.
            let kept = metric.measurements.len();
            let first_number = metric.count - i32::try_from(new.min(kept)).unwrap_or(0) + 1;
            for (offset, m) in metric.measurements[kept - new.min(kept)..]
                .iter()
                .enumerate()
            {
                let time = m.started_at.0.strftime("%H:%M:%SZ");
                let reason = m.reason.as_deref().unwrap_or("");
                let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
                lines.push(format!(
                    "{time}  {} #{}  {}  {}  {reason}",
                    metric.name,
                    first_number + i32::try_from(offset).unwrap_or(0),
                    m.phase,
                    m.value.as_deref().unwrap_or("-"),
                ));
            }
            *shown = metric.count;
        }
        lines
    }
}

/// The line `vigil analyze` prints when a live run starts.
pub fn start_line(metrics: &[String]) -> String {
    format!(
        "vigil analyze: live run of {} metric(s) ({}); a line per measurement below, Ctrl-C ends the run",
        metrics.len(),
        metrics.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AnalysisPhase, MeasurementRecord, MetricResult};

    fn measured(count: i32, values: &[&str]) -> AnalysisRunStatus {
        let mut metric = MetricResult {
            name: "error-rate".into(),
            count,
            ..MetricResult::default()
        };
        for value in values {
            metric.measurements.push(MeasurementRecord {
                phase: AnalysisPhase::Successful,
                started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    jiff::Timestamp::UNIX_EPOCH,
                ),
                value: Some((*value).into()),
                reason: Some("result < 0.01".into()),
                critical: false,
            });
        }
        AnalysisRunStatus {
            metric_results: vec![metric],
            ..AnalysisRunStatus::default()
        }
    }

    #[test]
    fn each_measurement_is_shown_once_with_its_number() {
        let mut progress = Progress::default();
        assert_eq!(progress.new_lines(&measured(0, &[])), Vec::<String>::new());
        let first = progress.new_lines(&measured(1, &["0.1"]));
        assert_eq!(
            first,
            ["00:00:00Z  error-rate #1  Successful  0.1  result < 0.01"]
        );
        assert!(progress.new_lines(&measured(1, &["0.1"])).is_empty());
        // Two new ones at once; only the last 3 are stored.
        let lines = progress.new_lines(&measured(3, &["0.1", "0.2", "0.3"]));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("#2  Successful  0.2"), "{lines:?}");
        assert!(lines[1].contains("#3  Successful  0.3"), "{lines:?}");
        // More new ones than stored: the stored ones, numbered by their place.
        let lines = progress.new_lines(&measured(10, &["0.8", "0.9"]));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("#9 "), "{lines:?}");
    }
}
