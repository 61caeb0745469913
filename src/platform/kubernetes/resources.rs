//! The objects the controller creates, and the values it reads for arguments and provider
//! auth, built by pure functions.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use super::context::{
    ANALYSIS_LABEL, REVISION_LABEL, ROLE_LABEL, ROLLOUT_LABEL, rollout_label_value,
};
use crate::analysis::provider::resolve::{
    ANALYSIS_CREDENTIAL_LABEL, ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION, Origin, SecretReader,
    check_origin, parse_origin_list, read_file_under,
};
use crate::api::{AnalysisRun, AnalysisRunSpec, Rollout, SecretSource};
use crate::rollout::{AnalysisKind, MAX_NAME_LEN, fit_name};

/// Name of the ReplicaSet of a revision, shortened with a hash when a long Rollout name would
/// exceed the limit (its pods' generated names are cut by Kubernetes itself).
pub fn replica_set_name(rollout: &str, revision: &str) -> String {
    fit_name(&format!("{rollout}-{revision}"), MAX_NAME_LEN)
}

/// The ReplicaSet of `revision` built from `template`, the pod template the Rollout releases
/// (its own, or its `workloadRef` Deployment's): the revision label is added to its selector
/// and its pods' labels (so revisions never select each other's pods), it carries the
/// Rollout's own labels (a sharded controller watches its children by them), and the Rollout
/// is its controller owner.
pub fn replica_set_for(
    rollout: &Rollout,
    template: &PodTemplateSpec,
    revision: &str,
    replicas: i32,
) -> ReplicaSet {
    let name = rollout.name_any();
    let mut selector = rollout.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(REVISION_LABEL.to_owned(), revision.to_owned());
    let mut template = template.clone();
    let pod_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let pod_labels = pod_meta.labels.get_or_insert_with(BTreeMap::new);
    pod_labels.insert(REVISION_LABEL.to_owned(), revision.to_owned());
    pod_labels.insert(ROLLOUT_LABEL.to_owned(), rollout_label_value(&name));
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(replica_set_name(&name, revision)),
            namespace: rollout.namespace(),
            labels: Some(child_labels(
                rollout,
                [(REVISION_LABEL.to_owned(), revision.to_owned())],
            )),
            owner_references: rollout.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector,
            template: Some(template),
            min_ready_seconds: None,
        }),
        status: None,
    }
}

/// The ReplicaSet of the baseline `revision` (see [`crate::rollout::baseline`]) built from
/// `template`, the stable revision's pod template as its ReplicaSet holds it: like
/// [`replica_set_for`], with the pods also labelled `vigil.dev/role: baseline`. The stable's
/// revision label is replaced, so the stable Service never selects the baseline's pods.
pub fn baseline_replica_set_for(
    rollout: &Rollout,
    mut template: PodTemplateSpec,
    revision: &str,
    replicas: i32,
) -> ReplicaSet {
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(
            ROLE_LABEL.to_owned(),
            crate::rollout::baseline::BASELINE_ROLE.to_owned(),
        );
    let mut replica_set = replica_set_for(rollout, &template, revision, replicas);
    if let Some(labels) = replica_set.metadata.labels.as_mut() {
        labels.insert(
            ROLE_LABEL.to_owned(),
            crate::rollout::baseline::BASELINE_ROLE.to_owned(),
        );
    }
    replica_set
}

/// The JSON patch that scales the `workloadRef` Deployment from `observed` to `replicas`,
/// guarded by a `test` of the replicas read, so a change someone made meanwhile (a person
/// scaling it by hand) fails the patch instead of being overwritten. A Deployment without
/// `spec.replicas` (never stored by a real API server, which defaults it) gets an `add`.
pub fn scale_down_patch(
    deployment: &Deployment,
    observed: i32,
    replicas: i32,
) -> json_patch::Patch {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation, ReplaceOperation, TestOperation};
    let path = PointerBuf::from_tokens(["spec", "replicas"]);
    let has_replicas = deployment.spec.as_ref().and_then(|s| s.replicas).is_some();
    json_patch::Patch(if has_replicas {
        vec![
            PatchOperation::Test(TestOperation {
                path: path.clone(),
                value: Value::from(observed),
            }),
            PatchOperation::Replace(ReplaceOperation {
                path,
                value: Value::from(replicas),
            }),
        ]
    } else {
        vec![PatchOperation::Add(AddOperation {
            path,
            value: Value::from(replicas),
        })]
    })
}

