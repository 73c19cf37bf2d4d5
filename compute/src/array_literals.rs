//! Text cast to an array type reads PostgreSQL's array literal:
//! `'{1,2,NULL}'::int[]`, `$1::varchar(100)[]` with a parameter sent as
//! text (Django's `bulk_create` inserts `SELECT * FROM UNNEST($1::int[], …)`).
//!
//! Arrow casts a string to a list by parsing it as one element, which fails.
//! This analyzer rule (after DataFusion's type coercion) puts
//! [`TEXT_TO_ARRAY`] under every cast of text to a list: it splits the
//! literal into a list of text elements (quotes, backslash escapes, `NULL`),
//! which Arrow then casts element by element. One dimension only; a nested
//! literal (`{{1,2},{3,4}}`) is an error that says so.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use datafusion::optimizer::AnalyzerRule;

/// The function under a text-to-array cast.
pub const TEXT_TO_ARRAY: &str = "ebb_text_to_array";
/// How an error about a literal that is no array starts (22P02).
pub const MALFORMED: &str = "malformed array literal";

/// The analyzer rule; add it after DataFusion's rules.
#[derive(Debug, Default)]
pub struct ArrayLiterals;

impl AnalyzerRule for ArrayLiterals {
    fn name(&self) -> &str {
        "ebb_array_literals"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        crate::text_casts::rewrite_plan_expressions(plan, is_list_cast, rewrite)
    }
}

fn is_list_cast(e: &Expr) -> bool {
    matches!(e, Expr::Cast(c) if matches!(c.field.data_type(), DataType::List(_)))
}

/// `e` with each cast of text to a list reading the text as an array literal.
fn rewrite(e: Expr, schema: &DFSchema) -> DfResult<Transformed<Expr>> {
    e.transform_up(|e| {
        let Expr::Cast(mut cast) = e else { return Ok(Transformed::no(e)) };
        let text = matches!(cast.expr.get_type(schema), Ok(DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8));
        if !text || !matches!(cast.field.data_type(), DataType::List(_)) {
            return Ok(Transformed::no(Expr::Cast(cast)));
        }
        cast.expr = Box::new(text_to_array().call(vec![*cast.expr]));
        Ok(Transformed::yes(Expr::Cast(cast)))
    })
}

/// `ebb_text_to_array(text)`: a list of text elements.
pub fn text_to_array() -> ScalarUDF {
    ScalarUDF::from(TextToArray { signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TextToArray {
    signature: Signature,
}

impl ScalarUDFImpl for TextToArray {
    fn name(&self) -> &str {
        TEXT_TO_ARRAY
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else { return Err(DataFusionError::Internal(format!("{TEXT_TO_ARRAY} takes one argument"))) };
        let texts = arrow::compute::cast(&arg.to_array(1)?, &DataType::Utf8)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for text in texts.as_string::<i32>().iter() {
            match text {
                None => out.append_null(),
                Some(t) => {
                    for element in elements(t).map_err(|e| DataFusionError::Execution(format!("{MALFORMED}: \"{t}\": {e}")))? {
                        out.values().append_option(element);
                    }
                    out.append(true);
                }
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(match arg {
            ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?),
            ColumnarValue::Array(_) => ColumnarValue::Array(out),
        })
    }
}

/// The elements of a one-dimensional array literal (`None`: NULL).
fn elements(text: &str) -> Result<Vec<Option<String>>, &'static str> {
    let inner = text.trim().strip_prefix('{').and_then(|t| t.strip_suffix('}')).ok_or("array value must start with \"{\" and end with \"}\"")?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or("unexpected end of input")?),
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err("unexpected end of input"),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '{' => return Err("multidimensional arrays are not supported"),
                    '\\' => {
                        chars.next();
                        value.push(chars.next().ok_or("unexpected end of input")?);
                    }
                    _ => {
                        value.push(c);
                        chars.next();
                    }
                }
            }
            value = value.trim_end().to_string();
        }
        out.push(if !quoted && value.eq_ignore_ascii_case("null") { None } else { Some(value) });
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(_) => return Err("junk after an element"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_split_as_postgres_reads_them() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(elements("{1,2, 3}").unwrap(), vec![s("1"), s("2"), s("3")]);
        assert_eq!(elements("{}").unwrap(), Vec::<Option<String>>::new());
        assert_eq!(elements(r#"{"a b",NULL,"NULL","q\"x",c\,d}"#).unwrap(), vec![s("a b"), None, s("NULL"), s("q\"x"), s("c,d")]);
        assert!(elements("{{1,2},{3,4}}").is_err());
        assert!(elements("1,2").is_err());
        assert!(elements("{\"open").is_err());
    }
}
