//! Field access on a record in parentheses: `(f(x)).n`, `(t.rec).x`.
//!
//! PostgreSQL reads a field of a composite value that way (JDBC's
//! `getPrimaryKeys` does, on `_pg_expandarray`); DataFusion plans dot
//! access only on column names, so `(e).f` becomes `get_field(e, 'f')`.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, Statement, Value,
    visit_expressions_mut,
};

/// Whether SQL may access a field of a parenthesized value: a `)` followed,
/// after any white space, by a `.`.
pub fn may_apply(sql: &str) -> bool {
    sql.split(')').skip(1).any(|after| after.trim_start().starts_with('.'))
}

/// Rewrites every dot access on a parenthesized expression in `stmts`.
pub fn rewrite(stmts: &mut [Statement]) {
    for stmt in stmts {
        let _ = visit_expressions_mut(stmt, |expr| {
            if let Some(value) = field_access(expr) {
                *expr = value;
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

/// `(e).f.g` as `get_field(get_field(e, 'f'), 'g')`; `None` for anything else.
fn field_access(expr: &Expr) -> Option<Expr> {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else { return None };
    let Expr::Nested(inner) = root.as_ref() else { return None };
    let mut value = inner.as_ref().clone();
    for access in access_chain {
        let AccessExpr::Dot(Expr::Identifier(field)) = access else { return None };
        value = get_field(value, &field.value);
    }
    Some(value)
}

/// `get_field(value, 'field')`.
fn get_field(value: Expr, field: &str) -> Expr {
    crate::function_call::call("get_field", vec![value, Expr::value(Value::SingleQuotedString(field.to_string()))])
}

#[cfg(test)]
mod tests {

    use super::*;

    fn rewritten(sql: &str) -> String {
        crate::test_support::rewritten(sql, rewrite)
    }

    #[test]
    fn only_sql_with_a_dot_after_a_parenthesis_is_walked() {
        assert!(may_apply("select (f(a)).n from t"));
        assert!(may_apply("select (r) \n . x from t"));
        assert!(!may_apply("select count(*), t.a from t where (a) > 1.5"));
    }

    #[test]
    fn dots_on_parenthesized_values_become_get_field() {
        assert_eq!(rewritten("SELECT (f(a)).n FROM t"), "SELECT get_field(f(a), 'n') FROM t");
        assert_eq!(rewritten("SELECT 1 FROM r WHERE r.a = (r.keys).x"), "SELECT 1 FROM r WHERE r.a = get_field(r.keys, 'x')");
        assert_eq!(rewritten("SELECT t.a, a[1] FROM t"), "SELECT t.a, a[1] FROM t");
    }
}
