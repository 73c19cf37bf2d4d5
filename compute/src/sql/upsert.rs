//! `INSERT … ON CONFLICT (primary key) DO UPDATE SET … [WHERE …]`.
//!
//! The proposed rows (`EXCLUDED`) are joined by primary key with the rows
//! the statement sees in the table; DataFusion computes, per proposed row,
//! either the row to insert or the updated existing row (SET expressions see
//! the existing row through the table's name or alias, and `EXCLUDED`).
//! New rows are inserted (a concurrent insert of the same key is a unique
//! violation), updated rows upserted under their row locks.

use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use datafusion::common::{ScalarValue, TableReference};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionConfig;
use datafusion::sql::sqlparser::ast::{ConflictTarget, DoUpdate, Expr, Ident, visit_expressions_mut};
use ebb_proto::storage::{TableDef, WriteKind};

use super::ddl::object_name;
use super::dml::{first_per_key, key_positions, quote};
use super::returning::table_rows;
use crate::error::{ComputeError, Result};
use crate::session::Session;
use crate::storage_client::table_write;

const NEW_ROW: &str = "__ebb_new_row";
const EXCLUDED: &str = "excluded";

/// Checks that the conflict target is the primary key.
pub fn check_target(def: &TableDef, target: Option<&ConflictTarget>) -> Result<()> {
    let pk: Vec<&str> = def.primary_key.iter().map(String::as_str).collect();
    let ok = match target {
        Some(ConflictTarget::Columns(cols)) => {
            let mut named: Vec<&str> = cols.iter().map(|c| c.value.as_str()).collect();
            let mut key = pk.clone();
            named.sort_unstable();
            key.sort_unstable();
            !pk.is_empty() && named == key
        }
        Some(ConflictTarget::OnConstraint(name)) => {
            !pk.is_empty() && object_name(name).is_ok_and(|(_, n)| n == format!("{}_pkey", def.name))
        }
        None => false,
    };
    if ok {
        Ok(())
    } else if target.is_none() {
        Err(ComputeError::invalid("42601", "ON CONFLICT DO UPDATE requires inference specification or constraint name"))
    } else {
        Err(ComputeError::unsupported("ON CONFLICT on anything but the primary key"))
    }
}

/// Qualifies bare column names in `e` with `alias` (PostgreSQL reads them as
/// the existing row's columns).
fn qualify(e: &Expr, def: &TableDef, alias: &str) -> String {
    let mut e = e.clone();
    let _ = visit_expressions_mut(&mut e, |x| {
        if let Expr::Identifier(id) = x
            && def.columns.iter().any(|c| c.name == id.value)
        {
            *x = Expr::CompoundIdentifier(vec![Ident::with_quote('"', alias), id.clone()]);
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}

/// Computes and writes the rows; returns the rows written (inserted and
/// updated, table-shaped, for RETURNING) and their count.
pub async fn upsert(
    s: &mut Session,
    def: &TableDef,
    alias: Option<&str>,
    proposed: &RecordBatch,
    action: &DoUpdate,
    params: &[ScalarValue],
) -> Result<RecordBatch> {
    let excluded = table_rows(def, proposed)?;
    check_distinct_keys(def, &excluded)?;
    let target = alias.unwrap_or(&def.name).to_string();
    let set = super::dml::assignments(s, def, &action.assignments, |e| qualify(e, def, &target))?;
    if def.primary_key.iter().any(|k| set.contains_key(k)) {
        return Err(ComputeError::unsupported("ON CONFLICT DO UPDATE that changes the primary key"));
    }
    let exists = format!("{}.{} IS NOT NULL", quote(&target), quote(&def.primary_key[0]));
    let guard = action.selection.as_ref().map(|w| format!(" AND ({})", qualify(w, def, &target))).unwrap_or_default();
    let items: Vec<String> = def
        .columns
        .iter()
        .map(|c| {
            let updated = set.get(&c.name).cloned().unwrap_or_else(|| format!("{}.{}", quote(&target), quote(&c.name)));
            format!("CASE WHEN {exists} THEN {updated} ELSE {EXCLUDED}.{} END AS {}", quote(&c.name), quote(&c.name))
        })
        .collect();
    let on: Vec<String> =
        def.primary_key.iter().map(|k| format!("{EXCLUDED}.{} = {}.{}", quote(k), quote(&target), quote(k))).collect();
    let sql = format!(
        "SELECT {}, NOT ({exists}) AS {NEW_ROW} FROM {EXCLUDED} LEFT JOIN {} AS {} ON {} WHERE NOT ({exists}) OR (TRUE{guard})",
        items.join(", "),
        quote(&def.name),
        quote(&target),
        on.join(" AND ")
    );
    // A context of its own: the table as this transaction sees it, and the proposed rows.
    let table = s
        .catalog()
        .table(if def.schema.is_empty() { None } else { Some(def.schema.as_str()) }, &def.name)
        .ok_or_else(|| ComputeError::invalid("42P01", format!("relation \"{}\" does not exist", def.name)))?;
    let ctx = crate::session::postgres_context(SessionConfig::new());
    ctx.register_table(TableReference::bare(def.name.as_str()), table)?;
    ctx.register_table(TableReference::bare(EXCLUDED), Arc::new(MemTable::try_new(excluded.schema(), vec![vec![excluded]])?))?;
    let mut df = ctx.sql(&sql).await?;
    if !params.is_empty() {
        df = df.with_param_values(params.to_vec())?;
    }
    let schema = Arc::new(df.schema().as_arrow().clone());
    let rows = concat_batches(&schema, &df.collect().await?)?;
    let new_flag = rows.column(def.columns.len());
    let is_new = new_flag
        .as_any()
        .downcast_ref::<arrow::array::BooleanArray>()
        .ok_or_else(|| ComputeError::Internal("upsert flag is not boolean".into()))?
        .clone();
    let written = rows.project(&(0..def.columns.len()).collect::<Vec<_>>())?;
    let inserts = arrow::compute::filter_record_batch(&written, &is_new)?;
    let updates = arrow::compute::filter_record_batch(&written, &arrow::compute::not(&is_new)?)?;
    for (kind, batch) in [(WriteKind::Insert, &inserts), (WriteKind::Upsert, &updates)] {
        if batch.num_rows() > 0 {
            s.storage().write(table_write(def, kind, batch)?).await?;
        }
    }
    Ok(written)
}

/// PostgreSQL refuses to update one row twice in a statement (21000).
fn check_distinct_keys(def: &TableDef, rows: &RecordBatch) -> Result<()> {
    if first_per_key(rows, &key_positions(def))?.num_rows() != rows.num_rows() {
        return Err(ComputeError::invalid(
            "21000",
            "ON CONFLICT DO UPDATE command cannot affect row a second time: the proposed rows repeat a key",
        ));
    }
    Ok(())
}
