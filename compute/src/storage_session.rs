//! A client session's link to storage: which database it uses, which
//! storage transaction (if any) its statements run in, and the writes of
//! that transaction it has not sent yet. Shared by the session, its catalog
//! and its tables.
//!
//! Deferred writes: a write whose outcome compute already knows (see
//! [`crate::deferrable`]) is not sent on its own; the transaction's next
//! request carries it ("Carried writes" in storage.proto): a point read's
//! scan, a write, the commit. A scan of any other kind first sends them in a
//! write of their own, so every read sees the transaction's writes.
//! TPC-B's five statements then need four round trips to storage besides
//! the commit instead of eight, and the row locks they take are held across
//! fewer of them.
//!
//! A block's transaction begins lazily: BEGIN sends nothing, and the
//! block's first request to storage begins it. A point read carries the
//! begin (`ScanRequest.begin`), so the block needs no Begin round trip of
//! its own; any other request sends one first ([`StorageSession::started_txn`]).
//!
//! Rows the transaction locked and wrote are kept (`crate::own_rows`) so
//! that its own reads of them need no request at all.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use ebb_proto::storage::{Isolation, TableDef, TableWrite};

use crate::error::Result;
use crate::own_rows::OwnRows;
use crate::row_cache::CachedRow;
use crate::storage_client::StorageClient;

/// The session's database and current transaction.
pub struct StorageSession {
    /// The storage client.
    pub client: StorageClient,
    /// The database this session is connected to.
    pub database: String,
    txn: AtomicU64,
    /// The isolation of a block whose storage transaction is not begun yet.
    pending: Mutex<Option<Isolation>>,
    /// Held while a pending transaction is begun, so that concurrent scans
    /// of one plan begin it once.
    begin_gate: tokio::sync::Mutex<()>,
    writes: AtomicU64,
    /// The number of the statement running, sent with each request: storage
    /// moves a READ COMMITTED snapshot at the first request of a new one.
    statement: AtomicU64,
    /// The newest open savepoint's number, sent with each write (0: none).
    savepoint: AtomicU64,
    /// Writes of the open transaction not sent yet, in the order made.
    deferred: Mutex<Vec<TableWrite>>,
    /// Rows the open transaction locked and wrote.
    own_rows: OwnRows,
    /// Held while deferred writes are on their way, so that a scan that
    /// finds none left waits until storage has them.
    flush_gate: tokio::sync::Mutex<()>,
    /// The database's row cache, when the compute keeps one.
    pub row_cache: Option<std::sync::Arc<crate::row_cache::RowCache>>,
    /// The row cache's count of catalog changes when the catalog was last
    /// brought up to date.
    catalog_changes_seen: AtomicU64,
}

impl StorageSession {
    /// A session on `database` with no open transaction.
    pub fn new(client: StorageClient, database: String) -> Self {
        let row_cache = client.row_cache(&database);
        let catalog_changes_seen = AtomicU64::new(row_cache.as_ref().map_or(0, |c| c.catalog_changes()));
        Self {
            row_cache,
            catalog_changes_seen,
            client,
            database,
            txn: AtomicU64::new(0),
            pending: Mutex::default(),
            begin_gate: tokio::sync::Mutex::const_new(()),
            writes: AtomicU64::new(0),
            statement: AtomicU64::new(0),
            savepoint: AtomicU64::new(0),
            deferred: Mutex::default(),
            own_rows: OwnRows::default(),
            flush_gate: tokio::sync::Mutex::const_new(()),
        }
    }

    /// The row watch's count of DDL commits (by any compute), when it moved
    /// since the session's catalog was last brought up to date: the
    /// catalog may be stale ([`StorageSession::catalog_caught_up`] once
    /// reloaded).
    pub fn catalog_changes_unseen(&self) -> Option<u64> {
        let now = self.row_cache.as_ref()?.catalog_changes();
        (self.catalog_changes_seen.load(Ordering::SeqCst) != now).then_some(now)
    }

    /// The catalog was reloaded after the row watch's count reached `count`.
    pub fn catalog_caught_up(&self, count: u64) {
        self.catalog_changes_seen.store(count, Ordering::SeqCst);
    }

    /// The open storage transaction, or 0 (reads then see the latest commit).
    pub fn txn(&self) -> u64 {
        self.txn.load(Ordering::SeqCst)
    }

    /// Sets (or with 0 clears) the open transaction; writes deferred in
    /// the one before are dropped (it was rolled back), and a pending begin
    /// is forgotten.
    pub fn set_txn(&self, id: u64) {
        self.txn.store(id, Ordering::SeqCst);
        *self.pending_begin_slot() = None;
        self.deferred_writes().clear();
        self.own_rows.clear();
    }

    /// Ends the open transaction on compute's side: returns its id (0:
    /// none begun) and the writes it deferred, which its commit must carry.
    pub fn end_txn(&self) -> (u64, Vec<TableWrite>) {
        *self.pending_begin_slot() = None;
        self.own_rows.clear();
        let id = self.txn.swap(0, Ordering::SeqCst);
        (id, self.take_deferred())
    }

