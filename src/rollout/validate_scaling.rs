//! The rules of the scaling controls: `setCanaryScale` steps, `dynamicStableScale`,
//! `maxSurge` / `maxUnavailable`, `minReadySeconds`, `canaryMetadata` / `stableMetadata`.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{CanaryStrategy, PodMetadata, RolloutSpec, SetCanaryScale};
use crate::traffic::RouterKind;

use super::SpecProblem;
use super::scaling::{IntOrPercent, parse_int_or_percent};

const CANARY: &str = "spec.strategy.canary";

/// Longest `minReadySeconds`: an hour (a pod that needs longer to prove itself wants an
/// analysis step, not a readiness delay).
pub const MAX_MIN_READY_SECONDS: i32 = 3600;
/// Most labels, and most annotations, in one `canaryMetadata` / `stableMetadata`.
pub const MAX_POD_METADATA_ENTRIES: usize = 32;
/// Longest annotation value in `canaryMetadata` / `stableMetadata`.
pub const MAX_ANNOTATION_VALUE_LEN: usize = 4096;

fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// Every problem of the scaling controls of `spec`.
pub(super) fn check_scaling(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let canary = &spec.strategy.canary;
    let router = RouterKind::of(canary.traffic_routing.as_ref()).sets_weights();
    for (i, step) in canary.steps.iter().enumerate() {
        if let Some(scale) = &step.set_canary_scale {
            let path = format!("{CANARY}.steps[{i}].setCanaryScale");
            check_canary_scale(scale, &path, router, problems);
        }
    }
    if canary.dynamic_stable_scale {
        let path = format!("{CANARY}.dynamicStableScale");
        if !router {
            problems.push(problem(
                path,
                "needs trafficRouting: without a router the replica ratio is the weight, and the stable already shrinks as the canary grows",
            ));
        } else if canary.abort_scale_down_delay_seconds.is_some() {
            problems.push(problem(
                format!("{CANARY}.abortScaleDownDelaySeconds"),
                "set with dynamicStableScale, under which an aborted canary's pods go as soon as traffic has left them: remove one of the two",
            ));
        }
    }
    check_surge(canary, router, problems);
    if let Some(seconds) = spec.min_ready_seconds
        && !(0..=MAX_MIN_READY_SECONDS).contains(&seconds)
    {
        problems.push(problem(
            "spec.minReadySeconds",
            format!("{seconds} is not in 0..={MAX_MIN_READY_SECONDS} (MAX_MIN_READY_SECONDS)"),
        ));
    }
    for (field, metadata) in [
        ("canaryMetadata", &canary.canary_metadata),
        ("stableMetadata", &canary.stable_metadata),
    ] {
        if let Some(metadata) = metadata {
            check_metadata(spec, metadata, &format!("{CANARY}.{field}"), problems);
        }
    }
}

fn check_canary_scale(
    scale: &SetCanaryScale,
    path: &str,
    router: bool,
    problems: &mut Vec<SpecProblem>,
) {
    let set = [
        scale.replicas.is_some(),
        scale.weight.is_some(),
        scale.match_traffic_weight,
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        problems.push(problem(
            path,
            "set exactly one of replicas, weight, matchTrafficWeight: true",
        ));
    }
    if let Some(replicas) = scale.replicas
        && replicas < 0
    {
        problems.push(problem(
            format!("{path}.replicas"),
            format!("{replicas} is negative"),
        ));
    }
    if let Some(weight) = scale.weight
        && !(0..=100).contains(&weight)
    {
        problems.push(problem(
            format!("{path}.weight"),
            format!("{weight} is not in 0..=100"),
        ));
    }
    if !router {
        problems.push(problem(
            path,
            "needs trafficRouting: without a router the canary's pods are its traffic share, so they cannot differ from the weight",
        ));
    }
}

fn check_surge(canary: &CanaryStrategy, router: bool, problems: &mut Vec<SpecProblem>) {
    let mut zero = 0;
    for (field, value) in [
        ("maxSurge", &canary.max_surge),
        ("maxUnavailable", &canary.max_unavailable),
    ] {
        let Some(value) = value else { continue };
        let path = format!("{CANARY}.{field}");
        match parse_int_or_percent(value) {
            Some(IntOrPercent::Count(count)) if count < 0 => {
                problems.push(problem(path, format!("{count} is negative")));
            }
            Some(IntOrPercent::Percent(percent)) if percent > 100 => {
                problems.push(problem(path, format!("{percent}% is over 100%")));
            }
            Some(IntOrPercent::Count(0) | IntOrPercent::Percent(0)) => zero += 1,
            Some(_) => {}
            None => problems.push(problem(
                path,
                format!(
                    "{} is neither a count nor a percent like \"25%\"",
                    describe(value)
                ),
            )),
        }
        if router {
            problems.push(problem(
                format!("{CANARY}.{field}"),
                "applies without trafficRouting only (the replica ratio); with a router the canary's pods follow the weight or setCanaryScale",
            ));
        }
    }
    if zero == 2 {
        problems.push(problem(
            format!("{CANARY}.maxUnavailable"),
            "0 together with maxSurge 0: the canary could never get a pod; allow one of them",
        ));
    }
}

fn describe(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(count) => count.to_string(),
        IntOrString::String(text) => format!("{:?}", text.chars().take(16).collect::<String>()),
    }
}

fn check_metadata(
    spec: &RolloutSpec,
    metadata: &PodMetadata,
    path: &str,
    problems: &mut Vec<SpecProblem>,
) {
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let selector_labels = spec.selector.match_labels.as_ref();
    for (kind, map) in [
        ("labels", &metadata.labels),
        ("annotations", &metadata.annotations),
    ] {
        let here = format!("{path}.{kind}");
        if map.len() > MAX_POD_METADATA_ENTRIES {
            problems.push(problem(
                here.clone(),
                format!(
                    "{} entries is over the limit of {MAX_POD_METADATA_ENTRIES} (MAX_POD_METADATA_ENTRIES)",
                    map.len()
                ),
            ));
            continue;
        }
        for (key, value) in map {
            let at = format!("{here}.{key}");
            if let Err(why) = check_key(key) {
                problems.push(problem(at, why));
                continue;
            }
            let value_problem = if kind == "labels" {
                check_label_value(value).err()
            } else {
                (value.len() > MAX_ANNOTATION_VALUE_LEN).then(|| {
                    format!(
                        "the value is longer than {MAX_ANNOTATION_VALUE_LEN} characters (MAX_ANNOTATION_VALUE_LEN)"
                    )
                })
            };
            if let Some(why) = value_problem {
                problems.push(problem(at.clone(), why));
            }
            if kind == "labels"
                && (selector_labels.is_some_and(|l| l.contains_key(key))
                    || template_labels.is_some_and(|l| l.contains_key(key)))
            {
                problems.push(problem(
                    at,
                    "is a label of spec.selector or of the pod template: role metadata may only add labels, never change the ones that select the pods",
                ));
            }
        }
    }
}

/// A label or annotation key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters; never vigil's own `vigil.dev/` keys.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !valid {
            return Err(
                "the key's prefix is not a DNS subdomain (lowercase letters, digits, `-`, `.`)"
                    .into(),
            );
        }
        if prefix == "vigil.dev" || prefix.ends_with(".vigil.dev") {
            return Err("keys under vigil.dev/ are vigil's own".into());
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err("the key's name is not 1..=63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit".into());
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err("the value is not a label value (at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a letter or digit)".into())
    }
}

fn is_label_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: u8| b.is_ascii_alphanumeric();
    text.len() <= 63
        && bytes.first().copied().is_some_and(edge)
        && bytes.last().copied().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
