//! Secondary-index maintenance. Every staged row change stages the index
//! entries it removes and adds in the same transaction buffer, so entries
//! commit, conflict, lock and roll back (to a savepoint) with their rows;
//! unique entries are checked here and again by first-committer-wins.
//! A new index is filled by the committer (`fill_index`), once every
//! earlier commit is applied and before any later one is validated.

use std::collections::BTreeMap;

use super::database::Database;
use super::mvcc::get_visible;
use super::txn::{Pending, PendingKind, Txn};
use crate::catalog::{Index, Table};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::row::{DecodeColumn, RowDecoder};
use crate::types::Datum;

/// One index entry of one row.
struct Entry {
    key: Vec<u8>,
    /// A unique index without NULLs: the key alone identifies the values,
    /// so another row holding it is a duplicate.
    exclusive: bool,
    /// Position of the index in the table's `indexes`.
    index: usize,
}

/// What a unique index already holding a row's new values means.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnDuplicate {
    Fail,
    /// INSERT … ON CONFLICT DO NOTHING: the row is skipped.
    Skip,
}

/// Decodes the indexed columns of a table's rows into index entries.
pub(crate) struct IndexedColumns {
    indexes: Vec<Index>,
    decoder: RowDecoder,
    /// Per index, positions of its columns among the decoded ones.
    slots: Vec<Vec<usize>>,
    /// Length of the table's key prefix (what precedes a row's primary key).
    prefix_len: usize,
}

impl IndexedColumns {
    /// For the indexes of `table` (none: nothing to maintain).
    pub(crate) fn of(table: &Table) -> Option<Self> {
        (!table.indexes.is_empty()).then(|| Self::for_indexes(table, &table.indexes))
    }

    fn for_indexes(table: &Table, indexes: &[Index]) -> Self {
        let mut decode: Vec<DecodeColumn> = Vec::new();
        let mut positions: Vec<usize> = Vec::new();
        let slots = indexes
            .iter()
            .map(|ix| {
                ix.columns
                    .iter()
                    .map(|&p| match positions.iter().position(|q| *q == p) {
                        Some(s) => s,
                        None => {
                            let c = &table.columns[p];
                            decode.push(c.decode());
                            positions.push(p);
                            positions.len() - 1
                        }
                    })
                    .collect()
            })
            .collect();
        Self {
            indexes: indexes.to_vec(),
            decoder: RowDecoder::new(decode, 0),
            slots,
            prefix_len: keys::table_prefix(table.id()).len(),
        }
    }

    /// The row's primary key: its key without the table prefix.
    fn row_suffix<'k>(&self, row_key: &'k [u8]) -> &'k [u8] {
        &row_key[self.prefix_len..]
    }

    /// The entries of the row stored under `row_key` with value `row`.
    fn entries(&self, row_key: &[u8], row: &[u8]) -> Result<Vec<Entry>> {
        let datums = self.decoder.decode_datums(row)?;
        let suffix = self.row_suffix(row_key);
        Ok(self
            .slots
            .iter()
            .zip(&self.indexes)
            .enumerate()
            .map(|(i, (slots, ix))| {
                let values: Vec<&Datum> = slots.iter().map(|&s| &datums[s]).collect();
                let exclusive = ix.def.unique && !values.iter().any(|d| matches!(d, Datum::Null));
                Entry { key: keys::index_entry_key(ix.def.id, &values, ix.def.unique, suffix), exclusive, index: i }
            })
            .collect())
    }
}

impl Database {
    /// The row under `key` as `txn` sees it: its own writes (this request's
    /// `staged` first), then its snapshot.
    pub(crate) fn current_row(&self, txn: &Txn, staged: &BTreeMap<Vec<u8>, Pending>, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match staged.get(key).or_else(|| txn.writes.get(key)) {
            Some(p) => Ok(p.value.clone()),
            None => get_visible(&self.db, key, txn.snapshot_ts()),
        }
    }

