//! CREATE INDEX and DROP INDEX. An index is part of its table's definition
//! (`TableDef.indexes`) with a relation id of its own for its entries; a
//! new index's entries are written by the committer in the same commit as
//! the definition (see `index_entries::fill_index`), so the index is
//! complete from the commit that makes it visible. Like PostgreSQL's
//! CREATE INDEX (without CONCURRENTLY), it holds other commits back while
//! it reads the table.

use std::sync::Arc;

use ebb_proto::storage::{CreateIndexRequest, TableDef};

use super::commit::Prepare;
use super::database::Database;
use super::ddl::put_def;
use super::txn::{Pending, PendingKind};
use crate::catalog::{self, DEFAULT_SCHEMA, Table};
use crate::error::{Result, StorageError};
use crate::keys;

impl Database {
    /// Creates an index; `Ok((def, false))` (the table's definition) when
    /// a relation of that name exists and `if_not_exists`.
    pub async fn create_index(&self, req: &CreateIndexRequest) -> Result<(TableDef, bool)> {
        self.check_owned()?;
        let schema = if req.schema.is_empty() { DEFAULT_SCHEMA } else { &req.schema };
        let _ddl = self.ddl_lock.lock().await;
        let table = self.table(schema, &req.table)?;
        if table.def.sequence.is_some() {
            return Err(StorageError::WrongObjectType(format!("\"{}\" is a sequence; it cannot be indexed", req.table)));
        }
        if self.catalog_read().relation_exists(schema, &req.name) {
            if req.if_not_exists {
                return Ok((table.def.clone(), false));
            }
            return Err(StorageError::TableExists(req.name.clone()));
        }
        let id = self.catalog_read().next_table_id;
        let def = catalog::add_index(&table, id, &req.name, &req.columns, req.unique, req.constraint)?;
        let new = Arc::new(Table::from_def(def.clone())?);
        let index = new.index(&req.name)?.clone();
        let mut txn = self.ddl_txn();
        put_def(&mut txn, &def);
        txn.writes.insert(keys::catalog_key(0), Pending { kind: PendingKind::Put, value: Some((id + 1).to_be_bytes().to_vec()) });
        txn.prepare = Some(Prepare::FillIndex(new, index));
        self.commit_txn(txn).await?;
        tracing::info!(database = %self.name, table = %req.table, index = %req.name, id, unique = req.unique, "created index");
        self.metrics.indexes_created.inc();
        Ok((def, true))
    }

    /// Drops an index (with `constraint`, the index of a UNIQUE
    /// constraint, which DROP INDEX refuses); `Ok(false)` if absent and
    /// `if_exists`.
    pub async fn drop_index(&self, schema: &str, name: &str, if_exists: bool, constraint: bool) -> Result<bool> {
        self.check_owned()?;
        let schema = if schema.is_empty() { DEFAULT_SCHEMA } else { schema };
        let _ddl = self.ddl_lock.lock().await;
        let Some(table) = self.catalog_read().index_table(schema, name) else {
            if self.table(schema, name).is_ok() {
                return Err(StorageError::WrongObjectType(format!("\"{name}\" is not an index")));
            }
            if if_exists {
                return Ok(false);
            }
            return Err(StorageError::UnknownIndex(name.into()));
        };
        let index = table.index(name)?;
        if index.def.constraint != constraint {
            return Err(if constraint {
                StorageError::WrongObjectType(format!("\"{name}\" is an index, not a constraint of \"{}\"", table.def.name))
            } else {
                StorageError::DependentObjects(format!(
                    "cannot drop index {name} because constraint {name} on table {} requires it (drop the constraint with ALTER TABLE … DROP CONSTRAINT)",
                    table.def.name
                ))
            });
        }
        let def = catalog::drop_index(&table, name)?;
        let mut txn = self.ddl_txn();
        put_def(&mut txn, &def);
        txn.dropped_tables.push(index.def.id);
        self.commit_txn(txn).await?;
        tracing::info!(database = %self.name, table = %table.def.name, index = name, "dropped index");
        Ok(true)
    }
}
