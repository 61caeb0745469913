//! From a recorded decision to what people are told: pure, no I/O, no clock.
//!
//! [`transitions`] reads the transitions the shared decision already describes (its events,
//! and the pause reasons it adds) and [`Message::of`] words one for a person: which rollout,
//! what happened, the deciding numbers, the revisions, and the command to run next.
//! [`body`] shapes it for a sink.

use serde_json::{Value, json};

use crate::api::{AnalysisPhase, MetricSummary, PauseReason, RolloutPhase, RolloutStatus};
use crate::rollout::{Decision, Effect};

use super::config::{SinkKind, Trigger};

/// Metrics listed in one message, at most.
pub const MAX_METRICS: usize = 10;
/// Characters of a message's text, at most (Slack's limit for a section block is 3000).
pub const MAX_TEXT_CHARS: usize = 2900;

/// Which Rollout, as a person names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutRef<'a> {
    /// Its namespace on Kubernetes; `None` with `vigil run`.
    pub namespace: Option<&'a str>,
    /// Its name.
    pub name: &'a str,
}

impl RolloutRef<'_> {
    /// `namespace/name`, or the name alone locally.
    pub fn display(&self) -> String {
        match self.namespace {
            Some(namespace) => format!("{namespace}/{}", self.name),
            None => self.name.to_owned(),
        }
    }

    /// The command line of `verb` on this rollout: `vigil promote web -n shop`, or
    /// `vigil promote web` for `vigil run` (the verbs find it by themselves).
    pub fn command(&self, verb: &str) -> String {
        match self.namespace {
            Some(namespace) => format!("vigil {verb} {} -n {namespace}", self.name),
            None => format!("vigil {verb} {}", self.name),
        }
    }
}

/// One transition a recorded decision made.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// Which trigger it fires.
    pub trigger: Trigger,
    /// What happened, in words (the event's message, or why the rollout paused).
    pub summary: String,
    /// Why it paused (for [`Trigger::OnPaused`]).
    pub pause_reason: Option<PauseReason>,
    /// The index of the step it happened at (before the decision).
    pub step_index: Option<i32>,
    /// The step for display after it, e.g. `3/7`.
    pub step: Option<String>,
    /// The stable revision after it.
    pub stable_revision: Option<String>,
    /// The canary revision it concerns (the one promoted, rolled back, started...).
    pub canary_revision: Option<String>,
    /// The canary weight after it.
    pub canary_weight: i32,
    /// The canary attempt.
    pub attempt: i32,
    /// The phase after it.
    pub phase: Option<RolloutPhase>,
    /// The metrics that decided (those of a failed or undecided analysis not Successful).
    pub metrics: Vec<MetricSummary>,
}

/// The transitions `decision` makes from the status `before`: one per event it emits that a
/// trigger names, and one [`Trigger::OnPaused`] per pause reason it adds.
pub fn transitions(before: &RolloutStatus, decision: &Decision) -> Vec<Transition> {
    let after = &decision.status;
    let mut found = Vec::new();
    for effect in &decision.effects {
        let Effect::Event {
            reason, message, ..
        } = effect
        else {
            continue;
        };
        let trigger = match reason.as_str() {
            "RolloutStarted" | "RolloutRestarted" | "RolloutRetried" | "InitialDeployment" => {
                Trigger::OnStarted
            }
            "StepCompleted" => Trigger::OnStepCompleted,
            "RolloutCompleted" => Trigger::OnPromoted,
            "AnalysisFailed" | "RolloutAborted" => Trigger::OnRolledBack,
            "ProgressDeadlineExceeded" => Trigger::OnProgressDeadline,
            _ => continue,
        };
        found.push(transition(trigger, message.clone(), None, before, after));
    }
    for added in after
        .pause_conditions
        .iter()
        .filter(|p| !before.pause_conditions.iter().any(|b| b.reason == p.reason))
    {
        let summary = after
            .message
            .clone()
            .unwrap_or_else(|| format!("paused: {:?}", added.reason));
        found.push(transition(
            Trigger::OnPaused,
            summary,
            Some(added.reason),
            before,
            after,
        ));
    }
    found
}

fn transition(
    trigger: Trigger,
    summary: String,
    pause_reason: Option<PauseReason>,
    before: &RolloutStatus,
    after: &RolloutStatus,
) -> Transition {
    Transition {
        trigger,
        summary,
        pause_reason,
        step_index: before.current_step_index.or(after.current_step_index),
        step: after.step.clone(),
        stable_revision: after.stable_revision.clone(),
        canary_revision: match trigger {
            // Promoted: the canary is now the stable; started: the canary is the new one.
            Trigger::OnPromoted => before
                .canary_revision
                .clone()
                .or(after.stable_revision.clone()),
            Trigger::OnStarted => after
                .canary_revision
                .clone()
                .or(after.stable_revision.clone()),
            _ => after
                .canary_revision
                .clone()
                .or(before.canary_revision.clone()),
        },
        canary_weight: after.canary_weight,
        attempt: after.canary_attempt,
        phase: after.phase,
        metrics: deciding_metrics(trigger, before, after),
    }
}

/// The metrics not Successful of the analyses that decided (after the decision, or as they
/// were before it when it cleared them), for the triggers that a verdict can fire.
fn deciding_metrics(
    trigger: Trigger,
    before: &RolloutStatus,
    after: &RolloutStatus,
) -> Vec<MetricSummary> {
    if !matches!(
        trigger,
        Trigger::OnRolledBack | Trigger::OnPaused | Trigger::OnProgressDeadline
    ) {
        return Vec::new();
    }
    let runs = [
        after
            .step_analysis
            .as_ref()
            .or(before.step_analysis.as_ref()),
        after
            .background_analysis
            .as_ref()
            .or(before.background_analysis.as_ref()),
    ];
    runs.into_iter()
        .flatten()
        .filter(|run| run.phase != AnalysisPhase::Successful)
        .flat_map(|run| &run.metrics)
        .filter(|m| m.phase != AnalysisPhase::Successful)
        .take(MAX_METRICS)
        .cloned()
        .collect()
}

