//! INSERT, UPDATE, DELETE and TRUNCATE.
//!
//! Rows to write are computed by DataFusion and written by key: an UPDATE
//! plans `SELECT <new row> FROM t WHERE …` and upserts the result, a DELETE
//! plans `SELECT <key> FROM t WHERE …` and deletes those keys. The WHERE
//! clause is always evaluated by DataFusion (subqueries included), so a
//! statement can never silently touch rows it did not select
//! (apache/datafusion#24654 does not apply: the DML hooks are not used).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, new_null_array};
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::LogicalPlan;
use arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{
    Assignment, Delete, DoUpdate, Expr, FromTable, Insert, OnConflictAction, OnInsert, Parens, SelectItem, SetExpr, Statement,
    TableFactor, TableObject, Truncate, TruncateIdentityOption, Update, UpdateTableFromKind, Value,
};
use ebb_proto::storage::{TableDef, WriteKind};

use super::ddl::{ident, object_name};
use super::{returning, sequences, upsert};
use crate::error::{ComputeError, Result};
use crate::session::{Block, Output, Session, parse};
use crate::storage_client::table_write;

/// The hidden row-id column of tables without a primary key.
pub const ROWID: &str = "_rowid";

pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn qualified(def: &TableDef) -> String {
    format!("{}.{}", quote(&def.schema), quote(&def.name))
}

/// Looks a table up in the catalog loaded at the start of the statement.
pub(crate) async fn target(s: &Session, schema: Option<&str>, name: &str) -> Result<TableDef> {
    s.catalog()
        .table(schema, name)
        .map(|t| t.def().clone())
        .ok_or_else(|| ComputeError::invalid("42P01", format!("relation \"{name}\" does not exist")))
}

/// The columns a statement writes: `named` (checked to exist), or all of
/// the table's in order when none are named.
pub(crate) fn target_columns(def: &TableDef, named: Vec<String>) -> Result<Vec<String>> {
    if named.is_empty() {
        return Ok(def.columns.iter().map(|c| c.name.clone()).collect());
    }
    for c in &named {
        if !def.columns.iter().any(|d| &d.name == c) {
            return Err(ComputeError::invalid("42703", format!("column \"{c}\" of relation \"{}\" does not exist", def.name)));
        }
    }
    Ok(named)
}

/// The named columns of an INSERT.
fn insert_columns(ins: &Insert) -> Result<Vec<String>> {
    ins.columns.iter().map(|c| object_name(c).map(|(_, n)| n)).collect()
}

/// Plans and runs a SELECT given as text (parameters `$n` are bound).
async fn select(s: &Session, sql: &str, params: &[ScalarValue]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = s.plan_generated(sql, None).await?;
    s.run_plan(plan, params, false).await
}

/// Reads the rows an UPDATE or DELETE writes; also says whether the read
/// locked the one row it found (see [`Session::read`]).
async fn select_for_update(s: &Session, sql: &str, params: &[ScalarValue]) -> Result<(SchemaRef, Vec<RecordBatch>, bool)> {
    let plan = s.plan_generated(sql, None).await?;
    s.read(plan, params, true).await
}

/// Whether `def` references a table or is referenced: storage may refuse
/// any write to it then (see `crate::deferrable`).
fn in_foreign_key(s: &Session, def: &TableDef) -> bool {
    !def.foreign_keys.is_empty() || s.catalog().is_referenced(def.id)
}

/// Sends a write of the statement's transaction, or defers it when the session may and
/// `accepted` gives the write's rows as storage will take them (`None`:
/// storage might refuse them; see [`crate::deferrable`]); returns rows
/// affected (`known`: what a deferred write affects) and, when deferred,
/// the rows as storage will store them.
async fn write_or_defer(
    s: &Session,
    def: &TableDef,
    kind: WriteKind,
    batch: &RecordBatch,
    accepted: impl FnOnce() -> Option<RecordBatch>,
    known: u64,
) -> Result<(u64, Option<RecordBatch>)> {
    if s.storage().may_defer()
        && !in_foreign_key(s, def)
        && let Some(rows) = accepted()
    {
        s.storage().defer(def.id, table_write(def, kind, &rows)?);
        return Ok((known, Some(rows)));
    }
    Ok((s.storage().write(table_write(def, kind, batch)?).await?, None))
}

