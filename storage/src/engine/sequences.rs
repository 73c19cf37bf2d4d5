//! Sequences: CREATE SEQUENCE, and what SERIAL and IDENTITY columns draw
//! their values from.
//!
//! A sequence is a relation of one row (`last_value`, `log_cnt`,
//! `is_called`, as in PostgreSQL) whose definition carries its options.
//! Only [`Database::next_values`] and [`Database::set_value`] change it, each
//! outside any transaction: a value once taken is never handed out again,
//! whether the transaction that took it commits or not, as in PostgreSQL.
//!
//! Like PostgreSQL, which WAL-logs a sequence 32 values ahead, this node
//! makes the row durable only every [`LOG_AHEAD`] values: a commit records
//! that values up to 32 past the last one handed out may be in use, and
//! the values up to there are then answered from memory. After a crash or
//! a takeover the sequence goes on after the recorded value, skipping at
//! most 32 that were never handed out; it never repeats one. The single
//! writer per database makes the values of one sequence strictly follow
//! each other across all computes (PostgreSQL's `CACHE 1`); `SELECT
//! last_value FROM seq` shows the recorded value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ebb_proto::storage::{ColumnDef, ColumnType, SequenceChange, SequenceOptions, TableDef, TypeKind};

use super::database::Database;
use super::mvcc::get_visible;
use super::txn::{Pending, PendingKind};
use crate::catalog::{self, Table};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::row::{DecodeColumn, RowDecoder, encode_row};
use crate::types::Datum;

/// Values a durable record of the row covers beyond the last handed out.
pub const LOG_AHEAD: u64 = 32;
/// Values one request may take at most (an INSERT's rows, a COPY batch).
pub const MAX_VALUES_PER_REQUEST: u64 = 1 << 24;

/// The row's key: sequences are tables without a primary key holding the
/// row id 1.
fn row_key(table_id: u32) -> Vec<u8> {
    let mut key = keys::table_prefix(table_id);
    key.extend_from_slice(&1u64.to_be_bytes());
    key
}

/// Where each sequence in use on this node stands, by table id.
#[derive(Default)]
pub(crate) struct SequenceStates(Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Option<State>>>>>);

impl SequenceStates {
    fn get(&self, table_id: u32) -> Arc<tokio::sync::Mutex<Option<State>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(table_id).or_default().clone()
    }
}

/// A sequence's position: the last value handed out (or, not `called`,
/// the next one), and how many values after it the durable row covers.
#[derive(Debug, Clone, Copy)]
struct State {
    last: i64,
    called: bool,
    covered: u64,
}

/// The value after `last` (`last` itself if not `called`), `None` at the
/// sequence's bound when it does not cycle.
fn step(o: &SequenceOptions, last: i64, called: bool) -> Option<i64> {
    if !called {
        return Some(last);
    }
    match last.checked_add(o.increment) {
        Some(n) if n >= o.min_value && n <= o.max_value => Some(n),
        _ if !o.cycle => None,
        _ if o.increment > 0 => Some(o.min_value),
        _ => Some(o.max_value),
    }
}

/// The fixed columns of a sequence relation.
fn sequence_columns() -> Vec<ColumnDef> {
    let column = |name: &str, kind: TypeKind| ColumnDef {
        name: name.into(),
        r#type: Some(ColumnType { kind: kind as i32, length: 0, scale: 0 }),
        not_null: true,
        ..Default::default()
    };
    vec![column("last_value", TypeKind::Bigint), column("log_cnt", TypeKind::Bigint), column("is_called", TypeKind::Boolean)]
}

/// Checks a sequence's options as PostgreSQL's CREATE SEQUENCE does.
fn check_options(o: &SequenceOptions) -> Result<()> {
    let invalid = |m: String| Err(StorageError::InvalidParameter(m));
    if o.increment == 0 {
        return invalid("INCREMENT must not be zero".into());
    }
    if o.min_value >= o.max_value {
        return invalid(format!("MINVALUE ({}) must be less than MAXVALUE ({})", o.min_value, o.max_value));
    }
    if o.start < o.min_value {
        return invalid(format!("START value ({}) cannot be less than MINVALUE ({})", o.start, o.min_value));
    }
    if o.start > o.max_value {
        return invalid(format!("START value ({}) cannot be greater than MAXVALUE ({})", o.start, o.max_value));
    }
    if o.cache < 1 {
        return invalid(format!("CACHE ({}) must be greater than zero", o.cache));
    }
    Ok(())
}

