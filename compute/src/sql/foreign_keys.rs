//! FOREIGN KEY constraints from CREATE TABLE (`REFERENCES` on a column,
//! `FOREIGN KEY (…) REFERENCES` on the table) and ALTER TABLE … ADD
//! CONSTRAINT, as storage definitions (storage enforces them; see
//! docs/storage.md). A key references the other table's primary key; NO
//! ACTION and RESTRICT are checked at once; ON DELETE CASCADE, SET NULL and
//! SET DEFAULT write the referencing rows. ON UPDATE actions
//! other than NO ACTION/RESTRICT, MATCH FULL and keys on other unique
//! columns are refused. A DEFERRABLE INITIALLY DEFERRED key (Django makes every key so)
//! is checked when the transaction commits; `SET CONSTRAINTS` is not
//! supported (a DEFERRABLE INITIALLY IMMEDIATE key is checked at once).

use datafusion::sql::sqlparser::ast::{DeferrableInitial, ForeignKeyConstraint, ObjectName, ReferentialAction};
use ebb_proto::storage::alter_table_request::Action;
use ebb_proto::storage::{AlterTableRequest, ForeignKeyDef, TableDef};

use super::ddl::{ident, object_name};
use crate::error::{ComputeError, Result};
use crate::session::Session;

/// A FOREIGN KEY constraint as written.
#[derive(Debug, Clone, PartialEq)]
pub struct ForeignKeySpec {
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub ref_table: ObjectName,
    /// Empty: the referenced table's primary key.
    pub ref_columns: Vec<String>,
    /// INITIALLY DEFERRED: checked at COMMIT.
    pub deferred: bool,
    /// ON DELETE as `pg_constraint.confdeltype` has it: `a` (NO ACTION),
    /// `r` (RESTRICT), `c` (CASCADE), `n` (SET NULL), `d` (SET DEFAULT).
    pub on_delete: String,
}

/// A FOREIGN KEY constraint of a table, or of `column` (`REFERENCES` in a
/// column definition).
pub fn foreign_key_spec(c: &ForeignKeyConstraint, column: Option<&str>) -> Result<ForeignKeySpec> {
    let on_delete = match &c.on_delete {
        None | Some(ReferentialAction::NoAction) => "a",
        Some(ReferentialAction::Restrict) => "r",
        Some(ReferentialAction::Cascade) => "c",
        Some(ReferentialAction::SetNull) => "n",
        Some(ReferentialAction::SetDefault) => "d",
    };
    match &c.on_update {
        None | Some(ReferentialAction::NoAction | ReferentialAction::Restrict) => {}
        Some(other) => return Err(ComputeError::unsupported(format!("ON UPDATE {other} of a foreign key"))),
    }
    if let Some(m) = &c.match_kind
        && m.to_string().to_uppercase() != "MATCH SIMPLE"
    {
        return Err(ComputeError::unsupported(format!("{m} of a foreign key")));
    }
    let characteristics = c.characteristics.as_ref();
    if characteristics.is_some_and(|ch| ch.enforced == Some(false)) {
        return Err(ComputeError::unsupported("NOT ENFORCED foreign keys"));
    }
    let columns = match column {
        Some(col) => vec![col.to_string()],
        None => c.columns.iter().map(ident).collect(),
    };
    Ok(ForeignKeySpec {
        name: c.name.as_ref().map(ident),
        columns,
        ref_table: c.foreign_table.clone(),
        ref_columns: c.referred_columns.iter().map(ident).collect(),
        deferred: characteristics.is_some_and(|ch| ch.initially == Some(DeferrableInitial::Deferred)),
        on_delete: on_delete.into(),
    })
}

