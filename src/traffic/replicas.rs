//! The replica-ratio fallback: with no router, the share of traffic a revision gets is the
//! share of ready pods it has behind the services, so there is nothing to set and the weight
//! read back is the configured one.

use super::{TrafficError, TrafficRouter};

/// A router that only remembers the weight it was configured with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaRatio {
    /// The weight as last recorded (`status.canaryWeight`).
    pub configured: i32,
}

impl TrafficRouter for ReplicaRatio {
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
}
