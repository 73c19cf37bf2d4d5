//! A set-returning function of one column in FROM is named by its alias.
//!
//! In PostgreSQL the column of `generate_series(1, 3) g` (or `unnest(a) u`)
//! is called `g`, so `SELECT g FROM generate_series(1, 3) g` works — the
//! usual way scripts generate rows. DataFusion calls the column `value`.
//! Giving such a function a column alias equal to its table alias (`g(g)`)
//! makes both spellings mean what PostgreSQL means.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Statement, TableAliasColumnDef, TableFactor, VisitMut, VisitorMut};

/// Functions in FROM that return one column (`unnest` of one array has a
/// table factor of its own).
const ONE_COLUMN_FUNCTIONS: &[&str] = &["generate_series"];

/// Names the column of every aliased one-column function in `stmts` after its alias.
pub fn name_columns_after_aliases(stmts: &mut [Statement]) {
    for stmt in stmts {
        let _ = stmt.visit(&mut ColumnAliases);
    }
}

struct ColumnAliases;

impl VisitorMut for ColumnAliases {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let alias = match factor {
            TableFactor::Table { name, alias: Some(alias), args: Some(_), .. }
                if name.0.last().and_then(|part| part.as_ident()).is_some_and(|f| ONE_COLUMN_FUNCTIONS.contains(&f.value.to_lowercase().as_str())) =>
            {
                alias
            }
            TableFactor::UNNEST { alias: Some(alias), array_exprs, with_offset: false, with_ordinality: false, .. } if array_exprs.len() == 1 => alias,
            _ => return ControlFlow::Continue(()),
        };
        if alias.columns.is_empty() {
            alias.columns.push(TableAliasColumnDef { name: alias.name.clone(), data_type: None });
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::test_support::rewritten(sql, name_columns_after_aliases)
    }

    #[test]
    fn one_column_functions_take_their_alias_as_column_name() {
        assert_eq!(rewritten("SELECT g FROM generate_series(1, 3) g"), "SELECT g FROM generate_series(1, 3) g (g)");
        assert_eq!(rewritten("SELECT x FROM generate_series(1, 3) AS g(x)"), "SELECT x FROM generate_series(1, 3) AS g (x)");
        assert_eq!(rewritten("SELECT * FROM t g"), "SELECT * FROM t g");
        assert_eq!(rewritten("SELECT * FROM generate_series(1, 3)"), "SELECT * FROM generate_series(1, 3)");
        assert_eq!(rewritten("SELECT u FROM unnest(ARRAY[1]) u"), "SELECT u FROM UNNEST(ARRAY[1]) u (u)");
    }
}
