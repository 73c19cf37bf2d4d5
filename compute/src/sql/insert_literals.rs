//! String constants in a multi-row `INSERT … VALUES` take their column's type.
//!
//! In PostgreSQL a quoted constant has no type until its context gives it
//! one, so `VALUES (1, now()), (2, '2020-01-02')` inserts two timestamps.
//! DataFusion types it as text and refuses a VALUES column that mixes text
//! and timestamps. Before planning, every string constant of such a list
//! in a column of a non-text type is cast to that column's type, which is
//! what PostgreSQL does with it.

use datafusion::sql::sqlparser::ast::{Expr, Query, SetExpr, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use ebb_proto::pg_types;
use ebb_proto::storage::{TableDef, TypeKind};

/// Casts the string constants of `source` (when it is a VALUES list of
/// several rows) to the types of the target `columns` of `def`.
pub fn type_string_literals(source: &mut Query, def: &TableDef, columns: &[String]) {
    let SetExpr::Values(values) = source.body.as_mut() else { return };
    if values.rows.len() < 2 {
        return;
    }
    let casts: Vec<Option<Expr>> = columns.iter().map(|c| cast_template(def, c)).collect();
    for row in &mut values.rows {
        for (value, cast) in row.iter_mut().zip(&casts) {
            let (Some(cast), Expr::Value(v)) = (cast, &*value) else { continue };
            if !matches!(v.value, Value::SingleQuotedString(_) | Value::EscapedStringLiteral(_)) {
                continue;
            }
            let mut typed = cast.clone();
            if let Expr::Cast { expr, .. } = &mut typed {
                **expr = value.clone();
                *value = typed;
            }
        }
    }
}

/// `CAST(NULL AS <type of column>)`, for columns whose type text does not
/// already have (text-like types take strings as they are).
fn cast_template(def: &TableDef, column: &str) -> Option<Expr> {
    let ty = def.columns.iter().find(|c| c.name == column)?.r#type.clone().unwrap_or_default();
    use TypeKind::*;
    match pg_types::kind(&ty) {
        Smallint | Integer | Bigint | Numeric | Real | Double | Boolean | Date | Timestamp | Timestamptz => {}
        Text | Varchar | Char | Bytea | Uuid | Json | Jsonb | Unspecified => return None,
    }
    let sql = format!("CAST(NULL AS {})", pg_types::sql_name(&ty));
    Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql).ok()?.parse_expr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_in_typed_columns_of_several_rows_are_cast() {
        let def = crate::test_support::table_def("t", &[("id", TypeKind::Integer), ("at", TypeKind::Timestamptz), ("v", TypeKind::Text)], &[]);
        let columns: Vec<String> = ["id", "at", "v"].iter().map(|c| c.to_string()).collect();
        let query = |sql: &str| match Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse").remove(0) {
            datafusion::sql::sqlparser::ast::Statement::Query(q) => *q,
            other => panic!("not a query: {other}"),
        };
        let mut q = query("VALUES (1, now(), 'a'), ('2', '2020-01-02', 'b')");
        type_string_literals(&mut q, &def, &columns);
        assert_eq!(q.to_string(), "VALUES (1, now(), 'a'), (CAST('2' AS INTEGER), CAST('2020-01-02' AS TIMESTAMP WITH TIME ZONE), 'b')");
        let mut one = query("VALUES (1, '2020-01-02', 'a')");
        type_string_literals(&mut one, &def, &columns);
        assert_eq!(one.to_string(), "VALUES (1, '2020-01-02', 'a')", "one row is typed by the insert itself");
    }
}
