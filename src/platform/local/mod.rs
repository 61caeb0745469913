//! The local platform: a Rollout's first container runs as local processes (one per replica),
//! a built-in weighted HTTP proxy splits traffic between the stable and canary revisions and
//! exports per-revision request metrics the way a service mesh does, and status persists in a
//! state directory with atomic writes.
//!
//! The pieces are independent; `vigil run` wires them to the rollout engine:
//! - [`supervisor`]: runs, probes, restarts and stops the processes of each revision;
//! - [`proxy`]: the weighted reverse proxy and its `/metrics`;
//! - [`state`]: the state directory;
//! - [`engine`]: the rollout engine (`vigil run`), with its [`admin`] endpoint;
//! - [`prometheus`]: a real Prometheus for `vigil demo`;
//! - [`demo_app`] and [`loadgen`]: a demo service and a load generator for `vigil demo` and tests.

pub mod admin;
pub mod demo_app;
pub mod engine;
pub(crate) mod http;
pub mod jobs;
pub mod leftovers;
pub mod loadgen;
pub mod prometheus;
pub mod proxy;
mod proxy_routes;
pub mod state;
pub mod supervisor;
pub mod yaml_guard;

pub use http::{ConnectionLimits, HEADER_READ_TIMEOUT, MAX_CONNECTIONS};
