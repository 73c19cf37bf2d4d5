//! Transactions as clients drive them: begin, buffered writes (rows arrive as
//! Arrow IPC), commit and rollback.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Int64Type};
use arrow::record_batch::RecordBatch;
use ebb_proto::storage::{Isolation, TableWrite, WriteKind};

use super::database::Database;
use super::foreign_keys::Cascade;
use super::index_entries::{IndexedColumns, OnDuplicate};
use super::locks::LockMode;
use super::mvcc::{get_visible, newest_version};
use super::txn::{Pending, PendingKind, Txn};
use crate::catalog::{Column, ROWID_COLUMN, Table};
use crate::error::{Result, StorageError};
use crate::keys::{self, encode_key_datum};
use crate::row::encode_row;
use crate::types::{Datum, datum_at};

impl Database {
    /// Begins a snapshot-isolation transaction; returns its id and snapshot timestamp.
    pub fn begin(&self, idle_timeout: Option<Duration>) -> Result<(u64, u64)> {
        self.begin_with(idle_timeout, Isolation::Snapshot)
    }

    /// Begins a transaction at `isolation`; returns its id and snapshot timestamp.
    pub fn begin_with(&self, idle_timeout: Option<Duration>, isolation: Isolation) -> Result<(u64, u64)> {
        self.check_owned()?;
        let timeout = idle_timeout.unwrap_or(self.cfg.txn_idle_timeout);
        Ok(self.txns.begin(|id| self.new_txn(id, isolation, timeout)))
    }

    pub(crate) fn new_txn(&self, id: u64, isolation: Isolation, idle_timeout: Duration) -> Txn {
        Txn::new(id, self.snapshots.acquire(), isolation, self.locks.clone(), idle_timeout)
    }

    /// READ COMMITTED: moves the transaction's snapshot to the latest commit
    /// (at the start of a statement); returns the new snapshot timestamp.
    pub async fn refresh_snapshot(&self, txn_id: u64) -> Result<u64> {
        let shared = self.txns.get(txn_id)?;
        let mut txn = shared.lock().await;
        if txn.isolation != Isolation::ReadCommitted {
            return Err(StorageError::InvalidRequest(format!(
                "transaction {txn_id} is not READ COMMITTED; its snapshot cannot move"
            )));
        }
        txn.snapshot = self.snapshots.acquire_at_least(txn.snapshot_ts());
        txn.last_used = Instant::now();
        Ok(txn.snapshot_ts())
    }

    /// The first request of statement `statement` (0: none) of a READ
    /// COMMITTED transaction moves its snapshot to the latest commit (never
    /// back: after a lock wait it may read past the durable ones); the
    /// statement's other requests read the same snapshot.
    pub(crate) fn enter_statement(&self, txn: &mut Txn, statement: u64) {
        if statement > txn.statement {
            txn.statement = statement;
            if txn.isolation == Isolation::ReadCommitted {
                txn.snapshot = self.snapshots.acquire_at_least(txn.snapshot_ts());
            }
        }
    }

    /// Buffers a write in transaction `txn_id`; returns rows affected.
    pub async fn write(&self, txn_id: u64, w: &TableWrite) -> Result<u64> {
        self.write_in_statement(txn_id, 0, 0, w).await
    }

    /// Buffers a write of statement `statement` (see `enter_statement`)
    /// under savepoint `savepoint` (0: none; see [`savepoints`](super::savepoints)).
    pub async fn write_in_statement(&self, txn_id: u64, statement: u64, savepoint: u64, w: &TableWrite) -> Result<u64> {
        self.write_carrying(txn_id, statement, savepoint, &[], w).await
    }

    /// As [`Database::write_in_statement`], after buffering `earlier`:
    /// writes of earlier statements the caller deferred (see
    /// [`Database::stage_carried`]).
    pub async fn write_carrying(&self, txn_id: u64, statement: u64, savepoint: u64, earlier: &[TableWrite], w: &TableWrite) -> Result<u64> {
        self.check_owned()?;
        let shared = self.txns.get(txn_id)?;
        let mut txn = shared.lock().await;
        txn.last_used = Instant::now();
        self.enter_statement(&mut txn, statement);
        self.stage_carried(&mut txn, earlier).await?;
        let n = self.stage_locked(&mut txn, savepoint, w).await;
        txn.last_used = Instant::now();
        n
    }

