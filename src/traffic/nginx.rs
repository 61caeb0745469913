//! NGINX Ingress routing: a canary Ingress that vigil creates, owns and removes.
//!
//! ingress-nginx splits traffic with a second Ingress for the same host and paths that carries
//! `<prefix>/canary: "true"` and `<prefix>/canary-weight: "<percent>"`. The stable Ingress
//! belongs to the user and is only read; vigil clones its rules that route to `stableService`
//! into the canary Ingress, pointed at `canaryService`, with an owner reference to the Rollout.
//! A canary Ingress sending nothing to the canary is the same as none, so vigil deletes it when
//! the weight returns to 0 with no header route (promotion, abort, the finalizer) and reads "no
//! canary Ingress" as weight 0. A header route is `canary-by-header` with
//! `canary-by-header-value` (exact) or `canary-by-header-pattern` (a prefix, escaped; no user
//! regex: ingress-nginx runs patterns with a backtracking engine), named in
//! vigil's own annotation [`HEADER_ROUTE_ANNOTATION`] so it can be read back. The decision of
//! what to do is pure ([`plan`]); the I/O only carries it out.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, TestOperation};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PatchParams, PostParams,
    Preconditions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Capability, HeaderMatch, HeaderRoute, ManagedRoutes, RouterKind, StringMatch, TrafficError,
    TrafficRouter,
};
use crate::rollout::fit_name;

/// The annotation prefix ingress-nginx reads unless it was started with another one.
pub const DEFAULT_ANNOTATION_PREFIX: &str = "nginx.ingress.kubernetes.io";
/// Longest Ingress name (a DNS subdomain); longer canary names are shortened with a hash.
pub const MAX_INGRESS_NAME_LEN: usize = 253;
/// Most `additionalIngressAnnotations` one Rollout may set on its canary Ingress.
pub const MAX_ADDITIONAL_ANNOTATIONS: usize = 16;
/// Longest value of one additional annotation, in bytes.
pub const MAX_ANNOTATION_VALUE_LEN: usize = 1024;
/// Longest name part of an annotation key (after the prefix), as Kubernetes allows.
pub const MAX_ANNOTATION_NAME_LEN: usize = 63;
/// Longest annotation prefix (a DNS subdomain).
pub const MAX_ANNOTATION_PREFIX_LEN: usize = 253;
/// Annotations (after the prefix) that only vigil writes: the split itself.
pub const OWNED_ANNOTATIONS: [&str; 3] = ["canary", "canary-weight", "canary-weight-total"];
/// The only annotations (after the prefix) `additionalIngressAnnotations` may set: the canary
/// selectors. vigil creates the canary Ingress with its own RBAC, so any other key (a
/// `*-snippet`, `auth-*`, a `*-secret` naming another namespace's Secret) would let a Rollout
/// writer configure the shared ingress controller. `canary-by-header-pattern` is left out: it is
/// a regular expression that ingress-nginx runs with a backtracking engine.
pub const ALLOWED_ADDITIONAL_ANNOTATIONS: [&str; 3] = [
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-cookie",
];
/// vigil's annotation on the canary Ingress naming the managed header route it carries.
pub const HEADER_ROUTE_ANNOTATION: &str = "vigil.dev/header-route";

/// How a header route matches the header's value. ingress-nginx matches the exact value
/// (`canary-by-header-value`) or a regular expression (`canary-by-header-pattern`); a prefix
/// becomes a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HeaderValue {
    /// The whole value.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The value matches this regular expression.
    Regex(String),
}

impl HeaderValue {
    /// The annotation (after the prefix) and value ingress-nginx reads for this match.
    fn annotation(&self) -> (&'static str, String) {
        match self {
            HeaderValue::Exact(value) => ("canary-by-header-value", value.clone()),
            HeaderValue::Regex(pattern) => ("canary-by-header-pattern", pattern.clone()),
            HeaderValue::Prefix(prefix) => {
                let mut pattern = String::from("^");
                for c in prefix.chars() {
                    if "\\.+*?()|[]{}^$/-".contains(c) {
                        pattern.push('\\');
                    }
                    pattern.push(c);
                }
                pattern.push_str(".*");
                ("canary-by-header-pattern", pattern)
            }
        }
    }
}

/// A managed header route on the canary Ingress: requests with the header reach the canary.
/// vigil keeps it as JSON in [`HEADER_ROUTE_ANNOTATION`] to read it back as it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryHeader {
    /// The managed route's name.
    pub route: String,
    /// The header's name.
    pub header: String,
    /// How its value is matched.
    pub value: HeaderValue,
}

/// What the canary Ingress routes to the canary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanaryState {
    /// Percent of all requests.
    pub weight: i32,
    /// Requests with a header, whatever the weight.
    pub header: Option<CanaryHeader>,
}

impl CanaryState {
    /// Nothing reaches the canary: no canary Ingress is needed.
    pub fn is_empty(&self) -> bool {
        self.weight <= 0 && self.header.is_none()
    }
}

/// What is wrong with the Ingresses for vigil's purposes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// The stable Ingress has no path whose backend is the stable Service.
    #[error("no spec.rules[].http.paths[].backend.service.name is {service:?}")]
    FindStableBackend {
        /// The stable Service.
        service: String,
    },
    /// An Ingress named like the canary Ingress exists and is not this Rollout's.
    #[error(
        "Ingress {ingress:?} already exists and is not owned by this Rollout; rename or delete it"
    )]
    AdoptCanaryIngress {
        /// The Ingress.
        ingress: String,
    },
}

/// The networking.k8s.io/v1 Ingress resource.
pub fn ingress_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress"),
        "ingresses",
    )
}

/// The name of the canary Ingress of `rollout` cloned from `stable_ingress`, as Argo Rollouts
/// names it (`<rollout>-<stableIngress>-canary`), shortened with a hash when too long.
pub fn canary_ingress_name(rollout: &str, stable_ingress: &str) -> String {
    let stem = fit_name(
        &format!("{rollout}-{stable_ingress}"),
        MAX_INGRESS_NAME_LEN - "-canary".len(),
    );
    format!("{stem}-canary")
}

