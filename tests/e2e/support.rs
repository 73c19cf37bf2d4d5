//! Starting the real `ebb` binary and talking to it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use ebb_proto::storage::storage_client::StorageClient;
use ebb_proto::storage::*;
use tonic::transport::Channel;

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A running `ebb storage` process, killed when dropped.
pub struct StorageProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl StorageProc {
    /// Starts `ebb storage` and waits until it answers.
    pub async fn start(object_store: &str, cache_dir: &Path, extra: &[&str], env: &[(&str, String)]) -> Self {
        let port = free_port();
        let log = cache_dir.with_extension(format!("{port}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        Self::start_logging_to(port, log, log_file, object_store, cache_dir, extra, env).await
    }

    /// Starts `ebb storage` on `port` with its stderr going to `log_file`
    /// (`log` names it for [`Self::log_text`]).
    pub async fn start_logging_to(
        port: u16,
        log: PathBuf,
        log_file: std::fs::File,
        object_store: &str,
        cache_dir: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
        cmd.arg("storage")
            .args(["--listen", &addr.to_string(), "--object-store", object_store])
            .arg("--cache-dir")
            .arg(cache_dir)
            .args(extra)
            .env("EBB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ebb storage");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("ebb storage exited early with {status}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            if let Ok(mut c) = StorageClient::connect(format!("http://{addr}")).await
                && c.list_databases(ListDatabasesRequest {}).await.is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "ebb storage did not become ready:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, addr, log }
    }

    /// A client of this process.
    pub async fn client(&self) -> StorageClient<Channel> {
        StorageClient::connect(format!("http://{}", self.addr)).await.expect("connect")
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StorageProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Column definition.
pub fn bigint(name: &str) -> ColumnDef {
    ColumnDef { name: name.into(), r#type: Some(ColumnType { kind: TypeKind::Bigint as i32, length: 0, scale: 0 }), ..Default::default() }
}

/// Creates `t(id bigint primary key, grp bigint, v bigint)`.
pub async fn create_t(c: &mut StorageClient<Channel>) {
    c.create_table(CreateTableRequest {
        database: "postgres".into(),
        name: "t".into(),
        columns: vec![bigint("id"), bigint("grp"), bigint("v")],
        primary_key: vec!["id".into()],
        ..Default::default()
    })
    .await
    .expect("create table");
}

/// A batch of `t` rows.
pub fn rows(rs: &[(i64, i64, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("grp", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]));
    let col = |f: fn(&(i64, i64, i64)) -> i64| Arc::new(Int64Array::from(rs.iter().map(f).collect::<Vec<_>>())) as ArrayRef;
    RecordBatch::try_new(schema, vec![col(|r| r.0), col(|r| r.1), col(|r| r.2)]).expect("batch")
}

/// An insert into `t`.
pub fn insert(rs: &[(i64, i64, i64)]) -> TableWrite {
    TableWrite {
        schema: String::new(),
        table: "t".into(),
        kind: WriteKind::Insert as i32,
        arrow_ipc: ebb_proto::arrow_ipc::encode(&[rows(rs)]).expect("ipc"),
        expect: None,
    }
}

/// All `(id, grp, v)` rows of `t`.
pub async fn read_t(c: &mut StorageClient<Channel>) -> Vec<(i64, i64, i64)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let mut s = c
        .scan(ScanRequest { database: "postgres".into(), table: "t".into(), ..Default::default() })
        .await
        .expect("scan")
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = s.message().await.expect("scan stream") {
        bytes.extend(m.arrow_ipc);
    }
    let mut out = Vec::new();
    for b in ebb_proto::arrow_ipc::decode(&bytes).expect("decode") {
        let c = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (a, g, v) = (c(0), c(1), c(2));
        out.extend((0..b.num_rows()).map(|i| (a.value(i), g.value(i), v.value(i))));
    }
    out
}

/// A plain HTTP GET on loopback; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// The value of `series` (a metric name, with its labels if it has any) on
/// a Prometheus text page.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Runs psql against `port` with `-c sql` (and `stdin`, the data of a COPY …
/// FROM STDIN); returns success, stdout (unaligned, tuples only), stderr.
pub fn psql_at(port: u16, sql: &str, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-d", "postgres", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql must be installed");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(data) = stdin {
        input.write_all(data.as_bytes()).expect("write psql stdin");
    }
    drop(input);
    let out = child.wait_with_output().expect("psql");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

/// Runs a client tool (pgbench, psql) against `port` with `args`.
pub fn tool_at(port: u16, program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}
