//! The `vigil.dev/v1alpha1` API types. No I/O.
//!
//! Every public item carries a `///` doc: it becomes the description in the generated CRDs.

pub mod analysis;
pub mod blue_green;
pub mod duration;
pub mod ingress_routers;
pub mod istio;
pub mod rollout;
pub mod scaling;
pub(crate) mod schema;
pub mod webhook;

pub use analysis::*;
pub use blue_green::{BlueGreenStrategy, LocalBlueGreen};
pub use ingress_routers::*;
pub use rollout::*;
pub use scaling::{PodMetadata, SetCanaryScale};
pub use webhook::{Webhook, WebhookStatus, WebhookType};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every vigil resource.
pub const GROUP: &str = "vigil.dev";
/// The API version this crate serves.
pub const VERSION: &str = "v1alpha1";

/// The four CRDs, in a stable order. The embedded pod template's field descriptions are
/// dropped: they are Kubernetes' own, and keeping them makes the Rollout CRD too large for
/// client-side `kubectl apply` (a limit Argo Rollouts users hit).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut rollout = Rollout::crd();
    for version in &mut rollout.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            && let Some(template) = schema
                .properties
                .as_mut()
                .and_then(|p| p.get_mut("spec"))
                .and_then(|spec| spec.properties.as_mut())
                .and_then(|p| p.get_mut("template"))
        {
            let description = template.description.take();
            strip_descriptions(template);
            template.description = description;
        }
    }
    vec![
        rollout,
        AnalysisTemplate::crd(),
        ClusterAnalysisTemplate::crd(),
        AnalysisRun::crd(),
    ]
}

fn strip_descriptions(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray;
    schema.description = None;
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_descriptions(child);
    }
    if let Some(items) = schema.items.as_mut() {
        match items {
            JSONSchemaPropsOrArray::Schema(item) => strip_descriptions(item),
            JSONSchemaPropsOrArray::Schemas(list) => list.iter_mut().for_each(strip_descriptions),
        }
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(extra)) =
        schema.additional_properties.as_mut()
    {
        strip_descriptions(extra);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        list.iter_mut().flatten().for_each(strip_descriptions);
    }
}

/// File name of a CRD in `crds/`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default())
}
