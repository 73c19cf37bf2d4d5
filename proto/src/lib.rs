//! gRPC protocol definitions shared by every ebb role.
//!
//! The `.proto` files live in `proto/proto/`; `build.rs` turns them into
//! prost messages and tonic clients and servers at build time.

pub mod arrow_ipc;

/// The storage service (`proto/storage.proto`).
pub mod storage {
    tonic::include_proto!("ebb.storage.v1");
}

/// gRPC metadata key carrying the PostgreSQL SQLSTATE of an error.
pub const SQLSTATE_METADATA_KEY: &str = "ebb-sqlstate";