fn one_batch(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<RecordBatch> {
    concat_batches(&schema, &batches).map_err(|e| ComputeError::Internal(e.to_string()))
}

fn project(batch: &RecordBatch, idx: &[usize]) -> Result<RecordBatch> {
    batch.project(idx).map_err(|e| ComputeError::Internal(e.to_string()))
}

/// Renames the columns of a batch.
fn renamed(batch: &RecordBatch, names: &[String]) -> Result<RecordBatch> {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .zip(names)
        .map(|(f, n)| Field::new(n, f.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec()).map_err(|e| ComputeError::Internal(e.to_string()))
}

/// Types of the `$n` parameters of an INSERT, UPDATE or DELETE (0-based
/// position and type): a bare `$n` given to a column takes the column's type
/// (`VALUES ($1, $2)`, `SET v = $1`); others are inferred by DataFusion from
/// the query the statement runs (`WHERE id = $1`).
pub(crate) async fn param_types(s: &Session, stmt: &Statement) -> Result<Vec<(usize, DataType)>> {
    let mut out = Vec::new();
    let mut bare = |e: &Expr, def: &TableDef, column: &str| {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
            && let Some(i) = crate::session::param_position(p)
            && let Some(c) = def.columns.iter().find(|c| c.name == column)
            && let Some(t) = &c.r#type
        {
            out.push((i, ebb_proto::pg_types::arrow_type(t)));
        }
    };
    let query = match stmt {
        Statement::Insert(ins) => {
            let TableObject::TableName(name) = &ins.table else { return Ok(vec![]) };
            let (schema, table) = object_name(name)?;
            let def = target(s, schema.as_deref(), &table).await?;
            let columns = target_columns(&def, insert_columns(ins)?)?;
            if let Some(source) = &ins.source
                && let SetExpr::Values(values) = source.body.as_ref()
            {
                for row in &values.rows {
                    for (e, c) in row.iter().zip(&columns) {
                        bare(e, &def, c);
                    }
                }
            }
            ins.source.as_ref().map(|q| Statement::Query(q.clone()))
        }
        Statement::Update(u) => {
            let (schema, table, alias, _) = target_relation(&u.table.relation)?;
            let def = target(s, schema.as_deref(), &table).await?;
            let mut items = Vec::new();
            for (column, value) in super::set_list::expand(&def, &u.assignments, &|f| s.is_volatile_function(f))? {
                bare(&value, &def, column);
                items.push(format!("({value})"));
            }
            let filter = u.selection.as_ref().map(|w| format!(" WHERE {w}")).unwrap_or_default();
            parse(&format!("SELECT {} FROM {}{alias}{filter}", items.join(", "), qualified(&def)))?.pop()
        }
        Statement::Delete(d) => {
            let (FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t)) = &d.from;
            let Some(t) = t.first() else { return Ok(out) };
            let (schema, table, alias, _) = target_relation(&t.relation)?;
            let def = target(s, schema.as_deref(), &table).await?;
            let filter = d.selection.as_ref().map(|w| format!(" WHERE {w}")).unwrap_or_default();
            parse(&format!("SELECT 1 FROM {}{alias}{filter}", qualified(&def)))?.pop()
        }
        _ => None,
    };
    if let Some(q) = query
        && let Ok(plan) = s.plan(&q).await
    {
        for (i, t) in crate::session::param_types(&plan, 0)?.into_iter().enumerate() {
            if let Some(t) = t {
                out.push((i, t));
            }
        }
    }
    Ok(out)
}

/// INSERT INTO t [(cols)] VALUES … | SELECT … [ON CONFLICT DO NOTHING]
pub async fn insert(s: &mut Session, ins: &Insert, params: &[ScalarValue]) -> Result<Output> {
    let TableObject::TableName(name) = &ins.table else {
        return Err(ComputeError::unsupported("INSERT into a table function"));
    };
    let (schema, table) = object_name(name)?;
    let def = target(s, schema.as_deref(), &table).await?;
    let kind = match &ins.on {
        None => Conflict::Fail,
        Some(OnInsert::OnConflict(c)) => match &c.action {
            OnConflictAction::DoNothing => Conflict::Ignore,
            OnConflictAction::DoUpdate(du) => {
                upsert::check_target(&def, c.conflict_target.as_ref())?;
                Conflict::Update(du)
            }
        },
        Some(_) => return Err(ComputeError::unsupported("this INSERT conflict clause")),
    };
    let alias = ins.table_alias.as_ref().map(|a| a.alias.value.clone());
    let returning = ins.returning.as_deref().map(|items| Returning { items, alias: alias.clone() });
    let Some(source) = ins.source.as_ref() else {
        return insert_default_values(s, &def, alias.as_deref(), kind, returning.as_ref()).await;
    };
    let mut columns = target_columns(&def, insert_columns(ins)?)?;
    let mut source = source.clone();
    let mut listed = !ins.columns.is_empty();
    if let SetExpr::Values(values) = source.body.as_mut() {
        listed |= without_default_items(&mut values.rows, &mut columns, listed)?;
    }
    super::insert_literals::type_string_literals(&mut source, &def, &columns);
    let stmt = Statement::Query(source);
    // A long VALUES list (a bulk load) is planned as is: rendering it as the
    // key of a plan that is not kept (see `MAX_KEPT_TEXT`) would be waste.
    let bulk = matches!(&stmt, Statement::Query(q) if matches!(q.body.as_ref(), SetExpr::Values(v) if v.rows.len() > 64));
    let plan = if bulk { s.plan(&stmt).await? } else { s.plan_generated(&stmt.to_string(), Some(&stmt)).await? };
    // Outside a block, rows that come from no table are sent with their
    // commit (see `may_commit_alone`).
    let alone = !s.storage().in_transaction() && crate::session::count_scans(&plan) == 0 && kind.may_commit_alone(returning.is_some());
    let txn = if alone { None } else { Some(s.begin_write().await?) };
    let target = Target { def: &def, alias: alias.as_deref(), columns: &columns, listed };
    let result = insert_rows(s, alone, plan, &target, kind, params, returning.as_ref()).await;
    match txn {
        Some(txn) => s.end_write(txn, result).await,
        None => result,
    }
}

/// The target columns `values` values per row fill: all of them if they
/// were listed, else the table's leading ones (PostgreSQL gives the rest
/// their defaults); 42601 if the counts differ.
fn filled_columns(columns: &[String], listed: bool, values: usize) -> Result<&[String]> {
    let filled = if listed { columns } else { &columns[..values.min(columns.len())] };
    match values.cmp(&filled.len()) {
        std::cmp::Ordering::Greater => Err(ComputeError::invalid("42601", "INSERT has more expressions than target columns")),
        std::cmp::Ordering::Less => Err(ComputeError::invalid("42601", "INSERT has more target columns than expressions")),
        std::cmp::Ordering::Equal => Ok(filled),
    }
}

/// Takes the columns a VALUES list sets to `DEFAULT` in every row out of
/// the rows and of `columns`, so that they get their defaults; whether it
/// took any. `DEFAULT` in some rows of a column only is refused.
fn without_default_items(rows: &mut [Parens<Vec<Expr>>], columns: &mut Vec<String>, listed: bool) -> Result<bool> {
    let is_default = super::set_list::is_default;
    let width = rows.first().map_or(0, |r| r.content.len());
    let mut taken = Vec::new();
    for i in 0..width {
        let defaults = rows.iter().filter(|r| r.content.get(i).is_some_and(is_default)).count();
        if defaults == rows.len() {
            taken.push(i);
        } else if defaults > 0 {
            return Err(ComputeError::unsupported("DEFAULT in some rows of a VALUES list but not in others"));
        }
    }
    if taken.is_empty() {
        return Ok(false);
    }
    filled_columns(columns, listed, width)?;
    for &i in taken.iter().rev() {
        for row in rows.iter_mut() {
            if i < row.content.len() {
                row.content.remove(i);
            }
        }
        columns.remove(i);
    }
    // Without a column list, the remaining values fill the columns left.
    columns.truncate(width - taken.len());
    Ok(true)
}

/// INSERT … DEFAULT VALUES: one row of defaults.
async fn insert_default_values(
    s: &mut Session,
    def: &TableDef,
    alias: Option<&str>,
    conflict: Conflict<'_>,
    returning: Option<&Returning<'_>>,
) -> Result<Output> {
    let one_row = RecordBatchOptions::new().with_row_count(Some(1));
    let batch = RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &one_row)?;
    let alone = !s.storage().in_transaction() && conflict.may_commit_alone(returning.is_some());
    let txn = if alone { None } else { Some(s.begin_write().await?) };
    let target = Target { def, alias, columns: &[], listed: true };
    let result = write_rows(s, alone, batch, &target, conflict, &[], returning).await;
    match txn {
        Some(txn) => s.end_write(txn, result).await,
        None => result,
    }
}

