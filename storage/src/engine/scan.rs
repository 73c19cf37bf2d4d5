//! Scans: rows visible to a snapshot (plus the transaction's own writes),
//! restricted by primary-key bounds and simple predicates, projected and
//! limited (or aggregated, see `scan_aggregate`), streamed as Arrow IPC.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Builder};
use arrow::compute::kernels::{boolean, cmp};
use arrow::compute::{filter_record_batch, is_not_null, is_null};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use bytes::Bytes;
use ebb_proto::storage::{AggregateFunction, CompareOp, KeyBound, ScanRequest};
use tokio::sync::mpsc;

use super::database::Database;
use super::mvcc::VisibleRows;
use super::scan_aggregate::{Accumulators, AggregateSpec};
use super::scan_split as split;
use super::txn::{Pending, PendingKind, SnapshotGuard};
use crate::catalog::{ROWID_COLUMN, Table};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::row::{DecodeColumn, RowDecoder};
use crate::types::{Datum, PgType};

/// A predicate resolved against the table.
struct Filter {
    /// Position among the decoded columns.
    slot: usize,
    op: CompareOp,
    /// One-element arrays of the column's type.
    values: Vec<ArrayRef>,
}

/// Everything a scan needs, resolved before it starts.
struct Plan {
    table: Arc<Table>,
    /// Decoded columns: the projection first, then predicate-only columns.
    decode: Vec<DecodeColumn>,
    projected: usize,
    include_rowid: bool,
    /// The projected rows (what `emit` produces).
    rows_schema: SchemaRef,
    /// What the stream carries: the rows, or the one-row aggregate answer.
    out_schema: SchemaRef,
    /// Aggregates over the projected rows; empty: the rows themselves.
    aggregates: Vec<AggregateSpec>,
    filters: Vec<Filter>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    limit: Option<u64>,
    batch_rows: usize,
    /// The request bounded the primary key (a range, typically short).
    key_bounded: bool,
    /// The bounds pin the whole primary key: one row at most, so the scan
    /// stops at the first (stepping on would walk every older version of a
    /// much-updated row, thousands of them before a flush).
    one_key: bool,
    /// Read through a secondary index: its entries in `[start, end)` name
    /// the rows (`start`/`end` above then span the whole table).
    index: Option<IndexRange>,
}

/// The entries an index scan reads.
struct IndexRange {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

/// The snapshot a scan reads: a transaction's, or its own.
enum ScanSnapshot {
    /// `overlay`: the transaction's writes in the table's range read;
    /// `index_overlay`: in the index range read (index scans).
    Txn { ts: u64, overlay: Vec<(Vec<u8>, Pending)>, index_overlay: Vec<(Vec<u8>, Pending)> },
    Own(SnapshotGuard),
}

impl ScanSnapshot {
    /// The snapshot's timestamp.
    fn ts(&self) -> u64 {
        match self {
            ScanSnapshot::Txn { ts, .. } => *ts,
            ScanSnapshot::Own(guard) => guard.ts,
        }
    }
}

/// The transaction's writes in `[start, end)`, in key order.
fn writes_in(writes: &std::collections::BTreeMap<Vec<u8>, Pending>, start: &[u8], end: Option<&Vec<u8>>) -> Vec<(Vec<u8>, Pending)> {
    match end {
        Some(end) => writes.range(start.to_vec()..end.clone()),
        None => writes.range(start.to_vec()..),
    }
    .map(|(k, v)| (k.clone(), v.clone()))
    .collect()
}

impl Database {
    /// Starts a scan; IPC stream chunks arrive on the returned channel.
    pub async fn scan(self: &Arc<Self>, req: &ScanRequest) -> Result<mpsc::Receiver<Result<Bytes>>> {
        Ok(self.scan_at(req).await?.0)
    }

