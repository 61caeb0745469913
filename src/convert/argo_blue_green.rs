//! Argo Rollouts' `spec.strategy.blueGreen` into vigil's: the same field names, except the
//! fields vigil has no equivalent for, and Argo's `abortScaleDownDelaySeconds: 0` ("never"),
//! which vigil reads as "at once".

use serde_json::Value;

use crate::api::{AnalysisStep, BlueGreenStrategy};

use super::argo::{analysis_field_reason, analysis_refs};
use super::fields::Fields;
use super::{Inputs, Notes};

pub(super) fn blue_green_strategy(
    value: &Value,
    inputs: &Inputs<'_>,
    notes: &mut Notes,
) -> BlueGreenStrategy {
    let path = "spec.strategy.blueGreen";
    let mut fields = Fields::of(value, path, notes);
    let mut out = BlueGreenStrategy {
        active_service: fields.string("activeService", notes),
        preview_service: fields.string("previewService", notes),
        preview_replica_count: fields.int("previewReplicaCount", notes),
        auto_promotion_enabled: fields.bool("autoPromotionEnabled", notes),
        scale_down_delay_seconds: fields.int("scaleDownDelaySeconds", notes),
        ..Default::default()
    };
    let seconds = fields.int("autoPromotionSeconds", notes);
    if out.auto_promotion_enabled == Some(false) && seconds.is_some() {
        notes.unmapped(
            format!("{path}.autoPromotionSeconds"),
            "ignored by Argo with autoPromotionEnabled: false (the release waits for promote), and refused by vigil: dropped",
        );
    } else {
        out.auto_promotion_seconds = seconds;
    }
    match fields.int("abortScaleDownDelaySeconds", notes) {
        Some(0) => notes.unmapped(
            format!("{path}.abortScaleDownDelaySeconds"),
            "0 means \"never scale the aborted preview down\" in Argo but \"at once\" in vigil, which has no \"never\": set the seconds to keep its pods",
        ),
        other => out.abort_scale_down_delay_seconds = other,
    }
    for (key, slot) in [
        ("prePromotionAnalysis", &mut out.pre_promotion_analysis),
        ("postPromotionAnalysis", &mut out.post_promotion_analysis),
    ] {
        if let Some(analysis) = fields.take(key) {
            let here = format!("{path}.{key}");
            let mut analysis = Fields::of(analysis, &here, notes);
            let (templates, args) = analysis_refs(&mut analysis, inputs, notes);
            analysis.finish(notes, analysis_field_reason);
            *slot = Some(AnalysisStep { templates, args });
        }
    }
    fields.finish(notes, |key| {
        Some(match key {
            "previewMetadata" | "activeMetadata" => {
                "labels and annotations per role have no blue-green equivalent in vigil".to_owned()
            }
            "antiAffinity" => {
                "vigil sets no anti-affinity between revisions: add it to the pod template"
                    .to_owned()
            }
            "scaleDownDelayRevisionLimit" => {
                "vigil scales every revision that lost its traffic down after scaleDownDelaySeconds"
                    .to_owned()
            }
            "maxUnavailable" => {
                "vigil never scales the active revision down during a blue-green release".to_owned()
            }
            _ => return None,
        })
    });
    out
}
