//! Rows the open transaction locked and wrote, kept to answer its own
//! later reads of them without a storage round trip.
//!
//! TPC-B updates an account and then reads its balance back, in one
//! transaction block. The UPDATE locks the row (a FOR UPDATE point read)
//! and writes it whole; while the transaction holds that lock no other
//! transaction can commit a change to the row, so whatever storage would
//! answer to this transaction's next read of it — the latest commit plus
//! the transaction's own writes, under READ COMMITTED, or its snapshot
//! plus its own writes under REPEATABLE READ — is exactly the row as
//! written. Compute keeps the rows of such writes (only ones whose values
//! are known as storage stores them, see `crate::deferrable`) and a point
//! read by the whole primary key in the same transaction is answered from
//! them.
//!
//! The rows are forgotten whenever what storage holds for them could differ:
//! the transaction ends, a savepoint is set or rolled back to, or the
//! transaction writes in any other way (a deferred write forgets its own
//! table's rows; a write sent at once forgets all of them, since a foreign
//! key's cascade reaches other tables). A definition change shows as a new
//! table version and the row is not used.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int16Type, Int32Type, Int64Type};
use ebb_proto::pg_types::arrow_type;
use ebb_proto::row_keys;
use ebb_proto::storage::value::Kind;
use ebb_proto::storage::{TableDef, Value};

use crate::row_cache::{CachedRow, row_key};

/// The rows of the open transaction, by storage key.
#[derive(Default)]
pub struct OwnRows {
    rows: Mutex<HashMap<Vec<u8>, OwnRow>>,
}

struct OwnRow {
    /// The table definition version the row was written under.
    version: u64,
    row: CachedRow,
}

/// At most this many rows are kept (a transaction that updates more
/// reads the others from storage) …
const MAX_ROWS: usize = 1024;
/// … and none of a statement that wrote more than this many: a bulk
/// UPDATE is rarely read back by key, and converting its rows would cost it.
const MAX_ROWS_PER_WRITE: usize = 64;

impl OwnRows {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, OwnRow>> {
        // A panic while inserting or removing leaves a valid map.
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `rows` — whole rows of `def`'s table, named by column, with
    /// the values storage stores — which the transaction holds locked and
    /// has just written. Rows whose key or columns do not match the table
    /// are not kept.
    pub fn remember(&self, def: &TableDef, rows: &RecordBatch) {
        if rows.num_rows() > MAX_ROWS_PER_WRITE || !whole_rows(def, rows) {
            return;
        }
        let mut kept = self.rows();
        for i in 0..rows.num_rows() {
            let (Some(key), Some(row)) = (key_of_row(def, rows, i), CachedRow::from_row(rows, i)) else { continue };
            if kept.len() >= MAX_ROWS && !kept.contains_key(&key) {
                // Not kept; a later row of the batch may be, and must then
                // be updated (an old value would be read back).
                continue;
            }
            kept.insert(key, OwnRow { version: def.version, row });
        }
    }

    /// The row under `key`, if the transaction wrote it under table
    /// definition `version`.
    pub fn get(&self, key: &[u8], version: u64) -> Option<CachedRow> {
        self.rows().get(key).filter(|r| r.version == version).map(|r| r.row.clone())
    }

    /// Forgets the rows of table `id`.
    pub fn forget_table(&self, id: u32) {
        let prefix = row_keys::table_prefix(id);
        self.rows().retain(|key, _| !key.starts_with(&prefix));
    }

