use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::traffic::MirrorMatch;

fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                    "backendRefs": [
                        {"name": "web-stable", "port": 80, "weight": 90},
                        {"name": "web-canary", "port": 80, "weight": 10}
                    ]
                },
                {"backendRefs": [{"name": "other", "port": 8080}]}
            ]
        }
    })
}

fn testers() -> HeaderRoute {
    HeaderRoute {
        name: "testers".into(),
        matches: vec![
            HeaderMatch {
                header_name: "x-canary".into(),
                value: StringMatch::Exact("yes".into()),
            },
            HeaderMatch {
                header_name: "x-team".into(),
                value: StringMatch::Prefix("qa.".into()),
            },
        ],
    }
}

fn shadow() -> MirrorRoute {
    MirrorRoute {
        name: "shadow".into(),
        percentage: 35,
        matches: vec![MirrorMatch {
            method: Some(StringMatch::Exact("GET".into())),
            path: Some(StringMatch::Prefix("/api".into())),
            headers: BTreeMap::new(),
        }],
    }
}

fn apply(route: &Value, patch: &Patch) -> Value {
    let mut patched = route.clone();
    json_patch::patch(&mut patched, patch).expect("the patch applies");
    patched
}

#[test]
fn a_header_route_is_a_rule_ahead_of_the_others_to_the_canary_only() {
    let original = route();
    let header = testers();
    let patch = route_patch(
        &original,
        "web-stable",
        "web-canary",
        RouteChange::SetHeader(&header),
    )
    .expect("patch");
    let rule = json!({
        "name": "vigil-header-testers",
        "matches": [{
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [
                {"type": "Exact", "name": "x-canary", "value": "yes"},
                {"type": "RegularExpression", "name": "x-team", "value": "qa\\..*"}
            ]
        }],
        "backendRefs": [{"name": "web-canary", "port": 80, "weight": 1}]
    });
    let annotation =
        serde_json::to_string(&ManagedRoutes::new(vec![header.clone()], vec![])).expect("json");
    assert_eq!(
        serde_json::to_value(&patch).expect("json"),
        json!([
            {"op": "test", "path": "/spec/rules", "value": original["spec"]["rules"]},
            {"op": "add", "path": "/spec/rules/0", "value": rule},
            {"op": "add", "path": "/metadata/annotations", "value": {ROUTES_ANNOTATION: annotation}},
        ])
    );
    let patched = apply(&original, &patch);
    assert_eq!(
        managed_routes(&patched, "web-stable", "web-canary"),
        ManagedRoutes::new(vec![header], vec![])
    );
    // The header rule takes no part in the weights.
    assert_eq!(
        super::super::gateway_api::canary_weight(&patched, "web-stable", "web-canary"),
        Ok(Some(10))
    );
}

#[test]
fn removing_a_header_route_takes_out_its_rule_and_its_record() {
    let header = testers();
    let with = apply(
        &route(),
        &route_patch(
            &route(),
            "web-stable",
            "web-canary",
            RouteChange::SetHeader(&header),
        )
        .expect("set"),
    );
    let patch = route_patch(
        &with,
        "web-stable",
        "web-canary",
        RouteChange::RemoveHeader("testers"),
    )
    .expect("remove");
    let ops = serde_json::to_value(&patch).expect("json");
    assert_eq!(ops[1], json!({"op": "remove", "path": "/spec/rules/0"}));
    assert_eq!(
        ops[2]["path"],
        json!("/metadata/annotations/vigil.dev~1managed-routes")
    );
    assert_eq!(ops[2]["op"], json!("test"));
    assert_eq!(
        ops[3],
        json!({"op": "remove", "path": "/metadata/annotations/vigil.dev~1managed-routes"})
    );
    let without = apply(&with, &patch);
    assert_eq!(without["spec"], route()["spec"]);
    assert!(managed_routes(&without, "web-stable", "web-canary").is_empty());
}

