//! ALTER TABLE, one action after another in the order written (`ADD COLUMN
//! c …, ADD CONSTRAINT … UNIQUE (c)` needs the column first). Constraints
//! and identity columns are the session's to add (they need other
//! requests: an index, a sequence, rows checked); the other actions are
//! storage requests (`ddl::alter_table`). Each action commits on its own,
//! as all DDL here does.

use datafusion::sql::sqlparser::ast::{AlterColumnOperation, AlterTable, AlterTableOperation, Expr, GeneratedAs, Owner, SqlOption, TableConstraint};
use datafusion::sql::sqlparser::parser::Parser;
use ebb_proto::storage::alter_table_request::Action;
use ebb_proto::storage::{AlterTableRequest, SequenceChange, SequenceOptions, SequenceOwner};

use super::{checks, ddl, dml, foreign_keys, indexes, sequences};
use crate::error::{ComputeError, Result};
use crate::session::{Notice, Output, Session};

/// Runs ALTER TABLE (and ALTER SEQUENCE, which arrives as one: see
/// `sequences::alter_sequence_as_table`).
pub async fn alter_table(s: &mut Session, at: &AlterTable) -> Result<Output> {
    if let Some(options) = sequence_options(at) {
        return alter_sequence(s, at, options).await;
    }
    let (schema, name) = ddl::object_name(&at.name)?;
    for (i, op) in at.operations.iter().enumerate() {
        if i > 0 {
            // The definition the earlier actions left.
            s.catalog().refresh().await?;
        }
        match op {
            AlterTableOperation::OwnerTo { new_owner } => s.owner_to(new_owner).await?,
            AlterTableOperation::AddConstraint { constraint: TableConstraint::Unique(u), .. } => {
                indexes::add_unique(s, schema.as_deref().unwrap_or_default(), &name, indexes::unique_spec(u, None)?).await?;
            }
            AlterTableOperation::AddConstraint { constraint: TableConstraint::Check(k), .. } => {
                checks::add_check(s, &at.name, checks::check_spec(k)?).await?;
            }
            AlterTableOperation::AddConstraint { constraint: TableConstraint::ForeignKey(fk), .. } => {
                let child = dml::target(s, schema.as_deref(), &name).await?;
                foreign_keys::add_foreign_key(s, &child, foreign_keys::foreign_key_spec(fk, None)?).await?;
            }
            AlterTableOperation::DropConstraint { if_exists, name: constraint, .. } => {
                indexes::drop_constraint(s, &at.name, &ddl::ident(constraint), *if_exists).await?;
            }
            AlterTableOperation::AlterColumn { column_name, op: AlterColumnOperation::AddGenerated { generated_as, sequence_options } } => {
                let always = !matches!(generated_as, Some(GeneratedAs::ByDefault));
                s.add_identity(&at.name, &ddl::ident(column_name), always, sequence_options.as_deref().unwrap_or_default()).await?;
            }
            other => {
                let before = dml::target(s, schema.as_deref(), &name).await.ok();
                if let (AlterTableOperation::RenameColumn { old_column_name, .. }, Some(def)) = (other, &before) {
                    checks::refuse_rename(def, &ddl::ident(old_column_name))?;
                }
                let one = AlterTable { operations: vec![other.clone()], ..at.clone() };
                for req in ddl::alter_table(s.database(), &one)? {
                    s.storage().client.alter_table(req).await?;
                }
                if let (AlterTableOperation::DropColumn { column_names, .. }, Some(def)) = (other, &before) {
                    // The column is gone: so are the constraints that read it.
                    for c in column_names {
                        checks::drop_for_column(s, def, &ddl::ident(c)).await?;
                    }
                }
            }
        }
    }
    Ok(Output::Command("ALTER TABLE".into()))
}

/// The `\0sequence_…` options of an ALTER TABLE that carries an ALTER
/// SEQUENCE: (key, value) pairs.
fn sequence_options(at: &AlterTable) -> Option<Vec<(String, String)>> {
    let [AlterTableOperation::SetOptionsParens { options }] = at.operations.as_slice() else { return None };
    options
        .iter()
        .map(|o| match o {
            SqlOption::KeyValue { key, value: Expr::Value(v) } if key.value.starts_with(sequences::SEQUENCE_OPTION_PREFIX) => {
                v.value.clone().into_string().map(|text| (key.value.clone(), text))
            }
            _ => None,
        })
        .collect()
}

/// ALTER SEQUENCE: OWNED BY (storage), RESTART (setval without a call, or
/// with the options below), OWNER TO (a notice, as for tables), and the
/// option clauses (`sequences::altered_options`, applied by storage with
/// the RESTART of the same statement).
async fn alter_sequence(s: &mut Session, at: &AlterTable, options: Vec<(String, String)>) -> Result<Output> {
    let (schema, name) = ddl::object_name(&at.name)?;
    let Some(def) = s.catalog().table(schema.as_deref(), &name).map(|t| t.def().clone()) else {
        if at.if_exists {
            s.notices.push(Notice::info("00000", format!("relation \"{name}\" does not exist, skipping")));
            return Ok(Output::Command("ALTER SEQUENCE".into()));
        }
        return Err(ComputeError::invalid("42P01", format!("relation \"{name}\" does not exist")));
    };
    let Some(sequence) = def.sequence.clone() else {
        return Err(ComputeError::invalid("42809", format!("\"{name}\" is not a sequence")));
    };
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let parse = |text: &str| Parser::new(&dialect).try_with_sql(text).map_err(|e| ComputeError::Syntax(format!("syntax error: {e}")));
    let (changes, options): (Vec<_>, Vec<_>) = options.into_iter().partition(|(k, _)| sequences::is_option_clause(k));
    let mut restart = None;
    for (key, value) in options {
        match key.as_str() {
            sequences::OWNED_BY_OPTION => {
                let owner = parse(&value)?.parse_object_name(false).map_err(|e| ComputeError::Syntax(format!("syntax error: {e}")))?;
                let mut owned = SequenceOptions { owned_by_table: 0, owned_by_column: String::new(), ..sequence.clone() };
                s.set_owner(&mut owned, &owner)?;
                let owner = SequenceOwner { table: owned.owned_by_table, column: owned.owned_by_column };
                let action = Some(Action::SetSequenceOwner(owner));
                s.storage().client.alter_table(AlterTableRequest { database: s.database().into(), schema: def.schema.clone(), name: def.name.clone(), action }).await?;
            }
            sequences::RESTART_OPTION => {
                restart = Some(if value.is_empty() {
                    None
                } else {
                    Some(value.parse::<i64>().map_err(|_| ComputeError::invalid("22003", format!("RESTART value {value} is out of range for a sequence")))?)
                });
            }
            _ => {
                let role = parse(&value)?.parse_identifier().map_err(|e| ComputeError::Syntax(format!("syntax error: {e}")))?;
                s.owner_to(&Owner::Ident(role)).await?;
            }
        }
    }
    if changes.is_empty() {
        if let Some(to) = restart {
            let to = to.unwrap_or(sequence.start);
            s.storage().client.set_value(s.database(), &def.schema, &def.name, to, false).await?;
        }
    } else {
        let options = sequences::altered_options(&sequence, &changes)?;
        // RESTART without a value: the (new) START.
        let restart = restart.map(|to| to.unwrap_or(options.start));
        let action = Some(Action::SetSequenceOptions(SequenceChange { options: Some(options), restart }));
        s.storage().client.alter_table(AlterTableRequest { database: s.database().into(), schema: def.schema.clone(), name: def.name.clone(), action }).await?;
    }
    Ok(Output::Command("ALTER SEQUENCE".into()))
}
