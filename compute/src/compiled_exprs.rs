//! Expressions over a row and a statement's parameters, compiled once per
//! session instead of once per execution.
//!
//! A point read that computes (`UPDATE t SET v = v + $1 WHERE k = $2` reads
//! `v + $1`) and an INSERT of one row of parameters (`VALUES ($1, $2,
//! CURRENT_TIMESTAMP)`) used to bind their parameters as constants and then
//! run DataFusion's type coercion, simplifier and physical planner on every
//! execution — more CPU than the statement's storage round trip. Here each
//! parameter, and `now()`, becomes a column of the expressions' input
//! instead of a constant, so one compiled form serves every execution: a
//! run only builds a batch of the row, the parameter values and the
//! statement's start time, and evaluates.
//!
//! Expressions that cannot be compiled that way — a subquery, an untyped
//! NULL parameter, or a stable function other than `now()` (its value is
//! fixed at planning, which would freeze it) — are answered `None`, and the
//! caller takes its general path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Volatility};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::session::param_position;

/// How many compiled forms (by hash) a session keeps (a session runs a
/// handful of statement shapes; the map is emptied when it fills).
const KEPT: usize = 64;

/// The name of the input column that holds parameter `$n` (0-based `i`),
/// and of the one that holds `now()`. A NUL cannot be in a PostgreSQL
/// identifier, so no table column has these names.
fn param_column(i: usize) -> String {
    format!("\0${}", i + 1)
}
const NOW_COLUMN: &str = "\0now";

/// Expressions compiled against a row's columns, the parameters they use
/// and `now()`.
#[derive(Debug)]
pub struct Compiled {
    /// The input: the row's columns, then one column per parameter used, then `now()` if used.
    input: SchemaRef,
    /// The row's column count (the input's leading columns).
    row_columns: usize,
    /// The 0-based positions of the parameters in the input, in input order.
    params: Vec<usize>,
    /// The type of `now()`, if the expressions call it.
    now: Option<DataType>,
    exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl Compiled {
    /// Compiles `exprs` over rows described by `row`, with parameters of
    /// `param_types`; `None` if they cannot be compiled apart from their
    /// parameters' values (see the module's notes).
    fn compile(exprs: &[Expr], row: &DFSchemaRef, param_types: &[DataType], state: &SessionState) -> Result<Option<Self>> {
        let mut used = Vec::new();
        let mut now = None;
        let mut refused = false;
        let mut rewritten = Vec::with_capacity(exprs.len());
        for e in exprs {
            let r = e.clone().transform_up(|e| match &e {
                Expr::Placeholder(p) => match param_position(&p.id).and_then(|i| Some((i, param_types.get(i)?))) {
                    Some((i, ty)) if *ty != DataType::Null => {
                        if !used.contains(&i) {
                            used.push(i);
                        }
                        Ok(Transformed::yes(Expr::Column(param_column(i).into())))
                    }
                    _ => {
                        refused = true;
                        Ok(Transformed::no(e))
                    }
                },
                Expr::ScalarFunction(f) if f.func.name() == "now" && f.args.is_empty() => {
                    now = Some(e.get_type(&DFSchema::empty())?);
                    Ok(Transformed::yes(Expr::Column(NOW_COLUMN.into())))
                }
                Expr::ScalarFunction(f) if f.func.signature().volatility == Volatility::Stable => {
                    refused = true;
                    Ok(Transformed::no(e))
                }
                Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_) | Expr::OuterReferenceColumn(..) => {
                    refused = true;
                    Ok(Transformed::no(e))
                }
                _ => Ok(Transformed::no(e)),
            })?;
            rewritten.push(r.data);
        }
        if refused {
            return Ok(None);
        }
        used.sort_unstable();
        let mut extra: Vec<Field> = used.iter().map(|&i| Field::new(param_column(i), param_types[i].clone(), true)).collect();
        if let Some(ty) = &now {
            extra.push(Field::new(NOW_COLUMN, ty.clone(), false));
        }
        let input = Arc::new(row.join(&DFSchema::from_unqualified_fields(extra.into(), Default::default())?)?);
        let compiled = rewritten
            .into_iter()
            .map(|e| Ok(state.create_physical_expr(simplified(e, &input, state)?, &input)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Self { input: Arc::new(input.as_arrow().clone()), row_columns: row.fields().len(), params: used, now, exprs: compiled }))
    }

