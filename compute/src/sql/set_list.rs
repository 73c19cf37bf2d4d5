//! The SET list of UPDATE (and of INSERT … ON CONFLICT DO UPDATE), made one
//! expression per column. PostgreSQL also takes multiple-column items —
//! `(a, b) = (x, y)`, `(a, b) = ROW(x, y)`, `(a, b) = (SELECT x, y …)` —
//! and `DEFAULT` as a value; the statements that run a SET list compute
//! one expression per column, so these are taken apart here first.
//!
//! A sub-SELECT giving several columns becomes one sub-SELECT per column,
//! each keeping one item of the select list: it runs once per column, not
//! once per row, so it is refused when it calls a volatile function (two
//! runs of `random()` would give the columns values of different rows) or
//! is not a plain SELECT whose items can be taken one by one.

use std::borrow::Cow;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Assignment, AssignmentTarget, Expr, Function, ObjectName, OrderByKind, Query, SelectItem, SetExpr, Value, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use ebb_proto::storage::{ColumnDef, TableDef};

use super::ddl::object_name;
use crate::error::{ComputeError, Result};

/// The SET list as `(column, value)` pairs, one per assigned column, in the
/// order written; `volatile` says whether a function (by name) is volatile.
/// Unknown columns are 42703, a count of values that does not match the
/// columns 42601.
/// (A single-column item's value is borrowed: UPDATE runs this on every
/// execution, TPC-B's included.)
pub(crate) fn expand<'a>(def: &'a TableDef, list: &'a [Assignment], volatile: &dyn Fn(&str) -> bool) -> Result<Vec<(&'a str, Cow<'a, Expr>)>> {
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        match &a.target {
            AssignmentTarget::ColumnName(n) => {
                let column = column(def, n)?;
                out.push((column.name.as_str(), value(column, Cow::Borrowed(&a.value))?));
            }
            AssignmentTarget::Tuple(names) => {
                let columns = names.iter().map(|n| column(def, n)).collect::<Result<Vec<_>>>()?;
                let values = tuple_values(&a.value, columns.len(), volatile)?;
                for (column, v) in columns.into_iter().zip(values) {
                    out.push((column.name.as_str(), value(column, Cow::Owned(v))?));
                }
            }
        }
    }
    Ok(out)
}

/// The column a SET item names.
fn column<'a>(def: &'a TableDef, name: &ObjectName) -> Result<&'a ColumnDef> {
    let name = object_name(name)?.1;
    def.columns
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| ComputeError::invalid("42703", format!("column \"{name}\" of relation \"{}\" does not exist", def.name)))
}

/// The value assigned to `column`: `DEFAULT` becomes the column's default
/// (NULL without one), anything else stays as written.
fn value<'a>(column: &ColumnDef, e: Cow<'a, Expr>) -> Result<Cow<'a, Expr>> {
    if !is_default(&e) {
        return Ok(e);
    }
    let text = match (&column.default_expr, crate::pg_catalog::default_text(column)) {
        // An identity column's default draws from its sequence (the
        // catalog shows none for it).
        (Some(e), _) => e.clone(),
        (None, Some(t)) => t,
        (None, None) => return Ok(Cow::Owned(Expr::value(Value::Null))),
    };
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map(Cow::Owned)
        .map_err(|e| ComputeError::Internal(format!("the default of \"{}\" ({text}) does not parse: {e}", column.name)))
}

/// `DEFAULT` as a value (an unquoted identifier to the parser), in a SET
/// list or a VALUES row.
pub(crate) fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// The `n` values of a multiple-column item's source.
fn tuple_values(source: &Expr, n: usize, volatile: &dyn Fn(&str) -> bool) -> Result<Vec<Expr>> {
    let values = match source {
        Expr::Tuple(items) => items.clone(),
        Expr::Nested(inner) => vec![inner.as_ref().clone()],
        Expr::Function(f) if is_row(f) => row_arguments(f)?,
        Expr::Subquery(q) => return per_column_subqueries(q, n, volatile),
        _ => {
            return Err(ComputeError::invalid("42601", "source for a multiple-column UPDATE item must be a sub-SELECT or ROW() expression"));
        }
    };
    if values.len() != n {
        return Err(ComputeError::invalid("42601", "number of columns does not match number of values"));
    }
    Ok(values)
}

/// `ROW(x, y)`.
fn is_row(f: &Function) -> bool {
    f.name.0.len() == 1 && f.name.to_string().eq_ignore_ascii_case("row")
}

fn row_arguments(f: &Function) -> Result<Vec<Expr>> {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    let FunctionArguments::List(list) = &f.args else { return Ok(Vec::new()) };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.clone()),
            other => Err(ComputeError::invalid("42601", format!("ROW() takes values, not \"{other}\""))),
        })
        .collect()
}

/// `(SELECT x, y …)` for `n` columns as `n` sub-SELECTs of one item each.
fn per_column_subqueries(q: &Query, n: usize, volatile: &dyn Fn(&str) -> bool) -> Result<Vec<Expr>> {
    let refuse = |why: &str| Err(ComputeError::unsupported(format!("a multiple-column assignment from a sub-SELECT {why}")));
    let SetExpr::Select(select) = q.body.as_ref() else {
        return refuse("other than a plain SELECT (UNION, VALUES, …)");
    };
    if select.projection.iter().any(|i| !matches!(i, SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. })) {
        return refuse("with * in its select list");
    }
    if select.projection.len() != n {
        return Err(ComputeError::invalid("42601", "number of columns does not match number of values"));
    }
    if select.distinct.is_some() || ordered_by_position(q) {
        return refuse("with DISTINCT or ORDER BY a column position");
    }
    let mut calls = VolatileCalls { volatile, found: None };
    let _ = q.visit(&mut calls);
    if let Some(name) = calls.found {
        return refuse(&format!("calling the volatile function {name}() (it would run once per column)"));
    }
    Ok((0..n)
        .map(|i| {
            let mut one = q.clone();
            if let SetExpr::Select(s) = one.body.as_mut() {
                s.projection = vec![select.projection[i].clone()];
            }
            Expr::Subquery(Box::new(one))
        })
        .collect())
}

/// `ORDER BY 2`: a position in the select list, which taking the list apart
/// would change.
fn ordered_by_position(q: &Query) -> bool {
    let Some(order) = &q.order_by else { return false };
    match &order.kind {
        OrderByKind::Expressions(items) => items.iter().any(|o| matches!(&o.expr, Expr::Value(v) if matches!(v.value, Value::Number(..)))),
        OrderByKind::All(_) => true,
    }
}

/// Finds the first call of a volatile function.
struct VolatileCalls<'a> {
    volatile: &'a dyn Fn(&str) -> bool,
    found: Option<String>,
}

impl Visitor for VolatileCalls<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            let name = f.name.0.last().map(|p| p.to_string().trim_matches('"').to_lowercase()).unwrap_or_default();
            if (self.volatile)(&name) {
                self.found = Some(name);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}
