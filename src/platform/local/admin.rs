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
//!
//! `POST /apply` runs the commands it is given as the user, so the endpoint trusts nobody but
//! the user's own `vigil local`:
//! - it binds loopback addresses only ([`require_loopback`]);
//! - every request but `GET /livez` carries `Authorization: Bearer TOKEN`, where TOKEN is a
//!   random per-run token written (mode 0600) to [`ADMIN_TOKEN_FILE`] in the state directory;
//!   it is compared in constant time (401 otherwise);
//! - a request with an `Origin` header (a web page) or a `Host` that is not a loopback name or
//!   address (DNS rebinding) gets 403;
//! - `/apply` takes a YAML content type only (415 otherwise), at most [`MAX_APPLY_BYTES`]
//!   (413), nested at most
//!   [`MAX_YAML_NESTING`](super::yaml_guard::MAX_YAML_NESTING) deep (400), parsed on a blocking thread.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::engine::{EngineError, EngineHandle, Sources, UserRequest};
use super::http;
use super::yaml_guard::check_nesting;

/// The default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// The file in the state directory holding the admin token (mode 0600, rewritten at every
/// start, removed at a clean stop).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The file in the state directory holding the admin endpoint's address, so the verbs
/// (`vigil promote …`) find a `vigil run` started with another `--admin` (removed at a clean
/// stop, like the token).
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

/// The request header naming the file an `/apply` body was read from (visible ASCII, at most
/// [`MAX_SOURCE_NAME`] characters), so errors name it instead of `<apply>`.
pub const SOURCE_HEADER: &str = "x-vigil-source";

/// The longest file name [`SOURCE_HEADER`] may carry.
pub const MAX_SOURCE_NAME: usize = 256;

/// The environment variable `vigil local` reads the admin token from, before the token file.
pub const ADMIN_TOKEN_ENV: &str = "VIGIL_ADMIN_TOKEN";

/// Largest `/apply` body accepted: a Rollout with its templates is a few KiB; 1 MiB bounds the
/// memory and the parse time a single request may cost.
pub const MAX_APPLY_BYTES: usize = 1024 * 1024;

/// Random bytes in a token (hex-encoded in the file): 256 bits, unguessable.
const TOKEN_BYTES: usize = 32;

/// The content types `/apply` takes.
const YAML_CONTENT_TYPES: [&str; 3] = ["application/yaml", "application/x-yaml", "text/yaml"];

/// The content type `vigil local apply` sends.
pub const YAML_CONTENT_TYPE: &str = "application/yaml";

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
    /// The address is not a loopback address.
    #[error(
        "refusing to serve the admin endpoint on {addr}: it runs commands for whoever reaches \
         it, so it binds loopback addresses only (127.0.0.1, ::1)"
    )]
    BindNonLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// The token file could not be written.
    #[error("failed to write the admin token to {path}: {source}")]
    WriteToken {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Refuses an admin address that is not loopback.
pub fn require_loopback(addr: SocketAddr) -> Result<(), AdminError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(AdminError::BindNonLoopback { addr })
    }
}

/// The per-run secret; `Debug` does not show it.
#[derive(Clone)]
struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self(Arc::from(hex))
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        let difference = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

/// Reads the admin token a running `vigil run` wrote into `state_dir`.
pub fn read_token(state_dir: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(state_dir.join(ADMIN_TOKEN_FILE))?;
    Ok(text.trim().to_owned())
}

