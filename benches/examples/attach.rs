//! Load harness: what a warm compute costs and how fast it is attached.
//! Starts `ebb storage`, then one unbound `ebb compute --control-listen` at
//! a time: after it settled, reads its resident memory (VmRSS) and times
//! `attach(postgres)` from a control client (and the compute's own
//! `attach_micros`), then stops it — a compute is never rebound.
//!
//! `cargo run --release -p ebb-bench --example attach -- <path/to/ebb> [computes]`

use std::process::Stdio;
use std::time::{Duration, Instant};

use ebb_proto::control::AttachRequest;
use ebb_proto::control::compute_control_client::ComputeControlClient;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let ebb = args.next().expect("usage: attach <path/to/ebb> [computes]");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let storage_url = format!("http://127.0.0.1:{port}");
    let mut storage = Command::new(&ebb)
        .args(["storage", "--listen", &format!("127.0.0.1:{port}"), "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--object-store")
        .arg(format!("file://{}", dir.path().join("objects").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ebb storage");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "storage did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (mut client_side, mut server_side, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let mut compute = Command::new(&ebb)
            .args(["compute", "--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--storage", &storage_url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn ebb compute");
        let stdout = compute.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next_line().await.expect("read").expect("ready line");
        let control = line.split_whitespace().find_map(|p| p.strip_prefix("control=")).expect("control address").to_string();
        // Warm and idle, as in the pool.
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss.push(rss_kib(compute.id().expect("pid")));
        let mut c = ComputeControlClient::connect(format!("http://{control}")).await.expect("control connect");
        let t = Instant::now();
        let r = c.attach(AttachRequest { database: "postgres".into() }).await.expect("attach").into_inner();
        client_side.push(t.elapsed());
        server_side.push(Duration::from_micros(r.attach_micros));
        let _ = compute.kill().await;
    }
    let _ = storage.kill().await;
    client_side.sort();
    server_side.sort();
    rss.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("computes: {n}");
    println!(
        "attach (control client, round trip): p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&client_side, 0.5)),
        ms(percentile(&client_side, 0.95)),
        ms(percentile(&client_side, 0.99)),
        ms(*client_side.last().expect("samples"))
    );
    println!(
        "attach (inside the compute): p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&server_side, 0.5)),
        ms(percentile(&server_side, 0.99))
    );
    println!(
        "unbound compute resident memory: median {:.1} MiB, max {:.1} MiB",
        percentile(&rss, 0.5) as f64 / 1024.0,
        *rss.last().expect("samples") as f64 / 1024.0
    );
}
