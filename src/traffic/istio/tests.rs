use super::weights::names_service;
use json_patch::Patch;
use serde_json::json;

use super::*;

const LABEL: &str = "vigil.dev/revision";

fn hosts() -> Split {
    Split::Hosts {
        stable: "web-stable".into(),
        canary: "web-canary".into(),
        namespace: "shop".into(),
    }
}

fn subsets_split() -> Split {
    Split::Subsets {
        stable: "stable".into(),
        canary: "canary".into(),
    }
}

/// Shaped like the VirtualService of Argo Rollouts' Istio guide: a primary route with the
/// two hosts, plus a route vigil must leave alone and a redirect.
fn host_vs() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "hosts": ["web.example.com"],
            "gateways": ["web-gateway"],
            "http": [
                {
                    "name": "legacy",
                    "match": [{"uri": {"prefix": "/old"}}],
                    "redirect": {"uri": "/new"}
                },
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": "web-stable", "port": {"number": 80}}, "weight": 100},
                        {"destination": {"host": "web-canary.shop.svc.cluster.local", "port": {"number": 80}}, "weight": 0}
                    ],
                    "retries": {"attempts": 3}
                },
                {
                    "name": "admin",
                    "match": [{"uri": {"prefix": "/admin"}}],
                    "route": [{"destination": {"host": "admin"}}]
                }
            ]
        }
    })
}

/// Shaped like Istio's reviews example: one host, subsets, weights absent at first.
fn subset_vs() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{
                "route": [
                    {"destination": {"host": "reviews", "subset": "stable"}},
                    {"destination": {"host": "reviews", "subset": "canary"}}
                ]
            }]
        }
    })
}

fn rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "host": "reviews",
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            "subsets": [
                {"name": "canary", "labels": {"app": "reviews"}},
                {"name": "stable", "labels": {"app": "reviews", LABEL: "aaa"}},
                {"name": "other"}
            ]
        }
    })
}

fn ops(patch: &Patch) -> Value {
    serde_json::to_value(patch).expect("json")
}

#[test]
fn hosts_match_by_short_or_namespace_qualified_name_only() {
    for host in [
        "web-stable",
        "web-stable.shop",
        "web-stable.shop.svc",
        "web-stable.shop.svc.cluster.local",
    ] {
        assert!(names_service(host, "web-stable", "shop"), "{host}");
    }
    for host in [
        "web-stable2",
        "web-stable.bank",
        "web-stable.shop.example.com",
        "web",
        "web-stable.shopping.svc",
    ] {
        assert!(!names_service(host, "web-stable", "shop"), "{host}");
    }
}

#[test]
fn the_typed_view_reads_routes_and_destinations() {
    let routes = http_routes(&host_vs()).expect("routes");
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0].destinations, vec![]);
    assert_eq!(routes[1].name.as_deref(), Some("primary"));
    assert_eq!(
        routes[1].destinations[1],
        Destination {
            index: 1,
            host: "web-canary.shop.svc.cluster.local".into(),
            subset: None,
            weight: Some(0),
        }
    );
    assert_eq!(routes[2].destinations[0].weight, None);
}

#[test]
fn host_level_patch_tests_every_changed_path_and_changes_only_weights() {
    let original = host_vs();
    let patch = weight_patch(&original, &["primary".into()], &hosts(), &[], 20).expect("patch");
    assert_eq!(
        ops(&patch),
        json!([
            {"op": "test", "path": "/spec/http/1/name", "value": "primary"},
            {"op": "test", "path": "/spec/http/1/route/0/destination/host", "value": "web-stable"},
            {"op": "test", "path": "/spec/http/1/route/0/weight", "value": 100},
            {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 80},
            {"op": "test", "path": "/spec/http/1/route/1/destination/host", "value": "web-canary.shop.svc.cluster.local"},
            {"op": "test", "path": "/spec/http/1/route/1/weight", "value": 0},
            {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 20},
        ])
    );
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    assert_eq!(
        canary_weight(&patched, &["primary".into()], &hosts(), &[]),
        Ok(Some(20))
    );
    let mut expected = original;
    expected["spec"]["http"][1]["route"][0]["weight"] = json!(80);
    expected["spec"]["http"][1]["route"][1]["weight"] = json!(20);
    assert_eq!(patched, expected);
}

