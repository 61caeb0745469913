//! vigil: a progressive-delivery canary analysis engine for Kubernetes.
//!
//! The pure core (`rollout`, `analysis::judge`, `analysis::template`) never touches the network
//! or the clock; the platforms and the CLI are the thin I/O shell around it.

pub mod analysis;
pub mod api;
pub mod cli;
pub mod convert;
pub mod dora;
pub mod dora_metrics;
pub mod http_client;
pub mod lint;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod platform;
pub mod report;
pub mod rollout;
pub mod telemetry;
/// Test infrastructure (an in-process Kubernetes API server for integration tests and
/// benches): compiled only with the `testing` feature, which only tests and benches enable.
#[cfg(feature = "testing")]
pub mod testing;
pub mod traffic;
