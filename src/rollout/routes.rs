//! The managed header and mirror routes a release wants, from its steps (pure).
//!
//! Each `setHeaderRoute` / `setMirrorRoute` step sets its route (or removes it, without a
//! `match`) from that step on, as Argo Rollouts does; the routes wanted at a step are those the
//! steps up to and including it left in place. At the end of a release and on abort none is
//! wanted. [`validate_spec`](super::validate_spec) has checked every step before this runs;
//! an entry it would reject is skipped here rather than guessed at.

use crate::api::{self, CanaryStep};
use crate::traffic::{
    HeaderMatch, HeaderRoute, ManagedRoutes, MirrorMatch, MirrorRoute, StringMatch,
};

/// Percent mirrored when a `setMirrorRoute` step gives no `percentage` (Argo's default).
pub const DEFAULT_MIRROR_PERCENTAGE: i32 = 100;

/// The routes in place once the steps `0..=through` have run (all steps when `through` is
/// past the end).
pub fn wanted_routes(steps: &[CanaryStep], through: usize) -> ManagedRoutes {
    let mut header: Vec<HeaderRoute> = Vec::new();
    let mut mirror: Vec<MirrorRoute> = Vec::new();
    for step in steps.iter().take(through.saturating_add(1)) {
        if let Some(set) = &step.set_header_route {
            header.retain(|r| r.name != set.name);
            if let Some(route) = header_route(set) {
                header.push(route);
            }
        }
        if let Some(set) = &step.set_mirror_route {
            mirror.retain(|r| r.name != set.name);
            if let Some(route) = mirror_route(set) {
                mirror.push(route);
            }
        }
    }
    ManagedRoutes::new(header, mirror)
}

/// The names `setHeaderRoute` and `setMirrorRoute` steps use, each list sorted and unique:
/// the routes vigil may have to remove.
pub fn route_names(steps: &[CanaryStep]) -> (Vec<String>, Vec<String>) {
    let mut header: Vec<String> = steps
        .iter()
        .filter_map(|s| s.set_header_route.as_ref().map(|r| r.name.clone()))
        .collect();
    let mut mirror: Vec<String> = steps
        .iter()
        .filter_map(|s| s.set_mirror_route.as_ref().map(|r| r.name.clone()))
        .collect();
    for names in [&mut header, &mut mirror] {
        names.sort();
        names.dedup();
    }
    (header, mirror)
}

/// The route a `setHeaderRoute` step puts in place; `None` when it removes it.
pub fn header_route(set: &api::SetHeaderRoute) -> Option<HeaderRoute> {
    if set.match_.is_empty() {
        return None;
    }
    let matches = set
        .match_
        .iter()
        .filter_map(|m| {
            Some(HeaderMatch {
                header_name: m.header_name.clone(),
                value: string_match(&m.header_value)?,
            })
        })
        .collect();
    Some(HeaderRoute {
        name: set.name.clone(),
        matches,
    })
}

/// The route a `setMirrorRoute` step puts in place; `None` when it removes it.
pub fn mirror_route(set: &api::SetMirrorRoute) -> Option<MirrorRoute> {
    if set.match_.is_empty() {
        return None;
    }
    let matches = set
        .match_
        .iter()
        .map(|m| MirrorMatch {
            method: m.method.as_ref().and_then(string_match),
            path: m.path.as_ref().and_then(string_match),
            headers: m
                .headers
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), string_match(value)?)))
                .collect(),
        })
        .collect();
    Some(MirrorRoute {
        name: set.name.clone(),
        percentage: set
            .percentage
            .unwrap_or(DEFAULT_MIRROR_PERCENTAGE)
            .clamp(0, 100),
        matches,
    })
}

