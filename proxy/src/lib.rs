//! ebb proxy: the front door clients connect to. It reads the startup
//! packet, asks a [`Router`] for a compute serving the named database
//! (holding the client while one wakes), then relays bytes, counting
//! sessions and in-flight queries per compute from the protocol's own
//! message boundaries.
//!
//! - [`auth`]: SCRAM-SHA-256 and the database access check;
//! - [`protocol`]: the few PostgreSQL messages the proxy reads or writes;
//! - [`frames`]: message-boundary tracking on a relayed byte stream;
//! - [`load`]: per-compute counters the controller samples;
//! - [`metrics`]: Prometheus gauges of those counters;
//! - [`cancel`]: which compute a cancel key belongs to;
//! - [`server`]: the accept loop and one session's life;
//! - [`tls`]: TLS for clients that ask for it.

pub mod auth;
pub mod cancel;
pub mod frames;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod tls;

use std::net::SocketAddr;

pub use server::{Proxy, ProxyConfig};

/// A compute picked to serve a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The controller's id of the compute.
    pub compute_id: String,
    /// Its PostgreSQL address.
    pub addr: SocketAddr,
}

/// Why no compute could be had.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No such database (SQLSTATE 3D000).
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    /// The database could not be woken (SQLSTATE 57P03).
    #[error("{0}")]
    Unavailable(String),
}

/// Finds computes for databases: the controller, seen from the proxy.
#[async_trait::async_trait]
pub trait Router: Send + Sync + 'static {
    /// A ready compute serving `database`, waking one if needed. The proxy
    /// bounds the wait with its own deadline.
    async fn acquire(&self, database: &str) -> Result<Route, RouteError>;
}
