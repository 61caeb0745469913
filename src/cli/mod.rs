//! The `vigil` command line: each subcommand in its own module, dispatched from `main`.

pub mod crds;
pub mod demo_app;

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
    /// Run the demo HTTP service (injected errors and latency) used by `vigil demo` and tests.
    DemoApp(demo_app::DemoAppArgs),
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
        Command::DemoApp(args) => demo_app::run(&args),
    }
}
