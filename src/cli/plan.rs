//! `vigil plan FILES --rps R --error-rate E`: the sensitivity preview. For every analysis step
//! of every Rollout in FILES, and every sequential metric of its templates, it says what the
//! gate can detect at the given traffic: "at 25 req/s and 20% weight this gate detects x3
//! within 30 s; x1.2 needs 14 min (longer than the gate)". Offline: the traffic comes from the
//! flags (read it from your dashboards); the computation is [`crate::analysis::sensitivity`].

use std::path::PathBuf;
use std::time::Duration;

use crate::analysis::judge::sequential::{CountTestConfig, split_alpha};
use crate::analysis::sensitivity::{
    GateSchedule, GateTraffic, PREVIEW_RATIOS, SensitivityError, human_duration, search_horizon,
    smallest_detectable_ratio, time_to_fail,
};
use crate::api::duration::parse_duration;
use crate::api::{AnalysisTemplateSpec, Metric, Rollout, SequentialJudge, SequentialTest};
use crate::platform::local::engine::Sources;

/// Arguments of `vigil plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Rollout and AnalysisTemplate files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Requests per second through the Rollout (canary and stable together).
    #[arg(long)]
    pub rps: f64,
    /// The stable version's error rate (share of requests, e.g. 0.005), for errorCounts metrics.
    #[arg(long = "error-rate")]
    pub error_rate: f64,
    /// The stable version's share of requests slower than the metric's slowThresholdSeconds,
    /// for latency metrics. Default 0.05.
    #[arg(long = "slow-share", default_value_t = 0.05)]
    pub slow_share: f64,
}

/// Exit code when the preview was printed.
pub const EXIT_OK: i32 = 0;
/// Exit code when the files or flags are invalid.
pub const EXIT_USAGE: i32 = 2;

/// Runs `vigil plan` and returns the exit code.
pub fn run(args: &PlanArgs) -> i32 {
    let sources = match Sources::load(&args.files) {
        Ok(sources) => sources,
        Err(error) => {
            eprintln!("vigil plan: {error}");
            return EXIT_USAGE;
        }
    };
    match plan(&sources, args) {
        Ok(lines) => {
            for line in lines {
                crate::outln!("{line}");
            }
            EXIT_OK
        }
        Err(error) => {
            eprintln!("vigil plan: {error}");
            EXIT_USAGE
        }
    }
}

/// The preview's lines for every Rollout (pure: no I/O).
pub fn plan(sources: &Sources, args: &PlanArgs) -> Result<Vec<String>, SensitivityError> {
    let mut lines = Vec::new();
    for rollout in &sources.rollouts {
        lines.extend(plan_rollout(rollout, &sources.templates, args)?);
    }
    Ok(lines)
}

/// One sequential-or-not metric of one analysis step.
struct Gate<'a> {
    step: usize,
    weight: u8,
    template: &'a str,
    metric: &'a Metric,
    /// Sequential metrics in the step's run (the run's α is split among them).
    sequential_metrics: usize,
}

fn gates<'a>(
    rollout: &'a Rollout,
    templates: &'a [(String, AnalysisTemplateSpec)],
) -> Vec<Gate<'a>> {
    let mut gates = Vec::new();
    let mut weight = 0u8;
    for (step, canary_step) in rollout.spec.strategy.canary.steps.iter().enumerate() {
        if let Some(set) = canary_step.set_weight {
            weight = set.clamp(0, 100) as u8;
        }
        let Some(analysis) = &canary_step.analysis else {
            continue;
        };
        let metrics: Vec<(&str, &Metric)> = analysis
            .templates
            .iter()
            .filter_map(|r| templates.iter().find(|(n, _)| n == &r.template_name))
            .flat_map(|(n, spec)| spec.metrics.iter().map(move |m| (n.as_str(), m)))
            .collect();
        let sequential_metrics = metrics
            .iter()
            .filter(|(_, m)| m.sequential.is_some())
            .count();
        gates.extend(metrics.into_iter().map(|(template, metric)| Gate {
            step,
            weight,
            template,
            metric,
            sequential_metrics,
        }));
    }
    gates
}

