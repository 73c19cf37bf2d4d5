//! The database's own tables as PostgreSQL's catalog describes them: their
//! `pg_namespace`, `pg_class`, `pg_attribute`, `pg_attrdef`, `pg_index`,
//! `pg_constraint` and `pg_tables` rows, built from the table definitions
//! storage keeps (and the session's settings as `pg_settings` rows). Drivers reflect tables from these rows (SQLAlchemy's
//! inspector, psql's `\d`), so they carry what PostgreSQL's would: type OIDs
//! and modifiers (`character varying(20)`), NOT NULL, defaults, and the
//! primary key as a unique index `<table>_pkey` with its constraint, the
//! secondary indexes (UNIQUE constraints with theirs), FOREIGN KEY and CHECK
//! constraints.
//!
//! OIDs are derived from storage's table ids, so they are the same in every
//! session and on every compute.

use datafusion::common::ScalarValue;
use ebb_proto::pg_types::{kind, sql_name};
use ebb_proto::storage::{ColumnDef, ColumnType, TableDef, TypeKind};

use super::rows::{Row, int2_list, oid_list, text};
use crate::catalog::PUBLIC;
use crate::error::{ComputeError, Result};
use crate::sql::checks;
use crate::sql::sequences::parse_relation;
use crate::session::settings::Settings;

/// OID of the `public` schema, as in PostgreSQL.
pub const PUBLIC_NAMESPACE: i32 = 2200;
/// OID of the bootstrap superuser, who owns everything here.
const OWNER: i32 = 10;
/// First OID of user relations: above the OIDs `datafusion-pg-catalog`
/// hands out to the `pg_catalog` tables of a session (from 16384 up).
const RELATION_BASE: i64 = 100_000;
/// First OID of column defaults (`pg_attrdef`).
const ATTRDEF_BASE: i64 = 1_000_000_000;
/// First OID of CHECK and FOREIGN KEY constraints (128 per table id).
const CHECK_BASE: i64 = 1_500_000_000;
/// CHECK constraints of a table with distinct OIDs; FOREIGN KEY
/// constraints take the next as many.
const CONSTRAINT_OIDS: i64 = 64;

/// The OID of the `n`-th CHECK constraint of table `id`.
fn check_oid(id: u32, n: usize) -> i32 {
    i32::try_from(CHECK_BASE + 2 * CONSTRAINT_OIDS * i64::from(id) + (n as i64).min(CONSTRAINT_OIDS - 1)).unwrap_or(i32::MAX)
}

/// The OID of the `n`-th FOREIGN KEY constraint of table `id` (after the
/// OIDs of its CHECK constraints).
fn foreign_key_oid(id: u32, n: usize) -> i32 {
    i32::try_from(CHECK_BASE + 2 * CONSTRAINT_OIDS * i64::from(id) + CONSTRAINT_OIDS + (n as i64).min(CONSTRAINT_OIDS - 1)).unwrap_or(i32::MAX)
}
/// The default collation.
const DEFAULT_COLLATION: i32 = 100;
/// `btree`, the access method of every primary-key index.
const BTREE: i32 = 403;
/// `heap`, the access method of tables.
const HEAP: i32 = 2;
/// PostgreSQL's OID of `pg_class` (the class of relations in `pg_depend`).
pub const PG_CLASS: i32 = 1259;
/// The default btree operator class of a key column's type (`int4_ops`, …).
fn btree_opclass(t: TypeKind) -> i32 {
    use TypeKind::*;
    match t {
        Smallint => 1979,
        Integer => 1978,
        Bigint => 3124,
        Numeric => 3125,
        Real => 1970,
        Double => 1971,
        Text | Json | Jsonb | Unspecified => 3126,
        Varchar => 3126,
        Char => 426,
        Boolean => 424,
        Date => 3122,
        Timestamp => 3128,
        Timestamptz => 3127,
        Bytea => 421,
        Uuid => 2968,
    }
}

/// The OIDs of one table and what belongs to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOids {
    /// The table (`pg_class.oid`).
    pub table: i32,
    /// Its primary-key index.
    pub index: i32,
    /// Its primary-key constraint.
    pub constraint: i32,
    /// Its row type.
    pub row_type: i32,
}

