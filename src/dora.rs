//! Releases as DORA counts them (pure): when a release starts, is promoted or rolled back, and
//! how long from the failing verdict to all traffic on stable. Read from two consecutive
//! statuses of a Rollout (the one observed and the one stored), so both platforms use the same
//! rule: the controller turns the changes into `/metrics` counters and histograms
//! (`metrics::DoraMetrics`), `vigil run` into a history file that `vigil history` prints.
//!
//! Nothing here is kept in status. The controller keeps a Rollout's open release in memory: a
//! controller restarted mid-release counts its end but not its duration (the start was lost).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::{RolloutPhase, RolloutStatus};

/// Releases kept per Rollout in a history (oldest dropped first).
pub const HISTORY_KEPT: usize = 100;

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Still under way.
    InProgress,
    /// The canary became stable.
    Promoted,
    /// Traffic went back to the stable (a failed analysis, a missed deadline, an abort).
    RolledBack,
    /// Replaced by a newer release before it ended.
    Superseded,
}

impl Outcome {
    /// The word `vigil history` prints and metrics use as a label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in progress",
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled back",
            Outcome::Superseded => "superseded",
        }
    }
}

/// What changed between two statuses of one Rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum ReleaseChange {
    /// A canary started (a new revision, or a retry).
    Started {
        /// The canary revision.
        revision: String,
        /// The canary attempt.
        attempt: i32,
    },
    /// The canary became the stable.
    Promoted {
        /// The revision promoted.
        revision: String,
    },
    /// The rollout entered Degraded or Aborted.
    RolledBack {
        /// The revision rolled back.
        revision: Option<String>,
        /// Why (the status message).
        reason: Option<String>,
    },
    /// After a rollback, all traffic is on stable again: `seconds` since the failing verdict
    /// was read (`status.abortedAt`).
    StableRestored {
        /// Seconds from the failing verdict to all traffic on stable.
        seconds: f64,
    },
}

fn rolled_back(phase: Option<RolloutPhase>) -> bool {
    matches!(phase, Some(RolloutPhase::Degraded | RolloutPhase::Aborted))
}

/// The release changes from `before` to `after`, stored at `now`.
pub fn changes(
    before: &RolloutStatus,
    after: &RolloutStatus,
    now: Timestamp,
) -> Vec<ReleaseChange> {
    let mut found = Vec::new();
    if let Some(revision) = &after.canary_revision
        && (before.canary_revision.as_ref() != Some(revision)
            || before.canary_attempt != after.canary_attempt)
        && after.stable_revision.as_ref() != Some(revision)
    {
        found.push(ReleaseChange::Started {
            revision: revision.clone(),
            attempt: after.canary_attempt,
        });
    }
    if let Some(revision) = &before.canary_revision
        && before.stable_revision.as_ref() != Some(revision)
        && after.stable_revision.as_ref() == Some(revision)
    {
        found.push(ReleaseChange::Promoted {
            revision: revision.clone(),
        });
    }
    if rolled_back(after.phase) && !rolled_back(before.phase) {
        found.push(ReleaseChange::RolledBack {
            revision: after
                .canary_revision
                .clone()
                .or(before.canary_revision.clone()),
            reason: after.message.clone(),
        });
    }
    let restored_now = after.abort && after.canary_weight == 0;
    let restored_before = before.abort && before.canary_weight == 0 && before.aborted_at.is_some();
    if restored_now
        && !restored_before
        && let Some(aborted_at) = &after.aborted_at
        && now >= aborted_at.0
    {
        found.push(ReleaseChange::StableRestored {
            seconds: now.duration_since(aborted_at.0).as_secs_f64(),
        });
    }
    found
}

/// One release in a Rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRecord {
    /// The canary revision.
    pub revision: String,
    /// The canary attempt.
    pub attempt: i32,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// How.
    pub outcome: Outcome,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds from the failing verdict to all traffic on stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_restore_seconds: Option<f64>,
    /// The report written for it (a path), when one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

impl ReleaseRecord {
    /// Seconds from start to end, once ended.
    pub fn duration_seconds(&self) -> Option<f64> {
        self.ended_at
            .map(|end| end.duration_since(self.started_at).as_secs_f64())
    }
}

/// A Rollout's releases, oldest first, at most [`HISTORY_KEPT`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The releases.
    pub releases: Vec<ReleaseRecord>,
}

/// A release that ended with a change: what the metrics observe.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// A release started.
    Started,
    /// A release ended; its duration when its start is known.
    Ended {
        /// Promoted or rolled back.
        outcome: Outcome,
        /// Seconds from start to end.
        duration_seconds: Option<f64>,
    },
    /// All traffic on stable again after a rollback.
    Restored {
        /// Seconds from the failing verdict.
        seconds: f64,
    },
}

