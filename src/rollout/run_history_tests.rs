//! The AnalysisRun history rule on its own: which finished runs go, in which order.

use jiff::Timestamp;

use super::*;
use crate::api::{AnalysisRunStrategy, AnalysisStep, BackgroundAnalysis, CanaryStep};

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("in range")
}

/// An observation of runs `(name, phase, created at second)`.
fn observe(runs: &[(&str, AnalysisPhase, Option<i64>)]) -> Observation {
    Observation {
        analysis_runs: runs
            .iter()
            .map(|(name, phase, _)| AnalysisRunSummary {
                name: (*name).to_owned(),
                phase: *phase,
                ..Default::default()
            })
            .collect(),
        analysis_run_created_at: runs
            .iter()
            .filter_map(|(name, _, created)| Some(((*name).to_owned(), at((*created)?))))
            .collect(),
        ..Default::default()
    }
}

fn deleted(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::DeleteAnalysisRun { name } => name.as_str(),
            other => panic!("only deletions expected, got {other:?}"),
        })
        .collect()
}

fn limits(successful: usize, unsuccessful: usize) -> RunHistoryLimits {
    RunHistoryLimits {
        successful,
        unsuccessful,
    }
}

/// `count` runs named `{prefix}{i}` with `phase`, created at `start + i`.
fn many(
    prefix: &str,
    phase: AnalysisPhase,
    count: i64,
    start: i64,
) -> Vec<(String, AnalysisPhase, Option<i64>)> {
    (0..count)
        .map(|i| (format!("{prefix}{i}"), phase, Some(start + i)))
        .collect()
}

fn as_refs(
    runs: &[(String, AnalysisPhase, Option<i64>)],
) -> Vec<(&str, AnalysisPhase, Option<i64>)> {
    runs.iter().map(|(n, p, c)| (n.as_str(), *p, *c)).collect()
}

#[test]
fn the_limits_default_to_five_each_and_come_from_spec_analysis() {
    let mut spec = RolloutSpec::default();
    assert_eq!(RunHistoryLimits::of(&spec), limits(5, 5));
    spec.analysis = Some(AnalysisRunStrategy {
        successful_run_history_limit: Some(2),
        unsuccessful_run_history_limit: None,
    });
    assert_eq!(RunHistoryLimits::of(&spec), limits(2, 5));
    spec.analysis = Some(AnalysisRunStrategy {
        successful_run_history_limit: Some(0),
        unsuccessful_run_history_limit: Some(7),
    });
    assert_eq!(RunHistoryLimits::of(&spec), limits(0, 7));
}

#[test]
fn a_negative_limit_keeps_every_run() {
    let spec = RolloutSpec {
        analysis: Some(AnalysisRunStrategy {
            successful_run_history_limit: Some(-1),
            unsuccessful_run_history_limit: Some(-3),
        }),
        ..Default::default()
    };
    let runs = many("ok-", AnalysisPhase::Successful, 20, 0);
    let effects = run_history_effects(RunHistoryLimits::of(&spec), &[], &observe(&as_refs(&runs)));
    assert!(effects.is_empty(), "{effects:?}");
}

#[test]
fn with_the_defaults_the_oldest_beyond_five_of_each_kind_go_oldest_first() {
    let mut runs = many("ok-", AnalysisPhase::Successful, 7, 0);
    runs.extend(many("bad-", AnalysisPhase::Failed, 6, 100));
    let effects = run_history_effects(limits(5, 5), &[], &observe(&as_refs(&runs)));
    assert_eq!(deleted(&effects), ["ok-0", "ok-1", "bad-0"]);
}

#[test]
fn each_kind_counts_against_its_own_limit() {
    // Newer unsuccessful runs do not push successful ones out, nor the other way round.
    let mut runs = many("ok-", AnalysisPhase::Successful, 3, 0);
    runs.extend(many("bad-", AnalysisPhase::Failed, 3, 100));
    let effects = run_history_effects(limits(3, 1), &[], &observe(&as_refs(&runs)));
    assert_eq!(deleted(&effects), ["bad-0", "bad-1"]);
}

#[test]
fn failed_error_inconclusive_and_terminated_runs_are_all_unsuccessful() {
    let runs = [
        ("failed", AnalysisPhase::Failed, Some(1)),
        ("error", AnalysisPhase::Error, Some(2)),
        ("inconclusive", AnalysisPhase::Inconclusive, Some(3)),
        ("terminated", AnalysisPhase::Terminated, Some(4)),
        ("ok", AnalysisPhase::Successful, Some(0)),
    ];
    let effects = run_history_effects(limits(1, 1), &[], &observe(&runs));
    assert_eq!(deleted(&effects), ["failed", "error", "inconclusive"]);
}

