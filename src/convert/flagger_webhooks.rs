//! Flagger's `analysis.webhooks` as vigil's `spec.strategy.canary.webhooks` (same types, same
//! field names). Flagger's `rollout` type (called at every analysis iteration) has no vigil
//! twin: one that drives Flagger's loadtester (`metadata.cmd`) becomes a `pre-rollout` hook
//! that starts the load once, noted; any other is reported.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::duration::parse_duration;
use crate::api::webhook::MAX_WEBHOOK_TIMEOUT;
use crate::api::{Webhook, WebhookType};

use super::Notes;
use super::argo::duration;

/// The vigil webhook for Flagger's hook at `spec.analysis.webhooks[i]`; `None` (noted) when
/// there is none.
pub(super) fn convert_webhook(i: usize, hook: &Value, notes: &mut Notes) -> Option<Webhook> {
    let path = format!("spec.analysis.webhooks[{i}]");
    let kind = hook
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("rollout");
    let Some(url) = hook.get("url").and_then(Value::as_str) else {
        notes.unmapped(format!("{path}.url"), "missing: a webhook needs a URL");
        return None;
    };
    let metadata = metadata(hook, &path, notes);
    let type_ = match kind {
        "pre-rollout" => WebhookType::PreRollout,
        "confirm-rollout" => WebhookType::ConfirmRollout,
        "confirm-traffic-increase" => WebhookType::ConfirmTrafficIncrease,
        "confirm-promotion" => WebhookType::ConfirmPromotion,
        "post-rollout" => WebhookType::PostRollout,
        "rollback" => WebhookType::Rollback,
        "event" => WebhookType::Event,
        "rollout" if metadata.contains_key("cmd") => {
            notes.unmapped(
                format!("{path}.type"),
                "a `rollout` webhook running a command on Flagger's loadtester (metadata.cmd): Flagger calls it at every analysis iteration, vigil has no such type; converted to a `pre-rollout` hook that starts the load once before traffic moves, so make the command last the whole release (e.g. `hey -z 30m ...`) and keep the loadtester deployed",
            );
            WebhookType::PreRollout
        }
        other => {
            notes.unmapped(
                path,
                format!("a `{other}` webhook: vigil has no such type; check the canary with a `web` metric in the analysis instead"),
            );
            return None;
        }
    };
    let name = hook_name(hook, i, &path, notes);
    let timeout = hook
        .get("timeout")
        .and_then(|t| duration(t, &format!("{path}.timeout"), notes))
        .map(|t| bounded_timeout(t, &path, notes));
    for field in ["retries", "muteAlert"] {
        if hook.get(field).is_some() {
            notes.unmapped(
                format!("{path}.{field}"),
                "not read by vigil (gates are asked again every 10s; notifications are tried up to 4 times)",
            );
        }
    }
    if matches!(
        type_,
        WebhookType::PreRollout | WebhookType::ConfirmRollout | WebhookType::ConfirmPromotion
    ) && metadata.contains_key("cmd")
        && kind != "rollout"
    {
        notes.unmapped(
            format!("{path}.metadata.cmd"),
            "targets Flagger's loadtester: vigil POSTs the same metadata, so keep the loadtester deployed for it to run the command",
        );
    }
    Some(Webhook {
        name,
        type_,
        url: url.to_owned(),
        timeout,
        metadata,
    })
}

/// Flagger's names may hold spaces ("smoke test"); vigil's are letters, digits, `-`, `_`, `.`.
fn hook_name(hook: &Value, i: usize, path: &str, notes: &mut Notes) -> String {
    let given = hook.get("name").and_then(Value::as_str).unwrap_or_default();
    let name: String = given
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = if name.is_empty() {
        format!("webhook-{i}")
    } else {
        name
    };
    if name != given {
        notes.unmapped(
            format!("{path}.name"),
            format!("{given:?} renamed {name:?}: vigil's webhook names are letters, digits, '-', '_' or '.' (at most 63)"),
        );
    }
    name
}

fn bounded_timeout(timeout: String, path: &str, notes: &mut Notes) -> String {
    match parse_duration(&timeout) {
        Ok(d) if d > MAX_WEBHOOK_TIMEOUT => {
            notes.unmapped(
                format!("{path}.timeout"),
                format!("{timeout} is over vigil's ceiling of 1m: set to 1m (a gate is asked again every 10s, so a receiver should answer \"not yet\" rather than wait)"),
            );
            "1m".to_owned()
        }
        _ => timeout,
    }
}

fn metadata(hook: &Value, path: &str, notes: &mut Notes) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(map) = hook.get("metadata").and_then(Value::as_object) else {
        return out;
    };
    for (key, value) in map {
        match value {
            Value::String(text) => {
                out.insert(key.clone(), text.clone());
            }
            Value::Number(_) | Value::Bool(_) => {
                out.insert(key.clone(), value.to_string());
            }
            _ => notes.unmapped(
                format!("{path}.metadata.{key}"),
                "not a string: vigil's metadata is a map of strings",
            ),
        }
    }
    out
}