    /// Buffers writes that earlier statements of `txn` deferred and a later
    /// request carries ("Carried writes" in storage.proto), as if written
    /// with no savepoint open. The client was told those statements
    /// succeeded, so a write that cannot be buffered rolls the whole
    /// transaction back ([`StorageError::EarlierWriteFailed`]): nothing may
    /// retry the request without it.
    pub(crate) async fn stage_carried(&self, txn: &mut Txn, writes: &[TableWrite]) -> Result<()> {
        for w in writes {
            if let Err(e) = self.stage_locked(txn, 0, w).await {
                // The request's own handle keeps the transaction alive until
                // it returns; once removed, its locks go with it.
                let _ = self.txns.take(txn.id);
                self.metrics.carried_write_failures.inc();
                return Err(StorageError::EarlierWriteFailed(Box::new(e)));
            }
        }
        self.metrics.carried_writes.inc_by(writes.len() as u64);
        Ok(())
    }

    /// Stages a write and admits it (see [`Database::admit`]), all or
    /// nothing: if it fails, writes its cascades buffered are taken back.
    async fn stage_locked(&self, txn: &mut Txn, savepoint: u64, w: &TableWrite) -> Result<u64> {
        let (table, staged, affected) = self.stage(txn, w)?;
        let cascade = if w.kind == WriteKind::DeleteForKeyUpdate as i32 { Cascade::KeyUpdate } else { Cascade::Follow(BTreeSet::new()) };
        let deferred = txn.deferred_checks.len();
        let admitted = self.admit(txn, savepoint, &table, staged, &cascade).await;
        match admitted {
            Ok(()) => txn.journal = None,
            Err(_) => {
                txn.take_back_journal();
                txn.deferred_checks.truncate(deferred);
            }
        }
        admitted.map(|()| affected)
    }