#[test]
fn with_no_routes_named_every_route_with_the_services_is_managed() {
    let mut vs = host_vs();
    vs["spec"]["http"]
        .as_array_mut()
        .expect("http")
        .push(json!({
            "name": "api",
            "match": [{"uri": {"prefix": "/api"}}],
            "route": [
                {"destination": {"host": "web-canary"}, "weight": 0},
                {"destination": {"host": "web-stable"}, "weight": 100}
            ]
        }));
    let patch = weight_patch(&vs, &[], &hosts(), &[], 40).expect("patch");
    let mut patched = vs.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    assert_eq!(patched["spec"]["http"][1]["route"][1]["weight"], json!(40));
    assert_eq!(patched["spec"]["http"][3]["route"][0]["weight"], json!(40));
    assert_eq!(patched["spec"]["http"][3]["route"][1]["weight"], json!(60));
    // No name test when the route was not picked by name.
    assert!(
        !ops(&patch)
            .as_array()
            .expect("ops")
            .iter()
            .any(|op| op["path"].as_str().is_some_and(|p| p.ends_with("/name")))
    );
    assert_eq!(canary_weight(&patched, &[], &hosts(), &[]), Ok(Some(40)));
    // vigil's own routes (header, mirror) are skipped.
    assert_eq!(
        managed_routes(
            &http_routes(&patched).expect("routes"),
            &[],
            &hosts(),
            &["api".into()]
        )
        .expect("managed")
        .len(),
        1
    );
}

#[test]
fn subset_level_patch_adds_absent_weights_and_tests_the_subsets() {
    let vs = subset_vs();
    let patch = weight_patch(&vs, &[], &subsets_split(), &[], 10).expect("patch");
    assert_eq!(
        ops(&patch),
        json!([
            {"op": "test", "path": "/spec/http/0/route/0/destination/host", "value": "reviews"},
            {"op": "test", "path": "/spec/http/0/route/0/destination/subset", "value": "stable"},
            {"op": "add", "path": "/spec/http/0/route/0/weight", "value": 90},
            {"op": "test", "path": "/spec/http/0/route/1/destination/host", "value": "reviews"},
            {"op": "test", "path": "/spec/http/0/route/1/destination/subset", "value": "canary"},
            {"op": "add", "path": "/spec/http/0/route/1/weight", "value": 10},
        ])
    );
    // Absent weights with two destinations: Istio sends nothing anywhere vigil can tell.
    assert_eq!(canary_weight(&vs, &[], &subsets_split(), &[]), Ok(None));
    let mut patched = vs;
    json_patch::patch(&mut patched, &patch).expect("applies");
    assert_eq!(
        canary_weight(&patched, &[], &subsets_split(), &[]),
        Ok(Some(10))
    );
}

#[test]
fn a_virtual_service_changed_since_it_was_read_fails_the_patch() {
    let read = host_vs();
    let patch = weight_patch(&read, &["primary".into()], &hosts(), &[], 50).expect("patch");
    let mut weight_edited = read.clone();
    weight_edited["spec"]["http"][1]["route"][1]["weight"] = json!(7);
    assert!(json_patch::patch(&mut weight_edited, &patch).is_err());
    let mut reordered = read.clone();
    reordered["spec"]["http"]
        .as_array_mut()
        .expect("http")
        .swap(1, 2);
    assert!(json_patch::patch(&mut reordered, &patch).is_err());
    let mut retargeted = read;
    retargeted["spec"]["http"][1]["route"][0]["destination"]["host"] = json!("elsewhere");
    assert!(json_patch::patch(&mut retargeted, &patch).is_err());
}

