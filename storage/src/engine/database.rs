//! One database (tenant): its RocksDB instance, catalog, transactions and
//! commit pipeline, and how it is opened — restore, replay, fence.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prost::Message;
use rocksdb::{DB, Options, WriteBatch, WriteOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::commit::CommitJob;
use super::config::{Durability, EngineConfig};
use super::gc::VersionGcFactory;
use super::mvcc::VisibleRows;
use super::locks::LockTable;
use super::txn::{Snapshots, TxnManager};
use crate::catalog::{Catalog, Table};
use crate::durability::objects::Objects;
use crate::durability::wal::{self, WAL_PIPELINE_DEPTH, WalCommit, WalObject, WalPutter, WalWriter};
use crate::durability::{checkpoint, fence};
use crate::error::{Result, StorageError};
use crate::keys::{self, CATALOG_TABLE_ID};
use crate::metrics::StorageMetrics;

const APPLIED_TS: &str = "applied_ts";
/// The newest commit of the local copy known to be durable in the object
/// store; behind `applied_ts` while groups applied early are in flight.
const DURABLE_TS: &str = "durable_ts";
const WRITER_ID: &str = "writer_id";

/// An open database owned by this node.
pub struct Database {
    /// The database name.
    pub name: String,
    /// The id under which its objects are stored.
    pub id: String,
    pub(crate) db: Arc<DB>,
    pub(crate) dir: PathBuf,
    pub(crate) cfg: Arc<EngineConfig>,
    pub(crate) catalog: RwLock<Catalog>,
    pub(crate) snapshots: Arc<Snapshots>,
    pub(crate) txns: TxnManager,
    /// Row write locks of open transactions.
    pub(crate) locks: Arc<LockTable>,
    pub(crate) metrics: StorageMetrics,
    pub(crate) objects: Objects,
    pub(crate) wal: tokio::sync::Mutex<WalWriter>,
    pub(crate) epoch: u64,
    pub(crate) rowid_counter: AtomicU32,
    pub(crate) fenced: AtomicBool,
    pub(crate) poisoned: AtomicBool,
    pub(crate) ddl_lock: tokio::sync::Mutex<()>,
    /// Where each sequence in use stands (see `sequences`).
    pub(crate) sequences: super::sequences::SequenceStates,
    /// Held while applying commits and while taking a local checkpoint, so a
    /// checkpoint's `applied_ts` is exact.
    pub(crate) apply_lock: Mutex<()>,
    /// Non-zero while a checkpoint waits for the local copy to hold only durable
    /// commits: the committer then applies groups after their put, not before.
    pub(crate) hold_early_apply: AtomicU32,
    /// Timestamp of the newest commit whose objects are in a checkpoint.
    pub(crate) checkpointed_ts: AtomicU64,
    pub(crate) last_checkpoint_ms: AtomicU64,
    pub(crate) uploaded_ssts: tokio::sync::Mutex<HashSet<String>>,
    /// Computes' row-change watches (see `row_watch`).
    pub row_watches: super::row_watch::RowWatches,
    commit_tx: mpsc::Sender<CommitJob>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Where a database's RocksDB files live under the node's cache directory.
pub fn db_dir(cache_dir: &Path, id: &str) -> PathBuf {
    cache_dir.join(id)
}

/// Uncompressed size of an SST data block. RocksDB's 4 KiB default holds ~30
/// pgbench rows, so a whole-table scan paid a block-cache lookup, a block
/// iterator set-up and an index step every 30 rows; 16 KiB blocks cut that
/// four-fold at the price of reading more bytes per point read that misses
/// the block cache.
const SST_BLOCK_BYTES: usize = 16 * 1024;

fn open_rocks(dir: &Path, snapshots: &Snapshots, cfg: &EngineConfig) -> Result<DB> {
    let mut opts = Options::default();
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(cfg.block_cache.rocksdb());
    table.set_block_size(SST_BLOCK_BYTES);
    opts.set_block_based_table_factory(&table);
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_max_background_jobs(2);
    opts.set_write_buffer_size(cfg.memtable_bytes);
    opts.set_compaction_filter_factory(VersionGcFactory::new(snapshots.gc_ts_handle()));
    // Blocks flushes and compactions write go into the block cache as they
    // are written (the crate has no setter; this keeps the factory's other
    // options). Otherwise the first reads of a table just flushed (the
    // queries right after a bulk load) or compacted decompress every block
    // and fill the cache first, about half again the time of later ones.
    // Compactions' blocks are cached at the lowest priority, evicted
    // before those read or flushed, so a compaction of cold rows does not
    // push hot ones out of a full cache.
    let opts = opts.get_options_from_string("block_based_table_factory={prepopulate_block_cache=kFlushAndCompaction}")?;
    Ok(DB::open(&opts, dir)?)
}

fn read_meta_u64(db: &DB, name: &str) -> Result<u64> {
    Ok(match db.get(keys::meta_key(name))? {
        Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| StorageError::Corrupt(format!("meta {name}")))?),
        None => 0,
    })
}

