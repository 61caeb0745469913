//! The blue-green strategy through `rollout::step`, field by field, in the simulated cluster
//! (see `rollout_sim`: every reconcile also checks the restart-safety contract).

mod rollout_sim;

use rollout_sim::*;
use vigil::api::{AnalysisPhase, BlueGreenStrategy, PauseReason, RolloutPhase};
use vigil::rollout::{Effect, step};

const OLD: &str = "app:1";
const NEW: &str = "app:2";

/// A deployed blue-green world with a new image set; returns (world, old, new revision).
fn releasing(
    replicas: i32,
    configure: impl FnOnce(&mut BlueGreenStrategy),
) -> (World, String, String) {
    releasing_with(replicas, configure, promotion_verdicts(None, None))
}

fn releasing_with(
    replicas: i32,
    configure: impl FnOnce(&mut BlueGreenStrategy),
    verdicts: Verdicts,
) -> (World, String, String) {
    let mut world = World::deployed(blue_green_spec(replicas, configure), verdicts);
    let old = world.desired();
    assert_eq!(world.services.stable.as_deref(), Some(old.as_str()));
    assert_eq!(world.services.canary.as_deref(), Some(old.as_str()));
    world.set_image(NEW);
    let new = world.desired();
    assert_ne!(old, new);
    let _ = OLD;
    (world, old, new)
}

/// Reconciles until `done`, checking after every reconcile that the active service only ever
/// moves to a revision with all `replicas` pods ready, and that the previous active revision
/// keeps all its pods while the active service selects the new one but the release is open.
fn run_checked(world: &mut World, max: usize, done: impl Fn(&World) -> bool) {
    let replicas = world.spec.replicas.unwrap_or(1);
    for _ in 0..max {
        if done(world) {
            return;
        }
        let before = world.services.stable.clone();
        world.reconcile();
        let after = world.services.stable.clone();
        if after != before
            && let Some(active) = &after
        {
            let ready = world.revisions.get(active).map_or(0, |r| r.ready);
            assert!(
                ready >= replicas,
                "the active service moved to {active} with {ready}/{replicas} pods ready"
            );
        }
        if let (Some(stable), Some(canary)) = (
            world.status.stable_revision.clone(),
            world.status.canary_revision.clone(),
        ) && after.as_deref() == Some(canary.as_str())
            && !world.status.abort
        {
            assert_eq!(
                world.replicas_of(&stable),
                replicas,
                "the previous active revision lost pods before the release ended"
            );
        }
        let tick = world.tick;
        world.advance(tick);
    }
    assert!(
        done(world),
        "not done after {max} reconciles: {:#?}",
        world.status
    );
}

fn paused_for(world: &World, reason: PauseReason) -> bool {
    world
        .status
        .pause_conditions
        .iter()
        .any(|p| p.reason == reason)
}

