//! A client session: its DataFusion context over the connected database,
//! its settings and its transaction block. Statements come in parsed; the
//! session runs them against storage and reports rows or a command tag.

pub mod copy_in;
pub mod plan_cache;
mod savepoints;
pub mod settings;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::TaskContext;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectType, Owner, Reset, SequenceOptions as AstSequenceOptions, Set, Statement, TransactionIsolationLevel, TransactionMode};
use ebb_proto::storage::alter_column::Change;
use ebb_proto::storage::alter_table_request::Action;
use ebb_proto::storage::{AddIdentity, AlterColumn, AlterTableRequest, CreateTableRequest, Isolation, SequenceOptions, TableDef, TypeKind};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::catalog::{DatabaseCatalog, PUBLIC};
use crate::column_names;
use crate::duplicate_names;
use crate::error::{ComputeError, Result};
use crate::point_read::PointRead;
use crate::sql::sequences::{self, OwnedSequence};
use crate::sql::{alter_table, copy, create_table_as, ddl, dml, foreign_keys, indexes, roles};
use crate::storage_client::StorageClient;
use crate::sequence_functions::SessionSequences;
use crate::storage_session::StorageSession;
use crate::auto_params;
use crate::simple_shapes::{KnownShape, Sighting, Skeleton};
use crate::compiled_exprs::ExprCache;
use plan_cache::{ByText, Described, PlanCache, PlansByText, ShapeCaches};
use savepoints::Savepoints;
use settings::Settings;

/// Where the session is with respect to an explicit transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// No BEGIN: each statement is its own transaction.
    Idle,
    /// Inside BEGIN … COMMIT.
    Open,
    /// A statement failed inside the block; only ROLLBACK/COMMIT are accepted.
    Failed,
}

/// What [`Session::execute_known_text`] did with a simple-protocol text.
pub enum KnownText {
    /// It ran as the shape learnt for its skeleton.
    Ran(Result<Output>),
    /// It was not run: parse it, and if `learning`, pass the statement to
    /// [`Session::note_simple_text`] (its skeleton is not learnt or known
    /// unlearnable yet).
    Parse { learning: bool },
}

/// What a statement produced.
#[derive(Debug)]
pub enum Output {
    /// Rows (tag `SELECT n`).
    Rows { schema: SchemaRef, batches: Vec<RecordBatch> },
    /// Rows of a RETURNING clause (tag `<command> n`, e.g. `INSERT 0 n`).
    Returned { command: String, schema: SchemaRef, batches: Vec<RecordBatch> },
    /// A command tag such as `INSERT 0 3` or `BEGIN`.
    Command(String),
    /// `COPY … FROM STDIN` is waiting for `columns` columns of data.
    CopyIn { columns: usize },
}

impl Output {
    /// The command tag PostgreSQL would send.
    pub fn tag(&self) -> String {
        match self {
            Output::Rows { batches, .. } => format!("SELECT {}", batches.iter().map(|b| b.num_rows()).sum::<usize>()),
            Output::Returned { command, batches, .. } => format!("{command} {}", batches.iter().map(|b| b.num_rows()).sum::<usize>()),
            Output::Command(t) => t.clone(),
            Output::CopyIn { .. } => "COPY".into(),
        }
    }
}

/// How often a READ COMMITTED statement is re-run after finding a row it
/// writes changed by a concurrent commit, before reporting 40001.
const MAX_STATEMENT_RETRIES: u32 = 20;

/// The storage transaction of a writing statement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteTxn {
    /// Begun for this statement alone (no transaction block is open).
    pub own: bool,
}

/// One client session.
pub struct Session {
    storage: Arc<StorageSession>,
    catalog: Arc<DatabaseCatalog>,
    /// Storage's figures for the size functions, fetched by statements that call them.
    sizes: Arc<crate::pg_catalog::RelationSizes>,
    /// DataFusion's state (functions, catalog, configuration), built once:
    /// it is not changed by statements, and copying it costs more than
    /// planning a point query.
    state: SessionState,
    /// What plans execute with, derived from `state` once.
    task_ctx: Arc<TaskContext>,
    /// SET / SHOW state.
    pub settings: Settings,
    block: Block,
    /// Isolation of the open block.
    isolation: Isolation,
    /// Savepoints of the open block (see [`Session::rollback_to`]).
    savepoints: Savepoints,
    /// Notices for the client (e.g. "there is no transaction in progress").
    pub notices: Vec<Notice>,
    /// A COPY FROM STDIN receiving data.
    copy: Option<copy_in::CopyIn>,
    /// The role the client connected as.
    user: String,
    /// Plans of SQL the session generates (DML's row-finding queries).
    generated: PlansByText,
    /// Plan caches of auto-parameterised statements.
    shapes: ShapeCaches,
    /// What the session learnt of simple-protocol texts, by skeleton.
    simple_texts: ByText<Sighting>,
    /// A statement is running, or was stopped part-way (see [`Session::settle`]).
    interrupted: bool,
    /// Expressions of point reads and VALUES rows, compiled once (see [`crate::compiled_exprs`]).
    compiled: ExprCache,
    /// nextval/currval of this session, and the values of SERIAL columns.
    pub(crate) sequences: Arc<SessionSequences>,
}

/// A message for the client that is not an error, as PostgreSQL sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `NOTICE` or `WARNING`.
    pub severity: &'static str,
    pub sqlstate: &'static str,
    pub message: String,
}

impl Notice {
    /// A NOTICE (e.g. "relation … already exists, skipping", 42P07).
    pub fn info(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self { severity: "NOTICE", sqlstate, message: message.into() }
    }

    /// A WARNING (e.g. "there is no transaction in progress", 25P01).
    pub fn warning(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self { severity: "WARNING", sqlstate, message: message.into() }
    }
}

/// The statement `sql` holds, if it parses to exactly one.
fn parse_one(sql: &str) -> Option<Statement> {
    let mut stmts = parse(sql).ok()?;
    (stmts.len() == 1).then(|| stmts.remove(0))
}

/// Parses SQL text into statements (PostgreSQL dialect), rewriting the
/// catalog queries of tools (psql, drivers) into forms DataFusion plans.
pub fn parse(sql: &str) -> Result<Vec<Statement>> {
    // VACUUM does nothing in ebb (storage collects garbage itself), so its
    // PostgreSQL options (`VACUUM ANALYZE t`, `VACUUM (FULL) t`), which the
    // parser does not know, are dropped.
    let body = sql.trim().trim_end_matches(';');
    if body.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("vacuum")) && !body.contains(';') {
        return crate::catalog_sql::parse("VACUUM").map_err(|e| ComputeError::Syntax(format!("syntax error: {e}")));
    }
    if body.get(..14).is_some_and(|w| w.eq_ignore_ascii_case("alter sequence")) && !body.contains(';') {
        // sqlparser does not parse it: an ALTER TABLE carries it.
        let as_table = sequences::alter_sequence_as_table(body)?;
        return Parser::parse_sql(&PostgreSqlDialect {}, &as_table).map_err(|e| ComputeError::Syntax(format!("syntax error: {e}")));
    }
    let mut sql = copy::normalize_boolean_options(sql);
    // Sorting options changes no word the checks of `lower` look for.
    let lower = sql.to_ascii_lowercase();
    if sequences::may_hold_options(&lower)
        && let Cow::Owned(sorted) = sequences::canonical_option_order(&sql)
    {
        sql = Cow::Owned(sorted);
    }
    let catalog = is_catalog_query(&lower);
    let parsed = if catalog {
        crate::catalog_sql::parse(&sql)
    } else {
        Parser::parse_sql(&PostgreSqlDialect {}, &sql)
    };
    let mut stmts = parsed.map_err(|e| ComputeError::Syntax(format!("syntax error: {e}")))?;
    crate::function_aliases::name_columns_after_aliases(&mut stmts);
    // The AST rewrites below walk every statement: they run only on SQL
    // that can hold what they rewrite (pgbench's simple protocol parses
    // each statement it sends).
    if crate::set_returning::may_apply(&lower) {
        crate::set_returning::rewrite(&mut stmts);
    }
    if crate::record_fields::may_apply(&lower) {
        crate::record_fields::rewrite(&mut stmts);
    }
    if crate::array_subqueries::may_apply(&lower) {
        crate::array_subqueries::rewrite(&mut stmts)?;
    }
    if catalog {
        crate::pg_catalog::unqualify_proc_names(&mut stmts);
        crate::pg_catalog::regclass_of_text(&mut stmts);
    }
    Ok(stmts)
}

