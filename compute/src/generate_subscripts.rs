//! `generate_subscripts(array, dim)` in a select list.
//!
//! PostgreSQL's set-returning function yields the subscripts of an array,
//! and drivers pair it with `unnest` of the same array to number elements
//! (SQLAlchemy reads primary-key columns in key order that way:
//! `SELECT unnest(indkey), generate_subscripts(indkey, 1) …`). DataFusion
//! has no such function but zips several `unnest`s in one select list as
//! PostgreSQL does, so the call becomes
//! `unnest(range(1, coalesce(array_length(array, dim), 0) + 1))`
//! (descending with a third argument `true`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Rewrites every `generate_subscripts` call in `stmts`.
pub fn rewrite(stmts: &mut [Statement]) {
    for stmt in stmts {
        let _ = stmt.visit(&mut Subscripts);
    }
}

struct Subscripts;

impl VisitorMut for Subscripts {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && let Some(replacement) = replacement(f)
        {
            *expr = replacement;
        }
        ControlFlow::Continue(())
    }
}

/// The `unnest(range(…))` for a `generate_subscripts(a, dim [, reverse])` call.
fn replacement(f: &Function) -> Option<Expr> {
    let name = f.name.0.last()?.as_ident()?;
    if !name.value.eq_ignore_ascii_case("generate_subscripts") {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else { return None };
    let args: Vec<&Expr> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (array, dim, reverse) = match args.as_slice() {
        [a, d] => (a, d, false),
        [a, d, Expr::Value(v)] => match v.value {
            Value::Boolean(r) => (a, d, r),
            _ => return None,
        },
        _ => return None,
    };
    let length = format!("coalesce(CAST(array_length({array}, {dim}) AS BIGINT), 0)");
    let range = if reverse { format!("range({length}, 0, -1)") } else { format!("range(1, {length} + 1)") };
    Parser::new(&PostgreSqlDialect {}).try_with_sql(&format!("unnest({range})")).ok()?.parse_expr().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse");
        rewrite(&mut stmts);
        stmts[0].to_string()
    }

    #[test]
    fn subscripts_become_an_unnested_range() {
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
    }
}
