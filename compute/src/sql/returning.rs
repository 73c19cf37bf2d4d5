//! `RETURNING` of INSERT, UPDATE and DELETE: the clause's items are
//! evaluated by DataFusion over the rows the statement wrote (or deleted),
//! shaped like the target table and registered under its name (and alias),
//! so `*`, `t.col` and expressions all work. With no rows the same plan
//! gives the result's columns, which Describe needs.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::SelectItem;
use ebb_proto::storage::TableDef;

use super::dml::quote;
use crate::error::{ComputeError, Result};
use crate::table::table_schema;

/// Rows shaped like `def`'s table: columns of `written` by name (cast to the
/// column's type), constant defaults for the others, NULL where neither.
pub fn table_rows(def: &TableDef, written: &RecordBatch) -> Result<RecordBatch> {
    let schema = Arc::new(table_schema(def));
    let n = written.num_rows();
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(def.columns.len());
    for (col, field) in def.columns.iter().zip(schema.fields()) {
        let array = match (written.column_by_name(&col.name), &col.default_literal) {
            (Some(a), _) => cast_to(a, field.data_type(), &col.name)?,
            (None, Some(lit)) => cast_to(&(Arc::new(StringArray::from(vec![lit.as_str(); n])) as ArrayRef), field.data_type(), &col.name)?,
            (None, None) => new_null_array(field.data_type(), n),
        };
        arrays.push(array);
    }
    // Nullability as declared may not hold for rows that were rejected
    // later by storage; the evaluation schema allows NULL everywhere.
    let relaxed = Arc::new(arrow::datatypes::Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(relaxed, arrays).map_err(|e| ComputeError::Internal(e.to_string()))
}

fn cast_to(a: &ArrayRef, to: &arrow::datatypes::DataType, column: &str) -> Result<ArrayRef> {
    cast(a, to).map_err(|e| ComputeError::invalid("22P02", format!("column \"{column}\": {e}")))
}

/// Evaluates `items` over `rows` (table-shaped, see [`table_rows`]).
pub async fn evaluate(
    def: &TableDef,
    alias: Option<&str>,
    items: &[SelectItem],
    rows: RecordBatch,
    params: &[ScalarValue],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let ctx = crate::session::postgres_context(SessionConfig::new());
    let table = MemTable::try_new(rows.schema(), vec![vec![rows]])?;
    ctx.register_table(datafusion::common::TableReference::bare(def.name.as_str()), Arc::new(table))?;
    let list = items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let from = format!("{}{}", quote(&def.name), alias.map(|a| format!(" AS {}", quote(a))).unwrap_or_default());
    let mut df = ctx.sql(&format!("SELECT {list} FROM {from}")).await?;
    if !params.is_empty() {
        df = df.with_param_values(params.to_vec())?;
    }
    let plan = df.logical_plan().clone();
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    Ok(crate::column_names::named_result(&plan, schema, batches)?)
}

/// The result columns of a RETURNING clause (for Describe).
pub async fn schema(def: &TableDef, alias: Option<&str>, items: &[SelectItem]) -> Result<SchemaRef> {
    let empty = table_rows(def, &RecordBatch::new_empty(Arc::new(table_schema(def))))?;
    Ok(evaluate(def, alias, items, empty, &[]).await?.0)
}