/// The one kind of match `value` sets; `None` when it sets none (validation names that).
pub fn string_match(value: &api::StringMatch) -> Option<StringMatch> {
    match (&value.exact, &value.prefix, &value.regex) {
        (Some(exact), None, None) => Some(StringMatch::Exact(exact.clone())),
        (None, Some(prefix), None) => Some(StringMatch::Prefix(prefix.clone())),
        (None, None, Some(regex)) => Some(StringMatch::Regex(regex.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::{HeaderRoutingMatch, RouteMatch, SetHeaderRoute, SetMirrorRoute};

    fn exact(value: &str) -> api::StringMatch {
        api::StringMatch {
            exact: Some(value.into()),
            ..api::StringMatch::default()
        }
    }

    fn set_header(name: &str, value: Option<&str>) -> CanaryStep {
        CanaryStep {
            set_header_route: Some(SetHeaderRoute {
                name: name.into(),
                match_: value
                    .map(|v| {
                        vec![HeaderRoutingMatch {
                            header_name: "x-canary".into(),
                            header_value: exact(v),
                        }]
                    })
                    .unwrap_or_default(),
            }),
            ..CanaryStep::default()
        }
    }

    fn set_mirror(name: &str, percentage: Option<i32>, on: bool) -> CanaryStep {
        CanaryStep {
            set_mirror_route: Some(SetMirrorRoute {
                name: name.into(),
                match_: if on {
                    vec![RouteMatch {
                        method: Some(exact("GET")),
                        path: Some(api::StringMatch {
                            prefix: Some("/api".into()),
                            ..api::StringMatch::default()
                        }),
                        headers: BTreeMap::new(),
                    }]
                } else {
                    Vec::new()
                },
                percentage,
            }),
            ..CanaryStep::default()
        }
    }

    fn weight(w: i32) -> CanaryStep {
        CanaryStep {
            set_weight: Some(w),
            ..CanaryStep::default()
        }
    }

    fn header(name: &str, value: &str) -> HeaderRoute {
        HeaderRoute {
            name: name.into(),
            matches: vec![HeaderMatch {
                header_name: "x-canary".into(),
                value: StringMatch::Exact(value.into()),
            }],
        }
    }

    fn mirror(name: &str, percentage: i32) -> MirrorRoute {
        MirrorRoute {
            name: name.into(),
            percentage,
            matches: vec![MirrorMatch {
                method: Some(StringMatch::Exact("GET".into())),
                path: Some(StringMatch::Prefix("/api".into())),
                headers: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn the_routes_wanted_at_each_step_are_what_the_steps_so_far_left_in_place() {
        let steps = vec![
            set_header("testers", Some("yes")),   // 0
            weight(10),                           // 1
            set_mirror("shadow", Some(35), true), // 2
            set_header("testers", Some("again")), // 3: replaces
            set_header("testers", None),          // 4: removes
            set_mirror("shadow", None, false),    // 5: removes
            weight(50),                           // 6
        ];
        let table: Vec<(usize, ManagedRoutes)> = vec![
            (
                0,
                ManagedRoutes::new(vec![header("testers", "yes")], vec![]),
            ),
            (
                1,
                ManagedRoutes::new(vec![header("testers", "yes")], vec![]),
            ),
            (
                2,
                ManagedRoutes::new(vec![header("testers", "yes")], vec![mirror("shadow", 35)]),
            ),
            (
                3,
                ManagedRoutes::new(vec![header("testers", "again")], vec![mirror("shadow", 35)]),
            ),
            (4, ManagedRoutes::new(vec![], vec![mirror("shadow", 35)])),
            (5, ManagedRoutes::default()),
            (6, ManagedRoutes::default()),
            (99, ManagedRoutes::default()),
        ];
        for (through, expected) in table {
            assert_eq!(
                wanted_routes(&steps, through),
                expected,
                "through {through}"
            );
        }
        assert_eq!(
            route_names(&steps),
            (vec!["testers".to_owned()], vec!["shadow".to_owned()])
        );
    }

    #[test]
    fn a_mirror_without_percentage_copies_everything_it_matches() {
        let steps = vec![set_mirror("shadow", None, true)];
        assert_eq!(
            wanted_routes(&steps, 0),
            ManagedRoutes::new(vec![], vec![mirror("shadow", 100)])
        );
    }

    #[test]
    fn a_value_match_is_exactly_one_kind() {
        assert_eq!(
            string_match(&exact("a")),
            Some(StringMatch::Exact("a".into()))
        );
        let both = api::StringMatch {
            exact: Some("a".into()),
            regex: Some("a.*".into()),
            ..api::StringMatch::default()
        };
        assert_eq!(string_match(&both), None);
        assert_eq!(string_match(&api::StringMatch::default()), None);
    }
}
