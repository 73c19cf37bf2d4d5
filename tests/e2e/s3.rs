//! Crash recovery against a real S3-speaking server (moto, started here).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ebb_proto::storage::*;

use crate::support::*;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_moto(port: u16) -> Moto {
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server must be installed (pip install 'moto[server]'); .ci/run installs it");
    let moto = Moto(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

fn create_bucket(port: u16, bucket: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "PUT /{bucket} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_from_s3_alone() {
    let port = free_port();
    let _moto = start_moto(port);
    create_bucket(port, "ebb-test");
    let env = vec![
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let store = "s3://ebb-test/cluster-a";
    let mut first = StorageProc::start(store, &dir.path().join("c1"), &[], &env).await;
    let mut c = first.client().await;
    create_t(&mut c).await;
    for grp in 0..50i64 {
        c.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(grp * 2, grp, 7), (grp * 2 + 1, grp, 7)])] })
            .await
            .expect("commit to s3");
    }
    first.kill9();
    std::fs::remove_dir_all(dir.path().join("c1")).unwrap();
    let second = StorageProc::start(store, &dir.path().join("c2"), &[], &env).await;
    let rows = read_t(&mut second.client().await).await;
    assert_eq!(rows.len(), 100, "{}", second.log_text());
    // Fencing works on S3 too (conditional PUT with If-None-Match).
    let third = StorageProc::start(store, &dir.path().join("c3"), &[], &env).await;
    let e = second
        .client()
        .await
        .commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(1000, 500, 0)])] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert_eq!(read_t(&mut third.client().await).await.len(), 100);
}
