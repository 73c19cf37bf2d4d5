//! The functions that print catalog objects as SQL: `pg_get_expr`,
//! `pg_get_constraintdef` and `pg_get_indexdef`. Drivers read column
//! defaults and key definitions through them. (`datafusion-pg-catalog`'s
//! versions return empty strings.)

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int32Array, StringArray};
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::{DataType, Int32Type};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use super::user_relations as user;
use crate::by_address::ByAddress;
use crate::catalog::DatabaseCatalog;

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Deparse {
    /// `pg_get_expr(text, oid [, pretty])`: the stored expression. ebb keeps
    /// expressions (`pg_attrdef.adbin`) as SQL text, so this is the text.
    Expr,
    /// `pg_get_constraintdef(oid [, pretty])`.
    ConstraintDef,
    /// `pg_get_indexdef(oid [, column, pretty])`.
    IndexDef,
}

/// One of the functions, over the session's catalog.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DeparseUdf {
    kind: Deparse,
    signature: Signature,
    catalog: ByAddress<DatabaseCatalog>,
}

/// The three functions for a session on `catalog`.
pub fn functions(catalog: &Arc<DatabaseCatalog>) -> Vec<ScalarUDF> {
    [Deparse::Expr, Deparse::ConstraintDef, Deparse::IndexDef]
        .into_iter()
        .map(|kind| ScalarUDF::new_from_impl(DeparseUdf { kind, signature: Signature::variadic_any(Volatility::Stable), catalog: ByAddress(catalog.clone()) }))
        .collect()
}

impl ScalarUDFImpl for DeparseUdf {
    fn name(&self) -> &str {
        match self.kind {
            Deparse::Expr => "pg_get_expr",
            Deparse::ConstraintDef => "pg_get_constraintdef",
            Deparse::IndexDef => "pg_get_indexdef",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arity = match self.kind {
            Deparse::Expr => 2..=3,
            Deparse::ConstraintDef => 1..=2,
            Deparse::IndexDef => 1..=3,
        };
        crate::error::check_arguments(self.name(), arity, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: StringArray = match self.kind {
            Deparse::Expr => cast(&arrays[0], &DataType::Utf8)?.as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect(),
            Deparse::ConstraintDef => {
                let defs = self.catalog.table_defs();
                oids(&arrays[0])?.iter().map(|oid| oid.and_then(|oid| user::constraint_definition(&defs, oid))).collect()
            }
            Deparse::IndexDef => {
                let defs = self.catalog.table_defs();
                let columns = match arrays.get(1) {
                    Some(c) => oids(c)?,
                    None => Int32Array::from(vec![0; arrays[0].len()]),
                };
                oids(&arrays[0])?
                    .iter()
                    .zip(columns.iter())
                    .map(|(oid, column)| user::index_definition(&defs, oid?, column.unwrap_or(0)))
                    .collect()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// An OID (or column number) argument as int4; text that is no number is
/// an error, as in PostgreSQL, not NULL.
fn oids(a: &ArrayRef) -> DfResult<Int32Array> {
    let a = cast_with_options(a, &DataType::Int32, &CastOptions { safe: false, ..Default::default() })?;
    Ok(a.as_primitive::<Int32Type>().clone())
}
