//! The `web` metric provider: one HTTP request to a JSON API, one value selected from its
//! answer by JSONPath (RFC 9535, `serde_json_path`).
//!
//! An answer is trusted no more than a Prometheus one: redirects are never followed (headers
//! carry API keys), the body is capped at [`MAX_BODY_BYTES`] and reserved from the same
//! process-wide answer budget before it is read, and at most [`MAX_JSON_VALUES_PER_ANSWER`]
//! JSON values are decoded. One attempt per measurement: a `POST` may not be safe to repeat,
//! and the metric's `consecutiveErrorLimit` already absorbs a flaky answer.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LOCATION};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json_path::JsonPath;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;

use super::budget::BudgetedBody;
use super::measurement::{AnswerCap, ProviderError, bounded_owned};
use super::prometheus::{
    ConcurrencyLimiter, MAX_BODY_BYTES, ResolvedAuth, excerpt, redact_address,
};
use super::shared_clients::{ClientKey, with_default_headers};
use crate::analysis::template::web::{resolve_time, resolve_time_json};
use crate::api::WebMethod;
use crate::api::duration::{MAX_QUERY_TIMEOUT, format_duration};

/// The most JSON values (numbers, strings, booleans, nulls, lists, objects) decoded from one
/// answer. A decoded value costs about 80 bytes beyond its text, so a full answer costs its
/// body plus about 8 MB, as a Prometheus answer at its caps does; a gate's answer (a value, a
/// series of a few hundred points) holds far fewer. The rest is refused, never allocated.
pub const MAX_JSON_VALUES_PER_ANSWER: usize = 100_000;

/// The longest `jsonPath`, in bytes: a selector is one line.
pub const MAX_JSON_PATH_BYTES: usize = 1024;

/// Headers a metric may not set: `Host` would route the credentials to another virtual
/// host behind the checked origin, and the framing headers invite request smuggling.
pub const FORBIDDEN_HEADERS: [&str; 4] =
    ["host", "content-length", "transfer-encoding", "connection"];

/// Why a header name may not be set, if it may not.
pub fn forbidden_header(name: &str) -> Option<String> {
    FORBIDDEN_HEADERS
        .iter()
        .any(|forbidden| name.trim().eq_ignore_ascii_case(forbidden))
        .then(|| {
            format!(
                "`{}` may not be set (vigil sets Host and the framing headers itself: {})",
                crate::analysis::provider::bounded(name),
                FORBIDDEN_HEADERS.join(", ")
            )
        })
}

/// Default timeout of a web metric's request (Argo's).
pub const DEFAULT_WEB_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body.
#[derive(Clone, PartialEq)]
pub enum WebBody {
    /// Sent as written.
    Text(String),
    /// Serialized, with `Content-Type: application/json`.
    Json(Value),
}

impl fmt::Debug for WebBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A body may carry a Secret argument: only its size is shown.
        match self {
            WebBody::Text(text) => write!(f, "Text({} bytes)", text.len()),
            WebBody::Json(_) => f.write_str("Json(..)"),
        }
    }
}

/// Everything a [`WebClient`] needs, arguments already substituted and secrets read.
#[derive(Debug, Clone)]
pub struct WebClientConfig {
    /// The URL requested, its `{{time.unix}}` placeholders resolved at each measurement.
    pub url: String,
    /// The method.
    pub method: WebMethod,
    /// The metric's own headers (values may carry Secret arguments: treated as secrets).
    pub headers: Vec<(String, String)>,
    /// The body, for POST and PUT.
    pub body: Option<WebBody>,
    /// The selector, as written (Argo's braces allowed); None for the whole answer.
    pub json_path: Option<String>,
    /// Upper bound of one request: queueing for a slot, sending, reading the answer.
    pub timeout: Duration,
    /// Accept any TLS certificate.
    pub insecure: bool,
    /// Credentials and TLS roots from `auth`.
    pub auth: ResolvedAuth,
    /// Largest accepted body (at most [`MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
}

