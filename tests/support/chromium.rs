//! A real headless Chromium (Debian's `chromium`, installed by `make deps`) opening a local
//! HTML file: the rendered DOM, the console messages, and a screenshot.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What Chromium made of a page.
pub struct Rendered {
    /// The DOM after rendering (`--dump-dom`).
    pub dom: String,
    /// Console messages the page produced (Chromium's `CONSOLE` log lines).
    pub console: Vec<String>,
    /// The screenshot (PNG).
    pub screenshot: PathBuf,
}

/// The Chromium binary: `chromium` on PATH. Fails with how to install it (never skips).
fn binary() -> &'static str {
    let found = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "chromium is not installed: run `make deps` (Debian package `chromium`); this test \
         needs a real browser and does not skip"
    );
    "chromium"
}

fn run(page: &Path, work: &Path, extra: &[String]) -> (String, String) {
    let profile = tempfile::tempdir_in(work).expect("a profile directory");
    let output = Command::new(binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "chromium failed ({}): {stderr}",
        output.status
    );
    (stdout, stderr)
}

fn console_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|line| line.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect()
}

/// Opens `page` twice: once dumping the DOM (collecting console messages), once taking a
/// screenshot into `work`.
pub fn render(page: &Path, work: &Path) -> Rendered {
    let (dom, stderr) = run(page, work, &["--dump-dom".to_owned()]);
    let screenshot = work.join("screenshot.png");
    let (_, shot_stderr) = run(
        page,
        work,
        &[format!("--screenshot={}", screenshot.display())],
    );
    let mut console = console_lines(&stderr);
    console.extend(console_lines(&shot_stderr));
    Rendered {
        dom,
        console,
        screenshot,
    }
}