    /// Evaluates the expressions over `rows` rows of `columns` (the row's
    /// columns), with `params` bound and `now()` the statement's start.
    pub fn evaluate(&self, columns: &[ArrayRef], rows: usize, params: &[ScalarValue], state: &SessionState) -> Result<Vec<ArrayRef>> {
        let mut input = Vec::with_capacity(self.input.fields().len());
        input.extend_from_slice(&columns[..self.row_columns.min(columns.len())]);
        for &i in &self.params {
            let value = params.get(i).ok_or_else(|| crate::error::ComputeError::Internal(format!("no value for parameter ${}", i + 1)))?;
            input.push(value.to_array_of_size(rows)?);
        }
        if let Some(DataType::Timestamp(_, tz)) = &self.now {
            let start = state.execution_props().query_execution_start_time;
            input.push(ScalarValue::TimestampNanosecond(start.and_then(|t| t.timestamp_nanos_opt()), tz.clone()).to_array_of_size(rows)?);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(self.input.clone(), input, &options)?;
        self.exprs.iter().map(|e| Ok(e.evaluate(&batch)?.into_array(rows)?)).collect()
    }
}

/// `e` type-coerced over `schema`, rewritten by ebb's analyzer rules that
/// apply to expressions (text casts, checked arithmetic) and simplified as
/// DataFusion's optimizer would: some functions only run in their
/// simplified form (`coalesce` becomes CASE).
pub(crate) fn simplified(e: Expr, schema: &DFSchemaRef, state: &SessionState) -> Result<Expr> {
    let context = SimplifyContext::builder()
        .with_schema(schema.clone())
        .with_config_options(state.config_options().clone())
        .with_query_execution_start_time(state.execution_props().query_execution_start_time)
        .build();
    let simplifier = ExprSimplifier::new(context);
    let coerced = simplifier.coerce(e, schema)?;
    let texts = crate::text_casts::rewrite(coerced, schema)?.data;
    let checked = crate::checked_arithmetic::checked(texts, schema)?.data;
    Ok(simplifier.simplify(checked)?)
}

/// One compiled form (`None`: the expressions cannot be compiled; the
/// caller's general path runs them) and what it was compiled from: the
/// expressions, the row they read and the parameters' types.
#[derive(Debug)]
struct Kept {
    exprs: Vec<Expr>,
    row: DFSchemaRef,
    params: Vec<DataType>,
    compiled: Option<Arc<Compiled>>,
}

impl Kept {
    fn is_for(&self, exprs: &[Expr], row: &DFSchema, params: &[ScalarValue]) -> bool {
        self.exprs == exprs && *self.row == *row && self.params.len() == params.len() && self.params.iter().zip(params).all(|(t, p)| *t == p.data_type())
    }
}

/// The hash of what a compiled form depends on: a run looks its form up
/// without copying the expressions.
fn key_hash(exprs: &[Expr], row: &DFSchema, params: &[ScalarValue]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    exprs.hash(&mut h);
    row.hash(&mut h);
    for p in params {
        p.data_type().hash(&mut h);
    }
    h.finish()
}

/// A session's compiled expressions, by the hash of what they were
/// compiled from.
#[derive(Debug, Default)]
pub struct ExprCache {
    kept: Mutex<HashMap<u64, Vec<Kept>>>,
}

impl ExprCache {
    /// `exprs` over rows described by `row`, compiled for parameters of the
    /// types of `params`: kept from an earlier execution, or compiled now.
    pub fn get(&self, exprs: &[Expr], row: &DFSchemaRef, params: &[ScalarValue], state: &SessionState) -> Result<Option<Arc<Compiled>>> {
        let hash = key_hash(exprs, row, params);
        if let Some(kept) = self.lock().get(&hash).and_then(|same| same.iter().find(|k| k.is_for(exprs, row, params))) {
            return Ok(kept.compiled.clone());
        }
        let types: Vec<DataType> = params.iter().map(ScalarValue::data_type).collect();
        let compiled = Compiled::compile(exprs, row, &types, state)?.map(Arc::new);
        let mut kept = self.lock();
        if kept.len() >= KEPT {
            kept.clear();
        }
        let entry = Kept { exprs: exprs.to_vec(), row: row.clone(), params: types, compiled: compiled.clone() };
        kept.entry(hash).or_default().push(entry);
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Kept>>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The row of a VALUES list: no columns.
static NO_ROW: std::sync::LazyLock<DFSchemaRef> = std::sync::LazyLock::new(|| Arc::new(DFSchema::empty()));

/// A plan of one row of VALUES (`VALUES ($1, $2, now())`, an INSERT's
/// source) evaluated by compiled expressions; `None` for any other plan, or
/// one whose expressions cannot be compiled.
pub fn values_row(plan: &LogicalPlan, params: &[ScalarValue], state: &SessionState, cache: &ExprCache) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
    let LogicalPlan::Values(values) = plan else { return Ok(None) };
    let [row] = values.values.as_slice() else { return Ok(None) };
    let Some(compiled) = cache.get(row, &NO_ROW, params, state)? else { return Ok(None) };
    let columns = compiled.evaluate(&[], 1, params, state)?;
    let fields: Vec<Field> = plan.schema().fields().iter().zip(&columns).map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true)).collect();
    let schema = Arc::new(Schema::new(fields));
    Ok(Some((schema.clone(), vec![RecordBatch::try_new(schema, columns)?])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array};
    use arrow::datatypes::{Int64Type, TimestampNanosecondType};
    use datafusion::execution::context::SessionContext;
    use datafusion::logical_expr::{col, lit, placeholder};

    fn row() -> DFSchemaRef {
        Arc::new(DFSchema::try_from(Schema::new(vec![Field::new("v", DataType::Int64, true)])).expect("schema"))
    }

    fn int(n: i64) -> ScalarValue {
        ScalarValue::Int64(Some(n))
    }

    #[test]
    fn one_compiled_form_serves_every_value_of_the_parameters() {
        let state = SessionContext::new().state();
        let cache = ExprCache::default();
        let exprs = [col("v") + placeholder("$2"), placeholder("$1") * lit(2i64)];
        let column: ArrayRef = Arc::new(Int64Array::from(vec![10, 20]));
        let first = cache.get(&exprs, &row(), &[int(3), int(5)], &state).expect("compiles").expect("compilable");
        let again = cache.get(&exprs, &row(), &[int(-1), int(100)], &state).expect("compiles").expect("compilable");
        assert!(Arc::ptr_eq(&first, &again), "kept for parameters of the same types");
        let out = again.evaluate(std::slice::from_ref(&column), 2, &[int(-1), int(100)], &state).expect("evaluates");
        assert_eq!(out[0].as_primitive::<Int64Type>().values(), &[110, 120]);
        assert_eq!(out[1].as_primitive::<Int64Type>().values(), &[-2, -2]);
        let other = cache.get(&exprs, &row(), &[ScalarValue::Int32(Some(1)), int(5)], &state).expect("compiles").expect("compilable");
        assert!(!Arc::ptr_eq(&first, &other), "other parameter types compile anew");
        // Checked arithmetic applies as on the general path.
        let overflow = first.evaluate(&[Arc::new(Int64Array::from(vec![i64::MAX])) as ArrayRef], 1, &[int(0), int(1)], &state);
        assert!(overflow.is_err(), "bigint out of range is an error, not a wrap-around");
    }

    #[test]
    fn now_is_the_statement_start_of_each_run() {
        let mut state = SessionContext::new().state();
        let cache = ExprCache::default();
        let now = datafusion::functions::datetime::expr_fn::now();
        let compiled = cache.get(std::slice::from_ref(&now), &Arc::new(DFSchema::empty()), &[], &state).expect("compiles").expect("compilable");
        for _ in 0..2 {
            state.mark_start_execution();
            let start = state.execution_props().query_execution_start_time.and_then(|t| t.timestamp_nanos_opt());
            let out = compiled.evaluate(&[], 1, &[], &state).expect("evaluates");
            assert_eq!(out[0].as_primitive::<TimestampNanosecondType>().values().first().copied(), start);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    #[test]
    fn what_planning_would_freeze_is_not_compiled() {
        let state = SessionContext::new().state();
        let cache = ExprCache::default();
        let today = datafusion::functions::datetime::expr_fn::current_date();
        assert!(cache.get(&[today], &row(), &[], &state).expect("answers").is_none(), "a stable function other than now()");
        let untyped_null = [col("v") + placeholder("$1")];
        assert!(cache.get(&untyped_null, &row(), &[ScalarValue::Null], &state).expect("answers").is_none());
        assert!(cache.get(&untyped_null, &row(), &[], &state).expect("answers").is_none(), "a missing parameter");
    }

    #[tokio::test]
    async fn a_row_of_values_is_evaluated_with_its_parameters() {
        let ctx = SessionContext::new();
        let state = ctx.state();
        let cache = ExprCache::default();
        let plan = state.create_logical_plan("VALUES ($1, $2 + 1, 'x')").await.expect("plan");
        let (schema, batches) = values_row(&plan, &[int(7), int(41)], &state, &cache).expect("evaluates").expect("one row of VALUES");
        assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["column1", "column2", "column3"]);
        assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(batches[0].column(1).as_primitive::<Int64Type>().value(0), 42);
        assert_eq!(batches[0].column(2).as_string::<i32>().value(0), "x");
        let two = state.create_logical_plan("VALUES (1), (2)").await.expect("plan");
        assert!(values_row(&two, &[], &state, &cache).expect("answers").is_none(), "two rows: the general path");
    }
}
