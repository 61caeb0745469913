//! The `vigil` command line: each subcommand in its own module, dispatched from `main`.

pub mod analyze;
pub mod analyze_progress;
pub mod completions;
pub mod controller;
pub mod convert;
pub mod crds;
pub mod demo;
pub mod demo_app;
pub mod history;
pub mod history_cluster;
pub mod judge;
pub mod kubectl;
pub mod kubectl_watch;
pub mod lint;
pub mod live_view;
pub mod local;
pub mod migrate;
pub mod plan;
pub mod report;
pub mod run;
pub mod verbs;

use clap::{Parser, Subcommand};

/// vigil: canary releases judged statistically.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, long_about = None)]
pub struct Cli {
    /// How log lines on stderr look: `text` (colour only on a terminal) or `json` lines.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<crate::telemetry::LogFormat>,
    /// Log warnings and errors only.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the CustomResourceDefinitions, or write them to a folder with --out.
    Crds(crds::CrdsArgs),
    /// Run analysis templates against a Prometheus, live or replayed over a past window.
    ///
    /// Exit code: 0 Successful, 1 Failed, 2 Inconclusive (or the window ended first), 3 Error,
    /// 4 bad usage or an invalid template.
    Analyze(analyze::AnalyzeArgs),
    /// Check Rollout and AnalysisTemplate YAML files: schema, unknown fields, durations, weights,
    /// CEL conditions, PromQL and its known traps. Exit 1 when a problem is found.
    Lint(lint::LintArgs),
    /// Translate Argo Rollouts (Rollout, AnalysisTemplate, ClusterAnalysisTemplate) and Flagger
    /// (Canary with its MetricTemplates and Deployment) YAML into vigil's, on stdout; one line
    /// per field that could not be mapped, with its path and why, on stderr.
    ///
    /// Exit code: 0 every field mapped, 1 some field not mapped (the output is still written),
    /// 2 a file could not be read or is not YAML.
    Convert(convert::ConvertArgs),
    /// Run the demo HTTP service (injected errors and latency) used by `vigil demo` and tests.
    DemoApp(demo_app::DemoAppArgs),
    /// Run the Kubernetes controller: Rollouts and AnalysisRuns, /metrics /livez /readyz,
    /// leader election. Stops gracefully on SIGTERM or Ctrl-C.
    Controller(controller::ControllerArgs),
    /// Show a Rollout, from a running `vigil run` or the cluster (see "Where the verbs act"
    /// in the README: `--state-dir`, `--admin`, `--cluster`).
    #[command(subcommand)]
    Get(kubectl::GetCommand),
    /// Finish the current step (a pause, an Inconclusive analysis), or with --full skip every
    /// remaining step and analysis.
    #[command(after_help = verbs::EXIT_CODES_HELP)]
    Promote(kubectl::PromoteArgs),
    /// Send all traffic back to the stable version.
    #[command(after_help = verbs::EXIT_CODES_HELP)]
    Abort(kubectl::Target),
    /// Start a rolled-back canary again from the first step; with --analysis, run the analysis
    /// the rollout waits on (Inconclusive, Error, Terminated) again.
    #[command(after_help = verbs::EXIT_CODES_HELP)]
    Retry(kubectl::RetryArgs),
    /// Hold the rollout where it is (`spec.paused = true`).
    #[command(after_help = verbs::EXIT_CODES_HELP)]
    Pause(kubectl::Target),
    /// Continue a rollout held by `vigil pause` (`spec.paused = false`).
    #[command(after_help = verbs::EXIT_CODES_HELP)]
    Resume(kubectl::Target),
    /// Print the Rollout that adopts an existing workload (`migrate deployment NAME [-n NS]`:
    /// `spec.workloadRef` with `scaleDown: progressively`), read from the cluster.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Run a statistical judge on raw samples or counts, offline.
    #[command(after_help = judge::EXIT_CODES_HELP)]
    Judge(judge::JudgeArgs),
    /// Run Rollouts and AnalysisTemplates from files on this machine (processes, a weighted
    /// proxy, a state directory) until Ctrl-C. Exit 2 on invalid files, 1 when it cannot start.
    Run(run::RunArgs),
    /// Talk to a running `vigil run`: apply, and the same verbs as `vigil get|promote|…`
    /// (kept as aliases).
    Local(local::LocalArgs),
    /// Print the shell completion script: `source <(vigil completions bash)`, or write it where
    /// zsh (`_vigil` in `$fpath`) or fish (`~/.config/fish/completions/vigil.fish`) look.
    Completions(completions::CompletionsArgs),
    /// A real canary release on this machine in a few minutes: Prometheus, the demo app, load,
    /// a healthy release promoted and a bad one rolled back, with a summary.
    Demo(demo::DemoArgs),
    /// Write one self-contained HTML report (summary, timeline, per-metric plots of canary and
    /// baseline with each verdict) of a Rollout's latest release or of an AnalysisRun, from a
    /// `vigil run` state directory or the cluster. Exit 1 when it cannot be made.
    Report(report::ReportArgs),
    /// List a Rollout's releases recorded by `vigil run` (outcome, duration, time to restore,
    /// report) with the DORA figures: deployment frequency, change failure rate, time to
    /// restore.
    History(history::HistoryArgs),
    /// Sensitivity preview: what each sequential gate of a Rollout can detect at a given
    /// traffic, and in how long (exit codes: 0 printed, 2 invalid files or flags).
    Plan(plan::PlanArgs),
}

impl Cli {
    /// What `--log-format` and `--quiet` ask of the log.
    pub fn log_options(&self) -> crate::telemetry::LogOptions {
        crate::telemetry::LogOptions {
            format: self.log_format,
            quiet: self.quiet,
        }
    }

