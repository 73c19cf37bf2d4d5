//! What a prepared statement remembers between executions: its query plan
//! and its description (parameter and result types), as planned against one
//! generation of the session's catalog. Drivers (and pgbench `-M prepared`)
//! send Bind, Describe and Execute for every run of a statement; with both
//! kept, each run skips SQL-to-plan translation and type inference.

use std::sync::Mutex;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::logical_expr::LogicalPlan;

/// The cache of one prepared statement. Entries are valid while the
/// session's catalog generation is the one they were planned at.
#[derive(Debug, Default)]
pub struct PlanCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// A query's plan (with `$n` placeholders).
    plan: Option<CachedPlan>,
    /// The description made at a generation.
    described: Option<(u64, Described)>,
    /// The result columns the statement was first described with; a later
    /// plan must return the same ones (PostgreSQL: "cached plan must not
    /// change result type").
    result: Option<SchemaRef>,
}

/// A statement's parameter types (by position) and result columns (none
/// for a statement that returns no rows).
pub type Described = (Vec<Option<DataType>>, Option<SchemaRef>);

/// A query plan and the catalog generation it was made at.
#[derive(Debug, Clone)]
pub struct CachedPlan {
    /// The catalog generation.
    pub generation: u64,
    /// The unoptimized plan, placeholders unbound.
    pub plan: LogicalPlan,
}

impl PlanCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plan made at `generation`, if that is the one kept.
    pub fn plan(&self, generation: u64) -> Option<LogicalPlan> {
        self.lock().plan.as_ref().filter(|c| c.generation == generation).map(|c| c.plan.clone())
    }

    /// Keeps `plan`, made at `generation`. Fails (leaving the cache as it
    /// was) if its result columns differ from the ones the statement was
    /// first planned with: the client was told those.
    pub fn keep_plan(&self, generation: u64, plan: &LogicalPlan) -> Result<(), SchemaRef> {
        let schema: SchemaRef = std::sync::Arc::new(plan.schema().as_arrow().clone());
        let mut inner = self.lock();
        match &inner.result {
            Some(first) if !same_columns(first, &schema) => return Err(first.clone()),
            Some(_) => {}
            None => inner.result = Some(schema),
        }
        inner.plan = Some(CachedPlan { generation, plan: plan.clone() });
        Ok(())
    }

    /// The description made at `generation`, if that is the one kept.
    pub fn described(&self, generation: u64) -> Option<Described> {
        self.lock().described.as_ref().filter(|(g, _)| *g == generation).map(|(_, d)| d.clone())
    }

    /// Keeps the description made at `generation`.
    pub fn keep_described(&self, generation: u64, described: &Described) {
        self.lock().described = Some((generation, described.clone()));
    }
}

/// Texts longer than this are not kept (an INSERT of many literal rows,
/// its shape): they rarely run twice and their plans are large.
pub const MAX_KEPT_TEXT: usize = 4096;

/// Values kept by SQL text, each for the catalog generation it was made
/// at; bounded: the map starts over when it holds [`ByText::CAPACITY`]
/// texts (statements with literals make a new text each run).
#[derive(Debug)]
pub struct ByText<V> {
    inner: Mutex<std::collections::HashMap<String, (u64, V)>>,
}

impl<V> Default for ByText<V> {
    fn default() -> Self {
        Self { inner: Mutex::default() }
    }
}

impl<V: Clone> ByText<V> {
    /// Texts kept at most.
    pub const CAPACITY: usize = 256;

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (u64, V)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value kept for `text` at `generation`.
    pub fn get(&self, text: &str, generation: u64) -> Option<V> {
        self.lock().get(text).filter(|(g, _)| *g == generation).map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `text`, made at `generation`.
    pub fn keep(&self, text: &str, generation: u64, value: V) {
        let mut inner = self.lock();
        if inner.len() >= Self::CAPACITY && !inner.contains_key(text) {
            inner.clear();
        }
        inner.insert(text.to_string(), (generation, value));
    }

    /// The value kept for `text` at `generation`, or `make()` kept now.
    pub fn get_or_keep(&self, text: &str, generation: u64, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.get(text, generation) {
            return v;
        }
        let v = make();
        self.keep(text, generation, v.clone());
        v
    }
}

/// Plans of SQL text the session generates itself — the `SELECT` an
/// UPDATE or DELETE runs to find its rows, the `VALUES` of an INSERT — so a
/// prepared statement's DML is planned once, not at every execution.
pub type PlansByText = ByText<LogicalPlan>;

/// The caches of auto-parameterised statement shapes (see
/// [`auto_params`](crate::auto_params)), by shape text: each shape runs like
/// a prepared statement with its own [`PlanCache`], made afresh for each
/// catalog generation (a client never prepared it, so a changed result is
/// no error).
pub type ShapeCaches = ByText<std::sync::Arc<PlanCache>>;

/// Same column names and types, in order (nullability may differ).
fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields().iter().zip(b.fields()).all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::EmptyRelation;
    use std::sync::Arc;

    fn plan(fields: Vec<Field>) -> LogicalPlan {
        let schema = DFSchema::try_from(Schema::new(fields)).expect("schema");
        LogicalPlan::EmptyRelation(EmptyRelation { produce_one_row: false, schema: Arc::new(schema) })
    }

    #[test]
    fn plans_are_kept_per_generation() {
        let cache = PlanCache::default();
        assert!(cache.plan(0).is_none());
        cache.keep_plan(3, &plan(vec![Field::new("a", DataType::Int32, true)])).expect("first plan");
        assert!(cache.plan(3).is_some());
        assert!(cache.plan(4).is_none(), "a plan of an older catalog is not reused");
        cache.keep_described(3, &(vec![Some(DataType::Int64)], None));
        assert_eq!(cache.described(3), Some((vec![Some(DataType::Int64)], None)));
        assert_eq!(cache.described(2), None);
    }

    #[test]
    fn plans_by_text_are_kept_per_generation_and_bounded() {
        let plans = PlansByText::default();
        let p = plan(vec![Field::new("a", DataType::Int32, true)]);
        plans.keep("SELECT 1", 1, p.clone());
        assert!(plans.get("SELECT 1", 1).is_some());
        assert!(plans.get("SELECT 1", 2).is_none(), "a plan of an older catalog is not reused");
        assert!(plans.get("SELECT 2", 1).is_none());
        for i in 0..PlansByText::CAPACITY {
            plans.keep(&format!("SELECT {i} + 1"), 1, p.clone());
        }
        let kept = plans.inner.lock().unwrap().len();
        assert!(kept <= PlansByText::CAPACITY, "bounded: {kept}");
    }

    #[test]
    fn a_replan_may_not_change_the_result_columns() {
        let cache = PlanCache::default();
        cache.keep_plan(1, &plan(vec![Field::new("a", DataType::Int32, false)])).expect("first plan");
        cache.keep_plan(2, &plan(vec![Field::new("a", DataType::Int32, true)])).expect("nullability may change");
        assert!(cache.keep_plan(3, &plan(vec![Field::new("a", DataType::Utf8, true)])).is_err());
        assert!(cache.keep_plan(3, &plan(vec![Field::new("a", DataType::Int32, true), Field::new("b", DataType::Int32, true)])).is_err());
        assert!(cache.plan(2).is_some(), "a refused plan leaves the kept one");
    }
}
