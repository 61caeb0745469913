//! `vigil analyze`: run analysis templates against a Prometheus outside any cluster, live or
//! replayed over a past window (backtesting a template on past deployments).

use crate::cli::analyze_progress;
use crate::platform::local::jobs::LocalJobs;
use std::path::PathBuf;

use jiff::Timestamp;
use url::Url;

use crate::analysis::driver::{DriverError, MeasureAt, advance, clients_for};
use crate::analysis::instantiate::instantiate;
use crate::analysis::provider::prometheus::ConcurrencyLimiter;
use crate::analysis::provider::resolve::{CommandLinePrometheus, NoSecrets};
use crate::analysis::run::{self, RunError};
use crate::analysis::template::validate_template;
use crate::api::{AnalysisPhase, AnalysisRunSpec, AnalysisRunStatus, Argument};
use crate::manifest::Manifest;

/// Exit code: the run was Successful.
pub const EXIT_SUCCESSFUL: i32 = 0;
/// Exit code: the run Failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the run was Inconclusive (or the window ended first).
pub const EXIT_INCONCLUSIVE: i32 = 2;
/// Exit code: measurements could not be taken.
pub const EXIT_ERROR: i32 = 3;
/// Exit code: bad usage or an invalid template.
pub const EXIT_USAGE: i32 = 4;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Table,
    /// The run's status as JSON: phase, message, and per metric every measurement.
    Json,
}

/// Arguments of `vigil analyze`.
#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    /// AnalysisTemplate YAML files (several documents per file allowed).
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Prometheus to query, replacing each metric's `address` (templates may then leave it
    /// unset).
    #[arg(long, value_name = "URL", value_parser = CommandLinePrometheus::parse_url)]
    pub prometheus: Option<Url>,
    /// A template argument, `NAME=VALUE`; repeat for several.
    #[arg(long = "arg", value_name = "NAME=VALUE", value_parser = parse_arg)]
    pub args: Vec<(String, String)>,
    /// Replay the last DURATION (e.g. `30m`, `2h`) up to now instead of running live.
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["start", "end"], value_parser = parse_since)]
    pub since: Option<std::time::Duration>,
    /// Replay from this time (RFC 3339) instead of running live.
    #[arg(long, requires = "end")]
    pub start: Option<Timestamp>,
    /// End of the replay window (RFC 3339).
    #[arg(long, requires = "start")]
    pub end: Option<Timestamp>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// `--since`: a duration as templates write them (`30m`, `1h30m`).
fn parse_since(text: &str) -> Result<std::time::Duration, String> {
    crate::api::duration::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e}"))
        .and_then(|d| {
            if d.is_zero() {
                Err(format!("{text:?}: the window must be longer than 0"))
            } else {
                Ok(d)
            }
        })
}

fn parse_arg(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: expected NAME=VALUE")),
    }
}

/// Why the analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    /// A file could not be read.
    #[error("read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A document is not an AnalysisTemplate or does not parse.
    #[error("{path}: document {index}: {reason}")]
    ParseTemplate {
        /// The file.
        path: PathBuf,
        /// Index of the document in the file.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A document does not parse; `vigil lint` names the fields (one problem per line, each
    /// `FILE: [DOC] PATH: PROBLEM`).
    #[error("{problems}")]
    ParseTemplateFields {
        /// The problems as `vigil lint` prints them, one per line.
        problems: String,
    },
    /// A template has problems `vigil lint` reports.
    #[error("{path}: {problems}")]
    ValidateTemplate {
        /// The file.
        path: PathBuf,
        /// The problems, one per line.
        problems: String,
    },
    /// The templates and args do not make a run.
    #[error("{0}")]
    Instantiate(#[from] crate::analysis::instantiate::InstantiateError),
    /// A provider cannot be configured, or the run could not be planned.
    #[error(transparent)]
    Drive(#[from] DriverError),
    /// The run could not be planned.
    #[error(transparent)]
    Plan(#[from] RunError),
    /// A replay was asked of a template with job metrics: a job runs now, not in the past.
    #[error(
        "metric {metric:?} runs a job, which cannot be replayed over --start/--end; analyze it live (without --start and --end)"
    )]
    ReplayJobMetric {
        /// The job metric.
        metric: String,
    },
    /// The replay window is empty.
    #[error("--start {start} is not before --end {end}")]
    ValidateWindow {
        /// Start.
        start: Timestamp,
        /// End.
        end: Timestamp,
    },
    /// An `--arg` names an argument no template declares (a typo would otherwise be
    /// ignored and the template's default used).
    #[error("--arg {name}: no template declares an argument {name:?} (declared: {declared})")]
    UnknownArg {
        /// The argument given.
        name: String,
        /// The arguments the templates declare.
        declared: String,
    },
    /// A template declares an argument without a value and no `--arg` gives it.
    #[error(
        "--arg {name}=VALUE is needed: template {template} declares `{name}` without a value{hint}"
    )]
    MissingArg {
        /// The argument.
        name: String,
        /// The template declaring it.
        template: String,
        /// What the value is, for a built-in argument (else empty).
        hint: &'static str,
    },
    /// `--since` reaches before the clock's start.
    #[error("--since: the window reaches before the clock can count")]
    ReadSince,
    /// The async runtime could not start.
    #[error("start the async runtime: {0}")]
    StartRuntime(std::io::Error),
}