#[test]
fn every_field_changes_the_release_as_documented() {
    struct Case {
        name: &'static str,
        replicas: i32,
        configure: fn(&mut BlueGreenStrategy),
        /// Pods of the new revision while it is previewed.
        preview_pods: i32,
        /// Waits for `vigil promote` before the switch.
        manual: bool,
        /// Seconds between the preview being ready and the switch (automatic promotion).
        auto_delay: Option<i64>,
        /// Seconds the old revision keeps its pods after the release completes.
        scale_down_delay: i64,
    }
    let cases = [
        Case {
            name: "defaults",
            replicas: 3,
            configure: |_| {},
            preview_pods: 3,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 30,
        },
        Case {
            name: "previewReplicaCount 1",
            replicas: 3,
            configure: |bg| bg.preview_replica_count = Some(1),
            preview_pods: 1,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 30,
        },
        Case {
            name: "previewReplicaCount 0",
            replicas: 3,
            configure: |bg| bg.preview_replica_count = Some(0),
            preview_pods: 0,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 30,
        },
        Case {
            name: "previewReplicaCount above replicas is capped",
            replicas: 2,
            configure: |bg| bg.preview_replica_count = Some(9),
            preview_pods: 2,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 30,
        },
        Case {
            name: "autoPromotionEnabled false",
            replicas: 2,
            configure: |bg| bg.auto_promotion_enabled = Some(false),
            preview_pods: 2,
            manual: true,
            auto_delay: None,
            scale_down_delay: 30,
        },
        Case {
            name: "autoPromotionSeconds 0",
            replicas: 2,
            configure: |bg| bg.auto_promotion_seconds = Some(0),
            preview_pods: 2,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 30,
        },
        Case {
            name: "autoPromotionSeconds 60",
            replicas: 2,
            configure: |bg| bg.auto_promotion_seconds = Some(60),
            preview_pods: 2,
            manual: false,
            auto_delay: Some(60),
            scale_down_delay: 30,
        },
        Case {
            name: "scaleDownDelaySeconds 0",
            replicas: 2,
            configure: |bg| bg.scale_down_delay_seconds = Some(0),
            preview_pods: 2,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 0,
        },
        Case {
            name: "scaleDownDelaySeconds 90",
            replicas: 2,
            configure: |bg| bg.scale_down_delay_seconds = Some(90),
            preview_pods: 2,
            manual: false,
            auto_delay: Some(0),
            scale_down_delay: 90,
        },
    ];
    for case in cases {
        let name = case.name;
        let (mut world, old, new) = releasing(case.replicas, case.configure);
        // Preview: the new revision at its preview size behind the preview service only.
        run_checked(&mut world, 20, |w| {
            w.services.canary.as_deref() == Some(new.as_str())
                && w.revisions.get(&new).map_or(0, |r| r.ready) >= case.preview_pods
        });
        let first_scale = world.decisions.iter().find_map(|d| {
            d.effects.iter().find_map(|e| match e {
                Effect::ScaleRevision { revision, replicas } if *revision == new => {
                    Some((*replicas, d.status.step.clone()))
                }
                _ => None,
            })
        });
        let expected = if case.preview_pods > 0 {
            Some((case.preview_pods, Some("preview".to_owned())))
        } else {
            // No preview pods: the first scale-up is the one before the switch.
            None
        };
        if expected.is_some() {
            assert_eq!(first_scale, expected, "{name}: preview pods");
        } else {
            assert!(
                first_scale
                    .clone()
                    .is_none_or(|(replicas, step)| replicas == case.replicas
                        && step.as_deref() == Some("promoting")),
                "{name}: {first_scale:?}"
            );
        }
        let ready_at = world.now;
        if case.manual {
            run_for(&mut world, 40);
            assert!(
                paused_for(&world, PauseReason::BlueGreenPause),
                "{name}: {:?}",
                world.status
            );
            assert_eq!(world.phase(), Some(RolloutPhase::Paused), "{name}");
            assert_eq!(
                world.services.stable.as_deref(),
                Some(old.as_str()),
                "{name}: switched without promote"
            );
            world.promote();
        }
        run_checked(&mut world, 60, |w| {
            w.services.stable.as_deref() == Some(new.as_str())
        });
        let switched_at = world.now;
        if let Some(delay) = case.auto_delay {
            let waited = switched_at.duration_since(ready_at).as_secs();
            assert!(
                waited >= delay,
                "{name}: switched after {waited}s, before {delay}s"
            );
            assert!(
                waited <= delay + 30,
                "{name}: switched only after {waited}s"
            );
            let paused = world.decisions.iter().any(|d| {
                d.status
                    .pause_conditions
                    .iter()
                    .any(|p| p.reason == PauseReason::BlueGreenPause)
            });
            assert_eq!(paused, delay > 0, "{name}: paused before the switch");
        }
        assert_eq!(
            world.services.canary.as_deref(),
            Some(new.as_str()),
            "{name}"
        );
        run_checked(&mut world, 20, |w| w.healthy_on(&new));
        let healthy_at = world.now;
        run_checked(&mut world, 60, |w| w.replicas_of(&old) == 0);
        let kept = world.now.duration_since(healthy_at).as_secs();
        assert!(
            kept >= case.scale_down_delay,
            "{name}: old scaled down after {kept}s"
        );
        assert!(
            kept <= case.scale_down_delay + 10,
            "{name}: old kept {kept}s"
        );
        assert_eq!(world.replicas_of(&new), case.replicas, "{name}");
        assert_eq!(world.status.step.as_deref(), Some("stable"), "{name}");
    }
}

