//! The compute crate's errors. Each carries the SQLSTATE the client sees;
//! storage errors keep the SQLSTATE storage put in the status metadata.

use ebb_proto::{CATALOG_CHANGED_METADATA_KEY, RETRY_STATEMENT_METADATA_KEY, SQLSTATE_METADATA_KEY};

/// Result alias for the compute crate.
pub type Result<T, E = ComputeError> = std::result::Result<T, E>;

/// Everything that can go wrong in compute.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// An error reported by storage, with its SQLSTATE.
    #[error("{message}")]
    Storage { sqlstate: String, message: String },
    /// Storage could not be reached.
    #[error("storage is unavailable: {0}")]
    StorageUnavailable(String),
    /// SQL that does not parse.
    #[error("{0}")]
    Syntax(String),
    /// A valid statement that ebb does not support (yet).
    #[error("{0}")]
    NotSupported(String),
    /// Planning or execution failed in DataFusion.
    #[error("{message}")]
    Query { sqlstate: &'static str, message: String },
    /// READ COMMITTED: a row the statement writes changed after its
    /// snapshot; the session re-runs the statement on a fresh one.
    #[error("{0}")]
    RetryStatement(String),
    /// A table the statement was planned with was dropped, recreated or
    /// altered since the session loaded its catalog; storage did nothing,
    /// and the session reloads the catalog and runs the statement again.
    #[error("{0}")]
    CatalogChanged(String),
    /// A statement in a transaction that already failed.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    TransactionAborted,
    /// Bad input (COPY data, parameters, settings).
    #[error("{message}")]
    InvalidInput { sqlstate: &'static str, message: String },
    /// A bad setting of the node itself.
    #[error("configuration error: {0}")]
    Config(String),
    /// The statement was cancelled by the client.
    #[error("canceling statement due to user request")]
    Cancelled,
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ComputeError {
    /// The SQLSTATE for the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            Self::Storage { sqlstate, .. } => sqlstate,
            Self::StorageUnavailable(_) => "08006",
            Self::Syntax(_) => "42601",
            Self::NotSupported(_) => "0A000",
            Self::Query { sqlstate, .. } | Self::InvalidInput { sqlstate, .. } => sqlstate,
            Self::TransactionAborted => "25P02",
            Self::RetryStatement(_) | Self::CatalogChanged(_) => "40001",
            Self::Config(_) => "F0000",
            Self::Cancelled => "57014",
            Self::Internal(_) => "XX000",
        }
    }

    /// Shorthand for a not-supported error.
    pub fn unsupported(what: impl std::fmt::Display) -> Self {
        Self::NotSupported(format!("{what} is not supported by ebb"))
    }

    /// Shorthand for an invalid-input error with a SQLSTATE.
    pub fn invalid(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput { sqlstate, message: message.into() }
    }

    /// This error raised inside DataFusion (a function, a scan stream): it
    /// comes out of the query unchanged, SQLSTATE included.
    pub fn into_datafusion(self) -> datafusion::error::DataFusionError {
        datafusion::error::DataFusionError::External(Box::new(self))
    }
}

/// Checks that `function` was given a number of arguments in `takes`;
/// otherwise 42883, as PostgreSQL reports a function called with arguments
/// it does not take.
pub fn check_arguments(function: &str, takes: std::ops::RangeInclusive<usize>, given: usize) -> datafusion::error::Result<()> {
    if takes.contains(&given) {
        return Ok(());
    }
    let takes = match (*takes.start(), *takes.end()) {
        (1, 1) => "one argument".to_string(),
        (1, 2) => "one or two arguments".to_string(),
        (l, h) if l == h => format!("{l} arguments"),
        (l, h) => format!("{l} to {h} arguments"),
    };
    Err(ComputeError::invalid("42883", format!("{function} takes {takes}, not {given}")).into_datafusion())
}

impl From<tonic::Status> for ComputeError {
    fn from(s: tonic::Status) -> Self {
        if s.metadata().get(CATALOG_CHANGED_METADATA_KEY).is_some() {
            return Self::CatalogChanged(s.message().to_string());
        }
        if s.metadata().get(RETRY_STATEMENT_METADATA_KEY).is_some() {
            return Self::RetryStatement(s.message().to_string());
        }
        if let Some(state) = s.metadata().get(SQLSTATE_METADATA_KEY).and_then(|v| v.to_str().ok()) {
            return Self::Storage { sqlstate: state.to_string(), message: s.message().to_string() };
        }
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
                Self::StorageUnavailable(s.message().to_string())
            }
            _ => Self::Internal(format!("storage: {s}")),
        }
    }
}

