//! `vigil lint` end to end: the shipped templates lint clean, every broken example in
//! `tests/lint-cases/` gives exactly its expected lines and exit code 1 from the real binary, and
//! no input makes the linter panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use vigil::api::AnalysisTemplate;
use vigil::lint::lint_file;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("read {}: {e}", folder.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

fn vigil(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run vigil")
}

#[test]
fn every_shipped_template_lints_clean_and_is_a_typed_analysis_template() {
    let files = yaml_files(&root().join("analysis-templates"));
    assert!(
        files.len() >= 6,
        "expected at least six templates, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let problems: Vec<String> = lint_file(&file, &text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            problems.is_empty(),
            "{} has problems:\n{}",
            file.display(),
            problems.join("\n")
        );
        let typed: AnalysisTemplate = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not an AnalysisTemplate: {e}", file.display()));
        assert!(
            typed.metadata.name.is_some(),
            "{} has no metadata.name",
            file.display()
        );
        assert!(
            !typed.spec.args.is_empty(),
            "{} declares no args to identify the workload",
            file.display()
        );
    }
}

#[test]
fn every_shipped_query_substitutes_and_parses() {
    use vigil::analysis::template::{resolve_args, substitute};
    use vigil::api::Argument;
    for file in yaml_files(&root().join("analysis-templates")) {
        let text = std::fs::read_to_string(&file).expect("read");
        let typed: AnalysisTemplate = serde_norway::from_str(&text).expect("typed");
        // The Rollout passes the arguments without defaults.
        let given: Vec<Argument> = typed
            .spec
            .args
            .iter()
            .filter(|a| a.value.is_none())
            .map(|a| Argument {
                name: a.name.clone(),
                value: Some("web".to_owned()),
                value_from: None,
            })
            .collect();
        let args = resolve_args(&typed.spec.args, &given)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for metric in &typed.spec.metrics {
            let prom = metric.provider.prometheus.as_ref().expect("prometheus");
            for query in [
                &prom.query,
                &prom.canary_query,
                &prom.baseline_query,
                &prom.canary_requests_query,
                &prom.baseline_requests_query,
            ]
            .into_iter()
            .flatten()
            {
                let resolved = substitute(query, &args)
                    .unwrap_or_else(|e| panic!("{} {}: {e}", file.display(), metric.name));
                assert!(!resolved.contains("{{"), "{}: {resolved}", file.display());
                promql_parser::parser::parse(&resolved).unwrap_or_else(|e| {
                    panic!("{} {}: {e}: {resolved}", file.display(), metric.name)
                });
            }
        }
    }
}