/// Whether SQL reads the PostgreSQL catalog, so the compatibility rewrites
/// of `datafusion-pg-catalog` (for psql's and drivers' catalog queries) apply
/// (see [`catalog_sql`](crate::catalog_sql)). They are kept away from other
/// SQL, which they could only change. DDL is never one: its expressions are
/// kept as text (a DEFAULT's `'seq'::regclass` must stay a name, not become
/// a lookup). (`lower`: the SQL in lower case.)
fn is_catalog_query(lower: &str) -> bool {
    let ddl = ["create ", "alter ", "drop "].iter().any(|w| lower.trim_start().starts_with(w));
    !ddl && (lower.contains("pg_") || lower.contains("information_schema") || lower.contains("::reg"))
}

impl Session {
    /// A session on `database`; fails with 3D000 if it does not exist.
    pub async fn open(client: StorageClient, database: &str, user: &str) -> Result<Self> {
        let storage = Arc::new(StorageSession::new(client, database.to_string()));
        let catalog = Arc::new(DatabaseCatalog::new(storage.clone()));
        catalog.refresh().await?;
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(database, PUBLIC)
            .with_information_schema(true)
            .with_target_partitions(1)
            .with_create_default_catalog_and_schema(false);
        let ctx = postgres_context(config);
        ctx.add_optimizer_rule(Arc::new(crate::aggregate_pushdown::AggregatePushdown));
        ctx.register_catalog(database, catalog.clone());
        let settings = Settings::default();
        let sizes = Arc::new(crate::pg_catalog::RelationSizes::default());
        crate::pg_catalog::install(&ctx, database, &catalog, &settings, &sizes)?;
        ctx.register_udf(settings.current_setting_udf());
        ctx.register_udf(settings.set_config_udf());
        let sequences = Arc::new(SessionSequences::new(storage.clone(), catalog.clone()));
        for udf in sequences.functions() {
            ctx.register_udf(udf);
        }
        let state = ctx.state();
        let task_ctx = state.task_ctx();
        Ok(Self { storage, catalog, sizes, state, task_ctx, settings, block: Block::Idle, isolation: Isolation::ReadCommitted, savepoints: Savepoints::default(), notices: Vec::new(), copy: None, user: user.to_string(), generated: PlansByText::default(), shapes: ShapeCaches::default(), simple_texts: ByText::default(), interrupted: false, compiled: ExprCache::default(), sequences })
    }