#[test]
fn a_limit_of_zero_deletes_every_finished_run_of_its_kind() {
    let runs = [
        ("ok-old", AnalysisPhase::Successful, Some(0)),
        ("ok-new", AnalysisPhase::Successful, Some(9)),
        ("bad", AnalysisPhase::Failed, Some(5)),
    ];
    let effects = run_history_effects(limits(0, 1), &[], &observe(&runs));
    assert_eq!(deleted(&effects), ["ok-old", "ok-new"]);
    let effects = run_history_effects(limits(0, 0), &[], &observe(&runs));
    assert_eq!(deleted(&effects), ["ok-old", "bad", "ok-new"]);
}

#[test]
fn running_and_pending_runs_are_never_deleted_and_do_not_count() {
    let runs = [
        ("running-old", AnalysisPhase::Running, Some(0)),
        ("pending", AnalysisPhase::Pending, Some(1)),
        ("ok", AnalysisPhase::Successful, Some(2)),
    ];
    let effects = run_history_effects(limits(1, 0), &[], &observe(&runs));
    assert!(effects.is_empty(), "{effects:?}");
    let effects = run_history_effects(limits(0, 0), &[], &observe(&runs));
    assert_eq!(deleted(&effects), ["ok"]);
}

#[test]
fn a_kept_run_is_never_deleted_but_takes_its_place() {
    // The failed run that explains an abort stays at a limit of 0; the kept successful run
    // is the newest, so it takes the only place and both others go.
    let runs = [
        ("aborting", AnalysisPhase::Failed, Some(1)),
        ("ok-old", AnalysisPhase::Successful, Some(2)),
        ("ok-new", AnalysisPhase::Successful, Some(3)),
        ("current", AnalysisPhase::Successful, Some(4)),
    ];
    let effects = run_history_effects(limits(1, 0), &["aborting", "current"], &observe(&runs));
    assert_eq!(deleted(&effects), ["ok-old", "ok-new"]);
    // Once the status left them, only they are freed: what else goes does not change.
    let effects = run_history_effects(limits(1, 0), &[], &observe(&runs));
    assert_eq!(deleted(&effects), ["aborting", "ok-old", "ok-new"]);
}

#[test]
fn a_run_without_a_creation_time_counts_as_the_oldest_and_ties_go_by_name() {
    let runs = [
        ("unknown", AnalysisPhase::Successful, None),
        ("b", AnalysisPhase::Successful, Some(5)),
        ("a", AnalysisPhase::Successful, Some(5)),
        ("newest", AnalysisPhase::Successful, Some(9)),
    ];
    let effects = run_history_effects(limits(2, 0), &[], &observe(&runs));
    assert_eq!(deleted(&effects), ["unknown", "b"]);
}

#[test]
fn the_status_keeps_its_runs_and_every_run_of_the_attempt_in_flight() {
    let analysis = AnalysisStep::default();
    let spec = RolloutSpec {
        strategy: crate::api::RolloutStrategy {
            canary: crate::api::CanaryStrategy {
                steps: vec![
                    CanaryStep::default(),
                    CanaryStep {
                        analysis: Some(analysis),
                        ..Default::default()
                    },
                ],
                analysis: Some(BackgroundAnalysis::default()),
                ..Default::default()
            },
            blue_green: None,
        },
        ..Default::default()
    };
    let mut status = RolloutStatus {
        step_analysis: Some(AnalysisRunSummary {
            name: "shop-old-1-step1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(runs_in_status(&spec, "shop", &status), ["shop-old-1-step1"]);
    status.canary_revision = Some("abc".into());
    status.canary_attempt = 3;
    let kept = runs_in_status(&spec, "shop", &status);
    for name in [
        "shop-old-1-step1",
        "shop-abc-3-step1",
        "shop-abc-3-bg0",
        "shop-abc-3-bg2",
    ] {
        assert!(kept.iter().any(|k| k == name), "{name} not kept: {kept:?}");
    }
    assert!(
        !kept.iter().any(|k| k == "shop-abc-3-step0"),
        "step 0 has no analysis: {kept:?}"
    );
    assert!(
        !kept.iter().any(|k| k.starts_with("shop-abc-2-")),
        "an earlier attempt's runs are not in flight: {kept:?}"
    );
}
