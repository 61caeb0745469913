//! Pure judges: they turn measurements into verdicts with reasons. No I/O, no clock.

pub mod threshold;