/// What an INSERT does with a row whose key exists.
enum Conflict<'a> {
    Fail,
    Ignore,
    Update(&'a DoUpdate),
}

impl Conflict<'_> {
    /// Whether rows that come from no table may be sent with their commit
    /// (one round trip instead of three): not where the statement must still
    /// answer after the commit whether every row went in (RETURNING with DO
    /// NOTHING), nor for DO UPDATE, which reads.
    fn may_commit_alone(&self, returning: bool) -> bool {
        match self {
            Conflict::Fail => true,
            Conflict::Ignore => !returning,
            Conflict::Update(_) => false,
        }
    }
}

/// A RETURNING clause with the alias of the target table.
pub(crate) struct Returning<'a> {
    items: &'a [SelectItem],
    alias: Option<String>,
}

impl Returning<'_> {
    /// The statement's result: `rows` written (or deleted), shaped by the table.
    async fn output(&self, command: &str, def: &TableDef, written: &RecordBatch, params: &[ScalarValue]) -> Result<Output> {
        let rows = returning::table_rows(def, written)?;
        let (schema, batches) = returning::evaluate(def, self.alias.as_deref(), self.items, rows, params).await?;
        Ok(Output::Returned { command: command.to_string(), schema, batches })
    }
}

/// The result columns of a DML statement's RETURNING clause, if it has one.
pub(crate) async fn returning_schema(s: &Session, stmt: &Statement) -> Result<Option<SchemaRef>> {
    let (table, alias, items) = match stmt {
        Statement::Insert(i) => {
            let TableObject::TableName(name) = &i.table else { return Ok(None) };
            (object_name(name)?, i.table_alias.as_ref().map(|a| a.alias.value.clone()), i.returning.as_deref())
        }
        Statement::Update(u) => {
            let (schema, table, _, alias) = target_relation(&u.table.relation)?;
            ((schema, table), alias, u.returning.as_deref())
        }
        Statement::Delete(d) => {
            let (FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t)) = &d.from;
            let Some(t) = t.first() else { return Ok(None) };
            let (schema, table, _, alias) = target_relation(&t.relation)?;
            ((schema, table), alias, d.returning.as_deref())
        }
        _ => return Ok(None),
    };
    let Some(items) = items else { return Ok(None) };
    let def = target(s, table.0.as_deref(), &table.1).await?;
    Ok(Some(returning::schema(&def, alias.as_deref(), items).await?))
}

