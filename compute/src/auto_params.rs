//! Auto-parameterisation of simple-protocol statements.
//!
//! pgbench's default mode, psql and many scripts send every statement as
//! text with its values written in: `UPDATE pgbench_accounts SET abalance =
//! abalance + -1234 WHERE aid = 5678`. Planning such text with DataFusion
//! costs more than running it. The integer literals of a statement's WHERE
//! clause, SET values and VALUES rows are replaced by parameters
//! (`… + $1 WHERE aid = $2`), so every run of the same statement with other
//! values has the same *shape*, which the session plans once and runs like a
//! prepared statement with the values bound.
//!
//! The rewrite must not change what the statement means, so it is narrow:
//! only integer literals (optionally negated) that are operands of
//! comparisons, arithmetic, boolean connectives, `IN` lists and `BETWEEN`, or
//! a whole SET value or VALUES item; never in a select list (the column
//! would be named after the parameter), `ORDER BY`/`GROUP BY` (ordinals),
//! `LIMIT`, function arguments, casts or subqueries. A value is bound only
//! when planning gives its parameter a numeric type that holds it exactly
//! (see [`bind`]); otherwise the session runs the statement as written.

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    Expr, Query, SetExpr, Statement, UnaryOperator, Value, ValueWithSpan, Visit, Visitor,
};
use std::ops::ControlFlow;

/// A statement with its integer literals replaced by `$1`, `$2`, … and the
/// values they had.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The rewritten statement.
    pub stmt: Statement,
    /// Its text: the key under which the session keeps its plan.
    pub text: String,
    /// The replaced literals, by parameter position.
    pub values: Vec<i64>,
}

/// The shape of `stmt`, or `None` when it has no literal to replace, is not
/// a SELECT, INSERT … VALUES, UPDATE or DELETE, or already holds parameters
/// (which a simple-protocol statement may not: running it as written
/// reports that).
pub fn parameterise(stmt: &Statement) -> Option<Shape> {
    let candidate = matches!(stmt, Statement::Query(_) | Statement::Update(_) | Statement::Delete(_) | Statement::Insert(_));
    if !candidate || has_placeholders(stmt) {
        return None;
    }
    let mut stmt = stmt.clone();
    let mut values = Vec::new();
    match &mut stmt {
        Statement::Query(q) => rewrite_query_filter(q, &mut values),
        Statement::Update(u) => {
            for a in &mut u.assignments {
                rewrite(&mut a.value, &mut values);
            }
            if let Some(w) = &mut u.selection {
                rewrite(w, &mut values);
            }
        }
        Statement::Delete(d) => {
            if let Some(w) = &mut d.selection {
                rewrite(w, &mut values);
            }
        }
        Statement::Insert(ins) => {
            let Some(source) = &mut ins.source else { return None };
            if source.with.is_some() || source.order_by.is_some() || source.limit_clause.is_some() {
                return None;
            }
            let SetExpr::Values(rows) = source.body.as_mut() else { return None };
            for row in &mut rows.rows {
                for e in row.iter_mut() {
                    rewrite(e, &mut values);
                }
            }
        }
        _ => return None,
    }
    if values.is_empty() {
        return None;
    }
    let text = stmt.to_string();
    // A long statement (an INSERT of many rows) rarely repeats, and its
    // kept plan would be large: it runs as written.
    if text.len() > crate::session::plan_cache::MAX_KEPT_TEXT {
        return None;
    }
    Some(Shape { stmt, text, values })
}

/// Rewrites the WHERE clause of a plain `SELECT … FROM … WHERE …`.
fn rewrite_query_filter(q: &mut Query, values: &mut Vec<i64>) {
    if let SetExpr::Select(select) = q.body.as_mut()
        && let Some(w) = &mut select.selection
    {
        rewrite(w, values);
    }
}

/// Replaces the integer literals among the operands of `e` (see the module
/// documentation for which), appending their values.
fn rewrite(e: &mut Expr, values: &mut Vec<i64>) {
    if let Some(v) = integer_literal(e) {
        values.push(v);
        *e = Expr::Value(ValueWithSpan::from(Value::Placeholder(format!("${}", values.len()))));
        return;
    }
    match e {
        Expr::BinaryOp { left, right, .. } => {
            rewrite(left, values);
            rewrite(right, values);
        }
        Expr::Nested(inner) => rewrite(inner, values),
        Expr::UnaryOp { op: UnaryOperator::Not, expr } => rewrite(expr, values),
        Expr::InList { expr, list, .. } => {
            rewrite(expr, values);
            for item in list {
                rewrite(item, values);
            }
        }
        Expr::Between { expr, low, high, .. } => {
            rewrite(expr, values);
            rewrite(low, values);
            rewrite(high, values);
        }
        _ => {}
    }
}