impl WebClientConfig {
    /// A GET of `url` with the defaults: 10 s timeout, whole answer, no auth.
    pub fn new(url: String) -> WebClientConfig {
        WebClientConfig {
            url,
            method: WebMethod::Get,
            headers: Vec::new(),
            body: None,
            json_path: None,
            timeout: DEFAULT_WEB_TIMEOUT,
            insecure: false,
            auth: ResolvedAuth::default(),
            max_body_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Parses a `jsonPath` as Argo writes it (`{$.data.ok}`, `{.data.ok}`) or as RFC 9535 does
/// (`$.data.ok`). Bounded so that selecting costs at most a few walks of the answer: at most
/// [`MAX_JSON_PATH_BYTES`], one descendant segment (`..`), one filter selector (`[?...]`),
/// no absolute query (`$`) inside a filter, and `match()`/`search()` only with a string
/// literal pattern. A nested filter or a filter that queries from the root runs a whole
/// query per node (an answer of 50,000 values makes that billions of steps), and a
/// pattern read from the answer compiles a regex per node.
pub fn parse_json_path(text: &str) -> Result<JsonPath, String> {
    if text.len() > MAX_JSON_PATH_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_JSON_PATH_BYTES} (MAX_JSON_PATH_BYTES)",
            text.len()
        ));
    }
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(trimmed)
        .trim();
    if inner.matches("..").count() > 1 {
        return Err(
            "more than one descendant segment (`..`): each multiplies the work over the answer; select a narrower path"
                .to_owned(),
        );
    }
    let rooted = if inner.starts_with('.') || inner.starts_with('[') {
        format!("${inner}")
    } else {
        inner.to_owned()
    };
    check_selection_cost(&rooted)?;
    JsonPath::parse(&rooted).map_err(|e| {
        format!(
            "`{rooted}` does not parse as JSONPath (RFC 9535; Argo's `{{$.a.b}}` braces are accepted): {}",
            e.to_string().replace('\n', " ")
        )
    })
}

/// Refuses the selectors whose cost grows faster than the answer (see [`parse_json_path`]).
/// Works on the text outside string literals, so a `'$'` or `'[?'` inside a name is fine.
fn check_selection_cost(path: &str) -> Result<(), String> {
    let code = outside_string_literals(path);
    let filters = code.matches('?').count();
    if filters > 1 {
        return Err(
            "more than one filter selector (`[?...]`): a nested filter runs a whole query per node; use one filter"
                .to_owned(),
        );
    }
    if code.get(1..).is_some_and(|rest| rest.contains('$')) {
        return Err(
            "`$` inside a filter: a query from the root runs over the whole answer for every node; use `@` (the current node)"
                .to_owned(),
        );
    }
    for function in ["match(", "search("] {
        for (at, _) in code.match_indices(function) {
            let arguments = &path[at + function.len()..];
            if !second_argument_is_string_literal(arguments) {
                return Err(format!(
                    "`{function}...)` with a pattern that is not a string literal: a pattern from the answer compiles a regex per node; write the pattern in quotes"
                ));
            }
        }
    }
    Ok(())
}

/// `text` with the contents of every `'...'` and `"..."` literal (escapes honoured)
/// replaced by spaces, so byte offsets stay the same.
fn outside_string_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.extend(std::iter::repeat_n(' ', c.len_utf8()));
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

/// Whether the text after `match(` / `search(` has a string literal as its second argument:
/// the first argument is skipped up to its top-level comma.
fn second_argument_is_string_literal(arguments: &str) -> bool {
    let code = outside_string_literals(arguments);
    let mut depth = 0usize;
    for (at, c) in code.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' if depth == 0 => return false,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                let rest = arguments[at + 1..].trim_start();
                return rest.starts_with('\'') || rest.starts_with('"');
            }
            _ => {}
        }
    }
    false
}

