//! VirtualService HTTP routes: which destinations are the stable and the canary, the weight
//! they carry, and the guarded patch that sets it.

use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde_json::Value;

use super::{IstioError, pointer, read_field, test};

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
pub(super) fn names_service(host: &str, service: &str, namespace: &str) -> bool {
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
    /// Whether it mirrors requests (`mirror` is set).
    pub mirror: bool,
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
            mirror: body.get("mirror").is_some_and(|m| !m.is_null()),
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

/// The routes whose weights vigil sets: those named in `named` (each must exist and have
/// both destinations), or, when none are named, every route with a stable or canary
/// destination (each must then have both; at least one must exist). Routes named in
/// `vigil_routes` (the Rollout's managed header and mirror routes) are vigil's own: a mirror
/// route among them carries the split too and is weighed with the others; a header route
/// sends everything to the canary and is never weighed.
pub fn managed_routes<'a>(
    routes: &'a [HttpRoute],
    named: &[String],
    split: &Split,
    vigil_routes: &[String],
) -> Result<Vec<ManagedRoute<'a>>, IstioError> {
    split.check_distinct()?;
    let is_vigils = |r: &HttpRoute| r.name.as_ref().is_some_and(|n| vigil_routes.contains(n));
    let mut managed = if named.is_empty() {
        let candidates: Vec<&HttpRoute> = routes
            .iter()
            .filter(|r| !is_vigils(r))
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
            .collect::<Result<Vec<_>, _>>()?
    } else {
        named
            .iter()
            .map(|name| {
                let route = routes
                    .iter()
                    .find(|r| r.name.as_deref() == Some(name.as_str()))
                    .ok_or_else(|| IstioError::FindNamedRoute { name: name.clone() })?;
                pair(route, true, split)
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    // vigil's mirror routes copy the split of the routes they shadow; one edited out of
    // shape is simply not weighed (setting the mirror route again rebuilds it).
    managed.extend(
        routes
            .iter()
            .filter(|r| r.mirror && is_vigils(r))
            .filter_map(|route| pair(route, true, split).ok()),
    );
    Ok(managed)
}

/// The canary's percent of traffic in a VirtualService, from the stable/canary weights of
/// each managed route. `None` when the routes disagree or a route's two weights are both 0
/// or negative (vigil has not converged it yet).
pub fn canary_weight(
    virtual_service: &Value,
    named: &[String],
    split: &Split,
    vigil_routes: &[String],
) -> Result<Option<i32>, IstioError> {
    let routes = http_routes(virtual_service)?;
    let mut seen = None;
    for managed in managed_routes(&routes, named, split, vigil_routes)? {
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
    vigil_routes: &[String],
    canary_weight: i32,
) -> Result<Patch, IstioError> {
    let canary_weight = i64::from(canary_weight.clamp(0, 100));
    let routes = http_routes(virtual_service)?;
    let mut ops = Vec::new();
    for managed in managed_routes(&routes, named, split, vigil_routes)? {
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
