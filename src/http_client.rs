//! Outbound HTTP: the one way vigil builds a client for a server someone else named (a
//! metric's URL, a Prometheus address, a webhook, a notification sink).
//!
//! Every such client follows no redirect (a redirect would carry credentials and headers to
//! another host), says who it is, ignores proxy environment variables (a proxy would resolve
//! the name, not vigil) and passes every destination through an [`EgressGuard`]: addresses
//! whose answers are the controller's own credentials (cloud metadata servers, link-local)
//! are refused before a connection is made, both when the URL names the IP and after a name
//! resolves to it. Switching a caller over is one line:
//! `reqwest::Client::builder()` becomes `http_client::builder(&guard)`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// The user agent of every outbound request.
pub const USER_AGENT: &str = concat!("vigil/", env!("CARGO_PKG_VERSION"));

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The URL, or a name it resolves to, is an address the guard refuses.
    #[error(
        "refused to connect to {host} ({address}): {why}; an operator who needs it starts the \
         controller with --allow-link-local-egress (VIGIL_ALLOW_LINK_LOCAL_EGRESS=true)"
    )]
    RefuseDestination {
        /// The host as the URL names it.
        host: String,
        /// The address refused.
        address: IpAddr,
        /// Which range it lies in.
        why: &'static str,
    },
}

/// A range of addresses refused, with the reason shown when one is hit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RefusedRange {
    network: IpAddr,
    prefix: u8,
    why: &'static str,
}

