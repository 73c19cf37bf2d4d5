//! `ARRAY(SELECT …)`: an array of a subquery's rows, which DataFusion lacks
//! ("Invalid function 'array'").
//!
//! A subquery of one select item over FROM and WHERE, with or without ORDER
//! BY, is written as the scalar subquery `(SELECT coalesce(array_agg(item
//! ORDER BY …), make_array()) FROM … WHERE …)`: the rows' order is the
//! aggregate's, and no rows give `{}`, as in PostgreSQL. A correlated one is
//! then decorrelated like any scalar subquery (or refused with 0A000 where
//! ebb cannot). Other shapes (several items, DISTINCT, GROUP BY, LIMIT, set
//! operations, WITH) are refused with 0A000.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArguments, GroupByExpr, OrderByKind, Query, SelectItem, SetExpr, Statement, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::error::{ComputeError, Result};

/// Whether SQL may hold `ARRAY(…)` (`lower`: the SQL in lower case).
pub fn may_apply(lower: &str) -> bool {
    lower.contains("array")
}

/// Rewrites every `ARRAY(subquery)` in `stmts`.
pub fn rewrite(stmts: &mut [Statement]) -> Result<()> {
    for stmt in stmts {
        let mut refused = None;
        let _ = visit_expressions_mut(stmt, |expr| {
            let Some(query) = array_subquery(expr) else { return ControlFlow::Continue(()) };
            match aggregated(query) {
                Ok(q) => {
                    *expr = Expr::Subquery(Box::new(q));
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    refused = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(e) = refused {
            return Err(e);
        }
    }
    Ok(())
}

/// The subquery of `ARRAY(subquery)`.
fn array_subquery(expr: &Expr) -> Option<&Query> {
    let Expr::Function(f) = expr else { return None };
    let FunctionArguments::Subquery(q) = &f.args else { return None };
    (f.name.0.len() == 1 && f.name.to_string().eq_ignore_ascii_case("array")).then_some(q.as_ref())
}

/// `ARRAY(query)` as an aggregating scalar subquery (see the module documentation).
fn aggregated(query: &Query) -> Result<Query> {
    let unsupported = |what: &str| ComputeError::NotSupported(format!("ARRAY(subquery) with {what}"));
    if query.with.is_some() {
        return Err(unsupported("WITH"));
    }
    if query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(unsupported("LIMIT, OFFSET or FETCH"));
    }
    let SetExpr::Select(select) = query.body.as_ref() else { return Err(unsupported("a set operation or VALUES")) };
    if select.distinct.is_some() || select.having.is_some() || !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty()) {
        return Err(unsupported("DISTINCT, GROUP BY or HAVING"));
    }
    let [item] = select.projection.as_slice() else { return Err(unsupported("other than one select item")) };
    let (value, alias) = match item {
        SelectItem::UnnamedExpr(e) => (e, None),
        SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias)),
        _ => return Err(unsupported("a wildcard")),
    };
    let mut order = Vec::new();
    if let Some(by) = &query.order_by {
        let OrderByKind::Expressions(exprs) = &by.kind else { return Err(unsupported("ORDER BY ALL")) };
        for o in exprs {
            let mut o = o.clone();
            // By the item's alias or position: by the item itself.
            let names_item = match &o.expr {
                Expr::Identifier(i) => alias.is_some_and(|a| a.value == i.value),
                Expr::Value(v) => matches!(&v.value, Value::Number(n, _) if n == "1"),
                _ => false,
            };
            if names_item {
                o.expr = value.clone();
            }
            order.push(o.to_string());
        }
    }
    let order = if order.is_empty() { String::new() } else { format!(" ORDER BY {}", order.join(", ")) };
    let mut sql = format!("SELECT coalesce(array_agg({value}{order}), make_array())");
    if !select.from.is_empty() {
        let from: Vec<String> = select.from.iter().map(ToString::to_string).collect();
        sql.push_str(&format!(" FROM {}", from.join(", ")));
    }
    if let Some(w) = &select.selection {
        sql.push_str(&format!(" WHERE {w}"));
    }
    let mut parser = Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql).map_err(|e| ComputeError::Syntax(format!("ARRAY(subquery): {e}")))?;
    Ok(*parser.parse_query().map_err(|e| ComputeError::Syntax(format!("ARRAY(subquery): {e}")))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> Result<String> {
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        rewrite(&mut stmts)?;
        Ok(stmts[0].to_string())
    }

    #[test]
    fn one_item_subqueries_become_ordered_aggregates() {
        assert_eq!(
            rewritten("SELECT ARRAY(SELECT v AS w FROM t WHERE id > 1 ORDER BY w DESC)").unwrap(),
            "SELECT (SELECT coalesce(array_agg(v ORDER BY v DESC), make_array()) FROM t WHERE id > 1)"
        );
        assert_eq!(rewritten("SELECT array(SELECT 1)").unwrap(), "SELECT (SELECT coalesce(array_agg(1), make_array()))");
        assert_eq!(rewritten("SELECT ARRAY[1, 2]").unwrap(), "SELECT ARRAY[1, 2]", "array literals stay");
    }

    #[test]
    fn other_shapes_are_refused() {
        for sql in [
            "SELECT ARRAY(SELECT a, b FROM t)",
            "SELECT ARRAY(SELECT DISTINCT a FROM t)",
            "SELECT ARRAY(SELECT a FROM t LIMIT 2)",
            "SELECT ARRAY(SELECT a FROM t UNION SELECT 1)",
        ] {
            let e = rewritten(sql).unwrap_err();
            assert_eq!(e.sqlstate(), "0A000", "{sql}: {e}");
        }
    }
}