    /// As [`Database::scan`]; also returns the snapshot the scan reads.
    pub async fn scan_at(self: &Arc<Self>, req: &ScanRequest) -> Result<(mpsc::Receiver<Result<Bytes>>, u64)> {
        self.check_owned()?;
        if !req.earlier_writes.is_empty() {
            // First, so that whatever fails later, they are buffered (or
            // their transaction is gone).
            if req.txn_id == 0 {
                return Err(StorageError::InvalidRequest("earlier writes need a transaction".into()));
            }
            let shared = self.txns.get(req.txn_id)?;
            let mut txn = shared.lock().await;
            self.enter_statement(&mut txn, req.statement);
            self.stage_carried(&mut txn, &req.earlier_writes).await?;
        }
        let table = self.table_as_expected(&req.schema, &req.table, req.expect.as_ref())?;
        let plan = plan(&table, req, self.cfg.scan_batch_rows)?;
        if req.lock_row && (req.txn_id == 0 || !is_point_lookup(&table, req) || plan.index.is_some()) {
            return Err(StorageError::InvalidRequest(
                "lock_row needs a transaction and bounds that pin the whole primary key".into(),
            ));
        }
        let snapshot = if req.txn_id == 0 {
            ScanSnapshot::Own(self.snapshots.acquire())
        } else {
            let shared = self.txns.get(req.txn_id)?;
            let mut txn = shared.lock().await;
            txn.last_used = std::time::Instant::now();
            self.enter_statement(&mut txn, req.statement);
            if req.lock_row {
                // A point lookup starts at the row's own key.
                self.lock_for_update(&mut txn, &plan.start).await?;
            }
            let overlay = writes_in(&txn.writes, &plan.start, plan.end.as_ref());
            let index_overlay = match &plan.index {
                Some(ix) => writes_in(&txn.writes, &ix.start, ix.end.as_ref()),
                None => Vec::new(),
            };
            ScanSnapshot::Txn { ts: txn.snapshot_ts(), overlay, index_overlay }
        };
        let snapshot_ts = snapshot.ts();
        let (tx, rx) = mpsc::channel(SCAN_CHUNKS_BUFFERED);
        if plan.one_key {
            // One row at most: a RocksDB seek and a few microseconds of work,
            // cheaper inline than on a blocking thread; its three chunks
            // (schema, batch, end) fit the channel without waiting.
            let sink = Sender::Inline(&tx);
            if let Err(e) = run_scan(self, &plan, snapshot, sink) {
                let _ = tx.try_send(Err(e));
            }
            return Ok((rx, snapshot_ts));
        }
        let db = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = run_scan(&db, &plan, snapshot, Sender::Blocking(&tx)) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok((rx, snapshot_ts))
    }
}

/// Chunks a scan may produce before its reader takes any.
const SCAN_CHUNKS_BUFFERED: usize = 4;

/// A scan whose bounds pin the whole primary key (`lower == upper`, both
/// inclusive): it returns at most one row.
fn is_point_lookup(table: &Table, req: &ScanRequest) -> bool {
    if !req.index.is_empty() {
        return false;
    }
    match (&req.lower, &req.upper) {
        (Some(l), Some(u)) => {
            !table.pk.is_empty() && l.inclusive && u.inclusive && l.values.len() == table.pk.len() && l.values == u.values
        }
        _ => false,
    }
}

/// How a scan hands its chunks to the reader.
#[derive(Clone, Copy)]
enum Sender<'a> {
    /// From a blocking thread: waits while the reader is behind.
    Blocking(&'a mpsc::Sender<Result<Bytes>>),
    /// From the async task itself (point lookups): never waits.
    Inline(&'a mpsc::Sender<Result<Bytes>>),
}

impl Sender<'_> {
    /// False when the reader is gone.
    fn send(self, chunk: Bytes) -> bool {
        match self {
            Sender::Blocking(tx) => tx.blocking_send(Ok(chunk)).is_ok(),
            Sender::Inline(tx) => tx.try_send(Ok(chunk)).is_ok(),
        }
    }
}

fn plan(table: &Arc<Table>, req: &ScanRequest, default_batch: usize) -> Result<Plan> {
    let mut decode = Vec::new();
    let mut fields = Vec::new();
    let aggregating = !req.aggregates.is_empty();
    if aggregating && (!req.projection.is_empty() || req.limit > 0 || req.include_row_id) {
        return Err(StorageError::InvalidRequest("a scan with aggregates takes no projection, limit or row id".into()));
    }
    let names: Vec<&str> = if aggregating {
        // The aggregated columns, each once.
        let mut names: Vec<&str> = Vec::new();
        for a in req.aggregates.iter().filter(|a| !a.column.is_empty()) {
            if a.column == ROWID_COLUMN {
                return Err(StorageError::InvalidRequest(format!("cannot aggregate {ROWID_COLUMN}")));
            }
            if !names.contains(&a.column.as_str()) {
                names.push(&a.column);
            }
        }
        names
    } else if req.projection.is_empty() {
        table.columns.iter().map(|c| c.name.as_str()).collect()
    } else {
        req.projection.iter().map(String::as_str).collect()
    };
    let mut include_rowid = req.include_row_id && table.has_rowid();
    for &name in &names {
        if name == ROWID_COLUMN && table.has_rowid() {
            include_rowid = true;
            continue;
        }
        let c = &table.columns[table.column_index(name)?];
        decode.push(c.decode());
        fields.push(table.schema.field(table.column_index(name)?).clone());
    }
    if include_rowid {
        fields.push(Field::new(ROWID_COLUMN, DataType::Int64, false));
    }
    let projected = decode.len();
    let aggregates = req
        .aggregates
        .iter()
        .map(|a| {
            let function = AggregateFunction::try_from(a.function).unwrap_or(AggregateFunction::Unspecified);
            // Every aggregated column is among the decoded `names`.
            let column = names.iter().position(|n| !a.column.is_empty() && *n == a.column).map(|slot| (slot, a.column.as_str(), fields[slot].data_type()));
            AggregateSpec::new(function, column)
        })
        .collect::<Result<Vec<_>>>()?;
    let rows_schema = Arc::new(Schema::new(fields));
    let out_schema = if aggregating { super::scan_aggregate::output_schema(&aggregates) } else { rows_schema.clone() };
    let mut filters = Vec::new();
    for p in &req.predicates {
        let i = table.column_index(&p.column)?;
        let c = &table.columns[i];
        let slot = match decode.iter().position(|d| d.id == c.id) {
            Some(s) => s,
            None => {
                decode.push(c.decode());
                decode.len() - 1
            }
        };
        let op = CompareOp::try_from(p.op)
            .ok()
            .filter(|o| *o != CompareOp::Unspecified)
            .ok_or_else(|| StorageError::InvalidRequest(format!("unknown comparison operator {}", p.op)))?;
        let needs = match op {
            CompareOp::IsNull | CompareOp::IsNotNull => 0,
            CompareOp::In => usize::MAX,
            _ => 1,
        };
        if needs != usize::MAX && p.values.len() != needs {
            return Err(StorageError::InvalidRequest(format!(
                "operator {op:?} on \"{}\" takes {needs} value(s), got {}",
                c.name,
                p.values.len()
            )));
        }
        let values = p
            .values
            .iter()
            .map(|v| c.ty.datum_from_value(v).and_then(|d| c.ty.datum_array(&d)))
            .collect::<Result<Vec<_>>>()?;
        filters.push(Filter { slot, op, values });
    }
    let prefix = keys::table_prefix(table.id());
    let (start, end, index) = if req.index.is_empty() {
        let (start, end) = key_range(table, &table.pk, &prefix, req, keys::encode_key_datum)?;
        (start, end, None)
    } else {
        let ix = table.index(&req.index)?;
        let (start, end) = key_range(table, &ix.columns, &keys::table_prefix(ix.def.id), req, keys::encode_index_datum)?;
        (prefix.clone(), keys::prefix_successor(&prefix), Some(IndexRange { start, end }))
    };
    Ok(Plan {
        table: table.clone(),
        decode,
        projected,
        include_rowid,
        rows_schema,
        out_schema,
        aggregates,
        filters,
        start,
        end,
        limit: (req.limit > 0).then_some(req.limit),
        key_bounded: req.lower.is_some() || req.upper.is_some() || index.is_some(),
        one_key: is_point_lookup(table, req),
        index,
        batch_rows: {
            let wanted = if req.batch_size > 0 { req.batch_size as usize } else { default_batch };
            // Without predicates a limit caps the first batch too (point reads read one row).
            let cap = if req.limit > 0 && req.predicates.is_empty() { req.limit.min(u32::MAX as u64) as usize } else { usize::MAX };
            wanted.min(cap).max(1)
        },
    })
}

/// The keys under `prefix` between the request's bounds on `columns` (the
/// primary key's, or an index's whose values `encode` writes).
fn key_range(
    table: &Table,
    columns: &[usize],
    prefix: &[u8],
    req: &ScanRequest,
    encode: fn(&Datum, &mut Vec<u8>),
) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let start = match &req.lower {
        Some(b) => bound_key(table, columns, prefix, b, true, encode)?,
        None => prefix.to_vec(),
    };
    let end = match &req.upper {
        Some(b) => Some(bound_key(table, columns, prefix, b, false, encode)?),
        None => keys::prefix_successor(prefix),
    };
    Ok((start, end))
}

