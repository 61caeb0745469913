//! Where workloads run. `local` is the embedded default: processes on this machine behind a
//! built-in weighted proxy.

pub mod local;
