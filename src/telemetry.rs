//! Logging: `tracing` with structured fields to stderr; `RUST_LOG` filters (default `info`),
//! `VIGIL_LOG_FORMAT=json` switches to JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    init_with_default(DEFAULT_FILTER);
}

/// The filter without `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// Like [`init`], with another filter when `RUST_LOG` is not set (`vigil demo` prints its own
/// progress and keeps the log to warnings).
pub fn init_with_default(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::env::var("VIGIL_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
