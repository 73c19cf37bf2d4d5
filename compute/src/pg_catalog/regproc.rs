//! `regproc` columns as OIDs.
//!
//! The static export of `pg_type` keeps its function columns (`typinput`,
//! `typoutput`, …) as names, while `'array_in'::regproc` resolves to
//! `pg_proc.oid`: the comparison drivers make (JDBC asks
//! `typinput = 'pg_catalog.array_in'::regproc` to find array types) failed
//! on casting `boolin` to an integer. Here `pg_type` is served with those
//! columns as the OIDs of the named functions (PostgreSQL's `-` is 0), and
//! the lookup `datafusion-pg-catalog` makes for a `regproc` constant finds
//! schema-qualified names too.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::Result as DfResult;
use datafusion::datasource::MemTable;
use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Statement, Value, visit_expressions_mut};
use datafusion_pg_catalog::pg_catalog::PgCatalogStaticTables;

/// The `regproc` columns of `pg_type`.
const REGPROC_COLUMNS: &[&str] = &["typinput", "typoutput", "typreceive", "typsend", "typmodin", "typmodout", "typanalyze", "typsubscript"];

/// `pg_type` with its function columns as OIDs.
pub fn types(statics: &PgCatalogStaticTables) -> DfResult<MemTable> {
    let (schema, batches) = converted_types(statics)?;
    MemTable::try_new(schema, vec![batches])
}

fn converted_types(statics: &PgCatalogStaticTables) -> DfResult<(SchemaRef, Vec<RecordBatch>)> {
    let mut oids: HashMap<String, i32> = HashMap::new();
    for batch in statics.pg_proc.data() {
        let (Some(oid), Some(name)) = (batch.column_by_name("oid"), batch.column_by_name("proname")) else { continue };
        let oid = cast(oid, &DataType::Int32)?;
        let name = cast(name, &DataType::Utf8)?;
        for (oid, name) in oid.as_primitive::<Int32Type>().iter().zip(name.as_string::<i32>().iter()) {
            if let (Some(oid), Some(name)) = (oid, name) {
                let entry = oids.entry(name.to_string()).or_insert(oid);
                *entry = (*entry).min(oid);
            }
        }
    }
    let schema = statics.pg_type.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if REGPROC_COLUMNS.contains(&f.name().as_str()) { Field::new(f.name(), DataType::Int32, true) } else { f.as_ref().clone() })
        .collect();
    let converted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let batches = statics
        .pg_type
        .data()
        .iter()
        .map(|b| {
            let columns = b
                .schema()
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| if REGPROC_COLUMNS.contains(&f.name().as_str()) { as_oids(c, &oids) } else { Ok(c.clone()) })
                .collect::<DfResult<Vec<_>>>()?;
            Ok(RecordBatch::try_new(converted.clone(), columns)?)
        })
        .collect::<DfResult<Vec<_>>>()?;
    Ok((converted, batches))
}

/// Function names as OIDs: `-` (none) is 0, a name without a function NULL.
fn as_oids(names: &ArrayRef, oids: &HashMap<String, i32>) -> DfResult<ArrayRef> {
    let names = cast(names, &DataType::Utf8)?;
    let out: Int32Array = names
        .as_string::<i32>()
        .iter()
        .map(|n| match n {
            Some("-") => Some(0),
            Some(n) => oids.get(n.strip_prefix("pg_catalog.").unwrap_or(n)).copied(),
            None => None,
        })
        .collect();
    Ok(Arc::new(out) as ArrayRef)
}

/// In `proname = 'pg_catalog.f'` (the lookup of a `regproc` constant), the
/// name without its schema: every function ebb lists is in `pg_catalog`.
pub fn unqualify_proc_names(stmts: &mut [Statement]) {
    for stmt in stmts {
        let _ = visit_expressions_mut(stmt, |expr| {
            if let Expr::BinaryOp { left, op: BinaryOperator::Eq, right } = expr
                && names_proname(left)
                && let Expr::Value(v) = right.as_mut()
                && let Value::SingleQuotedString(s) = &mut v.value
                && let Some(bare) = s.strip_prefix("pg_catalog.")
            {
                *s = bare.to_string();
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

fn names_proname(e: &Expr) -> bool {
    match e {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("proname"),
        Expr::CompoundIdentifier(parts) => parts.last().is_some_and(|i| i.value.eq_ignore_ascii_case("proname")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;

    use super::*;

    #[test]
    fn qualified_function_names_are_looked_up_bare() {
        let sql = "SELECT oid FROM pg_proc p WHERE p.proname = 'pg_catalog.array_in' AND x = 'pg_catalog.y'";
        assert_eq!(crate::test_support::rewritten(sql, unqualify_proc_names), "SELECT oid FROM pg_proc p WHERE p.proname = 'array_in' AND x = 'pg_catalog.y'");
    }

    #[test]
    fn type_functions_are_oids() {
        let statics = PgCatalogStaticTables::try_new().expect("static tables");
        let (schema, batches) = converted_types(&statics).expect("pg_type");
        assert_eq!(schema.field_with_name("typinput").expect("typinput").data_type(), &DataType::Int32);
        let function = |typname: &str, column: &str| -> Option<i32> {
            batches.iter().find_map(|b| {
                let names = cast(b.column_by_name("typname")?, &DataType::Utf8).ok()?;
                let row = names.as_string::<i32>().iter().position(|n| n == Some(typname))?;
                let oids = b.column_by_name(column)?.as_primitive::<Int32Type>().clone();
                oids.is_valid(row).then(|| oids.value(row))
            })
        };
        // PostgreSQL 15's OIDs: int4in 42, array_in 750; int4 has no typmodin ('-').
        assert_eq!(function("int4", "typinput"), Some(42));
        assert_eq!(function("_int4", "typinput"), Some(750));
        assert_eq!(function("int4", "typmodin"), Some(0));
    }
}
