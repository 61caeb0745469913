//! Kubernetes conditions and pause conditions whose timestamps move only on real transitions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{PauseCondition, PauseReason};

/// Condition types the state machine owns, in the order they are listed.
pub(crate) const PROGRESSING: &str = "Progressing";
pub(crate) const AVAILABLE: &str = "Available";
pub(crate) const PAUSED: &str = "Paused";
pub(crate) const INVALID_SPEC: &str = "InvalidSpec";

/// The wanted state of one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WantedCondition {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

/// Replaces the owned conditions with `wanted`, keeping `lastTransitionTime` of a condition
/// whose status did not change; conditions owned by others are kept after ours.
pub(crate) fn merge_conditions(
    previous: &[Condition],
    wanted: Vec<WantedCondition>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut merged: Vec<Condition> = wanted
        .into_iter()
        .map(|want| {
            let old = previous.iter().find(|c| c.type_ == want.type_);
            let last_transition_time = match old {
                Some(old) if old.status == want.status => old.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                last_transition_time,
                message: want.message,
                observed_generation: generation,
                reason: want.reason,
                status: want.status.to_owned(),
                type_: want.type_.to_owned(),
            }
        })
        .collect();
    let owned = [PROGRESSING, AVAILABLE, PAUSED, INVALID_SPEC];
    merged.extend(
        previous
            .iter()
            .filter(|c| !owned.contains(&c.type_.as_str()))
            .cloned(),
    );
    merged
}

/// The pause conditions for `reasons`, keeping the start time of a reason already present.
pub(crate) fn merge_pauses(
    previous: &[PauseCondition],
    reasons: &[PauseReason],
    now: &Time,
) -> Vec<PauseCondition> {
    let mut merged: Vec<PauseCondition> = Vec::new();
    for reason in reasons {
        if merged.iter().any(|p| p.reason == *reason) {
            continue;
        }
        let start_time = previous
            .iter()
            .find(|p| p.reason == *reason)
            .map_or_else(|| now.clone(), |p| p.start_time.clone());
        merged.push(PauseCondition {
            reason: *reason,
            start_time,
        });
    }
    merged
}

/// The reason's name as written in status.
pub(crate) fn pause_reason_name(reason: PauseReason) -> &'static str {
    match reason {
        PauseReason::CanaryPauseStep => "CanaryPauseStep",
        PauseReason::InconclusiveAnalysis => "InconclusiveAnalysis",
        PauseReason::UserPaused => "UserPaused",
        PauseReason::BlueGreenPause => "BlueGreenPause",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn time(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("valid second"))
    }

    fn wanted(status: &'static str, reason: &str) -> WantedCondition {
        WantedCondition {
            type_: PROGRESSING,
            status,
            reason: reason.into(),
            message: String::new(),
        }
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge_conditions(&[], vec![wanted("True", "A")], Some(1), &time(10));
        assert_eq!(first[0].last_transition_time, time(10));
        let same = merge_conditions(&first, vec![wanted("True", "B")], Some(2), &time(20));
        assert_eq!(same[0].last_transition_time, time(10), "reason change only");
        assert_eq!(same[0].reason, "B");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge_conditions(&same, vec![wanted("False", "C")], Some(2), &time(30));
        assert_eq!(flipped[0].last_transition_time, time(30));
    }

    #[test]
    fn foreign_conditions_are_kept() {
        let foreign = Condition {
            last_transition_time: time(1),
            message: String::new(),
            observed_generation: None,
            reason: "X".into(),
            status: "True".into(),
            type_: "SomeoneElses".into(),
        };
        let merged = merge_conditions(
            std::slice::from_ref(&foreign),
            vec![wanted("True", "A")],
            None,
            &time(5),
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1], foreign);
    }

    #[test]
    fn pause_start_time_is_kept_while_the_reason_stays() {
        let first = merge_pauses(&[], &[PauseReason::CanaryPauseStep], &time(10));
        let again = merge_pauses(&first, &[PauseReason::CanaryPauseStep], &time(50));
        assert_eq!(again[0].start_time, time(10));
        let other = merge_pauses(&again, &[PauseReason::UserPaused], &time(60));
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].start_time, time(60));
    }
}
