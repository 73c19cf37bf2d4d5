//! Arrow to the PostgreSQL wire: result column types and data rows, and
//! parameter values from the wire into DataFusion scalars.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use datafusion::common::ScalarValue;
use ebb_proto::pg_types::PG_TYPE_METADATA;
use pgwire::api::Type;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use rust_decimal::Decimal;

/// The PostgreSQL type of a result column.
pub fn pg_type(field: &Field) -> Type {
    if let Some(name) = field.metadata().get(PG_TYPE_METADATA) {
        let base = name.split('(').next().unwrap_or(name);
        match base {
            "character varying" => return Type::VARCHAR,
            "character" => return Type::BPCHAR,
            "uuid" => return Type::UUID,
            "json" => return Type::JSON,
            "jsonb" => return Type::JSONB,
            "numeric" => return Type::NUMERIC,
            _ => {}
        }
    }
    pg_type_of(field.data_type())
}

/// The PostgreSQL type of an Arrow type.
pub fn pg_type_of(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal128(..) | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::TEXT,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Null => Type::TEXT,
        DataType::List(item) | DataType::LargeList(item) => array_type(item.data_type()),
        _ => Type::TEXT,
    }
}

/// The PostgreSQL array type of a list by its element type: the arrays of
/// booleans, integers, floats, numerics and strings; other elements are
/// sent as the text of each (`text[]`).
fn array_type(item: &DataType) -> Type {
    match item {
        DataType::Boolean => Type::BOOL_ARRAY,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2_ARRAY,
        DataType::Int32 | DataType::UInt16 => Type::INT4_ARRAY,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8_ARRAY,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4_ARRAY,
        DataType::Float64 => Type::FLOAT8_ARRAY,
        DataType::Decimal128(..) => Type::NUMERIC_ARRAY,
        _ => Type::TEXT_ARRAY,
    }
}

/// Encodes one list value as the array type [`array_type`] announced.
fn encode_list(enc: &mut DataRowEncoder, items: &dyn Array) -> PgWireResult<()> {
    use arrow::datatypes as t;
    let as_type = |dt: DataType| arrow::compute::cast(items, &dt).map_err(|e| bad(format!("array element: {e}")));
    match array_type(items.data_type()) {
        Type::BOOL_ARRAY => enc.encode_field(&items.as_boolean().iter().collect::<Vec<_>>()),
        Type::INT2_ARRAY => enc.encode_field(&as_type(DataType::Int16)?.as_primitive::<t::Int16Type>().iter().collect::<Vec<_>>()),
        Type::INT4_ARRAY => enc.encode_field(&as_type(DataType::Int32)?.as_primitive::<t::Int32Type>().iter().collect::<Vec<_>>()),
        Type::INT8_ARRAY => enc.encode_field(&as_type(DataType::Int64)?.as_primitive::<t::Int64Type>().iter().collect::<Vec<_>>()),
        Type::FLOAT4_ARRAY => enc.encode_field(&as_type(DataType::Float32)?.as_primitive::<t::Float32Type>().iter().collect::<Vec<_>>()),
        Type::FLOAT8_ARRAY => enc.encode_field(&as_type(DataType::Float64)?.as_primitive::<t::Float64Type>().iter().collect::<Vec<_>>()),
        Type::NUMERIC_ARRAY => {
            let DataType::Decimal128(_, scale) = items.data_type() else { return Err(bad("numeric array of a non-decimal".into())) };
            let values = items
                .as_primitive::<t::Decimal128Type>()
                .iter()
                .map(|v| v.map(|v| Decimal::try_from_i128_with_scale(v, (*scale).max(0) as u32)).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("numeric value does not fit: {e}")))?;
            enc.encode_field(&values)
        }
        _ => {
            let texts = (0..items.len())
                .map(|i| {
                    if items.is_null(i) {
                        return Ok(None);
                    }
                    match items.data_type() {
                        DataType::Utf8 => Ok(Some(items.as_string::<i32>().value(i).to_string())),
                        _ => arrow::util::display::array_value_to_string(items, i).map(Some).map_err(|e| bad(e.to_string())),
                    }
                })
                .collect::<PgWireResult<Vec<Option<String>>>>()?;
            enc.encode_field(&texts)
        }
    }
}

