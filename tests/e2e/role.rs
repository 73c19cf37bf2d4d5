//! The storage role as an operator sees it: settings, /metrics, SIGTERM, a
//! log it cannot write.

use std::time::{Duration, Instant};

use ebb_proto::storage::*;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Settings come from a TOML file here, flags override it.
    let cfg = dir.path().join("ebb.toml");
    std::fs::write(&cfg, format!("[storage]\nmetrics_listen = \"{metrics}\"\ndurability = \"local\"\nblock_cache_mb = 64\n")).unwrap();
    let mut p = StorageProc::start(&store, &dir.path().join("cache"), &["--config", cfg.to_str().unwrap(), "--durability", "remote"], &[]).await;
    let mut c = p.client().await;
    create_t(&mut c).await;
    for i in 0..3 {
        c.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(i, i, i)])] }).await.unwrap();
    }
    let body = http_get(metrics, "/metrics");
    let commits = metric(&body, "ebb_storage_commits_total").unwrap_or_else(|| panic!("no commit counter in:\n{body}"));
    assert!(commits >= 4.0, "create table + 3 commits, got {commits}");
    assert!(body.contains("ebb_storage_wal_upload_seconds_bucket"), "remote mode uploads WAL per commit");
    assert!(body.contains("ebb_storage_object_store_bytes_total{direction=\"put\"}"));
    assert!(body.contains("ebb_storage_block_cache_bytes "), "block cache gauge in:\n{body}");
    assert!(p.log_text().contains("durability=remote"), "the flag beats the file:\n{}", p.log_text());

    let pid = p.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM:\n{}", p.log_text());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}:\n{}", p.log_text());
    assert!(p.log_text().contains("storage stopped"));
}

/// A full disk under the log file must not stop the server: with stderr on
/// /dev/full every log line fails to be written (before the fix the logger's
/// report of that panicked, and the process died at its first log line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").expect("open /dev/full");
    let mut p = StorageProc::start_logging_to(free_port(), "/dev/null".into(), full, &store, &dir.path().join("cache"), &[], &[]).await;
    let mut c = p.client().await;
    create_t(&mut c).await;
    for i in 0..3 {
        c.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(i, i, i)])] }).await.unwrap();
    }
    c.create_database(CreateDatabaseRequest { name: "second".into(), if_not_exists: false }).await.expect("create database");
    assert_eq!(read_t(&mut c).await.len(), 3);
    assert!(p.child.try_wait().unwrap().is_none(), "the storage process is still running");
}
