//! Transactions held by storage: their snapshots, write buffers and idle
//! timeouts, and the registry of live snapshots that bounds garbage collection.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_proto::storage::Isolation;

use super::savepoints::UndoFrame;
use super::locks::{LockSet, LockTable};
use crate::error::{Result, StorageError};

/// What a buffered write does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingKind {
    /// Insert; the key must not exist (unique check at commit).
    Insert,
    /// Insert or replace.
    Put,
    /// Delete.
    Delete,
}

/// One buffered write.
#[derive(Debug, Clone)]
pub struct Pending {
    pub kind: PendingKind,
    /// Encoded row; `None` for deletes.
    pub value: Option<Vec<u8>>,
}

/// Live snapshot timestamps; the oldest bounds garbage collection.
///
/// `visible` is the newest durable commit, which new snapshots read;
/// `applied` the newest commit in the local copy, which may be ahead of it
/// while a group's WAL put is in flight (see `commit.rs`, early lock
/// release): only a transaction that waited for a row lock reads there.
pub struct Snapshots {
    live: Mutex<BTreeMap<u64, usize>>,
    visible: AtomicU64,
    applied: AtomicU64,
    gc_ts: Arc<AtomicU64>,
    advanced: tokio::sync::Notify,
}

impl Snapshots {
    /// Starts with everything up to `visible` committed.
    pub fn new(visible: u64) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(BTreeMap::new()),
            visible: AtomicU64::new(visible),
            applied: AtomicU64::new(visible),
            gc_ts: Arc::new(AtomicU64::new(visible)),
            advanced: tokio::sync::Notify::new(),
        })
    }

    /// The GC horizon, shared with the compaction filter.
    pub fn gc_ts_handle(&self) -> Arc<AtomicU64> {
        self.gc_ts.clone()
    }

    /// The newest fully applied commit timestamp.
    pub fn visible(&self) -> u64 {
        self.visible.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recompute(&self, live: &BTreeMap<u64, usize>) {
        let gc = live.keys().next().copied().unwrap_or_else(|| self.visible());
        self.gc_ts.store(gc, Ordering::SeqCst);
    }

    /// The newest commit in the local copy (durable or not yet).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst).max(self.visible())
    }

    /// Takes a snapshot of the latest committed state.
    pub fn acquire(self: &Arc<Self>) -> SnapshotGuard {
        self.acquire_at_least(0)
    }

    /// Takes a snapshot of the latest committed state, or at `ts` if that is
    /// newer (a READ COMMITTED transaction's snapshot never moves back).
    pub fn acquire_at_least(self: &Arc<Self>, ts: u64) -> SnapshotGuard {
        let mut live = self.lock();
        let ts = self.visible().max(ts);
        *live.entry(ts).or_default() += 1;
        self.recompute(&live);
        SnapshotGuard { snapshots: self.clone(), ts }
    }

    /// Takes a snapshot of everything applied, including commits whose WAL
    /// put is still in flight. A transaction reading there must not be
    /// acknowledged before they are durable (see [`Snapshots::wait_visible`]).
    pub fn acquire_applied(self: &Arc<Self>) -> SnapshotGuard {
        self.acquire_at_least(self.applied())
    }

    /// Publishes commits up to `ts` as visible.
    pub fn advance(&self, ts: u64) {
        let live = self.lock();
        self.visible.fetch_max(ts, Ordering::SeqCst);
        self.recompute(&live);
        drop(live);
        self.advanced.notify_waiters();
    }

    /// Records commits up to `ts` as applied to the local copy, not yet
    /// durable.
    pub fn applied_up_to(&self, ts: u64) {
        self.applied.fetch_max(ts, Ordering::SeqCst);
    }

    /// Waits until commits up to `ts` are durable (visible).
    pub async fn wait_visible(&self, ts: u64) {
        loop {
            let advanced = self.advanced.notified();
            if self.visible() >= ts {
                return;
            }
            advanced.await;
        }
    }

    fn release(&self, ts: u64) {
        let mut live = self.lock();
        if let Some(n) = live.get_mut(&ts) {
            *n -= 1;
            if *n == 0 {
                live.remove(&ts);
            }
        }
        self.recompute(&live);
    }
}

/// Keeps a snapshot alive (and its versions out of GC) until dropped.
pub struct SnapshotGuard {
    snapshots: Arc<Snapshots>,
    /// The snapshot timestamp.
    pub ts: u64,
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        self.snapshots.release(self.ts);
    }
}