impl TableOids {
    /// The OIDs of the table storage knows as `id`.
    pub fn of(id: u32) -> Self {
        let base = RELATION_BASE + 8 * i64::from(id);
        let oid = |k: i64| i32::try_from(base + k).unwrap_or(i32::MAX);
        Self { table: oid(0), index: oid(1), constraint: oid(2), row_type: oid(3) }
    }
}

/// The table or sequence whose `pg_class` OID is `oid`.
pub fn relation_by_oid(defs: &[TableDef], oid: i64) -> Option<&TableDef> {
    defs.iter().find(|d| i64::from(TableOids::of(d.id).table) == oid)
}

/// The table or sequence a name stands for as `regclass` reads it (`t`,
/// `app."T"`; no schema: `public`); 42P01 if there is none.
pub fn relation_by_name<'a>(defs: &'a [TableDef], text: &str) -> Result<&'a TableDef> {
    let (schema, name) = parse_relation(text)?;
    let schema = if schema.is_empty() { PUBLIC } else { schema.as_str() };
    defs.iter()
        .find(|d| d.schema == schema && d.name == name)
        .ok_or_else(|| ComputeError::invalid("42P01", format!("relation \"{text}\" does not exist")))
}

/// The OID of a user schema: `public`'s is PostgreSQL's, others are derived
/// from the name (stable across sessions).
pub fn namespace_oid(name: &str) -> i32 {
    if name == "public" {
        return PUBLIC_NAMESPACE;
    }
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    30_000 + (hash % 60_000) as i32
}

/// The OID of a column's default.
fn attrdef_oid(table: u32, attnum: i16) -> i32 {
    i32::try_from(ATTRDEF_BASE + i64::from(table) * 2048 + i64::from(attnum)).unwrap_or(i32::MAX)
}

/// Storage facts of a type: OID, `typlen`, `typbyval`, `typalign`, `typstorage`, collatable.
fn type_facts(t: TypeKind) -> (i32, i16, bool, &'static str, &'static str, bool) {
    use TypeKind::*;
    match t {
        Smallint => (21, 2, true, "s", "p", false),
        Integer => (23, 4, true, "i", "p", false),
        Bigint => (20, 8, true, "d", "p", false),
        Numeric => (1700, -1, false, "i", "m", false),
        Real => (700, 4, true, "i", "p", false),
        Double => (701, 8, true, "d", "p", false),
        Text | Unspecified => (25, -1, false, "i", "x", true),
        Varchar => (1043, -1, false, "i", "x", true),
        Char => (1042, -1, false, "i", "x", true),
        Boolean => (16, 1, true, "c", "p", false),
        Date => (1082, 4, true, "i", "p", false),
        Timestamp => (1114, 8, true, "d", "p", false),
        Timestamptz => (1184, 8, true, "d", "p", false),
        Bytea => (17, -1, false, "i", "x", false),
        Uuid => (2950, 16, false, "c", "p", false),
        Json => (114, -1, false, "i", "x", false),
        Jsonb => (3802, -1, false, "i", "x", false),
    }
}

/// `atttypmod`: the declared length or precision and scale, -1 without one.
pub fn typmod(t: &ColumnType) -> i32 {
    match kind(t) {
        TypeKind::Varchar | TypeKind::Char if t.length > 0 => t.length as i32 + 4,
        TypeKind::Char => 5,
        TypeKind::Numeric if t.length > 0 => ((t.length as i32) << 16 | t.scale as i32) + 4,
        _ => -1,
    }
}

/// A column's DEFAULT as `pg_get_expr` prints it: the expression as
/// written, or a constant (numbers and booleans bare, others quoted and
/// cast to the column's type, as PostgreSQL deparses them).
pub fn default_text(c: &ColumnDef) -> Option<String> {
    // An identity column has no DEFAULT in PostgreSQL's catalog (its
    // sequence shows through `attidentity`).
    if !c.identity.is_empty() {
        return None;
    }
    if let Some(e) = &c.default_expr {
        return Some(e.clone());
    }
    let literal = c.default_literal.as_ref()?;
    let t = c.r#type.unwrap_or_default();
    Some(match kind(&t) {
        TypeKind::Smallint | TypeKind::Integer | TypeKind::Bigint | TypeKind::Numeric | TypeKind::Real | TypeKind::Double | TypeKind::Boolean => {
            literal.clone()
        }
        _ => {
            let name = sql_name(&t);
            let base = name.split('(').next().unwrap_or(&name).to_string();
            format!("'{}'::{base}", literal.replace('\'', "''"))
        }
    })
}

