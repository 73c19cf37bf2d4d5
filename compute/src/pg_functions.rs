//! PostgreSQL functions that drivers, ORMs and psql call and
//! `datafusion-pg-catalog` lacks: `version()`, `to_regtype()`,
//! `json_build_object()`, `pg_collation_is_visible()`, `pg_type_is_visible()`,
//! `obj_description()`, `shobj_description()`, `col_description()`,
//! `pg_get_triggerdef()`, `pg_typeof()`. Each answers what is true of ebb
//! (built-in types only; no `COMMENT ON`, no triggers). `pg_get_serial_sequence()` is with the other sequence
//! functions (`sequence_functions`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};

use crate::session::settings::SERVER_VERSION;

/// Every function of this module.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        version_udf(),
        to_regtype_udf(),
        ScalarUDF::from(JsonBuildObject::new()),
        in_catalog_schema_udf("pg_collation_is_visible"),
        in_catalog_schema_udf("pg_type_is_visible"),
        // bigint: oid columns (int4) widen to it, and integer constants are bigint.
        always_null_text_udf("obj_description", vec![DataType::Int64, DataType::Utf8]),
        always_null_text_udf("shobj_description", vec![DataType::Int64, DataType::Utf8]),
        always_null_text_udf("col_description", vec![DataType::Int64, DataType::Int64]),
        // psql's `\d` of a table with foreign keys lists its triggers too.
        always_null_text_udf("pg_get_triggerdef", vec![DataType::Int64, DataType::Boolean]),
        ScalarUDF::from(PgTypeof { signature: Signature::any(1, Volatility::Immutable) }),
    ]
}

/// `version()` as PostgreSQL answers it: drivers (SQLAlchemy, JDBC) parse the
/// leading `PostgreSQL <major>.<minor>`.
fn version_udf() -> ScalarUDF {
    let text = format!("PostgreSQL {SERVER_VERSION} {} on x86_64-pc-linux-gnu, 64-bit", env!("CARGO_PKG_VERSION"));
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// OIDs of PostgreSQL's built-in types by every name `to_regtype` accepts.
const TYPE_OIDS: &[(&str, i32)] = &[
    ("bool", 16), ("boolean", 16), ("bytea", 17), ("char", 18), ("\"char\"", 18), ("name", 19),
    ("int8", 20), ("bigint", 20), ("int2", 21), ("smallint", 21), ("int4", 23), ("integer", 23), ("int", 23),
    ("text", 25), ("oid", 26), ("json", 114), ("xml", 142), ("float4", 700), ("real", 700),
    ("float8", 701), ("double precision", 701), ("bpchar", 1042), ("character", 1042),
    ("varchar", 1043), ("character varying", 1043), ("date", 1082), ("time", 1083),
    ("time without time zone", 1083), ("timestamp", 1114), ("timestamp without time zone", 1114),
    ("timestamptz", 1184), ("timestamp with time zone", 1184), ("interval", 1186), ("timetz", 1266),
    ("numeric", 1700), ("decimal", 1700), ("uuid", 2950), ("jsonb", 3802), ("regclass", 2205),
    ("regtype", 2206), ("regproc", 24), ("void", 2278), ("record", 2249), ("unknown", 705),
    ("_bool", 1000), ("_int2", 1005), ("_int4", 1007), ("_int8", 1016), ("_text", 1009),
    ("_varchar", 1015), ("_float4", 1021), ("_float8", 1022), ("_numeric", 1231), ("_uuid", 2951),
    ("_date", 1182), ("_timestamp", 1115), ("_timestamptz", 1185), ("_json", 199), ("_jsonb", 3807),
];

/// The OID of a type name as `to_regtype` resolves it (`integer`, `int4`,
/// `pg_catalog.int4`, `integer[]`); `None` for types this server lacks.
pub fn type_oid(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("pg_catalog.").unwrap_or(&n);
    if let Some(elem) = n.strip_suffix("[]") {
        let elem_oid = type_oid(elem)?;
        let elem_name = TYPE_OIDS.iter().find(|(_, o)| *o == elem_oid).map(|(n, _)| *n)?;
        let array = format!("_{elem_name}");
        return TYPE_OIDS.iter().find(|(t, _)| *t == array).map(|(_, o)| *o);
    }
    TYPE_OIDS.iter().find(|(t, _)| *t == n).map(|(_, o)| *o)
}

/// `to_regtype(text)`: the type's OID, or NULL when there is no such type
/// (drivers probe optional types such as `hstore` with it).
fn to_regtype_udf() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let oid_of = |v: Option<&str>| v.and_then(type_oid);
            Ok(match &args[0] {
                ColumnarValue::Scalar(s) => ColumnarValue::Scalar(ScalarValue::Int32(match s {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => oid_of(v.as_deref()),
                    _ => None,
                })),
                ColumnarValue::Array(a) => {
                    let strings = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                    let strings = datafusion::common::cast::as_string_array(&strings)?;
                    let out: datafusion::arrow::array::Int32Array = strings.iter().map(oid_of).collect();
                    ColumnarValue::Array(Arc::new(out))
                }
            })
        }),
    )
}

/// A function of `inputs` whose answer is always NULL text, for what ebb
/// does not have: `obj_description(oid, catalog)`,
/// `shobj_description(oid, catalog)` (no `COMMENT ON`),
/// `pg_get_triggerdef(oid, pretty)` (no triggers: `pg_trigger` is empty).
fn always_null_text_udf(name: &str, inputs: Vec<DataType>) -> ScalarUDF {
    create_udf(
        name,
        inputs,
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
                ColumnarValue::Array(a) => ColumnarValue::Array(datafusion::arrow::array::new_null_array(&DataType::Utf8, a.len())),
            })
        }),
    )
}

