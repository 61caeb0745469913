use serde_json::json;

use super::*;

const SERVICES: SplitServices<'static> = SplitServices {
    stable: "web-stable",
    canary: "web-canary",
    baseline: "web-baseline",
};

fn route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "backendRefs": [
                        {"name": "web-stable", "port": 80, "weight": 100},
                        {"name": "web-canary", "port": 80, "weight": 0},
                        {"name": "web-baseline", "port": 80, "weight": 0}
                    ]
                },
                {
                    "backendRefs": [
                        {"name": "web-baseline", "port": 80},
                        {"name": "web-canary", "port": 80, "weight": 0},
                        {"name": "web-stable", "port": 80, "weight": 100}
                    ]
                },
                {"backendRefs": [{"name": "other", "port": 8080}]}
            ]
        }
    })
}

fn applied(route: &Value, patch: &Patch) -> Value {
    let mut patched = route.clone();
    json_patch::patch(&mut patched, patch)
        .expect("the patch applies to the route it was built from");
    patched
}

fn weights(route: &Value, rule: usize) -> Vec<(String, Option<i64>)> {
    route["spec"]["rules"][rule]["backendRefs"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_owned(),
                r["weight"].as_i64(),
            )
        })
        .collect()
}

#[test]
fn the_patch_sets_three_weights_guarded_by_tests_and_nothing_else() {
    let original = route();
    let patch = split_patch(&original, SERVICES, Some(20), Some(20)).expect("patch");
    let ops = serde_json::to_value(&patch).expect("json");
    assert_eq!(
        ops,
        json!([
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/name", "value": "web-stable"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 100},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 60},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/name", "value": "web-canary"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/1/weight", "value": 0},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 20},
            {"op": "test", "path": "/spec/rules/0/backendRefs/2/name", "value": "web-baseline"},
            {"op": "test", "path": "/spec/rules/0/backendRefs/2/weight", "value": 0},
            {"op": "replace", "path": "/spec/rules/0/backendRefs/2/weight", "value": 20},
            {"op": "test", "path": "/spec/rules/1/backendRefs/2/name", "value": "web-stable"},
            {"op": "test", "path": "/spec/rules/1/backendRefs/2/weight", "value": 100},
            {"op": "replace", "path": "/spec/rules/1/backendRefs/2/weight", "value": 60},
            {"op": "test", "path": "/spec/rules/1/backendRefs/1/name", "value": "web-canary"},
            {"op": "test", "path": "/spec/rules/1/backendRefs/1/weight", "value": 0},
            {"op": "replace", "path": "/spec/rules/1/backendRefs/1/weight", "value": 20},
            {"op": "test", "path": "/spec/rules/1/backendRefs/0/name", "value": "web-baseline"},
            {"op": "add", "path": "/spec/rules/1/backendRefs/0/weight", "value": 20},
        ])
    );
    let patched = applied(&original, &patch);
    assert_eq!(split(&patched, SERVICES), Ok(Some((20, 20))));
    let mut expected = original;
    for (rule, [stable, canary, baseline]) in [(0, [0, 1, 2]), (1, [2, 1, 0])] {
        expected["spec"]["rules"][rule]["backendRefs"][stable]["weight"] = json!(60);
        expected["spec"]["rules"][rule]["backendRefs"][canary]["weight"] = json!(20);
        expected["spec"]["rules"][rule]["backendRefs"][baseline]["weight"] = json!(20);
    }
    assert_eq!(patched, expected);
}

/// Each row: the (canary, baseline) shares in the route, the change asked (canary, baseline;
/// `None` keeps the route's), the stable/canary/baseline weights written.
#[test]
fn the_three_weights_always_sum_to_100_and_the_baseline_comes_from_the_stable() {
    type Row = ((i64, i64), (Option<i32>, Option<i32>), [i64; 3]);
    let rows: [Row; 9] = [
        ((0, 0), (Some(10), None), [90, 10, 0]),
        ((10, 0), (None, Some(10)), [80, 10, 10]),
        ((10, 10), (Some(30), None), [60, 30, 10]),
        ((30, 10), (None, Some(30)), [40, 30, 30]),
        // Past 50 % the baseline gets what the canary leaves, never the canary's share.
        ((50, 50), (Some(60), None), [0, 60, 40]),
        ((40, 40), (None, Some(70)), [0, 40, 60]),
        ((40, 40), (None, Some(0)), [60, 40, 0]),
        ((40, 0), (Some(0), None), [100, 0, 0]),
        // Out-of-range asks are clamped, never written.
        ((0, 0), (Some(150), Some(-5)), [0, 100, 0]),
    ];
    for ((canary, baseline), (ask_canary, ask_baseline), written) in rows {
        let mut r = route();
        for (rule, [s, c, b]) in [(0, [0, 1, 2]), (1, [2, 1, 0])] {
            r["spec"]["rules"][rule]["backendRefs"][s]["weight"] = json!(100 - canary - baseline);
            r["spec"]["rules"][rule]["backendRefs"][c]["weight"] = json!(canary);
            r["spec"]["rules"][rule]["backendRefs"][b]["weight"] = json!(baseline);
        }
        let patch = split_patch(&r, SERVICES, ask_canary, ask_baseline).expect("patch");
        let patched = applied(&r, &patch);
        let [stable_w, canary_w, baseline_w] = written;
        let row = format!("{canary}/{baseline} asked {ask_canary:?}/{ask_baseline:?}");
        assert_eq!(
            weights(&patched, 0),
            vec![
                ("web-stable".into(), Some(stable_w)),
                ("web-canary".into(), Some(canary_w)),
                ("web-baseline".into(), Some(baseline_w)),
            ],
            "{row}"
        );
        assert_eq!(stable_w + canary_w + baseline_w, 100, "{row}");
        let read = split(&patched, SERVICES).expect("readable");
        assert_eq!(read, Some((canary_w as i32, baseline_w as i32)), "{row}");
    }
}