    /// The log filter when `RUST_LOG` is not set: `vigil demo` prints its own progress on
    /// stdout, so its log keeps to warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "warn",
            _ => crate::telemetry::DEFAULT_FILTER,
        }
    }
}

/// How the binary was invoked: `kubectl-vigil` (a kubectl plugin, run as `kubectl vigil …`)
/// or anything else. Parsing ignores argv\[0\] either way; the name only shows in help and
/// error messages.
pub fn bin_name(argv0: Option<&std::ffi::OsStr>) -> &'static str {
    let invoked = argv0
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(std::ffi::OsStr::to_str);
    match invoked {
        Some("kubectl-vigil") => "kubectl vigil",
        _ => "vigil",
    }
}

impl Cli {
    /// Parses the process arguments, naming the binary as it was invoked (see [`bin_name`]).
    pub fn try_parse_env() -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let argv0 = std::env::args_os().next();
        let matches = Cli::command()
            .bin_name(bin_name(argv0.as_deref()))
            .try_get_matches()?;
        Cli::from_arg_matches(&matches)
    }
}

/// The exit code of a command line that does not parse: each command documents its own
/// (`vigil analyze` reserves 0–3 for verdicts, so its usage errors are 4).
pub fn usage_exit_code(command: Option<&str>) -> i32 {
    match command {
        Some("analyze") => analyze::EXIT_USAGE,
        // 2 is Inconclusive there too.
        Some("judge") => judge::EXIT_USAGE,
        _ => 2,
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Analyze(args) => analyze::run(&args, cli.quiet),
        Command::Lint(args) => lint::run(&args),
        Command::Convert(args) => convert::run(&args),
        Command::DemoApp(args) => demo_app::run(&args),
        Command::Controller(args) => controller::run(&args),
        Command::Get(command) => {
            let kubectl::GetCommand::Rollout(ref args) = command;
            let local = local::LocalCommand::Get {
                name: args.target.name.clone(),
                watch: args.watch,
                output: "line".into(),
            };
            verbs::dispatch(&args.target.location, local, || kubectl::get(&command))
        }
        Command::Promote(args) => {
            let local = local::LocalCommand::Promote {
                name: args.target.name.clone(),
                full: args.full,
            };
            verbs::dispatch(&args.target.location, local, || kubectl::promote(&args))
        }
        Command::Abort(target) => {
            let local = local::LocalCommand::Abort {
                name: target.name.clone(),
            };
            verbs::dispatch(&target.location, local, || {
                kubectl::set_abort(&target, true)
            })
        }
        Command::Retry(args) => {
            let local = local::LocalCommand::Retry {
                name: args.target.name.clone(),
                analysis: args.analysis,
            };
            verbs::dispatch(&args.target.location, local, || {
                if args.analysis {
                    kubectl::rerun_analysis(&args.target)
                } else {
                    kubectl::set_abort(&args.target, false)
                }
            })
        }
        Command::Pause(target) => {
            let local = local::LocalCommand::Pause {
                name: target.name.clone(),
            };
            verbs::dispatch(&target.location, local, || {
                kubectl::set_paused(&target, true)
            })
        }
        Command::Resume(target) => {
            let local = local::LocalCommand::Resume {
                name: target.name.clone(),
            };
            verbs::dispatch(&target.location, local, || {
                kubectl::set_paused(&target, false)
            })
        }
        Command::Migrate(command) => migrate::run(&command),
        Command::Run(args) => run::run(&args),
        Command::Local(args) => local::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Report(args) => report::run(&args),
        Command::History(args) => history::run(&args),
        Command::Plan(args) => plan::run(&args),
        Command::Completions(args) => completions::run(&args),
        Command::Judge(args) => judge::run(args).unwrap_or_else(|error| {
            eprintln!("vigil judge: {error}");
            3
        }),
    }
}

/// Writes `text` to stdout. When the reader went away (`vigil crds | head -1`), the process
/// ends quietly with exit code 0, as a pipeline expects, instead of panicking as `print!` does
/// on a broken pipe. SIGPIPE stays ignored (Rust's default), so long-running commands that
/// write to sockets and child pipes keep getting errors, not signals.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(std::io::stderr(), "vigil: write to stdout: {error}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
}

/// [`write_stdout`] of `format!(...)` plus a newline: `println!` without the broken-pipe panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubectl_plugin_name_is_recognised_and_arguments_parse_alike() {
        use std::ffi::OsStr;
        assert_eq!(
            bin_name(Some(OsStr::new("/usr/local/bin/kubectl-vigil"))),
            "kubectl vigil"
        );
        assert_eq!(bin_name(Some(OsStr::new("target/debug/vigil"))), "vigil");
        assert_eq!(bin_name(None), "vigil");
        let cli = Cli::try_parse_from(["kubectl-vigil", "promote", "web", "-n", "shop", "--full"])
            .expect("parses");
        assert!(matches!(cli.command, Command::Promote(ref a) if a.full && a.target.name == "web"));
        let cli =
            Cli::try_parse_from(["vigil", "get", "rollout", "web", "--watch"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Get(kubectl::GetCommand::Rollout(ref a)) if a.watch)
        );
        let cli = Cli::try_parse_from([
            "vigil",
            "controller",
            "--no-leader-election",
            "--concurrency",
            "4",
        ])
        .expect("parses");
        assert!(
            matches!(cli.command, Command::Controller(ref a) if a.no_leader_election && a.concurrency == 4)
        );
    }
}