#[test]
fn weights_read_back_agree_or_are_unknown() {
    let mut vs = host_vs();
    assert_eq!(canary_weight(&vs, &[], &hosts(), &[]), Ok(Some(0)));
    vs["spec"]["http"][1]["route"][0]["weight"] = json!(0);
    assert_eq!(canary_weight(&vs, &[], &hosts(), &[]), Ok(None));
    vs["spec"]["http"][1]["route"][0]["weight"] = json!(-5);
    vs["spec"]["http"][1]["route"][1]["weight"] = json!(5);
    assert_eq!(canary_weight(&vs, &[], &hosts(), &[]), Ok(None));
    vs["spec"]["http"][1]["route"][0]["weight"] = json!(1);
    vs["spec"]["http"][1]["route"][1]["weight"] = json!(i64::MAX);
    assert_eq!(canary_weight(&vs, &[], &hosts(), &[]), Ok(None));
    assert_eq!(agreed_weight(&[Some(20), Some(20)]), Some(20));
    assert_eq!(agreed_weight(&[Some(20), Some(30)]), None);
    assert_eq!(agreed_weight(&[Some(20), None]), None);
    assert_eq!(agreed_weight(&[]), None);
}

#[test]
fn malformed_virtual_services_name_the_field() {
    let cases = [
        (
            json!({"spec": {}}),
            "spec.http: missing: vigil splits traffic in HTTP routes",
        ),
        (json!({"spec": {"http": {}}}), "spec.http: not a list"),
        (
            json!({"spec": {"http": [7]}}),
            "spec.http[0]: not an object",
        ),
        (
            json!({"spec": {"http": [{"route": "web"}]}}),
            "spec.http[0].route: not a list",
        ),
        (
            json!({"spec": {"http": [{"route": [{"weight": 5}]}]}}),
            "spec.http[0].route[0].destination.host: missing or not a string",
        ),
        (
            json!({"spec": {"http": [{"route": [{"destination": {"host": "web-stable"}, "weight": "50"}]}]}}),
            "spec.http[0].route[0].weight: not a whole number",
        ),
        (
            json!({"spec": {"http": [{"route": [{"destination": {"host": "web-stable", "subset": 1}}]}]}}),
            "spec.http[0].route[0].destination.subset: not a string",
        ),
        (
            json!({"spec": {"http": [{"name": 3, "route": []}]}}),
            "spec.http[0].name: not a string",
        ),
    ];
    for (vs, message) in cases {
        let error = weight_patch(&vs, &[], &hosts(), &[], 10).expect_err(message);
        assert_eq!(error.to_string(), message);
        assert_eq!(canary_weight(&vs, &[], &hosts(), &[]), Err(error));
    }
}

#[test]
fn routes_without_both_destinations_are_errors_naming_them() {
    let vs = host_vs();
    assert_eq!(
        weight_patch(&vs, &["missing".into()], &hosts(), &[], 10),
        Err(IstioError::FindNamedRoute {
            name: "missing".into()
        })
    );
    let error = weight_patch(&vs, &["admin".into()], &hosts(), &[], 10).expect_err("admin");
    assert_eq!(
        error.to_string(),
        "spec.http[2] (\"admin\") has no destination with host \"web-stable\""
    );
    let mut lonely = host_vs();
    lonely["spec"]["http"][1]["route"]
        .as_array_mut()
        .expect("route")
        .remove(0);
    assert_eq!(
        weight_patch(&lonely, &[], &hosts(), &[], 10)
            .expect_err("lonely")
            .to_string(),
        "spec.http[1] (\"primary\") has no destination with host \"web-stable\""
    );
    assert_eq!(
        weight_patch(&subset_vs(), &[], &hosts(), &[], 10)
            .expect_err("no hosts")
            .to_string(),
        "no route in spec.http has a destination with host \"web-stable\" or host \"web-canary\""
    );
    let same = Split::Subsets {
        stable: "v1".into(),
        canary: "v1".into(),
    };
    assert_eq!(
        canary_weight(&subset_vs(), &[], &same, &[]),
        Err(IstioError::DistinguishDestinations("subset \"v1\"".into()))
    );
}

