//! How much space databases and tables take: `pg_database_size`,
//! `pg_relation_size`, `pg_table_size`, `pg_total_relation_size`,
//! `pg_indexes_size` and `pg_size_pretty` — what psql's `\l+`, `\dt+` and
//! `\di+` print and what people ask when a table grows.
//!
//! The figures are storage's (see `RelationSizes` in `storage.proto`): a
//! table's size is the bytes of its rows — RocksDB's estimate for its table
//! files plus its entries still in the memtables, every stored version until
//! garbage collection drops it; a database's size is its table files and
//! memtables. A primary key is the order the rows are stored in, not a
//! separate structure: its index takes no space of its own. Statements that
//! call these functions fetch fresh figures from storage first
//! ([`size_calls`]): their database's tables, and every database's total
//! only for `pg_database_size`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use super::user_relations::{TableOids, relation_by_name};
use crate::by_address::ByAddress;
use crate::catalog::DatabaseCatalog;
use crate::error::{ComputeError, Result, check_arguments};
use crate::storage_client::StorageClient;

/// Storage's figures, as of the last [`RelationSizes::refresh`].
#[derive(Debug, Default)]
struct Figures {
    /// Bytes per database name.
    databases: HashMap<String, u64>,
    /// Bytes of the session database's tables, by storage table id.
    tables: HashMap<u32, u64>,
}

/// The figures a session's size functions answer from.
#[derive(Debug, Default)]
pub struct RelationSizes {
    figures: RwLock<Figures>,
}

impl RelationSizes {
    /// Fetches what `calls` read: the sizes of `database`'s tables, every
    /// database's size.
    pub async fn refresh(&self, client: &StorageClient, database: &str, calls: SizeCalls) -> Result<()> {
        let mut figures = Figures::default();
        let names = if calls.databases { client.list_databases().await?.into_iter().map(|d| d.name).collect() } else { vec![database.to_string()] };
        for name in names {
            let tables = calls.tables && name == database;
            let sizes = client.relation_sizes(&name, tables).await?;
            if tables {
                figures.tables = sizes.tables.iter().map(|t| (t.table_id, t.bytes)).collect();
            }
            figures.databases.insert(name, sizes.database_bytes);
        }
        *self.figures.write().unwrap_or_else(|p| p.into_inner()) = figures;
        Ok(())
    }

    fn database(&self, name: &str) -> Option<u64> {
        self.figures.read().unwrap_or_else(|p| p.into_inner()).databases.get(name).copied()
    }

    fn table(&self, id: u32) -> Option<u64> {
        self.figures.read().unwrap_or_else(|p| p.into_inner()).tables.get(&id).copied()
    }
}

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SizeOf {
    /// `pg_database_size(name)`.
    Database,
    /// `pg_relation_size(regclass [, fork])`, `pg_table_size(regclass)`,
    /// `pg_total_relation_size(regclass)`: a table's rows (ebb keeps no
    /// TOAST or free-space map apart from them), 0 for its key's index.
    Relation(&'static str),
    /// `pg_indexes_size(regclass)`: 0, the primary key is the row order.
    Indexes,
}

/// The functions that read the sizes of tables.
const SIZE_FUNCTIONS: [&str; 4] = ["pg_relation_size", "pg_table_size", "pg_total_relation_size", "pg_indexes_size"];

/// The size functions of a session on `catalog`, answering from `sizes`,
/// and `pg_size_pretty`.
pub fn functions(catalog: &Arc<DatabaseCatalog>, sizes: &Arc<RelationSizes>) -> Vec<ScalarUDF> {
    let kinds = [
        SizeOf::Database,
        SizeOf::Relation("pg_relation_size"),
        SizeOf::Relation("pg_table_size"),
        SizeOf::Relation("pg_total_relation_size"),
        SizeOf::Indexes,
    ];
    kinds
        .into_iter()
        .map(|kind| {
            ScalarUDF::new_from_impl(SizeUdf { kind, signature: Signature::variadic_any(Volatility::Volatile), catalog: ByAddress(catalog.clone()), sizes: ByAddress(sizes.clone()) })
        })
        .chain([ScalarUDF::new_from_impl(PrettyUdf { signature: Signature::variadic_any(Volatility::Immutable) })])
        .collect()
}

/// What a plan's size functions read from storage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SizeCalls {
    /// The sizes of the database's tables (`pg_table_size`, …).
    pub tables: bool,
    /// Every database's size (`pg_database_size`).
    pub databases: bool,
}

impl SizeCalls {
    /// Whether the plan calls a size function at all.
    pub fn any(self) -> bool {
        self.tables || self.databases
    }
}