    /// Creates the sequences of a new table's SERIAL and IDENTITY columns,
    /// owned by it; if one cannot be made, drops the table again.
    async fn create_owned_sequences(&self, schema: &str, table: &TableDef, owned: Vec<OwnedSequence>) -> Result<()> {
        for seq in owned {
            if let Err(e) = self.create_owned_sequence(schema, table, seq).await {
                self.storage.client.drop_table(self.database(), schema, &table.name, true, false).await?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The UNIQUE and FOREIGN KEY constraints of a table CREATE TABLE just
    /// made (a key is added to the definition the previous one left).
    async fn add_constraints(&mut self, schema: &str, table: &TableDef, uniques: Vec<indexes::UniqueSpec>, keys: Vec<foreign_keys::ForeignKeySpec>) -> Result<()> {
        for spec in uniques {
            indexes::add_unique(self, schema, &table.name, spec).await?;
        }
        if keys.is_empty() {
            return Ok(());
        }
        self.catalog.refresh().await?;
        for spec in keys {
            let current = self.catalog.table(Some(schema).filter(|s| !s.is_empty()), &table.name).map(|t| t.def().clone()).unwrap_or_else(|| table.clone());
            foreign_keys::add_foreign_key(self, &current, spec).await?;
            self.catalog.refresh().await?;
        }
        Ok(())
    }

    /// Creates a sequence owned by a column of `table`.
    async fn create_owned_sequence(&self, schema: &str, table: &TableDef, seq: OwnedSequence) -> Result<()> {
        let options = SequenceOptions { owned_by_table: table.id, owned_by_column: seq.column, ..seq.options };
        let req = CreateTableRequest {
            database: self.database().into(),
            schema: schema.into(),
            name: seq.name,
            sequence: Some(options),
            ..Default::default()
        };
        self.storage.client.create_table(req).await.map(drop)
    }

    /// `ALTER TABLE t ALTER COLUMN c ADD GENERATED … AS IDENTITY [(options)]`
    /// (pg_dump restores identity columns so): a sequence owned by the
    /// column, then the column's identity; the sequence is dropped again if
    /// the column cannot take it.
    pub(crate) async fn add_identity(&self, table: &ObjectName, column: &str, always: bool, given: &[AstSequenceOptions]) -> Result<()> {
        let (schema, name) = ddl::object_name(table)?;
        let relation = self.catalog.table(schema.as_deref(), &name).ok_or_else(|| ComputeError::invalid("42P01", format!("relation \"{name}\" does not exist")))?;
        let def = relation.def();
        let c = def.columns.iter().find(|c| c.name == column).ok_or_else(|| {
            ComputeError::invalid("42703", format!("column \"{column}\" of relation \"{name}\" does not exist"))
        })?;
        let kind = match c.r#type.as_ref().map(ebb_proto::storage::ColumnType::kind) {
            Some(k @ (TypeKind::Smallint | TypeKind::Integer | TypeKind::Bigint)) => k,
            _ => return Err(ComputeError::invalid("22023", "identity column type must be smallint, integer, or bigint")),
        };
        let options = sequences::sequence_options(kind, given)?;
        let seq = sequences::owned_sequence_name(&name, column);
        let schema = def.schema.clone();
        self.create_owned_sequence(&schema, def, OwnedSequence { name: seq.clone(), column: column.into(), options }).await?;
        let change = AddIdentity { identity: if always { "a" } else { "d" }.into(), default_expr: sequences::nextval_default(&schema, &seq) };
        let req = AlterTableRequest {
            database: self.database().into(),
            schema: schema.clone(),
            name: name.clone(),
            action: Some(Action::AlterColumn(AlterColumn { column: column.into(), change: Some(Change::AddIdentity(change)) })),
        };
        if let Err(e) = self.storage.client.alter_table(req).await {
            self.storage.client.drop_table(self.database(), &schema, &seq, true, true).await?;
            return Err(e);
        }
        Ok(())
    }

    /// OWNED BY `table.column` (or NONE) of CREATE SEQUENCE.
    pub(crate) fn set_owner(&self, options: &mut SequenceOptions, owner: &ObjectName) -> Result<()> {
        if owner.to_string().eq_ignore_ascii_case("none") {
            return Ok(());
        }
        let (table_name, column) = match owner.0.split_last() {
            Some((column, table)) if !table.is_empty() => (ObjectName(table.to_vec()), column.to_string()),
            _ => return Err(ComputeError::invalid("42601", "invalid OWNED BY option: specify OWNED BY table.column or OWNED BY NONE")),
        };
        let (schema, name) = ddl::object_name(&table_name)?;
        let table = self.catalog.table(schema.as_deref(), &name).ok_or_else(|| ComputeError::invalid("42P01", format!("relation \"{name}\" does not exist")))?;
        let column = ddl::ident(&Ident::new(column));
        if !table.def().columns.iter().any(|c| c.name == column) {
            return Err(ComputeError::invalid("42703", format!("column \"{column}\" of relation \"{name}\" does not exist")));
        }
        options.owned_by_table = table.def().id;
        options.owned_by_column = column;
        Ok(())
    }

    /// Role statements apply at once (they are not transactional) and need
    /// a superuser.
    async fn role_admin(&self, what: &str) -> Result<()> {
        if self.block != Block::Idle {
            return Err(ComputeError::invalid("25001", format!("{what} cannot run inside a transaction block")));
        }
        roles::check_superuser(&self.storage.client, &self.user).await
    }

    /// `ALTER TABLE … OWNER TO role` (pg_dump writes one per table and
    /// sequence): ebb's tables have no owners — every role that may connect
    /// to a database may use its tables — so the statement changes nothing
    /// and says so; a role the cluster does not have is 42704 (while it has
    /// none at all, as `ebb local` starts, any name is taken).
    pub(crate) async fn owner_to(&mut self, owner: &Owner) -> Result<()> {
        if let Owner::Ident(name) = owner {
            let name = ddl::ident(name);
            if !self.storage.client.list_roles().await?.is_empty() {
                self.existing_role(&name).await?;
            }
        }
        self.notices.push(Notice::info("00000", "ebb's tables have no owners; OWNER TO changes nothing"));
        Ok(())
    }

    async fn existing_role(&self, name: &str) -> Result<ebb_proto::storage::Role> {
        self.storage.client.get_role(name).await?.ok_or_else(|| ComputeError::invalid("42704", format!("role \"{name}\" does not exist")))
    }

    /// The transaction block state (for the ReadyForQuery status byte).
    pub fn block(&self) -> Block {
        self.block
    }

    /// The connected database.
    pub fn database(&self) -> &str {
        &self.storage.database
    }

    pub(crate) fn storage(&self) -> &Arc<StorageSession> {
        &self.storage
    }

    pub(crate) fn catalog(&self) -> &Arc<DatabaseCatalog> {
        &self.catalog
    }

    /// Whether the scalar function `name` (lower case) gives a new value
    /// each time it runs (`random()`, `nextval()`); unknown names are not.
    pub(crate) fn is_volatile_function(&self, name: &str) -> bool {
        use datafusion::logical_expr::Volatility;
        self.state.scalar_functions().get(name).is_some_and(|f| f.signature().volatility == Volatility::Volatile)
    }

    /// Runs one statement with positional parameter values. A statement
    /// without parameters (the simple protocol's) whose integer literals
    /// can be bound as parameters runs as its shape (see [`auto_params`]).
    pub async fn execute(&mut self, stmt: &Statement, params: &[ScalarValue]) -> Result<Output> {
        if params.is_empty()
            && let Some((shape, values, cache)) = self.auto_parameterised(stmt).await
        {
            return self.execute_prepared(&shape, &values, Some(&cache)).await;
        }
        self.execute_prepared(stmt, params, None).await
    }

    /// Runs simple-protocol text `sql`, cut as `skeleton`, as the shape
    /// learnt from earlier texts with that skeleton, without parsing it
    /// (see [`simple_shapes`]); otherwise (not learnt, or its values do not
    /// bind) says whether the parsed text should go to
    /// [`Session::note_simple_text`].
    pub async fn execute_known_text(&mut self, sql: &str, skeleton: &Skeleton) -> KnownText {
        let generation = self.catalog.generation();
        let known = match self.simple_texts.get(&skeleton.key, generation) {
            None | Some(Sighting::Once) => return KnownText::Parse { learning: true },
            Some(Sighting::Unlearnable) => return KnownText::Parse { learning: false },
            Some(Sighting::Learnt(known)) => known,
        };
        if self.block == Block::Failed {
            return KnownText::Parse { learning: false };
        }
        let Some(values) = known.values(sql, skeleton) else { return KnownText::Parse { learning: false } };
        let cache = self.shapes.get_or_keep(&known.text, generation, Arc::default);
        let Some(values) = self.bound_values(&known.stmt, &values, &cache).await else { return KnownText::Parse { learning: false } };
        KnownText::Ran(self.execute_prepared(&known.stmt, &values, Some(&cache)).await)
    }

    /// Notes that simple-protocol text `sql`, cut as `skeleton`, parsed to
    /// the one statement `stmt`: the second time the skeleton is seen, the
    /// shape is learnt.
    pub fn note_simple_text(&self, sql: &str, skeleton: &Skeleton, stmt: &Statement) {
        let generation = self.catalog.generation();
        let sighting = match self.simple_texts.get(&skeleton.key, generation) {
            None => Sighting::Once,
            Some(Sighting::Once) => auto_params::parameterise(stmt)
                .filter(|shape| !is_catalog_query(&shape.text.to_ascii_lowercase()))
                .and_then(|shape| KnownShape::learn(sql, skeleton, &shape, parse_one))
                .map_or(Sighting::Unlearnable, |k| Sighting::Learnt(Arc::new(k))),
            Some(_) => return,
        };
        self.simple_texts.keep(&skeleton.key, generation, sighting);
    }

    /// `values` bound to the types planning gives `shape`'s parameters,
    /// when each fits exactly.
    async fn bound_values(&self, shape: &Statement, values: &[i64], cache: &PlanCache) -> Option<Vec<ScalarValue>> {
        let types = self.param_types(shape, Some(cache)).await.ok()?;
        if types.len() != values.len() {
            return None;
        }
        values.iter().zip(&types).map(|(v, t)| auto_params::bind(*v, t.as_ref()?)).collect()
    }

    /// `stmt`'s shape with the values to bind and its plan cache, when
    /// every replaced literal binds exactly to the type planning gives its
    /// parameter; `None` runs the statement as written.
    async fn auto_parameterised(&self, stmt: &Statement) -> Option<(Statement, Vec<ScalarValue>, Arc<PlanCache>)> {
        if self.block == Block::Failed {
            return None;
        }
        let shape = auto_params::parameterise(stmt)?;
        if is_catalog_query(&shape.text.to_ascii_lowercase()) {
            // Planned afresh every run anyway (they read the catalog as it is now).
            return None;
        }
        let cache = self.shapes.get_or_keep(&shape.text, self.catalog.generation(), Arc::default);
        let values = self.bound_values(&shape.stmt, &shape.values, &cache).await?;
        Some((shape.stmt, values, cache))
    }

    /// Runs one statement, reusing and keeping its plan in `cache` (a
    /// prepared statement's).
    pub async fn execute_prepared(&mut self, stmt: &Statement, params: &[ScalarValue], cache: Option<&PlanCache>) -> Result<Output> {
        self.settle().await;
        self.interrupted = true;
        let result = self.execute_uninterrupted(stmt, params, cache).await;
        self.interrupted = false;
        result
    }

    /// Cleans up after a statement that was stopped part-way (its future
    /// dropped by a cancel request): as after any error, its block fails
    /// (what it wrote or deferred must not commit) and a transaction of its
    /// own is rolled back. Runs before the next statement and before the
    /// status byte is reported.
    pub async fn settle(&mut self) {
        if std::mem::take(&mut self.interrupted) {
            tracing::debug!("cleaning up after an interrupted statement");
            self.end_failed_statement().await;
        }
    }

    /// What a failed (or interrupted) statement leaves: its block fails;
    /// a transaction of its own still open (a statement timeout stopped it
    /// before it could end it) is rolled back.
    async fn end_failed_statement(&mut self) {
        match self.block {
            Block::Open => self.abort_block().await,
            Block::Idle if self.storage.in_transaction() => {
                let (txn, _) = self.storage.end_txn();
                if txn != 0
                    && let Err(e) = self.storage.client.rollback(self.database(), txn).await
                {
                    tracing::debug!(error = %e, "rollback of an interrupted statement's transaction");
                }
            }
            _ => {}
        }
    }

    async fn execute_uninterrupted(&mut self, stmt: &Statement, params: &[ScalarValue], cache: Option<&PlanCache>) -> Result<Output> {
        if self.block == Block::Idle {
            // `now()` and CURRENT_TIMESTAMP are the start of the transaction,
            // as in PostgreSQL: this statement's, or the block's (BEGIN).
            self.state.mark_start_execution();
        }
        let ends_block = matches!(stmt, Statement::Commit { .. } | Statement::Rollback { .. });
        if self.block == Block::Failed && !ends_block {
            return Err(ComputeError::TransactionAborted);
        }
        if self.block == Block::Open
            && uses_tables(stmt)
            && let Err(e) = self.snapshot_for_statement().await
        {
            self.abort_block().await;
            return Err(e);
        }
        let mut attempts = 0;
        let mut reloads = 0;
        let result = loop {
            let writes = self.storage.writes();
            match self.run_timed(stmt, params, ends_block, cache).await {
                // The cached catalog was stale: run the statement again on a
                // fresh one if nothing of it was written.
                Err(e) if self.storage.writes() == writes && reloads < MAX_CATALOG_RELOADS && self.reload_if_stale(stmt, &e).await => {
                    reloads += 1;
                    tracing::debug!(error = %e, "re-running a statement after reloading the catalog");
                }
                // READ COMMITTED: a row this statement writes changed after its
                // snapshot, and none of its writes was taken: run it again on a
                // fresh snapshot (in a block, the transaction keeps its locks).
                Err(ComputeError::RetryStatement(_)) if self.storage.writes() == writes && attempts < MAX_STATEMENT_RETRIES => {
                    attempts += 1;
                    tracing::debug!(attempts, "re-running a statement on a fresh snapshot");
                    self.storage.next_statement();
                }
                r => break r,
            }
        };
        if result.is_err() {
            self.end_failed_statement().await;
        }
        result
    }

    /// The snapshot a statement of a block reads. As in PostgreSQL, a
    /// block's transaction takes its first snapshot with its first query,
    /// not at BEGIN; under READ COMMITTED each statement reads the latest
    /// commits: storage moves the snapshot at the first request of the next
    /// statement number (no round trip of its own).
    /// The storage transaction itself begins with the block's first request
    /// to storage (see [`StorageSession::begin_later`]).
    async fn snapshot_for_statement(&mut self) -> Result<()> {
        self.storage.begin_later(self.isolation);
        self.storage.next_statement();
        Ok(())
    }

    /// Runs a statement under `statement_timeout`.
    async fn run_timed(&mut self, stmt: &Statement, params: &[ScalarValue], ends_block: bool, cache: Option<&PlanCache>) -> Result<Output> {
        let timeout = self.settings.statement_timeout_ms();
        if timeout > 0 && !ends_block {
            match tokio::time::timeout(Duration::from_millis(timeout), self.dispatch(stmt, params, cache)).await {
                Ok(r) => r,
                Err(_) => Err(ComputeError::invalid("57014", "canceling statement due to statement timeout")),
            }
        } else {
            self.dispatch(stmt, params, cache).await
        }
    }

    /// Whether `e` may come from the session's catalog being stale, and
    /// reloading it changed something: the statement is then worth running
    /// again. Suspect are storage refusing a table definition, and errors
    /// compute raised itself for a statement on tables (a table or column
    /// it did not find, a value that did not fit a column type it knew);
    /// errors storage raised against the current definition are final.
    async fn reload_if_stale(&self, stmt: &Statement, e: &ComputeError) -> bool {
        let suspect = match e {
            ComputeError::CatalogChanged(_) => true,
            ComputeError::Query { .. } | ComputeError::InvalidInput { .. } | ComputeError::NotSupported(_) => uses_tables(stmt),
            _ => false,
        };
        if !suspect {
            return false;
        }
        match self.catalog.refresh().await {
            // Storage refused the definition the statement was planned
            // with: worth a re-run even if the catalog was brought up to
            // date in the meantime (after DDL the row watch reported).
            Ok(changed) => changed || matches!(e, ComputeError::CatalogChanged(_)),
            Err(r) => {
                tracing::debug!(error = %r, "reloading the catalog failed");
                false
            }
        }
    }

    /// Marks the block failed and releases its storage transaction (kept
    /// while savepoints exist, so ROLLBACK TO can resume the block).
    async fn abort_block(&mut self) {
        let txn = self.storage.txn();
        if txn != 0 && self.savepoints.is_empty() {
            if let Err(e) = self.storage.client.rollback(&self.storage.database, txn).await {
                tracing::debug!(error = %e, "rollback of a failed transaction block");
            }
            self.storage.set_txn(0);
        }
        self.block = Block::Failed;
    }

    /// Ends the session: an open transaction is rolled back.
    pub async fn close(&mut self) {
        let txn = self.storage.txn();
        if txn != 0 {
            let _ = self.storage.client.rollback(&self.storage.database, txn).await;
            self.storage.set_txn(0);
        }
    }

    async fn dispatch(&mut self, stmt: &Statement, params: &[ScalarValue], cache: Option<&PlanCache>) -> Result<Output> {
        let output = self.run_statement(stmt, params, cache).await?;
        if changes_catalog(stmt)
            && let Err(e) = self.catalog.refresh().await
        {
            // This session's own DDL is done; a later statement that finds
            // the catalog stale reloads it then.
            tracing::warn!(error = %e, "reloading the catalog after DDL failed");
        }
        Ok(output)
    }

    async fn run_statement(&mut self, stmt: &Statement, params: &[ScalarValue], cache: Option<&PlanCache>) -> Result<Output> {
        if needs_deferred_writes_sent(stmt) {
            self.storage.flush_deferred().await?;
        }
        match stmt {
            Statement::StartTransaction { modes, .. } => self.begin(modes).await,
            Statement::Commit { .. } => self.commit().await,
            Statement::Rollback { savepoint: Some(name), .. } => self.rollback_to(&name.value).await,
            Statement::Rollback { .. } => self.rollback().await,
            Statement::Savepoint { name } => {
                if self.block == Block::Idle {
                    return Err(ComputeError::invalid("25P01", "SAVEPOINT can only be used in transaction blocks"));
                }
                let number = self.savepoints.set(&name.value, self.storage.writes());
                self.storage.set_savepoint(number);
                Ok(Output::Command("SAVEPOINT".into()))
            }
            Statement::ReleaseSavepoint { name } => {
                if !self.savepoints.release(&name.value) {
                    return Err(no_savepoint(&name.value));
                }
                self.storage.set_savepoint(self.savepoints.newest());
                Ok(Output::Command("RELEASE".into()))
            }
            Statement::Query(_) | Statement::Explain { .. } => self.query(stmt, params, cache).await,
            Statement::Insert(i) => dml::insert(self, i, params).await,
            Statement::Update(u) => dml::update(self, u, params).await,
            Statement::Delete(d) => dml::delete(self, d, params).await,
            Statement::Truncate(t) => dml::truncate(self, t).await,
            Statement::Copy { source, to, target, options, legacy_options, .. } => {
                let from = copy::copy_from(source, *to, target, options, legacy_options)?;
                self.start_copy(from).await
            }
            Statement::CreateTable(ct) if ct.query.is_some() => create_table_as::create_table_as(self, ct).await,
            Statement::CreateTable(ct) => {
                let new = ddl::create_table(self.database(), ct)?;
                let schema = new.request.schema.clone();
                let (def, created) = self.storage.client.create_table(new.request).await?;
                if created {
                    self.create_owned_sequences(&schema, &def, new.sequences).await?;
                    if let Err(e) = self.add_constraints(&schema, &def, new.uniques, new.foreign_keys).await {
                        self.storage.client.drop_table(self.database(), &schema, &def.name, true, false).await?;
                        return Err(e);
                    }
                }
                Ok(Output::Command("CREATE TABLE".into()))
            }
            Statement::CreateIndex(ci) => indexes::create_index(self, ci).await,
            Statement::Drop { object_type: ObjectType::Index, if_exists, names, .. } => indexes::drop_indexes(self, names, *if_exists).await,
            Statement::CreateSequence { temporary, if_not_exists, name, data_type, sequence_options, owned_by } => {
                if *temporary {
                    return Err(ComputeError::unsupported("temporary sequences"));
                }
                let (schema, name) = ddl::object_name(name)?;
                let mut options = sequences::sequence_options(sequences::sequence_type(data_type.as_ref())?, sequence_options)?;
                if let Some(owner) = owned_by {
                    self.set_owner(&mut options, owner)?;
                }
                let req = CreateTableRequest {
                    database: self.database().into(),
                    schema: schema.unwrap_or_default(),
                    name,
                    if_not_exists: *if_not_exists,
                    sequence: Some(options),
                    ..Default::default()
                };
                self.storage.client.create_table(req).await?;
                Ok(Output::Command("CREATE SEQUENCE".into()))
            }
            Statement::AlterTable(at) => alter_table::alter_table(self, at).await,
            Statement::Drop { object_type: kind @ (ObjectType::Table | ObjectType::Sequence), if_exists, names, .. } => {
                let sequence = *kind == ObjectType::Sequence;
                for n in names {
                    let (schema, name) = ddl::object_name(n)?;
                    self.storage.client.drop_table(self.database(), schema.as_deref().unwrap_or(""), &name, *if_exists, sequence).await?;
                }
                Ok(Output::Command(if sequence { "DROP SEQUENCE" } else { "DROP TABLE" }.into()))
            }
            Statement::Drop { object_type: ObjectType::Database, if_exists, names, .. } => {
                for n in names {
                    let (_, name) = ddl::object_name(n)?;
                    if name == self.database() {
                        return Err(ComputeError::invalid("55006", "cannot drop the currently open database"));
                    }
                    self.storage.client.drop_database(&name, *if_exists).await?;
                }
                Ok(Output::Command("DROP DATABASE".into()))
            }
            Statement::CreateDatabase { db_name, if_not_exists, .. } => {
                let (_, name) = ddl::object_name(db_name)?;
                self.storage.client.create_database(&name, *if_not_exists).await?;
                Ok(Output::Command("CREATE DATABASE".into()))
            }
            Statement::CreateRole(cr) => {
                self.role_admin("CREATE ROLE").await?;
                for role in roles::create_roles(cr)? {
                    let name = role.name.clone();
                    match self.storage.client.put_role(role, true).await {
                        Err(e) if cr.if_not_exists && e.sqlstate() == "42710" => {
                            self.notices.push(Notice::info("42710", format!("role \"{name}\" already exists, skipping")));
                        }
                        r => r?,
                    }
                }
                Ok(Output::Command("CREATE ROLE".into()))
            }
            Statement::AlterRole { name, operation } => {
                self.role_admin("ALTER ROLE").await?;
                let mut role = self.existing_role(&name.value).await?;
                roles::alter_role(&mut role, operation)?;
                self.storage.client.put_role(role, false).await?;
                Ok(Output::Command("ALTER ROLE".into()))
            }
            Statement::Drop { object_type: ObjectType::Role, if_exists, names, .. } => {
                self.role_admin("DROP ROLE").await?;
                for n in names {
                    let (_, name) = ddl::object_name(n)?;
                    if name == self.user {
                        return Err(ComputeError::invalid("55006", "current user cannot be dropped"));
                    }
                    self.storage.client.drop_role(&name, *if_exists).await?;
                }
                Ok(Output::Command("DROP ROLE".into()))
            }
            Statement::Grant(g) => {
                self.role_admin("GRANT").await?;
                let (databases, grantees) = roles::connect_grant(&g.privileges, g.objects.as_ref(), &g.grantees)?;
                for name in grantees {
                    let mut role = self.existing_role(&name).await?;
                    for db in &databases {
                        if !role.connect.contains(db) {
                            role.connect.push(db.clone());
                        }
                    }
                    self.storage.client.put_role(role, false).await?;
                }
                Ok(Output::Command("GRANT".into()))
            }
            Statement::Revoke(r) => {
                self.role_admin("REVOKE").await?;
                let (databases, grantees) = roles::connect_grant(&r.privileges, r.objects.as_ref(), &r.grantees)?;
                for name in grantees {
                    let mut role = self.existing_role(&name).await?;
                    role.connect.retain(|d| !databases.contains(d));
                    self.storage.client.put_role(role, false).await?;
                }
                Ok(Output::Command("REVOKE".into()))
            }
            Statement::Set(set) => self.set(set),
            Statement::ShowVariable { variable } => {
                let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ");
                let value = self.settings.get(&name)?;
                let schema = Arc::new(Schema::new(vec![Field::new(name.to_lowercase(), DataType::Utf8, false)]));
                let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(arrow::array::StringArray::from(vec![value]))])
                    .map_err(|e| ComputeError::Internal(e.to_string()))?;
                Ok(Output::Rows { schema, batches: vec![batch] })
            }
            Statement::Reset(r) => {
                match &r.reset {
                    Reset::ALL => self.settings.reset(None)?,
                    Reset::ConfigurationParameter(p) => self.settings.reset(Some(&p.to_string()))?,
                }
                Ok(Output::Command("RESET".into()))
            }
            Statement::Discard { .. } => {
                self.settings.reset(None)?;
                Ok(Output::Command("DISCARD ALL".into()))
            }
            // Storage collects old versions on its own; there is nothing to do.
            Statement::Vacuum(_) => Ok(Output::Command("VACUUM".into())),
            Statement::Analyze(_) => Ok(Output::Command("ANALYZE".into())),
            other => Err(ComputeError::unsupported(format!("the statement \"{}\"", first_words(&other.to_string())))),
        }
    }