/// Reconciles `rounds` times, a tick apart.
fn run_for(world: &mut World, rounds: usize) {
    for _ in 0..rounds {
        world.reconcile();
        let tick = world.tick;
        world.advance(tick);
    }
}

#[test]
fn a_failed_pre_promotion_analysis_aborts_and_the_active_service_never_moves() {
    for (delay, kept) in [(None, 30), (Some(0), 0), (Some(120), 120)] {
        let (mut world, old, new) = releasing_with(
            2,
            |bg| {
                bg.pre_promotion_analysis = Some(promotion_analysis("smoke"));
                bg.abort_scale_down_delay_seconds = delay;
            },
            promotion_verdicts(Some(AnalysisPhase::Failed), None),
        );
        run_checked(&mut world, 40, |w| w.status.abort);
        assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
        let message = world.status.message.clone().unwrap_or_default();
        assert!(
            message.contains("pre-promotion analysis failed"),
            "{message}"
        );
        assert!(
            message.contains("error rate 7.2% > 5% threshold"),
            "{message}"
        );
        assert!(
            message.contains(&format!("active revision {old} keeps serving")),
            "{message}"
        );
        assert!(
            world.runs.keys().any(|name| name.ends_with("-pre")),
            "{:?}",
            world.runs.keys()
        );
        let aborted_at = world.now;
        run_checked(&mut world, 60, |w| w.replicas_of(&new) == 0);
        let waited = world.now.duration_since(aborted_at).as_secs();
        assert!(
            waited >= kept && waited <= kept + 10,
            "delay {delay:?}: scaled down after {waited}s"
        );
        assert_eq!(world.services.stable.as_deref(), Some(old.as_str()));
        assert!(world.decisions.iter().all(|d| {
            !d.effects
                .iter()
                .any(|e| matches!(e, Effect::PointServices { stable: Some(s), .. } if *s == new))
        }));
        assert_eq!(world.replicas_of(&old), 2);
    }
}

#[test]
fn a_failed_post_promotion_analysis_switches_back_at_once() {
    let (mut world, old, new) = releasing_with(
        3,
        |bg| bg.post_promotion_analysis = Some(promotion_analysis("after-switch")),
        promotion_verdicts(None, Some(AnalysisPhase::Failed)),
    );
    run_checked(&mut world, 40, |w| {
        w.services.stable.as_deref() == Some(new.as_str())
    });
    assert_eq!(world.status.step.as_deref(), Some("switched"));
    assert_eq!(world.status.canary_weight, 100);
    assert_eq!(
        world.replicas_of(&old),
        3,
        "the old revision is kept to switch back"
    );
    run_checked(&mut world, 40, |w| w.status.abort);
    let abort = world
        .decisions
        .iter()
        .find(|d| d.status.abort)
        .expect("an abort decision");
    assert_eq!(
        abort.effects.first(),
        Some(&Effect::PointServices {
            stable: Some(old.clone()),
            canary: None
        }),
        "the switch back is the first effect: {:?}",
        abort.effects
    );
    assert_eq!(world.services.stable.as_deref(), Some(old.as_str()));
    assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
    let message = world.status.message.clone().unwrap_or_default();
    assert!(
        message.contains("post-promotion analysis failed"),
        "{message}"
    );
    assert!(
        message.contains(&format!("switched back to revision {old}")),
        "{message}"
    );
    assert_eq!(world.status.stable_revision.as_deref(), Some(old.as_str()));
    assert_eq!(world.status.canary_weight, 0);
    run_checked(&mut world, 60, |w| w.replicas_of(&new) == 0);
    assert_eq!(world.replicas_of(&old), 3);
}

