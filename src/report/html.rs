//! The report page: summary, timeline, then per run and metric the charts and the
//! measurements. Every text from status or a spec is escaped; no script, no external resource.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::plot::{estimate_chart, values_chart, verdict_colour};
use super::series::MetricSeries;
use super::summary::Summary;
use super::{ReportError, ReportInput, RolloutInput, RunSeries};
use crate::api::AnalysisPhase;

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:62em;color:#222}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}\
h3{font-size:1.05em}table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}\
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}\
.summary{border:2px solid #444;padding:.5em 1em;background:#f7f7f7}\
.verdict{font-weight:bold}.chart svg{max-width:100%;height:auto}\
.legend span{margin-right:1.2em}.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em}\
@media print{h2{break-before:auto}.chart,table{break-inside:avoid}}";

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn colour_hex(verdict: AnalysisPhase) -> String {
    let c = verdict_colour(verdict);
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn verdict_name(verdict: AnalysisPhase) -> &'static str {
    match verdict {
        // A sequential measurement that did not decide.
        AnalysisPhase::Running => "Undecided",
        AnalysisPhase::Pending => "Pending",
        AnalysisPhase::Successful => "Successful",
        AnalysisPhase::Failed => "Failed",
        AnalysisPhase::Inconclusive => "Inconclusive",
        AnalysisPhase::Error => "Error",
        AnalysisPhase::Terminated => "Terminated",
    }
}

/// The whole page.
pub fn page(
    input: &ReportInput,
    runs: &[RunSeries],
    summary: &Summary,
) -> Result<String, ReportError> {
    let title = match (&input.rollout, input.runs.first()) {
        (Some(rollout), _) => format!("Release report: Rollout {}", rollout.name),
        (None, Some(run)) => format!("Analysis report: AnalysisRun {}", run.name),
        (None, None) => "vigil report".to_owned(),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n\
         <p>Made by vigil at {at}.</p>\n",
        t = escape(&title),
        at = time(input.generated_at)
    );
    summary_section(&mut out, summary);
    if let Some(rollout) = &input.rollout {
        steps_section(&mut out, rollout, runs);
    }
    events_section(&mut out, input);
    legend(&mut out);
    let t0 = start_time(input, runs);
    for run in runs {
        run_section(&mut out, run, t0)?;
    }
    out.push_str("</body></html>\n");
    Ok(out)
}

fn start_time(input: &ReportInput, runs: &[RunSeries]) -> Timestamp {
    runs.iter()
        .flat_map(|r| r.metrics.iter())
        .flat_map(|m| m.points.iter().map(|p| p.at))
        .chain(input.events.iter().map(|e| e.time))
        .min()
        .unwrap_or(input.generated_at)
}

fn summary_section(out: &mut String, summary: &Summary) {
    let _ = write!(
        out,
        "<div class=\"summary\"><p class=\"verdict\">{}</p>",
        escape(&summary.decision)
    );
    if let Some(why) = summary.why.as_deref().filter(|w| !w.is_empty()) {
        let _ = write!(out, "<p>Why: {}</p>", escape(why));
    }
    out.push_str("<ul>");
    match summary.canary_requests {
        Some(c) => {
            let _ = write!(
                out,
                "<li>Requests the canary served: {} ({} failed); baseline: {} ({} failed), as the \
                 errorCounts metrics counted them.</li>",
                c.canary_requests, c.canary_errors, c.baseline_requests, c.baseline_errors
            );
        }
        None => out.push_str(
            "<li>Requests the canary served: not counted (no sequential errorCounts metric).</li>",
        ),
    }
    if let Some((metric, at)) = &summary.first_failure {
        let _ = write!(
            out,
            "<li>First failing verdict: {} at {}.</li>",
            escape(metric),
            time(*at)
        );
    }
    if let Some(duration) = summary.time_to_rollback {
        let _ = write!(
            out,
            "<li>Time to rollback (failing verdict to all traffic on stable): {:.1} s.</li>",
            duration.as_secs_f64()
        );
    }
    out.push_str("</ul></div>\n");
}

