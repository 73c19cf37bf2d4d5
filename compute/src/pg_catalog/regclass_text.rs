//! `<text expression>::regclass`: a relation's name computed by a function
//! (`pg_get_serial_sequence(…)::regclass`, which SQLAlchemy's column
//! reflection casts) turned into its OID.
//!
//! `datafusion-pg-catalog` resolves `'name'::regclass` constants when it
//! rewrites a catalog query and plans other `regclass` casts as int4
//! casts, which fail on a name. So a cast of a function's result is
//! rewritten into `ebb_regclass(…)`, which looks the name up in the
//! session's catalog (digits pass as an OID; NULL stays NULL).

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, Expr, SelectItem, SetExpr, Statement, visit_expressions_mut};

use super::user_relations::{TableOids, relation_by_name, relation_by_oid};
use crate::by_address::ByAddress;
use crate::catalog::DatabaseCatalog;
use crate::error::{ComputeError, check_arguments};

/// The function casts are rewritten into.
const NAME: &str = "ebb_regclass";
/// The function an OID column cast to regclass in a select list becomes.
const NAME_OF: &str = "ebb_regclass_name";

/// Rewrites `CAST(f(…) AS regclass)` into `ebb_regclass(f(…))`, and a
/// column cast to regclass with a name (`conrelid::regclass AS ontable`)
/// in the outermost select list into `ebb_regclass_name(column)`
/// (PostgreSQL prints a regclass as the relation's name: psql's `\d` shows
/// the tables referencing one so).
pub fn rewrite(stmts: &mut [Statement]) {
    for stmt in stmts.iter_mut() {
        if let Statement::Query(q) = stmt
            && let SetExpr::Select(select) = q.body.as_mut()
        {
            for item in select.projection.iter_mut() {
                // Named ones only: an unnamed one would take the column's
                // name, which the select list may hold already.
                let SelectItem::ExprWithAlias { expr, .. } = item else { continue };
                let Expr::Cast { expr: inner, data_type, .. } = expr else { continue };
                if is_regclass(data_type) && matches!(inner.as_ref(), Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    *expr = crate::function_call::call(NAME_OF, vec![(**inner).clone()]);
                }
            }
        }
    }
    for stmt in stmts {
        let _ = visit_expressions_mut(stmt, |expr| {
            if let Expr::Cast { expr: inner, data_type, .. } = expr
                && is_regclass(data_type)
                && matches!(inner.as_ref(), Expr::Function(_))
            {
                *expr = crate::function_call::call(NAME, vec![(**inner).clone()]);
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

fn is_regclass(t: &SqlType) -> bool {
    match t {
        SqlType::Regclass => true,
        SqlType::Custom(name, _) => {
            let name = name.to_string().to_ascii_lowercase();
            name == "regclass" || name == "pg_catalog.regclass"
        }
        _ => false,
    }
}

/// `ebb_regclass(text)` over a session's catalog.
pub fn function(catalog: &Arc<DatabaseCatalog>) -> ScalarUDF {
    ScalarUDF::new_from_impl(RegclassUdf { signature: Signature::any(1, Volatility::Stable), catalog: ByAddress(catalog.clone()) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegclassUdf {
    signature: Signature,
    catalog: ByAddress<DatabaseCatalog>,
}

impl ScalarUDFImpl for RegclassUdf {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        check_arguments(NAME, 1..=1, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = cast(&arrays[0], &DataType::Utf8)?;
        let defs = self.catalog.table_defs();
        let mut out = Vec::with_capacity(names.len());
        for name in names.as_string::<i32>().iter() {
            out.push(match name {
                None => None,
                Some(n) if n.parse::<i32>().is_ok() => n.parse::<i32>().ok(),
                Some(n) => Some(TableOids::of(relation_by_name(&defs, n).map_err(ComputeError::into_datafusion)?.id).table),
            });
        }
        Ok(ColumnarValue::Array(Arc::new(Int32Array::from(out)) as ArrayRef))
    }
}

/// `ebb_regclass_name(oid)` over a session's catalog: a relation's name as
/// PostgreSQL prints a regclass (schema-qualified outside `public`); an OID
/// of no user relation prints as the number.
pub fn name_function(catalog: &Arc<DatabaseCatalog>) -> ScalarUDF {
    ScalarUDF::new_from_impl(RegclassNameUdf { signature: Signature::any(1, Volatility::Stable), catalog: ByAddress(catalog.clone()) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegclassNameUdf {
    signature: Signature,
    catalog: ByAddress<DatabaseCatalog>,
}

impl ScalarUDFImpl for RegclassNameUdf {
    fn name(&self) -> &str {
        NAME_OF
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        check_arguments(NAME_OF, 1..=1, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let oids = cast(&arrays[0], &DataType::Int64)?;
        let defs = self.catalog.table_defs();
        let names: arrow::array::StringArray = oids
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .map(|oid| {
                let oid = oid?;
                Some(match relation_by_oid(&defs, oid) {
                    Some(d) if d.schema == crate::catalog::PUBLIC => d.name.clone(),
                    Some(d) => format!("{}.{}", d.schema, d.name),
                    None => oid.to_string(),
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(names) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_of_function_results_become_lookups() {
        use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
        let sql = "SELECT pg_get_serial_sequence('t', 'id')::regclass, c.oid::regclass, c.oid::regclass AS t, 'x'::text FROM pg_class c";
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        rewrite(&mut stmts);
        let sql = stmts[0].to_string();
        assert!(sql.contains("ebb_regclass(pg_get_serial_sequence('t', 'id'))"), "{sql}");
        assert!(!sql.contains("ebb_regclass(c.oid)"), "{sql}");
        assert!(sql.contains("ebb_regclass_name(c.oid) AS t"), "a named column in the select list prints as a name: {sql}");
    }
}
