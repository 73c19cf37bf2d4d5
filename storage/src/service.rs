//! The gRPC storage service: decodes requests, calls the node and its
//! databases, and maps errors to statuses (with SQLSTATE metadata) once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ebb_proto::storage::storage_server::Storage;
use ebb_proto::storage::*;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::durability::roles;
use crate::error::StorageError;
use crate::node::StorageNode;

/// Implements `ebb.storage.v1.Storage` over a node.
#[derive(Clone)]
pub struct StorageService {
    node: Arc<StorageNode>,
}

impl StorageService {
    /// A service for `node`.
    pub fn new(node: Arc<StorageNode>) -> Self {
        Self { node }
    }

    /// The tonic server, with message limits fitting the value limit.
    pub fn into_server(self) -> storage_server::StorageServer<Self> {
        let limit = self.message_limit();
        storage_server::StorageServer::new(self).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }

    /// The largest message taken or sent (gRPC's and the lane's).
    pub(crate) fn message_limit(&self) -> usize {
        self.node.config().max_value_bytes.saturating_mul(4).max(64 << 20)
    }
}

type Res<T> = Result<Response<T>, Status>;

fn log_err(op: &'static str, e: StorageError) -> Status {
    match e.code() {
        tonic::Code::Internal | tonic::Code::Unavailable => tracing::error!(op, error = %e, "request failed"),
        _ => tracing::debug!(op, error = %e, "request refused"),
    }
    e.into()
}

#[tonic::async_trait]
impl Storage for StorageService {
    async fn create_database(&self, req: Request<CreateDatabaseRequest>) -> Res<CreateDatabaseResponse> {
        let r = req.into_inner();
        let (e, created) = self.node.create_database(&r.name, r.if_not_exists).await.map_err(|e| log_err("create_database", e))?;
        Ok(Response::new(CreateDatabaseResponse { database: Some(DatabaseInfo { name: e.name, id: e.id }), created }))
    }

    async fn drop_database(&self, req: Request<DropDatabaseRequest>) -> Res<DropDatabaseResponse> {
        let r = req.into_inner();
        let dropped = self.node.drop_database(&r.name, r.if_exists).await.map_err(|e| log_err("drop_database", e))?;
        Ok(Response::new(DropDatabaseResponse { dropped }))
    }

    async fn list_databases(&self, _req: Request<ListDatabasesRequest>) -> Res<ListDatabasesResponse> {
        let list = self.node.list_databases().await.map_err(|e| log_err("list_databases", e))?;
        Ok(Response::new(ListDatabasesResponse {
            databases: list.into_iter().map(|e| DatabaseInfo { name: e.name, id: e.id }).collect(),
        }))
    }

    async fn put_role(&self, req: Request<PutRoleRequest>) -> Res<PutRoleResponse> {
        let r = req.into_inner();
        let role = r.role.ok_or_else(|| log_err("put_role", StorageError::InvalidRequest("no role given".into())))?;
        roles::put(self.node.roles(), &role, r.create).await.map_err(|e| log_err("put_role", e))?;
        Ok(Response::new(PutRoleResponse {}))
    }

    async fn drop_role(&self, req: Request<DropRoleRequest>) -> Res<DropRoleResponse> {
        let r = req.into_inner();
        let dropped = roles::drop(self.node.roles(), &r.name, r.if_exists).await.map_err(|e| log_err("drop_role", e))?;
        Ok(Response::new(DropRoleResponse { dropped }))
    }

    async fn get_role(&self, req: Request<GetRoleRequest>) -> Res<GetRoleResponse> {
        let role = roles::get(self.node.roles(), &req.into_inner().name).await.map_err(|e| log_err("get_role", e))?;
        Ok(Response::new(GetRoleResponse { role }))
    }

    async fn list_roles(&self, _req: Request<ListRolesRequest>) -> Res<ListRolesResponse> {
        let roles = roles::list(self.node.roles()).await.map_err(|e| log_err("list_roles", e))?;
        Ok(Response::new(ListRolesResponse { roles }))
    }