    /// Admits staged writes of `table` (rows and index entries) into the
    /// transaction: takes the locks of their keys, checks that none changed
    /// after the snapshot and the foreign keys they touch (cascading, which
    /// admits more writes: hence boxed), then buffers them.
    pub(crate) fn admit<'a>(
        &'a self,
        txn: &'a mut Txn,
        savepoint: u64,
        table: &'a Arc<Table>,
        staged: BTreeMap<Vec<u8>, Pending>,
        cascade: &'a Cascade,
    ) -> futures::future::BoxFuture<'a, Result<()>> {
        Box::pin(self.admit_now(txn, savepoint, table, staged, cascade))
    }

    async fn admit_now(
        &self,
        txn: &mut Txn,
        savepoint: u64,
        table: &Arc<Table>,
        staged: BTreeMap<Vec<u8>, Pending>,
        cascade: &Cascade,
    ) -> Result<()> {
        // Its earlier writes to the table were staged under another
        // definition (an ALTER or CREATE INDEX committed since): they may
        // lack what it added (an index entry, a check).
        if txn.table_versions.get(&table.id()).is_some_and(|v| *v != table.def.version) {
            return Err(StorageError::CatalogChanged(table.def.name.clone()));
        }
        let before = txn.locks.len();
        self.take_locks(txn, staged.keys().map(Vec::as_slice)).await?;
        let mut newer = None;
        for key in txn.locks.taken_since(before) {
            if let Some((ts, live)) = newest_version(&self.db, key)?
                && ts > txn.snapshot_ts()
            {
                let must_be_new = staged.get(key).is_some_and(|p| p.kind == PendingKind::Insert);
                newer = Some((ts, live && must_be_new, key.to_vec()));
                break;
            }
        }
        if let Some((ts, duplicate, key)) = newer {
            // The version may have been applied before its put landed: the
            // error reports a commit only once it is durable, and a statement
            // re-run on a fresh snapshot sees it.
            self.wait_durable(ts).await?;
            return Err(match txn.isolation {
                // A concurrent insert of the same key committed first.
                _ if duplicate => StorageError::UniqueViolation(table.constraint_of(&key)),
                Isolation::ReadCommitted => StorageError::RetryStatement,
                Isolation::Snapshot => {
                    self.metrics.conflicts.inc();
                    StorageError::Conflict
                }
            });
        }
        self.check_foreign_keys(txn, savepoint, table, &staged, cascade).await?;
        txn.buffer(savepoint, staged);
        // Commit checks the table is still at this version: a row staged
        // under an older one may lack an index entry created since.
        txn.table_versions.insert(table.id(), table.def.version);
        Ok(())
    }

    /// Takes the row locks of `keys` for `txn`, waiting for their holders
    /// up to the lock timeout.
    async fn take_locks<'k>(&self, txn: &mut Txn, keys: impl Iterator<Item = &'k [u8]>) -> Result<()> {
        self.take_locks_in(txn, keys, LockMode::Exclusive).await
    }

    /// As `take_locks`, in `mode` (shared: rows foreign keys reference).
    pub(crate) async fn take_locks_in<'k>(&self, txn: &mut Txn, keys: impl Iterator<Item = &'k [u8]>, mode: LockMode) -> Result<()> {
        let started = std::time::Instant::now();
        let waited = self.locks.acquire(txn.id, keys, &mut txn.locks, self.cfg.lock_timeout, mode).await;
        self.metrics.lock_wait_seconds.observe(started.elapsed().as_secs_f64());
        if waited.is_err() {
            self.metrics.lock_timeouts.inc();
        }
        waited
    }

    /// FOR UPDATE of the row at `key` (`ScanRequest.lock_row`): takes its
    /// lock; if a commit after the snapshot changed the row, a READ
    /// COMMITTED transaction's snapshot moves to the latest commit (the
    /// statement reads the newest version, as PostgreSQL re-reads a row it
    /// waited for) and a SNAPSHOT transaction fails with a conflict.
    /// The newest version may be a commit applied before its WAL put landed
    /// (early lock release): the transaction then depends on it, and its
    /// commit waits for it (see `commit.rs`).
    pub(crate) async fn lock_for_update(&self, txn: &mut Txn, key: &[u8]) -> Result<()> {
        self.check_owned()?;
        let before = txn.locks.len();
        self.take_locks(txn, std::iter::once(key)).await?;
        if txn.locks.taken_since(before).is_empty() {
            // Held since an earlier statement, which checked it then.
            return Ok(());
        }
        if let Some((ts, _)) = newest_version(&self.db, key)?
            && ts > txn.snapshot_ts()
        {
            match txn.isolation {
                Isolation::ReadCommitted => txn.snapshot = self.snapshots.acquire_applied(),
                Isolation::Snapshot => {
                    self.metrics.conflicts.inc();
                    return Err(StorageError::Conflict);
                }
            }
        }
        Ok(())
    }

    /// Commits transaction `txn_id` (0 = a transaction of its own) after
    /// buffering `writes`; returns the commit timestamp and rows affected.
    pub async fn commit(&self, txn_id: u64, writes: &[TableWrite]) -> Result<(u64, u64)> {
        self.check_owned()?;
        let mut txn = if txn_id == 0 {
            self.new_txn(self.txns.next_id(), Isolation::Snapshot, self.cfg.txn_idle_timeout)
        } else {
            let shared = self.txns.take(txn_id)?;
            let guard = shared.lock().await;
            drop(guard);
            match std::sync::Arc::try_unwrap(shared) {
                Ok(m) => m.into_inner(),
                Err(_) => {
                    return Err(StorageError::InvalidRequest(format!(
                        "transaction {txn_id} is still in use by another request"
                    )));
                }
            }
        };
        let mut rows = 0;
        for w in writes {
            rows += match self.stage_locked(&mut txn, 0, w).await {
                Ok(n) => n,
                // The transaction was taken out of the open ones above: it
                // ends here either way.
                Err(e) if txn_id != 0 => {
                    self.metrics.carried_write_failures.inc();
                    return Err(StorageError::EarlierWriteFailed(Box::new(e)));
                }
                Err(e) => return Err(e),
            };
        }
        if txn_id != 0 {
            self.metrics.carried_writes.inc_by(writes.len() as u64);
        }
        self.check_deferred(&mut txn).await?;
        let ts = self.commit_txn(txn).await?;
        Ok((ts, rows))
    }

    /// Discards transaction `txn_id`.
    pub fn rollback(&self, txn_id: u64) -> Result<()> {
        self.txns.take(txn_id).map(drop)
    }

    /// Undoes the writes transaction `txn_id` buffered under savepoint
    /// `savepoint` and later ones (ROLLBACK TO SAVEPOINT).
    pub async fn rollback_to_savepoint(&self, txn_id: u64, savepoint: u64) -> Result<()> {
        if savepoint == 0 {
            return Err(StorageError::InvalidRequest("savepoint numbers start at 1".into()));
        }
        let shared = self.txns.get(txn_id)?;
        let mut txn = shared.lock().await;
        txn.last_used = Instant::now();
        txn.rollback_to(savepoint);
        Ok(())
    }

    /// Whether `key` holds a row for `txn` (its own writes first).
    fn exists(&self, txn: &Txn, staged: &BTreeMap<Vec<u8>, Pending>, key: &[u8]) -> Result<bool> {
        if let Some(p) = staged.get(key).or_else(|| txn.writes.get(key)) {
            return Ok(p.kind != PendingKind::Delete);
        }
        Ok(get_visible(&self.db, key, txn.snapshot_ts())?.is_some())
    }

    /// Validates and encodes the rows of one write, returning them (by key)
    /// and the rows affected; nothing is buffered here.
    fn stage(&self, txn: &Txn, w: &TableWrite) -> Result<Staged> {
        let table = self.table_as_expected(&w.schema, &w.table, w.expect.as_ref())?;
        if table.def.sequence.is_some() {
            return Err(StorageError::WrongObjectType(format!("cannot change sequence \"{}\"", w.table)));
        }
        let kind = WriteKind::try_from(w.kind)
            .map_err(|_| StorageError::InvalidRequest(format!("unknown write kind {}", w.kind)))?;
        let batches = ebb_proto::arrow_ipc::decode(&w.arrow_ipc)
            .map_err(|e| StorageError::InvalidRequest(format!("write payload is not a valid Arrow IPC stream: {e}")))?;
        let mut staged = BTreeMap::new();
        let mut affected = 0;
        let indexed = IndexedColumns::of(&table);
        for batch in batches {
            affected += match kind {
                WriteKind::Unspecified => {
                    return Err(StorageError::InvalidRequest("write kind is unspecified".into()));
                }
                WriteKind::Delete | WriteKind::DeleteForKeyUpdate => self.stage_deletes(txn, &mut staged, &table, indexed.as_ref(), &batch)?,
                _ => self.stage_rows(txn, &mut staged, &table, indexed.as_ref(), &batch, kind)?,
            };
        }
        Ok((table, staged, affected))
    }

    fn stage_rows(
        &self,
        txn: &Txn,
        staged: &mut BTreeMap<Vec<u8>, Pending>,
        table: &Table,
        indexed: Option<&IndexedColumns>,
        batch: &RecordBatch,
        kind: WriteKind,
    ) -> Result<u64> {
        let (columns, rowids) = self.input_columns(table, batch)?;
        let prefix = keys::table_prefix(table.id());
        let max_id = table.max_column_id();
        let mut affected = 0;
        let mut datums: Vec<Datum> = Vec::with_capacity(table.columns.len());
        for row in 0..batch.num_rows() {
            datums.clear();
            for (col, input) in table.columns.iter().zip(&columns) {
                let d = match input {
                    Some(a) => a.datum(col, row)?,
                    None => col.default.clone(),
                };
                let d = self.check_value(table, col, d)?;
                datums.push(d);
            }
            let mut key = prefix.clone();
            if table.has_rowid() {
                let id = match &rowids {
                    Some(ids) if !ids.is_null(row) => ids.value(row),
                    _ => self.next_rowid()?,
                };
                key.extend_from_slice(&(id as u64).to_be_bytes());
            } else {
                for &i in &table.pk {
                    encode_key_datum(&datums[i], &mut key);
                }
            }
            let mut value = Vec::with_capacity(64);
            let pairs: Vec<(u32, &Datum)> = table.columns.iter().map(|c| c.id).zip(datums.iter()).collect();
            encode_row(&pairs, max_id, &mut value);
            let pending_kind = match kind {
                WriteKind::Insert => {
                    if !table.has_rowid() && self.exists(txn, staged, &key)? {
                        return Err(StorageError::UniqueViolation(format!("{}_pkey", table.def.name)));
                    }
                    PendingKind::Insert
                }
                WriteKind::InsertOrIgnore => {
                    if self.exists(txn, staged, &key)? {
                        continue;
                    }
                    PendingKind::Insert
                }
                _ => PendingKind::Put,
            };
            // An insert over this transaction's own delete is a replacement.
            let pending_kind = match staged.get(&key).or_else(|| txn.writes.get(&key)) {
                Some(p) if p.kind == PendingKind::Delete && pending_kind == PendingKind::Insert => PendingKind::Put,
                _ => pending_kind,
            };
            if let Some(indexed) = indexed {
                let on_duplicate = if kind == WriteKind::InsertOrIgnore { OnDuplicate::Skip } else { OnDuplicate::Fail };
                if !self.stage_index_entries(txn, staged, indexed, &key, Some(&value), on_duplicate)? {
                    continue;
                }
            }
            staged.insert(key, Pending { kind: pending_kind, value: Some(value) });
            affected += 1;
        }
        Ok(affected)
    }

    fn stage_deletes(
        &self,
        txn: &Txn,
        staged: &mut BTreeMap<Vec<u8>, Pending>,
        table: &Table,
        indexed: Option<&IndexedColumns>,
        batch: &RecordBatch,
    ) -> Result<u64> {
        let prefix = keys::table_prefix(table.id());
        let mut keys_out = Vec::with_capacity(batch.num_rows());
        if table.has_rowid() {
            let ids = rowid_column(batch)?.ok_or_else(|| {
                StorageError::InvalidRequest(format!(
                    "a delete from \"{}\" (no primary key) must carry the {ROWID_COLUMN} column",
                    table.def.name
                ))
            })?;
            for row in 0..batch.num_rows() {
                let mut key = prefix.clone();
                key.extend_from_slice(&(ids.value(row) as u64).to_be_bytes());
                keys_out.push(key);
            }
        } else {
            let (columns, _) = self.input_columns(table, batch)?;
            for row in 0..batch.num_rows() {
                let mut key = prefix.clone();
                for &i in &table.pk {
                    let col = &table.columns[i];
                    let a = columns[i].as_ref().ok_or_else(|| {
                        StorageError::InvalidRequest(format!("a delete must carry key column \"{}\"", col.name))
                    })?;
                    encode_key_datum(&a.datum(col, row)?, &mut key);
                }
                keys_out.push(key);
            }
        }
        let mut affected = 0;
        for key in keys_out {
            if self.exists(txn, staged, &key)? {
                affected += 1;
                if let Some(indexed) = indexed {
                    self.stage_index_entries(txn, staged, indexed, &key, None, OnDuplicate::Fail)?;
                }
                staged.insert(key, Pending { kind: PendingKind::Delete, value: None });
            }
        }
        Ok(affected)
    }

    /// The batch's columns in table order (`None` = not supplied), and the
    /// `_rowid` column if present.
    fn input_columns(&self, table: &Table, batch: &RecordBatch) -> Result<(Vec<Option<Input>>, Option<arrow::array::Int64Array>)> {
        let mut out: Vec<Option<Input>> = (0..table.columns.len()).map(|_| None).collect();
        let mut rowids = None;
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            if field.name() == ROWID_COLUMN {
                rowids = rowid_column(batch)?;
                continue;
            }
            let i = table.column_index(field.name())?;
            out[i] = Some(Input::new(&table.columns[i], array)?);
        }
        Ok((out, rowids))
    }

    /// NOT NULL, length, format and size checks of one value.
    fn check_value(&self, table: &Table, col: &Column, d: Datum) -> Result<Datum> {
        match d {
            Datum::Null if col.not_null => {
                Err(StorageError::NotNull { table: table.def.name.clone(), column: col.name.clone() })
            }
            Datum::Text(s) => {
                if s.len() > self.cfg.max_value_bytes {
                    return Err(StorageError::ValueTooLarge { column: col.name.clone(), size: s.len(), max: self.cfg.max_value_bytes });
                }
                Ok(Datum::Text(col.ty.check_text(&s)?.unwrap_or(s)))
            }
            Datum::Bytes(b) if b.len() > self.cfg.max_value_bytes => {
                Err(StorageError::ValueTooLarge { column: col.name.clone(), size: b.len(), max: self.cfg.max_value_bytes })
            }
            other => Ok(other),
        }
    }
}