/// Refuses an `--arg` that no template declares.
fn check_args_declared(
    templates: &[(String, crate::api::AnalysisTemplateSpec)],
    given: &[(String, String)],
) -> Result<(), AnalyzeError> {
    let declared: std::collections::BTreeSet<&str> = templates
        .iter()
        .flat_map(|(_, spec)| spec.args.iter().map(|a| a.name.as_str()))
        .collect();
    match given
        .iter()
        .find(|(name, _)| !declared.contains(name.as_str()))
    {
        None => Ok(()),
        Some((name, _)) => Err(AnalyzeError::UnknownArg {
            name: name.clone(),
            declared: if declared.is_empty() {
                "none".to_owned()
            } else {
                declared.into_iter().collect::<Vec<_>>().join(", ")
            },
        }),
    }
}

/// What a built-in argument's value is, for `vigil analyze`, where no Rollout passes it.
fn builtin_hint(name: &str) -> &'static str {
    match name {
        "rollout" => " (built in: the Rollout's name, the `rollout` label of its series)",
        "canary-revision" => {
            " (built in: the hash of the canary's revision, its series' `revision` label; `vigil get rollout NAME` shows it)"
        }
        "stable-revision" => {
            " (built in: the hash of the stable revision, its series' `revision` label; `vigil get rollout NAME` shows it)"
        }
        "baseline-revision" => {
            " (built in: the fair baseline's revision, `<stable revision>-baseline`)"
        }
        "namespace" => " (built in: the Rollout's namespace)",
        _ => "",
    }
}

/// Refuses a run whose templates declare an argument with no value that no `--arg` gives,
/// naming it (and what a built-in one is) rather than the template resolver's generic words.
fn check_args_given(
    templates: &[(String, crate::api::AnalysisTemplateSpec)],
    given: &[(String, String)],
) -> Result<(), AnalyzeError> {
    for (template, spec) in templates {
        let missing = spec.args.iter().find(|arg| {
            arg.value.is_none()
                && arg.value_from.is_none()
                && !given.iter().any(|(name, _)| *name == arg.name)
        });
        if let Some(arg) = missing {
            return Err(AnalyzeError::MissingArg {
                name: arg.name.clone(),
                template: template.clone(),
                hint: builtin_hint(&arg.name),
            });
        }
    }
    Ok(())
}

fn load_templates(
    files: &[PathBuf],
) -> Result<Vec<(String, crate::api::AnalysisTemplateSpec)>, AnalyzeError> {
    let mut templates = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).map_err(|source| AnalyzeError::ReadFile {
            path: path.clone(),
            source,
        })?;
        let parse_error = |index: usize, reason: String| {
            // The parser stops at the first problem and names no field; lint names each.
            let problems = crate::lint::lint_file(path, &text);
            if problems.is_empty() {
                AnalyzeError::ParseTemplate {
                    path: path.clone(),
                    index,
                    reason,
                }
            } else {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                AnalyzeError::ParseTemplateFields {
                    problems: lines.join("\n"),
                }
            }
        };
        let manifests =
            crate::manifest::manifests(&text).map_err(|e| parse_error(e.index, e.reason))?;
        for (index, manifest) in manifests {
            let (name, spec) = match manifest {
                Manifest::AnalysisTemplate { name, spec } => (name, spec),
                Manifest::Rollout(_) => return Err(parse_error(index, not_a_template("Rollout"))),
                Manifest::Other { kind } => return Err(parse_error(index, not_a_template(&kind))),
            };
            let problems = validate_template(&spec);
            if !problems.is_empty() {
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                return Err(AnalyzeError::ValidateTemplate {
                    path: path.clone(),
                    problems: lines.join("; "),
                });
            }
            let name = name.unwrap_or_else(|| format!("{}#{index}", path.display()));
            templates.push((name, spec));
        }
    }
    Ok(templates)
}

