//! What people read: status transitions in the log, and the one-line progress.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::api::RolloutPhase;

pub(super) fn log_transition(name: &str, before: &RolloutStatus, after: &RolloutStatus) {
    if before.phase != after.phase
        || before.current_step_index != after.current_step_index
        || before.canary_weight != after.canary_weight
    {
        let phase = after.phase.map(|p| p.to_string()).unwrap_or_default();
        // A step means something only while a canary is in flight.
        let step = match after.canary_revision {
            Some(_) => after.step.as_deref().unwrap_or("-"),
            None => "-",
        };
        let message = after.message.as_deref().unwrap_or_default();
        match after.phase {
            Some(RolloutPhase::Degraded | RolloutPhase::Aborted) => tracing::warn!(
                rollout = %name, %phase, %step, weight = after.canary_weight, %message, "rollout"
            ),
            _ => tracing::info!(
                rollout = %name, %phase, %step, weight = after.canary_weight, %message, "rollout"
            ),
        }
    }
}

/// One line for people: step, weight, phase, the analysis verdicts and the message, as
/// `vigil local get --watch` and `vigil demo` print it.
pub fn progress_line(view: &RolloutView) -> String {
    let status = &view.status;
    let phase = status.phase.unwrap_or_default().to_string();
    // Without a canary there is no step and no canary weight: "step 5/5 weight 0%" on a
    // Healthy rollout read as "no traffic".
    let mut line = match &status.canary_revision {
        Some(_) => format!(
            "{:<10} step {:<5} weight {:>3}%  {phase:<11}",
            view.name,
            status.step.as_deref().unwrap_or("-"),
            status.canary_weight,
        ),
        None => format!(
            "{:<10} stable {:<18} {phase:<11}",
            view.name,
            status.stable_revision.as_deref().unwrap_or("-"),
        ),
    };
    for analysis in [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
    {
        let metrics: Vec<String> = analysis
            .metrics
            .iter()
            .map(|m| {
                format!(
                    "{}={}{}",
                    m.name,
                    m.phase,
                    m.value
                        .as_ref()
                        .map(|v| format!("({v})"))
                        .unwrap_or_default()
                )
            })
            .collect();
        line.push_str(&format!(
            "  analysis {} [{}]",
            analysis.phase,
            metrics.join(" ")
        ));
        if let Some(score) = &analysis.score {
            line.push_str(&format!(" score {score}"));
        }
    }
    if let Some(message) = &status.message {
        line.push_str(&format!("  — {message}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: RolloutStatus) -> RolloutView {
        RolloutView {
            name: "web".into(),
            generation: 1,
            desired_revision: "aaa".into(),
            status,
            routing: RoutingState::default(),
            listen: ([127, 0, 0, 1], 1).into(),
            metrics_listen: ([127, 0, 0, 1], 2).into(),
            analysis_runs: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Issue 16, friction 3: a Healthy rollout showed "step 5/5 weight 0%".
    #[test]
    fn a_healthy_rollout_shows_its_stable_revision_not_a_step_and_weight() {
        let line = progress_line(&view(RolloutStatus {
            phase: Some(RolloutPhase::Healthy),
            step: Some("5/5".into()),
            stable_revision: Some("aaa".into()),
            message: Some("revision aaa is stable and serves all traffic".into()),
            ..RolloutStatus::default()
        }));
        assert!(line.starts_with("web        stable aaa"), "{line}");
        assert!(line.contains("Healthy"), "{line}");
        assert!(!line.contains("weight"), "{line}");
        assert!(!line.contains("5/5"), "{line}");
        let canary = progress_line(&view(RolloutStatus {
            phase: Some(RolloutPhase::Progressing),
            step: Some("2/5".into()),
            canary_revision: Some("bbb".into()),
            canary_weight: 20,
            ..RolloutStatus::default()
        }));
        assert!(
            canary.contains("step 2/5   weight  20%  Progressing"),
            "{canary}"
        );
        assert!(!canary.contains("Some("), "{canary}");
    }
}
