//! Discovery documents: `/version`, legacy discovery (`/api`, `/apis`, `/apis/{g}/{v}`) and
//! aggregated discovery (`apidiscovery.k8s.io/v2`, which `Discovery::run_aggregated` needs).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::store::ResourceType;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/version`: a 1.33 server (the `kubectl` dispatcher picks the matching client).
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0",
        "gitCommit": "vigil-test-apiserver",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// Served versions per non-core group, in a stable order.
fn groups(types: &[Arc<ResourceType>]) -> BTreeMap<&str, Vec<&str>> {
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for ty in types.iter().filter(|t| !t.group.is_empty()) {
        let versions = groups.entry(&ty.group).or_default();
        if !versions.contains(&ty.version.as_str()) {
            versions.push(&ty.version);
        }
    }
    groups
}

fn group_doc(name: &str, versions: &[&str]) -> Value {
    let version = |v: &&str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
    json!({
        "name": name,
        "versions": versions.iter().map(version).collect::<Vec<_>>(),
        "preferredVersion": versions.first().map(version),
    })
}

/// `/apis`.
pub(crate) fn group_list(types: &[Arc<ResourceType>]) -> Value {
    let groups: Vec<Value> = groups(types)
        .iter()
        .map(|(name, versions)| group_doc(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub(crate) fn group(types: &[Arc<ResourceType>], name: &str) -> Option<Value> {
    let groups = groups(types);
    let versions = groups.get(name)?;
    let mut doc = group_doc(name, versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub(crate) fn resource_list(
    types: &[Arc<ResourceType>],
    group: &str,
    version: &str,
) -> Option<Value> {
    let mut resources = Vec::new();
    for ty in types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        resources.push(json!({
            "name": ty.plural,
            "singularName": ty.singular,
            "namespaced": ty.namespaced,
            "kind": ty.kind,
            "verbs": VERBS,
            "shortNames": ty.short_names,
        }));
        if ty.status {
            resources.push(json!({
                "name": format!("{}/status", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "kind": ty.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if ty.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", ty.plural),
                "singularName": "",
                "namespaced": ty.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Aggregated discovery for `/api` (`core`) or `/apis`, in `apidiscovery.k8s.io/{api_version}`.
pub(crate) fn aggregated(types: &[Arc<ResourceType>], core: bool, api_version: &str) -> Value {
    let mut by_group: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for ty in types.iter().filter(|t| t.group.is_empty() == core) {
        let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
        let mut subresources = Vec::new();
        if ty.status {
            subresources.push(json!({
                "subresource": "status",
                "responseKind": kind(&ty.group, &ty.version, &ty.kind),
                "verbs": ["get", "patch", "update"],
            }));
        }
        if ty.scale.is_some() {
            subresources.push(json!({
                "subresource": "scale",
                "responseKind": kind("autoscaling", "v1", "Scale"),
                "verbs": ["get", "patch", "update"],
            }));
        }
        by_group
            .entry(&ty.group)
            .or_default()
            .entry(&ty.version)
            .or_default()
            .push(json!({
                "resource": ty.plural,
                "responseKind": kind(&ty.group, &ty.version, &ty.kind),
                "scope": if ty.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": ty.singular,
                "verbs": VERBS,
                "shortNames": ty.short_names,
                "subresources": subresources,
            }));
    }
    let items: Vec<Value> = by_group
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .into_iter()
                .map(|(version, resources)| {
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{api_version}"),
        "metadata": {},
        "items": items,
    })
}
