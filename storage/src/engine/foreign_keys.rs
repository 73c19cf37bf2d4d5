//! FOREIGN KEY enforcement, as each write is staged (after its row locks
//! are taken). A row that references another (all its key columns
//! non-NULL, and changed) takes the lock of the referenced row shared and
//! finds it in the newest committed state or the transaction's own writes;
//! the lock, held until the transaction ends, keeps the referenced row from
//! being deleted meanwhile (other references share it). Deleting a row finds no row referencing it in
//! the newest committed state and the transaction's own writes: a
//! transaction adding a reference to it holds its lock, which the delete
//! holds now, so every reference is among those. NO ACTION is checked at
//! once, as RESTRICT is — unless the key is INITIALLY DEFERRED: its checks
//! are recorded and made when the transaction commits, on its rows as they
//! are then (a reference written before the row it references passes). ON
//! DELETE CASCADE and SET NULL write the referencing rows instead, as
//! writes of the same transaction.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;

use super::database::Database;
use super::index_entries::{IndexedColumns, OnDuplicate};
use super::locks::LockMode;
use super::mvcc::{VisibleRows, get_visible, newest_version};
use super::txn::{Pending, PendingKind, Txn};
use crate::catalog::{ForeignKey, Table};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::row::{RowDecoder, encode_row};
use crate::types::{Datum, PgType};

/// Decodes the given columns of a table's rows.
fn decoder(table: &Table, columns: &[usize]) -> RowDecoder {
    RowDecoder::new(columns.iter().map(|&p| table.columns[p].decode()).collect(), 0)
}

/// `d` as a value of key type `to` (`None`: it cannot be one, e.g. an
/// integer out of its range).
fn as_key(d: &Datum, to: &PgType) -> Option<Datum> {
    use crate::types::Phys;
    let int = match d {
        Datum::I16(v) => Some(i64::from(*v)),
        Datum::I32(v) => Some(i64::from(*v)),
        Datum::I64(v) => Some(*v),
        _ => None,
    };
    match (int, to.phys()) {
        (Some(v), Phys::I16) => i16::try_from(v).ok().map(Datum::I16),
        (Some(v), Phys::I32) => i32::try_from(v).ok().map(Datum::I32),
        (Some(v), Phys::I64) => Some(Datum::I64(v)),
        _ => Some(d.clone()),
    }
}

/// The key of the row `values` reference in `parent` (`None`: a NULL
/// among them, or a value no key can hold).
fn referenced_key(parent: &Table, values: &[Datum]) -> Option<Vec<u8>> {
    if values.iter().any(|d| matches!(d, Datum::Null)) {
        return None;
    }
    let mut key = keys::table_prefix(parent.id());
    for (d, &p) in values.iter().zip(&parent.pk) {
        keys::encode_key_datum(&as_key(d, &parent.columns[p].ty)?, &mut key);
    }
    Some(key)
}

fn violation(child: &Table, fk: &ForeignKey) -> StorageError {
    StorageError::ForeignKeyViolation(format!(
        "insert or update on table \"{}\" violates foreign key constraint \"{}\"",
        child.def.name, fk.def.name
    ))
}

/// How deletes of a write treat the keys referencing them.
pub enum Cascade {
    /// As their ON DELETE says; the set: rows the cascades that led to this
    /// write delete (not to be deleted again, which ends a cycle).
    Follow(BTreeSet<Vec<u8>>),
    /// The write is an UPDATE's delete of rows whose key it changes: no
    /// cascade; a deleted key must be unreferenced (or back) at commit.
    KeyUpdate,
}

/// A row a transaction deletes: its table, key and value as it was.
#[derive(Clone, Copy)]
struct Deleted<'a> {
    parent: &'a Table,
    key: &'a [u8],
    row: &'a [u8],
}

/// Cascades nested deeper than this fail (PostgreSQL: 54001).
const MAX_CASCADE_DEPTH: usize = 64;

/// A check of an INITIALLY DEFERRED key, made when its transaction commits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeferredCheck {
    /// The row of `table` under `key` must find what it references through
    /// its foreign key `fk` (if it still does reference something).
    References { table: u32, fk: String, key: Vec<u8> },
    /// The deleted row of `parent` under `key` (`row`, as it was) must not
    /// be referenced through foreign key `fk` of `child` (unless a row of
    /// that key is back by then).
    Unreferenced { parent: u32, key: Vec<u8>, row: Vec<u8>, child: u32, fk: String },
}