/// The table an INSERT writes: its definition, alias and target columns
/// (`listed`: named in the statement, rather than all of the table's).
struct Target<'a> {
    def: &'a TableDef,
    alias: Option<&'a str>,
    columns: &'a [String],
    listed: bool,
}

/// Runs an INSERT's source `plan` and writes its rows, in the statement's
/// transaction or (`alone`) in one of their own that the write's commit
/// request begins.
async fn insert_rows(
    s: &mut Session,
    alone: bool,
    plan: LogicalPlan,
    target: &Target<'_>,
    conflict: Conflict<'_>,
    params: &[ScalarValue],
    returning: Option<&Returning<'_>>,
) -> Result<Output> {
    let (def, columns) = (target.def, target.columns);
    let (out_schema, batches) = s.run_plan(plan, params, false).await?;
    let columns = filled_columns(columns, target.listed, out_schema.fields().len())?;
    if let Some(c) = def.columns.iter().find(|c| c.identity == "a" && columns.contains(&c.name)) {
        // GENERATED ALWAYS AS IDENTITY (OVERRIDING SYSTEM VALUE is not supported).
        return Err(ComputeError::invalid("428C9", format!("cannot insert a non-DEFAULT value into column \"{}\"", c.name)));
    }
    let batch = one_batch(out_schema, batches)?;
    let batch = renamed(&batch, columns)?;
    write_rows(s, alone, batch, &Target { columns, ..*target }, conflict, params, returning).await
}