/// The labels of an object vigil creates for `rollout`: the Rollout's own labels first (a
/// sharded controller selects its children by them), then the rollout label and `extra` on
/// top.
fn child_labels<const N: usize>(
    rollout: &Rollout,
    extra: [(String, String); N],
) -> BTreeMap<String, String> {
    let mut labels = rollout.labels().clone();
    labels.insert(
        ROLLOUT_LABEL.to_owned(),
        rollout_label_value(&rollout.name_any()),
    );
    labels.extend(extra);
    labels
}

/// The AnalysisRun `name` of `rollout` for the canary `revision`, owned by the Rollout.
pub fn analysis_run_for(
    rollout: &Rollout,
    name: &str,
    kind: AnalysisKind,
    revision: &str,
    mut spec: AnalysisRunSpec,
) -> AnalysisRun {
    spec.background = kind == AnalysisKind::Background;
    let mut run = AnalysisRun::new(name, spec);
    run.metadata.namespace = rollout.namespace();
    run.metadata.labels = Some(child_labels(
        rollout,
        [
            (REVISION_LABEL.to_owned(), revision.to_owned()),
            (
                ANALYSIS_LABEL.to_owned(),
                match kind {
                    AnalysisKind::Step { .. } => "step".to_owned(),
                    AnalysisKind::Background => "background".to_owned(),
                    AnalysisKind::PrePromotion => "pre-promotion".to_owned(),
                    AnalysisKind::PostPromotion => "post-promotion".to_owned(),
                },
            ),
        ],
    ));
    run.metadata.owner_references = rollout.controller_owner_ref(&()).map(|o| vec![o]);
    run
}

