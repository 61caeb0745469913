//! Istio routing: the weights of VirtualService HTTP routes, and DestinationRule subsets.
//!
//! The VirtualServices and the DestinationRule belong to the user. vigil changes only the
//! `weight` of the stable and canary destinations of the routes it manages, and the
//! `vigil.dev/revision` key of the stable and canary subsets' `labels`, each with a JSON patch
//! whose `test` ops guard every path it changes, so an object edited meanwhile makes the patch
//! fail instead of being overwritten. The objects are reached as dynamic objects (no crate
//! pins an older kube) through the small typed views [`http_routes`] and [`subsets`].
//!
//! Two ways to tell the stable from the canary in a route ([`Split`]): by `host` (the stable
//! and canary Services, Argo's host-level splitting) or by `subset` (one host, two subsets of
//! a DestinationRule, Argo's subset-level splitting).

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation, TestOperation};
use kube::api::{ApiResource, GroupVersionKind};
use serde_json::{Map, Value};

/// The API group of Istio's networking resources.
pub const ISTIO_NETWORKING_GROUP: &str = "networking.istio.io";
/// The version vigil reads and writes: `v1`, served since Istio 1.22 next to `v1beta1` and
/// `v1alpha3` (same schema).
pub const ISTIO_NETWORKING_VERSION: &str = "v1";

/// What is wrong with a VirtualService or DestinationRule for vigil's purposes; every
/// variant names the field in the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IstioError {
    /// A field vigil reads is missing or of the wrong type.
    #[error("{path}: {problem}")]
    ReadField {
        /// The field, e.g. `spec.http[1].route[0].weight`.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A route named in the Rollout's `routes` is not in the VirtualService.
    #[error("spec.http has no route named {name:?}")]
    FindNamedRoute {
        /// The route's name.
        name: String,
    },
    /// No HTTP route has a stable or canary destination.
    #[error("no route in spec.http has a destination with {stable} or {canary}")]
    FindDestinations {
        /// The stable destination, described (`host "web-stable"`, `subset "stable"`).
        stable: String,
        /// The canary destination, described.
        canary: String,
    },
    /// A managed route lacks the stable or the canary destination, so no weight can be split.
    #[error("spec.http[{route}] ({name}) has no destination with {missing}")]
    FindPairedDestination {
        /// Index of the route.
        route: usize,
        /// The route's name, or `unnamed`.
        name: String,
        /// The destination it lacks, described.
        missing: String,
    },
    /// The stable and canary destinations are the same, so weights cannot tell them apart.
    #[error("the stable and canary destinations are both {0}")]
    DistinguishDestinations(String),
    /// The DestinationRule has no subset of that name.
    #[error("spec.subsets has no subset named {name:?}")]
    FindSubset {
        /// The subset's name.
        name: String,
    },
}

fn read_field(path: impl Into<String>, problem: impl Into<String>) -> IstioError {
    IstioError::ReadField {
        path: path.into(),
        problem: problem.into(),
    }
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(ISTIO_NETWORKING_GROUP, ISTIO_NETWORKING_VERSION, kind),
        plural,
    )
}

/// Istio's VirtualService resource (`networking.istio.io/v1`).
pub fn virtual_service_resource() -> ApiResource {
    resource("VirtualService", "virtualservices")
}

/// Istio's DestinationRule resource (`networking.istio.io/v1`).
pub fn destination_rule_resource() -> ApiResource {
    resource("DestinationRule", "destinationrules")
}

/// How the stable and canary destinations of a route are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// By `destination.host`: the stable and canary Services, by short name or qualified
    /// with `namespace` (`web-stable`, `web-stable.shop`, `web-stable.shop.svc.cluster.local`).
    Hosts {
        /// The stable Service.
        stable: String,
        /// The canary Service.
        canary: String,
        /// The Rollout's namespace, where both Services live.
        namespace: String,
    },
    /// By `destination.subset`: two subsets of one DestinationRule.
    Subsets {
        /// The stable subset.
        stable: String,
        /// The canary subset.
        canary: String,
    },
}

/// Which side of the split a destination is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The stable version.
    Stable,
    /// The canary.
    Canary,
}

/// Whether `host` names `service` in `namespace`.
fn names_service(host: &str, service: &str, namespace: &str) -> bool {
    let Some(rest) = host.strip_prefix(service) else {
        return false;
    };
    let qualified = format!(".{namespace}");
    rest.is_empty()
        || rest == qualified
        || rest
            .strip_prefix(&qualified)
            .is_some_and(|tail| tail == ".svc" || tail.starts_with(".svc."))
}

