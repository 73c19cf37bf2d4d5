//! Reads of one row by its whole primary key, run without DataFusion.
//!
//! `SELECT a, b FROM t WHERE k = $1` is the statement OLTP clients send
//! most, and UPDATE and DELETE by key read their row the same way (`SELECT
//! <new row> FROM t WHERE k = 5`). DataFusion's optimizer and physical
//! planner cost several times the storage read itself, and add nothing to a
//! plan that is a key lookup and a list of columns or expressions. Such
//! plans are recognised here and become one storage scan with the key as
//! both bounds; expressions are evaluated over the row by DataFusion's
//! expression evaluator. Anything else (other conditions, a key value of
//! another type, NULL, subqueries) takes the general path.
//!
//! A prepared statement's plan is recognised before its parameters are
//! bound (`k = $1` names the parameter), so a run of it binds the key
//! values straight into the storage request instead of rewriting the plan.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchemaRef, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use ebb_proto::storage::{CompareOp, KeyBound, Predicate, ScanRequest, Value, value::Kind};

use crate::compiled_exprs::{ExprCache, simplified};
use crate::error::{ComputeError, Result};
use crate::pushdown;
use crate::row_cache::{CachedRow, RowCache, row_key};
use crate::session::param_position;
use crate::storage_client::expected;
use crate::storage_session::StorageSession;
use crate::table::StorageTable;

/// What the statement returns of the row.
#[derive(Debug, Clone)]
enum Outputs {
    /// Stored columns, by name, in output order.
    Columns(Vec<String>),
    /// Expressions over the table's columns (the row as `scanned` describes it).
    Exprs { exprs: Vec<Expr>, scanned: DFSchemaRef },
}

/// The value one key column is compared with.
#[derive(Debug, Clone, PartialEq)]
enum KeyPart {
    Constant(ScalarValue),
    /// The statement's parameter at this 0-based position.
    Param(usize),
}

/// A recognised point read.
#[derive(Debug, Clone)]
pub struct PointRead {
    table: Arc<StorageTable>,
    /// Per primary-key column, in key order: its type and value.
    key: Vec<(DataType, KeyPart)>,
    outputs: Outputs,
    /// The statement's result columns.
    schema: SchemaRef,
}

