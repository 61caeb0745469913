//! The thin I/O type of the Istio router: reads the VirtualServices (and the DestinationRule)
//! and sends the patches the pure functions of this module build.

use json_patch::Patch;
use kube::api::{Api, DynamicObject, PatchParams};
use serde_json::Value;

use super::{
    IstioError, Split, agreed_weight, canary_weight, check_route_names, header_route_patch,
    mirror_route_patch, read_managed_routes, remove_route_patch, subset_patch, subset_revisions,
    vigil_route_names, weight_patch,
};
use crate::api::istio::IstioRouting;
use crate::traffic::{
    HeaderRoute, ManagedRoutes, MirrorRoute, ReadError, RouterKind, TrafficError, TrafficRouter,
};

/// The kind named in errors about a VirtualService.
pub const VIRTUAL_SERVICE: &str = "VirtualService";
/// The kind named in errors about a DestinationRule.
pub const DESTINATION_RULE: &str = "DestinationRule";

/// One VirtualService of the Rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Its name.
    name: String,
    /// The routes named in the Rollout (empty: all with the stable or canary).
    routes: Vec<String>,
    /// The Rollout field that names it, under `trafficRouting`.
    field: String,
}

/// The DestinationRule of subset-level splitting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Subsets {
    name: String,
    stable: String,
    canary: String,
}

/// The VirtualServices (and DestinationRule) of one Rollout.
#[derive(Clone)]
pub struct IstioRouter {
    virtual_services: Api<DynamicObject>,
    destination_rules: Api<DynamicObject>,
    entries: Vec<Entry>,
    split: Split,
    subsets: Option<Subsets>,
    vigil_routes: Vec<String>,
    revision_label: String,
    field_manager: String,
}

/// What [`IstioRouter::new`] needs besides the spec's `istio` field.
pub struct IstioRouterParts<'a> {
    /// VirtualServices in the Rollout's namespace.
    pub virtual_services: Api<DynamicObject>,
    /// DestinationRules in the Rollout's namespace.
    pub destination_rules: Api<DynamicObject>,
    /// The Rollout's namespace.
    pub namespace: &'a str,
    /// `stableService`.
    pub stable_service: Option<&'a str>,
    /// `canaryService`.
    pub canary_service: Option<&'a str>,
    /// The names of the Rollout's managed routes (`trafficRouting.managedRoutes`).
    pub vigil_routes: Vec<String>,
    /// The pod label that carries a revision (`vigil.dev/revision`).
    pub revision_label: &'a str,
    /// The field manager patches are sent with.
    pub field_manager: &'a str,
}

impl IstioRouter {
    /// The router of `istio`; `None` when host-level splitting lacks a Service (which
    /// `validate_spec` reports).
    pub fn new(istio: &IstioRouting, parts: IstioRouterParts<'_>) -> Option<IstioRouter> {
        let split = match (
            &istio.destination_rule,
            parts.stable_service,
            parts.canary_service,
        ) {
            (Some(rule), _, _) => Split::Subsets {
                stable: rule.stable_subset_name.clone(),
                canary: rule.canary_subset_name.clone(),
            },
            (None, Some(stable), Some(canary)) => Split::Hosts {
                stable: stable.to_owned(),
                canary: canary.to_owned(),
                namespace: parts.namespace.to_owned(),
            },
            (None, _, _) => return None,
        };
        let entries = istio
            .entries()
            .into_iter()
            .map(|(field, vs)| Entry {
                name: vs.name.clone(),
                routes: vs.routes.clone(),
                field: format!("istio.{field}.name"),
            })
            .collect();
        Some(IstioRouter {
            virtual_services: parts.virtual_services,
            destination_rules: parts.destination_rules,
            entries,
            split,
            subsets: istio.destination_rule.as_ref().map(|rule| Subsets {
                name: rule.name.clone(),
                stable: rule.stable_subset_name.clone(),
                canary: rule.canary_subset_name.clone(),
            }),
            vigil_routes: parts.vigil_routes,
            revision_label: parts.revision_label.to_owned(),
            field_manager: parts.field_manager.to_owned(),
        })
    }

    /// The field under `trafficRouting` that names the object `error` is about
    /// (`istio.virtualServices[1].name`, `istio.destinationRule.name`).
    pub fn field_of(&self, error: &TrafficError) -> String {
        let (kind, name) = match error {
            TrafficError::GetObject { kind, name, .. }
            | TrafficError::ReadObject { kind, name, .. }
            | TrafficError::PatchObject { kind, name, .. }
            | TrafficError::CreateObject { kind, name, .. }
            | TrafficError::DeleteObject { kind, name, .. } => (*kind, name.as_str()),
            TrafficError::Unsupported { .. } => ("", ""),
        };
        if kind == DESTINATION_RULE {
            return "istio.destinationRule.name".to_owned();
        }
        self.entries
            .iter()
            .find(|e| e.name == name)
            .or(self.entries.first())
            .map_or_else(|| "istio".to_owned(), |e| e.field.clone())
    }

