//! Fair analysis across Prometheus servers: runs pointed at one server may hold at most
//! [`address_slot_cap`] of the AnalysisRun controller's slots, so runs stuck on a server that
//! never answers (spread over any number of namespaces) cannot starve runs that query another
//! one. Like the per-namespace share, a run over its share does not wait for a slot: it comes
//! back after [`super::context::NAMESPACE_SLOT_RETRY`] holding nothing.

use super::context::{NamespaceSlot, NamespaceSlots, namespace_slot_cap};
use crate::analysis::provider::resolve::Origin;

/// The most AnalysisRun reconciles measuring against one Prometheus origin at once, given the
/// controller's `concurrency`: half of it (rounded down), at least 1, like a namespace's share.
pub fn address_slot_cap(concurrency: usize) -> usize {
    namespace_slot_cap(concurrency)
}

/// Per-origin count of AnalysisRun reconciles measuring now.
#[derive(Debug)]
pub struct AddressSlots {
    slots: NamespaceSlots,
}

/// The slots of every origin one run queries, given back when dropped.
#[derive(Debug)]
pub struct AddressShare {
    _slots: Vec<NamespaceSlot>,
}

impl AddressSlots {
    /// At most `cap` (at least 1) reconciles per origin.
    pub fn new(cap: usize) -> AddressSlots {
        AddressSlots {
            slots: NamespaceSlots::new(cap),
        }
    }

    /// A slot at every origin in `origins`, or `None` (holding none) when one of them already
    /// serves its share. Never waits, so two runs can never hold each other's origins.
    pub fn try_acquire_all(&self, origins: &[Origin]) -> Option<AddressShare> {
        let mut held = Vec::with_capacity(origins.len());
        for origin in origins {
            held.push(self.slots.try_acquire(&origin.to_string())?);
        }
        Some(AddressShare { _slots: held })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(&url::Url::parse(url).expect("url")).expect("origin")
    }

    #[test]
    fn one_origin_holds_at_most_its_share_and_a_refused_run_holds_nothing() {
        assert_eq!(address_slot_cap(10), 5);
        let slots = AddressSlots::new(2);
        let silent = origin("http://silent:9090");
        let healthy = origin("http://healthy:9090");
        let first = slots.try_acquire_all(std::slice::from_ref(&silent));
        let second = slots.try_acquire_all(std::slice::from_ref(&silent));
        assert!(first.is_some() && second.is_some());
        // A run querying both: the silent origin is full, so it takes no healthy slot either.
        assert!(
            slots
                .try_acquire_all(&[healthy.clone(), silent.clone()])
                .is_none()
        );
        let a = slots.try_acquire_all(std::slice::from_ref(&healthy));
        let b = slots.try_acquire_all(std::slice::from_ref(&healthy));
        assert!(
            a.is_some() && b.is_some(),
            "the refused run held no healthy slot"
        );
        drop(first);
        assert!(slots.try_acquire_all(&[silent]).is_some());
    }
}
