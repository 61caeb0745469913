//! What people read: status transitions in the log, and the one-line progress.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn log_transition(name: &str, before: &RolloutStatus, after: &RolloutStatus) {
    if before.phase != after.phase
        || before.current_step_index != after.current_step_index
        || before.canary_weight != after.canary_weight
    {
        tracing::info!(
            rollout = %name,
            phase = ?after.phase,
            step = ?after.step,
            weight = after.canary_weight,
            message = ?after.message,
            "rollout"
        );
    }
}

/// One line for people: step, weight, phase, the analysis verdicts and the message, as
/// `vigil local get --watch` and `vigil demo` print it.
pub fn progress_line(view: &RolloutView) -> String {
    let status = &view.status;
    let mut line = format!(
        "{:<10} step {:<5} weight {:>3}%  {:<11}",
        view.name,
        status.step.as_deref().unwrap_or("-"),
        status.canary_weight,
        format!("{:?}", status.phase.unwrap_or_default()),
    );
    for analysis in [&status.step_analysis, &status.background_analysis]
        .into_iter()
        .flatten()
    {
        let metrics: Vec<String> = analysis
            .metrics
            .iter()
            .map(|m| {
                format!(
                    "{}={:?}{}",
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
            "  analysis {:?} [{}]",
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
