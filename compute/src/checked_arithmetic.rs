//! Integer arithmetic that fails on overflow, as PostgreSQL's does.
//!
//! DataFusion adds, subtracts and multiplies integers with wrapping
//! arithmetic: `2147483647::int + 1::int` is `-2147483648`, and
//! `UPDATE t SET v = v * 2` could store a wrapped value without a word.
//! PostgreSQL fails with 22003 ("integer out of range"). This analyzer rule
//! (after DataFusion's type coercion, which gives both operands one type)
//! computes `a op b` of integers in a wider type and casts the result back:
//! `CAST(CAST(a AS BIGINT) op CAST(b AS BIGINT) AS INT)` for smallint and
//! integer, through `numeric(38,0)` for bigint. The cast back fails for a
//! result out of range, which the compute reports as 22003.
//!
//! `sum` of bigint wraps in DataFusion too; in PostgreSQL it is `numeric`
//! (`sum` of smallint and integer is bigint, which DataFusion widens to as
//! well). So `sum(bigint)` sums `numeric(38,0)` here, and the plans above it
//! take the new type.

use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, cast};
use datafusion::optimizer::AnalyzerRule;
use datafusion::optimizer::analyzer::type_coercion::TypeCoercion;

/// The analyzer rule; add it after DataFusion's rules.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl AnalyzerRule for CheckedArithmetic {
    fn name(&self) -> &str {
        "ebb_checked_arithmetic"
    }

    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let mut retyped = false;
        let plan = plan
            .transform_up_with_subqueries(|node| {
                let rewrites = |e: &Expr| e.exists(|x| Ok(arithmetic(x).is_some() || is_sum(x))).unwrap_or(true);
                if !node.expressions().iter().any(rewrites) {
                    return Ok(Transformed::no(node));
                }
                let schema = if node.inputs().is_empty() { node.schema().as_ref().clone() } else { merge_schema(&node.inputs()) };
                let names = NamePreserver::new(&node);
                let t = node.map_expressions(|e| {
                    let name = names.save(&e);
                    let t = checked(e, &schema)?.transform_data(|e| numeric_sums(e, &schema))?;
                    Ok(t.update_data(|e| name.restore(e)))
                })?;
                if t.transformed && matches!(t.data, LogicalPlan::Aggregate(_)) {
                    retyped = true;
                    return t.map_data(|n| n.recompute_schema());
                }
                Ok(t)
            })?
            .data;
        if !retyped {
            return Ok(plan);
        }
        // A sum changed type: the plans above it coerce to the new one.
        TypeCoercion::new().analyze(plan, config)
    }
}

/// Whether the rule may change a result type of `plan` (it has a `sum`).
pub fn may_retype(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        found |= node.expressions().iter().any(|e| e.exists(|x| Ok(is_sum(x))).unwrap_or(true));
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// Whether `e` is a call of `sum`.
fn is_sum(e: &Expr) -> bool {
    matches!(e, Expr::AggregateFunction(f) if f.func.name() == "sum")
}

/// `sum(bigint)` as `sum(numeric(38,0))`, PostgreSQL's `numeric` result.
fn numeric_sums(e: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    e.transform_up(|e| match e {
        Expr::AggregateFunction(mut f) if f.func.name() == "sum" && f.params.args.len() == 1 => {
            // DataFusion sums smaller integers as `sum(CAST(x AS Int64))`: bigint, as in PostgreSQL.
            let widened = matches!(&f.params.args[0], Expr::Cast(c) if c.expr.get_type(schema).is_ok_and(|t| t != DataType::Int64 && t != DataType::UInt64));
            if widened || !matches!(f.params.args[0].get_type(schema), Ok(DataType::Int64 | DataType::UInt64)) {
                return Ok(Transformed::no(Expr::AggregateFunction(f)));
            }
            let arg = f.params.args.remove(0);
            f.params.args.push(cast(arg, DataType::Decimal128(38, 0)));
            Ok(Transformed::yes(Expr::AggregateFunction(f)))
        }
        other => Ok(Transformed::no(other)),
    })
}

/// The operands of `+`, `-` or `*`.
fn arithmetic(e: &Expr) -> Option<(&Expr, Operator, &Expr)> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Plus | Operator::Minus | Operator::Multiply), right }) => Some((left, *op, right)),
        _ => None,
    }
}

/// The type integer arithmetic of `t` is computed in, if `t` is an integer type.
fn wider(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => Some(DataType::Int64),
        DataType::Int64 | DataType::UInt64 => Some(DataType::Decimal128(38, 0)),
        _ => None,
    }
}

/// `e` with its integer arithmetic checked (`schema`: what its columns refer to).
pub fn checked(e: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    e.transform_up(|e| {
        let Some((left, op, right)) = arithmetic(&e) else { return Ok(Transformed::no(e)) };
        // Operands whose type cannot be told here are left as they are.
        let (Ok(lt), Ok(rt)) = (left.get_type(schema), right.get_type(schema)) else { return Ok(Transformed::no(e)) };
        let Some(w) = wider(&lt).filter(|_| lt == rt) else { return Ok(Transformed::no(e)) };
        let widened = Expr::BinaryExpr(BinaryExpr::new(Box::new(cast(left.clone(), w.clone())), op, Box::new(cast(right.clone(), w))));
        Ok(Transformed::yes(cast(widened, lt)))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn context() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.add_analyzer_rule(Arc::new(CheckedArithmetic));
        ctx.sql("CREATE TABLE n (i INT, s SMALLINT, b BIGINT) AS VALUES (2147483647, CAST(32767 AS SMALLINT), 9223372036854775807)")
            .await
            .expect("table")
            .collect()
            .await
            .expect("create");
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> DfResult<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn overflow_fails_instead_of_wrapping() {
        let ctx = context().await;
        for sql in ["SELECT i + i FROM n", "SELECT s * s FROM n", "SELECT b + b FROM n", "SELECT -i - i FROM n", "SELECT b * 2 FROM n"] {
            let e = run(&ctx, sql).await.expect_err(sql);
            assert!(e.to_string().contains("cast") || e.to_string().contains("Cast"), "{sql}: {e}");
        }
    }

    #[tokio::test]
    async fn sums_of_bigint_are_numeric() {
        let ctx = context().await;
        let batches = ctx.sql("SELECT sum(b) AS total, sum(i) AS small, sum(b) + 1 AS more FROM (SELECT b, i FROM n UNION ALL SELECT b, i FROM n) AS twice").await.expect("plan").collect().await.expect("no wrap-around");
        let schema = batches[0].schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Decimal128(38, 0));
        assert_eq!(schema.field(1).data_type(), &DataType::Int64, "sum(integer) is bigint");
        let out = pretty_format_batches(&batches).expect("format").to_string();
        assert!(out.contains("18446744073709551614"), "{out}");
        assert!(out.contains("18446744073709551615"), "{out}");
    }

    #[tokio::test]
    async fn results_in_range_keep_their_type_and_name() {
        let ctx = context().await;
        let out = run(&ctx, "SELECT i - 1, s - s, b - 1, i + 1.5 FROM n").await.expect("in range");
        assert!(out.contains("| 2147483646 "), "{out}");
        assert!(out.contains("| 9223372036854775806 "), "{out}");
        assert!(out.contains("n.i - Int64(1)"), "names are kept:\n{out}");
        let batches = ctx.sql("SELECT i - i AS d, s - s AS t FROM n").await.expect("plan").collect().await.expect("run");
        let schema = batches[0].schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Int32, "integer - integer is integer");
        assert_eq!(schema.field(1).data_type(), &DataType::Int16, "smallint - smallint is smallint");
    }
}
