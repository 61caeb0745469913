//! How phases read in messages and logs: their names (`Healthy`), never Rust's Debug
//! (`Some(Healthy)`).

use std::fmt;

use super::{AnalysisPhase, RolloutPhase};

impl fmt::Display for RolloutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Paused => "Paused",
            RolloutPhase::Healthy => "Healthy",
            RolloutPhase::Degraded => "Degraded",
            RolloutPhase::Aborted => "Aborted",
        })
    }
}

impl fmt::Display for AnalysisPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnalysisPhase::Pending => "Pending",
            AnalysisPhase::Running => "Running",
            AnalysisPhase::Successful => "Successful",
            AnalysisPhase::Failed => "Failed",
            AnalysisPhase::Inconclusive => "Inconclusive",
            AnalysisPhase::Error => "Error",
            AnalysisPhase::Terminated => "Terminated",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_read_as_their_names() {
        assert_eq!(RolloutPhase::Healthy.to_string(), "Healthy");
        assert_eq!(AnalysisPhase::Inconclusive.to_string(), "Inconclusive");
        assert_eq!(AnalysisPhase::Successful.to_string(), "Successful");
    }
}
