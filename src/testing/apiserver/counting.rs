//! Request counting: what the API server (and behind it etcd) pays for a client's behaviour.
//!
//! Every request is classified as Kubernetes' own request info does (verb, API group, resource,
//! subresource) and counted together with its response code, so a bench can say "a release
//! cost 3 LISTs of ReplicaSets and 2 conflicting status PUTs per Rollout".

use std::collections::BTreeMap;

use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};

/// What one counted request was: Kubernetes' verb, the resource it addressed and its answer.
///
/// Requests that address no resource (discovery, `/version`, `/healthz`) have an empty
/// `resource` and the lower-cased HTTP method as verb.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RequestKey {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// The API group (empty for the core group).
    pub group: String,
    /// The resource's plural name (`replicasets`, `rollouts`), empty for non-resource paths.
    pub resource: String,
    /// `status`, `scale`, or empty for the object itself.
    pub subresource: String,
    /// The HTTP status code of the response (a watch counts its 200 when it starts).
    pub code: u16,
}

impl RequestKey {
    /// Classifies a request from its method, path and query string.
    pub(super) fn classify(method: &Method, path: &str, query: &str, code: u16) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => ("", &[][..]),
        };
        // `namespaces/{ns}/{plural}/...`, except the Namespace object's own subresources.
        let tail = match rest {
            ["namespaces", _ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
                std::iter::once(*plural)
                    .chain(tail.iter().copied())
                    .collect()
            }
            other => other.to_vec(),
        };
        let (resource, name, subresource) = match tail.as_slice() {
            [] => ("", None, ""),
            [plural] => (*plural, None, ""),
            [plural, name] => (*plural, Some(*name), ""),
            [plural, name, sub, ..] => (*plural, Some(*name), *sub),
        };
        let watch = query
            .split('&')
            .any(|pair| matches!(pair, "watch=true" | "watch=1"));
        let verb = if resource.is_empty() {
            method.as_str().to_ascii_lowercase()
        } else {
            verb(method, name.is_some(), watch).to_string()
        };
        Self {
            verb,
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            code,
        }
    }
}

fn verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match (method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

/// A snapshot of request counts (see [`super::ApiServer::requests`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    counts: BTreeMap<RequestKey, u64>,
}

impl RequestCounts {
    pub(super) fn record(&mut self, key: RequestKey) {
        *self.counts.entry(key).or_insert(0) += 1;
    }

    /// Every distinct kind of request with its count, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&RequestKey, u64)> {
        self.counts.iter().map(|(key, count)| (key, *count))
    }

    /// The number of requests whose key satisfies `predicate`.
    pub fn count_where(&self, predicate: impl Fn(&RequestKey) -> bool) -> u64 {
        self.iter()
            .filter(|(key, _)| predicate(key))
            .map(|(_, count)| count)
            .sum()
    }

    /// Every request counted.
    pub fn total(&self) -> u64 {
        self.count_where(|_| true)
    }

    /// Requests with this verb on this resource (`"status"` etc. in `resource` as
    /// `rollouts/status`; a bare plural counts the object itself, not its subresources).
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
        self.count_where(|k| k.verb == verb && k.resource == plural && k.subresource == sub)
    }

    /// Requests with this verb, on any resource.
    pub fn verb(&self, verb: &str) -> u64 {
        self.count_where(|k| k.verb == verb)
    }

    /// Requests answered with this status code (e.g. 409 conflicts).
    pub fn with_code(&self, code: u16) -> u64 {
        self.count_where(|k| k.code == code)
    }

    /// Per `verb resource[/subresource]` (codes summed), for reports: e.g.
    /// `("list replicasets", 20)`, `("update rollouts/status", 12)`.
    pub fn by_verb_and_resource(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (key, count) in self.iter().filter(|(k, _)| !k.resource.is_empty()) {
            *out.entry(key.verb_and_resource()).or_insert(0) += count;
        }
        out
    }

    /// The JSON `GET /debug/requests` serves: `{"total": N, "requests": [{verb, group,
    /// resource, subresource, code, count}, ...]}`.
    pub fn to_json(&self) -> Value {
        let requests: Vec<Value> = self
            .iter()
            .map(|(key, count)| {
                let mut entry = serde_json::to_value(key).unwrap_or_else(|_| json!({}));
                entry["count"] = json!(count);
                entry
            })
            .collect();
        json!({"total": self.total(), "requests": requests})
    }
}

