//! The local proxy's managed routes, compiled: which requests a header route sends to the
//! canary only, and which a mirror route copies to it (pure: requests' heads in, choices out).

use std::sync::atomic::{AtomicU64, Ordering};

use hyper::Method;
use hyper::header::HeaderMap;

use crate::rollout::compile_match_regex;
use crate::traffic::{HeaderRoute, ManagedRoutes, MirrorRoute, StringMatch};

/// A value matcher, its regex compiled once.
enum Matcher {
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

impl Matcher {
    fn new(value: &StringMatch) -> Result<Matcher, regex::Error> {
        Ok(match value {
            StringMatch::Exact(v) => Matcher::Exact(v.clone()),
            StringMatch::Prefix(p) => Matcher::Prefix(p.clone()),
            StringMatch::Regex(r) => Matcher::Regex(compile_match_regex(r)?),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(v) => value == v,
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

/// Every header condition holds: one value of the header matches (values that are not text
/// never do).
fn headers_match(conditions: &[(String, Matcher)], headers: &HeaderMap) -> bool {
    conditions.iter().all(|(name, matcher)| {
        headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| matcher.matches(v))
    })
}

struct MirrorAlternative {
    method: Option<Matcher>,
    path: Option<Matcher>,
    headers: Vec<(String, Matcher)>,
}

struct CompiledMirror {
    alternatives: Vec<MirrorAlternative>,
    percentage: u64,
    /// Matching requests seen: the Bresenham position of the percentage, as for weights.
    sequence: AtomicU64,
}

/// The managed routes of the proxy, compiled.
#[derive(Default)]
pub(super) struct CompiledRoutes {
    header: Vec<Vec<(String, Matcher)>>,
    mirror: Vec<CompiledMirror>,
}

impl CompiledRoutes {
    /// Compiles `routes` (validation compiled every regex already; a failure here is an
    /// error, never a panic).
    pub(super) fn new(routes: &ManagedRoutes) -> Result<CompiledRoutes, regex::Error> {
        let header = routes
            .header
            .iter()
            .map(|HeaderRoute { matches, .. }| {
                matches
                    .iter()
                    .map(|m| Ok((m.header_name.to_ascii_lowercase(), Matcher::new(&m.value)?)))
                    .collect::<Result<Vec<_>, regex::Error>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mirror = routes
            .mirror
            .iter()
            .map(compile_mirror)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CompiledRoutes { header, mirror })
    }

    /// Whether a header route sends a request with `headers` to the canary.
    pub(super) fn to_canary(&self, headers: &HeaderMap) -> bool {
        self.header
            .iter()
            .any(|conditions| headers_match(conditions, headers))
    }

    /// Whether this request is to be mirrored: a mirror route matches it and its percentage
    /// picks it (evenly spread, as weights are).
    pub(super) fn mirror(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        self.mirror.iter().any(|route| {
            let matched = route.alternatives.iter().any(|alt| {
                alt.method
                    .as_ref()
                    .is_none_or(|m| m.matches(method.as_str()))
                    && alt.path.as_ref().is_none_or(|p| p.matches(path))
                    && headers_match(&alt.headers, headers)
            });
            if !matched {
                return false;
            }
            let n = route.sequence.fetch_add(1, Ordering::Relaxed);
            (n + 1) * route.percentage / 100 > n * route.percentage / 100
        })
    }
}

fn compile_mirror(route: &MirrorRoute) -> Result<CompiledMirror, regex::Error> {
    let alternatives = route
        .matches
        .iter()
        .map(|m| {
            Ok(MirrorAlternative {
                method: m.method.as_ref().map(Matcher::new).transpose()?,
                path: m.path.as_ref().map(Matcher::new).transpose()?,
                headers: m
                    .headers
                    .iter()
                    .map(|(name, value)| Ok((name.to_ascii_lowercase(), Matcher::new(value)?)))
                    .collect::<Result<Vec<_>, regex::Error>>()?,
            })
        })
        .collect::<Result<Vec<_>, regex::Error>>()?;
    Ok(CompiledMirror {
        alternatives,
        percentage: u64::try_from(route.percentage.clamp(0, 100)).unwrap_or(100),
        sequence: AtomicU64::new(0),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hyper::header::HeaderValue;

    use super::*;
    use crate::traffic::{HeaderMatch, MirrorMatch};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn routes() -> ManagedRoutes {
        ManagedRoutes::new(
            vec![HeaderRoute {
                name: "testers".into(),
                matches: vec![
                    HeaderMatch {
                        header_name: "X-Canary".into(),
                        value: StringMatch::Exact("yes".into()),
                    },
                    HeaderMatch {
                        header_name: "x-team".into(),
                        value: StringMatch::Regex("qa-[0-9]+".into()),
                    },
                ],
            }],
            vec![MirrorRoute {
                name: "shadow".into(),
                percentage: 25,
                matches: vec![MirrorMatch {
                    method: Some(StringMatch::Exact("GET".into())),
                    path: Some(StringMatch::Prefix("/api".into())),
                    headers: BTreeMap::new(),
                }],
            }],
        )
    }

    #[test]
    fn a_header_route_needs_every_condition_and_a_whole_regex_match() {
        let compiled = CompiledRoutes::new(&routes()).expect("compiles");
        let table = [
            (vec![("x-canary", "yes"), ("x-team", "qa-7")], true),
            (vec![("x-canary", "yes"), ("x-team", "qa-7x")], false),
            (vec![("x-canary", "yes")], false),
            (vec![("x-canary", "no"), ("x-team", "qa-7")], false),
            (
                vec![("x-canary", "no"), ("x-canary", "yes"), ("x-team", "qa-1")],
                true,
            ),
            (vec![], false),
        ];
        for (pairs, expected) in table {
            assert_eq!(compiled.to_canary(&headers(&pairs)), expected, "{pairs:?}");
        }
    }

    #[test]
    fn a_mirror_copies_its_percentage_of_matching_requests_evenly() {
        let compiled = CompiledRoutes::new(&routes()).expect("compiles");
        let none = HeaderMap::new();
        let picked: Vec<bool> = (0..8)
            .map(|_| compiled.mirror(&Method::GET, "/api/items", &none))
            .collect();
        assert_eq!(
            picked,
            vec![false, false, false, true, false, false, false, true]
        );
        // Requests that do not match neither count nor get mirrored.
        assert!(!compiled.mirror(&Method::POST, "/api/items", &none));
        assert!(!compiled.mirror(&Method::GET, "/web", &none));
    }
}