/// The name PostgreSQL gives a table's primary key (`<table>_pkey`).
pub fn primary_key_name(def: &TableDef) -> String {
    format!("{}_pkey", def.name)
}

/// One index of a table as the catalog shows it: the primary key's, or a
/// secondary index (a UNIQUE constraint's or CREATE INDEX's).
struct IndexView<'a> {
    def: &'a TableDef,
    oid: i32,
    name: String,
    /// The indexed columns' numbers (`indkey`, `conkey`).
    attnums: Vec<i16>,
    unique: bool,
    primary: bool,
    /// The OID of the constraint it backs (primary key, UNIQUE), if any.
    constraint: Option<i32>,
}

impl IndexView<'_> {
    fn columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.attnums.iter().map(|k| &self.def.columns[*k as usize - 1])
    }

    fn column_names(&self) -> Vec<String> {
        self.columns().map(|c| c.name.clone()).collect()
    }
}

/// The indexes of a table: its primary key's first, then the others in the
/// order they were created. A secondary index's OIDs are those of its
/// storage relation id (`TableOids::of(index id)`), which no table shares.
fn table_indexes(def: &TableDef) -> Vec<IndexView<'_>> {
    let mut out = Vec::new();
    let attnum = |pos: usize| pos as i16 + 1;
    if !def.primary_key.is_empty() {
        let oids = TableOids::of(def.id);
        out.push(IndexView {
            def,
            oid: oids.index,
            name: primary_key_name(def),
            attnums: def.primary_key.iter().filter_map(|k| def.columns.iter().position(|c| &c.name == k)).map(attnum).collect(),
            unique: true,
            primary: true,
            constraint: Some(oids.constraint),
        });
    }
    for ix in &def.indexes {
        let oids = TableOids::of(ix.id);
        out.push(IndexView {
            def,
            oid: oids.table,
            name: ix.name.clone(),
            attnums: ix.column_ids.iter().filter_map(|id| def.columns.iter().position(|c| c.id == *id)).map(attnum).collect(),
            unique: ix.unique,
            primary: false,
            constraint: ix.constraint.then_some(oids.constraint),
        });
    }
    out
}

/// `pg_namespace` rows of the schemas holding tables (and `public`).
pub fn namespaces(defs: &[TableDef]) -> Vec<Row> {
    let mut names: Vec<&str> = defs.iter().map(|d| d.schema.as_str()).chain(["public"]).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|n| vec![("oid", ScalarValue::Int32(Some(namespace_oid(n)))), ("nspname", text(n)), ("nspowner", ScalarValue::Int32(Some(OWNER)))])
        .collect()
}

