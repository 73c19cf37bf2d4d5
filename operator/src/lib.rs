//! ebb's controller, shared by `ebb local` and the Kubernetes operator: it
//! keeps a warm pool of unbound computes, hands the proxy a ready compute
//! for a database (claiming one from the pool or starting one), scales
//! databases out and in with the load, and to zero when idle.
//!
//! - [`autoscaler`]: the scaling decision, a pure function of load samples
//!   and time, modelled on Knative's KPA;
//! - [`runtime`]: where computes run (the [`process`] runtime: children of
//!   this process; `k8s::pod_runtime`: pods);
//! - [`broker`]: the gRPC service proxies in other processes ask for computes;
//! - [`control_client`]: the gRPC client of a compute's control service;
//! - [`controller`]: pool, acquire, scale, idle and failure handling;
//! - [`metrics`]: Prometheus metrics of controllers;
//! - [`k8s`]: the Kubernetes operator (CRDs, reconcilers, pod runtime).

pub mod autoscaler;
pub mod broker;
pub mod control_client;
pub mod controller;
pub mod k8s;
pub mod metrics;
pub mod process;
pub mod runtime;

pub use controller::{Controller, ControllerConfig};