/// The key where a bound on a prefix of `columns` starts (lower) or ends
/// (upper, exclusive).
fn bound_key(table: &Table, columns: &[usize], prefix: &[u8], b: &KeyBound, lower: bool, encode: fn(&Datum, &mut Vec<u8>)) -> Result<Vec<u8>> {
    if columns.is_empty() {
        return Err(StorageError::InvalidRequest(format!(
            "\"{}\" has no primary key to bound a scan by",
            table.def.name
        )));
    }
    if b.values.len() > columns.len() {
        return Err(StorageError::InvalidRequest(format!(
            "key bound has {} values but the key of \"{}\" has {} columns",
            b.values.len(),
            table.def.name,
            columns.len()
        )));
    }
    let mut key = prefix.to_vec();
    for (v, &i) in b.values.iter().zip(columns) {
        let ty: &PgType = &table.columns[i].ty;
        let d = ty.datum_from_value(v)?;
        if d == Datum::Null {
            return Err(StorageError::InvalidRequest("a key bound cannot be NULL".into()));
        }
        encode(&d, &mut key);
    }
    // Lower inclusive / upper exclusive start exactly at the prefix; the
    // other two start after every key that extends it.
    if lower == b.inclusive {
        Ok(key)
    } else {
        Ok(keys::prefix_successor(&key).unwrap_or_else(|| vec![0xFF; 16]))
    }
}

