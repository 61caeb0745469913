//! Gateway API `HTTPRoute` routing.
//!
//! The route belongs to the user: vigil changes only the `weight` of the backendRefs that name
//! the stable and canary Services, with a JSON patch whose `test` ops guard every path it
//! changes, so a route edited meanwhile makes the patch fail instead of being overwritten.
//! The route is reached as a [`DynamicObject`] (the `gateway-api` crate pins an older kube),
//! through the small typed view [`backend_refs`].

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation, TestOperation};
use kube::api::{ApiResource, GroupVersionKind, PatchParams};
use serde_json::Value;

use super::gateway_api_baseline::{SplitServices, split, split_patch};
use super::gateway_api_routes::{RouteChange, is_header_rule, managed_routes, route_patch};
use super::{HeaderRoute, ManagedRoutes, MirrorRoute, RouterKind, TrafficError, TrafficRouter};

/// The kind of the object this router drives, as errors name it.
const KIND: &str = "HTTPRoute";

/// What is wrong with a route for vigil's purposes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No rule has a backendRef to either service.
    #[error("no rule has a backendRef to service {stable:?} or {canary:?}")]
    FindBackendRefs {
        /// The stable service.
        stable: String,
        /// The canary service.
        canary: String,
    },
    /// A rule routes to one of the services but not the other, so no weight can be split.
    #[error("spec.rules[{rule}] has a backendRef to {present:?} but none to {missing:?}")]
    FindPairedBackendRef {
        /// Index of the rule.
        rule: usize,
        /// The service it has.
        present: String,
        /// The service it lacks.
        missing: String,
    },
    /// The stable and canary service are the same, so weights cannot tell them apart.
    #[error("stableService and canaryService are both {0:?}")]
    DistinguishServices(String),
    /// A rule splitting traffic between the stable and canary has no backendRef to the
    /// baseline Service (`canary.baseline.service`), so the baseline cannot get its share.
    #[error(
        "spec.rules[{rule}] routes to the stable and canary Services but has no backendRef to \
         the baseline Service {baseline:?} (canary.baseline.service): add one (weight 0)"
    )]
    FindBaselineBackendRef {
        /// Index of the rule.
        rule: usize,
        /// The baseline Service.
        baseline: String,
    },
    /// The baseline Service is the stable or canary one, so weights cannot tell them apart.
    #[error("canary.baseline.service {0:?} is also the stableService or canaryService")]
    DistinguishBaselineService(String),
    /// A managed rule would hold more matches than an HTTPRoute rule may.
    #[error("rule {rule} would hold {count} matches, over the Gateway API's limit of {limit}")]
    CountRuleMatches {
        /// The managed rule's name.
        rule: String,
        /// Matches it would hold.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A managed rule's match would hold more header conditions than an HTTPRoute match may.
    #[error(
        "a match would hold {count} header conditions, over the Gateway API's limit of {limit}"
    )]
    CountMatchHeaders {
        /// Conditions it would hold.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The rules splitting traffic differ in `filters`, `timeouts` or `backendRefs`, so no one
    /// managed rule can serve as all of them do.
    #[error(
        "the rules with backendRefs to both services differ in filters, timeouts or backendRefs; \
         a managed route would bypass some of them (make them agree, or use one rule)"
    )]
    ShareSplitRules,
    /// The Gateway API matches a method exactly only.
    #[error("setMirrorRoute {route}: the Gateway API matches a method exactly only (use `exact`)")]
    MatchMethod {
        /// The mirror route.
        route: String,
    },
}

/// The Gateway API HTTPRoute resource (`gateway.networking.k8s.io/v1`).
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// One backendRef of a route rule that names a core Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    /// Index of the rule in `spec.rules`.
    pub rule: usize,
    /// Index of the ref in the rule's `backendRefs`.
    pub index: usize,
    /// The Service's name.
    pub name: String,
    /// The weight as written; `None` means the Gateway API default of 1.
    pub weight: Option<i64>,
}

/// Every backendRef of `route` that points at a core Service (no `group`/`kind`, or `""` /
/// `Service`), in rule order. Refs to other kinds are not vigil's to touch, nor are those of
/// managed header rules (they send to the canary only, whatever the weight).
pub fn backend_refs(route: &Value) -> Vec<BackendRef> {
    let rules = route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut refs = Vec::new();
    for (rule, body) in rules.iter().enumerate() {
        if is_header_rule(body) {
            continue;
        }
        let backends = body
            .get("backendRefs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (index, backend) in backends.iter().enumerate() {
            let group = backend.get("group").and_then(Value::as_str).unwrap_or("");
            let kind = backend
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("Service");
            let Some(name) = backend.get("name").and_then(Value::as_str) else {
                continue;
            };
            if group.is_empty() && kind == "Service" {
                refs.push(BackendRef {
                    rule,
                    index,
                    name: name.to_owned(),
                    weight: backend.get("weight").and_then(Value::as_i64),
                });
            }
        }
    }
    refs
}

