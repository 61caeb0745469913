//! The HTTP clients every metric client of a process shares.
//!
//! Building a `reqwest::Client` reads and parses the system's root certificates. When every
//! AnalysisRun reconcile built its own, that was a third of the controller's CPU in a release
//! of 10,000 Rollouts (benches/README.md, "Fourth step"); a shared client also keeps its
//! connections to a Prometheus alive from one run to the next. A shared client holds only what
//! is common to everyone who uses it: the destination guard and the TLS roots. Credentials and
//! headers go on each request ([`with_default_headers`]), so they never outlive the request
//! or reach another tenant's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::header::HeaderMap;

use crate::http_client::EgressGuard;

/// At most this many distinct clients are kept. CA bundles come from users' Secrets, so the
/// map is bounded: a new bundle beyond it takes the place of one kept, never of a client with
/// the built-in roots (which every template without a bundle uses).
pub const MAX_SHARED_CLIENTS: usize = 32;

/// What makes two clients interchangeable.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ClientKey {
    /// The destination guard the client resolves names through.
    pub guard: EgressGuard,
    /// The PEM CA bundle replacing the built-in roots, if any (public certificates).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Certificates are not verified (a web metric's `insecure: true`).
    pub insecure: bool,
}

impl ClientKey {
    /// A client as this key describes it: no redirects (they would carry credentials and
    /// custom headers to another host), no proxy from the environment, every name checked
    /// by the guard once resolved. The error names the part that failed.
    pub(crate) fn build(&self) -> Result<reqwest::Client, String> {
        let mut builder = crate::http_client::builder(&self.guard);
        if let Some(pem) = &self.ca_bundle_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("CA bundle: {e}"))?;
            if certs.is_empty() {
                return Err("CA bundle holds no PEM certificate".into());
            }
            builder = builder.tls_certs_only(certs);
        }
        if self.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        // The cause says why (e.g. no CA certificate found on this system).
        builder
            .build()
            .map_err(|e| format!("HTTP client: {}", super::measurement::error_chain(&e)))
    }

    fn has_own_roots(&self) -> bool {
        self.ca_bundle_pem.is_some() || self.insecure
    }
}

/// Clients by [`ClientKey`]. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct SharedClients {
    clients: Arc<Mutex<HashMap<ClientKey, reqwest::Client>>>,
}

impl SharedClients {
    /// The shared client for `key`, built by `build` the first time. A failed build is not
    /// kept (the next caller tries again); a race may build twice and keep one.
    pub(crate) fn get_or_build<E>(
        &self,
        key: ClientKey,
        build: impl FnOnce(&ClientKey) -> Result<reqwest::Client, E>,
    ) -> Result<reqwest::Client, E> {
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        // Built outside the lock: it reads files, and other callers' clients are ready.
        let client = build(&key)?;
        let mut clients = self.lock();
        if let Some(kept) = clients.get(&key) {
            return Ok(kept.clone());
        }
        if clients.len() >= MAX_SHARED_CLIENTS {
            let evicted = clients.keys().find(|kept| kept.has_own_roots()).cloned();
            match evicted {
                Some(evicted) => {
                    tracing::debug!(
                        kept = MAX_SHARED_CLIENTS,
                        "shared HTTP clients full: one with its own CA bundle makes room"
                    );
                    clients.remove(&evicted);
                }
                None => return Ok(client),
            }
        }
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// How many clients are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// No client is kept yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, reqwest::Client>> {
        // A poisoned map is still a valid map: a panic elsewhere must not stop measuring.
        self.clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `request` with every header of `defaults` whose name it does not carry yet, as a
/// client's default headers would be added: what the request set itself (its
/// `Authorization`, its `Content-Type`) wins.
pub fn with_default_headers(
    mut request: reqwest::Request,
    defaults: &HeaderMap,
) -> reqwest::Request {
    let headers = request.headers_mut();
    for name in defaults.keys() {
        if headers.contains_key(name) {
            continue;
        }
        for value in defaults.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{AUTHORIZATION, HeaderValue};

    fn client() -> reqwest::Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder().build()
    }

    fn key(guard: EgressGuard, pem: Option<&[u8]>) -> ClientKey {
        ClientKey {
            guard,
            ca_bundle_pem: pem.map(<[u8]>::to_vec),
            insecure: false,
        }
    }

    #[test]
    fn a_key_is_built_once_and_distinct_guards_apart() {
        let shared = SharedClients::default();
        let mut builds = 0;
        for guard in [
            EgressGuard::default(),
            EgressGuard::default(),
            EgressGuard::allowing_link_local(),
        ] {
            shared
                .get_or_build(key(guard, None), |_| {
                    builds += 1;
                    client()
                })
                .expect("client");
        }
        assert_eq!(builds, 2);
        assert_eq!(shared.len(), 2);
    }

    #[test]
    fn a_failed_build_is_not_kept_and_the_map_is_bounded_keeping_the_built_in_roots() {
        let shared = SharedClients::default();
        let failed: Result<reqwest::Client, &str> =
            shared.get_or_build(key(EgressGuard::default(), None), |_| Err("no roots"));
        assert_eq!(failed.err(), Some("no roots"));
        assert!(shared.is_empty());
        shared
            .get_or_build(key(EgressGuard::default(), None), |_| client())
            .expect("client");
        for i in 0..MAX_SHARED_CLIENTS + 5 {
            let pem = format!("bundle {i}");
            shared
                .get_or_build(key(EgressGuard::default(), Some(pem.as_bytes())), |_| {
                    client()
                })
                .expect("client");
        }
        assert_eq!(shared.len(), MAX_SHARED_CLIENTS);
        // The newest bundle took a place; the built-in roots' client kept its own.
        let mut rebuilt = 0;
        for pem in [None, Some(format!("bundle {}", MAX_SHARED_CLIENTS + 4))] {
            shared
                .get_or_build(
                    key(EgressGuard::default(), pem.as_deref().map(str::as_bytes)),
                    |_| {
                        rebuilt += 1;
                        client()
                    },
                )
                .expect("client");
        }
        assert_eq!(rebuilt, 0);
    }

    #[test]
    fn default_headers_fill_in_without_replacing_the_requests_own() {
        let request = client()
            .expect("client")
            .get("http://127.0.0.1:1/")
            .bearer_auth("own")
            .build()
            .expect("request");
        let mut defaults = HeaderMap::new();
        defaults.insert(AUTHORIZATION, HeaderValue::from_static("Bearer default"));
        defaults.insert("x-scope-orgid", HeaderValue::from_static("tenant-a"));
        let request = with_default_headers(request, &defaults);
        let headers = request.headers();
        assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(headers[AUTHORIZATION], "Bearer own");
        assert_eq!(headers["x-scope-orgid"], "tenant-a");
    }
}
