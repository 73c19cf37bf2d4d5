//! Durability: everything that makes the object store the source of truth —
//! the WAL, checkpoints, ownership fencing, the database registry — behind a
//! narrow object-store API.

pub mod checkpoint;
pub mod failing;
pub mod fence;
pub mod object_store_url;
pub mod objects;
pub mod registry;
pub mod roles;
mod rename_new;
mod spare_files;
pub mod wal;