/// Everything the canary Ingress of one Rollout is built from, besides the stable Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryIngressConfig {
    /// The canary Ingress's name ([`canary_ingress_name`]).
    pub name: String,
    /// The Service the stable Ingress routes to.
    pub stable_service: String,
    /// The Service the canary Ingress routes to instead.
    pub canary_service: String,
    /// The annotation prefix (`annotationPrefix`, default [`DEFAULT_ANNOTATION_PREFIX`]).
    pub prefix: String,
    /// `additionalIngressAnnotations`, keys without the prefix.
    pub additional: BTreeMap<String, String>,
    /// Labels vigil puts on the canary Ingress (the Rollout's label).
    pub labels: BTreeMap<String, String>,
    /// The owner reference to the Rollout (with its `uid`).
    pub owner: Value,
}

impl CanaryIngressConfig {
    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }

    fn owner_uid(&self) -> Option<&str> {
        self.owner.get("uid").and_then(Value::as_str)
    }

    /// Whether `key` is an annotation vigil manages on the canary Ingress: every
    /// `<prefix>/canary*` key and the additional ones.
    fn owns_annotation(&self, key: &str) -> bool {
        key == HEADER_ROUTE_ANNOTATION
            || key
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|name| {
                    name.starts_with("canary") || self.additional.contains_key(name)
                })
    }

    /// The annotations the canary Ingress carries for `state`.
    fn annotations(&self, stable: &Value, state: &CanaryState) -> Map<String, Value> {
        let mut annotations = Map::new();
        // The ingress class decides which controller serves the Ingress; the canary must be
        // served by the same one.
        if let Some(class) = stable.pointer("/metadata/annotations/kubernetes.io~1ingress.class") {
            annotations.insert("kubernetes.io/ingress.class".into(), class.clone());
        }
        // Validation refuses other keys; the builder drops them too, so no path writes them.
        let allowed = self
            .additional
            .iter()
            .filter(|(name, _)| ALLOWED_ADDITIONAL_ANNOTATIONS.contains(&name.as_str()));
        for (name, value) in allowed {
            annotations.insert(self.key(name), Value::from(value.clone()));
        }
        annotations.insert(self.key("canary"), json!("true"));
        annotations.insert(
            self.key("canary-weight"),
            Value::from(state.weight.clamp(0, 100).to_string()),
        );
        if let Some(header) = &state.header {
            annotations.insert(
                HEADER_ROUTE_ANNOTATION.into(),
                Value::from(serde_json::to_string(header).unwrap_or_default()),
            );
            annotations.insert(self.key("canary-by-header"), json!(header.header));
            let (name, value) = header.value.annotation();
            annotations.insert(self.key(name), Value::from(value));
        }
        annotations
    }

    /// What `canary` routes, as far as its annotations say; `None` when its weight is not a
    /// percent.
    fn state_of(&self, canary: &Value) -> Option<CanaryState> {
        let weight = annotation(canary, &self.key("canary-weight"))
            .and_then(|w| w.parse::<i32>().ok())
            .filter(|w| (0..=100).contains(w))?;
        // An unreadable record of the header route reads as none: the annotations it would
        // have made then differ from the wanted ones, which puts them back.
        let header = annotation(canary, HEADER_ROUTE_ANNOTATION)
            .and_then(|json| serde_json::from_str::<CanaryHeader>(json).ok());
        Some(CanaryState { weight, header })
    }
}

/// The stable Ingress's spec reduced to the paths that route to `stable`, each pointed at
/// `canary` instead (a `defaultBackend` naming `stable` too). Paths to other backends stay out:
/// the canary Ingress splits only the stable Service's traffic.
pub fn canary_spec(
    stable_ingress: &Value,
    stable: &str,
    canary: &str,
) -> Result<Value, IngressError> {
    let mut spec = stable_ingress
        .get("spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut found = false;
    let names_stable =
        |backend: &Value| backend.pointer("/service/name").and_then(Value::as_str) == Some(stable);
    let repoint = |backend: &mut Value| {
        if let Some(name) = backend.pointer_mut("/service/name") {
            *name = Value::from(canary);
        }
    };
    if let Some(default) = spec.get_mut("defaultBackend") {
        if names_stable(default) {
            repoint(default);
            found = true;
        } else if let Some(object) = spec.as_object_mut() {
            object.remove("defaultBackend");
        }
    }
    if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
        for rule in rules.iter_mut() {
            if let Some(paths) = rule
                .pointer_mut("/http/paths")
                .and_then(Value::as_array_mut)
            {
                paths.retain(|path| path.get("backend").is_some_and(names_stable));
                for path in paths.iter_mut() {
                    if let Some(backend) = path.get_mut("backend") {
                        repoint(backend);
                        found = true;
                    }
                }
            }
        }
        rules.retain(|rule| {
            rule.pointer("/http/paths")
                .and_then(Value::as_array)
                .is_some_and(|paths| !paths.is_empty())
        });
    }
    if !found {
        return Err(IngressError::FindStableBackend {
            service: stable.to_owned(),
        });
    }
    Ok(spec)
}

/// The whole canary Ingress for `state`.
pub fn desired_canary_ingress(
    stable_ingress: &Value,
    config: &CanaryIngressConfig,
    state: &CanaryState,
) -> Result<Value, IngressError> {
    let spec = canary_spec(
        stable_ingress,
        &config.stable_service,
        &config.canary_service,
    )?;
    let mut metadata = json!({
        "name": config.name,
        "labels": config.labels,
        "annotations": config.annotations(stable_ingress, state),
        "ownerReferences": [config.owner],
    });
    if let Some(namespace) = stable_ingress.pointer("/metadata/namespace") {
        metadata["namespace"] = namespace.clone();
    }
    Ok(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }))
}