/// The value of an integer literal (`42`, `-42`) that fits an `i64`.
fn integer_literal(e: &Expr) -> Option<i64> {
    fn digits(e: &Expr) -> Option<&str> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Number(n, false) if n.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => None,
            },
            _ => None,
        }
    }
    match e {
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => format!("-{}", digits(expr)?).parse().ok(),
        e => digits(e)?.parse().ok(),
    }
}

fn has_placeholders(stmt: &Statement) -> bool {
    struct Finder;
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            match e {
                Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    stmt.visit(&mut Finder).is_break()
}

/// `value` as a parameter of type `t`: only numeric types, and only when the
/// value converts exactly (so `int4col = 3000000000` is run as written and
/// matches nothing, as in PostgreSQL, rather than failing to bind).
pub fn bind(value: i64, t: &DataType) -> Option<ScalarValue> {
    let numeric = t.is_integer() || t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..));
    if !numeric {
        return None;
    }
    let original = ScalarValue::Int64(Some(value));
    let bound = original.cast_to(t).ok()?;
    (bound.cast_to(&DataType::Int64).ok()? == original).then_some(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Option<Shape> {
        let stmts = crate::session::parse(sql).expect("parses");
        parameterise(&stmts[0])
    }

    #[test]
    fn pgbench_statements_take_one_shape_per_statement() {
        let a = shape("UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5678").expect("a shape");
        assert_eq!(a.text, "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2");
        assert_eq!(a.values, vec![-1234, 5678]);
        let b = shape("UPDATE pgbench_accounts SET abalance = abalance + 17 WHERE aid = 3").expect("a shape");
        assert_eq!(a.text, b.text, "other values, same shape");
        let s = shape("SELECT abalance FROM pgbench_accounts WHERE aid = 5678").expect("a shape");
        assert_eq!(s.text, "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
        let i = shape("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 1, 5678, -1234, CURRENT_TIMESTAMP)").expect("a shape");
        assert_eq!(i.text, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)");
        assert_eq!(i.values, vec![3, 1, 5678, -1234]);
        let d = shape("DELETE FROM t WHERE a BETWEEN 1 AND 9 OR b IN (4, -5) AND NOT (c <> 2)").expect("a shape");
        assert_eq!(d.text, "DELETE FROM t WHERE a BETWEEN $1 AND $2 OR b IN ($3, $4) AND NOT (c <> $5)");
    }

    #[test]
    fn literals_that_name_columns_or_count_rows_stay() {
        let s = shape("SELECT 1, a + 2 FROM t WHERE a = 3 GROUP BY 1 ORDER BY 2 LIMIT 10").expect("the WHERE literal");
        assert_eq!(s.text, "SELECT 1, a + 2 FROM t WHERE a = $1 GROUP BY 1 ORDER BY 2 LIMIT 10");
        assert_eq!(s.values, vec![3]);
        assert_eq!(shape("SELECT 1"), None, "nothing to replace");
        assert_eq!(shape("SELECT * FROM t WHERE a = 1.5 AND b = 'x' AND c = 1e3"), None, "only integers");
        assert_eq!(shape("SELECT * FROM t WHERE a = abs(2) AND b = CAST(3 AS int)"), None, "not inside calls or casts");
        assert_eq!(shape("SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE c = 4)"), None, "not inside subqueries");
        assert_eq!(shape("SELECT * FROM t WHERE a = 99999999999999999999"), None, "not past i64");
        assert_eq!(shape("SELECT * FROM t WHERE a = $1 AND b = 2"), None, "a statement with parameters runs as written");
        assert_eq!(shape("INSERT INTO t SELECT 1"), None, "only VALUES");
        let many = (0..2000).map(|i| format!("({i})")).collect::<Vec<_>>().join(", ");
        assert_eq!(shape(&format!("INSERT INTO t VALUES {many}")), None, "a bulk INSERT runs as written");
    }

    #[test]
    fn values_bind_only_to_numeric_types_that_hold_them() {
        assert_eq!(bind(5, &DataType::Int32), Some(ScalarValue::Int32(Some(5))));
        assert_eq!(bind(-3, &DataType::Int16), Some(ScalarValue::Int16(Some(-3))));
        assert_eq!(bind(3_000_000_000, &DataType::Int32), None, "does not fit");
        assert_eq!(bind(7, &DataType::Decimal128(5, 2)), Some(ScalarValue::Decimal128(Some(700), 5, 2)));
        assert_eq!(bind(12345, &DataType::Decimal128(5, 2)), None, "beyond the precision");
        assert_eq!(bind(2, &DataType::Float64), Some(ScalarValue::Float64(Some(2.0))));
        assert_eq!(bind((1 << 53) + 1, &DataType::Float64), None, "not exact");
        assert_eq!(bind(1, &DataType::Utf8), None, "text compares differently");
        assert_eq!(bind(1, &DataType::Boolean), None);
    }
}