fn not_a_template(kind: &str) -> String {
    format!("kind {kind:?} is not AnalysisTemplate or ClusterAnalysisTemplate")
}

/// The clock the run follows: replayed instantly over a window, or the wall clock.
enum Clock {
    Replay { end: Timestamp },
    Live,
}

async fn execute(args: &AnalyzeArgs, quiet: bool) -> Result<AnalysisRunStatus, AnalyzeError> {
    let templates = load_templates(&args.files)?;
    check_args_declared(&templates, &args.args)?;
    check_args_given(&templates, &args.args)?;
    let (start, end) = match args.since {
        Some(since) => {
            let end = Timestamp::now();
            let since =
                jiff::SignedDuration::try_from(since).map_err(|_| AnalyzeError::ReadSince)?;
            let start = end
                .checked_sub(since)
                .map_err(|_| AnalyzeError::ReadSince)?;
            (Some(start), Some(end))
        }
        None => (args.start, args.end),
    };
    let given: Vec<Argument> = args
        .args
        .iter()
        .map(|(name, value)| Argument {
            name: name.clone(),
            value: Some(value.clone()),
            value_from: None,
        })
        .collect();
    let mut spec: AnalysisRunSpec = instantiate(&templates, &given)?;
    let limiter = ConcurrencyLimiter::default();
    let prometheus = args
        .prometheus
        .clone()
        .map_or(CommandLinePrometheus::None, CommandLinePrometheus::Override);
    let clients = clients_for(&spec, &prometheus, &NoSecrets, &limiter)?;
    let (mut now, clock) = match (start, end) {
        (Some(start), Some(end)) if start < end => {
            if let Some(job) = spec.metrics.iter().find(|m| m.provider.job.is_some()) {
                return Err(AnalyzeError::ReplayJobMetric {
                    metric: job.name.clone(),
                });
            }
            (start, Clock::Replay { end })
        }
        (Some(start), Some(end)) => return Err(AnalyzeError::ValidateWindow { start, end }),
        _ => (Timestamp::now(), Clock::Live),
    };
    let mut status = AnalysisRunStatus::default();
    // Job metrics run their command as a local process, as `vigil run` does.
    let jobs = LocalJobs::new("analyze");
    // A live run takes minutes: say so, then a line per measurement (a replay is instant).
    let mut progress = (matches!(clock, Clock::Live) && !quiet).then(|| {
        let names: Vec<String> = spec.metrics.iter().map(|m| m.name.clone()).collect();
        eprintln!("{}", analyze_progress::start_line(&names));
        analyze_progress::Progress::default()
    });
    loop {
        let at = match clock {
            Clock::Replay { .. } => MeasureAt::DueTime,
            Clock::Live => MeasureAt::Now(now),
        };
        let advanced = advance(&spec, &status, &clients, &jobs, now, at, usize::MAX).await?;
        status = advanced.status;
        if let Some(progress) = progress.as_mut() {
            for line in progress.new_lines(&status) {
                eprintln!("{line}");
            }
        }
        let Some(next) = advanced.next_at else {
            return Ok(status);
        };
        match clock {
            Clock::Replay { end } if next > end => {
                spec.terminate = true;
                let mut status = run::plan(&spec, &status, end)?.status;
                if status.phase == Some(AnalysisPhase::Terminated) {
                    status.message = Some(format!(
                        "the window ended at {end} before the run completed"
                    ));
                }
                return Ok(status);
            }
            Clock::Replay { .. } => now = next,
            Clock::Live => {
                let wait = next.duration_since(Timestamp::now());
                if let Ok(wait) = std::time::Duration::try_from(wait) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = tokio::signal::ctrl_c() => {
                            spec.terminate = true;
                        }
                    }
                }
                now = Timestamp::now();
            }
        }
    }
}

