//! `vigil convert` end to end with the real binary, on manifests written from Argo Rollouts'
//! and Flagger's documentation (`tests/fixtures/convert/`): each converted result passes
//! `vigil lint` and deserializes into vigil's types, the unmapped-field report matches its
//! `.unmapped` file line by line, and the exit code says whether everything mapped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vigil::api::{AnalysisTemplate, ClusterAnalysisTemplate, Rollout};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert")
}

fn vigil(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run vigil")
}

/// The report lines on stderr, without the closing summary.
fn report(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|line| !line.starts_with("vigil convert:"))
        .map(str::to_owned)
        .collect()
}

/// Lints the converted YAML with the real binary and reads every document into vigil's types.
fn lint_clean_and_typed(yaml: &str, name: &str) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(format!("{name}.converted.yaml"));
    std::fs::write(&file, yaml).expect("write");
    let linted = vigil(&["lint", &file.to_string_lossy()], dir.path());
    assert_eq!(
        linted.status.code(),
        Some(0),
        "{name}: the converted YAML does not lint clean:\n{}{}\n{yaml}",
        String::from_utf8_lossy(&linted.stdout),
        String::from_utf8_lossy(&linted.stderr)
    );
    let documents = vigil::manifest::documents(yaml).expect("YAML");
    for document in &documents {
        let kind = vigil::manifest::kind_of(document);
        let typed = match kind {
            "Rollout" => serde_norway::from_value::<Rollout>(document.clone()).map(|_| ()),
            "AnalysisTemplate" => {
                serde_norway::from_value::<AnalysisTemplate>(document.clone()).map(|_| ())
            }
            "ClusterAnalysisTemplate" => {
                serde_norway::from_value::<ClusterAnalysisTemplate>(document.clone()).map(|_| ())
            }
            // Another API's document (a Deployment a Rollout adopts), passed through.
            _ => continue,
        };
        typed.unwrap_or_else(|e| panic!("{name}: a {kind} that does not deserialize: {e}"));
    }
    documents.len()
}

#[test]
fn every_fixture_converts_to_lint_clean_yaml_with_exactly_its_report() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 5,
        "expected the five documented cases, found {cases:?}"
    );
    for case in cases {
        let name = case
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let expected_file = case.with_extension("unmapped");
        let expected: Vec<String> = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", expected_file.display()))
            .lines()
            .map(str::to_owned)
            .collect();
        let out = vigil(&["convert", &name], &fixtures());
        let lines = report(&out);
        assert_eq!(
            lines.len(),
            expected.len(),
            "{name}: report:\n{}",
            lines.join("\n")
        );
        for (got, want) in lines.iter().zip(&expected) {
            assert_eq!(got, want, "{name}: a report line differs");
        }
        let code = if expected.is_empty() { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{name}: exit code");
        let yaml = String::from_utf8(out.stdout).expect("UTF-8");
        assert!(
            lint_clean_and_typed(&yaml, &name) >= 1,
            "{name}: nothing written"
        );
    }
}

#[test]
fn argo_analysis_run_history_limits_are_carried_over() {
    let out = vigil(&["convert", "argo-step-analysis.yaml"], &fixtures());
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    let documents = vigil::manifest::documents(&yaml).expect("YAML");
    let rollout = documents
        .iter()
        .find(|d| vigil::manifest::kind_of(d) == "Rollout")
        .expect("a Rollout in the output");
    let rollout: Rollout = serde_norway::from_value(rollout.clone()).expect("a Rollout");
    let analysis = rollout.spec.analysis.expect("spec.analysis carried over");
    assert_eq!(analysis.successful_run_history_limit, Some(10));
    assert_eq!(analysis.unsuccessful_run_history_limit, Some(2));
}

