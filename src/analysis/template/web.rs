//! Arguments in a `web` metric, and its checks.
//!
//! Substitution never changes the request's shape: a value is percent-encoded into the URL's
//! path and query (so it cannot add a segment, a parameter or a fragment), JSON-escaped into a
//! `body` (so it cannot close a string), put as a plain string into a `jsonBody` (serialization
//! escapes it) and refused in a header when it holds a line break (so it cannot add a header).
//! The URL's scheme, host and port hold no argument at all: the template, not whoever passes
//! the arguments, decides where the request and its credentials go.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::args::{ArgRef, placeholders};
use super::validate::{check_auth, check_declared};
use super::{Problem, TemplateError};
use crate::analysis::provider::web::parse_json_path;
use crate::api::duration::MAX_QUERY_TIMEOUT;
use crate::api::{WebMethod, WebProvider};

/// `value` percent-encoded for a URL path segment or query component: every byte but the
/// unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`, so `/ ? # & = +` and `%` stay data.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `value` escaped for the inside of a JSON string (no quotes around it).
pub fn json_escape(value: &str) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

/// The byte offset where the URL's authority (`scheme://user@host:port`) ends: the first `/`,
/// `?` or `#` after `://`, or the end. `None` when the URL does not start with a scheme and
/// `://`, so its destination is not fixed by its text.
fn authority_end(url: &str) -> Option<usize> {
    let scheme_end = url.find("://")?;
    let scheme = &url[..scheme_end];
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let rest = scheme_end + 3;
    Some(
        url[rest..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |at| rest + at),
    )
}

/// One `{{time.unix}}` or `{{time.unix-DURATION}}`: the measurement's time (the instant it
/// is for, as a Prometheus query's `time`), in seconds since the Unix epoch, minus an offset.
/// APIs that ask for a window (`from`/`to`, as Datadog's) get it from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRef {
    /// Byte offset of the opening `{{`.
    pub start: usize,
    /// Byte offset just past the closing `}}`.
    pub end: usize,
    /// Subtracted from the measurement's time.
    pub offset: std::time::Duration,
}

/// Every `{{time.…}}` in `text`, in order; a malformed one is an error saying how to write it.
pub fn time_refs(text: &str) -> Result<Vec<TimeRef>, String> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("{{") {
        let start = from + offset;
        let Some(close) = text[start + 2..].find("}}") else {
            break;
        };
        let end = start + 2 + close + 2;
        from = end;
        let inner: String = text[start + 2..end - 2].split_whitespace().collect();
        let Some(rest) = inner.strip_prefix("time.") else {
            continue;
        };
        let offset = match rest.strip_prefix("unix") {
            Some("") => std::time::Duration::ZERO,
            Some(after) => match after
                .strip_prefix('-')
                .map(crate::api::duration::parse_duration)
            {
                Some(Ok(d)) if d <= crate::api::duration::MAX_DURATION => d,
                _ => return Err(time_syntax(&text[start..end])),
            },
            None => return Err(time_syntax(&text[start..end])),
        };
        found.push(TimeRef { start, end, offset });
    }
    Ok(found)
}

fn time_syntax(found: &str) -> String {
    format!(
        "`{}`: write `{{{{time.unix}}}}` (the measurement's time, in Unix seconds) or `{{{{time.unix-5m}}}}` (minus a duration of at most 30 days)",
        crate::analysis::provider::bounded(found)
    )
}

/// `text` with each `{{time.…}}` blanked out (same length), so the argument placeholders are
/// found at their own offsets.
fn mask_time(text: &str) -> String {
    let mut masked = text.to_owned();
    for r in time_refs(text).unwrap_or_default() {
        masked.replace_range(r.start..r.end, &" ".repeat(r.end - r.start));
    }
    masked
}

/// The argument placeholders of a text that may also hold time placeholders.
fn arg_refs(text: &str) -> Result<Vec<ArgRef>, TemplateError> {
    time_refs(text).map_err(|reason| TemplateError::ParsePlaceholder { at: 0, reason })?;
    placeholders(&mask_time(text))
}

/// `text` with each `{{time.…}}` replaced by the Unix seconds of `at` minus its offset.
pub fn resolve_time(text: &str, at: jiff::Timestamp) -> Result<String, String> {
    let refs = time_refs(text)?;
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for r in refs {
        let seconds = at
            .as_second()
            .saturating_sub(i64::try_from(r.offset.as_secs()).unwrap_or(i64::MAX));
        out.push_str(&text[from..r.start]);
        out.push_str(&seconds.to_string());
        from = r.end;
    }
    out.push_str(&text[from..]);
    Ok(out)
}

