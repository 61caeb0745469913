//! The rules of `spec.strategy.canary.webhooks`: bounded count, unique names, an http(s) URL
//! without credentials, a bounded timeout, bounded metadata.

use std::collections::BTreeSet;

use crate::api::duration::{format_duration, parse_duration};
use crate::api::webhook::{
    MAX_WEBHOOK_METADATA, MAX_WEBHOOK_METADATA_LEN, MAX_WEBHOOK_TIMEOUT, MAX_WEBHOOK_URL_LEN,
    MAX_WEBHOOKS,
};
use crate::api::{RolloutSpec, Webhook};

use super::{MAX_LABEL_VALUE_LEN, SpecProblem};

const WEBHOOKS: &str = "spec.strategy.canary.webhooks";

fn problem(path: impl Into<String>, message: impl Into<String>) -> SpecProblem {
    SpecProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// Every problem of the webhooks of `spec`, each at its field.
pub(super) fn check_webhooks(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let hooks = &spec.strategy.canary.webhooks;
    if hooks.len() > MAX_WEBHOOKS {
        problems.push(problem(
            WEBHOOKS,
            format!(
                "{} webhooks: at most {MAX_WEBHOOKS} (MAX_WEBHOOKS) may be declared",
                hooks.len()
            ),
        ));
        return;
    }
    let mut names = BTreeSet::new();
    for (i, hook) in hooks.iter().enumerate() {
        let path = format!("{WEBHOOKS}[{i}]");
        check_name(hook, &path, &mut names, problems);
        check_url(&hook.url, &format!("{path}.url"), problems);
        check_timeout(hook, &path, problems);
        check_metadata(hook, &path, problems);
    }
}

fn check_name<'a>(
    hook: &'a Webhook,
    path: &str,
    names: &mut BTreeSet<&'a str>,
    problems: &mut Vec<SpecProblem>,
) {
    let name = hook.name.as_str();
    let valid = !name.is_empty()
        && name.len() <= MAX_LABEL_VALUE_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        problems.push(problem(
            format!("{path}.name"),
            format!(
                "{name:?} is not a webhook name: write 1 to {MAX_LABEL_VALUE_LEN} letters, digits, '-', '_' or '.'"
            ),
        ));
    } else if !names.insert(name) {
        problems.push(problem(
            format!("{path}.name"),
            format!("{name:?} is the name of an earlier webhook: names must be unique"),
        ));
    }
}

/// An absolute `http` or `https` URL, bounded, without user or password (vigil sends no
/// credentials, and a URL is shown in logs and errors).
pub(crate) fn check_url(url: &str, path: &str, problems: &mut Vec<SpecProblem>) {
    if url.len() > MAX_WEBHOOK_URL_LEN {
        problems.push(problem(
            path,
            format!(
                "{} bytes long: at most {MAX_WEBHOOK_URL_LEN} (MAX_WEBHOOK_URL_LEN)",
                url.len()
            ),
        ));
        return;
    }
    match url::Url::parse(url) {
        Err(error) => problems.push(problem(path, format!("not a URL: {error}"))),
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => problems.push(problem(
            path,
            format!("scheme {:?}: write an http or https URL", parsed.scheme()),
        )),
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
            problems.push(problem(
                path,
                "no host: write e.g. http://receiver:8080/gate",
            ));
        }
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            problems.push(problem(
                path,
                "carries a user or password: vigil sends webhooks without credentials (remove them from the URL)",
            ));
        }
        Ok(_) => {}
    }
}

fn check_timeout(hook: &Webhook, path: &str, problems: &mut Vec<SpecProblem>) {
    let Some(text) = hook.timeout.as_deref() else {
        return;
    };
    let path = format!("{path}.timeout");
    match parse_duration(text) {
        Err(error) => problems.push(problem(path, error.to_string())),
        Ok(duration) if duration.is_zero() => {
            problems.push(problem(path, "0: write a timeout above zero, e.g. 10s"));
        }
        Ok(duration) if duration > MAX_WEBHOOK_TIMEOUT => problems.push(problem(
            path,
            format!(
                "{text:?} is longer than the ceiling of {} (MAX_WEBHOOK_TIMEOUT): a gate is asked again later, so answer \"not yet\" instead of waiting",
                format_duration(MAX_WEBHOOK_TIMEOUT)
            ),
        )),
        Ok(_) => {}
    }
}

fn check_metadata(hook: &Webhook, path: &str, problems: &mut Vec<SpecProblem>) {
    let path = format!("{path}.metadata");
    if hook.metadata.len() > MAX_WEBHOOK_METADATA {
        problems.push(problem(
            path,
            format!(
                "{} entries: at most {MAX_WEBHOOK_METADATA} (MAX_WEBHOOK_METADATA)",
                hook.metadata.len()
            ),
        ));
        return;
    }
    for (key, value) in &hook.metadata {
        if key.len() > MAX_WEBHOOK_METADATA_LEN || value.len() > MAX_WEBHOOK_METADATA_LEN {
            problems.push(problem(
                format!("{path}.{key:.64}"),
                format!(
                    "key or value over {MAX_WEBHOOK_METADATA_LEN} bytes (MAX_WEBHOOK_METADATA_LEN)"
                ),
            ));
        }
    }
}