fn plan_rollout(
    rollout: &Rollout,
    templates: &[(String, AnalysisTemplateSpec)],
    args: &PlanArgs,
) -> Result<Vec<String>, SensitivityError> {
    let name = rollout.metadata.name.as_deref().unwrap_or("(unnamed)");
    let mut lines = vec![format!("Rollout {name}")];
    for gate in gates(rollout, templates) {
        let head = format!(
            "  step {} at {}% weight, {}/{}:",
            gate.step, gate.weight, gate.template, gate.metric.name
        );
        let Some(judge) = &gate.metric.sequential else {
            lines.push(format!("{head} not a sequential metric: no preview"));
            continue;
        };
        lines.push(format!(
            "{head} {}",
            preview_metric(
                gate.metric,
                judge,
                gate.sequential_metrics,
                gate.weight,
                args
            )?
        ));
    }
    Ok(lines)
}

/// Warnings for the gates that cannot detect the margin they name within their duration at
/// the given traffic: a canary at `1 + 2·max(failMargin, 0.1)` × the baseline's rate (twice
/// the degradation the gate tolerates) is not failed by the gate's last measurement.
pub fn margin_warnings(
    sources: &Sources,
    args: &PlanArgs,
) -> Result<Vec<String>, SensitivityError> {
    let mut warnings = Vec::new();
    for rollout in &sources.rollouts {
        let name = rollout.metadata.name.as_deref().unwrap_or("(unnamed)");
        for gate in gates(rollout, &sources.templates) {
            let (Some(judge), Some(count)) = (&gate.metric.sequential, gate.metric.count) else {
                continue;
            };
            if count < 1 {
                continue;
            }
            let config = count_config(judge, gate.sequential_metrics);
            let baseline_rate = match judge.test.unwrap_or_default() {
                SequentialTest::ErrorCounts => args.error_rate,
                SequentialTest::Latency => args.slow_share,
            };
            let traffic = GateTraffic::split(args.rps, gate.weight, baseline_rate);
            let schedule = GateSchedule {
                count: count as u64,
                ..schedule(gate.metric)
            };
            let target = 1.0 + 2.0 * config.fail_margin.max(0.1);
            let needs = match time_to_fail(&config, &traffic, &schedule, target)? {
                Some(d) if d.within_gate => continue,
                Some(d) => format!("it needs {}", human_duration(d.after)),
                None => format!(
                    "not even within {}",
                    human_duration(search_horizon(schedule.interval))
                ),
            };
            warnings.push(format!(
                "warning: Rollout {name} step {} ({}/{}): at {} req/s and {}% weight the gate cannot detect x{target} (twice the degradation its failMargin {} tolerates) within its {}; {needs}",
                gate.step,
                gate.template,
                gate.metric.name,
                args.rps,
                gate.weight,
                config.fail_margin,
                human_duration(schedule.duration()),
            ));
        }
    }
    Ok(warnings)
}

/// One gate's sentence: what it detects within its duration and what needs longer.
pub fn preview_metric(
    metric: &Metric,
    judge: &SequentialJudge,
    sequential_metrics: usize,
    weight: u8,
    args: &PlanArgs,
) -> Result<String, SensitivityError> {
    let (event, baseline_rate) = match judge.test.unwrap_or_default() {
        SequentialTest::ErrorCounts => ("errors", args.error_rate),
        SequentialTest::Latency => ("slow requests", args.slow_share),
    };
    let config = count_config(judge, sequential_metrics);
    let traffic = GateTraffic::split(args.rps, weight, baseline_rate);
    let schedule = schedule(metric);
    let Some(count) = metric.count.filter(|c| *c > 0) else {
        return Ok("no count: the gate runs until stopped; give a count to preview it".into());
    };
    let schedule = GateSchedule {
        count: count as u64,
        ..schedule
    };
    let mut within = Vec::new();
    let mut longer = Vec::new();
    for ratio in PREVIEW_RATIOS {
        if ratio <= 1.0 + config.fail_margin {
            continue;
        }
        match time_to_fail(&config, &traffic, &schedule, ratio)? {
            Some(d) if d.within_gate => {
                within.push(format!(
                    "x{ratio} {event} within {}",
                    human_duration(d.after)
                ));
            }
            Some(d) => longer.push(format!(
                "x{ratio} needs {} (longer than the gate)",
                human_duration(d.after)
            )),
            None => longer.push(format!(
                "x{ratio} is not detected within {}",
                human_duration(search_horizon(schedule.interval))
            )),
        }
    }
    let smallest = smallest_detectable_ratio(&config, &traffic, &schedule)?;
    let mut sentence = format!("at {} req/s and {weight}% weight this gate", args.rps);
    if within.is_empty() {
        sentence.push_str(&format!(
            " detects none of x{} within its {}",
            PREVIEW_RATIOS[0],
            human_duration(schedule.duration())
        ));
    } else {
        sentence.push_str(&format!(" detects {}", within.join(", ")));
    }
    if !longer.is_empty() {
        sentence.push_str(&format!("; {}", longer.join("; ")));
    }
    if let Some(ratio) = smallest {
        sentence.push_str(&format!(
            "; smallest detectable within the gate: x{ratio:.2}"
        ));
    }
    Ok(sentence)
}

