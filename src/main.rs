fn main() {
    // One rustls crypto provider for kube and reqwest alike; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    vigil::telemetry::init();
    // Works as `vigil …` and as the kubectl plugin `kubectl-vigil` (`kubectl vigil …`).
    let cli = vigil::cli::Cli::parse_env();
    std::process::exit(vigil::cli::run(cli));
}
