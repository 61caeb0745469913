//! Pure judges: they turn measurements into verdicts with reasons. No I/O, no clock.
//!
//! * [`mann_whitney`]: Kayenta-compatible rank test on samples (step values), with exact order
//!   statistics for the shift interval, labels and group scoring.
//! * [`threshold`]: CEL conditions over one value or a vector.
//! * [`sequential`]: anytime-valid tests on counters and histogram buckets, safe to evaluate at
//!   every scrape, with a three-way verdict.

pub mod mann_whitney;
pub mod sequential;
pub mod threshold;

use serde::{Deserialize, Serialize};

/// The three-way outcome every judge can be reduced to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// The canary is acceptable.
    Pass,
    /// The canary is worse than allowed.
    Fail,
    /// The evidence does not decide (no data, too little data, or an error).
    Inconclusive,
}