fn exit_code(phase: Option<AnalysisPhase>) -> i32 {
    match phase {
        Some(AnalysisPhase::Successful) => EXIT_SUCCESSFUL,
        Some(AnalysisPhase::Failed) => EXIT_FAILED,
        Some(AnalysisPhase::Error) => EXIT_ERROR,
        _ => EXIT_INCONCLUSIVE,
    }
}

/// Renders the run for people.
pub fn render_table(status: &AnalysisRunStatus) -> String {
    let phase = status.phase.unwrap_or_default();
    let mut out = format!("Run: {phase}");
    if let Some(message) = &status.message {
        out.push_str(&format!(" — {message}"));
    }
    out.push('\n');
    if let Some(score) = &status.score {
        out.push_str(&format!(
            "Score: {} ({:?}) — {}\n",
            score.score, score.classification, score.reason
        ));
    }
    for metric in &status.metric_results {
        let dry = if metric.dry_run { " (dry-run)" } else { "" };
        out.push_str(&format!(
            "\n{}{dry}: {} — {} measurement(s): {} successful, {} failed, {} inconclusive, {} error\n",
            metric.name, metric.phase, metric.count, metric.successful, metric.failed, metric.inconclusive, metric.error
        ));
        if let Some(message) = &metric.message {
            out.push_str(&format!("  {message}\n"));
        }
        for m in &metric.measurements {
            out.push_str(&format!(
                "  {}  {:<12} {:<12} {}\n",
                m.started_at.0,
                m.phase.to_string(),
                m.value.as_deref().unwrap_or("-"),
                m.reason.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

/// Runs `vigil analyze` and returns the exit code. `quiet` (`--quiet`) drops the progress
/// lines of a live run.
pub fn run(args: &AnalyzeArgs, quiet: bool) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("vigil analyze: {}", AnalyzeError::StartRuntime(error));
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(execute(args, quiet)) {
        Ok(status) => {
            match args.output {
                OutputFormat::Json => match serde_json::to_string_pretty(&status) {
                    Ok(json) => crate::outln!("{json}"),
                    Err(error) => {
                        eprintln!("vigil analyze: serialise the result: {error}");
                        return EXIT_ERROR;
                    }
                },
                OutputFormat::Table => crate::cli::write_stdout(&render_table(&status)),
            }
            exit_code(status.phase)
        }
        Err(error) => {
            eprintln!("vigil analyze: {error}");
            match error {
                AnalyzeError::Plan(_)
                | AnalyzeError::Drive(DriverError::Run(_))
                | AnalyzeError::StartRuntime(_) => EXIT_ERROR,
                _ => EXIT_USAGE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Issue 16, friction 8: a misspelt `--arg` was accepted and the default used.
    #[test]
    fn an_arg_no_template_declares_is_refused_naming_the_declared_ones() {
        let mut spec = crate::api::AnalysisTemplateSpec::default();
        for name in ["rollout", "window"] {
            spec.args.push(Argument {
                name: name.into(),
                value: None,
                value_from: None,
            });
        }
        let templates = vec![("t".to_owned(), spec)];
        assert!(check_args_declared(&templates, &[("window".into(), "5m".into())]).is_ok());
        let error = check_args_declared(&templates, &[("windw".into(), "5m".into())])
            .expect_err("refused")
            .to_string();
        assert!(error.contains("--arg windw"), "{error}");
        assert!(error.contains("declared: rollout, window"), "{error}");
    }

    /// Issue 16, friction 8: `--since 30m` instead of two RFC 3339 times.
    #[test]
    fn since_takes_a_duration_and_excludes_start_and_end() {
        let cli =
            crate::cli::Cli::try_parse_from(["vigil", "analyze", "-f", "t.yaml", "--since", "30m"])
                .expect("parses");
        assert!(matches!(
            cli.command,
            crate::cli::Command::Analyze(ref a) if a.since == Some(std::time::Duration::from_secs(1800))
        ));
        assert!(parse_since("0s").is_err());
        assert!(parse_since("soon").is_err());
        let both = crate::cli::Cli::try_parse_from([
            "vigil",
            "analyze",
            "-f",
            "t.yaml",
            "--since",
            "30m",
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2026-01-01T01:00:00Z",
        ]);
        assert!(both.is_err());
    }
}
