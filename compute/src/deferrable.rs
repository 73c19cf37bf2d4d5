//! Which writes compute may defer (see [`crate::storage_session`]): those
//! storage cannot refuse, so that an error still belongs to the statement
//! that caused it.
//!
//! Storage refuses a row for its values (a type it cannot convert to, NOT
//! NULL, a length or size limit, a malformed uuid or json), for its key (a
//! duplicate, a row changed by a concurrent commit, a value a unique index
//! holds already) or for a table altered meanwhile. The caller answers for the key: the row was locked by a FOR
//! UPDATE read, or the table has no key to collide on. This module answers
//! for the values, conservatively: it does here exactly what storage does
//! with a column that is not text (the same Arrow cast), and says no to
//! anything storage would parse or normalise (text going to a non-text
//! column, char(n), uuid, json). A write that is not deferrable is sent at
//! once, as before. A concurrent ALTER between the statement and the
//! request that carries the write still fails it; storage then rolls the
//! transaction back with 40001 (see "Carried writes" in storage.proto).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Decimal128Type, Field, Schema};
use ebb_proto::pg_types::{arrow_type, kind};
use ebb_proto::storage::{ColumnDef, TableDef, TypeKind};

use crate::sql::dml::ROWID;

/// Largest text or bytea value a deferred write may hold: far below what
/// storage accepts (its `max_value_bytes`, 16 MiB unless configured lower
/// in tests), so a deferred value is never too large.
const MAX_VALUE_BYTES: usize = 64 << 10;

/// `batch` (rows of `def`, named by column) as storage would store it, when
/// storage cannot refuse any of its values; `None` when it might. Columns
/// for which `computed` is false hold values read from the table unchanged
/// (an UPDATE's other columns) and are only checked for NULL; columns the
/// batch leaves out must take a default storage cannot refuse.
pub fn accepted_values(def: &TableDef, batch: &RecordBatch, computed: impl Fn(&str) -> bool) -> Option<RecordBatch> {
    if def.indexes.iter().any(|ix| ix.unique) {
        // A unique index may refuse any row's values.
        return None;
    }
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut arrays = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let array = if field.name() == ROWID {
            (array.data_type() == &DataType::Int64).then(|| array.clone())?
        } else {
            let col = def.columns.iter().find(|c| c.name == *field.name())?;
            if col.not_null && array.null_count() > 0 {
                return None;
            }
            if computed(&col.name) { stored_as(col, array)? } else { array.clone() }
        };
        fields.push(Field::new(field.name(), array.data_type().clone(), true));
        arrays.push(array);
    }
    if !def.columns.iter().all(|c| schema.field_with_name(&c.name).is_ok() || default_accepted(c)) {
        return None;
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).ok()
}

