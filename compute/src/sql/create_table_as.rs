//! CREATE TABLE … AS SELECT: the query's result columns become the table's
//! (named as a client would see them, typed as PostgreSQL types them), and
//! its rows are written in one commit (dbt builds its table models this way,
//! notebooks their scratch tables).
//! Like other DDL in ebb it commits on its own, also inside a transaction
//! block; if the rows cannot be written, the table is dropped again.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::sql::sqlparser::ast::{CreateTable, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use ebb_proto::pg_types::{PG_TYPE_METADATA, arrow_type};
use ebb_proto::storage::{ColumnDef, ColumnType, CreateTableRequest, TypeKind, WriteKind};

use super::ddl::{self, object_name};
use crate::column_names;
use crate::error::{ComputeError, Result};
use crate::session::{Notice, Output, Session};
use crate::storage_client::table_write;

/// Runs `CREATE TABLE t [(names)] AS query`.
pub async fn create_table_as(s: &mut Session, ct: &CreateTable) -> Result<Output> {
    let Some(query) = &ct.query else { return Err(ComputeError::Internal("CREATE TABLE AS without a query".into())) };
    if ct.temporary {
        return Err(ComputeError::unsupported("temporary tables"));
    }
    if !ct.constraints.is_empty() || !ct.columns.is_empty() {
        // PostgreSQL takes a list of names there, which sqlparser does not parse.
        return Err(ComputeError::unsupported("a column list in CREATE TABLE … AS"));
    }
    let (schema, name) = object_name(&ct.name)?;
    if ct.if_not_exists && s.catalog().table(schema.as_deref(), &name).is_some() {
        return Ok(skipped(s, &name));
    }
    let plan = s.plan(&Statement::Query(query.clone())).await?;
    // The names a client would see (`?column?`, repeated names as written).
    let named = column_names::postgres_schema(&plan, &Arc::new(plan.schema().as_arrow().clone()));
    let (result, batches) = s.run_plan(plan, &[], false).await?;
    let mut columns = Vec::with_capacity(result.fields().len());
    for (field, name) in result.fields().iter().zip(named.fields()) {
        columns.push(ColumnDef { name: name.name().clone(), r#type: Some(column_type_of(field)?), ..Default::default() });
    }
    let rows = concat_batches(&result, &batches)?;
    let rows = typed(&rows, &columns)?;
    let req = CreateTableRequest {
        database: s.storage().database.clone(),
        schema: schema.clone().unwrap_or_default(),
        name: name.clone(),
        columns,
        if_not_exists: ct.if_not_exists,
        ..Default::default()
    };
    let (def, created) = s.storage().client.create_table(req).await?;
    if !created {
        // Made by another session since this one's catalog was loaded.
        return Ok(skipped(s, &name));
    }
    if rows.num_rows() > 0 {
        let written = s.storage().client.commit(&s.storage().database, 0, vec![table_write(&def, WriteKind::Insert, &rows)?]).await;
        if let Err(e) = written {
            s.storage().client.drop_table(&s.storage().database, &def.schema, &def.name, true, false).await?;
            return Err(e);
        }
    }
    Ok(Output::Command(format!("SELECT {}", rows.num_rows())))
}

/// IF NOT EXISTS and the table exists: a notice, nothing done.
fn skipped(s: &mut Session, name: &str) -> Output {
    s.notices.push(Notice::info("42P07", format!("relation \"{name}\" already exists, skipping")));
    Output::Command("CREATE TABLE AS".into())
}

/// The PostgreSQL type of a result column: the one it carries (a table
/// column's `varchar(10)`, `json`, …), else the one its Arrow type stands for.
fn column_type_of(field: &Field) -> Result<ColumnType> {
    if let Some(name) = field.metadata().get(PG_TYPE_METADATA)
        && let Ok(dt) = Parser::new(&PostgreSqlDialect {}).try_with_sql(name).and_then(|mut p| p.parse_data_type())
        && let Ok(t) = ddl::column_type(&dt)
    {
        return Ok(t);
    }
    let ty = |kind: TypeKind, length: u32, scale: u32| ColumnType { kind: kind as i32, length, scale };
    Ok(match field.data_type() {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ty(TypeKind::Smallint, 0, 0),
        DataType::Int32 | DataType::UInt16 => ty(TypeKind::Integer, 0, 0),
        DataType::Int64 | DataType::UInt32 => ty(TypeKind::Bigint, 0, 0),
        DataType::UInt64 => ty(TypeKind::Numeric, 20, 0),
        DataType::Float16 | DataType::Float32 => ty(TypeKind::Real, 0, 0),
        DataType::Float64 => ty(TypeKind::Double, 0, 0),
        DataType::Decimal128(p, s) if *s >= 0 => ty(TypeKind::Numeric, u32::from(*p), *s as u32),
        DataType::Boolean => ty(TypeKind::Boolean, 0, 0),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => ty(TypeKind::Text, 0, 0),
        DataType::Date32 | DataType::Date64 => ty(TypeKind::Date, 0, 0),
        DataType::Timestamp(_, None) => ty(TypeKind::Timestamp, 0, 0),
        DataType::Timestamp(_, Some(_)) => ty(TypeKind::Timestamptz, 0, 0),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => ty(TypeKind::Bytea, 0, 0),
        other => return Err(ComputeError::unsupported(format!("a column of type {other} in CREATE TABLE … AS"))),
    })
}

/// The rows with each column in its table column's Arrow type.
fn typed(rows: &RecordBatch, columns: &[ColumnDef]) -> Result<RecordBatch> {
    let mut fields = Vec::with_capacity(columns.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
    for (c, array) in columns.iter().zip(rows.columns()) {
        let target = arrow_type(&c.r#type.unwrap_or_default());
        arrays.push(if array.data_type() == &target { array.clone() } else { cast(array, &target)? });
        fields.push(Field::new(&c.name, target, true));
    }
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.num_rows()));
    Ok(RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), arrays, &options)?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn result_columns_keep_postgres_types() {
        let tagged = Field::new("v", DataType::Utf8, true).with_metadata(HashMap::from([(PG_TYPE_METADATA.to_string(), "character varying(10)".to_string())]));
        assert_eq!(column_type_of(&tagged).unwrap(), ColumnType { kind: TypeKind::Varchar as i32, length: 10, scale: 0 });
        let sum = Field::new("s", DataType::Decimal128(38, 2), true);
        assert_eq!(column_type_of(&sum).unwrap(), ColumnType { kind: TypeKind::Numeric as i32, length: 38, scale: 2 });
        assert_eq!(column_type_of(&Field::new("n", DataType::Null, true)).unwrap().kind(), TypeKind::Text);
        assert!(column_type_of(&Field::new("l", DataType::new_list(DataType::Int32, true), true)).is_err());
    }
}
