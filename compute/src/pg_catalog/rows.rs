//! Catalog rows as Arrow batches. The rows ebb adds to `pg_class`,
//! `pg_attribute`, … name only the columns they know; every other column
//! gets PostgreSQL's "nothing here" value (NULL where the column allows it,
//! else zero, false or the empty string), so a row fits whatever schema the
//! table has.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, ListArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int16Type, Int32Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::{Result as DfResult, ScalarValue};

/// One catalog row: values by column name.
pub type Row = Vec<(&'static str, ScalarValue)>;

/// A text value.
pub fn text(s: impl Into<String>) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

/// An `int2vector` / `int2[]` value.
pub fn int2_list(values: impl IntoIterator<Item = i16>) -> ScalarValue {
    let values: Vec<ScalarValue> = values.into_iter().map(|v| ScalarValue::Int16(Some(v))).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Int16))
}

/// An `oidvector` / `oid[]` value.
pub fn oid_list(values: impl IntoIterator<Item = i32>) -> ScalarValue {
    let values: Vec<ScalarValue> = values.into_iter().map(|v| ScalarValue::Int32(Some(v))).collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Int32))
}

/// The rows as one batch of `schema`.
pub fn batch(schema: &SchemaRef, rows: &[Row]) -> DfResult<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let values = rows.iter().map(|row| match row.iter().find(|(name, _)| *name == field.name()) {
                Some((_, v)) => Ok(v.clone()),
                None => absent(field),
            });
            let values = values.collect::<DfResult<Vec<_>>>()?;
            if values.is_empty() {
                return Ok(new_null_array(field.data_type(), 0));
            }
            let array = ScalarValue::iter_to_array(values)?;
            Ok(if array.data_type() == field.data_type() { array } else { cast(&array, field.data_type())? })
        })
        .collect::<DfResult<Vec<ArrayRef>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// The value of a column a row does not name.
fn absent(field: &Field) -> DfResult<ScalarValue> {
    if field.is_nullable() {
        return ScalarValue::try_from(field.data_type());
    }
    Ok(match field.data_type() {
        DataType::Utf8 => text(""),
        DataType::Boolean => ScalarValue::Boolean(Some(false)),
        DataType::List(item) => ScalarValue::List(ScalarValue::new_list_nullable(&[], item.data_type())),
        other => ScalarValue::new_zero(other)?,
    })
}

/// A text column of vectors as PostgreSQL prints them (`1 2`, `{1,2}`) as a
/// list column of `item` (Int16, Int32, or Utf8 for arrays of unquoted
/// words such as ACLs, `{postgres=UC/postgres,=U/postgres}`) — the static
/// catalog export keeps `int2vector` and array columns as text, but tools
/// `unnest` them or take `array_to_string` of them.
pub fn text_to_list(column: &ArrayRef, item: &DataType) -> DfResult<ArrayRef> {
    let strings = cast(column, &DataType::Utf8)?;
    let strings = strings.as_string::<i32>();
    let parse = |s: &str| -> Vec<Option<i64>> {
        s.trim_matches(|c| c == '{' || c == '}')
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().ok())
            .collect()
    };
    let words = |s: &str| -> Vec<Option<String>> { s.trim_matches(|c| c == '{' || c == '}').split(',').filter(|p| !p.is_empty()).map(|p| Some(p.to_string())).collect() };
    let list: ArrayRef = match item {
        DataType::Utf8 => {
            let values: Vec<Option<Vec<Option<String>>>> = strings.iter().map(|s| s.map(words)).collect();
            let mut builder = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
            for v in values {
                match v {
                    Some(items) => {
                        for i in items {
                            builder.values().append_option(i);
                        }
                        builder.append(true);
                    }
                    None => builder.append(false),
                }
            }
            Arc::new(builder.finish())
        }
        DataType::Int16 => Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(
            strings.iter().map(|s| s.map(|s| parse(s).into_iter().map(|v| v.and_then(|v| i16::try_from(v).ok())).collect::<Vec<_>>())),
        )),
        _ => Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
            strings.iter().map(|s| s.map(|s| parse(s).into_iter().map(|v| v.and_then(|v| i32::try_from(v).ok())).collect::<Vec<_>>())),
        )),
    };
    Ok(list)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::Schema;

    use super::*;

    #[test]
    fn unnamed_columns_get_postgres_empty_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("oid", DataType::Int32, false),
            Field::new("relname", DataType::Utf8, false),
            Field::new("relhasindex", DataType::Boolean, false),
            Field::new("relacl", DataType::Utf8, true),
            Field::new("indkey", DataType::new_list(DataType::Int16, true), false),
        ]));
        let rows = vec![
            vec![("oid", ScalarValue::Int32(Some(7))), ("indkey", int2_list([2, 1]))],
            vec![("relname", text("t")), ("relhasindex", ScalarValue::Boolean(Some(true)))],
        ];
        let b = batch(&schema, &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int32Type>().values().to_vec(), vec![7, 0]);
        assert_eq!(b.column(1).as_string::<i32>().value(0), "");
        assert_eq!(b.column(1).as_string::<i32>().value(1), "t");
        assert!(b.column(2).as_boolean().value(1));
        assert_eq!(b.column(3).null_count(), 2);
        let keys = b.column(4).as_list::<i32>();
        assert_eq!(keys.value(0).as_primitive::<Int16Type>().values().to_vec(), vec![2, 1]);
        assert_eq!(keys.value(1).len(), 0);
        assert!(batch(&schema, &[]).unwrap().num_rows() == 0);
    }

    #[test]
    fn vectors_printed_as_text_become_lists() {
        let column: ArrayRef = Arc::new(StringArray::from(vec![Some("1 3"), Some("{4,5}"), Some(""), None]));
        let list = text_to_list(&column, &DataType::Int16).unwrap();
        let list = list.as_list::<i32>();
        assert_eq!(list.value(0).as_primitive::<Int16Type>().values().to_vec(), vec![1, 3]);
        assert_eq!(list.value(1).as_primitive::<Int16Type>().values().to_vec(), vec![4, 5]);
        assert_eq!(list.value(2).len(), 0);
        assert!(list.is_null(3));
        let oids = text_to_list(&column, &DataType::Int32).unwrap();
        assert_eq!(oids.as_list::<i32>().value(0).as_primitive::<Int32Type>().values().to_vec(), vec![1, 3]);
        let acl: ArrayRef = Arc::new(StringArray::from(vec![Some("{postgres=UC/postgres,=U/postgres}"), None]));
        let acl = text_to_list(&acl, &DataType::Utf8).unwrap();
        let acl = acl.as_list::<i32>();
        let first = acl.value(0);
        assert_eq!(first.as_string::<i32>().iter().flatten().collect::<Vec<_>>(), ["postgres=UC/postgres", "=U/postgres"]);
        assert!(acl.is_null(1));
    }
}
