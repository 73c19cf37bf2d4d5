//! Where computes run. The controller only starts, stops and watches them
//! through this trait; `process` runs them as child processes, the
//! Kubernetes runtime (to come) as pods.

use std::net::SocketAddr;

/// A running compute as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputeInstance {
    /// Unique id (process: `compute-<n>`; Kubernetes: the pod name).
    pub id: String,
    /// PostgreSQL address.
    pub pg_addr: SocketAddr,
    /// Control service address.
    pub control_addr: SocketAddr,
}

/// A runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The compute could not be started or did not become ready.
    #[error("could not start a compute: {0}")]
    Start(String),
}

/// Starts, stops and watches computes.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Starts one unbound compute and waits until it listens.
    async fn start(&self) -> Result<ComputeInstance, RuntimeError>;
    /// Stops a compute (it is gone when this returns).
    async fn stop(&self, id: &str);
    /// Whether the compute is still running.
    fn is_alive(&self, id: &str) -> bool;
}
