//! The `vigil` command line: each subcommand in its own module, dispatched from `main`.

pub mod crds;

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
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Crds(args) => crds::run(&args),
    }
}