    async fn create_table(&self, req: Request<CreateTableRequest>) -> Res<CreateTableResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("create_table", e))?;
        let created = match &r.sequence {
            Some(options) if r.columns.is_empty() && r.primary_key.is_empty() => {
                db.create_sequence(&r.schema, &r.name, options, r.if_not_exists).await
            }
            Some(_) => Err(StorageError::InvalidRequest("a sequence takes no columns or primary key".into())),
            None => db.create_table_with_checks(&r.schema, &r.name, &r.columns, &r.primary_key, &r.checks, r.if_not_exists).await,
        };
        let (def, created) = created.map_err(|e| log_err("create_table", e))?;
        Ok(Response::new(CreateTableResponse { table: Some(def), created }))
    }

    async fn drop_table(&self, req: Request<DropTableRequest>) -> Res<DropTableResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("drop_table", e))?;
        let dropped = db.drop_table(&r.schema, &r.name, r.if_exists, r.sequence).await.map_err(|e| log_err("drop_table", e))?;
        Ok(Response::new(DropTableResponse { dropped }))
    }

    async fn alter_table(&self, req: Request<AlterTableRequest>) -> Res<AlterTableResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("alter_table", e))?;
        let def = db.alter_table(&r).await.map_err(|e| log_err("alter_table", e))?;
        Ok(Response::new(AlterTableResponse { table: Some(def) }))
    }

    async fn create_index(&self, req: Request<CreateIndexRequest>) -> Res<CreateIndexResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("create_index", e))?;
        let (def, created) = db.create_index(&r).await.map_err(|e| log_err("create_index", e))?;
        Ok(Response::new(CreateIndexResponse { table: Some(def), created }))
    }

    async fn drop_index(&self, req: Request<DropIndexRequest>) -> Res<DropIndexResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("drop_index", e))?;
        let dropped = db.drop_index(&r.schema, &r.name, r.if_exists, r.constraint).await.map_err(|e| log_err("drop_index", e))?;
        Ok(Response::new(DropIndexResponse { dropped }))
    }

    async fn next_values(&self, req: Request<NextValuesRequest>) -> Res<NextValuesResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("next_values", e))?;
        let values = db.next_values(&r.schema, &r.name, r.count).await.map_err(|e| log_err("next_values", e))?;
        Ok(Response::new(NextValuesResponse { values }))
    }

    async fn set_value(&self, req: Request<SetValueRequest>) -> Res<SetValueResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("set_value", e))?;
        db.set_value(&r.schema, &r.name, r.value, r.is_called).await.map_err(|e| log_err("set_value", e))?;
        Ok(Response::new(SetValueResponse {}))
    }

    async fn list_tables(&self, req: Request<ListTablesRequest>) -> Res<ListTablesResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("list_tables", e))?;
        Ok(Response::new(ListTablesResponse { tables: db.tables().iter().map(|t| t.def.clone()).collect() }))
    }

    async fn relation_sizes(&self, req: Request<RelationSizesRequest>) -> Res<RelationSizesResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("relation_sizes", e))?;
        let (database_bytes, tables) = tokio::task::spawn_blocking(move || (db.database_size(), if r.tables { db.table_sizes() } else { Vec::new() }))
            .await
            .map_err(|e| Status::internal(format!("measuring relation sizes: {e}")))?;
        let tables = tables.into_iter().map(|(table_id, bytes)| TableSize { table_id, bytes }).collect();
        Ok(Response::new(RelationSizesResponse { database_bytes, tables }))
    }

    async fn begin(&self, req: Request<BeginRequest>) -> Res<BeginResponse> {
        Ok(Response::new(self.begin_call(req.into_inner()).await?))
    }

    async fn refresh_snapshot(&self, req: Request<RefreshSnapshotRequest>) -> Res<RefreshSnapshotResponse> {
        let r = req.into_inner();
        let db = self.node.database(&r.database).await.map_err(|e| log_err("refresh_snapshot", e))?;
        let snapshot_ts = db.refresh_snapshot(r.txn_id).await.map_err(|e| log_err("refresh_snapshot", e))?;
        Ok(Response::new(RefreshSnapshotResponse { snapshot_ts }))
    }

    type ScanStream = Pin<Box<dyn Stream<Item = Result<ScanResponse, Status>> + Send + 'static>>;

    async fn scan(&self, req: Request<ScanRequest>) -> Res<Self::ScanStream> {
        let started = self.start_scan(req.into_inner()).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(started.chunks);
        let stream = futures::StreamExt::map(stream, |chunk| match chunk {
            Ok(b) => Ok(ScanResponse { arrow_ipc: b.to_vec() }),
            Err(e) => Err(log_err("scan", e)),
        });
        let mut response = Response::new(Box::pin(stream) as Self::ScanStream);
        if let Some(txn) = started.begun {
            response.metadata_mut().insert(ebb_proto::BEGUN_TXN_METADATA_KEY, txn.hand_over().into());
        } else if let Some(ts) = started.snapshot_ts {
            response.metadata_mut().insert(ebb_proto::SNAPSHOT_TS_METADATA_KEY, ts.into());
        }
        Ok(response)
    }

    type WatchRowsStream = Pin<Box<dyn Stream<Item = Result<RowChanges, Status>> + Send + 'static>>;

    async fn watch_rows(&self, req: Request<tonic::Streaming<WatchRowsRequest>>) -> Res<Self::WatchRowsStream> {
        let mut acks = req.into_inner();
        // A client that opens a watch and says nothing does not hold a task forever.
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), acks.message())
            .await
            .map_err(|_| Status::deadline_exceeded("a row watch names its database within 10 s"))??
            .ok_or_else(|| Status::invalid_argument("a row watch names its database first"))?;
        let db = self.node.database(&first.database).await.map_err(|e| log_err("watch_rows", e))?;
        let rx = crate::row_watch_service::serve(db, acks);
        Ok(Response::new(Box::pin(futures::StreamExt::map(tokio_stream::wrappers::UnboundedReceiverStream::new(rx), Ok)) as Self::WatchRowsStream))
    }

    async fn write(&self, req: Request<WriteRequest>) -> Res<WriteResponse> {
        Ok(Response::new(self.write_call(req.into_inner()).await?))
    }

    async fn commit(&self, req: Request<CommitRequest>) -> Res<CommitResponse> {
        Ok(Response::new(self.commit_call(req.into_inner()).await?))
    }

    async fn rollback(&self, req: Request<RollbackRequest>) -> Res<RollbackResponse> {
        Ok(Response::new(self.rollback_call(req.into_inner()).await?))
    }

    async fn rollback_to_savepoint(&self, req: Request<RollbackToSavepointRequest>) -> Res<RollbackToSavepointResponse> {
        Ok(Response::new(self.rollback_to_savepoint_call(req.into_inner()).await?))
    }
}

