//! The version a person recognises beside a revision hash: the `vigil.dev/version` annotation
//! of the pod template, else the image tag of its first container.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The pod template annotation that names a revision's version for people (e.g. `v2.3.1`);
/// without it the first container's image tag is shown.
pub const VERSION_ANNOTATION: &str = "vigil.dev/version";

/// Longest version label shown; a longer annotation or tag is cut (it is display only).
pub const MAX_VERSION_LABEL: usize = 64;

/// The version label of a pod template, if it has one.
pub fn version_label(template: &PodTemplateSpec) -> Option<String> {
    let annotated = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(VERSION_ANNOTATION))
        .map(String::as_str);
    let label = annotated.or_else(|| {
        let image = template
            .spec
            .as_ref()?
            .containers
            .first()?
            .image
            .as_deref()?;
        image_tag(image)
    })?;
    let label = label.trim();
    if label.is_empty() {
        return None;
    }
    Some(label.chars().take(MAX_VERSION_LABEL).collect())
}

/// `app:v2` → `v2`; a digest (`app@sha256:…`) or an image without a tag has none.
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str, annotation: Option<&str>) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: annotation.map(|value| ObjectMeta {
                annotations: Some([(VERSION_ANNOTATION.to_owned(), value.to_owned())].into()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn the_annotation_wins_then_the_image_tag() {
        assert_eq!(
            version_label(&template("registry:5000/shop/web:v2", None)).as_deref(),
            Some("v2")
        );
        assert_eq!(
            version_label(&template("web:v2", Some("2.3.1"))).as_deref(),
            Some("2.3.1")
        );
        assert_eq!(version_label(&template("registry:5000/web", None)), None);
        assert_eq!(version_label(&template("web@sha256:abc", None)), None);
        let long = "x".repeat(500);
        assert_eq!(
            version_label(&template("web", Some(&long))).map(|l| l.len()),
            Some(MAX_VERSION_LABEL)
        );
    }
}