/// Whether the local copy holds commits applied before their WAL put landed
/// and not known to have landed (a crash, shutdown or fence while a group
/// applied early was in flight): such a copy may hold commits the object
/// store never got, so it is discarded and restored.
fn has_undurable_commits(db: &DB) -> Result<bool> {
    if db.get(keys::meta_key(DURABLE_TS))?.is_none() {
        // Written by a version without early apply: everything applied was durable.
        return Ok(false);
    }
    Ok(read_meta_u64(db, APPLIED_TS)? > read_meta_u64(db, DURABLE_TS)?)
}

fn writer_id() -> String {
    format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>())
}

impl Database {
    /// Opens a database: restores it from the object store if the local copy
    /// is missing or stale, replays the WAL, claims ownership and fences off
    /// any previous owner.
    pub async fn open(
        name: &str,
        id: &str,
        cache_dir: &Path,
        objects: Objects,
        cfg: Arc<EngineConfig>,
        metrics: StorageMetrics,
    ) -> Result<Arc<Self>> {
        let dir = db_dir(cache_dir, id);
        let me = writer_id();
        let latest = checkpoint::latest(&objects).await?;
        let fresh_disk = !dir.join("CURRENT").exists();
        if fresh_disk {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            if let Some(m) = &latest {
                tracing::info!(database = name, applied_ts = m.applied_ts, "restoring checkpoint from the object store");
                checkpoint::restore(&objects, m, &dir).await?;
            }
        }
        let snapshots = Snapshots::new(0);
        let mut db = open_rocks(&dir, &snapshots, &cfg)?;
        let mut applied = read_meta_u64(&db, APPLIED_TS)?;
        let stale = latest.as_ref().is_some_and(|m| m.applied_ts > applied);
        let undurable = has_undurable_commits(&db)?;
        if stale || undurable {
            // The local copy predates WAL that has been truncated, or may hold
            // commits that never became durable: start over.
            if undurable {
                tracing::warn!(database = name, local = applied, "local copy holds commits not known to be durable; restoring");
            } else {
                tracing::warn!(database = name, local = applied, "local copy is stale; restoring");
            }
            drop(db);
            std::fs::remove_dir_all(&dir)?;
            if let Some(m) = &latest {
                checkpoint::restore(&objects, m, &dir).await?;
            }
            db = open_rocks(&dir, &snapshots, &cfg)?;
            applied = read_meta_u64(&db, APPLIED_TS)?;
        }
        let previous_writer = db.get(keys::meta_key(WRITER_ID))?.map(|v| String::from_utf8_lossy(&v).to_string());

        let epoch = fence::claim_epoch(&objects, &me).await?;
        let outbox = read_outbox(&db)?;
        // Replay the WAL after the local state, sealing gaps a crashed
        // pipeline left (see `claim_wal`).
        let mut index = BTreeMap::new();
        let mut foreign_after_outbox = false;
        let outbox_min = outbox.first().map(|c| c.commit_ts);
        let putter = WalWriter::new(objects.clone(), name.to_string(), me.clone(), epoch, BTreeMap::new()).putter();
        let mut replay = |obj: WalObject, index: &mut BTreeMap<u64, u64>| -> Result<()> {
            index.insert(obj.seq, obj.max_ts());
            if let Some(min) = outbox_min
                && obj.max_ts() >= min
                && Some(&obj.writer_id) != previous_writer.as_ref()
            {
                foreign_after_outbox = true;
            }
            let todo: Vec<WalCommit> = obj.commits.into_iter().filter(|c| c.commit_ts > applied).collect();
            if !todo.is_empty() && !foreign_after_outbox {
                applied = todo.iter().map(|c| c.commit_ts).max().unwrap_or(applied);
                apply_to_rocks(&db, &todo, true, false, true)?;
            }
            Ok(())
        };
        let listed = wal::list_wal(&objects).await?;
        if let (Some(&first), Some(&last)) = (listed.first(), listed.last()) {
            for seq in first..=last {
                let obj = if listed.binary_search(&seq).is_ok() { wal::read_wal(&objects, seq).await? } else { None };
                match obj {
                    Some(obj) => replay(obj, &mut index)?,
                    None => {
                        claim_wal(&putter, &objects, seq, &mut index, &mut replay).await?;
                    }
                }
            }
        }
        // Fence: claim the next `WAL_PIPELINE_DEPTH` sequence numbers in a
        // row. A previous owner still running keeps at most that many puts
        // in flight and starts a new one only after the one that many places
        // before it landed, so it can land nothing after these; whatever it
        // landed among them is replayed like any other object.
        let mut seq = listed.last().map(|s| s + 1).unwrap_or(1);
        let mut claimed_in_a_row = 0;
        while claimed_in_a_row < WAL_PIPELINE_DEPTH {
            if claim_wal(&putter, &objects, seq, &mut index, &mut replay).await? {
                claimed_in_a_row += 1;
            } else {
                claimed_in_a_row = 0;
            }
            seq += 1;
        }
        drop(replay);
        tracing::info!(database = name, epoch, fence_seq = seq - 1, "took ownership");
        if foreign_after_outbox {
            // Local mode: unshipped commits of ours and commits of another
            // owner overlap; the object store is the source of truth.
            tracing::error!(
                database = name,
                unshipped = outbox.len(),
                "another node wrote this database after our unshipped local commits; discarding them and restoring from the object store"
            );
            drop(db);
            std::fs::remove_dir_all(&dir)?;
            return Box::pin(Self::open(name, id, cache_dir, objects, cfg, metrics)).await;
        }
        // Outbox entries already in the WAL were shipped before a crash.
        let max_wal_ts = index.values().copied().max().unwrap_or(0);
        let mut batch = WriteBatch::default();
        for c in outbox.iter().filter(|c| c.commit_ts <= max_wal_ts) {
            batch.delete(keys::outbox_key(c.commit_ts));
        }
        batch.put(keys::meta_key(WRITER_ID), me.as_bytes());
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo)?;
        let writer = WalWriter::new(objects.clone(), name.to_string(), me.clone(), epoch, index);
        let applied = applied.max(outbox.last().map(|c| c.commit_ts).unwrap_or(0));
        snapshots.advance(applied);

