//! How a PostgreSQL column type of the storage protocol is represented in
//! Arrow, and how PostgreSQL spells it. Storage and compute both use this, so
//! the two always agree.

use arrow::datatypes::{DataType, Field, TimeUnit};

use crate::storage::{ColumnType, TypeKind};

/// Precision and scale used for `numeric` without a type modifier.
pub const DEFAULT_NUMERIC: (u8, i8) = (38, 10);
/// Arrow field metadata key carrying the PostgreSQL type name.
pub const PG_TYPE_METADATA: &str = "ebb.pg_type";
/// Arrow timezone of `timestamptz` values.
pub const UTC: &str = "+00:00";

/// Precision and scale of a numeric column type.
pub fn numeric_ps(t: &ColumnType) -> (u8, i8) {
    if t.length == 0 { DEFAULT_NUMERIC } else { (t.length as u8, t.scale as i8) }
}

/// The kind of a column type (unknown values read as unspecified).
pub fn kind(t: &ColumnType) -> TypeKind {
    TypeKind::try_from(t.kind).unwrap_or(TypeKind::Unspecified)
}

/// The Arrow type of a column type.
pub fn arrow_type(t: &ColumnType) -> DataType {
    use TypeKind::*;
    match kind(t) {
        Smallint => DataType::Int16,
        Integer => DataType::Int32,
        Bigint => DataType::Int64,
        Numeric => {
            let (p, s) = numeric_ps(t);
            DataType::Decimal128(p, s)
        }
        Real => DataType::Float32,
        Double => DataType::Float64,
        Boolean => DataType::Boolean,
        Date => DataType::Date32,
        Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        Bytea => DataType::Binary,
        Text | Varchar | Char | Uuid | Json | Jsonb | Unspecified => DataType::Utf8,
    }
}

/// The type as PostgreSQL prints it (`format_type`).
pub fn sql_name(t: &ColumnType) -> String {
    use TypeKind::*;
    match kind(t) {
        Smallint => "smallint".into(),
        Integer => "integer".into(),
        Bigint => "bigint".into(),
        Numeric if t.length == 0 => "numeric".into(),
        Numeric => format!("numeric({},{})", t.length, t.scale),
        Real => "real".into(),
        Double => "double precision".into(),
        Text => "text".into(),
        Varchar if t.length == 0 => "character varying".into(),
        Varchar => format!("character varying({})", t.length),
        Char => format!("character({})", t.length.max(1)),
        Boolean => "boolean".into(),
        Date => "date".into(),
        Timestamp => "timestamp without time zone".into(),
        Timestamptz => "timestamp with time zone".into(),
        Bytea => "bytea".into(),
        Uuid => "uuid".into(),
        Json => "json".into(),
        Jsonb => "jsonb".into(),
        Unspecified => "unknown".into(),
    }
}

/// An Arrow field for a column, tagged with its SQL type name.
pub fn arrow_field(name: &str, t: &ColumnType, nullable: bool) -> Field {
    let meta = [(PG_TYPE_METADATA.to_string(), sql_name(t))].into_iter().collect();
    Field::new(name, arrow_type(t), nullable).with_metadata(meta)
}