impl RequestKey {
    /// `verb resource` or `verb resource/subresource`.
    pub fn verb_and_resource(&self) -> String {
        if self.subresource.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {}/{}", self.verb, self.resource, self.subresource)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: Method, path: &str, query: &str) -> (String, String, String, String) {
        let k = RequestKey::classify(&method, path, query, 200);
        (k.verb, k.group, k.resource, k.subresource)
    }

    fn tuple(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
    ) -> (String, String, String, String) {
        (verb.into(), group.into(), resource.into(), sub.into())
    }

    #[test]
    fn classifies_like_kubernetes_request_info() {
        let rs = "/apis/apps/v1/namespaces/default/replicasets";
        assert_eq!(
            key(Method::GET, rs, "labelSelector=a%3Db"),
            tuple("list", "apps", "replicasets", "")
        );
        assert_eq!(
            key(Method::GET, rs, "watch=true&resourceVersion=5"),
            tuple("watch", "apps", "replicasets", "")
        );
        assert_eq!(
            key(Method::GET, &format!("{rs}/x"), ""),
            tuple("get", "apps", "replicasets", "")
        );
        assert_eq!(
            key(Method::POST, rs, ""),
            tuple("create", "apps", "replicasets", "")
        );
        assert_eq!(
            key(Method::PUT, &format!("{rs}/x/status"), ""),
            tuple("update", "apps", "replicasets", "status")
        );
        assert_eq!(
            key(Method::PATCH, &format!("{rs}/x/scale"), ""),
            tuple("patch", "apps", "replicasets", "scale")
        );
        assert_eq!(
            key(Method::DELETE, &format!("{rs}/x"), ""),
            tuple("delete", "apps", "replicasets", "")
        );
        assert_eq!(
            key(Method::DELETE, rs, ""),
            tuple("deletecollection", "apps", "replicasets", "")
        );
        assert_eq!(
            key(Method::GET, "/api/v1/namespaces/default/services/web", ""),
            tuple("get", "", "services", "")
        );
        assert_eq!(
            key(Method::GET, "/api/v1/namespaces/default", ""),
            tuple("get", "", "namespaces", "")
        );
        assert_eq!(
            key(Method::PUT, "/api/v1/namespaces/default/status", ""),
            tuple("update", "", "namespaces", "status")
        );
        assert_eq!(
            key(Method::GET, "/apis/vigil.dev/v1alpha1/rollouts", ""),
            tuple("list", "vigil.dev", "rollouts", "")
        );
        assert_eq!(key(Method::GET, "/apis", ""), tuple("get", "", "", ""));
        assert_eq!(key(Method::GET, "/version", ""), tuple("get", "", "", ""));
    }

    #[test]
    fn counts_sum_by_verb_resource_and_code() {
        let mut counts = RequestCounts::default();
        let put = "/apis/vigil.dev/v1alpha1/namespaces/d/rollouts/a/status";
        counts.record(RequestKey::classify(&Method::PUT, put, "", 200));
        counts.record(RequestKey::classify(&Method::PUT, put, "", 409));
        counts.record(RequestKey::classify(
            &Method::GET,
            "/apis/vigil.dev/v1alpha1/rollouts",
            "",
            200,
        ));
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.count("update", "rollouts/status"), 2);
        assert_eq!(counts.count("update", "rollouts"), 0);
        assert_eq!(counts.with_code(409), 1);
        assert_eq!(counts.verb("list"), 1);
        assert_eq!(counts.by_verb_and_resource()["update rollouts/status"], 2);
        assert_eq!(counts.to_json()["total"], 3);
    }
}