        let mut catalog = Catalog::new();
        {
            let start = keys::table_prefix(CATALOG_TABLE_ID);
            let end = keys::prefix_successor(&start);
            let mut rows = VisibleRows::new(&db, applied, &start, end);
            while rows.advance()? {
                let k = rows.user_key();
                let id = u32::from_be_bytes(k[5..9].try_into().map_err(|_| StorageError::Corrupt("catalog key".into()))?);
                catalog.apply_row(id, Some(rows.value()))?;
            }
        }

        let (commit_tx, commit_rx) = mpsc::channel(4096);
        let (shutdown, _) = watch::channel(false);
        let first_txn_id = checkpoint::now_ms() << 10;
        let row_watch_lease = cfg.row_watch_lease;
        let this = Arc::new(Self {
            name: name.to_string(),
            id: id.to_string(),
            db: Arc::new(db),
            dir,
            cfg,
            catalog: RwLock::new(catalog),
            snapshots,
            txns: TxnManager::new(first_txn_id),
            locks: LockTable::new(),
            row_watches: super::row_watch::RowWatches::new(row_watch_lease, metrics.clone(), applied),
            metrics,
            objects,
            wal: tokio::sync::Mutex::new(writer),
            epoch,
            rowid_counter: AtomicU32::new(0),
            fenced: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            ddl_lock: tokio::sync::Mutex::new(()),
            sequences: Default::default(),
            apply_lock: Mutex::new(()),
            hold_early_apply: AtomicU32::new(0),
            checkpointed_ts: AtomicU64::new(latest.as_ref().map(|m| m.applied_ts).unwrap_or(0)),
            last_checkpoint_ms: AtomicU64::new(latest.as_ref().map(|m| m.created_unix_ms).unwrap_or_else(checkpoint::now_ms)),
            uploaded_ssts: tokio::sync::Mutex::new(
                latest.iter().flat_map(|m| m.files.iter().map(|f| f.key.clone())).collect(),
            ),
            commit_tx,
            shutdown,
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![tokio::spawn(super::commit::run_committer(this.clone(), commit_rx, this.shutdown.subscribe()))];
        tasks.extend(super::background::spawn_all(&this, this.shutdown.subscribe()));
        *this.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        tracing::info!(database = name, id, applied_ts = applied, tables = this.catalog_read().tables().len(), "database open");
        Ok(this)
    }

    /// Stops background work, ships what local mode has not shipped yet and
    /// takes a final checkpoint when possible.
    pub async fn close(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        self.txns.abort_all();
        self.row_watches.close_all();
        if let Err(e) = self.db.flush() {
            tracing::warn!(database = %self.name, error = %e, "flush on close failed");
        }
    }

    /// The latest committed catalog.
    pub(crate) fn catalog_read(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A table by name.
    pub fn table(&self, schema: &str, name: &str) -> Result<Arc<Table>> {
        self.catalog_read().get(schema, name)
    }

    /// A table by name, as the definition a request was planned with
    /// (see [`Catalog::get_expected`](crate::catalog::Catalog::get_expected)).
    pub fn table_as_expected(&self, schema: &str, name: &str, expect: Option<&ebb_proto::storage::TableVersion>) -> Result<Arc<Table>> {
        self.catalog_read().get_expected(schema, name, expect)
    }

    /// Every table.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.catalog_read().tables()
    }

    /// Bytes the database takes: its table files and memtables.
    pub fn database_size(&self) -> u64 {
        let property = |name: &str| self.db.property_int_value(name).ok().flatten().unwrap_or(0);
        property("rocksdb.total-sst-files-size") + property("rocksdb.cur-size-all-mem-tables")
    }

    /// Per table id, the bytes of its rows: RocksDB's estimate for its table
    /// files plus its entries in the memtables (every version counts until
    /// garbage collection drops it). Walks the memtables: run it off the
    /// async threads.
    pub fn table_sizes(&self) -> Vec<(u32, u64)> {
        let tables = self.tables();
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = tables
            .iter()
            .map(|t| {
                let start = keys::table_prefix(t.id());
                let end = keys::prefix_successor(&start).unwrap_or_else(|| vec![0xFF; start.len() + 1]);
                (start, end)
            })
            .collect();
        let files = self.db.get_approximate_sizes(&ranges.iter().map(|(s, e)| rocksdb::Range::new(s, e)).collect::<Vec<_>>());
        tables.iter().zip(&ranges).zip(files).map(|((t, (start, end)), in_files)| (t.id(), in_files + self.memtable_bytes(start, end))).collect()
    }

    /// Bytes of the entries in `[start, end)` still in the memtables.
    fn memtable_bytes(&self, start: &[u8], end: &[u8]) -> u64 {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_read_tier(rocksdb::ReadTier::Memtable);
        opts.set_iterate_upper_bound(end.to_vec());
        let mut it = self.db.raw_iterator_opt(opts);
        it.seek(start);
        let mut bytes = 0;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            bytes += (k.len() + v.len()) as u64;
            it.next();
        }
        bytes
    }

