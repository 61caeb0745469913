use clap::Parser;

fn main() {
    // One rustls crypto provider for kube and reqwest alike; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    vigil::telemetry::init();
    let cli = vigil::cli::Cli::parse();
    std::process::exit(vigil::cli::run(cli));
}
