//! The scaling rules: how many pods each revision runs (`setCanaryScale`,
//! `dynamicStableScale`, `maxSurge` / `maxUnavailable`) and what each revision's pods carry
//! besides the template (`canaryMetadata` / `stableMetadata`, `minReadySeconds`). Pure.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{CanaryStep, CanaryStrategy, PodMetadata, RolloutSpec, SetCanaryScale};

/// The default of whichever of `maxSurge` / `maxUnavailable` is left unset when the other is
/// set (Argo Rollouts' default for both).
pub const DEFAULT_SURGE_PERCENT: i32 = 25;

/// What the ReplicaSet of one revision carries besides the pod template: the labels and
/// annotations of its role, and `minReadySeconds`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevisionSettings {
    /// The role's labels and annotations (`canaryMetadata` or `stableMetadata`).
    pub pod_metadata: PodMetadata,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
}

/// The `setCanaryScale` in force at step `index`: the last one at or before it; `None` when
/// there is none or it says `matchTrafficWeight`.
pub(crate) fn canary_scale_at(steps: &[CanaryStep], index: usize) -> Option<&SetCanaryScale> {
    steps
        .iter()
        .take(index.saturating_add(1))
        .rev()
        .find_map(|step| step.set_canary_scale.as_ref())
        .filter(|scale| !scale.match_traffic_weight)
}

/// `percent` of `replicas`, rounded up.
fn share_up(replicas: i32, percent: i32) -> i32 {
    if replicas <= 0 || percent <= 0 {
        return 0;
    }
    let pods = (i64::from(replicas) * i64::from(percent.min(100)) + 99) / 100;
    i32::try_from(pods).unwrap_or(replicas)
}

/// The canary's pods for traffic `weight` out of `replicas`, or as `scale` (a
/// `setCanaryScale`) says, at most `replicas`. While it gets traffic (`weight > 0`) the
/// canary runs at least one pod, whatever `scale` says: traffic never goes to no pods.
pub(crate) fn canary_pods(replicas: i32, weight: i32, scale: Option<&SetCanaryScale>) -> i32 {
    if replicas <= 0 {
        return 0;
    }
    let pods = match scale {
        Some(SetCanaryScale {
            replicas: Some(count),
            ..
        }) => (*count).clamp(0, replicas),
        Some(SetCanaryScale {
            weight: Some(percent),
            ..
        }) => share_up(replicas, *percent),
        _ => share_up(replicas, weight),
    };
    if weight > 0 { pods.max(1) } else { pods }
}

/// With `dynamicStableScale`: the stable's pods for the traffic it still gets, `replicas`
/// less the canary's share `canary_weight` (rounded so the stable keeps the larger part).
pub(crate) fn dynamic_stable_pods(replicas: i32, canary_weight: i32) -> i32 {
    share_up(replicas, 100 - canary_weight.clamp(0, 100))
}

/// With `dynamicStableScale`, during an abort: the canary weight the stable's `ready` pods
/// cannot carry yet (out of `replicas`), so traffic goes back only as fast as the stable can
/// take it; never above `current`.
pub(crate) fn abort_weight(replicas: i32, stable_ready: i32, current: i32) -> i32 {
    if replicas <= 0 {
        return 0;
    }
    let carried = i64::from(stable_ready.clamp(0, replicas)) * 100 / i64::from(replicas);
    let rest = i32::try_from(100 - carried).unwrap_or(100);
    rest.clamp(0, current.max(0))
}

/// `maxSurge` and `maxUnavailable` resolved against `spec.replicas`, in pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SurgeLimits {
    /// Pods above `spec.replicas` the two revisions may run together.
    pub surge: i32,
    /// Pods of `spec.replicas` that may be unavailable.
    pub unavailable: i32,
}

/// A count, or a percent string such as `25%`; `None` for anything else (validation says
/// why).
pub(crate) fn parse_int_or_percent(value: &IntOrString) -> Option<IntOrPercent> {
    match value {
        IntOrString::Int(count) => Some(IntOrPercent::Count(*count)),
        IntOrString::String(text) => {
            let digits = text.strip_suffix('%')?;
            if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            digits.parse().ok().map(IntOrPercent::Percent)
        }
    }
}

/// A parsed `maxSurge` / `maxUnavailable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntOrPercent {
    Count(i32),
    Percent(i32),
}

impl IntOrPercent {
    fn pods(self, replicas: i32, round_up: bool) -> i32 {
        match self {
            IntOrPercent::Count(count) => count.max(0),
            IntOrPercent::Percent(percent) => {
                let product = i64::from(replicas.max(0)) * i64::from(percent.clamp(0, 100));
                let pods = if round_up {
                    (product + 99) / 100
                } else {
                    product / 100
                };
                i32::try_from(pods).unwrap_or(i32::MAX)
            }
        }
    }
}