/// Produces the stream; runs on a blocking thread (or inline for a point lookup).
fn run_scan(db: &Database, plan: &Plan, snapshot: ScanSnapshot, tx: Sender<'_>) -> Result<()> {
    let ts = snapshot.ts();
    let (overlay, index_overlay) = match &snapshot {
        ScanSnapshot::Txn { overlay, index_overlay, .. } => (overlay.as_slice(), index_overlay.as_slice()),
        ScanSnapshot::Own(_) => (&[][..], &[][..]),
    };
    let reader = Reader { db, plan, ts, overlay, index_overlay };
    let mut writer = StreamWriter::try_new(Vec::new(), &plan.out_schema)?;
    let mut out = ChunkSink { tx, writer: &mut writer };
    if !out.flush()? {
        return Ok(());
    }
    // Whole-table scans only: a key range is usually short, and a split
    // costs three seeks and a thread.
    let splittable = overlay.is_empty() && plan.limit.is_none() && !plan.key_bounded && matches!(tx, Sender::Blocking(_));
    let split = match (splittable, &plan.end) {
        (true, Some(end)) => split::split_key(db, &plan.start, end),
        _ => None,
    };
    if !plan.aggregates.is_empty() {
        let answer = aggregate(&reader, split)?;
        drop(snapshot);
        out.write(&answer)?;
        out.writer.finish()?;
        out.flush()?;
        return Ok(());
    }
    match split {
        None => {
            reader.rows(&plan.start, plan.end.clone(), true, &mut |b| out.write(&b))?;
        }
        Some(mid) => {
            db.metrics.split_scans.inc();
            // Two halves on two threads; the second half's batches wait
            // (within a memory budget) until the first half is sent, so the
            // reader still gets rows in key order.
            let queue = split::BatchQueue::new(split::QUEUE_BUDGET_BYTES);
            std::thread::scope(|scope| -> Result<()> {
                let second = scope.spawn(|| {
                    let _closes = queue.closer();
                    reader.rows(&mid, plan.end.clone(), false, &mut |b| Ok(queue.push(b)))
                });
                let first = reader.rows(&plan.start, Some(mid.clone()), false, &mut |b| out.write(&b));
                let mut sending = first.as_ref().is_ok_and(|more| *more);
                let mut failed = None;
                loop {
                    if !sending {
                        // The reader is gone or something failed: stop the second half.
                        queue.cancel();
                    }
                    let Some(b) = queue.pop() else { break };
                    if sending {
                        match out.write(&b) {
                            Ok(more) => sending = more,
                            Err(e) => {
                                failed = Some(e);
                                sending = false;
                            }
                        }
                    }
                }
                let second = second.join().map_err(|_| StorageError::Corrupt("a scan thread panicked".into()))?;
                first?;
                second?;
                failed.map_or(Ok(()), Err)
            })?;
        }
    }
    drop(snapshot);
    out.writer.finish()?;
    out.flush()?;
    Ok(())
}

