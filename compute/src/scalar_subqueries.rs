//! Correlated scalar subqueries that are not aggregates.
//!
//! `SELECT id, (SELECT name FROM owners o WHERE o.id = t.owner) FROM t` is
//! everyday SQL; PostgreSQL runs it and fails only if the subquery returns
//! more than one row. DataFusion refuses it at planning ("Correlated scalar
//! subquery must be aggregated") because it decorrelates such subqueries
//! into grouped joins. This analyzer rule gives it what it asks for: the
//! subquery's one value becomes [`single_value`], an aggregate that returns
//! the only row's value (NULL for none) and fails with PostgreSQL's error
//! for a second row, so the answer is PostgreSQL's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, LogicalPlanBuilder, Signature, Subquery, Volatility};
use datafusion::optimizer::AnalyzerRule;

/// The aggregate's name.
pub const SINGLE_VALUE: &str = "ebb_single_value";

/// PostgreSQL's message for a scalar subquery with several rows (SQLSTATE 21000).
pub const MORE_THAN_ONE_ROW: &str = "more than one row returned by a subquery used as an expression";

/// The analyzer rule; add it after DataFusion's rules (it runs before the
/// final plan checks).
#[derive(Debug, Default)]
pub struct SingleValueSubqueries;

impl AnalyzerRule for SingleValueSubqueries {
    fn name(&self) -> &str {
        "ebb_single_value_subqueries"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| {
                e.transform_up(|e| match e {
                    Expr::ScalarSubquery(s) if !s.outer_ref_columns.is_empty() => match aggregated(&s.subquery)? {
                        Some(inner) => Ok(Transformed::yes(Expr::ScalarSubquery(Subquery { subquery: Arc::new(inner), ..s }))),
                        None => Ok(Transformed::no(Expr::ScalarSubquery(s))),
                    },
                    other => Ok(Transformed::no(other)),
                })
            })
        })
        .map(|t| t.data)
    }
}

/// `Projection(e) ← input` as `Projection(v AS name) ← Aggregate(single_value(e) AS v) ← input`,
/// when the subquery is a plain projection of one value that may return
/// several rows.
fn aggregated(inner: &LogicalPlan) -> DfResult<Option<LogicalPlan>> {
    let LogicalPlan::Projection(p) = inner else { return Ok(None) };
    let [e] = p.expr.as_slice() else { return Ok(None) };
    let outer = |x: &Expr| matches!(x, Expr::OuterReferenceColumn(..));
    if inner.max_rows().is_some_and(|n| n <= 1) || matches!(p.input.as_ref(), LogicalPlan::Aggregate(_)) || e.exists(|x| Ok(outer(x)))? {
        return Ok(None);
    }
    let (qualifier, field) = p.schema.qualified_field(0);
    let value = AggregateUDF::from(SingleValue::new()).call(vec![e.clone().unalias()]).alias("single_value");
    let plan = LogicalPlanBuilder::from(p.input.as_ref().clone())
        .aggregate(Vec::<Expr>::new(), vec![value])?
        .project(vec![Expr::Column("single_value".into()).alias_qualified(qualifier.cloned(), field.name())])?
        .build()?;
    Ok(Some(plan))
}

/// The value of the only row; NULL without rows; an error for a second row.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SingleValue {
    signature: Signature,
}

impl SingleValue {
    fn new() -> Self {
        Self { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl AggregateUDFImpl for SingleValue {
    fn name(&self) -> &str {
        SINGLE_VALUE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        args.first().cloned().ok_or_else(|| DataFusionError::Plan(format!("{SINGLE_VALUE} takes one argument")))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> DfResult<Box<dyn Accumulator>> {
        Ok(Box::new(SingleValueAccumulator { value: ScalarValue::try_from(args.return_field.data_type())?, rows: 0 }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> DfResult<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(args.return_field.as_ref().clone().with_name(format!("{}[value]", args.name)).with_nullable(true)),
            Arc::new(Field::new(format!("{}[rows]", args.name), DataType::UInt64, false)),
        ])
    }
}

#[derive(Debug)]
struct SingleValueAccumulator {
    value: ScalarValue,
    rows: u64,
}

impl SingleValueAccumulator {
    /// Takes `rows` more rows, the first of them (if any is the first at all) `first`.
    fn take(&mut self, rows: u64, first: impl FnOnce() -> DfResult<ScalarValue>) -> DfResult<()> {
        if rows == 0 {
            return Ok(());
        }
        if self.rows + rows > 1 {
            return Err(DataFusionError::Execution(MORE_THAN_ONE_ROW.into()));
        }
        self.value = first()?;
        self.rows += rows;
        Ok(())
    }
}

impl Accumulator for SingleValueAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let values = &values[0];
        self.take(values.len() as u64, || ScalarValue::try_from_array(values, 0))
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let (values, rows) = (&states[0], states[1].as_primitive::<UInt64Type>());
        for i in 0..rows.len() {
            self.take(rows.value(i), || ScalarValue::try_from_array(values, i))?;
        }
        Ok(())
    }

    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        Ok(vec![self.value.clone(), ScalarValue::UInt64(Some(self.rows))])
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.value.size() - std::mem::size_of_val(&self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, UInt64Array};

    #[test]
    fn one_row_is_its_value_none_is_null_two_fail() {
        let mut acc = SingleValueAccumulator { value: ScalarValue::Int32(None), rows: 0 };
        acc.update_batch(&[Arc::new(Int32Array::from(Vec::<i32>::new())) as ArrayRef]).expect("no rows");
        assert_eq!(acc.evaluate().expect("value"), ScalarValue::Int32(None));
        acc.update_batch(&[Arc::new(Int32Array::from(vec![7])) as ArrayRef]).expect("one row");
        assert_eq!(acc.evaluate().expect("value"), ScalarValue::Int32(Some(7)));
        let e = acc.update_batch(&[Arc::new(Int32Array::from(vec![Option::<i32>::None])) as ArrayRef]).expect_err("a second row, even NULL");
        assert!(e.to_string().contains(MORE_THAN_ONE_ROW), "{e}");
        // Partial states merge the same way.
        let mut merged = SingleValueAccumulator { value: ScalarValue::Int32(None), rows: 0 };
        let states: Vec<ArrayRef> = vec![Arc::new(Int32Array::from(vec![None, Some(3)])), Arc::new(UInt64Array::from(vec![0, 1]))];
        merged.merge_batch(&states).expect("one row in all");
        assert_eq!(merged.evaluate().expect("value"), ScalarValue::Int32(Some(3)));
        assert!(merged.merge_batch(&states).is_err(), "a second row from another part");
    }
}