/// The stored row for a position.
fn encode_state(table: &Table, last: i64, called: bool) -> Vec<u8> {
    let datums = [Datum::I64(last), Datum::I64(0), Datum::Bool(called)];
    let pairs: Vec<(u32, &Datum)> = table.columns.iter().map(|c| c.id).zip(datums.iter()).collect();
    let mut value = Vec::with_capacity(32);
    encode_row(&pairs, table.max_column_id(), &mut value);
    value
}

impl Database {
    /// Creates a sequence; `Ok((def, false))` if the name was taken and
    /// `if_not_exists`.
    pub async fn create_sequence(
        &self,
        schema: &str,
        name: &str,
        options: &SequenceOptions,
        if_not_exists: bool,
    ) -> Result<(TableDef, bool)> {
        check_options(options)?;
        if options.owned_by_table != 0 && self.catalog_read().get_by_id(options.owned_by_table).is_none() {
            return Err(StorageError::InvalidDefinition(format!("the table owning sequence \"{name}\" does not exist")));
        }
        self.create_relation(schema, name, if_not_exists, |id, schema| {
            let mut def = catalog::new_table_def(id, schema, name, &sequence_columns(), &[], &[])?;
            def.sequence = Some(options.clone());
            let table = Table::from_def(def.clone())?;
            let row = encode_state(&table, options.start, false);
            Ok((def, vec![(row_key(id), row)]))
        })
        .await
    }

    /// The sequence `schema.name`, or 42809 if that is a table.
    fn sequence(&self, schema: &str, name: &str) -> Result<(Arc<Table>, SequenceOptions)> {
        let table = self.table(if schema.is_empty() { catalog::DEFAULT_SCHEMA } else { schema }, name)?;
        let options = table
            .def
            .sequence
            .clone()
            .ok_or_else(|| StorageError::WrongObjectType(format!("\"{name}\" is not a sequence")))?;
        Ok((table, options))
    }

    /// Takes the next `count` values of a sequence (nextval), in order.
    pub async fn next_values(&self, schema: &str, name: &str, count: u64) -> Result<Vec<i64>> {
        self.check_owned()?;
        if count > MAX_VALUES_PER_REQUEST {
            return Err(StorageError::InvalidRequest(format!("{count} sequence values asked for at once; at most {MAX_VALUES_PER_REQUEST}")));
        }
        let id = self.sequence(schema, name)?.0.id();
        let cell = self.sequences.get(id);
        let mut cell = cell.lock().await;
        // Read under the lock: an ALTER SEQUENCE may have changed them.
        let (table, o) = self.sequence(schema, name)?;
        if table.id() != id {
            return Err(StorageError::UnknownTable(format!("sequence \"{name}\" was dropped and created again meanwhile")));
        }
        let state = match *cell {
            Some(s) => s,
            None => self.load_state(&table)?,
        };
        let mut values = Vec::with_capacity(count as usize);
        let (mut last, mut called) = (state.last, state.called);
        for _ in 0..count {
            let Some(v) = step(&o, last, called) else {
                let bound = if o.increment > 0 { ("maximum", o.max_value) } else { ("minimum", o.min_value) };
                return Err(StorageError::SequenceLimit(format!(
                    "nextval: reached {} value of sequence \"{name}\" ({})",
                    bound.0, bound.1
                )));
            };
            values.push(v);
            (last, called) = (v, true);
        }
        let covered = if count <= state.covered {
            state.covered - count
        } else {
            // Record a position LOG_AHEAD values further (or at the bound).
            let (mut ahead, mut covered) = (last, 0);
            while covered < LOG_AHEAD {
                match step(&o, ahead, true) {
                    Some(v) => (ahead, covered) = (v, covered + 1),
                    None => break,
                }
            }
            self.record_state(&table, ahead, true).await?;
            covered
        };
        *cell = Some(State { last, called, covered });
        self.metrics.sequence_values.inc_by(count);
        Ok(values)
    }