impl PointRead {
    /// Recognises `Projection(exprs) ← Filter(k1 = v1 AND …) ← TableScan`
    /// of a storage table whose equalities pin exactly its primary key to
    /// constants or parameters, with no subquery in the exprs (parameters
    /// in them are bound when the read runs: `SET v = v + $1`).
    pub fn recognise(plan: &LogicalPlan) -> Option<Self> {
        let LogicalPlan::Projection(projection) = plan else { return None };
        let LogicalPlan::Filter(filter) = projection.input.as_ref() else { return None };
        let LogicalPlan::TableScan(scan) = filter.input.as_ref() else { return None };
        if scan.projection.is_some() || !scan.filters.is_empty() || scan.fetch.is_some() {
            return None;
        }
        let provider = source_as_provider(&scan.source).ok()?;
        let table = (provider as Arc<dyn std::any::Any + Send + Sync>).downcast::<StorageTable>().ok()?;
        let def = table.def();
        if def.primary_key.is_empty() {
            return None;
        }
        let mut equalities = Vec::new();
        for conjunct in split_and(&filter.predicate) {
            equalities.push(equality(conjunct)?);
        }
        if equalities.len() != def.primary_key.len() {
            return None;
        }
        let schema = datafusion::datasource::TableProvider::schema(table.as_ref());
        let key = def
            .primary_key
            .iter()
            .map(|k| {
                let (_, part) = equalities.iter().find(|(c, _)| c == k)?;
                let ty = schema.field_with_name(k).ok()?.data_type().clone();
                Some((ty, part.clone()))
            })
            .collect::<Option<Vec<_>>>()?;
        let columns = projection
            .expr
            .iter()
            .map(|e| match e.clone().unalias() {
                Expr::Column(c) if schema.field_with_name(&c.name).is_ok() => Some(c.name),
                _ => None,
            })
            .collect::<Option<Vec<_>>>();
        let outputs = match columns {
            Some(columns) => Outputs::Columns(columns),
            None => {
                // A parameter the plan gave no type (`SET v = $1`) leaves
                // the result column untyped: the general path binds it.
                let untyped = |e: &Expr| e.exists(|e| Ok(matches!(e, Expr::Placeholder(p) if p.field.is_none()))).unwrap_or(true);
                let unfit = |e: &Expr| crate::scalar_subqueries::has_subquery(e) || e.contains_outer() || untyped(e);
                if projection.expr.iter().any(unfit) {
                    return None;
                }
                Outputs::Exprs { exprs: projection.expr.clone(), scanned: scan.projected_schema.clone() }
            }
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        Some(Self { table, key, outputs, schema })
    }

    /// [`PointRead::request_for`] with the statement's parameters `params`
    /// (the tests' shorthand; reads compute the key's values once and use
    /// them for the caches too).
    #[cfg(test)]
    fn request(&self, txn: u64, statement: u64, params: &[ScalarValue]) -> Option<ScanRequest> {
        Some(self.request_for(self.key_values(params)?, txn, statement))
    }

    /// The storage scan in transaction `txn` (0: none) for statement number
    /// `statement` of the row whose key's values are `values` (see
    /// [`PointRead::key_values`]).
    pub fn request_for(&self, values: Vec<Value>, txn: u64, statement: u64) -> ScanRequest {
        let def = self.table.def();
        // Expressions read the whole row (an empty projection).
        let mut projection: Vec<String> = Vec::new();
        if let Outputs::Columns(columns) = &self.outputs {
            for c in columns {
                if !projection.contains(c) {
                    projection.push(c.clone());
                }
            }
            if projection.is_empty() {
                projection.push(def.primary_key[0].clone());
            }
        }
        let predicates = def
            .primary_key
            .iter()
            .zip(&values)
            .map(|(k, v)| Predicate { column: k.clone(), op: CompareOp::Eq as i32, values: vec![v.clone()] })
            .collect();
        let bound = KeyBound { values, inclusive: true };
        ScanRequest {
            database: self.table.database().to_string(),
            txn_id: txn,
            schema: def.schema.clone(),
            table: def.name.clone(),
            projection,
            lower: Some(bound.clone()),
            upper: Some(bound),
            predicates,
            limit: 0,
            batch_size: 0,
            include_row_id: false,
            expect: Some(expected(def)),
            aggregates: Vec::new(),
            statement,
            lock_row: false,
            earlier_writes: Vec::new(),
            begin: None,
            index: String::new(),
        }
    }

    /// Runs the scan and shapes its rows as the statement's result
    /// (`state` evaluates expressions, with `params` bound, compiled once
    /// into `compiled`).
    pub async fn run(&self, storage: &StorageSession, req: ScanRequest, state: &SessionState, compiled: &ExprCache, params: &[ScalarValue]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let (_, batches) = storage.client.scan(req, |txn| storage.begun(txn)).await?;
        self.shape(&batches, state, compiled, params)
    }

    /// The key's values as storage takes them; `None` when a key value is
    /// missing, NULL or not of its column's type (the general path then
    /// decides what the comparison means, or reports the error).
    pub fn key_values(&self, params: &[ScalarValue]) -> Option<Vec<Value>> {
        self.key
            .iter()
            .map(|(ty, part)| match part {
                KeyPart::Constant(v) => key_value(v, ty),
                KeyPart::Param(i) => key_value(params.get(*i)?, ty),
            })
            .collect()
    }

    /// The row cache's key of the row whose key is `values`; `None` when
    /// the table's rows are not cached (see [`row_key`]).
    pub fn cache_key(&self, values: &[Value]) -> Option<Vec<u8>> {
        row_key(self.table.def(), values)
    }

    /// As [`PointRead::run`] for a read outside any transaction (statement
    /// number `statement`) of the row `key` names (its values `values`):
    /// from the row cache when it holds the row, else from storage — the
    /// whole row, which the cache then keeps.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_cached(
        &self,
        storage: &StorageSession,
        cache: &RowCache,
        (key, values): (Vec<u8>, Vec<Value>),
        statement: u64,
        state: &SessionState,
        compiled: &ExprCache,
        params: &[ScalarValue],
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let version = self.table.def().version;
        if let Some(row) = cache.get(&key, version) {
            return self.shape_cached(&row, state, compiled, params);
        }
        let mut req = self.request_for(values, 0, statement);
        req.projection.clear();
        let (_, batches, snapshot_ts) = storage.client.scan_at(req, |_| {}).await?;
        let mut rows = batches.iter().filter(|b| b.num_rows() > 0);
        if let (Some(row), None, Some(ts)) = (rows.next(), rows.next(), snapshot_ts) {
            cache.fill(key, version, row, ts);
        }
        self.shape(&batches, state, compiled, params)
    }

