//! The PostgreSQL front end: one set of pgwire handlers per connection,
//! sharing that connection's [`Session`].

mod corked;
pub mod encode;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::Statement;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{ServerParameterProvider, StartupHandler, protocol_negotiation, save_startup_parameters_to_metadata};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::{CopyHandler, send_copy_in_response};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response, send_ready_for_query};
use pgwire::api::results::{CopyResponse, DescribePortalResponse, DescribeStatementResponse, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, DEFAULT_NAME, METADATA_DATABASE, METADATA_USER, PgWireConnectionState,
    PgWireServerHandlers, PidSecretKeyGenerator, RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::{NoticeResponse, ReadyForQuery, TransactionStatus};
use pgwire::messages::extendedquery::Sync as PgSync;
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::simplequery::Query;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::Mutex;

use crate::binding::Binding;
use crate::error::ComputeError;
use crate::session::settings::SERVER_VERSION;
use crate::session::plan_cache::PlanCache;
use crate::session::{Block, KnownText, Output, Session, parse};
use crate::storage_client::StorageClient;
use encode::{decode_params, encode_batch, fields, param_pg_type};

/// What every connection of a compute node shares.
pub struct Shared {
    /// Storage service client.
    pub storage: StorageClient,
    /// Which database sessions use; drain state and load counters.
    pub binding: Arc<Binding>,
    /// Routes cancel requests to the right connection.
    pub connections: Arc<ConnectionManager>,
}

/// The handlers of one connection.
pub struct Connection {
    shared: Arc<Shared>,
    session: Arc<Mutex<Option<Session>>>,
    parser: Arc<Parser>,
}

impl Connection {
    /// Handlers for a new connection.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, session: Arc::default(), parser: Arc::new(Parser) }
    }

    fn queries(&self) -> Arc<Queries> {
        Arc::new(Queries { session: self.session.clone(), parser: self.parser.clone(), binding: self.shared.binding.clone() })
    }
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(corked::Corking(self.queries()))
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup { shared: self.shared.clone(), session: self.session.clone() })
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.queries()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.shared.connections.clone()))
    }
}

/// Maps a compute error to the wire.
pub fn error_info(e: &ComputeError) -> ErrorInfo {
    ErrorInfo::new("ERROR".into(), e.sqlstate().into(), e.to_string())
}

fn user_error(e: &ComputeError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

/// Startup: trust (a compute sits behind the proxy), open the session.
struct Startup {
    shared: Arc<Shared>,
    session: Arc<Mutex<Option<Session>>>,
}

struct Parameters;

impl ServerParameterProvider for Parameters {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let mut p = HashMap::new();
        p.insert("server_version".into(), SERVER_VERSION.into());
        p.insert("server_encoding".into(), "UTF8".into());
        p.insert("client_encoding".into(), "UTF8".into());
        p.insert("DateStyle".into(), "ISO, MDY".into());
        p.insert("IntervalStyle".into(), "postgres".into());
        p.insert("TimeZone".into(), "UTC".into());
        p.insert("integer_datetimes".into(), "on".into());
        p.insert("standard_conforming_strings".into(), "on".into());
        p.insert("is_superuser".into(), "on".into());
        p.insert("default_transaction_read_only".into(), "off".into());
        p.insert("in_hot_standby".into(), "off".into());
        if let Some(u) = client.metadata().get(METADATA_USER) {
            p.insert("session_authorization".into(), u.clone());
        }
        if let Some(a) = client.metadata().get("application_name") {
            p.insert("application_name".into(), a.clone());
        }
        Some(p)
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else { return Ok(()) };
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let requested = client
            .metadata()
            .get(METADATA_DATABASE)
            .or_else(|| client.metadata().get(METADATA_USER))
            .cloned()
            .unwrap_or_else(|| "postgres".into());
        let database = self.shared.binding.session_database(&requested).map_err(|e| {
            let mut info = error_info(&e);
            info.severity = "FATAL".into();
            PgWireError::UserError(Box::new(info))
        })?;
        let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_else(|| "postgres".into());
        let session = Session::open(self.shared.storage.clone(), &database, &user).await.map_err(|e| {
            let mut info = error_info(&e);
            info.severity = "FATAL".into();
            PgWireError::UserError(Box::new(info))
        })?;
        *self.session.lock().await = Some(session);
        let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(client);
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.shared.connections.register(pid, secret);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        client.session_extensions().insert(self.shared.binding.session());
        pgwire::api::auth::finish_authentication(client, &Parameters).await?;
        Ok(())
    }
}

