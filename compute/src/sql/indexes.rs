//! CREATE INDEX, DROP INDEX and UNIQUE constraints (in CREATE TABLE and
//! ALTER TABLE … ADD / DROP CONSTRAINT) as storage index requests. An index
//! holds its columns' values in order, so scans find rows by equality on a
//! prefix of them and a range on the next (`table.rs` picks one); ASC/DESC
//! and NULLS FIRST/LAST change nothing a query can see and are accepted.
//! Indexes on expressions, partial (WHERE) and INCLUDE indexes, operator
//! classes other than the default btree ones and `*_pattern_ops`, and access
//! methods other than btree and hash are refused.

use datafusion::sql::sqlparser::ast::{CreateIndex, Expr, IndexColumn, IndexType, NullsDistinctOption, ObjectName, UniqueConstraint};
use ebb_proto::storage::CreateIndexRequest;

use super::ddl::{ident, object_name};
use crate::error::{ComputeError, Result};
use crate::session::{Notice, Output, Session};

/// Longest name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;

/// A UNIQUE constraint of CREATE TABLE or ALTER TABLE … ADD CONSTRAINT.
#[derive(Debug, Clone, PartialEq)]
pub struct UniqueSpec {
    /// `CONSTRAINT name`; PostgreSQL's `<table>_<columns>_key` otherwise.
    pub name: Option<String>,
    pub columns: Vec<String>,
}

/// A UNIQUE constraint (a column's: `columns` is that column).
pub fn unique_spec(c: &UniqueConstraint, column: Option<&str>) -> Result<UniqueSpec> {
    if c.nulls_distinct == NullsDistinctOption::NotDistinct {
        return Err(ComputeError::unsupported("UNIQUE NULLS NOT DISTINCT"));
    }
    if c.characteristics.as_ref().is_some_and(|ch| ch.deferrable == Some(true)) {
        return Err(ComputeError::unsupported("DEFERRABLE unique constraints"));
    }
    check_method(c.index_type.as_ref())?;
    let columns = match column {
        Some(col) => vec![col.to_string()],
        None => index_columns(&c.columns)?,
    };
    Ok(UniqueSpec { name: c.name.as_ref().map(ident), columns })
}

/// Operator classes an index may name: ebb's entries order values as a
/// btree's default classes do, and text byte by byte, as the
/// `*_pattern_ops` classes (which Django asks for, for LIKE 'prefix%') do.
const OPERATOR_CLASSES: [&str; 18] = [
    "text_pattern_ops", "varchar_pattern_ops", "bpchar_pattern_ops", "int2_ops", "int4_ops", "int8_ops", "text_ops", "varchar_ops",
    "bpchar_ops", "numeric_ops", "float4_ops", "float8_ops", "bool_ops", "date_ops", "timestamp_ops", "timestamptz_ops", "bytea_ops",
    "uuid_ops",
];

/// The column names of an index's column list.
fn index_columns(columns: &[IndexColumn]) -> Result<Vec<String>> {
    columns
        .iter()
        .map(|c| {
            if let Some(class) = &c.operator_class {
                let name = class.0.last().map(|p| p.to_string().trim_matches('"').to_ascii_lowercase()).unwrap_or_default();
                if !OPERATOR_CLASSES.contains(&name.as_str()) {
                    return Err(ComputeError::unsupported(format!("index operator class {class}")));
                }
            }
            match &c.column.expr {
                Expr::Identifier(i) => Ok(ident(i)),
                other => Err(ComputeError::unsupported(format!("indexes on expressions ({other})"))),
            }
        })
        .collect()
}

/// Refuses access methods other than btree (and hash, whose lookups a
/// btree serves as well).
fn check_method(using: Option<&IndexType>) -> Result<()> {
    match using {
        None | Some(IndexType::BTree | IndexType::Hash) => Ok(()),
        Some(IndexType::Custom(name)) if matches!(ident(name).as_str(), "btree" | "hash") => Ok(()),
        Some(other) => Err(ComputeError::unsupported(format!("index access method \"{}\"", other.to_string().to_lowercase()))),
    }
}

