//! Hostile input against everything a template writer or a shell pipeline controls: arbitrary
//! bytes and YAML-ish text to lint and to the template loader, arbitrary queries and argument
//! values to substitution, arbitrary CEL to the threshold judge, and a reader that goes away.
//!
//! Each property asserts no panic and, where work could grow, a counted bound (never a time).
//! Cases per property: 256 by default (the file runs in seconds in a debug build);
//! `PROPTEST_CASES=100000 cargo test --release --test hostile_input` for a longer campaign.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use proptest::prelude::*;
use vigil::analysis::judge::threshold::{
    MAX_CONDITION_BYTES, ThresholdInput, ThresholdJudge, check_condition_source,
    check_condition_tree, parse_condition,
};
use vigil::analysis::template::{shape, substitute, validate_template};
use vigil::api::AnalysisTemplate;
use vigil::lint::lint_file;

/// The config of every property: `PROPTEST_CASES` overrides the default of 256.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

/// Pieces of YAML shaped like an AnalysisTemplate, to reach deep into the loader.
const YAML_PIECES: &[&str] = &[
    "apiVersion: vigil.dev/v1alpha1\n",
    "kind: AnalysisTemplate\n",
    "metadata: {name: t}\n",
    "spec:\n",
    "  args:\n",
    "    - name: service\n",
    "      value: \"x\"\n",
    "  metrics:\n",
    "    - name: m\n",
    "      interval: 100000000h\n",
    "      count: 2\n",
    "      successCondition: result < 0.01\n",
    "      failureCondition: \"[1,2,3].map(a, [1,2].map(b, b)).size() > 0\"\n",
    "      sequential: {test: errorCounts}\n",
    "      provider:\n",
    "        prometheus:\n",
    "          address: http://p:9090\n",
    "          timeout: 1000000h\n",
    "          query: sum(rate(x{s=\"{{args.service}}\"}[5m]))\n",
    "          query: \"{{args.service}}-{{args.service}}\"\n",
    "  - &a [*a, *a]\n",
    "!!binary aGk=\n",
    "---\n",
    "{{{{\n",
    "]]]\n",
];

fn yaml_like() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(YAML_PIECES).prop_map(str::to_owned),
            "[ a-z:{}\\[\\]\"'\\-#&*!|>\n]{0,20}",
        ],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

/// What a value outside quotes may be, as `substitute` documents it.
fn neutral_for(value: &str) -> &'static str {
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b)
            if (b.is_ascii_alphabetic() || *b == b'_' || *b == b':')
                && bytes.iter().all(|b| ident(*b)) =>
        {
            return "x";
        }
        Some(b) if b.is_ascii_digit() => {
            let units = value.trim_start_matches(|c: char| c.is_ascii_digit());
            let is_duration = !units.is_empty()
                && value
                    .split(|c: char| c.is_ascii_digit())
                    .all(|unit| ["", "ms", "s", "m", "h", "d", "w", "y"].contains(&unit))
                && value.ends_with(|c: char| c.is_ascii_alphabetic());
            if is_duration {
                return "1m";
            }
            return "1";
        }
        _ => {}
    }
    "x"
}

const QUERY_PIECES: &[&str] = &[
    "sum(",
    "rate(",
    ")",
    "x",
    "{a=\"",
    "{a=~\"",
    "{a!~'",
    "\"}",
    "'}",
    "}",
    "[",
    "]",
    " or ",
    " - ",
    " > ",
    "`",
    "{{args.v}}",
    "{{args.w}}",
    "{{ args.v }}",
    " offset ",
    "5m",
    "# comment\n",
];

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(QUERY_PIECES), 1..14).prop_map(|p| p.concat())
}

fn arg_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_:]{1,8}",
        "[0-9]{1,3}(ms|s|m|h)",
        "[0-9]{1,3}(\\.[0-9])?",
        "\\PC{0,16}",
        Just("5m-4m".to_owned()),
        Just(".*".to_owned()),
        Just("x\"} or vector(1) or {x=\"".to_owned()),
        Just("http_requests_total-http_requests_total".to_owned()),
        Just("Inf".to_owned()),
        Just("sum".to_owned()),
    ]
}

const CEL_PIECES: &[&str] = &[
    "result",
    " > 0",
    " && ",
    " || ",
    "!",
    "-",
    "(",
    ")",
    "[1,2,3,4,5,6,7,8,9,10]",
    ".map(a, ",
    ".filter(s, ",
    ".all(s, s.value < 0.5)",
    ".exists(s, ",
    ".size()",
    "'(((('",
    "r\"\\\"",
    "\"\"\"",
    "isNaN(result)",
    "math.abs(",
    " ? 1 : 2",
    " in ",
    "a",
    "{'k': 1}",
];

fn cel_source() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(CEL_PIECES), 1..40).prop_map(|p| p.concat()),
        (prop::sample::select(CEL_PIECES), 1usize..300).prop_map(|(piece, n)| piece.repeat(n)),
        "\\PC{0,64}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_to_lint_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = lint_file(Path::new("b.yaml"), &text);
    }

    #[test]
    fn yaml_like_text_to_lint_and_the_template_loader_never_panics(text in yaml_like()) {
        for problem in lint_file(Path::new("y.yaml"), &text) {
            prop_assert!(problem.to_string().starts_with("y.yaml"));
        }
        if let Ok(template) = serde_norway::from_str::<AnalysisTemplate>(&text) {
            let _ = validate_template(&template.spec);
        }
    }

    #[test]
    fn substitution_never_changes_the_shape_of_a_query(
        query in query(),
        v in arg_value(),
        w in arg_value(),
    ) {
        let hostile = BTreeMap::from([("v".to_owned(), v.clone()), ("w".to_owned(), w.clone())]);
        let Ok(out) = substitute(&query, &hostile) else { return Ok(()) };
        let neutral_args = BTreeMap::from([
            ("v".to_owned(), neutral_for(&v).to_owned()),
            ("w".to_owned(), neutral_for(&w).to_owned()),
        ]);
        let neutral = substitute(&query, &neutral_args);
        if let (Ok(ast), Ok(Ok(neutral_ast))) = (
            promql_parser::parser::parse(&out),
            neutral.as_deref().map(promql_parser::parser::parse),
        ) {
            prop_assert_eq!(shape(&ast), shape(&neutral_ast), "{} -> {}", query, out);
        }
    }

    #[test]
    fn cel_conditions_compile_only_within_the_static_bounds(source in cel_source()) {
        let Ok(judge) = ThresholdJudge::new(Some(&source), None) else { return Ok(()) };
        // Compiled, so within every bound: the work of one evaluation is counted by them.
        prop_assert!(source.len() <= MAX_CONDITION_BYTES);
        prop_assert_eq!(check_condition_source(&source), Ok(()));
        let program = parse_condition("successCondition", &source).expect("compiled once already");
        prop_assert_eq!(check_condition_tree(program.expression()), Ok(()));
        let series = vec![(BTreeMap::new(), 0.1); 100];
        let _ = judge.judge(&ThresholdInput::Vector(series));
        let _ = judge.judge(&ThresholdInput::Number(f64::NAN));
    }
}

#[test]
fn crds_into_a_reader_that_closes_after_one_line_exits_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("crds")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vigil crds");
    let mut first = String::new();
    {
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("one line");
        // Dropped here: the pipe closes while vigil still has ~270 KB to write.
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    assert!(first.starts_with("apiVersion"), "{first}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}
