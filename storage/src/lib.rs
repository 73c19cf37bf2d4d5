//! ebb storage: a durable MVCC row store on RocksDB whose source of truth is
//! object storage.
//!
//! - [`engine`]: per-database RocksDB, MVCC, transactions, commit pipeline;
//! - [`durability`]: WAL objects, checkpoints, fencing, registry;
//! - [`service`]: the gRPC service; `lane`: the same calls on plain TCP;
//!   [`server`]: the `ebb storage` role.

pub mod catalog;
pub mod durability;
pub mod engine;
pub mod error;
pub mod keys;
mod lane;
pub mod metrics;
pub mod node;
pub mod row;
pub mod row_watch_service;
pub mod server;
pub mod service;
pub mod types;

pub use engine::{Database, Durability, EngineConfig};
pub use error::{Result, StorageError};
pub use node::StorageNode;