impl Split {
    /// The side `destination` is on, if any.
    pub fn side(&self, destination: &Destination) -> Option<Side> {
        match self {
            Split::Hosts {
                stable,
                canary,
                namespace,
            } => {
                if names_service(&destination.host, stable, namespace) {
                    Some(Side::Stable)
                } else if names_service(&destination.host, canary, namespace) {
                    Some(Side::Canary)
                } else {
                    None
                }
            }
            Split::Subsets { stable, canary } => match destination.subset.as_deref() {
                Some(subset) if subset == stable => Some(Side::Stable),
                Some(subset) if subset == canary => Some(Side::Canary),
                _ => None,
            },
        }
    }

    /// The destination of `side`, in words for messages.
    pub fn describe(&self, side: Side) -> String {
        let (what, stable, canary) = match self {
            Split::Hosts { stable, canary, .. } => ("host", stable, canary),
            Split::Subsets { stable, canary } => ("subset", stable, canary),
        };
        let name = match side {
            Side::Stable => stable,
            Side::Canary => canary,
        };
        format!("{what} {name:?}")
    }

    fn check_distinct(&self) -> Result<(), IstioError> {
        let (stable, canary) = match self {
            Split::Hosts { stable, canary, .. } | Split::Subsets { stable, canary } => {
                (stable, canary)
            }
        };
        if stable == canary {
            return Err(IstioError::DistinguishDestinations(
                self.describe(Side::Stable),
            ));
        }
        Ok(())
    }
}

/// One destination of an HTTP route (`spec.http[route].route[index]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Index in the route's `route` list.
    pub index: usize,
    /// `destination.host`.
    pub host: String,
    /// `destination.subset`, when set.
    pub subset: Option<String>,
    /// `weight` as written; `None` when absent (Istio reads it as 0 when the route has
    /// several destinations).
    pub weight: Option<i64>,
}

/// One HTTP route of a VirtualService (`spec.http[index]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    /// Index in `spec.http`.
    pub index: usize,
    /// `name`, when set.
    pub name: Option<String>,
    /// Its destinations (none for a redirect or a direct response).
    pub destinations: Vec<Destination>,
}

impl HttpRoute {
    fn label(&self) -> String {
        self.name
            .as_deref()
            .map_or_else(|| "unnamed".to_owned(), |n| format!("{n:?}"))
    }
}

fn read_destination(route: usize, index: usize, body: &Value) -> Result<Destination, IstioError> {
    let path = format!("spec.http[{route}].route[{index}]");
    let host = body
        .pointer("/destination/host")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            read_field(
                format!("{path}.destination.host"),
                "missing or not a string",
            )
        })?;
    let subset = match body.pointer("/destination/subset") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(read_field(
                format!("{path}.destination.subset"),
                "not a string",
            ));
        }
    };
    let weight = match body.get("weight") {
        None | Some(Value::Null) => None,
        Some(w) => Some(
            w.as_i64()
                .ok_or_else(|| read_field(format!("{path}.weight"), "not a whole number"))?,
        ),
    };
    Ok(Destination {
        index,
        host: host.to_owned(),
        subset,
        weight,
    })
}

/// The HTTP routes of a VirtualService (`spec.http`), or the field that is malformed.
pub fn http_routes(virtual_service: &Value) -> Result<Vec<HttpRoute>, IstioError> {
    let Some(http) = virtual_service.pointer("/spec/http") else {
        return Err(read_field(
            "spec.http",
            "missing: vigil splits traffic in HTTP routes",
        ));
    };
    let http = http
        .as_array()
        .ok_or_else(|| read_field("spec.http", "not a list"))?;
    let mut routes = Vec::with_capacity(http.len());
    for (index, body) in http.iter().enumerate() {
        if !body.is_object() {
            return Err(read_field(format!("spec.http[{index}]"), "not an object"));
        }
        let name = match body.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(read_field(
                    format!("spec.http[{index}].name"),
                    "not a string",
                ));
            }
        };
        let destinations = match body.get("route") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(d, dest)| read_destination(index, d, dest))
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(read_field(
                    format!("spec.http[{index}].route"),
                    "not a list",
                ));
            }
        };
        routes.push(HttpRoute {
            index,
            name,
            destinations,
        });
    }
    Ok(routes)
}

/// A route whose weights vigil sets, with its stable and canary destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRoute<'a> {
    /// The route.
    pub route: &'a HttpRoute,
    /// Whether the Rollout named it (its name is then guarded in the patch).
    pub named: bool,
    /// Its (first) stable destination.
    pub stable: &'a Destination,
    /// Its (first) canary destination.
    pub canary: &'a Destination,
}

fn pair<'a>(
    route: &'a HttpRoute,
    named: bool,
    split: &Split,
) -> Result<ManagedRoute<'a>, IstioError> {
    let find = |side| {
        route
            .destinations
            .iter()
            .find(|d| split.side(d) == Some(side))
            .ok_or_else(|| IstioError::FindPairedDestination {
                route: route.index,
                name: route.label(),
                missing: split.describe(side),
            })
    };
    Ok(ManagedRoute {
        route,
        named,
        stable: find(Side::Stable)?,
        canary: find(Side::Canary)?,
    })
}

