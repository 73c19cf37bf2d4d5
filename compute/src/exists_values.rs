//! `EXISTS (…)` as a value: `SELECT EXISTS (SELECT 1 FROM t WHERE …)`,
//! `CASE WHEN EXISTS (…) THEN …`, psql's `\d` of an index.
//!
//! DataFusion plans EXISTS only as a condition of WHERE (a semi or anti
//! join) and fails on it anywhere else ("Physical plan does not support
//! logical expression Exists"). Elsewhere this analyzer rule writes it as
//! the scalar subquery `(SELECT count(*) > 0 FROM … WHERE …)`, which
//! DataFusion (on equalities) or [`correlated_aggregates`](crate::correlated_aggregates)
//! decorrelates; `count(*)` of no rows is 0, so an outer row without
//! matches gets false, never NULL, as EXISTS does.

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions_aggregate::count::count;
use datafusion::logical_expr::expr::Exists;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, Subquery, lit};
use datafusion::optimizer::AnalyzerRule;

/// The analyzer rule; add it before the subquery rules.
#[derive(Debug, Default)]
pub struct ExistsValues;

impl AnalyzerRule for ExistsValues {
    fn name(&self) -> &str {
        "ebb_exists_values"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let planned_by_datafusion = where_conditions(&node);
            if !node.expressions().iter().any(|e| e.exists(|x| Ok(matches!(x, Expr::Exists(_)))).unwrap_or(false)) {
                return Ok(Transformed::no(node));
            }
            let names = NamePreserver::new(&node);
            let t = node.map_expressions(|e| {
                if planned_by_datafusion.contains(&e) {
                    return Ok(Transformed::no(e));
                }
                let name = names.save(&e);
                let t = e.transform_up(|x| match x {
                    Expr::Exists(Exists { subquery, negated }) if !planned_by_datafusion.iter().any(|c| is_exists_of(c, &subquery)) => {
                        let value = counted(&subquery)?;
                        Ok(Transformed::yes(if negated { Expr::Not(Box::new(value)) } else { value }))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(t.update_data(|e| name.restore(e)))
            })?;
            if t.transformed { t.map_data(|n| n.recompute_schema()) } else { Ok(t) }
        })
        .map(|t| t.data)
    }
}

/// The conjuncts of a filter that are `[NOT] EXISTS`: DataFusion plans
/// those itself (semi and anti joins).
fn where_conditions(node: &LogicalPlan) -> Vec<Expr> {
    let LogicalPlan::Filter(f) = node else { return Vec::new() };
    split_conjunction(&f.predicate).into_iter().filter(|c| matches!(c, Expr::Exists(_))).cloned().collect()
}

fn is_exists_of(c: &Expr, subquery: &Subquery) -> bool {
    matches!(c, Expr::Exists(Exists { subquery: s, .. }) if s == subquery)
}

/// `(SELECT count(*) > 0 FROM <the subquery's rows>)`: the select list of
/// an EXISTS subquery does not matter, so its projection is left out (which
/// keeps the correlated filter right under the aggregate, where the
/// decorrelation rules look for it).
fn counted(subquery: &Subquery) -> DfResult<Expr> {
    let rows = match subquery.subquery.as_ref() {
        LogicalPlan::Projection(p) => p.input.as_ref().clone(),
        other => other.clone(),
    };
    let plan = LogicalPlanBuilder::from(rows)
        .aggregate(Vec::<Expr>::new(), vec![count(lit(1)).alias("matches")])?
        .project(vec![Expr::Column("matches".into()).gt(lit(0i64)).alias("exists")])?
        .build()?;
    let outer_ref_columns = plan.all_out_ref_exprs();
    Ok(Expr::ScalarSubquery(Subquery { subquery: Arc::new(plan), outer_ref_columns, spans: subquery.spans.clone() }))
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::correlated_aggregates::CorrelatedAggregates;
    use crate::scalar_subqueries::SingleValueSubqueries;

    async fn answer(sql: &str) -> String {
        let ctx = SessionContext::new();
        ctx.add_analyzer_rule(Arc::new(ExistsValues));
        ctx.add_analyzer_rule(Arc::new(SingleValueSubqueries));
        ctx.add_analyzer_rule(Arc::new(CorrelatedAggregates));
        ctx.sql("CREATE TABLE t (a INT, b INT) AS VALUES (1, 2), (2, 3), (3, 1)").await.expect("table").collect().await.expect("create");
        let batches = ctx.sql(sql).await.expect("plan").collect().await.expect("run");
        pretty_format_batches(&batches).expect("format").to_string()
    }

    fn column(table: &str, i: usize) -> Vec<String> {
        table.lines().filter(|l| l.starts_with("| ") && !l.contains(" v ")).map(|l| l.split('|').nth(i + 1).unwrap_or("").trim().to_string()).collect()
    }

    #[tokio::test]
    async fn exists_is_a_value_anywhere() {
        assert_eq!(column(&answer("SELECT EXISTS (SELECT 1 FROM t WHERE b > 2) AS v").await, 0), ["true"]);
        assert_eq!(column(&answer("SELECT NOT EXISTS (SELECT 1 FROM t WHERE b > 5) AS v").await, 0), ["true"]);
        // Correlated on an equality (DataFusion) and on an inequality (ebb).
        let eq = answer("SELECT a, EXISTS (SELECT 1 FROM t AS x WHERE x.b = t.a) AS v FROM t ORDER BY a").await;
        assert_eq!(column(&eq, 1), ["true", "true", "true"], "{eq}");
        let lt = answer("SELECT a, EXISTS (SELECT 1 FROM t AS x WHERE x.b < t.b) AS v FROM t ORDER BY a").await;
        assert_eq!(column(&lt, 1), ["true", "true", "false"], "{lt}");
        let case = answer("SELECT a, CASE WHEN EXISTS (SELECT 1 FROM t AS x WHERE x.a = t.a + 1) THEN 'next' ELSE 'last' END AS v FROM t ORDER BY a").await;
        assert_eq!(column(&case, 1), ["next", "next", "last"], "{case}");
        // WHERE EXISTS stays DataFusion's semi join.
        let semi = answer("SELECT a AS v FROM t WHERE EXISTS (SELECT 1 FROM t AS x WHERE x.b = t.a) ORDER BY a").await;
        assert_eq!(semi.lines().filter(|l| l.starts_with("| ")).count(), 4, "{semi}");
    }
}
