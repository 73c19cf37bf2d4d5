//! PostgreSQL's array set-returning functions in a select list, as `unnest`.
//!
//! Drivers number the elements of catalog arrays with them: SQLAlchemy
//! reads primary-key columns in key order with
//! `SELECT unnest(indkey), generate_subscripts(indkey, 1) …`, JDBC with
//! `(information_schema._pg_expandarray(indkey)).n`. DataFusion has neither
//! but zips several `unnest`s in one select list as PostgreSQL does, so:
//!
//! - `generate_subscripts(a, dim)` becomes
//!   `unnest(range(1, coalesce(array_length(a, dim), 0) + 1))` (descending
//!   with a third argument `true`);
//! - `information_schema._pg_expandarray(a)` becomes
//!   `unnest(ebb_expandarray(a))`, whose records have PostgreSQL's fields
//!   `x` (the element) and `n` (its position from 1).

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, ListArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result as DfResult, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::sql::sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The function `_pg_expandarray` becomes the `unnest` of.
pub const EXPANDARRAY: &str = "ebb_expandarray";

/// Whether SQL (in lower case) may call either function.
pub fn may_apply(lower: &str) -> bool {
    lower.contains("generate_subscripts") || lower.contains("_pg_expandarray")
}

/// Rewrites every call of the two functions in `stmts`.
pub fn rewrite(stmts: &mut [Statement]) {
    for stmt in stmts {
        let _ = visit_expressions_mut(stmt, |expr| {
            if let Expr::Function(f) = expr
                && let Some(replacement) = replacement(f)
            {
                *expr = replacement;
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

/// The `unnest(…)` for a call of either function.
fn replacement(f: &Function) -> Option<Expr> {
    let name = f.name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    let FunctionArguments::List(list) = &f.args else { return None };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let sql = match (name.as_str(), args.as_slice()) {
        ("_pg_expandarray", [array]) => format!("unnest({EXPANDARRAY}({array}))"),
        ("generate_subscripts", [array, dim]) => subscripts(array, dim, false),
        ("generate_subscripts", [array, dim, Expr::Value(v)]) => match v.value {
            Value::Boolean(reverse) => subscripts(array, dim, reverse),
            _ => return None,
        },
        _ => return None,
    };
    Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql).ok()?.parse_expr().ok()
}

fn subscripts(array: &Expr, dim: &Expr, reverse: bool) -> String {
    let length = format!("coalesce(CAST(array_length({array}, {dim}) AS BIGINT), 0)");
    let range = if reverse { format!("range({length}, 0, -1)") } else { format!("range(1, {length} + 1)") };
    format!("unnest({range})")
}

/// `ebb_expandarray(list)`: each element with its position, as a list of
/// records `(x, n)`.
pub fn expandarray_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ExpandArray { signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArray {
    signature: Signature,
}

fn record_fields(item: &DataType) -> Fields {
    Fields::from(vec![Field::new("x", item.clone(), true), Field::new("n", DataType::Int32, false)])
}

impl ScalarUDFImpl for ExpandArray {
    fn name(&self) -> &str {
        EXPANDARRAY
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        match args.first() {
            Some(DataType::List(item)) => Ok(DataType::new_list(DataType::Struct(record_fields(item.data_type())), true)),
            other => exec_err!("_pg_expandarray takes an array, not {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(lists) = arrays.first().and_then(|a| a.as_list_opt::<i32>()) else {
            return exec_err!("_pg_expandarray takes an array");
        };
        let values = lists.values().clone();
        // Positions restart at 1 in every list.
        let offsets = lists.value_offsets();
        let positions: Int32Array = (0..lists.len())
            .flat_map(|i| {
                let len = offsets[i + 1] - offsets[i];
                1..=len
            })
            .collect();
        let first = offsets[0] as usize;
        let last = offsets[lists.len()] as usize;
        let values = values.slice(first, last - first);
        let fields = record_fields(values.data_type());
        let records = StructArray::try_new(fields.clone(), vec![values, Arc::new(positions) as ArrayRef], None)?;
        let rebased = OffsetBuffer::new(offsets.iter().map(|o| o - offsets[0]).collect::<Vec<i32>>().into());
        let out = ListArray::try_new(Arc::new(Field::new("item", DataType::Struct(fields), true)), rebased, Arc::new(records), lists.nulls().cloned())?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Int16Type;

    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::test_support::rewritten(sql, rewrite)
    }

    #[test]
    fn calls_become_unnests() {
        assert_eq!(
            rewritten("SELECT unnest(k), generate_subscripts(k, 1) AS ord FROM t"),
            "SELECT unnest(k), unnest(range(1, coalesce(CAST(array_length(k, 1) AS BIGINT), 0) + 1)) AS ord FROM t"
        );
        assert_eq!(
            rewritten("SELECT generate_subscripts(k, 1, true) FROM t"),
            "SELECT unnest(range(coalesce(CAST(array_length(k, 1) AS BIGINT), 0), 0, -1)) FROM t"
        );
        assert_eq!(rewritten("SELECT generate_subscripts(k, 1, x) FROM t"), "SELECT generate_subscripts(k, 1, x) FROM t");
        assert_eq!(rewritten("SELECT generate_series(1, 2)"), "SELECT generate_series(1, 2)");
        assert_eq!(rewritten("SELECT information_schema._pg_expandarray(i.indkey) AS keys FROM i"), "SELECT unnest(ebb_expandarray(i.indkey)) AS keys FROM i");
    }

    #[test]
    fn expanded_elements_carry_their_positions() {
        let lists = ListArray::from_iter_primitive::<Int16Type, _, _>(vec![Some(vec![Some(3), Some(1)]), None, Some(vec![Some(7)])]);
        let sliced: ArrayRef = Arc::new(lists.slice(0, 3));
        let args = ScalarFunctionArgs {
            args: vec![ColumnarValue::Array(sliced.clone())],
            arg_fields: vec![Arc::new(Field::new("a", sliced.data_type().clone(), true))],
            number_rows: 3,
            return_field: Arc::new(Field::new("r", ExpandArray { signature: Signature::any(1, Volatility::Immutable) }.return_type(&[sliced.data_type().clone()]).expect("type"), true)),
            config_options: Arc::default(),
        };
        let ColumnarValue::Array(out) = expandarray_udf().invoke_with_args(args).expect("run") else { panic!("an array") };
        let out = out.as_list::<i32>();
        assert!(out.is_null(1));
        let first = out.value(0);
        let first = first.as_struct();
        assert_eq!(first.column(0).as_primitive::<Int16Type>().values().to_vec(), vec![3, 1]);
        assert_eq!(first.column(1).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec(), vec![1, 2]);
        let third = out.value(2);
        assert_eq!(third.as_struct().column(1).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec(), vec![1]);
    }
}