/// The calls that gRPC and the lane (`crate::lane`) both serve.
impl StorageService {
    pub(crate) fn node(&self) -> &Arc<StorageNode> {
        &self.node
    }

    pub(crate) async fn begin_call(&self, r: BeginRequest) -> Result<BeginResponse, Status> {
        let db = self.node.database(&r.database).await.map_err(|e| log_err("begin", e))?;
        let timeout = (r.idle_timeout_ms > 0).then(|| Duration::from_millis(r.idle_timeout_ms));
        let isolation = isolation_level(r.isolation)?;
        let (txn_id, snapshot_ts) = db.begin_with(timeout, isolation).map_err(|e| log_err("begin", e))?;
        db.metrics.transactions_begun.with_label_values(&["begin"]).inc();
        Ok(BeginResponse { txn_id, snapshot_ts })
    }

    /// Starts a scan (beginning its transaction if it asks to).
    async fn start_scan(&self, mut r: ScanRequest) -> Result<StartedScan, Status> {
        let db = self.node.database(&r.database).await.map_err(|e| log_err("scan", e))?;
        let begun = match r.begin {
            None => None,
            Some(_) if r.txn_id != 0 => return Err(Status::invalid_argument("a scan that begins a transaction must not name one")),
            Some(level) => {
                let (id, _) = db.begin_with(None, isolation_level(level)?).map_err(|e| log_err("scan", e))?;
                db.metrics.transactions_begun.with_label_values(&["scan"]).inc();
                r.txn_id = id;
                Some(BegunTxn { db: db.clone(), id, handed_over: false })
            }
        };
        let (chunks, snapshot_ts) = db.scan_at(&r).await.map_err(|e| log_err("scan", e))?;
        let snapshot_ts = (r.txn_id == 0).then_some(snapshot_ts);
        Ok(StartedScan { chunks, begun, snapshot_ts })
    }