    /// Sets a sequence's position (setval): the next value is `value` if
    /// not `is_called`, the one after it otherwise.
    pub async fn set_value(&self, schema: &str, name: &str, value: i64, is_called: bool) -> Result<()> {
        self.check_owned()?;
        let (table, o) = self.sequence(schema, name)?;
        if value < o.min_value || value > o.max_value {
            return Err(StorageError::OutOfRange(format!(
                "setval: value {value} is out of bounds for sequence \"{name}\" ({}..{})",
                o.min_value, o.max_value
            )));
        }
        let cell = self.sequences.get(table.id());
        let mut cell = cell.lock().await;
        self.record_state(&table, value, is_called).await?;
        *cell = Some(State { last: value, called: is_called, covered: 0 });
        Ok(())
    }

    /// ALTER SEQUENCE's options (the owner is kept): checked as CREATE
    /// SEQUENCE's are, with the position — `change.restart` if given, else
    /// the current one — within the new bounds; the sequence goes on from
    /// that position with the new options.
    pub(crate) async fn alter_sequence_options(&self, table: &Table, change: &SequenceChange) -> Result<TableDef> {
        let given = change.options.clone().ok_or_else(|| StorageError::InvalidRequest("ALTER SEQUENCE without options".into()))?;
        // Refuses a table (42809); the new definition then has options.
        let def = catalog::set_sequence_options(table, given)?;
        let options = def.sequence.clone().unwrap_or_default();
        check_options(&options)?;
        let cell = self.sequences.get(table.id());
        let mut cell = cell.lock().await;
        let position = match change.restart {
            Some(v) => v,
            None => match *cell {
                Some(s) => s.last,
                None => self.load_state(table)?.last,
            },
        };
        let what = if change.restart.is_some() { "RESTART" } else { "the current" };
        if position < options.min_value {
            return Err(StorageError::InvalidParameter(format!("{what} value ({position}) cannot be less than MINVALUE ({})", options.min_value)));
        }
        if position > options.max_value {
            return Err(StorageError::InvalidParameter(format!("{what} value ({position}) cannot be greater than MAXVALUE ({})", options.max_value)));
        }
        let mut txn = self.ddl_txn();
        super::ddl::put_def(&mut txn, &def);
        self.commit_txn(txn).await?;
        // The durable record covered values in steps of the old increment:
        // record the exact position this node knows (no value past it was
        // handed out, this node being the database's only writer).
        let known = match (change.restart, *cell) {
            (Some(v), _) => Some((v, false)),
            (None, Some(s)) => Some((s.last, s.called)),
            // Not used on this node yet: the durable record is its position.
            (None, None) => None,
        };
        *cell = None;
        if let Some((last, called)) = known {
            self.record_state(table, last, called).await?;
            *cell = Some(State { last, called, covered: 0 });
        }
        tracing::info!(database = %self.name, sequence = %def.name, "altered sequence");
        Ok(def)
    }

    /// Reads the sequence's durable position: values up to the recorded
    /// one may have been handed out before this node took over.
    fn load_state(&self, table: &Table) -> Result<State> {
        let guard = self.snapshots.acquire();
        let row = get_visible(&self.db, &row_key(table.id()), guard.ts)?
            .ok_or_else(|| StorageError::Corrupt(format!("sequence \"{}\" has no row", table.def.name)))?;
        let columns = table.columns.iter().map(|c| DecodeColumn { id: c.id, ty: c.ty.clone(), missing: Datum::Null }).collect();
        match RowDecoder::new(columns, 0).decode_datums(&row)?.as_slice() {
            [Datum::I64(last), _, Datum::Bool(called)] => Ok(State { last: *last, called: *called, covered: 0 }),
            other => Err(StorageError::Corrupt(format!("sequence \"{}\" row {other:?}", table.def.name))),
        }
    }

    /// Makes a position durable (a commit of the sequence's row alone).
    async fn record_state(&self, table: &Table, last: i64, called: bool) -> Result<()> {
        let mut txn = self.ddl_txn();
        let value = encode_state(table, last, called);
        txn.writes.insert(row_key(table.id()), Pending { kind: PendingKind::Put, value: Some(value) });
        self.commit_txn(txn).await?;
        Ok(())
    }
}
