//! Correlated aggregate subqueries on conditions other than equality.
//!
//! `SELECT a, (SELECT count(*) FROM t1 AS x WHERE x.b < t1.b) FROM t1` is
//! ordinary SQL (a rank, a running count; most of SQLite's select1–3 tests
//! are made of it), but DataFusion decorrelates a scalar subquery only when
//! it meets the outer row on equalities, and fails on the rest. This
//! analyzer rule decorrelates those itself: the outer rows are numbered, left
//! joined to the subquery's rows on its condition, and grouped by that
//! number, so each outer row gets its aggregate over exactly the rows it
//! matched:
//!
//! ```text
//! Projection(a, count(*) AS v)          -- the subquery's value
//!   Aggregate(group by __ebb_row, a, b; count(__ebb_match))
//!     Left Join on x.b < t1.b
//!       Window(row_number() AS __ebb_row) ← outer rows
//!       Projection(x.*, true AS __ebb_match) ← the subquery's rows
//! ```
//!
//! An outer row without matches joins one row of NULLs: aggregates that skip
//! NULLs then give what they give over no rows (NULL, and 0 for `count(*)`,
//! which counts the match marker), so only such aggregates are rewritten.
//! Subqueries DataFusion decorrelates itself (equalities only) are left to it.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result as DfResult};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::{AggregateFunction, Exists, InSubquery};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Subquery, lit};
use datafusion::optimizer::AnalyzerRule;

use crate::scalar_subqueries::{has_subquery, outer_as_column};

/// Aggregates whose value over a group of only NULL inputs is their value
/// over no rows.
const NULL_SKIPPING: &[&str] = &["count", "sum", "min", "max", "avg", "bool_and", "bool_or", "ebb_single_value"];

/// The analyzer rule; add it after [`SingleValueSubqueries`](crate::scalar_subqueries::SingleValueSubqueries),
/// whose single-value aggregates it decorrelates too.
#[derive(Debug, Default)]
pub struct CorrelatedAggregates;

impl AnalyzerRule for CorrelatedAggregates {
    fn name(&self) -> &str {
        "ebb_correlated_aggregates"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let mut next = 0;
        plan.transform_up_with_subqueries(|node| {
            let mut node = node;
            let mut changed = false;
            while let Some(rewritten) = decorrelate_one(&node, &mut next)? {
                node = rewritten;
                changed = true;
            }
            Ok(if changed { Transformed::yes(node) } else { Transformed::no(node) })
        })
        .map(|t| t.data)
    }
}

/// The parts of a subquery this rule can decorrelate.
struct Parts {
    /// The subquery's value, over its aggregate's output.
    value: Expr,
    /// Its aggregates.
    aggregates: Vec<Expr>,
    /// The conjuncts that read the outer row, outer references as columns.
    on: Vec<Expr>,
    /// The subquery's rows, its own conditions applied.
    rows: LogicalPlan,
}

