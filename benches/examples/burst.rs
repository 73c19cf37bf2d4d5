//! Load harness: a 10x step in load on one database through `ebb local`.
//! 3 clients for 10 s, then 30 for 20 s, then 3 again for 25 s; each client
//! reconnects every 20 queries so new sessions can land on new computes.
//! Samples `status.json` every 100 ms into a CSV (t, clients, replicas,
//! sessions) and prints the burst reaction: from the step until a compute
//! that was not serving before is attached and listed as serving (new
//! sessions go to the least-loaded compute, so it takes the next ones).
//!
//! `cargo run --release -p ebb-bench --example burst -- <path/to/ebb> <out.csv>`

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ebb_bench::LocalEbb;

fn status(data: &std::path::Path) -> Option<(u64, u64, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("status.json")).ok()?).ok()?;
    let d = v["databases"].as_array()?.iter().find(|d| d["name"] == "postgres")?.clone();
    let computes = d["computes"].as_array()?.iter().filter_map(|c| c.as_str().map(String::from)).collect();
    Some((d["replicas"].as_u64()?, d["connections"].as_u64()?, computes))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let ebb = args.next().expect("usage: burst <path/to/ebb> <out.csv>");
    let out = args.next().unwrap_or_else(|| "burst.csv".into());
    let local = LocalEbb::start(
        &ebb,
        &["--pool-size", "2", "--max-replicas", "4", "--target-sessions", "8", "--stable-window", "10s", "--panic-window", "2s", "--idle-timeout", "10m"],
    );
    let data = local.data.clone();
    let conninfo = Arc::new(local.conninfo());
    while tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let start = Instant::now();
    let active = Arc::new(AtomicUsize::new(3));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..30usize {
        let (conninfo, active, stop, answered, failed) = (conninfo.clone(), active.clone(), stop.clone(), answered.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if i >= active.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let Ok((c, conn)) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let task = tokio::spawn(conn);
                for _ in 0..20 {
                    match c.simple_query("SELECT 1").await {
                        Ok(_) => answered.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
                drop(c);
                let _ = task.await;
            }
        }));
    }
    let mut csv = std::fs::File::create(&out).expect("csv");
    writeln!(csv, "t_seconds,active_clients,replicas,sessions").expect("write");
    let mut before: Option<Vec<String>> = None;
    let mut step_at = None;
    let mut attached_after = None;
    while start.elapsed() < Duration::from_secs(55) {
        let t = start.elapsed();
        let phase = if t < Duration::from_secs(10) { 3 } else if t < Duration::from_secs(30) { 30 } else { 3 };
        if phase == 30 && step_at.is_none() {
            step_at = Some(t);
            before = status(&data).map(|s| s.2);
        }
        active.store(phase, Ordering::Relaxed);
        if let Some((replicas, sessions, computes)) = status(&data) {
            writeln!(csv, "{:.2},{phase},{replicas},{sessions}", t.as_secs_f64()).expect("write");
            if let (Some(step), Some(old), None) = (step_at, &before, attached_after)
                && computes.iter().any(|c| !old.contains(c))
            {
                attached_after = Some(t - step);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    drop(local);
    println!(
        "ebb burst step=3->30 clients: new compute attached after {} (status sampled every 100 ms, file rewritten every 250 ms); answered={} failed={} csv={out}",
        attached_after.map(|d| format!("{:.2}s", d.as_secs_f64())).unwrap_or_else(|| "never".into()),
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
}
