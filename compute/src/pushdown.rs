//! Which WHERE clauses storage can evaluate, and their translation into the
//! storage protocol: predicates on any column, and bounds on the primary key.

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use ebb_proto::storage::{CompareOp, KeyBound, Predicate, Value, value::Kind};

/// Translates one filter; `None` if storage cannot evaluate it exactly.
pub fn to_predicates(expr: &Expr, column_type: impl Fn(&str) -> Option<DataType>) -> Option<Vec<Predicate>> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, lit, op) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Literal(v, _)) => (c, v, *op),
                (Expr::Literal(v, _), Expr::Column(c)) => (c, v, op.swap()?),
                _ => return None,
            };
            let cmp = match op {
                Operator::Eq => CompareOp::Eq,
                Operator::NotEq => CompareOp::Ne,
                Operator::Lt => CompareOp::Lt,
                Operator::LtEq => CompareOp::Le,
                Operator::Gt => CompareOp::Gt,
                Operator::GtEq => CompareOp::Ge,
                _ => return None,
            };
            let value = literal(lit, &column_type(&col.name)?)?;
            Some(vec![Predicate { column: col.name.clone(), op: cmp as i32, values: vec![value] }])
        }
        Expr::InList(list) if !list.negated => {
            let Expr::Column(c) = list.expr.as_ref() else { return None };
            let ty = column_type(&c.name)?;
            let values = list
                .list
                .iter()
                .map(|e| match e {
                    Expr::Literal(v, _) => literal(v, &ty),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(vec![Predicate { column: c.name.clone(), op: CompareOp::In as i32, values }])
        }
        Expr::IsNull(e) | Expr::IsNotNull(e) => {
            let Expr::Column(c) = e.as_ref() else { return None };
            column_type(&c.name)?;
            let op = if matches!(expr, Expr::IsNull(_)) { CompareOp::IsNull } else { CompareOp::IsNotNull };
            Some(vec![Predicate { column: c.name.clone(), op: op as i32, values: vec![] }])
        }
        Expr::Between(Between { expr: e, negated: false, low, high }) => {
            let Expr::Column(c) = e.as_ref() else { return None };
            let ty = column_type(&c.name)?;
            let (Expr::Literal(lo, _), Expr::Literal(hi, _)) = (low.as_ref(), high.as_ref()) else { return None };
            Some(vec![
                Predicate { column: c.name.clone(), op: CompareOp::Ge as i32, values: vec![literal(lo, &ty)?] },
                Predicate { column: c.name.clone(), op: CompareOp::Le as i32, values: vec![literal(hi, &ty)?] },
            ])
        }
        _ => None,
    }
}

/// A literal as a wire value, only when it has exactly the column's type
/// (DataFusion has already coerced comparable literals) and is not NULL.
pub(crate) fn literal(v: &ScalarValue, column: &DataType) -> Option<Value> {
    if v.is_null() || &v.data_type() != column {
        return None;
    }
    let kind = match v {
        ScalarValue::Int16(Some(i)) => Kind::Int(*i as i64),
        ScalarValue::Int32(Some(i)) => Kind::Int(*i as i64),
        ScalarValue::Int64(Some(i)) => Kind::Int(*i),
        ScalarValue::Float32(Some(f)) => Kind::Float(*f as f64),
        ScalarValue::Float64(Some(f)) => Kind::Float(*f),
        ScalarValue::Boolean(Some(b)) => Kind::Boolean(*b),
        ScalarValue::Utf8(Some(s)) => Kind::Text(s.clone()),
        ScalarValue::Binary(Some(b)) => Kind::Bytes(b.clone()),
        ScalarValue::Date32(Some(_)) | ScalarValue::Decimal128(Some(_), _, _) => Kind::Text(v.to_string()),
        ScalarValue::TimestampMicrosecond(Some(us), tz) => {
            let dt = chrono::DateTime::from_timestamp_micros(*us)?;
            let text = dt.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
            Kind::Text(if tz.is_some() { format!("{text}+00:00") } else { text })
        }
        _ => return None,
    };
    Some(Value { kind: Some(kind) })
}

/// Primary-key bounds implied by the predicates: equalities on a prefix of
/// the key, then at most one lower and one upper bound on the next key column.
/// Bounds only narrow the scan; storage still applies every predicate.
pub fn key_bounds(pk: &[String], preds: &[Predicate]) -> (Option<KeyBound>, Option<KeyBound>) {
    let op_of = |p: &Predicate| CompareOp::try_from(p.op).unwrap_or(CompareOp::Unspecified);
    let mut prefix = Vec::new();
    let (mut lower, mut upper) = (None, None);
    for col in pk {
        let on_col: Vec<&Predicate> = preds.iter().filter(|p| &p.column == col).collect();
        if let Some(eq) = on_col.iter().find(|p| op_of(p) == CompareOp::Eq) {
            prefix.push(eq.values[0].clone());
            continue;
        }
        let bound = |ops: [CompareOp; 2]| {
            on_col.iter().find(|p| ops.contains(&op_of(p))).map(|p| {
                let mut values = prefix.clone();
                values.push(p.values[0].clone());
                KeyBound { values, inclusive: matches!(op_of(p), CompareOp::Ge | CompareOp::Le) }
            })
        };
        lower = bound([CompareOp::Gt, CompareOp::Ge]);
        upper = bound([CompareOp::Lt, CompareOp::Le]);
        break;
    }
    if !prefix.is_empty() {
        lower = lower.or_else(|| Some(KeyBound { values: prefix.clone(), inclusive: true }));
        upper = upper.or_else(|| Some(KeyBound { values: prefix, inclusive: true }));
    }
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(col: &str, op: CompareOp, v: i64) -> Predicate {
        Predicate { column: col.into(), op: op as i32, values: vec![Value { kind: Some(Kind::Int(v)) }] }
    }

    fn ints(b: &Option<KeyBound>) -> Option<(Vec<i64>, bool)> {
        b.as_ref().map(|b| {
            (b.values.iter().map(|v| match v.kind { Some(Kind::Int(i)) => i, _ => -1 }).collect(), b.inclusive)
        })
    }

    #[test]
    fn equality_prefix_then_range() {
        let pk = vec!["a".to_string(), "b".to_string()];
        let (lo, hi) = key_bounds(&pk, &[p("a", CompareOp::Eq, 1), p("b", CompareOp::Gt, 5), p("b", CompareOp::Le, 9)]);
        assert_eq!(ints(&lo), Some((vec![1, 5], false)));
        assert_eq!(ints(&hi), Some((vec![1, 9], true)));
        let (lo, hi) = key_bounds(&pk, &[p("b", CompareOp::Eq, 1)]);
        assert!(lo.is_none() && hi.is_none(), "no bound without the first key column");
        let (lo, hi) = key_bounds(&pk, &[p("a", CompareOp::Lt, 3)]);
        assert_eq!((ints(&lo), ints(&hi)), (None, Some((vec![3], false))));
    }
}
