//! PostgreSQL column types as storage sees them: their Arrow representation,
//! their physical encoding, and conversion of literals into typed values.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, Int16Array, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use ebb_proto::pg_types;
use ebb_proto::storage::{ColumnType, TypeKind, Value, value::Kind};

use crate::error::{Result, StorageError};

pub use ebb_proto::pg_types::PG_TYPE_METADATA;
/// Days from 0001-01-01 (CE) to 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// How a value is laid out in a row and in a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phys {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Decimal,
    Date,
    Timestamp,
    Text,
    Bytes,
}

/// A single typed value, used for literals, keys and predicates.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// Unscaled decimal value; the scale comes from the column type.
    Decimal(i128),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01 00:00:00 (UTC for timestamptz).
    Timestamp(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A validated column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    pub kind: TypeKind,
    pub length: u32,
    pub scale: u32,
}

impl PgType {
    /// Validates a type from the wire.
    pub fn from_proto(t: Option<&ColumnType>) -> Result<Self> {
        let t = t.ok_or_else(|| StorageError::InvalidDefinition("column has no type".into()))?;
        let kind = TypeKind::try_from(t.kind)
            .map_err(|_| StorageError::InvalidDefinition(format!("unknown type kind {}", t.kind)))?;
        if kind == TypeKind::Unspecified {
            return Err(StorageError::InvalidDefinition("column type is unspecified".into()));
        }
        if kind == TypeKind::Numeric {
            if t.length > 38 {
                return Err(StorageError::InvalidDefinition(format!(
                    "NUMERIC precision {} must be between 1 and 38",
                    t.length
                )));
            }
            if t.length > 0 && t.scale > t.length {
                return Err(StorageError::InvalidDefinition(format!(
                    "NUMERIC scale {} must be between 0 and precision {}",
                    t.scale, t.length
                )));
            }
        }
        if matches!(kind, TypeKind::Char) && t.length == 0 {
            // char without a length is char(1), as in PostgreSQL.
            return Ok(Self { kind, length: 1, scale: 0 });
        }
        Ok(Self { kind, length: t.length, scale: t.scale })
    }

    /// Back to the wire form.
    pub fn to_proto(&self) -> ColumnType {
        ColumnType { kind: self.kind as i32, length: self.length, scale: self.scale }
    }

    /// Precision and scale of a numeric column.
    pub fn numeric_ps(&self) -> (u8, i8) {
        pg_types::numeric_ps(&self.to_proto())
    }

    /// The physical layout.
    pub fn phys(&self) -> Phys {
        use TypeKind::*;
        match self.kind {
            Smallint => Phys::I16,
            Integer => Phys::I32,
            Bigint => Phys::I64,
            Numeric => Phys::Decimal,
            Real => Phys::F32,
            Double => Phys::F64,
            Boolean => Phys::Bool,
            Date => Phys::Date,
            Timestamp | Timestamptz => Phys::Timestamp,
            Bytea => Phys::Bytes,
            Text | Varchar | Char | Uuid | Json | Jsonb | Unspecified => Phys::Text,
        }
    }

    /// The Arrow type of this column.
    pub fn arrow_type(&self) -> DataType {
        pg_types::arrow_type(&self.to_proto())
    }

    /// An Arrow field for a column of this type, tagged with the SQL type name.
    pub fn arrow_field(&self, name: &str, nullable: bool) -> Field {
        pg_types::arrow_field(name, &self.to_proto(), nullable)
    }

    /// The type as PostgreSQL prints it.
    pub fn sql_name(&self) -> String {
        pg_types::sql_name(&self.to_proto())
    }

