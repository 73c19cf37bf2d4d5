//! A client session's link to storage: which database it uses and which
//! storage transaction (if any) its statements run in. Shared by the session,
//! its catalog and its tables.

use std::sync::atomic::{AtomicU64, Ordering};

use ebb_proto::storage::TableWrite;

use crate::error::Result;
use crate::storage_client::StorageClient;

/// The session's database and current transaction.
pub struct StorageSession {
    /// The storage client.
    pub client: StorageClient,
    /// The database this session is connected to.
    pub database: String,
    txn: AtomicU64,
    writes: AtomicU64,
    /// The number of the statement running, sent with each request: storage
    /// moves a READ COMMITTED snapshot at the first request of a new one.
    statement: AtomicU64,
    /// The newest open savepoint's number, sent with each write (0: none).
    savepoint: AtomicU64,
}

impl StorageSession {
    /// A session on `database` with no open transaction.
    pub fn new(client: StorageClient, database: String) -> Self {
        Self { client, database, txn: AtomicU64::new(0), writes: AtomicU64::new(0), statement: AtomicU64::new(0), savepoint: AtomicU64::new(0) }
    }

    /// The open storage transaction, or 0 (reads then see the latest commit).
    pub fn txn(&self) -> u64 {
        self.txn.load(Ordering::SeqCst)
    }

    /// Sets (or with 0 clears) the open transaction.
    pub fn set_txn(&self, id: u64) {
        self.txn.store(id, Ordering::SeqCst);
    }

    /// The number of the statement running (see `WriteRequest.statement`).
    pub fn statement(&self) -> u64 {
        self.statement.load(Ordering::SeqCst)
    }

    /// Starts the next statement: under READ COMMITTED, its first storage
    /// request reads from a fresh snapshot.
    pub fn next_statement(&self) {
        self.statement.fetch_add(1, Ordering::SeqCst);
    }

    /// Sets the newest open savepoint (see `WriteRequest.savepoint`).
    pub fn set_savepoint(&self, number: u64) {
        self.savepoint.store(number, Ordering::SeqCst);
    }

    /// Buffers a write in transaction `txn`; returns rows affected.
    pub async fn write(&self, txn: u64, write: TableWrite) -> Result<u64> {
        let n = self.client.write(&self.database, txn, self.statement(), self.savepoint.load(Ordering::SeqCst), write).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    /// Writes this session has had accepted so far (a statement that saw
    /// none of its writes accepted may be re-run from scratch).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
}
