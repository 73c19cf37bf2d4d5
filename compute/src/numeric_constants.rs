//! Decimal constants are `numeric`, as in PostgreSQL, and dividing numerics
//! keeps PostgreSQL's precision.
//!
//! PostgreSQL reads `1.5` and `1e3` as `numeric`: `SELECT 0.1 + 0.2` is
//! `0.3`, `pg_typeof(2.5)` is `numeric`, money columns times `1.1` stay
//! exact. The session has DataFusion parse them as decimals
//! (`parse_float_as_decimal`); this analyzer rule, which runs before type
//! coercion, mends two things that would otherwise differ:
//!
//! - An exponent makes a negative scale (`1e15` is 1 × 10^15, scale -15),
//!   which Arrow casts to a float by dividing by an inexact 10^-15
//!   (`1e15::float8` would be `999999999999999.9`). Such constants are
//!   rewritten with scale 0 when they fit 38 digits.
//! - Arrow divides decimals to the dividend's scale plus 4 (`1 / 3.0` would
//!   be `0.3333`), truncating; PostgreSQL gives at least 16 significant
//!   digits, rounded. The dividend is cast to a larger scale so that the
//!   quotient has one place more than [`MIN_QUOTIENT_SCALE`] (or the
//!   operands' scales) and is rounded to that (fewer places when 38 digits
//!   do not allow it). PostgreSQL picks the scale per value, ebb per expression:
//!   small quotients show fewer digits than in PostgreSQL (`1 / 3.0` is
//!   `0.3333333333333333`, PostgreSQL's `0.33333333333333333333`), large
//!   ones more.
//! - DataFusion compares a float with a decimal as decimals, which fails
//!   for floats the decimal type cannot hold (`f > 1e14` with `f` =
//!   `1e15`); PostgreSQL compares them as `double precision`. The numeric
//!   side of a comparison, `IN` list or `BETWEEN` with a float is cast to
//!   `double precision`.
//! - Arrow casts a decimal to an integer by truncating (`2.5::int` would
//!   be 2, and `INSERT` of `1.5` into an integer column stores 1);
//!   PostgreSQL rounds half away from zero. Such casts go through a
//!   decimal of scale 0, which Arrow rounds to.

use arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, cast};
use datafusion::optimizer::AnalyzerRule;

/// Decimal places of a numeric quotient (PostgreSQL's `NUMERIC_MIN_SIG_DIGITS`).
pub const MIN_QUOTIENT_SCALE: i8 = 16;
/// Decimal places Arrow adds to the dividend's scale in a quotient.
const ARROW_DIVISION_SCALE_INCREMENT: i8 = 4;
/// Digits a `Decimal128` holds.
const MAX_PRECISION: u8 = 38;

/// The analyzer rule; it must run before DataFusion's type coercion.
#[derive(Debug, Default)]
pub struct NumericConstants;

impl AnalyzerRule for NumericConstants {
    fn name(&self) -> &str {
        "ebb_numeric_constants"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        plan.transform_up_with_subqueries(|node| {
            let touches = |e: &Expr| e.exists(|x| Ok(negative_scale(x) || is_division(x) || is_comparison(x) || is_integer_cast(x))).unwrap_or(true);
            if !node.expressions().iter().any(touches) {
                return Ok(Transformed::no(node));
            }
            let schema = if node.inputs().is_empty() { node.schema().as_ref().clone() } else { merge_schema(&node.inputs()) };
            let names = NamePreserver::new(&node);
            let t = node.map_expressions(|e| {
                let name = names.save(&e);
                Ok(rewrite(e, &schema)?.update_data(|e| name.restore(e)))
            })?;
            if t.transformed { t.map_data(|n| n.recompute_schema()) } else { Ok(t) }
        })
        .map(|t| t.data)
    }
}

fn negative_scale(e: &Expr) -> bool {
    matches!(e, Expr::Literal(ScalarValue::Decimal128(Some(_), _, s), _) if *s < 0)
}

fn is_division(e: &Expr) -> bool {
    matches!(e, Expr::BinaryExpr(BinaryExpr { op: Operator::Divide, .. }))
}

fn is_integer_cast(e: &Expr) -> bool {
    matches!(e, Expr::Cast(c) if c.field.data_type().is_integer())
}

