//! `nextval`, `currval`, `setval`, `lastval` and `pg_get_serial_sequence`,
//! and the values of DEFAULTs that call `nextval` (SERIAL and IDENTITY
//! columns).
//!
//! Storage hands the values out (see `storage/src/engine/sequences.rs`);
//! this keeps what PostgreSQL keeps per session: the last value each
//! sequence gave this session (`currval`) and the last value of any
//! (`lastval`). `nextval` and `setval` are async functions, like
//! `pg_sleep`: one request to storage per statement for a constant
//! argument, `nextval` taking as many values as the statement has rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::by_address::ByAddress;
use crate::catalog::{DatabaseCatalog, PUBLIC};
use crate::error::{ComputeError, Result, check_arguments};
use crate::pg_catalog::{relation_by_name, relation_by_oid};
use crate::sql::sequences::parse_relation;
use crate::storage_session::StorageSession;

/// A session's view of sequences.
#[derive(Debug)]
pub struct SessionSequences {
    storage: Arc<StorageSession>,
    catalog: Arc<DatabaseCatalog>,
    seen: Mutex<Seen>,
}

/// What `currval` and `lastval` answer.
#[derive(Debug, Default)]
struct Seen {
    /// (schema, name) → the last value this session got from it (or set
    /// with `setval`).
    current: HashMap<(String, String), i64>,
    /// The sequence this session's last `nextval` used.
    last_used: Option<(String, String)>,
}