#[test]
fn a_canary_and_its_metric_templates_may_come_in_separate_files_and_on_stdin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all =
        std::fs::read_to_string(fixtures().join("flagger-metric-templates.yaml")).expect("fixture");
    // Split the fixture: the MetricTemplates in one file, the Deployment and Canary on stdin.
    let documents: Vec<&str> = all.split("\n---\n").collect();
    assert_eq!(documents.len(), 4);
    std::fs::write(
        dir.path().join("metric-templates.yaml"),
        format!("{}\n---\n{}\n", documents[1], documents[2]),
    )
    .expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["convert", "metric-templates.yaml", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{}\n---\n{}\n", documents[0], documents[3]).as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let lines = report(&out);
    // The same four lines as the single file, now naming stdin (`-`) and its document index.
    assert_eq!(lines.len(), 4, "{}", lines.join("\n"));
    assert!(
        lines.iter().all(|l| l.starts_with("-: [1] spec.")),
        "{}",
        lines.join("\n")
    );
    let yaml = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        yaml.contains("destination_workload=\"{{args.target}}\""),
        "{yaml}"
    );
    assert_eq!(lint_clean_and_typed(&yaml, "split"), 2);
}

#[test]
fn unreadable_or_broken_input_is_exit_2_with_nothing_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = vigil(&["convert", "missing.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.yaml"));
    std::fs::write(
        dir.path().join("broken.yaml"),
        "kind: Rollout\nspec: [unclosed\n",
    )
    .expect("write");
    let out = vigil(&["convert", "broken.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yaml: document 0"));
}

#[test]
fn lint_names_argo_and_flagger_documents_and_points_at_convert() {
    for case in [
        "argo-background-analysis.yaml",
        "flagger-builtin-metrics.yaml",
    ] {
        let out = vigil(&["lint", case], &fixtures());
        assert_eq!(out.status.code(), Some(1), "{case}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("run `vigil convert FILE`"),
            "{case}: {stdout}"
        );
    }
}

fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        "[a-z{}\\[\\]0 .|&()]{0,24}".prop_map(serde_json::Value::String),
        prop::sample::select(vec![
            "result[0] >= 0.95",
            "len(result) == 0 || result[0] < 1",
            "{{ target }}",
            "{{args.x}}",
            "1.5h",
            "40",
            "Latest",
            "prometheus",
            "request-success-rate",
        ])
        .prop_map(|s| serde_json::Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop::sample::select(vec![
            "name",
            "metrics",
            "provider",
            "prometheus",
            "query",
            "address",
            "timeout",
            "headers",
            "authentication",
            "basicAuth",
            "args",
            "valueFrom",
            "steps",
            "pause",
            "duration",
            "setWeight",
            "analysis",
            "templates",
            "templateRef",
            "thresholdRange",
            "stepWeight",
            "stepWeights",
            "maxWeight",
            "interval",
            "threshold",
            "canary",
            "strategy",
            "trafficRouting",
            "plugins",
            "successCondition",
            "dryRun",
            "count",
            "webhooks",
            "targetRef",
            "service",
            "podTemplateHashValue",
            "templateVariables",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever an Argo or Flagger document holds, convert reports or maps it: never a panic,
    /// and what it writes is YAML.
    #[test]
    fn arbitrary_specs_never_panic(
        spec in arbitrary_json(),
        kind in proptest::sample::select(vec![
            ("argoproj.io/v1alpha1", "Rollout"),
            ("argoproj.io/v1alpha1", "AnalysisTemplate"),
            ("argoproj.io/v1alpha1", "ClusterAnalysisTemplate"),
            ("flagger.app/v1beta1", "Canary"),
            ("flagger.app/v1beta1", "MetricTemplate"),
        ]),
    ) {
        let document = serde_json::json!({
            "apiVersion": kind.0, "kind": kind.1, "metadata": {"name": "x"}, "spec": spec,
        });
        let sources = vec![vigil::convert::Source { file: "p.yaml".to_owned(), index: 0, document }];
        let conversion = vigil::convert::convert(&sources);
        vigil::convert::to_yaml(&conversion.documents).expect("YAML");
    }
}
