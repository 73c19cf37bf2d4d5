//! A `COPY … FROM STDIN` in progress on a session: rows parsed from the
//! client's CopyData are written to storage in batches, inside the open
//! transaction block or a transaction of the COPY's own that commits at
//! CopyDone. A failure is remembered and reported at CopyDone, as
//! PostgreSQL does, and nothing of a failed COPY is kept.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use ebb_proto::storage::{TableDef, WriteKind};

use super::{Block, Output, Session};
use crate::error::{ComputeError, Result};
use crate::sql::copy::{CopyFrom, CopyParser, Row};
use crate::sql::ddl::object_name;
use crate::sql::dml::target;
use crate::storage_client::table_write;

/// Rows buffered before they are sent to storage.
const FLUSH_ROWS: usize = 8192;

/// State of one COPY FROM STDIN.
pub struct CopyIn {
    def: TableDef,
    columns: Vec<String>,
    parser: CopyParser,
    rows: Vec<Row>,
    txn: u64,
    /// The COPY began its own transaction (no BEGIN block was open).
    own_txn: bool,
    copied: u64,
    error: Option<ComputeError>,
}

impl Session {
    /// Starts a COPY: checks the table and columns and opens the transaction.
    pub(crate) async fn start_copy(&mut self, from: CopyFrom) -> Result<Output> {
        let (schema, name) = object_name(&from.table)?;
        let def = target(self, schema.as_deref(), &name).await?;
        let columns = if from.columns.is_empty() {
            def.columns.iter().map(|c| c.name.clone()).collect()
        } else {
            for c in &from.columns {
                if !def.columns.iter().any(|d| &d.name == c) {
                    return Err(ComputeError::invalid("42703", format!("column \"{c}\" of relation \"{name}\" does not exist")));
                }
            }
            from.columns
        };
        let (txn, own_txn) = match self.storage.txn() {
            0 => {
                let txn = self.storage.client.begin(self.database(), self.default_isolation()?).await?;
                self.storage.set_txn(txn);
                (txn, true)
            }
            t => (t, false),
        };
        let n = columns.len();
        self.copy = Some(CopyIn { def, columns, parser: CopyParser::new(from.format), rows: Vec::new(), txn, own_txn, copied: 0, error: None });
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
        let result = match (result, copy.own_txn) {
            (Ok(()), true) => {
                self.storage.set_txn(0);
                self.storage.client.commit(self.database(), copy.txn, vec![]).await.map(|_| ())
            }
            (r, _) => r,
        };
        match result {
            Ok(()) => Ok(Output::Command(format!("COPY {}", copy.copied))),
            Err(e) => {
                self.end_failed_copy(&copy).await;
                Err(e)
            }
        }
    }

    /// CopyFail from the client: the COPY is abandoned.
    pub async fn copy_fail(&mut self, message: &str) -> ComputeError {
        if let Some(copy) = self.copy.take() {
            self.end_failed_copy(&copy).await;
        }
        ComputeError::invalid("57014", format!("COPY from stdin failed: {message}"))
    }

    async fn end_failed_copy(&mut self, copy: &CopyIn) {
        if copy.own_txn {
            self.storage.set_txn(0);
            if let Err(e) = self.storage.client.rollback(self.database(), copy.txn).await {
                tracing::debug!(error = %e, "rollback of a failed COPY");
            }
        } else if self.block == Block::Open {
            self.abort_block().await;
        }
    }

    async fn flush_copy(&mut self, copy: &mut CopyIn, rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = text_batch(&copy.columns, &rows, copy.copied)?;
        let w = table_write(&copy.def.schema, &copy.def.name, WriteKind::Insert, &batch)?;
        let n = self.storage.write(copy.txn, w).await?;
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
