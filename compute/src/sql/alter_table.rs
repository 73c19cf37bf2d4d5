//! ALTER TABLE, one action after another in the order written (`ADD COLUMN
//! c …, ADD CONSTRAINT … UNIQUE (c)` needs the column first). Constraints
//! and identity columns are the session's to add (they need other
//! requests: an index, a sequence, rows checked); the other actions are
//! storage requests (`ddl::alter_table`). Each action commits on its own,
//! as all DDL here does.

use datafusion::sql::sqlparser::ast::{AlterColumnOperation, AlterTable, AlterTableOperation, GeneratedAs, TableConstraint};

use super::{checks, ddl, dml, foreign_keys, indexes};
use crate::error::Result;
use crate::session::{Output, Session};

/// Runs ALTER TABLE.
pub async fn alter_table(s: &mut Session, at: &AlterTable) -> Result<Output> {
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
