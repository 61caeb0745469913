//! `vigil demo` end to end: the real binary with a real Prometheus (Debian's package), real
//! demo-app processes behind vigil's proxy and real load. It must promote v2, roll v3 back, and
//! show v3 judged both ways (the sequential test against the stable, and CEL thresholds alone)
//! with the time each took and the requests each let through.

use std::process::Command;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

#[test]
fn demo_promotes_v2_rolls_v3_back_and_shows_both_judges() {
    let output = Command::new(VIGIL)
        .arg("demo")
        .output()
        .expect("run vigil demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vigil demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for words in [
        "v2 promoted",
        "v3 rolled back",
        "v3, judged two ways",
        "sequential test vs stable (latency)",
        "CEL thresholds (error rate, p95)",
    ] {
        assert!(stdout.contains(words), "no {words:?} in\n{stdout}");
    }
    // The sequential latency test records both arms' slow and total requests (the report and
    // the live view draw the canary beside the stable from them; issue 16).
    assert!(
        stdout.contains("slow-vs-stable Successful value canary "),
        "{stdout}"
    );
    // v3 is rolled back twice: once by each judge, each failing its analysis.
    assert_eq!(stdout.matches("v3 rolled back").count(), 2, "{stdout}");
    let row = |judge: &str| -> Vec<String> {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(judge))
            .unwrap_or_else(|| panic!("no row for {judge} in\n{stdout}"));
        line[line.find(judge).map_or(0, |i| i + judge.len())..]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    for judge in [
        "sequential test vs stable (latency)",
        "CEL thresholds (error rate, p95)",
    ] {
        let cells = row(judge);
        // "<failed> s <back> s <requests> (<errors>)": each judge failed v3 and put every
        // request back on stable, after v3 had served some.
        assert_eq!(cells.len(), 6, "{judge}: {cells:?}");
        let failed: f64 = cells[0].parse().unwrap_or(-1.0);
        let back: f64 = cells[2].parse().unwrap_or(-1.0);
        let requests: u64 = cells[4].parse().unwrap_or(0);
        assert!(failed >= 0.0 && back >= 0.0, "{judge}: {cells:?}");
        assert!(requests > 0, "{judge}: {cells:?}");
    }
}