    /// The isolation of transactions that do not name one.
    pub(crate) fn default_isolation(&self) -> Result<Isolation> {
        settings::isolation_level(&self.settings.get("default_transaction_isolation")?)
    }

    async fn begin(&mut self, modes: &[TransactionMode]) -> Result<Output> {
        match self.block {
            Block::Idle => {
                let mut isolation = self.default_isolation()?;
                for m in modes {
                    if let TransactionMode::IsolationLevel(level) = m {
                        isolation = match level {
                            TransactionIsolationLevel::ReadUncommitted | TransactionIsolationLevel::ReadCommitted => Isolation::ReadCommitted,
                            TransactionIsolationLevel::RepeatableRead => Isolation::Snapshot,
                            other => settings::isolation_level(&other.to_string())?,
                        };
                    }
                }
                // The storage transaction starts with the first query
                // (see `snapshot_for_statement`).
                self.block = Block::Open;
                self.isolation = isolation;
            }
            Block::Open | Block::Failed => self.notices.push(Notice::warning("25001", "there is already a transaction in progress")),
        }
        Ok(Output::Command("BEGIN".into()))
    }

    async fn commit(&mut self) -> Result<Output> {
        match self.block {
            Block::Idle => {
                self.notices.push(Notice::warning("25P01", "there is no transaction in progress"));
                Ok(Output::Command("COMMIT".into()))
            }
            Block::Failed => {
                self.end_block_failed().await;
                Ok(Output::Command("ROLLBACK".into()))
            }
            Block::Open => {
                let (txn, deferred) = self.storage.end_txn();
                self.block = Block::Idle;
                self.end_savepoints();
                if txn != 0 {
                    self.storage.client.commit(self.database(), txn, deferred).await?;
                }
                Ok(Output::Command("COMMIT".into()))
            }
        }
    }

