//! The row codec: how one table row is stored as a RocksDB value, and how
//! stored rows are decoded straight into Arrow builders during scans.
//!
//! ```text
//! row   = version (1) | varint max_column_id | field*
//! field = varint (column_id << 3 | wire) | payload
//! wire  = 0: 1 byte, 1: 2 bytes, 2: 4 bytes, 3: 8 bytes, 4: 16 bytes, 5: varint length + bytes
//! ```
//!
//! NULL columns are simply absent. A column whose id is above the row's
//! `max_column_id` was added after the row was written: it reads as the
//! column's ADD COLUMN default (PostgreSQL's "missing value").
//! Fields are self-describing, so values of dropped columns are skipped.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder,
    Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};

use crate::error::{Result, StorageError};
use crate::types::{Datum, Phys, PgType};

const ROW_VERSION: u8 = 1;

/// Appends an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads an unsigned LEB128 varint, advancing `buf`.
#[inline]
pub fn get_varint(buf: &mut &[u8]) -> Result<u64> {
    // Field tags of the first 15 columns and short lengths are one byte.
    if let Some((&b, rest)) = buf.split_first()
        && b < 0x80
    {
        *buf = rest;
        return Ok(b as u64);
    }
    get_long_varint(buf)
}

fn get_long_varint(buf: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| corrupt("truncated varint"))?;
        *buf = rest;
        v |= ((b & 0x7F) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(corrupt("varint too long"))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("row: {what}"))
}

