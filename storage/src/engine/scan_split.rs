//! Large scans in two halves on two threads.
//!
//! A scan of a whole table runs on one core, decoding rows as fast as
//! RocksDB yields them, while the node's other cores wait. A whole-table
//! scan (no key bounds, no limit, outside a transaction's own writes) in a
//! database with many keys is split at an existing row key near the middle
//! of the table; the second half is scanned at the same time into a queue
//! with a memory budget and sent after the first, so the reader still
//! receives rows in key order.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};

use arrow::record_batch::RecordBatch;

use super::database::Database;
use crate::keys;

/// Memory the second half may hold while the first is being sent; beyond
/// it the second half waits (and the scan is no longer parallel).
pub const QUEUE_BUDGET_BYTES: usize = 64 << 20;

/// A user key near the middle of `[start, end)` that has rows on both
/// sides, or `None` when the range has no such key or the database has
/// fewer keys than `EngineConfig::split_scans_from_keys` (RocksDB's
/// estimate): such scans are short, and a split costs three seeks and a
/// thread.
pub fn split_key(db: &Database, start: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    let keys = db.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0);
    if keys < db.cfg.split_scans_from_keys {
        return None;
    }
    middle_key(&db.db, start, end)
}

/// A user key near the middle of `[start, end)` with rows on both sides.
fn middle_key(db: &rocksdb::DB, start: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    let mut opts = rocksdb::ReadOptions::default();
    opts.set_iterate_lower_bound(start.to_vec());
    // Versioned keys of user keys below `end` sort below `end | 0xFF…`.
    let mut upper = end.to_vec();
    upper.extend_from_slice(&[0xFF; 9]);
    opts.set_iterate_upper_bound(upper);
    // The reverse seek below lands on the table's last row and then steps
    // back entry by entry over the range-deleted rows of dropped or
    // re-keyed tables below it (they stay in the memtable until a flush):
    // after `pgbench -i`, 100 000 entries and 50 ms for a scan of the
    // one-row `pgbench_branches`. Range deletions only ever cover dropped
    // tables, whose ids are never reused, so a live table's range has none
    // and they may be ignored. (RocksDB deprecates the option for databases
    // without DeleteRange; the test below fails if it stops working.)
    #[allow(deprecated)]
    opts.set_ignore_range_deletions(true);
    let mut it = db.raw_iterator_opt(opts);
    it.seek(start);
    let first = user_key(it.key()?)?.to_vec();
    it.seek_for_prev(end);
    let last = user_key(it.key()?)?.to_vec();
    if first.as_slice() >= last.as_slice() || last.as_slice() >= end {
        return None;
    }
    it.seek(midpoint(&first, &last));
    let mid = user_key(it.key()?)?.to_vec();
    (mid.as_slice() > first.as_slice() && mid.as_slice() <= last.as_slice()).then_some(mid)
}

/// The user key of a versioned key.
fn user_key(versioned: &[u8]) -> Option<&[u8]> {
    keys::split_versioned(versioned).map(|(user, _)| user)
}

/// The byte string halfway between `a` and `b` (as big-endian numbers of
/// equal length, the shorter padded with zeros), at most 32 bytes long.
fn midpoint(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = a.len().max(b.len()).min(32);
    let byte = |s: &[u8], i: usize| u16::from(s.get(i).copied().unwrap_or(0));
    // Sum, most significant byte first, with a carry into a leading digit.
    let mut sum = vec![0u16; len + 1];
    let mut carry = 0u16;
    for i in (0..len).rev() {
        let t = byte(a, i) + byte(b, i) + carry;
        sum[i + 1] = t & 0xFF;
        carry = t >> 8;
    }
    sum[0] = carry;
    // Halve: shift the whole number right by one bit.
    let mut out = Vec::with_capacity(len);
    let mut rest = sum[0] & 1;
    for &d in &sum[1..] {
        let v = (rest << 8) | d;
        out.push((v >> 1) as u8);
        rest = v & 1;
    }
    out
}

/// Batches handed from the second half's thread to the sending thread.
pub struct BatchQueue {
    state: Mutex<QueueState>,
    changed: Condvar,
    budget: usize,
}

#[derive(Default)]
struct QueueState {
    batches: VecDeque<(RecordBatch, usize)>,
    bytes: usize,
    closed: bool,
    cancelled: bool,
}