/// An async client for one web metric. Cheap to clone.
#[derive(Clone)]
pub struct WebClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with every client of the limiter that has the same roots and `insecure`.
    http: reqwest::Client,
    /// This metric's own headers (`headers` and `auth.headers`), added to each request.
    headers: HeaderMap,
    /// The URL as configured, time placeholders unresolved.
    url: String,
    /// The URL's origin only (`scheme://host:port`), for logs, errors and `Debug`: its path
    /// and query may carry Secret arguments.
    display_url: String,
    /// The origin credentials were read for: every request must go there.
    origin: super::resolve::Origin,
    /// Where requests may go.
    egress: crate::http_client::EgressGuard,
    method: reqwest::Method,
    body: Option<WebBody>,
    json_path: Option<(String, JsonPath)>,
    bearer_token: Option<String>,
    basic: Option<super::prometheus::BasicAuth>,
    /// What the Redactor must remove ([`ResolvedAuth::credential_values`]).
    credential_values: Vec<String>,
    timeout: Duration,
    max_body_bytes: usize,
    slots: Arc<Semaphore>,
}

impl fmt::Debug for WebClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebClient")
            .field("url", &self.inner.display_url)
            .field("method", &self.inner.method)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

fn header_map(pairs: &[(String, String)], field: &str) -> Result<HeaderMap, ProviderError> {
    let invalid = |detail: String| ProviderError::InvalidConfig { detail };
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let Some(reason) = forbidden_header(name) {
            return Err(invalid(format!("{field}: {reason}")));
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
            invalid(format!(
                "{field} header name {:?}: {e}",
                super::measurement::bounded(name)
            ))
        })?;
        // The value may be a secret: do not echo it in the error.
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            invalid(format!(
                "{field} header {name}: value is not a valid header"
            ))
        })?;
        value.set_sensitive(true);
        // One value per name, the last given (as reqwest's default headers kept it).
        headers.insert(name, value);
    }
    Ok(headers)
}

impl WebClient {
    /// Builds a client. Requires a rustls crypto provider to be installed in the process.
    pub fn new(
        config: WebClientConfig,
        limiter: &ConcurrencyLimiter,
    ) -> Result<WebClient, ProviderError> {
        let invalid = |detail: String| ProviderError::InvalidConfig { detail };
        let url = resolve_time(&config.url, jiff::Timestamp::UNIX_EPOCH)
            .map_err(|e| invalid(format!("provider.web.url: {e}")))
            .and_then(|text| {
                Url::parse(&text).map_err(|e| invalid(format!("provider.web.url: {e}")))
            })?;
        if url.cannot_be_a_base()
            || !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none_or(str::is_empty)
        {
            return Err(invalid(format!(
                "provider.web.url {} is not an http(s) URL with a host",
                redact_address(&url)
            )));
        }
        if config.timeout.is_zero() || config.timeout > MAX_QUERY_TIMEOUT {
            return Err(invalid(format!(
                "provider.web.timeoutSeconds {} is not in 1s..={}",
                format_duration(config.timeout),
                format_duration(MAX_QUERY_TIMEOUT)
            )));
        }
        let auth = config.auth;
        if auth.bearer_token.is_some() && auth.basic.is_some() {
            return Err(invalid(
                "bearer token and basic auth are mutually exclusive".into(),
            ));
        }
        let json_path = config
            .json_path
            .map(|text| {
                parse_json_path(&text)
                    .map(|path| (bounded_owned(text.clone()), path))
                    .map_err(|e| invalid(format!("provider.web.jsonPath: {e}")))
            })
            .transpose()?;
        let mut headers = header_map(&config.headers, "provider.web.headers")?;
        headers.extend(header_map(&auth.headers, "provider.web.auth.headers")?);
        let origin = super::resolve::Origin::of(&url)
            .map_err(|e| invalid(format!("provider.web.url: {e}")))?;
        let egress = limiter.egress().clone();
        egress.check_url(&url)?;
        let key = ClientKey {
            guard: egress.clone(),
            ca_bundle_pem: auth.ca_bundle_pem.clone(),
            insecure: config.insecure,
        };
        let http = limiter
            .clients()
            .get_or_build(key, ClientKey::build)
            .map_err(invalid)?;
        let method = match config.method {
            WebMethod::Get => reqwest::Method::GET,
            WebMethod::Post => reqwest::Method::POST,
            WebMethod::Put => reqwest::Method::PUT,
        };
        Ok(WebClient {
            inner: Arc::new(Inner {
                http,
                headers,
                display_url: url.origin().ascii_serialization(),
                origin,
                egress,
                slots: limiter.semaphore(&url),
                url: config.url,
                method,
                body: config.body,
                json_path,
                credential_values: auth.credential_values(),
                bearer_token: auth.bearer_token,
                basic: auth.basic,
                timeout: config.timeout,
                max_body_bytes: config.max_body_bytes.min(MAX_BODY_BYTES),
            }),
        })
    }

