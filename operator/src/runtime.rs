//! Where computes run. The controller only starts, stops and watches them
//! through this trait; `process` runs them as child processes, the
//! Kubernetes runtime (`k8s::pod_runtime`) as pods. A runtime may keep the
//! warm pool itself (Kubernetes: a Deployment of unbound pods), in which case
//! the controller claims from it instead of starting pool computes.

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
    /// Whether the compute is still running (answered from what the last
    /// [`refresh`](Self::refresh) saw where the runtime has to ask).
    fn is_alive(&self, id: &str) -> bool;

    /// Whether the runtime keeps the warm pool itself; the controller then
    /// claims with [`claim`](Self::claim) and starts no pool computes.
    fn keeps_pool(&self) -> bool {
        false
    }
    /// Claims one ready warm compute for `database` from the runtime's own
    /// pool. Concurrent claims never get the same compute. `Ok(None)`: none
    /// is ready.
    async fn claim(&self, _database: &str) -> Result<Option<ComputeInstance>, RuntimeError> {
        Ok(None)
    }
    /// Ready computes in the runtime's own pool.
    fn warm_ready(&self) -> usize {
        0
    }
    /// Records that a compute this runtime started now serves `database`.
    async fn bound(&self, _id: &str, _database: &str) {}
    /// Brings what [`is_alive`](Self::is_alive) and
    /// [`warm_ready`](Self::warm_ready) answer up to date, and may stop
    /// computes it runs that the controller does not track (`tracked`: the
    /// ids it knows); called every tick.
    async fn refresh(&self, _tracked: &std::collections::HashSet<String>) {}
}
