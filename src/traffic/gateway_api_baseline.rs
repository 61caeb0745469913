//! The Gateway API three-way split of a fair baseline (`canary.baseline.service`, see
//! [`crate::rollout::baseline`]): every rule that routes to the stable and canary Services
//! also lists the baseline Service, and vigil sets the three weights together so they always
//! sum to 100. The baseline's share is taken from the stable's, never from the canary's.
//!
//! Like [`super::gateway_api::weight_patch`], the patch guards every path it changes with a
//! `test` op (the ref's name and current weight), so a route edited since it was read makes
//! the patch fail instead of being overwritten. Pure: route in, patch out.

use json_patch::Patch;
use serde_json::Value;

use super::gateway_api::{BackendRef, RouteError, backend_refs, pairs, push_weight_ops};

/// The three Services whose backendRefs share a rule's traffic.
#[derive(Clone, Copy, Debug)]
pub struct SplitServices<'a> {
    /// `stableService`.
    pub stable: &'a str,
    /// `canaryService`.
    pub canary: &'a str,
    /// `canary.baseline.service`.
    pub baseline: &'a str,
}

/// The three refs of one rule.
struct Triple<'r> {
    stable: &'r BackendRef,
    canary: &'r BackendRef,
    baseline: &'r BackendRef,
}

/// The (stable, canary, baseline) refs of each rule that routes to the stable or canary; a
/// rule without the baseline is an error naming it.
fn triples<'r>(
    refs: &'r [BackendRef],
    services: SplitServices<'_>,
) -> Result<Vec<Triple<'r>>, RouteError> {
    if services.baseline == services.stable || services.baseline == services.canary {
        return Err(RouteError::DistinguishBaselineService(
            services.baseline.to_owned(),
        ));
    }
    pairs(refs, services.stable, services.canary)?
        .into_iter()
        .map(|(stable, canary)| {
            let baseline = refs
                .iter()
                .find(|r| r.rule == stable.rule && r.name == services.baseline)
                .ok_or_else(|| RouteError::FindBaselineBackendRef {
                    rule: stable.rule,
                    baseline: services.baseline.to_owned(),
                })?;
            Ok(Triple {
                stable,
                canary,
                baseline,
            })
        })
        .collect()
}

/// The (canary, baseline) percents of one rule's weights (an unset weight is the Gateway
/// API's default of 1); `None` when they cannot be read as shares (a negative weight, or all
/// 0).
fn rule_split(triple: &Triple<'_>) -> Option<(i32, i32)> {
    let weight = |r: &BackendRef| r.weight.unwrap_or(1);
    let (stable, canary, baseline) = (
        weight(triple.stable),
        weight(triple.canary),
        weight(triple.baseline),
    );
    if stable < 0 || canary < 0 || baseline < 0 {
        return None;
    }
    let total = stable.checked_add(canary)?.checked_add(baseline)?;
    if total <= 0 {
        return None;
    }
    // Round to the nearest percent; vigil itself always writes weights summing to 100.
    let percent = |part: i64| {
        let rounded = (i128::from(part) * 100 + i128::from(total) / 2) / i128::from(total);
        i32::try_from(rounded).unwrap_or(100)
    };
    let canary = percent(canary);
    Some((canary, percent(baseline).min(100 - canary)))
}

/// The (canary, baseline) percents of traffic in `route`, from every rule that routes to the
/// three Services. `None` when the rules disagree or one cannot be read as shares (vigil has
/// not converged the route yet).
pub fn split(route: &Value, services: SplitServices<'_>) -> Result<Option<(i32, i32)>, RouteError> {
    let refs = backend_refs(route);
    let mut seen = None;
    for triple in triples(&refs, services)? {
        let Some(shares) = rule_split(&triple) else {
            return Ok(None);
        };
        match seen {
            None => seen = Some(shares),
            Some(previous) if previous != shares => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(seen)
}

/// The JSON patch that sets, in every rule routing to the three Services, the canary's weight
/// to `canary` and the baseline's to `baseline` (`None` keeps that rule's current share) and
/// the stable's to what they leave. The baseline never gets more than the canary leaves:
/// the three always sum to 100.
pub fn split_patch(
    route: &Value,
    services: SplitServices<'_>,
    canary: Option<i32>,
    baseline: Option<i32>,
) -> Result<Patch, RouteError> {
    let refs = backend_refs(route);
    let mut ops = Vec::new();
    for triple in triples(&refs, services)? {
        let (current_canary, current_baseline) = rule_split(&triple).unwrap_or((0, 0));
        let canary = canary.unwrap_or(current_canary).clamp(0, 100);
        let baseline = baseline.unwrap_or(current_baseline).clamp(0, 100 - canary);
        let stable = 100 - canary - baseline;
        for (backend, weight) in [
            (triple.stable, stable),
            (triple.canary, canary),
            (triple.baseline, baseline),
        ] {
            push_weight_ops(&mut ops, backend, i64::from(weight));
        }
    }
    Ok(Patch(ops))
}

#[cfg(test)]
#[path = "gateway_api_baseline_tests.rs"]
mod tests;
