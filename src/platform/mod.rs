//! Where workloads run. `local` is the embedded default: processes on this machine behind a
//! built-in weighted proxy; `kubernetes` is the production controller.

pub mod kubernetes;
pub mod local;
pub mod reconcile;
pub mod webhooks;