/// The (stable, canary) ref pair of each rule that routes to either service.
pub(super) fn pairs<'a>(
    refs: &'a [BackendRef],
    stable: &str,
    canary: &str,
) -> Result<Vec<(&'a BackendRef, &'a BackendRef)>, RouteError> {
    if stable == canary {
        return Err(RouteError::DistinguishServices(stable.to_owned()));
    }
    let mut rules: Vec<usize> = refs
        .iter()
        .filter(|r| r.name == stable || r.name == canary)
        .map(|r| r.rule)
        .collect();
    rules.dedup();
    if rules.is_empty() {
        return Err(RouteError::FindBackendRefs {
            stable: stable.to_owned(),
            canary: canary.to_owned(),
        });
    }
    rules
        .into_iter()
        .map(|rule| {
            let find = |name: &str| refs.iter().find(|r| r.rule == rule && r.name == name);
            match (find(stable), find(canary)) {
                (Some(s), Some(c)) => Ok((s, c)),
                (Some(_), None) => Err(RouteError::FindPairedBackendRef {
                    rule,
                    present: stable.to_owned(),
                    missing: canary.to_owned(),
                }),
                _ => Err(RouteError::FindPairedBackendRef {
                    rule,
                    present: canary.to_owned(),
                    missing: stable.to_owned(),
                }),
            }
        })
        .collect()
}