    /// The row whose key is `values` as the open transaction wrote it,
    /// when the transaction keeps it (see `crate::own_rows`): no request
    /// needed.
    pub fn own_row(&self, storage: &StorageSession, values: &[Value]) -> Option<CachedRow> {
        storage.own_row(&self.cache_key(values)?, self.table.def().version)
    }

    /// The statement's result from `row`, a whole row of the table (cached,
    /// or the transaction's own): only the columns it returns are made arrays.
    pub fn shape_cached(&self, row: &CachedRow, state: &SessionState, compiled: &ExprCache, params: &[ScalarValue]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let Outputs::Columns(columns) = &self.outputs else {
            return self.shape(&[row.batch()?], state, compiled, params);
        };
        let columns = columns
            .iter()
            .map(|c| row.column(c).ok_or_else(|| ComputeError::Internal(format!("cached row has no column {c}"))))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(1));
        Ok((self.schema.clone(), vec![RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?]))
    }

    /// The statement's result from the rows read (whole rows, or the
    /// columns the request projected).
    fn shape(&self, batches: &[RecordBatch], state: &SessionState, compiled: &ExprCache, params: &[ScalarValue]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut out = Vec::with_capacity(batches.len());
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let columns = match &self.outputs {
                Outputs::Columns(columns) => columns
                    .iter()
                    .map(|c| b.column_by_name(c).cloned().ok_or_else(|| ComputeError::Internal(format!("storage scan did not return column {c}"))))
                    .collect::<Result<Vec<_>>>()?,
                Outputs::Exprs { exprs, scanned } => {
                    let values = match compiled.get(exprs, scanned, params, state)? {
                        Some(c) => c.evaluate(b.columns(), b.num_rows(), params, state)?,
                        None => {
                            let row = RecordBatch::try_new(Arc::new(scanned.as_arrow().clone()), b.columns().to_vec())?;
                            let mut values = Vec::with_capacity(exprs.len());
                            for e in exprs {
                                let e = simplified(with_params(e, params)?, scanned, state)?;
                                values.push(state.create_physical_expr(e, scanned)?.evaluate(&row)?.into_array(row.num_rows())?);
                            }
                            values
                        }
                    };
                    values
                        .into_iter()
                        .zip(self.schema.fields())
                        .map(|(v, field)| Ok(if v.data_type() == field.data_type() { v } else { arrow::compute::cast(&v, field.data_type())? }))
                        .collect::<Result<Vec<_>>>()?
                }
            };
            let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
            out.push(RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?);
        }
        Ok((self.schema.clone(), out))
    }
}

