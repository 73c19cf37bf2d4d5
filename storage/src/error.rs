//! The storage crate's error type, and its single mapping to gRPC statuses.
//!
//! Every error knows the PostgreSQL SQLSTATE that compute should report, so
//! the code is carried in the status metadata and mapped once at each edge.

use ebb_proto::{CATALOG_CHANGED_METADATA_KEY, RETRY_STATEMENT_METADATA_KEY, SQLSTATE_METADATA_KEY};

/// Result alias for the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No database with this name.
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    /// A database with this name already exists.
    #[error("database \"{0}\" already exists")]
    DatabaseExists(String),
    /// No table with this name.
    #[error("role \"{0}\" does not exist")]
    UnknownRole(String),
    #[error("role \"{0}\" already exists")]
    RoleExists(String),
    #[error("relation \"{0}\" does not exist")]
    UnknownTable(String),
    /// A constraint of this name exists on the table.
    #[error("constraint \"{name}\" for relation \"{table}\" already exists")]
    ConstraintExists { table: String, name: String },
    /// No constraint of this name on the table.
    #[error("constraint \"{name}\" of relation \"{table}\" does not exist")]
    UnknownConstraint { table: String, name: String },
    /// No index with this name.
    #[error("index \"{0}\" does not exist")]
    UnknownIndex(String),
    /// A request named a definition of the table (`TableVersion`) that was
    /// since dropped, recreated or altered.
    #[error("relation \"{0}\" was changed by a concurrent statement; run the statement again")]
    CatalogChanged(String),
    /// A table with this name already exists.
    #[error("relation \"{0}\" already exists")]
    TableExists(String),
    /// No column with this name.
    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    UnknownColumn { table: String, column: String },
    /// A column with this name already exists.
    #[error("column \"{column}\" of relation \"{table}\" already exists")]
    ColumnExists { table: String, column: String },
    /// A definition that cannot be accepted (bad type, bad key, …).
    #[error("invalid table definition: {0}")]
    InvalidDefinition(String),
    /// A value does not fit its column's type.
    #[error("{0}")]
    TypeMismatch(String),
    /// Two types that must agree do not (a foreign key's columns).
    #[error("{0}")]
    DatatypeMismatch(String),
    /// A string is longer than its varchar(n)/char(n) column allows.
    #[error("value too long for type {0}")]
    StringTooLong(String),
    /// A number does not fit its numeric(p,s) or integer column.
    #[error("numeric field overflow: {0}")]
    NumericOverflow(String),
    /// A date or time that does not parse.
    #[error("{0}")]
    DatetimeFormat(String),
    /// A value larger than the server accepts.
    #[error("value of {size} bytes in column \"{column}\" exceeds the maximum of {max} bytes")]
    ValueTooLarge { column: String, size: usize, max: usize },
    /// NULL in a NOT NULL column.
    #[error("null value in column \"{column}\" of relation \"{table}\" violates not-null constraint")]
    NotNull { table: String, column: String },
    /// A duplicate primary key or unique index entry; names the constraint
    /// (`<table>_pkey` or the index).
    #[error("duplicate key value violates unique constraint \"{0}\"")]
    UniqueViolation(String),
    /// A row references one that does not exist, or a referenced row was
    /// to be deleted.
    #[error("{0}")]
    ForeignKeyViolation(String),
    /// ON DELETE CASCADE / SET NULL nested too deep.
    #[error("stack depth limit exceeded: foreign keys cascade more than {0} levels deep")]
    CascadeTooDeep(usize),
    /// CREATE UNIQUE INDEX over rows that hold the same values twice.
    #[error("could not create unique index \"{0}\": two rows hold the same values")]
    DuplicatesForUniqueIndex(String),
    /// Another transaction committed a write to the same row first.
    #[error("could not serialize access due to concurrent update")]
    Conflict,
    /// READ COMMITTED: the row changed after the statement's snapshot; the
    /// statement may be re-run on a fresh snapshot (the lock stays held).
    #[error("could not update a row changed by a concurrent transaction after this statement began; re-run the statement")]
    RetryStatement,
    /// A write an earlier statement deferred, carried by a later request,
    /// could not be buffered: the transaction was rolled back.
    #[error("could not serialize access: a deferred write of this transaction could not be applied ({0}); the transaction was rolled back")]
    EarlierWriteFailed(Box<StorageError>),
    /// A row lock was not granted in time (a deadlock, or a long holder).
    #[error("deadlock detected: a row lock was not granted within {0} ms")]
    LockTimeout(u64),
    /// The transaction id is not (or no longer) known.
    #[error("transaction {0} does not exist (it was committed, rolled back or never begun)")]
    UnknownTransaction(u64),
    /// The transaction was aborted because it was idle too long.
    #[error("transaction {txn} was aborted after being idle for more than {idle_ms} ms")]
    TransactionTimedOut { txn: u64, idle_ms: u64 },
    /// A malformed request.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An object others depend on (a constraint's index).
    #[error("{0}")]
    DependentObjects(String),
    /// Something this version does not do.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// Another storage node took over this database; this one may not write it.
    #[error("database \"{0}\" is now owned by another storage node; this node was fenced off")]
    Fenced(String),
    /// The object store failed and the commit may or may not be durable.
    #[error("commit outcome unknown: the object store did not confirm durability in time ({0})")]
    CommitOutcomeUnknown(String),
    /// The object store failed.
    #[error("object store error: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// RocksDB failed.
    #[error("local engine error: {0}")]
    Engine(#[from] rocksdb::Error),
    /// Arrow encoding or decoding failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Corrupt data found on disk or in the object store.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Local file-system failure.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A local failure (such as a full disk) stopped this database from
    /// serving: its local copy may lack acknowledged commits.
    #[error("database \"{0}\" stopped serving after a local failure (such as a full disk); restart the storage node to recover it from the object store")]
    Poisoned(String),
    /// The server is shutting down.
    #[error("storage node is shutting down")]
    ShuttingDown,
    /// A relation of the wrong kind for the request (a sequence written to,
    /// a table asked for its next value).
    #[error("{0}")]
    WrongObjectType(String),
    /// A sequence reached its bound and does not cycle.
    #[error("{0}")]
    SequenceLimit(String),
    /// SET NOT NULL on a column that holds NULLs.
    #[error("column \"{column}\" of relation \"{table}\" contains null values")]
    ContainsNulls { table: String, column: String },
    /// A value outside the range its target allows.
    #[error("{0}")]
    OutOfRange(String),
    /// An option value that cannot be taken (a sequence's bounds).
    #[error("{0}")]
    InvalidParameter(String),
}