/// Writes an INSERT's rows (`batch`, of the target's columns) with the
/// defaults of the other columns.
async fn write_rows(
    s: &mut Session,
    alone: bool,
    batch: RecordBatch,
    target: &Target<'_>,
    conflict: Conflict<'_>,
    params: &[ScalarValue],
    returning: Option<&Returning<'_>>,
) -> Result<Output> {
    let def = target.def;
    let batch = with_expression_defaults(s, def, target.columns, batch).await?;
    if let Conflict::Update(action) = conflict {
        if alone {
            return Err(ComputeError::Internal("ON CONFLICT DO UPDATE without a transaction".into()));
        }
        let written = upsert::upsert(s, def, target.alias, &batch, action, params).await?;
        return match returning {
            Some(r) => r.output("INSERT 0", def, &written, params).await,
            None => Ok(Output::Command(format!("INSERT 0 {}", written.num_rows()))),
        };
    }
    let kind = if matches!(conflict, Conflict::Ignore) { WriteKind::InsertOrIgnore } else { WriteKind::Insert };
    if batch.num_rows() > 0 {
        let n = if alone {
            s.storage().client.commit(&s.storage().database, 0, vec![table_write(def, kind, &batch)?]).await?
        } else {
            // Without a primary key no row can collide with another.
            let accepted = || if def.primary_key.is_empty() { crate::deferrable::accepted_values(def, &batch, |_| true) } else { None };
            write_or_defer(s, def, kind, &batch, accepted, batch.num_rows() as u64).await?.0
        };
        if returning.is_none() {
            return Ok(Output::Command(format!("INSERT 0 {n}")));
        }
        if n != batch.num_rows() as u64 {
            // Storage does not say which rows ON CONFLICT DO NOTHING skipped.
            return Err(ComputeError::unsupported("RETURNING with ON CONFLICT DO NOTHING when some rows conflicted"));
        }
    }
    match returning {
        Some(r) => r.output("INSERT 0", def, &batch, params).await,
        None => Ok(Output::Command("INSERT 0 0".into())),
    }
}

/// Adds columns whose DEFAULT is an expression, for columns the INSERT or
/// COPY did not name: `nextval` (SERIAL, IDENTITY) a value per row, others
/// (e.g. `now()`) evaluated once per statement.
pub(crate) async fn with_expression_defaults(s: &Session, def: &TableDef, named: &[String], batch: RecordBatch) -> Result<RecordBatch> {
    let missing: Vec<_> = def
        .columns
        .iter()
        .filter(|c| c.default_expr.is_some() && !named.contains(&c.name))
        .collect();
    if missing.is_empty() {
        return Ok(batch);
    }
    // nextval defaults (SERIAL, IDENTITY) take a value per row; the others
    // are evaluated once.
    let (serial, once): (Vec<_>, Vec<_>) =
        missing.into_iter().partition(|c| c.default_expr.as_deref().and_then(sequences::nextval_source).is_some());
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut arrays: Vec<ArrayRef> = batch.columns().to_vec();
    for c in serial {
        let source = c.default_expr.as_deref().and_then(sequences::nextval_source).unwrap_or_default();
        let values = if batch.num_rows() == 0 { Vec::new() } else { s.sequences.next_values(&source, batch.num_rows() as u64).await? };
        arrays.push(Arc::new(Int64Array::from(values)));
        fields.push(Field::new(&c.name, DataType::Int64, true));
    }
    if !once.is_empty() {
        let exprs: Vec<String> = once.iter().map(|c| c.default_expr.clone().unwrap_or_default()).collect();
        let (_, values) = select(s, &format!("SELECT {}", exprs.join(", ")), &[]).await?;
        let row = values.first().filter(|b| b.num_rows() == 1).ok_or_else(|| ComputeError::Internal("default expression returned no row".into()))?;
        for (i, c) in once.iter().enumerate() {
            let value = ScalarValue::try_from_array(row.column(i), 0)?;
            let array = if batch.num_rows() == 0 {
                new_null_array(row.column(i).data_type(), 0)
            } else {
                value.to_array_of_size(batch.num_rows())?
            };
            fields.push(Field::new(&c.name, array.data_type().clone(), true));
            arrays.push(array);
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| ComputeError::Internal(e.to_string()))
}

/// The columns a SET list assigns, each with its expression as SQL text
/// (`render` may rewrite it; multiple-column items and `DEFAULT` are taken
/// apart first, see `set_list`); unknown and repeated columns are errors.
pub(crate) fn assignments(
    s: &Session,
    def: &TableDef,
    list: &[Assignment],
    render: impl Fn(&Expr) -> String,
) -> Result<std::collections::HashMap<String, String>> {
    let mut assigned = std::collections::HashMap::new();
    for (col, value) in super::set_list::expand(def, list, &|f| s.is_volatile_function(f))? {
        if assigned.insert(col.to_string(), render(&value)).is_some() {
            return Err(ComputeError::invalid("42601", format!("multiple assignments to same column \"{col}\"")));
        }
    }
    Ok(assigned)
}

/// The single target table of an UPDATE or DELETE, with its alias as SQL
/// text (` AS x` or empty) and as a name.
fn target_relation(t: &TableFactor) -> Result<(Option<String>, String, String, Option<String>)> {
    match t {
        TableFactor::Table { name, alias, .. } => {
            let (schema, table) = object_name(name)?;
            let alias_name = alias.as_ref().map(|a| ident(&a.name));
            let alias_text = alias_name.as_ref().map(|a| format!(" AS {}", quote(a))).unwrap_or_default();
            Ok((schema, table, alias_text, alias_name))
        }
        other => Err(ComputeError::unsupported(format!("DML on \"{other}\""))),
    }
}

/// UPDATE t SET … [WHERE …]
pub async fn update(s: &mut Session, u: &Update, params: &[ScalarValue]) -> Result<Output> {
    let from = match &u.from {
        None => String::new(),
        Some(UpdateTableFromKind::AfterSet(t) | UpdateTableFromKind::BeforeSet(t)) => {
            t.iter().map(|t| format!(", {t}")).collect::<String>()
        }
    };
    if !u.table.joins.is_empty() {
        return Err(ComputeError::unsupported("UPDATE with joins"));
    }
    let (schema, table, alias, alias_name) = target_relation(&u.table.relation)?;
    let def = target(s, schema.as_deref(), &table).await?;
    // With FROM, the target's columns are qualified so they are not ambiguous.
    let col = |c: &str| format!("{}.{}", quote(alias_name.as_deref().unwrap_or(&def.name)), quote(c));
    let returning = u.returning.as_deref().map(|items| Returning { items, alias: alias_name.clone() });
    let assigned = assignments(s, &def, &u.assignments, |e| e.to_string())?;
    let key_changes = def.primary_key.iter().any(|k| assigned.contains_key(k));
    let mut items: Vec<String> = def
        .columns
        .iter()
        .map(|c| match assigned.get(&c.name) {
            Some(e) => format!("({e}) AS {}", quote(&c.name)),
            None => format!("{} AS {}", col(&c.name), quote(&c.name)),
        })
        .collect();
    let no_pk = def.primary_key.is_empty();
    if no_pk {
        items.push(format!("{} AS {}", col(ROWID), quote(ROWID)));
    }
    if key_changes {
        items.extend(def.primary_key.iter().map(|k| format!("{} AS {}", col(k), quote(&format!("__old_{k}")))));
    }
    let sql = format!(
        "SELECT {} FROM {}{}{from}{}",
        items.join(", "),
        qualified(&def),
        alias,
        u.selection.as_ref().map(|w| format!(" WHERE {w}")).unwrap_or_default()
    );
    let txn = s.begin_write().await?;
    let rows = RowsToUpdate { sql: &sql, assigned: &assigned, key_changes, joined: !from.is_empty() };
    let result = update_rows(s, &def, rows, params, returning.as_ref()).await;
    s.end_write(txn, result).await
}

/// What an UPDATE writes: the query giving each row's new values, the
/// columns its SET list assigns, whether it assigns key columns and
/// whether it joins other tables (FROM).
struct RowsToUpdate<'a> {
    sql: &'a str,
    assigned: &'a std::collections::HashMap<String, String>,
    key_changes: bool,
    joined: bool,
}