impl From<arrow::error::ArrowError> for ComputeError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Internal(format!("arrow: {e}"))
    }
}

impl From<datafusion::error::DataFusionError> for ComputeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        if e.to_string().contains("does not support logical expression ScalarSubquery") {
            return Self::NotSupported(
                "this correlated subquery (DataFusion decorrelates scalar subqueries only on equality conditions) is not supported by ebb"
                    .into(),
            );
        }
        match e {
            D::External(inner) => match inner.downcast::<ComputeError>() {
                Ok(c) => *c,
                Err(other) => Self::Query { sqlstate: "XX000", message: other.to_string() },
            },
            D::Context(_, inner) | D::Diagnostic(_, inner) => Self::from(*inner),
            D::Collection(mut errors) if !errors.is_empty() => Self::from(errors.remove(0)),
            D::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(inner) => Self::from(inner),
                Err(shared) => Self::Query { sqlstate: "XX000", message: shared.to_string() },
            },
            D::SQL(e, _) => Self::Syntax(e.to_string()),
            D::NotImplemented(m) => Self::NotSupported(m),
            D::Plan(m) => Self::Query { sqlstate: plan_sqlstate(&m), message: m },
            D::SchemaError(e, _) => {
                let m = e.to_string();
                Self::Query { sqlstate: plan_sqlstate(&m), message: m }
            }
            D::ArrowError(e, _) => {
                let m = e.to_string();
                if let Some(message) = out_of_range(&m) {
                    return Self::Query { sqlstate: "22003", message };
                }
                let state = if m.contains("Divide by zero") {
                    "22012"
                } else if m.contains("overflow") {
                    "22003"
                } else if m.contains("Cannot cast string") {
                    "22P02" // invalid text representation
                } else {
                    "22000"
                };
                Self::Query { sqlstate: state, message: m }
            }
            D::Execution(m) if m == crate::scalar_subqueries::MORE_THAN_ONE_ROW => Self::Query { sqlstate: "21000", message: m },
            D::Execution(m) if m.starts_with(crate::array_literals::MALFORMED) => Self::Query { sqlstate: "22P02", message: m },
            D::Execution(m) => Self::Query { sqlstate: "XX000", message: m },
            other => Self::Query { sqlstate: "XX000", message: other.to_string() },
        }
    }
}

/// PostgreSQL's message for an integer cast out of its type's range (Arrow:
/// "Can't cast value 2147483648 to type Int32", "value of … is out of range
/// Int64"), which checked arithmetic and explicit casts both produce.
fn out_of_range(m: &str) -> Option<String> {
    let type_name = [("Int16", "smallint"), ("Int32", "integer"), ("Int64", "bigint")]
        .into_iter()
        .find(|(arrow, _)| m.ends_with(&format!("to type {arrow}")) || m.ends_with(&format!("out of range {arrow}")))?
        .1;
    Some(format!("{type_name} out of range"))
}

/// Guesses the SQLSTATE of a DataFusion planning error from its text.
fn plan_sqlstate(m: &str) -> &'static str {
    if m.contains("table") && (m.contains("not found") || m.contains("does not exist")) {
        "42P01"
    } else if m.contains("No field named") || m.contains("column") && m.contains("not found") {
        "42703"
    } else if m.contains("Invalid function") || m.contains("function") && m.contains("not found") {
        "42883"
    } else if m.contains("Cannot infer common") || m.contains("Cannot coerce") || m.contains("type") {
        "42804"
    } else {
        "42000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_counts_are_named_in_words() {
        let said = |takes, given| check_arguments("f", takes, given).expect_err("refused").to_string();
        assert!(check_arguments("f", 1..=2, 2).is_ok());
        assert!(said(1..=1, 0).contains("f takes one argument, not 0"));
        assert!(said(1..=2, 3).contains("f takes one or two arguments, not 3"));
        assert!(said(2..=3, 1).contains("f takes 2 to 3 arguments, not 1"));
        assert_eq!(ComputeError::from(check_arguments("f", 1..=1, 2).expect_err("refused")).sqlstate(), "42883");
    }
}