fn owned_by(object: &Value, uid: Option<&str>) -> bool {
    let refs = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    uid.is_some_and(|uid| {
        refs.iter()
            .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
    })
}

fn annotation<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// What the canary Ingress routes to the canary: nothing without one; what its annotations
/// say when everything vigil owns on it is as vigil would write it; `None` when something
/// owned was changed by someone else (the next change puts it back).
pub fn read_state(
    stable_ingress: &Value,
    canary_ingress: Option<&Value>,
    config: &CanaryIngressConfig,
) -> Result<Option<CanaryState>, IngressError> {
    let Some(canary) = canary_ingress else {
        // Validate the stable Ingress even when nothing is split yet.
        canary_spec(
            stable_ingress,
            &config.stable_service,
            &config.canary_service,
        )?;
        return Ok(Some(CanaryState::default()));
    };
    if !owned_by(canary, config.owner_uid()) {
        return Err(IngressError::AdoptCanaryIngress {
            ingress: config.name.clone(),
        });
    }
    let Some(state) = config.state_of(canary) else {
        return Ok(None);
    };
    let desired = desired_canary_ingress(stable_ingress, config, &state)?;
    Ok(update_patch(canary, &desired, config)
        .0
        .is_empty()
        .then_some(state))
}

/// What the canary Ingress routes, read leniently to keep the part a change leaves alone
/// (the header route while the weight is set, and the reverse): its annotations whether or not
/// the rest was edited; nothing when there is none or its weight is unreadable.
pub fn current_state(canary_ingress: Option<&Value>, config: &CanaryIngressConfig) -> CanaryState {
    canary_ingress
        .and_then(|canary| config.state_of(canary))
        .unwrap_or_default()
}

/// The canary's percent of traffic ([`read_state`]'s weight).
pub fn canary_weight(
    stable_ingress: &Value,
    canary_ingress: Option<&Value>,
    config: &CanaryIngressConfig,
) -> Result<Option<i32>, IngressError> {
    Ok(read_state(stable_ingress, canary_ingress, config)?.map(|state| state.weight))
}

fn annotation_pointer(key: &str) -> PointerBuf {
    PointerBuf::from_tokens(["metadata", "annotations", key])
}

/// The JSON patch that turns the canary Ingress `current` into `desired` on the fields vigil
/// owns (its spec and its managed annotations), guarded by a `test` of the resourceVersion that
/// was read; empty when nothing differs. Annotations others added stay.
pub fn update_patch(current: &Value, desired: &Value, config: &CanaryIngressConfig) -> Patch {
    let mut ops = Vec::new();
    if current.get("spec") != desired.get("spec") {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["spec"]),
            value: desired.get("spec").cloned().unwrap_or_else(|| json!({})),
        }));
    }
    let empty = Map::new();
    let wanted = desired
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let present = current
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    match present {
        None => ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: Value::Object(wanted.clone()),
        })),
        Some(present) => {
            for (key, value) in wanted {
                if present.get(key) != Some(value) {
                    ops.push(PatchOperation::Add(AddOperation {
                        path: annotation_pointer(key),
                        value: value.clone(),
                    }));
                }
            }
            for key in present.keys() {
                if config.owns_annotation(key) && !wanted.contains_key(key) {
                    ops.push(PatchOperation::Remove(RemoveOperation {
                        path: annotation_pointer(key),
                    }));
                }
            }
        }
    }
    if ops.is_empty() {
        return Patch(ops);
    }
    let version = current
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    ops.insert(
        0,
        PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
            value: version,
        }),
    );
    Patch(ops)
}

/// What to do to the canary Ingress.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryIngressAction {
    /// It is as wanted.
    Keep,
    /// Create it.
    Create(Value),
    /// Patch it.
    Patch(Patch),
    /// Delete it, if it still has this resourceVersion.
    Delete {
        /// The resourceVersion read.
        resource_version: Option<String>,
    },
}

/// What to do so the canary Ingress routes `state`: none when nothing reaches the canary,
/// otherwise one as [`desired_canary_ingress`] builds it. A canary Ingress this Rollout does
/// not own is an error, never touched.
pub fn plan(
    stable_ingress: &Value,
    canary_ingress: Option<&Value>,
    config: &CanaryIngressConfig,
    state: &CanaryState,
) -> Result<CanaryIngressAction, IngressError> {
    let desired = desired_canary_ingress(stable_ingress, config, state)?;
    let Some(current) = canary_ingress else {
        return Ok(if state.is_empty() {
            CanaryIngressAction::Keep
        } else {
            CanaryIngressAction::Create(desired)
        });
    };
    if !owned_by(current, config.owner_uid()) {
        return Err(IngressError::AdoptCanaryIngress {
            ingress: config.name.clone(),
        });
    }
    if state.is_empty() {
        let resource_version = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Ok(CanaryIngressAction::Delete { resource_version });
    }
    let patch = update_patch(current, &desired, config);
    Ok(if patch.0.is_empty() {
        CanaryIngressAction::Keep
    } else {
        CanaryIngressAction::Patch(patch)
    })
}

