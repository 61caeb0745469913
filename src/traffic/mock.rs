//! A mocked API server for the routers' I/O tests (tower-test): it answers from a map of
//! objects by path and records every call, so a test asserts the exact requests a router made,
//! in order, with their bodies (as `platform/kubernetes/tests.rs` does for a whole reconcile).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request a router made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Call {
    /// `GET`, `POST`, `PATCH`, `DELETE`.
    pub method: String,
    /// The URL path.
    pub path: String,
    /// The Content-Type sent.
    pub content_type: String,
    /// The JSON body sent (`Null` without one).
    pub body: Value,
}

impl Call {
    /// `METHOD path` for compact sequence assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The mocked server: objects by path; GET answers them (404 otherwise), POST and PATCH echo
/// what the object becomes, DELETE answers the object deleted. `fail` makes the first call
/// matching `METHOD path` answer with that status instead.
pub(crate) struct MockApi {
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

fn not_found(path: &str) -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
               "code": 404, "message": format!("{path} not found")}),
    )
}

fn answer(
    objects: &BTreeMap<String, Value>,
    fail: &mut BTreeMap<String, u16>,
    call: &Call,
) -> (u16, Value) {
    if let Some(code) = fail.remove(&call.line()) {
        return (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "Invalid", "code": code, "message": "injected"}),
        );
    }
    let path = call.path.as_str();
    match call.method.as_str() {
        "GET" => objects
            .get(path)
            .map_or_else(|| not_found(path), |o| (200, o.clone())),
        "POST" => (201, call.body.clone()),
        "PATCH" => match objects.get(path) {
            Some(object) => {
                let mut patched = object.clone();
                if let Ok(patch) = serde_json::from_value::<json_patch::Patch>(call.body.clone())
                    && json_patch::patch(&mut patched, &patch).is_err()
                {
                    return (
                        422,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": "Invalid", "code": 422, "message": "test failed"}),
                    );
                }
                (200, patched)
            }
            None => not_found(path),
        },
        "DELETE" => objects
            .get(path)
            .map_or_else(|| not_found(path), |o| (200, o.clone())),
        _ => not_found(path),
    }
}

impl MockApi {
    /// A client talking to a mock holding `objects` (by path); `fail` maps `METHOD path` to
    /// the status its first call gets.
    pub fn start(
        objects: BTreeMap<String, Value>,
        fail: BTreeMap<String, u16>,
    ) -> (Client, MockApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            let mut fail = fail;
            while let Some((request, send)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (status, body) = answer(&objects, &mut fail, &call);
                recorded.lock().expect("calls").push(call);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                    .expect("response");
                send.send_response(response);
            }
        });
        (Client::new(service, "default"), MockApi { calls, task })
    }

    /// The calls made, once every client is dropped.
    pub async fn finish(self) -> Vec<Call> {
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("the mock server stops once the client is dropped")
            .expect("mock server task");
        self.calls.lock().expect("calls").clone()
    }
}

/// `METHOD path` of each call.
pub(crate) fn lines(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::line).collect()
}
