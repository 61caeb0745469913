//! The local proxy's managed routes against real HTTP servers on 127.0.0.1: a header route
//! reaches only the canary at weight 0, and a mirror route copies requests to the canary
//! without its responses reaching clients (counted on both sides).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::fake_http::{FakeServer, Reply};
use vigil::platform::local::proxy::{Backend, REVISION_HEADER, WeightedProxy};
use vigil::traffic::{
    HeaderMatch, HeaderRoute, ManagedRoutes, MirrorMatch, MirrorRoute, StringMatch,
};

const WAIT: Duration = Duration::from_secs(30);

type TestClient = Client<HttpConnector, Empty<Bytes>>;

fn addr_of(server: &FakeServer) -> SocketAddr {
    let host = server.url.host_str().expect("host");
    let port = server.url.port().expect("port");
    format!("{host}:{port}").parse().expect("address")
}

/// One GET through the proxy: status, the revision that served it, body.
async fn get(
    client: &TestClient,
    proxy: SocketAddr,
    path: &str,
    header: Option<(&str, &str)>,
) -> (u16, String, String) {
    let mut request = hyper::Request::get(format!("http://{proxy}{path}"));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Empty::new()).expect("request")),
    )
    .await
    .expect("in time")
    .expect("answered");
    let status = response.status().as_u16();
    let revision = response
        .headers()
        .get(REVISION_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        revision,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn proxy_for(stable: &FakeServer, canary: &FakeServer) -> WeightedProxy {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let proxy = WeightedProxy::bind(any, any, "shop".into())
        .await
        .expect("bind");
    proxy
        .set_backends(
            Backend {
                revision: "v1".into(),
                addrs: vec![addr_of(stable)],
            },
            Some(Backend {
                revision: "v2".into(),
                addrs: vec![addr_of(canary)],
            }),
            0,
        )
        .expect("backends");
    proxy
}

#[tokio::test]
async fn requests_with_the_header_reach_only_the_canary_at_weight_zero() {
    support::install_crypto_provider();
    let stable = FakeServer::start(|_| Reply::new(200, "stable")).await;
    let canary = FakeServer::start(|_| Reply::new(200, "canary")).await;
    let proxy = proxy_for(&stable, &canary).await;
    proxy
        .handle()
        .set_routes(ManagedRoutes::new(
            vec![HeaderRoute {
                name: "testers".into(),
                matches: vec![HeaderMatch {
                    header_name: "x-canary".into(),
                    value: StringMatch::Regex("yes|please".into()),
                }],
            }],
            vec![],
        ))
        .expect("routes");
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let at = proxy.local_addr();
    for i in 0..20 {
        let value = if i % 2 == 0 { "yes" } else { "please" };
        let got = get(&client, at, "/a", Some(("x-canary", value))).await;
        assert_eq!(got, (200, "v2".into(), "canary".into()), "request {i}");
        let got = get(&client, at, "/a", Some(("x-canary", "nope"))).await;
        assert_eq!(got, (200, "v1".into(), "stable".into()), "request {i}");
    }
    assert_eq!((stable.stats.requests(), canary.stats.requests()), (20, 20));
    assert_eq!(proxy.current().routes.header.len(), 1, "read back");
    // Removing the route sends everything to the stable again (weight 0).
    proxy
        .handle()
        .set_routes(ManagedRoutes::default())
        .expect("routes");
    let got = get(&client, at, "/a", Some(("x-canary", "yes"))).await;
    assert_eq!(got.2, "stable");
}

#[tokio::test]
async fn mirrored_requests_reach_the_canary_but_its_answers_never_reach_clients() {
    support::install_crypto_provider();
    let stable = FakeServer::start(|_| Reply::new(200, "stable")).await;
    // A broken canary: if any of its answers reached a client, the client would see a 500.
    let canary = FakeServer::start(|_| Reply::new(500, "canary broke")).await;
    let proxy = proxy_for(&stable, &canary).await;
    proxy
        .handle()
        .set_routes(ManagedRoutes::new(
            vec![],
            vec![MirrorRoute {
                name: "shadow".into(),
                percentage: 50,
                matches: vec![MirrorMatch {
                    method: Some(StringMatch::Exact("GET".into())),
                    path: Some(StringMatch::Prefix("/api".into())),
                    ..MirrorMatch::default()
                }],
            }],
        ))
        .expect("routes");
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let at = proxy.local_addr();
    for i in 0..20 {
        let got = get(&client, at, "/api/items", None).await;
        assert_eq!(got, (200, "v1".into(), "stable".into()), "request {i}");
        let got = get(&client, at, "/web", None).await;
        assert_eq!(got, (200, "v1".into(), "stable".into()), "request {i}");
    }
    // Half of the 20 matching requests are copied; copies run in the background.
    let deadline = Instant::now() + WAIT;
    while canary.stats.requests() < 10 {
        assert!(
            Instant::now() < deadline,
            "copies never arrived: {}",
            canary.stats.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics_line = r#"http_requests_total{rollout="shop",revision="v2",role="canary",code="500",mirrored="true"} 10"#;
    let deadline = Instant::now() + WAIT;
    loop {
        let text = proxy.handle().encode_metrics();
        if text.contains(metrics_line) {
            assert!(
                text.contains(r#"http_requests_total{rollout="shop",revision="v1",role="stable",code="200"} 40"#),
                "{text}"
            );
            // No served request was counted on the canary.
            assert!(!text.contains(r#"role="canary",code="500"} "#), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((stable.stats.requests(), canary.stats.requests()), (40, 10));
    let heads = canary.stats.heads();
    assert!(
        heads.iter().all(|h| h.starts_with("GET /api/items")),
        "{heads:?}"
    );
}
