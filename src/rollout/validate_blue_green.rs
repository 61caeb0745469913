//! The rules of `spec.strategy.blueGreen` (part of [`super::validate_spec`]).

use crate::analysis::template::validate::check_args;
use crate::api::{AnalysisStep, BlueGreenStrategy, RolloutSpec};

use super::SpecProblem;
use super::validate::{check_template_refs, over_ceiling, problem, service_name_problem};

const BLUE_GREEN: &str = "spec.strategy.blueGreen";

/// Exactly one strategy, and the blue-green fields: services, counts, delays, analyses and
/// the local proxy's addresses.
pub(super) fn check_blue_green(spec: &RolloutSpec, problems: &mut Vec<SpecProblem>) {
    let Some(bg) = &spec.strategy.blue_green else {
        return;
    };
    if !spec.strategy.canary.is_unset() {
        problems.push(problem(
            BLUE_GREEN,
            "set together with spec.strategy.canary: set exactly one of canary and blueGreen",
        ));
    }
    check_services(bg, problems);
    check_numbers(bg, problems);
    for (field, analysis) in [
        ("prePromotionAnalysis", &bg.pre_promotion_analysis),
        ("postPromotionAnalysis", &bg.post_promotion_analysis),
    ] {
        if let Some(AnalysisStep { templates, args }) = analysis {
            let path = format!("{BLUE_GREEN}.{field}");
            check_template_refs(templates, &path, problems);
            check_args(args, &format!("{path}.args"), problems);
        }
    }
    if let Some(local) = &bg.local {
        for (field, value) in [
            ("listen", Some(&local.listen)),
            ("previewListen", local.preview_listen.as_ref()),
        ] {
            if let Some(value) = value
                && value.parse::<std::net::SocketAddr>().is_err()
            {
                problems.push(problem(
                    format!("{BLUE_GREEN}.local.{field}"),
                    format!("`{value}` is not a socket address like 127.0.0.1:8080"),
                ));
            }
        }
        if local.preview_listen.as_deref() == Some(local.listen.as_str()) {
            problems.push(problem(
                format!("{BLUE_GREEN}.local.previewListen"),
                format!(
                    "`{}` is also `listen`; the preview needs its own address",
                    local.listen
                ),
            ));
        }
    }
}

/// `activeService` (needed unless the local proxy plays it) and `previewService`: Service
/// names (of the Rollout's own namespace), two different Services.
fn check_services(bg: &BlueGreenStrategy, problems: &mut Vec<SpecProblem>) {
    if bg.active_service.is_none() && bg.local.is_none() {
        problems.push(problem(
            format!("{BLUE_GREEN}.activeService"),
            "missing: blue-green switches traffic by pointing this Service's selector at the new revision (or set local for vigil run's proxy)",
        ));
    }
    for (field, value) in [
        ("activeService", &bg.active_service),
        ("previewService", &bg.preview_service),
    ] {
        if let Some(why) = value.as_deref().and_then(service_name_problem) {
            problems.push(problem(format!("{BLUE_GREEN}.{field}"), why));
        }
    }
    if let (Some(active), Some(preview)) = (&bg.active_service, &bg.preview_service)
        && !active.is_empty()
        && active == preview
    {
        problems.push(problem(
            format!("{BLUE_GREEN}.previewService"),
            format!("`{preview}` is also the activeService; they must be two Services"),
        ));
    }
}

/// Counts and delays: none negative, none over the ceiling of every duration; automatic
/// promotion's delay only with automatic promotion.
fn check_numbers(bg: &BlueGreenStrategy, problems: &mut Vec<SpecProblem>) {
    if let Some(count) = bg.preview_replica_count
        && count < 0
    {
        problems.push(problem(
            format!("{BLUE_GREEN}.previewReplicaCount"),
            format!("{count} is negative"),
        ));
    }
    for (field, value) in [
        ("autoPromotionSeconds", bg.auto_promotion_seconds),
        ("scaleDownDelaySeconds", bg.scale_down_delay_seconds),
        (
            "abortScaleDownDelaySeconds",
            bg.abort_scale_down_delay_seconds,
        ),
    ] {
        let Some(v) = value else { continue };
        let path = format!("{BLUE_GREEN}.{field}");
        if v < 0 {
            problems.push(problem(path, format!("{v} is negative")));
        } else if over_ceiling(v) {
            problems.push(problem(
                path,
                format!(
                    "{v} seconds is over the ceiling of {} seconds (MAX_DURATION, 30 days)",
                    crate::api::duration::MAX_DURATION.as_secs()
                ),
            ));
        }
    }
    if bg.auto_promotion_enabled == Some(false) && bg.auto_promotion_seconds.is_some() {
        problems.push(problem(
            format!("{BLUE_GREEN}.autoPromotionSeconds"),
            "set with autoPromotionEnabled: false, which waits for vigil promote whatever the delay: remove one of them",
        ));
    }
}