    /// A block's transaction, of `isolation`, begins with its first request
    /// to storage (nothing is sent now). No-op when one is open.
    pub fn begin_later(&self, isolation: Isolation) {
        if self.txn() == 0 {
            *self.pending_begin_slot() = Some(isolation);
        }
    }

    /// The isolation the next request is to begin the block's transaction
    /// with, if it is not begun yet.
    pub fn pending_begin(&self) -> Option<Isolation> {
        if self.txn() != 0 {
            return None;
        }
        *self.pending_begin_slot()
    }

    /// Whether statements run in a transaction (begun, or to be begun by
    /// the next request) rather than each in its own.
    pub fn in_transaction(&self) -> bool {
        self.txn() != 0 || self.pending_begin().is_some()
    }

    /// The pending transaction was begun by a request that carried the
    /// begin: `id` is the open transaction now.
    pub fn begun(&self, id: u64) {
        *self.pending_begin_slot() = None;
        self.txn.store(id, Ordering::SeqCst);
    }

    /// The open transaction, begun now (a Begin round trip) if it is
    /// pending; 0 when there is none.
    pub async fn started_txn(&self) -> Result<u64> {
        let txn = self.txn();
        if txn != 0 || self.pending_begin().is_none() {
            return Ok(txn);
        }
        let _gate = self.begin_gate.lock().await;
        let Some(isolation) = self.pending_begin() else { return Ok(self.txn()) };
        let id = self.client.begin(&self.database, isolation).await?;
        self.begun(id);
        Ok(id)
    }

    fn pending_begin_slot(&self) -> std::sync::MutexGuard<'_, Option<Isolation>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
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
    /// Rows kept of the transaction are forgotten: a rollback to a
    /// savepoint may undo their writes.
    pub fn set_savepoint(&self, number: u64) {
        self.own_rows.clear();
        self.savepoint.store(number, Ordering::SeqCst);
    }

    /// Buffers a write in the open transaction (begun now if pending),
    /// carrying the deferred writes; returns rows affected.
    pub async fn write(&self, write: TableWrite) -> Result<u64> {
        let txn = self.started_txn().await?;
        if txn == 0 {
            return Err(crate::error::ComputeError::Internal("a write outside any transaction".into()));
        }
        // It may change any row kept (a foreign key's cascade, other tables').
        self.own_rows.clear();
        let earlier = self.take_deferred();
        let n = self.client.write(&self.database, txn, self.statement(), self.savepoint.load(Ordering::SeqCst), earlier, write).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(n)
    }

    /// Whether a write made now may be deferred: a transaction is open and
    /// no savepoint is (a carried write is buffered as if none were).
    pub fn may_defer(&self) -> bool {
        self.txn() != 0 && self.savepoint.load(Ordering::SeqCst) == 0
    }

    /// Keeps a write to table `table_id` of the open transaction for its
    /// next request to carry (see [`StorageSession::may_defer`]); it counts
    /// as accepted. Rows kept of that table are forgotten.
    pub fn defer(&self, table_id: u32, write: TableWrite) {
        self.own_rows.forget_table(table_id);
        self.deferred_writes().push(write);
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// The deferred writes, for a request of the open transaction to carry.
    pub fn take_deferred(&self) -> Vec<TableWrite> {
        std::mem::take(&mut *self.deferred_writes())
    }

    /// Sends the deferred writes (if any) in a write request of their own;
    /// returns once storage holds them. Scans call this first.
    pub async fn flush_deferred(&self) -> Result<()> {
        let _gate = self.flush_gate.lock().await;
        let mut earlier = self.take_deferred();
        let Some(last) = earlier.pop() else { return Ok(()) };
        let txn = self.txn();
        self.client.write(&self.database, txn, self.statement(), 0, earlier, last).await?;
        Ok(())
    }

    /// Keeps rows the open transaction holds locked and has just written
    /// (whole rows of `def`'s table, values as stored) for its own reads.
    pub fn remember_own_rows(&self, def: &TableDef, rows: &RecordBatch) {
        if self.txn() != 0 {
            self.own_rows.remember(def, rows);
        }
    }

    /// The row under storage key `key` as the open transaction wrote it
    /// under table definition `version`, if it is one kept.
    pub fn own_row(&self, key: &[u8], version: u64) -> Option<CachedRow> {
        let row = self.own_rows.get(key, version)?;
        if let Some(cache) = &self.row_cache {
            cache.count_own_row_read();
        }
        Some(row)
    }

    fn deferred_writes(&self) -> std::sync::MutexGuard<'_, Vec<TableWrite>> {
        // A panic while pushing or taking leaves a valid vector.
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes this session has had accepted so far (a statement that saw
    /// none of its writes accepted may be re-run from scratch).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
}
