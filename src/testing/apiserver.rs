//! An in-process Kubernetes API server for tests and benches.
//!
//! No real API server can run where vigil is tested, so this one stands in for it: the real
//! kube-rs client (in process, via [`ApiServer::client`]) and the real `vigil controller`
//! binary (via [`ApiServer::write_kubeconfig`] and `KUBECONFIG`) talk to it over plain HTTP on
//! 127.0.0.1. It serves the vigil CRDs, the built-in types the controller touches (Ingresses
//! and batch/v1 Jobs among them; a pod's `log` subresource serves its
//! [`POD_LOG_ANNOTATION`], since no container runs here) and the routers' custom resources (Gateway API HTTPRoutes, Istio
//! VirtualServices and DestinationRules, SMI TrafficSplits, Traefik TraefikServices), with the
//! API semantics controllers rely on: resourceVersions and optimistic
//! concurrency, list and watch (with bookmarks, history replay and 410 Gone), merge/JSON/apply
//! patches with field ownership, the status and scale subresources, generation, finalizers and
//! discovery. It runs on its own thread and Tokio runtime, so it works under any test runtime.
//! It counts every request by verb, resource and response code ([`ApiServer::requests`],
//! `GET /debug/requests`), so benches can report what a client costs the cluster.
//!
//! What it does not do: validation against the CRD schemas, defaulting, admission, RBAC,
//! strategic-merge list semantics (treated as a merge patch), list paging (every list is one
//! page), `dryRun` (rejected with 400 rather than silently applied), garbage collection of
//! owned objects, namespace deletion, multi-version conversion, OpenAPI documents (so
//! `kubectl apply` needs `--validate=false`), `Table` output (`kubectl get` shows names and
//! ages) and metadata-only responses (`PartialObjectMetadata` requests get whole objects,
//! which kube-rs reads fine).
//!
//! ```no_run
//! # async fn demo() {
//! use vigil::testing::apiserver::ApiServer;
//! let server = ApiServer::start().with_replicaset_controller();
//! let client = server.client();
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig")).unwrap();
//! # }
//! ```

mod counting;
mod discovery;
mod error;
mod fields;
mod select;
mod store;

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use counting::{RequestCounts, RequestKey};
pub use error::ApiError;
use fields::Writer;
use select::{FieldSelector, LabelSelector};
use store::{EventType, Filter, PatchKind, ResourceType, Store, Stored, Sub, WatchItem};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How long a watch lasts when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// State shared by the connection tasks and the test hooks.
struct Shared {
    store: Mutex<Store>,
    log: Mutex<Vec<(String, String)>>,
    requests: Mutex<RequestCounts>,
    faults: Mutex<VecDeque<Fault>>,
    bookmark_interval: Duration,
    addr: SocketAddr,
}

/// A one-shot injected failure.
struct Fault {
    method: String,
    path_prefix: String,
    code: u16,
}

/// Options for [`ApiServer`]; start with [`ApiServer::builder`].
#[derive(Debug, Clone)]
pub struct ApiServerBuilder {
    crds: bool,
    gateway_api: bool,
    istio: bool,
    router_crds: bool,
    history_capacity: usize,
    bookmark_interval: Duration,
    replicaset_delay: Option<Duration>,
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        Self {
            crds: true,
            gateway_api: true,
            istio: true,
            router_crds: true,
            history_capacity: 10_000,
            bookmark_interval: Duration::from_secs(1),
            replicaset_delay: None,
        }
    }
}

impl ApiServerBuilder {
    /// Do not install the vigil CRDs (the controller's "CRDs installed" check fails until a
    /// test creates them; creating a CRD object serves its types at once).
    pub fn without_crds(mut self) -> Self {
        self.crds = false;
        self
    }

    /// Do not install the Gateway API HTTPRoute CRD.
    pub fn without_gateway_api(mut self) -> Self {
        self.gateway_api = false;
        self
    }

    /// Do not install Istio's VirtualService and DestinationRule CRDs.
    pub fn without_istio(mut self) -> Self {
        self.istio = false;
        self
    }

    /// Do not install the SMI TrafficSplit and Traefik TraefikService CRDs.
    pub fn without_router_crds(mut self) -> Self {
        self.router_crds = false;
        self
    }

    /// How many events the watch history keeps (default 10,000); a watch from before the
    /// oldest kept event gets 410 Gone.
    pub fn history_capacity(mut self, events: usize) -> Self {
        self.history_capacity = events;
        self
    }

    /// How often watches that allow bookmarks get one (default 1 s).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Run the ReplicaSet controller stand-in with this readiness delay (see
    /// [`ApiServer::with_replicaset_controller`]).
    pub fn replicaset_controller(mut self, delay: Duration) -> Self {
        self.replicaset_delay = Some(delay);
        self
    }