    /// Ends a failed block: its storage transaction (if kept) is rolled back.
    async fn end_block_failed(&mut self) {
        let txn = self.storage.txn();
        self.storage.set_txn(0);
        self.block = Block::Idle;
        self.end_savepoints();
        if txn != 0
            && let Err(e) = self.storage.client.rollback(self.database(), txn).await
        {
            tracing::debug!(error = %e, "rollback of a failed transaction block");
        }
    }

    /// The block ended: no savepoint is open.
    fn end_savepoints(&mut self) {
        self.savepoints.clear();
        self.storage.set_savepoint(0);
    }

    /// ROLLBACK TO SAVEPOINT: storage undoes the writes made since it was
    /// set (nothing to undo when none was), and a failed block is open again.
    async fn rollback_to(&mut self, name: &str) -> Result<Output> {
        if self.block == Block::Idle {
            return Err(ComputeError::invalid("25P01", "ROLLBACK TO SAVEPOINT can only be used in transaction blocks"));
        }
        let (number, writes) = self.savepoints.roll_back_to(name).ok_or_else(|| no_savepoint(name))?;
        self.storage.set_savepoint(number);
        let txn = self.storage.txn();
        if txn != 0 && writes != self.storage.writes() {
            self.storage.client.rollback_to_savepoint(self.database(), txn, number).await?;
        }
        self.block = Block::Open;
        Ok(Output::Command("ROLLBACK".into()))
    }

