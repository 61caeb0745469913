//! Canary analysis: providers that measure, judges that decide.

pub mod dereference;
pub mod driver;
pub mod instantiate;
pub mod job;
pub mod judge;
pub mod measure;
pub mod provider;
pub mod run;
#[cfg(test)]
mod schedule_tests;
pub mod sensitivity;
pub mod template;