/// `pg_collation_is_visible(oid)`, `pg_type_is_visible(oid)`: every
/// collation and type ebb lists lives in `pg_catalog`, which is always on
/// the search path (ebb has no user-defined types).
fn in_catalog_schema_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        // bigint: oid columns (int4) widen to it, and integer constants are bigint.
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(s) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(!s.is_null()))),
                ColumnarValue::Array(a) => {
                    ColumnarValue::Array(Arc::new((0..a.len()).map(|i| Some(!a.is_null(i))).collect::<BooleanArray>()))
                }
            })
        }),
    )
}

/// `json_build_object(key, value, …)` as JSON text, formatted like
/// PostgreSQL's (`{"a" : 1, "b" : "x"}`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        Self { signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

fn json_value(v: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        v if v.is_null() => J::Null,
        ScalarValue::Boolean(Some(b)) => J::Bool(*b),
        ScalarValue::Int8(Some(n)) => J::from(*n),
        ScalarValue::Int16(Some(n)) => J::from(*n),
        ScalarValue::Int32(Some(n)) => J::from(*n),
        ScalarValue::Int64(Some(n)) => J::from(*n),
        ScalarValue::UInt8(Some(n)) => J::from(*n),
        ScalarValue::UInt16(Some(n)) => J::from(*n),
        ScalarValue::UInt32(Some(n)) => J::from(*n),
        ScalarValue::UInt64(Some(n)) => J::from(*n),
        ScalarValue::Float32(Some(f)) => serde_json::Number::from_f64(f64::from(*f)).map(J::Number).unwrap_or(J::Null),
        ScalarValue::Float64(Some(f)) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => J::String(s.clone()),
        other => J::String(other.to_string()),
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    /// Text typed `json` for clients (psycopg decodes it; SQLAlchemy's
    /// identity reflection expects an object).
    fn return_field_from_args(&self, _args: datafusion::logical_expr::ReturnFieldArgs) -> datafusion::error::Result<datafusion::arrow::datatypes::FieldRef> {
        let meta = std::collections::HashMap::from([(ebb_proto::pg_types::PG_TYPE_METADATA.to_string(), "json".to_string())]);
        Ok(Arc::new(datafusion::arrow::datatypes::Field::new(self.name(), DataType::Utf8, true).with_metadata(meta)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        if args.args.len() % 2 != 0 {
            return Err(datafusion::error::DataFusionError::Plan(
                "argument list must have even number of elements".into(),
            ));
        }
        let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            let mut parts = Vec::with_capacity(arrays.len() / 2);
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return Err(datafusion::error::DataFusionError::Execution("null value not allowed for object key".into()));
                }
                let key = match json_value(&key) {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                let value = json_value(&ScalarValue::try_from_array(&pair[1], row)?);
                parts.push(format!("{} : {}", serde_json::Value::String(key), value));
            }
            out.push(Some(format!("{{{}}}", parts.join(", "))));
        }
        let array: ArrayRef = Arc::new(StringArray::from(out));
        Ok(if args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
        } else {
            ColumnarValue::Array(array)
        })
    }
}

/// `pg_typeof(value)`: the name of the type ebb computes for the value, as
/// `format_type` prints it (`integer`, `timestamp with time zone`,
/// `text[]`). Values are typed as ebb types them, which is not always
/// PostgreSQL's way: an integer constant is `bigint`, a decimal one `double
/// precision`, a `varchar(n)` column `text`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(sql_type_name(&args.args[0].data_type())))))
    }
}

/// The SQL name of the PostgreSQL type a value of `dt` is sent as.
fn sql_type_name(dt: &DataType) -> String {
    use pgwire::api::Type;
    let t = match dt {
        DataType::Null => return "unknown".into(),
        DataType::Interval(_) => return "interval".into(),
        DataType::Time32(_) | DataType::Time64(_) => return "time without time zone".into(),
        DataType::List(item) | DataType::LargeList(item) => return format!("{}[]", sql_type_name(item.data_type())),
        other => crate::pg::encode::pg_type_of(other),
    };
    match t {
        Type::BOOL => "boolean".into(),
        Type::INT2 => "smallint".into(),
        Type::INT4 => "integer".into(),
        Type::INT8 => "bigint".into(),
        Type::FLOAT4 => "real".into(),
        Type::FLOAT8 => "double precision".into(),
        Type::TIMESTAMP => "timestamp without time zone".into(),
        Type::TIMESTAMPTZ => "timestamp with time zone".into(),
        other => other.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, StringArray};

    use super::type_oid;

    #[tokio::test]
    async fn json_build_object_formats_like_postgres() {
        let ctx = datafusion::prelude::SessionContext::new();
        for udf in super::all() {
            ctx.register_udf(udf);
        }
        let batches = ctx.sql("SELECT json_build_object('a', 1, 'b', 'x\"y', 'c', NULL, 'd', true)").await.unwrap().collect().await.unwrap();
        let col = batches[0].column(0).as_any().downcast_ref::<StringArray>().unwrap().value(0).to_string();
        assert_eq!(col, r#"{"a" : 1, "b" : "x\"y", "c" : null, "d" : true}"#);
        assert!(ctx.sql("SELECT json_build_object('a')").await.unwrap().collect().await.is_err());
    }

    #[test]
    fn type_names_resolve_like_postgres() {
        assert_eq!(type_oid("integer"), Some(23));
        assert_eq!(type_oid("pg_catalog.INT4"), Some(23));
        assert_eq!(type_oid("double precision"), Some(701));
        assert_eq!(type_oid("integer[]"), Some(1007));
        assert_eq!(type_oid("hstore"), None);
    }
}
