//! SMI routing: a `TrafficSplit` (`split.smi-spec.io/v1alpha2`) that vigil creates and owns.
//!
//! v1alpha2 is the version both meshes that implement SMI traffic splitting serve: Linkerd's
//! SMI extension (`linkerd-smi`, v1alpha1 and v1alpha2) and Open Service Mesh (v1alpha2 as its
//! storage version). Its backends carry integer weights. The split's clients address the root
//! Service (`rootService`, the stable Service when unset); vigil writes the whole `spec`: the
//! root and the two backends, stable first. A split of that name that another owner holds is
//! an error and never touched. The decision is pure ([`plan`]); the I/O only carries it out.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{RouterKind, TrafficError, TrafficRouter};

/// The API version of the TrafficSplits vigil writes.
pub const TRAFFIC_SPLIT_API_VERSION: &str = "split.smi-spec.io/v1alpha2";

/// What is wrong with a TrafficSplit for vigil's purposes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A TrafficSplit of that name exists and is not this Rollout's.
    #[error("TrafficSplit {split:?} already exists and is not owned by this Rollout")]
    AdoptTrafficSplit {
        /// The TrafficSplit.
        split: String,
    },
    /// The stable and canary service are the same, so weights cannot tell them apart.
    #[error("stableService and canaryService are both {0:?}")]
    DistinguishServices(String),
}

/// The SMI TrafficSplit resource (`split.smi-spec.io/v1alpha2`).
pub fn traffic_split_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("split.smi-spec.io", "v1alpha2", "TrafficSplit"),
        "trafficsplits",
    )
}

/// Everything the TrafficSplit of one Rollout is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitConfig {
    /// The TrafficSplit's name (`trafficSplitName`, the Rollout's name when unset).
    pub name: String,
    /// The namespace (the Rollout's).
    pub namespace: String,
    /// The Service clients address (`rootService`, `stableService` when unset).
    pub root_service: String,
    /// The stable Service.
    pub stable_service: String,
    /// The canary Service.
    pub canary_service: String,
    /// Labels vigil puts on the TrafficSplit (the Rollout's label).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The owner reference to the Rollout (with its `uid`).
    pub owner: Value,
}

impl SplitConfig {
    /// The spec for `weight` percent to the canary.
    pub fn spec(&self, weight: i32) -> Value {
        let weight = weight.clamp(0, 100);
        json!({
            "service": self.root_service,
            "backends": [
                {"service": self.stable_service, "weight": 100 - weight},
                {"service": self.canary_service, "weight": weight},
            ],
        })
    }

    /// The whole TrafficSplit for `weight`.
    pub fn object(&self, weight: i32) -> Value {
        json!({
            "apiVersion": TRAFFIC_SPLIT_API_VERSION,
            "kind": "TrafficSplit",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "ownerReferences": [self.owner],
            },
            "spec": self.spec(weight),
        })
    }

    fn check(&self, split: &Value) -> Result<(), SplitError> {
        if self.stable_service == self.canary_service {
            return Err(SplitError::DistinguishServices(self.stable_service.clone()));
        }
        let uid = self.owner.get("uid").and_then(Value::as_str);
        let owned = split
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_some_and(|refs| {
                uid.is_some_and(|uid| {
                    refs.iter()
                        .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
                })
            });
        if owned {
            Ok(())
        } else {
            Err(SplitError::AdoptTrafficSplit {
                split: self.name.clone(),
            })
        }
    }
}

/// A backend's weight as written: an integer (v1alpha2), or a whole number stored as a float.
fn weight_of(backend: &Value) -> Option<i64> {
    let weight = backend.get("weight")?;
    weight.as_i64().or_else(|| {
        weight
            .as_f64()
            .filter(|w| w.fract() == 0.0 && w.abs() < 1e15)
            .map(|w| w as i64)
    })
}

