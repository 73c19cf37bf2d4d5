//! Aggregates computed where the rows are.
//!
//! `SELECT count(*), sum(abalance) FROM accounts` needs one row back, not a
//! million: shipping every value as Arrow IPC to the compute, decoding it
//! there and aggregating costs more than reading it (and competes with the
//! scan for the same cores). A scan that carries aggregates folds each
//! filtered batch into running totals here and answers with one row.
//! Halves of a split scan fold separately and are merged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::{cast, max, min};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Int16Type, Int32Type, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use ebb_proto::storage::AggregateFunction;

use crate::error::{Result, StorageError};

/// One requested aggregate, resolved against the scanned columns.
#[derive(Debug, Clone)]
pub(super) struct AggregateSpec {
    function: AggregateFunction,
    /// Position among the scanned (projected) columns; `None` for COUNT_ROWS.
    slot: Option<usize>,
    /// The output type.
    output: DataType,
}

impl AggregateSpec {
    /// Checks that `function` applies to a column of type `column` (at
    /// `slot`, named `name` for messages).
    pub(super) fn new(function: AggregateFunction, column: Option<(usize, &str, &DataType)>) -> Result<Self> {
        let integer = |ty: &DataType| matches!(ty, DataType::Int16 | DataType::Int32 | DataType::Int64);
        let refuse = |what: &str| Err(StorageError::InvalidRequest(what.to_string()));
        match (function, column) {
            (AggregateFunction::CountRows, None) => Ok(Self { function, slot: None, output: DataType::Int64 }),
            (AggregateFunction::CountRows, Some(_)) => refuse("COUNT_ROWS takes no column"),
            (AggregateFunction::Unspecified, _) => refuse("unknown aggregate function"),
            (_, None) => refuse(&format!("aggregate {function:?} needs a column")),
            (AggregateFunction::Count, Some((slot, _, _))) => Ok(Self { function, slot: Some(slot), output: DataType::Int64 }),
            (AggregateFunction::Sum, Some((slot, _, DataType::Int16 | DataType::Int32))) => {
                Ok(Self { function, slot: Some(slot), output: DataType::Int64 })
            }
            (AggregateFunction::Min | AggregateFunction::Max, Some((slot, _, ty))) if integer(ty) => {
                Ok(Self { function, slot: Some(slot), output: ty.clone() })
            }
            (_, Some((_, name, ty))) => refuse(&format!("aggregate {function:?} of \"{name}\" ({ty}) is not computed in storage")),
        }
    }
}