impl BatchQueue {
    /// An empty queue holding up to `budget` bytes (always at least one batch).
    pub fn new(budget: usize) -> Self {
        Self { state: Mutex::default(), changed: Condvar::new(), budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a batch, waiting while the budget is used up; false once the
    /// queue was cancelled (the producer should stop).
    pub fn push(&self, batch: RecordBatch) -> bool {
        let size = batch.get_array_memory_size();
        let mut s = self.lock();
        while !s.cancelled && !s.batches.is_empty() && s.bytes + size > self.budget {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.cancelled {
            return false;
        }
        s.bytes += size;
        s.batches.push_back((batch, size));
        self.changed.notify_all();
        true
    }

    /// The next batch, waiting for one; `None` once the producer closed the
    /// queue and it is empty.
    pub fn pop(&self) -> Option<RecordBatch> {
        let mut s = self.lock();
        loop {
            if let Some((batch, size)) = s.batches.pop_front() {
                s.bytes -= size;
                self.changed.notify_all();
                return Some(batch);
            }
            if s.closed {
                return None;
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Tells the producer to stop and drops what it queued.
    pub fn cancel(&self) {
        let mut s = self.lock();
        s.cancelled = true;
        s.batches.clear();
        s.bytes = 0;
        self.changed.notify_all();
    }

    /// A guard that closes the queue when dropped (also if the producer panics).
    pub fn closer(&self) -> Closer<'_> {
        Closer(self)
    }
}

/// Closes a [`BatchQueue`] when dropped.
pub struct Closer<'a>(&'a BatchQueue);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.closed = true;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    /// A row key of `table` (a big-endian id after the table prefix), at version 1.
    fn row(table: u32, id: u32) -> Vec<u8> {
        let mut k = keys::table_prefix(table);
        k.extend_from_slice(&id.to_be_bytes());
        keys::versioned(&k, 1)
    }

    #[test]
    fn finding_the_middle_does_not_walk_other_tables_tombstones() {
        use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
        let dir = tempfile::tempdir().expect("temp dir");
        let db = rocksdb::DB::open_default(dir.path()).expect("open");
        // Table 10: 20 000 rows, then dropped (one range tombstone), as
        // `ALTER TABLE … ADD PRIMARY KEY` leaves a re-keyed table's old rows.
        for id in 0..20_000 {
            db.put(row(10, id), b"v").expect("put");
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range(keys::table_prefix(10), keys::table_prefix(11));
        db.write(batch).expect("delete range");
        db.put(row(11, 1), b"v").expect("put");
        for id in 0..100 {
            db.put(row(12, id), b"v").expect("put");
        }
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut perf = PerfContext::default();
        perf.reset();
        assert_eq!(middle_key(&db, &keys::table_prefix(11), &keys::table_prefix(12)), None, "one row: nothing to split");
        let compared = perf.metric(PerfMetric::UserKeyComparisonCount);
        assert!(compared < 1000, "{compared} key comparisons: stepped over the other table's deleted rows");
        let mid = middle_key(&db, &keys::table_prefix(12), &keys::table_prefix(13)).expect("a middle key");
        assert_eq!(Some(mid.as_slice()), user_key(&row(12, 49)), "halfway between rows 0 and 99");
    }

    #[test]
    fn midpoints_lie_between() {
        assert_eq!(midpoint(&[0, 0], &[0, 10]), vec![0, 5]);
        assert_eq!(midpoint(&[1, 0xFF], &[2, 1]), vec![2, 0]);
        assert_eq!(midpoint(&[0xFF, 0xFF], &[0xFF, 0xFF]), vec![0xFF, 0xFF]);
        assert_eq!(midpoint(&[7], &[7, 0x80]), vec![7, 0x40]);
        let (a, b) = (b"t\x01\x80\x00\x00\x01".as_slice(), b"t\x01\x80\x0f\x42\x40".as_slice());
        let m = midpoint(a, b);
        assert!(a < m.as_slice() && m.as_slice() < b, "{m:?}");
    }

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from((0..n).collect::<Vec<_>>()))]).expect("batch")
    }

    #[test]
    fn the_queue_keeps_order_and_its_budget() {
        let one = batch(1000).get_array_memory_size();
        let q = BatchQueue::new(one * 2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _c = q.closer();
                for n in 1..=20 {
                    assert!(q.push(batch(1000 + n)));
                    assert!(q.lock().bytes <= one * 3, "within the budget (one batch may exceed it)");
                }
            });
            let got: Vec<usize> = std::iter::from_fn(|| q.pop()).map(|b| b.num_rows()).collect();
            assert_eq!(got, (1001..=1020).collect::<Vec<_>>());
        });
    }

    #[test]
    fn cancelling_stops_the_producer() {
        let q = BatchQueue::new(1);
        std::thread::scope(|s| {
            let producer = s.spawn(|| {
                let _c = q.closer();
                (0..100).take_while(|_| q.push(batch(10))).count()
            });
            assert!(q.pop().is_some());
            q.cancel();
            let pushed = producer.join().expect("producer");
            assert!(pushed < 100, "stopped after {pushed}");
            assert!(q.pop().is_none(), "closed and empty");
        });
    }
}