#[test]
fn analyses_pass_in_order_and_the_release_completes() {
    let (mut world, old, new) = releasing_with(
        2,
        |bg| {
            bg.pre_promotion_analysis = Some(promotion_analysis("smoke"));
            bg.post_promotion_analysis = Some(promotion_analysis("after-switch"));
        },
        promotion_verdicts(
            Some(AnalysisPhase::Successful),
            Some(AnalysisPhase::Successful),
        ),
    );
    run_checked(&mut world, 80, |w| w.healthy_on(&new));
    let pre = world
        .runs
        .keys()
        .find(|n| n.ends_with("-pre"))
        .cloned()
        .expect("a pre run");
    let post = world
        .runs
        .keys()
        .find(|n| n.ends_with("-post"))
        .cloned()
        .expect("a post run");
    // The pre-promotion run measured the preview before the switch, the post one after it.
    let created = |name: &str| world.runs[name].created_at;
    let switch = world
        .decisions
        .iter()
        .position(|d| d.status.step.as_deref() == Some("switched"))
        .expect("a switch");
    let switch_effects = &world.decisions[switch].effects;
    assert!(
        switch_effects.contains(&Effect::PointServices {
            stable: Some(new.clone()),
            canary: None
        }),
        "{switch_effects:?}"
    );
    assert!(created(&pre) < created(&post));
    assert!(
        world
            .event_reasons()
            .contains(&"ActiveServiceSwitched".to_owned())
    );
    assert!(
        world
            .event_reasons()
            .contains(&"RolloutCompleted".to_owned())
    );
    run_checked(&mut world, 40, |w| w.replicas_of(&old) == 0);
}

#[test]
fn an_inconclusive_analysis_pauses_and_promote_accepts_it() {
    for inconclusive_post in [false, true] {
        let (pre, post) = if inconclusive_post {
            (
                Some(AnalysisPhase::Successful),
                Some(AnalysisPhase::Inconclusive),
            )
        } else {
            (
                Some(AnalysisPhase::Inconclusive),
                Some(AnalysisPhase::Successful),
            )
        };
        let (mut world, _old, new) = releasing_with(
            2,
            |bg| {
                bg.pre_promotion_analysis = Some(promotion_analysis("smoke"));
                bg.post_promotion_analysis = Some(promotion_analysis("after-switch"));
            },
            promotion_verdicts(pre, post),
        );
        run_checked(&mut world, 60, |w| {
            paused_for(w, PauseReason::InconclusiveAnalysis)
        });
        let message = world.status.message.clone().unwrap_or_default();
        let which = if inconclusive_post {
            "post-promotion"
        } else {
            "pre-promotion"
        };
        assert!(message.contains(which), "{message}");
        assert!(message.contains("promote to continue"), "{message}");
        run_for(&mut world, 10);
        assert_eq!(world.phase(), Some(RolloutPhase::Paused));
        world.promote();
        run_checked(&mut world, 60, |w| w.healthy_on(&new));
    }
}

#[test]
fn promote_full_skips_both_analyses_and_the_pause() {
    let (mut world, _old, new) = releasing_with(
        2,
        |bg| {
            bg.pre_promotion_analysis = Some(promotion_analysis("smoke"));
            bg.post_promotion_analysis = Some(promotion_analysis("after-switch"));
            bg.auto_promotion_enabled = Some(false);
        },
        promotion_verdicts(None, None),
    );
    run_for(&mut world, 5);
    world.promote_full();
    run_checked(&mut world, 30, |w| w.healthy_on(&new));
    assert!(
        !world.runs.keys().any(|n| n.ends_with("-post")),
        "{:?}",
        world.runs.keys()
    );
    assert!(!world.status.promote_full);
}

#[test]
fn a_user_abort_keeps_the_active_service_and_retry_starts_the_preview_again() {
    let (mut world, old, new) = releasing(2, |bg| bg.auto_promotion_enabled = Some(false));
    run_checked(&mut world, 20, |w| {
        paused_for(w, PauseReason::BlueGreenPause)
    });
    world.abort();
    run_for(&mut world, 2);
    assert_eq!(world.phase(), Some(RolloutPhase::Aborted));
    assert_eq!(world.services.stable.as_deref(), Some(old.as_str()));
    world.retry();
    run_checked(&mut world, 20, |w| {
        paused_for(w, PauseReason::BlueGreenPause)
    });
    assert_eq!(world.status.step.as_deref(), Some("preview"));
    world.promote();
    run_checked(&mut world, 30, |w| w.healthy_on(&new));
}

