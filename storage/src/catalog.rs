//! Table definitions: validation of DDL requests and the in-memory catalog
//! cache. The durable catalog lives in the engine as versioned rows of table 0
//! (see `keys`), so DDL goes through the same commit path as data.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use ebb_proto::storage::{CheckDef, ColumnDef, ForeignKeyDef, IndexDef, SequenceOptions, TableDef, TableVersion, TypeKind};
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

impl Column {
    /// How a row decoder reads this column.
    pub fn decode(&self) -> crate::row::DecodeColumn {
        crate::row::DecodeColumn { id: self.id, ty: self.ty.clone(), missing: self.missing.clone() }
    }
}

/// A secondary index of a table, resolved against its columns.
#[derive(Debug, Clone)]
pub struct Index {
    pub def: IndexDef,
    /// Positions in the table's `columns` of the indexed columns, in order.
    pub columns: Vec<usize>,
}

/// A FOREIGN KEY constraint of a table, resolved against its columns.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub def: ForeignKeyDef,
    /// Positions in the table's `columns` of the referencing columns, in
    /// the order of the referenced primary key.
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
    /// FOREIGN KEY constraints (this table referencing others).
    pub foreign_keys: Vec<ForeignKey>,
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
        let position = |id: &u32, what: &str| {
            columns.iter().position(|c| c.id == *id).ok_or_else(|| {
                StorageError::InvalidDefinition(format!("{what} names column id {id}, which \"{}\" has not", def.name))
            })
        };
        let foreign_keys = def
            .foreign_keys
            .iter()
            .map(|fk| {
                let columns = fk.column_ids.iter().map(|id| position(id, &fk.name)).collect::<Result<Vec<_>>>()?;
                Ok(ForeignKey { def: fk.clone(), columns })
            })
            .collect::<Result<Vec<_>>>()?;
        let fields: Vec<_> =
            columns.iter().map(|c| c.ty.arrow_field(&c.name, !c.not_null)).collect();
        Ok(Self { def, columns, pk, schema: Arc::new(Schema::new(fields)), indexes, foreign_keys })
    }

    /// The unique constraint a written key of this table belongs to: the
    /// index an entry is of, else the primary key (`<table>_pkey`).
    pub fn constraint_of(&self, key: &[u8]) -> String {
        let relation = crate::keys::table_of(key);
        match self.indexes.iter().find(|ix| Some(ix.def.id) == relation) {
            Some(ix) => ix.def.name.clone(),
            None => format!("{}_pkey", self.def.name),
        }
    }

    /// Whether the table has a constraint (unique index, CHECK, FOREIGN
    /// KEY) named `name`.
    pub fn has_constraint(&self, name: &str) -> bool {
        constraint_taken(&self.def, name)
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
        foreign_keys: Vec::new(),
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
    // As in PostgreSQL, indexes and foreign keys on the column go with it.
    def.indexes.retain(|ix| !ix.column_ids.contains(&id));
    def.foreign_keys.retain(|fk| !fk.column_ids.contains(&id));
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

/// ALTER COLUMN … TYPE: the definition with the column's type changed, and
/// whether existing rows must be checked against it (it narrows). Only
/// types whose values are stored alike are taken: text and varchar of any
/// length, numeric of more precision at the same scale.
pub fn set_type(table: &Table, column: &str, ty: &ebb_proto::storage::ColumnType) -> Result<(TableDef, bool)> {
    use TypeKind::{Numeric, Text, Varchar};
    let idx = table.column_index(column)?;
    let old = &table.columns[idx].ty;
    let new = PgType::from_proto(Some(ty))?;
    let narrows = match (old.kind, new.kind) {
        (a, b) if a == b && old.length == new.length && old.scale == new.scale => false,
        (Text | Varchar, Text) => false,
        (Text | Varchar, Varchar) => new.length > 0 && (old.kind == Text || old.length == 0 || new.length < old.length),
        (Numeric, Numeric) if old.length > 0 && new.length >= old.length && new.scale == old.scale => false,
        _ => {
            return Err(StorageError::NotSupported(format!(
                "ALTER COLUMN \"{column}\" TYPE {} from {} (in place, only text and varchar lengths and numeric precision change)",
                new.sql_name(),
                old.sql_name()
            )));
        }
    };
    let mut def = table.def.clone();
    def.columns[idx].r#type = Some(*ty);
    bump(&mut def);
    Table::from_def(def.clone())?;
    Ok((def, narrows))
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
/// which gets the fresh id `new_id` (its rows move to new keys), its
/// indexes the ids after it.
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
    let mut def = table.def.clone();
    // Its indexes' entries point at rows by their row-id keys: rebuilt
    // under new relation ids (after the table's own).
    for (i, ix) in def.indexes.iter_mut().enumerate() {
        ix.id = new_id + 1 + i as u32;
    }
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

/// Whether `def` has a constraint (unique index, CHECK, FOREIGN KEY) named `name`.
fn constraint_taken(def: &TableDef, name: &str) -> bool {
    def.checks.iter().any(|c| c.name == name)
        || def.indexes.iter().any(|ix| ix.constraint && ix.name == name)
        || def.foreign_keys.iter().any(|fk| fk.name == name)
}

/// `table`'s definition without the entry named `name` of one of its
/// constraint lists (`list` picks it); 42704 if there is none.
fn drop_named<T>(table: &Table, name: &str, list: fn(&mut TableDef) -> &mut Vec<T>, name_of: fn(&T) -> &str) -> Result<TableDef> {
    let mut def = table.def.clone();
    let entries = list(&mut def);
    let before = entries.len();
    entries.retain(|e| name_of(e) != name);
    if entries.len() == before {
        return Err(StorageError::UnknownConstraint { table: def.name.clone(), name: name.into() });
    }
    bump(&mut def);
    Ok(def)
}

/// Adds a CHECK constraint to `def`, whose name must be free.
fn push_check(def: &mut TableDef, check: &CheckDef) -> Result<()> {
    check_identifier("constraint", &check.name)?;
    if check.expr.trim().is_empty() {
        return Err(StorageError::InvalidDefinition(format!("check constraint \"{}\" has no expression", check.name)));
    }
    if constraint_taken(def, &check.name) {
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
    drop_named(table, name, |d| &mut d.checks, |c| &c.name)
}

/// ALTER TABLE … ADD CONSTRAINT … FOREIGN KEY: `child`'s definition with
/// `fk` (whose columns must match `parent`'s primary key in number and
/// type) added.
pub fn add_foreign_key(child: &Table, fk: &ForeignKeyDef, parent: &Table) -> Result<TableDef> {
    check_identifier("constraint", &fk.name)?;
    if child.has_constraint(&fk.name) {
        return Err(StorageError::ConstraintExists { table: child.def.name.clone(), name: fk.name.clone() });
    }
    if parent.pk.is_empty() || parent.def.sequence.is_some() {
        return Err(StorageError::InvalidDefinition(format!(
            "there is no primary key for referenced table \"{}\"",
            parent.def.name
        )));
    }
    if fk.column_ids.len() != parent.pk.len() {
        return Err(StorageError::InvalidDefinition(format!(
            "number of referencing and referenced columns for foreign key \"{}\" disagree",
            fk.name
        )));
    }
    for (i, (id, &p)) in fk.column_ids.iter().zip(&parent.pk).enumerate() {
        let c = child.columns.iter().find(|c| c.id == *id).ok_or_else(|| {
            StorageError::InvalidDefinition(format!("foreign key \"{}\" names column id {id}, which \"{}\" has not", fk.name, child.def.name))
        })?;
        if fk.column_ids[..i].contains(id) {
            return Err(StorageError::InvalidDefinition(format!("column \"{}\" appears twice in foreign key \"{}\"", c.name, fk.name)));
        }
        let key = &parent.columns[p];
        if !key_compatible(&c.ty, &key.ty) {
            return Err(StorageError::DatatypeMismatch(format!(
                "foreign key constraint \"{}\" cannot be implemented: key columns \"{}\" and \"{}\" are of incompatible types",
                fk.name, c.name, key.name
            )));
        }
    }
    let mut def = child.def.clone();
    def.foreign_keys.push(fk.clone());
    bump(&mut def);
    Table::from_def(def.clone())?;
    Ok(def)
}

/// Whether values of `from` can be looked up in a key of type `to`:
/// integers of any width, text and varchar, else the same type.
fn key_compatible(from: &PgType, to: &PgType) -> bool {
    use crate::types::Phys::{I16, I32, I64, Text};
    match (from.phys(), to.phys()) {
        (I16 | I32 | I64, I16 | I32 | I64) => true,
        (Text, Text) => from.kind == to.kind || [from.kind, to.kind].iter().all(|k| matches!(k, TypeKind::Text | TypeKind::Varchar)),
        // Decimals are compared unscaled: the scales must agree.
        (a, b) => a == b && from.kind == to.kind && (from.kind != TypeKind::Numeric || from.scale == to.scale),
    }
}

/// ALTER TABLE … DROP CONSTRAINT of a FOREIGN KEY constraint.
pub fn drop_foreign_key(table: &Table, name: &str) -> Result<TableDef> {
    drop_named(table, name, |d| &mut d.foreign_keys, |f| &f.name)
}

/// ALTER SEQUENCE … OWNED BY: the sequence's definition owned by column
/// `column` of table `table` (0: by none).
pub fn set_sequence_owner(sequence: &Table, table: u32, column: &str) -> Result<TableDef> {
    let mut def = sequence.def.clone();
    let options = def
        .sequence
        .as_mut()
        .ok_or_else(|| StorageError::WrongObjectType(format!("\"{}\" is not a sequence", sequence.def.name)))?;
    options.owned_by_table = table;
    options.owned_by_column = if table == 0 { String::new() } else { column.to_string() };
    bump(&mut def);
    Ok(def)
}

/// ALTER SEQUENCE's options (the caller checked them; the owner is kept).
pub fn set_sequence_options(sequence: &Table, options: SequenceOptions) -> Result<TableDef> {
    let mut def = sequence.def.clone();
    let current = def
        .sequence
        .as_mut()
        .ok_or_else(|| StorageError::WrongObjectType(format!("\"{}\" is not a sequence", sequence.def.name)))?;
    *current = SequenceOptions { owned_by_table: current.owned_by_table, owned_by_column: std::mem::take(&mut current.owned_by_column), ..options };
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
    /// Table id → the foreign keys that reference it (table id, position).
    referenced_by: HashMap<u32, Vec<(u32, usize)>>,
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

    /// The foreign keys that reference table `id` (other tables' and its
    /// own): each referencing table and the key's position in it.
    pub fn referencing(&self, id: u32) -> Vec<(Arc<Table>, usize)> {
        let Some(refs) = self.referenced_by.get(&id) else { return Vec::new() };
        refs.iter().filter_map(|(t, i)| Some((self.get_by_id(*t)?, *i))).collect()
    }

    /// Rebuilds `referenced_by` after a definition changed.
    fn index_references(&mut self) {
        self.referenced_by.clear();
        let mut ids: Vec<&u32> = self.tables.keys().collect();
        ids.sort();
        for id in ids {
            for (i, fk) in self.tables[id].foreign_keys.iter().enumerate() {
                self.referenced_by.entry(fk.def.ref_table).or_default().push((*id, i));
            }
        }
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
        let references = !table.foreign_keys.is_empty();
        self.tables.insert(id, Arc::new(table));
        if references || self.referenced_by.values().flatten().any(|(t, _)| *t == id) {
            self.index_references();
        }
        self.next_table_id = self.next_table_id.max(id + 1);
        Ok(())
    }

    /// Forgets a table.
    pub fn remove(&mut self, id: u32) {
        if let Some(old) = self.tables.remove(&id) {
            self.by_name.remove(&(old.def.schema.clone(), old.def.name.clone()));
            for ix in &old.def.indexes {
                // Not when the name went to a table that replaces this one.
                let name = (old.def.schema.clone(), ix.name.clone());
                if self.index_names.get(&name) == Some(&id) {
                    self.index_names.remove(&name);
                }
                self.index_owners.remove(&ix.id);
            }
            if !old.foreign_keys.is_empty() {
                self.index_references();
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