/// `e` with its parameters (`$1` is `params[0]`) replaced by their values.
fn with_params(e: &Expr, params: &[ScalarValue]) -> Result<Expr> {
    let bound = e.clone().transform(|e| match &e {
        Expr::Placeholder(p) => {
            let value = param_position(&p.id)
                .and_then(|i| params.get(i))
                .ok_or_else(|| datafusion::error::DataFusionError::Plan(format!("no value for parameter {}", p.id)))?;
            Ok(datafusion::common::tree_node::Transformed::yes(datafusion::logical_expr::lit(value.clone())))
        }
        _ => Ok(datafusion::common::tree_node::Transformed::no(e)),
    })?;
    Ok(bound.data)
}

/// The conjuncts of `a AND b AND …`.
fn split_and(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            let mut v = split_and(left);
            v.extend(split_and(right));
            v
        }
        other => vec![other],
    }
}

/// `column = constant` or `column = $n` (either way round).
fn equality(e: &Expr) -> Option<(String, KeyPart)> {
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) = e else { return None };
    let ((Expr::Column(c), value) | (value, Expr::Column(c))) = (left.as_ref(), right.as_ref()) else { return None };
    let part = match value {
        Expr::Literal(v, _) => KeyPart::Constant(v.clone()),
        Expr::Placeholder(p) => KeyPart::Param(param_position(&p.id)?),
        _ => return None,
    };
    Some((c.name.clone(), part))
}

