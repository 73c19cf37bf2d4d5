//! `pg_sleep(seconds)`: psql scripts, test suites and monitoring checks wait
//! with it. It is an async function (DataFusion's `AsyncScalarUDF`): a
//! sleeping statement parks its task rather than a runtime thread, and
//! `statement_timeout` or a cancel request ends it (57014) as they end any
//! statement, by dropping it. Like PostgreSQL's it returns `void` (shown
//! as an empty value) once per row, after sleeping that row's seconds; a
//! NULL, zero or negative duration does not sleep.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, NullArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

/// The longest sleep accepted: longer ones are surely mistakes (PostgreSQL
/// accepts them, but nothing would wait that long for an answer).
const MAX_SECONDS: f64 = 24.0 * 3600.0;

/// `pg_sleep`, registered in every session.
pub fn pg_sleep_udf() -> ScalarUDF {
    AsyncScalarUDF::new(Arc::new(PgSleep { signature: Signature::uniform(1, vec![DataType::Float64], Volatility::Volatile) })).into_scalar_udf()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: Signature,
}

impl ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Null)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("pg_sleep runs only as an async function")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for PgSleep {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let seconds: Vec<Option<f64>> = match &args.args[0] {
            ColumnarValue::Scalar(ScalarValue::Float64(s)) => vec![*s; rows],
            ColumnarValue::Scalar(other) => return exec_err!("pg_sleep takes double precision, not {}", other.data_type()),
            ColumnarValue::Array(a) => a.as_primitive::<Float64Type>().iter().collect(),
        };
        for s in seconds.into_iter().flatten() {
            tokio::time::sleep(duration(s)?).await;
        }
        Ok(ColumnarValue::Array(Arc::new(NullArray::new(rows))))
    }
}

/// How long `seconds` sleeps.
fn duration(seconds: f64) -> Result<Duration> {
    if seconds.is_nan() || seconds > MAX_SECONDS {
        return exec_err!("pg_sleep({seconds}): at most {MAX_SECONDS} seconds");
    }
    Ok(Duration::from_secs_f64(seconds.max(0.0)))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn sleeps_once_per_row_and_returns_void() {
        let ctx = SessionContext::new();
        ctx.register_udf(pg_sleep_udf());
        let started = Instant::now();
        let batches = ctx.sql("SELECT pg_sleep(x / 100.0) FROM (VALUES (1), (2), (NULL), (-5)) t(x)").await.unwrap().collect().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30), "slept 10 + 20 ms: {:?}", started.elapsed());
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 4);
        assert!(batches.iter().all(|b| b.column(0).logical_null_count() == b.num_rows()), "void, like PostgreSQL's");
        let e = ctx.sql("SELECT pg_sleep(1e9)").await.unwrap().collect().await.unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }
}
