//! Rows this compute read by primary key, kept to answer the same read
//! again without a storage round trip — while storage's row-change watch
//! (`row_watch`) says they are still the newest.
//!
//! An OLTP read by key (`pgbench -S`) spends most of its time on the hop
//! to storage and back; PostgreSQL answers it from shared buffers. Rows are
//! kept by their storage key (`ebb_proto::row_keys`), so the keys a commit
//! wrote, which the watch sends before the commit becomes visible, name the
//! entries to drop. Only reads outside a transaction block are answered
//! here (they read the latest commit); a block reads its own snapshot from
//! storage.
//!
//! A row read from storage at snapshot `ts` is kept only if no change to
//! its table newer than `ts` has been seen (`table_changed`; a change
//! that arrives later drops it) and `ts` is at least the watch's floor.
//! Entries are served only while the watch's lease lasts (`live_until`).
//! Memory is bounded: past the budget, entries are evicted in the order
//! they came, except that one read since its last pass gets another
//! (CLOCK).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use ebb_proto::row_keys;
use ebb_proto::storage::value::Kind;
use ebb_proto::storage::{RowChanges, TableDef, TypeKind, Value};
use prometheus::IntCounter;

/// Bytes an entry costs beyond its values and key: its map slot (with the
/// map's spare capacity), the key's second copy in the eviction queue,
/// allocation headers. Measured: 100 000 pgbench rows grew the compute's
/// resident memory by ~68 MB, about this much more than their values.
const ENTRY_OVERHEAD: usize = 320;

/// The counters every row cache of a compute adds to.
#[derive(Clone)]
pub struct RowCacheCounters {
    /// Reads answered from the cache.
    pub hits: IntCounter,
    /// Reads that went to storage (and may have filled the cache).
    pub misses: IntCounter,
    /// Entries dropped because a commit changed their row or table.
    pub invalidations: IntCounter,
    /// Reads in a transaction block answered from the rows the
    /// transaction itself locked and wrote (`own_rows`).
    pub own_row_reads: IntCounter,
}

impl RowCacheCounters {
    /// Unregistered counters (see [`crate::metrics::ComputeMetrics`]).
    pub fn new() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric name");
        Self {
            hits: counter("ebb_compute_row_cache_hits_total", "Reads by key answered from the compute's row cache"),
            misses: counter("ebb_compute_row_cache_misses_total", "Reads by key the row cache could not answer"),
            invalidations: counter("ebb_compute_row_cache_invalidations_total", "Cached rows dropped because a commit changed them"),
            own_row_reads: counter("ebb_compute_own_row_reads_total", "Reads by key in a transaction block answered from rows the transaction locked and wrote"),
        }
    }
}

impl Default for RowCacheCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// A cached row: the whole row as storage returned it, by column.
#[derive(Clone)]
pub struct CachedRow {
    schema: SchemaRef,
    values: Arc<[ScalarValue]>,
}

impl CachedRow {
    /// Row `i` of `batch`, with the batch's schema.
    pub fn from_row(batch: &RecordBatch, i: usize) -> Option<Self> {
        let values = batch.columns().iter().map(|c| ScalarValue::try_from_array(c, i)).collect::<datafusion::error::Result<Arc<[_]>>>().ok()?;
        Some(Self { schema: batch.schema(), values })
    }

    /// The value of column `name` as a one-element array.
    pub fn column(&self, name: &str) -> Option<ArrayRef> {
        let i = self.schema.index_of(name).ok()?;
        self.values[i].to_array().ok()
    }