/// The schema of the one-row answer: `agg0`, `agg1`, … in request order.
pub(super) fn output_schema(specs: &[AggregateSpec]) -> SchemaRef {
    let fields: Vec<Field> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let counts = matches!(s.function, AggregateFunction::CountRows | AggregateFunction::Count);
            Field::new(format!("agg{i}"), s.output.clone(), !counts)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Running totals of every requested aggregate.
#[derive(Debug, Clone)]
pub(super) struct Accumulators {
    specs: Vec<AggregateSpec>,
    /// Per aggregate: the count, or the sum / extreme so far (`None`: no value yet).
    values: Vec<Option<i64>>,
}

impl Accumulators {
    pub(super) fn new(specs: Vec<AggregateSpec>) -> Self {
        let values = specs
            .iter()
            .map(|s| matches!(s.function, AggregateFunction::CountRows | AggregateFunction::Count).then_some(0))
            .collect();
        Self { specs, values }
    }

    /// Folds in one batch of rows that passed the predicates.
    pub(super) fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        for (spec, value) in self.specs.iter().zip(self.values.iter_mut()) {
            let part = match spec.slot {
                None => Some(batch.num_rows() as i64),
                Some(slot) => {
                    let column = batch.column(slot);
                    match spec.function {
                        AggregateFunction::Count => Some((column.len() - column.null_count()) as i64),
                        AggregateFunction::Sum => sum(column)?,
                        AggregateFunction::Min => extreme(column, true)?,
                        AggregateFunction::Max => extreme(column, false)?,
                        AggregateFunction::CountRows | AggregateFunction::Unspecified => None,
                    }
                }
            };
            *value = combine(spec.function, *value, part)?;
        }
        Ok(())
    }

    /// Adds the totals of another part of the same scan.
    pub(super) fn merge(&mut self, other: Accumulators) -> Result<()> {
        for ((spec, value), part) in self.specs.iter().zip(self.values.iter_mut()).zip(other.values) {
            *value = combine(spec.function, *value, part)?;
        }
        Ok(())
    }

    /// The one-row answer.
    pub(super) fn finish(self) -> Result<RecordBatch> {
        let schema = output_schema(&self.specs);
        let columns = self
            .specs
            .iter()
            .zip(self.values)
            .map(|(spec, v)| {
                let a: ArrayRef = Arc::new(Int64Array::from(vec![v]));
                Ok(if spec.output == DataType::Int64 { a } else { cast(&a, &spec.output)? })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// `total` with `part` folded in.
fn combine(function: AggregateFunction, total: Option<i64>, part: Option<i64>) -> Result<Option<i64>> {
    Ok(match (total, part) {
        (None, p) => p,
        (t, None) => t,
        (Some(t), Some(p)) => Some(match function {
            AggregateFunction::Min => t.min(p),
            AggregateFunction::Max => t.max(p),
            _ => t.checked_add(p).ok_or_else(|| StorageError::InvalidRequest("aggregate out of range for bigint".into()))?,
        }),
    })
}

/// The sum of a smallint or integer column (`None` if every value is NULL).
fn sum(column: &ArrayRef) -> Result<Option<i64>> {
    fn of<T: ArrowPrimitiveType>(column: &ArrayRef) -> Option<i64>
    where
        T::Native: Into<i64>,
    {
        let a = column.as_primitive::<T>();
        if a.null_count() == a.len() {
            return None;
        }
        // Widened before adding: 2^31 values of 2^31 fit an i64.
        Some(match a.nulls() {
            None => a.values().iter().map(|&v| v.into()).sum(),
            Some(nulls) => a.values().iter().zip(nulls.iter()).filter(|(_, valid)| *valid).map(|(&v, _)| v.into()).sum(),
        })
    }
    match column.data_type() {
        DataType::Int16 => Ok(of::<Int16Type>(column)),
        DataType::Int32 => Ok(of::<Int32Type>(column)),
        other => Err(StorageError::InvalidRequest(format!("SUM of {other} is not computed in storage"))),
    }
}

/// The least (`least`) or greatest value of an integer column.
fn extreme(column: &ArrayRef, least: bool) -> Result<Option<i64>> {
    fn of<T: ArrowPrimitiveType>(column: &ArrayRef, least: bool) -> Option<i64>
    where
        T::Native: Into<i64>,
    {
        let a = column.as_primitive::<T>();
        if least { min(a) } else { max(a) }.map(Into::into)
    }
    match column.data_type() {
        DataType::Int16 => Ok(of::<Int16Type>(column, least)),
        DataType::Int32 => Ok(of::<Int32Type>(column, least)),
        DataType::Int64 => Ok(of::<Int64Type>(column, least)),
        other => Err(StorageError::InvalidRequest(format!("MIN/MAX of {other} is not computed in storage"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int16Array, Int32Array};

    fn specs() -> Vec<AggregateSpec> {
        let int = DataType::Int32;
        let small = DataType::Int16;
        vec![
            AggregateSpec::new(AggregateFunction::CountRows, None).expect("count(*)"),
            AggregateSpec::new(AggregateFunction::Count, Some((0, "a", &int))).expect("count(a)"),
            AggregateSpec::new(AggregateFunction::Sum, Some((0, "a", &int))).expect("sum(a)"),
            AggregateSpec::new(AggregateFunction::Min, Some((1, "b", &small))).expect("min(b)"),
            AggregateSpec::new(AggregateFunction::Max, Some((1, "b", &small))).expect("max(b)"),
        ]
    }

    fn batch(a: Vec<Option<i32>>, b: Vec<Option<i16>>) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("a", DataType::Int32, true), Field::new("b", DataType::Int16, true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(Int32Array::from(a)), Arc::new(Int16Array::from(b))]).expect("batch")
    }

    #[test]
    fn parts_fold_and_merge_like_one_pass() {
        let mut first = Accumulators::new(specs());
        first.update(&batch(vec![Some(i32::MAX), None, Some(i32::MAX)], vec![Some(3), Some(-2), None])).expect("update");
        let mut second = Accumulators::new(specs());
        second.update(&batch(vec![None, Some(-1)], vec![None, Some(9)])).expect("update");
        first.merge(second).expect("merge");
        let out = first.finish().expect("finish");
        assert_eq!(out.num_rows(), 1);
        let i64_at = |i: usize| out.column(i).as_primitive::<Int64Type>().value(0);
        assert_eq!(i64_at(0), 5, "rows");
        assert_eq!(i64_at(1), 3, "non-null a");
        assert_eq!(i64_at(2), 2 * i32::MAX as i64 - 1, "sum widened, no overflow");
        assert_eq!(out.column(3).as_primitive::<Int16Type>().value(0), -2);
        assert_eq!(out.column(4).as_primitive::<Int16Type>().value(0), 9);
        assert_eq!(out.schema().field(3).data_type(), &DataType::Int16, "min/max keep the column type");
    }

    #[test]
    fn no_rows_count_zero_and_leave_the_rest_null() {
        let mut acc = Accumulators::new(specs());
        acc.update(&batch(vec![None], vec![None]).slice(0, 0)).expect("update");
        let out = acc.finish().expect("finish");
        assert_eq!(out.column(0).as_primitive::<Int64Type>().value(0), 0);
        assert_eq!(out.column(1).as_primitive::<Int64Type>().value(0), 0);
        for i in 2..5 {
            assert!(out.column(i).is_null(0), "aggregate {i} of no rows is NULL");
        }
    }

    #[test]
    fn only_what_storage_computes_exactly_is_accepted() {
        let text = DataType::Utf8;
        let big = DataType::Int64;
        assert!(AggregateSpec::new(AggregateFunction::Sum, Some((0, "t", &text))).is_err());
        assert!(AggregateSpec::new(AggregateFunction::Sum, Some((0, "v", &big))).is_err(), "PostgreSQL sums bigint as numeric");
        assert!(AggregateSpec::new(AggregateFunction::Max, Some((0, "v", &big))).is_ok());
        assert!(AggregateSpec::new(AggregateFunction::Count, Some((0, "t", &text))).is_ok());
        assert!(AggregateSpec::new(AggregateFunction::CountRows, Some((0, "t", &text))).is_err());
        assert!(AggregateSpec::new(AggregateFunction::Min, None).is_err());
    }
}
