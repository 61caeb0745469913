//! The engine's admin HTTP endpoint on loopback (default `127.0.0.1:9901`), used by
//! `vigil local get|promote|abort|retry|pause|resume|apply`:
//!
//! - `GET /rollouts`: the names, as a JSON array;
//! - `GET /rollouts/NAME`: the [`RolloutView`](super::engine::RolloutView) as JSON;
//! - `POST /rollouts/NAME/{promote,promote-full,abort,retry,pause,resume}`;
//! - `POST /apply`: a YAML body of Rollouts and AnalysisTemplates (a new pod template starts a
//!   new rollout);
//! - `GET /livez`.
//!
//! Errors are plain text with a 4xx/5xx status: the client prints them as they are.

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::engine::{EngineError, EngineHandle, Sources, UserRequest};
use super::http;

/// The default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// Largest `/apply` body accepted.
const MAX_APPLY_BYTES: usize = 1024 * 1024;

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("failed to bind the admin endpoint to {addr}: {source}")]
    BindAdmin {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running admin endpoint; dropping it stops it.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Admin {
    /// Serves the endpoint on `addr` for `engine`.
    pub async fn bind(addr: SocketAddr, engine: EngineHandle) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::BindAdmin { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(http::serve(listener, stopped, move |req| {
            let engine = engine.clone();
            async move { handle(&engine, req).await }
        }));
        tracing::info!(%addr, "admin endpoint listening");
        Ok(Self { addr, stop, task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => http::text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

fn engine_error(error: EngineError) -> Response<Full<Bytes>> {
    let status = match error {
        EngineError::FindRollout { .. } => StatusCode::NOT_FOUND,
        EngineError::Request(_) => StatusCode::CONFLICT,
        EngineError::LintFile { .. }
        | EngineError::ParseDocument { .. }
        | EngineError::ReadListenAddress { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    http::text(status, format!("{error}\n"))
}

async fn handle(engine: &EngineHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["livez"]) => http::text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["rollouts"]) => json(StatusCode::OK, &engine.names()),
        (&Method::GET, ["rollouts", name]) => match engine.get(name) {
            Some(view) => json(StatusCode::OK, &view),
            None => http::text(
                StatusCode::NOT_FOUND,
                format!("no rollout named {name:?}\n"),
            ),
        },
        (&Method::POST, ["rollouts", name, action]) => {
            let Some(request) = UserRequest::from_action(action) else {
                return http::text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown action {action:?}: use promote, promote-full, abort, retry, pause or resume\n"
                    ),
                );
            };
            let request = match (request, query_step(req.uri().query())) {
                (UserRequest::Promote { .. }, Ok(step)) => UserRequest::Promote { step },
                (_, Err(message)) => return http::text(StatusCode::BAD_REQUEST, message),
                (request, Ok(_)) => request,
            };
            match engine.request(name, request).await {
                Ok(()) => http::text(StatusCode::OK, format!("{action}: recorded on {name}\n")),
                Err(error) => engine_error(error),
            }
        }
        (&Method::POST, ["apply"]) => {
            let body = match Limited::new(req.into_body(), MAX_APPLY_BYTES)
                .collect()
                .await
            {
                Ok(body) => body.to_bytes(),
                Err(error) => {
                    return http::text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("failed to read the body: {error}\n"),
                    );
                }
            };
            let text = String::from_utf8_lossy(&body);
            let sources = match Sources::parse(Path::new("<apply>"), &text) {
                Ok(sources) => sources,
                Err(error) => return engine_error(error),
            };
            match engine.apply(sources).await {
                Ok(names) => json(StatusCode::OK, &names),
                Err(error) => engine_error(error),
            }
        }
        _ => http::text(
            StatusCode::NOT_FOUND,
            format!("no route for {method} {path}\n"),
        ),
    }
}

/// `?step=N` on promote: the step index the user saw.
fn query_step(query: Option<&str>) -> Result<Option<i32>, String> {
    let Some(query) = query else { return Ok(None) };
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("step=") {
            return value
                .parse()
                .map(Some)
                .map_err(|_| format!("step={value:?} is not a step index\n"));
        }
    }
    Ok(None)
}
