//! A storage table as a DataFusion table provider. Scans run in the
//! session's transaction and push projection, predicates, primary-key
//! ranges and limits down to storage; `EXPLAIN` shows what was pushed.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use datafusion::common::tree_node::TreeNodeRecursion;
use ebb_proto::pg_types;
use ebb_proto::storage::{Aggregate, AggregateFunction, CompareOp, KeyBound, Predicate, ScanRequest, TableDef, value::Kind};
use futures::StreamExt;

use crate::pushdown::{key_bounds, to_predicates};
use crate::sql::dml::ROWID;
use crate::storage_session::StorageSession;

/// One table of the connected database.
#[derive(Clone)]
pub struct StorageTable {
    def: TableDef,
    schema: SchemaRef,
    session: Arc<StorageSession>,
}

impl fmt::Debug for StorageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageTable({}.{})", self.def.schema, self.def.name)
    }
}

impl StorageTable {
    /// A provider for `def`; with `rowid`, the hidden `_rowid` column of a
    /// table without a primary key is a visible last column.
    pub fn new(def: TableDef, session: Arc<StorageSession>, rowid: bool) -> Self {
        let mut schema = table_schema(&def);
        if rowid {
            let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
            fields.push(Arc::new(arrow::datatypes::Field::new(ROWID, arrow::datatypes::DataType::Int64, false)));
            schema = Schema::new(fields);
        }
        Self { def, schema: Arc::new(schema), session }
    }

    /// The stored definition.
    pub fn def(&self) -> &TableDef {
        &self.def
    }

    /// The database the table is in.
    pub fn database(&self) -> &str {
        &self.session.database
    }

    fn column_type(&self, name: &str) -> Option<arrow::datatypes::DataType> {
        self.schema.field_with_name(name).ok().map(|f| f.data_type().clone())
    }

    /// Storage predicates for pushed-down filters; `None` if one of them
    /// does not translate.
    pub fn predicates(&self, filters: &[Expr]) -> Option<Vec<Predicate>> {
        let mut predicates = Vec::new();
        for f in filters {
            predicates.extend(to_predicates(f, |c| self.column_type(c))?);
        }
        Some(predicates)
    }

    /// A scan request for the rows passing `predicates`, bounded by the
    /// primary-key or index range they imply; nothing projected yet.
    fn request(&self, predicates: Vec<Predicate>) -> ScanRequest {
        let (index, lower, upper) = access_path(&self.def, &predicates);
        ScanRequest {
            database: self.session.database.clone(),
            txn_id: 0,
            schema: self.def.schema.clone(),
            table: self.def.name.clone(),
            projection: Vec::new(),
            lower,
            upper,
            predicates,
            limit: 0,
            batch_size: 0,
            include_row_id: false,
            expect: Some(crate::storage_client::expected(&self.def)),
            aggregates: Vec::new(),
            statement: 0,
            lock_row: false,
            earlier_writes: Vec::new(),
            begin: None,
            index,
        }
    }

    /// A plan that has storage compute `aggregates` over the rows passing
    /// `predicates` and returns them as one row of `schema` (one column per
    /// aggregate, in order).
    pub fn aggregate_exec(&self, predicates: Vec<Predicate>, aggregates: Vec<Aggregate>, schema: SchemaRef) -> Arc<dyn ExecutionPlan> {
        let req = ScanRequest { aggregates, ..self.request(predicates) };
        Arc::new(StorageScanExec::new(req, schema, self.session.clone()))
    }
}

/// How to find the rows passing `predicates`: through the primary key or
/// the index (name) whose columns the predicates pin best — the most
/// leading columns by equality, then a range on the next; the primary key
/// on a tie — and the bounds on that key's columns.
fn access_path(def: &TableDef, predicates: &[Predicate]) -> (String, Option<KeyBound>, Option<KeyBound>) {
    if def.indexes.is_empty() {
        let (lower, upper) = key_bounds(&def.primary_key, predicates);
        return (String::new(), lower, upper);
    }
    let score = |columns: &[String]| {
        let equal = columns.iter().take_while(|c| predicates.iter().any(|p| &p.column == *c && p.op == CompareOp::Eq as i32)).count();
        let (lower, upper) = key_bounds(columns, predicates);
        (equal, lower.is_some() || upper.is_some())
    };
    let mut best = (String::new(), def.primary_key.clone(), score(&def.primary_key));
    for ix in &def.indexes {
        let columns: Vec<String> =
            ix.column_ids.iter().filter_map(|id| def.columns.iter().find(|c| c.id == *id).map(|c| c.name.clone())).collect();
        let s = score(&columns);
        if s > best.2 {
            best = (ix.name.clone(), columns, s);
        }
    }
    let (name, columns, _) = best;
    let (lower, upper) = key_bounds(&columns, predicates);
    (name, lower, upper)
}

/// The Arrow schema of a stored table definition.
pub fn table_schema(def: &TableDef) -> Schema {
    Schema::new(
        def.columns
            .iter()
            .map(|c| pg_types::arrow_field(&c.name, &c.r#type.clone().unwrap_or_default(), !c.not_null))
            .collect::<Vec<_>>(),
    )
}

#[async_trait]
impl TableProvider for StorageTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| match to_predicates(f, |c| self.column_type(c)) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let predicates = self
            .predicates(filters)
            .ok_or_else(|| DataFusionError::Internal("a filter was pushed down that storage cannot evaluate".into()))?;
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let mut projection: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).filter(|n| n != ROWID).collect();
        let include_row_id = schema.fields().iter().any(|f| f.name() == ROWID);
        if projection.is_empty()
            && !include_row_id
            && let Some(first) = self.def.columns.first()
        {
            // `count(*)` needs rows, not columns: fetch one column, drop it below.
            projection.push(first.name.clone());
        }
        let req = ScanRequest { projection, limit: limit.map(|l| l as u64).unwrap_or(0), include_row_id, ..self.request(predicates) };
        Ok(Arc::new(StorageScanExec::new(req, schema, self.session.clone())))
    }
}