/// `pg_class` rows: each table, and its primary-key index.
pub fn classes(defs: &[TableDef]) -> Vec<Row> {
    let mut rows = Vec::new();
    for def in defs {
        let oids = TableOids::of(def.id);
        let checks = def.checks.len() as i16;
        // PostgreSQL keeps foreign keys with triggers on both tables; psql
        // lists the keys of a table that has triggers.
        let triggers = !def.foreign_keys.is_empty() || defs.iter().any(|d| d.foreign_keys.iter().any(|f| f.ref_table == def.id));
        let class = |oid: i32, name: String, kind: &str, am: i32, natts: usize, row_type: i32, has_index: bool| -> Row {
            vec![
                ("oid", ScalarValue::Int32(Some(oid))),
                ("relname", text(name)),
                ("relnamespace", ScalarValue::Int32(Some(namespace_oid(&def.schema)))),
                ("reltype", ScalarValue::Int32(Some(row_type))),
                ("relowner", ScalarValue::Int32(Some(OWNER))),
                ("relam", ScalarValue::Int32(Some(am))),
                ("relfilenode", ScalarValue::Int32(Some(oid))),
                ("reltuples", ScalarValue::Float64(Some(-1.0))),
                ("relhasindex", ScalarValue::Boolean(Some(has_index))),
                ("relpersistence", text("p")),
                ("relkind", text(kind)),
                ("relnatts", ScalarValue::Int16(Some(natts as i16))),
                ("relchecks", ScalarValue::Int16(Some(if kind == "r" { checks } else { 0 }))),
                ("relhastriggers", ScalarValue::Boolean(Some(kind == "r" && triggers))),
                ("relispopulated", ScalarValue::Boolean(Some(true))),
                ("relreplident", text(if kind == "r" { "d" } else { "n" })),
            ]
        };
        let indexes = table_indexes(def);
        match def.sequence {
            Some(_) => rows.push(class(oids.table, def.name.clone(), "S", 0, def.columns.len(), oids.row_type, false)),
            None => rows.push(class(oids.table, def.name.clone(), "r", HEAP, def.columns.len(), oids.row_type, !indexes.is_empty())),
        }
        for ix in indexes {
            rows.push(class(ix.oid, ix.name.clone(), "i", BTREE, ix.attnums.len(), 0, false));
        }
    }
    rows
}

/// One `pg_attribute` row.
fn attribute(relation: i32, attnum: i16, c: &ColumnDef, not_null: bool, has_default: bool) -> Row {
    let t = c.r#type.unwrap_or_default();
    let (oid, len, byval, align, storage, collatable) = type_facts(kind(&t));
    vec![
        ("attrelid", ScalarValue::Int32(Some(relation))),
        ("attname", text(c.name.clone())),
        ("atttypid", ScalarValue::Int32(Some(oid))),
        ("attstattarget", ScalarValue::Int32(Some(-1))),
        ("attlen", ScalarValue::Int16(Some(len))),
        ("attnum", ScalarValue::Int16(Some(attnum))),
        ("attcacheoff", ScalarValue::Int32(Some(-1))),
        ("atttypmod", ScalarValue::Int32(Some(typmod(&t)))),
        ("attbyval", ScalarValue::Boolean(Some(byval))),
        ("attalign", text(align)),
        ("attstorage", text(storage)),
        ("attnotnull", ScalarValue::Boolean(Some(not_null))),
        ("atthasdef", ScalarValue::Boolean(Some(has_default))),
        ("attidentity", text(c.identity.clone())),
        ("attislocal", ScalarValue::Boolean(Some(true))),
        ("attcollation", ScalarValue::Int32(Some(if collatable { DEFAULT_COLLATION } else { 0 }))),
    ]
}

/// `pg_attribute` rows: the columns of each table and of its key index.
pub fn attributes(defs: &[TableDef]) -> Vec<Row> {
    let mut rows = Vec::new();
    for def in defs {
        let oids = TableOids::of(def.id);
        for (i, c) in def.columns.iter().enumerate() {
            let in_key = def.primary_key.contains(&c.name);
            rows.push(attribute(oids.table, i as i16 + 1, c, c.not_null || in_key, default_text(c).is_some()));
        }
        for ix in table_indexes(def) {
            for (i, c) in ix.columns().enumerate() {
                rows.push(attribute(ix.oid, i as i16 + 1, c, false, false));
            }
        }
    }
    rows
}

/// `pg_attrdef` rows: column defaults, `adbin` holding the SQL text (which
/// ebb's `pg_get_expr` returns as it is).
pub fn defaults(defs: &[TableDef]) -> Vec<Row> {
    let mut rows = Vec::new();
    for def in defs {
        for (i, c) in def.columns.iter().enumerate() {
            if let Some(expr) = default_text(c) {
                rows.push(vec![
                    ("oid", ScalarValue::Int32(Some(attrdef_oid(def.id, i as i16 + 1)))),
                    ("adrelid", ScalarValue::Int32(Some(TableOids::of(def.id).table))),
                    ("adnum", ScalarValue::Int16(Some(i as i16 + 1))),
                    ("adbin", text(expr)),
                ]);
            }
        }
    }
    rows
}

