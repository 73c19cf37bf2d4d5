//! Load harness: resume latency from zero through `ebb local`. Starts the
//! real binary with a short idle timeout; each iteration waits until the
//! database is suspended (per `ebb status`'s file), then times
//! `connect + SELECT 1`. Prints p50/p95/p99.
//!
//! `cargo run --release -p ebb-bench --example resume_latency -- <path/to/ebb> <warm|cold> [iterations]`

use std::path::Path;

use ebb_bench::LocalEbb;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn suspended(data: &Path) -> bool {
    let Ok(raw) = std::fs::read(data.join("status.json")) else { return false };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) else { return false };
    let pool_ok = v["pool"]["ready"] == v["pool"]["size"];
    let db = v["databases"].as_array().and_then(|d| d.iter().find(|d| d["name"] == "postgres").cloned());
    pool_ok && db.is_some_and(|d| d["state"] == "suspended")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let ebb = args.next().expect("usage: resume_latency <path/to/ebb> <warm|cold> [iterations]");
    let mode = args.next().unwrap_or_else(|| "warm".into());
    let iterations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let pool = if mode == "cold" { "0" } else { "2" };
    let local = LocalEbb::start(&ebb, &["--pool-size", pool, "--idle-timeout", "1s"]);
    let (data, conninfo) = (local.data.clone(), local.conninfo());
    let mut samples = Vec::with_capacity(iterations);
    // The first connection creates nothing but makes the database known.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.is_err() {
        assert!(Instant::now() < deadline, "ebb local did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..iterations {
        let wait = Instant::now();
        while !suspended(&data) {
            assert!(wait.elapsed() < Duration::from_secs(60), "never suspended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = Instant::now();
        let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.expect("connect");
        let task = tokio::spawn(conn);
        client.simple_query("SELECT 1").await.expect("SELECT 1");
        samples.push(t.elapsed());
        drop(client);
        let _ = task.await;
        // The status file is rewritten every 250 ms: see the database
        // running before waiting for it to be suspended again.
        let wait = Instant::now();
        while suspended(&data) {
            assert!(wait.elapsed() < Duration::from_secs(10), "status never showed the resumed database");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(local);
    samples.sort();
    println!(
        "ebb resume_latency mode={mode} n={} p50={:.1}ms p95={:.1}ms p99={:.1}ms max={:.1}ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0),
    );
}