fn steps_section(out: &mut String, rollout: &RolloutInput, runs: &[RunSeries]) {
    out.push_str("<h2>Timeline: steps</h2>\n<table><tr><th>#</th><th>Step</th><th>Weight</th><th>State</th><th>Analysis</th></tr>\n");
    let current = rollout.status.current_step_index.unwrap_or(0);
    let mut weight = 0;
    for (index, step) in rollout.spec.strategy.canary.steps.iter().enumerate() {
        let index = i32::try_from(index).unwrap_or(i32::MAX);
        let what = if let Some(w) = step.set_weight {
            weight = w;
            format!("setWeight {w}%")
        } else if step.pause.is_some() {
            "pause".to_owned()
        } else if let Some(analysis) = &step.analysis {
            let names: Vec<_> = analysis
                .templates
                .iter()
                .map(|t| t.template_name.as_str())
                .collect();
            format!("analysis {}", names.join(", "))
        } else {
            "route".to_owned()
        };
        let state = match index.cmp(&current) {
            std::cmp::Ordering::Less => "done",
            std::cmp::Ordering::Equal => "current",
            std::cmp::Ordering::Greater => "not reached",
        };
        let suffix = format!("-step{index}");
        let verdicts: Vec<String> = runs
            .iter()
            .filter(|r| r.name.ends_with(&suffix))
            .map(|r| {
                format!(
                    "<span style=\"color:{}\">{}: {}</span>",
                    colour_hex(r.phase),
                    escape(&r.name),
                    verdict_name(r.phase)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{weight}%</td><td>{state}</td><td>{}</td></tr>",
            index + 1,
            escape(&what),
            verdicts.join("<br>")
        );
    }
    let _ = writeln!(
        out,
        "</table><p>Now: step {}, canary weight {}%, stable revision {}, canary revision {}.</p>",
        escape(rollout.status.step.as_deref().unwrap_or("-")),
        rollout.status.canary_weight,
        escape(rollout.status.stable_revision.as_deref().unwrap_or("-")),
        escape(rollout.status.canary_revision.as_deref().unwrap_or("-")),
    );
}

fn events_section(out: &mut String, input: &ReportInput) {
    if input.events.is_empty() {
        return;
    }
    out.push_str("<h2>Timeline: events</h2>\n<table><tr><th>Time</th><th>Type</th><th>Reason</th><th>Message</th></tr>\n");
    for event in &input.events {
        let colour = if event.type_ == "Warning" {
            colour_hex(AnalysisPhase::Failed)
        } else {
            "inherit".to_owned()
        };
        let _ = writeln!(
            out,
            "<tr style=\"color:{colour}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(event.time),
            escape(&event.type_),
            escape(&event.reason),
            escape(&event.message)
        );
    }
    out.push_str("</table>\n");
}

fn legend(out: &mut String) {
    out.push_str("<p class=\"legend\">Measurements are marked by verdict: ");
    for verdict in [
        AnalysisPhase::Successful,
        AnalysisPhase::Failed,
        AnalysisPhase::Inconclusive,
        AnalysisPhase::Error,
        AnalysisPhase::Running,
    ] {
        let _ = write!(
            out,
            "<span><span class=\"dot\" style=\"background:{}\"></span>{}</span>",
            colour_hex(verdict),
            verdict_name(verdict)
        );
    }
    out.push_str("</p>\n");
}

fn run_section(out: &mut String, run: &RunSeries, t0: Timestamp) -> Result<(), ReportError> {
    let _ = writeln!(
        out,
        "<h2>AnalysisRun {}: <span style=\"color:{}\">{}</span></h2>",
        escape(&run.name),
        colour_hex(run.phase),
        verdict_name(run.phase)
    );
    if let Some(message) = &run.message {
        let _ = writeln!(out, "<p>{}</p>", escape(message));
    }
    for metric in &run.metrics {
        metric_section(out, metric, t0)?;
    }
    Ok(())
}

fn metric_section(
    out: &mut String,
    metric: &MetricSeries,
    t0: Timestamp,
) -> Result<(), ReportError> {
    let _ = writeln!(
        out,
        "<h3>Metric {}: <span style=\"color:{}\">{}</span> ({} measurements)</h3>",
        escape(&metric.name),
        colour_hex(metric.phase),
        verdict_name(metric.phase),
        metric.count
    );
    if let Some(message) = &metric.message {
        let _ = writeln!(out, "<p>{}</p>", escape(message));
    }
    if let Some(svg) = values_chart(metric, t0)? {
        let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
    }
    if let Some(svg) = estimate_chart(metric, t0)? {
        let _ = writeln!(
            out,
            "<p>The estimate with its interval at each measurement: it narrows as evidence \
             accumulates.</p><div class=\"chart\">{svg}</div>"
        );
    }
    if usize::try_from(metric.count).unwrap_or(0) > metric.points.len() {
        let _ = writeln!(
            out,
            "<p>Status keeps the latest {} of {} measurements.</p>",
            metric.points.len(),
            metric.count
        );
    }
    out.push_str("<table><tr><th>Time</th><th>Verdict</th><th>Reason</th></tr>\n");
    for point in &metric.points {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td style=\"color:{}\">{}</td><td>{}</td></tr>",
            time(point.at),
            colour_hex(point.verdict),
            verdict_name(point.verdict),
            escape(&point.reason)
        );
    }
    out.push_str("</table>\n");
    Ok(())
}