    /// Fails if this node was fenced off the database.
    pub(crate) fn check_owned(&self) -> Result<()> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(StorageError::Fenced(self.name.clone()));
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(StorageError::Poisoned(self.name.clone()));
        }
        Ok(())
    }

    /// Marks the database as taken over by another node.
    pub(crate) fn mark_fenced(&self) {
        if !self.fenced.swap(true, Ordering::SeqCst) {
            tracing::error!(database = %self.name, "fenced: another storage node owns this database now");
            self.txns.abort_all();
        }
    }

    /// Stops serving reads and writes after a failure that left the local
    /// copy behind the object store (it could miss acknowledged commits); a
    /// restart recovers from the store.
    pub(crate) fn poison(&self, why: &str) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(database = %self.name, why, "database stopped serving");
            self.txns.abort_all();
        }
    }

    /// True once another node took the database over.
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// The newest visible commit timestamp.
    pub fn visible_ts(&self) -> u64 {
        self.snapshots.visible()
    }

    /// The newest commit applied to the local copy: ahead of
    /// [`Database::visible_ts`] while groups applied early are in flight.
    pub fn local_ts(&self) -> u64 {
        self.snapshots.applied()
    }

    /// Hands a commit to the committer.
    pub(crate) async fn submit(&self, job: CommitJob) -> Result<()> {
        self.commit_tx.send(job).await.map_err(|_| StorageError::ShuttingDown)
    }

    /// Applies commits to RocksDB and the catalog; callers hold `apply_lock`.
    /// `durable`: their WAL put has landed (or local mode makes them durable
    /// with this write); otherwise they are applied early and
    /// [`Database::record_durable`] follows once the put lands.
    pub(crate) fn apply(&self, commits: &[WalCommit], durable: bool) -> Result<()> {
        let local = self.cfg.durability == Durability::Local;
        apply_to_rocks(&self.db, commits, local, local, durable)?;
        let mut catalog = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        for c in commits {
            for op in &c.ops {
                if keys::table_of(&op.key) == Some(CATALOG_TABLE_ID) && op.key.len() == 9 {
                    let id = u32::from_be_bytes([op.key[5], op.key[6], op.key[7], op.key[8]]);
                    catalog.apply_row(id, op.value.as_deref())?;
                }
            }
        }
        Ok(())
    }

    /// Records that commits up to `ts`, applied early, are durable now (a
    /// crash before this write makes the next open restore the local copy).
    pub(crate) fn record_durable(&self, ts: u64) -> Result<()> {
        self.db.put(keys::meta_key(DURABLE_TS), ts.to_be_bytes())?;
        Ok(())
    }

    /// Waits until commits up to `ts` are durable: a transaction that read
    /// a commit applied early is not acknowledged before that commit is.
    pub(crate) async fn wait_durable(&self, ts: u64) -> Result<()> {
        if self.visible_ts() >= ts {
            return Ok(());
        }
        let wait = async {
            loop {
                tokio::select! {
                    _ = self.snapshots.wait_visible(ts) => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(50)) => self.check_owned()?,
                }
            }
        };
        match tokio::time::timeout(self.commit_timeout(), wait).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::CommitOutcomeUnknown(format!(
                "a commit this transaction read was not confirmed within {:?}",
                self.commit_timeout()
            ))),
        }
    }

    /// A new hidden row id (tables without a primary key).
    pub(crate) fn next_rowid(&self) -> Result<i64> {
        let n = self.rowid_counter.fetch_add(1, Ordering::SeqCst);
        if n == u32::MAX || self.epoch >= (1 << 31) {
            return Err(StorageError::NotSupported(
                "row ids of this ownership epoch are exhausted; reopen the database".into(),
            ));
        }
        Ok(((self.epoch as i64) << 32) | n as i64)
    }

    /// The newest commit applied to the local copy.
    pub(crate) fn applied_ts(&self) -> Result<u64> {
        read_meta_u64(&self.db, APPLIED_TS)
    }

    /// Time until a commit reports an unknown outcome.
    pub(crate) fn commit_timeout(&self) -> Duration {
        self.cfg.commit_timeout
    }

    /// Runs a full compaction (tests and tools use it to force GC).
    pub fn compact(&self) {
        self.db.compact_range::<&[u8], &[u8]>(None, None);
    }

    /// Number of stored versions (live or deleted) of a user key; for tests of GC.
    pub fn version_count(&self, user_key: &[u8]) -> usize {
        let mut it = self.db.raw_iterator();
        it.seek(keys::versioned(user_key, u64::MAX));
        let mut n = 0;
        while let Some(k) = it.key() {
            match keys::split_versioned(k) {
                Some((u, _)) if u == user_key => n += 1,
                _ => break,
            }
            it.next();
        }
        n
    }
}