    /// The row as a one-row batch.
    pub fn batch(&self) -> datafusion::error::Result<RecordBatch> {
        let columns = self.values.iter().map(ScalarValue::to_array).collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The cached rows of one database.
pub struct RowCache {
    state: Mutex<State>,
    /// Microseconds since `epoch` until which entries may be served (0: not live).
    live_until: AtomicU64,
    epoch: Instant,
    budget: usize,
    counters: RowCacheCounters,
    /// Commits that changed table definitions, seen since the watch began.
    catalog_changes: AtomicU64,
}

#[derive(Default)]
struct State {
    rows: HashMap<Vec<u8>, Entry>,
    /// Keys in the order they were filled (some may be gone from `rows`).
    order: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Rows read at an older snapshot are not kept.
    floor_ts: u64,
    /// The newest change seen per table id.
    table_changed: HashMap<u32, u64>,
    /// One schema per table id and definition version, shared by its rows.
    schemas: HashMap<(u32, u64), SchemaRef>,
}

impl State {
    /// Forgets every row; rows read before `floor_ts` are not kept.
    fn clear(&mut self, floor_ts: u64) {
        self.rows.clear();
        self.order.clear();
        self.schemas.clear();
        self.bytes = 0;
        self.floor_ts = self.floor_ts.max(floor_ts);
    }
}

struct Entry {
    row: CachedRow,
    /// The table definition version it was read under.
    version: u64,
    referenced: bool,
    size: usize,
}

impl RowCache {
    /// An empty cache of at most `budget` bytes, not live until the watch
    /// says so.
    pub fn new(budget: usize, counters: RowCacheCounters) -> Self {
        Self { state: Mutex::default(), live_until: AtomicU64::new(0), epoch: Instant::now(), budget, counters, catalog_changes: AtomicU64::new(0) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Counts a read answered from a transaction's own rows (`own_rows`).
    pub fn count_own_row_read(&self) {
        self.counters.own_row_reads.inc();
    }

    /// Whether entries may be served now.
    pub fn is_live(&self) -> bool {
        self.now_us() < self.live_until.load(Ordering::SeqCst)
    }

    /// The watch acknowledged everything at `sent_at`: entries may be
    /// served until `sent_at + lease` (less a margin for the two clocks'
    /// rates).
    pub fn live_for(&self, sent_at: Instant, lease: Duration) {
        let until = sent_at.saturating_duration_since(self.epoch) + lease - lease / 8;
        self.live_until.store(until.as_micros() as u64, Ordering::SeqCst);
    }

    /// Forgets every row and stops serving: the watch ended, so changes
    /// may be missed from now on.
    pub fn go_dark(&self) {
        self.restart(0);
    }

    /// A new watch began: rows read before `floor_ts` are not to be kept
    /// (and none kept so far are served).
    pub fn restart(&self, floor_ts: u64) {
        self.live_until.store(0, Ordering::SeqCst);
        self.state().clear(floor_ts);
    }

    /// The cached row under `key`, if it was read under table definition
    /// `version` and the cache is live.
    pub fn get(&self, key: &[u8], version: u64) -> Option<CachedRow> {
        let found = if self.is_live() {
            let mut state = self.state();
            state.rows.get_mut(key).filter(|e| e.version == version).map(|e| {
                e.referenced = true;
                e.row.clone()
            })
        } else {
            None
        };
        match &found {
            Some(_) => self.counters.hits.inc(),
            None => self.counters.misses.inc(),
        }
        found
    }

    /// Keeps `row`, read under definition `version` at snapshot `read_ts`,
    /// unless a newer change to its table has been seen.
    pub fn fill(&self, key: Vec<u8>, version: u64, row: &RecordBatch, read_ts: u64) {
        let Some(table) = row_keys::table_of(&key) else { return };
        if !self.is_live() || row.num_rows() != 1 {
            return;
        }
        let Some(CachedRow { values, .. }) = CachedRow::from_row(row, 0) else { return };
        let size = values.iter().map(ScalarValue::size).sum::<usize>() + key.len() + ENTRY_OVERHEAD;
        if size > self.budget / 16 {
            return;
        }
        let mut state = self.state();
        if read_ts < state.floor_ts || state.table_changed.get(&table).is_some_and(|&ts| ts > read_ts) {
            return;
        }
        let schema = state.schemas.entry((table, version)).or_insert_with(|| row.schema()).clone();
        let old = state.rows.insert(key.clone(), Entry { row: CachedRow { schema, values }, version, referenced: false, size });
        match old {
            Some(old) => state.bytes -= old.size,
            None => state.order.push_back(key),
        }
        state.bytes += size;
        while state.bytes > self.budget {
            let Some(k) = state.order.pop_front() else { break };
            let Some(e) = state.rows.get_mut(&k) else { continue };
            if e.referenced {
                e.referenced = false;
                state.order.push_back(k);
            } else if let Some(e) = state.rows.remove(&k) {
                state.bytes -= e.size;
            }
        }
    }

    /// Drops the rows a commit changed (of whole tables after a bulk
    /// write; all of them for DDL).
    pub fn apply(&self, changes: &RowChanges) {
        let mut state = self.state();
        if changes.everything {
            self.catalog_changes.fetch_add(1, Ordering::SeqCst);
            self.counters.invalidations.inc_by(state.rows.len() as u64);
            state.clear(changes.commit_ts);
            return;
        }
        for &table in &changes.tables {
            let seen = state.table_changed.entry(table).or_default();
            *seen = (*seen).max(changes.commit_ts);
            let State { rows, bytes, .. } = &mut *state;
            let before = rows.len();
            rows.retain(|k, e| {
                let keep = row_keys::table_of(k) != Some(table);
                if !keep {
                    *bytes -= e.size;
                }
                keep
            });
            self.counters.invalidations.inc_by((before - rows.len()) as u64);
        }
        for key in &changes.keys {
            if let Some(table) = row_keys::table_of(key) {
                let seen = state.table_changed.entry(table).or_default();
                *seen = (*seen).max(changes.commit_ts);
            }
            if let Some(e) = state.rows.remove(key.as_slice()) {
                state.bytes -= e.size;
                self.counters.invalidations.inc();
            }
        }
        if state.order.len() > 2 * state.rows.len() + 1024 {
            // Keys of dropped rows pile up in the queue, and a row filled
            // again after a change is queued again: keep each live key once.
            let State { rows, order, .. } = &mut *state;
            let mut seen = std::collections::HashSet::with_capacity(rows.len());
            order.retain(|k| rows.contains_key(k) && seen.insert(k.clone()));
        }
    }

    /// How many commits that changed table definitions the watch has
    /// reported: when it moves, sessions reload their catalog before
    /// planning (DDL on another compute is seen at once).
    pub fn catalog_changes(&self) -> u64 {
        self.catalog_changes.load(Ordering::SeqCst)
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.state().bytes
    }
}

/// The storage key of the row whose primary key is `values` in `def`'s
/// table, for tables whose key columns are all integers or text (other
/// types, and sequences, are not cached).
pub fn row_key(def: &TableDef, values: &[Value]) -> Option<Vec<u8>> {
    if def.sequence.is_some() || def.primary_key.is_empty() || values.len() != def.primary_key.len() {
        return None;
    }
    let mut key = row_keys::table_prefix(def.id);
    for (name, v) in def.primary_key.iter().zip(values) {
        let column = def.columns.iter().find(|c| &c.name == name)?;
        match (column.r#type.as_ref()?.kind(), v.kind.as_ref()?) {
            (TypeKind::Smallint, Kind::Int(i)) => row_keys::encode_i16(i16::try_from(*i).ok()?, &mut key),
            (TypeKind::Integer, Kind::Int(i)) => row_keys::encode_i32(i32::try_from(*i).ok()?, &mut key),
            (TypeKind::Bigint, Kind::Int(i)) => row_keys::encode_i64(*i, &mut key),
            (TypeKind::Text | TypeKind::Varchar, Kind::Text(s)) => row_keys::encode_bytes(s.as_bytes(), &mut key),
            _ => return None,
        }
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use ebb_proto::storage::TypeKind::*;

    use super::*;

    fn row(v: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![v]))]).expect("batch")
    }

    fn value(row: &CachedRow) -> i64 {
        row.batch().expect("batch").column(0).as_any().downcast_ref::<Int64Array>().expect("int64").value(0)
    }

    fn key(table: u32, k: i32) -> Vec<u8> {
        let mut key = row_keys::table_prefix(table);
        row_keys::encode_i32(k, &mut key);
        key
    }

    fn live(budget: usize) -> RowCache {
        let c = RowCache::new(budget, RowCacheCounters::new());
        c.restart(10);
        c.live_for(Instant::now(), Duration::from_secs(60));
        c
    }

    fn changes(ts: u64, keys: Vec<Vec<u8>>) -> RowChanges {
        RowChanges { commit_ts: ts, keys, ..Default::default() }
    }

    #[test]
    fn a_change_drops_the_row_and_refuses_older_reads_of_its_table() {
        let c = live(1 << 20);
        c.fill(key(20, 1), 1, &row(5), 11);
        assert_eq!(c.get(&key(20, 1), 1).as_ref().map(value), Some(5));
        assert!(c.get(&key(20, 1), 2).is_none(), "read under another definition");
        c.apply(&changes(15, vec![key(20, 1)]));
        assert!(c.get(&key(20, 1), 1).is_none(), "changed by a commit");
        c.fill(key(20, 2), 1, &row(6), 14);
        assert!(c.get(&key(20, 2), 1).is_none(), "read before the table's newest change seen");
        c.fill(key(20, 2), 1, &row(6), 15);
        assert!(c.get(&key(20, 2), 1).is_some(), "read at or after it");
        c.fill(key(21, 2), 1, &row(6), 12);
        assert!(c.get(&key(21, 2), 1).is_some(), "other tables are unaffected");
        c.fill(key(22, 1), 1, &row(7), 9);
        assert!(c.get(&key(22, 1), 1).is_none(), "read before the watch's floor");
    }

    #[test]
    fn the_eviction_queue_stays_as_long_as_the_rows() {
        // Two rows changed and read in turn: each is filled again and again
        // while the other's change drops its previous entry.
        let c = live(1 << 20);
        for round in 0..3000u64 {
            let ts = 20 + 4 * round;
            c.fill(key(20, 1), 1, &row(1), ts);
            c.apply(&changes(ts + 1, vec![key(20, 2)]));
            c.fill(key(20, 2), 1, &row(2), ts + 2);
            c.apply(&changes(ts + 3, vec![key(20, 1)]));
        }
        let queued = c.state().order.len();
        assert!(queued <= 1024 + 4, "{queued} queued for two rows");
    }

    #[test]
    fn a_bulk_write_drops_its_tables_rows() {
        let c = live(1 << 20);
        c.fill(key(20, 1), 1, &row(5), 11);
        c.fill(key(21, 1), 1, &row(5), 11);
        c.apply(&RowChanges { commit_ts: 30, tables: vec![20], ..Default::default() });
        assert!(c.get(&key(20, 1), 1).is_none());
        assert!(c.get(&key(21, 1), 1).is_some(), "other tables are unaffected");
        c.fill(key(20, 2), 1, &row(5), 29);
        assert!(c.get(&key(20, 2), 1).is_none(), "read before the bulk write");
    }

    #[test]
    fn ddl_drops_everything_and_raises_the_floor() {
        let c = live(1 << 20);
        c.fill(key(20, 1), 1, &row(5), 11);
        c.apply(&RowChanges { commit_ts: 30, everything: true, ..Default::default() });
        assert!(c.get(&key(20, 1), 1).is_none());
        c.fill(key(21, 1), 1, &row(5), 29);
        assert!(c.get(&key(21, 1), 1).is_none(), "read before the DDL");
    }

    #[test]
    fn nothing_is_served_or_kept_outside_the_lease() {
        let c = RowCache::new(1 << 20, RowCacheCounters::new());
        c.fill(key(20, 1), 1, &row(5), 11);
        assert!(c.get(&key(20, 1), 1).is_none(), "never live");
        c.live_for(Instant::now(), Duration::from_secs(60));
        c.fill(key(20, 1), 1, &row(5), 11);
        assert!(c.get(&key(20, 1), 1).is_some());
        c.live_for(Instant::now(), Duration::ZERO);
        assert!(c.get(&key(20, 1), 1).is_none(), "the lease ran out");
        c.live_for(Instant::now(), Duration::from_secs(60));
        c.go_dark();
        assert!(c.get(&key(20, 1), 1).is_none(), "the watch ended: everything forgotten");
    }

    #[test]
    fn the_budget_evicts_unread_rows_first() {
        let one = ScalarValue::Int64(Some(0)).size() + key(20, 0).len() + ENTRY_OVERHEAD;
        let c = live(one * 20);
        for k in 0..20 {
            c.fill(key(20, k), 1, &row(k as i64), 11);
        }
        assert!(c.get(&key(20, 0), 1).is_some());
        for k in 20..30 {
            c.fill(key(20, k), 1, &row(k as i64), 11);
        }
        assert!(c.bytes() <= one * 20);
        assert!(c.get(&key(20, 0), 1).is_some(), "read since it came: kept");
        assert!(c.get(&key(20, 1), 1).is_none(), "the oldest unread: evicted");
        assert!(c.get(&key(20, 29), 1).is_some());
    }

    #[test]
    fn keys_are_storage_keys_of_integer_and_text_columns() {
        let def = crate::test_support::table_def("t", &[("a", Integer), ("b", Text), ("v", Double)], &["a", "b"]);
        let int = |i| Value { kind: Some(Kind::Int(i)) };
        let text = |s: &str| Value { kind: Some(Kind::Text(s.into())) };
        let mut expected = row_keys::table_prefix(def.id);
        row_keys::encode_i32(7, &mut expected);
        row_keys::encode_bytes(b"x", &mut expected);
        assert_eq!(row_key(&def, &[int(7), text("x")]), Some(expected));
        assert!(row_key(&def, &[int(1 << 40), text("x")]).is_none(), "does not fit the column");
        assert!(row_key(&def, &[text("x"), int(7)]).is_none(), "kinds in the wrong order");
        assert!(row_key(&def, &[int(7)]).is_none(), "part of the key");
        let by_double = crate::test_support::table_def("d", &[("v", Double)], &["v"]);
        assert!(row_key(&by_double, &[Value { kind: Some(Kind::Float(1.0)) }]).is_none(), "not cached");
    }
}