    /// Binds 127.0.0.1 on a free port and serves until the returned server is dropped.
    ///
    /// # Panics
    /// If the port cannot be bound or the server thread cannot start: test setup failures.
    pub fn start(self) -> ApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let mut store = Store::new(self.history_capacity);
        let crd_type = store
            .resource_type(store::CRD_KEY)
            .expect("the CRD type is built in");
        let mut crds = Vec::new();
        if self.crds {
            crds.extend(vigil_crds().iter().cloned());
        }
        if self.gateway_api {
            crds.push(httproute_crd());
        }
        if self.istio {
            crds.extend(istio_crds());
        }
        if self.router_crds {
            crds.push(trafficsplit_crd());
            crds.push(traefikservice_crd());
        }
        for crd in crds {
            store
                .create(&crd_type, "", crd, None, false)
                .expect("seed a CRD");
        }
        let namespace_type = store
            .resource_type("/v1/namespaces")
            .expect("namespaces are built in");
        for ns in ["default", "kube-system"] {
            let doc = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            store
                .create(&namespace_type, "", doc, None, false)
                .expect("seed a namespace");
        }
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            log: Mutex::new(Vec::new()),
            requests: Mutex::new(RequestCounts::default()),
            faults: Mutex::new(VecDeque::new()),
            bookmark_interval: self.bookmark_interval,
            addr,
        });
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("test-apiserver".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("test-apiserver")
                    .enable_all()
                    .build()
                    .expect("build the server runtime");
                let _ = handle_tx.send(runtime.handle().clone());
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("adopt the listener");
                    let accepting = tokio::spawn(accept_loop(listener, serving));
                    let _ = shutdown_rx.await;
                    accepting.abort();
                });
                // Dropping the runtime here cancels every connection and watch.
            })
            .expect("spawn the server thread");
        let handle = handle_rx.recv().expect("the server runtime starts");
        let server = ApiServer {
            shared,
            handle,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        };
        match self.replicaset_delay {
            Some(delay) => server.with_replicaset_controller_delay(delay),
            None => server,
        }
    }
}

/// A running in-process API server; stops when dropped. See the module docs.
pub struct ApiServer {
    shared: Arc<Shared>,
    handle: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A server with the vigil CRDs and the HTTPRoute CRD installed.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A server without the vigil CRDs.
    pub fn start_without_crds() -> Self {
        Self::builder().without_crds().start()
    }

    /// Options.
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// Switches on the ReplicaSet controller stand-in with a 50 ms readiness delay.
    pub fn with_replicaset_controller(self) -> Self {
        self.with_replicaset_controller_delay(Duration::from_millis(50))
    }