    fn params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        }
    }

    async fn get(
        api: &Api<DynamicObject>,
        kind: &'static str,
        name: &str,
    ) -> Result<Value, TrafficError> {
        let object = api
            .get(name)
            .await
            .map_err(|source| TrafficError::GetObject {
                kind,
                name: name.to_owned(),
                source,
            })?;
        Ok(serde_json::to_value(object).unwrap_or(Value::Null))
    }

    async fn send(
        &self,
        api: &Api<DynamicObject>,
        kind: &'static str,
        name: &str,
        patch: Patch,
    ) -> Result<(), TrafficError> {
        if patch.0.is_empty() {
            return Ok(());
        }
        api.patch(name, &self.params(), &kube::api::Patch::Json::<()>(patch))
            .await
            .map_err(|source| TrafficError::PatchObject {
                kind,
                name: name.to_owned(),
                source,
            })?;
        Ok(())
    }

    fn read_error(kind: &'static str, name: &str, source: IstioError) -> TrafficError {
        TrafficError::ReadObject {
            kind,
            name: name.to_owned(),
            source: ReadError::Istio(source),
        }
    }

    /// Reads each VirtualService, builds its patch with `build`, and sends it.
    async fn patch_each(
        &self,
        build: impl Fn(&Value, &Entry) -> Result<Patch, IstioError> + Send + Sync,
    ) -> Result<(), TrafficError> {
        for entry in &self.entries {
            let api = &self.virtual_services;
            let object = Self::get(api, VIRTUAL_SERVICE, &entry.name).await?;
            let patch = build(&object, entry)
                .map_err(|e| Self::read_error(VIRTUAL_SERVICE, &entry.name, e))?;
            self.send(api, VIRTUAL_SERVICE, &entry.name, patch).await?;
        }
        Ok(())
    }

    /// The revisions the (stable, canary) subsets select; `None` with host-level splitting.
    pub async fn subset_revisions(
        &self,
    ) -> Result<Option<(Option<String>, Option<String>)>, TrafficError> {
        let Some(rule) = &self.subsets else {
            return Ok(None);
        };
        let object = Self::get(&self.destination_rules, DESTINATION_RULE, &rule.name).await?;
        subset_revisions(&object, &rule.stable, &rule.canary, &self.revision_label)
            .map(Some)
            .map_err(|e| Self::read_error(DESTINATION_RULE, &rule.name, e))
    }

    /// Points the stable and canary subsets at `stable` and `canary` (`None` leaves one as
    /// it is); nothing with host-level splitting.
    pub async fn point_subsets(
        &self,
        stable: Option<&str>,
        canary: Option<&str>,
    ) -> Result<(), TrafficError> {
        let Some(rule) = &self.subsets else {
            return Ok(());
        };
        let api = &self.destination_rules;
        let object = Self::get(api, DESTINATION_RULE, &rule.name).await?;
        let patch = subset_patch(
            &object,
            (&rule.stable, &rule.canary),
            (stable, canary),
            &self.revision_label,
        )
        .map_err(|e| Self::read_error(DESTINATION_RULE, &rule.name, e))?;
        self.send(api, DESTINATION_RULE, &rule.name, patch).await
    }
}

impl TrafficRouter for IstioRouter {
    fn kind(&self) -> RouterKind {
        RouterKind::Istio
    }

    async fn set_canary_weight(&self, canary_weight: i32) -> Result<(), TrafficError> {
        self.patch_each(|object, entry| {
            weight_patch(
                object,
                &entry.routes,
                &self.split,
                &vigil_route_names(object, &self.vigil_routes),
                canary_weight,
            )
        })
        .await
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        let mut weights = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let object = Self::get(&self.virtual_services, VIRTUAL_SERVICE, &entry.name).await?;
            check_route_names(&object, &self.vigil_routes)
                .map_err(|e| Self::read_error(VIRTUAL_SERVICE, &entry.name, e))?;
            let vigil_routes = vigil_route_names(&object, &self.vigil_routes);
            let weight = canary_weight(&object, &entry.routes, &self.split, &vigil_routes)
                .map_err(|e| Self::read_error(VIRTUAL_SERVICE, &entry.name, e))?;
            weights.push(weight);
        }
        Ok(agreed_weight(&weights))
    }

    async fn set_header_route(&self, route: &HeaderRoute) -> Result<(), TrafficError> {
        self.patch_each(|object, entry| {
            header_route_patch(
                object,
                &entry.routes,
                &self.split,
                &self.vigil_routes,
                route,
            )
        })
        .await
    }

    async fn remove_header_route(&self, name: &str) -> Result<(), TrafficError> {
        self.patch_each(|object, _| Ok(remove_route_patch(object, name)))
            .await
    }

    async fn set_mirror_route(&self, route: &MirrorRoute) -> Result<(), TrafficError> {
        self.patch_each(|object, entry| {
            mirror_route_patch(
                object,
                &entry.routes,
                &self.split,
                &self.vigil_routes,
                route,
            )
        })
        .await
    }

    async fn remove_mirror_route(&self, name: &str) -> Result<(), TrafficError> {
        self.patch_each(|object, _| Ok(remove_route_patch(object, name)))
            .await
    }

    /// The routes in place in every VirtualService (one missing from any reads as absent,
    /// so the step puts it back everywhere).
    async fn managed_routes(&self) -> Result<ManagedRoutes, TrafficError> {
        let mut common: Option<ManagedRoutes> = None;
        for entry in &self.entries {
            let object = Self::get(&self.virtual_services, VIRTUAL_SERVICE, &entry.name).await?;
            let found =
                read_managed_routes(&object, &entry.routes, &self.split, &self.vigil_routes);
            common = Some(match common {
                None => found,
                Some(seen) => ManagedRoutes::new(
                    seen.header
                        .into_iter()
                        .filter(|r| found.header.contains(r))
                        .collect(),
                    seen.mirror
                        .into_iter()
                        .filter(|r| found.mirror.contains(r))
                        .collect(),
                ),
            });
        }
        Ok(common.unwrap_or_default())
    }
}
