//! `spec.analysis.successfulRunHistoryLimit` / `unsuccessfulRunHistoryLimit` through the pure
//! state machine and the simulated cluster, release after release: what remains, what goes
//! first, and the runs that stay whatever the limit (the simulator checks restart safety at
//! every reconcile, and that no running run is deleted).

mod rollout_sim;

use rollout_sim::*;
use vigil::api::{AnalysisPhase, AnalysisRunStrategy, RolloutPhase};

fn limits(successful: Option<i32>, unsuccessful: Option<i32>) -> Option<AnalysisRunStrategy> {
    Some(AnalysisRunStrategy {
        successful_run_history_limit: successful,
        unsuccessful_run_history_limit: unsuccessful,
    })
}

/// Two analysis steps per release.
fn two_analyses() -> Vec<vigil::api::CanaryStep> {
    vec![
        set_weight(20),
        analysis("errors"),
        set_weight(50),
        analysis("latency"),
    ]
}

/// Releases `images` one after the other, each to Healthy, then reconciles a few more times.
fn release_all(world: &mut World, images: &[&str]) -> Vec<String> {
    let mut revisions = Vec::new();
    for image in images {
        world.set_image(image);
        let new = world.desired();
        world.run_until(80, |w| w.healthy_on(&new));
        revisions.push(new);
    }
    for _ in 0..3 {
        world.reconcile();
    }
    revisions
}

fn run_names(world: &World) -> Vec<String> {
    world.runs.keys().cloned().collect()
}

#[test]
fn after_many_releases_only_the_limits_worth_of_runs_remain_the_newest() {
    let mut world = World::deployed(spec(two_analyses(), true, 2), all_pass());
    world.spec.analysis = limits(Some(3), None);
    let revisions = release_all(&mut world, &["app:2", "app:3", "app:4", "app:5", "app:6"]);
    let remaining = run_names(&world);
    assert_eq!(remaining.len(), 3, "three successful runs: {remaining:?}");
    let last = &revisions[4];
    let before = &revisions[3];
    for name in [
        format!("{NAME}-{last}-5-step1"),
        format!("{NAME}-{last}-5-step3"),
        format!("{NAME}-{before}-4-step3"),
    ] {
        assert!(world.runs.contains_key(&name), "{name} kept: {remaining:?}");
    }
    // Ten runs made, seven deleted, oldest first.
    assert_eq!(world.deleted_runs.len(), 7, "{:?}", world.deleted_runs);
    let first = &revisions[0];
    assert_eq!(
        world.deleted_runs[..2],
        [
            format!("{NAME}-{first}-1-step1"),
            format!("{NAME}-{first}-1-step3")
        ]
    );
}

#[test]
fn without_spec_analysis_five_successful_runs_remain() {
    let mut world = World::deployed(spec(vec![analysis("errors")], true, 1), all_pass());
    release_all(
        &mut world,
        &[
            "app:2", "app:3", "app:4", "app:5", "app:6", "app:7", "app:8",
        ],
    );
    assert_eq!(world.runs.len(), 5, "{:?}", run_names(&world));
    assert_eq!(world.deleted_runs.len(), 2, "{:?}", world.deleted_runs);
}

#[test]
fn the_runs_of_the_release_in_flight_stay_even_at_a_limit_of_zero() {
    let mut world = World::deployed(spec(two_analyses(), true, 2), all_pass());
    world.spec.analysis = limits(Some(0), Some(0));
    world.set_image("app:2");
    let canary = world.desired();
    let first_run = format!("{NAME}-{canary}-1-step1");
    world.run_until(80, |w| w.at_step(3));
    assert_eq!(
        world.runs.get(&first_run).map(|r| r.summary.phase),
        Some(AnalysisPhase::Successful),
        "the step 1 run of the release under way stays: {:?}",
        run_names(&world)
    );
    world.run_until(80, |w| w.healthy_on(&canary));
    for _ in 0..3 {
        world.reconcile();
    }
    // Once the release ended its runs go, but for the one the status still shows.
    let last_run = format!("{NAME}-{canary}-1-step3");
    assert_eq!(run_names(&world), std::slice::from_ref(&last_run));
    let shown = world.status.step_analysis.as_ref().map(|r| r.name.clone());
    assert_eq!(shown, Some(last_run));
}

#[test]
fn the_failed_run_that_explains_an_abort_stays_until_the_next_release() {
    let verdicts = step_verdict(vec![1], AnalysisPhase::Failed);
    let mut world = World::deployed(spec(two_analyses(), true, 2), verdicts);
    world.spec.analysis = limits(Some(0), Some(0));
    world.set_image("app:2");
    let failed = world.desired();
    let failed_run = format!("{NAME}-{failed}-1-step1");
    world.run_until(80, |w| w.phase() == Some(RolloutPhase::Degraded));
    for _ in 0..10 {
        world.reconcile();
        world.advance(30);
    }
    assert!(
        world.runs.contains_key(&failed_run),
        "the run named in status stays: {:?}",
        run_names(&world)
    );
    let shown = world.status.step_analysis.as_ref().map(|r| r.name.clone());
    assert_eq!(shown.as_deref(), Some(failed_run.as_str()));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(message.contains("error-rate"), "{message}");

    // A new release that passes: the aborted one's run goes (the limit is 0), the new ones
    // too once it ended, but for the one its status shows.
    world.verdicts = all_pass();
    let passed = release_all(&mut world, &["app:3"]);
    assert_eq!(run_names(&world), [format!("{NAME}-{}-2-step3", passed[0])]);
    assert!(world.deleted_runs.contains(&failed_run));
}

#[test]
fn unsuccessful_runs_have_their_own_limit() {
    let verdicts = step_verdict(vec![1], AnalysisPhase::Failed);
    let mut world = World::deployed(spec(two_analyses(), true, 2), verdicts);
    world.spec.analysis = limits(Some(0), Some(2));
    let mut failed = Vec::new();
    for image in ["app:2", "app:3", "app:4", "app:5"] {
        world.set_image(image);
        let revision = world.desired();
        world.run_until(80, |w| {
            w.status.abort && w.status.canary_revision.as_deref() == Some(revision.as_str())
        });
        failed.push(format!(
            "{NAME}-{revision}-{}-step1",
            world.status.canary_attempt
        ));
    }
    world.verdicts = all_pass();
    let passed = release_all(&mut world, &["app:6"]);
    let mut remaining = run_names(&world);
    remaining.sort();
    let mut expected = vec![
        failed[2].clone(),
        failed[3].clone(),
        // The one the status shows, whatever the successful limit of 0.
        format!("{NAME}-{}-5-step3", passed[0]),
    ];
    expected.sort();
    assert_eq!(
        remaining, expected,
        "the two newest failed runs stay, and only the shown successful one"
    );
}