/// Folds the scanned rows into the plan's aggregates, the two halves of a
/// split scan on two threads.
fn aggregate(reader: &Reader<'_>, split: Option<Vec<u8>>) -> Result<RecordBatch> {
    let plan = reader.plan;
    let fold = |start: &[u8], end: Option<Vec<u8>>, whole: bool| -> Result<Accumulators> {
        let mut acc = Accumulators::new(plan.aggregates.clone());
        reader.rows(start, end, whole, &mut |b| acc.update(&b).map(|()| true))?;
        Ok(acc)
    };
    let Some(mid) = split else {
        return fold(&plan.start, plan.end.clone(), true)?.finish();
    };
    reader.db.metrics.split_scans.inc();
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| fold(&mid, plan.end.clone(), false));
        let first = fold(&plan.start, Some(mid.clone()), false);
        (first, second.join())
    });
    let mut total = first?;
    total.merge(second.map_err(|_| StorageError::Corrupt("a scan thread panicked".into()))??)?;
    total.finish()
}

/// What a scan reads: a snapshot plus the transaction's own writes.
struct Reader<'a> {
    db: &'a Database,
    plan: &'a Plan,
    ts: u64,
    /// The transaction's writes in the table's range (none for a split scan).
    overlay: &'a [(Vec<u8>, Pending)],
    /// The transaction's writes in the index range (index scans).
    index_overlay: &'a [(Vec<u8>, Pending)],
}

