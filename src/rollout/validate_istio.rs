//! The rules of `trafficRouting.istio`, part of the one validator ([`super::validate_spec`]).

use std::collections::BTreeSet;

use crate::api::CanaryStrategy;
use crate::api::istio::{IstioRouting, MAX_ISTIO_NAME_LEN, MAX_NAMED_ROUTES, MAX_VIRTUAL_SERVICES};

use super::SpecProblem;

fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// A name vigil looks up: not blank, and no longer than [`MAX_ISTIO_NAME_LEN`].
fn check_name(name: &str, path: String, what: &str, problems: &mut Vec<SpecProblem>) {
    if name.trim().is_empty() {
        problems.push(problem(path, format!("empty {what} name")));
    } else if name.len() > MAX_ISTIO_NAME_LEN {
        problems.push(problem(
            path,
            format!(
                "{what} name of {} characters; at most {MAX_ISTIO_NAME_LEN}",
                name.len()
            ),
        ));
    }
}

/// Every problem of `istio` (at `path`, e.g. `spec.strategy.canary.trafficRouting.istio`)
/// in the canary strategy `canary` (at `canary_path`).
pub(super) fn check_istio(
    canary: &CanaryStrategy,
    istio: &IstioRouting,
    canary_path: &str,
    path: &str,
    problems: &mut Vec<SpecProblem>,
) {
    match (&istio.virtual_service, istio.virtual_services.is_empty()) {
        (None, true) => problems.push(problem(
            path,
            "no VirtualService: set `virtualService` or `virtualServices`",
        )),
        (Some(_), false) => problems.push(problem(
            path,
            "both `virtualService` and `virtualServices`; set one",
        )),
        _ => {}
    }
    if istio.virtual_services.len() > MAX_VIRTUAL_SERVICES {
        problems.push(problem(
            format!("{path}.virtualServices"),
            format!(
                "{} VirtualServices; at most {MAX_VIRTUAL_SERVICES}",
                istio.virtual_services.len()
            ),
        ));
    }
    let mut names = BTreeSet::new();
    for (field, entry) in istio.entries() {
        let at = format!("{path}.{field}");
        check_name(
            &entry.name,
            format!("{at}.name"),
            "VirtualService",
            problems,
        );
        if !names.insert(entry.name.as_str()) {
            problems.push(problem(
                format!("{at}.name"),
                format!("VirtualService {:?} is listed twice", entry.name),
            ));
        }
        if entry.routes.len() > MAX_NAMED_ROUTES {
            problems.push(problem(
                format!("{at}.routes"),
                format!("{} routes; at most {MAX_NAMED_ROUTES}", entry.routes.len()),
            ));
        }
        let mut routes = BTreeSet::new();
        for (i, route) in entry.routes.iter().enumerate() {
            check_name(route, format!("{at}.routes[{i}]"), "route", problems);
            if !routes.insert(route.as_str()) {
                problems.push(problem(
                    format!("{at}.routes[{i}]"),
                    format!("route {route:?} is listed twice"),
                ));
            }
        }
    }
    match &istio.destination_rule {
        Some(rule) => {
            let at = format!("{path}.destinationRule");
            check_name(
                &rule.name,
                format!("{at}.name"),
                "DestinationRule",
                problems,
            );
            check_name(
                &rule.canary_subset_name,
                format!("{at}.canarySubsetName"),
                "subset",
                problems,
            );
            check_name(
                &rule.stable_subset_name,
                format!("{at}.stableSubsetName"),
                "subset",
                problems,
            );
            if rule.canary_subset_name == rule.stable_subset_name {
                problems.push(problem(
                    format!("{at}.canarySubsetName"),
                    format!(
                        "`{}` is also the stableSubsetName; they must be two subsets",
                        rule.canary_subset_name
                    ),
                ));
            }
        }
        None => {
            for (field, value) in [
                ("stableService", &canary.stable_service),
                ("canaryService", &canary.canary_service),
            ] {
                if value.is_none() {
                    problems.push(problem(
                        format!("{canary_path}.{field}"),
                        "missing: istio routing without a destinationRule splits traffic between the stable and canary Services' hosts, so both are needed",
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::istio::{IstioDestinationRule, IstioVirtualService};

    const PATH: &str = "spec.strategy.canary.trafficRouting.istio";

    fn check(canary: &CanaryStrategy, istio: &IstioRouting) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        check_istio(canary, istio, "spec.strategy.canary", PATH, &mut problems);
        problems.into_iter().map(|p| (p.path, p.message)).collect()
    }

    fn vs(name: &str, routes: &[&str]) -> IstioVirtualService {
        IstioVirtualService {
            name: name.to_owned(),
            routes: routes.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn services() -> CanaryStrategy {
        CanaryStrategy {
            stable_service: Some("web-stable".into()),
            canary_service: Some("web-canary".into()),
            ..Default::default()
        }
    }

    #[test]
    fn host_level_needs_one_virtual_service_field_and_both_services() {
        let one = IstioRouting {
            virtual_service: Some(vs("web", &["primary"])),
            ..Default::default()
        };
        assert_eq!(check(&services(), &one), vec![]);
        let problems = check(&CanaryStrategy::default(), &IstioRouting::default());
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                PATH,
                "spec.strategy.canary.stableService",
                "spec.strategy.canary.canaryService"
            ]
        );
        assert!(problems[0].1.starts_with("no VirtualService"));
        let both = IstioRouting {
            virtual_service: Some(vs("web", &[])),
            virtual_services: vec![vs("mesh", &[])],
            ..Default::default()
        };
        assert_eq!(
            check(&services(), &both),
            vec![(
                PATH.to_owned(),
                "both `virtualService` and `virtualServices`; set one".to_owned()
            )]
        );
    }

    #[test]
    fn names_are_bounded_unique_and_not_blank() {
        let long = "v".repeat(MAX_ISTIO_NAME_LEN + 1);
        let istio = IstioRouting {
            virtual_services: vec![
                vs("web", &["primary", "primary"]),
                vs("web", &[""]),
                vs(&long, &[]),
            ],
            ..Default::default()
        };
        assert_eq!(
            check(&services(), &istio),
            vec![
                (
                    format!("{PATH}.virtualServices[0].routes[1]"),
                    "route \"primary\" is listed twice".to_owned()
                ),
                (
                    format!("{PATH}.virtualServices[1].name"),
                    "VirtualService \"web\" is listed twice".to_owned()
                ),
                (
                    format!("{PATH}.virtualServices[1].routes[0]"),
                    "empty route name".to_owned()
                ),
                (
                    format!("{PATH}.virtualServices[2].name"),
                    format!("VirtualService name of 254 characters; at most {MAX_ISTIO_NAME_LEN}")
                ),
            ]
        );
        let many = IstioRouting {
            virtual_services: (0..=MAX_VIRTUAL_SERVICES)
                .map(|i| vs(&format!("vs{i}"), &[]))
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            check(&services(), &many),
            vec![(
                format!("{PATH}.virtualServices"),
                format!("17 VirtualServices; at most {MAX_VIRTUAL_SERVICES}")
            )]
        );
        let routes: Vec<String> = (0..=MAX_NAMED_ROUTES).map(|i| format!("r{i}")).collect();
        let istio = IstioRouting {
            virtual_service: Some(IstioVirtualService {
                name: "web".into(),
                routes,
            }),
            ..Default::default()
        };
        assert_eq!(
            check(&services(), &istio),
            vec![(
                format!("{PATH}.virtualService.routes"),
                format!("65 routes; at most {MAX_NAMED_ROUTES}")
            )]
        );
    }

    #[test]
    fn subset_level_needs_two_named_subsets_and_no_services() {
        let mut istio = IstioRouting {
            virtual_service: Some(vs("reviews", &[])),
            destination_rule: Some(IstioDestinationRule {
                name: "reviews".into(),
                canary_subset_name: "canary".into(),
                stable_subset_name: "stable".into(),
            }),
            ..Default::default()
        };
        assert_eq!(check(&CanaryStrategy::default(), &istio), vec![]);
        istio.destination_rule = Some(IstioDestinationRule {
            name: " ".into(),
            canary_subset_name: "v1".into(),
            stable_subset_name: "v1".into(),
        });
        assert_eq!(
            check(&CanaryStrategy::default(), &istio),
            vec![
                (
                    format!("{PATH}.destinationRule.name"),
                    "empty DestinationRule name".to_owned()
                ),
                (
                    format!("{PATH}.destinationRule.canarySubsetName"),
                    "`v1` is also the stableSubsetName; they must be two subsets".to_owned()
                ),
            ]
        );
    }
}
