//! Timestamps cast to text read as PostgreSQL prints them.
//!
//! DataFusion casts a timestamp to text in ISO 8601 with nanoseconds
//! (`2026-11-26T04:15:50.480824694Z`); PostgreSQL prints
//! `2026-11-26 04:15:50.480824+00` — the form the wire protocol already
//! uses for timestamp results (`pg::encode::timestamp_text`), and the one
//! `now()::text`, string concatenation and `to_char`-less reports expect.
//! This analyzer rule (after DataFusion's type coercion) replaces every cast
//! of a timestamp to a string type with [`TEXT_OF_TIMESTAMP`].

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::datatypes::{DataType, TimeUnit};
use chrono::DateTime;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::optimizer::AnalyzerRule;

use crate::pg::encode::timestamp_text;

/// The function a timestamp-to-text cast becomes.
pub const TEXT_OF_TIMESTAMP: &str = "ebb_text_of_timestamp";

/// The analyzer rule; add it after DataFusion's rules.
#[derive(Debug, Default)]
pub struct PostgresTextCasts;

impl AnalyzerRule for PostgresTextCasts {
    fn name(&self) -> &str {
        "ebb_postgres_text_casts"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        rewrite_plan_expressions(plan, is_text_cast, rewrite)
    }
}

/// Rewrites the expressions of every node of `plan` (subqueries too) that
/// holds one `candidate` accepts, with `rewrite` (given the schema the
/// node's expressions refer to), keeping their names. Most plans hold no
/// candidate: their nodes' input schemas are not merged.
pub fn rewrite_plan_expressions(
    plan: LogicalPlan,
    candidate: fn(&Expr) -> bool,
    rewrite: fn(Expr, &DFSchema) -> DfResult<Transformed<Expr>>,
) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let mut found = false;
        node.apply_expressions(|e| {
            found = e.exists(|x| Ok(candidate(x)))?;
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })?;
        if !found {
            return Ok(Transformed::no(node));
        }
        let schema = if node.inputs().is_empty() { node.schema().as_ref().clone() } else { merge_schema(&node.inputs()) };
        let names = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let name = names.save(&e);
            Ok(rewrite(e, &schema)?.update_data(|e| name.restore(e)))
        })
    })
    .map(|t| t.data)
}

/// `e` with its timestamp-to-text casts replaced (`schema`: what its
/// columns refer to).
pub fn rewrite(e: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    e.transform_up(|e| {
        let Expr::Cast(cast) = e else { return Ok(Transformed::no(e)) };
        // An expression whose type cannot be told here is left as it is.
        if !is_string(cast.field.data_type()) || !matches!(cast.expr.get_type(schema), Ok(DataType::Timestamp(..))) {
            return Ok(Transformed::no(Expr::Cast(cast)));
        }
        let target = cast.field.data_type().clone();
        let text = text_of_timestamp().call(vec![*cast.expr]);
        Ok(Transformed::yes(if target == DataType::Utf8 { text } else { text.cast_to(&target, schema)? }))
    })
}

/// A cast to a string type.
fn is_text_cast(e: &Expr) -> bool {
    matches!(e, Expr::Cast(c) if is_string(c.field.data_type()))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
}

/// `ebb_text_of_timestamp(ts)`: PostgreSQL's text of a timestamp of any
/// unit (`+00` when it has a time zone; sessions run in UTC).
pub fn text_of_timestamp() -> ScalarUDF {
    ScalarUDF::from(TextOfTimestamp { signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextOfTimestamp {
    signature: Signature,
}

impl ScalarUDFImpl for TextOfTimestamp {
    fn name(&self) -> &str {
        TEXT_OF_TIMESTAMP
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        text_of(&args.args)
    }
}

fn text_of(args: &[ColumnarValue]) -> DfResult<ColumnarValue> {
    let [arg] = args else { return Err(DataFusionError::Internal(format!("{TEXT_OF_TIMESTAMP} takes one argument"))) };
    let array = arg.to_array(1)?;
    let DataType::Timestamp(unit, zone) = array.data_type().clone() else {
        return Err(DataFusionError::Internal(format!("{TEXT_OF_TIMESTAMP} of {}", array.data_type())));
    };
    let micros = arrow::compute::cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, zone.clone()))?;
    let micros = micros.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let mut out = StringBuilder::with_capacity(micros.len(), micros.len() * 26);
    for v in micros.iter() {
        match v.and_then(DateTime::from_timestamp_micros) {
            Some(dt) => out.append_value(timestamp_text(&dt.naive_utc(), zone.is_some())),
            None if v.is_some() => return Err(DataFusionError::Execution(format!("timestamp out of range ({unit:?})"))),
            None => out.append_null(),
        }
    }
    let out: ArrayRef = Arc::new(out.finish());
    Ok(match arg {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?),
        ColumnarValue::Array(_) => ColumnarValue::Array(out),
    })
}
