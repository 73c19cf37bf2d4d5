//! Prometheus metrics of a storage node.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// All metrics a storage node exports at `/metrics`.
#[derive(Clone)]
pub struct StorageMetrics {
    /// Commits acknowledged.
    pub commits: IntCounter,
    /// Writes and commits refused because another transaction wrote the row first.
    pub conflicts: IntCounter,
    /// Commits that failed for any other reason.
    pub commit_failures: IntCounter,
    /// Time to make one WAL object durable in the object store.
    pub wal_upload_seconds: Histogram,
    /// Commits per WAL object (group-commit batch size).
    pub group_size: Histogram,
    /// Seconds since each database's last checkpoint.
    pub checkpoint_age_seconds: IntGaugeVec,
    /// Bytes moved to and from the object store, by direction.
    pub object_store_bytes: IntCounterVec,
    /// Object-store requests that failed, by operation.
    pub object_store_errors: IntCounterVec,
    /// Transactions aborted because they were idle too long.
    pub txn_timeouts: IntCounter,
    /// Writes that gave up waiting for a row lock.
    pub lock_timeouts: IntCounter,
    /// Bytes held by the node's shared block cache.
    pub block_cache_bytes: IntGauge,
    /// Scans run in two halves on two threads.
    pub split_scans: IntCounter,
    /// Flushes bulk commits waited for (see `Database::settle_bulk_commit`).
    pub bulk_commit_flushes: IntCounter,
    /// Commits applied (and their row locks released) before their WAL put
    /// landed; see early lock release in `engine/commit.rs`.
    pub commits_applied_early: IntCounter,
    /// Commit groups whose WAL put waited for earlier groups because they
    /// read commits applied early.
    pub dependent_groups: IntCounter,
    /// Writes that compute deferred and a later request carried.
    pub carried_writes: IntCounter,
    /// Carried writes that could not be buffered (their transaction was rolled back).
    pub carried_write_failures: IntCounter,
    /// Transactions begun, by the request that began them (`begin`, or a `scan` that carried the begin).
    pub transactions_begun: IntCounterVec,
    /// Time spent taking row locks, most of it waiting for other transactions' locks.
    pub lock_wait_seconds: Histogram,
    /// Waits of the committer for the writers of the last round, by outcome (`filled`, `timed_out`).
    pub commit_gathers: IntCounterVec,
    /// Sequence values handed out (nextval).
    pub sequence_values: IntCounter,
    pub indexes_created: IntCounter,
    pub cascaded_rows: IntCounter,
    /// Row-change watches of computes open now.
    pub row_watches: IntGauge,
    /// Row-change watches ended, by how (`goodbye`, `abrupt`, `expired`).
    pub row_watch_ends: IntCounterVec,
    /// Time commit groups waited for the row-change watches to acknowledge them.
    pub row_watch_wait_seconds: Histogram,
    /// Lane connections of computes open now.
    pub lane_connections: IntGauge,
    /// Calls served on lane connections, by call.
    pub lane_calls: IntCounterVec,
}