    /// Checks and normalises a text value for varchar/char/uuid/json columns.
    pub fn check_text(&self, s: &str) -> Result<Option<String>> {
        use TypeKind::*;
        match self.kind {
            Varchar if self.length > 0 && s.chars().count() > self.length as usize => {
                Err(StorageError::StringTooLong(self.sql_name()))
            }
            Char => {
                let n = s.chars().count();
                let want = self.length as usize;
                if n > want {
                    // PostgreSQL accepts trailing spaces beyond the length.
                    let trimmed = s.trim_end_matches(' ');
                    if trimmed.chars().count() > want {
                        return Err(StorageError::StringTooLong(self.sql_name()));
                    }
                    Ok(Some(trimmed.chars().chain(std::iter::repeat(' ')).take(want).collect()))
                } else if n < want {
                    Ok(Some(format!("{s}{}", " ".repeat(want - n))))
                } else {
                    Ok(None)
                }
            }
            Uuid => parse_uuid(s).map(Some),
            Json => serde_json::from_str::<serde_json::Value>(s).map(|_| None).map_err(|e| {
                StorageError::TypeMismatch(format!("invalid input syntax for type json: {e}"))
            }),
            Jsonb => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(v) => Ok(Some(jsonb_text(&v))),
                Err(e) => {
                    Err(StorageError::TypeMismatch(format!("invalid input syntax for type json: {e}")))
                }
            },
            _ => Ok(None),
        }
    }

    /// Converts a wire literal into a value of this type.
    pub fn datum_from_value(&self, v: &Value) -> Result<Datum> {
        match &v.kind {
            None | Some(Kind::Null(_)) => Ok(Datum::Null),
            Some(Kind::Int(i)) => self.datum_from_i64(*i),
            Some(Kind::Float(f)) => match self.phys() {
                Phys::F32 => Ok(Datum::F32(*f as f32)),
                Phys::F64 => Ok(Datum::F64(*f)),
                _ => self.parse_text(&f.to_string()),
            },
            Some(Kind::Text(s)) => self.parse_text(s),
            Some(Kind::Bytes(b)) => match self.phys() {
                Phys::Bytes => Ok(Datum::Bytes(b.clone())),
                _ => Err(self.mismatch("bytes")),
            },
            Some(Kind::Boolean(b)) => match self.phys() {
                Phys::Bool => Ok(Datum::Bool(*b)),
                _ => Err(self.mismatch("boolean")),
            },
        }
    }

    fn mismatch(&self, what: &str) -> StorageError {
        StorageError::TypeMismatch(format!("a {what} value cannot be used as {}", self.sql_name()))
    }

    fn datum_from_i64(&self, i: i64) -> Result<Datum> {
        let overflow = || StorageError::NumericOverflow(format!("{i} is out of range for type {}", self.sql_name()));
        match self.phys() {
            Phys::I16 => i16::try_from(i).map(Datum::I16).map_err(|_| overflow()),
            Phys::I32 => i32::try_from(i).map(Datum::I32).map_err(|_| overflow()),
            Phys::I64 => Ok(Datum::I64(i)),
            Phys::F32 => Ok(Datum::F32(i as f32)),
            Phys::F64 => Ok(Datum::F64(i as f64)),
            Phys::Decimal => self.parse_text(&i.to_string()),
            _ => Err(self.mismatch("integer")),
        }
    }

    /// Parses PostgreSQL text input for this type.
    pub fn parse_text(&self, s: &str) -> Result<Datum> {
        let bad = || {
            StorageError::TypeMismatch(format!(
                "invalid input syntax for type {}: \"{s}\"",
                self.sql_name()
            ))
        };
        let t = s.trim();
        match self.phys() {
            Phys::Bool => match t.to_ascii_lowercase().as_str() {
                "t" | "true" | "yes" | "y" | "on" | "1" => Ok(Datum::Bool(true)),
                "f" | "false" | "no" | "n" | "off" | "0" => Ok(Datum::Bool(false)),
                _ => Err(bad()),
            },
            Phys::I16 | Phys::I32 | Phys::I64 => match t.parse::<i64>() {
                Ok(i) => self.datum_from_i64(i),
                // All digits but too long for any integer: out of range, not malformed.
                Err(_) if t.trim_start_matches(['-', '+']).chars().all(|c| c.is_ascii_digit()) && !t.is_empty() => {
                    Err(StorageError::NumericOverflow(format!("value \"{t}\" is out of range for type {}", self.sql_name())))
                }
                Err(_) => Err(bad()),
            },
            Phys::F32 => t.parse::<f32>().map(Datum::F32).map_err(|_| bad()),
            Phys::F64 => t.parse::<f64>().map(Datum::F64).map_err(|_| bad()),
            Phys::Decimal => {
                let (p, sc) = self.numeric_ps();
                parse_decimal(t, p, sc)?.map(Datum::Decimal).ok_or_else(bad)
            }
            Phys::Date => NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(|d| Datum::Date(days_since_epoch(d)))
                .map_err(|_| StorageError::DatetimeFormat(format!("invalid input syntax for type date: \"{s}\""))),
            Phys::Timestamp => parse_timestamp(t, self.kind == TypeKind::Timestamptz).map(Datum::Timestamp).ok_or_else(|| {
                StorageError::DatetimeFormat(format!("invalid input syntax for type {}: \"{s}\"", self.sql_name()))
            }),
            Phys::Bytes => parse_bytea(s).map(Datum::Bytes).ok_or_else(bad),
            Phys::Text => Ok(Datum::Text(self.check_text(s)?.unwrap_or_else(|| s.to_string()))),
        }
    }

    /// A one-element Arrow array holding `d` in this column's Arrow type.
    pub fn datum_array(&self, d: &Datum) -> Result<ArrayRef> {
        let arr: ArrayRef = match (self.phys(), d) {
            (_, Datum::Null) => arrow::array::new_null_array(&self.arrow_type(), 1),
            (Phys::Bool, Datum::Bool(v)) => Arc::new(BooleanArray::from(vec![*v])),
            (Phys::I16, Datum::I16(v)) => Arc::new(Int16Array::from(vec![*v])),
            (Phys::I32, Datum::I32(v)) => Arc::new(Int32Array::from(vec![*v])),
            (Phys::I64, Datum::I64(v)) => Arc::new(Int64Array::from(vec![*v])),
            (Phys::F32, Datum::F32(v)) => Arc::new(Float32Array::from(vec![*v])),
            (Phys::F64, Datum::F64(v)) => Arc::new(Float64Array::from(vec![*v])),
            (Phys::Decimal, Datum::Decimal(v)) => {
                let (p, s) = self.numeric_ps();
                Arc::new(Decimal128Array::from(vec![*v]).with_precision_and_scale(p, s)?)
            }
            (Phys::Date, Datum::Date(v)) => Arc::new(Date32Array::from(vec![*v])),
            (Phys::Timestamp, Datum::Timestamp(v)) => {
                let a = TimestampMicrosecondArray::from(vec![*v]);
                if self.kind == TypeKind::Timestamptz {
                    Arc::new(a.with_timezone(pg_types::UTC))
                } else {
                    Arc::new(a)
                }
            }
            (Phys::Text, Datum::Text(v)) => Arc::new(StringArray::from(vec![v.as_str()])),
            (Phys::Bytes, Datum::Bytes(v)) => Arc::new(BinaryArray::from(vec![v.as_slice()])),
            (_, other) => {
                return Err(StorageError::TypeMismatch(format!(
                    "value {other:?} does not match type {}",
                    self.sql_name()
                )));
            }
        };
        Ok(arr)
    }
}