/// A statement as the extended protocol stores it, with the plan its
/// executions share.
#[derive(Debug, Clone)]
pub struct Prepared {
    stmt: Statement,
    cache: Arc<PlanCache>,
}

/// Parses one statement for the extended protocol.
pub struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut stmts = parse(sql).map_err(|e| user_error(&e))?;
        match stmts.len() {
            0 => Ok(None),
            1 => Ok(Some(Prepared { stmt: stmts.remove(0), cache: Arc::default() })),
            _ => Err(user_error(&ComputeError::invalid("42601", "cannot insert multiple commands into a prepared statement"))),
        }
    }

    fn get_parameter_types(&self, _stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(&self, _stmt: &Prepared, _format: Option<&Format>) -> PgWireResult<Vec<pgwire::api::results::FieldInfo>> {
        Ok(vec![])
    }
}

/// Simple and extended query handling.
struct Queries {
    session: Arc<Mutex<Option<Session>>>,
    parser: Arc<Parser>,
    /// Counts statements in flight for the control service's `stats`.
    binding: Arc<Binding>,
}

/// Turns one statement's result into a pgwire response, reporting
/// transaction-block changes so the ReadyForQuery status is right.
/// (`extra_float_digits`: the session's setting, for floats sent as text).
fn response(out: Output, before: Block, after: Block, format: &Format, extra_float_digits: i32) -> PgWireResult<Response> {
    let tag = out.tag();
    match out {
        Output::Rows { schema, batches } => rows_response(&schema, &batches, format, "SELECT", extra_float_digits),
        Output::Returned { command, schema, batches } => rows_response(&schema, &batches, format, &command, extra_float_digits),
        Output::CopyIn { columns } => Ok(Response::CopyIn(CopyResponse::new(0, columns, futures::stream::empty()))),
        Output::Command(_) => {
            let t = Tag::new(&tag);
            Ok(match (before, after) {
                (Block::Idle, Block::Open) => Response::TransactionStart(t),
                (Block::Open | Block::Failed, Block::Idle) => Response::TransactionEnd(t),
                _ => Response::Execution(t),
            })
        }
    }
}

/// `DEALLOCATE name` removes a statement prepared through the extended
/// protocol. `DEALLOCATE ALL` is acknowledged without removing anything: the
/// statement store cannot list its names, and clients that send it (psycopg
/// after a failed transaction) prepare again under the same names, which
/// replaces the old statements.
fn deallocate<C>(client: &C, stmt: &Statement) -> Option<Output>
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let Statement::Deallocate { name, .. } = stmt else { return None };
    if name.value.eq_ignore_ascii_case("all") && name.quote_style.is_none() {
        return Some(Output::Command("DEALLOCATE ALL".into()));
    }
    client.portal_store().rm_statement(&name.value);
    Some(Output::Command("DEALLOCATE".into()))
}

fn rows_response(
    schema: &arrow::datatypes::SchemaRef,
    batches: &[arrow::array::RecordBatch],
    format: &Format,
    command: &str,
    extra_float_digits: i32,
) -> PgWireResult<Response> {
    let fields = Arc::new(fields(schema, format));
    let mut rows = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for b in batches {
        encode_batch(b, &fields, extra_float_digits, &mut rows)?;
    }
    let mut response = QueryResponse::new(fields, futures::stream::iter(rows));
    response.set_command_tag(command);
    Ok(Response::Query(response))
}

