//! Test infrastructure, used by integration tests and benches, never by the controller at run
//! time: an in-process Kubernetes API server that the real kube-rs client and the real
//! `vigil controller` binary can talk to.

pub mod apiserver;