impl Reader<'_> {
    /// Hands the rows with keys in `[start, end)` — or, for an index scan,
    /// the rows its entries name — in filtered batches to `sink` (which
    /// returns false to stop); `whole`: the range is the plan's own, so
    /// the transaction's writes apply (a split scan has none). Returns
    /// false if stopped early (by the sink or the limit).
    fn rows(&self, start: &[u8], end: Option<Vec<u8>>, whole: bool, sink: &mut dyn FnMut(RecordBatch) -> Result<bool>) -> Result<bool> {
        let plan = self.plan;
        let overlay = if whole { self.overlay } else { &[] };
        let mut batch = BatchBuilder::new(plan);
        let mut remaining = plan.limit.unwrap_or(u64::MAX);
        let more = match &plan.index {
            None => merge_range(self.db, self.ts, start, end, overlay, plan.one_key, &mut |key, row| {
                if let Some(row) = row {
                    batch.push(key, row)?;
                }
                batch.emit_if_full(&mut remaining, sink)
            })?,
            Some(ix) => merge_range(self.db, self.ts, &ix.start, ix.end.clone(), self.index_overlay, false, &mut |_, entry| {
                let Some(row_suffix) = entry else { return Ok(true) };
                let mut key = keys::table_prefix(plan.table.id());
                key.extend_from_slice(row_suffix);
                let row = match overlay.binary_search_by(|(k, _)| k.as_slice().cmp(&key)) {
                    Ok(i) => overlay[i].1.value.clone(),
                    Err(_) => super::mvcc::get_visible(&self.db.db, &key, self.ts)?,
                };
                match row {
                    Some(row) => batch.push(&key, &row)?,
                    None => tracing::warn!(table = %plan.table.def.name, index = ?ix.start.get(..5), "an index entry names a row that is not there"),
                }
                batch.emit_if_full(&mut remaining, sink)
            })?,
        };
        if !more {
            return Ok(false);
        }
        batch.emit(&mut remaining, sink)
    }
}

/// Rows decoded for the next batch.
struct BatchBuilder<'p> {
    plan: &'p Plan,
    decoder: RowDecoder,
    rowids: Int64Builder,
    prefix_len: usize,
}

impl<'p> BatchBuilder<'p> {
    fn new(plan: &'p Plan) -> Self {
        Self {
            plan,
            decoder: RowDecoder::new(plan.decode.clone(), plan.batch_rows),
            rowids: Int64Builder::with_capacity(plan.batch_rows),
            prefix_len: keys::table_prefix(plan.table.id()).len(),
        }
    }