/// What ON DELETE does to the rows that reference a deleted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDelete {
    Cascade,
    SetNull,
    /// Their key columns take the columns' constant defaults (compute
    /// refuses the action on columns whose default is an expression).
    SetDefault,
}

impl Database {
    /// Checks the foreign keys a staged write of `table` touches: rows it
    /// writes that reference others, rows it deletes that others reference
    /// (a deferred key's checks are recorded for the commit instead).
    pub(crate) async fn check_foreign_keys(
        &self,
        txn: &mut Txn,
        savepoint: u64,
        table: &Table,
        staged: &BTreeMap<Vec<u8>, Pending>,
        cascade: &Cascade,
    ) -> Result<()> {
        let referencing = self.catalog_read().referencing(table.id());
        if table.foreign_keys.is_empty() && referencing.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&Vec<u8>, &Pending)> = staged.iter().filter(|(k, _)| keys::table_of(k) == Some(table.id())).collect();
        for fk in &table.foreign_keys {
            if fk.def.deferred {
                let written = rows.iter().filter(|(_, p)| p.value.is_some());
                txn.deferred_checks.extend(written.map(|(key, _)| DeferredCheck::References { table: table.id(), fk: fk.def.name.clone(), key: key.to_vec() }));
            } else {
                self.check_references(txn, table, fk, &rows, staged, true).await?;
            }
        }
        for (child, i) in &referencing {
            let fk = &child.foreign_keys[*i];
            for (key, p) in &rows {
                if p.kind != PendingKind::Delete {
                    continue;
                }
                let Some(row) = self.current_row(txn, &BTreeMap::new(), key)? else { continue };
                let defer = || DeferredCheck::Unreferenced { parent: table.id(), key: key.to_vec(), row: row.clone(), child: child.id(), fk: fk.def.name.clone() };
                match (cascade, fk.def.on_delete.as_str()) {
                    // An UPDATE's new rows follow: the key may be back at commit.
                    (Cascade::KeyUpdate, _) => txn.deferred_checks.push(defer()),
                    (Cascade::Follow(cascading), action @ ("c" | "n" | "d")) => {
                        let rows = self.referencing_rows(txn, &Deleted { parent: table, key, row: &row }, child, fk, staged, false)?;
                        let action = match action {
                            "c" => OnDelete::Cascade,
                            "n" => OnDelete::SetNull,
                            _ => OnDelete::SetDefault,
                        };
                        self.cascade(txn, savepoint, child, fk, rows, action, staged, cascading).await?;
                    }
                    _ if fk.def.deferred => txn.deferred_checks.push(defer()),
                    _ => self.check_unreferenced(txn, &Deleted { parent: table, key, row: &row }, child, fk, staged)?,
                }
            }
        }
        Ok(())
    }

    /// Makes the deferred checks of a committing transaction, on its rows
    /// as they are now (a deleted row's key values as they were recorded).
    pub(crate) async fn check_deferred(&self, txn: &mut Txn) -> Result<()> {
        let mut checks = std::mem::take(&mut txn.deferred_checks);
        checks.sort();
        checks.dedup();
        let none = BTreeMap::new();
        // The rows of one key together: their references are locked in key order.
        let mut references: BTreeMap<(u32, String), Vec<Vec<u8>>> = BTreeMap::new();
        for check in checks {
            match check {
                DeferredCheck::References { table, fk, key } => references.entry((table, fk)).or_default().push(key),
                DeferredCheck::Unreferenced { parent, key, row, child, fk } => {
                    if txn.writes.get(&key).is_none_or(|p| p.kind != PendingKind::Delete) {
                        // A row of that key is back, or the delete was
                        // rolled back to a savepoint.
                        continue;
                    }
                    let (Some(parent), Some(child)) = (self.catalog_read().get_by_id(parent), self.catalog_read().get_by_id(child)) else { continue };
                    // Dropped since: nothing to check.
                    let Some(fk) = child.foreign_keys.iter().find(|f| f.def.name == fk) else { continue };
                    self.check_unreferenced(txn, &Deleted { parent: &parent, key: &key, row: &row }, &child, fk, &none)?;
                }
            }
        }
        for ((table, fk), keys) in references {
            let Some(child) = self.catalog_read().get_by_id(table) else { continue };
            let Some(fk) = child.foreign_keys.iter().find(|f| f.def.name == fk).cloned() else { continue };
            let rows: Vec<(Vec<u8>, Pending)> = keys.into_iter().filter_map(|k| txn.writes.get(&k).cloned().map(|p| (k, p))).collect();
            let rows: Vec<(&Vec<u8>, &Pending)> = rows.iter().map(|(k, p)| (k, p)).collect();
            self.check_references(txn, &child, &fk, &rows, &none, false).await?;
        }
        Ok(())
    }

    /// Rows of `rows` that reference through `fk` must find what they
    /// reference (locking it).
    async fn check_references(
        &self,
        txn: &mut Txn,
        child: &Table,
        fk: &ForeignKey,
        rows: &[(&Vec<u8>, &Pending)],
        staged: &BTreeMap<Vec<u8>, Pending>,
        changed_only: bool,
    ) -> Result<()> {
        let parent = self
            .catalog_read()
            .get_by_id(fk.def.ref_table)
            .ok_or_else(|| StorageError::UnknownTable(format!("(table id {}, referenced by {})", fk.def.ref_table, fk.def.name)))?;
        let values = decoder(child, &fk.columns);
        // In key order, so two transactions lock the rows they reference
        // in the same order.
        let mut wanted: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        for (key, p) in rows {
            let Some(new) = &p.value else { continue };
            let new = values.decode_datums(new)?;
            if new.iter().any(|d| matches!(d, Datum::Null)) {
                continue;
            }
            // An update that keeps the values needs no check (PostgreSQL's).
            if changed_only {
                let before = match txn.writes.get(*key) {
                    Some(p) => p.value.clone(),
                    None => get_visible(&self.db, key, txn.snapshot_ts())?,
                };
                if before.map(|b| values.decode_datums(&b)).transpose()?.is_some_and(|old| old == new) {
                    continue;
                }
            }
            wanted.insert(referenced_key(&parent, &new).ok_or_else(|| violation(child, fk))?);
        }
        if wanted.is_empty() {
            return Ok(());
        }
        self.take_locks_in(txn, wanted.iter().map(Vec::as_slice), LockMode::Shared).await?;
        for target in &wanted {
            let own = staged.get(target).or_else(|| txn.writes.get(target));
            let exists = match own {
                Some(p) => p.kind != PendingKind::Delete,
                None => match newest_version(&self.db, target)? {
                    Some((ts, true)) => {
                        // Committed after the snapshot: not acknowledged
                        // before it is durable.
                        if ts > txn.snapshot_ts() {
                            self.wait_durable(ts).await?;
                        }
                        true
                    }
                    _ => false,
                },
            };
            if !exists {
                return Err(violation(child, fk));
            }
        }
        Ok(())
    }

    /// The deleted row must not be referenced through `fk` of `child`.
    fn check_unreferenced(&self, txn: &Txn, deleted: &Deleted<'_>, child: &Table, fk: &ForeignKey, staged: &BTreeMap<Vec<u8>, Pending>) -> Result<()> {
        if self.referencing_rows(txn, deleted, child, fk, staged, true)?.is_empty() {
            return Ok(());
        }
        Err(StorageError::ForeignKeyViolation(format!(
            "update or delete on table \"{}\" violates foreign key constraint \"{}\" on table \"{}\"",
            deleted.parent.def.name, fk.def.name, child.def.name
        )))
    }

    /// The rows of `child` that reference the deleted row through `fk`:
    /// their keys and values, in the newest committed state and the
    /// transaction's own writes (`staged` first). `first`: the first one
    /// found is enough.
    fn referencing_rows(
        &self,
        txn: &Txn,
        deleted: &Deleted<'_>,
        child: &Table,
        fk: &ForeignKey,
        staged: &BTreeMap<Vec<u8>, Pending>,
        first: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Deleted { parent, key, row } = *deleted;
        let key_values = decoder(parent, &parent.pk).decode_datums(row)?;
        let values = decoder(child, &fk.columns);
        let refers = |row: &[u8]| -> Result<bool> {
            let got = values.decode_datums(row)?;
            Ok(got.iter().zip(&key_values).zip(&parent.pk).all(|((g, k), &p)| as_key(g, &parent.columns[p].ty).as_ref() == Some(k)))
        };
        // Where to look: an index whose leading columns are the key's, else every row.
        let ids: Vec<u32> = fk.columns.iter().map(|&p| child.columns[p].id).collect();
        let index = child.indexes.iter().find(|ix| ix.def.column_ids.starts_with(&ids));
        let child_prefix = keys::table_prefix(child.id());
        let (start, end) = match index {
            Some(ix) => {
                let mut start = keys::table_prefix(ix.def.id);
                for (k, &p) in key_values.iter().zip(&fk.columns) {
                    keys::encode_index_datum(&as_key(k, &child.columns[p].ty).unwrap_or(Datum::Null), &mut start);
                }
                let end = keys::prefix_successor(&start);
                (start, end)
            }
            None => (child_prefix.clone(), keys::prefix_successor(&child_prefix)),
        };
        // Candidate rows: committed ones (newest state) and the transaction's own.
        let mut candidates: Vec<Vec<u8>> = Vec::new();
        let row_key = |entry_key: &[u8], value: &[u8]| -> Vec<u8> {
            if index.is_some() {
                let mut k = child_prefix.clone();
                k.extend_from_slice(value);
                k
            } else {
                entry_key.to_vec()
            }
        };
        let mut committed = VisibleRows::new(&self.db, u64::MAX, &start, end.clone());
        while committed.advance()? {
            candidates.push(row_key(committed.user_key(), committed.value()));
        }
        let range = |writes: &BTreeMap<Vec<u8>, Pending>| -> Vec<Vec<u8>> {
            let in_range = match &end {
                Some(e) => writes.range(start.clone()..e.clone()),
                None => writes.range(start.clone()..),
            };
            in_range.filter_map(|(k, p)| p.value.as_ref().map(|v| row_key(k, v))).collect()
        };
        candidates.extend(range(staged));
        candidates.extend(range(&txn.writes));
        candidates.sort();
        candidates.dedup();
        let mut found = Vec::new();
        for candidate in candidates {
            if candidate == key {
                // A row referencing itself goes with it.
                continue;
            }
            let row = match staged.get(&candidate).or_else(|| txn.writes.get(&candidate)) {
                Some(p) => p.value.clone(),
                None => get_visible(&self.db, &candidate, u64::MAX)?,
            };
            if let Some(row) = row
                && refers(&row)?
            {
                found.push((candidate, row));
                if first {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// ON DELETE CASCADE / SET NULL / SET DEFAULT: deletes `rows` of
    /// `child` (or sets their key columns to NULL or to the columns'
    /// constant defaults) in the transaction, as writes of their own
    /// (locked, checked — a default must reference a row that exists —,
    /// their index entries and their own foreign keys followed).
    /// `parent_staged`: the write that deleted the referenced rows, and
    /// `cascading`, the rows the cascades that led here delete:
    /// none of those is deleted again (a cycle of cascading keys ends).
    #[allow(clippy::too_many_arguments)]
    async fn cascade(
        &self,
        txn: &mut Txn,
        savepoint: u64,
        child: &Arc<Table>,
        fk: &ForeignKey,
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        action: OnDelete,
        parent_staged: &BTreeMap<Vec<u8>, Pending>,
        cascading: &BTreeSet<Vec<u8>>,
    ) -> Result<()> {
        if txn.cascade_depth >= MAX_CASCADE_DEPTH {
            return Err(StorageError::CascadeTooDeep(MAX_CASCADE_DEPTH));
        }
        // SET NULL / SET DEFAULT: the key columns' new values, the same for every row.
        let replacement: Option<Vec<Datum>> = match action {
            OnDelete::Cascade => None,
            OnDelete::SetNull => Some(vec![Datum::Null; fk.columns.len()]),
            OnDelete::SetDefault => Some(fk.columns.iter().map(|&p| child.columns[p].default.clone()).collect()),
        };
        // Checked before the first row written (rows the delete itself
        // removes are not written, as PostgreSQL's trigger finds them gone).
        let mut checked = false;
        let indexed = IndexedColumns::of(child);
        let all = RowDecoder::new(child.columns.iter().map(|c| c.decode()).collect(), 0);
        let mut staged = BTreeMap::new();
        for (key, row) in rows {
            if cascading.contains(&key) || parent_staged.get(&key).is_some_and(|p| p.kind == PendingKind::Delete) {
                continue;
            }
            let new = if let Some(values) = &replacement {
                if !checked {
                    self.check_replacement(child, fk, action, values, parent_staged, cascading)?;
                    checked = true;
                }
                let mut datums = all.decode_datums(&row)?;
                for (&p, v) in fk.columns.iter().zip(values) {
                    datums[p] = v.clone();
                }
                let pairs: Vec<(u32, &Datum)> = child.columns.iter().map(|c| c.id).zip(datums.iter()).collect();
                let mut value = Vec::with_capacity(row.len());
                encode_row(&pairs, child.max_column_id(), &mut value);
                Some(value)
            } else {
                None
            };
            if let Some(indexed) = &indexed {
                self.stage_index_entries(txn, &mut staged, indexed, &key, new.as_deref(), OnDuplicate::Fail)?;
            }
            let kind = if action == OnDelete::Cascade { PendingKind::Delete } else { PendingKind::Put };
            staged.insert(key, Pending { kind, value: new });
        }
        if staged.is_empty() {
            return Ok(());
        }
        self.metrics.cascaded_rows.inc_by(staged.len() as u64);
        let mut chain = cascading.clone();
        chain.extend(parent_staged.iter().filter(|(_, p)| p.kind == PendingKind::Delete).map(|(k, _)| k.clone()));
        // What the cascade buffers is taken back if the write that caused it fails.
        txn.journal.get_or_insert_with(BTreeMap::new);
        txn.cascade_depth += 1;
        let admitted = self.admit(txn, savepoint, child, staged, &Cascade::Follow(chain)).await;
        txn.cascade_depth -= 1;
        admitted
    }

    /// SET NULL / SET DEFAULT: the key columns' new `values` must fit NOT
    /// NULL columns (23502), and defaults must not name a row this very
    /// delete (or a cascade leading to it) removes — the rows set to them
    /// would reference nothing (23503, as in PostgreSQL). Whether they name
    /// a row at all is checked as for any write.
    fn check_replacement(
        &self,
        child: &Table,
        fk: &ForeignKey,
        action: OnDelete,
        values: &[Datum],
        parent_staged: &BTreeMap<Vec<u8>, Pending>,
        cascading: &BTreeSet<Vec<u8>>,
    ) -> Result<()> {
        if let Some((c, _)) = fk.columns.iter().zip(values).map(|(&p, v)| (&child.columns[p], v)).find(|(c, v)| c.not_null && **v == Datum::Null) {
            return Err(StorageError::NotNull { table: child.def.name.clone(), column: c.name.clone() });
        }
        if action != OnDelete::SetDefault || values.iter().any(|d| matches!(d, Datum::Null)) {
            return Ok(());
        }
        let Some(parent) = self.catalog_read().get_by_id(fk.def.ref_table) else { return Ok(()) };
        let target = referenced_key(&parent, values).ok_or_else(|| violation(child, fk))?;
        let deleted = parent_staged.get(&target).is_some_and(|p| p.kind == PendingKind::Delete) || cascading.contains(&target);
        if deleted { Err(violation(child, fk)) } else { Ok(()) }
    }

    /// ADD FOREIGN KEY: every row of `child` (its new definition, holding
    /// the key at `fk`) must reference a row that exists. Called by the
    /// committer with every earlier commit applied.
    pub(crate) fn check_existing_references(&self, child: &Table, fk: usize) -> Result<()> {
        let fk = &child.foreign_keys[fk];
        let parent = self
            .catalog_read()
            .get_by_id(fk.def.ref_table)
            .ok_or_else(|| StorageError::UnknownTable(format!("(table id {})", fk.def.ref_table)))?;
        let values = decoder(child, &fk.columns);
        let mut rows = self.newest_rows(child);
        while rows.advance()? {
            let got = values.decode_datums(rows.value())?;
            if got.iter().any(|d| matches!(d, Datum::Null)) {
                continue;
            }
            let found = match referenced_key(&parent, &got) {
                Some(k) => newest_version(&self.db, &k)?.is_some_and(|(_, live)| live),
                None => false,
            };
            if !found {
                return Err(violation(child, fk));
            }
        }
        Ok(())
    }
}