/// Streams one storage scan into DataFusion.
#[derive(Debug)]
pub struct StorageScanExec {
    req: ScanRequest,
    session: Arc<StorageSession>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for StorageSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorageSession({})", self.database)
    }
}

impl StorageScanExec {
    fn new(req: ScanRequest, schema: SchemaRef, session: Arc<StorageSession>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self { req, session, properties: Arc::new(properties) }
    }
}

fn show_value(v: &ebb_proto::storage::Value) -> String {
    match &v.kind {
        Some(Kind::Int(i)) => i.to_string(),
        Some(Kind::Float(f)) => f.to_string(),
        Some(Kind::Text(s)) => format!("'{s}'"),
        Some(Kind::Boolean(b)) => b.to_string(),
        Some(Kind::Bytes(b)) => format!("<{} bytes>", b.len()),
        Some(Kind::Null(_)) | None => "NULL".into(),
    }
}

fn show_bound(b: &KeyBound) -> String {
    b.values.iter().map(show_value).collect::<Vec<_>>().join(", ")
}

fn show_predicate(p: &Predicate) -> String {
    let op = match CompareOp::try_from(p.op).unwrap_or(CompareOp::Unspecified) {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::In => "IN",
        CompareOp::IsNull => "IS NULL",
        CompareOp::IsNotNull => "IS NOT NULL",
        CompareOp::Unspecified => "?",
    };
    let vals: Vec<String> = p.values.iter().map(show_value).collect();
    format!("{} {op} {}", p.column, vals.join(", ")).trim_end().to_string()
}

fn show_aggregate(a: &Aggregate) -> String {
    match AggregateFunction::try_from(a.function).unwrap_or(AggregateFunction::Unspecified) {
        AggregateFunction::CountRows => "count(*)".into(),
        AggregateFunction::Count => format!("count({})", a.column),
        AggregateFunction::Sum => format!("sum({})", a.column),
        AggregateFunction::Min => format!("min({})", a.column),
        AggregateFunction::Max => format!("max({})", a.column),
        AggregateFunction::Unspecified => format!("?({})", a.column),
    }
}

impl DisplayAs for StorageScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "StorageScanExec: table={}", self.req.table)?;
        if !self.req.index.is_empty() {
            write!(f, ", index={}", self.req.index)?;
        }
        let is_point = match (&self.req.lower, &self.req.upper) {
            (Some(l), Some(u)) => l == u && l.inclusive,
            _ => false,
        };
        if is_point {
            write!(f, ", key=({})", show_bound(self.req.lower.as_ref().expect("checked")))?;
        } else {
            if let Some(l) = &self.req.lower {
                write!(f, ", key {} ({})", if l.inclusive { ">=" } else { ">" }, show_bound(l))?;
            }
            if let Some(u) = &self.req.upper {
                write!(f, ", key {} ({})", if u.inclusive { "<=" } else { "<" }, show_bound(u))?;
            }
        }
        if !self.req.predicates.is_empty() {
            let ps: Vec<String> = self.req.predicates.iter().map(show_predicate).collect();
            write!(f, ", predicates=[{}]", ps.join(" AND "))?;
        }
        if self.req.limit > 0 {
            write!(f, ", limit={}", self.req.limit)?;
        }
        if !self.req.aggregates.is_empty() {
            let aggregates: Vec<String> = self.req.aggregates.iter().map(show_aggregate).collect();
            return write!(f, ", aggregates=[{}]", aggregates.join(", "));
        }
        write!(f, ", projection=[{}]", self.req.projection.join(", "))
    }
}

impl ExecutionPlan for StorageScanExec {
    fn name(&self) -> &str {
        "StorageScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, _partition: usize, _ctx: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let mut req = self.req.clone();
        req.statement = self.session.statement();
        let session = self.session.clone();
        let schema = self.properties.eq_properties.schema().clone();
        let empty = schema.clone();
        let aggregated = !req.aggregates.is_empty();
        let stream = futures::stream::once(async move {
            // A block's first request begins its transaction; the
            // transaction's deferred writes go first: the scan must see them.
            req.txn_id = session.started_txn().await?;
            session.flush_deferred().await?;
            session.client.clone().scan_stream(req).await
        })
            .map(|r| match r {
                Ok(s) => s.boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            .map(move |r| match r {
                Ok(b) if b.num_columns() > 0 && empty.fields().is_empty() => {
                    let opts = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                    Ok(RecordBatch::try_new_with_options(empty.clone(), vec![], &opts)?)
                }
                // Storage names aggregates `agg0`, `agg1`, … in request order.
                Ok(b) if aggregated => Ok(RecordBatch::try_new(empty.clone(), b.columns().to_vec())?),
                // Storage appends `_rowid` last; put columns in the declared order.
                Ok(b) if b.schema().fields().iter().map(|f| f.name()).ne(empty.fields().iter().map(|f| f.name())) => {
                    let cols = empty
                        .fields()
                        .iter()
                        .map(|f| {
                            b.column_by_name(f.name()).cloned().ok_or_else(|| {
                                DataFusionError::Internal(format!("storage scan did not return column {}", f.name()))
                            })
                        })
                        .collect::<DfResult<Vec<_>>>()?;
                    Ok(RecordBatch::try_new(empty.clone(), cols)?)
                }
                Ok(b) => Ok(b),
                Err(e) => Err(e.into_datafusion()),
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
