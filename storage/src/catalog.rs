//! Table definitions: validation of DDL requests and the in-memory catalog
//! cache. The durable catalog lives in the engine as versioned rows of table 0
//! (see `keys`), so DDL goes through the same commit path as data.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use ebb_proto::storage::{CheckDef, ColumnDef, IndexDef, TableDef, TableVersion};
use prost::Message;

use crate::error::{Result, StorageError};
use crate::types::{Datum, PgType};

/// Schema used when a request leaves it empty.
pub const DEFAULT_SCHEMA: &str = "public";
/// Name of the hidden row-id column of tables without a primary key.
pub const ROWID_COLUMN: &str = "_rowid";
/// Longest identifier accepted (PostgreSQL's NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;
/// Most columns an index may have (PostgreSQL's INDEX_MAX_KEYS).
const MAX_INDEX_COLUMNS: usize = 32;

/// One column of a table.
#[derive(Debug, Clone)]
pub struct Column {
    pub id: u32,
    pub name: String,
    pub ty: PgType,
    pub not_null: bool,
    /// Constant default of writes that leave the column out.
    pub default: Datum,
    /// The value of rows that predate the column.
    pub missing: Datum,
}

/// A secondary index of a table, resolved against its columns.
#[derive(Debug, Clone)]
pub struct Index {
    pub def: IndexDef,
    /// Positions in the table's `columns` of the indexed columns, in order.
    pub columns: Vec<usize>,
}

/// A table definition ready for use by reads and writes.
#[derive(Debug)]
pub struct Table {
    pub def: TableDef,
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary key, in key order.
    pub pk: Vec<usize>,
    /// Arrow schema of all columns, in order.
    pub schema: SchemaRef,
    /// Secondary indexes.
    pub indexes: Vec<Index>,
}