#[test]
fn a_mirror_route_keeps_the_split_and_mirrors_a_percent_to_the_canary() {
    let original = route();
    let mirror = shadow();
    let patched = apply(
        &original,
        &route_patch(
            &original,
            "web-stable",
            "web-canary",
            RouteChange::SetMirror(&mirror),
        )
        .expect("patch"),
    );
    assert_eq!(
        patched["spec"]["rules"][0],
        json!({
            "name": "vigil-mirror-shadow",
            "matches": [{"method": "GET", "path": {"type": "PathPrefix", "value": "/api"}}],
            "filters": [{
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "web-canary", "port": 80}, "percent": 35}
            }],
            "backendRefs": [
                {"name": "web-stable", "port": 80, "weight": 90},
                {"name": "web-canary", "port": 80, "weight": 10}
            ]
        })
    );
    assert_eq!(
        managed_routes(&patched, "web-stable", "web-canary"),
        ManagedRoutes::new(vec![], vec![mirror])
    );
    // Weights move on the mirror rule with the others, and it stays in place.
    let weighted = apply(
        &patched,
        &super::super::gateway_api::weight_patch(&patched, "web-stable", "web-canary", 40)
            .expect("weights"),
    );
    assert_eq!(
        weighted["spec"]["rules"][0]["backendRefs"][1]["weight"],
        json!(40)
    );
    assert_eq!(
        weighted["spec"]["rules"][1]["backendRefs"][1]["weight"],
        json!(40)
    );
    assert_eq!(
        managed_routes(&weighted, "web-stable", "web-canary")
            .mirror
            .len(),
        1
    );
}

