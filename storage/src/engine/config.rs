//! Settings of the engine that every database of a node shares.

use std::time::Duration;

/// When a commit is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once its WAL object is durable in the object store (the default).
    Remote,
    /// Once RocksDB has fsynced it locally; shipped to the object store
    /// within `ship_interval`.
    Local,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "remote" => Ok(Self::Remote),
            "local" => Ok(Self::Local),
            other => Err(format!("unknown durability mode \"{other}\" (expected remote or local)")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Remote => "remote",
            Self::Local => "local",
        })
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub durability: Durability,
    /// Local mode: how often committed work is shipped to the object store.
    pub ship_interval: Duration,
    /// How often a checkpoint is considered.
    pub checkpoint_interval: Duration,
    /// A checkpoint is taken once this many WAL objects accumulated (or the
    /// interval passed with any new commit).
    pub checkpoint_wal_objects: usize,
    /// Default idle timeout of transactions.
    pub txn_idle_timeout: Duration,
    /// How long a commit waits for durability before reporting an unknown outcome.
    pub commit_timeout: Duration,
    /// Largest single value accepted.
    pub max_value_bytes: usize,
    /// Rows per scan record batch.
    pub scan_batch_rows: usize,
    /// Most commits grouped into one WAL object.
    pub max_group_commits: usize,
    /// `remote` mode: writers that usually commit again within this after
    /// being answered are waited for (at most twice this) by the next put
    /// when none is in flight, so that they share a WAL object (see
    /// `commit_gather`); zero never waits.
    pub commit_gather: Duration,
    /// `remote` mode: a WAL put starts while another is in flight only once
    /// that one has taken this long (a fast store gets one at a time and
    /// bigger groups, a slow one several at once).
    pub overlap_puts_after: Duration,
    /// How long a writer waits for another transaction's row lock before
    /// giving up with 40P01 (this also breaks deadlocks).
    pub lock_timeout: Duration,
    /// The block cache all databases opened with this configuration share.
    pub block_cache: BlockCache,
    /// Scans of databases with at least this many keys (RocksDB's estimate)
    /// run in two halves on two threads (see `scan_split`).
    pub split_scans_from_keys: u64,
    /// How long a compute's row-change watch may go without acknowledging
    /// before it is ended (commits wait for it at most this long).
    pub row_watch_lease: Duration,
    /// Size at which RocksDB switches a database's memtable and flushes it
    /// to a file; a bulk commit that fills one waits for that flush (see
    /// `Database::settle_bulk_commit`).
    pub memtable_bytes: usize,
}

/// RocksDB's cache of uncompressed data blocks, shared by every database of
/// a node: scans of tables that fit read them from memory instead of
/// re-reading and decompressing SST blocks (which made a scan of a
/// checkpointed table half again slower than of one still in the memtable).
/// It is RocksDB's HyperClockCache: lookups take no lock (the LRU cache's
/// shard mutex and list upkeep were ~5 % of a whole-table scan's CPU), and
/// blocks inserted at a lower priority — those compactions write, see
/// `open_rocks` — are evicted sooner.
#[derive(Clone)]
pub struct BlockCache {
    cache: rocksdb::Cache,
    bytes: usize,
}

/// Default block cache size (PostgreSQL's default `shared_buffers` is 128 MB).
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 512 << 20;

impl BlockCache {
    /// A cache holding up to `bytes` (memory is taken as blocks come in).
    pub fn new(bytes: usize) -> Self {
        // Entry size 0: the table grows with the entries (blocks are 16 KiB
        // uncompressed, index blocks and small files' blocks less).
        Self { cache: rocksdb::Cache::new_hyper_clock_cache(bytes, 0), bytes }
    }

    /// Its capacity in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes in use.
    pub fn usage(&self) -> usize {
        self.cache.get_usage()
    }

    pub(crate) fn rocksdb(&self) -> &rocksdb::Cache {
        &self.cache
    }
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockCache({} bytes)", self.bytes)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Remote,
            ship_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_wal_objects: 10_000,
            txn_idle_timeout: Duration::from_secs(60),
            commit_timeout: Duration::from_secs(30),
            max_value_bytes: 16 << 20,
            scan_batch_rows: 8192,
            max_group_commits: 512,
            commit_gather: Duration::from_millis(1),
            overlap_puts_after: Duration::from_millis(1),
            lock_timeout: Duration::from_secs(10),
            block_cache: BlockCache::new(DEFAULT_BLOCK_CACHE_BYTES),
            split_scans_from_keys: 100_000,
            row_watch_lease: Duration::from_secs(1),
            memtable_bytes: 64 << 20,
        }
    }
}
