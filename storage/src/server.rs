//! The `ebb storage` role: opens the object store, starts the node, serves
//! gRPC and the lane on one port and `/metrics`, and shuts down cleanly when asked.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use prometheus::Registry;
use tokio::net::TcpListener;

use crate::durability::object_store_url::open_url;
use crate::engine::EngineConfig;
use crate::error::Result;
use crate::metrics::StorageMetrics;
use crate::node::StorageNode;
use crate::service::StorageService;

/// Settings of the storage role.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub object_store: String,
    pub cache_dir: PathBuf,
    pub metrics_listen: Option<SocketAddr>,
    pub engine: EngineConfig,
    /// Register the metrics here instead of a registry of the role's own
    /// (`ebb local` serves one `/metrics` for all its parts).
    pub registry: Option<Registry>,
}

/// Runs the storage role until `shutdown` resolves.
pub async fn run(cfg: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let listener = TcpListener::bind(cfg.listen).await?;
    run_on(listener, cfg, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests bind port 0).
pub async fn run_on(listener: TcpListener, cfg: ServerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let registry = cfg.registry.clone().unwrap_or_default();
    let metrics = StorageMetrics::new(&registry).map_err(|e| crate::StorageError::InvalidRequest(e.to_string()))?;
    let (store, prefix) = open_url(&cfg.object_store)?;
    let node = StorageNode::start(store, prefix, cfg.cache_dir.clone(), cfg.engine.clone(), metrics).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.metrics_listen {
        let mut rx = stop_rx.clone();
        let ml = TcpListener::bind(addr).await?;
        tracing::info!(addr = %ml.local_addr()?, "metrics on /metrics");
        tokio::spawn(ebb_common::metrics::serve(ml, registry, async move {
            let _ = rx.changed().await;
        }));
    }
    let addr = listener.local_addr()?;
    tracing::info!(%addr, object_store = %cfg.object_store, durability = %cfg.engine.durability, "storage serving");
    let served = serve(listener, node.clone(), shutdown).await;
    let _ = stop_tx.send(true);
    node.shutdown().await;
    tracing::info!("storage stopped");
    served.map_err(|e| crate::StorageError::Io(std::io::Error::other(e)))
}

/// Serves `node` on `listener` — gRPC and the lane (`crate::lane`) — until
/// `shutdown` resolves and the lane calls under way have finished.
pub async fn serve(listener: TcpListener, node: std::sync::Arc<StorageNode>, shutdown: impl Future<Output = ()> + Send + 'static) -> std::result::Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let service = StorageService::new(node);
    let (incoming, lanes) = crate::lane::accept(listener, service.clone(), stop_rx);
    let served = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    let _ = stop_tx.send(true);
    lanes.wait().await;
    served
}
