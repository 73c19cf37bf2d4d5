//! CREATE / DROP / ALTER TABLE. Definitions are rows of the catalog table,
//! committed through the normal commit path, so DDL is durable, replicated
//! through the WAL and versioned like data. DDL on one database is serialised.

use std::sync::Arc;

use ebb_proto::storage::alter_column::Change;
use ebb_proto::storage::{AlterTableRequest, CheckDef, ColumnDef, Isolation, TableDef, alter_table_request::Action};
use prost::Message;

use super::commit::Prepare;
use super::database::Database;
use super::index_entries::IndexFill;
use super::mvcc::VisibleRows;
use super::txn::{Pending, PendingKind, Txn};
use crate::catalog::{self, DEFAULT_SCHEMA, Table};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::row::{DecodeColumn, RowDecoder};
use crate::types::Datum;

fn schema_or_default(s: &str) -> &str {
    if s.is_empty() { DEFAULT_SCHEMA } else { s }
}

impl Database {
    /// Creates a table; `Ok((def, false))` if it existed and `if_not_exists`.
    pub async fn create_table(
        &self,
        schema: &str,
        name: &str,
        columns: &[ColumnDef],
        primary_key: &[String],
        if_not_exists: bool,
    ) -> Result<(TableDef, bool)> {
        self.create_table_with_checks(schema, name, columns, primary_key, &[], if_not_exists).await
    }

    /// As [`Database::create_table`], with CHECK constraints.
    pub async fn create_table_with_checks(
        &self,
        schema: &str,
        name: &str,
        columns: &[ColumnDef],
        primary_key: &[String],
        checks: &[CheckDef],
        if_not_exists: bool,
    ) -> Result<(TableDef, bool)> {
        self.create_relation(schema, name, if_not_exists, |id, schema| {
            let def = catalog::new_table_def(id, schema, name, columns, primary_key, checks)?;
            Ok((def, Vec::new()))
        })
        .await
    }

    /// Creates a table or sequence whose definition (and first rows, as
    /// key–value pairs) `build` makes from the new id and the schema.
    pub(crate) async fn create_relation(
        &self,
        schema: &str,
        name: &str,
        if_not_exists: bool,
        build: impl FnOnce(u32, &str) -> Result<(TableDef, Vec<(Vec<u8>, Vec<u8>)>)>,
    ) -> Result<(TableDef, bool)> {
        self.check_owned()?;
        let schema = schema_or_default(schema);
        let _ddl = self.ddl_lock.lock().await;
        if let Ok(t) = self.table(schema, name) {
            if if_not_exists {
                return Ok((t.def.clone(), false));
            }
            return Err(StorageError::TableExists(name.into()));
        }
        if self.catalog_read().relation_exists(schema, name) {
            // An index of that name.
            return Err(StorageError::TableExists(name.into()));
        }
        let id = self.catalog_read().next_table_id;
        let (def, rows) = build(id, schema)?;
        let mut txn = self.ddl_txn();
        put_def(&mut txn, &def);
        for (key, value) in rows {
            txn.writes.insert(key, Pending { kind: PendingKind::Insert, value: Some(value) });
        }
        txn.writes.insert(keys::catalog_key(0), Pending { kind: PendingKind::Put, value: Some((id + 1).to_be_bytes().to_vec()) });
        self.commit_txn(txn).await?;
        tracing::info!(database = %self.name, relation = name, id, sequence = def.sequence.is_some(), "created relation");
        Ok((def, true))
    }