#[test]
fn the_binary_exits_0_on_the_shipped_templates() {
    let out = vigil(&["lint", "analysis-templates"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no output on success");
}

#[test]
fn other_apis_in_the_same_files_are_left_alone_but_a_misspelt_vigil_api_is_not() {
    // The example keeps its Services and HTTPRoute beside the Rollout.
    let out = vigil(&["lint", "deploy/examples"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("typo.yaml");
    std::fs::write(
        &file,
        "apiVersion: vigil.dve/v1alpha1\nkind: Rollout\nmetadata:\n  name: web\n",
    )
    .expect("write");
    let out = vigil(&["lint", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("did you mean `vigil.dev/v1alpha1`"),
        "{stdout}"
    );
}

/// The broken examples the linter must catch; deleting one fails this test.
const REQUIRED_CASES: &[&str] = &[
    "weight-150",
    "decreasing-weights",
    "undeclared-arg",
    "cel-does-not-compile",
    "promql-syntax-error",
    "histogram-quantile-without-le",
    "le-inf-only",
    "unaggregated-error-ratio",
    "misspelt-success-condition",
    "bad-duration-5d",
    "no-judge",
    "yaml-syntax-error",
    "unknown-kind",
    "istio-misspelt-subset",
    "istio-host-level-without-services",
    "nginx-owned-annotation",
    "blue-green-bad-fields",
    "scaling-out-of-bounds",
    "baseline-three-way-split",
];

#[test]
fn every_broken_example_gives_its_expected_lines_and_exit_1() {
    let folder = root().join("tests/lint-cases");
    let cases = yaml_files(&folder);
    let names: Vec<String> = cases
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    for required in REQUIRED_CASES {
        assert!(
            names.iter().any(|n| n == required),
            "tests/lint-cases/{required}.yaml is missing"
        );
    }
    for case in cases {
        let relative = case
            .strip_prefix(root())
            .expect("under the crate")
            .to_string_lossy()
            .into_owned();
        let expected_file = case.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_file)
            .unwrap_or_else(|e| panic!("read {}: {e}", expected_file.display()));
        let out = vigil(&["lint", &relative]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout,
            expected,
            "{relative}: output differs from {}",
            expected_file.display()
        );
        assert!(!expected.trim().is_empty(), "{relative}: nothing expected");
        assert_eq!(out.status.code(), Some(1), "{relative}: exit code");
    }
}

#[test]
fn every_expected_file_has_its_case() {
    let folder = root().join("tests/lint-cases");
    for entry in std::fs::read_dir(&folder).expect("read lint-cases") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "expected") {
            assert!(
                path.with_extension("yaml").exists(),
                "{} has no .yaml case",
                path.display()
            );
        }
    }
}

#[test]
fn every_example_template_lints_clean() {
    let files = yaml_files(&root().join("analysis-templates/examples"));
    assert!(
        files.len() >= 2,
        "expected the example templates, found {files:?}"
    );
    let output = vigil(&["lint", "analysis-templates/examples"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "", "no problem");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.starts_with("# EXAMPLE"),
            "{} must say in its header that it is an example",
            file.display()
        );
    }
}

#[test]
fn a_web_metric_without_tls_verification_lints_clean_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("insecure.yaml");
    std::fs::write(
        &file,
        "apiVersion: vigil.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: t\nspec:\n  metrics:\n    - name: m\n      successCondition: result\n      provider:\n        web:\n          url: https://checks.internal/ok\n          insecure: true\n",
    )
    .expect("write");
    let output = vigil(&["lint", &file.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("spec.metrics[0].provider.web.insecure: note: warning: TLS certificate verification is off"),
        "{stderr}"
    );
}

#[test]
fn a_costly_json_path_a_host_header_and_an_insecure_secret_are_lint_errors_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("costly.yaml");
    std::fs::write(
        &file,
        "apiVersion: vigil.dev/v1alpha1\nkind: AnalysisTemplate\nmetadata:\n  name: t\nspec:\n  metrics:\n    - name: m\n      successCondition: result\n      provider:\n        web:\n          url: https://api.example.com/v1\n          jsonPath: \"$[?$[?$[*]]]\"\n          insecure: true\n          headers:\n            - key: Host\n              value: internal.example.com\n          auth:\n            bearerToken:\n              secretKeyRef: {name: api, key: token}\n",
    )
    .expect("write");
    let output = vigil(&["lint", &file.display().to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(output.status.code(), Some(0), "{text}");
    for (field, words) in [
        ("jsonPath", "filter"),
        ("headers[0].key", "may not be set"),
        ("insecure", "never sent without TLS verification"),
    ] {
        assert!(
            text.contains(&format!("spec.metrics[0].provider.web.{field}: "))
                && text.contains(words),
            "{field}: {text}"
        );
    }
}

#[test]
fn a_template_without_an_address_lints_clean_with_a_note_that_the_default_applies() {
    let file = "tests/fixtures/error-rate-default-prometheus.yaml";
    let output = vigil(&["lint", file]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "", "no problem");
    assert!(
        stderr.contains(&format!(
            "{file}: spec.metrics[0].provider.prometheus.address: note: not set: the default Prometheus applies"
        )) && stderr.contains("VIGIL_PROMETHEUS"),
        "{stderr}"
    );
    let with_address = vigil(&["lint", "tests/fixtures/error-rate.yaml"]);
    assert!(
        !String::from_utf8_lossy(&with_address.stderr).contains("address: note:"),
        "a metric naming its address gets no note"
    );
}

#[test]
fn a_baseline_template_lints_clean_with_a_note_on_the_builtin_baseline_revision() {
    let file = "analysis-templates/sequential-error-counts-baseline.yaml";
    let output = vigil(&["lint", file]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: spec.args[2]: note: built in: the revision of the fair baseline"
        )) && stderr.contains("canary.baseline.enabled: true"),
        "{stderr}"
    );
    let without = vigil(&["lint", "analysis-templates/sequential-error-counts.yaml"]);
    assert!(
        !String::from_utf8_lossy(&without.stderr).contains("fair baseline"),
        "a template comparing with the stable gets no such note"
    );
}

#[test]
fn a_missing_file_is_a_usage_error_naming_it() {
    let out = vigil(&[
        "lint",
        "analysis-templates/http-error-rate.yaml",
        "no/such/file.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no/such/file.yaml"), "{stderr}");
}

