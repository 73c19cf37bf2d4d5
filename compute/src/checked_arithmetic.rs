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

use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, cast};
use datafusion::optimizer::AnalyzerRule;

/// The analyzer rule; add it after DataFusion's rules.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl AnalyzerRule for CheckedArithmetic {
    fn name(&self) -> &str {
        "ebb_checked_arithmetic"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            if !node.expressions().iter().any(|e| e.exists(|x| Ok(arithmetic(x).is_some())).unwrap_or(true)) {
                return Ok(Transformed::no(node));
            }
            let schema = if node.inputs().is_empty() { node.schema().as_ref().clone() } else { merge_schema(&node.inputs()) };
            let names = NamePreserver::new(&node);
            node.map_expressions(|e| {
                let name = names.save(&e);
                Ok(checked(e, &schema)?.update_data(|e| name.restore(e)))
            })
        })
        .map(|t| t.data)
    }
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