/// The size functions a plan calls.
pub fn size_calls(plan: &LogicalPlan) -> SizeCalls {
    let mut calls = SizeCalls::default();
    let _ = plan.apply_with_subqueries(|p| {
        p.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x {
                    match f.name() {
                        "pg_database_size" => calls.databases = true,
                        name if SIZE_FUNCTIONS.contains(&name) => calls.tables = true,
                        _ => {}
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    calls
}

/// One of the functions, over a session's catalog and figures.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SizeUdf {
    kind: SizeOf,
    signature: Signature,
    catalog: ByAddress<DatabaseCatalog>,
    sizes: ByAddress<RelationSizes>,
}

impl ScalarUDFImpl for SizeUdf {
    fn name(&self) -> &str {
        match self.kind {
            SizeOf::Database => "pg_database_size",
            SizeOf::Relation(name) => name,
            SizeOf::Indexes => "pg_indexes_size",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let most = if self.kind == SizeOf::Relation("pg_relation_size") { 2 } else { 1 };
        check_arguments(self.name(), 1..=most, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let out: Int64Array = match self.kind {
            SizeOf::Database => {
                if !matches!(arrays[0].data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
                    return Err(ComputeError::unsupported("pg_database_size of a database OID (name the database)").into_datafusion());
                }
                let names = cast_with_options(&arrays[0], &DataType::Utf8, &CastOptions::default())?;
                let mut out = Vec::with_capacity(names.len());
                for name in names.as_string::<i32>() {
                    out.push(match name {
                        None => None,
                        Some(n) => match self.sizes.database(n) {
                            Some(bytes) => Some(to_i64(bytes)),
                            None => return Err(ComputeError::invalid("3D000", format!("database \"{n}\" does not exist")).into_datafusion()),
                        },
                    });
                }
                out.into_iter().collect()
            }
            SizeOf::Relation(_) | SizeOf::Indexes => {
                if let Some(fork) = arrays.get(1) {
                    let forks = cast_with_options(fork, &DataType::Utf8, &CastOptions::default())?;
                    if let Some(other) = forks.as_string::<i32>().iter().flatten().find(|f| *f != "main") {
                        return Err(ComputeError::invalid("22023", format!("ebb keeps no \"{other}\" fork: only \"main\" has a size")).into_datafusion());
                    }
                }
                let ids = self.relations(&arrays[0])?;
                ids.into_iter()
                    .map(|r| match r? {
                        Relation::Table(id) if self.kind != SizeOf::Indexes => Some(self.sizes.table(id).map(to_i64).unwrap_or(0)),
                        Relation::Table(_) | Relation::KeyIndex => Some(0),
                    })
                    .collect()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// What a relation argument names.
#[derive(Debug, Clone, Copy)]
enum Relation {
    /// A table, by storage id.
    Table(u32),
    /// A table's primary-key index.
    KeyIndex,
}

impl SizeUdf {
    /// The relations an argument names: OIDs (`c.oid`) or table names
    /// (`'accounts'`, `'public.accounts'`); `None` for NULL and for OIDs of
    /// relations without storage (the system catalogs), an error for a
    /// name that is no table.
    fn relations(&self, arg: &ArrayRef) -> DfResult<Vec<Option<Relation>>> {
        let defs = self.catalog.table_defs();
        let by_oid: HashMap<i64, Relation> = defs
            .iter()
            .flat_map(|d| {
                let oids = TableOids::of(d.id);
                let index = (!d.primary_key.is_empty()).then_some((i64::from(oids.index), Relation::KeyIndex));
                [(i64::from(oids.table), Relation::Table(d.id))].into_iter().chain(index)
            })
            .collect();
        let lookup = |oid: i64| by_oid.get(&oid).copied();
        if matches!(arg.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            let texts = cast_with_options(arg, &DataType::Utf8, &CastOptions::default())?;
            let mut out = Vec::with_capacity(texts.len());
            for t in texts.as_string::<i32>() {
                let Some(t) = t else {
                    out.push(None);
                    continue;
                };
                if let Ok(oid) = t.parse::<i64>() {
                    out.push(lookup(oid));
                    continue;
                }
                let def = relation_by_name(&defs, t).map_err(ComputeError::into_datafusion)?;
                out.push(Some(Relation::Table(def.id)));
            }
            return Ok(out);
        }
        let oids = cast_with_options(arg, &DataType::Int64, &CastOptions { safe: false, ..Default::default() })?;
        Ok(oids.as_primitive::<Int64Type>().iter().map(|oid| oid.and_then(lookup)).collect())
    }
}

fn to_i64(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// `pg_size_pretty(bigint)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PrettyUdf {
    signature: Signature,
}

impl ScalarUDFImpl for PrettyUdf {
    fn name(&self) -> &str {
        "pg_size_pretty"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        check_arguments("pg_size_pretty", 1..=1, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let sizes = cast_with_options(&arrays[0], &DataType::Int64, &CastOptions { safe: false, ..Default::default() })?;
        let out: StringArray = sizes.as_primitive::<Int64Type>().iter().map(|s| s.map(size_pretty)).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// PostgreSQL's rendering of a byte count: bytes below 10 kB, then the
/// largest of kB, MB, GB, TB, PB that keeps the number below 20 480 (its
/// last step rounded half away from zero).
pub fn size_pretty(bytes: i64) -> String {
    // (unit, limit, rounded, bits of the unit)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let mut size = bytes;
    let mut unit = 0;
    loop {
        let (name, limit, round, bits) = UNITS[unit];
        match UNITS.get(unit + 1) {
            Some(&(_, _, next_round, next_bits)) if size.unsigned_abs() >= limit as u64 => {
                // One bit less when the next unit halves-and-rounds at the
                // end, one more when this one did.
                size /= 1_i64 << (next_bits - bits - u32::from(next_round) + u32::from(round));
                unit += 1;
            }
            _ => {
                if round {
                    size = (size + if size < 0 { -1 } else { 1 }) / 2;
                }
                return format!("{size} {name}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_in_postgresql() {
        // Expected values from PostgreSQL 15's pg_size_pretty.
        for (bytes, want) in [
            (0, "0 bytes"),
            (10_239, "10239 bytes"),
            (10_240, "10 kB"),
            (1_000_000, "977 kB"),
            (20_971_519, "20 MB"),
            (20_971_520, "20 MB"),
            (123_456_789, "118 MB"),
            (10_000_000_000, "9537 MB"),
            (1_000_000_000_000_000, "909 TB"),
            (i64::MAX, "8192 PB"),
            (-10_240, "-10 kB"),
            (-1_000_000, "-977 kB"),
        ] {
            assert_eq!(size_pretty(bytes), want, "{bytes}");
        }
    }
}
