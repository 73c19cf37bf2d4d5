//! CHECK constraints: their definitions from CREATE TABLE and ALTER TABLE
//! (named as PostgreSQL names them), and their enforcement. Storage keeps a
//! table's constraints as SQL text but evaluates no expressions, so compute
//! checks every row it writes — `storage_client::table_write`, which every
//! write of rows passes, calls [`verify`]. A row fails when an expression
//! is false for it (NULL passes, as in PostgreSQL) with 23514.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{CheckConstraint, Expr, Ident, visit_expressions, visit_expressions_mut};
use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
use ebb_proto::storage::{CheckDef, TableDef};

use datafusion::sql::sqlparser::ast::ObjectName;
use ebb_proto::storage::AlterTableRequest;
use ebb_proto::storage::alter_table_request::Action;

use super::ddl::{ident, object_name};
use crate::error::{ComputeError, Result};
use crate::session::Session;
use crate::table::table_schema;

/// A CHECK constraint as written, before it is named.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: Option<String>,
    pub expr: String,
    /// The columns it reads (for its name, and for DROP/RENAME COLUMN).
    pub columns: Vec<String>,
}

/// A CHECK constraint of a column or a table.
pub fn check_spec(c: &CheckConstraint) -> Result<CheckSpec> {
    if c.enforced == Some(false) {
        return Err(ComputeError::unsupported("NOT ENFORCED check constraints"));
    }
    let mut expr = (*c.expr).clone();
    let _ = visit_expressions_mut(&mut expr, |e| {
        match e {
            Expr::Identifier(i) => unquote(i),
            Expr::CompoundIdentifier(parts) => parts.iter_mut().for_each(unquote),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(CheckSpec { name: c.name.as_ref().map(ident), expr: expr.to_string(), columns: columns_of(&c.expr) })
}

/// Drops the quotes of an identifier that reads the same without them
/// (`"qty"` → `qty`), so a constraint prints as PostgreSQL deparses it.
fn unquote(i: &mut Ident) {
    let bare = i.quote_style == Some('"')
        && i.value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && i.value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !ALL_KEYWORDS.contains(&i.value.to_ascii_uppercase().as_str());
    if bare {
        i.quote_style = None;
    }
}

/// The columns an expression reads, each once, in order of appearance.
fn columns_of(expr: &Expr) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = visit_expressions(expr, |e| {
        let name = match e {
            Expr::Identifier(i) => Some(ident(i)),
            Expr::CompoundIdentifier(parts) => parts.last().map(ident),
            _ => None,
        };
        if let Some(n) = name.filter(|n| !out.contains(n)) {
            out.push(n);
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

/// The columns a stored constraint's expression reads.
pub fn columns_of_stored(check: &CheckDef) -> Vec<String> {
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    match datafusion::sql::sqlparser::parser::Parser::new(&dialect).try_with_sql(&check.expr).and_then(|mut p| p.parse_expr()) {
        Ok(e) => columns_of(&e),
        Err(_) => Vec::new(),
    }
}

/// Names the constraints of `table` as PostgreSQL does: `<table>_<column>_check`
/// for one that reads one column, `<table>_check` otherwise, then `1`, `2`,
/// … while the name is among `taken` or given to an earlier one.
pub fn named(table: &str, specs: Vec<CheckSpec>, taken: &[String]) -> Vec<CheckDef> {
    let mut used: Vec<String> = taken.to_vec();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let name = spec.name.unwrap_or_else(|| {
            let base = match spec.columns.as_slice() {
                [one] => super::indexes::generated_name(table, std::slice::from_ref(one), "check"),
                _ => super::indexes::generated_name(table, &[], "check"),
            };
            super::ddl::free_name(&base, |n| used.iter().any(|u| u == n))
        });
        used.push(name.clone());
        out.push(CheckDef { name, expr: spec.expr });
    }
    out
}

/// A table's constraints compiled against its columns.
struct Compiled {
    /// The definition they were compiled from: its columns and constraints
    /// (table ids repeat across databases, so the id alone is not enough).
    key: (Vec<ebb_proto::storage::ColumnDef>, Vec<CheckDef>),
    schema: SchemaRef,
    checks: Vec<(String, Arc<dyn PhysicalExpr>)>,
}

/// Most tables whose compiled constraints are kept (emptied when full).
const KEPT: usize = 256;

/// Compiled constraints by table id: DataFusion's parser and planner cost
/// far more than evaluating a batch.
fn cache() -> &'static Mutex<HashMap<u32, Arc<Compiled>>> {
    static CACHE: OnceLock<Mutex<HashMap<u32, Arc<Compiled>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn compiled(def: &TableDef) -> Result<Arc<Compiled>> {
    let mut cached = cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cached.get(&def.id).filter(|c| c.key.0 == def.columns && c.key.1 == def.checks) {
        return Ok(c.clone());
    }
    if cached.len() >= KEPT {
        cached.clear();
    }
    let key = (def.columns.clone(), def.checks.clone());
    static CONTEXT: OnceLock<SessionContext> = OnceLock::new();
    let ctx = CONTEXT.get_or_init(SessionContext::new);
    // Every field nullable: a NULL in a NOT NULL column is storage's to refuse.
    let fields: Vec<_> = table_schema(def).fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect();
    let schema: SchemaRef = Arc::new(arrow::datatypes::Schema::new(fields));
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let mut checks = Vec::with_capacity(def.checks.len());
    for c in &def.checks {
        let unusable = |e: datafusion::error::DataFusionError| {
            ComputeError::invalid("42P17", format!("check constraint \"{}\" ({}) cannot be evaluated: {e}", c.name, c.expr))
        };
        let expr = ctx.parse_sql_expr(&c.expr, &df_schema).map_err(unusable)?;
        checks.push((c.name.clone(), ctx.create_physical_expr(expr, &df_schema).map_err(unusable)?));
    }
    let compiled = Arc::new(Compiled { key, schema, checks });
    cached.insert(def.id, compiled.clone());
    Ok(compiled)
}

/// Checks the CHECK constraints of `def` compile (ALTER TABLE … ADD
/// CONSTRAINT, CREATE TABLE) against a definition that holds them.
pub fn validate(def: &TableDef) -> Result<()> {
    compiled(def).map(drop)
}

/// Fails with 23514 when a row of `batch` (rows of `def`, columns named as
/// its columns) violates one of its CHECK constraints. A column the batch
/// leaves out reads as its constant default, as storage will store it.
pub fn verify(def: &TableDef, batch: &RecordBatch) -> Result<()> {
    if def.checks.is_empty() || batch.num_rows() == 0 {
        return Ok(());
    }
    let compiled = compiled(def)?;
    let rows = full_rows(def, &compiled.schema, batch)?;
    for (name, expr) in &compiled.checks {
        let result = expr.evaluate(&rows)?.into_array(rows.num_rows())?;
        let Some(passed) = result.as_boolean_opt() else {
            return Err(ComputeError::invalid("42804", format!("check constraint \"{name}\" is not a boolean expression")));
        };
        if (0..passed.len()).any(|i| passed.is_valid(i) && !passed.value(i)) {
            return Err(ComputeError::invalid("23514", format!("new row for relation \"{}\" violates check constraint \"{name}\"", def.name)));
        }
    }
    Ok(())
}

/// `batch` with every column of the table, of the table's types (a value
/// that does not convert reads as NULL here; storage refuses it later).
fn full_rows(def: &TableDef, schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let safe = CastOptions { safe: true, ..Default::default() };
    let columns = schema
        .fields()
        .iter()
        .zip(&def.columns)
        .map(|(field, col)| -> Result<ArrayRef> {
            if let Some(a) = batch.column_by_name(field.name()) {
                return Ok(cast_with_options(a, field.data_type(), &safe)?);
            }
            Ok(match &col.default_literal {
                Some(lit) => {
                    let text: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![lit.as_str(); n]));
                    cast_with_options(&text, field.data_type(), &safe)?
                }
                None => new_null_array(field.data_type(), n),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// ALTER TABLE … ADD [CONSTRAINT name] CHECK (expr): refused with 23514
/// while a row violates it, as in PostgreSQL.
pub async fn add_check(s: &Session, table: &ObjectName, spec: CheckSpec) -> Result<()> {
    let (schema, name) = object_name(table)?;
    let def = super::dml::target(s, schema.as_deref(), &name).await?;
    let taken = super::ddl::constraint_names(&def);
    if let Some(given) = spec.name.as_ref().filter(|n| taken.contains(n)) {
        return Err(ComputeError::invalid("42710", format!("constraint \"{given}\" for relation \"{}\" already exists", def.name)));
    }
    let check = named(&def.name, vec![spec], &taken).remove(0);
    let mut with = def.clone();
    with.checks.push(check.clone());
    validate(&with)?;
    let sql = format!("SELECT count(*) FROM {} WHERE NOT ({})", quoted(&def.schema, &def.name), check.expr);
    let plan = s.plan_generated(&sql, None).await?;
    let (_, batches) = s.run_plan(plan, &[], false).await?;
    let violations = batches.first().and_then(|b| b.column(0).as_primitive_opt::<arrow::datatypes::Int64Type>().map(|a| a.value(0))).unwrap_or(0);
    if violations > 0 {
        return Err(ComputeError::invalid("23514", format!("check constraint \"{}\" of relation \"{}\" is violated by some row", check.name, def.name)));
    }
    let req = AlterTableRequest { database: s.database().into(), schema: def.schema.clone(), name: def.name.clone(), action: Some(Action::AddCheck(check)) };
    s.storage().client.alter_table(req).await
}

/// After DROP COLUMN: drops the CHECK constraints of `def` (the table as it
/// was) that read the column, as PostgreSQL does (also those that read
/// other columns too).
pub async fn drop_for_column(s: &Session, def: &TableDef, column: &str) -> Result<()> {
    for c in &def.checks {
        if !columns_of_stored(c).iter().any(|n| n == column) {
            continue;
        }
        let req = AlterTableRequest { database: s.database().into(), schema: def.schema.clone(), name: def.name.clone(), action: Some(Action::DropCheck(c.name.clone())) };
        s.storage().client.alter_table(req).await?;
    }
    Ok(())
}

/// RENAME COLUMN of a column a CHECK constraint reads is refused: the
/// constraint is stored as text and would go on naming the old column.
pub fn refuse_rename(def: &TableDef, column: &str) -> Result<()> {
    match def.checks.iter().find(|c| columns_of_stored(c).iter().any(|n| n == column)) {
        Some(c) => Err(ComputeError::unsupported(format!(
            "renaming column \"{column}\", which check constraint \"{}\" reads (drop the constraint, rename, add it again)",
            c.name
        ))),
        None => Ok(()),
    }
}

/// `schema.table` quoted for generated SQL.
fn quoted(schema: &str, table: &str) -> String {
    format!("\"{}\".\"{}\"", schema.replace('"', "\"\""), table.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::{ColumnOption, Statement};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn specs(sql: &str) -> Vec<CheckSpec> {
        let Statement::CreateTable(ct) = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0) else { panic!("not CREATE TABLE") };
        let mut out = Vec::new();
        for c in &ct.columns {
            for o in &c.options {
                if let ColumnOption::Check(k) = &o.option {
                    out.push(check_spec(k).expect("spec"));
                }
            }
        }
        for t in &ct.constraints {
            if let datafusion::sql::sqlparser::ast::TableConstraint::Check(k) = t {
                out.push(check_spec(k).expect("spec"));
            }
        }
        out
    }

    #[test]
    fn constraints_are_named_as_postgres_names_them() {
        let defs = named("ck2", specs("CREATE TABLE ck2 (a int CHECK (a>0), b int, CHECK (a > 1), CHECK (b > a), CHECK (b>0), CONSTRAINT mine CHECK (b < 9))"), &[]);
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["ck2_a_check", "ck2_a_check1", "ck2_check", "ck2_b_check", "mine"]);
        assert_eq!(named("ck2", specs("CREATE TABLE x (b int CHECK (b < 100))"), &["ck2_b_check".into()])[0].name, "ck2_b_check1");
    }
}