/// `pg_index` rows.
pub fn indexes(defs: &[TableDef]) -> Vec<Row> {
    defs.iter()
        .flat_map(table_indexes)
        .map(|ix| {
            let kinds: Vec<TypeKind> = ix.columns().map(|c| kind(&c.r#type.unwrap_or_default())).collect();
            let collations = kinds.iter().map(|k| if type_facts(*k).5 { DEFAULT_COLLATION } else { 0 });
            let yes = || ScalarValue::Boolean(Some(true));
            vec![
                ("indexrelid", ScalarValue::Int32(Some(ix.oid))),
                ("indrelid", ScalarValue::Int32(Some(TableOids::of(ix.def.id).table))),
                ("indnatts", ScalarValue::Int16(Some(ix.attnums.len() as i16))),
                ("indnkeyatts", ScalarValue::Int16(Some(ix.attnums.len() as i16))),
                ("indisunique", ScalarValue::Boolean(Some(ix.unique))),
                ("indisprimary", ScalarValue::Boolean(Some(ix.primary))),
                ("indimmediate", yes()),
                ("indisvalid", yes()),
                ("indisready", yes()),
                ("indislive", yes()),
                ("indkey", int2_list(ix.attnums.iter().copied())),
                ("indcollation", oid_list(collations)),
                ("indclass", oid_list(kinds.iter().map(|k| btree_opclass(*k)))),
                ("indoption", int2_list(ix.attnums.iter().map(|_| 0))),
            ]
        })
        .collect()
}

/// One `pg_constraint` row.
fn constraint(def: &TableDef, oid: i32, name: &str, kind: &str, index: i32, attnums: Vec<i16>) -> Row {
    vec![
        ("oid", ScalarValue::Int32(Some(oid))),
        ("conname", text(name)),
        ("connamespace", ScalarValue::Int32(Some(namespace_oid(&def.schema)))),
        ("contype", text(kind)),
        ("convalidated", ScalarValue::Boolean(Some(true))),
        ("conrelid", ScalarValue::Int32(Some(TableOids::of(def.id).table))),
        ("conindid", ScalarValue::Int32(Some(index))),
        ("conislocal", ScalarValue::Boolean(Some(true))),
        ("connoinherit", ScalarValue::Boolean(Some(true))),
        ("conparentid", ScalarValue::Int32(Some(0))),
        ("conkey", int2_list(attnums)),
    ]
}

/// `pg_constraint` rows of primary keys, UNIQUE, FOREIGN KEY and CHECK constraints.
pub fn constraints(defs: &[TableDef]) -> Vec<Row> {
    let mut rows: Vec<Row> = defs
        .iter()
        .flat_map(table_indexes)
        .filter_map(|ix| Some(constraint(ix.def, ix.constraint?, &ix.name, if ix.primary { "p" } else { "u" }, ix.oid, ix.attnums.clone())))
        .collect();
    for def in defs {
        for (n, fk) in def.foreign_keys.iter().enumerate() {
            let Some(parent) = defs.iter().find(|d| d.id == fk.ref_table) else { continue };
            let attnums = fk.column_ids.iter().filter_map(|id| def.columns.iter().position(|c| c.id == *id)).map(|i| i as i16 + 1).collect();
            let mut row = constraint(def, foreign_key_oid(def.id, n), &fk.name, "f", TableOids::of(parent.id).index, attnums);
            let referenced = parent.primary_key.iter().filter_map(|k| parent.columns.iter().position(|c| &c.name == k)).map(|i| i as i16 + 1);
            row.extend([
                ("confrelid", ScalarValue::Int32(Some(TableOids::of(parent.id).table))),
                ("confkey", int2_list(referenced)),
                ("confupdtype", text("a")),
                ("confdeltype", text(if fk.on_delete.is_empty() { "a" } else { fk.on_delete.as_str() })),
                ("confmatchtype", text("s")),
                ("condeferrable", ScalarValue::Boolean(Some(fk.deferred))),
                ("condeferred", ScalarValue::Boolean(Some(fk.deferred))),
            ]);
            rows.push(row);
        }
        for (n, c) in def.checks.iter().enumerate() {
            let attnums = checks::columns_of_stored(c)
                .iter()
                .filter_map(|name| def.columns.iter().position(|col| &col.name == name))
                .map(|i| i as i16 + 1)
                .collect();
            rows.push(constraint(def, check_oid(def.id, n), &c.name, "c", 0, attnums));
        }
    }
    rows
}

/// `pg_tables` rows.
pub fn tables(defs: &[TableDef]) -> Vec<Row> {
    defs.iter()
        .filter(|def| def.sequence.is_none())
        .map(|def| {
            vec![
                ("schemaname", text(def.schema.clone())),
                ("tablename", text(def.name.clone())),
                ("tableowner", text("postgres")),
                ("hasindex", ScalarValue::Boolean(Some(!table_indexes(def).is_empty()))),
                ("hasindexes", ScalarValue::Boolean(Some(!table_indexes(def).is_empty()))),
            ]
        })
        .collect()
}

/// `pg_sequence` rows: each sequence's options.
pub fn sequences(defs: &[TableDef]) -> Vec<Row> {
    defs.iter()
        .filter_map(|def| {
            let o = def.sequence.as_ref()?;
            let value_type = ColumnType { kind: o.value_type, length: 0, scale: 0 };
            Some(vec![
                ("seqrelid", ScalarValue::Int32(Some(TableOids::of(def.id).table))),
                ("seqtypid", ScalarValue::Int32(Some(type_facts(kind(&value_type)).0))),
                ("seqstart", ScalarValue::Int64(Some(o.start))),
                ("seqincrement", ScalarValue::Int64(Some(o.increment))),
                ("seqmax", ScalarValue::Int64(Some(o.max_value))),
                ("seqmin", ScalarValue::Int64(Some(o.min_value))),
                ("seqcache", ScalarValue::Int64(Some(o.cache))),
                ("seqcycle", ScalarValue::Boolean(Some(o.cycle))),
            ])
        })
        .collect()
}

/// `pg_depend` rows: each sequence a column owns depends on that column
/// (`a` for SERIAL and OWNED BY, `i` for IDENTITY), as psql's `\d seq`
/// reads it for "Owned by"; `pg_class_oid` is the class of both.
pub fn dependencies(defs: &[TableDef], pg_class_oid: i32) -> Vec<Row> {
    defs.iter()
        .filter_map(|seq| {
            let o = seq.sequence.as_ref().filter(|o| o.owned_by_table != 0)?;
            let owner = defs.iter().find(|d| d.id == o.owned_by_table)?;
            let (index, column) = owner.columns.iter().enumerate().find(|(_, c)| c.name == o.owned_by_column)?;
            Some(vec![
                ("classid", ScalarValue::Int32(Some(pg_class_oid))),
                ("objid", ScalarValue::Int32(Some(TableOids::of(seq.id).table))),
                ("objsubid", ScalarValue::Int32(Some(0))),
                ("refclassid", ScalarValue::Int32(Some(pg_class_oid))),
                ("refobjid", ScalarValue::Int32(Some(TableOids::of(owner.id).table))),
                ("refobjsubid", ScalarValue::Int32(Some(index as i32 + 1))),
                ("deptype", text(if column.identity.is_empty() { "a" } else { "i" })),
            ])
        })
        .collect()
}

/// `pg_settings` rows: the session's settings.
pub fn settings(settings: &Settings) -> Vec<Row> {
    settings
        .entries()
        .into_iter()
        .map(|(name, value, default, fixed)| {
            let source = if fixed { "override" } else if value == default { "default" } else { "session" };
            vec![
                ("name", text(name)),
                ("setting", text(value)),
                ("context", text(if fixed { "internal" } else { "user" })),
                ("vartype", text("string")),
                ("source", text(source)),
                ("reset_val", text(default.clone())),
                ("boot_val", text(default)),
                ("pending_restart", ScalarValue::Boolean(Some(false))),
            ]
        })
        .collect()
}

/// `pg_get_constraintdef` of a primary-key, UNIQUE or CHECK constraint OID
/// (a CHECK's expression as written, as psql's `\d` prints it).
pub fn constraint_definition(defs: &[TableDef], oid: i32) -> Option<String> {
    let check = defs.iter().find_map(|d| d.checks.iter().enumerate().find(|(n, _)| check_oid(d.id, *n) == oid).map(|(_, c)| c));
    if let Some(c) = check {
        return Some(format!("CHECK ({})", c.expr));
    }
    let key = defs.iter().find_map(|d| d.foreign_keys.iter().enumerate().find(|(n, _)| foreign_key_oid(d.id, *n) == oid).map(|(_, f)| (d, f)));
    if let Some((def, fk)) = key {
        let parent = defs.iter().find(|d| d.id == fk.ref_table)?;
        let names: Vec<String> = fk.column_ids.iter().filter_map(|id| def.columns.iter().find(|c| c.id == *id).map(|c| c.name.clone())).collect();
        let table = if parent.schema == def.schema { quote_ident(&parent.name) } else { format!("{}.{}", quote_ident(&parent.schema), quote_ident(&parent.name)) };
        let on_delete = match fk.on_delete.as_str() {
            "r" => " ON DELETE RESTRICT",
            "c" => " ON DELETE CASCADE",
            "n" => " ON DELETE SET NULL",
            "d" => " ON DELETE SET DEFAULT",
            _ => "",
        };
        let deferred = if fk.deferred { " DEFERRABLE INITIALLY DEFERRED" } else { "" };
        return Some(format!("FOREIGN KEY ({}) REFERENCES {table}({}){on_delete}{deferred}", quoted_list(&names), quoted_list(&parent.primary_key)));
    }
    let ix = defs.iter().flat_map(table_indexes).find(|ix| ix.constraint == Some(oid))?;
    let kind = if ix.primary { "PRIMARY KEY" } else { "UNIQUE" };
    Some(format!("{kind} ({})", quoted_list(&ix.column_names())))
}

/// `pg_get_indexdef` of an index OID: the whole definition (`column` 0) or
/// the name of its `column`-th column.
pub fn index_definition(defs: &[TableDef], oid: i32, column: i32) -> Option<String> {
    let ix = defs.iter().flat_map(table_indexes).find(|ix| ix.oid == oid)?;
    let names = ix.column_names();
    if column > 0 {
        return names.get(column as usize - 1).map(|c| quote_ident(c));
    }
    Some(format!(
        "CREATE {}INDEX {} ON {}.{} USING btree ({})",
        if ix.unique { "UNIQUE " } else { "" },
        quote_ident(&ix.name),
        quote_ident(&ix.def.schema),
        quote_ident(&ix.def.name),
        quoted_list(&names)
    ))
}

/// `pg_indexes` rows: every index (primary keys' too) with its definition.
pub fn index_rows(defs: &[TableDef]) -> Vec<Row> {
    defs.iter()
        .flat_map(table_indexes)
        .filter_map(|ix| {
            Some(vec![
                ("schemaname", text(ix.def.schema.clone())),
                ("tablename", text(ix.def.name.clone())),
                ("indexname", text(ix.name.clone())),
                ("indexdef", text(index_definition(defs, ix.oid, 0)?)),
            ])
        })
        .collect()
}

fn quoted_list(names: &[String]) -> String {
    names.iter().map(|n| quote_ident(n)).collect::<Vec<_>>().join(", ")
}

/// An identifier as PostgreSQL prints it: bare when it is lower case, else quoted.
fn quote_ident(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare { name.to_string() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::table_def;

    fn get<'a>(row: &'a Row, name: &str) -> &'a ScalarValue {
        &row.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    fn sample() -> TableDef {
        let mut def = table_def("orders", &[("region", TypeKind::Varchar), ("id", TypeKind::Integer), ("Note", TypeKind::Numeric)], &["region", "id"]);
        def.id = 3;
        def.schema = "public".into();
        def.columns[0].r#type = Some(ColumnType { kind: TypeKind::Varchar as i32, length: 20, scale: 0 });
        def.columns[2].r#type = Some(ColumnType { kind: TypeKind::Numeric as i32, length: 10, scale: 2 });
        def.columns[2].default_literal = Some("1.5".into());
        def.columns[0].default_expr = Some("lower('X')".into());
        def
    }

    #[test]
    fn columns_carry_types_modifiers_keys_and_defaults() {
        let def = sample();
        let attrs = attributes(std::slice::from_ref(&def));
        assert_eq!(attrs.len(), 3 + 2, "three columns and two index columns");
        let table = TableOids::of(3).table;
        assert_eq!(get(&attrs[0], "attrelid"), &ScalarValue::Int32(Some(table)));
        assert_eq!(get(&attrs[0], "atttypid"), &ScalarValue::Int32(Some(1043)));
        assert_eq!(get(&attrs[0], "atttypmod"), &ScalarValue::Int32(Some(24)));
        assert_eq!(get(&attrs[0], "attnotnull"), &ScalarValue::Boolean(Some(true)), "key columns are NOT NULL");
        assert_eq!(get(&attrs[0], "attcollation"), &ScalarValue::Int32(Some(100)));
        assert_eq!(get(&attrs[2], "atttypmod"), &ScalarValue::Int32(Some((10 << 16 | 2) + 4)));
        assert_eq!(get(&attrs[2], "attnotnull"), &ScalarValue::Boolean(Some(false)));
        assert_eq!(get(&attrs[2], "atthasdef"), &ScalarValue::Boolean(Some(true)));
        assert_eq!(get(&attrs[1], "atthasdef"), &ScalarValue::Boolean(Some(false)));
        assert_eq!(get(&attrs[3], "attrelid"), &ScalarValue::Int32(Some(TableOids::of(3).index)));
        let defaults = defaults(std::slice::from_ref(&def));
        assert_eq!(defaults.len(), 2);
        assert_eq!(get(&defaults[0], "adbin"), &text("lower('X')"));
        assert_eq!(get(&defaults[1], "adbin"), &text("1.5"));
        assert_eq!(get(&defaults[1], "adnum"), &ScalarValue::Int16(Some(3)));
    }

    #[test]
    fn the_primary_key_is_an_index_and_a_constraint() {
        let def = sample();
        let defs = std::slice::from_ref(&def);
        let oids = TableOids::of(3);
        let rows = classes(defs);
        assert_eq!(rows.len(), 2);
        assert_eq!(get(&rows[1], "relname"), &text("orders_pkey"));
        assert_eq!(get(&rows[1], "relkind"), &text("i"));
        assert_eq!(get(&rows[0], "relhasindex"), &ScalarValue::Boolean(Some(true)));
        let index = &indexes(defs)[0];
        assert_eq!(get(index, "indkey"), &int2_list([1, 2]));
        assert_eq!(get(index, "indclass"), &oid_list([3126, 1978]));
        let constraint = &constraints(defs)[0];
        assert_eq!(get(constraint, "conindid"), &ScalarValue::Int32(Some(oids.index)));
        assert_eq!(constraint_definition(defs, oids.constraint).as_deref(), Some("PRIMARY KEY (region, id)"));
        assert_eq!(index_definition(defs, oids.index, 0).as_deref(), Some("CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (region, id)"));
        assert_eq!(index_definition(defs, oids.index, 2).as_deref(), Some("id"));
        assert_eq!(index_definition(defs, oids.table, 0), None);
        let keyless = table_def("log", &[("line", TypeKind::Text)], &[]);
        assert_eq!(classes(std::slice::from_ref(&keyless)).len(), 1);
        assert!(indexes(std::slice::from_ref(&keyless)).is_empty());
    }

    #[test]
    fn defaults_print_as_postgres_deparses_them() {
        let mut c = ColumnDef { name: "c".into(), r#type: Some(ColumnType { kind: TypeKind::Varchar as i32, length: 5, scale: 0 }), ..Default::default() };
        assert_eq!(default_text(&c), None);
        c.default_literal = Some("it's".into());
        assert_eq!(default_text(&c).as_deref(), Some("'it''s'::character varying"));
        c.r#type = Some(ColumnType { kind: TypeKind::Bigint as i32, length: 0, scale: 0 });
        c.default_literal = Some("-5".into());
        assert_eq!(default_text(&c).as_deref(), Some("-5"));
        assert_eq!(quote_ident("Note"), "\"Note\"");
        assert_ne!(namespace_oid("sales"), PUBLIC_NAMESPACE);
        assert_eq!(namespace_oid("sales"), namespace_oid("sales"));
    }
}
