//! Types of `$n` parameters that DataFusion leaves unknown but PostgreSQL
//! infers: the target of a cast (`$1::int`, `CAST($1 AS date)`) and an
//! argument of a function that takes one fixed type (`pg_sleep($1)`).
//!
//! DataFusion infers a parameter's type only beside a column (`a = $1`,
//! `a IN ($1)`, `LIMIT $1`). Drivers that bind typed values (tokio-postgres,
//! asyncpg, JDBC's `setInt`) check them against the types the server
//! announces, and refuse to bind an `int` to an unknown parameter.

use std::collections::HashMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{Cast, Placeholder, TryCast};
use datafusion::logical_expr::{Expr, LogicalPlan, TypeSignature};

/// Types for parameters of `plan` found in their context (first found
/// wins), by placeholder id (`$1`).
pub fn from_context(plan: &LogicalPlan) -> HashMap<String, DataType> {
    let mut found = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                note(e, &mut found);
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

fn note(e: &Expr, found: &mut HashMap<String, DataType>) {
    match e {
        Expr::Cast(Cast { expr, field }) => untyped(expr, field.data_type(), found),
        Expr::TryCast(TryCast { expr, field }) => untyped(expr, field.data_type(), found),
        Expr::ScalarFunction(f) => {
            let fixed: Option<Vec<DataType>> = match &f.func.signature().type_signature {
                TypeSignature::Exact(types) if types.len() == f.args.len() => Some(types.clone()),
                TypeSignature::Uniform(n, types) if *n == f.args.len() && types.len() == 1 => Some(vec![types[0].clone(); *n]),
                _ => None,
            };
            for (arg, t) in f.args.iter().zip(fixed.iter().flatten()) {
                untyped(arg, t, found);
            }
        }
        _ => {}
    }
}

/// Notes `t` for `e` if it is a placeholder of no type yet.
fn untyped(e: &Expr, t: &DataType, found: &mut HashMap<String, DataType>) {
    if let Expr::Placeholder(Placeholder { id, field: None }) = e {
        found.entry(id.clone()).or_insert_with(|| t.clone());
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn inferred(sql: &str) -> Vec<(String, DataType)> {
        let ctx = SessionContext::new();
        ctx.register_udf(crate::pg_sleep::pg_sleep_udf());
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let mut v: Vec<_> = from_context(&plan).into_iter().collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn casts_and_fixed_argument_types_give_parameters_their_types() {
        assert_eq!(inferred("SELECT $1::int + 1, CAST($2 AS date)").await, [("$1".into(), DataType::Int32), ("$2".into(), DataType::Date32)]);
        assert_eq!(inferred("SELECT pg_sleep($1)").await, [("$1".into(), DataType::Float64)]);
        assert_eq!(inferred("SELECT * FROM (VALUES (1)) t(a) WHERE a = (SELECT $1::bigint)").await, [("$1".into(), DataType::Int64)], "in subqueries too");
        assert_eq!(inferred("SELECT $1").await, [], "no context, no type");
    }
}
