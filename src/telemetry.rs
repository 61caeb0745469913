//! Logging: `tracing` with structured fields to stderr; `RUST_LOG` filters (default `info`),
//! `--log-format json` (or `VIGIL_LOG_FORMAT=json`) switches to JSON lines, `--quiet` keeps
//! warnings and errors. Colour only when stderr is a terminal: a log redirected to a file
//! holds no escape codes.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init() {
    init_with_default(DEFAULT_FILTER);
}

/// The filter without `RUST_LOG`.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One compact line per event for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// What the command line asks of the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// `--log-format`; `None` reads `VIGIL_LOG_FORMAT`.
    pub format: Option<LogFormat>,
    /// `--quiet`: warnings and errors only (unless `RUST_LOG` says otherwise).
    pub quiet: bool,
}

/// Like [`init`], with another filter when `RUST_LOG` is not set (`vigil demo` prints its own
/// progress and keeps the log to warnings).
pub fn init_with_default(default: &str) {
    init_with(default, LogOptions::default());
}

/// Installs the subscriber as [`LogOptions`] ask.
pub fn init_with(default: &str, options: LogOptions) {
    let default = if options.quiet { "warn" } else { default };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let format = options.format.unwrap_or_else(|| {
        if std::env::var("VIGIL_LOG_FORMAT").as_deref() == Ok("json") {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.compact().try_init(),
    };
}