    /// Switches on the ReplicaSet controller stand-in: when a ReplicaSet's `spec.replicas` (or
    /// generation) changes, after `delay` its `status.replicas`, `readyReplicas`,
    /// `availableReplicas`, `fullyLabeledReplicas` and `observedGeneration` are set to match,
    /// as when a real cluster's pods become ready.
    pub fn with_replicaset_controller_delay(self, delay: Duration) -> Self {
        self.handle
            .spawn(replicaset_controller(self.shared.clone(), delay));
        self
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A kubeconfig for this server (plain http, a dummy token, namespace `default`).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: vigil-test\n  cluster:\n    server: {}\n\
             users:\n\
             - name: vigil-test\n  user:\n    token: vigil-test-token\n\
             contexts:\n\
             - name: vigil-test\n  context:\n    cluster: vigil-test\n    user: vigil-test\n    namespace: default\n\
             current-context: vigil-test\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `path`, for `KUBECONFIG` of a child process.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// A kube client for this server (default namespace `default`). Call it inside a Tokio
    /// runtime: the client spawns its buffer task there.
    ///
    /// # Panics
    /// If the client cannot be built (a test setup failure).
    pub fn client(&self) -> kube::Client {
        // kube's TLS stack needs a process-wide provider even for plain http.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = self.url().parse().expect("the server URL is a valid URI");
        kube::Client::try_from(kube::Config::new(url)).expect("build a kube client")
    }

    /// Every request so far, as `(method, path_and_query)`, in arrival order.
    pub fn request_log(&self) -> Vec<(String, String)> {
        self.shared.log.lock().clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_request_log(&self) {
        self.shared.log.lock().clear();
    }

    /// How many requests of each kind (verb, resource, subresource, response code) arrived
    /// since the start or the last [`Self::take_requests`]. `GET /debug/requests` serves the
    /// same as JSON (see [`RequestCounts::to_json`]); requests to `/debug/requests` are not
    /// counted.
    pub fn requests(&self) -> RequestCounts {
        self.shared.requests.lock().clone()
    }

    /// The counts so far, starting a new count (`DELETE /debug/requests` over HTTP).
    pub fn take_requests(&self) -> RequestCounts {
        std::mem::take(&mut *self.shared.requests.lock())
    }

    /// Makes the next request whose method is `method` and whose path-and-query starts with
    /// `path_prefix` fail with `status` (a Kubernetes `Status` with the matching reason).
    /// Each call queues one failure.
    pub fn fail_next(&self, method: &str, path_prefix: &str, status: u16) {
        self.shared.faults.lock().push_back(Fault {
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_string(),
            code: status,
        });
    }

    /// Ends every open watch and makes every resourceVersion issued so far too old to watch
    /// from (as after an etcd compaction), so watchers get 410 Gone and relist.
    pub fn expire_watches(&self) {
        self.shared.store.lock().expire_watches();
    }

    /// The current resourceVersion (a global counter).
    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().resource_version()
    }

    /// How many objects are stored (including CRDs and namespaces).
    pub fn object_count(&self) -> usize {
        self.shared.store.lock().object_count()
    }

    fn resource_type(&self, gvr: &str) -> Result<Arc<ResourceType>, ApiError> {
        store::parse_gvr(gvr)
            .and_then(|key| self.shared.store.lock().resource_type(&key))
            .ok_or_else(|| ApiError::from_code(404, format!("no served resource {gvr:?}")))
    }

    /// An object as stored. `gvr` is `group/version/plural` (`v1/secrets` for the core group);
    /// `namespace` is `None` for cluster-scoped resources.
    pub fn get_json(&self, gvr: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let ty = self.resource_type(gvr).ok()?;
        let store = self.shared.store.lock();
        store
            .get(&ty, namespace.unwrap_or(""), name)
            .ok()
            .map(|o| o.value())
    }

    /// Every stored object of a resource (in one namespace, or all).
    pub fn list_json(&self, gvr: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(ty) = self.resource_type(gvr) else {
            return Vec::new();
        };
        let filter = Filter {
            namespace: namespace.map(str::to_string),
            ..Filter::default()
        };
        let (_, items) = self.shared.store.lock().list(&ty, &filter);
        items.iter().map(|o| o.value()).collect()
    }

    /// Seeds an object as given, status included (creating or overwriting it; namespace
    /// `default` when unset), with a new resourceVersion and the watch event a write makes.
    pub fn put_json(&self, gvr: &str, object: Value) -> Result<Value, ApiError> {
        let ty = self.resource_type(gvr)?;
        if !object.is_object() {
            return Err(ApiError::bad_request("an object is required"));
        }
        let stored = self.shared.store.lock().put(&ty, object)?;
        Ok(stored.value())
    }

    /// Server-side applies `object` as `manager` with `force`, as
    /// `kubectl apply --server-side --force-conflicts` would.
    pub fn apply_json(&self, gvr: &str, manager: &str, object: Value) -> Result<Value, ApiError> {
        let ty = self.resource_type(gvr)?;
        let namespace = if ty.namespaced {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::invalid("metadata.name: Required value"))?
            .to_string();
        let body = serde_json::to_vec(&object).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let time = store::now();
        let api_version = ty.api_version();
        let writer = Writer {
            manager,
            subresource: "",
            api_version: &api_version,
            time: &time,
        };
        let mut store = self.shared.store.lock();
        let stored = store.patch(
            &ty,
            &namespace,
            &name,
            PatchKind::Apply,
            &body,
            Sub::Main,
            &writer,
            true,
        )?;
        Ok(stored.value())
    }

    /// Deletes an object as a client would (finalizers respected).
    pub fn delete_json(
        &self,
        gvr: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let ty = self.resource_type(gvr)?;
        let deleted = self
            .shared
            .store
            .lock()
            .delete(&ty, namespace.unwrap_or(""), name, None)?;
        Ok(deleted.value())
    }
}

/// The vigil CRDs as JSON, generated once per process: schema generation takes about a second
/// in a debug build, and every test starts a server.
fn vigil_crds() -> &'static [Value] {
    static CRDS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    CRDS.get_or_init(|| {
        crate::api::all_crds()
            .iter()
            .map(|crd| serde_json::to_value(crd).expect("CRDs serialize"))
            .collect()
    })
}

/// A minimal Gateway API HTTPRoute CRD (schema-less: objects are stored as given), for
/// tests that install it after start.
pub fn httproute_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "httproutes.gateway.networking.k8s.io"},
        "spec": {
            "group": "gateway.networking.k8s.io",
            "names": {"plural": "httproutes", "singular": "httproute", "kind": "HTTPRoute", "listKind": "HTTPRouteList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
            }],
        },
    })
}

/// Istio's VirtualService and DestinationRule (`networking.istio.io/v1`, the version vigil
/// uses; this server does not convert between versions, so only `v1` is served), schema-less:
/// objects are stored as given.
fn istio_crds() -> Vec<Value> {
    [
        ("VirtualService", "virtualservices", "virtualservice"),
        ("DestinationRule", "destinationrules", "destinationrule"),
    ]
    .into_iter()
    .map(|(kind, plural, singular)| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.networking.istio.io")},
            "spec": {
                "group": "networking.istio.io",
                "names": {"plural": plural, "singular": singular, "kind": kind, "listKind": format!("{kind}List")},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    "subresources": {"status": {}},
                }],
            },
        })
    })
    .collect()
}

/// A namespaced, schema-less CRD serving `kind` (objects are stored as given), written from
/// the project's published API: its group, version, kind and plural.
fn schemaless_crd(group: &str, version: &str, kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "names": {
                "plural": plural,
                "singular": kind.to_lowercase(),
                "kind": kind,
                "listKind": format!("{kind}List"),
            },
            "scope": "Namespaced",
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    })
}