    async fn rollback(&mut self) -> Result<Output> {
        if self.block == Block::Idle {
            self.notices.push(Notice::warning("25P01", "there is no transaction in progress"));
        }
        self.end_savepoints();
        let txn = self.storage.txn();
        self.storage.set_txn(0);
        self.block = Block::Idle;
        if txn != 0 {
            self.storage.client.rollback(self.database(), txn).await?;
        }
        Ok(Output::Command("ROLLBACK".into()))
    }

    fn set(&mut self, set: &Set) -> Result<Output> {
        match set {
            Set::SingleAssignment { variable, values, .. } => {
                let value = values.iter().map(setting_text).collect::<Vec<_>>().join(", ");
                self.settings.set(&variable.to_string(), &value)?;
            }
            Set::SetTimeZone { value, .. } => self.settings.set("timezone", &setting_text(value))?,
            Set::SetNames { charset_name, .. } => self.settings.set("client_encoding", &charset_name.to_string())?,
            Set::SetTransaction { modes, session, .. } => {
                for m in modes {
                    if let TransactionMode::IsolationLevel(level) = m {
                        let level = level.to_string();
                        if *session {
                            // SET SESSION CHARACTERISTICS AS TRANSACTION …
                            self.settings.set("default_transaction_isolation", &level)?;
                        } else if self.block != Block::Idle && settings::isolation_level(&level)? != self.isolation {
                            if self.storage.in_transaction() {
                                return Err(ComputeError::invalid("25001", "SET TRANSACTION ISOLATION LEVEL must be called before any query"));
                            }
                            self.isolation = settings::isolation_level(&level)?;
                        }
                        self.settings.set("transaction_isolation", &level)?;
                    }
                }
            }
            other => return Err(ComputeError::unsupported(format!("\"{other}\""))),
        }
        Ok(Output::Command("SET".into()))
    }

    /// Plans a statement with DataFusion against the session's catalog.
    pub(crate) async fn plan(&self, stmt: &Statement) -> Result<LogicalPlan> {
        self.catch_up_with_ddl().await?;
        let mut plan = self.plan_once(stmt).await?;
        if reads_system_tables(&plan) && self.catalog.refresh().await? {
            // `pg_catalog` and `information_schema` list the tables: they
            // read the catalog as storage has it now.
            plan = self.plan_once(stmt).await?;
        }
        let sizes = crate::pg_catalog::size_calls(&plan);
        if sizes.any() {
            self.sizes.refresh(&self.storage.client, self.database(), sizes).await?;
        }
        Ok(plan)
    }

    /// Reloads the catalog if the row watch reported DDL since the last
    /// look, so a statement is not planned (nor a kept plan used) against
    /// a definition another session changed.
    async fn catch_up_with_ddl(&self) -> Result<()> {
        if let Some(count) = self.storage.catalog_changes_unseen() {
            self.catalog.refresh().await?;
            self.storage.catalog_caught_up(count);
        }
        Ok(())
    }

    /// Plans SQL text the session generated (see [`PlansByText`]): the plan
    /// kept for the current catalog, or a new one, kept unless it reads the
    /// catalog or storage's sizes (making those fetches what they read).
    /// `stmt`: the text parsed, when the caller has it.
    pub(crate) async fn plan_generated(&self, sql: &str, stmt: Option<&Statement>) -> Result<LogicalPlan> {
        self.catch_up_with_ddl().await?;
        let generation = self.catalog.generation();
        if let Some(plan) = self.generated.get(sql, generation) {
            return Ok(plan);
        }
        let parsed;
        let stmt = match stmt {
            Some(s) => s,
            None => {
                parsed = parse(sql)?;
                parsed.first().ok_or_else(|| ComputeError::Internal("empty generated query".into()))?
            }
        };
        let plan = self.plan(stmt).await?;
        if sql.len() <= plan_cache::MAX_KEPT_TEXT && !reads_system_tables(&plan) && !crate::pg_catalog::size_calls(&plan).any() {
            self.generated.keep(sql, generation, plan.clone());
        }
        Ok(plan)
    }

    /// Plans a statement; select lists with repeated names (which DataFusion
    /// refuses) are planned again renamed apart (see [`duplicate_names`]).
    async fn plan_once(&self, stmt: &Statement) -> Result<LogicalPlan> {
        let plan = |stmt: Statement| self.state.statement_to_plan(DfStatement::Statement(Box::new(stmt)));
        match plan(stmt.clone()).await {
            Err(e) if duplicate_names::is_duplicate_names_error(&e) => match plan(duplicate_names::renamed_apart(stmt, false)).await {
                Err(e) if duplicate_names::is_duplicate_names_error(&e) => Ok(plan(duplicate_names::renamed_apart(stmt, true)).await?),
                r => Ok(r?),
            },
            r => Ok(r?),
        }
    }

