//! The `ebb compute` role: accepts PostgreSQL connections and serves them
//! over the storage service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;

use crate::error::{ComputeError, Result};
use crate::pg::{Connection, Shared};
use crate::storage_client::StorageClient;

/// Settings of the compute role.
#[derive(Debug, Clone)]
pub struct ComputeConfig {
    /// PostgreSQL listen address.
    pub listen: SocketAddr,
    /// Storage service URL (`http://host:port`).
    pub storage: String,
    /// Serve only this database (otherwise the one each client names).
    pub database: Option<String>,
}

/// Runs the compute role until `shutdown` resolves.
pub async fn run(cfg: ComputeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| ComputeError::Config(format!("cannot listen on {}: {e}", cfg.listen)))?;
    run_on(listener, cfg, shutdown).await
}

/// Like [`run`], on a listener the caller bound.
pub async fn run_on(listener: TcpListener, cfg: ComputeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    crate::pg_catalog::preload()?;
    let storage = StorageClient::connect_lazy(&cfg.storage)?;
    if let Some(db) = &cfg.database
        && !storage.list_databases().await?.iter().any(|d| &d.name == db)
    {
        return Err(ComputeError::Config(format!("database \"{db}\" does not exist in storage {}", cfg.storage)));
    }
    let shared = Arc::new(Shared { storage, database: cfg.database.clone(), connections: Arc::new(ConnectionManager::new()) });
    tracing::info!(addr = %listener.local_addr().map_err(|e| ComputeError::Internal(e.to_string()))?, storage = %cfg.storage, database = ?cfg.database, "compute serving");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let handlers = Connection::new(shared.clone());
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("compute stopped");
    Ok(())
}