/// SMI's TrafficSplit as Linkerd's SMI extension and Open Service Mesh serve it.
fn trafficsplit_crd() -> Value {
    schemaless_crd(
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
    )
}

/// Traefik's TraefikService (Traefik v3's API group).
fn traefikservice_crd() -> Value {
    schemaless_crd(
        "traefik.io",
        "v1alpha1",
        "TraefikService",
        "traefikservices",
    )
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Without this, every small response waits for a delayed ACK (~40 ms per request).
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn respond(code: u16, content_type: &str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    respond(code, "application/json", full(value.to_string()))
}

fn stored_response(code: u16, object: &Stored) -> Response<Body> {
    respond(code, "application/json", full(object.json.clone()))
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.to_status())
}

/// The parts of a request the handlers use.
struct Req {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    content_type: String,
    accept: String,
    user_agent: String,
    body: Bytes,
}

impl Req {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }

    /// The manager of a non-apply write: `fieldManager`, else the user agent's product name,
    /// as Kubernetes defaults it.
    fn update_manager(&self) -> String {
        match self.param("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => match self.user_agent.split('/').next() {
                Some(agent) if !agent.is_empty() => agent.to_string(),
                _ => "unknown".to_string(),
            },
        }
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.uri().path() == "/debug/requests" {
        return request_counts(shared, req.method());
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let response = serve(shared, req).await;
    let key = RequestKey::classify(&method, &path, &query, response.status().as_u16());
    shared.requests.lock().record(key);
    response
}

/// `GET /debug/requests`: the counts so far; `DELETE`: the same, and start a new count.
fn request_counts(shared: &Arc<Shared>, method: &Method) -> Response<Body> {
    let counts = match *method {
        Method::GET => shared.requests.lock().clone(),
        Method::DELETE => std::mem::take(&mut *shared.requests.lock()),
        _ => {
            return error_response(&ApiError::from_code(
                405,
                "/debug/requests takes GET or DELETE",
            ));
        }
    };
    json_response(200, &counts.to_json())
}