async fn send_notices<C>(client: &mut C, session: &mut Session) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    for n in session.notices.drain(..) {
        let info = ErrorInfo::new(n.severity.into(), n.sqlstate.into(), n.message);
        client.feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(info))).await?;
    }
    Ok(())
}

/// The ReadyForQuery status byte of a session's block state.
fn status_of(block: Block) -> TransactionStatus {
    match block {
        Block::Idle => TransactionStatus::Idle,
        Block::Open => TransactionStatus::Transaction,
        Block::Failed => TransactionStatus::Error,
    }
}

impl Queries {
    /// The session's block state for the status byte, after cleaning up
    /// what a cancelled statement left (see [`Session::settle`]).
    async fn block(&self) -> Block {
        let mut guard = self.session.lock().await;
        match guard.as_mut() {
            Some(s) => {
                s.settle().await;
                s.block()
            }
            None => Block::Idle,
        }
    }

    /// The session's Describe of a statement: parameter types and result schema.
    async fn describe(&self, prepared: &Prepared) -> PgWireResult<(Vec<Option<arrow::datatypes::DataType>>, Option<arrow::datatypes::SchemaRef>)> {
        let guard = self.session.lock().await;
        let session = guard.as_ref().ok_or_else(|| PgWireError::ApiError("no session".into()))?;
        session.describe(&prepared.stmt, Some(&prepared.cache)).await.map_err(|e| user_error(&e))
    }
}

fn is_empty_query(q: &str) -> bool {
    q.chars().all(|c| c.is_whitespace() || c == ';')
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    /// Like pgwire's default, but the status byte comes from the session
    /// (a failed COMMIT leaves the session idle, not in a failed block).
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        if is_empty_query(&query.query) {
            client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
        } else {
            let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
                Some(h) => Some(h.start_query().await),
                None => None,
            };
            let responses = match cancel {
                Some(rx) => tokio::select! {
                    r = SimpleQueryHandler::do_query(self, client, &query.query) => r,
                    _ = rx => Ok(vec![Response::Error(Box::new(error_info(&ComputeError::Cancelled)))]),
                },
                None => SimpleQueryHandler::do_query(self, client, &query.query).await,
            }?;
            for r in responses {
                match r {
                    Response::Query(results) => send_query_response(client, results, true).await?,
                    Response::Execution(tag) | Response::TransactionStart(tag) | Response::TransactionEnd(tag) => {
                        send_execution_response(client, tag).await?
                    }
                    Response::Error(e) => client.feed(PgWireBackendMessage::ErrorResponse((*e).into())).await?,
                    Response::EmptyQuery => client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?,
                    Response::CopyIn(copy) => {
                        send_copy_in_response(client, copy).await?;
                        // The COPY's data follows; ReadyForQuery comes after CopyDone.
                        client.set_state(PgWireConnectionState::CopyInProgress(false));
                        return Ok(());
                    }
                    Response::CopyOut(_) | Response::CopyBoth(_) => {
                        let e = ComputeError::unsupported("COPY … TO");
                        client.feed(PgWireBackendMessage::ErrorResponse(error_info(&e).into())).await?
                    }
                }
            }
        }
        let status = status_of(self.block().await);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = self.binding.statement();
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or_else(|| PgWireError::ApiError("no session".into()))?;
        // A text like ones run before runs without being parsed.
        let before = session.block();
        let mut skeleton = crate::simple_shapes::skeleton(query);
        if let Some(cut) = &skeleton {
            match session.execute_known_text(query, cut).await {
                KnownText::Ran(result) => return Ok(vec![outcome(client, session, before, result).await?]),
                KnownText::Parse { learning: false } => skeleton = None,
                KnownText::Parse { learning: true } => {}
            }
        }
        let stmts = match parse(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![failed(session, &e)]),
        };
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            let before = session.block();
            if let Some(done) = deallocate(client, stmt) {
                out.push(response(done, before, session.block(), &Format::UnifiedText, session.settings.extra_float_digits())?);
                continue;
            }
            // A skeleton still being learnt learns from the parsed statement.
            if stmts.len() == 1
                && let Some(skeleton) = &skeleton
            {
                session.note_simple_text(query, skeleton, stmt);
            }
            let result = session.execute(stmt, &[]).await;
            let failed_now = result.is_err();
            out.push(outcome(client, session, before, result).await?);
            if failed_now {
                break;
            }
        }
        Ok(out)
    }
}