async fn update_rows(
    s: &mut Session,
    def: &TableDef,
    rows: RowsToUpdate<'_>,
    params: &[ScalarValue],
    returning: Option<&Returning<'_>>,
) -> Result<Output> {
    let RowsToUpdate { sql, assigned, key_changes, joined } = rows;
    let no_pk = def.primary_key.is_empty();
    let _rowid = s.catalog().expose_rowid(def);
    let (out_schema, batches, locked) = select_for_update(s, sql, params).await?;
    let mut batch = one_batch(out_schema, batches)?;
    let ncols = def.columns.len() + usize::from(no_pk);
    if joined {
        // A target row joined to several FROM rows is updated once, with
        // one of them (PostgreSQL: "which one is not predictable").
        let key_idx: Vec<usize> = if key_changes { (ncols..batch.num_columns()).collect() } else { key_positions(def) };
        batch = first_per_key(&batch, &key_idx)?;
    }
    let n = batch.num_rows();
    if n == 0 {
        return match returning {
            Some(r) => r.output("UPDATE", def, &batch, params).await,
            None => Ok(Output::Command("UPDATE 0".into())),
        };
    }
    let names: Vec<String> = def.columns.iter().map(|c| c.name.clone()).chain(no_pk.then(|| ROWID.to_string())).collect();
    let new_rows = renamed(&project(&batch, &(0..ncols).collect::<Vec<_>>())?, &names)?;
    if key_changes {
        let old_idx: Vec<usize> = (ncols..batch.num_columns()).collect();
        let old_keys = renamed(&project(&batch, &old_idx)?, &def.primary_key)?;
        let del = table_write(def, WriteKind::DeleteForKeyUpdate, &old_keys)?;
        s.storage().write(del).await?;
        let ins = table_write(def, WriteKind::Insert, &new_rows)?;
        s.storage().write(ins).await?;
    } else {
        // A locked row keeps its key: only the assigned values can be refused.
        let accepted = || if locked { crate::deferrable::accepted_values(def, &new_rows, |c| assigned.contains_key(c)) } else { None };
        let (_, deferred) = write_or_defer(s, def, WriteKind::Upsert, &new_rows, accepted, n as u64).await?;
        if let Some(rows) = deferred {
            // Locked and written whole: the transaction's own later reads
            // of these rows need not ask storage.
            s.storage().remember_own_rows(def, &rows);
        }
    }
    match returning {
        Some(r) => r.output("UPDATE", def, &new_rows, params).await,
        None => Ok(Output::Command(format!("UPDATE {n}"))),
    }
}

