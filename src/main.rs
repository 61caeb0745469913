use clap::Parser;

fn main() {
    // One rustls crypto provider for kube and reqwest alike; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = vigil::cli::Cli::parse();
    vigil::telemetry::init_with_default(cli.default_log_filter());
    std::process::exit(vigil::cli::run(cli));
}
