//! A `COPY … FROM STDIN` in progress on a session: rows parsed from the
//! client's CopyData are written to storage in batches, inside the open
//! transaction block or a transaction of the COPY's own that commits at
//! CopyDone. A failure is remembered and reported at CopyDone, as
//! PostgreSQL does, and nothing of a failed COPY is kept.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use ebb_proto::storage::{TableDef, WriteKind};

use super::{Block, Output, Session, WriteTxn};
use crate::error::{ComputeError, Result};
use crate::sql::copy::{CopyFrom, CopyParser, Row};
use crate::sql::ddl::object_name;
use crate::sql::dml::{target, target_columns, with_expression_defaults};
use crate::storage_client::table_write;

/// Rows buffered before they are sent to storage.
const FLUSH_ROWS: usize = 8192;

/// State of one COPY FROM STDIN.
pub struct CopyIn {
    def: TableDef,
    columns: Vec<String>,
    parser: CopyParser,
    rows: Vec<Row>,
    /// The open block's transaction, or one of the COPY's own.
    txn: WriteTxn,
    copied: u64,
    error: Option<ComputeError>,
}

impl Session {
    /// Starts a COPY: checks the table and columns and opens the transaction.
    pub(crate) async fn start_copy(&mut self, from: CopyFrom) -> Result<Output> {
        let (schema, name) = object_name(&from.table)?;
        // The data arrives after this statement returned, too late to re-run
        // it on a reloaded catalog: load the current one now.
        self.catalog().refresh().await?;
        let def = target(self, schema.as_deref(), &name).await?;
        let columns = target_columns(&def, from.columns)?;
        let txn = self.begin_write().await?;
        let n = columns.len();
        self.copy = Some(CopyIn { def, columns, parser: CopyParser::new(from.format), rows: Vec::new(), txn, copied: 0, error: None });
        Ok(Output::CopyIn { columns: n })
    }

    /// True while a COPY is receiving data.
    pub fn copying(&self) -> bool {
        self.copy.is_some()
    }

    /// One CopyData message. Errors are kept for CopyDone.
    pub async fn copy_data(&mut self, data: &[u8]) {
        let Some(mut copy) = self.copy.take() else { return };
        if copy.error.is_none() {
            let mut rows = std::mem::take(&mut copy.rows);
            let result = match copy.parser.feed(data, &mut rows) {
                Ok(()) if rows.len() >= FLUSH_ROWS => self.flush_copy(&mut copy, rows).await,
                Ok(()) => {
                    copy.rows = rows;
                    Ok(())
                }
                Err(e) => Err(e),
            };
            copy.error = result.err();
        }
        self.copy = Some(copy);
    }

    /// CopyDone: writes what is left and commits a COPY of its own.
    pub async fn copy_done(&mut self) -> Result<Output> {
        let Some(mut copy) = self.copy.take() else {
            return Err(ComputeError::invalid("08P01", "CopyDone without a COPY in progress"));
        };
        let result = match copy.error.take() {
            Some(e) => Err(e),
            None => {
                let mut rows = std::mem::take(&mut copy.rows);
                match copy.parser.finish(&mut rows) {
                    Ok(()) => self.flush_copy(&mut copy, rows).await,
                    Err(e) => Err(e),
                }
            }
        };
        let result = self.end_write(copy.txn, result).await;
        if result.is_err() && !copy.txn.own && self.block == Block::Open {
            self.abort_block().await;
        }
        result.map(|()| Output::Command(format!("COPY {}", copy.copied)))
    }

    /// CopyFail from the client: the COPY is abandoned.
    pub async fn copy_fail(&mut self, message: &str) -> ComputeError {
        let e = ComputeError::invalid("57014", format!("COPY from stdin failed: {message}"));
        if let Some(copy) = self.copy.take() {
            let failed: Result<()> = Err(ComputeError::invalid("57014", "COPY abandoned by the client"));
            let _ = self.end_write(copy.txn, failed).await;
            if !copy.txn.own && self.block == Block::Open {
                self.abort_block().await;
            }
        }
        e
    }

    async fn flush_copy(&mut self, copy: &mut CopyIn, rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = text_batch(&copy.columns, &rows, copy.copied)?;
        // Columns left out get their defaults: storage fills constant ones,
        // expressions (`nextval`, `now()`) are evaluated here.
        let batch = with_expression_defaults(self, &copy.def, &copy.columns, batch).await?;
        let w = table_write(&copy.def, WriteKind::Insert, &batch)?;
        let n = self.storage.write(w).await?;
        copy.copied += n;
        Ok(())
    }
}

/// A batch of text columns; storage converts each value to its column's type.
fn text_batch(columns: &[String], rows: &[Row], before: u64) -> Result<RecordBatch> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (i, row) in rows.iter().enumerate() {
        let line = before + i as u64 + 1;
        if row.len() > columns.len() {
            return Err(ComputeError::invalid("22P04", format!("extra data after last expected column (row {line})")));
        }
        if row.len() < columns.len() {
            let missing = &columns[row.len()];
            return Err(ComputeError::invalid("22P04", format!("missing data for column \"{missing}\" (row {line})")));
        }
    }
    for c in 0..columns.len() {
        arrays.push(Arc::new(rows.iter().map(|r| r[c].as_deref()).collect::<StringArray>()));
    }
    let fields: Vec<Field> = columns.iter().map(|c| Field::new(c, DataType::Utf8, true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| ComputeError::Internal(e.to_string()))
}