/// Positions of the key (primary-key columns, or the row id after the
/// table's columns) in a row laid out like the table.
pub(crate) fn key_positions(def: &TableDef) -> Vec<usize> {
    if def.primary_key.is_empty() {
        return vec![def.columns.len()];
    }
    def.primary_key.iter().filter_map(|k| def.columns.iter().position(|c| &c.name == k)).collect()
}

/// The first row of `batch` for each distinct value of the `key` columns.
pub(crate) fn first_per_key(batch: &RecordBatch, key: &[usize]) -> Result<RecordBatch> {
    let mut seen = std::collections::HashSet::new();
    let mut keep = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let k: Vec<ScalarValue> = key.iter().map(|&i| ScalarValue::try_from_array(batch.column(i), row)).collect::<Result<_, _>>()?;
        if seen.insert(k) {
            keep.push(row as u32);
        }
    }
    if keep.len() == batch.num_rows() {
        return Ok(batch.clone());
    }
    let idx = arrow::array::UInt32Array::from(keep);
    let columns = batch.columns().iter().map(|c| arrow::compute::take(c, &idx, None)).collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// Deletes the rows a WHERE selects by key (primary-key columns, or the
/// row id); with RETURNING, whole rows are read first and it is evaluated
/// over them.
/// The rows to delete: a target table with its alias (SQL text and name),
/// tables of a USING clause (SQL text, `, t2, t3`) and a WHERE.
struct Deletion<'a> {
    alias: &'a str,
    alias_name: Option<&'a str>,
    using: String,
    selection: Option<String>,
}

async fn delete_where(
    s: &mut Session,
    def: &TableDef,
    what: Deletion<'_>,
    params: &[ScalarValue],
    returning: Option<&Returning<'_>>,
) -> Result<Output> {
    let keys: Vec<String> = if def.primary_key.is_empty() { vec![ROWID.to_string()] } else { def.primary_key.clone() };
    let mut columns: Vec<String> = if returning.is_some() { def.columns.iter().map(|c| c.name.clone()).collect() } else { Vec::new() };
    columns.extend(keys.iter().filter(|k| !columns.contains(k)).cloned().collect::<Vec<_>>());
    let qualifier = quote(what.alias_name.unwrap_or(&def.name));
    let sql = format!(
        "SELECT {} FROM {}{}{}{}",
        columns.iter().map(|k| format!("{qualifier}.{} AS {}", quote(k), quote(k))).collect::<Vec<_>>().join(", "),
        qualified(def),
        what.alias,
        what.using,
        what.selection.map(|w| format!(" WHERE {w}")).unwrap_or_default()
    );
    let txn = s.begin_write().await?;
    let joined = !what.using.is_empty();
    let result = delete_rows(s, def, &sql, &columns, &keys, params, returning, joined).await;
    s.end_write(txn, result).await
}

#[allow(clippy::too_many_arguments)]
async fn delete_rows(
    s: &mut Session,
    def: &TableDef,
    sql: &str,
    columns: &[String],
    keys: &[String],
    params: &[ScalarValue],
    returning: Option<&Returning<'_>>,
    joined: bool,
) -> Result<Output> {
    let _rowid = s.catalog().expose_rowid(def);
    let (out_schema, batches, locked) = select_for_update(s, sql, params).await?;
    let key_idx: Vec<usize> = keys.iter().filter_map(|k| columns.iter().position(|c| c == k)).collect();
    let batch = renamed(&one_batch(out_schema, batches)?, columns)?;
    // With USING, a row joined to several rows is deleted (and returned) once;
    // without, every row comes once already.
    let batch = if joined { first_per_key(&batch, &key_idx)? } else { batch };
    let mut n = 0;
    if batch.num_rows() > 0 {
        let keys = project(&batch, &key_idx)?;
        // A locked row was read: it is there to delete.
        let accepted = || locked.then(|| keys.clone());
        n = write_or_defer(s, def, WriteKind::Delete, &keys, accepted, batch.num_rows() as u64).await?.0;
    }
    match returning {
        Some(r) => r.output("DELETE", def, &batch, params).await,
        None => Ok(Output::Command(format!("DELETE {n}"))),
    }
}

