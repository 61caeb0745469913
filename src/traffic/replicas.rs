//! The replica-ratio fallback: with no router, the share of traffic a revision gets is the
//! share of ready pods it has behind the services, so there is nothing to set and the weight
//! read back is the configured one.

use super::{RouterKind, TrafficError, TrafficRouter};

/// A router that only remembers the weight it was configured with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaRatio {
    /// The weight as last recorded (`status.canaryWeight`).
    pub configured: i32,
}

impl TrafficRouter for ReplicaRatio {
    fn kind(&self) -> RouterKind {
        RouterKind::ReplicaRatio
    }

    async fn set_canary_weight(&self, _canary_weight: i32) -> Result<(), TrafficError> {
        // The replica counts, scaled by the rollout, are the weight.
        Ok(())
    }

    async fn canary_weight(&self) -> Result<Option<i32>, TrafficError> {
        Ok(Some(self.configured))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_back_the_configured_weight_and_ignores_sets() {
        let router = ReplicaRatio { configured: 20 };
        router.set_canary_weight(50).await.expect("no-op");
        assert_eq!(router.canary_weight().await.expect("read"), Some(20));
    }

    #[tokio::test]
    async fn cannot_route_by_header_or_mirror_and_has_nothing_to_remove() {
        use crate::traffic::{Capability, HeaderRoute, ManagedRoutes, MirrorRoute};
        let router = ReplicaRatio::default();
        let header = HeaderRoute {
            name: "canary-header".into(),
            matches: Vec::new(),
        };
        let error = router
            .set_header_route(&header)
            .await
            .expect_err("unsupported");
        assert!(matches!(
            error,
            TrafficError::Unsupported {
                router: RouterKind::ReplicaRatio,
                capability: Capability::HeaderRoute
            }
        ));
        assert_eq!(
            error.to_string(),
            "the replica-ratio (no trafficRouting) router cannot route requests by header (setHeaderRoute)"
        );
        let mirror = MirrorRoute {
            name: "mirror".into(),
            percentage: 10,
            matches: Vec::new(),
        };
        assert!(matches!(
            router.set_mirror_route(&mirror).await,
            Err(TrafficError::Unsupported {
                capability: Capability::MirrorRoute,
                ..
            })
        ));
        router
            .remove_header_route("canary-header")
            .await
            .expect("nothing to remove");
        router
            .remove_mirror_route("mirror")
            .await
            .expect("nothing to remove");
        assert_eq!(
            router.managed_routes().await.expect("read"),
            ManagedRoutes::default()
        );
    }
}
