//! Result column names as PostgreSQL gives them.
//!
//! DataFusion names an unaliased result column after the whole expression
//! (`count(*)`, `t.v + Int64(1)`); PostgreSQL names it after the function
//! (`count`), the column, the type of a cast of a constant, or `?column?`.
//! Clients read columns by these names (`row.count` in node-pg, dict rows
//! in psycopg), so the names of a query's result follow PostgreSQL's rules
//! (its `FigureColname`). Duplicate names are allowed, as there.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// The name PostgreSQL gives a column without one.
const NO_NAME: &str = "?column?";

/// `schema` (the plan's result) with PostgreSQL's column names, when the
/// plan ends in a projection (under sorts, limits and DISTINCT).
pub fn postgres_schema(plan: &LogicalPlan, schema: &SchemaRef) -> SchemaRef {
    let Some(names) = names(plan) else { return schema.clone() };
    if names.len() != schema.fields().len() || names.iter().zip(schema.fields()).all(|(n, f)| n == f.name()) {
        return schema.clone();
    }
    // Nullable: the plan's schema may be the one before analysis, which
    // takes a scalar subquery's nullability from its column, though a
    // subquery without a row is NULL (PostgreSQL results carry no
    // nullability anyway).
    let fields: Vec<Field> = schema.fields().iter().zip(names).map(|(f, n)| f.as_ref().clone().with_name(n).with_nullable(true)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A result of `plan` with PostgreSQL's column names: the batches are
/// relabelled only when a name changes.
pub fn named_result(plan: &LogicalPlan, schema: SchemaRef, batches: Vec<RecordBatch>) -> arrow::error::Result<(SchemaRef, Vec<RecordBatch>)> {
    let named = postgres_schema(plan, &schema);
    if Arc::ptr_eq(&named, &schema) {
        return Ok((schema, batches));
    }
    let batches = batches
        .iter()
        .map(|b| RecordBatch::try_new_with_options(named.clone(), b.columns().to_vec(), &RecordBatchOptions::new().with_row_count(Some(b.num_rows()))))
        .collect::<arrow::error::Result<Vec<_>>>()?;
    Ok((named, batches))
}

/// The names of the plan's result columns.
fn names(plan: &LogicalPlan) -> Option<Vec<String>> {
    match plan {
        LogicalPlan::Projection(p) => Some(p.expr.iter().map(|e| name(e, &p.input)).collect()),
        LogicalPlan::Sort(s) => names(&s.input),
        LogicalPlan::Limit(l) => names(&l.input),
        LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => names(input),
        _ => None,
    }
}

/// PostgreSQL's name for `e`, a result expression over `input`.
fn name(e: &Expr, input: &LogicalPlan) -> String {
    if let Expr::Alias(a) = e
        && let Some(original) = crate::duplicate_names::original_name(&a.name)
    {
        return if original.is_empty() { name(&a.expr, input) } else { original.to_string() };
    }
    strong_name(e, input).unwrap_or_else(|| match e {
        Expr::Cast(c) => type_name(c.field.data_type()).unwrap_or(NO_NAME).to_string(),
        Expr::TryCast(c) => type_name(c.field.data_type()).unwrap_or(NO_NAME).to_string(),
        _ => NO_NAME.to_string(),
    })
}

/// The name `e` has of its own (an alias, a column, a function, CASE), if any.
fn strong_name(e: &Expr, input: &LogicalPlan) -> Option<String> {
    match e {
        // DataFusion plans `count(*)` as `count(1) AS "count(*)"`.
        Expr::Alias(a) if a.name == "count(*)" => strong_name(&a.expr, input),
        Expr::Alias(a) => Some(a.name.clone()),
        Expr::Column(c) => Some(match computed_by(input, c) {
            Some(origin) => strong_name(origin, input).unwrap_or_else(|| NO_NAME.to_string()),
            None => c.name.clone(),
        }),
        Expr::ScalarFunction(f) => Some(f.name().to_string()),
        Expr::AggregateFunction(f) => Some(f.func.name().to_string()),
        Expr::WindowFunction(f) => Some(f.fun.name().to_string()),
        Expr::Case(_) => Some("case".into()),
        Expr::Exists(_) => Some("exists".into()),
        Expr::OuterReferenceColumn(_, c) => Some(c.name.clone()),
        // A scalar subquery is named after its one result column.
        Expr::ScalarSubquery(s) => names(&s.subquery).and_then(|n| n.into_iter().next()),
        Expr::Cast(c) => strong_name(&c.expr, input),
        Expr::TryCast(c) => strong_name(&c.expr, input),
        _ => None,
    }
}

/// The aggregate, grouping, window or projected expression below `plan`
/// that produces `column` (DataFusion names such columns after the
/// expression; ordering by a column not selected projects twice).
fn computed_by<'a>(plan: &'a LogicalPlan, column: &Column) -> Option<&'a Expr> {
    if column.relation.is_some() {
        return None;
    }
    let named = |e: &&Expr| e.schema_name().to_string() == column.name;
    match plan {
        LogicalPlan::Aggregate(a) => a.group_expr.iter().chain(&a.aggr_expr).find(named),
        LogicalPlan::Window(w) => w.window_expr.iter().find(named).or_else(|| computed_by(&w.input, column)),
        LogicalPlan::Projection(p) => p.expr.iter().find(named),
        LogicalPlan::Filter(f) => computed_by(&f.input, column),
        LogicalPlan::Sort(s) => computed_by(&s.input, column),
        LogicalPlan::Limit(l) => computed_by(&l.input, column),
        _ => None,
    }
}