async fn serve(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    shared
        .log
        .lock()
        .push((parts.method.to_string(), path_and_query.clone()));
    if let Some(error) = take_fault(shared, parts.method.as_str(), &path_and_query) {
        return error_response(&error);
    }
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return error_response(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let req = Req {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        content_type: header(CONTENT_TYPE),
        accept: header(ACCEPT),
        user_agent: header(USER_AGENT),
        body,
    };
    match route(shared, &req) {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

fn take_fault(shared: &Arc<Shared>, method: &str, path_and_query: &str) -> Option<ApiError> {
    let mut faults = shared.faults.lock();
    let index = faults
        .iter()
        .position(|f| f.method == method && path_and_query.starts_with(&f.path_prefix))?;
    let fault = faults.remove(index)?;
    Some(ApiError::from_code(
        fault.code,
        format!("injected failure for {method} {path_and_query}"),
    ))
}

fn not_found_path() -> ApiError {
    ApiError::from_code(404, "the server could not find the requested resource")
}

fn route(shared: &Arc<Shared>, req: &Req) -> Result<Response<Body>, ApiError> {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let discovery_get = req.method == Method::GET;
    match segments.as_slice() {
        ["version"] if discovery_get => Ok(json_response(200, &discovery::version())),
        ["healthz" | "livez" | "readyz"] if discovery_get => {
            Ok(respond(200, "text/plain", full("ok")))
        }
        ["api"] if discovery_get => Ok(match aggregated_version(&req.accept) {
            Some(v) => aggregated_response(shared, true, v),
            None => json_response(200, &discovery::core_versions(&shared.addr.to_string())),
        }),
        ["apis"] if discovery_get => Ok(match aggregated_version(&req.accept) {
            Some(v) => aggregated_response(shared, false, v),
            None => json_response(200, &discovery::group_list(&shared.store.lock().types())),
        }),
        ["api", "v1"] if discovery_get => {
            discovery::resource_list(&shared.store.lock().types(), "", "v1")
                .map(|doc| json_response(200, &doc))
                .ok_or_else(not_found_path)
        }
        ["apis", group] if discovery_get => discovery::group(&shared.store.lock().types(), group)
            .map(|doc| json_response(200, &doc))
            .ok_or_else(not_found_path),
        ["apis", group, version] if discovery_get => {
            discovery::resource_list(&shared.store.lock().types(), group, version)
                .map(|doc| json_response(200, &doc))
                .ok_or_else(not_found_path)
        }
        ["api", "v1", rest @ ..] => resource(shared, req, "", "v1", rest),
        ["apis", group, version, rest @ ..] => resource(shared, req, group, version, rest),
        _ => Err(not_found_path()),
    }
}

/// The aggregated discovery version asked for in `Accept`, if any.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    let asks = |version: &str| {
        accept.split(',').any(|media| {
            let params: Vec<&str> = media.split(';').map(str::trim).collect();
            params.contains(&"as=APIGroupDiscoveryList")
                && params.contains(&"g=apidiscovery.k8s.io")
                && params.contains(&version)
        })
    };
    if asks("v=v2") {
        Some("v2")
    } else if asks("v=v2beta1") {
        Some("v2beta1")
    } else {
        None
    }
}

fn aggregated_response(shared: &Arc<Shared>, core: bool, version: &str) -> Response<Body> {
    let doc = discovery::aggregated(&shared.store.lock().types(), core, version);
    respond(
        200,
        &format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"),
        full(doc.to_string()),
    )
}

/// Requests under `/api/v1/...` or `/apis/{group}/{version}/...`.
fn resource(
    shared: &Arc<Shared>,
    req: &Req,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Response<Body>, ApiError> {
    let lookup = |plural: &str| {
        shared
            .store
            .lock()
            .resource_type(&store::gvr_key(group, version, plural))
    };
    // `/namespaces/{ns}/{plural}/...` unless that names no resource (then it is the
    // cluster-scoped Namespace resource itself, e.g. `/api/v1/namespaces/{name}/status`).
    let (ty, namespace, tail) = match rest {
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some() => {
            (lookup(plural).ok_or_else(not_found_path)?, Some(*ns), tail)
        }
        [plural, tail @ ..] => (lookup(plural).ok_or_else(not_found_path)?, None, tail),
        [] => return Err(not_found_path()),
    };
    if namespace.is_some() && !ty.namespaced {
        return Err(not_found_path());
    }
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, sub] => (Some(*name), Some(*sub)),
        _ => return Err(not_found_path()),
    };
    if name.is_some() && ty.namespaced && namespace.is_none() {
        return Err(not_found_path());
    }
    let ns = namespace.unwrap_or("");
    let sub = match sub {
        None => None,
        Some("status") if ty.status => Some(Sub::Status),
        Some("scale") if ty.scale.is_some() => {
            let name = name.ok_or_else(not_found_path)?;
            return scale(shared, req, &ty, ns, name);
        }
        Some("log") if ty.plural == "pods" && req.method == Method::GET => {
            let name = name.ok_or_else(not_found_path)?;
            return pod_log(shared, req, &ty, ns, name);
        }
        Some(_) => return Err(not_found_path()),
    };
    let time = store::now();
    let api_version = ty.api_version();
    let update_manager = req.update_manager();
    let writer = Writer {
        manager: &update_manager,
        subresource: if sub == Some(Sub::Status) {
            "status"
        } else {
            ""
        },
        api_version: &api_version,
        time: &time,
    };
    let sub = sub.unwrap_or(Sub::Main);
    if req.param("dryRun").is_some() && req.method != Method::GET {
        return Err(ApiError::bad_request(
            "dryRun is not supported by the test API server",
        ));
    }
    match (&req.method, name) {
        (&Method::GET, Some(name)) => {
            let object = shared.store.lock().get(&ty, ns, name)?;
            Ok(stored_response(200, &object))
        }
        (&Method::GET, None) if sub == Sub::Main => {
            let filter = filter(req, namespace)?;
            if req.flag("watch") {
                watch(shared, req, &ty, filter)
            } else {
                list(shared, req, &ty, &filter)
            }
        }
        (&Method::POST, None) if sub == Sub::Main => {
            if ty.namespaced && namespace.is_none() {
                return Err(not_found_path());
            }
            let object = parse_body(&req.body)?;
            let created = shared
                .store
                .lock()
                .create(&ty, ns, object, Some(&writer), false)?;
            Ok(stored_response(201, &created))
        }
        (&Method::PUT, Some(name)) => {
            let object = parse_body(&req.body)?;
            let updated = shared
                .store
                .lock()
                .update(&ty, ns, name, object, sub, Some(&writer))?;
            Ok(stored_response(200, &updated))
        }
        (&Method::PATCH, Some(name)) => {
            let kind = PatchKind::from_content_type(&req.content_type).ok_or_else(|| {
                ApiError::from_code(
                    415,
                    format!(
                        "the body of the request was in an unknown format: {}",
                        req.content_type
                    ),
                )
            })?;
            let apply_manager = req.param("fieldManager").unwrap_or("").to_string();
            let writer = if kind == PatchKind::Apply {
                Writer {
                    manager: &apply_manager,
                    ..writer
                }
            } else {
                writer
            };
            let patched = shared.store.lock().patch(
                &ty,
                ns,
                name,
                kind,
                &req.body,
                sub,
                &writer,
                req.flag("force"),
            )?;
            Ok(stored_response(200, &patched))
        }
        (&Method::DELETE, Some(name)) if sub == Sub::Main => {
            let precondition = delete_precondition(&req.body);
            let deleted = shared
                .store
                .lock()
                .delete(&ty, ns, name, precondition.as_deref())?;
            Ok(stored_response(200, &deleted))
        }
        (&Method::DELETE, None) if sub == Sub::Main => {
            let filter = filter(req, namespace)?;
            let mut store = shared.store.lock();
            let (_, items) = store.list(&ty, &filter);
            let mut deleted = Vec::with_capacity(items.len());
            for item in items {
                let value = item.value();
                let text = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or("");
                let (item_ns, item_name) = (text("/metadata/namespace"), text("/metadata/name"));
                deleted.push(store.delete(&ty, item_ns, item_name, None)?);
            }
            let rv = store.resource_version();
            drop(store);
            Ok(list_response(&ty, rv, &deleted))
        }
        _ => Err(ApiError::from_code(
            405,
            format!("{} is not supported here", req.method),
        )),
    }
}