/// A staged write: its table, its rows and index entries by key, and the
/// rows it affects.
type Staged = (Arc<Table>, BTreeMap<Vec<u8>, Pending>, u64);

fn rowid_column(batch: &RecordBatch) -> Result<Option<arrow::array::Int64Array>> {
    let Some(a) = batch.column_by_name(ROWID_COLUMN) else { return Ok(None) };
    let cast = cast_with_options(a, &DataType::Int64, &CastOptions { safe: false, ..Default::default() })
        .map_err(|e| StorageError::TypeMismatch(format!("{ROWID_COLUMN} must be a bigint: {e}")))?;
    Ok(Some(cast.as_primitive::<Int64Type>().clone()))
}

/// One input column: already of the column's Arrow type (or cast to it), or
/// text that is parsed with PostgreSQL's input rules.
enum Input {
    Typed(ArrayRef),
    Text(ArrayRef),
}

impl Input {
    fn new(col: &Column, array: &ArrayRef) -> Result<Self> {
        let target = col.ty.arrow_type();
        if array.data_type() == &target {
            return Ok(Self::Typed(array.clone()));
        }
        if matches!(array.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Ok(Self::Text(cast_with_options(array, &DataType::Utf8, &CastOptions::default())?));
        }
        let opts = CastOptions { safe: false, ..Default::default() };
        // A numeric becomes an integer rounded half away from zero, as in
        // PostgreSQL (Arrow truncates; its decimal rescaling rounds).
        let rounded;
        let array = match array.data_type() {
            DataType::Decimal128(p, s) if *s > 0 && target.is_integer() => {
                let whole = DataType::Decimal128((p - s.unsigned_abs() + 1).min(38), 0);
                rounded = cast_with_options(array, &whole, &opts)?;
                &rounded
            }
            _ => array,
        };
        let cast = cast_with_options(array, &target, &opts).map_err(|e| {
            let msg = format!("column \"{}\" is of type {}: {e}", col.name, col.ty.sql_name());
            let numeric = array.data_type().is_numeric() && target.is_numeric();
            if numeric || e.to_string().contains("too large") || e.to_string().contains("overflow") {
                StorageError::NumericOverflow(msg)
            } else {
                StorageError::TypeMismatch(msg)
            }
        })?;
        if let DataType::Decimal128(p, _) = target {
            cast.as_primitive::<arrow::datatypes::Decimal128Type>()
                .validate_decimal_precision(p)
                .map_err(|_| StorageError::NumericOverflow(format!("value out of range for {}", col.ty.sql_name())))?;
        }
        Ok(Self::Typed(cast))
    }

    fn datum(&self, col: &Column, row: usize) -> Result<Datum> {
        match self {
            Self::Typed(a) => Ok(datum_at(a.as_ref(), row, col.ty.phys())),
            Self::Text(a) if a.is_null(row) => Ok(Datum::Null),
            Self::Text(a) => col.ty.parse_text(a.as_string::<i32>().value(row)),
        }
    }
}
