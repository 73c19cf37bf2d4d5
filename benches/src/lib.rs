//! Shared setup of ebb's criterion benches and load harness.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use ebb_proto::storage::{ColumnDef, ColumnType, TableWrite, TypeKind, WriteKind};
use ebb_storage::durability::object_store_url::open_url;
use ebb_storage::engine::{Durability, EngineConfig};
use ebb_storage::metrics::StorageMetrics;
use ebb_proto::arrow_ipc as ipc;
use ebb_storage::{Database, StorageNode};
use tempfile::TempDir;

/// A storage node on a `file://` object store in a temporary directory.
pub struct BenchNode {
    pub node: Arc<StorageNode>,
    pub db: Arc<Database>,
    pub dir: TempDir,
    /// The node's metrics (WAL put latency, group sizes, …).
    pub metrics: StorageMetrics,
}

/// Starts a node with the given durability.
pub async fn start(durability: Durability) -> BenchNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, prefix) = open_url(&format!("file://{}", dir.path().join("objects").display())).expect("store");
    let cfg = EngineConfig { durability, checkpoint_interval: Duration::from_secs(3600), ..Default::default() };
    let metrics = StorageMetrics::unregistered();
    let node = StorageNode::start(store, prefix, dir.path().join("cache"), cfg, metrics.clone()).await.expect("node");
    let db = node.database("postgres").await.expect("postgres");
    BenchNode { node, db, dir, metrics }
}

fn col(name: &str, kind: TypeKind) -> ColumnDef {
    ColumnDef { name: name.into(), r#type: Some(ColumnType { kind: kind as i32, length: 0, scale: 0 }), ..Default::default() }
}

/// Creates `bench(id bigint primary key, a integer, b double precision, c text, d bigint)`.
pub async fn create_bench_table(db: &Database) {
    let cols = [
        col("id", TypeKind::Bigint),
        col("a", TypeKind::Integer),
        col("b", TypeKind::Double),
        col("c", TypeKind::Text),
        col("d", TypeKind::Bigint),
    ];
    db.create_table("", "bench", &cols, &["id".into()], false).await.expect("create bench");
}

/// Rows `ids` of the bench table as one write.
pub fn bench_rows(ids: std::ops::Range<i64>, kind: WriteKind) -> TableWrite {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Float64, true),
        Field::new("c", DataType::Utf8, true),
        Field::new("d", DataType::Int64, true),
    ]));
    let ids: Vec<i64> = ids.collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int32Array::from(ids.iter().map(|i| (*i % 1000) as i32).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(ids.iter().map(|i| *i as f64 * 0.5).collect::<Vec<_>>())),
        Arc::new(StringArray::from(ids.iter().map(|i| format!("row-{i:08}")).collect::<Vec<_>>())),
        Arc::new(Int64Array::from(ids.iter().map(|i| i * 7).collect::<Vec<_>>())),
    ];
    let batch = RecordBatch::try_new(schema, cols).expect("batch");
    TableWrite { schema: String::new(), table: "bench".into(), kind: kind as i32, arrow_ipc: ipc::encode(&[batch]).expect("ipc"), expect: None }
}

/// Loads `n` rows in commits of 10,000.
pub async fn load(db: &Database, n: i64) {
    let mut start = 0;
    while start < n {
        let end = (start + 10_000).min(n);
        db.commit(0, &[bench_rows(start..end, WriteKind::Insert)]).await.expect("load");
        start = end;
    }
}

/// A running `ebb local` started by a load harness; stopped with SIGTERM
/// when dropped.
pub struct LocalEbb {
    pub child: std::process::Child,
    pub port: u16,
    pub data: std::path::PathBuf,
    _dir: TempDir,
}

impl LocalEbb {
    /// Starts `<ebb> local` on a free loopback port with `args`, in a fresh
    /// data directory.
    pub fn start(ebb: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let child = std::process::Command::new(ebb)
            .args(["local", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .env("EBB_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ebb local");
        Self { child, port, data, _dir: dir }
    }

    /// The libpq connection string of the `postgres` database.
    pub fn conninfo(&self) -> String {
        format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port)
    }
}

impl Drop for LocalEbb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}