fn count_config(judge: &SequentialJudge, sequential_metrics: usize) -> CountTestConfig {
    CountTestConfig {
        alpha: split_alpha(
            judge.alpha.unwrap_or(SequentialJudge::DEFAULT_ALPHA),
            sequential_metrics,
        ),
        fail_margin: judge
            .fail_margin
            .unwrap_or(SequentialJudge::DEFAULT_FAIL_MARGIN),
        pass_margin: judge
            .pass_margin
            .unwrap_or(SequentialJudge::DEFAULT_PASS_MARGIN),
        ..CountTestConfig::default()
    }
}

fn schedule(metric: &Metric) -> GateSchedule {
    let parse = |d: Option<&str>| d.and_then(|d| parse_duration(d).ok());
    GateSchedule {
        initial_delay: parse(metric.initial_delay.as_deref()).unwrap_or_default(),
        interval: parse(metric.interval.as_deref()).unwrap_or(Duration::from_secs(60)),
        count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn demo_sources() -> Sources {
        let mut sources = Sources::parse(
            Path::new("rollout.yaml"),
            include_str!("../../deploy/local-demo/rollout.yaml"),
        )
        .expect("the demo Rollout parses");
        sources.merge(
            Sources::parse(
                Path::new("templates.yaml"),
                include_str!("../../deploy/local-demo/templates.yaml"),
            )
            .expect("the demo templates parse"),
        );
        sources
    }

    fn args(rps: f64) -> PlanArgs {
        PlanArgs {
            files: Vec::new(),
            rps,
            error_rate: 0.001,
            slow_share: 0.15,
        }
    }

    #[test]
    fn the_demo_gates_are_previewed_per_step_and_weight() {
        let lines = plan(&demo_sources(), &args(50.0)).expect("valid traffic");
        assert_eq!(lines[0], "Rollout demo");
        let gate = |step: &str| {
            lines
                .iter()
                .find(|l| l.contains(step) && l.contains("slow-vs-stable"))
                .unwrap_or_else(|| panic!("no {step} line in {lines:#?}"))
                .clone()
        };
        let first = gate("step 1 at 20% weight");
        assert!(
            first.contains("at 50 req/s and 20% weight this gate detects x5 slow requests within"),
            "{first}"
        );
        assert!(
            first.contains("smallest detectable within the gate: x"),
            "{first}"
        );
        assert!(gate("step 3 at 50% weight").contains("50% weight this gate detects"));
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("error-rate: not a sequential metric: no preview")),
            "{lines:#?}"
        );
    }

    #[test]
    fn gates_too_short_for_their_traffic_are_warned_about() {
        assert_eq!(
            margin_warnings(&demo_sources(), &args(50.0)).expect("valid"),
            Vec::<String>::new(),
            "at the demo's 50 req/s its gates detect x2 within 2 min"
        );
        let warnings = margin_warnings(&demo_sources(), &args(2.0)).expect("valid");
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert!(
            warnings[0].starts_with(
                "warning: Rollout demo step 1 (demo-latency-vs-stable/slow-vs-stable): at 2 req/s \
                 and 20% weight the gate cannot detect x2"
            ),
            "{warnings:#?}"
        );
    }

    #[test]
    fn invalid_traffic_is_an_error_naming_the_field() {
        let mut bad = args(50.0);
        bad.slow_share = 1.5;
        let error = plan(&demo_sources(), &bad).expect_err("a share above 1");
        assert!(error.to_string().contains("errorRate = 1.5"), "{error}");
    }
}
