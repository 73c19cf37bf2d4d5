//! ebb on Kubernetes: the custom resources, the reconcilers that turn an
//! `EbbCluster` into workloads and a `Database` into a served tenant, and
//! the pod runtime that claims warm compute pods.
//!
//! - [`crd`]: `EbbCluster` and `Database`;
//! - [`resources`]: the workloads a cluster becomes (pure);
//! - [`pod_runtime`]: computes as pods, claimed from the warm pool;
//! - [`conditions`]: status conditions;
//! - [`context`]: what reconciles share, one controller per cluster;
//! - [`cluster_reconciler`], [`database_reconciler`]: the reconcilers;
//! - [`storage_admin`]: databases and owner roles in a cluster's storage;
//! - [`leader`]: one active operator, by Lease;
//! - [`operator`]: `ebb operator` put together.

pub mod cluster_reconciler;
pub mod conditions;
pub mod context;
pub mod crd;
pub mod database_reconciler;
pub mod leader;
pub mod operator;
pub mod pod_runtime;
pub mod resources;
pub mod storage_admin;