#[test]
fn no_arguments_is_a_usage_error() {
    let out = vigil(&["lint"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_directory_is_linted_file_by_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(root().join("analysis-templates/http-error-rate.yaml"))
        .expect("read template");
    std::fs::write(dir.path().join("a.yaml"), &good).expect("write");
    std::fs::write(
        dir.path().join("b.yml"),
        good.replace("count: 5", "count: 0"),
    )
    .expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
    let out = vigil(&["lint", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].ends_with("b.yml: spec.metrics[0].count: 0: count must be at least 1 (leave it out to measure until the run stops)"),
        "{stdout}"
    );
}

#[test]
fn several_documents_are_prefixed_with_their_index() {
    let good = std::fs::read_to_string(root().join("analysis-templates/http-error-rate.yaml"))
        .expect("read template");
    let text = format!(
        "{good}\n---\n{}",
        good.replace("interval: 1m", "interval: 1d")
    );
    let lines: Vec<String> = lint_file(Path::new("x.yaml"), &text)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [r#"x.yaml: [1] spec.metrics[0].interval: "1d": unknown unit "d" (use ms, s, m or h)"#]
    );
}

// --- never panics -------------------------------------------------------------------------

/// Real field names, so random documents reach deep into the schemas and validators.
const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "spec",
    "status",
    "args",
    "value",
    "valueFrom",
    "secretKeyRef",
    "fieldRef",
    "fieldPath",
    "metrics",
    "interval",
    "initialDelay",
    "count",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "noData",
    "dryRun",
    "provider",
    "prometheus",
    "address",
    "query",
    "canaryQuery",
    "baselineQuery",
    "canaryRequestsQuery",
    "baselineRequestsQuery",
    "timeout",
    "auth",
    "successCondition",
    "failureCondition",
    "succesCondition",
    "mannWhitney",
    "sequential",
    "confidence",
    "tolerance",
    "test",
    "alpha",
    "failMargin",
    "passMargin",
    "slowThresholdSeconds",
    "stratifyBy",
    "scoring",
    "groupWeights",
    "passThreshold",
    "marginalThreshold",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "template",
    "labels",
    "containers",
    "image",
    "strategy",
    "canary",
    "steps",
    "setWeight",
    "pause",
    "duration",
    "analysis",
    "templates",
    "templateName",
    "startingStep",
    "trafficRouting",
    "gatewayAPI",
    "httpRoute",
    "local",
    "listen",
    "stableService",
    "canaryService",
];

fn scalar() -> impl Strategy<Value = serde_norway::Value> {
    prop_oneof![
        Just(serde_norway::Value::Null),
        any::<bool>().prop_map(serde_norway::Value::Bool),
        any::<i64>().prop_map(|n| serde_norway::Value::Number(n.into())),
        any::<f64>().prop_map(|n| serde_norway::Value::Number(n.into())),
        prop_oneof![
            "[a-z0-9{}()\\[\\]\"'=~<>!.:_+ -]{0,40}",
            Just("{{args.service}}".to_owned()),
            Just("sum(rate(x_bucket{le=\"+Inf\"}[5m]))".to_owned()),
            Just("result < 0.01".to_owned()),
            Just("5d".to_owned()),
            Just("vigil.dev/v1alpha1".to_owned()),
            Just("Rollout".to_owned()),
            Just("AnalysisTemplate".to_owned()),
        ]
        .prop_map(serde_norway::Value::String),
    ]
}

fn value() -> impl Strategy<Value = serde_norway::Value> {
    scalar().prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_norway::Value::Sequence),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(
                |entries| {
                    let mut map = serde_norway::Mapping::new();
                    for (k, v) in entries {
                        map.insert(serde_norway::Value::String(k.to_owned()), v);
                    }
                    serde_norway::Value::Mapping(map)
                }
            ),
        ]
    })
}