/// The response to a simple-protocol statement that ran (notices first).
async fn outcome<C>(client: &mut C, session: &mut Session, before: Block, result: Result<Output, ComputeError>) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match result {
        Ok(o) => {
            send_notices(client, session).await?;
            response(o, before, session.block(), &Format::UnifiedText, session.settings.extra_float_digits())
        }
        Err(e) => Ok(failed(session, &e)),
    }
}

/// The error response of a failed statement; logs what is not the client's fault.
fn failed(session: &Session, e: &ComputeError) -> Response {
    match e {
        ComputeError::Internal(_) | ComputeError::StorageUnavailable(_) => {
            tracing::error!(database = session.database(), error = %e, "statement failed")
        }
        _ => tracing::debug!(error = %e, "statement refused"),
    }
    Response::Error(Box::new(error_info(e)))
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    /// Reports the session's block state in ReadyForQuery.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(DEFAULT_NAME);
        let status = status_of(self.block().await);
        client.set_transaction_status(status);
        client.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status))).await?;
        client.flush().await?;
        Ok(())
    }

    async fn do_describe_statement<C>(&self, _client: &mut C, target: &StoredStatement<Prepared>) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (params, schema) = self.describe(&target.statement).await?;
        let n = params.len().max(target.parameter_types.len());
        let types = (0..n)
            .map(|i| {
                target.parameter_types.get(i).cloned().flatten().unwrap_or_else(|| param_pg_type(params.get(i).and_then(|t| t.as_ref())))
            })
            .collect();
        let fields = schema.map(|s| fields(&s, &Format::UnifiedText)).unwrap_or_default();
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(&self, _client: &mut C, portal: &Portal<Prepared>) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, schema) = self.describe(&portal.statement.statement).await?;
        let fields = schema.map(|s| fields(&s, &portal.result_column_format)).unwrap_or_default();
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = self.binding.statement();
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or_else(|| PgWireError::ApiError("no session".into()))?;
        let Prepared { stmt, cache } = &portal.statement.statement;
        let inferred = if portal.parameter_len() > 0 {
            session.param_types(stmt, Some(cache)).await.map_err(|e| user_error(&e))?
        } else {
            vec![]
        };
        let params = decode_params(portal, &inferred)?;
        let before = session.block();
        match session.execute_prepared(stmt, &params, Some(cache)).await {
            Ok(o) => {
                send_notices(client, session).await?;
                response(o, before, session.block(), &portal.result_column_format, session.settings.extra_float_digits())
            }
            Err(e) => Ok(failed(session, &e)),
        }
    }
}

#[async_trait]
impl CopyHandler for Queries {
    async fn on_copy_data<C>(&self, _client: &mut C, data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(session) = self.session.lock().await.as_mut() {
            session.copy_data(&data.data).await;
        }
        Ok(())
    }

    /// Sends `COPY n` (pgwire then sends ReadyForQuery) or the COPY's error.
    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = self.binding.statement();
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or_else(|| PgWireError::ApiError("no session".into()))?;
        let result = session.copy_done().await;
        client.set_transaction_status(status_of(session.block()));
        match result {
            Ok(out) => {
                send_execution_response(client, Tag::new(&out.tag())).await?;
                Ok(())
            }
            Err(e) => Err(user_error(&e)),
        }
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let mut guard = self.session.lock().await;
        match guard.as_mut() {
            Some(session) => {
                let e = session.copy_fail(&fail.message).await;
                client.set_transaction_status(status_of(session.block()));
                user_error(&e)
            }
            None => PgWireError::ApiError("no session".into()),
        }
    }
}