#[test]
fn a_route_changed_since_it_was_read_fails_the_patch() {
    let read = route();
    let patch = split_patch(&read, SERVICES, Some(10), Some(10)).expect("patch");
    let mut changed = read.clone();
    changed["spec"]["rules"][0]["backendRefs"][2]["weight"] = json!(7);
    assert!(json_patch::patch(&mut changed, &patch).is_err());
    let mut reordered = read;
    reordered["spec"]["rules"][0]["backendRefs"]
        .as_array_mut()
        .expect("array")
        .swap(1, 2);
    assert!(json_patch::patch(&mut reordered, &patch).is_err());
}

#[test]
fn shares_read_back_agree_or_are_unknown() {
    let mut r = route();
    // Rule 1's baseline has no weight (the default 1 of 101 ≈ 1 %) while rule 0 says 0 %.
    assert_eq!(split(&r, SERVICES), Ok(None));
    r["spec"]["rules"][1]["backendRefs"][0]["weight"] = json!(0);
    assert_eq!(split(&r, SERVICES), Ok(Some((0, 0))));
    r["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(0);
    assert_eq!(split(&r, SERVICES), Ok(None), "all 0 in one rule");
    r["spec"]["rules"][0]["backendRefs"][0]["weight"] = json!(-3);
    assert_eq!(split(&r, SERVICES), Ok(None), "a negative weight");
    // Weights vigil did not write are read as shares of their sum.
    let mut scaled = route();
    for rule in [0, 1] {
        for (name, weight) in [
            ("web-stable", 600),
            ("web-canary", 200),
            ("web-baseline", 200),
        ] {
            let refs = scaled["spec"]["rules"][rule]["backendRefs"]
                .as_array_mut()
                .expect("refs");
            let found = refs.iter_mut().find(|r| r["name"] == name).expect("ref");
            found["weight"] = json!(weight);
        }
    }
    assert_eq!(split(&scaled, SERVICES), Ok(Some((20, 20))));
}

#[test]
fn a_rule_without_the_baseline_service_is_an_error_naming_it() {
    let r = json!({"spec": {"rules": [
        {"backendRefs": [
            {"name": "web-stable", "weight": 100},
            {"name": "web-canary", "weight": 0},
            {"name": "web-baseline", "weight": 0}
        ]},
        {"backendRefs": [
            {"name": "web-stable", "weight": 100},
            {"name": "web-canary", "weight": 0},
            {"group": "example.com", "kind": "Bucket", "name": "web-baseline"}
        ]}
    ]}});
    let expected = RouteError::FindBaselineBackendRef {
        rule: 1,
        baseline: "web-baseline".into(),
    };
    assert_eq!(split(&r, SERVICES), Err(expected.clone()));
    assert_eq!(
        split_patch(&r, SERVICES, Some(10), None),
        Err(expected.clone())
    );
    let message = expected.to_string();
    assert!(
        message.contains("web-baseline") && message.contains("canary.baseline.service"),
        "{message}"
    );
    let same = SplitServices {
        baseline: "web-canary",
        ..SERVICES
    };
    assert_eq!(
        split(&route(), same),
        Err(RouteError::DistinguishBaselineService("web-canary".into()))
    );
    // The two-way errors still come first.
    let no_canary = json!({"spec": {"rules": [{"backendRefs": [{"name": "web-stable"}, {"name": "web-baseline"}]}]}});
    assert!(matches!(
        split(&no_canary, SERVICES),
        Err(RouteError::FindPairedBackendRef { rule: 0, .. })
    ));
}