/// Adds the key `spec` to table `child` (its current definition).
pub async fn add_foreign_key(s: &Session, child: &TableDef, spec: ForeignKeySpec) -> Result<()> {
    let (ref_schema, ref_name) = object_name(&spec.ref_table)?;
    let ref_schema = ref_schema.unwrap_or_else(|| child.schema.clone());
    let parent = if ref_schema == child.schema && ref_name == child.name {
        child.clone()
    } else {
        let mut found = s.catalog().table(Some(&ref_schema), &ref_name).map(|t| t.def().clone());
        if found.is_none() {
            // Perhaps made by another session since the catalog was loaded.
            s.catalog().refresh().await?;
            found = s.catalog().table(Some(&ref_schema), &ref_name).map(|t| t.def().clone());
        }
        found.ok_or_else(|| ComputeError::invalid("42P01", format!("relation \"{ref_name}\" does not exist")))?
    };
    if parent.primary_key.is_empty() {
        return Err(ComputeError::invalid("42830", format!("there is no primary key for referenced table \"{}\"", parent.name)));
    }
    if spec.columns.len() != parent.primary_key.len() || (!spec.ref_columns.is_empty() && spec.ref_columns.len() != spec.columns.len()) {
        return Err(ComputeError::invalid("42830", "number of referencing and referenced columns for foreign key disagree"));
    }
    // The referencing columns in the order of the primary key.
    let ordered: Vec<&String> = if spec.ref_columns.is_empty() {
        spec.columns.iter().collect()
    } else {
        let mut ordered = Vec::with_capacity(spec.columns.len());
        for k in &parent.primary_key {
            let i = spec.ref_columns.iter().position(|r| r == k).ok_or_else(|| {
                ComputeError::unsupported(format!("a foreign key referencing columns of \"{}\" other than its primary key", parent.name))
            })?;
            ordered.push(&spec.columns[i]);
        }
        ordered
    };
    let column_ids = ordered
        .iter()
        .map(|name| {
            child.columns.iter().find(|c| &c.name == *name).map(|c| c.id).ok_or_else(|| {
                ComputeError::invalid("42703", format!("column \"{name}\" referenced in foreign key constraint does not exist"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let action = if spec.on_delete == "n" { "SET NULL" } else { "SET DEFAULT" };
    if matches!(spec.on_delete.as_str(), "n" | "d")
        && let Some(c) = child.checks.iter().find(|c| super::checks::columns_of_stored(c).iter().any(|n| spec.columns.contains(n)))
    {
        // Storage sets the columns; only compute evaluates checks.
        return Err(ComputeError::unsupported(format!("ON DELETE {action} of columns check constraint \"{}\" reads", c.name)));
    }
    if spec.on_delete == "d"
        && let Some(c) = child.columns.iter().find(|c| spec.columns.contains(&c.name) && c.default_expr.is_some())
    {
        // Storage sets the columns, and evaluates no expressions.
        return Err(ComputeError::unsupported(format!("ON DELETE SET DEFAULT of column \"{}\", whose default is an expression", c.name)));
    }
    let name = spec.name.unwrap_or_else(|| free_name(child, &spec.columns));
    let fk = ForeignKeyDef { name, column_ids, ref_table: parent.id, deferred: spec.deferred, on_delete: spec.on_delete };
    let req = AlterTableRequest { database: s.database().into(), schema: child.schema.clone(), name: child.name.clone(), action: Some(Action::AddForeignKey(fk)) };
    s.storage().client.alter_table(req).await
}

/// PostgreSQL's name for an unnamed key: `<table>_<columns>_fkey`, a number
/// added while the table has a constraint of that name.
fn free_name(child: &TableDef, columns: &[String]) -> String {
    let taken = super::ddl::constraint_names(child);
    super::ddl::free_name(&super::indexes::generated_name(&child.name, columns, "fkey"), |n| taken.iter().any(|t| t == n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::{Statement, TableConstraint};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn spec(sql: &str) -> Result<ForeignKeySpec> {
        let Statement::CreateTable(ct) = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0) else { panic!("not CREATE TABLE") };
        match &ct.constraints[0] {
            TableConstraint::ForeignKey(fk) => foreign_key_spec(fk, None),
            other => panic!("not a foreign key: {other}"),
        }
    }

    #[test]
    fn keys_are_read_as_written_and_cascades_refused() {
        let s = spec("CREATE TABLE o (a int, CONSTRAINT o_a FOREIGN KEY (a) REFERENCES app.p (id) DEFERRABLE INITIALLY DEFERRED)").unwrap();
        assert_eq!(s.name.as_deref(), Some("o_a"));
        assert_eq!((s.columns.clone(), s.ref_columns.clone(), s.deferred), (vec!["a".to_string()], vec!["id".to_string()], true));
        assert_eq!(s.ref_table.to_string(), "app.p");
        assert!(!spec("CREATE TABLE o (a int, FOREIGN KEY (a) REFERENCES p ON DELETE RESTRICT)").unwrap().deferred);
        assert_eq!(spec("CREATE TABLE o (a int, FOREIGN KEY (a) REFERENCES p ON DELETE CASCADE)").unwrap().on_delete, "c");
        assert_eq!(spec("CREATE TABLE o (a int, FOREIGN KEY (a) REFERENCES p ON DELETE SET NULL)").unwrap().on_delete, "n");
        assert_eq!(spec("CREATE TABLE o (a int, FOREIGN KEY (a) REFERENCES p ON DELETE SET DEFAULT)").unwrap().on_delete, "d");
        for sql in [
            "CREATE TABLE o (a int, FOREIGN KEY (a) REFERENCES p ON UPDATE SET NULL)",
            "CREATE TABLE o (a int, FOREIGN KEY (a) REFERENCES p MATCH FULL)",
        ] {
            assert_eq!(spec(sql).unwrap_err().sqlstate(), "0A000", "{sql}");
        }
    }
}