/// Row description of a result schema.
pub fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| FieldInfo::new(f.name().clone(), None, None, pg_type(f), format.format_for(i)))
        .collect()
}

fn micros(unit: &TimeUnit, v: i64) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v / 1000,
    }
}

fn bad(msg: String) -> PgWireError {
    PgWireError::ApiError(msg.into())
}

/// Encodes every row of a batch.
/// (`extra_float_digits`: the session's setting, for floats sent as text).
pub fn encode_batch(batch: &RecordBatch, schema: &Arc<Vec<FieldInfo>>, extra_float_digits: i32, out: &mut Vec<PgWireResult<DataRow>>) -> PgWireResult<()> {
    let mut enc = DataRowEncoder::new(schema.clone());
    for row in 0..batch.num_rows() {
        for (i, col) in batch.columns().iter().enumerate() {
            encode_value(&mut enc, col.as_ref(), row, &schema[i], extra_float_digits)?;
        }
        out.push(Ok(enc.take_row()));
    }
    Ok(())
}

fn encode_value(enc: &mut DataRowEncoder, a: &dyn Array, row: usize, field: &FieldInfo, extra_float_digits: i32) -> PgWireResult<()> {
    use arrow::datatypes as t;
    if a.is_null(row) {
        return enc.encode_field(&None::<i32>);
    }
    let text = field.format() == FieldFormat::Text;
    match a.data_type() {
        DataType::Boolean => enc.encode_field(&a.as_boolean().value(row)),
        DataType::Int8 => enc.encode_field(&(a.as_primitive::<t::Int8Type>().value(row) as i16)),
        DataType::Int16 => enc.encode_field(&a.as_primitive::<t::Int16Type>().value(row)),
        DataType::Int32 => enc.encode_field(&a.as_primitive::<t::Int32Type>().value(row)),
        DataType::Int64 => enc.encode_field(&a.as_primitive::<t::Int64Type>().value(row)),
        DataType::UInt8 => enc.encode_field(&(a.as_primitive::<t::UInt8Type>().value(row) as i16)),
        DataType::UInt16 => enc.encode_field(&(a.as_primitive::<t::UInt16Type>().value(row) as i32)),
        DataType::UInt32 => enc.encode_field(&(a.as_primitive::<t::UInt32Type>().value(row) as i64)),
        DataType::UInt64 => {
            let v = a.as_primitive::<t::UInt64Type>().value(row);
            enc.encode_field(&i64::try_from(v).map_err(|_| bad(format!("{v} does not fit bigint")))?)
        }
        DataType::Float32 if text => enc.encode_field(&float_text(a.as_primitive::<t::Float32Type>().value(row), FLOAT4_FIXED_DIGITS, extra_float_digits)),
        DataType::Float64 if text => enc.encode_field(&float_text(a.as_primitive::<t::Float64Type>().value(row), FLOAT8_FIXED_DIGITS, extra_float_digits)),
        DataType::Float32 => enc.encode_field(&a.as_primitive::<t::Float32Type>().value(row)),
        DataType::Float64 => enc.encode_field(&a.as_primitive::<t::Float64Type>().value(row)),
        DataType::Decimal128(_, s) => {
            let v = a.as_primitive::<t::Decimal128Type>().value(row);
            if text {
                enc.encode_field(&decimal_text(v, *s))
            } else {
                let d = Decimal::try_from_i128_with_scale(v, (*s).max(0) as u32)
                    .map_err(|e| bad(format!("numeric value does not fit binary format: {e}")))?;
                enc.encode_field(&d)
            }
        }
        DataType::Utf8 => enc.encode_field(&a.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => enc.encode_field(&a.as_string::<i64>().value(row)),
        DataType::Utf8View => enc.encode_field(&a.as_string_view().value(row)),
        DataType::Binary => enc.encode_field(&a.as_binary::<i32>().value(row)),
        DataType::LargeBinary => enc.encode_field(&a.as_binary::<i64>().value(row)),
        DataType::BinaryView => enc.encode_field(&a.as_binary_view().value(row)),
        DataType::Date32 => {
            let days = a.as_primitive::<t::Date32Type>().value(row);
            let d = NaiveDate::from_num_days_from_ce_opt(days + 719_163).ok_or_else(|| bad(format!("date out of range: {days}")))?;
            enc.encode_field(&d)
        }
        DataType::Timestamp(unit, tz) => {
            let raw = match unit {
                TimeUnit::Second => a.as_primitive::<t::TimestampSecondType>().value(row),
                TimeUnit::Millisecond => a.as_primitive::<t::TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => a.as_primitive::<t::TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => a.as_primitive::<t::TimestampNanosecondType>().value(row),
            };
            let dt = DateTime::<Utc>::from_timestamp_micros(micros(unit, raw)).ok_or_else(|| bad("timestamp out of range".into()))?;
            match (text, tz.is_some()) {
                (true, with_tz) => enc.encode_field(&timestamp_text(&dt.naive_utc(), with_tz)),
                (false, true) => enc.encode_field(&dt),
                (false, false) => enc.encode_field(&dt.naive_utc()),
            }
        }
        // Sent as text (the column is described as text), in PostgreSQL's interval style.
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = a.as_primitive::<t::IntervalMonthDayNanoType>().value(row);
            enc.encode_field(&interval_text(v.months, v.days, v.nanoseconds / 1000))
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = a.as_primitive::<t::IntervalDayTimeType>().value(row);
            enc.encode_field(&interval_text(0, v.days, i64::from(v.milliseconds) * 1000))
        }
        DataType::List(_) => encode_list(enc, a.as_list::<i32>().value(row).as_ref()),
        DataType::LargeList(_) => encode_list(enc, a.as_list::<i64>().value(row).as_ref()),
        DataType::Interval(IntervalUnit::YearMonth) => enc.encode_field(&interval_text(a.as_primitive::<t::IntervalYearMonthType>().value(row), 0, 0)),
        DataType::Duration(unit) => {
            let raw = match unit {
                TimeUnit::Second => a.as_primitive::<t::DurationSecondType>().value(row),
                TimeUnit::Millisecond => a.as_primitive::<t::DurationMillisecondType>().value(row),
                TimeUnit::Microsecond => a.as_primitive::<t::DurationMicrosecondType>().value(row),
                TimeUnit::Nanosecond => a.as_primitive::<t::DurationNanosecondType>().value(row),
            };
            // A difference of timestamps: whole days and the rest, as PostgreSQL's `timestamp - timestamp`.
            let us = micros(unit, raw);
            let days = us / MICROS_PER_DAY;
            enc.encode_field(&interval_text(0, i32::try_from(days).map_err(|_| bad("interval out of range".into()))?, us % MICROS_PER_DAY))
        }
        _ => {
            let s = arrow::util::display::array_value_to_string(a, row).map_err(|e| bad(e.to_string()))?;
            enc.encode_field(&s)
        }
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// PostgreSQL's text of an interval (`IntervalStyle` postgres): `1 year 2
/// mons 3 days 04:05:06.5`, `-02:00:00`, `00:00:00`; once a field is
/// negative, later positive ones carry a `+`.
pub fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut negative = false;
    let mut field = |n: i64, unit: &str, parts: &mut Vec<String>| {
        if n == 0 {
            return;
        }
        let sign = if n > 0 && negative { "+" } else { "" };
        negative |= n < 0;
        parts.push(format!("{sign}{n} {unit}{}", if n == 1 { "" } else { "s" }));
    };
    field(i64::from(months / 12), "year", &mut parts);
    field(i64::from(months % 12), "mon", &mut parts);
    field(i64::from(days), "day", &mut parts);
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else if negative { "+" } else { "" };
        let abs = micros.unsigned_abs();
        let (secs, frac) = (abs / 1_000_000, abs % 1_000_000);
        let mut t = format!("{sign}{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        if frac != 0 {
            t.push_str(format!(".{frac:06}").trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

/// PostgreSQL's text form of a timestamp: fractional seconds only as far as
/// they are non-zero, and `+00` for timestamptz (sessions run in UTC).
pub fn timestamp_text(dt: &chrono::NaiveDateTime, with_tz: bool) -> String {
    let mut s = dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string();
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    if with_tz {
        s.push_str("+00");
    }
    s
}

/// Decimal exponents below which `real` and `double precision` print in
/// fixed-point notation (PostgreSQL: `FLT_DIG` and `DBL_DIG`, as `%g`).
const FLOAT4_FIXED_DIGITS: i32 = 6;
const FLOAT8_FIXED_DIGITS: i32 = 15;

/// PostgreSQL's text form of a float under `extra_float_digits` (`fixed_digits`:
/// [`FLOAT4_FIXED_DIGITS`] or [`FLOAT8_FIXED_DIGITS`]). Above 0 (the
/// default since PostgreSQL 12): the shortest digits that read back as the
/// same value, fixed-point for decimal exponents from -4 to below
/// `fixed_digits`, else `d.ddde±XX`. At or below 0: rounded to
/// `fixed_digits + extra_float_digits` significant digits (at least 1),
/// as C's `%g` prints them — what PostgreSQL 11 and older printed by
/// default. `NaN`, `Infinity`, `-Infinity` either way.
pub fn float_text<F: Into<f64> + std::fmt::LowerExp + Copy>(v: F, fixed_digits: i32, extra_float_digits: i32) -> String {
    let x: f64 = v.into();
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if extra_float_digits > 0 {
        // `{:e}` is Rust's shortest round-trip form of the value's own type: "-1.25e-7".
        return layout(&format!("{v:e}"), fixed_digits);
    }
    let precision = (fixed_digits + extra_float_digits).max(1);
    layout(&format!("{:.*e}", precision as usize - 1, v), precision)
}

/// Lays out Rust's scientific form of a float (`-1.2500e-7`) as `%g` does:
/// trailing zeros of the digits dropped, fixed-point for decimal exponents
/// from -4 to below `fixed_below`, else `d.ddde±XX`.
fn layout(sci: &str, fixed_below: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        d => d,
    };
    if (-4..fixed_below).contains(&exp) {
        let point = exp + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        return format!("{sign}{body}");
    }
    let (first, rest) = digits.split_at(1);
    let frac = if rest.is_empty() { String::new() } else { format!(".{rest}") };
    format!("{sign}{first}{frac}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// PostgreSQL's text form of an unscaled decimal.
pub fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        return (v * 10i128.pow((-scale) as u32)).to_string();
    }
    let neg = v < 0;
    let digits = v.unsigned_abs().to_string();
    let s = scale as usize;
    let (int, frac) = if digits.len() > s {
        (digits[..digits.len() - s].to_string(), digits[digits.len() - s..].to_string())
    } else {
        ("0".to_string(), format!("{}{digits}", "0".repeat(s - digits.len())))
    };
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

/// The PostgreSQL type to announce for a parameter DataFusion inferred.
pub fn param_pg_type(dt: Option<&DataType>) -> Type {
    dt.map(pg_type_of).unwrap_or(Type::UNKNOWN)
}

/// Decodes the bound parameters into scalars, cast to the inferred types.
pub fn decode_params<S: Clone>(portal: &Portal<S>, inferred: &[Option<DataType>]) -> PgWireResult<Vec<ScalarValue>> {
    let declared = &portal.statement.parameter_types;
    (0..portal.parameter_len())
        .map(|i| {
            let want = inferred.get(i).cloned().flatten();
            let ty = declared.get(i).cloned().flatten().unwrap_or_else(|| param_pg_type(want.as_ref()));
            let value = decode_one(portal, i, &ty)?;
            match want {
                Some(dt) if dt != value.data_type() && !value.is_null() => value
                    .cast_to(&dt)
                    .map_err(|e| PgWireError::UserError(Box::new(crate::pg::error_info(&crate::error::ComputeError::invalid("22P02", format!("parameter ${}: {e}", i + 1)))))),
                Some(dt) if value.is_null() => ScalarValue::try_from(&dt).map_err(|e| bad(e.to_string())),
                _ => Ok(value),
            }
        })
        .collect()
}

fn decode_one<S: Clone>(portal: &Portal<S>, i: usize, ty: &Type) -> PgWireResult<ScalarValue> {
    Ok(match *ty {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, ty)?),
        Type::INT2 => ScalarValue::Int16(portal.parameter::<i16>(i, ty)?),
        Type::INT4 => ScalarValue::Int32(portal.parameter::<i32>(i, ty)?),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, ty)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, ty)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, ty)?),
        Type::NUMERIC => ScalarValue::Utf8(portal.parameter::<Decimal>(i, ty)?.map(|d| d.to_string())),
        Type::DATE => ScalarValue::Utf8(portal.parameter::<NaiveDate>(i, ty)?.map(|d| d.to_string())),
        Type::TIMESTAMP => ScalarValue::Utf8(portal.parameter::<NaiveDateTime>(i, ty)?.map(|d| d.to_string())),
        Type::TIMESTAMPTZ => ScalarValue::Utf8(portal.parameter::<DateTime<chrono::FixedOffset>>(i, ty)?.map(|d| d.to_rfc3339())),
        Type::BYTEA => ScalarValue::Binary(portal.parameter::<Vec<u8>>(i, ty)?),
        _ => ScalarValue::Utf8(portal.parameter::<String>(i, &Type::TEXT)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_print_like_postgres() {
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        assert_eq!(interval_text(0, 0, 7_200_000_000), "02:00:00");
        assert_eq!(interval_text(0, 0, -7_200_000_000), "-02:00:00");
        assert_eq!(interval_text(14, 1, 3_723_500_000), "1 year 2 mons 1 day 01:02:03.5");
        assert_eq!(interval_text(24, 3, 0), "2 years 3 days");
        assert_eq!(interval_text(-1, 2, -1), "-1 mons +2 days -00:00:00.000001");
        assert_eq!(interval_text(0, -1, 0), "-1 days");
        assert_eq!(interval_text(0, 0, 100 * 3_600_000_000), "100:00:00");
    }

    #[test]
    fn floats_print_like_postgres() {
        // Each as PostgreSQL 15 prints it (`SELECT x::float8`, `x::real`).
        let f8 = |v: f64| float_text(v, FLOAT8_FIXED_DIGITS, 1);
        assert_eq!(f8(3.0), "3");
        assert_eq!(f8(2.5), "2.5");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f8(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(f8(1e15), "1e+15");
        assert_eq!(f8(123456789012345.0), "123456789012345");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(0.00001), "1e-05");
        assert_eq!(f8(-1.5e-7), "-1.5e-07");
        assert_eq!(f8(1.7976931348623157e308), "1.7976931348623157e+308");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(f8(f64::NEG_INFINITY), "-Infinity");
        let f4 = |v: f32| float_text(v, FLOAT4_FIXED_DIGITS, 1);
        assert_eq!(f4(1.1), "1.1", "the shortest form of the f32, not of its f64 widening");
        assert_eq!(f4(100000.0), "100000");
        assert_eq!(f4(1234567.0), "1.234567e+06");
    }

    #[test]
    fn floats_round_when_extra_float_digits_is_not_positive() {
        // As C's `%.15g` / `%.12g` / `%.6g` / `%.1g` print them (PostgreSQL 11's float8out).
        let f8 = |v: f64, extra: i32| float_text(v, FLOAT8_FIXED_DIGITS, extra);
        assert_eq!(f8(0.1 + 0.2, 0), "0.3");
        assert_eq!(f8(1.0 / 3.0, 0), "0.333333333333333");
        assert_eq!(f8(1.0 / 3.0, -3), "0.333333333333");
        assert_eq!(f8(123456789012345678.0, 0), "1.23456789012346e+17");
        assert_eq!(f8(1e15, 0), "1e+15");
        assert_eq!(f8(100.0, 0), "100");
        assert_eq!(f8(0.00001, 0), "1e-05");
        assert_eq!(f8(-2.5e-7, 0), "-2.5e-07");
        assert_eq!(f8(0.0, 0), "0");
        assert_eq!(f8(123.0, -15), "1e+02", "at least one digit");
        assert_eq!(f8(f64::INFINITY, 0), "Infinity");
        let f4 = |v: f32| float_text(v, FLOAT4_FIXED_DIGITS, 0);
        assert_eq!(f4(1.2345678), "1.23457");
        assert_eq!(f4(1.1), "1.1");
    }

    #[test]
    fn decimals_print_like_postgres() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 3), "-0.005");
        assert_eq!(decimal_text(7, 0), "7");
    }
}