    /// Forgets every row.
    pub fn clear(&self) {
        self.rows().clear();
    }
}

/// Whether `rows` holds every column of `def` (and no other), each of the
/// type storage returns it as.
fn whole_rows(def: &TableDef, rows: &RecordBatch) -> bool {
    let schema = rows.schema();
    schema.fields().len() == def.columns.len()
        && def.columns.iter().all(|c| {
            let stored = c.r#type.as_ref().map(arrow_type);
            schema.field_with_name(&c.name).is_ok_and(|f| Some(f.data_type()) == stored.as_ref())
        })
}

/// The storage key of row `i` of `rows` (columns named as in `def`).
fn key_of_row(def: &TableDef, rows: &RecordBatch, i: usize) -> Option<Vec<u8>> {
    let values = def
        .primary_key
        .iter()
        .map(|k| {
            let column = rows.column_by_name(k)?;
            if column.is_null(i) {
                return None;
            }
            let kind = match column.data_type() {
                DataType::Int16 => Kind::Int(column.as_primitive::<Int16Type>().value(i).into()),
                DataType::Int32 => Kind::Int(column.as_primitive::<Int32Type>().value(i).into()),
                DataType::Int64 => Kind::Int(column.as_primitive::<Int64Type>().value(i)),
                DataType::Utf8 => Kind::Text(column.as_string::<i32>().value(i).to_string()),
                _ => return None,
            };
            Some(Value { kind: Some(kind) })
        })
        .collect::<Option<Vec<_>>>()?;
    row_key(def, &values)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use ebb_proto::storage::TypeKind::*;

    use super::*;
    use crate::test_support::table_def;

    fn rows(ids: &[i32], balances: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true), Field::new("balance", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(ids.to_vec())), Arc::new(Int64Array::from(balances.to_vec()))]).expect("batch")
    }

    fn key(def: &TableDef, id: i64) -> Vec<u8> {
        row_key(def, &[Value { kind: Some(Kind::Int(id)) }]).expect("a key")
    }

    fn balance(row: &CachedRow) -> i64 {
        row.column("balance").expect("column").as_primitive::<Int64Type>().value(0)
    }

    #[test]
    fn written_rows_are_found_by_key_and_version() {
        let def = table_def("t", &[("id", Integer), ("balance", Bigint)], &["id"]);
        let own = OwnRows::default();
        own.remember(&def, &rows(&[1, 2], &[10, 20]));
        assert_eq!(own.get(&key(&def, 2), def.version).as_ref().map(balance), Some(20));
        assert!(own.get(&key(&def, 3), def.version).is_none(), "not written");
        assert!(own.get(&key(&def, 1), def.version + 1).is_none(), "written under another definition");
        own.remember(&def, &rows(&[1], &[11]));
        assert_eq!(own.get(&key(&def, 1), def.version).as_ref().map(balance), Some(11), "the newest write");
        own.forget_table(def.id + 1);
        assert!(own.get(&key(&def, 1), def.version).is_some(), "another table's rows were forgotten");
        own.forget_table(def.id);
        assert!(own.get(&key(&def, 1), def.version).is_none());
        own.remember(&def, &rows(&[1], &[11]));
        own.clear();
        assert!(own.get(&key(&def, 1), def.version).is_none());
    }

    #[test]
    fn a_big_write_keeps_nothing_and_the_transaction_keeps_at_most_max_rows() {
        let def = table_def("t", &[("id", Integer), ("balance", Bigint)], &["id"]);
        let own = OwnRows::default();
        let ids = |from: i32, n: usize| (from..from + n as i32).collect::<Vec<_>>();
        let batch = |from: i32, n: usize| rows(&ids(from, n), &vec![5; n]);
        own.remember(&def, &batch(0, MAX_ROWS_PER_WRITE + 1));
        assert!(own.get(&key(&def, 0), def.version).is_none(), "a write of more than {MAX_ROWS_PER_WRITE} rows");
        own.remember(&def, &batch(0, MAX_ROWS_PER_WRITE));
        assert!(own.get(&key(&def, MAX_ROWS_PER_WRITE as i64 - 1), def.version).is_some());
        // Writes of up to 64 rows each fill the transaction's MAX_ROWS…
        for from in (MAX_ROWS_PER_WRITE..MAX_ROWS).step_by(MAX_ROWS_PER_WRITE) {
            own.remember(&def, &batch(from as i32, MAX_ROWS_PER_WRITE));
        }
        assert_eq!(own.rows().len(), MAX_ROWS);
        // … and then only rows already kept are updated.
        own.remember(&def, &rows(&[MAX_ROWS as i32, 3], &[1, 33]));
        assert!(own.get(&key(&def, MAX_ROWS as i64), def.version).is_none(), "over the limit");
        assert_eq!(own.get(&key(&def, 3), def.version).as_ref().map(balance), Some(33));
        assert_eq!(own.rows().len(), MAX_ROWS);
    }

    #[test]
    fn rows_that_are_not_whole_or_typed_as_stored_are_not_kept() {
        let def = table_def("t", &[("id", Integer), ("balance", Bigint), ("note", Text)], &["id"]);
        let own = OwnRows::default();
        own.remember(&def, &rows(&[1], &[10]));
        assert!(own.get(&key(&def, 1), def.version).is_none(), "a column is missing");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("balance", DataType::Int32, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let narrow = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int32Array::from(vec![1])), Arc::new(Int32Array::from(vec![10])), Arc::new(StringArray::from(vec!["x"]))],
        )
        .expect("batch");
        own.remember(&def, &narrow);
        assert!(own.get(&key(&def, 1), def.version).is_none(), "bigint column held as int");
    }
}
