//! Aggregates without GROUP BY over one storage table, computed in storage.
//!
//! `SELECT count(*), sum(abalance) FROM accounts [WHERE <pushed filters>]`
//! otherwise ships every row's values to the compute to add them up. This
//! optimizer rule (it runs after DataFusion's own, so filters and
//! projections are already pushed into the scan) replaces such an
//! `Aggregate ← TableScan` with a scan of [`StorageAggregates`], whose one
//! row storage computes (see `storage/src/engine/scan_aggregate.rs`). Only
//! what storage computes exactly as DataFusion would is taken: `count(*)`,
//! `count(col)`, `sum` of smallint/integer (bigint), `min`/`max` of integer
//! columns, none DISTINCT, filtered or ordered. `EXPLAIN` shows the
//! aggregates on the `StorageScanExec`.

use std::any::Any;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::default_table_source::{provider_as_source, source_as_provider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result as DfResult, TableReference};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::expr::{AggregateFunction as AggregateCall, Cast};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;
use ebb_proto::storage::{Aggregate as StorageAggregate, AggregateFunction};

use crate::sql::dml::ROWID;
use crate::table::StorageTable;

/// The optimizer rule; add it after DataFusion's rules.
#[derive(Debug, Default)]
pub struct AggregatePushdown;

impl OptimizerRule for AggregatePushdown {
    fn name(&self) -> &str {
        "ebb_aggregate_pushdown"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> DfResult<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else { return Ok(Transformed::no(plan)) };
        match pushed(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The replacement of `aggregate`, if storage can compute all of it.
fn pushed(aggregate: &Aggregate) -> DfResult<Option<LogicalPlan>> {
    if !aggregate.group_expr.is_empty() || aggregate.aggr_expr.is_empty() {
        return Ok(None);
    }
    let LogicalPlan::TableScan(scan) = aggregate.input.as_ref() else { return Ok(None) };
    if scan.fetch.is_some() {
        return Ok(None);
    }
    let Ok(provider) = source_as_provider(&scan.source) else { return Ok(None) };
    let Ok(table) = (provider as Arc<dyn Any + Send + Sync>).downcast::<StorageTable>() else { return Ok(None) };
    let table_schema = TableProvider::schema(table.as_ref());
    let mut aggregates = Vec::with_capacity(aggregate.aggr_expr.len());
    for (e, field) in aggregate.aggr_expr.iter().zip(aggregate.schema.fields()) {
        let Some((call, output)) = storage_aggregate(e, &table_schema) else { return Ok(None) };
        if field.data_type() != &output {
            return Ok(None);
        }
        aggregates.push(call);
    }
    let Some(filters) = table.predicates(&scan.filters) else { return Ok(None) };
    let fields: Vec<Field> = aggregate.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let source = StorageAggregates { table, aggregates, filters, schema: Arc::new(Schema::new(fields)) };
    // DataFusion tells scans apart by name, projection and filters, not by
    // their source: two such scans of one table under one name (two
    // subqueries counting different rows) would be taken for one common
    // expression. The name says what is computed.
    let computed: Vec<String> = aggregate.aggr_expr.iter().map(|e| e.schema_name().to_string()).collect();
    let condition: Vec<String> = scan.filters.iter().map(|f| f.to_string()).collect();
    let relation = TableReference::bare(format!("{}: {} where [{}]", scan.table_name, computed.join(", "), condition.join(" AND ")));
    // Same names and qualifiers as the aggregate's output, for the plan above.
    let outputs: Vec<Expr> = aggregate
        .schema
        .iter()
        .map(|(qualifier, field)| {
            Expr::Column(Column::new(Some(relation.clone()), field.name())).alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    let plan = LogicalPlanBuilder::scan(relation, provider_as_source(Arc::new(source)), None)?.project(outputs)?.build()?;
    Ok(Some(plan))
}

/// `e` as a storage aggregate and its result type, if storage computes it.
fn storage_aggregate(e: &Expr, table: &Schema) -> Option<(StorageAggregate, DataType)> {
    let Expr::AggregateFunction(AggregateCall { func, params }) = e.clone().unalias() else { return None };
    if params.distinct || params.filter.is_some() || !params.order_by.is_empty() || params.args.len() != 1 {
        return None;
    }
    let column = match &params.args[0] {
        // `count(*)` is planned as `count(1)`.
        Expr::Literal(v, _) if func.name() == "count" && !v.is_null() => None,
        Expr::Column(c) if c.name != ROWID => Some((c.name.clone(), table.field_with_name(&c.name).ok()?.data_type().clone())),
        // `sum(int)` is planned as `sum(CAST(int AS BIGINT))`: widening is what storage does.
        Expr::Cast(Cast { expr, field }) if func.name() == "sum" && field.data_type() == &DataType::Int64 => match expr.as_ref() {
            Expr::Column(c) => Some((c.name.clone(), table.field_with_name(&c.name).ok()?.data_type().clone())),
            _ => return None,
        },
        _ => return None,
    };
    let call = |function: AggregateFunction, column: &str| StorageAggregate { function: function as i32, column: column.to_string() };
    let integer = |ty: &DataType| matches!(ty, DataType::Int16 | DataType::Int32 | DataType::Int64);
    match (func.name(), column) {
        ("count", None) => Some((call(AggregateFunction::CountRows, ""), DataType::Int64)),
        ("count", Some((c, _))) => Some((call(AggregateFunction::Count, &c), DataType::Int64)),
        ("sum", Some((c, DataType::Int16 | DataType::Int32))) => Some((call(AggregateFunction::Sum, &c), DataType::Int64)),
        ("min", Some((c, ty))) if integer(&ty) => Some((call(AggregateFunction::Min, &c), ty)),
        ("max", Some((c, ty))) if integer(&ty) => Some((call(AggregateFunction::Max, &c), ty)),
        _ => None,
    }
}

/// The one-row answer of aggregates over a storage table, as a table.
#[derive(Debug)]
pub struct StorageAggregates {
    table: Arc<StorageTable>,
    aggregates: Vec<StorageAggregate>,
    /// Pushed filters of the original scan.
    filters: Vec<ebb_proto::storage::Predicate>,
    /// One column per aggregate, named as the aggregate's output.
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for StorageAggregates {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) if !p.is_empty() => p.clone(),
            // No column wanted (`SELECT 1 FROM (SELECT count(*) …)`): still one row.
            Some(_) => vec![0],
            None => (0..self.aggregates.len()).collect(),
        };
        let aggregates = wanted.iter().map(|&i| self.aggregates[i].clone()).collect();
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        Ok(self.table.aggregate_exec(self.filters.clone(), aggregates, schema))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebb_proto::storage::TypeKind;

    /// The optimized plan of `sql` over `t (a int, b text, v bigint, s smallint)`.
    async fn optimized(sql: &str) -> String {
        use TypeKind::*;
        let ctx = crate::test_support::context_with(crate::test_support::table_def("t", &[("a", Integer), ("b", Text), ("v", Bigint), ("s", Smallint)], &["a"]));
        ctx.add_optimizer_rule(Arc::new(AggregatePushdown));
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        ctx.state().optimize(&plan).expect("optimize").display_indent().to_string()
    }

    #[tokio::test]
    async fn whole_table_aggregates_go_to_storage() {
        for sql in [
            "SELECT count(*), sum(a) FROM t",
            "SELECT count(b), min(v), max(s), sum(s) FROM t WHERE a > 5 AND b = 'x'",
            "SELECT count(*) + 1 FROM t",
            "SELECT (SELECT count(*) FROM t) AS n",
        ] {
            let plan = optimized(sql).await;
            assert!(!plan.contains("Aggregate:"), "{sql}:\n{plan}");
        }
    }

    #[tokio::test]
    async fn what_storage_cannot_compute_stays_in_datafusion() {
        for sql in [
            "SELECT count(*) FROM t GROUP BY b",
            "SELECT sum(v) FROM t",
            "SELECT avg(a) FROM t",
            "SELECT count(DISTINCT a) FROM t",
            "SELECT count(*) FILTER (WHERE a > 1) FROM t",
            "SELECT min(b) FROM t",
            "SELECT count(*) FROM t WHERE a + 1 > 5",
            "SELECT count(*), sum(v) FROM t",
        ] {
            let plan = optimized(sql).await;
            assert!(plan.contains("Aggregate:"), "{sql}:\n{plan}");
        }
    }
}
