//! The managed header and mirror routes a release wants in place, as plain data: computed
//! purely from the current step by the state machine, sent by a [`super::TrafficRouter`], and
//! read back from the router object to tell whether a step has taken effect.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a value (a header's, a path, a method) is matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// The whole value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The value matches this regular expression (RE2 syntax, bounded at validation).
    Regex(String),
}

/// One header condition of a header route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// The header's name (case-insensitive on the wire; kept as written).
    pub header_name: String,
    /// How its value is matched.
    pub value: StringMatch,
}

/// A managed route sending the requests that match every condition in `matches` to the
/// canary only, whatever the weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoute {
    /// The route's name, one of the router's `managedRoutes`.
    pub name: String,
    /// All must hold for a request to be routed to the canary.
    pub matches: Vec<HeaderMatch>,
}

/// One alternative of a mirror route: every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorMatch {
    /// The HTTP method.
    pub method: Option<StringMatch>,
    /// The request path.
    pub path: Option<StringMatch>,
    /// Headers, by name.
    pub headers: BTreeMap<String, StringMatch>,
}

/// A managed route sending a copy of `percentage` percent of the requests that match any of
/// `matches` to the canary; the copies' responses are discarded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorRoute {
    /// The route's name, one of the router's `managedRoutes`.
    pub name: String,
    /// Percent (0..=100) of the matching requests copied.
    pub percentage: i32,
    /// Any one must hold for a request to be mirrored.
    pub matches: Vec<MirrorMatch>,
}

/// The managed routes in place (or wanted), each list sorted by name so two sets compare
/// equal whatever order a router object holds them in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ManagedRoutes {
    /// Header routes, by name.
    pub header: Vec<HeaderRoute>,
    /// Mirror routes, by name.
    pub mirror: Vec<MirrorRoute>,
    /// Names of header routes whose rule is present on the router object but not as vigil
    /// would build it now (edited, or defaulted differently): not in place, yet to be removed
    /// when not wanted. Read back only, never recorded.
    #[serde(skip)]
    pub stale_header: Vec<String>,
    /// Names of mirror routes present but not as vigil would build them now (as
    /// `stale_header`).
    #[serde(skip)]
    pub stale_mirror: Vec<String>,
}

impl ManagedRoutes {
    /// The routes given, sorted by name.
    pub fn new(mut header: Vec<HeaderRoute>, mut mirror: Vec<MirrorRoute>) -> ManagedRoutes {
        header.sort();
        mirror.sort();
        ManagedRoutes {
            header,
            mirror,
            stale_header: Vec::new(),
            stale_mirror: Vec::new(),
        }
    }

    /// Names of every header route present, in place as wanted or stale.
    pub fn present_header(&self) -> impl Iterator<Item = &str> {
        let in_place = self.header.iter().map(|r| r.name.as_str());
        in_place.chain(self.stale_header.iter().map(String::as_str))
    }

    /// Names of every mirror route present, in place as wanted or stale.
    pub fn present_mirror(&self) -> impl Iterator<Item = &str> {
        let in_place = self.mirror.iter().map(|r| r.name.as_str());
        in_place.chain(self.stale_mirror.iter().map(String::as_str))
    }

    /// True when no managed route is in place.
    pub fn is_empty(&self) -> bool {
        self.header.is_empty() && self.mirror.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str) -> HeaderRoute {
        HeaderRoute {
            name: name.into(),
            matches: vec![HeaderMatch {
                header_name: "x-canary".into(),
                value: StringMatch::Exact("yes".into()),
            }],
        }
    }

    #[test]
    fn routes_compare_equal_whatever_order_they_are_read_in() {
        let a = ManagedRoutes::new(vec![header("b"), header("a")], Vec::new());
        let b = ManagedRoutes::new(vec![header("a"), header("b")], Vec::new());
        assert_eq!(a, b);
        assert!(!a.is_empty());
        assert!(ManagedRoutes::default().is_empty());
        assert_ne!(a, ManagedRoutes::new(vec![header("a")], Vec::new()));
    }
}