impl SessionSequences {
    /// Sequences of a session on `storage`, naming relations by `catalog`.
    pub fn new(storage: Arc<StorageSession>, catalog: Arc<DatabaseCatalog>) -> Self {
        Self { storage, catalog, seen: Mutex::default() }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `count` values of the sequence named by `relation` (text as
    /// `regclass` reads it).
    pub async fn next_values(&self, relation: &str, count: u64) -> Result<Vec<i64>> {
        let (schema, name) = parse_relation(relation)?;
        self.next_values_of((schema, name), count).await
    }

    async fn next_values_of(&self, (schema, name): (String, String), count: u64) -> Result<Vec<i64>> {
        let values = self.storage.client.next_values(&self.storage.database, &schema, &name, count).await?;
        if let Some(&v) = values.last() {
            let mut seen = self.seen();
            let k = key(schema, name);
            seen.current.insert(k.clone(), v);
            seen.last_used = Some(k);
        }
        Ok(values)
    }

    /// The sequences an argument names, row by row: relation names (text)
    /// or OIDs (`'s'::regclass`, `c.oid`); `None` for NULL.
    fn relations(&self, arg: &ArrayRef) -> Result<Vec<Option<(String, String)>>> {
        if matches!(arg.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            let texts = cast(arg, &DataType::Utf8)?;
            return texts.as_string::<i32>().iter().map(|t| t.map(parse_relation).transpose()).collect();
        }
        let oids = cast(arg, &DataType::Int64)?;
        let defs = self.catalog.table_defs();
        oids.as_primitive::<Int64Type>()
            .iter()
            .map(|oid| {
                let Some(oid) = oid else { return Ok(None) };
                relation_by_oid(&defs, oid)
                    .map(|d| Some((d.schema.clone(), d.name.clone())))
                    .ok_or_else(|| ComputeError::invalid("42P01", format!("relation with OID {oid} does not exist")))
            })
            .collect()
    }

    /// `currval`: what each named sequence last gave this session.
    fn currval(&self, relations: &ArrayRef) -> Result<Int64Array> {
        let relations = self.relations(relations)?;
        for (schema, name) in relations.iter().flatten() {
            self.check_sequence(schema, name)?;
        }
        let seen = self.seen();
        relations
            .into_iter()
            .map(|r| {
                let Some((schema, name)) = r else { return Ok(None) };
                match seen.current.get(&key(schema, name.clone())) {
                    Some(v) => Ok(Some(*v)),
                    None => Err(ComputeError::invalid("55000", format!("currval of sequence \"{name}\" is not yet defined in this session"))),
                }
            })
            .collect()
    }

    /// `pg_get_serial_sequence`: the sequence (`schema.name`) that fills
    /// each table's column, NULL if none does.
    fn serial_sequences(&self, tables: &ArrayRef, columns: &ArrayRef) -> Result<Vec<Option<String>>> {
        let (tables, columns) = (cast(tables, &DataType::Utf8)?, cast(columns, &DataType::Utf8)?);
        let defs = self.catalog.table_defs();
        let mut out = Vec::with_capacity(tables.len());
        for (table, column) in tables.as_string::<i32>().iter().zip(columns.as_string::<i32>().iter()) {
            let (Some(table), Some(column)) = (table, column) else {
                out.push(None);
                continue;
            };
            // `attrelid::regclass::text` reaches here as the OID's digits;
            // an OID of no table (a system catalog's) has no sequence.
            let def = match table.parse::<i64>() {
                Ok(oid) => match relation_by_oid(&defs, oid) {
                    Some(def) => def,
                    None => {
                        out.push(None);
                        continue;
                    }
                },
                Err(_) => relation_by_name(&defs, table)?,
            };
            if !def.columns.iter().any(|c| c.name == column) {
                return Err(ComputeError::invalid("42703", format!("column \"{column}\" of relation \"{}\" does not exist", def.name)));
            }
            let owned = defs.iter().find(|s| s.sequence.as_ref().is_some_and(|o| o.owned_by_table == def.id && o.owned_by_column == column));
            out.push(owned.map(|s| format!("{}.{}", s.schema, s.name)));
        }
        Ok(out)
    }

    /// 42P01 unless `schema.name` is a sequence this session's catalog
    /// knows (42809 for a table).
    fn check_sequence(&self, schema: &str, name: &str) -> Result<()> {
        let schema = if schema.is_empty() { None } else { Some(schema) };
        match self.catalog.table(schema, name) {
            None => Err(ComputeError::invalid("42P01", format!("relation \"{name}\" does not exist"))),
            Some(t) if t.def().sequence.is_none() => Err(ComputeError::invalid("42809", format!("\"{name}\" is not a sequence"))),
            Some(_) => Ok(()),
        }
    }

    /// The session's functions over these sequences.
    pub fn functions(self: &Arc<Self>) -> Vec<ScalarUDF> {
        let make = |kind| {
            let signature = if kind == Kind::Lastval { Signature::nullary(Volatility::Volatile) } else { Signature::variadic_any(Volatility::Volatile) };
            SequenceUdf { kind, signature, sequences: ByAddress(self.clone()) }
        };
        vec![
            AsyncScalarUDF::new(Arc::new(make(Kind::Nextval))).into_scalar_udf(),
            AsyncScalarUDF::new(Arc::new(make(Kind::Setval))).into_scalar_udf(),
            ScalarUDF::new_from_impl(make(Kind::Currval)),
            ScalarUDF::new_from_impl(make(Kind::Lastval)),
            ScalarUDF::new_from_impl(make(Kind::SerialSequence)),
        ]
    }
}

/// Sequences are looked up by schema and name; no schema means `public`.
fn key(schema: String, name: String) -> (String, String) {
    (if schema.is_empty() { PUBLIC.to_string() } else { schema }, name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Nextval,
    Setval,
    Currval,
    Lastval,
    /// `pg_get_serial_sequence(table, column)`.
    SerialSequence,
}

/// One of the functions, over a session's sequences.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SequenceUdf {
    kind: Kind,
    signature: Signature,
    sequences: ByAddress<SessionSequences>,
}

impl ScalarUDFImpl for SequenceUdf {
    fn name(&self) -> &str {
        match self.kind {
            Kind::Nextval => "nextval",
            Kind::Setval => "setval",
            Kind::Currval => "currval",
            Kind::Lastval => "lastval",
            Kind::SerialSequence => "pg_get_serial_sequence",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(if self.kind == Kind::SerialSequence { DataType::Utf8 } else { DataType::Int64 })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let values: ArrayRef = match self.kind {
            Kind::SerialSequence => {
                check_arguments("pg_get_serial_sequence", 2..=2, args.args.len())?;
                let arrays = ColumnarValue::values_to_arrays(&args.args)?;
                let names = self.sequences.serial_sequences(&arrays[0], &arrays[1]).map_err(ComputeError::into_datafusion)?;
                Arc::new(StringArray::from(names))
            }
            Kind::Lastval => {
                check_arguments("lastval", 0..=0, args.args.len())?;
                let seen = self.sequences.seen();
                let last = seen.last_used.as_ref().and_then(|k| seen.current.get(k).copied());
                let v = last.ok_or_else(|| ComputeError::invalid("55000", "lastval is not yet defined in this session").into_datafusion())?;
                Arc::new(Int64Array::from(vec![v; rows]))
            }
            Kind::Currval => {
                check_arguments("currval", 1..=1, args.args.len())?;
                let arrays = ColumnarValue::values_to_arrays(&args.args)?;
                Arc::new(self.sequences.currval(&arrays[0]).map_err(ComputeError::into_datafusion)?)
            }
            Kind::Nextval | Kind::Setval => return datafusion::common::exec_err!("{} runs only as an async function", self.name()),
        };
        Ok(ColumnarValue::Array(values))
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for SequenceUdf {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let out = match self.kind {
            Kind::Nextval => self.nextval(args).await,
            Kind::Setval => self.setval(args).await,
            Kind::Currval | Kind::Lastval | Kind::SerialSequence => return self.invoke_with_args(args),
        };
        out.map(|values| ColumnarValue::Array(Arc::new(values) as ArrayRef)).map_err(ComputeError::into_datafusion)
    }
}

impl SequenceUdf {
    /// `nextval(regclass)`: one request for a constant argument.
    async fn nextval(&self, args: ScalarFunctionArgs) -> Result<Int64Array> {
        check_arguments("nextval", 1..=1, args.args.len())?;
        let rows = args.number_rows;
        if let ColumnarValue::Scalar(s) = &args.args[0] {
            let one = s.to_array_of_size(1)?;
            return Ok(match self.sequences.relations(&one)?.pop().flatten() {
                Some(r) => self.sequences.next_values_of(r, rows as u64).await?.into(),
                None => Int64Array::new_null(rows),
            });
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(rows);
        for r in self.sequences.relations(&arrays[0])? {
            out.push(match r {
                Some(r) => self.sequences.next_values_of(r, 1).await?.pop(),
                None => None,
            });
        }
        Ok(out.into())
    }

    /// `setval(regclass, bigint [, boolean])`: returns the value set.
    async fn setval(&self, args: ScalarFunctionArgs) -> Result<Int64Array> {
        check_arguments("setval", 2..=3, args.args.len())?;
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let relations = self.sequences.relations(&arrays[0])?;
        let values = cast(&arrays[1], &DataType::Int64)?;
        let values = values.as_primitive::<Int64Type>();
        let called = match arrays.get(2) {
            Some(a) => cast(a, &DataType::Boolean)?.as_boolean().clone(),
            None => BooleanArray::from(vec![true; rows]),
        };
        let mut out = Vec::with_capacity(rows);
        for (i, r) in relations.into_iter().enumerate() {
            let (Some((schema, name)), false, false) = (r, values.is_null(i), called.is_null(i)) else {
                out.push(None);
                continue;
            };
            let (value, is_called) = (values.value(i), called.value(i));
            let s = &self.sequences;
            s.storage.client.set_value(&s.storage.database, &schema, &name, value, is_called).await?;
            if is_called {
                s.seen().current.insert(key(schema, name), value);
            }
            out.push(Some(value));
        }
        Ok(out.into())
    }
}