/// The canary's percent of traffic in `split`: `None` when there is no split yet or its spec
/// is not exactly what vigil writes (edited by someone: the next `setWeight` puts it back).
pub fn canary_weight(
    split: Option<&Value>,
    config: &SplitConfig,
) -> Result<Option<i32>, SplitError> {
    let Some(split) = split else { return Ok(None) };
    config.check(split)?;
    let canary = split
        .pointer("/spec/backends/1")
        .filter(|b| b.get("service").and_then(Value::as_str) == Some(&config.canary_service))
        .and_then(weight_of)
        .and_then(|w| i32::try_from(w).ok())
        .filter(|w| (0..=100).contains(w));
    Ok(canary.filter(|w| split.get("spec") == Some(&config.spec(*w))))
}

/// What to do to the TrafficSplit.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitAction {
    /// It is as wanted.
    Keep,
    /// Create it.
    Create(Value),
    /// Patch it.
    Patch(Patch),
}

/// What to do so the canary gets `weight` percent: create the split, or replace its spec
/// guarded by a `test` of the spec that was read (so a concurrent edit fails the patch).
pub fn plan(
    split: Option<&Value>,
    config: &SplitConfig,
    weight: i32,
) -> Result<SplitAction, SplitError> {
    let Some(current) = split else {
        if config.stable_service == config.canary_service {
            return Err(SplitError::DistinguishServices(
                config.stable_service.clone(),
            ));
        }
        return Ok(SplitAction::Create(config.object(weight)));
    };
    config.check(current)?;
    let desired = config.spec(weight);
    let spec = PointerBuf::from_tokens(["spec"]);
    Ok(match current.get("spec") {
        Some(seen) if *seen == desired => SplitAction::Keep,
        Some(seen) => SplitAction::Patch(Patch(vec![
            PatchOperation::Test(TestOperation {
                path: spec.clone(),
                value: seen.clone(),
            }),
            PatchOperation::Add(AddOperation {
                path: spec,
                value: desired,
            }),
        ])),
        None => SplitAction::Patch(Patch(vec![PatchOperation::Add(AddOperation {
            path: spec,
            value: desired,
        })])),
    })
}

/// The kind of the object this router drives, as errors name it.
const KIND: &str = "TrafficSplit";

/// The TrafficSplit of one Rollout.
#[derive(Clone)]
pub struct SmiSplit {
    api: crate::traffic::objects::ObjectApi,
    config: SplitConfig,
    field_manager: String,
}

impl SmiSplit {
    /// The TrafficSplit `config` describes, in `api`'s namespace; changes are sent with
    /// `field_manager`.
    pub fn new(
        api: impl Into<crate::traffic::objects::ObjectApi>,
        config: SplitConfig,
        field_manager: &str,
    ) -> SmiSplit {
        SmiSplit {
            api: api.into(),
            config,
            field_manager: field_manager.to_owned(),
        }
    }

    async fn read(&self) -> Result<Option<Value>, TrafficError> {
        let split = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|source| TrafficError::GetObject {
                kind: KIND,
                name: self.config.name.clone(),
                source,
            })?;
        Ok(split.map(|s| serde_json::to_value(s).unwrap_or(Value::Null)))
    }

    fn read_error(&self, source: SplitError) -> TrafficError {
        TrafficError::ReadObject {
            kind: KIND,
            name: self.config.name.clone(),
            source: source.into(),
        }
    }
}

impl TrafficRouter for SmiSplit {
    fn kind(&self) -> RouterKind {
        RouterKind::Smi
    }

