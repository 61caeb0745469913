//! A report of a release whose every user-controlled text is hostile: metric names,
//! conditions (drawn as chart legends, i.e. SVG text), values, reasons, run and Rollout names,
//! status messages and events. None may become markup: no element, no attribute.

use jiff::Timestamp;
use serde_json::json;

use super::{ReportInput, RolloutInput, RunInput, TimelineEvent, render};

/// Closes the SVG, opens a script, and breaks out of an attribute.
const HOSTILE: &str = "</svg><script>alert(1)</script>\"' onmouseover=\"alert(2)\"<img src=x>";

fn hostile_report() -> ReportInput {
    let at = |second: u32| format!("2026-03-01T10:00:{second:02}.000000Z");
    let measurement = |phase: &str, second: u32, value: &str| {
        json!({"phase": phase, "startedAt": at(second), "value": value,
               "reason": format!("{HOSTILE} (value {value})")})
    };
    let metric_name = format!("errors{HOSTILE}");
    let condition = format!("result < 0.05 || \"{HOSTILE}\" == \"\"");
    let run = RunInput {
        name: format!("run{HOSTILE}"),
        spec: Some(
            serde_json::from_value(json!({"metrics": [{
                "name": metric_name, "successCondition": condition,
                "provider": {"prometheus": {"address": "http://p:9090", "query": HOSTILE}}
            }]}))
            .expect("run spec"),
        ),
        status: serde_json::from_value(json!({
            "phase": "Failed",
            "message": HOSTILE,
            "metricResults": [{
                "name": metric_name, "phase": "Failed", "message": HOSTILE,
                "count": 3, "successful": 2, "failed": 1,
                "measurements": [
                    measurement("Successful", 10, "0.01"),
                    measurement("Successful", 20, "0.02"),
                    measurement("Failed", 30, "0.3")
                ]
            }]
        }))
        .expect("run status"),
    };
    let rollout = RolloutInput {
        name: format!("web{HOSTILE}"),
        spec: serde_json::from_value(json!({
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"canary": {"steps": [
                {"setWeight": 20},
                {"analysis": {"templates": [{"templateName": HOSTILE}]}}
            ]}}
        }))
        .expect("rollout spec"),
        status: serde_json::from_value(json!({
            "phase": "Degraded", "message": HOSTILE, "step": HOSTILE,
            "stableRevision": HOSTILE, "canaryRevision": HOSTILE, "currentStepIndex": 1
        }))
        .expect("rollout status"),
    };
    ReportInput {
        rollout: Some(rollout),
        events: vec![TimelineEvent {
            time: Timestamp::from_second(1_772_359_230).expect("time"),
            type_: HOSTILE.to_owned(),
            reason: HOSTILE.to_owned(),
            message: HOSTILE.to_owned(),
        }],
        runs: vec![run],
        generated_at: Timestamp::from_second(1_772_359_300).expect("time"),
    }
}

#[test]
fn hostile_texts_in_names_conditions_and_svg_legends_stay_text() {
    let page = render(&hostile_report()).expect("render");
    assert!(page.contains("<svg"), "the metric's chart is drawn");
    let lower = page.to_ascii_lowercase();
    for markup in ["<script", "<img", "onmouseover=\"", "onmouseover='"] {
        assert!(!lower.contains(markup), "{markup} became markup");
    }
    // Every <svg> the page opens is one plotters drew, and each is closed once: the hostile
    // `</svg>` in a legend did not close one early.
    assert_eq!(
        lower.matches("<svg").count(),
        lower.matches("</svg>").count()
    );
    // The texts are there, as text: in HTML and in the SVG legend (plotters' escaping).
    assert!(page.contains("&lt;/svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        page.contains("result &lt; 0.05 || &quot;&lt;/svg&gt;"),
        "the condition's legend"
    );
}