/// The routes vigil manages: those named in `named` (each must exist and have both
/// destinations), or, when none are named, every route with a stable or canary destination
/// (each must then have both; at least one must exist). Routes in `skip` (vigil's own header
/// and mirror routes) are never weighed as ordinary routes.
pub fn managed_routes<'a>(
    routes: &'a [HttpRoute],
    named: &[String],
    split: &Split,
    skip: &[String],
) -> Result<Vec<ManagedRoute<'a>>, IstioError> {
    split.check_distinct()?;
    if !named.is_empty() {
        return named
            .iter()
            .map(|name| {
                let route = routes
                    .iter()
                    .find(|r| r.name.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| IstioError::FindNamedRoute { name: name.clone() })?;
                pair(route, true, split)
            })
            .collect();
    }
    let candidates: Vec<&HttpRoute> = routes
        .iter()
        .filter(|r| !r.name.as_ref().is_some_and(|n| skip.contains(n)))
        .filter(|r| r.destinations.iter().any(|d| split.side(d).is_some()))
        .collect();
    if candidates.is_empty() {
        return Err(IstioError::FindDestinations {
            stable: split.describe(Side::Stable),
            canary: split.describe(Side::Canary),
        });
    }
    candidates
        .into_iter()
        .map(|route| pair(route, false, split))
        .collect()
}

/// The canary's percent of traffic in a VirtualService, from the stable/canary weights of
/// each managed route. `None` when the routes disagree or a route's two weights are both 0
/// or negative (vigil has not converged it yet).
pub fn canary_weight(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    skip: &[String],
) -> Result<Option<i32>, IstioError> {
    let routes = http_routes(virtual_service)?;
    let mut seen = None;
    for managed in managed_routes(&routes, named, split, skip)? {
        let (sw, cw) = (
            managed.stable.weight.unwrap_or(0),
            managed.canary.weight.unwrap_or(0),
        );
        if sw < 0 || cw < 0 {
            return Ok(None);
        }
        let Some(total) = sw.checked_add(cw).filter(|t| *t > 0) else {
            return Ok(None);
        };
        // Round to the nearest percent; vigil itself always writes weights summing to 100.
        let percent = cw
            .checked_mul(100)
            .and_then(|c| c.checked_add(total / 2))
            .map(|c| c / total)
            .and_then(|p| i32::try_from(p).ok());
        let Some(percent) = percent else {
            return Ok(None);
        };
        match seen {
            None => seen = Some(percent),
            Some(previous) if previous != percent => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(seen)
}

/// The weight every VirtualService agrees on, or `None` when one cannot tell or they differ.
pub fn agreed_weight(weights: &[Option<i32>]) -> Option<i32> {
    let first = *weights.first()?;
    weights.iter().all(|w| *w == first).then_some(first)?
}

fn pointer<const N: usize>(tokens: [&str; N]) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

fn test(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation { path, value })
}

/// The ops that set `destination`'s weight in route `route` to `weight`, guarded by a test of
/// what identifies the destination (its host, and its subset with subset-level splitting) and
/// of its current weight when it has one.
fn weight_ops(
    route: usize,
    destination: &Destination,
    split: &Split,
    weight: i64,
) -> Vec<PatchOperation> {
    let (r, d) = (route.to_string(), destination.index.to_string());
    let mut ops = vec![test(
        pointer(["spec", "http", &r, "route", &d, "destination", "host"]),
        Value::from(destination.host.clone()),
    )];
    if let (Split::Subsets { .. }, Some(subset)) = (split, &destination.subset) {
        ops.push(test(
            pointer(["spec", "http", &r, "route", &d, "destination", "subset"]),
            Value::from(subset.clone()),
        ));
    }
    let path = pointer(["spec", "http", &r, "route", &d, "weight"]);
    match destination.weight {
        Some(current) => {
            ops.push(test(path.clone(), Value::from(current)));
            ops.push(PatchOperation::Replace(ReplaceOperation {
                path,
                value: Value::from(weight),
            }));
        }
        None => ops.push(PatchOperation::Add(AddOperation {
            path,
            value: Value::from(weight),
        })),
    }
    ops
}

/// The JSON patch that sets the canary's weight to `canary_weight` and the stable's to
/// `100 - canary_weight` in every managed route of a VirtualService. Every changed weight is
/// guarded by `test` ops (the destination is still the one read, the weight is still the one
/// read); a route picked by name has its name tested too. Nothing else is touched.
pub fn weight_patch(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    skip: &[String],
    canary_weight: i32,
) -> Result<Patch, IstioError> {
    let canary_weight = i64::from(canary_weight.clamp(0, 100));
    let routes = http_routes(virtual_service)?;
    let mut ops = Vec::new();
    for managed in managed_routes(&routes, named, split, skip)? {
        let index = managed.route.index;
        if let (true, Some(name)) = (managed.named, &managed.route.name) {
            ops.push(test(
                pointer(["spec", "http", &index.to_string(), "name"]),
                Value::from(name.clone()),
            ));
        }
        ops.extend(weight_ops(
            index,
            managed.stable,
            split,
            100 - canary_weight,
        ));
        ops.extend(weight_ops(index, managed.canary, split, canary_weight));
    }
    Ok(Patch(ops))
}

/// One subset of a DestinationRule (`spec.subsets[index]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// Index in `spec.subsets`.
    pub index: usize,
    /// `name`.
    pub name: String,
    /// Whether it has a `labels` map.
    pub has_labels: bool,
    /// The value of the revision label in `labels`, when present.
    pub revision: Option<String>,
}