    async fn set_canary_weight(&self, canary_weight: i32) -> Result<(), TrafficError> {
        let split = self.read().await?;
        let action =
            plan(split.as_ref(), &self.config, canary_weight).map_err(|e| self.read_error(e))?;
        let name = self.config.name.clone();
        match action {
            SplitAction::Keep => Ok(()),
            SplitAction::Create(object) => {
                let object: DynamicObject =
                    serde_json::from_value(object).map_err(|e| TrafficError::CreateObject {
                        kind: KIND,
                        name: name.clone(),
                        source: kube::Error::SerdeError(e),
                    })?;
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(self.field_manager.clone()),
                };
                match self.api.create(&params, &object).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile: the next reconcile reads and patches it.
                    Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
                    Err(source) => Err(TrafficError::CreateObject {
                        kind: KIND,
                        name,
                        source,
                    }),
                }
            }
            SplitAction::Patch(patch) => {
                let params = PatchParams {
                    field_manager: Some(self.field_manager.clone()),
                    ..PatchParams::default()
                };
                self.api
                    .patch(&name, &params, &kube::api::Patch::Json::<()>(patch))
                    .await
                    .map(|_| ())
                    .map_err(|source| TrafficError::PatchObject {
                        kind: KIND,
                        name,
                        source,
                    })
            }
        }
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        let split = self.read().await?;
        canary_weight(split.as_ref(), &self.config).map_err(|e| self.read_error(e))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config() -> SplitConfig {
        SplitConfig {
            name: "checkout".into(),
            namespace: "shop".into(),
            root_service: "checkout".into(),
            stable_service: "checkout-stable".into(),
            canary_service: "checkout-canary".into(),
            labels: BTreeMap::from([("vigil.dev/rollout".into(), "checkout".into())]),
            owner: json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
                          "name": "checkout", "uid": "uid-1", "controller": true,
                          "blockOwnerDeletion": true}),
        }
    }

    #[test]
    fn a_missing_split_is_created_whole_and_owned() {
        assert_eq!(canary_weight(None, &config()), Ok(None));
        assert_eq!(
            plan(None, &config(), 10),
            Ok(SplitAction::Create(json!({
                "apiVersion": "split.smi-spec.io/v1alpha2",
                "kind": "TrafficSplit",
                "metadata": {
                    "name": "checkout", "namespace": "shop",
                    "labels": {"vigil.dev/rollout": "checkout"},
                    "ownerReferences": [config().owner]
                },
                "spec": {"service": "checkout", "backends": [
                    {"service": "checkout-stable", "weight": 90},
                    {"service": "checkout-canary", "weight": 10}
                ]}
            })))
        );
    }

    #[test]
    fn a_weight_change_replaces_the_spec_guarded_by_the_spec_read() {
        let current = config().object(10);
        assert_eq!(canary_weight(Some(&current), &config()), Ok(Some(10)));
        assert_eq!(plan(Some(&current), &config(), 10), Ok(SplitAction::Keep));
        let Ok(SplitAction::Patch(patch)) = plan(Some(&current), &config(), 40) else {
            panic!("expected a patch");
        };
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            json!([
                {"op": "test", "path": "/spec", "value": {"service": "checkout", "backends": [
                    {"service": "checkout-stable", "weight": 90},
                    {"service": "checkout-canary", "weight": 10}]}},
                {"op": "add", "path": "/spec", "value": {"service": "checkout", "backends": [
                    {"service": "checkout-stable", "weight": 60},
                    {"service": "checkout-canary", "weight": 40}]}}
            ])
        );
        let mut patched = current.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(canary_weight(Some(&patched), &config()), Ok(Some(40)));
        let mut edited = current;
        edited["spec"]["backends"][0]["weight"] = json!(50);
        assert!(
            json_patch::patch(&mut edited, &patch).is_err(),
            "changed since read"
        );
    }

    #[test]
    fn a_foreign_edit_reads_as_unknown_and_the_next_set_puts_it_back() {
        for edit in [
            json!({"service": "checkout", "backends": [
                {"service": "checkout-stable", "weight": 50},
                {"service": "checkout-canary", "weight": 10}]}),
            json!({"service": "elsewhere", "backends": [
                {"service": "checkout-stable", "weight": 90},
                {"service": "checkout-canary", "weight": 10}]}),
            json!({"service": "checkout", "backends": [
                {"service": "checkout-stable", "weight": 90},
                {"service": "checkout-canary", "weight": 10},
                {"service": "intruder", "weight": 10}]}),
            json!({"service": "checkout", "backends": [
                {"service": "checkout-stable", "weight": "90"},
                {"service": "checkout-canary", "weight": 10}]}),
        ] {
            let mut split = config().object(10);
            split["spec"] = edit.clone();
            assert_eq!(canary_weight(Some(&split), &config()), Ok(None), "{edit}");
            let Ok(SplitAction::Patch(patch)) = plan(Some(&split), &config(), 10) else {
                panic!("expected a patch for {edit}");
            };
            json_patch::patch(&mut split, &patch).expect("applies");
            assert_eq!(canary_weight(Some(&split), &config()), Ok(Some(10)));
        }
        // Whole numbers stored as floats read as integers.
        let mut split = config().object(10);
        split["spec"]["backends"][0]["weight"] = json!(90.0);
        split["spec"]["backends"][1]["weight"] = json!(10.0);
        assert_eq!(weight_of(&split["spec"]["backends"][1]), Some(10));
    }

    #[test]
    fn a_split_someone_else_owns_is_an_error_and_never_touched() {
        let mut foreign = config().object(0);
        foreign["metadata"]["ownerReferences"] = json!([]);
        let error = SplitError::AdoptTrafficSplit {
            split: "checkout".into(),
        };
        assert_eq!(canary_weight(Some(&foreign), &config()), Err(error.clone()));
        assert_eq!(plan(Some(&foreign), &config(), 10), Err(error));
        assert_eq!(
            error_text(SplitError::AdoptTrafficSplit { split: "x".into() }),
            "TrafficSplit \"x\" already exists and is not owned by this Rollout"
        );
        let mut same = config();
        same.canary_service = same.stable_service.clone();
        assert_eq!(
            plan(None, &same, 10),
            Err(SplitError::DistinguishServices("checkout-stable".into()))
        );
    }

    fn error_text(error: SplitError) -> String {
        error.to_string()
    }

    mod io {
        use std::collections::BTreeMap;

        use super::super::*;
        use super::config;
        use crate::traffic::mock::{Call, MockApi, lines};

        const SPLITS: &str = "/apis/split.smi-spec.io/v1alpha2/namespaces/shop/trafficsplits";

        async fn with_router<T>(
            split: Option<Value>,
            op: impl AsyncFnOnce(&SmiSplit) -> T,
        ) -> (T, Vec<Call>) {
            let objects: BTreeMap<String, Value> = split
                .into_iter()
                .map(|o| (format!("{SPLITS}/checkout"), o))
                .collect();
            let (client, mock) = MockApi::start(objects, BTreeMap::new());
            let api = kube::Api::namespaced_with(client, "shop", &traffic_split_resource());
            let router = SmiSplit::new(api, config(), "vigil.dev/controller");
            let result = op(&router).await;
            drop(router);
            (result, mock.finish().await)
        }

        #[tokio::test]
        async fn a_missing_split_is_created_and_an_existing_one_patched() {
            let (result, calls) = with_router(None, async |r| r.set_canary_weight(10).await).await;
            result.expect("created");
            assert_eq!(
                lines(&calls),
                [format!("GET {SPLITS}/checkout"), format!("POST {SPLITS}")]
            );
            assert_eq!(calls[1].body, config().object(10));
            let (result, calls) = with_router(Some(config().object(10)), async |r| {
                r.set_canary_weight(40).await
            })
            .await;
            result.expect("patched");
            assert_eq!(calls[1].line(), format!("PATCH {SPLITS}/checkout"));
            assert_eq!(calls[1].content_type, "application/json-patch+json");
            assert_eq!(calls[1].body[1]["value"], config().spec(40));
            let (weight, calls) =
                with_router(Some(config().object(40)), async |r| r.canary_weight().await).await;
            assert_eq!(weight.expect("read"), Some(40));
            assert_eq!(calls.len(), 1);
        }

        #[tokio::test]
        async fn a_split_owned_by_someone_else_holds_and_is_not_written() {
            let mut foreign = config().object(0);
            foreign["metadata"]["ownerReferences"] = json!([{"uid": "uid-other"}]);
            let (result, calls) =
                with_router(Some(foreign), async |r| r.set_canary_weight(10).await).await;
            let error = result.expect_err("foreign");
            assert_eq!(
                error.hold_reason().as_deref(),
                Some(
                    "TrafficSplit checkout: TrafficSplit \"checkout\" already exists and is not owned by this Rollout; no traffic moves until it is fixed"
                )
            );
            assert_eq!(lines(&calls), [format!("GET {SPLITS}/checkout")]);
        }
    }
}