    /// Drops a table and its rows, with the sequences it owns (or, with
    /// `sequence`, a sequence); `Ok(false)` if absent and `if_exists`.
    pub async fn drop_table(&self, schema: &str, name: &str, if_exists: bool, sequence: bool) -> Result<bool> {
        self.check_owned()?;
        let _ddl = self.ddl_lock.lock().await;
        let table = match self.table(schema_or_default(schema), name) {
            Ok(t) => t,
            Err(_) if if_exists => return Ok(false),
            Err(e) => return Err(e),
        };
        if table.def.sequence.is_some() != sequence {
            let kind = if sequence { "sequence" } else { "table" };
            return Err(StorageError::WrongObjectType(format!("\"{name}\" is not a {kind}")));
        }
        if let Some((child, i)) = self.catalog_read().referencing(table.id()).into_iter().find(|(c, _)| c.id() != table.id()) {
            return Err(StorageError::DependentObjects(format!(
                "cannot drop table {name} because constraint {} on table {} depends on it (drop the constraint first)",
                child.foreign_keys[i].def.name, child.def.name
            )));
        }
        let owned: Vec<u32> = self
            .catalog_read()
            .tables()
            .iter()
            .filter(|t| t.def.sequence.as_ref().is_some_and(|s| s.owned_by_table == table.id()))
            .map(|t| t.id())
            .collect();
        let mut txn = self.ddl_txn();
        for id in std::iter::once(table.id()).chain(owned) {
            txn.writes.insert(keys::catalog_key(id), Pending { kind: PendingKind::Delete, value: None });
            txn.dropped_tables.push(id);
        }
        // The entries of its indexes go with it.
        txn.dropped_tables.extend(table.indexes.iter().map(|ix| ix.def.id));
        self.commit_txn(txn).await?;
        tracing::info!(database = %self.name, relation = name, "dropped relation");
        Ok(true)
    }

    /// Applies one ALTER TABLE action.
    pub async fn alter_table(&self, req: &AlterTableRequest) -> Result<TableDef> {
        self.check_owned()?;
        let _ddl = self.ddl_lock.lock().await;
        let table = self.table(schema_or_default(&req.schema), &req.name)?;
        let action = req.action.as_ref().ok_or_else(|| StorageError::InvalidRequest("ALTER TABLE without an action".into()))?;
        let for_sequences = matches!(action, Action::RenameTable(_) | Action::SetSequenceOwner(_) | Action::SetSequenceOptions(_));
        if table.def.sequence.is_some() && !for_sequences {
            return Err(StorageError::WrongObjectType(format!("\"{}\" is a sequence", req.name)));
        }
        // A column whose rows the committer checks against the new definition.
        let mut check_column = None;
        let def = match action {
            Action::AddPrimaryKey(pk) => return self.add_primary_key(&table, &pk.columns).await,
            Action::AddColumn(c) => {
                if c.not_null && c.default_literal.is_none() && self.has_rows(&table)? {
                    return Err(StorageError::NotNull { table: table.def.name.clone(), column: c.name.clone() });
                }
                catalog::add_column(&table, c)?
            }
            Action::DropColumn(c) => catalog::drop_column(&table, c)?,
            Action::AlterColumn(a) => match &a.change {
                Some(Change::SetDefault(d)) => catalog::set_default(&table, &a.column, d.literal.clone(), d.expr.clone())?,
                None => catalog::set_default(&table, &a.column, None, None)?,
                Some(Change::NotNull(true)) => {
                    check_column = Some(a.column.clone());
                    catalog::set_not_null(&table, &a.column, true)?
                }
                Some(Change::NotNull(false)) => catalog::set_not_null(&table, &a.column, false)?,
                Some(Change::SetType(t)) => {
                    let (def, narrows) = catalog::set_type(&table, &a.column, t)?;
                    if narrows {
                        check_column = Some(a.column.clone());
                    }
                    def
                }
                Some(Change::AddIdentity(i)) => {
                    check_column = Some(a.column.clone());
                    catalog::add_identity(&table, &a.column, &i.identity, &i.default_expr)?
                }
            },
            Action::RenameColumn(r) => catalog::rename_column(&table, &r.from, &r.to)?,
            Action::AddCheck(c) => catalog::add_check(&table, c)?,
            Action::DropCheck(name) => catalog::drop_check(&table, name)?,
            Action::AddForeignKey(fk) => return self.add_foreign_key(&table, fk).await,
            Action::DropForeignKey(name) => catalog::drop_foreign_key(&table, name)?,
            Action::SetSequenceOwner(owner) => {
                let owning = (owner.table != 0).then(|| self.catalog_read().get_by_id(owner.table));
                if let Some(t) = owning {
                    let t = t.ok_or_else(|| StorageError::UnknownTable(format!("(table id {})", owner.table)))?;
                    t.column_index(&owner.column)?;
                }
                catalog::set_sequence_owner(&table, owner.table, &owner.column)?
            }
            Action::SetSequenceOptions(change) => return self.alter_sequence_options(&table, change).await,
            Action::RenameTable(to) => {
                if self.catalog_read().relation_exists(&table.def.schema, to) {
                    return Err(StorageError::TableExists(to.clone()));
                }
                catalog::rename_table(&table, to)?
            }
        };
        let mut txn = self.ddl_txn();
        put_def(&mut txn, &def);
        if let Some(column) = check_column {
            txn.prepare = Some(Prepare::CheckColumn(Arc::new(Table::from_def(def.clone())?), column));
        }
        // Indexes the change dropped (DROP COLUMN) lose their entries.
        let kept: Vec<u32> = def.indexes.iter().map(|ix| ix.id).collect();
        txn.dropped_tables.extend(table.indexes.iter().map(|ix| ix.def.id).filter(|id| !kept.contains(id)));
        self.commit_txn(txn).await?;
        Ok(def)
    }

