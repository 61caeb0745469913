//! `vigil history NAME`: a Rollout's releases, with the DORA figures over them (deployment
//! frequency, change failure rate, time to restore). From a `vigil run` state directory when it
//! holds the Rollout, else from the cluster (`history_cluster.rs`), printed alike.

use std::fmt::Write as _;
use std::path::PathBuf;

use jiff::Timestamp;

use crate::dora::{History, Outcome};
use crate::platform::local::engine::read_history;

/// Arguments of `vigil history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The Rollout.
    pub name: String,
    /// The state directory of `vigil run`; looked at first.
    #[arg(long, default_value = ".vigil")]
    pub state_dir: PathBuf,
    /// The namespace, when read from the cluster (default: the kubeconfig context's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

/// Runs `vigil history`.
pub fn run(args: &HistoryArgs) -> i32 {
    let local = args
        .state_dir
        .join(format!("{}.rollout.json", args.name))
        .is_file();
    let history = if local {
        read_history(&args.state_dir, &args.name).map_err(|e| e.to_string())
    } else {
        from_cluster(args)
    };
    match history {
        Ok(history) => {
            crate::cli::write_stdout(&render(&args.name, &history, Timestamp::now()));
            0
        }
        Err(error) => {
            eprintln!("vigil history: {error}");
            1
        }
    }
}

/// The history from the cluster; with no cluster configured, why the state directory has
/// none (the likelier mistake: a wrong name or `--state-dir`).
fn from_cluster(args: &HistoryArgs) -> Result<History, String> {
    use crate::cli::history_cluster::{ClusterHistoryError, read};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("failed to start the async runtime: {e}"))?;
    match runtime.block_on(read(&args.name, args.namespace.as_deref())) {
        Ok(history) => Ok(history),
        Err(ClusterHistoryError::ConfigureClient(..)) => {
            let local = read_history(&args.state_dir, &args.name)
                .err()
                .map_or_else(String::new, |e| e.to_string());
            Err(format!("{local} (and no Kubernetes cluster is configured)"))
        }
        Err(error) => Err(error.to_string()),
    }
}

fn seconds(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) if s < 7200.0 => format!("{:.1}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3600.0),
    }
}

/// The table of releases, newest last, then the DORA figures.
pub fn render(name: &str, history: &History, now: Timestamp) -> String {
    let mut out = String::new();
    if history.releases.is_empty() {
        let _ = writeln!(out, "{name}: no release recorded yet");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<18} {:>7} {:<11} {:>9} {:>8}  REASON",
        "STARTED", "REVISION", "ATTEMPT", "OUTCOME", "DURATION", "RESTORE"
    );
    for release in &history.releases {
        let detail = release.reason.clone().unwrap_or_default();
        let line = format!(
            "{:<20} {:<18} {:>7} {:<11} {:>9} {:>8}  {}",
            release.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            truncate(&release.revision, 18),
            release.attempt,
            release.outcome.as_str(),
            seconds(release.duration_seconds()),
            seconds(release.time_to_restore_seconds),
            detail
        );
        let _ = writeln!(out, "{}", truncate(&line, 200));
        if let Some(report) = &release.report {
            let _ = writeln!(out, "{:<20} report: {report}", "");
        }
    }
    out.push_str(&dora_summary(history, now));
    out
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// Deployment frequency, change failure rate and mean time to restore over the history.
#[allow(clippy::cast_precision_loss)] // at most HISTORY_KEPT releases
pub fn dora_summary(history: &History, now: Timestamp) -> String {
    let count = |o: Outcome| history.releases.iter().filter(|r| r.outcome == o).count();
    let (promoted, rolled_back) = (count(Outcome::Promoted), count(Outcome::RolledBack));
    let ended = promoted + rolled_back;
    let mut out = format!(
        "\n{} releases: {promoted} promoted, {rolled_back} rolled back",
        history.releases.len()
    );
    if ended > 0 {
        let _ = write!(
            out,
            "; change failure rate {:.0}%",
            100.0 * rolled_back as f64 / ended as f64
        );
    }
    if let Some(first) = history.releases.first() {
        let days = now.duration_since(first.started_at).as_secs_f64() / 86_400.0;
        let _ = write!(
            out,
            "; deployment frequency {:.2} promoted/day",
            promoted as f64 / days.max(1.0)
        );
    }
    let restores: Vec<f64> = history
        .releases
        .iter()
        .filter_map(|r| r.time_to_restore_seconds)
        .collect();
    if !restores.is_empty() {
        let mean = restores.iter().sum::<f64>() / restores.len() as f64;
        let _ = write!(out, "; mean time to restore {}", seconds(Some(mean)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dora::ReleaseRecord;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn release(revision: &str, start: i64, end: i64, outcome: Outcome) -> ReleaseRecord {
        ReleaseRecord {
            revision: revision.to_owned(),
            attempt: 1,
            started_at: at(start),
            ended_at: Some(at(end)),
            outcome,
            reason: None,
            time_to_restore_seconds: None,
            report: None,
        }
    }

    #[test]
    fn the_history_lists_releases_and_the_dora_figures() {
        let mut failed = release("c3", 200, 260, Outcome::RolledBack);
        failed.reason = Some("error-rate: result < 0.05 is false".to_owned());
        failed.time_to_restore_seconds = Some(1.5);
        failed.report = Some(".vigil/reports/web-c3-1.html".to_owned());
        let history = History {
            releases: vec![
                release("b2", 0, 120, Outcome::Promoted),
                failed,
                ReleaseRecord {
                    ended_at: None,
                    ..release("d4", 300, 0, Outcome::InProgress)
                },
            ],
        };
        let text = render("web", &history, at(400));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("STARTED"), "{text}");
        assert!(
            lines[1].contains("b2") && lines[1].contains("promoted"),
            "{text}"
        );
        assert!(lines[1].contains("2.0m"), "{text}");
        assert!(
            lines[2].contains("rolled back")
                && lines[2].contains("60.0s")
                && lines[2].contains("1.5s")
                && lines[2].contains("error-rate: result < 0.05 is false"),
            "{text}"
        );
        assert!(
            lines[3]
                .trim_start()
                .starts_with("report: .vigil/reports/web-c3-1.html"),
            "{text}"
        );
        assert!(lines[4].contains("in progress"), "{text}");
        assert!(
            text.contains("3 releases: 1 promoted, 1 rolled back; change failure rate 50%"),
            "{text}"
        );
        assert!(
            text.contains("deployment frequency 1.00 promoted/day"),
            "{text}"
        );
        assert!(text.contains("mean time to restore 1.5s"), "{text}");
    }

    #[test]
    fn an_empty_history_says_so() {
        assert_eq!(
            render("web", &History::default(), at(0)),
            "web: no release recorded yet\n"
        );
    }
}
