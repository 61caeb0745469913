//! Shared test support. Each integration test file includes it with `mod support;` and uses
//! only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod chromium;
pub mod fake_http;
pub mod prometheus;
pub mod vigil_run;
pub mod webhook_receiver;

/// Installs the rustls crypto provider reqwest needs (the crate uses `rustls-no-provider`).
/// Safe to call many times.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