/// A transition worded for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// One line: which rollout, what happened.
    pub title: String,
    /// The details: what happened, the numbers, the revisions.
    pub lines: Vec<String>,
    /// The command to run next, if a person has something to do.
    pub next: Option<String>,
    /// Identifies the event (rollout, revision, attempt, trigger, step): the same transition
    /// decided twice is sent once.
    pub dedupe_key: String,
}

impl Message {
    /// Words `t` for `rollout`.
    pub fn of(rollout: RolloutRef, t: &Transition) -> Message {
        let who = rollout.display();
        let headline = match t.trigger {
            Trigger::OnStarted => "release started",
            Trigger::OnStepCompleted => "step completed",
            Trigger::OnPaused => "paused",
            Trigger::OnPromoted => "promoted",
            Trigger::OnRolledBack => "rolled back",
            Trigger::OnProgressDeadline => "rolled back: progress deadline exceeded",
        };
        let mut lines = vec![t.summary.clone()];
        for m in &t.metrics {
            let value = m.value.as_deref().unwrap_or("no value");
            let reason = m.reason.as_deref().unwrap_or_default();
            lines.push(format!(
                "metric {}: {:?}, value {value}{}{reason}",
                m.name,
                m.phase,
                if reason.is_empty() { "" } else { ": " }
            ));
        }
        let revisions = match (&t.canary_revision, &t.stable_revision) {
            (Some(canary), Some(stable)) if canary != stable => {
                format!("canary {canary}, stable {stable}")
            }
            (_, Some(stable)) => format!("stable {stable}"),
            (Some(canary), None) => format!("canary {canary}"),
            (None, None) => "no revision yet".to_owned(),
        };
        let mut state = format!("{revisions}; canary weight {}%", t.canary_weight);
        if let Some(step) = &t.step {
            state.push_str(&format!("; step {step}"));
        }
        if let Some(phase) = t.phase {
            state.push_str(&format!("; phase {phase:?}"));
        }
        lines.push(state);
        Message {
            title: format!("vigil: rollout {who} {headline}"),
            lines,
            next: next_command(rollout, t),
            dedupe_key: dedupe_key(rollout, t),
        }
    }

    /// The whole message as plain text, bounded to [`MAX_TEXT_CHARS`].
    pub fn text(&self) -> String {
        let mut text = self.title.clone();
        for line in &self.lines {
            text.push('\n');
            text.push_str(line);
        }
        if let Some(next) = &self.next {
            text.push_str("\nNext: ");
            text.push_str(next);
        }
        truncate(text, MAX_TEXT_CHARS)
    }
}

fn next_command(rollout: RolloutRef, t: &Transition) -> Option<String> {
    let command = |verb: &str| rollout.command(verb);
    match t.trigger {
        Trigger::OnStarted | Trigger::OnStepCompleted => Some(format!(
            "follow it with `{}`",
            match rollout.namespace {
                Some(_) => command("get rollout"),
                None => command("get"),
            }
        )),
        Trigger::OnPaused => Some(match t.pause_reason {
            Some(PauseReason::UserPaused) => format!("`{}` to continue", command("resume")),
            Some(PauseReason::InconclusiveAnalysis) => format!(
                "look at the analysis, then `{}` to accept it or `{}` to roll back",
                command("promote"),
                command("abort")
            ),
            _ => format!(
                "`{}` to continue, or `{}` to roll back",
                command("promote"),
                command("abort")
            ),
        }),
        Trigger::OnPromoted => None,
        Trigger::OnRolledBack | Trigger::OnProgressDeadline => Some(format!(
            "fix the cause and `{}` to try this revision again (or release a new one)",
            command("retry")
        )),
    }
}

fn dedupe_key(rollout: RolloutRef, t: &Transition) -> String {
    let mut key = format!(
        "{}/{}/{}/{}/{}",
        rollout.display(),
        t.canary_revision.as_deref().unwrap_or("-"),
        t.attempt,
        t.trigger.name(),
        t.step_index
            .map_or_else(|| "-".to_owned(), |i| i.to_string()),
    );
    if let Some(reason) = t.pause_reason {
        key.push_str(&format!("/{reason:?}"));
    }
    key
}

fn truncate(mut text: String, max_chars: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max_chars) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Slack's mrkdwn treats `<...>` as links and mentions (`<!channel>`) and `&` as an entity:
/// text from a query answer or a Rollout must not become either.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The JSON body a sink of `kind` receives for `t`.
pub fn body(kind: SinkKind, rollout: RolloutRef, t: &Transition) -> Value {
    let message = Message::of(rollout, t);
    match kind {
        SinkKind::Slack => {
            let text = escape_slack(&message.text());
            json!({
                "text": text,
                "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
            })
        }
        SinkKind::Webhook => json!({
            "trigger": t.trigger.name(),
            "rollout": rollout.name,
            "namespace": rollout.namespace,
            "title": message.title,
            "summary": t.summary,
            "text": message.text(),
            "phase": t.phase.map(|p| format!("{p:?}")),
            "step": t.step,
            "stepIndex": t.step_index,
            "stableRevision": t.stable_revision,
            "canaryRevision": t.canary_revision,
            "canaryWeight": t.canary_weight,
            "attempt": t.attempt,
            "metrics": t.metrics,
            "next": message.next,
            "dedupeKey": message.dedupe_key,
        }),
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