impl Table {
    /// Builds the usable form of a stored definition.
    pub fn from_def(def: TableDef) -> Result<Self> {
        let mut columns = Vec::with_capacity(def.columns.len());
        for c in &def.columns {
            let ty = PgType::from_proto(c.r#type.as_ref())?;
            let parse = |lit: &Option<String>| match lit {
                Some(lit) => ty.parse_text(lit),
                None => Ok(Datum::Null),
            };
            let default = parse(&c.default_literal)?;
            let missing = if c.missing_literal.is_some() { parse(&c.missing_literal)? } else { default.clone() };
            columns.push(Column { id: c.id, name: c.name.clone(), ty, not_null: c.not_null, default, missing });
        }
        let pk = def
            .primary_key
            .iter()
            .map(|name| {
                columns.iter().position(|c| &c.name == name).ok_or_else(|| {
                    StorageError::InvalidDefinition(format!(
                        "primary key column \"{name}\" is not a column of \"{}\"",
                        def.name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let indexes = def
            .indexes
            .iter()
            .map(|ix| {
                let positions = ix
                    .column_ids
                    .iter()
                    .map(|id| {
                        columns.iter().position(|c| c.id == *id).ok_or_else(|| {
                            StorageError::InvalidDefinition(format!("index \"{}\" names column id {id}, which \"{}\" has not", ix.name, def.name))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Index { def: ix.clone(), columns: positions })
            })
            .collect::<Result<Vec<_>>>()?;
        let fields: Vec<_> =
            columns.iter().map(|c| c.ty.arrow_field(&c.name, !c.not_null)).collect();
        Ok(Self { def, columns, pk, schema: Arc::new(Schema::new(fields)), indexes })
    }

    /// The index named `name`.
    pub fn index(&self, name: &str) -> Result<&Index> {
        self.indexes
            .iter()
            .find(|ix| ix.def.name == name)
            .ok_or_else(|| StorageError::UnknownIndex(name.to_string()))
    }

    /// The table id.
    pub fn id(&self) -> u32 {
        self.def.id
    }

    /// `schema.name` for messages.
    pub fn qualified_name(&self) -> String {
        if self.def.schema == DEFAULT_SCHEMA {
            self.def.name.clone()
        } else {
            format!("{}.{}", self.def.schema, self.def.name)
        }
    }

    /// The position of a column by name.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c.name == name).ok_or_else(|| StorageError::UnknownColumn {
            table: self.def.name.clone(),
            column: name.to_string(),
        })
    }

    /// The largest column id ever assigned (stored in each row).
    pub fn max_column_id(&self) -> u32 {
        self.def.next_column_id.saturating_sub(1)
    }

    /// True when rows are addressed by a hidden row id.
    pub fn has_rowid(&self) -> bool {
        self.pk.is_empty()
    }
}

/// Records that an ALTER produced a new version of a definition.
fn bump(def: &mut TableDef) {
    def.version += 1;
    def.next_column_id = def.next_column_id.max(def.columns.iter().map(|c| c.id + 1).max().unwrap_or(1));
}

/// Checks an identifier (table, column or schema name).
pub fn check_identifier(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(StorageError::InvalidDefinition(format!("{kind} name must not be empty")));
    }
    if name.len() > MAX_IDENTIFIER {
        return Err(StorageError::InvalidDefinition(format!(
            "{kind} name \"{name}\" is longer than {MAX_IDENTIFIER} bytes"
        )));
    }
    if name.contains('\0') {
        return Err(StorageError::InvalidDefinition(format!("{kind} name contains a NUL byte")));
    }
    Ok(())
}

/// Validates a column definition coming from a client.
fn check_column(c: &ColumnDef) -> Result<PgType> {
    check_identifier("column", &c.name)?;
    if c.name == ROWID_COLUMN {
        return Err(StorageError::InvalidDefinition(format!("column name \"{ROWID_COLUMN}\" is reserved")));
    }
    let ty = PgType::from_proto(c.r#type.as_ref())?;
    if let Some(lit) = &c.default_literal {
        ty.parse_text(lit)?;
    }
    Ok(ty)
}

/// Builds the definition of a new table from a CREATE TABLE request.
pub fn new_table_def(
    id: u32,
    schema: &str,
    name: &str,
    columns: &[ColumnDef],
    primary_key: &[String],
    checks: &[CheckDef],
) -> Result<TableDef> {
    check_identifier("schema", schema)?;
    check_identifier("table", name)?;
    let mut cols = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        check_column(c)?;
        if columns[..i].iter().any(|o| o.name == c.name) {
            return Err(StorageError::ColumnExists { table: name.into(), column: c.name.clone() });
        }
        let mut c = c.clone();
        c.id = i as u32 + 1;
        // Primary-key columns are NOT NULL, as in PostgreSQL.
        c.not_null |= primary_key.contains(&c.name);
        cols.push(c);
    }
    for (i, k) in primary_key.iter().enumerate() {
        if primary_key[..i].contains(k) {
            return Err(StorageError::InvalidDefinition(format!("column \"{k}\" appears twice in primary key")));
        }
    }
    let mut def = TableDef {
        id,
        schema: schema.into(),
        name: name.into(),
        columns: cols,
        primary_key: primary_key.to_vec(),
        version: 0,
        next_column_id: 0,
        sequence: None,
        indexes: Vec::new(),
        checks: Vec::new(),
    };
    for c in checks {
        push_check(&mut def, c)?;
    }
    bump(&mut def);
    Table::from_def(def.clone())?;
    Ok(def)
}

/// ALTER TABLE … ADD COLUMN.
pub fn add_column(table: &Table, col: &ColumnDef) -> Result<TableDef> {
    check_column(col)?;
    if table.columns.iter().any(|c| c.name == col.name) {
        return Err(StorageError::ColumnExists { table: table.def.name.clone(), column: col.name.clone() });
    }
    let mut def = table.def.clone();
    let mut c = col.clone();
    c.id = def.next_column_id.max(1);
    def.columns.push(c);
    bump(&mut def);
    Ok(def)
}

/// ALTER TABLE … DROP COLUMN.
pub fn drop_column(table: &Table, name: &str) -> Result<TableDef> {
    let idx = table.column_index(name)?;
    if table.def.primary_key.iter().any(|k| k == name) {
        return Err(StorageError::NotSupported(format!(
            "cannot drop column \"{name}\": it is part of the primary key of \"{}\"",
            table.def.name
        )));
    }
    let mut def = table.def.clone();
    let id = def.columns.remove(idx).id;
    // As in PostgreSQL, indexes on the column go with it.
    def.indexes.retain(|ix| !ix.column_ids.contains(&id));
    bump(&mut def);
    Ok(def)
}

/// ALTER COLUMN … SET DEFAULT / DROP DEFAULT (`literal` and `expr` both
/// `None`). Rows that predate the column keep reading as its old default.
pub fn set_default(table: &Table, column: &str, literal: Option<String>, expr: Option<String>) -> Result<TableDef> {
    let idx = table.column_index(column)?;
    let mut def = table.def.clone();
    let c = &mut def.columns[idx];
    if !c.identity.is_empty() {
        return Err(StorageError::InvalidDefinition(format!("column \"{column}\" of relation \"{}\" is an identity column", table.def.name)));
    }
    if c.missing_literal.is_none() {
        c.missing_literal = c.default_literal.clone();
    }
    c.default_literal = literal;
    c.default_expr = expr;
    bump(&mut def);
    Table::from_def(def.clone())?;
    Ok(def)
}

/// ALTER COLUMN … ADD GENERATED … AS IDENTITY: the column, which must have
/// no default, gets `identity` and the sequence's `default_expr` (the caller
/// checks it holds no NULL).
pub fn add_identity(table: &Table, column: &str, identity: &str, default_expr: &str) -> Result<TableDef> {
    let idx = table.column_index(column)?;
    let mut def = table.def.clone();
    let c = &mut def.columns[idx];
    if !c.identity.is_empty() {
        return Err(StorageError::InvalidDefinition(format!("column \"{column}\" of relation \"{}\" is already an identity column", table.def.name)));
    }
    if c.default_expr.is_some() || c.default_literal.is_some() {
        return Err(StorageError::InvalidDefinition(format!("column \"{column}\" of relation \"{}\" already has a default value", table.def.name)));
    }
    if !matches!(identity, "a" | "d") {
        return Err(StorageError::InvalidRequest(format!("identity kind \"{identity}\" is neither \"a\" nor \"d\"")));
    }
    c.identity = identity.into();
    c.default_expr = Some(default_expr.into());
    c.not_null = true;
    bump(&mut def);
    Ok(def)
}

/// ALTER COLUMN … SET NOT NULL / DROP NOT NULL (the caller checks the rows
/// for NULLs first).
pub fn set_not_null(table: &Table, column: &str, not_null: bool) -> Result<TableDef> {
    let idx = table.column_index(column)?;
    if !not_null && table.def.primary_key.iter().any(|k| k == column) {
        return Err(StorageError::InvalidDefinition(format!("column \"{column}\" is in a primary key")));
    }
    let mut def = table.def.clone();
    def.columns[idx].not_null = not_null;
    bump(&mut def);
    Ok(def)
}

/// ALTER TABLE … RENAME COLUMN.
pub fn rename_column(table: &Table, from: &str, to: &str) -> Result<TableDef> {
    check_identifier("column", to)?;
    let idx = table.column_index(from)?;
    if table.columns.iter().any(|c| c.name == to) {
        return Err(StorageError::ColumnExists { table: table.def.name.clone(), column: to.into() });
    }
    let mut def = table.def.clone();
    def.columns[idx].name = to.into();
    for k in def.primary_key.iter_mut() {
        if k == from {
            *k = to.into();
        }
    }
    bump(&mut def);
    Ok(def)
}

/// ALTER TABLE … ADD PRIMARY KEY: the definition of the re-keyed table,
/// which gets the fresh id `new_id` (its rows move to new keys).
pub fn add_primary_key(table: &Table, columns: &[String], new_id: u32) -> Result<TableDef> {
    if !table.has_rowid() {
        return Err(StorageError::InvalidDefinition(format!(
            "multiple primary keys for table \"{}\" are not allowed",
            table.def.name
        )));
    }
    if columns.is_empty() {
        return Err(StorageError::InvalidDefinition("a primary key needs at least one column".into()));
    }
    if let Some(ix) = table.indexes.first() {
        // Its entries point at rows by their current (row-id) keys.
        return Err(StorageError::NotSupported(format!(
            "ADD PRIMARY KEY on \"{}\", which has index \"{}\"; drop its indexes first and create them again after",
            table.def.name, ix.def.name
        )));
    }
    let mut def = table.def.clone();
    for (i, k) in columns.iter().enumerate() {
        if columns[..i].contains(k) {
            return Err(StorageError::InvalidDefinition(format!("column \"{k}\" appears twice in primary key")));
        }
        let idx = table.column_index(k)?;
        def.columns[idx].not_null = true;
    }
    def.id = new_id;
    def.primary_key = columns.to_vec();
    bump(&mut def);
    Table::from_def(def.clone())?;
    Ok(def)
}

/// CREATE INDEX: the table's definition with index `name` (relation id
/// `id`) on `columns` added (the caller checks the name is free and fills
/// the entries).
pub fn add_index(table: &Table, id: u32, name: &str, columns: &[String], unique: bool, constraint: bool) -> Result<TableDef> {
    check_identifier("index", name)?;
    if columns.is_empty() {
        return Err(StorageError::InvalidDefinition("an index needs at least one column".into()));
    }
    if columns.len() > MAX_INDEX_COLUMNS {
        return Err(StorageError::InvalidDefinition(format!("cannot use more than {MAX_INDEX_COLUMNS} columns in an index")));
    }
    let mut column_ids = Vec::with_capacity(columns.len());
    for name in columns {
        let c = &table.columns[table.column_index(name)?];
        if column_ids.contains(&c.id) {
            return Err(StorageError::InvalidDefinition(format!("column \"{name}\" appears twice in index")));
        }
        column_ids.push(c.id);
    }
    let mut def = table.def.clone();
    def.indexes.push(IndexDef { id, name: name.into(), column_ids, unique, constraint });
    bump(&mut def);
    Table::from_def(def.clone())?;
    Ok(def)
}

/// DROP INDEX / DROP CONSTRAINT: the table's definition without index `name`.
pub fn drop_index(table: &Table, name: &str) -> Result<TableDef> {
    let mut def = table.def.clone();
    def.indexes.retain(|ix| ix.name != name);
    bump(&mut def);
    Ok(def)
}

/// Adds a CHECK constraint to `def`, whose name must be free.
fn push_check(def: &mut TableDef, check: &CheckDef) -> Result<()> {
    check_identifier("constraint", &check.name)?;
    if check.expr.trim().is_empty() {
        return Err(StorageError::InvalidDefinition(format!("check constraint \"{}\" has no expression", check.name)));
    }
    if def.checks.iter().any(|c| c.name == check.name) || def.indexes.iter().any(|ix| ix.constraint && ix.name == check.name) {
        return Err(StorageError::ConstraintExists { table: def.name.clone(), name: check.name.clone() });
    }
    def.checks.push(check.clone());
    Ok(())
}

/// ALTER TABLE … ADD CONSTRAINT … CHECK (the caller checked the rows).
pub fn add_check(table: &Table, check: &CheckDef) -> Result<TableDef> {
    let mut def = table.def.clone();
    push_check(&mut def, check)?;
    bump(&mut def);
    Ok(def)
}

/// ALTER TABLE … DROP CONSTRAINT of a CHECK constraint.
pub fn drop_check(table: &Table, name: &str) -> Result<TableDef> {
    let mut def = table.def.clone();
    let before = def.checks.len();
    def.checks.retain(|c| c.name != name);
    if def.checks.len() == before {
        return Err(StorageError::UnknownConstraint { table: def.name.clone(), name: name.into() });
    }
    bump(&mut def);
    Ok(def)
}

/// ALTER TABLE … RENAME TO.
pub fn rename_table(table: &Table, to: &str) -> Result<TableDef> {
    check_identifier("table", to)?;
    let mut def = table.def.clone();
    def.name = to.into();
    bump(&mut def);
    Ok(def)
}

/// The in-memory catalog of one database: the latest committed definitions.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<u32, Arc<Table>>,
    by_name: HashMap<(String, String), u32>,
    /// Index (schema, name) → the id of its table.
    index_names: HashMap<(String, String), u32>,
    /// Index relation id → the id of its table.
    index_owners: HashMap<u32, u32>,
    /// The next table id to hand out.
    pub next_table_id: u32,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self { next_table_id: crate::keys::FIRST_USER_TABLE_ID, ..Default::default() }
    }

    /// Looks a table up by name.
    pub fn get(&self, schema: &str, name: &str) -> Result<Arc<Table>> {
        let schema = if schema.is_empty() { DEFAULT_SCHEMA } else { schema };
        self.by_name
            .get(&(schema.to_string(), name.to_string()))
            .and_then(|id| self.tables.get(id))
            .cloned()
            .ok_or_else(|| StorageError::UnknownTable(name.to_string()))
    }

    /// A table by name, as the definition `expect` names when it is given:
    /// [`StorageError::CatalogChanged`] when the table was since dropped,
    /// recreated or altered.
    pub fn get_expected(&self, schema: &str, name: &str, expect: Option<&TableVersion>) -> Result<Arc<Table>> {
        let Some(expect) = expect else { return self.get(schema, name) };
        match self.get(schema, name) {
            Ok(t) if t.def.id == expect.id && t.def.version == expect.version => Ok(t),
            Ok(_) | Err(StorageError::UnknownTable(_)) => Err(StorageError::CatalogChanged(name.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Looks a table up by id.
    pub fn get_by_id(&self, id: u32) -> Option<Arc<Table>> {
        self.tables.get(&id).cloned()
    }

    /// The table an index (by name) belongs to.
    pub fn index_table(&self, schema: &str, name: &str) -> Option<Arc<Table>> {
        let schema = if schema.is_empty() { DEFAULT_SCHEMA } else { schema };
        self.index_names.get(&(schema.to_string(), name.to_string())).and_then(|id| self.get_by_id(*id))
    }

    /// The table of relation `id` when it is an index.
    pub fn index_owner(&self, id: u32) -> Option<Arc<Table>> {
        self.index_owners.get(&id).and_then(|t| self.get_by_id(*t))
    }

    /// Whether a table, sequence or index of this name exists in `schema`.
    pub fn relation_exists(&self, schema: &str, name: &str) -> bool {
        self.get(schema, name).is_ok() || self.index_table(schema, name).is_some()
    }

    /// All tables, ordered by id.
    pub fn tables(&self) -> Vec<Arc<Table>> {
        let mut v: Vec<_> = self.tables.values().cloned().collect();
        v.sort_by_key(|t| t.id());
        v
    }

    /// Installs (or replaces) a definition.
    pub fn upsert(&mut self, def: TableDef) -> Result<()> {
        let id = def.id;
        self.remove(id);
        let table = Table::from_def(def)?;
        for ix in &table.def.indexes {
            self.index_names.insert((table.def.schema.clone(), ix.name.clone()), id);
            self.index_owners.insert(ix.id, id);
        }
        self.by_name.insert((table.def.schema.clone(), table.def.name.clone()), id);
        self.tables.insert(id, Arc::new(table));
        self.next_table_id = self.next_table_id.max(id + 1);
        Ok(())
    }

    /// Forgets a table.
    pub fn remove(&mut self, id: u32) {
        if let Some(old) = self.tables.remove(&id) {
            self.by_name.remove(&(old.def.schema.clone(), old.def.name.clone()));
            for ix in &old.def.indexes {
                self.index_names.remove(&(old.def.schema.clone(), ix.name.clone()));
                self.index_owners.remove(&ix.id);
            }
        }
    }

    /// Applies a committed catalog row (`None` = deleted).
    pub fn apply_row(&mut self, table_id: u32, value: Option<&[u8]>) -> Result<()> {
        if table_id == 0 {
            if let Some(v) = value.and_then(|v| <[u8; 4]>::try_from(v).ok()) {
                self.next_table_id = self.next_table_id.max(u32::from_be_bytes(v));
            }
            return Ok(());
        }
        match value {
            Some(v) => {
                let def = TableDef::decode(v)
                    .map_err(|e| StorageError::Corrupt(format!("catalog row {table_id}: {e}")))?;
                self.upsert(def)
            }
            None => {
                self.remove(table_id);
                Ok(())
            }
        }
    }
}