/// The subsets of a DestinationRule, with the value of `revision_label` in each, or the
/// field that is malformed.
pub fn subsets(rule: &Value, revision_label: &str) -> Result<Vec<Subset>, IstioError> {
    let list = rule
        .pointer("/spec/subsets")
        .ok_or_else(|| {
            read_field(
                "spec.subsets",
                "missing: subset-level splitting needs the stable and canary subsets",
            )
        })?
        .as_array()
        .ok_or_else(|| read_field("spec.subsets", "not a list"))?;
    let mut found = Vec::with_capacity(list.len());
    for (index, body) in list.iter().enumerate() {
        let path = format!("spec.subsets[{index}]");
        let name = body
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| read_field(format!("{path}.name"), "missing or not a string"))?;
        let labels = match body.get("labels") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => return Err(read_field(format!("{path}.labels"), "not a map")),
        };
        let revision = match labels.and_then(|l| l.get(revision_label)) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(read_field(
                    format!("{path}.labels[{revision_label:?}]"),
                    "not a string",
                ));
            }
        };
        found.push(Subset {
            index,
            name: name.to_owned(),
            has_labels: labels.is_some(),
            revision,
        });
    }
    Ok(found)
}

fn find_subset<'a>(list: &'a [Subset], name: &str) -> Result<&'a Subset, IstioError> {
    list.iter()
        .find(|s| s.name == name)
        .ok_or_else(|| IstioError::FindSubset {
            name: name.to_owned(),
        })
}

/// The revisions the (stable, canary) subsets select (their `revision_label`).
pub fn subset_revisions(
    rule: &Value,
    stable_subset: &str,
    canary_subset: &str,
    revision_label: &str,
) -> Result<(Option<String>, Option<String>), IstioError> {
    let list = subsets(rule, revision_label)?;
    Ok((
        find_subset(&list, stable_subset)?.revision.clone(),
        find_subset(&list, canary_subset)?.revision.clone(),
    ))
}

/// The JSON patch that points the stable and canary subsets at `revisions` (stable,
/// canary; `None` leaves that subset as it is) by setting `revision_label` in their
/// `labels`. Each change is guarded by a `test` of the subset's name and of the label's
/// current value; the subsets' other labels and fields are never touched. Empty when the
/// subsets already select those revisions.
pub fn subset_patch(
    rule: &Value,
    (stable_subset, canary_subset): (&str, &str),
    (stable, canary): (Option<&str>, Option<&str>),
    revision_label: &str,
) -> Result<Patch, IstioError> {
    let list = subsets(rule, revision_label)?;
    let wanted = [
        (find_subset(&list, stable_subset)?, stable),
        (find_subset(&list, canary_subset)?, canary),
    ];
    let mut ops = Vec::new();
    for (subset, revision) in wanted {
        let Some(revision) = revision else { continue };
        if subset.revision.as_deref() == Some(revision) {
            continue;
        }
        let index = subset.index.to_string();
        ops.push(test(
            pointer(["spec", "subsets", &index, "name"]),
            Value::from(subset.name.clone()),
        ));
        if !subset.has_labels {
            let mut labels = Map::new();
            labels.insert(revision_label.to_owned(), Value::from(revision));
            ops.push(PatchOperation::Add(AddOperation {
                path: pointer(["spec", "subsets", &index, "labels"]),
                value: Value::Object(labels),
            }));
            continue;
        }
        let path = pointer(["spec", "subsets", &index, "labels", revision_label]);
        match &subset.revision {
            Some(current) => {
                ops.push(test(path.clone(), Value::from(current.clone())));
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: Value::from(revision),
                }));
            }
            None => ops.push(PatchOperation::Add(AddOperation {
                path,
                value: Value::from(revision),
            })),
        }
    }
    Ok(Patch(ops))
}

#[cfg(test)]
#[path = "istio_tests.rs"]
mod tests;