/// Reads the value at `row` of an array already cast to this column's Arrow type.
pub fn datum_at(array: &dyn Array, row: usize, phys: Phys) -> Datum {
    use arrow::array::AsArray;
    use arrow::datatypes as dt;
    if array.is_null(row) {
        return Datum::Null;
    }
    match phys {
        Phys::Bool => Datum::Bool(array.as_boolean().value(row)),
        Phys::I16 => Datum::I16(array.as_primitive::<dt::Int16Type>().value(row)),
        Phys::I32 => Datum::I32(array.as_primitive::<dt::Int32Type>().value(row)),
        Phys::I64 => Datum::I64(array.as_primitive::<dt::Int64Type>().value(row)),
        Phys::F32 => Datum::F32(array.as_primitive::<dt::Float32Type>().value(row)),
        Phys::F64 => Datum::F64(array.as_primitive::<dt::Float64Type>().value(row)),
        Phys::Decimal => Datum::Decimal(array.as_primitive::<dt::Decimal128Type>().value(row)),
        Phys::Date => Datum::Date(array.as_primitive::<dt::Date32Type>().value(row)),
        Phys::Timestamp => {
            Datum::Timestamp(array.as_primitive::<dt::TimestampMicrosecondType>().value(row))
        }
        Phys::Text => Datum::Text(array.as_string::<i32>().value(row).to_string()),
        Phys::Bytes => Datum::Bytes(array.as_binary::<i32>().value(row).to_vec()),
    }
}

fn days_since_epoch(d: NaiveDate) -> i32 {
    use chrono::Datelike;
    d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

/// Parses a decimal string into an unscaled i128 at `scale`, rounding half
/// away from zero like PostgreSQL. `Err` on overflow, `Ok(None)` on bad syntax.
pub fn parse_decimal(s: &str, precision: u8, scale: i8) -> Result<Option<i128>> {
    let overflow = || {
        StorageError::NumericOverflow(format!(
            "a field with precision {precision}, scale {scale} cannot hold {s}"
        ))
    };
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => match body[i + 1..].parse::<i32>() {
            Ok(e) => (&body[..i], e),
            Err(_) => return Ok(None),
        },
        None => (body, 0),
    };
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().all(|c| c.is_ascii_digit())
        || !frac_part.bytes().all(|c| c.is_ascii_digit())
    {
        return Ok(None);
    }
    // digits * 10^(exp - frac_len) is the value; we want it * 10^scale.
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let shift = exp - frac_part.len() as i32 + scale as i32;
    let mut v: i128 = 0;
    let mut round_up = false;
    let keep = if shift >= 0 { digits.len() } else { digits.len().saturating_sub((-shift) as usize) };
    for (i, c) in digits.bytes().enumerate() {
        if i < keep {
            v = v.checked_mul(10).and_then(|v| v.checked_add((c - b'0') as i128)).ok_or_else(overflow)?;
        } else if i == keep {
            round_up = c >= b'5';
        }
    }
    if shift > 0 {
        for _ in 0..shift {
            v = v.checked_mul(10).ok_or_else(overflow)?;
        }
    }
    if round_up {
        v += 1;
    }
    let max = 10i128.checked_pow(precision as u32).unwrap_or(i128::MAX);
    if v >= max {
        return Err(overflow());
    }
    Ok(Some(if neg { -v } else { v }))
}

