//! The `vigil` command line: each subcommand in its own module, dispatched from `main`.

pub mod analyze;
pub mod crds;
pub mod demo_app;
pub mod lint;

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
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::Analyze(args) => analyze::run(&args),
        Command::Lint(args) => lint::run(&args),
        Command::DemoApp(args) => demo_app::run(&args),
    }
}