/// Problems with the `nginx` router's settings, as (field below `trafficRouting.nginx`,
/// message). The Ingress names are checked by the API server when they are read.
pub fn config_problems(
    prefix: Option<&str>,
    additional: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_ANNOTATION_PREFIX_LEN
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            problems.push((
                "annotationPrefix".to_owned(),
                format!(
                    "{prefix:?} is not a DNS subdomain (lowercase letters, digits, '-', '.'; no '/') of at most {MAX_ANNOTATION_PREFIX_LEN} characters"
                ),
            ));
        }
    }
    if additional.len() > MAX_ADDITIONAL_ANNOTATIONS {
        problems.push((
            "additionalIngressAnnotations".to_owned(),
            format!(
                "{} annotations; at most {MAX_ADDITIONAL_ANNOTATIONS}",
                additional.len()
            ),
        ));
    }
    for (name, value) in additional {
        let field = format!("additionalIngressAnnotations[{name:?}]");
        let valid_name = !name.is_empty()
            && name.len() <= MAX_ANNOTATION_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && name
                .bytes()
                .last()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !valid_name {
            problems.push((
                field.clone(),
                format!(
                    "not an annotation name (letters, digits, '-', '_', '.', at most {MAX_ANNOTATION_NAME_LEN}; the prefix is added by vigil)"
                ),
            ));
        } else if OWNED_ANNOTATIONS.contains(&name.as_str()) {
            problems.push((
                field.clone(),
                "vigil sets this annotation itself (it is the weight split)".to_owned(),
            ));
        } else if !ALLOWED_ADDITIONAL_ANNOTATIONS.contains(&name.as_str()) {
            problems.push((
                field.clone(),
                format!(
                    "not allowed: vigil creates the canary Ingress with its own permissions, so only the canary selectors {} may be added",
                    ALLOWED_ADDITIONAL_ANNOTATIONS.join(", ")
                ),
            ));
        }
        if value.len() > MAX_ANNOTATION_VALUE_LEN {
            problems.push((
                field,
                format!(
                    "the value has {} bytes; at most {MAX_ANNOTATION_VALUE_LEN}",
                    value.len()
                ),
            ));
        }
    }
    problems
}

/// The kind of the objects this router drives, as errors name it.
const KIND: &str = "Ingress";

/// The canary Ingress of one Rollout, cloned from its stable Ingress.
#[derive(Clone)]
pub struct NginxIngress {
    api: crate::traffic::objects::ObjectApi,
    stable_ingress: String,
    config: CanaryIngressConfig,
    field_manager: String,
}

impl NginxIngress {
    /// The canary Ingress `config` describes, cloned from `stable_ingress` in `api`'s
    /// namespace; changes are sent with `field_manager`.
    pub fn new(
        api: impl Into<crate::traffic::objects::ObjectApi>,
        stable_ingress: &str,
        config: CanaryIngressConfig,
        field_manager: &str,
    ) -> NginxIngress {
        NginxIngress {
            api: api.into(),
            stable_ingress: stable_ingress.to_owned(),
            config,
            field_manager: field_manager.to_owned(),
        }
    }

    /// The stable Ingress (a 404 when it does not exist) and the canary Ingress, if any.
    async fn read(&self) -> Result<(Value, Option<Value>), TrafficError> {
        let stable =
            self.api
                .get(&self.stable_ingress)
                .await
                .map_err(|source| TrafficError::GetObject {
                    kind: KIND,
                    name: self.stable_ingress.clone(),
                    source,
                })?;
        let canary = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|source| TrafficError::GetObject {
                kind: KIND,
                name: self.config.name.clone(),
                source,
            })?;
        let json = |object| serde_json::to_value(object).unwrap_or(Value::Null);
        Ok((json(stable), canary.map(json)))
    }

    fn read_error(&self, source: IngressError) -> TrafficError {
        let name = match &source {
            IngressError::FindStableBackend { .. } => self.stable_ingress.clone(),
            IngressError::AdoptCanaryIngress { ingress } => ingress.clone(),
        };
        TrafficError::ReadObject {
            kind: KIND,
            name,
            source: source.into(),
        }
    }

    /// Reads both Ingresses, then makes the canary Ingress route what `change` makes of what
    /// it routes now.
    async fn change(
        &self,
        change: impl FnOnce(CanaryState) -> CanaryState,
    ) -> Result<(), TrafficError> {
        let (stable, canary) = self.read().await?;
        let state = change(current_state(canary.as_ref(), &self.config));
        let action =
            plan(&stable, canary.as_ref(), &self.config, &state).map_err(|e| self.read_error(e))?;
        self.act(action).await
    }

    async fn act(&self, action: CanaryIngressAction) -> Result<(), TrafficError> {
        let name = self.config.name.clone();
        match action {
            CanaryIngressAction::Keep => Ok(()),
            CanaryIngressAction::Create(object) => {
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
                    // Created by an earlier reconcile the read did not see: the next one
                    // reads and patches it.
                    Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(()),
                    Err(source) => Err(TrafficError::CreateObject {
                        kind: KIND,
                        name,
                        source,
                    }),
                }
            }
            CanaryIngressAction::Patch(patch) => {
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
            CanaryIngressAction::Delete { resource_version } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version,
                        uid: None,
                    }),
                    ..DeleteParams::default()
                };
                match self.api.delete(&name, &params).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
                    Err(source) => Err(TrafficError::DeleteObject {
                        kind: KIND,
                        name,
                        source,
                    }),
                }
            }
        }
    }

    /// What the canary Ingress routes, when it is as vigil wrote it.
    async fn state(&self) -> Result<Option<CanaryState>, TrafficError> {
        let (stable, canary) = self.read().await?;
        read_state(&stable, canary.as_ref(), &self.config).map_err(|e| self.read_error(e))
    }
}

/// The one header condition ingress-nginx can match, from a managed header route.
fn canary_header(route: &HeaderRoute) -> Result<CanaryHeader, TrafficError> {
    let [only] = route.matches.as_slice() else {
        return Err(TrafficError::Unsupported {
            router: RouterKind::Nginx,
            capability: Capability::HeaderRoute,
        });
    };
    let value = match &only.value {
        StringMatch::Exact(v) => HeaderValue::Exact(v.clone()),
        StringMatch::Prefix(v) => HeaderValue::Prefix(v.clone()),
        // ingress-nginx runs `canary-by-header-pattern` with a backtracking engine: only the
        // pattern vigil builds from an escaped prefix is written (validation refuses regex).
        StringMatch::Regex(_) => {
            return Err(TrafficError::Unsupported {
                router: RouterKind::Nginx,
                capability: Capability::HeaderRoute,
            });
        }
    };
    Ok(CanaryHeader {
        route: route.name.clone(),
        header: only.header_name.clone(),
        value,
    })
}

impl TrafficRouter for NginxIngress {
    fn kind(&self) -> RouterKind {
        RouterKind::Nginx
    }