    /// A query's plan: the one `cache` kept for the current catalog, or a
    /// new one that it keeps.
    async fn query_plan(&self, stmt: &Statement, cache: Option<&PlanCache>) -> Result<LogicalPlan> {
        self.catch_up_with_ddl().await?;
        let generation = self.catalog.generation();
        // Plans reading the catalog or storage's sizes are made afresh: making
        // them fetches what they read.
        let fresh = |p: &LogicalPlan| !reads_system_tables(p) && !crate::pg_catalog::size_calls(p).any();
        if let Some(plan) = cache.and_then(|c| c.plan(generation)).filter(fresh) {
            return Ok(plan);
        }
        let plan = self.plan(stmt).await?;
        if let Some(cache) = cache {
            // PostgreSQL's words, which drivers (pgjdbc) recognise and prepare again on.
            cache
                .keep_plan(self.catalog.generation(), &plan)
                .map_err(|_| ComputeError::NotSupported("cached plan must not change result type".into()))?;
        }
        Ok(plan)
    }

    /// Runs a plan: a point read by its own path (see [`PointRead`]), any
    /// other with DataFusion. `for_update`: the rows are read to be updated
    /// or deleted, and a point read in a transaction takes the row's lock
    /// first (see `ScanRequest.lock_row`).
    pub(crate) async fn run_plan(&self, plan: LogicalPlan, params: &[ScalarValue], for_update: bool) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let (schema, batches, _) = self.read(plan, params, for_update).await?;
        Ok((schema, batches))
    }

    /// As [`Session::run_plan`]; also says whether the read locked the one
    /// row it read (a point read `for_update` in a transaction), so that
    /// the write that follows cannot be refused for its key.
    pub(crate) async fn read(&self, plan: LogicalPlan, params: &[ScalarValue], for_update: bool) -> Result<(SchemaRef, Vec<RecordBatch>, bool)> {
        let point = PointRead::recognise(&plan);
        // The key's values, once; none: the general path decides.
        if let Some(point) = &point
            && let Some(values) = point.key_values(params)
        {
            // Outside a transaction block the latest commit is read: the
            // row cache may hold it.
            if self.storage.txn() == 0
                && self.storage.pending_begin().is_none()
                && !for_update
                && let Some(cache) = &self.storage.row_cache
                && let Some(key) = point.cache_key(&values)
            {
                let (schema, batches) = point.run_cached(&self.storage, cache, (key, values), self.storage.statement(), &self.state, &self.compiled, params).await?;
                return Ok((schema, batches, false));
            }
            // In a block, a row the transaction locked and wrote is known.
            if self.storage.txn() != 0
                && !for_update
                && let Some(row) = point.own_row(&self.storage, &values)
            {
                let (schema, batches) = point.shape_cached(&row, &self.state, &self.compiled, params)?;
                return Ok((schema, batches, false));
            }
            let mut req = point.request_for(values, self.storage.txn(), self.storage.statement());
            // A block's first request begins its transaction.
            req.begin = self.storage.pending_begin().map(|isolation| isolation as i32);
            let locked = for_update && (req.txn_id != 0 || req.begin.is_some());
            req.lock_row = locked;
            if req.txn_id != 0 {
                req.earlier_writes = self.storage.take_deferred();
            }
            let (schema, batches) = point.run(&self.storage, req, &self.state, &self.compiled, params).await?;
            return Ok((schema, batches, locked));
        }
        if let Some((schema, batches)) = crate::compiled_exprs::values_row(&plan, params, &self.state, &self.compiled)? {
            return Ok((schema, batches, false));
        }
        let plan = if params.is_empty() { plan } else { plan.with_param_values(params.to_vec())? };
        let physical = self.state.create_physical_plan(&plan).await?;
        let schema = result_schema(plan.schema().as_arrow(), &physical.schema());
        let batches = datafusion::physical_plan::collect(physical, self.task_ctx.clone()).await?;
        Ok((schema, batches, false))
    }

    async fn query(&mut self, stmt: &Statement, params: &[ScalarValue], cache: Option<&PlanCache>) -> Result<Output> {
        let plan = self.query_plan(stmt, cache).await?;
        let names_from = plan.clone();
        // Several scans in one statement must read one snapshot.
        let implicit = self.block == Block::Idle && count_scans(&plan) > 1;
        if implicit {
            let txn = self.storage.client.begin(self.database(), Isolation::Snapshot).await?;
            self.storage.set_txn(txn);
        }
        let result = self.run_plan(plan, params, false).await;
        if implicit {
            let txn = self.storage.txn();
            self.storage.set_txn(0);
            let _ = self.storage.client.rollback(self.database(), txn).await;
        }
        let (schema, batches) = result?;
        let (schema, batches) = column_names::named_result(&names_from, schema, batches)?;
        Ok(Output::Rows { schema, batches })
    }

    /// The transaction a writing statement runs in: the open one, or a new
    /// one of its own that [`Session::end_write`] commits.
    /// Its storage transaction begins with the statement's first request.
    pub(crate) async fn begin_write(&mut self) -> Result<WriteTxn> {
        if self.storage.in_transaction() {
            return Ok(WriteTxn { own: false });
        }
        self.storage.begin_later(self.default_isolation()?);
        Ok(WriteTxn { own: true })
    }

    /// Ends a writing statement: a transaction of its own commits when the
    /// statement succeeded and rolls back when it failed.
    pub(crate) async fn end_write<T>(&mut self, txn: WriteTxn, result: Result<T>) -> Result<T> {
        if !txn.own {
            return result;
        }
        let (id, deferred) = self.storage.end_txn();
        match result {
            // A statement that sent no request to storage began nothing.
            Ok(v) if id == 0 => Ok(v),
            Ok(v) => {
                self.storage.client.commit(self.database(), id, deferred).await?;
                Ok(v)
            }
            Err(e) if id == 0 => Err(e),
            Err(e) => {
                if let Err(r) = self.storage.client.rollback(self.database(), id).await {
                    tracing::debug!(error = %r, "rollback of a failed statement");
                }
                Err(e)
            }
        }
    }

    /// Parameter types of a statement (for Describe), and its result schema
    /// when it returns rows; a statement naming a table or column the
    /// session's catalog lacks is described again after reloading it.
    pub async fn describe(&self, stmt: &Statement, cache: Option<&PlanCache>) -> Result<Described> {
        // No catching up with DDL here: a Bind decodes its parameters by the
        // types the statement was described with, whatever changed since.
        match self.describe_with_catalog(stmt, cache).await {
            Err(e) if self.reload_if_stale(stmt, &e).await => self.describe_with_catalog(stmt, cache).await,
            r => r,
        }
    }

    /// The parameter types of a statement about to run with parameters.
    pub async fn param_types(&self, stmt: &Statement, cache: Option<&PlanCache>) -> Result<Vec<Option<DataType>>> {
        Ok(self.describe(stmt, cache).await?.0)
    }

    /// The description `cache` kept for the current catalog, or a new one
    /// that it keeps.
    async fn describe_with_catalog(&self, stmt: &Statement, cache: Option<&PlanCache>) -> Result<Described> {
        let generation = self.catalog.generation();
        if let Some(kept) = cache.and_then(|c| c.described(generation)) {
            return Ok(kept);
        }
        let described = self.describe_uncached(stmt, cache).await?;
        if let Some(cache) = cache {
            cache.keep_described(generation, &described);
        }
        Ok(described)
    }

    async fn describe_uncached(&self, stmt: &Statement, cache: Option<&PlanCache>) -> Result<Described> {
        match stmt {
            Statement::Query(_) | Statement::Explain { .. } => {
                let plan = self.query_plan(stmt, cache).await?;
                let out = param_types(&plan, 0)?;
                let planned = plan.schema().as_arrow();
                // Result types as ebb's analyzer rules leave them (`sum(bigint)` is numeric).
                let schema = if crate::checked_arithmetic::may_retype(&plan) {
                    let analyzed = self.state.analyzer().execute_and_check(plan.clone(), self.state.config_options(), |_, _| {})?;
                    result_schema(planned, &Arc::new(analyzed.schema().as_arrow().clone()))
                } else {
                    Arc::new(planned.clone())
                };
                Ok((out, Some(column_names::postgres_schema(&plan, &schema))))
            }
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let n = count_placeholders(&stmt.to_string());
                let mut out = vec![None; n];
                for (i, t) in dml::param_types(self, stmt).await? {
                    if let Some(slot) = out.get_mut(i) {
                        slot.get_or_insert(t);
                    }
                }
                Ok((out, dml::returning_schema(self, stmt).await?))
            }
            Statement::ShowVariable { variable } => {
                let name = variable.iter().map(|i| i.value.to_lowercase()).collect::<Vec<_>>().join(" ");
                Ok((vec![], Some(Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)])))))
            }
            other => Ok((vec![None; count_placeholders(&other.to_string())], None)),
        }
    }
}

