//! The storage engine: per-database RocksDB with MVCC keys, snapshot
//! isolation or read committed over row write locks, and the commit pipeline that makes
//! commits durable in the object store.

pub mod background;
pub mod commit;
mod commit_gather;
pub mod config;
pub mod database;
pub mod ddl;
pub mod foreign_keys;
pub mod gc;
pub mod index_ddl;
mod index_entries;
pub mod locks;
pub mod mvcc;
pub mod row_watch;
pub mod savepoints;
pub mod scan;
pub mod scan_aggregate;
pub mod scan_split;
pub mod sequences;
pub mod txn;
pub mod write;

pub use config::{BlockCache, Durability, EngineConfig};
pub use database::Database;