#[test]
fn subsets_are_pointed_by_their_revision_label_only() {
    let original = rule();
    assert_eq!(
        subset_revisions(&original, "stable", "canary", LABEL),
        Ok((Some("aaa".into()), None))
    );
    let patch = subset_patch(
        &original,
        ("stable", "canary"),
        (Some("bbb"), Some("ccc")),
        LABEL,
    )
    .expect("patch");
    assert_eq!(
        ops(&patch),
        json!([
            {"op": "test", "path": "/spec/subsets/1/name", "value": "stable"},
            {"op": "test", "path": "/spec/subsets/1/labels/vigil.dev~1revision", "value": "aaa"},
            {"op": "replace", "path": "/spec/subsets/1/labels/vigil.dev~1revision", "value": "bbb"},
            {"op": "test", "path": "/spec/subsets/0/name", "value": "canary"},
            {"op": "add", "path": "/spec/subsets/0/labels/vigil.dev~1revision", "value": "ccc"},
        ])
    );
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).expect("applies");
    assert_eq!(
        subset_revisions(&patched, "stable", "canary", LABEL),
        Ok((Some("bbb".into()), Some("ccc".into())))
    );
    let mut expected = original;
    expected["spec"]["subsets"][1]["labels"][LABEL] = json!("bbb");
    expected["spec"]["subsets"][0]["labels"][LABEL] = json!("ccc");
    assert_eq!(patched, expected);
    // Already there: nothing to send. `None` leaves a subset alone.
    assert_eq!(
        subset_patch(&patched, ("stable", "canary"), (Some("bbb"), None), LABEL),
        Ok(Patch(vec![]))
    );
}

#[test]
fn a_subset_without_labels_gets_a_labels_map() {
    let patch =
        subset_patch(&rule(), ("other", "canary"), (Some("aaa"), None), LABEL).expect("patch");
    assert_eq!(
        ops(&patch),
        json!([
            {"op": "test", "path": "/spec/subsets/2/name", "value": "other"},
            {"op": "add", "path": "/spec/subsets/2/labels", "value": {LABEL: "aaa"}},
        ])
    );
}

#[test]
fn malformed_destination_rules_name_the_field() {
    let cases = [
        (
            json!({"spec": {"host": "reviews"}}),
            "spec.subsets: missing: subset-level splitting needs the stable and canary subsets",
        ),
        (json!({"spec": {"subsets": {}}}), "spec.subsets: not a list"),
        (
            json!({"spec": {"subsets": [{"labels": {}}]}}),
            "spec.subsets[0].name: missing or not a string",
        ),
        (
            json!({"spec": {"subsets": [{"name": "stable", "labels": []}]}}),
            "spec.subsets[0].labels: not a map",
        ),
        (
            json!({"spec": {"subsets": [{"name": "stable", "labels": {LABEL: 5}}]}}),
            "spec.subsets[0].labels[\"vigil.dev/revision\"]: not a string",
        ),
        (
            json!({"spec": {"subsets": [{"name": "stable"}]}}),
            "spec.subsets has no subset named \"canary\"",
        ),
    ];
    for (rule, message) in cases {
        assert_eq!(
            subset_revisions(&rule, "stable", "canary", LABEL)
                .expect_err(message)
                .to_string(),
            message
        );
        assert_eq!(
            subset_patch(&rule, ("stable", "canary"), (Some("a"), Some("b")), LABEL)
                .expect_err(message)
                .to_string(),
            message
        );
    }
}