/// Parses a timestamp; with `tz`, an offset is honoured and the result is UTC.
pub fn parse_timestamp(s: &str, tz: bool) -> Option<i64> {
    let s = s.trim();
    if tz {
        for f in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f %#z"] {
            if let Ok(dt) = DateTime::parse_from_str(s, f) {
                return Some(dt.timestamp_micros());
            }
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Some(dt.timestamp_micros());
        }
    }
    let s = s.trim_end_matches('Z');
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_micros())
}

/// Parses bytea input: `\x` hex form, otherwise the raw bytes.
fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    match s.strip_prefix("\\x") {
        Some(hex) if hex.len() % 2 == 0 => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect(),
        Some(_) => None,
        None => Some(s.as_bytes().to_vec()),
    }
}

/// Validates a UUID and returns its canonical lower-case hyphenated form.
fn parse_uuid(s: &str) -> Result<String> {
    let hex: String = s.trim_matches(|c| c == '{' || c == '}').chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(StorageError::TypeMismatch(format!("invalid input syntax for type uuid: \"{s}\"")));
    }
    let h = hex.to_ascii_lowercase();
    Ok(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

/// PostgreSQL's text form of a jsonb value: `": "` and `", "` separators,
/// object keys ordered by length, then bytes (jsonb's storage order).
pub fn jsonb_text(v: &serde_json::Value) -> String {
    let mut out = String::new();
    write_jsonb(v, &mut out);
    out
}

fn write_jsonb(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_jsonb(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(b.0)));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                write_jsonb(item, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(kind: TypeKind, length: u32, scale: u32) -> PgType {
        PgType { kind, length, scale }
    }

    #[test]
    fn decimals_parse_and_round() {
        assert_eq!(parse_decimal("12.345", 10, 2).unwrap(), Some(1235));
        assert_eq!(parse_decimal("-0.5", 10, 0).unwrap(), Some(-1));
        assert_eq!(parse_decimal("1e3", 10, 1).unwrap(), Some(10000));
        assert_eq!(parse_decimal("abc", 10, 1).unwrap(), None);
        assert!(parse_decimal("1000", 3, 0).is_err());
    }

    #[test]
    fn text_checks() {
        assert!(ty(TypeKind::Varchar, 3, 0).check_text("abcd").is_err());
        assert_eq!(ty(TypeKind::Char, 3, 0).check_text("a").unwrap(), Some("a  ".into()));
        assert_eq!(
            ty(TypeKind::Uuid, 0, 0).check_text("A0EEBC999C0B4EF8BB6D6BB9BD380A11").unwrap(),
            Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
        );
        assert!(ty(TypeKind::Jsonb, 0, 0).check_text("{bad").is_err());
        let j = ty(TypeKind::Jsonb, 0, 0).check_text(r#"{"bb":[1,{"x":null}],"a":"s"}"#).unwrap();
        assert_eq!(j.as_deref(), Some(r#"{"a": "s", "bb": [1, {"x": null}]}"#));
        assert_eq!(ty(TypeKind::Smallint, 0, 0).parse_text("40000").unwrap_err().sqlstate(), "22003");
        assert_eq!(ty(TypeKind::Integer, 0, 0).parse_text("99999999999999999999").unwrap_err().sqlstate(), "22003");
        assert_eq!(ty(TypeKind::Integer, 0, 0).parse_text("12a").unwrap_err().sqlstate(), "22P02");
        assert_eq!(ty(TypeKind::Date, 0, 0).parse_text("not a date").unwrap_err().sqlstate(), "22007");
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(ty(TypeKind::Date, 0, 0).parse_text("1970-01-02").unwrap(), Datum::Date(1));
        assert_eq!(
            ty(TypeKind::Timestamptz, 0, 0).parse_text("1970-01-01 01:00:00+01").unwrap(),
            Datum::Timestamp(0)
        );
        assert_eq!(ty(TypeKind::Integer, 0, 0).parse_text("99999999999").unwrap_err().sqlstate(), "22003");
    }
}