/// The canary's percent of traffic in `route`, computed from the stable/canary weights of
/// each rule that routes to them. `None` when the rules disagree or both weights are 0
/// (vigil has not converged the route yet).
pub fn canary_weight(route: &Value, stable: &str, canary: &str) -> Result<Option<i32>, RouteError> {
    let refs = backend_refs(route);
    let mut seen = None;
    for (s, c) in pairs(&refs, stable, canary)? {
        let (sw, cw) = (s.weight.unwrap_or(1), c.weight.unwrap_or(1));
        let total = sw + cw;
        if total <= 0 || sw < 0 || cw < 0 {
            return Ok(None);
        }
        // Round to the nearest percent; vigil itself always writes weights summing to 100.
        let percent = i32::try_from((cw * 100 + total / 2) / total).unwrap_or(i32::MAX);
        match seen {
            None => seen = Some(percent),
            Some(previous) if previous != percent => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(seen)
}

fn pointer(rule: usize, index: usize, field: &str) -> PointerBuf {
    PointerBuf::from_tokens([
        "spec".to_owned(),
        "rules".to_owned(),
        rule.to_string(),
        "backendRefs".to_owned(),
        index.to_string(),
        field.to_owned(),
    ])
}

/// The JSON patch that sets the canary's weight to `canary_weight` and the stable's to
/// `100 - canary_weight` in every rule that routes to them. Each changed ref is guarded by a
/// `test` of its name (the list was not reordered) and of its current weight when it has one
/// (nobody else changed it since it was read); the rest of the route is never touched.
pub fn weight_patch(
    route: &Value,
    stable: &str,
    canary: &str,
    canary_weight: i32,
) -> Result<Patch, RouteError> {
    let canary_weight = i64::from(canary_weight.clamp(0, 100));
    let refs = backend_refs(route);
    let mut ops = Vec::new();
    for (s, c) in pairs(&refs, stable, canary)? {
        for (backend, weight) in [(s, 100 - canary_weight), (c, canary_weight)] {
            push_weight_ops(&mut ops, backend, weight);
        }
    }
    Ok(Patch(ops))
}

/// The ops that set `backend`'s weight to `weight`: a `test` of its name (the list was not
/// reordered) and of its current weight when it has one (nobody changed it since it was
/// read), then the change.
pub(super) fn push_weight_ops(ops: &mut Vec<PatchOperation>, backend: &BackendRef, weight: i64) {
    ops.push(PatchOperation::Test(TestOperation {
        path: pointer(backend.rule, backend.index, "name"),
        value: Value::from(backend.name.clone()),
    }));
    let path = pointer(backend.rule, backend.index, "weight");
    match backend.weight {
        Some(current) => {
            ops.push(PatchOperation::Test(TestOperation {
                path: path.clone(),
                value: Value::from(current),
            }));
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
}

/// An HTTPRoute whose stable/canary backendRef weights vigil sets.
#[derive(Clone)]
pub struct GatewayRoute {
    api: crate::traffic::objects::ObjectApi,
    route: String,
    stable: String,
    canary: String,
    /// `canary.baseline.service` of a baseline with a three-way split.
    baseline: Option<String>,
    field_manager: String,
}

impl GatewayRoute {
    /// The route `route` in `api`'s namespace splitting traffic between the `stable` and
    /// `canary` Services; patches are sent with `field_manager`.
    pub fn new(
        api: impl Into<crate::traffic::objects::ObjectApi>,
        route: &str,
        stable: &str,
        canary: &str,
        field_manager: &str,
    ) -> GatewayRoute {
        GatewayRoute {
            api: api.into(),
            route: route.to_owned(),
            stable: stable.to_owned(),
            canary: canary.to_owned(),
            baseline: None,
            field_manager: field_manager.to_owned(),
        }
    }

    /// The same route splitting three ways: the `baseline` Service's backendRefs get the
    /// baseline's share (see [`super::gateway_api_baseline`]).
    pub fn with_baseline(mut self, baseline: &str) -> GatewayRoute {
        self.baseline = Some(baseline.to_owned());
        self
    }

    fn split_services(&self) -> Option<SplitServices<'_>> {
        Some(SplitServices {
            stable: &self.stable,
            canary: &self.canary,
            baseline: self.baseline.as_deref()?,
        })
    }

    /// The baseline's percent of traffic in the route; `None` without a baseline Service or
    /// while the rules disagree.
    pub async fn baseline_weight(&self) -> Result<Option<i32>, TrafficError> {
        let Some(services) = self.split_services() else {
            return Ok(None);
        };
        let route = self.read().await?;
        let shares = split(&route, services).map_err(|e| self.read_error(e))?;
        Ok(shares.map(|(_, baseline)| baseline))
    }

    /// Sets the baseline's weight (taken from the stable's, at most what the canary leaves);
    /// nothing without a baseline Service.
    pub async fn set_baseline_weight(&self, baseline_weight: i32) -> Result<(), TrafficError> {
        let Some(services) = self.split_services() else {
            return Ok(());
        };
        let route = self.read().await?;
        let patch = split_patch(&route, services, None, Some(baseline_weight))
            .map_err(|e| self.read_error(e))?;
        self.send(patch).await
    }

    async fn read(&self) -> Result<Value, TrafficError> {
        let route = self
            .api
            .get(&self.route)
            .await
            .map_err(|source| TrafficError::GetObject {
                kind: KIND,
                name: self.route.clone(),
                source,
            })?;
        Ok(serde_json::to_value(route).unwrap_or(Value::Null))
    }

    fn read_error(&self, source: RouteError) -> TrafficError {
        TrafficError::ReadObject {
            kind: KIND,
            name: self.route.clone(),
            source: source.into(),
        }
    }
}

impl GatewayRoute {
    async fn send(&self, patch: Patch) -> Result<(), TrafficError> {
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.route, &params, &kube::api::Patch::Json::<()>(patch))
            .await
            .map_err(|source| TrafficError::PatchObject {
                kind: KIND,
                name: self.route.clone(),
                source,
            })?;
        Ok(())
    }

    async fn change_route(&self, change: RouteChange<'_>) -> Result<(), TrafficError> {
        let route = self.read().await?;
        let patch = route_patch(&route, &self.stable, &self.canary, change)
            .map_err(|e| self.read_error(e))?;
        self.send(patch).await
    }
}

impl TrafficRouter for GatewayRoute {
    fn kind(&self) -> RouterKind {
        RouterKind::GatewayApi
    }

    async fn set_canary_weight(&self, canary_weight: i32) -> Result<(), TrafficError> {
        let route = self.read().await?;
        let two_way = || weight_patch(&route, &self.stable, &self.canary, canary_weight);
        let patch = match self.split_services() {
            // A route that does not list the baseline sends it nothing: the two-way weights
            // are the whole split (reading the baseline's weight says what is missing).
            Some(services) => match split_patch(&route, services, Some(canary_weight), None) {
                Err(RouteError::FindBaselineBackendRef { .. }) => two_way(),
                other => other,
            },
            None => two_way(),
        }
        .map_err(|e| self.read_error(e))?;
        self.send(patch).await
    }

    async fn set_header_route(&self, route: &HeaderRoute) -> Result<(), TrafficError> {
        self.change_route(RouteChange::SetHeader(route)).await
    }

    async fn remove_header_route(&self, name: &str) -> Result<(), TrafficError> {
        self.change_route(RouteChange::RemoveHeader(name)).await
    }

    async fn set_mirror_route(&self, route: &MirrorRoute) -> Result<(), TrafficError> {
        self.change_route(RouteChange::SetMirror(route)).await
    }

    async fn remove_mirror_route(&self, name: &str) -> Result<(), TrafficError> {
        self.change_route(RouteChange::RemoveMirror(name)).await
    }

    async fn managed_routes(&self) -> Result<ManagedRoutes, TrafficError> {
        let route = self.read().await?;
        Ok(managed_routes(&route, &self.stable, &self.canary))
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        let route = self.read().await?;
        let two_way = || canary_weight(&route, &self.stable, &self.canary);
        match self.split_services() {
            Some(services) => match split(&route, services) {
                Err(RouteError::FindBaselineBackendRef { .. }) => two_way(),
                other => other.map(|shares| shares.map(|(canary, _)| canary)),
            },
            None => two_way(),
        }
        .map_err(|e| self.read_error(e))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["web.example"],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                        "backendRefs": [
                            {"name": "web-stable", "port": 80, "weight": 100},
                            {"name": "web-canary", "port": 80, "weight": 0},
                            {"group": "example.com", "kind": "Bucket", "name": "web-canary", "weight": 5}
                        ]
                    },
                    {
                        "backendRefs": [
                            {"name": "web-canary", "port": 80},
                            {"name": "web-stable", "port": 80}
                        ]
                    },
                    {"backendRefs": [{"name": "other", "port": 8080}]}
                ]
            }
        })
    }

    #[test]
    fn the_typed_view_keeps_only_core_service_refs() {
        let refs = backend_refs(&route());
        let names: Vec<_> = refs
            .iter()
            .map(|r| (r.rule, r.index, r.name.as_str(), r.weight))
            .collect();
        assert_eq!(
            names,
            vec![
                (0, 0, "web-stable", Some(100)),
                (0, 1, "web-canary", Some(0)),
                (1, 0, "web-canary", None),
                (1, 1, "web-stable", None),
                (2, 0, "other", None),
            ]
        );
    }

    #[test]
    fn the_patch_tests_every_changed_path_and_changes_only_weights() {
        let original = route();
        let patch = weight_patch(&original, "web-stable", "web-canary", 20).expect("patch");
        let ops = serde_json::to_value(&patch).expect("json");
        assert_eq!(
            ops,
            json!([
                {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-stable"},
                {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 80},
                {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
                {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
                {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
                {"op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "web-stable"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/1/weight", "value": 80},
                {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "web-canary"},
                {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 20},
            ])
        );
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(
            canary_weight(&patched, "web-stable", "web-canary"),
            Ok(Some(20))
        );
        // Everything but the four weights is as it was.
        let mut expected = original;
        expected["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(80);
        expected["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(20);
        expected["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(20);
        expected["spec"]["rules"][1]["backendRefs"][1]["weight"] = json!(80);
        assert_eq!(patched, expected);
    }

    #[test]
    fn a_route_changed_since_it_was_read_fails_the_patch() {
        let read = route();
        let patch = weight_patch(&read, "web-stable", "web-canary", 50).expect("patch");
        let mut changed = read;
        changed["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(7);
        assert!(json_patch::patch(&mut changed, &patch).is_err());
        let mut reordered = route();
        let refs = reordered["spec"]["rules"][0]["backendRefs"]
            .as_array_mut()
            .expect("array");
        refs.swap(0, 1);
        assert!(json_patch::patch(&mut reordered, &patch).is_err());
    }

    #[test]
    fn weights_read_back_agree_or_are_unknown() {
        let mut r = route();
        // Rule 1 has no weights (1:1 = 50%) while rule 0 says 0%.
        assert_eq!(canary_weight(&r, "web-stable", "web-canary"), Ok(None));
        r["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(0);
        r["spec"]["rules"][1]["backendRefs"][1]["weight"] = json!(100);
        assert_eq!(canary_weight(&r, "web-stable", "web-canary"), Ok(Some(0)));
        r["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(0);
        r["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(0);
        assert_eq!(canary_weight(&r, "web-stable", "web-canary"), Ok(None));
    }

    #[test]
    fn a_rule_with_only_one_of_the_services_is_an_error_naming_it() {
        let r = json!({"spec": {"rules": [{"backendRefs": [{"name": "web-stable"}]}]}});
        assert_eq!(
            weight_patch(&r, "web-stable", "web-canary", 10),
            Err(RouteError::FindPairedBackendRef {
                rule: 0,
                present: "web-stable".into(),
                missing: "web-canary".into()
            })
        );
        assert_eq!(
            canary_weight(&json!({"spec": {}}), "a", "b"),
            Err(RouteError::FindBackendRefs {
                stable: "a".into(),
                canary: "b".into()
            })
        );
        assert_eq!(
            canary_weight(&r, "x", "x"),
            Err(RouteError::DistinguishServices("x".into()))
        );
    }
}
