//! The `ebb compute` role: accepts PostgreSQL connections and serves them
//! over the storage service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;

use ebb_proto::COMPUTE_READY_LINE_PREFIX;
use ebb_proto::control::compute_control_server::ComputeControlServer;

use crate::binding::Binding;
use crate::control::ControlService;
use crate::metrics::ComputeMetrics;
use crate::row_watch::RowCaches;
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
    /// Serve only this database (otherwise the one each client names, or
    /// the one `attach` names when there is a control service).
    pub database: Option<String>,
    /// Control service listen address (`attach`, `drain`, `stats`).
    pub control_listen: Option<SocketAddr>,
    /// Prometheus `/metrics` (and `/healthz`) listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// Bytes of rows read by key each database's row cache keeps (0: no
    /// row cache; see `row_cache`).
    pub row_cache_bytes: usize,
}

/// The row cache's size unless configured, in MiB (PostgreSQL's default
/// `shared_buffers` is 128 MB).
pub const DEFAULT_ROW_CACHE_MB: usize = 128;

/// Runs the compute role until `shutdown` resolves.
pub async fn run(cfg: ComputeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    let listener = bind(cfg.listen, "PostgreSQL").await?;
    run_on(listener, cfg, shutdown).await
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| ComputeError::Config(format!("cannot listen for {what} on {addr}: {e}")))
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr> {
    l.local_addr().map_err(|e| ComputeError::Internal(e.to_string()))
}

/// Like [`run`], on a listener the caller bound.
pub async fn run_on(listener: TcpListener, cfg: ComputeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
    crate::pg_catalog::preload()?;
    let row_caches = Arc::new(RowCaches::new(cfg.row_cache_bytes));
    let mut storage = StorageClient::connect_lazy(&cfg.storage)?;
    if cfg.row_cache_bytes > 0 {
        storage = storage.with_row_caches(row_caches.clone());
    }
    // One round trip now: it checks the flags and leaves a warm channel, so
    // that an `attach` later takes milliseconds.
    let databases = storage.list_databases().await?;
    if let Some(db) = &cfg.database
        && !databases.iter().any(|d| &d.name == db)
    {
        return Err(ComputeError::Config(format!("database \"{db}\" does not exist in storage {}", cfg.storage)));
    }
    let binding = Arc::new(match (&cfg.database, cfg.control_listen) {
        (Some(db), _) => Binding::bound(db.clone()),
        (None, Some(_)) => Binding::unbound(),
        (None, None) => Binding::any_database(),
    });
    let pg_addr = local_addr(&listener)?;
    // The control service stops with the PostgreSQL listener.
    let (stop, stopped) = ebb_common::shutdown::signal();
    let control_addr = match cfg.control_listen {
        Some(addr) => {
            let control = bind(addr, "the control service").await?;
            let control_addr = local_addr(&control)?;
            let service = ComputeControlServer::new(ControlService::new(binding.clone(), storage.clone()));
            let stop_control = stopped.wait();
            tokio::spawn(async move {
                let incoming = ebb_common::net::nodelay_incoming(control);
                if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(incoming, stop_control).await {
                    tracing::error!(error = %e, "control service failed");
                }
            });
            Some(control_addr)
        }
        None => None,
    };
    if let Some(addr) = cfg.metrics_listen {
        let listener = bind(addr, "metrics").await?;
        let registry = prometheus::Registry::new();
        let metrics = ComputeMetrics::new(&registry, row_caches.clone()).map_err(|e| ComputeError::Internal(e.to_string()))?;
        tokio::spawn(ebb_common::metrics::serve(listener, registry, stopped.wait()));
        let binding = binding.clone();
        let stopped = stopped.wait();
        tokio::spawn(async move {
            tokio::pin!(stopped);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.sample(&binding),
                    _ = &mut stopped => return,
                }
            }
        });
    }
    let shared = Arc::new(Shared { storage, binding, connections: Arc::new(ConnectionManager::new()) });
    tracing::info!(addr = %pg_addr, control = ?control_addr, storage = %cfg.storage, database = ?cfg.database, "compute serving");
    // A machine-readable line for whoever started this process (the
    // `process` runtime of `ebb local` waits for it).
    match control_addr {
        Some(c) => println!("{COMPUTE_READY_LINE_PREFIX} pg={pg_addr} control={c}"),
        None => println!("{COMPUTE_READY_LINE_PREFIX} pg={pg_addr}"),
    }
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
    // Storage's commits need not wait out the caches' leases.
    row_caches.close_all().await;
    stop.stop();
    tracing::info!("compute stopped");
    Ok(())
}
