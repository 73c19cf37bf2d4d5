//! Correlated scalar subqueries that are not aggregates.
//!
//! `SELECT id, (SELECT name FROM owners o WHERE o.id = t.owner) FROM t` is
//! everyday SQL; PostgreSQL runs it and fails only if the subquery returns
//! more than one row. DataFusion refuses it at planning ("Correlated scalar
//! subquery must be aggregated") because it decorrelates such subqueries
//! into grouped joins. This analyzer rule gives it what it asks for: the
//! subquery's one value becomes [`SINGLE_VALUE`], an aggregate that returns
//! the only row's value (NULL for none) and fails with PostgreSQL's error
//! for a second row, so the answer is PostgreSQL's. Conditions on the outer
//! row alone move out of the subquery into a CASE, and a value that reads
//! the outer row too is computed outside it (see `single_valued`): both are
//! in SQLAlchemy's column reflection query.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::functions::core::expr_fn::{get_field, named_struct};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Expr, LogicalPlan, LogicalPlanBuilder, Signature, Subquery, Volatility, lit, when};
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
            let names = NamePreserver::new(&node);
            let t = node.map_expressions(|e| {
                let name = names.save(&e);
                let t = e.transform_up(|e| match e {
                    Expr::ScalarSubquery(s) if !s.outer_ref_columns.is_empty() => match single_valued(&s)? {
                        Some(e) => Ok(Transformed::yes(e)),
                        None => Ok(Transformed::no(Expr::ScalarSubquery(s))),
                    },
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(if t.transformed { Transformed::yes(name.restore(t.data)) } else { t })
            })?;
            if t.transformed { t.map_data(|n| n.recompute_schema()) } else { Ok(t) }
        })
        .map(|t| t.data)
    }
}

/// Whether `e` holds a subquery of any kind.
pub(crate) fn has_subquery(e: &Expr) -> bool {
    e.exists(|x| Ok(matches!(x, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)))).unwrap_or(true)
}

/// An outer reference as the column of the outer query it is.
pub(crate) fn outer_as_column(e: Expr) -> DfResult<Expr> {
    e.transform(|x| match x {
        Expr::OuterReferenceColumn(_, c) => Ok(Transformed::yes(Expr::Column(c))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// A correlated scalar subquery `(SELECT e FROM … WHERE p)` that is a plain
/// projection of one value (no aggregate, possibly several rows), as an
/// expression DataFusion can decorrelate:
///
/// - the value becomes `ebb_single_value(e)`;
/// - conjuncts of `p` that read only the outer row (`outer.flag AND …`)
///   move out into `CASE WHEN outer.flag THEN (…) END` — DataFusion
///   decorrelates only equalities between the two sides;
/// - if `e` reads the outer row too (`outer.a = inner.b`), the subquery
///   yields a struct of the parts of `e` that read only its own rows, and
///   `e` is evaluated outside over the struct's fields, NULL without a row.
///
/// `None` leaves the subquery as it is.
fn single_valued(s: &Subquery) -> DfResult<Option<Expr>> {
    let LogicalPlan::Projection(p) = s.subquery.as_ref() else { return Ok(None) };
    let [e] = p.expr.as_slice() else { return Ok(None) };
    if s.subquery.max_rows().is_some_and(|n| n <= 1) || matches!(p.input.as_ref(), LogicalPlan::Aggregate(_)) {
        return Ok(None);
    }
    if has_subquery(e) {
        return Ok(None);
    }
    let (guard, input) = outer_conjuncts_lifted(p.input.as_ref())?;
    let value = e.clone().unalias();
    let expr = if !value.contains_outer() {
        let (qualifier, field) = p.schema.qualified_field(0);
        let plan = single_value_plan(input, value)?;
        let plan = LogicalPlanBuilder::from(plan).project(vec![Expr::Column("single_value".into()).alias_qualified(qualifier.cloned(), field.name())])?.build()?;
        subquery(plan, s)
    } else {
        let mut parts = Vec::new();
        let placeholder = |i: usize| format!("\u{1}part{i}");
        let over_parts = value
            .transform_down(|x| {
                if matches!(x, Expr::OuterReferenceColumn(..)) {
                    return Ok(Transformed::new(outer_as_column(x)?, true, TreeNodeRecursion::Jump));
                }
                if x.any_column_refs() && !x.contains_outer() {
                    parts.push(x);
                    return Ok(Transformed::new(Expr::Column(placeholder(parts.len() - 1).into()), true, TreeNodeRecursion::Jump));
                }
                Ok(Transformed::no(x))
            })?
            .data;
        let fields = if parts.is_empty() {
            lit(true)
        } else {
            named_struct(parts.into_iter().enumerate().flat_map(|(i, part)| [lit(format!("c{i}")), part]).collect())
        };
        let row = subquery(LogicalPlanBuilder::from(single_value_plan(input, fields)?).project(vec![Expr::Column("single_value".into())])?.build()?, s);
        let over_fields = over_parts
            .transform(|x| match &x {
                Expr::Column(c) if c.relation.is_none() && c.name.starts_with('\u{1}') => {
                    let i = &c.name["\u{1}part".len()..];
                    Ok(Transformed::yes(get_field(row.clone(), format!("c{i}"))))
                }
                _ => Ok(Transformed::no(x)),
            })?
            .data;
        when(row.is_not_null(), over_fields).end()?
    };
    Ok(Some(match guard {
        Some(g) => when(outer_as_column(g)?, expr).end()?,
        None => expr,
    }))
}

/// `Aggregate(single_value(value) AS single_value) ← input`.
fn single_value_plan(input: LogicalPlan, value: Expr) -> DfResult<LogicalPlan> {
    let value = AggregateUDF::from(SingleValue::new()).call(vec![value]).alias("single_value");
    LogicalPlanBuilder::from(input).aggregate(Vec::<Expr>::new(), vec![value])?.build()
}

/// A scalar subquery expression of `plan`, its outer references taken anew.
fn subquery(plan: LogicalPlan, like: &Subquery) -> Expr {
    let outer_ref_columns = plan.all_out_ref_exprs();
    Expr::ScalarSubquery(Subquery { subquery: Arc::new(plan), outer_ref_columns, spans: like.spans.clone() })
}

/// The conjuncts of a filter directly under the projection that read only
/// the outer row (their conjunction), and the input without them.
fn outer_conjuncts_lifted(input: &LogicalPlan) -> DfResult<(Option<Expr>, LogicalPlan)> {
    let LogicalPlan::Filter(f) = input else { return Ok((None, input.clone())) };
    let (outer, inner): (Vec<Expr>, Vec<Expr>) = split_conjunction(&f.predicate).into_iter().cloned().partition(|c| {
        c.contains_outer() && !c.any_column_refs() && !has_subquery(c)
            && !c.is_volatile()
    });
    let Some(guard) = conjunction(outer) else { return Ok((None, input.clone())) };
    let rest = match conjunction(inner) {
        Some(p) => LogicalPlanBuilder::from(f.input.as_ref().clone()).filter(p)?.build()?,
        None => f.input.as_ref().clone(),
    };
    Ok((Some(guard), rest))
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