    async fn set_canary_weight(&self, canary_weight: i32) -> Result<(), TrafficError> {
        self.change(|state| CanaryState {
            weight: canary_weight,
            ..state
        })
        .await
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        Ok(self.state().await?.map(|state| state.weight))
    }

    async fn set_header_route(&self, route: &HeaderRoute) -> Result<(), TrafficError> {
        // The canary Ingress holds one header route: a new one replaces it.
        let header = canary_header(route)?;
        self.change(|state| CanaryState {
            header: Some(header),
            ..state
        })
        .await
    }

    async fn remove_header_route(&self, name: &str) -> Result<(), TrafficError> {
        self.change(|state| CanaryState {
            header: state.header.filter(|h| h.route != name),
            ..state
        })
        .await
    }

    async fn managed_routes(&self) -> Result<ManagedRoutes, TrafficError> {
        let header = self
            .state()
            .await?
            .and_then(|state| state.header)
            .map(|header| HeaderRoute {
                name: header.route,
                matches: vec![HeaderMatch {
                    header_name: header.header,
                    value: match header.value {
                        HeaderValue::Exact(v) => StringMatch::Exact(v),
                        HeaderValue::Prefix(v) => StringMatch::Prefix(v),
                        HeaderValue::Regex(v) => StringMatch::Regex(v),
                    },
                }],
            });
        Ok(ManagedRoutes::new(header.into_iter().collect(), Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stable_ingress() -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": "web", "namespace": "shop", "resourceVersion": "7",
                "annotations": {
                    "kubernetes.io/ingress.class": "nginx",
                    "nginx.ingress.kubernetes.io/rewrite-target": "/"
                }
            },
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["web.example"], "secretName": "web-tls"}],
                "rules": [
                    {"host": "web.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "web-stable", "port": {"number": 80}}}},
                        {"path": "/static", "pathType": "Prefix",
                         "backend": {"service": {"name": "cdn", "port": {"number": 80}}}}
                    ]}},
                    {"host": "admin.example", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "admin", "port": {"number": 80}}}}
                    ]}}
                ]
            }
        })
    }

    fn config() -> CanaryIngressConfig {
        CanaryIngressConfig {
            name: "checkout-web-canary".into(),
            stable_service: "web-stable".into(),
            canary_service: "web-canary".into(),
            prefix: DEFAULT_ANNOTATION_PREFIX.into(),
            additional: BTreeMap::from([("canary-by-cookie".into(), "beta".into())]),
            labels: BTreeMap::from([("vigil.dev/rollout".into(), "checkout".into())]),
            owner: json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "Rollout",
                          "name": "checkout", "uid": "uid-1", "controller": true,
                          "blockOwnerDeletion": true}),
        }
    }

    fn weight(weight: i32) -> CanaryState {
        CanaryState {
            weight,
            header: None,
        }
    }

    fn created(percent: i32) -> Value {
        let mut ingress =
            desired_canary_ingress(&stable_ingress(), &config(), &weight(percent)).expect("built");
        ingress["metadata"]["resourceVersion"] = json!("12");
        ingress
    }

    #[test]
    fn the_canary_name_follows_argo_and_fits_an_ingress_name() {
        assert_eq!(
            canary_ingress_name("checkout", "web"),
            "checkout-web-canary"
        );
        let long = canary_ingress_name(&"r".repeat(200), &"i".repeat(200));
        assert!(long.len() <= MAX_INGRESS_NAME_LEN, "{}", long.len());
        assert!(long.ends_with("-canary"));
        assert_ne!(
            long,
            canary_ingress_name(&"r".repeat(200), &"i".repeat(199))
        );
    }

    #[test]
    fn the_canary_ingress_clones_only_the_stable_services_paths() {
        let ingress =
            desired_canary_ingress(&stable_ingress(), &config(), &weight(20)).expect("built");
        assert_eq!(
            ingress,
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {
                    "name": "checkout-web-canary",
                    "namespace": "shop",
                    "labels": {"vigil.dev/rollout": "checkout"},
                    "annotations": {
                        "kubernetes.io/ingress.class": "nginx",
                        "nginx.ingress.kubernetes.io/canary": "true",
                        "nginx.ingress.kubernetes.io/canary-weight": "20",
                        "nginx.ingress.kubernetes.io/canary-by-cookie": "beta"
                    },
                    "ownerReferences": [config().owner]
                },
                "spec": {
                    "ingressClassName": "nginx",
                    "tls": [{"hosts": ["web.example"], "secretName": "web-tls"}],
                    "rules": [
                        {"host": "web.example", "http": {"paths": [
                            {"path": "/", "pathType": "Prefix",
                             "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}}
                        ]}}
                    ]
                }
            })
        );
    }

    #[test]
    fn a_stable_ingress_without_the_stable_service_is_an_error_naming_the_field() {
        let mut stable = stable_ingress();
        stable["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("x");
        let error = plan(&stable, None, &config(), &weight(10)).expect_err("no backend");
        assert_eq!(
            error.to_string(),
            "no spec.rules[].http.paths[].backend.service.name is \"web-stable\""
        );
        assert_eq!(
            canary_weight(&json!({"metadata": {"name": "web"}}), None, &config()),
            Err(IngressError::FindStableBackend {
                service: "web-stable".into()
            })
        );
        // A default backend to the stable service is enough.
        let only_default = json!({"spec": {"defaultBackend": {"service": {"name": "web-stable"}}}});
        let spec = canary_spec(&only_default, "web-stable", "web-canary").expect("spec");
        assert_eq!(
            spec,
            json!({"defaultBackend": {"service": {"name": "web-canary"}}})
        );
    }

    #[test]
    fn weight_zero_means_no_canary_ingress() {
        let stable = stable_ingress();
        assert_eq!(canary_weight(&stable, None, &config()), Ok(Some(0)));
        assert_eq!(
            plan(&stable, None, &config(), &weight(0)),
            Ok(CanaryIngressAction::Keep)
        );
        assert_eq!(
            plan(&stable, Some(&created(30)), &config(), &weight(0)),
            Ok(CanaryIngressAction::Delete {
                resource_version: Some("12".into())
            })
        );
        match plan(&stable, None, &config(), &weight(30)) {
            Ok(CanaryIngressAction::Create(ingress)) => {
                assert_eq!(
                    ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
                    json!("30")
                );
            }
            other => panic!("expected a creation, got {other:?}"),
        }
    }

    #[test]
    fn a_weight_change_patches_only_the_weight_guarded_by_the_resource_version() {
        let stable = stable_ingress();
        let current = created(20);
        assert_eq!(
            canary_weight(&stable, Some(&current), &config()),
            Ok(Some(20))
        );
        assert_eq!(
            plan(&stable, Some(&current), &config(), &weight(20)),
            Ok(CanaryIngressAction::Keep)
        );
        let Ok(CanaryIngressAction::Patch(patch)) =
            plan(&stable, Some(&current), &config(), &weight(50))
        else {
            panic!("expected a patch");
        };
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": "12"},
                {"op": "add", "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1canary-weight", "value": "50"}
            ])
        );
        let mut patched = current.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(
            canary_weight(&stable, Some(&patched), &config()),
            Ok(Some(50))
        );
        let mut moved = current;
        moved["metadata"]["resourceVersion"] = json!("13");
        assert!(
            json_patch::patch(&mut moved, &patch).is_err(),
            "changed since read"
        );
    }

    #[test]
    fn a_foreign_edit_of_an_owned_field_reads_as_unknown_and_is_put_back() {
        let stable = stable_ingress();
        let mut edited = created(20);
        edited["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("x");
        edited["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-header"] =
            json!("X-Mine");
        edited["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-by-cookie"] =
            json!("other");
        edited["metadata"]["annotations"]["team"] = json!("kept");
        assert_eq!(canary_weight(&stable, Some(&edited), &config()), Ok(None));
        let Ok(CanaryIngressAction::Patch(patch)) =
            plan(&stable, Some(&edited), &config(), &weight(20))
        else {
            panic!("expected a patch");
        };
        let mut repaired = edited;
        json_patch::patch(&mut repaired, &patch).expect("applies");
        assert_eq!(
            canary_weight(&stable, Some(&repaired), &config()),
            Ok(Some(20))
        );
        assert_eq!(repaired["metadata"]["annotations"]["team"], json!("kept"));
        assert!(
            repaired["metadata"]["annotations"]
                .get("nginx.ingress.kubernetes.io/canary-by-header")
                .is_none()
        );
        let mut unreadable = created(20);
        unreadable["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] =
            json!("lots");
        assert_eq!(
            canary_weight(&stable, Some(&unreadable), &config()),
            Ok(None)
        );
    }

    #[test]
    fn an_ingress_of_someone_else_with_the_canary_name_is_never_touched() {
        let stable = stable_ingress();
        let mut foreign = created(20);
        foreign["metadata"]["ownerReferences"][0]["uid"] = json!("uid-other");
        let error = IngressError::AdoptCanaryIngress {
            ingress: "checkout-web-canary".into(),
        };
        assert_eq!(
            canary_weight(&stable, Some(&foreign), &config()),
            Err(error.clone())
        );
        assert_eq!(
            plan(&stable, Some(&foreign), &config(), &weight(0)),
            Err(error.clone())
        );
        assert_eq!(
            plan(&stable, Some(&foreign), &config(), &weight(40)),
            Err(error)
        );
    }

    #[test]
    fn a_changed_stable_ingress_is_followed_by_the_canary() {
        let mut stable = stable_ingress();
        let current = created(20);
        stable["spec"]["rules"][0]["host"] = json!("shop.example");
        assert_eq!(canary_weight(&stable, Some(&current), &config()), Ok(None));
        let Ok(CanaryIngressAction::Patch(patch)) =
            plan(&stable, Some(&current), &config(), &weight(20))
        else {
            panic!("expected a patch");
        };
        let ops = serde_json::to_value(&patch).expect("json");
        assert_eq!(ops[1]["path"], json!("/spec"));
        assert_eq!(ops[1]["value"]["rules"][0]["host"], json!("shop.example"));
    }

    #[test]
    fn a_header_route_at_weight_zero_keeps_a_canary_ingress_and_reads_back() {
        let stable = stable_ingress();
        let header = CanaryState {
            weight: 0,
            header: Some(CanaryHeader {
                route: "testers".into(),
                header: "X-Canary".into(),
                value: HeaderValue::Exact("yes".into()),
            }),
        };
        let Ok(CanaryIngressAction::Create(ingress)) = plan(&stable, None, &config(), &header)
        else {
            panic!("expected a creation");
        };
        let mut ingress = ingress;
        ingress["metadata"]["resourceVersion"] = json!("3");
        let annotations = &ingress["metadata"]["annotations"];
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/canary-weight"],
            json!("0")
        );
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/canary-by-header"],
            json!("X-Canary")
        );
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/canary-by-header-value"],
            json!("yes")
        );
        assert_eq!(
            annotations["vigil.dev/header-route"],
            json!(r#"{"route":"testers","header":"X-Canary","value":{"exact":"yes"}}"#)
        );
        assert_eq!(
            read_state(&stable, Some(&ingress), &config()),
            Ok(Some(header.clone()))
        );
        // Raising the weight keeps the header route; removing it at 0 deletes the Ingress.
        let raised = CanaryState {
            weight: 10,
            ..header.clone()
        };
        let Ok(CanaryIngressAction::Patch(patch)) =
            plan(&stable, Some(&ingress), &config(), &raised)
        else {
            panic!("expected a patch");
        };
        let mut patched = ingress.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(current_state(Some(&patched), &config()), raised);
        assert_eq!(
            plan(&stable, Some(&ingress), &config(), &weight(0)),
            Ok(CanaryIngressAction::Delete {
                resource_version: Some("3".into())
            })
        );
        // Switching to a pattern drops the exact value.
        let pattern = CanaryState {
            weight: 10,
            header: Some(CanaryHeader {
                route: "testers".into(),
                header: "X-Canary".into(),
                value: HeaderValue::Prefix("v2.1".into()),
            }),
        };
        let Ok(CanaryIngressAction::Patch(patch)) =
            plan(&stable, Some(&patched), &config(), &pattern)
        else {
            panic!("expected a patch");
        };
        json_patch::patch(&mut patched, &patch).expect("applies");
        let annotations = &patched["metadata"]["annotations"];
        assert!(
            annotations
                .get("nginx.ingress.kubernetes.io/canary-by-header-value")
                .is_none()
        );
        assert_eq!(
            annotations["nginx.ingress.kubernetes.io/canary-by-header-pattern"],
            json!("^v2\\.1.*")
        );
        assert_eq!(
            read_state(&stable, Some(&patched), &config()),
            Ok(Some(pattern))
        );
    }

    #[test]
    fn settings_are_bounded_and_owned_annotations_refused() {
        assert!(config_problems(None, &BTreeMap::new()).is_empty());
        assert!(config_problems(Some("custom.nginx.example"), &BTreeMap::new()).is_empty());
        let problems = config_problems(
            Some("Not A Prefix"),
            &BTreeMap::from([
                ("canary-weight".into(), "5".into()),
                ("canary-by-header".into(), "X-Canary".into()),
                ("bad/name".into(), "x".into()),
                (
                    "canary-by-header-value".into(),
                    "v".repeat(MAX_ANNOTATION_VALUE_LEN + 1),
                ),
            ]),
        );
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "annotationPrefix",
                "additionalIngressAnnotations[\"bad/name\"]",
                "additionalIngressAnnotations[\"canary-by-header-value\"]",
                "additionalIngressAnnotations[\"canary-weight\"]",
            ],
            "{problems:?}"
        );
        let many: BTreeMap<String, String> = (0..=MAX_ADDITIONAL_ANNOTATIONS)
            .map(|i| (format!("a{i}"), String::new()))
            .collect();
        let too_many = config_problems(None, &many);
        assert_eq!(
            too_many
                .iter()
                .filter(|(field, _)| field == "additionalIngressAnnotations")
                .count(),
            1,
            "{too_many:?}"
        );
    }

    #[test]
    fn only_canary_selector_annotations_may_be_added_and_the_prefix_cannot_smuggle_keys() {
        let allowed: BTreeMap<String, String> = ALLOWED_ADDITIONAL_ANNOTATIONS
            .iter()
            .map(|name| ((*name).to_owned(), "x".to_owned()))
            .collect();
        assert_eq!(config_problems(None, &allowed), vec![]);
        let injected = BTreeMap::from([
            ("configuration-snippet".into(), "more_set_headers x;".into()),
            ("server-snippet".into(), "location /x {}".into()),
            ("auth-tls-secret".into(), "other-ns/secret".into()),
            ("auth-url".into(), "http://evil.example".into()),
            ("canary-by-header-pattern".into(), "(a+)+$".into()),
        ]);
        let problems = config_problems(None, &injected);
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "additionalIngressAnnotations[\"auth-tls-secret\"]",
                "additionalIngressAnnotations[\"auth-url\"]",
                "additionalIngressAnnotations[\"canary-by-header-pattern\"]",
                "additionalIngressAnnotations[\"configuration-snippet\"]",
                "additionalIngressAnnotations[\"server-snippet\"]",
            ],
            "{problems:?}"
        );
        assert!(problems[0].1.starts_with("not allowed:"), "{problems:?}");
        for prefix in [
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "nginx.ingress.kubernetes.io/",
            "Nginx.Ingress",
        ] {
            let problems = config_problems(Some(prefix), &BTreeMap::new());
            assert_eq!(problems.len(), 1, "{prefix}: {problems:?}");
            assert_eq!(problems[0].0, "annotationPrefix");
        }
    }

    #[test]
    fn a_regex_header_route_is_refused_and_a_prefix_becomes_an_escaped_pattern() {
        let route = |value: StringMatch| HeaderRoute {
            name: "testers".into(),
            matches: vec![HeaderMatch {
                header_name: "x-canary".into(),
                value,
            }],
        };
        assert!(matches!(
            canary_header(&route(StringMatch::Regex("(a+)+$".into()))),
            Err(TrafficError::Unsupported { .. })
        ));
        let prefix = canary_header(&route(StringMatch::Prefix("a.b(".into()))).expect("prefix");
        assert_eq!(
            prefix.value.annotation(),
            ("canary-by-header-pattern", "^a\\.b\\(.*".to_owned())
        );
    }

    #[test]
    fn the_builder_writes_only_allowed_additional_annotations() {
        let mut config = config();
        config
            .additional
            .insert("configuration-snippet".into(), "more_set_headers x;".into());
        config
            .additional
            .insert("auth-tls-secret".into(), "other-ns/secret".into());
        let ingress =
            desired_canary_ingress(&stable_ingress(), &config, &weight(10)).expect("built");
        let annotations = ingress["metadata"]["annotations"]
            .as_object()
            .expect("annotations");
        let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "kubernetes.io/ingress.class",
                "nginx.ingress.kubernetes.io/canary",
                "nginx.ingress.kubernetes.io/canary-by-cookie",
                "nginx.ingress.kubernetes.io/canary-weight",
            ]
        );
    }

    mod io {
        use std::collections::BTreeMap;

        use super::super::*;
        use super::{config, created, stable_ingress};
        use crate::traffic::mock::{MockApi, lines};
        use crate::traffic::{HeaderMatch, HeaderRoute, StringMatch};

        const INGRESSES: &str = "/apis/networking.k8s.io/v1/namespaces/shop/ingresses";

        fn path(name: &str) -> String {
            format!("{INGRESSES}/{name}")
        }

        /// Runs `op` against a router over a mock holding `objects`.
        async fn with_router<T>(
            objects: Vec<Value>,
            op: impl AsyncFnOnce(&NginxIngress) -> T,
        ) -> (T, Vec<crate::traffic::mock::Call>) {
            let objects: BTreeMap<String, Value> = objects
                .into_iter()
                .map(|o| (path(o["metadata"]["name"].as_str().unwrap_or("")), o))
                .collect();
            let (client, mock) = MockApi::start(objects, BTreeMap::new());
            let api = kube::Api::namespaced_with(client, "shop", &ingress_resource());
            let router = NginxIngress::new(api, "web", config(), "vigil.dev/controller");
            let result = op(&router).await;
            drop(router);
            (result, mock.finish().await)
        }

        #[tokio::test]
        async fn a_first_weight_creates_the_canary_ingress() {
            let (result, calls) = with_router(vec![stable_ingress()], async |r| {
                r.set_canary_weight(20).await
            })
            .await;
            result.expect("set");
            assert_eq!(
                lines(&calls),
                [
                    format!("GET {}", path("web")),
                    format!("GET {}", path("checkout-web-canary")),
                    format!("POST {INGRESSES}"),
                ]
            );
            let mut expected = created(20);
            if let Some(meta) = expected["metadata"].as_object_mut() {
                meta.remove("resourceVersion");
            }
            assert_eq!(calls[2].body, expected);
        }

        #[tokio::test]
        async fn a_new_weight_patches_the_canary_ingress_guarded_by_its_version() {
            let (result, calls) = with_router(vec![stable_ingress(), created(20)], async |r| {
                r.set_canary_weight(50).await
            })
            .await;
            result.expect("set");
            assert_eq!(
                calls[2].line(),
                format!("PATCH {}", path("checkout-web-canary"))
            );
            assert_eq!(calls[2].content_type, "application/json-patch+json");
            assert_eq!(
                calls[2].body,
                json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": "12"},
                    {"op": "add", "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1canary-weight", "value": "50"}
                ])
            );
            assert_eq!(calls.len(), 3);
        }

        #[tokio::test]
        async fn back_to_zero_deletes_the_canary_ingress_it_read() {
            let (result, calls) = with_router(vec![stable_ingress(), created(20)], async |r| {
                r.set_canary_weight(0).await
            })
            .await;
            result.expect("set");
            assert_eq!(
                calls[2].line(),
                format!("DELETE {}", path("checkout-web-canary"))
            );
            assert_eq!(
                calls[2].body["preconditions"]["resourceVersion"],
                json!("12")
            );
            let (weight, _) =
                with_router(vec![stable_ingress()], async |r| r.canary_weight().await).await;
            assert_eq!(weight.expect("read"), Some(0));
        }

        #[tokio::test]
        async fn a_missing_stable_ingress_holds_with_its_name_and_writes_nothing() {
            let (result, calls) =
                with_router(Vec::new(), async |r| r.set_canary_weight(20).await).await;
            let error = result.expect_err("missing");
            assert!(error.object_missing(), "{error}");
            assert_eq!(
                error.hold_reason().as_deref(),
                Some("Ingress web does not exist; no traffic moves until it does")
            );
            assert_eq!(lines(&calls), [format!("GET {}", path("web"))]);
        }

        #[tokio::test]
        async fn a_foreign_canary_ingress_is_reported_and_left_alone() {
            let mut foreign = created(20);
            foreign["metadata"]["ownerReferences"] = json!([]);
            let (result, calls) = with_router(vec![stable_ingress(), foreign], async |r| {
                r.set_canary_weight(0).await
            })
            .await;
            let error = result.expect_err("foreign");
            assert!(error.hold_reason().is_some(), "{error}");
            assert!(
                error.to_string().contains("not owned by this Rollout"),
                "{error}"
            );
            assert!(calls.iter().all(|c| c.method == "GET"), "{calls:?}");
        }

        #[tokio::test]
        async fn a_header_route_is_set_read_back_and_removed() {
            let route = HeaderRoute {
                name: "testers".into(),
                matches: vec![HeaderMatch {
                    header_name: "X-Canary".into(),
                    value: StringMatch::Exact("yes".into()),
                }],
            };
            let (result, calls) = with_router(vec![stable_ingress(), created(20)], async |r| {
                r.set_header_route(&route).await
            })
            .await;
            result.expect("set");
            let ops = &calls[2].body;
            assert_eq!(ops[0]["op"], json!("test"));
            let added: Vec<&str> = ops
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|op| op["path"].as_str())
                .collect();
            assert!(
                added.contains(
                    &"/metadata/annotations/nginx.ingress.kubernetes.io~1canary-by-header"
                ),
                "{added:?}"
            );
            let mut with_header = created(20);
            json_patch::patch(
                &mut with_header,
                &serde_json::from_value::<json_patch::Patch>(ops.clone()).expect("patch"),
            )
            .expect("applies");
            let (routes, _) = with_router(vec![stable_ingress(), with_header.clone()], async |r| {
                r.managed_routes().await
            })
            .await;
            assert_eq!(routes.expect("read").header, vec![route]);
            let (removed, calls) = with_router(vec![stable_ingress(), with_header], async |r| {
                r.remove_header_route("testers").await
            })
            .await;
            removed.expect("removed");
            let ops = calls[2].body.to_string();
            assert!(ops.contains("\"remove\""), "{ops}");
            let two = HeaderRoute {
                name: "two".into(),
                matches: vec![
                    HeaderMatch {
                        header_name: "a".into(),
                        value: StringMatch::Exact("1".into()),
                    },
                    HeaderMatch {
                        header_name: "b".into(),
                        value: StringMatch::Exact("2".into()),
                    },
                ],
            };
            let (refused, _) = with_router(vec![stable_ingress()], async |r| {
                r.set_header_route(&two).await
            })
            .await;
            assert!(matches!(refused, Err(TrafficError::Unsupported { .. })));
        }
    }
}