fn is_comparison(e: &Expr) -> bool {
    matches!(e, Expr::BinaryExpr(BinaryExpr { op, .. }) if is_comparison_op(*op)) || matches!(e, Expr::InList(_) | Expr::Between(_))
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

/// `e` as `double precision` if it is numeric and `other` is a float (how
/// PostgreSQL compares them).
fn compared_as_float(e: Expr, other: &Expr, schema: &DFSchema) -> Transformed<Expr> {
    let numeric = matches!(e.get_type(schema), Ok(DataType::Decimal128(..)));
    if numeric && other.get_type(schema).is_ok_and(|t| is_float(&t)) {
        Transformed::yes(cast(e, DataType::Float64))
    } else {
        Transformed::no(e)
    }
}

/// `e` with its negative-scale constants and numeric divisions mended.
fn rewrite(e: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    e.transform_up(|e| match e {
        Expr::Literal(ScalarValue::Decimal128(Some(v), p, s), meta) if s < 0 => Ok(match scale_zero(v, p, s) {
            Some((v, p)) => Transformed::yes(Expr::Literal(ScalarValue::Decimal128(Some(v), p, 0), meta)),
            None => Transformed::no(Expr::Literal(ScalarValue::Decimal128(Some(v), p, s), meta)),
        }),
        Expr::Cast(mut c) if c.field.data_type().is_integer() => Ok(match c.expr.get_type(schema) {
            Ok(DataType::Decimal128(p, s)) if s > 0 => {
                // One digit more for a carry (9.5 → 10).
                let whole = DataType::Decimal128((p - s.unsigned_abs() + 1).min(MAX_PRECISION), 0);
                c.expr = Box::new(cast(*c.expr, whole));
                Transformed::yes(Expr::Cast(c))
            }
            _ => Transformed::no(Expr::Cast(c)),
        }),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Divide, right }) => {
            let types = match (left.get_type(schema), right.get_type(schema)) {
                (Ok(l), Ok(r)) => division_types(&l, &r),
                // Types not known here: left for type coercion to report.
                _ => None,
            };
            Ok(match types {
                Some((dividend, rounded)) => {
                    let quotient = Expr::BinaryExpr(BinaryExpr::new(Box::new(cast(*left, dividend)), Operator::Divide, right));
                    Transformed::yes(match rounded {
                        Some(t) => cast(quotient, t),
                        None => quotient,
                    })
                }
                None => Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op: Operator::Divide, right })),
            })
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison_op(op) => {
            let l = compared_as_float(*left, &right, schema);
            let r = compared_as_float(*right, &l.data, schema);
            let transformed = l.transformed || r.transformed;
            let e = Expr::BinaryExpr(BinaryExpr::new(Box::new(l.data), op, Box::new(r.data)));
            Ok(if transformed { Transformed::yes(e) } else { Transformed::no(e) })
        }
        Expr::InList(mut list) => {
            // PostgreSQL resolves the list and its operand to one type,
            // `double precision` when a float is among numerics.
            let float = |e: &Expr| e.get_type(schema).is_ok_and(|t| is_float(&t));
            let Some(float_item) = std::iter::once(list.expr.as_ref()).chain(&list.list).find(|e| float(e)).cloned() else {
                return Ok(Transformed::no(Expr::InList(list)));
            };
            let mut transformed = false;
            let mut as_float = |e: Expr| {
                let t = compared_as_float(e, &float_item, schema);
                transformed |= t.transformed;
                t.data
            };
            list.expr = Box::new(as_float(*list.expr));
            list.list = std::mem::take(&mut list.list).into_iter().map(&mut as_float).collect();
            Ok(if transformed { Transformed::yes(Expr::InList(list)) } else { Transformed::no(Expr::InList(list)) })
        }
        Expr::Between(mut b) => {
            let float_bound = [&b.low, &b.high].iter().find(|x| x.get_type(schema).is_ok_and(|t| is_float(&t))).map(|x| (***x).clone());
            let e = compared_as_float(*b.expr, float_bound.as_ref().unwrap_or(&b.low), schema);
            let low = compared_as_float(*b.low, &e.data, schema);
            let high = compared_as_float(*b.high, &e.data, schema);
            let transformed = e.transformed || low.transformed || high.transformed;
            (b.expr, b.low, b.high) = (Box::new(e.data), Box::new(low.data), Box::new(high.data));
            Ok(if transformed { Transformed::yes(Expr::Between(b)) } else { Transformed::no(Expr::Between(b)) })
        }
        other => Ok(Transformed::no(other)),
    })
}

fn is_comparison_op(op: Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}

