//! Runs the local platform's weighted proxy by hand, e.g. to measure its overhead with `wrk`:
//!
//! ```text
//! cargo run --release --example weighted_proxy -- 127.0.0.1:18080 127.0.0.1:18081 \
//!     STABLE_ADDR[,STABLE_ADDR...] [CANARY_ADDR[,...] WEIGHT]
//! ```
//!
//! Serves until Ctrl-C; metrics on the second address.

use std::net::SocketAddr;

use vigil::platform::local::proxy::{Backend, WeightedProxy};

fn addrs(list: &str) -> Result<Vec<SocketAddr>, String> {
    list.split(',')
        .map(|a| a.parse().map_err(|e| format!("{a}: {e}")))
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    vigil::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, metrics, stable, rest @ ..] = args.as_slice() else {
        return Err("usage: weighted_proxy LISTEN METRICS STABLE[,..] [CANARY[,..] WEIGHT]".into());
    };
    let proxy = WeightedProxy::bind(listen.parse()?, metrics.parse()?, "demo".into()).await?;
    let stable = Backend {
        revision: "stable".into(),
        addrs: addrs(stable)?,
    };
    let (canary, weight) = match rest {
        [canary, weight] => (
            Some(Backend {
                revision: "canary".into(),
                addrs: addrs(canary)?,
            }),
            weight.parse()?,
        ),
        _ => (None, 0),
    };
    proxy.set_backends(stable, canary, weight)?;
    tokio::signal::ctrl_c().await?;
    proxy.shutdown().await;
    Ok(())
}
