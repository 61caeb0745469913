//! The templates vigil ships select each arm by revision, and every built-in argument they
//! may use is documented (issue 16, friction 7).

use std::path::Path;
use std::process::Command;

use vigil::analysis::instantiate::BUILTIN_ARGS;

const ROLE_WARNING: &str = "selects an arm by `role`";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `vigil lint PATHS...`: (exit code, stdout, stderr).
fn lint(paths: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("lint")
        .args(paths.iter().map(|p| root().join(p)))
        .output()
        .expect("run vigil lint");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn no_shipped_template_selects_an_arm_by_role() {
    let (code, stdout, stderr) = lint(&[
        "analysis-templates",
        "deploy/local-demo/templates.yaml",
        "deploy/local-demo/rollout.yaml",
        "deploy/local-demo/blue-green",
        "deploy/examples",
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let by_role: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(ROLE_WARNING))
        .collect();
    assert!(by_role.is_empty(), "{}", by_role.join("\n"));
}

/// The control: lint warns about the former shape (exit 0: a warning, not a problem), naming
/// the query field.
#[test]
fn lint_warns_about_a_query_selecting_the_canary_by_role() {
    let (code, stdout, stderr) = lint(&["tests/fixtures/http-error-rate-by-role.yaml"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(ROLE_WARNING))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("spec.metrics[0].provider.prometheus.query")
            && warning.contains("{{args.canary-revision}}"),
        "{warning}"
    );
}

/// The README's table of built-in arguments has a row for each one vigil passes.
#[test]
fn every_builtin_argument_is_documented_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("### Built-in arguments")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a section \"### Built-in arguments\"");
    for name in BUILTIN_ARGS {
        assert!(
            section.contains(&format!("| `{name}` |")),
            "README's built-in arguments table has no row for `{name}`"
        );
    }
}