/// A computed column's values as storage stores them, if it takes them all.
fn stored_as(col: &ColumnDef, array: &ArrayRef) -> Option<ArrayRef> {
    let ty = col.r#type.as_ref()?;
    let target = arrow_type(ty);
    let array = if array.data_type() == &target {
        array.clone()
    } else if is_text(array.data_type()) || is_text(&target) {
        // Storage parses text with PostgreSQL's input rules: not repeated here.
        return None;
    } else {
        // What storage does with a typed column of another type.
        cast_with_options(array, &target, &CastOptions { safe: false, ..Default::default() }).ok()?
    };
    let fits = match (&target, kind(ty)) {
        (DataType::Decimal128(p, _), _) => array.as_primitive::<Decimal128Type>().validate_decimal_precision(*p).is_ok(),
        (DataType::Utf8, TypeKind::Text) => array.as_string::<i32>().iter().flatten().all(|s| s.len() <= MAX_VALUE_BYTES),
        (DataType::Utf8, TypeKind::Varchar) => {
            let max_chars = if ty.length == 0 { usize::MAX } else { ty.length as usize };
            array.as_string::<i32>().iter().flatten().all(|s| s.len() <= MAX_VALUE_BYTES && s.chars().count() <= max_chars)
        }
        // char(n) is padded, uuid and json are checked or normalised.
        (DataType::Utf8, _) => false,
        (DataType::Binary, _) => array.as_binary::<i32>().iter().flatten().all(|b| b.len() <= MAX_VALUE_BYTES),
        _ => true,
    };
    fits.then_some(array)
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Whether storage fills a column a write leaves out without refusing the
/// row: NULL where allowed, or a constant default of a type it does not
/// check as text.
fn default_accepted(col: &ColumnDef) -> bool {
    match &col.default_literal {
        None => !col.not_null,
        Some(literal) => {
            let checked_text = col.r#type.as_ref().is_none_or(|t| arrow_type(t) == DataType::Utf8 && kind(t) != TypeKind::Text);
            !checked_text && !literal.eq_ignore_ascii_case("null")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Int32Array, Int64Array, StringArray};
    use ebb_proto::storage::{ColumnType, TypeKind::*};

    fn column(name: &str, kind: TypeKind, length: u32, not_null: bool) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            r#type: Some(ColumnType { kind: kind as i32, length, scale: 0 }),
            not_null,
            ..Default::default()
        }
    }

    fn table(columns: Vec<ColumnDef>) -> TableDef {
        TableDef { name: "t".into(), columns, ..Default::default() }
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("a batch")
    }

    #[test]
    fn integers_are_cast_as_storage_casts_them_and_overflow_is_not_deferred() {
        let def = table(vec![column("k", Integer, 0, true), column("v", Integer, 0, false)]);
        let fits = batch(vec![("k", Arc::new(Int32Array::from(vec![1]))), ("v", Arc::new(Int64Array::from(vec![7])))]);
        let out = accepted_values(&def, &fits, |_| true).expect("deferrable");
        assert_eq!(out.column(1).data_type(), &DataType::Int32, "cast to the column's type");
        let overflows = batch(vec![("k", Arc::new(Int32Array::from(vec![1]))), ("v", Arc::new(Int64Array::from(vec![1i64 << 40])))]);
        assert!(accepted_values(&def, &overflows, |_| true).is_none(), "storage reports the overflow");
        let null_key = batch(vec![("k", Arc::new(Int32Array::from(vec![None]))), ("v", Arc::new(Int32Array::from(vec![1])))]);
        assert!(accepted_values(&def, &null_key, |_| false).is_none(), "NOT NULL is checked even on unchanged columns");
    }

    #[test]
    fn text_is_deferred_only_where_storage_takes_it_as_is() {
        let text = |s: &str| -> ArrayRef { Arc::new(StringArray::from(vec![s])) };
        let def = table(vec![column("a", Text, 0, false), column("b", Varchar, 3, false), column("c", Char, 3, false), column("d", Integer, 0, false)]);
        assert!(accepted_values(&def, &batch(vec![("a", text("x")), ("b", text("héé"))]), |_| true).is_some());
        assert!(accepted_values(&def, &batch(vec![("b", text("four"))]), |_| true).is_none(), "too long for varchar(3)");
        assert!(accepted_values(&def, &batch(vec![("c", text("x"))]), |_| true).is_none(), "char(n) is padded by storage");
        assert!(accepted_values(&def, &batch(vec![("c", text("x"))]), |_| false).is_some(), "an unchanged char(n) value is stored as read");
        assert!(accepted_values(&def, &batch(vec![("d", text("5"))]), |_| true).is_none(), "text into an integer is parsed by storage");
        assert!(accepted_values(&def, &batch(vec![("a", text(&"x".repeat(MAX_VALUE_BYTES + 1)))]), |_| true).is_none());
    }

    #[test]
    fn numeric_precision_and_left_out_columns_are_checked() {
        let def = table(vec![ColumnDef { r#type: Some(ColumnType { kind: Numeric as i32, length: 4, scale: 2 }), ..column("n", Numeric, 4, false) }]);
        let n = |v: i128| -> ArrayRef { Arc::new(Decimal128Array::from(vec![v]).with_precision_and_scale(38, 2).expect("decimal")) };
        assert!(accepted_values(&def, &batch(vec![("n", n(9999))]), |_| true).is_some(), "99.99 fits numeric(4,2)");
        assert!(accepted_values(&def, &batch(vec![("n", n(10000))]), |_| true).is_none(), "100.00 does not");
        let def = table(vec![column("k", Integer, 0, false), column("must", Integer, 0, true)]);
        let only_k = batch(vec![("k", Arc::new(Int32Array::from(vec![1])) as ArrayRef)]);
        assert!(accepted_values(&def, &only_k, |_| true).is_none(), "a NOT NULL column without default left out");
        let with_default = table(vec![column("k", Integer, 0, false), ColumnDef { default_literal: Some("0".into()), ..column("must", Integer, 0, true) }]);
        assert!(accepted_values(&with_default, &only_k, |_| true).is_some());
        let char_default = table(vec![column("k", Integer, 0, false), ColumnDef { default_literal: Some("ab".into()), ..column("c", Char, 1, false) }]);
        assert!(accepted_values(&char_default, &only_k, |_| true).is_none(), "a char(n) default is checked by storage");
    }
}