    /// The origin requested (`scheme://host:port`; the path may carry Secret arguments).
    pub fn address(&self) -> &str {
        &self.inner.display_url
    }

    /// The credential values this client sends, for the run's Redactor.
    pub fn credential_values(&self) -> &[String] {
        &self.inner.credential_values
    }

    /// The `jsonPath` as written, if any.
    pub fn json_path(&self) -> Option<&str> {
        self.inner.json_path.as_ref().map(|(text, _)| text.as_str())
    }

    /// Sends the request for the measurement at `at` (its `{{time.unix}}` placeholders) and
    /// returns the value its `jsonPath` selects: the node itself when one matches, a list
    /// when several do.
    pub async fn fetch(&self, at: jiff::Timestamp) -> Result<Value, ProviderError> {
        let inner = &self.inner;
        let deadline = Instant::now().checked_add(inner.timeout).ok_or_else(|| {
            ProviderError::InvalidConfig {
                detail: format!("timeout {:?} out of range", inner.timeout),
            }
        })?;
        let body = match tokio::time::timeout_at(deadline, inner.attempt(at)).await {
            Err(_elapsed) => {
                tracing::warn!(url = %inner.display_url, timeout = ?inner.timeout, "web metric request timed out");
                return Err(ProviderError::Timeout {
                    after: inner.timeout,
                    attempts: 1,
                });
            }
            Ok(result) => result?,
        };
        // Decoding and selecting walk up to MAX_JSON_VALUES_PER_ANSWER values: on a blocking
        // thread, never on the async workers that run every other reconcile.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let answer = parse_counted(body.bytes())?;
            // The body goes back to the budget once decoded.
            drop(body);
            inner.select(answer)
        })
        .await
        .map_err(|e| ProviderError::MalformedBody {
            detail: format!("selecting from the answer failed: {e}"),
        })?
    }
}