/// An open transaction.
pub struct Txn {
    pub id: u64,
    /// What it reads: fixed for snapshot isolation, refreshed per statement
    /// for READ COMMITTED.
    pub snapshot: SnapshotGuard,
    pub isolation: Isolation,
    /// Row locks of the keys it wrote; released when the transaction ends.
    pub locks: LockSet,
    /// Buffered writes by user key.
    pub writes: BTreeMap<Vec<u8>, Pending>,
    /// Tables dropped by this transaction.
    pub dropped_tables: Vec<u32>,
    /// The definition version of each table it wrote, as staged (commit
    /// refuses a table altered since).
    pub table_versions: BTreeMap<u32, u64>,
    /// Checks of INITIALLY DEFERRED foreign keys, made at commit.
    pub deferred_checks: Vec<super::foreign_keys::DeferredCheck>,
    /// While a write whose foreign keys cascade is admitted: what each key
    /// it buffered held before, to take it back if the write fails.
    pub journal: Option<BTreeMap<Vec<u8>, Option<Pending>>>,
    /// How deep the cascade being admitted is nested.
    pub cascade_depth: usize,
    /// DDL: work the committer does before validating the commit (see
    /// `CommitJob::prepare`).
    pub prepare: Option<super::commit::Prepare>,
    pub idle_timeout: Duration,
    pub last_used: Instant,
    /// The highest statement number a request carried (see `Database::enter_statement`).
    pub statement: u64,
    /// Undo frames of savepoints, oldest first (see [`savepoints`](super::savepoints)).
    pub undo: Vec<UndoFrame>,
}

impl Txn {
    /// A transaction reading at `snapshot`, locking rows in `locks`.
    pub fn new(id: u64, snapshot: SnapshotGuard, isolation: Isolation, locks: Arc<LockTable>, idle_timeout: Duration) -> Self {
        Self {
            id,
            snapshot,
            isolation,
            locks: LockSet::new(locks),
            writes: BTreeMap::new(),
            dropped_tables: Vec::new(),
            table_versions: BTreeMap::new(),
            deferred_checks: Vec::new(),
            journal: None,
            cascade_depth: 0,
            prepare: None,
            idle_timeout,
            last_used: Instant::now(),
            statement: 0,
            undo: Vec::new(),
        }
    }

    /// The snapshot timestamp.
    pub fn snapshot_ts(&self) -> u64 {
        self.snapshot.ts
    }

    /// Restores what the keys in the journal held before (a failed write
    /// with cascades), and stops journaling.
    pub fn take_back_journal(&mut self) {
        for (key, before) in self.journal.take().unwrap_or_default() {
            match before {
                Some(p) => self.writes.insert(key, p),
                None => self.writes.remove(&key),
            };
        }
    }
}

/// A transaction shared between requests.
pub type SharedTxn = Arc<tokio::sync::Mutex<Txn>>;

/// Open transactions of one database.
pub struct TxnManager {
    open: Mutex<HashMap<u64, SharedTxn>>,
    timed_out: Mutex<HashMap<u64, u64>>,
    next_id: AtomicU64,
}

impl TxnManager {
    /// Ids start at `first_id`, so ids of a previous process are not reused.
    pub fn new(first_id: u64) -> Self {
        Self { open: Mutex::default(), timed_out: Mutex::default(), next_id: AtomicU64::new(first_id) }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, SharedTxn>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new transaction built by `make` from its id.
    pub fn begin(&self, make: impl FnOnce(u64) -> Txn) -> (u64, u64) {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let txn = make(id);
        let ts = txn.snapshot_ts();
        self.open().insert(id, Arc::new(tokio::sync::Mutex::new(txn)));
        (id, ts)
    }

    /// A fresh id for a single-request transaction.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    fn missing(&self, id: u64) -> StorageError {
        match self.timed_out.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            Some(ms) => StorageError::TransactionTimedOut { txn: id, idle_ms: *ms },
            None => StorageError::UnknownTransaction(id),
        }
    }

    /// The open transaction `id`.
    pub fn get(&self, id: u64) -> Result<SharedTxn> {
        let found = self.open().get(&id).cloned();
        found.ok_or_else(|| self.missing(id))
    }

    /// Removes `id` (for commit or rollback).
    pub fn take(&self, id: u64) -> Result<SharedTxn> {
        let found = self.open().remove(&id);
        found.ok_or_else(|| self.missing(id))
    }

    /// Number of open transactions.
    pub fn len(&self) -> usize {
        self.open().len()
    }

    /// True when no transaction is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Aborts transactions idle longer than their timeout; returns their ids.
    /// A transaction busy with a request is never idle.
    pub fn reap(&self, now: Instant) -> Vec<u64> {
        let mut open = self.open();
        let expired: Vec<(u64, u64)> = open
            .iter()
            .filter_map(|(id, t)| {
                let t = t.try_lock().ok()?;
                (now.duration_since(t.last_used) > t.idle_timeout).then(|| (*id, t.idle_timeout.as_millis() as u64))
            })
            .collect();
        for (id, _) in &expired {
            open.remove(id);
        }
        drop(open);
        let mut timed_out = self.timed_out.lock().unwrap_or_else(|p| p.into_inner());
        if timed_out.len() > 100_000 {
            timed_out.clear();
        }
        timed_out.extend(expired.iter().copied());
        expired.into_iter().map(|(id, _)| id).collect()
    }

    /// Aborts every open transaction (shutdown, fencing).
    pub fn abort_all(&self) {
        self.open().clear();
    }
}