/// DELETE FROM t [WHERE …]
pub async fn delete(s: &mut Session, d: &Delete, params: &[ScalarValue]) -> Result<Output> {
    let tables = match &d.from {
        FromTable::WithFromKeyword(t) | FromTable::WithoutKeyword(t) => t,
    };
    let [t] = tables.as_slice() else {
        return Err(ComputeError::unsupported("DELETE from several tables"));
    };
    let (schema, table, alias, alias_name) = target_relation(&t.relation)?;
    let def = target(s, schema.as_deref(), &table).await?;
    let returning = d.returning.as_deref().map(|items| Returning { items, alias: alias_name.clone() });
    let what = Deletion {
        alias: &alias,
        alias_name: alias_name.as_deref(),
        using: d.using.iter().flatten().map(|t| format!(", {t}")).collect(),
        selection: d.selection.as_ref().map(|w| w.to_string()),
    };
    delete_where(s, &def, what, params, returning.as_ref()).await
}

/// TRUNCATE t [, …]: deletes every row, atomically across the tables.
/// The tables of a TRUNCATE in an order that empties each before the
/// tables it references. As in PostgreSQL, a table another table's key
/// references can only be emptied with that table (0A000).
fn truncation_order(s: &Session, mut defs: Vec<TableDef>) -> Result<Vec<TableDef>> {
    let all = s.catalog().table_defs();
    for def in &defs {
        let outside = all.iter().find(|o| o.id != def.id && o.foreign_keys.iter().any(|f| f.ref_table == def.id) && !defs.iter().any(|d| d.id == o.id));
        if let Some(o) = outside {
            return Err(ComputeError::invalid(
                "0A000",
                format!("cannot truncate a table referenced in a foreign key constraint (table \"{}\" references \"{}\"; truncate it at the same time)", o.name, def.name),
            ));
        }
    }
    let mut ordered = Vec::with_capacity(defs.len());
    while !defs.is_empty() {
        // A table no other remaining one references (a cycle: any).
        let free = defs.iter().position(|d| !defs.iter().any(|o| o.id != d.id && o.foreign_keys.iter().any(|f| f.ref_table == d.id))).unwrap_or(0);
        ordered.push(defs.remove(free));
    }
    Ok(ordered)
}

pub async fn truncate(s: &mut Session, t: &Truncate) -> Result<Output> {
    let restart = matches!(t.identity, Some(TruncateIdentityOption::Restart));
    if restart && s.block() != Block::Idle {
        // Sequences are not transactional here; a rollback could not undo it.
        return Err(ComputeError::unsupported("TRUNCATE … RESTART IDENTITY inside a transaction block"));
    }
    let mut defs = Vec::new();
    for target_table in &t.table_names {
        let (schema, name) = object_name(&target_table.name)?;
        defs.push(target(s, schema.as_deref(), &name).await?);
    }
    let defs = truncation_order(s, defs)?;
    let txn = s.begin_write().await?;
    let mut result = Ok(());
    for def in &defs {
        let all = Deletion { alias: "", alias_name: None, using: String::new(), selection: None };
        if let Err(e) = delete_where(s, def, all, &[], None).await {
            result = Err(e);
            break;
        }
    }
    s.end_write(txn, result).await?;
    if restart {
        // The rows are gone (committed): the sequences their columns own
        // start over.
        let owned: Vec<_> = s
            .catalog()
            .table_defs()
            .into_iter()
            .filter(|seq| seq.sequence.as_ref().is_some_and(|o| defs.iter().any(|d| d.id == o.owned_by_table)))
            .collect();
        for seq in owned {
            let start = seq.sequence.as_ref().map_or(1, |o| o.start);
            s.storage().client.set_value(&s.storage().database, &seq.schema, &seq.name, start, false).await?;
        }
    }
    Ok(Output::Command("TRUNCATE TABLE".into()))
}