impl Inner {
    /// One exchange, holding a concurrency slot of the server while it is in flight.
    async fn attempt(&self, at: jiff::Timestamp) -> Result<BudgetedBody, ProviderError> {
        let invalid = |detail: String| ProviderError::InvalidConfig { detail };
        // The host holds no placeholder (checked when the run was built): only the path and
        // query change with the time.
        let url = resolve_time(&self.url, at)
            .and_then(|text| Url::parse(&text).map_err(|e| e.to_string()))
            .map_err(|e| invalid(format!("provider.web.url: {e}")))?;
        // Credentials were read for `origin`: whatever the time placeholders resolve to,
        // the request goes there or nowhere.
        if super::resolve::Origin::of(&url).as_ref() != Ok(&self.origin) {
            return Err(invalid(format!(
                "provider.web.url: at measurement time it no longer reaches {}, the origin its credentials were checked for",
                self.origin
            )));
        }
        self.egress.check_url(&url)?;
        let body = match &self.body {
            None => None,
            Some(WebBody::Text(text)) => Some((
                None,
                resolve_time(text, at).map_err(|e| invalid(format!("provider.web.body: {e}")))?,
            )),
            Some(WebBody::Json(json)) => {
                let mut json = json.clone();
                resolve_time_json(&mut json, at)
                    .map_err(|e| invalid(format!("provider.web.jsonBody: {e}")))?;
                Some((Some("application/json"), json.to_string()))
            }
        };
        // The semaphore is never closed; if it were, requesting without a slot beats failing.
        let _slot = self.slots.acquire().await.ok();
        let mut request = self.http.request(self.method.clone(), url.clone());
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        if let Some(basic) = &self.basic {
            request = request.basic_auth(&basic.username, Some(&basic.password));
        }
        if let Some((content_type, body)) = body {
            if let Some(content_type) = content_type {
                request = request.header(CONTENT_TYPE, content_type);
            }
            request = request.body(body);
        }
        let request = request.build().map_err(|e| self.unreachable(e))?;
        let request = with_default_headers(request, &self.headers);
        let mut response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| url.join(v).ok())
                .map_or_else(|| "(no Location)".to_owned(), |to| redact_address(&to));
            return Err(ProviderError::Redirected {
                status: status.as_u16(),
                location: bounded_owned(location),
            });
        }
        let limit = self.max_body_bytes;
        if response
            .content_length()
            .is_some_and(|length| length > limit as u64)
        {
            return Err(ProviderError::BodyTooLarge { limit });
        }
        // Reserve the body's bytes before reading any (the whole cap when the length is
        // unknown); the wait counts against the deadline.
        let declared = response
            .content_length()
            .and_then(|length| usize::try_from(length).ok());
        let mut body = BudgetedBody::reserve(declared.unwrap_or(limit)).await;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            if body.extend(&chunk).is_err() {
                return Err(ProviderError::BodyTooLarge { limit });
            }
        }
        body.release_unused();
        if !status.is_success() {
            return Err(ProviderError::HttpStatus {
                status: status.as_u16(),
                body_excerpt: bounded_owned(excerpt(body.bytes())),
                attempts: 1,
            });
        }
        Ok(body)
    }

    fn unreachable(&self, error: reqwest::Error) -> ProviderError {
        if let Some(refused) = crate::http_client::refused_by_guard(&error) {
            return ProviderError::RefuseDestination(refused);
        }
        ProviderError::Unreachable {
            address: self.display_url.clone(),
            attempts: 1,
            source: Box::new(error.without_url()),
        }
    }

    fn select(&self, answer: Value) -> Result<Value, ProviderError> {
        let Some((text, path)) = &self.json_path else {
            return Ok(answer);
        };
        let nodes = path.query(&answer).all();
        match nodes.as_slice() {
            [] => Err(ProviderError::NoValueAtPath {
                path: text.clone(),
                excerpt: bounded_owned(excerpt(answer.to_string().as_bytes())),
            }),
            [one] => Ok((*one).clone()),
            several => Ok(Value::Array(several.iter().map(|v| (*v).clone()).collect())),
        }
    }
}

/// Decodes a JSON answer, refusing it past [`MAX_JSON_VALUES_PER_ANSWER`] values.
pub fn parse_counted(body: &[u8]) -> Result<Value, ProviderError> {
    let left = Cell::new(MAX_JSON_VALUES_PER_ANSWER);
    let over = Cell::new(false);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = Counted {
        left: &left,
        over: &over,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(_) if over.get() => Err(ProviderError::AnswerOverCap {
            cap: AnswerCap::JsonValuesPerAnswer,
            limit: MAX_JSON_VALUES_PER_ANSWER,
        }),
        Err(error) => Err(ProviderError::NotJson {
            detail: bounded_owned(format!("{error}; the answer begins: {}", excerpt(body))),
        }),
    }
}

/// Builds a [`Value`] while counting the values decoded against an allowance.
#[derive(Clone, Copy)]
struct Counted<'a> {
    left: &'a Cell<usize>,
    over: &'a Cell<bool>,
}