#[test]
fn the_preview_that_never_gets_ready_aborts_at_the_progress_deadline() {
    let (mut world, old, _new) = releasing(2, |_| {});
    world.spec.progress_deadline_seconds = Some(60);
    world.pods_get_ready = false;
    run_checked(&mut world, 40, |w| w.status.abort);
    let message = world.status.message.clone().unwrap_or_default();
    assert!(message.contains("ProgressDeadlineExceeded"), "{message}");
    assert!(message.contains("preview"), "{message}");
    assert_eq!(world.services.stable.as_deref(), Some(old.as_str()));
}

#[test]
fn auto_promotion_seconds_requeues_at_the_exact_instant() {
    let (mut world, _old, new) = releasing(1, |bg| bg.auto_promotion_seconds = Some(45));
    run_checked(&mut world, 20, |w| {
        paused_for(w, PauseReason::BlueGreenPause)
    });
    let since = world.status.pause_conditions[0].start_time.0;
    let decision = world.reconcile();
    let expected = since
        .checked_add(jiff::SignedDuration::from_secs(45))
        .expect("in range");
    assert_eq!(decision.requeue_at, Some(expected));
    assert!(
        world
            .status
            .message
            .clone()
            .unwrap_or_default()
            .contains("autoPromotionSeconds 45")
    );
    run_checked(&mut world, 30, |w| w.healthy_on(&new));
}

#[test]
fn invalid_blue_green_fields_name_their_field() {
    let cases: Vec<(&str, vigil::api::RolloutSpec)> = vec![
        ("spec.strategy.blueGreen", {
            let mut spec = blue_green_spec(1, |_| {});
            spec.strategy.canary.steps = vec![set_weight(10)];
            spec
        }),
        (
            "spec.strategy.blueGreen.activeService",
            blue_green_spec(1, |bg| bg.active_service = None),
        ),
        (
            "spec.strategy.blueGreen.previewService",
            blue_green_spec(1, |bg| bg.preview_service = Some("shop-active".into())),
        ),
        (
            "spec.strategy.blueGreen.previewReplicaCount",
            blue_green_spec(1, |bg| bg.preview_replica_count = Some(-1)),
        ),
        (
            "spec.strategy.blueGreen.autoPromotionSeconds",
            blue_green_spec(1, |bg| bg.auto_promotion_seconds = Some(-5)),
        ),
        (
            "spec.strategy.blueGreen.autoPromotionSeconds",
            blue_green_spec(1, |bg| {
                bg.auto_promotion_enabled = Some(false);
                bg.auto_promotion_seconds = Some(30);
            }),
        ),
        (
            "spec.strategy.blueGreen.scaleDownDelaySeconds",
            blue_green_spec(1, |bg| bg.scale_down_delay_seconds = Some(99_999_999)),
        ),
        (
            "spec.strategy.blueGreen.abortScaleDownDelaySeconds",
            blue_green_spec(1, |bg| bg.abort_scale_down_delay_seconds = Some(-1)),
        ),
        (
            "spec.strategy.blueGreen.prePromotionAnalysis.templates",
            blue_green_spec(1, |bg| {
                bg.pre_promotion_analysis = Some(vigil::api::AnalysisStep::default());
            }),
        ),
        (
            "spec.strategy.blueGreen.local.previewListen",
            blue_green_spec(1, |bg| {
                bg.local = Some(vigil::api::LocalBlueGreen {
                    listen: "127.0.0.1:8080".into(),
                    preview_listen: Some("not an address".into()),
                });
            }),
        ),
    ];
    for (path, spec) in cases {
        let problems = vigil::rollout::validate_spec(&spec);
        assert!(
            problems.iter().any(|p| p.path == path),
            "{path}: {problems:?}"
        );
        // An invalid spec keeps the stable serving and says why.
        let mut world = World::new(spec, all_pass());
        world.reconcile();
        assert_eq!(world.phase(), Some(RolloutPhase::Degraded));
        assert!(
            world
                .status
                .message
                .clone()
                .unwrap_or_default()
                .contains(path)
        );
        let _ = step;
    }
    assert!(vigil::rollout::validate_spec(&blue_green_spec(1, |_| {})).is_empty());
}