/// Writes commits into RocksDB in one batch, recording `applied_ts` (and
/// `durable_ts` when `durable`).
fn apply_to_rocks(db: &DB, commits: &[WalCommit], sync: bool, outbox: bool, durable: bool) -> Result<()> {
    let mut batch = WriteBatch::default();
    let mut last = 0;
    for c in commits {
        for t in &c.dropped_tables {
            let start = keys::table_prefix(*t);
            if let Some(end) = keys::prefix_successor(&start) {
                batch.delete_range(start, end);
            }
        }
        for op in &c.ops {
            batch.put(keys::versioned(&op.key, c.commit_ts), op.value.as_deref().unwrap_or_default());
        }
        if outbox {
            batch.put(keys::outbox_key(c.commit_ts), c.encode_to_vec());
        }
        last = last.max(c.commit_ts);
    }
    batch.put(keys::meta_key(APPLIED_TS), last.to_be_bytes());
    if durable {
        batch.put(keys::meta_key(DURABLE_TS), last.to_be_bytes());
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(sync);
    db.write_opt(batch, &wo)?;
    Ok(())
}

/// Commits in the local-mode outbox (not yet shipped), oldest first.
pub(crate) fn read_outbox(db: &DB) -> Result<Vec<WalCommit>> {
    let mut out = Vec::new();
    let mut it = db.raw_iterator();
    it.seek([keys::OUTBOX_PREFIX]);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if k.first() != Some(&keys::OUTBOX_PREFIX) {
            break;
        }
        out.push(WalCommit::decode(v).map_err(|e| StorageError::Corrupt(format!("outbox: {e}")))?);
        it.next();
    }
    it.status()?;
    Ok(out)
}

/// Claims WAL sequence number `seq` for the opening owner with an empty
/// object. Returns `true` if the claim landed; if another writer's object
/// got there first it is replayed instead and `false` is returned.
async fn claim_wal(
    putter: &WalPutter,
    objects: &Objects,
    seq: u64,
    index: &mut BTreeMap<u64, u64>,
    replay: &mut impl FnMut(WalObject, &mut BTreeMap<u64, u64>) -> Result<()>,
) -> Result<bool> {
    match putter.put(seq, Vec::new()).await {
        Ok(_) => {
            index.insert(seq, 0);
            Ok(true)
        }
        Err(wal::AppendError::Store(e)) => Err(e),
        Err(wal::AppendError::Fenced) => match wal::read_wal(objects, seq).await? {
            Some(obj) => {
                replay(obj, index)?;
                Ok(false)
            }
            // Created and deleted again meanwhile: nothing to replay.
            None => Ok(false),
        },
    }
}