impl Counted<'_> {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(rest) => {
                self.left.set(rest);
                Ok(())
            }
            None => {
                self.over.set(true);
                Err(E::custom(format!(
                    "over {MAX_JSON_VALUES_PER_ANSWER} JSON values"
                )))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counted<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counted<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.take()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // A key costs as much as a string value.
            self.take::<A::Error>()?;
            let value = map.next_value_seed(self)?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_braces_and_rfc_9535_paths_select_the_same_value() {
        let answer = serde_json::json!({"data": {"ok": true, "items": [1, 2, 3]}});
        for text in ["{$.data.ok}", "{.data.ok}", "$.data.ok", " { $.data.ok } "] {
            let path = parse_json_path(text).expect(text);
            assert_eq!(
                path.query(&answer).all(),
                vec![&Value::Bool(true)],
                "{text}"
            );
        }
        let path = parse_json_path("$.data.items[*]").expect("wildcard");
        assert_eq!(path.query(&answer).all().len(), 3);
    }

    #[test]
    fn costly_or_broken_paths_are_refused_with_the_reason() {
        let long = format!("$.{}", "a".repeat(MAX_JSON_PATH_BYTES));
        assert!(
            parse_json_path(&long)
                .expect_err("long")
                .contains("MAX_JSON_PATH_BYTES")
        );
        assert!(
            parse_json_path("$..a[?@..b]")
                .expect_err("two descents")
                .contains("descendant")
        );
        assert!(parse_json_path("$.data[").is_err());
    }

    #[test]
    fn selectors_whose_cost_grows_faster_than_the_answer_are_refused() {
        for (text, why) in [
            ("$[?$[?$[*]]]", "filter"),
            ("$[?@[?@]]", "more than one filter"),
            ("$[?$[*]]", "`$` inside a filter"),
            ("$[?count($[*]) > 1]", "`$` inside a filter"),
            ("$[?match(@.a, @.b)]", "match("),
            ("$[?search(@.a, @.b)]", "search("),
            ("$[?search(@.a, $.b)]", "`$` inside a filter"),
        ] {
            let error = parse_json_path(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
        for fine in [
            "$[?@ > 1]",
            "$.series[?@.metric == 'errors'].value",
            "$[?match(@.name, 'err.*')]",
            "$[?search(@.name, \"a,b\")]",
            "$['$', '?']",
            "$[?@.a == '$[?x]']",
        ] {
            assert!(parse_json_path(fine).is_ok(), "{fine}");
        }
        // A filter that is allowed walks a 50,000-value answer once.
        let answer = Value::Array(vec![Value::from(1); 50_000]);
        let path = parse_json_path("$[?@ > 0]").expect("one filter");
        assert_eq!(path.query(&answer).all().len(), 50_000);
    }

    #[test]
    fn answers_are_decoded_whole_within_the_cap_and_refused_past_it() {
        let value =
            parse_counted(br#"{"a": [1, 2.5, "x", null, true, {"b": -3}]}"#).expect("decodes");
        assert_eq!(
            value,
            serde_json::json!({"a": [1, 2.5, "x", null, true, {"b": -3}]})
        );
        let many = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES_PER_ANSWER));
        assert!(matches!(
            parse_counted(many.as_bytes()),
            Err(ProviderError::AnswerOverCap {
                cap: AnswerCap::JsonValuesPerAnswer,
                ..
            })
        ));
        let just = format!("[{}0]", "0,".repeat(MAX_JSON_VALUES_PER_ANSWER - 2));
        assert!(parse_counted(just.as_bytes()).is_ok());
        assert!(matches!(
            parse_counted(b"<html>oops</html>"),
            Err(ProviderError::NotJson { .. })
        ));
        assert!(matches!(
            parse_counted(b"{} trailing"),
            Err(ProviderError::NotJson { .. })
        ));
    }
}
