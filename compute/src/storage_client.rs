//! The compute node's client of the storage service: typed calls, Arrow
//! batches in and out, and storage errors turned into SQL errors.


use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamDecoder;
use futures::Stream;
use arrow::record_batch::RecordBatch;
use ebb_proto::arrow_ipc;
use ebb_proto::storage::storage_client::StorageClient as Grpc;
use ebb_proto::storage::*;

use crate::error::{ComputeError, Result};
use crate::row_cache::RowCache;
use crate::row_watch::RowCaches;
use crate::storage_channel::DirectChannel;
use crate::storage_lane::Lanes;
use ebb_proto::lane::Call;

/// Largest gRPC message the client sends or accepts.
const MAX_MESSAGE: usize = 256 << 20;

/// A cheap-to-clone handle on one storage service.
#[derive(Clone)]
pub struct StorageClient {
    grpc: Grpc<DirectChannel>,
    /// Point reads, writes, commits and rollbacks go here (see `storage_lane`).
    lanes: std::sync::Arc<Lanes>,
    /// Rows kept to answer reads by key (none: every read goes to storage).
    rows: Option<std::sync::Arc<RowCaches>>,
}

impl StorageClient {
    /// Connects lazily to `url` (`http://host:port`); the first call dials.
    pub fn connect_lazy(url: &str) -> Result<Self> {
        let bad = |why: &str| ComputeError::Config(format!("storage URL \"{url}\": {why}"));
        let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("expected http://HOST:PORT"));
        }
        let addr = uri.authority().filter(|a| a.port().is_some()).ok_or_else(|| bad("expected http://HOST:PORT"))?.to_string();
        let origin = http::Uri::builder().scheme("http").authority(addr.as_str()).path_and_query("/").build().map_err(|e| bad(&e.to_string()))?;
        let lanes = std::sync::Arc::new(Lanes::new(addr.clone()));
        let grpc = Grpc::with_origin(DirectChannel::lazy(addr), origin)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self { grpc, lanes, rows: None })
    }

    /// This client with row caches (see `row_cache`).
    pub fn with_row_caches(mut self, rows: std::sync::Arc<RowCaches>) -> Self {
        self.rows = Some(rows);
        self
    }

    /// The row cache of `database`, if this client keeps them (its watch
    /// starts with the first call).
    pub fn row_cache(&self, database: &str) -> Option<std::sync::Arc<RowCache>> {
        Some(self.rows.as_ref()?.for_database(self, database))
    }

    /// Opens a row-change watch: `acks` carries the database's name, then
    /// acknowledgements.
    pub async fn watch_rows(&self, acks: tokio::sync::mpsc::UnboundedReceiver<WatchRowsRequest>) -> Result<tonic::Streaming<RowChanges>> {
        let acks = tokio_stream::wrappers::UnboundedReceiverStream::new(acks);
        Ok(self.grpc().watch_rows(acks).await?.into_inner())
    }

    fn grpc(&self) -> Grpc<DirectChannel> {
        self.grpc.clone()
    }

    /// Every database.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseInfo>> {
        Ok(self.grpc().list_databases(ListDatabasesRequest {}).await?.into_inner().databases)
    }

    /// CREATE DATABASE.
    pub async fn create_database(&self, name: &str, if_not_exists: bool) -> Result<bool> {
        let r = self.grpc().create_database(CreateDatabaseRequest { name: name.into(), if_not_exists }).await?;
        Ok(r.into_inner().created)
    }

    /// A role by name (`None` if there is none).
    pub async fn get_role(&self, name: &str) -> Result<Option<Role>> {
        Ok(self.grpc().get_role(GetRoleRequest { name: name.into() }).await?.into_inner().role)
    }

    /// Every role.
    pub async fn list_roles(&self) -> Result<Vec<Role>> {
        Ok(self.grpc().list_roles(ListRolesRequest {}).await?.into_inner().roles)
    }

    /// Creates (`create`) or replaces a role.
    pub async fn put_role(&self, role: Role, create: bool) -> Result<()> {
        self.grpc().put_role(PutRoleRequest { role: Some(role), create }).await?;
        Ok(())
    }

    /// DROP ROLE.
    pub async fn drop_role(&self, name: &str, if_exists: bool) -> Result<bool> {
        Ok(self.grpc().drop_role(DropRoleRequest { name: name.into(), if_exists }).await?.into_inner().dropped)
    }

    /// DROP DATABASE.
    pub async fn drop_database(&self, name: &str, if_exists: bool) -> Result<bool> {
        Ok(self.grpc().drop_database(DropDatabaseRequest { name: name.into(), if_exists }).await?.into_inner().dropped)
    }

    /// Every table of `database`.
    pub async fn list_tables(&self, database: &str) -> Result<Vec<TableDef>> {
        Ok(self.grpc().list_tables(ListTablesRequest { database: database.into() }).await?.into_inner().tables)
    }

    /// The bytes `database` takes in storage, and its tables' with `tables`.
    pub async fn relation_sizes(&self, database: &str, tables: bool) -> Result<RelationSizesResponse> {
        Ok(self.grpc().relation_sizes(RelationSizesRequest { database: database.into(), tables }).await?.into_inner())
    }

    /// CREATE TABLE or CREATE SEQUENCE: the definition, and whether it was
    /// created (not there before).
    pub async fn create_table(&self, req: CreateTableRequest) -> Result<(TableDef, bool)> {
        let r = self.grpc().create_table(req).await?.into_inner();
        let def = r.table.ok_or_else(|| ComputeError::Internal("storage created a relation without a definition".into()))?;
        Ok((def, r.created))
    }

    /// DROP TABLE, or (`sequence`) DROP SEQUENCE.
    pub async fn drop_table(&self, database: &str, schema: &str, name: &str, if_exists: bool, sequence: bool) -> Result<bool> {
        let req = DropTableRequest { database: database.into(), schema: schema.into(), name: name.into(), if_exists, sequence };
        Ok(self.grpc().drop_table(req).await?.into_inner().dropped)
    }

    /// CREATE INDEX (and UNIQUE constraints): the table's new definition,
    /// and whether the index was created (IF NOT EXISTS found the name taken).
    pub async fn create_index(&self, req: CreateIndexRequest) -> Result<(TableDef, bool)> {
        let r = self.grpc().create_index(req).await?.into_inner();
        let def = r.table.ok_or_else(|| ComputeError::Internal("storage created an index without its table's definition".into()))?;
        Ok((def, r.created))
    }

    /// DROP INDEX, or (`constraint`) the index of a UNIQUE constraint.
    pub async fn drop_index(&self, database: &str, schema: &str, name: &str, if_exists: bool, constraint: bool) -> Result<bool> {
        let req = DropIndexRequest { database: database.into(), schema: schema.into(), name: name.into(), if_exists, constraint };
        Ok(self.grpc().drop_index(req).await?.into_inner().dropped)
    }

    /// nextval, `count` times.
    pub async fn next_values(&self, database: &str, schema: &str, name: &str, count: u64) -> Result<Vec<i64>> {
        let req = NextValuesRequest { database: database.into(), schema: schema.into(), name: name.into(), count };
        Ok(self.grpc().next_values(req).await?.into_inner().values)
    }

    /// setval.
    pub async fn set_value(&self, database: &str, schema: &str, name: &str, value: i64, is_called: bool) -> Result<()> {
        let req = SetValueRequest { database: database.into(), schema: schema.into(), name: name.into(), value, is_called };
        self.grpc().set_value(req).await?;
        Ok(())
    }

    /// ALTER TABLE.
    pub async fn alter_table(&self, req: AlterTableRequest) -> Result<()> {
        self.grpc().alter_table(req).await?;
        Ok(())
    }

    /// A request/response call: on a lane, or over gRPC (`grpc`) if storage
    /// has none.
    async fn unary<Q, A, F, Fut>(&self, call: Call, req: Q, grpc: F) -> Result<A>
    where
        Q: prost::Message,
        A: prost::Message + Default,
        F: FnOnce(Grpc<DirectChannel>, Q) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<A>, tonic::Status>>,
    {
        if let Some(answer) = self.lanes.call(call, &req).await {
            return Ok(answer?);
        }
        Ok(grpc(self.grpc(), req).await?.into_inner())
    }

    /// Begins a transaction at `isolation`; returns its id.
    pub async fn begin(&self, database: &str, isolation: Isolation) -> Result<u64> {
        let req = BeginRequest { database: database.into(), idle_timeout_ms: 0, isolation: isolation as i32 };
        Ok(self.unary(Call::Begin, req, |mut g, r| async move { g.begin(r).await }).await?.txn_id)
    }

    /// Buffers a write of statement number `statement` under savepoint
    /// `savepoint` (see `WriteRequest`) in a transaction, after the
    /// deferred writes of earlier statements it carries; returns rows
    /// affected by `write`.
    pub async fn write(&self, database: &str, txn_id: u64, statement: u64, savepoint: u64, earlier_writes: Vec<TableWrite>, write: TableWrite) -> Result<u64> {
        let req = WriteRequest { database: database.into(), txn_id, write: Some(write), statement, savepoint, earlier_writes };
        Ok(self.unary(Call::Write, req, |mut g, r| async move { g.write(r).await }).await?.rows_affected)
    }

    /// Commits (`txn_id` 0: the writes in a transaction of their own); returns rows affected.
    pub async fn commit(&self, database: &str, txn_id: u64, writes: Vec<TableWrite>) -> Result<u64> {
        let req = CommitRequest { database: database.into(), txn_id, writes };
        Ok(self.unary(Call::Commit, req, |mut g, r| async move { g.commit(r).await }).await?.rows_affected)
    }

    /// Rolls a transaction back.
    pub async fn rollback(&self, database: &str, txn_id: u64) -> Result<()> {
        let req = RollbackRequest { database: database.into(), txn_id };
        self.unary(Call::Rollback, req, |mut g, r| async move { g.rollback(r).await }).await?;
        Ok(())
    }

    /// Undoes the writes of a transaction made under `savepoint` and later ones.
    pub async fn rollback_to_savepoint(&self, database: &str, txn_id: u64, savepoint: u64) -> Result<()> {
        let req = RollbackToSavepointRequest { database: database.into(), txn_id, savepoint };
        self.unary(Call::RollbackToSavepoint, req, |mut g, r| async move { g.rollback_to_savepoint(r).await }).await?;
        Ok(())
    }

    /// Streams a scan's record batches as they arrive.
    pub async fn scan_stream(self, req: ScanRequest) -> Result<impl Stream<Item = Result<RecordBatch>> + Send + 'static> {
        let stream = self.grpc().scan(req).await?.into_inner();
        let state = (stream, StreamDecoder::new());
        Ok(futures::stream::try_unfold(state, |(mut stream, mut decoder)| async move {
            loop {
                let Some(msg) = stream.message().await? else {
                    decoder.finish().map_err(|e| ComputeError::Internal(format!("scan stream from storage ended early: {e}")))?;
                    return Ok(None);
                };
                let mut buf = Buffer::from(msg.arrow_ipc);
                let mut out = Vec::new();
                while !buf.is_empty() {
                    let before = buf.len();
                    match decoder.decode(&mut buf) {
                        Ok(Some(b)) => out.push(b),
                        Ok(None) if buf.len() == before => break,
                        Ok(None) => {}
                        Err(e) => return Err(ComputeError::Internal(format!("bad scan stream from storage: {e}"))),
                    }
                }
                if !out.is_empty() {
                    let batch = if out.len() == 1 {
                        out.pop().expect("one batch")
                    } else {
                        arrow::compute::concat_batches(&out[0].schema(), &out).map_err(|e| ComputeError::Internal(e.to_string()))?
                    };
                    return Ok(Some((batch, (stream, decoder))));
                }
            }
        }))
    }

    /// Runs a scan to completion.
    ///
    /// `begun` is told the id of the transaction the scan began (when it
    /// carries `begin`) as soon as storage answers, before the rows (which
    /// may still fail) arrive.
    pub async fn scan(&self, req: ScanRequest, begun: impl FnOnce(u64)) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let (schema, batches, _) = self.scan_at(req, begun).await?;
        Ok((schema, batches))
    }

    /// As [`StorageClient::scan`]; also returns the snapshot a scan outside
    /// any transaction read (`None` in a transaction).
    pub async fn scan_at(&self, req: ScanRequest, begun: impl FnOnce(u64)) -> Result<(SchemaRef, Vec<RecordBatch>, Option<u64>)> {
        let begins = req.begin.is_some();
        let no_txn = || ComputeError::Internal("storage began no transaction for a scan that asked it to".into());
        let (bytes, snapshot_ts) = match self.lanes.call::<_, LaneScanResponse>(Call::Scan, &req).await {
            Some(answer) => {
                let answer = answer?;
                if begins {
                    begun(answer.begun_txn.ok_or_else(no_txn)?);
                }
                (answer.arrow_ipc, answer.snapshot_ts)
            }
            None => {
                let response = self.grpc().scan(req).await?;
                let snapshot_ts = response.metadata().get(ebb_proto::SNAPSHOT_TS_METADATA_KEY).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if begins {
                    let id = response.metadata().get(ebb_proto::BEGUN_TXN_METADATA_KEY).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).ok_or_else(no_txn)?;
                    begun(id);
                }
                let mut stream = response.into_inner();
                let mut bytes = Vec::new();
                while let Some(m) = stream.message().await? {
                    bytes.extend_from_slice(&m.arrow_ipc);
                }
                (bytes, snapshot_ts)
            }
        };
        let (schema, batches) = arrow_ipc::decode_with_schema(&bytes).map_err(|e| ComputeError::Internal(format!("bad scan stream from storage: {e}")))?;
        Ok((schema, batches, snapshot_ts))
    }
}

/// Encodes one batch as a write to the table `def` describes; storage
/// refuses it if the table no longer has that definition. Rows written
/// (not deleted) must pass the table's CHECK constraints (23514).
pub fn table_write(def: &TableDef, kind: WriteKind, batch: &RecordBatch) -> Result<TableWrite> {
    if !matches!(kind, WriteKind::Delete | WriteKind::DeleteForKeyUpdate) {
        // Every write of rows passes here: the table's CHECK constraints.
        crate::sql::checks::verify(def, batch)?;
    }
    let arrow_ipc = arrow_ipc::encode(std::slice::from_ref(batch)).map_err(|e| ComputeError::Internal(e.to_string()))?;
    Ok(TableWrite { schema: def.schema.clone(), table: def.name.clone(), kind: kind as i32, arrow_ipc, expect: Some(expected(def)) })
}

/// The version of a table definition requests name (see `TableVersion`).
pub fn expected(def: &TableDef) -> TableVersion {
    TableVersion { id: def.id, version: def.version }
}
