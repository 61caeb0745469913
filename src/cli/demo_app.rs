//! `vigil demo-app`: the demo HTTP service (see [`crate::platform::local::demo_app`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::platform::local::demo_app::{DemoApp, DemoAppConfig};

/// Arguments of `vigil demo-app`.
#[derive(Debug, clap::Args)]
pub struct DemoAppArgs {
    /// Port to listen on; `$PORT` when not given (the local supervisor sets it).
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Fraction of requests answered with 500, in [0, 1]; exact and evenly spread.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Mean injected latency in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Latency is uniform on [latency-ms − jitter, latency-ms + jitter] milliseconds.
    #[arg(long, default_value_t = 10)]
    pub latency_jitter_ms: u64,
    /// Version reported in responses (`hello from <version>`) and metrics.
    #[arg(long, default_value = "v1")]
    pub version: String,
    /// Seed of the latency sequence (same seed, same latencies).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not in [0, 1]"))
    }
}

/// Serves until SIGTERM or Ctrl-C; returns the exit code.
pub fn run(args: &DemoAppArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "failed to start the async runtime");
            return 1;
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: &DemoAppArgs) -> i32 {
    let config = DemoAppConfig {
        error_rate: args.error_rate,
        latency: Duration::from_millis(args.latency_ms),
        latency_jitter: Duration::from_millis(args.latency_jitter_ms),
        version: args.version.clone(),
        seed: args.seed,
    };
    let app = match DemoApp::bind(SocketAddr::new(args.host, args.port), config).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%error, "demo app failed to start");
            return 1;
        }
    };
    wait_for_signal().await;
    tracing::info!("demo app shutting down");
    app.shutdown().await;
    0
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the demo app");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