/// The annotation whose value a pod's `log` subresource serves: no container runs here, so a
/// test writes the pod's output there.
pub const POD_LOG_ANNOTATION: &str = "testing.vigil.dev/log";

/// `GET pods/{name}/log`: the pod's [`POD_LOG_ANNOTATION`], with `tailLines` and `limitBytes`
/// applied as the kubelet does (the last lines, then the first bytes of those).
fn pod_log(
    shared: &Arc<Shared>,
    req: &Req,
    ty: &store::ResourceType,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let pod = shared.store.lock().get(ty, ns, name)?;
    let annotation = format!(
        "/metadata/annotations/{}",
        POD_LOG_ANNOTATION.replace('/', "~1")
    );
    let log = pod
        .value()
        .pointer(&annotation)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let number = |key: &str| -> Result<Option<usize>, ApiError> {
        req.param(key)
            .map(|v| {
                v.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("{key}: not a number")))
            })
            .transpose()
    };
    let mut lines: Vec<&str> = log.split_inclusive('\n').collect();
    if let Some(tail) = number("tailLines")? {
        lines = lines.split_off(lines.len().saturating_sub(tail));
    }
    let mut text = lines.concat();
    if let Some(limit) = number("limitBytes")?
        && text.len() > limit
    {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Ok(respond(200, "text/plain", full(text)))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}

