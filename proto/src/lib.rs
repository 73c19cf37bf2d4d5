//! gRPC protocol definitions shared by every ebb role.
//!
//! The `.proto` files live in `proto/proto/`; `build.rs` turns them into
//! prost messages and tonic clients and servers at build time.

pub mod arrow_ipc;
pub mod lane;
pub mod pg_types;
pub mod row_keys;

/// The storage service (`proto/storage.proto`).
pub mod storage {
    tonic::include_proto!("ebb.storage.v1");
}

/// The compute control service (`proto/control.proto`).
pub mod control {
    tonic::include_proto!("ebb.control.v1");
}

/// The operator's compute broker (`proto/broker.proto`).
pub mod broker {
    tonic::include_proto!("ebb.broker.v1");
}

/// Start of the line a compute prints on stdout once it listens,
/// `EBB_COMPUTE_READY pg=ADDR [control=ADDR]`; the `process` runtime of the
/// controller waits for it.
pub const COMPUTE_READY_LINE_PREFIX: &str = "EBB_COMPUTE_READY";

/// gRPC metadata key carrying the PostgreSQL SQLSTATE of an error.
pub const SQLSTATE_METADATA_KEY: &str = "ebb-sqlstate";

/// gRPC metadata key set on a READ COMMITTED write that found its row changed
/// after the statement's snapshot: the statement may be re-run on a fresh
/// snapshot (the transaction keeps the row's lock meanwhile).
pub const RETRY_STATEMENT_METADATA_KEY: &str = "ebb-retry-statement";

/// gRPC metadata key set when a request named a table definition
/// (`TableVersion`) that is no longer current: the caller reloads its
/// catalog and plans the statement again. Nothing was read or written.
pub const CATALOG_CHANGED_METADATA_KEY: &str = "ebb-catalog-changed";

/// gRPC response metadata key of a scan that began its transaction
/// (`ScanRequest.begin`): the new transaction's id, in decimal.
pub const BEGUN_TXN_METADATA_KEY: &str = "ebb-begun-txn";

/// gRPC response metadata key of a scan outside any transaction: the
/// snapshot it read, in decimal (a compute's row cache keeps rows by it).
pub const SNAPSHOT_TS_METADATA_KEY: &str = "ebb-snapshot-ts";