    /// Stages the index entries that change when the row under `row_key`
    /// becomes `new` (`None`: deleted); call it before staging the row.
    /// Returns false, staging nothing, when a unique index already holds
    /// the new values for another row and `on_duplicate` is `Skip`.
    pub(crate) fn stage_index_entries(
        &self,
        txn: &Txn,
        staged: &mut BTreeMap<Vec<u8>, Pending>,
        indexed: &IndexedColumns,
        row_key: &[u8],
        new: Option<&[u8]>,
        on_duplicate: OnDuplicate,
    ) -> Result<bool> {
        let old = match self.current_row(txn, staged, row_key)? {
            Some(row) => indexed.entries(row_key, &row)?,
            None => Vec::new(),
        };
        let new = match new {
            Some(row) => indexed.entries(row_key, row)?,
            None => Vec::new(),
        };
        // Entries the row keeps are neither removed nor added.
        let added: Vec<&Entry> = new.iter().filter(|e| !old.iter().any(|o| o.key == e.key)).collect();
        let removed: Vec<&Entry> = old.iter().filter(|o| !new.iter().any(|e| e.key == o.key)).collect();
        for e in added.iter().filter(|e| e.exclusive) {
            let holder = staged.get(&e.key).or_else(|| txn.writes.get(&e.key)).map(|p| p.kind != PendingKind::Delete);
            let taken = match holder {
                Some(live) => live,
                None => get_visible(&self.db, &e.key, txn.snapshot_ts())?.is_some(),
            };
            if taken {
                return match on_duplicate {
                    OnDuplicate::Skip => Ok(false),
                    OnDuplicate::Fail => Err(StorageError::UniqueViolation(indexed.indexes[e.index].def.name.clone())),
                };
            }
        }
        for e in removed {
            staged.insert(e.key.clone(), Pending { kind: PendingKind::Delete, value: None });
        }
        let suffix = indexed.row_suffix(row_key).to_vec();
        for e in added {
            // An exclusive entry must not exist when it commits; any other
            // is the row's own.
            let kind = if e.exclusive { PendingKind::Insert } else { PendingKind::Put };
            let kind = match staged.get(&e.key).or_else(|| txn.writes.get(&e.key)) {
                Some(p) if p.kind == PendingKind::Delete => PendingKind::Put,
                _ => kind,
            };
            staged.insert(e.key.clone(), Pending { kind, value: Some(suffix.clone()) });
        }
        Ok(true)
    }

    /// Writes for the entries of index `index` of `table` over every row
    /// in the local copy's newest state. The committer calls it for a
    /// CREATE INDEX commit once every earlier commit is applied (and no
    /// later one is validated before it is), so no row is missed; a
    /// duplicate in a unique index fails it.
    pub(crate) fn fill_index(&self, table: &Table, index: &Index) -> Result<Vec<(Vec<u8>, Pending)>> {
        let mut filling = IndexFill::new(table, std::slice::from_ref(index));
        let mut rows = self.newest_rows(table);
        while rows.advance()? {
            filling.add(rows.user_key(), rows.value())?;
        }
        Ok(filling.entries.into_iter().collect())
    }
}

/// The entries of indexes over rows given one by one (a new index, or a
/// table's indexes when ADD PRIMARY KEY gives its rows new keys).
pub(crate) struct IndexFill {
    indexed: IndexedColumns,
    /// The entries so far, by key.
    pub entries: BTreeMap<Vec<u8>, Pending>,
}

impl IndexFill {
    /// For `indexes` of `table` (the definition the rows' keys are of).
    pub(crate) fn new(table: &Table, indexes: &[Index]) -> Self {
        Self { indexed: IndexedColumns::for_indexes(table, indexes), entries: BTreeMap::new() }
    }

    /// Adds the entries of the row under `row_key`; a unique index that
    /// would hold its values twice fails.
    pub(crate) fn add(&mut self, row_key: &[u8], row: &[u8]) -> Result<()> {
        let suffix = self.indexed.row_suffix(row_key).to_vec();
        for e in self.indexed.entries(row_key, row)? {
            let kind = if e.exclusive { PendingKind::Insert } else { PendingKind::Put };
            if self.entries.insert(e.key, Pending { kind, value: Some(suffix.clone()) }).is_some() {
                return Err(StorageError::DuplicatesForUniqueIndex(self.indexed.indexes[e.index].def.name.clone()));
            }
        }
        Ok(())
    }
}