/// The limits of `canary` for `replicas`; `None` when neither field is set (the canary gets
/// its pods at once and the stable shrinks as they become ready). Resolved to 0 both (as
/// `25%` of fewer than 4 pods is), one pod may be unavailable, as Kubernetes' Deployments do.
pub(crate) fn surge_limits(canary: &CanaryStrategy, replicas: i32) -> Option<SurgeLimits> {
    if canary.max_surge.is_none() && canary.max_unavailable.is_none() {
        return None;
    }
    let resolve = |field: &Option<IntOrString>| {
        field
            .as_ref()
            .and_then(parse_int_or_percent)
            .unwrap_or(IntOrPercent::Percent(DEFAULT_SURGE_PERCENT))
    };
    let surge = resolve(&canary.max_surge).pods(replicas, true);
    let mut unavailable = resolve(&canary.max_unavailable).pods(replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Some(SurgeLimits { surge, unavailable })
}

/// One revision's pods as seen: asked for, and ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pods {
    pub replicas: i32,
    pub ready: i32,
}

/// Without a router, under `limits`: the next (canary, stable) replicas on the way to
/// `targets` from what was `seen` of each. The canary grows only while both together stay
/// within `replicas + surge` (or the targets' own sum, when that is larger, so a floor of
/// one stable pod never deadlocks); the stable shrinks by its pods that are not ready, and
/// by the ready pods beyond `replicas − unavailable`. Shrinking the canary and growing the
/// stable are never held back.
pub(crate) fn surge_step(
    limits: SurgeLimits,
    replicas: i32,
    targets: (i32, i32),
    seen: (Pods, Pods),
) -> (i32, i32) {
    let (canary_target, stable_target) = targets;
    let (canary, stable) = seen;
    let ceiling = replicas
        .saturating_add(limits.surge)
        .max(canary_target.saturating_add(stable_target));
    let canary_next = if canary_target > canary.replicas {
        let room = ceiling
            .saturating_sub(canary.replicas.saturating_add(stable.replicas))
            .max(0);
        canary_target.min(canary.replicas.saturating_add(room))
    } else {
        canary_target
    };
    let stable_next = if stable_target < stable.replicas {
        let stable_ready = stable.ready.clamp(0, stable.replicas);
        let canary_ready = canary.ready.clamp(0, canary.replicas);
        let floor = replicas.saturating_sub(limits.unavailable).max(0);
        let spare = stable_ready
            .saturating_add(canary_ready)
            .saturating_sub(floor)
            .max(0);
        let removable = (stable.replicas - stable_ready).saturating_add(spare);
        stable_target.max(stable.replicas.saturating_sub(removable))
    } else {
        stable_target
    };
    (canary_next, stable_next)
}

/// What the ReplicaSet of a revision in `role` carries under `spec`.
pub fn revision_settings(spec: &RolloutSpec, role: Role) -> RevisionSettings {
    let canary = &spec.strategy.canary;
    let metadata = match role {
        Role::Stable => canary.stable_metadata.as_ref(),
        Role::Canary => canary.canary_metadata.as_ref(),
    };
    RevisionSettings {
        pod_metadata: metadata.cloned().unwrap_or_default(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0).max(0),
    }
}

