//! Traefik routing: the weights of a `TraefikService` (`traefik.io/v1alpha1`).
//!
//! The TraefikService belongs to the user: its `spec.weighted.services` lists the stable and
//! canary Services (and possibly others), and vigil changes only the `weight` of those two,
//! with a JSON patch whose `test` ops guard every path it changes. An unset weight is
//! Traefik's default of 1, so a service written without weights (as Argo Rollouts suggests,
//! for Argo CD) splits 50/50 until vigil first sets them.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation, TestOperation};
use kube::api::{ApiResource, GroupVersionKind, PatchParams};
use serde_json::Value;

use super::{RouterKind, TrafficError, TrafficRouter};

/// What is wrong with a TraefikService for vigil's purposes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeightedServiceError {
    /// `spec.weighted.services` does not list the Service.
    #[error("spec.weighted.services has no Kubernetes Service named {0:?}")]
    FindService(String),
    /// It lists the Service more than once, so one weight cannot be said to be its share.
    #[error("spec.weighted.services lists the Service {0:?} more than once")]
    DistinguishDuplicate(String),
    /// The stable and canary service are the same, so weights cannot tell them apart.
    #[error("stableService and canaryService are both {0:?}")]
    DistinguishServices(String),
}

/// The Traefik TraefikService resource (`traefik.io/v1alpha1`).
pub fn traefik_service_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("traefik.io", "v1alpha1", "TraefikService"),
        "traefikservices",
    )
}

/// One entry of `spec.weighted.services` that is a Kubernetes Service of the object's
/// namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedService {
    /// Index in `spec.weighted.services`.
    pub index: usize,
    /// The Service's name.
    pub name: String,
    /// The weight as written; `None` means Traefik's default of 1.
    pub weight: Option<i64>,
}

/// The entries of `spec.weighted.services` that are Kubernetes Services (no `kind`, or
/// `Service`) of the object's own namespace. Nested TraefikServices are not vigil's.
pub fn weighted_services(object: &Value) -> Vec<WeightedService> {
    let own_namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let entries = object
        .pointer("/spec/weighted/services")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| {
            let kind = entry
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("Service");
            let namespace = entry.get("namespace").and_then(Value::as_str);
            let name = entry.get("name").and_then(Value::as_str)?;
            let local = namespace.is_none() || namespace == own_namespace;
            (kind == "Service" && local).then(|| WeightedService {
                index,
                name: name.to_owned(),
                weight: entry.get("weight").and_then(Value::as_i64),
            })
        })
        .collect()
}

fn pair(
    object: &Value,
    stable: &str,
    canary: &str,
) -> Result<(WeightedService, WeightedService), WeightedServiceError> {
    if stable == canary {
        return Err(WeightedServiceError::DistinguishServices(stable.to_owned()));
    }
    let services = weighted_services(object);
    let find = |name: &str| {
        let mut matching = services.iter().filter(|s| s.name == name);
        match (matching.next(), matching.next()) {
            (Some(found), None) => Ok(found.clone()),
            (Some(_), Some(_)) => Err(WeightedServiceError::DistinguishDuplicate(name.to_owned())),
            (None, _) => Err(WeightedServiceError::FindService(name.to_owned())),
        }
    };
    Ok((find(stable)?, find(canary)?))
}

/// The canary's percent of traffic between the two services (others listed beside them take
/// their own share, which vigil leaves alone). `None` when both weights are 0.
pub fn canary_weight(
    object: &Value,
    stable: &str,
    canary: &str,
) -> Result<Option<i32>, WeightedServiceError> {
    let (s, c) = pair(object, stable, canary)?;
    let (sw, cw) = (s.weight.unwrap_or(1), c.weight.unwrap_or(1));
    let total = sw.saturating_add(cw);
    if total <= 0 || sw < 0 || cw < 0 {
        return Ok(None);
    }
    // Round to the nearest percent; vigil itself always writes weights summing to 100.
    let percent = cw.saturating_mul(100).saturating_add(total / 2) / total;
    Ok(i32::try_from(percent).ok())
}

fn pointer(index: usize, field: &str) -> PointerBuf {
    PointerBuf::from_tokens([
        "spec".to_owned(),
        "weighted".to_owned(),
        "services".to_owned(),
        index.to_string(),
        field.to_owned(),
    ])
}