/// `preconditions.resourceVersion` of a DeleteOptions body, if any.
fn delete_precondition(body: &[u8]) -> Option<String> {
    let options: Value = serde_json::from_slice(body).ok()?;
    options
        .pointer("/preconditions/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn filter(req: &Req, namespace: Option<&str>) -> Result<Filter, ApiError> {
    Ok(Filter {
        namespace: namespace.map(str::to_string),
        labels: LabelSelector::parse(req.param("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?,
        fields: FieldSelector::parse(req.param("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?,
    })
}

/// Where a paged LIST goes on: the resourceVersion of its first page and the key of the
/// last object sent. Opaque to clients, who send it back as `continue`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContinueToken {
    rv: u64,
    after: (String, String),
}

impl ContinueToken {
    /// `{rv}/{namespace}/{name}`: neither a namespace nor a name may contain a `/`.
    fn encode(&self) -> String {
        format!("{}/{}/{}", self.rv, self.after.0, self.after.1)
    }

    fn decode(token: &str) -> Result<ContinueToken, ApiError> {
        let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
        let mut parts = token.splitn(3, '/');
        let rv = parts
            .next()
            .and_then(|rv| rv.parse().ok())
            .ok_or_else(invalid)?;
        let namespace = parts.next().ok_or_else(invalid)?;
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(invalid)?;
        Ok(ContinueToken {
            rv,
            after: (namespace.to_owned(), name.to_owned()),
        })
    }
}

/// `GET` of a collection: everything, or with `limit` one page of at most that many items
/// and a `continue` token for the rest, as a real API server pages (kube's watcher asks for
/// 500 at a time, so a client never holds a whole big list in one body).
fn list(
    shared: &Arc<Shared>,
    req: &Req,
    ty: &ResourceType,
    filter: &Filter,
) -> Result<Response<Body>, ApiError> {
    let limit = match req.param("limit") {
        None | Some("" | "0") => None,
        Some(limit) => Some(
            limit
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        ),
    };
    let from = match req.param("continue") {
        None | Some("") => None,
        Some(token) => Some(ContinueToken::decode(token)?),
    };
    // Only cheap Arc clones happen under the lock; serializing happens after.
    let (rv, items, more) =
        shared
            .store
            .lock()
            .list_page(ty, filter, from.as_ref().map(|token| &token.after), limit);
    // Every page carries the resourceVersion of the first, where the watch after it starts.
    let rv = from.as_ref().map_or(rv, |token| token.rv);
    let next = more
        .then(|| items.last().map(|last| key_of_stored(last)))
        .flatten()
        .map(|after| ContinueToken { rv, after }.encode());
    Ok(list_response_paged(ty, rv, &items, next.as_deref()))
}

/// `(namespace, name)` of a stored object.
fn key_of_stored(object: &Stored) -> (String, String) {
    let value = object.value();
    let text = |p: &str| {
        value
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (text("/metadata/namespace"), text("/metadata/name"))
}

fn list_response(ty: &ResourceType, rv: u64, items: &[Arc<Stored>]) -> Response<Body> {
    list_response_paged(ty, rv, items, None)
}

fn list_response_paged(
    ty: &ResourceType,
    rv: u64,
    items: &[Arc<Stored>],
    next: Option<&str>,
) -> Response<Body> {
    let size: usize = items.iter().map(|i| i.json.len() + 1).sum();
    let mut out = Vec::with_capacity(128 + size);
    let next = next.map_or(String::new(), |token| {
        format!(r#","continue":{}"#, Value::from(token))
    });
    out.extend_from_slice(
        format!(
            r#"{{"apiVersion":"{}","kind":"{}List","metadata":{{"resourceVersion":"{rv}"{next}}},"items":["#,
            ty.api_version(),
            ty.kind
        )
        .as_bytes(),
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.json);
    }
    out.extend_from_slice(b"]}");
    respond(200, "application/json", full(out))
}

fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(object.len() + 32);
    out.extend_from_slice(br#"{"type":""#);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(br#"","object":"#);
    out.extend_from_slice(object);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn bookmark_line(ty: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"apiVersion": ty.api_version(), "kind": ty.kind, "metadata": metadata});
    event_line("BOOKMARK", object.to_string().as_bytes())
}

/// A watch in progress: frames to send first, then live events, bookmarks and the timeout.
struct WatchState {
    pending: VecDeque<Bytes>,
    rx: tokio::sync::mpsc::UnboundedReceiver<WatchItem>,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    store: Arc<Shared>,
    ty: Arc<ResourceType>,
}

fn watch(
    shared: &Arc<Shared>,
    req: &Req,
    ty: &Arc<ResourceType>,
    filter: Filter,
) -> Result<Response<Body>, ApiError> {
    let since = match req.param("resourceVersion") {
        None | Some("") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = match req.param("timeoutSeconds") {
        None | Some("") => DEFAULT_WATCH_TIMEOUT,
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
    };
    let send_initial = req.flag("sendInitialEvents");
    let start = shared
        .store
        .lock()
        .watch(ty, filter, since, send_initial, false);
    let start = match start {
        Ok(start) => start,
        // As Kubernetes does: a 200 whose only event is an ERROR carrying the 410 Status.
        Err(gone) => {
            let line = event_line("ERROR", gone.to_status().to_string().as_bytes());
            return Ok(respond(200, "application/json", full(line)));
        }
    };
    let mut pending: VecDeque<Bytes> = start
        .initial
        .iter()
        .map(|(kind, object)| event_line(kind.as_str(), &object.json))
        .collect();
    if send_initial {
        pending.push_back(bookmark_line(ty, start.rv, true));
    }
    let interval = shared.bookmark_interval;
    let state = WatchState {
        pending,
        rx: start.rx,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks: req
            .flag("allowWatchBookmarks")
            .then(|| tokio::time::interval_at(tokio::time::Instant::now() + interval, interval)),
        store: shared.clone(),
        ty: ty.clone(),
    };
    let stream = futures::stream::unfold(state, next_watch_frame)
        .map(|bytes| Ok::<_, Infallible>(Frame::data(bytes)));
    Ok(respond(
        200,
        "application/json",
        BodyExt::boxed_unsync(StreamBody::new(stream)),
    ))
}

async fn next_watch_frame(mut s: WatchState) -> Option<(Bytes, WatchState)> {
    if let Some(frame) = s.pending.pop_front() {
        return Some((frame, s));
    }
    enum Next {
        Item(Option<WatchItem>),
        Bookmark,
        Timeout,
    }
    let bookmarks = &mut s.bookmarks;
    let next = tokio::select! {
        item = s.rx.recv() => Next::Item(item),
        () = async {
            match bookmarks.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        } => Next::Bookmark,
        () = tokio::time::sleep_until(s.deadline) => Next::Timeout,
    };
    match next {
        // `None`: the store ended this watch (expired, or its CRD was deleted).
        Next::Item(item) => {
            let (kind, object) = item?;
            Some((event_line(kind.as_str(), &object.json), s))
        }
        Next::Bookmark => {
            // Under the lock every event up to `rv` is already queued: send those first so the
            // bookmark never points behind an event this watcher has yet to see.
            let store = s.store.store.lock();
            let rv = store.resource_version();
            while let Ok((kind, object)) = s.rx.try_recv() {
                s.pending.push_back(event_line(kind.as_str(), &object.json));
            }
            drop(store);
            s.pending.push_back(bookmark_line(&s.ty, rv, false));
            let frame = s.pending.pop_front()?;
            Some((frame, s))
        }
        Next::Timeout => None,
    }
}

/// `/scale`: an `autoscaling/v1` Scale view of the replica counts.
fn scale(
    shared: &Arc<Shared>,
    req: &Req,
    ty: &ResourceType,
    ns: &str,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let Some(paths) = ty.scale.clone() else {
        return Err(not_found_path());
    };
    let mut store = shared.store.lock();
    let (_, object) = store.get_value(ty, ns, name)?;
    let current = scale_doc(&object, &paths);
    let desired = match req.method {
        Method::GET => return Ok(json_response(200, &current)),
        Method::PUT => parse_body(&req.body)?,
        Method::PATCH => {
            let mut doc = current.clone();
            match PatchKind::from_content_type(&req.content_type) {
                Some(PatchKind::Merge | PatchKind::Strategic) => {
                    let patch: Value = serde_json::from_slice(&req.body)
                        .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
                    json_patch::merge(&mut doc, &patch);
                }
                Some(PatchKind::Json) => {
                    let patch: json_patch::Patch = serde_json::from_slice(&req.body)
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                    json_patch::patch(&mut doc, &patch)
                        .map_err(|e| ApiError::invalid(format!("the JSON patch failed: {e}")))?;
                }
                _ => {
                    return Err(ApiError::from_code(
                        415,
                        "unsupported patch type for /scale",
                    ));
                }
            }
            doc
        }
        _ => return Err(ApiError::from_code(405, "unsupported method for /scale")),
    };
    if let Some(rv) = desired
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        && Some(rv)
            != current
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
    {
        return Err(ApiError::stale(&ty.resource_name(), name));
    }
    let replicas = desired
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::invalid("spec.replicas: must be a non-negative integer"))?;
    let mut updated = object;
    set_path(&mut updated, &paths.spec_replicas, json!(replicas));
    let time = store::now();
    let api_version = ty.api_version();
    let manager = req.update_manager();
    let writer = Writer {
        manager: &manager,
        subresource: "scale",
        api_version: &api_version,
        time: &time,
    };
    let stored = store.update(ty, ns, name, updated, Sub::Main, Some(&writer))?;
    Ok(json_response(200, &scale_doc(&stored.value(), &paths)))
}

fn set_path(object: &mut Value, path: &[String], value: Value) {
    let mut node = object;
    for key in path {
        if !node.is_object() {
            *node = json!({});
        }
        node = &mut node[key.as_str()];
    }
    *node = value;
}

fn scale_doc(object: &Value, paths: &store::ScalePaths) -> Value {
    let at = |path: &[String]| fields::get_path(object, path).cloned();
    let selector = paths
        .label_selector
        .as_ref()
        .and_then(|p| at(p))
        .map(|s| match s {
            Value::String(s) => s,
            // A LabelSelector object (ReplicaSet `.spec.selector`): its matchLabels.
            other => other
                .get("matchLabels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        });
    let metadata = object.get("metadata").cloned().unwrap_or(json!({}));
    let mut doc = json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
            "creationTimestamp": metadata.get("creationTimestamp"),
        },
        "spec": {"replicas": at(&paths.spec_replicas).unwrap_or(json!(0))},
        "status": {"replicas": at(&paths.status_replicas).unwrap_or(json!(0))},
    });
    if let Some(selector) = selector {
        doc["status"]["selector"] = json!(selector);
    }
    doc
}

/// The ReplicaSet controller stand-in: watches ReplicaSets and, `delay` after a change, makes
/// the status counts match `spec.replicas`.
async fn replicaset_controller(shared: Arc<Shared>, delay: Duration) {
    let Some(ty) = shared.store.lock().resource_type("apps/v1/replicasets") else {
        return;
    };
    let start = shared
        .store
        .lock()
        .watch(&ty, Filter::default(), None, false, true);
    let Ok(start) = start else {
        return;
    };
    let pending: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let mut rx = start.rx;
    let mut initial = start.initial.into_iter();
    loop {
        let item = match initial.next() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let (kind, stored) = item;
        let object = stored.value();
        if kind == EventType::Deleted || !replicaset_needs_sync(&object) {
            continue;
        }
        let text = |p: &str| {
            object
                .pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let id = (text("/metadata/namespace"), text("/metadata/name"));
        // One pending sync per ReplicaSet: it reads the latest state when it runs.
        if !pending.lock().insert(id.clone()) {
            continue;
        }
        let (shared, ty, pending) = (shared.clone(), ty.clone(), pending.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pending.lock().remove(&id);
            let mut store = shared.store.lock();
            let Ok((_, current)) = store.get_value(&ty, &id.0, &id.1) else {
                return;
            };
            if !replicaset_needs_sync(&current) {
                return;
            }
            let desired = desired_replicas(&current);
            let mut updated = current.clone();
            updated["status"] = json!({
                "replicas": desired,
                "fullyLabeledReplicas": desired,
                "readyReplicas": desired,
                "availableReplicas": desired,
                "observedGeneration": current.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
            });
            let time = store::now();
            let writer = Writer {
                manager: "replicaset-controller",
                subresource: "status",
                api_version: "apps/v1",
                time: &time,
            };
            let _ = store.update(&ty, &id.0, &id.1, updated, Sub::Status, Some(&writer));
        });
    }
}

fn desired_replicas(object: &Value) -> i64 {
    object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn replicaset_needs_sync(object: &Value) -> bool {
    if object.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let desired = desired_replicas(object);
    let count = |field: &str| {
        object
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    ["replicas", "readyReplicas", "availableReplicas"]
        .iter()
        .any(|f| count(f) != desired)
        || object.pointer("/status/observedGeneration") != object.pointer("/metadata/generation")
}
