//! Which Rollout manages a Service. Pointing a Service writes the Rollout's name into its
//! `vigil.dev/managed-by-rollout` annotation (as Argo Rollouts writes
//! `argo-rollouts.argoproj.io/managed-by-rollouts`); a second Rollout naming the same Service
//! holds with a spec problem at its field instead of moving the selector back and forth. A
//! claim whose Rollout was deleted or names another Service now is stale: the next Rollout
//! that points the Service takes it over. Pure: Services and the Rollout index in, claims out.

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::context::MANAGED_BY_ANNOTATION;
use crate::api::RolloutSpec;
use crate::rollout::SpecProblem;

/// The Rollout other than `rollout` that manages `service`, when that Rollout still names
/// it (`still_names(claimant)`).
pub fn claimed_by_another(
    service: &Service,
    rollout: &str,
    still_names: impl Fn(&str) -> bool,
) -> Option<String> {
    let claimant = service.annotations().get(MANAGED_BY_ANNOTATION)?;
    (claimant != rollout && still_names(claimant)).then(|| claimant.clone())
}

/// The fields of `spec` that name a Service vigil points, with the name each holds, in the
/// order the reconcile reads them: the stable (or active), the canary (or preview), the
/// baseline.
pub fn service_fields(spec: &RolloutSpec) -> [(&'static str, Option<&str>); 3] {
    let (stable, canary) = crate::rollout::service_names(spec);
    let (stable_field, canary_field) = if spec.strategy.blue_green.is_some() {
        (
            "spec.strategy.blueGreen.activeService",
            "spec.strategy.blueGreen.previewService",
        )
    } else {
        (
            "spec.strategy.canary.stableService",
            "spec.strategy.canary.canaryService",
        )
    };
    [
        (stable_field, stable),
        (canary_field, canary),
        (
            "spec.strategy.canary.baseline.service",
            crate::rollout::baseline::service(spec),
        ),
    ]
}

/// The problem of a Service field whose Service `claimant` manages.
pub fn claim_problem(field: &str, service: &str, claimant: &str) -> SpecProblem {
    SpecProblem {
        path: field.to_owned(),
        message: format!(
            "Service \"{service}\" is managed by Rollout \"{claimant}\" (annotation \
             {MANAGED_BY_ANNOTATION}): two Rollouts would move its selector against each \
             other; give this Rollout its own Service, or let \"{claimant}\" stop naming it"
        ),
    }
}

/// The spec problems of `rollout`'s Service fields whose Services (`found`, in the order of
/// [`service_fields`]) another Rollout manages.
pub fn claim_problems(
    spec: &RolloutSpec,
    rollout: &str,
    found: [Option<&Service>; 3],
    still_names: impl Fn(&str, &str) -> bool,
) -> Vec<SpecProblem> {
    service_fields(spec)
        .into_iter()
        .zip(found)
        .filter_map(|((field, name), service)| {
            let name = name?;
            let claimant =
                claimed_by_another(service?, rollout, |claimant| still_names(claimant, name))?;
            Some(claim_problem(field, name, &claimant))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::api::{BlueGreenStrategy, Rollout};

    fn service(name: &str, claimant: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: claimant
                    .map(|c| BTreeMap::from([(MANAGED_BY_ANNOTATION.to_owned(), c.to_owned())])),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    fn canary_spec() -> RolloutSpec {
        let mut rollout = Rollout::new("web", RolloutSpec::default());
        rollout.spec.strategy.canary.stable_service = Some("web-stable".to_owned());
        rollout.spec.strategy.canary.canary_service = Some("web-canary".to_owned());
        rollout.spec
    }

    #[test]
    fn a_service_another_rollout_manages_and_still_names_is_a_problem_at_its_field() {
        let stable = service("web-stable", Some("checkout"));
        let canary = service("web-canary", Some("web"));
        let problems = claim_problems(
            &canary_spec(),
            "web",
            [Some(&stable), Some(&canary), None],
            |claimant, service| claimant == "checkout" && service == "web-stable",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "spec.strategy.canary.stableService");
        assert!(
            problems[0]
                .message
                .starts_with("Service \"web-stable\" is managed by Rollout \"checkout\""),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn an_unclaimed_an_own_or_a_stale_claim_is_no_problem() {
        let spec = canary_spec();
        let unclaimed = service("web-stable", None);
        let own = service("web-canary", Some("web"));
        assert!(
            claim_problems(
                &spec,
                "web",
                [Some(&unclaimed), Some(&own), None],
                |_, _| true
            )
            .is_empty()
        );
        // "checkout" was deleted or names another Service now: its claim passes on.
        let stale = service("web-stable", Some("checkout"));
        assert!(claim_problems(&spec, "web", [Some(&stale), None, None], |_, _| false).is_empty());
    }

    #[test]
    fn blue_green_services_are_named_by_their_own_fields() {
        let mut spec = canary_spec();
        spec.strategy.blue_green = Some(BlueGreenStrategy {
            active_service: Some("web-active".to_owned()),
            preview_service: Some("web-preview".to_owned()),
            ..BlueGreenStrategy::default()
        });
        let preview = service("web-preview", Some("other"));
        let problems = claim_problems(&spec, "web", [None, Some(&preview), None], |_, _| true);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "spec.strategy.blueGreen.previewService");
    }
}