/// PostgreSQL's name for an unnamed index or constraint:
/// `<table>_<col>_<col>_<label>`, the longer of the two parts shortened
/// until it fits 63 bytes.
pub fn generated_name(table: &str, columns: &[String], label: &str) -> String {
    let joined = columns.join("_");
    if joined.is_empty() {
        // `<table>_<label>` (a CHECK reading several columns).
        let mut end = table.len().min(MAX_NAME - label.len() - 1);
        while !table.is_char_boundary(end) {
            end -= 1;
        }
        return format!("{}_{label}", &table[..end]);
    }
    let (mut t, mut c) = (table.len(), joined.len());
    let room = MAX_NAME - label.len() - 2;
    while t + c > room {
        if t > c { t -= 1 } else { c -= 1 }
    }
    let cut = |s: &str, n: usize| -> String {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    format!("{}_{}_{label}", cut(table, t), cut(&joined, c))
}

/// The request of CREATE [UNIQUE] INDEX, and whether its name was made up
/// (then a taken name moves on to the next free one, as PostgreSQL does).
pub fn create_index_request(database: &str, ci: &CreateIndex) -> Result<(CreateIndexRequest, bool)> {
    if ci.predicate.is_some() {
        return Err(ComputeError::unsupported("partial indexes (CREATE INDEX … WHERE)"));
    }
    if !ci.include.is_empty() {
        return Err(ComputeError::unsupported("INCLUDE columns of an index"));
    }
    if ci.nulls_distinct == Some(false) {
        return Err(ComputeError::unsupported("NULLS NOT DISTINCT"));
    }
    check_method(ci.using.as_ref())?;
    let (schema, table) = object_name(&ci.table_name)?;
    let columns = index_columns(&ci.columns)?;
    let (name, generated) = match &ci.name {
        Some(n) => {
            let (index_schema, name) = object_name(n)?;
            if index_schema.is_some_and(|s| Some(&s) != schema.as_ref()) {
                return Err(ComputeError::invalid("42601", "an index is created in the schema of its table; do not give it another"));
            }
            (name, false)
        }
        None if ci.if_not_exists => return Err(ComputeError::invalid("42601", "syntax error: IF NOT EXISTS needs an index name")),
        None => (generated_name(&table, &columns, "idx"), true),
    };
    let req = CreateIndexRequest {
        database: database.into(),
        schema: schema.unwrap_or_default(),
        table,
        name,
        columns,
        unique: ci.unique,
        constraint: false,
        if_not_exists: ci.if_not_exists,
    };
    Ok((req, generated))
}

/// Runs CREATE INDEX.
pub async fn create_index(s: &mut Session, ci: &CreateIndex) -> Result<Output> {
    let (req, generated) = create_index_request(s.database(), ci)?;
    let name = req.name.clone();
    if !create(s, req, generated).await? {
        s.notices.push(Notice::info("42P07", format!("relation \"{name}\" already exists, skipping")));
    }
    Ok(Output::Command("CREATE INDEX".into()))
}

/// Creates the index of UNIQUE constraint `spec` on `schema.table`.
pub async fn add_unique(s: &Session, schema: &str, table: &str, spec: UniqueSpec) -> Result<()> {
    let generated = spec.name.is_none();
    let name = spec.name.unwrap_or_else(|| generated_name(table, &spec.columns, "key"));
    let req = CreateIndexRequest {
        database: s.database().into(),
        schema: schema.into(),
        table: table.into(),
        name,
        columns: spec.columns,
        unique: true,
        constraint: true,
        if_not_exists: false,
    };
    create(s, req, generated).await.map(drop)
}

/// Sends `req`; a made-up name already taken becomes `<name>1`, `<name>2`, …
/// Returns false when IF NOT EXISTS found the name taken.
async fn create(s: &Session, mut req: CreateIndexRequest, generated: bool) -> Result<bool> {
    let base = req.name.clone();
    let mut n = 0;
    loop {
        match s.storage().client.create_index(req.clone()).await {
            Err(e) if generated && e.sqlstate() == "42P07" && n < 1000 => {
                n += 1;
                req.name = super::ddl::numbered(&base, n);
            }
            r => return r.map(|(_, created)| created),
        }
    }
}

/// Runs DROP INDEX.
pub async fn drop_indexes(s: &mut Session, names: &[ObjectName], if_exists: bool) -> Result<Output> {
    for n in names {
        let (schema, name) = object_name(n)?;
        let dropped = s.storage().client.drop_index(s.database(), schema.as_deref().unwrap_or(""), &name, if_exists, false).await?;
        if !dropped {
            s.notices.push(Notice::info("00000", format!("index \"{name}\" does not exist, skipping")));
        }
    }
    Ok(Output::Command("DROP INDEX".into()))
}

/// ALTER TABLE … DROP CONSTRAINT of a UNIQUE, CHECK or FOREIGN KEY constraint.
pub async fn drop_constraint(s: &mut Session, table: &ObjectName, name: &str, if_exists: bool) -> Result<()> {
    let (schema, table_name) = object_name(table)?;
    let def = super::dml::target(s, schema.as_deref(), &table_name).await?;
    if def.indexes.iter().any(|ix| ix.name == name && ix.constraint) {
        s.storage().client.drop_index(s.database(), &def.schema, name, false, true).await?;
        return Ok(());
    }
    let action = if def.checks.iter().any(|c| c.name == name) {
        Some(ebb_proto::storage::alter_table_request::Action::DropCheck(name.into()))
    } else if def.foreign_keys.iter().any(|f| f.name == name) {
        Some(ebb_proto::storage::alter_table_request::Action::DropForeignKey(name.into()))
    } else {
        None
    };
    if action.is_some() {
        let req = ebb_proto::storage::AlterTableRequest { database: s.database().into(), schema: def.schema.clone(), name: def.name.clone(), action };
        return s.storage().client.alter_table(req).await;
    }
    if !def.primary_key.is_empty() && name == format!("{}_pkey", def.name) {
        return Err(ComputeError::unsupported("dropping a primary key"));
    }
    if if_exists {
        s.notices.push(Notice::info("00000", format!("constraint \"{name}\" of relation \"{table_name}\" does not exist, skipping")));
        return Ok(());
    }
    Err(ComputeError::invalid("42704", format!("constraint \"{name}\" of relation \"{table_name}\" does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn request(sql: &str) -> Result<(CreateIndexRequest, bool)> {
        match Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses").remove(0) {
            Statement::CreateIndex(ci) => create_index_request("db", &ci),
            other => panic!("not CREATE INDEX: {other}"),
        }
    }

    #[test]
    fn names_are_made_up_as_postgres_does() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(generated_name("orders", &cols(&["customer_id"]), "idx"), "orders_customer_id_idx");
        assert_eq!(generated_name("t", &cols(&["a", "b"]), "key"), "t_a_b_key");
        assert_eq!(generated_name("t", &[], "check"), "t_check");
        assert_eq!(generated_name(&"y".repeat(70), &[], "check").len(), 63);
        assert_eq!(crate::sql::ddl::numbered(&"z".repeat(63), 12).len(), 63);
        let long = generated_name(&"x".repeat(70), &cols(&["col"]), "idx");
        assert_eq!(long.len(), 63);
        assert!(long.ends_with("_col_idx"));
    }

    #[test]
    fn create_index_takes_columns_and_refuses_what_it_cannot_index() {
        let (req, generated) = request("CREATE UNIQUE INDEX IF NOT EXISTS by_email ON app.users USING btree (lower_email DESC NULLS LAST, \"Id\")").unwrap();
        assert_eq!((req.schema.as_str(), req.table.as_str(), req.name.as_str()), ("app", "users", "by_email"));
        assert_eq!(req.columns, vec!["lower_email".to_string(), "Id".to_string()]);
        assert!(req.unique && req.if_not_exists && !generated);
        let (req, _) = request("CREATE INDEX \"auth_user_username_6821ab7c_like\" ON \"auth_user\" (\"username\" varchar_pattern_ops)").unwrap();
        assert_eq!(req.columns, vec!["username".to_string()], "Django's LIKE index");
        let (req, generated) = request("CREATE INDEX ON orders (customer_id)").unwrap();
        assert_eq!(req.name, "orders_customer_id_idx");
        assert!(generated && !req.unique);
        for sql in [
            "CREATE INDEX i ON t (lower(a))",
            "CREATE INDEX i ON t (a) WHERE a > 0",
            "CREATE INDEX i ON t (a) INCLUDE (b)",
            "CREATE INDEX i ON t USING gin (a)",
            "CREATE INDEX i ON t (a gin_trgm_ops)",
        ] {
            assert_eq!(request(sql).unwrap_err().sqlstate(), "0A000", "{sql}");
        }
    }
}