    /// A whole scan in one answer (at most `limit` bytes of Arrow IPC).
    pub(crate) async fn scan_whole(&self, r: ScanRequest, limit: usize) -> Result<LaneScanResponse, Status> {
        let mut started = self.start_scan(r).await?;
        let mut arrow_ipc = Vec::new();
        while let Some(chunk) = started.chunks.recv().await {
            let chunk = chunk.map_err(|e| log_err("scan", e))?;
            if arrow_ipc.len() + chunk.len() > limit {
                return Err(Status::resource_exhausted(format!("a scan answer over {limit} bytes does not fit one lane frame")));
            }
            arrow_ipc.extend_from_slice(&chunk);
        }
        Ok(LaneScanResponse { arrow_ipc, begun_txn: started.begun.map(BegunTxn::hand_over), snapshot_ts: started.snapshot_ts })
    }

    pub(crate) async fn write_call(&self, r: WriteRequest) -> Result<WriteResponse, Status> {
        let db = self.node.database(&r.database).await.map_err(|e| log_err("write", e))?;
        let w = r.write.ok_or_else(|| Status::invalid_argument("write request carries no write"))?;
        let rows_affected = db
            .write_carrying(r.txn_id, r.statement, r.savepoint, &r.earlier_writes, &w)
            .await
            .map_err(|e| log_err("write", e))?;
        Ok(WriteResponse { rows_affected })
    }

    pub(crate) async fn commit_call(&self, r: CommitRequest) -> Result<CommitResponse, Status> {
        let db = self.node.database(&r.database).await.map_err(|e| log_err("commit", e))?;
        let (commit_ts, rows_affected) = db.commit(r.txn_id, &r.writes).await.map_err(|e| log_err("commit", e))?;
        Ok(CommitResponse { commit_ts, rows_affected })
    }

    pub(crate) async fn rollback_call(&self, r: RollbackRequest) -> Result<RollbackResponse, Status> {
        let db = self.node.database(&r.database).await.map_err(|e| log_err("rollback", e))?;
        db.rollback(r.txn_id).map_err(|e| log_err("rollback", e))?;
        Ok(RollbackResponse {})
    }

    pub(crate) async fn rollback_to_savepoint_call(&self, r: RollbackToSavepointRequest) -> Result<RollbackToSavepointResponse, Status> {
        let db = self.node.database(&r.database).await.map_err(|e| log_err("rollback to savepoint", e))?;
        db.rollback_to_savepoint(r.txn_id, r.savepoint).await.map_err(|e| log_err("rollback to savepoint", e))?;
        Ok(RollbackToSavepointResponse {})
    }
}

/// A scan under way: its chunks, the transaction it began, and (outside any
/// transaction) the snapshot it reads.
struct StartedScan {
    chunks: tokio::sync::mpsc::Receiver<crate::Result<bytes::Bytes>>,
    begun: Option<BegunTxn>,
    snapshot_ts: Option<u64>,
}

/// The isolation level a request names.
fn isolation_level(level: i32) -> Result<Isolation, Status> {
    Isolation::try_from(level).map_err(|_| Status::invalid_argument(format!("unknown isolation level {level}")))
}

/// A transaction a scan began (`ScanRequest.begin`). Rolled back when
/// dropped before its id is handed to the caller: the scan failed, or the
/// caller went away (a statement timeout, a cancel) while the scan waited
/// for a row lock — nobody else could end it, and it would hold what it
/// locked until its idle timeout.
struct BegunTxn {
    db: Arc<crate::Database>,
    id: u64,
    handed_over: bool,
}

impl BegunTxn {
    /// The id, for the response; the caller ends the transaction from now on.
    fn hand_over(mut self) -> u64 {
        self.handed_over = true;
        self.id
    }
}

impl Drop for BegunTxn {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        if let Err(e) = self.db.rollback(self.id) {
            tracing::debug!(error = %e, txn = self.id, "rollback of a transaction a failed scan began");
        }
    }
}