fn document() -> impl Strategy<Value = serde_norway::Value> {
    (
        prop::sample::select(
            &[
                "Rollout",
                "AnalysisTemplate",
                "ClusterAnalysisTemplate",
                "AnalysisRun",
                "Other",
            ][..],
        ),
        value(),
        value(),
    )
        .prop_map(|(kind, spec, metadata)| {
            let mut map = serde_norway::Mapping::new();
            map.insert("apiVersion".into(), "vigil.dev/v1alpha1".into());
            map.insert("kind".into(), kind.into());
            map.insert("metadata".into(), metadata);
            map.insert("spec".into(), spec);
            serde_norway::Value::Mapping(map)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = lint_file(Path::new("t.yaml"), &text);
    }

    #[test]
    fn yaml_like_text_never_panics(
        lines in prop::collection::vec(
            ("[ ]{0,6}", prop::sample::select(FIELDS), "[:\\- ]{0,3}", "[a-z0-9{}\\[\\]\"'|>&*!#-]{0,12}"),
            0..20,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(indent, key, sep, rest)| format!("{indent}{key}{sep}{rest}\n"))
            .collect();
        let _ = lint_file(Path::new("t.yaml"), &text);
    }

    #[test]
    fn arbitrary_documents_never_panic(docs in prop::collection::vec(document(), 1..3)) {
        let text = docs
            .iter()
            .map(|d| serde_norway::to_string(d).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("---\n");
        let problems = lint_file(Path::new("t.yaml"), &text);
        // Every line is well formed: named after the file.
        for p in problems {
            prop_assert!(p.to_string().starts_with("t.yaml"));
        }
    }

    #[test]
    fn mutated_templates_never_panic(
        template in prop::sample::select(yaml_files(&root().join("analysis-templates"))),
        at in any::<prop::sample::Index>(),
        insert in "[a-z0-9{}()\\[\\]\"'=~:#| -]{0,10}",
        cut in 0usize..20,
    ) {
        let text = std::fs::read_to_string(&template).unwrap_or_default();
        let mut chars: Vec<char> = text.chars().collect();
        let i = at.index(chars.len().max(1)).min(chars.len());
        let end = (i + cut).min(chars.len());
        chars.splice(i..end, insert.chars());
        let mutated: String = chars.into_iter().collect();
        let _ = lint_file(&template, &mutated);
    }
}

/// Runs `vigil lint` with `args`, killing it (and failing) if it has not ended by a generous
/// deadline: the old linter blocked forever reading a FIFO.
fn vigil_with_deadline(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vigil");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("vigil {args:?} did not end: it blocked");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn good_template() -> String {
    std::fs::read_to_string(root().join("analysis-templates/http-error-rate.yaml"))
        .expect("read template")
}

#[test]
fn a_symlink_loop_is_walked_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), good_template()).expect("write");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).expect("symlink");
    let out = vigil_with_deadline(&["lint", &dir.path().to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("vigil lint: 1 file ok"), "{stderr}");
    assert!(stderr.contains("already walked"), "{stderr}");
}

#[test]
fn a_fifo_named_yaml_is_skipped_not_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a.yaml"), good_template()).expect("write");
    let fifo = dir.path().join("pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let out = vigil_with_deadline(&["lint", &dir.path().to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("pipe.yaml: not a regular file"), "{stderr}");
    // Named on the command line it is a usage error, still without blocking.
    let out = vigil_with_deadline(&["lint", &fifo.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn an_empty_folder_or_one_without_yaml_is_an_error_not_zero_files_ok() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_string_lossy().into_owned();
    let out = vigil_with_deadline(&["lint", &path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no YAML files found in {path}")),
        "{stderr}"
    );
    std::fs::write(dir.path().join("notes.txt"), "not yaml").expect("write");
    let out = vigil_with_deadline(&["lint", &path]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn lint_refuses_an_interval_of_100000000h_naming_the_field_and_ceiling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("t.yaml");
    std::fs::write(
        &file,
        good_template().replace("interval: 1m", "interval: 100000000h"),
    )
    .expect("write");
    let out = vigil(&["lint", &file.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("spec.metrics[0].interval: \"100000000h\" is longer than the ceiling of 720h (MAX_DURATION)"),
        "{stdout}"
    );
}

#[test]
fn with_traffic_lint_warns_about_gates_too_short_to_detect_their_margin() {
    let files = [
        "deploy/local-demo/rollout.yaml",
        "deploy/local-demo/templates.yaml",
    ];
    let at = |rps: &str| {
        let mut args = vec!["lint"];
        args.extend(files);
        args.extend([
            "--rps",
            rps,
            "--error-rate",
            "0.001",
            "--slow-share",
            "0.15",
        ]);
        vigil(&args)
    };
    let slow = at("2");
    let stderr = String::from_utf8_lossy(&slow.stderr);
    assert_eq!(
        slow.status.code(),
        Some(0),
        "a warning is not a problem: {stderr}"
    );
    assert!(slow.stdout.is_empty(), "problems only on stdout");
    assert!(
        stderr.contains(
            "warning: Rollout demo step 1 (demo-latency-vs-stable/slow-vs-stable): at 2 req/s and \
             20% weight the gate cannot detect x2"
        ),
        "{stderr}"
    );
    let busy = at("50");
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert_eq!(busy.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}