/// The value of a `fieldRef` on the Rollout: `metadata.name`, `metadata.labels['k']`,
/// `metadata.annotations['k']`, or any dotted path into the object (`spec.replicas`).
/// Strings come as they are, other values as JSON.
pub fn field_ref_value(rollout: &Rollout, path: &str) -> Option<String> {
    let object = serde_json::to_value(rollout).ok()?;
    let mut current = &object;
    let mut rest = path.trim();
    while !rest.is_empty() {
        let (segment, after) = match rest.find(['.', '[']) {
            Some(0) if rest.starts_with('[') => {
                let end = rest.find(']')?;
                let key = rest[1..end].trim_matches(['\'', '"']);
                current = current.get(key)?;
                rest = rest[end + 1..].trim_start_matches('.');
                continue;
            }
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        current = current.get(segment)?;
        rest = after.strip_prefix('.').unwrap_or(after);
    }
    match current {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Every Secret key (name, key) the run reads: its providers' credentials and its
/// `valueFrom.secretKeyRef` arguments.
pub fn secret_refs(spec: &AnalysisRunSpec) -> BTreeSet<(String, String)> {
    let mut refs: BTreeSet<(String, String)> = spec
        .args
        .iter()
        .filter_map(crate::analysis::instantiate::secret_ref)
        .map(|s| (s.name.clone(), s.key.clone()))
        .collect();
    let mut add = |source: Option<&SecretSource>| {
        if let Some(selector) = source.and_then(|s| s.secret_key_ref.as_ref()) {
            refs.insert((selector.name.clone(), selector.key.clone()));
        }
    };
    for metric in &spec.metrics {
        let provider = &metric.provider;
        let auth = provider.prometheus.as_ref().and_then(|p| p.auth.as_ref());
        let Some(auth) = auth.or_else(|| provider.web.as_ref().and_then(|w| w.auth.as_ref()))
        else {
            continue;
        };
        add(auth.bearer_token.as_ref());
        add(auth.basic.as_ref().map(|b| &b.password));
        add(auth.ca_bundle.as_ref());
        for header in &auth.headers {
            add(header.value_from.as_ref());
        }
    }
    refs
}

/// Secret values read ahead of time (the provider setup is synchronous, Secrets are read
/// asynchronously), each with the origins its Secret may be sent to. A missing key reads as
/// the error recorded for it.
#[derive(Default)]
pub struct PrefetchedSecrets {
    values: BTreeMap<(String, String), Result<SecretValue, String>>,
    /// The canonical `--credential-dir`s: `file:` credentials are read only under them.
    credential_dirs: Vec<std::path::PathBuf>,
    /// The `--credential-origin`s: the only origins a `file:` credential may be sent to.
    file_origins: Vec<Origin>,
}

/// A Secret's value and the origins it may be sent to (its
/// [`ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION`], or why that is missing or wrong).
#[derive(Clone)]
pub struct SecretValue {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// The origins, or why there are none.
    pub origins: Result<Vec<Origin>, String>,
}

impl PrefetchedSecrets {
    /// No Secret read yet; `file:` credentials allowed only under `credential_dirs`
    /// (canonical paths; none refuses every file) and only to `file_origins`.
    pub fn new(
        credential_dirs: Vec<std::path::PathBuf>,
        file_origins: Vec<Origin>,
    ) -> PrefetchedSecrets {
        PrefetchedSecrets {
            values: BTreeMap::new(),
            credential_dirs,
            file_origins,
        }
    }

    /// Records the value (or why it could not be read) of `key` in Secret `name`.
    pub fn insert(&mut self, name: &str, key: &str, value: Result<SecretValue, String>) {
        self.values.insert((name.to_owned(), key.to_owned()), value);
    }
}

impl std::fmt::Debug for PrefetchedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret values.
        f.debug_list().entries(self.values.keys()).finish()
    }
}

impl SecretReader for PrefetchedSecrets {
    fn read_secret(&self, name: &str, key: &str, origin: &Origin) -> Result<Vec<u8>, String> {
        let value = self
            .values
            .get(&(name.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_else(|| Err(format!("secret {name:?} key {key:?} was not read")))?;
        let origins = value.origins?;
        check_origin(
            &origins,
            origin,
            &format!("secret {name:?}"),
            &format!("its annotation {ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION}"),
        )?;
        Ok(value.bytes)
    }

    fn read_file(&self, path: &str, origin: &Origin) -> Result<Vec<u8>, String> {
        if self.credential_dirs.is_empty() {
            // Refused whatever the destination (and without touching the filesystem).
            return read_file_under(&[], path);
        }
        // The destination next: a refused origin never touches the filesystem.
        check_origin(
            &self.file_origins,
            origin,
            &format!("file {:?}", crate::analysis::provider::bounded(path)),
            "--credential-origin",
        )?;
        read_file_under(&self.credential_dirs, path)
    }
}

/// The one refusal for a Secret an analysis may not read, whether it does not exist or has
/// not opted in: a run's writer cannot tell them apart, so cannot list Secrets by probing.
pub fn refused_secret(name: &str) -> String {
    format!(
        "secret {name:?} refused: it does not exist or is not labelled \
         {ANALYSIS_CREDENTIAL_LABEL}: \"true\"; analyses read only Secrets that opt in \
         (kubectl label secret {name} {ANALYSIS_CREDENTIAL_LABEL}=true)"
    )
}

/// The bytes of `key` in a Secret's `data`, only when the Secret opted in with the label
/// [`ANALYSIS_CREDENTIAL_LABEL`]`: "true"`: otherwise [`refused_secret`].
pub fn secret_value(
    secret: &k8s_openapi::api::core::v1::Secret,
    name: &str,
    key: &str,
) -> Result<Vec<u8>, String> {
    let opted_in = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(ANALYSIS_CREDENTIAL_LABEL))
        .is_some_and(|value| value == "true");
    if !opted_in {
        return Err(refused_secret(name));
    }
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|bytes| bytes.0.clone())
        .ok_or_else(|| format!("secret {name:?} has no key {key:?}"))
}

/// The origins an opted-in Secret may be sent to, from its annotation
/// [`ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION`]; missing, empty or malformed is an error naming
/// the Secret and the annotation.
pub fn secret_origins(
    secret: &k8s_openapi::api::core::v1::Secret,
    name: &str,
) -> Result<Vec<Origin>, String> {
    let text = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION))
        .ok_or_else(|| {
            format!(
                "secret {name:?} has no annotation {ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION}: \
                 list the origins it may be sent to (e.g. https://prometheus.monitoring:9090)"
            )
        })?;
    let origins = parse_origin_list(text).map_err(|e| {
        format!("secret {name:?} annotation {ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION}: {e}")
    })?;
    if origins.is_empty() {
        return Err(format!(
            "secret {name:?} annotation {ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION} lists no origin"
        ));
    }
    Ok(origins)
}