/// A running admin endpoint; dropping it stops it.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    token_file: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Admin {
    /// Serves the endpoint on the loopback address `addr` for `engine`, with a new token
    /// written to [`ADMIN_TOKEN_FILE`] in `state_dir`.
    pub async fn bind(
        addr: SocketAddr,
        engine: EngineHandle,
        state_dir: &Path,
    ) -> Result<Self, AdminError> {
        Self::bind_with_limits(addr, engine, state_dir, http::ConnectionLimits::default()).await
    }

    /// [`Admin::bind`] with other per-connection limits (tests use small ones).
    pub async fn bind_with_limits(
        addr: SocketAddr,
        engine: EngineHandle,
        state_dir: &Path,
        limits: http::ConnectionLimits,
    ) -> Result<Self, AdminError> {
        require_loopback(addr)?;
        // Bound first: a failed start leaves another engine's token file alone.
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::BindAdmin { addr, source })?;
        let token = AdminToken::generate();
        let token_file =
            super::state::write_private(state_dir, ADMIN_TOKEN_FILE, token.0.as_bytes()).map_err(
                |source| AdminError::WriteToken {
                    path: state_dir.join(ADMIN_TOKEN_FILE),
                    source,
                },
            )?;
        let addr = listener.local_addr().unwrap_or(addr);
        let addr_file = state_dir.join(ADMIN_ADDR_FILE);
        if let Err(error) =
            super::state::write_private(state_dir, ADMIN_ADDR_FILE, addr.to_string().as_bytes())
        {
            // The verbs then need --admin; everything else works.
            tracing::warn!(file = %addr_file.display(), %error, "could not record the admin address");
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(http::serve_with_limits(
            listener,
            stopped,
            limits,
            move |req| {
                let engine = engine.clone();
                let token = token.clone();
                async move { guarded(&engine, &token, req).await }
            },
        ));
        tracing::info!(%addr, token_file = %token_file.display(), "admin endpoint listening");
        Ok(Self {
            addr,
            token_file,
            stop,
            task,
        })
    }

    /// The file holding the token.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        // Best effort: the next start writes a new token anyway.
        let _ = std::fs::remove_file(&self.token_file);
        if let Some(dir) = self.token_file.parent() {
            let _ = std::fs::remove_file(dir.join(ADMIN_ADDR_FILE));
        }
    }
}

/// Whether `host` (a `Host` header value or a request target's authority) names this machine's
/// loopback: `localhost` or a loopback IP (IPv6 in brackets), with an optional decimal port and
/// nothing else. Parsed as a URI authority, then userinfo (`localhost:80@evil`), lists
/// (`127.0.0.1:1, evil`) and junk after `]` or in the port are refused.
fn is_loopback_host(host: &str) -> bool {
    let Ok(authority) = host.parse::<hyper::http::uri::Authority>() else {
        return false;
    };
    if authority.as_str().contains('@') {
        return false;
    }
    let name = authority.host();
    // Whatever follows the host must be `:PORT` with PORT a u16, or nothing.
    let after = authority.as_str().get(name.len()..).unwrap_or("x");
    let port_is_valid = match after.strip_prefix(':') {
        None => after.is_empty(),
        Some(port) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
    };
    if !port_is_valid {
        return false;
    }
    let address = match name.strip_prefix('[') {
        Some(bracketed) => match bracketed.strip_suffix(']') {
            Some(inner) => inner,
            None => return false,
        },
        None => name,
    };
    address.eq_ignore_ascii_case("localhost")
        || address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The request's one `Host` header as text: `None` when it is missing, repeated or not text
/// (two Host headers could be read differently by two parsers).
fn single_host(req: &Request<Incoming>) -> Option<&str> {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None;
    }
    host.to_str().ok()
}

/// Whether the request's content type is one of [`YAML_CONTENT_TYPES`] (parameters ignored).
fn is_yaml(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            YAML_CONTENT_TYPES
                .iter()
                .any(|yaml| media.trim().eq_ignore_ascii_case(yaml))
        })
}

/// The checks every request passes before [`handle`]: no web page, a loopback `Host`, the token.
async fn guarded(
    engine: &EngineHandle,
    token: &AdminToken,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.headers().contains_key(hyper::header::ORIGIN) {
        return http::text(
            StatusCode::FORBIDDEN,
            "requests from web pages (with an Origin header) are refused\n",
        );
    }
    let host = single_host(&req);
    // An absolute-form target (`GET http://name/...`) must name loopback too.
    let target_is_loopback = req
        .uri()
        .authority()
        .is_none_or(|authority| is_loopback_host(authority.as_str()));
    if !host.is_some_and(is_loopback_host) || !target_is_loopback {
        return http::text(
            StatusCode::FORBIDDEN,
            "the Host header must name a loopback address (localhost, 127.0.0.1, [::1])\n",
        );
    }
    if req.method() == Method::GET && req.uri().path() == "/livez" {
        return http::text(StatusCode::OK, "ok\n");
    }
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    if !presented.is_some_and(|presented| token.matches(presented)) {
        let mut response = http::text(
            StatusCode::UNAUTHORIZED,
            format!(
                "missing or wrong admin token: send `Authorization: Bearer TOKEN` with the token \
                 from {ADMIN_TOKEN_FILE} in the state directory (vigil local reads it itself)\n"
            ),
        );
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    handle(engine, req).await
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
                Ok(()) => http::text(StatusCode::OK, format!("{}\n", request.describe(name))),
                Err(error) => engine_error(error),
            }
        }
        (&Method::POST, ["apply"]) => apply(engine, req).await,
        _ => http::text(
            StatusCode::NOT_FOUND,
            format!("no route for {method} {path}\n"),
        ),
    }
}

