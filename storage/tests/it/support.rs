//! Shared helpers of the storage integration tests.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use ebb_proto::storage::{ColumnDef, ColumnType, ScanRequest, TableWrite, TypeKind, WriteKind};
use ebb_storage::durability::failing::{FailingObjectStore, Faults};
use ebb_storage::engine::EngineConfig;
use ebb_storage::metrics::StorageMetrics;
use ebb_proto::arrow_ipc as ipc;
use ebb_storage::{Database, StorageNode};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use tempfile::TempDir;

/// A node with its cache directory.
pub struct TestNode {
    pub node: Arc<StorageNode>,
    /// Kept alive for the node's lifetime.
    _cache: TempDir,
}

impl TestNode {
    /// The `postgres` database.
    pub async fn db(&self) -> Arc<Database> {
        self.node.database("postgres").await.expect("postgres database")
    }
}

/// A fresh in-memory object store behind a fault injector.
pub fn faulty_store() -> (Arc<dyn ObjectStore>, Arc<Faults>) {
    let (s, f) = FailingObjectStore::new(Arc::new(InMemory::new()));
    (s, f)
}

/// A quick engine configuration for tests.
pub fn test_config() -> EngineConfig {
    EngineConfig {
        checkpoint_interval: Duration::from_secs(3600),
        txn_idle_timeout: Duration::from_secs(30),
        commit_timeout: Duration::from_secs(10),
        ..EngineConfig::default()
    }
}

/// Starts a node on `store` with a fresh cache directory.
pub async fn start(store: Arc<dyn ObjectStore>, cfg: EngineConfig) -> TestNode {
    let cache = tempfile::tempdir().expect("tempdir");
    let node = StorageNode::start(store.clone(), Default::default(), cache.path().to_path_buf(), cfg, StorageMetrics::unregistered())
        .await
        .expect("node starts");
    TestNode { node, _cache: cache }
}

/// A node on a fresh in-memory store.
pub async fn start_memory() -> TestNode {
    start(Arc::new(InMemory::new()), test_config()).await
}

/// A column definition.
pub fn col(name: &str, kind: TypeKind) -> ColumnDef {
    ColumnDef { name: name.into(), r#type: Some(ColumnType { kind: kind as i32, length: 0, scale: 0 }), ..Default::default() }
}

/// Creates `accounts(id bigint primary key, owner text, balance bigint)`.
pub async fn create_accounts(db: &Database) {
    db.create_table(
        "",
        "accounts",
        &[col("id", TypeKind::Bigint), col("owner", TypeKind::Text), col("balance", TypeKind::Bigint)],
        &["id".into()],
        false,
    )
    .await
    .expect("create accounts");
}

/// A node on a fresh in-memory store whose `postgres` database has
/// `accounts` holding `rows`, committed; keep the node for the test's length.
pub async fn accounts_holding(rows: &[(i64, &str, i64)]) -> (TestNode, Arc<Database>) {
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(rows))]).await.expect("initial rows");
    (n, db)
}

/// An accounts batch.
pub fn accounts(rows: &[(i64, &str, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("owner", DataType::Utf8, true),
        Field::new("balance", DataType::Int64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
        Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
    ];
    RecordBatch::try_new(schema, cols).expect("batch")
}

/// A write of `batch` into `table`.
pub fn write(table: &str, kind: WriteKind, batch: &RecordBatch) -> TableWrite {
    TableWrite { schema: String::new(), table: table.into(), kind: kind as i32, arrow_ipc: ipc::encode(std::slice::from_ref(batch)).expect("ipc"), expect: None }
}

/// Keys-only delete batch for accounts.
pub fn account_keys(ids: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).expect("batch")
}

/// Runs a scan and concatenates its batches.
pub async fn scan(db: &Arc<Database>, req: ScanRequest) -> ebb_storage::Result<RecordBatch> {
    let mut rx = db.scan(&req).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = rx.recv().await {
        bytes.extend_from_slice(&chunk?);
    }
    let (schema, batches) = ipc::decode_with_schema(&bytes)?;
    Ok(arrow::compute::concat_batches(&schema, &batches).expect("concat"))
}

/// A full scan of `table` in transaction `txn` (0 = latest).
pub fn scan_req(table: &str, txn: u64) -> ScanRequest {
    ScanRequest { database: "postgres".into(), table: table.into(), txn_id: txn, ..Default::default() }
}

/// (id, balance) pairs of a batch of accounts.
pub fn balances(b: &RecordBatch) -> Vec<(i64, i64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let ids = b.column_by_name("id").expect("id").as_primitive::<Int64Type>();
    let bal = b.column_by_name("balance").expect("balance").as_primitive::<Int64Type>();
    (0..b.num_rows()).map(|i| (ids.value(i), bal.value(i))).collect()
}

/// A FOR UPDATE point read of account `id` in `txn` (`ScanRequest.lock_row`).
pub fn read_for_update(txn: u64, id: i64) -> ScanRequest {
    use ebb_proto::storage::{KeyBound, Value, value::Kind};
    let bound = KeyBound { values: vec![Value { kind: Some(Kind::Int(id)) }], inclusive: true };
    ScanRequest { lower: Some(bound.clone()), upper: Some(bound), lock_row: true, ..scan_req("accounts", txn) }
}

/// Serves node `n` (gRPC and the lane); a gRPC client of it.
pub async fn serve_node(n: TestNode) -> (TestNode, ebb_proto::storage::storage_client::StorageClient<tonic::transport::Channel>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(ebb_storage::server::serve(listener, n.node.clone(), std::future::pending()));
    let client = ebb_proto::storage::storage_client::StorageClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    (n, client)
}