    fn push(&mut self, key: &[u8], row: &[u8]) -> Result<()> {
        self.decoder.push(row)?;
        if self.plan.include_rowid {
            let n = self.prefix_len;
            let id = key.get(n..n + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            self.rowids.append_value(id.unwrap_or(0) as i64);
        }
        Ok(())
    }

    /// Emits a full batch; false once the limit is reached or the sink wants no more.
    fn emit_if_full(&mut self, remaining: &mut u64, sink: &mut dyn FnMut(RecordBatch) -> Result<bool>) -> Result<bool> {
        if self.decoder.len() >= self.plan.batch_rows { self.emit(remaining, sink) } else { Ok(true) }
    }

    /// Emits what was decoded (if anything).
    fn emit(&mut self, remaining: &mut u64, sink: &mut dyn FnMut(RecordBatch) -> Result<bool>) -> Result<bool> {
        if self.decoder.is_empty() {
            return Ok(true);
        }
        emit(self.plan, &mut self.decoder, &mut self.rowids, remaining, sink)
    }
}

/// What `merge_range` calls with each key and its row (`None`: deleted by
/// the transaction); returns false to stop.
type KeyVisitor<'a> = dyn FnMut(&[u8], Option<&[u8]>) -> Result<bool> + 'a;

/// Calls `f` with each key in `[start, end)` that holds a row at `ts`,
/// merged in key order with the transaction's writes there (`overlay`,
/// sorted; a delete comes as `None`), until `f` returns false (then false).
/// `one_key`: the range holds one key, so stop at its first version.
fn merge_range(
    db: &Database,
    ts: u64,
    start: &[u8],
    end: Option<Vec<u8>>,
    overlay: &[(Vec<u8>, Pending)],
    one_key: bool,
    f: &mut KeyVisitor<'_>,
) -> Result<bool> {
    let mut rows = VisibleRows::new(&db.db, ts, start, end);
    let mut ov = overlay.iter().peekable();
    let mut db_has = rows.advance()?;
    loop {
        let from_overlay = match (ov.peek(), db_has) {
            (None, false) => return Ok(true),
            (Some(_), false) => true,
            (None, true) => false,
            (Some((k, _)), true) => k.as_slice() <= rows.user_key(),
        };
        let more = if from_overlay {
            let (k, p) = ov.next().expect("peeked");
            if db_has && k.as_slice() == rows.user_key() {
                db_has = !one_key && rows.advance()?;
            }
            f(k, if p.kind == PendingKind::Delete { None } else { p.value.as_deref() })?
        } else {
            let more = f(rows.user_key(), Some(rows.value()))?;
            db_has = !one_key && rows.advance()?;
            more
        };
        if !more {
            return Ok(false);
        }
    }
}

/// Filters, projects and hands over one batch; false once the limit is
/// reached or the sink wants no more.
fn emit(
    plan: &Plan,
    decoder: &mut RowDecoder,
    rowids: &mut Int64Builder,
    remaining: &mut u64,
    sink: &mut dyn FnMut(RecordBatch) -> Result<bool>,
) -> Result<bool> {
    let n = decoder.len();
    let mut arrays = decoder.finish();
    let mut mask: Option<BooleanArray> = None;
    for f in &plan.filters {
        let m = eval(f, &arrays[f.slot])?;
        mask = Some(match mask {
            Some(prev) => boolean::and(&prev, &m)?,
            None => m,
        });
    }
    arrays.truncate(plan.projected);
    if plan.include_rowid {
        arrays.push(Arc::new(rowids.finish()));
    }
    let opts = RecordBatchOptions::new().with_row_count(Some(n));
    let mut batch = RecordBatch::try_new_with_options(plan.rows_schema.clone(), arrays, &opts)?;
    if let Some(m) = mask {
        batch = filter_record_batch(&batch, &m)?;
    }
    if batch.num_rows() as u64 > *remaining {
        batch = batch.slice(0, *remaining as usize);
    }
    *remaining -= batch.num_rows() as u64;
    if batch.num_rows() > 0 && !sink(batch)? {
        return Ok(false);
    }
    Ok(*remaining > 0)
}

fn eval(f: &Filter, col: &ArrayRef) -> Result<BooleanArray> {
    use arrow::array::Scalar;
    let one = |v: &ArrayRef, op: CompareOp| -> Result<BooleanArray> {
        let s = Scalar::new(v.clone());
        Ok(match op {
            CompareOp::Eq | CompareOp::In => cmp::eq(col, &s)?,
            CompareOp::Ne => cmp::neq(col, &s)?,
            CompareOp::Lt => cmp::lt(col, &s)?,
            CompareOp::Le => cmp::lt_eq(col, &s)?,
            CompareOp::Gt => cmp::gt(col, &s)?,
            CompareOp::Ge => cmp::gt_eq(col, &s)?,
            CompareOp::IsNull | CompareOp::IsNotNull | CompareOp::Unspecified => {
                return Err(StorageError::InvalidRequest(format!("{op:?} takes no value")));
            }
        })
    };
    match f.op {
        CompareOp::IsNull => Ok(is_null(col.as_ref())?),
        CompareOp::IsNotNull => Ok(is_not_null(col.as_ref())?),
        CompareOp::In => {
            let mut acc = BooleanArray::from(vec![false; col.len()]);
            for v in &f.values {
                acc = boolean::or_kleene(&acc, &one(v, CompareOp::In)?)?;
            }
            Ok(acc)
        }
        op => one(&f.values[0], op),
    }
}

/// Sends what the IPC writer produced since the last flush.
struct ChunkSink<'a> {
    tx: Sender<'a>,
    writer: &'a mut StreamWriter<Vec<u8>>,
}

impl ChunkSink<'_> {
    /// Encodes and sends one batch; false when the receiver is gone.
    fn write(&mut self, batch: &RecordBatch) -> Result<bool> {
        self.writer.write(batch)?;
        self.flush()
    }

    /// False when the receiver is gone (the client cancelled).
    fn flush(&mut self) -> Result<bool> {
        let buf = std::mem::take(self.writer.get_mut());
        if buf.is_empty() {
            return Ok(true);
        }
        Ok(self.tx.send(Bytes::from(buf)))
    }
}