impl RefusedRange {
    fn contains(&self, address: IpAddr) -> bool {
        match (self.network, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:169.254.169.254`) as the IPv4 address it reaches.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Link-local and cloud metadata addresses: a request there reads the node's or the
/// controller's cloud credentials (GCE, AWS, Azure, Alibaba, OpenStack metadata servers).
const LINK_LOCAL_AND_METADATA: [RefusedRange; 4] = [
    RefusedRange {
        network: IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)),
        prefix: 16,
        why: "link-local / cloud metadata range 169.254.0.0/16",
    },
    RefusedRange {
        network: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        prefix: 10,
        why: "IPv6 link-local range fe80::/10",
    },
    RefusedRange {
        network: IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
        prefix: 128,
        why: "AWS IPv6 metadata server fd00:ec2::254",
    },
    RefusedRange {
        network: IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
        prefix: 32,
        why: "Alibaba Cloud metadata server 100.100.100.200",
    },
];

/// Which destinations outbound requests may reach. The default refuses link-local and cloud
/// metadata addresses; [`EgressGuard::allowing_link_local`] is the operator's opt-out.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EgressGuard {
    refused: Vec<RefusedRange>,
}

impl fmt::Debug for EgressGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.refused.iter().map(|r| r.why))
            .finish()
    }
}

impl Default for EgressGuard {
    fn default() -> EgressGuard {
        EgressGuard {
            refused: LINK_LOCAL_AND_METADATA.to_vec(),
        }
    }
}

impl EgressGuard {
    /// The guard with link-local and metadata addresses allowed (`--allow-link-local-egress`):
    /// refuses nothing.
    pub fn allowing_link_local() -> EgressGuard {
        EgressGuard {
            refused: Vec::new(),
        }
    }

    /// The guard chosen by the operator: `allow_link_local` lifts the default refusal.
    pub fn new(allow_link_local: bool) -> EgressGuard {
        if allow_link_local {
            EgressGuard::allowing_link_local()
        } else {
            EgressGuard::default()
        }
    }

    /// This guard, also refusing the loopback addresses (127.0.0.0/8, ::1): for an operator
    /// who wants it, and for tests, whose fake servers listen there.
    pub fn refusing_loopback(mut self) -> EgressGuard {
        self.refused.push(RefusedRange {
            network: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
            why: "loopback range 127.0.0.0/8",
        });
        self.refused.push(RefusedRange {
            network: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
            why: "loopback address ::1",
        });
        self
    }

    /// `Ok` when `address` may be connected to.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), EgressError> {
        match self.refused.iter().find(|range| range.contains(address)) {
            None => Ok(()),
            Some(range) => Err(EgressError::RefuseDestination {
                host: crate::analysis::provider::bounded(host).into_owned(),
                address,
                why: range.why,
            }),
        }
    }

    /// `Ok` unless `url` names a refused IP address literally. A name is checked once it
    /// resolves, by the client's resolver ([`builder`]).
    pub fn check_url(&self, url: &Url) -> Result<(), EgressError> {
        let address = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        self.check_address(url.host_str().unwrap_or_default(), address)
    }
}

/// Resolves names with hickory (as the Prometheus client does: the `FROM scratch` image has no
/// NSS for the system resolver; `/etc/resolv.conf` and `/etc/hosts` are read), then refuses
/// the whole answer when any address is refused (a name that points at a metadata server
/// among others is not one to trust).
struct GuardedResolver {
    guard: EgressGuard,
}

/// The process' resolver, built on first use (inside the runtime), or why it could not be.
fn resolver() -> Result<&'static hickory_resolver::TokioResolver, String> {
    static RESOLVER: std::sync::OnceLock<Result<hickory_resolver::TokioResolver, String>> =
        std::sync::OnceLock::new();
    RESOLVER
        .get_or_init(|| {
            let mut builder = hickory_resolver::TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?;
            builder.options_mut().ip_strategy =
                hickory_resolver::config::LookupIpStrategy::Ipv6AndIpv4;
            builder
                .build()
                .map_err(|e| format!("cannot build the DNS resolver: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let lookup = resolver()?.lookup_ip(host.as_str()).await?;
            let addresses: Vec<SocketAddr> =
                lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            for address in &addresses {
                guard.check_address(&host, address.ip())?;
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// A client builder for requests to servers others name: no redirects, vigil's user agent,
/// no proxy from the environment, every name resolved by hickory and checked by `guard`. Callers also
/// check the URL itself with [`EgressGuard::check_url`] (an IP literal is not resolved).
pub fn builder(guard: &EgressGuard) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver {
            guard: guard.clone(),
        }))
}

/// The [`EgressError`] behind a failed request, if the guard refused its destination.
pub fn refused_by_guard(error: &reqwest::Error) -> Option<EgressError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<EgressError>() {
            return Some(refused.clone());
        }
        source = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_link_local_addresses_are_refused_by_default_and_allowed_on_request() {
        let guard = EgressGuard::default();
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            let address: IpAddr = refused.parse().expect(refused);
            assert!(
                matches!(
                    guard.check_address("h", address),
                    Err(EgressError::RefuseDestination { .. })
                ),
                "{refused}"
            );
            assert!(
                EgressGuard::allowing_link_local()
                    .check_address("h", address)
                    .is_ok()
            );
        }
        for allowed in [
            "10.0.0.1",
            "169.253.255.255",
            "100.100.100.201",
            "fd00:ec2::253",
        ] {
            let address: IpAddr = allowed.parse().expect(allowed);
            assert!(guard.check_address("h", address).is_ok(), "{allowed}");
        }
        let url = Url::parse("http://169.254.169.254/latest/meta-data/").expect("url");
        let error = guard.check_url(&url).expect_err("IP literal");
        assert!(
            error.to_string().contains("--allow-link-local-egress"),
            "{error}"
        );
        let url = Url::parse("http://[fe80::1]:8080/").expect("url");
        assert!(guard.check_url(&url).is_err());
        assert!(
            guard
                .check_url(&Url::parse("http://127.0.0.1/").expect("url"))
                .is_ok()
        );
        assert!(
            guard
                .refusing_loopback()
                .check_url(&Url::parse("http://127.0.0.1/").expect("url"))
                .is_err()
        );
    }
}