/// Most reloads of the catalog one statement may cause (each needs a
/// concurrent DDL to have changed a table the statement uses).
const MAX_CATALOG_RELOADS: u32 = 3;

/// Statements that read or write tables (and are planned with the catalog).
fn uses_tables(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_)
            | Statement::Truncate(_)
            | Statement::Copy { .. }
    )
}

/// Statements before which the transaction's deferred writes must be in
/// storage: savepoints (a carried write is buffered as if none were open),
/// COPY, and DDL (which a later carried write would find changed).
fn needs_deferred_writes_sent(stmt: &Statement) -> bool {
    changes_catalog(stmt)
        || matches!(
            stmt,
            Statement::Savepoint { .. } | Statement::ReleaseSavepoint { .. } | Statement::Rollback { savepoint: Some(_), .. } | Statement::Copy { .. }
        )
}

/// Statements that create, drop or alter tables, after which the session
/// reloads its catalog.
fn changes_catalog(stmt: &Statement) -> bool {
    matches!(
        stmt,
        Statement::CreateTable(_)
            | Statement::CreateSequence { .. }
            | Statement::CreateIndex(_)
            | Statement::AlterTable(_)
            | Statement::Drop { object_type: ObjectType::Table | ObjectType::Sequence | ObjectType::Index, .. }
    )
}

/// A result's schema: the planned one (its names and PostgreSQL type
/// metadata), with the types of what runs where an analyzer rule changed
/// them (`sum(bigint)` becomes numeric).
fn result_schema(planned: &Schema, runs: &SchemaRef) -> SchemaRef {
    if planned.fields().len() != runs.fields().len() || planned.fields().iter().zip(runs.fields()).all(|(p, r)| p.data_type() == r.data_type()) {
        return Arc::new(planned.clone());
    }
    let fields: Vec<Field> = planned
        .fields()
        .iter()
        .zip(runs.fields())
        .map(|(p, r)| if p.data_type() == r.data_type() { p.as_ref().clone() } else { r.as_ref().clone().with_name(p.name()) })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, planned.metadata().clone()))
}

/// A DataFusion context that plans as a session's does: in UTC (the only
/// TimeZone accepted: `now()` and `timestamptz` constants are then time-zone
/// aware, as stored timestamptz columns are), with ebb's analyzer rules for
/// PostgreSQL's semantics (text of timestamps, checked integer arithmetic,
/// correlated subqueries). Statements that compute over rows of their own
/// (RETURNING lists, ON CONFLICT DO UPDATE) use one from `SessionConfig::new()`.
pub(crate) fn postgres_context(mut config: SessionConfig) -> SessionContext {
    config.options_mut().execution.time_zone = Some("+00:00".into());
    // `1.5` is numeric, as in PostgreSQL (see `numeric_constants`).
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    // Ours around DataFusion's analyzer rules: `NumericConstants` before its
    // type coercion, the others after. One state built (RETURNING and
    // ON CONFLICT DO UPDATE make a context per statement).
    let mut rules: Vec<Arc<dyn datafusion::optimizer::AnalyzerRule + Send + Sync>> =
        vec![Arc::new(crate::numeric_constants::NumericConstants)];
    rules.extend(datafusion::optimizer::Analyzer::new().rules);
    rules.push(Arc::new(crate::text_casts::PostgresTextCasts));
    rules.push(Arc::new(crate::array_literals::ArrayLiterals));
    rules.push(Arc::new(crate::checked_arithmetic::CheckedArithmetic));
    rules.push(Arc::new(crate::exists_values::ExistsValues));
    rules.push(Arc::new(crate::scalar_subqueries::SingleValueSubqueries));
    rules.push(Arc::new(crate::correlated_aggregates::CorrelatedAggregates));
    let state = datafusion::execution::session_state::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_analyzer_rules(rules)
        .build();
    SessionContext::new_with_state(state)
}

/// 3B001 for a savepoint name not open in the block.
fn no_savepoint(name: &str) -> ComputeError {
    ComputeError::invalid("3B001", format!("savepoint \"{name}\" does not exist"))
}

/// Whether a plan reads `pg_catalog` or `information_schema`, whose
/// listings of tables come from the session's catalog.
fn reads_system_tables(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|p| {
        if let LogicalPlan::TableScan(scan) = p
            && matches!(scan.table_name.schema(), Some("pg_catalog" | "information_schema"))
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The 0-based position of parameter `$n` (`id` is `"$n"`, n from 1).
pub(crate) fn param_position(id: &str) -> Option<usize> {
    id.strip_prefix('$')?.parse::<usize>().ok()?.checked_sub(1)
}

/// Types DataFusion inferred for a plan's `$n` placeholders, by position
/// (at least `min` of them), completed from casts and function arguments
/// (see [`crate::placeholder_types`]).
pub(crate) fn param_types(plan: &LogicalPlan, min: usize) -> Result<Vec<Option<DataType>>> {
    let mut out = vec![None; min];
    let mut from_context = None;
    for (k, v) in plan.get_parameter_types()? {
        let Some(i) = param_position(&k) else { continue };
        if out.len() <= i {
            out.resize(i + 1, None);
        }
        out[i] = match v {
            Some(t) => Some(t),
            None => from_context.get_or_insert_with(|| crate::placeholder_types::from_context(plan)).get(&k).cloned(),
        };
    }
    Ok(out)
}

/// Number of table scans in a plan (subqueries' included).
pub(crate) fn count_scans(plan: &LogicalPlan) -> usize {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut n = 0;
    let _ = plan.apply_with_subqueries(|p| {
        if matches!(p, LogicalPlan::TableScan(_)) {
            n += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    n
}

/// Highest `$n` placeholder in SQL text.
fn count_placeholders(sql: &str) -> usize {
    let b = sql.as_bytes();
    let mut max = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > start
                && let Ok(n) = sql[start..j].parse::<usize>()
            {
                max = max.max(n);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    max
}

/// The text of a SET value (`'abc'` → `abc`).
fn setting_text(e: &datafusion::sql::sqlparser::ast::Expr) -> String {
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// The first words of a statement, for messages.
fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
