//! The `vigil` command line: each subcommand in its own module, dispatched from `main`.

pub mod analyze;
pub mod crds;
pub mod demo;
pub mod demo_app;
pub mod judge;
pub mod lint;
pub mod local;
pub mod run;

use clap::{Parser, Subcommand};

/// vigil: canary releases judged statistically.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about, long_about = None)]
pub struct Cli {
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
    /// Run the demo HTTP service (injected errors and latency) used by `vigil demo` and tests.
    DemoApp(demo_app::DemoAppArgs),
    /// Run a statistical judge on raw samples or counts, offline.
    Judge(judge::JudgeArgs),
    /// Run Rollouts and AnalysisTemplates from files on this machine (processes, a weighted
    /// proxy, a state directory) until Ctrl-C. Exit 2 on invalid files, 1 when it cannot start.
    Run(run::RunArgs),
    /// Talk to a running `vigil run`: get, promote, abort, retry, pause, resume, apply.
    Local(local::LocalArgs),
    /// A real canary release on this machine in a few minutes: Prometheus, the demo app, load,
    /// a healthy release promoted and a bad one rolled back, with a summary.
    Demo(demo::DemoArgs),
}

impl Cli {
    /// The log filter when `RUST_LOG` is not set: `vigil demo` prints its own progress on
    /// stdout, so its log keeps to warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self.command {
            Command::Demo(_) => "warn",
            _ => crate::telemetry::DEFAULT_FILTER,
        }
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Lint(args) => lint::run(&args),
        Command::DemoApp(args) => demo_app::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Local(args) => local::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Judge(args) => judge::run(args).unwrap_or_else(|error| {
            eprintln!("vigil judge: {error}");
            3
        }),
    }
}