/// `POST /apply`: YAML only, capped, depth-checked, parsed on a blocking thread.
async fn apply(engine: &EngineHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if !is_yaml(&req) {
        return http::text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "/apply takes YAML: set Content-Type to one of {}\n",
                YAML_CONTENT_TYPES.join(", ")
            ),
        );
    }
    let source = source_name(&req);
    let body = match Limited::new(req.into_body(), MAX_APPLY_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return http::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("failed to read the body (at most {MAX_APPLY_BYTES} bytes): {error}\n"),
            );
        }
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    if let Err(error) = check_nesting(&text) {
        return http::text(StatusCode::BAD_REQUEST, format!("{source}: {error}\n"));
    }
    // The parser's time grows faster than the text: keep it off the async workers.
    let parsed =
        tokio::task::spawn_blocking(move || Sources::parse(Path::new(&source), &text)).await;
    let sources = match parsed {
        Ok(Ok(sources)) => sources,
        Ok(Err(error)) => return engine_error(error),
        Err(error) => {
            return http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to parse the body: {error}\n"),
            );
        }
    };
    match engine.apply(sources).await {
        Ok(names) => json(StatusCode::OK, &names),
        Err(error) => engine_error(error),
    }
}

/// The file the `/apply` body came from, as [`SOURCE_HEADER`] names it: visible ASCII
/// only and bounded, else `<apply>`.
fn source_name(req: &Request<Incoming>) -> String {
    req.headers()
        .get(SOURCE_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|name| {
            !name.is_empty()
                && name.len() <= MAX_SOURCE_NAME
                && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        })
        .map_or_else(|| "<apply>".to_owned(), str::to_owned)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised_and_rebinding_names_are_not() {
        for host in [
            "localhost",
            "LOCALHOST:9901",
            "127.0.0.1",
            "127.0.0.2:80",
            "[::1]:9901",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:9901",
            "127.0.0.1.evil.example",
            "localhost.evil.example:9901",
            "0.0.0.0:9901",
            "[::]:9901",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    /// Review finding 12: the old prefix/suffix split let these through.
    #[test]
    fn host_with_userinfo_list_or_junk_after_bracket_is_not_loopback() {
        for host in [
            "localhost:80@evil",
            "localhost:80@evil.example",
            "user@127.0.0.1",
            "127.0.0.1:1, evil.com",
            "127.0.0.1:1,evil.com",
            "localhost,evil.com",
            "[::1]junk",
            "[::1]:80junk",
            "[::1]]",
            "[::1",
            "::1",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "127.0.0.1:+80",
            "localhost:80:80",
            "127.0.0.1 ",
            "localhost/x",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        for host in ["[::1]", "[::1]:9901", "127.1.2.3:65535", "localhost:0"] {
            assert!(is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn token_matches_only_itself() {
        let token = AdminToken::generate();
        assert_eq!(token.0.len(), TOKEN_BYTES * 2);
        assert!(token.matches(token.0.as_bytes()));
        let mut wrong = token.0.as_bytes().to_vec();
        wrong[TOKEN_BYTES] ^= 1;
        assert!(!token.matches(&wrong));
        assert!(!token.matches(&token.0.as_bytes()[1..]));
        assert!(!token.matches(b""));
        assert_ne!(token.0, AdminToken::generate().0, "fresh per run");
        assert!(!format!("{token:?}").contains(&*token.0), "Debug hides it");
    }
}