#[test]
fn a_managed_rule_edited_by_someone_else_is_not_reported_in_place() {
    let header = testers();
    let mut patched = apply(
        &route(),
        &route_patch(
            &route(),
            "web-stable",
            "web-canary",
            RouteChange::SetHeader(&header),
        )
        .expect("set"),
    );
    patched["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("web-stable");
    let read = managed_routes(&patched, "web-stable", "web-canary");
    assert!(read.header.is_empty());
    // Not in place, yet present: removed when no longer wanted.
    assert_eq!(read.stale_header, vec!["testers".to_owned()]);
    // Putting it back replaces the edited rule.
    let patch = route_patch(
        &patched,
        "web-stable",
        "web-canary",
        RouteChange::SetHeader(&header),
    )
    .expect("set again");
    let again = apply(&patched, &patch);
    assert_eq!(
        managed_routes(&again, "web-stable", "web-canary"),
        ManagedRoutes::new(vec![header], vec![])
    );
    assert_eq!(again["spec"]["rules"].as_array().map(Vec::len), Some(3));
}

#[test]
fn a_route_changed_since_it_was_read_fails_the_route_patch() {
    let header = testers();
    let patch = route_patch(
        &route(),
        "web-stable",
        "web-canary",
        RouteChange::SetHeader(&header),
    )
    .expect("patch");
    let mut changed = route();
    changed["spec"]["rules"][1]["backendRefs"][0]["port"] = json!(9090);
    assert!(json_patch::patch(&mut changed, &patch).is_err());
}

#[test]
fn limits_of_the_gateway_api_are_errors_naming_the_rule() {
    let mut many = route();
    let matches: Vec<Value> = (0..65)
        .map(|i| json!({"path": {"type": "Exact", "value": format!("/p{i}")}}))
        .collect();
    many["spec"]["rules"][0]["matches"] = json!(matches);
    assert_eq!(
        header_rule(&many, "web-stable", "web-canary", &testers()),
        Err(RouteError::CountRuleMatches {
            rule: "vigil-header-testers".into(),
            count: 65,
            limit: 64
        })
    );
    let mut regex_method = shadow();
    regex_method.matches[0].method = Some(StringMatch::Regex("GET|HEAD".into()));
    assert_eq!(
        mirror_rule(&route(), "web-stable", "web-canary", &regex_method),
        Err(RouteError::MatchMethod {
            route: "shadow".into()
        })
    );
    assert_eq!(
        header_rule(&json!({"spec": {"rules": []}}), "a", "b", &testers()),
        Err(RouteError::FindBackendRefs {
            stable: "a".into(),
            canary: "b".into()
        })
    );
}

#[test]
fn a_header_rule_stored_with_the_defaulted_weight_reads_back_in_place() {
    let header = testers();
    let set = route_patch(
        &route(),
        "web-stable",
        "web-canary",
        RouteChange::SetHeader(&header),
    )
    .expect("set");
    let mut stored = apply(&route(), &set);
    // The API server defaults a backendRef's weight to 1.
    stored["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(1);
    assert_eq!(
        managed_routes(&stored, "web-stable", "web-canary"),
        ManagedRoutes::new(vec![header], vec![])
    );
}

#[test]
fn managed_rules_edited_or_unrecorded_are_reported_present_for_removal() {
    let header = testers();
    let set = route_patch(
        &route(),
        "web-stable",
        "web-canary",
        RouteChange::SetHeader(&header),
    )
    .expect("set");
    let mut stored = apply(&route(), &set);
    // Someone adds a match to the header rule, and a mirror rule lost its record.
    let matches = &mut stored["spec"]["rules"][0]["matches"];
    if let Some(list) = matches.as_array_mut() {
        list.push(json!({"path": {"type": "PathPrefix", "value": "/extra"}}));
    }
    if let Some(rules) = stored["spec"]["rules"].as_array_mut() {
        rules.push(json!({"name": "vigil-mirror-old", "backendRefs": []}));
    }
    let read = managed_routes(&stored, "web-stable", "web-canary");
    assert!(read.header.is_empty() && read.mirror.is_empty());
    assert_eq!(read.stale_header, vec!["testers".to_owned()]);
    assert_eq!(read.stale_mirror, vec!["old".to_owned()]);
    assert_eq!(read.present_header().collect::<Vec<_>>(), vec!["testers"]);
    assert_eq!(read.present_mirror().collect::<Vec<_>>(), vec!["old"]);
}

fn with_auth_filter() -> Value {
    let mut route = route();
    route["spec"]["rules"][0]["filters"] = json!([{
        "type": "ExtensionRef",
        "extensionRef": {"group": "auth.example.com", "kind": "Auth", "name": "login"}
    }]);
    route["spec"]["rules"][0]["timeouts"] = json!({"request": "5s"});
    route
}

#[test]
fn managed_rules_keep_the_split_rules_filters_and_timeouts() {
    let route = with_auth_filter();
    let auth = route["spec"]["rules"][0]["filters"][0].clone();
    let header = header_rule(&route, "web-stable", "web-canary", &testers()).expect("header");
    assert_eq!(header["filters"], json!([auth.clone()]));
    assert_eq!(header["timeouts"], json!({"request": "5s"}));
    let mirror = mirror_rule(&route, "web-stable", "web-canary", &shadow()).expect("mirror");
    let filters = mirror["filters"].as_array().cloned().unwrap_or_default();
    assert_eq!(filters.len(), 2);
    assert_eq!(filters[0], auth);
    assert_eq!(filters[1]["type"], json!("RequestMirror"));
    assert_eq!(mirror["timeouts"], json!({"request": "5s"}));
}

#[test]
fn split_rules_differing_in_filters_are_refused() {
    let mut route = with_auth_filter();
    if let Some(rules) = route["spec"]["rules"].as_array_mut() {
        rules.push(json!({
            "matches": [{"path": {"type": "PathPrefix", "value": "/open"}}],
            "backendRefs": [
                {"name": "web-stable", "port": 80, "weight": 90},
                {"name": "web-canary", "port": 80, "weight": 10}
            ]
        }));
    }
    let header = header_rule(&route, "web-stable", "web-canary", &testers());
    assert!(
        matches!(header, Err(RouteError::ShareSplitRules)),
        "{header:?}"
    );
    let mirror = mirror_rule(&route, "web-stable", "web-canary", &shadow());
    assert!(
        matches!(mirror, Err(RouteError::ShareSplitRules)),
        "{mirror:?}"
    );
    let message = RouteError::ShareSplitRules.to_string();
    assert!(message.contains("filters"), "{message}");
}