    /// Re-keys every row of a table without a primary key under a new
    /// table id, in one commit. Transactions that write the table while
    /// this runs may lose those writes: like PostgreSQL (which takes an
    /// exclusive lock), run it when the table is not in use.
    async fn add_primary_key(&self, table: &Arc<Table>, columns: &[String]) -> Result<TableDef> {
        let new_id = self.catalog_read().next_table_id;
        let def = catalog::add_primary_key(table, columns, new_id)?;
        let key_columns: Vec<DecodeColumn> = columns
            .iter()
            .map(|k| {
                let c = &table.columns[table.column_index(k)?];
                Ok(c.decode())
            })
            .collect::<Result<_>>()?;
        let decoder = RowDecoder::new(key_columns, 0);
        let rekeyed = Table::from_def(def.clone())?;
        let mut indexes = IndexFill::new(&rekeyed, &rekeyed.indexes);
        let mut txn = self.ddl_txn();
        let start = keys::table_prefix(table.id());
        let end = keys::prefix_successor(&start);
        let new_prefix = keys::table_prefix(new_id);
        let mut rows = VisibleRows::new(&self.db, txn.snapshot_ts(), &start, end);
        while rows.advance()? {
            let mut key = new_prefix.clone();
            for (d, name) in decoder.decode_datums(rows.value())?.iter().zip(columns) {
                if matches!(d, Datum::Null) {
                    return Err(StorageError::NotNull { table: table.def.name.clone(), column: name.clone() });
                }
                keys::encode_key_datum(d, &mut key);
            }
            indexes.add(&key, rows.value())?;
            let pending = Pending { kind: PendingKind::Insert, value: Some(rows.value().to_vec()) };
            if txn.writes.insert(key, pending).is_some() {
                return Err(StorageError::UniqueViolation(format!("{}_pkey", table.def.name)));
            }
        }
        let moved = txn.writes.len();
        txn.writes.extend(indexes.entries);
        txn.writes.insert(keys::catalog_key(table.id()), Pending { kind: PendingKind::Delete, value: None });
        put_def(&mut txn, &def);
        let next_id = new_id + 1 + def.indexes.len() as u32;
        txn.writes.insert(keys::catalog_key(0), Pending { kind: PendingKind::Put, value: Some(next_id.to_be_bytes().to_vec()) });
        txn.dropped_tables.push(table.id());
        txn.dropped_tables.extend(table.indexes.iter().map(|ix| ix.def.id));
        // The sequences it owns follow it to its new id.
        for seq in self.catalog_read().tables() {
            if let Some(opts) = seq.def.sequence.as_ref().filter(|o| o.owned_by_table == table.id()) {
                let mut def = seq.def.clone();
                def.sequence = Some(ebb_proto::storage::SequenceOptions { owned_by_table: new_id, ..opts.clone() });
                put_def(&mut txn, &def);
            }
        }
        self.commit_txn(txn).await?;
        tracing::info!(database = %self.name, table = %def.name, rows = moved, "added primary key");
        Ok(def)
    }