/// The JSON patch that sets the canary's weight to `canary_weight` and the stable's to
/// `100 - canary_weight`. Each changed entry is guarded by a `test` of its name (the list was
/// not reordered) and of its current weight when it has one; nothing else is touched. Empty
/// when both weights are already as wanted.
pub fn weight_patch(
    object: &Value,
    stable: &str,
    canary: &str,
    canary_weight: i32,
) -> Result<Patch, WeightedServiceError> {
    let canary_weight = i64::from(canary_weight.clamp(0, 100));
    let (s, c) = pair(object, stable, canary)?;
    let mut ops = Vec::new();
    for (service, weight) in [(s, 100 - canary_weight), (c, canary_weight)] {
        if service.weight == Some(weight) {
            continue;
        }
        ops.push(PatchOperation::Test(TestOperation {
            path: pointer(service.index, "name"),
            value: Value::from(service.name.clone()),
        }));
        let path = pointer(service.index, "weight");
        match service.weight {
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
    Ok(Patch(ops))
}

/// The kind of the object this router drives, as errors name it.
const KIND: &str = "TraefikService";

/// A TraefikService whose stable/canary weights vigil sets.
#[derive(Clone)]
pub struct TraefikWeights {
    api: crate::traffic::objects::ObjectApi,
    name: String,
    stable: String,
    canary: String,
    field_manager: String,
}

impl TraefikWeights {
    /// The TraefikService `name` in `api`'s namespace splitting traffic between the `stable`
    /// and `canary` Services; patches are sent with `field_manager`.
    pub fn new(
        api: impl Into<crate::traffic::objects::ObjectApi>,
        name: &str,
        stable: &str,
        canary: &str,
        field_manager: &str,
    ) -> TraefikWeights {
        TraefikWeights {
            api: api.into(),
            name: name.to_owned(),
            stable: stable.to_owned(),
            canary: canary.to_owned(),
            field_manager: field_manager.to_owned(),
        }
    }

    async fn read(&self) -> Result<Value, TrafficError> {
        let object = self
            .api
            .get(&self.name)
            .await
            .map_err(|source| TrafficError::GetObject {
                kind: KIND,
                name: self.name.clone(),
                source,
            })?;
        Ok(serde_json::to_value(object).unwrap_or(Value::Null))
    }

    fn read_error(&self, source: WeightedServiceError) -> TrafficError {
        TrafficError::ReadObject {
            kind: KIND,
            name: self.name.clone(),
            source: source.into(),
        }
    }
}

impl TrafficRouter for TraefikWeights {
    fn kind(&self) -> RouterKind {
        RouterKind::Traefik
    }

    async fn set_canary_weight(&self, canary_weight: i32) -> Result<(), TrafficError> {
        let object = self.read().await?;
        let patch = weight_patch(&object, &self.stable, &self.canary, canary_weight)
            .map_err(|e| self.read_error(e))?;
        if patch.0.is_empty() {
            return Ok(());
        }
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        self.api
            .patch(&self.name, &params, &kube::api::Patch::Json::<()>(patch))
            .await
            .map_err(|source| TrafficError::PatchObject {
                kind: KIND,
                name: self.name.clone(),
                source,
            })?;
        Ok(())
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        let object = self.read().await?;
        canary_weight(&object, &self.stable, &self.canary).map_err(|e| self.read_error(e))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn traefik_service() -> Value {
        json!({
            "apiVersion": "traefik.io/v1alpha1",
            "kind": "TraefikService",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"weighted": {
                "sticky": {"cookie": {"name": "lb"}},
                "services": [
                    {"name": "web-canary", "kind": "TraefikService"},
                    {"name": "web-canary", "namespace": "elsewhere", "port": 80},
                    {"name": "web-stable", "port": 80},
                    {"name": "web-canary", "namespace": "shop", "port": 80}
                ]
            }}
        })
    }

    #[test]
    fn the_typed_view_keeps_only_local_kubernetes_services() {
        assert_eq!(
            weighted_services(&traefik_service()),
            vec![
                WeightedService {
                    index: 2,
                    name: "web-stable".into(),
                    weight: None
                },
                WeightedService {
                    index: 3,
                    name: "web-canary".into(),
                    weight: None
                },
            ]
        );
    }

    #[test]
    fn unset_weights_are_traefiks_default_and_the_first_patch_adds_them() {
        let original = traefik_service();
        assert_eq!(
            canary_weight(&original, "web-stable", "web-canary"),
            Ok(Some(50))
        );
        let patch = weight_patch(&original, "web-stable", "web-canary", 10).expect("patch");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            json!([
                {"op": "test", "path": "/spec/weighted/services/2/name", "value": "web-stable"},
                {"op": "add", "path": "/spec/weighted/services/2/weight", "value": 90},
                {"op": "test", "path": "/spec/weighted/services/3/name", "value": "web-canary"},
                {"op": "add", "path": "/spec/weighted/services/3/weight", "value": 10},
            ])
        );
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(
            canary_weight(&patched, "web-stable", "web-canary"),
            Ok(Some(10))
        );
        let mut expected = original;
        expected["spec"]["weighted"]["services"][2]["weight"] = json!(90);
        expected["spec"]["weighted"]["services"][3]["weight"] = json!(10);
        assert_eq!(patched, expected, "only the two weights changed");
    }

    #[test]
    fn set_weights_are_tested_before_they_are_replaced() {
        let mut object = traefik_service();
        object["spec"]["weighted"]["services"][2]["weight"] = json!(90);
        object["spec"]["weighted"]["services"][3]["weight"] = json!(10);
        let patch = weight_patch(&object, "web-stable", "web-canary", 30).expect("patch");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            json!([
                {"op": "test", "path": "/spec/weighted/services/2/name", "value": "web-stable"},
                {"op": "test", "path": "/spec/weighted/services/2/weight", "value": 90},
                {"op": "replace", "path": "/spec/weighted/services/2/weight", "value": 70},
                {"op": "test", "path": "/spec/weighted/services/3/name", "value": "web-canary"},
                {"op": "test", "path": "/spec/weighted/services/3/weight", "value": 10},
                {"op": "replace", "path": "/spec/weighted/services/3/weight", "value": 30},
            ])
        );
        let mut edited = object.clone();
        edited["spec"]["weighted"]["services"][3]["weight"] = json!(55);
        assert!(
            json_patch::patch(&mut edited, &patch).is_err(),
            "edited since read"
        );
        let mut reordered = object.clone();
        reordered["spec"]["weighted"]["services"]
            .as_array_mut()
            .expect("array")
            .swap(2, 3);
        assert!(
            json_patch::patch(&mut reordered, &patch).is_err(),
            "reordered since read"
        );
        assert!(
            weight_patch(&object, "web-stable", "web-canary", 10)
                .expect("patch")
                .0
                .is_empty(),
            "nothing to change"
        );
    }

    #[test]
    fn a_foreign_edit_reads_as_another_weight_and_both_zero_as_unknown() {
        let mut object = traefik_service();
        object["spec"]["weighted"]["services"][2]["weight"] = json!(1);
        object["spec"]["weighted"]["services"][3]["weight"] = json!(3);
        assert_eq!(
            canary_weight(&object, "web-stable", "web-canary"),
            Ok(Some(75))
        );
        object["spec"]["weighted"]["services"][2]["weight"] = json!(0);
        object["spec"]["weighted"]["services"][3]["weight"] = json!(0);
        assert_eq!(canary_weight(&object, "web-stable", "web-canary"), Ok(None));
    }

    #[test]
    fn missing_or_doubled_services_are_errors_naming_them() {
        let object = traefik_service();
        assert_eq!(
            canary_weight(&object, "web-stable", "web-preview"),
            Err(WeightedServiceError::FindService("web-preview".into()))
        );
        assert_eq!(
            weight_patch(&json!({"spec": {}}), "a", "b", 10),
            Err(WeightedServiceError::FindService("a".into()))
        );
        let mut doubled = object.clone();
        doubled["spec"]["weighted"]["services"]
            .as_array_mut()
            .expect("array")
            .push(json!({"name": "web-stable"}));
        assert_eq!(
            canary_weight(&doubled, "web-stable", "web-canary"),
            Err(WeightedServiceError::DistinguishDuplicate(
                "web-stable".into()
            ))
        );
        assert_eq!(
            canary_weight(&object, "x", "x"),
            Err(WeightedServiceError::DistinguishServices("x".into()))
        );
        assert_eq!(
            WeightedServiceError::FindService("web-preview".into()).to_string(),
            "spec.weighted.services has no Kubernetes Service named \"web-preview\""
        );
    }

    mod io {
        use std::collections::BTreeMap;

        use serde_json::json;

        use super::super::*;
        use super::traefik_service;
        use crate::traffic::mock::{Call, MockApi, lines};

        const OBJECT: &str = "/apis/traefik.io/v1alpha1/namespaces/shop/traefikservices/web";

        async fn with_router<T>(
            object: Option<Value>,
            op: impl AsyncFnOnce(&TraefikWeights) -> T,
        ) -> (T, Vec<Call>) {
            with_failing_router(object, BTreeMap::new(), op).await
        }

        async fn with_failing_router<T>(
            object: Option<Value>,
            fail: BTreeMap<String, u16>,
            op: impl AsyncFnOnce(&TraefikWeights) -> T,
        ) -> (T, Vec<Call>) {
            let objects: BTreeMap<String, Value> =
                object.into_iter().map(|o| (OBJECT.to_owned(), o)).collect();
            let (client, mock) = MockApi::start(objects, fail);
            let api = kube::Api::namespaced_with(client, "shop", &traefik_service_resource());
            let router = TraefikWeights::new(
                api,
                "web",
                "web-stable",
                "web-canary",
                "vigil.dev/controller",
            );
            let result = op(&router).await;
            drop(router);
            (result, mock.finish().await)
        }

        #[tokio::test]
        async fn weights_are_patched_guarded_and_read_back() {
            let (result, calls) = with_router(Some(traefik_service()), async |r| {
                r.set_canary_weight(30).await
            })
            .await;
            result.expect("set");
            assert_eq!(
                lines(&calls),
                [format!("GET {OBJECT}"), format!("PATCH {OBJECT}")]
            );
            assert_eq!(calls[1].content_type, "application/json-patch+json");
            assert_eq!(
                calls[1].body,
                json!([
                    {"op": "test", "path": "/spec/weighted/services/2/name", "value": "web-stable"},
                    {"op": "add", "path": "/spec/weighted/services/2/weight", "value": 70},
                    {"op": "test", "path": "/spec/weighted/services/3/name", "value": "web-canary"},
                    {"op": "add", "path": "/spec/weighted/services/3/weight", "value": 30},
                ])
            );
            let mut set = traefik_service();
            set["spec"]["weighted"]["services"][2]["weight"] = json!(70);
            set["spec"]["weighted"]["services"][3]["weight"] = json!(30);
            let (result, calls) =
                with_router(Some(set.clone()), async |r| r.set_canary_weight(30).await).await;
            result.expect("nothing to do");
            assert_eq!(lines(&calls), [format!("GET {OBJECT}")], "no empty patch");
            let (weight, _) = with_router(Some(set), async |r| r.canary_weight().await).await;
            assert_eq!(weight.expect("read"), Some(30));
        }

        #[tokio::test]
        async fn a_patch_refused_because_the_object_changed_is_a_passing_error() {
            // A `test` op failing answers 422: retried later, not a hold.
            let fail = BTreeMap::from([(format!("PATCH {OBJECT}"), 422)]);
            let (result, calls) = with_failing_router(Some(traefik_service()), fail, async |r| {
                r.set_canary_weight(30).await
            })
            .await;
            let error = result.expect_err("refused");
            assert!(matches!(
                error,
                TrafficError::PatchObject {
                    kind: "TraefikService",
                    ..
                }
            ));
            assert_eq!(error.hold_reason(), None);
            assert_eq!(
                lines(&calls),
                [format!("GET {OBJECT}"), format!("PATCH {OBJECT}")]
            );
        }

        #[tokio::test]
        async fn a_missing_or_malformed_object_holds_with_its_name() {
            let (result, calls) = with_router(None, async |r| r.set_canary_weight(30).await).await;
            let error = result.expect_err("missing");
            assert!(error.object_missing());
            assert_eq!(
                error.hold_reason().as_deref(),
                Some("TraefikService web does not exist; no traffic moves until it does")
            );
            assert_eq!(lines(&calls), [format!("GET {OBJECT}")]);
            let mut malformed = traefik_service();
            malformed["spec"]["weighted"]["services"] = json!([{"name": "web-stable"}]);
            let (result, _) = with_router(Some(malformed), async |r| r.canary_weight().await).await;
            assert_eq!(
                result.expect_err("malformed").hold_reason().as_deref(),
                Some(
                    "TraefikService web: spec.weighted.services has no Kubernetes Service named \"web-canary\"; no traffic moves until it is fixed"
                )
            );
        }
    }
}
