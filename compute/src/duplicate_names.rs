//! Result columns that share a name, as PostgreSQL allows them.
//!
//! DataFusion refuses a select list whose items come out with the same name
//! (`SELECT 1, 1`, `SELECT a, a FROM t`, `SELECT t.a, a FROM t`, `SELECT 1
//! AS x, 2 AS x`); PostgreSQL returns such columns side by side, and tools
//! and ORMs send such lists. When planning fails for that reason, the
//! statement is planned again with the repeated items of each select list
//! renamed apart (`<name>\u{1}<position>`); [`original_name`] gives
//! `column_names` their PostgreSQL names back.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut};

/// Separates an item's name from its position in a renamed alias.
const MARK: char = '\u{1}';

/// Whether planning failed because two result columns have the same name.
pub fn is_duplicate_names_error(e: &DataFusionError) -> bool {
    e.to_string().contains("Projections require unique expression names")
}

/// `stmt` with the repeated items of every select list aliased apart, and
/// with `all_expressions`, every unaliased item that is not a plain column
/// too (expressions written differently can get the same name:
/// `now()::text` and `CAST(now() AS varchar)`).
pub fn renamed_apart(stmt: &Statement, all_expressions: bool) -> Statement {
    let mut stmt = stmt.clone();
    let _ = stmt.visit(&mut RenameApart { all_expressions });
    stmt
}

/// The name a renamed item had: its alias, or `""` when it had none (it
/// is then named after its expression). `None` for any other alias.
pub fn original_name(alias: &str) -> Option<&str> {
    alias.split_once(MARK).map(|(name, _)| name)
}

struct RenameApart {
    all_expressions: bool,
}

impl VisitorMut for RenameApart {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        rename_in(&mut query.body, self.all_expressions);
        ControlFlow::Continue(())
    }
}

/// Renames apart in each select of a query body (nested queries are
/// visited on their own).
fn rename_in(body: &mut SetExpr, all_expressions: bool) {
    match body {
        SetExpr::Select(select) => {
            let mut seen = HashSet::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                let (key, expression) = match &*item {
                    SelectItem::UnnamedExpr(e) => (key_of(e), !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))),
                    SelectItem::ExprWithAlias { alias, .. } => (normalized(alias), false),
                    _ => continue,
                };
                if seen.insert(key) && !(all_expressions && expression) {
                    continue;
                }
                match item {
                    SelectItem::UnnamedExpr(expr) => {
                        let expr = expr.clone();
                        *item = SelectItem::ExprWithAlias { expr, alias: Ident::with_quote('"', format!("{MARK}{i}")) };
                    }
                    SelectItem::ExprWithAlias { alias, .. } => *alias = Ident::with_quote('"', format!("{}{MARK}{i}", normalized(alias))),
                    _ => {}
                }
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            rename_in(left, all_expressions);
            rename_in(right, all_expressions);
        }
        _ => {}
    }
}

/// What an unaliased item is likely named after: a column's name (with or
/// without its table), or the expression.
fn key_of(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => normalized(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(normalized).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// An identifier as the planner resolves it: unquoted ones fold to lower case.
fn normalized(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parsed(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse").remove(0)
    }

    fn renamed(sql: &str) -> String {
        renamed_apart(&parsed(sql), false).to_string()
    }

    #[test]
    fn only_repeats_are_renamed_and_keep_their_names() {
        assert_eq!(renamed("SELECT 1, 1, 2"), "SELECT 1, 1 AS \"\u{1}1\", 2");
        assert_eq!(renamed("SELECT t.a, A, b FROM t"), "SELECT t.a, A AS \"\u{1}1\", b FROM t");
        assert_eq!(renamed("SELECT 1 AS x, 2 AS X"), "SELECT 1 AS x, 2 AS \"x\u{1}1\"");
        assert_eq!(renamed("SELECT * FROM (SELECT v, v FROM t) s UNION SELECT 1, 1"), "SELECT * FROM (SELECT v, v AS \"\u{1}1\" FROM t) s UNION SELECT 1, 1 AS \"\u{1}1\"");
        assert_eq!(renamed("SELECT a, b FROM t"), "SELECT a, b FROM t");
        assert_eq!(
            renamed_apart(&parsed("SELECT now()::TEXT, CAST(now() AS VARCHAR), a FROM t"), true).to_string(),
            "SELECT now()::TEXT AS \"\u{1}0\", CAST(now() AS VARCHAR) AS \"\u{1}1\", a FROM t",
            "all expressions, on a second try"
        );
        assert_eq!(original_name("x\u{1}1"), Some("x"));
        assert_eq!(original_name("\u{1}3"), Some(""));
        assert_eq!(original_name("x"), None);
    }
}