/// `node` with its first decorrelatable subquery replaced by a column of a
/// new input, or `None` if it has none.
fn decorrelate_one(node: &LogicalPlan, next: &mut usize) -> DfResult<Option<LogicalPlan>> {
    if !matches!(node, LogicalPlan::Projection(_) | LogicalPlan::Filter(_)) {
        return Ok(None);
    }
    let [input] = node.inputs()[..] else { return Ok(None) };
    let mut found: Option<(Subquery, Parts)> = None;
    node.apply_expressions(|e| {
        e.apply(|x| {
            if let Expr::ScalarSubquery(s) = x
                && found.is_none()
                && let Some(parts) = parts(s, input)?
            {
                found = Some((s.clone(), parts));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
    })?;
    let Some((subquery, parts)) = found else { return Ok(None) };
    let n = *next;
    *next += 1;
    let (row, matched, value) = (format!("__ebb_row{n}"), format!("__ebb_match{n}"), format!("__ebb_value{n}"));

    let numbered = LogicalPlanBuilder::from(input.clone()).window(vec![row_number().alias(&row)])?.build()?;
    let mut inner_columns: Vec<Expr> = parts.rows.schema().columns().into_iter().map(Expr::Column).collect();
    inner_columns.push(lit(true).alias(&matched));
    let rows = LogicalPlanBuilder::from(parts.rows).project(inner_columns)?.build()?;
    let outer_columns: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
    let mut group = vec![Expr::Column(Column::from_name(&row))];
    group.extend(outer_columns.iter().cloned());
    let aggregates = parts.aggregates.into_iter().map(|a| counting(a, &matched)).collect::<DfResult<Vec<_>>>()?;
    let mut projected = outer_columns.clone();
    projected.push(parts.value.alias(&value));
    let joined = LogicalPlanBuilder::from(numbered)
        .join_on(rows, JoinType::Left, parts.on)?
        .aggregate(group, aggregates)?
        .project(projected)?
        .build()?;

    let names = NamePreserver::new(node);
    let exprs = node
        .expressions()
        .into_iter()
        .map(|e| {
            let name = names.save(&e);
            let e = e.transform_up(|x| match x {
                Expr::ScalarSubquery(s) if s == subquery => Ok(Transformed::yes(Expr::Column(Column::from_name(&value)))),
                other => Ok(Transformed::no(other)),
            })?;
            Ok(name.restore(e.data))
        })
        .collect::<DfResult<Vec<_>>>()?;
    let rewritten = node.with_new_exprs(exprs, vec![joined])?;
    Ok(Some(match rewritten {
        // A filter passes its input's columns on: drop the added ones again.
        LogicalPlan::Filter(_) => LogicalPlanBuilder::from(rewritten).project(outer_columns)?.build()?,
        other => other,
    }))
}

/// The parts of `s` when it is `Projection(value) ← Aggregate(no groups,
/// NULL-skipping aggregates) ← Filter(p) ← rows`, `p` meets the outer row in
/// a way DataFusion does not decorrelate, and the subquery's rows share no
/// column name with `outer`.
fn parts(s: &Subquery, outer: &LogicalPlan) -> DfResult<Option<Parts>> {
    if s.outer_ref_columns.is_empty() {
        return Ok(None);
    }
    let LogicalPlan::Projection(p) = s.subquery.as_ref() else { return Ok(None) };
    let LogicalPlan::Aggregate(a) = p.input.as_ref() else { return Ok(None) };
    let LogicalPlan::Filter(f) = a.input.as_ref() else { return Ok(None) };
    let [value] = p.expr.as_slice() else { return Ok(None) };
    if !a.group_expr.is_empty() || value.contains_outer() || a.aggr_expr.iter().any(|e| e.contains_outer() || !null_skipping(e)) {
        return Ok(None);
    }
    let (correlated, own): (Vec<&Expr>, Vec<&Expr>) = split_conjunction(&f.predicate).into_iter().partition(|c| c.contains_outer());
    if correlated.iter().all(|c| is_equality_across(c)) {
        return Ok(None); // DataFusion's own decorrelation handles it.
    }
    // Subqueries may filter the subquery's own rows (`x.k IN (SELECT …)`)
    // when they are not correlated themselves; the join condition may hold none.
    let correlated_subquery = |e: &Expr| {
        e.exists(|x| {
            Ok(match x {
                Expr::ScalarSubquery(s) | Expr::Exists(Exists { subquery: s, .. }) | Expr::InSubquery(InSubquery { subquery: s, .. }) => !s.outer_ref_columns.is_empty(),
                _ => false,
            })
        })
        .unwrap_or(true)
    };
    if correlated.iter().any(|c| has_subquery(c)) || own.iter().any(|c| correlated_subquery(c)) {
        return Ok(None);
    }
    let rows_input = f.input.as_ref().clone();
    let outer_schema = outer.schema();
    let outer_columns = outer_schema.columns();
    let clash = |c: &Column| outer_columns.iter().any(|o| o.name == c.name && (o.relation == c.relation || o.relation.is_none() || c.relation.is_none()));
    if rows_input.schema().columns().iter().any(clash) {
        return Ok(None);
    }
    let rows = match conjunction(own.into_iter().cloned()) {
        Some(p) => LogicalPlanBuilder::from(rows_input).filter(p)?.build()?,
        None => rows_input,
    };
    let on = correlated.into_iter().map(|c| outer_as_column(c.clone())).collect::<DfResult<Vec<_>>>()?;
    Ok(Some(Parts { value: value.clone(), aggregates: a.aggr_expr.clone(), on, rows }))
}

/// Whether `c` is `inner = outer` (or the reverse), which DataFusion decorrelates.
fn is_equality_across(c: &Expr) -> bool {
    let outer_only = |e: &Expr| e.contains_outer() && !e.any_column_refs();
    let inner_only = |e: &Expr| e.any_column_refs() && !e.contains_outer();
    match c {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => (outer_only(left) && inner_only(right)) || (outer_only(right) && inner_only(left)),
        _ => false,
    }
}

/// Whether an aggregate expression (possibly aliased) skips NULL inputs.
fn null_skipping(e: &Expr) -> bool {
    match e {
        Expr::Alias(a) => null_skipping(&a.expr),
        Expr::AggregateFunction(f) => NULL_SKIPPING.contains(&f.func.name()) && f.params.filter.is_none() && f.params.order_by.is_empty(),
        _ => false,
    }
}

/// `count` of a constant (`count(*)`) counts the match marker instead, so
/// an outer row without matches counts 0; the aggregate keeps its name.
fn counting(e: Expr, marker: &str) -> DfResult<Expr> {
    let name = e.schema_name().to_string();
    let (inner, alias) = match e {
        Expr::Alias(a) => (*a.expr, Some(a.name)),
        other => (other, None),
    };
    let rewritten = match inner {
        Expr::AggregateFunction(f) if f.func.name() == "count" && !f.params.distinct && f.params.args.iter().all(|a| matches!(a, Expr::Literal(..))) => {
            let mut params = f.params.clone();
            params.args = vec![Expr::Column(Column::from_name(marker))];
            Expr::AggregateFunction(AggregateFunction { func: Arc::clone(&f.func), params })
        }
        other => other,
    };
    Ok(rewritten.alias(alias.unwrap_or(name)))
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::scalar_subqueries::SingleValueSubqueries;

    async fn context() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.add_analyzer_rule(Arc::new(SingleValueSubqueries));
        ctx.add_analyzer_rule(Arc::new(CorrelatedAggregates));
        ctx.sql("CREATE TABLE t (a INT, b INT) AS VALUES (1, 2), (2, 3), (3, 1), (4, 5), (4, 5)").await.expect("table").collect().await.expect("create");
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        pretty_format_batches(&batches).expect("format").to_string()
    }

    async fn optimized(ctx: &SessionContext, sql: &str) -> String {
        ctx.sql(sql).await.expect("plan").into_optimized_plan().expect("optimize").display_indent().to_string()
    }

    #[tokio::test]
    async fn inequalities_join_and_group_by_the_outer_row() {
        let ctx = context().await;
        let sql = "SELECT a, b, (SELECT count(*) FROM t AS x WHERE x.b < t.b) AS below, (SELECT max(x.a) FROM t AS x WHERE x.b > t.b AND x.a < 4) AS top FROM t ORDER BY a";
        let got = answer(&ctx, sql).await;
        // The two equal rows (4, 5) keep their own rows and counts.
        let want = "\
+---+---+-------+-----+
| a | b | below | top |
+---+---+-------+-----+
| 1 | 2 | 1     | 2   |
| 2 | 3 | 2     |     |
| 3 | 1 | 0     | 2   |
| 4 | 5 | 3     |     |
| 4 | 5 | 3     |     |
+---+---+-------+-----+";
        assert_eq!(got, want);
        assert!(optimized(&ctx, sql).await.contains("__ebb_row0"));
        let filtered = answer(&ctx, "SELECT a FROM t WHERE (SELECT count(*) FROM t AS x WHERE x.b > t.b) < 3 ORDER BY a").await;
        assert_eq!(filtered, "+---+\n| a |\n+---+\n| 2 |\n| 4 |\n| 4 |\n+---+", "the filter's input columns only");
    }

    #[tokio::test]
    async fn equalities_and_null_keeping_aggregates_are_left_alone() {
        let ctx = context().await;
        let plan = optimized(&ctx, "SELECT a, (SELECT count(*) FROM t AS x WHERE x.a = t.b) FROM t").await;
        assert!(!plan.contains("__ebb_row"), "DataFusion decorrelates equalities itself:\n{plan}");
        let refused = ctx.sql("SELECT a, (SELECT array_agg(x.a) FROM t AS x WHERE x.b < t.b) FROM t").await.expect("plan").collect().await;
        assert!(refused.is_err(), "array_agg keeps NULLs, so the join would answer {{NULL}} where PostgreSQL answers NULL");
    }
}