/// Every string of a JSON body with its time placeholders resolved at `at`.
pub fn resolve_time_json(value: &mut Value, at: jiff::Timestamp) -> Result<(), String> {
    match value {
        Value::String(text) => *text = resolve_time(text, at)?,
        Value::Array(items) => {
            for item in items {
                resolve_time_json(item, at)?;
            }
        }
        Value::Object(fields) => {
            for field in fields.values_mut() {
                resolve_time_json(field, at)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn refuse(r: &ArgRef, reason: impl Into<String>) -> TemplateError {
    TemplateError::SubstituteArg {
        name: r.name.clone(),
        reason: reason.into(),
    }
}

/// Replaces every placeholder of `text` by `encode(value)`.
fn splice(
    text: &str,
    refs: &[ArgRef],
    args: &BTreeMap<String, String>,
    encode: impl Fn(&ArgRef, &str) -> Result<String, TemplateError>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for r in refs {
        let value = args
            .get(&r.name)
            .ok_or_else(|| refuse(r, "no value was resolved for it"))?;
        out.push_str(&text[from..r.start]);
        out.push_str(&encode(r, value)?);
        from = r.end;
    }
    out.push_str(&text[from..]);
    Ok(out)
}

/// Why a placeholder sits where it may not: in the scheme, host or port of the URL.
const DESTINATION_FIXED: &str = "an argument may not choose the URL's scheme, host or port (it would choose where the request and its credentials go); put arguments in the path or query only";

/// Substitutes `args` into the URL, percent-encoding each value.
pub fn substitute_url(url: &str, args: &BTreeMap<String, String>) -> Result<String, TemplateError> {
    let refs = arg_refs(url)?;
    let first_time = time_refs(url).unwrap_or_default().first().map(|t| t.start);
    let first = refs
        .first()
        .map(|r| r.start)
        .into_iter()
        .chain(first_time)
        .min();
    if let Some(first) = first
        && authority_end(url).is_none_or(|end| first < end)
    {
        let name = refs.first().map_or("time".to_owned(), |r| r.name.clone());
        return Err(TemplateError::SubstituteArg {
            name,
            reason: DESTINATION_FIXED.to_owned(),
        });
    }
    splice(url, &refs, args, |_, value| Ok(percent_encode(value)))
}

/// Substitutes `args` into a header value, refusing line breaks and NUL.
pub fn substitute_header(
    value: &str,
    args: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let refs = placeholders(value)?;
    splice(value, &refs, args, |r, value| {
        if value.contains(['\r', '\n', '\0']) {
            return Err(refuse(
                r,
                "the value holds a line break or NUL, which would end the header (and could add others)",
            ));
        }
        Ok(value.to_owned())
    })
}

/// Substitutes `args` into a text body, JSON-escaping each value.
pub fn substitute_body(
    body: &str,
    args: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let refs = arg_refs(body)?;
    splice(body, &refs, args, |_, value| Ok(json_escape(value)))
}

/// Substitutes `args` into every string (keys included) of a JSON body, as plain text:
/// serializing the body escapes it.
pub fn substitute_json(
    value: &mut Value,
    args: &BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    let plain = |text: &str| -> Result<String, TemplateError> {
        let refs = arg_refs(text)?;
        splice(text, &refs, args, |_, value| Ok(value.to_owned()))
    };
    match value {
        Value::String(text) => *text = plain(text)?,
        Value::Array(items) => {
            for item in items {
                substitute_json(item, args)?;
            }
        }
        Value::Object(fields) => {
            let mut substituted = serde_json::Map::new();
            for (key, mut field) in std::mem::take(fields) {
                substitute_json(&mut field, args)?;
                substituted.insert(plain(&key)?, field);
            }
            *fields = substituted;
        }
        _ => {}
    }
    Ok(())
}

/// Substitutes `args` into a web metric's URL, header values and body.
pub fn substitute_web(
    web: &mut WebProvider,
    args: &BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    web.url = substitute_url(&web.url, args)?;
    for header in &mut web.headers {
        header.value = substitute_header(&header.value, args)?;
    }
    if let Some(body) = web.body.as_mut() {
        *body = substitute_body(body, args)?;
    }
    if let Some(json) = web.json_body.as_mut() {
        substitute_json(json, args)?;
    }
    Ok(())
}

/// Every string of a JSON value, keys included.
fn json_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| json_strings(item, out)),
        Value::Object(fields) => {
            for (key, field) in fields {
                out.push(key.clone());
                json_strings(field, out);
            }
        }
        _ => {}
    }
}

/// Checks the placeholders of `text` at `path`: they parse and are declared.
fn check_placeholders(
    text: &str,
    path: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) -> Vec<ArgRef> {
    match arg_refs(text) {
        Ok(refs) => {
            check_declared(&refs, path, declared, problems);
            refs
        }
        Err(error) => {
            problems.push(Problem::new(path.to_owned(), error.to_string()));
            Vec::new()
        }
    }
}

/// Checks a metric's `provider.web` (`here` is its path).
pub(super) fn check_web(
    web: &WebProvider,
    here: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    check_url(web, here, declared, problems);
    for (i, header) in web.headers.iter().enumerate() {
        let path = format!("{here}.headers[{i}]");
        if header.key.contains("{{") {
            problems.push(Problem::new(
                format!("{path}.key"),
                "a header name holds no argument; only its value may",
            ));
        } else if reqwest::header::HeaderName::from_bytes(header.key.as_bytes()).is_err() {
            problems.push(Problem::new(
                format!("{path}.key"),
                format!("`{}` is not a valid HTTP header name", header.key),
            ));
        }
        match placeholders(&header.value) {
            Ok(refs) => check_declared(&refs, &format!("{path}.value"), declared, problems),
            Err(error) => problems.push(Problem::new(format!("{path}.value"), error.to_string())),
        }
        if header.value.contains(['\r', '\n', '\0']) {
            problems.push(Problem::new(
                format!("{path}.value"),
                "holds a line break or NUL: not a valid header value",
            ));
        }
    }
    check_body(web, here, declared, problems);
    if let Some(path) = &web.json_path
        && let Err(reason) = parse_json_path(path)
    {
        problems.push(Problem::new(format!("{here}.jsonPath"), reason));
    }
    let ceiling = MAX_QUERY_TIMEOUT.as_secs() as i64;
    if let Some(seconds) = web.timeout_seconds
        && !(1..=ceiling).contains(&seconds)
    {
        problems.push(Problem::new(
            format!("{here}.timeoutSeconds"),
            format!("{seconds} is not in 1..={ceiling} (MAX_QUERY_TIMEOUT)"),
        ));
    }
    if let Some(auth) = &web.auth {
        check_auth(auth, &format!("{here}.auth"), problems);
    }
}

fn check_url(
    web: &WebProvider,
    here: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    let path = format!("{here}.url");
    let refs = check_placeholders(&web.url, &path, declared, problems);
    // Any value percent-encodes to a plain token, a time to digits: check the URL with them.
    let neutral: BTreeMap<String, String> = refs
        .iter()
        .map(|r| (r.name.clone(), "x".to_owned()))
        .collect();
    let concrete = match substitute_url(&web.url, &neutral) {
        Ok(url) => resolve_time(&url, jiff::Timestamp::UNIX_EPOCH),
        Err(error @ TemplateError::SubstituteArg { .. }) => {
            problems.push(Problem::new(path, error.to_string()));
            return;
        }
        // Malformed placeholders: already reported.
        Err(_) => return,
    };
    let Ok(concrete) = concrete else {
        return;
    };
    match url::Url::parse(&concrete) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(url) => problems.push(Problem::new(
            path,
            format!(
                "expected an http:// or https:// URL with a host, found scheme `{}`",
                url.scheme()
            ),
        )),
        Err(error) => problems.push(Problem::new(
            path,
            format!(
                "`{}` is not a URL ({error}); e.g. https://api.example.com/v1/check",
                crate::analysis::provider::bounded(&web.url)
            ),
        )),
    }
}