/// Encodes a row from `(column id, value)` pairs sorted by column id.
pub fn encode_row(values: &[(u32, &Datum)], max_column_id: u32, out: &mut Vec<u8>) {
    out.push(ROW_VERSION);
    put_varint(out, max_column_id as u64);
    for (id, d) in values {
        let id = (*id as u64) << 3;
        match d {
            Datum::Null => {}
            Datum::Bool(b) => {
                put_varint(out, id);
                out.push(*b as u8);
            }
            Datum::I16(v) => {
                put_varint(out, id | 1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::I32(v) | Datum::Date(v) => {
                put_varint(out, id | 2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::F32(v) => {
                put_varint(out, id | 2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::I64(v) | Datum::Timestamp(v) => {
                put_varint(out, id | 3);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::F64(v) => {
                put_varint(out, id | 3);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::Decimal(v) => {
                put_varint(out, id | 4);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Datum::Text(s) => {
                put_varint(out, id | 5);
                put_varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Datum::Bytes(b) => {
                put_varint(out, id | 5);
                put_varint(out, b.len() as u64);
                out.extend_from_slice(b);
            }
        }
    }
}

/// Walks the fields of an encoded row: calls `f(column_id, payload)` for each.
/// Returns the row's `max_column_id`.
pub fn for_each_field(row: &[u8], mut f: impl FnMut(u32, &[u8])) -> Result<u32> {
    walk_fields(row, |id, payload| {
        f(id, payload);
        true
    })
}

/// Like [`for_each_field`], but stops at the first field for which `f`
/// returns false (a scan that found every column it decodes skips the rest,
/// such as a long text column after the one it sums).
fn walk_fields(row: &[u8], mut f: impl FnMut(u32, &[u8]) -> bool) -> Result<u32> {
    let (&version, mut buf) = row.split_first().ok_or_else(|| corrupt("empty"))?;
    if version != ROW_VERSION {
        return Err(corrupt("unknown version"));
    }
    let max_id = get_varint(&mut buf)? as u32;
    while !buf.is_empty() {
        let tag = get_varint(&mut buf)?;
        let len = match tag & 7 {
            0 => 1,
            1 => 2,
            2 => 4,
            3 => 8,
            4 => 16,
            5 => get_varint(&mut buf)? as usize,
            _ => return Err(corrupt("bad wire type")),
        };
        if buf.len() < len {
            return Err(corrupt("truncated field"));
        }
        let (payload, rest) = buf.split_at(len);
        if !f((tag >> 3) as u32, payload) {
            break;
        }
        buf = rest;
    }
    Ok(max_id)
}

/// A column to decode.
#[derive(Debug, Clone)]
pub struct DecodeColumn {
    pub id: u32,
    pub ty: PgType,
    /// The value rows written before the column existed read as.
    pub missing: Datum,
}

/// Decodes stored rows into Arrow arrays for a fixed list of columns.
pub struct RowDecoder {
    columns: Vec<DecodeColumn>,
    /// column id → position in `columns`.
    slot_of: Vec<Option<usize>>,
    builders: Vec<ColumnBuilder>,
    scratch: Vec<Option<(usize, usize)>>,
    /// Rows appended since the last `finish` (also without columns: `count(*)`).
    rows: usize,
}

impl RowDecoder {
    /// A decoder for `columns`, building arrays of `capacity` rows.
    pub fn new(columns: Vec<DecodeColumn>, capacity: usize) -> Self {
        let max = columns.iter().map(|c| c.id as usize).max().unwrap_or(0);
        let mut slot_of = vec![None; max + 1];
        for (i, c) in columns.iter().enumerate() {
            slot_of[c.id as usize] = Some(i);
        }
        let builders = columns.iter().map(|c| ColumnBuilder::new(&c.ty, capacity)).collect();
        let scratch = vec![None; columns.len()];
        Self { columns, slot_of, builders, scratch, rows: 0 }
    }

    /// Decodes one row and appends it to the builders.
    pub fn push(&mut self, row: &[u8]) -> Result<()> {
        self.rows += 1;
        if self.columns.is_empty() {
            return Ok(());
        }
        self.scratch.iter_mut().for_each(|s| *s = None);
        let base = row.as_ptr() as usize;
        let slot_of = &self.slot_of;
        let scratch = &mut self.scratch;
        let (wanted, mut found) = (scratch.len(), 0);
        let max_id = walk_fields(row, |id, payload| {
            if let Some(Some(slot)) = slot_of.get(id as usize) {
                scratch[*slot] = Some((payload.as_ptr() as usize - base, payload.len()));
                found += 1;
            }
            found < wanted
        })?;
        for (i, col) in self.columns.iter().enumerate() {
            match self.scratch[i] {
                Some((off, len)) => self.builders[i].append_raw(&row[off..off + len])?,
                None if col.id > max_id => self.builders[i].append_datum(&col.missing),
                None => self.builders[i].append_datum(&Datum::Null),
            }
        }
        Ok(())
    }

    /// Decodes one row into datums (used by writes for uniqueness and defaults).
    pub fn decode_datums(&self, row: &[u8]) -> Result<Vec<Datum>> {
        let mut out = vec![Datum::Null; self.columns.len()];
        let mut err = None;
        let max_id = for_each_field(row, |id, payload| {
            if let Some(Some(slot)) = self.slot_of.get(id as usize) {
                match raw_datum(self.columns[*slot].ty.phys(), payload) {
                    Ok(d) => out[*slot] = d,
                    Err(e) => err = Some(e),
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        for (i, col) in self.columns.iter().enumerate() {
            if col.id > max_id {
                out[i] = col.missing.clone();
            }
        }
        Ok(out)
    }

    /// Rows appended since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when no rows were appended since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The arrays built so far; the builders start over.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.builders.iter_mut().map(|b| b.finish()).collect()
    }
}

fn fixed<const N: usize>(p: &[u8]) -> Result<[u8; N]> {
    p.try_into().map_err(|_| corrupt("payload width does not match the column type"))
}

fn raw_datum(phys: Phys, p: &[u8]) -> Result<Datum> {
    Ok(match phys {
        Phys::Bool => Datum::Bool(fixed::<1>(p)?[0] != 0),
        Phys::I16 => Datum::I16(i16::from_le_bytes(fixed(p)?)),
        Phys::I32 => Datum::I32(i32::from_le_bytes(fixed(p)?)),
        Phys::Date => Datum::Date(i32::from_le_bytes(fixed(p)?)),
        Phys::F32 => Datum::F32(f32::from_le_bytes(fixed(p)?)),
        Phys::I64 => Datum::I64(i64::from_le_bytes(fixed(p)?)),
        Phys::Timestamp => Datum::Timestamp(i64::from_le_bytes(fixed(p)?)),
        Phys::F64 => Datum::F64(f64::from_le_bytes(fixed(p)?)),
        Phys::Decimal => Datum::Decimal(i128::from_le_bytes(fixed(p)?)),
        Phys::Text => Datum::Text(
            std::str::from_utf8(p).map_err(|_| corrupt("invalid utf-8"))?.to_string(),
        ),
        Phys::Bytes => Datum::Bytes(p.to_vec()),
    })
}

/// A typed Arrow builder for one column.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Text(StringBuilder),
    Bytes(BinaryBuilder),
}

impl ColumnBuilder {
    fn new(ty: &PgType, cap: usize) -> Self {
        match ty.phys() {
            Phys::Bool => Self::Bool(BooleanBuilder::with_capacity(cap)),
            Phys::I16 => Self::I16(Int16Builder::with_capacity(cap)),
            Phys::I32 => Self::I32(Int32Builder::with_capacity(cap)),
            Phys::I64 => Self::I64(Int64Builder::with_capacity(cap)),
            Phys::F32 => Self::F32(Float32Builder::with_capacity(cap)),
            Phys::F64 => Self::F64(Float64Builder::with_capacity(cap)),
            Phys::Decimal => {
                let (p, s) = ty.numeric_ps();
                Self::Decimal(Decimal128Builder::with_capacity(cap), p, s)
            }
            Phys::Date => Self::Date(Date32Builder::with_capacity(cap)),
            Phys::Timestamp => Self::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(cap),
                ty.kind == ebb_proto::storage::TypeKind::Timestamptz,
            ),
            Phys::Text => Self::Text(StringBuilder::with_capacity(cap, cap * 16)),
            Phys::Bytes => Self::Bytes(BinaryBuilder::with_capacity(cap, cap * 16)),
        }
    }

    fn append_raw(&mut self, p: &[u8]) -> Result<()> {
        match self {
            Self::Bool(b) => b.append_value(fixed::<1>(p)?[0] != 0),
            Self::I16(b) => b.append_value(i16::from_le_bytes(fixed(p)?)),
            Self::I32(b) => b.append_value(i32::from_le_bytes(fixed(p)?)),
            Self::I64(b) => b.append_value(i64::from_le_bytes(fixed(p)?)),
            Self::F32(b) => b.append_value(f32::from_le_bytes(fixed(p)?)),
            Self::F64(b) => b.append_value(f64::from_le_bytes(fixed(p)?)),
            Self::Decimal(b, ..) => b.append_value(i128::from_le_bytes(fixed(p)?)),
            Self::Date(b) => b.append_value(i32::from_le_bytes(fixed(p)?)),
            Self::Timestamp(b, _) => b.append_value(i64::from_le_bytes(fixed(p)?)),
            Self::Text(b) => b.append_value(std::str::from_utf8(p).map_err(|_| corrupt("invalid utf-8"))?),
            Self::Bytes(b) => b.append_value(p),
        }
        Ok(())
    }

    fn append_datum(&mut self, d: &Datum) {
        match (self, d) {
            (Self::Bool(b), Datum::Bool(v)) => b.append_value(*v),
            (Self::I16(b), Datum::I16(v)) => b.append_value(*v),
            (Self::I32(b), Datum::I32(v)) => b.append_value(*v),
            (Self::I64(b), Datum::I64(v)) => b.append_value(*v),
            (Self::F32(b), Datum::F32(v)) => b.append_value(*v),
            (Self::F64(b), Datum::F64(v)) => b.append_value(*v),
            (Self::Decimal(b, ..), Datum::Decimal(v)) => b.append_value(*v),
            (Self::Date(b), Datum::Date(v)) => b.append_value(*v),
            (Self::Timestamp(b, _), Datum::Timestamp(v)) => b.append_value(*v),
            (Self::Text(b), Datum::Text(v)) => b.append_value(v),
            (Self::Bytes(b), Datum::Bytes(v)) => b.append_value(v),
            (s, _) => s.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::Bool(b) => b.append_null(),
            Self::I16(b) => b.append_null(),
            Self::I32(b) => b.append_null(),
            Self::I64(b) => b.append_null(),
            Self::F32(b) => b.append_null(),
            Self::F64(b) => b.append_null(),
            Self::Decimal(b, ..) => b.append_null(),
            Self::Date(b) => b.append_null(),
            Self::Timestamp(b, _) => b.append_null(),
            Self::Text(b) => b.append_null(),
            Self::Bytes(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::I16(b) => Arc::new(b.finish()),
            Self::I32(b) => Arc::new(b.finish()),
            Self::I64(b) => Arc::new(b.finish()),
            Self::F32(b) => Arc::new(b.finish()),
            Self::F64(b) => Arc::new(b.finish()),
            Self::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .expect("precision and scale were validated when the column was defined"),
            ),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b, tz) => {
                let a = b.finish();
                if *tz { Arc::new(a.with_timezone(ebb_proto::pg_types::UTC)) } else { Arc::new(a) }
            }
            Self::Text(b) => Arc::new(b.finish()),
            Self::Bytes(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use ebb_proto::storage::TypeKind;

    #[test]
    fn varints_of_every_width_round_trip() {
        let values = [0, 1, 0x7F, 0x80, 300, 0x3FFF, 0x4000, u32::MAX as u64, u64::MAX];
        let mut buf = Vec::new();
        values.iter().for_each(|v| put_varint(&mut buf, *v));
        let mut rest = buf.as_slice();
        let read: Vec<u64> = values.iter().map(|_| get_varint(&mut rest).unwrap()).collect();
        assert_eq!(read, values);
        assert!(rest.is_empty());
        assert!(get_varint(&mut &[0x80u8][..]).is_err(), "truncated");
    }

    #[test]
    fn decoding_stops_once_every_wanted_column_is_found() {
        let (a, b) = (Datum::I32(7), Datum::Text("long filler".into()));
        let mut row = Vec::new();
        encode_row(&[(1, &a), (2, &b)], 2, &mut row);
        row.truncate(row.len() - 3); // column 2's payload is cut short
        let int = PgType { kind: TypeKind::Integer, length: 0, scale: 0 };
        let mut first_only = RowDecoder::new(vec![DecodeColumn { id: 1, ty: int, missing: Datum::Null }], 1);
        first_only.push(&row).unwrap();
        assert_eq!(first_only.finish()[0].as_primitive::<arrow::datatypes::Int32Type>().value(0), 7);
        let text = PgType { kind: TypeKind::Text, length: 0, scale: 0 };
        let mut second = RowDecoder::new(vec![DecodeColumn { id: 2, ty: text, missing: Datum::Null }], 1);
        assert!(second.push(&row).is_err(), "the truncated column is read and reported");
    }

    #[test]
    fn round_trip_with_missing_and_dropped_columns() {
        let a = Datum::I64(7);
        let b = Datum::Text("héllo".into());
        let dropped = Datum::I32(5);
        let mut row = Vec::new();
        encode_row(&[(1, &a), (2, &dropped), (3, &b), (4, &Datum::Null)], 4, &mut row);
        let cols = vec![
            DecodeColumn { id: 3, ty: PgType { kind: TypeKind::Text, length: 0, scale: 0 }, missing: Datum::Null },
            DecodeColumn { id: 1, ty: PgType { kind: TypeKind::Bigint, length: 0, scale: 0 }, missing: Datum::Null },
            DecodeColumn { id: 4, ty: PgType { kind: TypeKind::Integer, length: 0, scale: 0 }, missing: Datum::I32(9) },
            DecodeColumn { id: 9, ty: PgType { kind: TypeKind::Integer, length: 0, scale: 0 }, missing: Datum::I32(9) },
        ];
        let mut d = RowDecoder::new(cols, 4);
        d.push(&row).unwrap();
        let arrays = d.finish();
        assert_eq!(arrays[0].as_string::<i32>().value(0), "héllo");
        assert_eq!(arrays[1].as_primitive::<arrow::datatypes::Int64Type>().value(0), 7);
        assert!(arrays[2].is_null(0), "column 4 existed when the row was written: NULL");
        assert_eq!(arrays[3].as_primitive::<arrow::datatypes::Int32Type>().value(0), 9);
    }

    #[test]
    fn corrupt_rows_are_errors() {
        assert!(for_each_field(&[], |_, _| {}).is_err());
        assert!(for_each_field(&[1, 3, 0x0D, 200], |_, _| {}).is_err());
    }
}