/// The part a revision plays in a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The revision that serves when no canary runs.
    Stable,
    /// The revision being released.
    Canary,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(replicas: Option<i32>, weight: Option<i32>, matching: bool) -> SetCanaryScale {
        SetCanaryScale {
            replicas,
            weight,
            match_traffic_weight: matching,
        }
    }

    #[test]
    fn canary_pods_follow_the_weight_or_the_scale_and_never_leave_traffic_without_pods() {
        let by_count = scale(Some(3), None, false);
        let by_percent = scale(None, Some(50), false);
        let none = scale(Some(0), None, false);
        let beyond = scale(Some(40), None, false);
        // (replicas, weight, scale, pods)
        let cases: [(i32, i32, Option<&SetCanaryScale>, i32); 11] = [
            (10, 0, None, 0),
            (10, 1, None, 1),
            (10, 25, None, 3),
            (10, 100, None, 10),
            (10, 10, Some(&by_count), 3),
            (10, 90, Some(&by_count), 3),
            (10, 10, Some(&by_percent), 5),
            (20, 10, Some(&by_percent), 10),
            (10, 0, Some(&by_count), 3),
            (10, 20, Some(&none), 1),
            (10, 20, Some(&beyond), 10),
        ];
        for (replicas, weight, scale, pods) in cases {
            assert_eq!(
                canary_pods(replicas, weight, scale),
                pods,
                "replicas {replicas}, weight {weight}, scale {scale:?}"
            );
        }
        assert_eq!(canary_pods(0, 50, Some(&by_count)), 0, "nothing of 0 pods");
    }

    #[test]
    fn the_scale_in_force_is_the_last_one_and_match_traffic_weight_ends_it() {
        let steps = vec![
            CanaryStep {
                set_canary_scale: Some(scale(Some(2), None, false)),
                ..Default::default()
            },
            CanaryStep {
                set_weight: Some(10),
                ..Default::default()
            },
            CanaryStep {
                set_canary_scale: Some(scale(None, None, true)),
                ..Default::default()
            },
        ];
        assert_eq!(canary_scale_at(&steps, 0).and_then(|s| s.replicas), Some(2));
        assert_eq!(canary_scale_at(&steps, 1).and_then(|s| s.replicas), Some(2));
        assert_eq!(canary_scale_at(&steps, 2), None);
        assert_eq!(canary_scale_at(&[], 0), None);
    }

    #[test]
    fn the_stable_keeps_the_share_the_canary_does_not_get() {
        for (replicas, weight, pods) in [(10, 0, 10), (10, 25, 8), (10, 100, 0), (3, 50, 2)] {
            assert_eq!(dynamic_stable_pods(replicas, weight), pods);
        }
        // (replicas, stable ready, current weight, weight during the abort)
        for (replicas, ready, current, weight) in [
            (10, 2, 80, 80),
            (10, 5, 80, 50),
            (10, 10, 80, 0),
            (10, 0, 30, 30),
            (3, 2, 100, 34),
            (0, 0, 50, 0),
        ] {
            assert_eq!(
                abort_weight(replicas, ready, current),
                weight,
                "{ready}/{replicas} ready at weight {current}"
            );
        }
    }

    #[test]
    fn limits_resolve_like_argo_and_kubernetes() {
        let strategy =
            |surge: Option<IntOrString>, unavailable: Option<IntOrString>| CanaryStrategy {
                max_surge: surge,
                max_unavailable: unavailable,
                ..Default::default()
            };
        let percent = |p: &str| Some(IntOrString::String(p.into()));
        assert_eq!(surge_limits(&strategy(None, None), 10), None);
        // (maxSurge, maxUnavailable, replicas, surge, unavailable)
        let cases = [
            (Some(IntOrString::Int(1)), None, 10, 1, 2),
            (None, Some(IntOrString::Int(0)), 10, 3, 0),
            (percent("25%"), percent("25%"), 10, 3, 2),
            (Some(IntOrString::Int(0)), percent("25%"), 2, 0, 1),
            (percent("100%"), Some(IntOrString::Int(0)), 4, 4, 0),
        ];
        for (surge, unavailable, replicas, pods_surge, pods_unavailable) in cases {
            let limits = surge_limits(&strategy(surge.clone(), unavailable.clone()), replicas);
            assert_eq!(
                limits,
                Some(SurgeLimits {
                    surge: pods_surge,
                    unavailable: pods_unavailable
                }),
                "{surge:?} / {unavailable:?} of {replicas}"
            );
        }
        for bad in ["", "%", "1000%", "25", "-1%", "x%"] {
            assert_eq!(
                parse_int_or_percent(&IntOrString::String(bad.into())),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_surge_step_keeps_within_the_limits_and_always_gets_there() {
        let pods = |replicas, ready| Pods { replicas, ready };
        // Each case walks a release of 4 pods to 2 canary + 2 stable, with pods that get
        // ready between steps, and checks the limits at every step.
        for (surge, unavailable) in [(1, 0), (0, 1), (2, 2), (4, 0)] {
            let limits = SurgeLimits { surge, unavailable };
            let (mut canary, mut stable) = (pods(0, 0), pods(4, 4));
            for _ in 0..20 {
                let (c, s) = surge_step(limits, 4, (2, 2), (canary, stable));
                assert!(c + s <= 4 + surge, "{c} + {s} over 4 + {surge}");
                let available = s.min(stable.ready) + canary.ready.min(c);
                assert!(available >= 4 - unavailable, "only {available} available");
                canary = pods(c, c);
                stable = pods(s, s.min(stable.ready));
            }
            assert_eq!((canary.replicas, stable.replicas), (2, 2), "{limits:?}");
        }
        // A floor of one stable pod at 1 replica: 1 + 1 pods even with no surge.
        let limits = SurgeLimits {
            surge: 0,
            unavailable: 1,
        };
        assert_eq!(
            surge_step(limits, 1, (1, 1), (pods(0, 0), pods(1, 1))),
            (1, 1)
        );
        // Growing the stable back and shrinking the canary are never held.
        assert_eq!(
            surge_step(limits, 4, (0, 4), (pods(3, 3), pods(1, 1))),
            (0, 4)
        );
    }
}