impl StorageMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            commits: IntCounter::new("ebb_storage_commits_total", "Commits acknowledged")?,
            conflicts: IntCounter::new(
                "ebb_storage_conflicts_total",
                "Commits refused because another transaction wrote the same row first",
            )?,
            commit_failures: IntCounter::new(
                "ebb_storage_commit_failures_total",
                "Commits that failed for a reason other than a conflict",
            )?,
            wal_upload_seconds: Histogram::with_opts(
                HistogramOpts::new("ebb_storage_wal_upload_seconds", "Latency of making one WAL object durable")
                    .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            )?,
            group_size: Histogram::with_opts(
                HistogramOpts::new("ebb_storage_group_commit_size", "Commits per WAL object")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            checkpoint_age_seconds: IntGaugeVec::new(
                Opts::new("ebb_storage_checkpoint_age_seconds", "Seconds since the last checkpoint upload"),
                &["database"],
            )?,
            object_store_bytes: IntCounterVec::new(
                Opts::new("ebb_storage_object_store_bytes_total", "Bytes written to and read from the object store"),
                &["direction"],
            )?,
            object_store_errors: IntCounterVec::new(
                Opts::new("ebb_storage_object_store_errors_total", "Failed object-store requests"),
                &["operation"],
            )?,
            txn_timeouts: IntCounter::new(
                "ebb_storage_transaction_timeouts_total",
                "Transactions aborted after being idle longer than their timeout",
            )?,
            lock_timeouts: IntCounter::new(
                "ebb_storage_lock_timeouts_total",
                "Writes that gave up waiting for another transaction's row lock (40P01)",
            )?,
            block_cache_bytes: IntGauge::new("ebb_storage_block_cache_bytes", "Bytes of table blocks held in the shared block cache")?,
            split_scans: IntCounter::new("ebb_storage_split_scans_total", "Scans run in two halves on two threads")?,
            bulk_commit_flushes: IntCounter::new(
                "ebb_storage_bulk_commit_flushes_total",
                "Memtable flushes a bulk commit waited for before it was acknowledged",
            )?,
            commits_applied_early: IntCounter::new(
                "ebb_storage_commits_applied_early_total",
                "Commits applied and their row locks released before their WAL put landed",
            )?,
            dependent_groups: IntCounter::new(
                "ebb_storage_dependent_groups_total",
                "Commit groups whose WAL put waited for earlier groups because they read commits not yet durable",
            )?,
            carried_writes: IntCounter::new(
                "ebb_storage_carried_writes_total",
                "Writes of earlier statements that compute deferred and a later request carried",
            )?,
            carried_write_failures: IntCounter::new(
                "ebb_storage_carried_write_failures_total",
                "Carried writes that could not be buffered; their transaction was rolled back",
            )?,
            transactions_begun: IntCounterVec::new(
                Opts::new("ebb_storage_transactions_begun_total", "Transactions begun, by the request that began them (begin, or a scan that carried the begin)"),
                &["by"],
            )?,
            lock_wait_seconds: Histogram::with_opts(
                HistogramOpts::new("ebb_storage_lock_wait_seconds", "Time writes spent taking row locks, most of it waiting for other transactions' locks")
                    .buckets(vec![0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0]),
            )?,
            sequence_values: IntCounter::new("ebb_storage_sequence_values_total", "Sequence values handed out (nextval)")?,
            indexes_created: IntCounter::new("ebb_storage_indexes_created_total", "Secondary indexes created (CREATE INDEX)")?,
            cascaded_rows: IntCounter::new("ebb_storage_cascaded_rows_total", "Rows deleted or set to NULL by ON DELETE CASCADE / SET NULL")?,
            row_watches: IntGauge::new("ebb_storage_row_watches", "Row-change watches of computes open now")?,
            row_watch_ends: IntCounterVec::new(
                Opts::new("ebb_storage_row_watch_ends_total", "Row-change watches ended: goodbye (compute stopped), abrupt (stream ended), expired (no acknowledgement within the lease)"),
                &["how"],
            )?,
            row_watch_wait_seconds: Histogram::with_opts(
                HistogramOpts::new("ebb_storage_row_watch_wait_seconds", "Time commit groups waited for row-change watches to acknowledge them")
                    .buckets(vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1, 1.0]),
            )?,
            lane_connections: IntGauge::new("ebb_storage_lane_connections", "Lane connections of computes open now (their point reads, writes and commits)")?,
            lane_calls: IntCounterVec::new(Opts::new("ebb_storage_lane_calls_total", "Calls served on lane connections, by call"), &["call"])?,
            commit_gathers: IntCounterVec::new(
                Opts::new("ebb_storage_commit_gathers_total", "Waits of the committer for the writers it just answered, so that they share the next WAL object (filled: they came back; timed_out: not in time)"),
                &["outcome"],
            )?,
        };
        registry.register(Box::new(m.commits.clone()))?;
        registry.register(Box::new(m.conflicts.clone()))?;
        registry.register(Box::new(m.commit_failures.clone()))?;
        registry.register(Box::new(m.wal_upload_seconds.clone()))?;
        registry.register(Box::new(m.group_size.clone()))?;
        registry.register(Box::new(m.checkpoint_age_seconds.clone()))?;
        registry.register(Box::new(m.object_store_bytes.clone()))?;
        registry.register(Box::new(m.object_store_errors.clone()))?;
        registry.register(Box::new(m.txn_timeouts.clone()))?;
        registry.register(Box::new(m.lock_timeouts.clone()))?;
        registry.register(Box::new(m.lock_wait_seconds.clone()))?;
        registry.register(Box::new(m.commit_gathers.clone()))?;
        registry.register(Box::new(m.sequence_values.clone()))?;
        registry.register(Box::new(m.indexes_created.clone()))?;
        registry.register(Box::new(m.cascaded_rows.clone()))?;
        registry.register(Box::new(m.row_watches.clone()))?;
        registry.register(Box::new(m.row_watch_ends.clone()))?;
        registry.register(Box::new(m.row_watch_wait_seconds.clone()))?;
        registry.register(Box::new(m.lane_connections.clone()))?;
        registry.register(Box::new(m.lane_calls.clone()))?;
        registry.register(Box::new(m.block_cache_bytes.clone()))?;
        registry.register(Box::new(m.split_scans.clone()))?;
        registry.register(Box::new(m.bulk_commit_flushes.clone()))?;
        registry.register(Box::new(m.commits_applied_early.clone()))?;
        registry.register(Box::new(m.dependent_groups.clone()))?;
        registry.register(Box::new(m.carried_writes.clone()))?;
        registry.register(Box::new(m.transactions_begun.clone()))?;
        registry.register(Box::new(m.carried_write_failures.clone()))?;
        Ok(m)
    }

    /// Metrics registered nowhere (for tools and tests that do not export them).
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("metric definitions are valid")
    }
}