    /// ADD FOREIGN KEY: the referencing table's new definition, its rows
    /// checked by the committer in the same commit; the referenced table's
    /// definition is bumped too, so a delete from it staged before fails to
    /// commit (it was not checked against the new key).
    async fn add_foreign_key(&self, child: &Arc<Table>, fk: &ebb_proto::storage::ForeignKeyDef) -> Result<TableDef> {
        let parent = if fk.ref_table == child.id() {
            child.clone()
        } else {
            self.catalog_read()
                .get_by_id(fk.ref_table)
                .ok_or_else(|| StorageError::UnknownTable(format!("(table id {})", fk.ref_table)))?
        };
        let def = catalog::add_foreign_key(child, fk, &parent)?;
        let new = Arc::new(Table::from_def(def.clone())?);
        let mut txn = self.ddl_txn();
        put_def(&mut txn, &def);
        if parent.id() != child.id() {
            let mut bumped = parent.def.clone();
            bumped.version += 1;
            put_def(&mut txn, &bumped);
        }
        txn.prepare = Some(Prepare::CheckForeignKey(new, def.foreign_keys.len() - 1));
        self.commit_txn(txn).await?;
        tracing::info!(database = %self.name, table = %def.name, constraint = %fk.name, "added foreign key");
        Ok(def)
    }

    pub(crate) fn ddl_txn(&self) -> Txn {
        self.new_txn(self.txns.next_id(), Isolation::Snapshot, self.cfg.txn_idle_timeout)
    }

    /// Every row of `table` (its new definition) must fit column `column`:
    /// NOT NULL, and a type's length. The committer calls it for SET NOT
    /// NULL, ADD … IDENTITY and a narrowing ALTER COLUMN … TYPE, with every
    /// earlier commit applied.
    pub(crate) fn check_column(&self, table: &Table, column: &str) -> Result<()> {
        let c = &table.columns[table.column_index(column)?];
        let decoder = RowDecoder::new(vec![c.decode()], 0);
        let mut rows = self.newest_rows(table);
        while rows.advance()? {
            match decoder.decode_datums(rows.value())?.first() {
                Some(Datum::Null) if c.not_null => {
                    return Err(StorageError::ContainsNulls { table: table.def.name.clone(), column: column.into() });
                }
                Some(Datum::Text(s)) => {
                    c.ty.check_text(s)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The rows of `table` in the local copy's newest state (for checks the
    /// committer makes with every earlier commit applied).
    pub(crate) fn newest_rows(&self, table: &Table) -> VisibleRows<'_> {
        let start = keys::table_prefix(table.id());
        let end = keys::prefix_successor(&start);
        VisibleRows::new(&self.db, u64::MAX, &start, end)
    }

    fn has_rows(&self, table: &Arc<Table>) -> Result<bool> {
        let start = keys::table_prefix(table.id());
        let end = keys::prefix_successor(&start);
        let guard = self.snapshots.acquire();
        let mut rows = VisibleRows::new(&self.db, guard.ts, &start, end);
        rows.advance()
    }
}

pub(crate) fn put_def(txn: &mut Txn, def: &TableDef) {
    txn.writes.insert(keys::catalog_key(def.id), Pending { kind: PendingKind::Put, value: Some(def.encode_to_vec()) });
}