impl History {
    /// Applies `changes` stored at `now`; returns what to count.
    pub fn apply(&mut self, changes: &[ReleaseChange], now: Timestamp) -> Vec<Observed> {
        let mut observed = Vec::new();
        for change in changes {
            match change {
                ReleaseChange::Started { revision, attempt } => {
                    if let Some(open) = self.open() {
                        open.outcome = Outcome::Superseded;
                        open.ended_at = Some(now);
                    }
                    self.releases.push(ReleaseRecord {
                        revision: revision.clone(),
                        attempt: *attempt,
                        started_at: now,
                        ended_at: None,
                        outcome: Outcome::InProgress,
                        reason: None,
                        time_to_restore_seconds: None,
                        report: None,
                    });
                    observed.push(Observed::Started);
                }
                ReleaseChange::Promoted { revision } => {
                    observed.push(self.end(Some(revision), Outcome::Promoted, None, now));
                }
                ReleaseChange::RolledBack { revision, reason } => {
                    let reason = reason.clone();
                    observed.push(self.end(revision.as_ref(), Outcome::RolledBack, reason, now));
                }
                ReleaseChange::StableRestored { seconds } => {
                    if let Some(last) = self
                        .releases
                        .last_mut()
                        .filter(|r| r.outcome == Outcome::RolledBack)
                    {
                        last.time_to_restore_seconds = Some(*seconds);
                    }
                    observed.push(Observed::Restored { seconds: *seconds });
                }
            }
        }
        self.keep_last(HISTORY_KEPT);
        observed
    }

    /// Drops all but the newest `count` releases.
    pub fn keep_last(&mut self, count: usize) {
        let excess = self.releases.len().saturating_sub(count);
        if excess > 0 {
            self.releases.drain(..excess);
            self.releases.shrink_to_fit();
        }
    }

    fn open(&mut self) -> Option<&mut ReleaseRecord> {
        self.releases
            .last_mut()
            .filter(|r| r.outcome == Outcome::InProgress)
    }

    fn end(
        &mut self,
        revision: Option<&String>,
        outcome: Outcome,
        reason: Option<String>,
        now: Timestamp,
    ) -> Observed {
        let open = self
            .open()
            .filter(|r| revision.is_none_or(|rev| *rev == r.revision));
        let duration_seconds = open.map(|record| {
            record.outcome = outcome;
            record.ended_at = Some(now);
            record.reason = reason;
            now.duration_since(record.started_at).as_secs_f64()
        });
        Observed::Ended {
            outcome,
            duration_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn status(stable: &str, canary: Option<&str>, attempt: i32) -> RolloutStatus {
        RolloutStatus {
            phase: Some(RolloutPhase::Progressing),
            stable_revision: Some(stable.to_owned()),
            canary_revision: canary.map(str::to_owned),
            canary_attempt: attempt,
            ..RolloutStatus::default()
        }
    }

    #[test]
    fn a_promoted_release_is_started_then_ended_with_its_duration() {
        let mut history = History::default();
        let idle = status("a", None, 0);
        let started = status("a", Some("b"), 1);
        let changes1 = changes(&idle, &started, at(0));
        assert_eq!(history.apply(&changes1, at(0)), vec![Observed::Started]);
        let mut promoted = status("b", Some("b"), 1);
        promoted.phase = Some(RolloutPhase::Healthy);
        let changes2 = changes(&started, &promoted, at(90));
        assert_eq!(
            history.apply(&changes2, at(90)),
            vec![Observed::Ended {
                outcome: Outcome::Promoted,
                duration_seconds: Some(90.0)
            }]
        );
        // The same status again changes nothing.
        assert!(changes(&promoted, &promoted, at(100)).is_empty());
        assert_eq!(history.releases[0].outcome, Outcome::Promoted);
        assert_eq!(history.releases[0].duration_seconds(), Some(90.0));
    }

    #[test]
    fn a_rollback_records_the_time_from_the_failing_verdict_to_stable() {
        let mut history = History::default();
        let started = status("a", Some("b"), 1);
        history.apply(&changes(&status("a", None, 0), &started, at(0)), at(0));
        let mut shifted = started.clone();
        shifted.canary_weight = 20;
        let mut aborted = shifted.clone();
        aborted.phase = Some(RolloutPhase::Degraded);
        aborted.abort = true;
        aborted.aborted_at = Some(Time(at(50)));
        aborted.message = Some("error-rate failed".to_owned());
        // A router that applies late: the weight is still 20 when the abort is stored.
        let found = changes(&shifted, &aborted, at(50));
        assert_eq!(found.len(), 1, "{found:?}");
        history.apply(&found, at(50));
        let mut restored = aborted.clone();
        restored.canary_weight = 0;
        let found = changes(&aborted, &restored, at(53));
        assert_eq!(found, vec![ReleaseChange::StableRestored { seconds: 3.0 }]);
        history.apply(&found, at(53));
        let record = &history.releases[0];
        assert_eq!(record.outcome, Outcome::RolledBack);
        assert_eq!(record.reason.as_deref(), Some("error-rate failed"));
        assert_eq!(record.time_to_restore_seconds, Some(3.0));
        assert_eq!(record.duration_seconds(), Some(50.0));
        // Nothing more once restored.
        assert!(changes(&restored, &restored, at(60)).is_empty());
    }

    #[test]
    fn a_new_release_supersedes_an_open_one_and_history_is_bounded() {
        let mut history = History::default();
        for n in 0..(HISTORY_KEPT + 5) {
            let revision = format!("r{n}");
            let seconds = i64::try_from(n).expect("small");
            history.apply(
                &[ReleaseChange::Started {
                    revision,
                    attempt: 1,
                }],
                at(seconds),
            );
        }
        assert_eq!(history.releases.len(), HISTORY_KEPT);
        assert_eq!(history.releases[0].outcome, Outcome::Superseded);
        assert_eq!(
            history.releases.last().map(|r| r.outcome),
            Some(Outcome::InProgress)
        );
    }
}