/// PostgreSQL's name of a type, as a cast of a constant is named.
fn type_name(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Boolean => "bool",
        DataType::Int16 => "int2",
        DataType::Int32 => "int4",
        DataType::Int64 => "int8",
        DataType::Float32 => "float4",
        DataType::Float64 => "float8",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Decimal128(..) | DataType::Decimal256(..) => "numeric",
        DataType::Date32 => "date",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Binary | DataType::LargeBinary => "bytea",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn names_of(sql: &str) -> Vec<String> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a INT, b TEXT) AS VALUES (1, 'x')").await.expect("table").collect().await.expect("create");
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        let schema = Arc::new(plan.schema().as_arrow().clone());
        postgres_schema(&plan, &schema).fields().iter().map(|f| f.name().clone()).collect()
    }

    #[tokio::test]
    async fn names_follow_postgresql() {
        assert_eq!(names_of("SELECT count(*), sum(a), max(a) AS m FROM t").await, ["count", "sum", "m"]);
        assert_eq!(names_of("SELECT t.b, a + 1, upper(b), 1, CAST(a AS BIGINT), CAST('5' AS INT) FROM t").await, [
            "b", "?column?", "upper", "?column?", "a", "int4"
        ]);
        assert_eq!(names_of("SELECT a FROM t").await, ["a"]);
        assert_eq!(names_of("SELECT a + 1, upper(b), b FROM t ORDER BY a").await, ["?column?", "upper", "b"]);
        assert_eq!(names_of("SELECT b, count(*) FROM t GROUP BY b HAVING count(*) > 0 ORDER BY count(*) LIMIT 3").await, ["b", "count"]);
        assert_eq!(names_of("SELECT CASE WHEN a > 0 THEN 1 END, row_number() OVER (ORDER BY a) FROM t").await, ["case", "row_number"]);
        assert_eq!(names_of("SELECT DISTINCT sum(a), sum(a + 0) FROM t").await, ["sum", "sum"]);
        assert_eq!(
            names_of("SELECT (SELECT max(x.a) FROM t x WHERE x.a = t.a), (SELECT x.b FROM t x LIMIT 1), (SELECT 1 + x.a FROM t x LIMIT 1) FROM t").await,
            ["max", "b", "?column?"]
        );
    }
}