/// `v × 10^s` (scale `s` < 0) as a value of scale 0 with its precision, if
/// it fits a `Decimal128`.
fn scale_zero(v: i128, p: u8, s: i8) -> Option<(i128, u8)> {
    let shift = s.unsigned_abs();
    let p = p.checked_add(shift).filter(|p| *p <= MAX_PRECISION)?;
    let v = v.checked_mul(10_i128.checked_pow(u32::from(shift))?)?;
    Some((v, p))
}

/// The decimal type an integer type converts to without loss.
fn as_decimal(t: &DataType) -> Option<(u8, i8)> {
    match t {
        DataType::Decimal128(p, s) => Some((*p, *s)),
        DataType::Int8 | DataType::UInt8 => Some((3, 0)),
        DataType::Int16 | DataType::UInt16 => Some((5, 0)),
        DataType::Int32 | DataType::UInt32 => Some((10, 0)),
        DataType::Int64 => Some((19, 0)),
        DataType::UInt64 => Some((20, 0)),
        _ => None,
    }
}

/// How a numeric `left / right` of these types is computed, if it is one
/// (a decimal on either side, the other a decimal or an integer) whose
/// quotient would have fewer than [`MIN_QUOTIENT_SCALE`] places: the type
/// the dividend is cast to, and the type the quotient is then rounded to
/// (Arrow truncates; the dividend gets one place more than wanted so that
/// the last one rounds, as PostgreSQL's does).
fn division_types(left: &DataType, right: &DataType) -> Option<(DataType, Option<DataType>)> {
    if !matches!(left, DataType::Decimal128(..)) && !matches!(right, DataType::Decimal128(..)) {
        return None;
    }
    let ((p, s), (_, right_scale)) = (as_decimal(left)?, as_decimal(right)?);
    let places = MIN_QUOTIENT_SCALE.max(s + ARROW_DIVISION_SCALE_INCREMENT).max(right_scale);
    let room = i16::from(MAX_PRECISION) - i16::from(p);
    let shift = (i16::from(places + 1 - ARROW_DIVISION_SCALE_INCREMENT) - i16::from(s)).min(room);
    if shift <= 0 {
        return None;
    }
    let shift = i8::try_from(shift).ok()?;
    let (p, s) = (p + shift.unsigned_abs(), s + shift);
    let quotient_scale = s + ARROW_DIVISION_SCALE_INCREMENT;
    // Arrow's quotient precision: the dividend's plus the places added.
    let quotient_precision = (i16::from(p) + i16::from(ARROW_DIVISION_SCALE_INCREMENT) + i16::from(right_scale)).min(i16::from(MAX_PRECISION));
    let rounded = (quotient_scale > places).then(|| DataType::Decimal128(u8::try_from(quotient_precision).unwrap_or(MAX_PRECISION), places));
    Some((DataType::Decimal128(p, s), rounded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_constants_get_scale_zero_when_they_fit() {
        assert_eq!(scale_zero(1, 1, -15), Some((1_000_000_000_000_000, 16)));
        assert_eq!(scale_zero(-25, 2, -3), Some((-25_000, 5)));
        assert_eq!(scale_zero(1, 1, -40), None, "41 digits do not fit");
    }

    #[test]
    fn quotients_get_sixteen_places_rounded_within_38_digits() {
        let d = DataType::Decimal128;
        // 1 / 3.0: bigint dividend to scale 13, quotient scale 17 rounded to 16.
        assert_eq!(division_types(&DataType::Int64, &d(2, 1)), Some((d(32, 13), Some(d(37, 16)))));
        // 10.0 / 4 (bigint divisor: scale 0)
        assert_eq!(division_types(&d(3, 1), &DataType::Int64), Some((d(15, 13), Some(d(19, 16)))));
        // A divisor of scale 20 makes the quotient keep 20 places.
        assert_eq!(division_types(&d(3, 1), &d(22, 20)), Some((d(19, 17), Some(d(38, 20)))));
        // Only as many places as 38 digits allow: no room for the rounding place.
        assert_eq!(division_types(&d(30, 2), &d(2, 1)), Some((d(38, 10), None)));
        assert_eq!(division_types(&d(38, 2), &d(2, 1)), None);
        // Enough places already: one more, for the rounding.
        assert_eq!(division_types(&d(20, 12), &d(2, 1)), Some((d(21, 13), Some(d(26, 16)))));
        // Not a numeric division.
        assert_eq!(division_types(&DataType::Int64, &DataType::Int32), None);
        assert_eq!(division_types(&DataType::Float64, &d(2, 1)), None);
    }
}