impl StorageError {
    /// The PostgreSQL SQLSTATE a client should see for this error.
    pub fn sqlstate(&self) -> &'static str {
        use StorageError::*;
        match self {
            UnknownDatabase(_) => "3D000",
            DatabaseExists(_) => "42P04",
            UnknownRole(_) => "42704",
            RoleExists(_) => "42710",
            UnknownTable(_) => "42P01",
            UnknownIndex(_) | UnknownConstraint { .. } => "42704",
            ConstraintExists { .. } => "42710",
            TableExists(_) => "42P07",
            UnknownColumn { .. } => "42703",
            ColumnExists { .. } => "42701",
            InvalidDefinition(_) => "42P16",
            TypeMismatch(_) => "22P02",
            DatatypeMismatch(_) => "42804",
            StringTooLong(_) => "22001",
            DatetimeFormat(_) => "22007",
            NumericOverflow(_) => "22003",
            ValueTooLarge { .. } => "54000",
            NotNull { .. } => "23502",
            UniqueViolation(_) | DuplicatesForUniqueIndex(_) => "23505",
            ForeignKeyViolation(_) => "23503",
            CascadeTooDeep(_) => "54001",
            Conflict | RetryStatement | CatalogChanged(_) | EarlierWriteFailed(_) => "40001",
            LockTimeout(_) => "40P01",
            UnknownTransaction(_) => "25P01",
            TransactionTimedOut { .. } => "25P03",
            InvalidRequest(_) => "08P01",
            NotSupported(_) => "0A000",
            Fenced(_) => "57P01",
            Poisoned(_) => "58030",
            CommitOutcomeUnknown(_) => "40003",
            ObjectStore(_) | Io(_) => "58030",
            Engine(_) | Corrupt(_) => "XX001",
            Arrow(_) => "22000",
            ShuttingDown => "57P01",
            WrongObjectType(_) => "42809",
            DependentObjects(_) => "2BP01",
            SequenceLimit(_) => "2200H",
            OutOfRange(_) => "22003",
            ContainsNulls { .. } => "23502",
            InvalidParameter(_) => "22023",
        }
    }

    /// The gRPC code for this error.
    pub fn code(&self) -> tonic::Code {
        use StorageError::*;
        match self {
            UnknownDatabase(_) | UnknownRole(_) | UnknownTable(_) | UnknownIndex(_) | UnknownConstraint { .. } | UnknownColumn { .. } | UnknownTransaction(_) => {
                tonic::Code::NotFound
            }
            DatabaseExists(_) | RoleExists(_) | TableExists(_) | ColumnExists { .. } | ConstraintExists { .. } | UniqueViolation(_) | DuplicatesForUniqueIndex(_) => {
                tonic::Code::AlreadyExists
            }
            InvalidDefinition(_)
            | TypeMismatch(_)
            | DatatypeMismatch(_)
            | StringTooLong(_)
            | DatetimeFormat(_)
            | NumericOverflow(_)
            | NotNull { .. }
            | ForeignKeyViolation(_)
            | ContainsNulls { .. }
            | InvalidParameter(_)
            | InvalidRequest(_)
            | Arrow(_) => tonic::Code::InvalidArgument,
            ValueTooLarge { .. } | SequenceLimit(_) | OutOfRange(_) | CascadeTooDeep(_) => tonic::Code::OutOfRange,
            WrongObjectType(_) => tonic::Code::InvalidArgument,
            DependentObjects(_) => tonic::Code::FailedPrecondition,
            Conflict | RetryStatement | CatalogChanged(_) | EarlierWriteFailed(_) | LockTimeout(_) | TransactionTimedOut { .. } => {
                tonic::Code::Aborted
            }
            NotSupported(_) => tonic::Code::Unimplemented,
            Fenced(_) => tonic::Code::FailedPrecondition,
            Poisoned(_) => tonic::Code::Unavailable,
            CommitOutcomeUnknown(_) | ObjectStore(_) | ShuttingDown => tonic::Code::Unavailable,
            Engine(_) | Corrupt(_) | Io(_) => tonic::Code::Internal,
        }
    }
}

impl From<StorageError> for tonic::Status {
    fn from(err: StorageError) -> Self {
        let mut status = tonic::Status::new(err.code(), err.to_string());
        if let Ok(v) = err.sqlstate().parse() {
            status.metadata_mut().insert(SQLSTATE_METADATA_KEY, v);
        }
        if matches!(err, StorageError::CatalogChanged(_)) {
            status.metadata_mut().insert(CATALOG_CHANGED_METADATA_KEY, tonic::metadata::MetadataValue::from_static("1"));
        }
        if matches!(err, StorageError::RetryStatement) {
            status.metadata_mut().insert(RETRY_STATEMENT_METADATA_KEY, tonic::metadata::MetadataValue::from_static("1"));
        }
        status
    }
}
