//! Canary analysis: providers that measure, judges that decide.

pub mod judge;
pub mod provider;
pub mod template;
