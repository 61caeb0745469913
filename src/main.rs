//! Temporary entry point on the `judges` branch: dispatches only `vigil judge` (the lead's
//! main.rs replaces it on merge).

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "vigil: canary releases judged statistically"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a statistical judge offline.
    Judge(vigil::cli::judge::JudgeArgs),
}

fn main() {
    let Command::Judge(args) = Cli::parse().command;
    let code = vigil::cli::judge::run(args).unwrap_or_else(|error| {
        eprintln!("error: {error}");
        3
    });
    std::process::exit(code);
}
