use clap::error::ErrorKind;

fn main() {
    // One rustls crypto provider for kube and reqwest alike; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Works as `vigil …` and as the kubectl plugin `kubectl-vigil` (`kubectl vigil …`).
    let cli = match vigil::cli::Cli::try_parse_env() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            let code = match error.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => vigil::cli::usage_exit_code(std::env::args().nth(1).as_deref()),
            };
            std::process::exit(code);
        }
    };
    vigil::telemetry::init_with(cli.default_log_filter(), cli.log_options());
    std::process::exit(vigil::cli::run(cli));
}