/// Whether a Kubernetes object is being deleted.
pub fn is_deleting<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;
    use crate::api::{
        Metric, MetricProvider, PrometheusAuth, PrometheusProvider, RolloutSpec, SecretKeySelector,
    };

    fn rollout() -> Rollout {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let mut rollout = Rollout::new(
            "web",
            RolloutSpec {
                replicas: Some(4),
                selector: LabelSelector {
                    match_labels: Some(labels.clone()),
                    ..LabelSelector::default()
                },
                template: Some(Box::new(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "web".into(),
                            image: Some("web:2".into()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                })),
                ..RolloutSpec::default()
            },
        );
        rollout.metadata.namespace = Some("shop".into());
        rollout.metadata.uid = Some("uid-1".into());
        rollout
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "payments".into());
        rollout
    }

    #[test]
    fn a_replica_set_selects_only_its_revisions_pods_and_is_owned() {
        let rollout = rollout();
        let template = rollout.spec.template.clone().unwrap_or_default();
        let rs = replica_set_for(&rollout, &template, "abc123", 2);
        assert_eq!(rs.metadata.name.as_deref(), Some("web-abc123"));
        assert_eq!(rs.metadata.namespace.as_deref(), Some("shop"));
        let spec = rs.spec.expect("spec");
        assert_eq!(spec.replicas, Some(2));
        let selector = spec.selector.match_labels.expect("labels");
        assert_eq!(
            selector.get(REVISION_LABEL).map(String::as_str),
            Some("abc123")
        );
        assert_eq!(selector.get("app").map(String::as_str), Some("web"));
        let pod_labels = spec
            .template
            .and_then(|t| t.metadata)
            .and_then(|m| m.labels)
            .expect("pod labels");
        // Every selector label is on the pods, or the apiserver rejects the ReplicaSet.
        for (key, value) in &selector {
            assert_eq!(pod_labels.get(key), Some(value), "{key}");
        }
        let owner = &rs.metadata.owner_references.expect("owner")[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
        assert_eq!(owner.kind, "Rollout");
    }

    #[test]
    fn a_rollout_with_the_longest_name_gets_valid_names_and_labels() {
        let mut long = rollout();
        let name = format!("web-{}", "x".repeat(MAX_NAME_LEN - 4));
        long.metadata.name = Some(name.clone());
        let revision = "0123456789abcdef";
        let template = long.spec.template.clone().unwrap_or_default();
        let rs = replica_set_for(&long, &template, revision, 1);
        let rs_name = rs.metadata.name.clone().expect("name");
        assert!(rs_name.len() <= MAX_NAME_LEN, "{}", rs_name.len());
        assert_eq!(rs_name, replica_set_name(&name, revision), "deterministic");
        let label = rs.labels().get(ROLLOUT_LABEL).cloned().expect("label");
        assert!(
            label.len() <= crate::rollout::MAX_LABEL_VALUE_LEN,
            "{label}"
        );
        // The controller finds its own ReplicaSet again by that label.
        assert!(super::super::observe::revision_of(&rs, &name, Some("uid-1")).is_some());
        let run_name = crate::rollout::step_run_name(&name, revision, 12, 3);
        assert!(run_name.len() <= MAX_NAME_LEN, "{}", run_name.len());
        let run = analysis_run_for(
            &long,
            &run_name,
            AnalysisKind::Step { index: 3 },
            revision,
            AnalysisRunSpec::default(),
        );
        assert_eq!(run.labels().get(ROLLOUT_LABEL), Some(&label));
    }

    #[test]
    fn an_analysis_run_is_labelled_and_owned() {
        let run = analysis_run_for(
            &rollout(),
            "web-abc-1-step2",
            AnalysisKind::Step { index: 2 },
            "abc",
            AnalysisRunSpec::default(),
        );
        let labels = run.metadata.labels.expect("labels");
        assert_eq!(labels.get(ANALYSIS_LABEL).map(String::as_str), Some("step"));
        assert_eq!(labels.get(ROLLOUT_LABEL).map(String::as_str), Some("web"));
        // The Rollout's own labels come along, for sharded controllers' selectors.
        assert_eq!(labels.get("team").map(String::as_str), Some("payments"));
        assert_eq!(run.metadata.namespace.as_deref(), Some("shop"));
        assert!(run.metadata.owner_references.is_some());
        // A step's run ends a sequential metric at its pass; the background run watches on.
        assert!(!run.spec.background);
        let background = analysis_run_for(
            &rollout(),
            "web-abc-1-background",
            AnalysisKind::Background,
            "abc",
            AnalysisRunSpec::default(),
        );
        assert!(background.spec.background);
    }

    #[test]
    fn field_refs_read_names_labels_and_paths() {
        let r = rollout();
        assert_eq!(field_ref_value(&r, "metadata.name").as_deref(), Some("web"));
        assert_eq!(
            field_ref_value(&r, "metadata.namespace").as_deref(),
            Some("shop")
        );
        assert_eq!(
            field_ref_value(&r, "metadata.labels['team']").as_deref(),
            Some("payments")
        );
        assert_eq!(field_ref_value(&r, "spec.replicas").as_deref(), Some("4"));
        assert_eq!(
            field_ref_value(&r, "spec.template.spec.containers.0.image"),
            None,
            "arrays are not indexed by dotted numbers"
        );
        assert_eq!(field_ref_value(&r, "metadata.labels['nope']"), None);
    }

    #[test]
    fn secret_refs_are_collected_and_prefetched_values_never_print() {
        let selector = |name: &str, key: &str| SecretSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
            }),
            file: None,
        };
        let spec = AnalysisRunSpec {
            metrics: vec![Metric {
                name: "m".into(),
                provider: MetricProvider {
                    job: None,
                    prometheus: Some(PrometheusProvider {
                        address: Some("http://prom".into()),
                        auth: Some(PrometheusAuth {
                            bearer_token: Some(selector("prom", "token")),
                            ca_bundle: Some(selector("prom", "ca")),
                            ..PrometheusAuth::default()
                        }),
                        ..PrometheusProvider::default()
                    }),
                    web: None,
                },
                ..Metric::default()
            }],
            ..AnalysisRunSpec::default()
        };
        let refs: Vec<_> = secret_refs(&spec).into_iter().collect();
        assert_eq!(
            refs,
            vec![
                ("prom".to_owned(), "ca".to_owned()),
                ("prom".to_owned(), "token".to_owned())
            ]
        );
        let mut secrets = PrefetchedSecrets::default();
        let origin = Origin::parse_listed("https://prom:9090").expect("origin");
        secrets.insert(
            "prom",
            "token",
            Ok(SecretValue {
                bytes: b"s3cr3t".to_vec(),
                origins: Ok(vec![origin.clone()]),
            }),
        );
        assert_eq!(
            secrets.read_secret("prom", "token", &origin),
            Ok(b"s3cr3t".to_vec())
        );
        assert!(secrets.read_secret("prom", "ca", &origin).is_err());
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
    }

    fn labelled_secret(annotation: Option<&str>) -> k8s_openapi::api::core::v1::Secret {
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.labels = Some(
            [(ANALYSIS_CREDENTIAL_LABEL.to_owned(), "true".to_owned())]
                .into_iter()
                .collect(),
        );
        secret.metadata.annotations = annotation.map(|text| {
            [(
                ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION.to_owned(),
                text.to_owned(),
            )]
            .into_iter()
            .collect()
        });
        secret
    }

    #[test]
    fn an_opted_in_secret_is_not_sent_to_an_address_its_annotation_does_not_list() {
        let listed = labelled_secret(Some("https://Prom.Monitoring:443/, http://plain:9090"));
        let origins = secret_origins(&listed, "prom").expect("origins");
        let mut secrets = PrefetchedSecrets::default();
        secrets.insert(
            "prom",
            "token",
            Ok(SecretValue {
                bytes: b"s3cr3t".to_vec(),
                origins: Ok(origins),
            }),
        );
        let origin = |url: &str| Origin::parse_listed(url).expect("origin");
        // Normalized: case and the default port do not matter.
        assert!(
            secrets
                .read_secret("prom", "token", &origin("https://prom.monitoring"))
                .is_ok()
        );
        assert!(
            secrets
                .read_secret("prom", "token", &origin("http://plain:9090"))
                .is_ok()
        );
        let evil = secrets
            .read_secret("prom", "token", &origin("https://evil.example"))
            .expect_err("not listed");
        assert!(
            evil.contains("secret \"prom\"")
                && evil.contains(ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION)
                && evil.contains("https://evil.example:443"),
            "{evil}"
        );
        let downgraded = secrets
            .read_secret("prom", "token", &origin("http://prom.monitoring:443"))
            .expect_err("plain http is another origin");
        assert!(downgraded.contains("clear text"), "{downgraded}");

        let missing = secret_origins(&labelled_secret(None), "prom").expect_err("missing");
        assert!(
            missing.contains("secret \"prom\"")
                && missing.contains(ANALYSIS_CREDENTIAL_ORIGINS_ANNOTATION),
            "{missing}"
        );
        assert!(secret_origins(&labelled_secret(Some("prom:9090")), "prom").is_err());
        assert!(secret_origins(&labelled_secret(Some("https://p/x")), "prom").is_err());
        assert!(secret_origins(&labelled_secret(Some(" , ")), "prom").is_err());
    }

    #[test]
    fn a_missing_secret_and_an_unlabelled_one_are_refused_with_the_same_text() {
        let unlabelled = k8s_openapi::api::core::v1::Secret::default();
        let refused = secret_value(&unlabelled, "prom", "token").expect_err("not labelled");
        assert_eq!(refused, refused_secret("prom"));
        assert!(refused.contains(ANALYSIS_CREDENTIAL_LABEL), "{refused}");
    }
}