/// A key value as storage takes it: integers of any width that fit the
/// column's integer type, anything else only when it has the column's type.
fn key_value(v: &ScalarValue, ty: &DataType) -> Option<Value> {
    if v.is_null() {
        return None;
    }
    let as_int = match v {
        ScalarValue::Int8(Some(i)) => Some(*i as i64),
        ScalarValue::Int16(Some(i)) => Some(*i as i64),
        ScalarValue::Int32(Some(i)) => Some(*i as i64),
        ScalarValue::Int64(Some(i)) => Some(*i),
        _ => None,
    };
    let fits = |lo: i64, hi: i64| as_int.filter(|i| (lo..=hi).contains(i)).map(|i| Value { kind: Some(Kind::Int(i)) });
    match ty {
        DataType::Int16 => fits(i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => fits(i32::MIN as i64, i32::MAX as i64),
        DataType::Int64 => fits(i64::MIN, i64::MAX),
        _ => pushdown::literal(v, ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_take_any_width_that_fits() {
        let int = |v: &Option<Value>| match v.as_ref().and_then(|v| v.kind.clone()) {
            Some(Kind::Int(i)) => Some(i),
            _ => None,
        };
        assert_eq!(int(&key_value(&ScalarValue::Int64(Some(7)), &DataType::Int32)), Some(7));
        assert_eq!(int(&key_value(&ScalarValue::Int32(Some(-3)), &DataType::Int64)), Some(-3));
        assert!(key_value(&ScalarValue::Int64(Some(1 << 40)), &DataType::Int32).is_none(), "does not fit: general path");
        assert!(key_value(&ScalarValue::Int32(None), &DataType::Int32).is_none(), "NULL: general path");
        assert!(key_value(&ScalarValue::Float64(Some(1.5)), &DataType::Int32).is_none(), "another type: general path");
        assert!(key_value(&ScalarValue::Utf8(Some("a".into())), &DataType::Utf8).is_some());
    }

    /// Plans `sql` over a table `t (a int, b text, v bigint)` keyed by `key`.
    async fn recognised(key: &[&str], sql: &str) -> Option<PointRead> {
        use ebb_proto::storage::TypeKind::*;
        let ctx = crate::test_support::context_with(crate::test_support::table_def("t", &[("a", Integer), ("b", Text), ("v", Bigint)], key));
        let plan = ctx.state().create_logical_plan(sql).await.expect("plan");
        PointRead::recognise(&plan)
    }

    #[tokio::test]
    async fn point_reads_are_whole_keys_and_plain_columns() {
        let p = recognised(&["a"], "SELECT v, b AS bee FROM t WHERE a = $1").await.expect("a point read");
        assert!(matches!(&p.outputs, Outputs::Columns(c) if c == &["v", "b"]));
        assert_eq!(p.schema.field(1).name(), "bee");
        let req = p.request(9, 1, &[ScalarValue::Int32(Some(4))]).expect("a request");
        assert_eq!((req.txn_id, req.projection.clone()), (9, vec!["v".to_string(), "b".to_string()]));
        assert_eq!(req.lower, req.upper);
        assert!(req.lower.as_ref().is_some_and(|b| b.inclusive && b.values == [Value { kind: Some(Kind::Int(4)) }]));
        assert!(p.request(9, 1, &[]).is_none(), "a missing parameter: the general path reports it");
        assert!(p.request(9, 1, &[ScalarValue::Int32(None)]).is_none(), "NULL parameter: general path");
        let null = recognised(&["a"], "SELECT v FROM t WHERE a = NULL").await.expect("a point read");
        assert!(null.request(0, 0, &[]).is_none(), "NULL key: general path");
        assert!(recognised(&["a", "b"], "SELECT * FROM t WHERE b = 'x' AND a = 1").await.is_some());
        // Expressions read the whole row and are evaluated over it.
        let e = recognised(&["a"], "SELECT v + 1 AS w, upper(b) FROM t WHERE a = 1").await.expect("a point read");
        assert!(matches!(e.outputs, Outputs::Exprs { .. }));
        assert!(e.request(0, 0, &[]).expect("a request").projection.is_empty(), "the whole row");
        for sql in [
            "SELECT v FROM t WHERE a = 1 AND v = 2",
            "SELECT v FROM t WHERE a > 1",
            "SELECT (SELECT 1) FROM t WHERE a = 1",
            "SELECT v FROM t WHERE a = 1 OR a = 2",
            "SELECT count(*) FROM t WHERE a = 1",
            "SELECT v FROM t WHERE a = 1 LIMIT 1",
            "SELECT $2 FROM t WHERE a = $1",
        ] {
            assert!(recognised(&["a"], sql).await.is_none(), "{sql}");
        }
        assert!(recognised(&["a", "b"], "SELECT v FROM t WHERE a = 1").await.is_none(), "part of the key");
        assert!(recognised(&[], "SELECT v FROM t WHERE a = 1").await.is_none(), "no key");
    }

    #[tokio::test]
    async fn parameters_of_expressions_are_bound_when_the_read_runs() {
        use datafusion::logical_expr::{col, lit, placeholder};
        let p = recognised(&["a"], "SELECT v + $2 AS w FROM t WHERE a = $1").await.expect("an UPDATE's SET v = v + $2 is a point read");
        assert!(matches!(p.outputs, Outputs::Exprs { .. }));
        let e = col("v") + placeholder("$2");
        assert_eq!(with_params(&e, &[ScalarValue::Int32(Some(1)), ScalarValue::Int64(Some(7))]).expect("bound"), col("v") + lit(7i64));
        assert!(with_params(&e, &[ScalarValue::Int32(Some(1))]).is_err(), "a missing value is an error, not NULL");
    }

    #[test]
    fn equalities_name_a_column_and_a_constant() {
        use datafusion::logical_expr::{col, lit, placeholder};
        assert_eq!(equality(&col("k").eq(placeholder("$2"))), Some(("k".to_string(), KeyPart::Param(1))));
        assert_eq!(equality(&lit(5).eq(col("k"))), Some(("k".to_string(), KeyPart::Constant(ScalarValue::Int32(Some(5))))));
        assert!(equality(&col("k").eq(placeholder("$0"))).is_none(), "parameters count from 1");
        assert!(equality(&col("k").gt(lit(1))).is_none());
        assert!(equality(&col("k").eq(col("j"))).is_none());
        assert_eq!(split_and(&col("a").eq(lit(1)).and(col("b").eq(lit(2)).and(col("c").eq(lit(3))))).len(), 3);
    }
}