fn check_body(
    web: &WebProvider,
    here: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    if web.body.is_some() && web.json_body.is_some() {
        problems.push(Problem::new(
            here.to_owned(),
            "both `body` and `jsonBody` are set; keep one",
        ));
    }
    let has_body = web.body.is_some() || web.json_body.is_some();
    if has_body && web.method.unwrap_or_default() == WebMethod::Get {
        problems.push(Problem::new(
            format!("{here}.method"),
            "GET sends no body: set `method: POST` (or PUT) to send `body`/`jsonBody`",
        ));
    }
    if let Some(body) = &web.body {
        check_placeholders(body, &format!("{here}.body"), declared, problems);
    }
    if let Some(json) = &web.json_body {
        let mut strings = Vec::new();
        json_strings(json, &mut strings);
        for text in strings {
            check_placeholders(&text, &format!("{here}.jsonBody"), declared, problems);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_url_argument_is_percent_encoded_and_cannot_add_parameters_or_segments() {
        let url = substitute_url(
            "https://api.example.com/v1/{{args.service}}/check?q={{args.q}}",
            &args(&[("service", "../admin"), ("q", "a&b=c #d+e%")]),
        )
        .expect("substitutes");
        assert_eq!(
            url,
            "https://api.example.com/v1/..%2Fadmin/check?q=a%26b%3Dc%20%23d%2Be%25"
        );
        let parsed = url::Url::parse(&url).expect("url");
        assert_eq!(parsed.query_pairs().count(), 1);
        assert_eq!(parsed.fragment(), None);
        assert_eq!(
            parsed.query_pairs().next().map(|(_, v)| v.into_owned()),
            Some("a&b=c #d+e%".to_owned())
        );
    }

    #[test]
    fn an_argument_cannot_choose_the_destination() {
        for url in [
            "https://{{args.host}}/v1",
            "https://api.example.com:{{args.port}}/v1",
            "{{args.scheme}}://api.example.com/v1",
            "{{args.url}}",
            "https://user:{{args.password}}@api.example.com/v1",
        ] {
            let error = substitute_url(
                url,
                &args(&[
                    ("host", "evil.example"),
                    ("port", "1"),
                    ("scheme", "http"),
                    ("url", "http://evil.example"),
                    ("password", "p"),
                ]),
            )
            .expect_err(url);
            assert!(
                error.to_string().contains("scheme, host or port"),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn a_header_argument_with_a_line_break_is_refused() {
        let error = substitute_header(
            "Bearer {{args.token}}",
            &args(&[("token", "x\r\nX-Injected: 1")]),
        )
        .expect_err("CRLF");
        assert!(error.to_string().contains("line break"), "{error}");
        assert_eq!(
            substitute_header("Bearer {{args.token}}", &args(&[("token", "abc")])).ok(),
            Some("Bearer abc".to_owned())
        );
    }

    #[test]
    fn body_arguments_are_json_escaped_and_json_bodies_keep_their_shape() {
        let body = substitute_body(
            r#"{"query": "{{args.q}}"}"#,
            &args(&[("q", r#"x", "admin": true, "y": ""#)]),
        )
        .expect("body");
        let parsed: Value = serde_json::from_str(&body).expect("still JSON");
        assert_eq!(parsed.as_object().map(|o| o.len()), Some(1), "{body}");
        assert_eq!(parsed["query"], r#"x", "admin": true, "y": ""#);

        let mut json = serde_json::json!({"query": "{{args.q}}", "n": 1, "list": ["{{args.q}}"]});
        substitute_json(&mut json, &args(&[("q", "a\"b")])).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"query": "a\"b", "n": 1, "list": ["a\"b"]})
        );
    }

    #[test]
    fn time_placeholders_give_the_measurement_time_in_unix_seconds() {
        let at: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().expect("time");
        let url = substitute_url(
            "https://api.example.com/q?from={{time.unix-5m}}&to={{ time.unix }}&q={{args.q}}",
            &args(&[("q", "a b")]),
        )
        .expect("args");
        assert_eq!(
            resolve_time(&url, at).expect("time"),
            "https://api.example.com/q?from=1767225900&to=1767226200&q=a%20b"
        );
        for bad in ["{{time.now}}", "{{time.unix-5d}}", "{{time.unix+5m}}"] {
            assert!(time_refs(bad).is_err(), "{bad}");
        }
        let error = substitute_url("https://{{time.unix}}.example.com/", &args(&[]))
            .expect_err("time in the host");
        assert!(
            error.to_string().contains("scheme, host or port"),
            "{error}"
        );
    }

    #[test]
    fn checks_name_the_field_and_the_problem() {
        let web = WebProvider {
            url: "https://{{args.host}}/v1".to_owned(),
            headers: vec![crate::api::WebHeader {
                key: "Bad Header".to_owned(),
                value: "{{args.undeclared}}".to_owned(),
            }],
            body: Some("{}".to_owned()),
            json_path: Some("$.data[".to_owned()),
            timeout_seconds: Some(0),
            ..WebProvider::default()
        };
        let mut problems = Vec::new();
        let declared = BTreeSet::from(["host".to_owned()]);
        check_web(
            &web,
            "spec.metrics[0].provider.web",
            &declared,
            &mut problems,
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let has = |path: &str, words: &str| {
            text.iter().any(|t| {
                t.starts_with(&format!("spec.metrics[0].provider.web.{path}:")) && t.contains(words)
            })
        };
        assert!(has("url", "scheme, host or port"), "{text:#?}");
        assert!(
            has("headers[0].key", "not a valid HTTP header name"),
            "{text:#?}"
        );
        assert!(has("headers[0].value", "not declared"), "{text:#?}");
        assert!(has("method", "GET sends no body"), "{text:#?}");
        assert!(has("jsonPath", ""), "{text:#?}");
        assert!(has("timeoutSeconds", "not in 1..=300"), "{text:#?}");
    }
}
