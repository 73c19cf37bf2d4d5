//! `ebb local` end to end: the real binary with its proxy, controller and
//! compute child processes, driven by tokio-postgres and `ebb status`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::support::*;

/// A running `ebb local`, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct LocalProc {
    pub child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl LocalProc {
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let out = data_dir.with_extension(format!("{port}.out"));
        let child = Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["local", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("EBB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("out"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn ebb local");
        let mut me = Self { child, port, data_dir: data_dir.to_path_buf(), log };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(&out).unwrap_or_default().contains("psql \"postgresql://postgres@127.0.0.1:") {
            if let Some(s) = me.child.try_wait().expect("try_wait") {
                panic!("ebb local exited with {s}:\n{}", me.log_text());
            }
            assert!(Instant::now() < deadline, "ebb local did not print its connection string:\n{}", me.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        me
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log_text();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs psql through the proxy with `-c sql`.
    pub fn psql(&self, sql: &str) -> (bool, String, String) {
        psql_at(self.port, sql, None)
    }

    /// Runs a client tool (pgbench, psql) through the proxy.
    pub fn tool(&self, program: &str, args: &[&str]) -> (bool, String, String) {
        tool_at(self.port, program, args)
    }

    pub async fn connect_to(&self, database: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&format!("host=127.0.0.1 port={} user=postgres dbname={database}", self.port), NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub async fn connect(&self) -> Client {
        match self.connect_to("postgres").await {
            Ok(c) => c,
            Err(e) => panic!("connect through ebb local: {e}\n{}", self.log_text()),
        }
    }

    /// `ebb status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_ebb")).arg("status").arg("--data-dir").arg(&self.data_dir).arg("--json").output().expect("ebb status");
        assert!(out.status.success(), "ebb status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits until `ok(status)` holds.
    pub async fn wait_status(&self, what: &str, timeout: Duration, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last status {s}\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Process ids of the compute children.
    pub fn compute_pids(&self) -> Vec<u32> {
        children_of(self.child.id())
    }

    /// SIGTERM; waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "ebb local did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            std::thread::sleep(Duration::from_secs(2));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// The process (among `pids`) listening on TCP `port`: its socket inode
/// from /proc/net/tcp, found among each process's open descriptors.
fn pid_listening_on(port: u16, pids: &[u32]) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
        (local_port == port && f.get(3) == Some(&"0A")).then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let wanted = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == wanted)))
            .unwrap_or(false)
    })
}

fn database<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["databases"].as_array()?.iter().find(|d| d["name"] == name)
}

async fn count_t(c: &Client) -> i64 {
    c.query_one("select count(*) from t", &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn ebb_local_resumes_from_zero_scales_to_zero_and_replaces_a_dead_compute() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut local = LocalProc::start(&data, &["--pool-size", "1", "--idle-timeout", "3s", "--metrics-listen", &metrics_addr]).await;

    // First connection: the database is at zero; a pool compute is claimed.
    let c = local.connect().await;
    c.batch_execute("create table t (id int primary key, v text); insert into t values (1, 'a'), (2, 'b'), (3, 'c')").await.expect("ddl + insert");
    assert_eq!(count_t(&c).await, 3);
    // The status file is rewritten four times a second.
    let s = local
        .wait_status("postgres running", Duration::from_secs(10), |s| {
            database(s, "postgres").is_some_and(|d| d["state"] == "running" && d["replicas"] == 1 && d["connections"] == 1)
        })
        .await;
    assert_eq!(s["pool"]["size"], 1);

    // Unknown database: 3D000 from the proxy.
    let err = local.connect_to("nosuch").await.err().expect("unknown database is refused");
    assert_eq!(err.code().map(|c| c.code()), Some("3D000"), "{err}");

    // Idle: scales to zero, and the pool is back at its size.
    drop(c);
    local
        .wait_status("scale to zero", Duration::from_secs(30), |s| {
            database(s, "postgres").is_some_and(|d| d["state"] == "suspended" && d["replicas"] == 0) && s["pool"]["ready"] == 1
        })
        .await;
    // The status says replicas 0 once the compute is told to stop; its
    // process exits (and is reaped) a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while local.compute_pids().len() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(local.compute_pids().len(), 1, "only the pool compute runs");

    // Resume: the next connection sees every row.
    let c = local.connect().await;
    assert_eq!(count_t(&c).await, 3);
    // The resume from zero was served by the ready pool; the first one, at
    // start-up, by the pool while it was still filling, or (on a loaded
    // machine, once the pool wait ran out) by a compute started cold.
    // Storage, controller and proxy share /metrics.
    let metrics_addr = metrics_addr.parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(10);
    let count = |m: &str, outcome: &str| -> u64 {
        metric(m, &format!("ebb_resume_seconds_count{{cluster=\"local\",outcome=\"{outcome}\"}}")).unwrap_or(0.0) as u64
    };
    let metrics = loop {
        let m = http_get(metrics_addr, "/metrics");
        if count(&m, "pool_hit") + count(&m, "pool_miss") + count(&m, "cold") == 2 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(count(&metrics, "pool_hit") + count(&metrics, "pool_miss") + count(&metrics, "cold"), 2, "two resumes: {metrics}");
    assert!(count(&metrics, "pool_hit") >= 1, "the resume from zero claimed a ready pool compute: {metrics}");
    assert!(count(&metrics, "cold") <= 1, "only the start-up resume may be cold: {metrics}");
    for expected in [
        "ebb_pool_size{cluster=\"local\"} 1",
        "ebb_database_replicas{cluster=\"local\",database=\"postgres\"} 1",
        "ebb_proxy_connections{database=\"postgres\"} 1",
        "ebb_storage_commits_total",
    ] {
        assert!(metrics.contains(expected), "/metrics lacks {expected}:\n{metrics}");
    }

    // kill -9 every compute: the open session gets an error (not a hang),
    // a new connection succeeds on a replacement.
    let before = local.compute_pids();
    assert!(!before.is_empty());
    for pid in &before {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let r = tokio::time::timeout(Duration::from_secs(10), c.simple_query("select 1")).await.expect("the dead session answers, it does not hang");
    assert!(r.is_err(), "a session on a killed compute must fail");
    let c = local.connect().await;
    assert_eq!(count_t(&c).await, 3);
    c.batch_execute("insert into t values (4, 'd')").await.expect("insert after replacement");
    let after = local.compute_pids();
    assert!(after.iter().all(|p| !before.contains(p)), "replacements are new processes: {before:?} -> {after:?}");
    drop(c);

    // SIGTERM stops everything and reaps every child.
    let pids = local.compute_pids();
    assert!(local.stop().success(), "clean exit:\n{}", local.log_text());
    for pid in pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z"), "compute {pid} outlived ebb local");
    }

    // A restart keeps the data; with no pool the first connection cold-starts a compute.
    let local = LocalProc::start(&data, &["--pool-size", "0"]).await;
    let c = local.connect().await;
    assert_eq!(count_t(&c).await, 4);
    local.wait_status("no pool", Duration::from_secs(10), |s| s["pool"]["size"] == 0 && s["pool"]["ready"] == 0).await;
}

#[tokio::test]
async fn a_burst_scales_out_to_max_replicas_and_back_in_without_losing_a_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let local = LocalProc::start(
        &data,
        &["--pool-size", "2", "--max-replicas", "4", "--target-sessions", "8", "--stable-window", "4s", "--panic-window", "1s"],
    )
    .await;
    let c = local.connect().await;
    c.batch_execute("create table hits (client int, n int, primary key (client, n))").await.expect("create");
    drop(c);

    // 32 clients, each reconnecting every 10 inserts (so that new sessions
    // land on new computes), for 12 seconds.
    let port = local.port;
    let until = Instant::now() + Duration::from_secs(12);
    let mut clients = Vec::new();
    for client in 0..32i32 {
        clients.push(tokio::spawn(async move {
            let (mut sent, mut acked, mut failed) = (0u64, 0u64, Vec::new());
            let mut n = 0i32;
            while Instant::now() < until {
                let conn = tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"), NoTls).await;
                let (c, task) = match conn {
                    Ok(x) => x,
                    Err(e) => {
                        failed.push(format!("connect: {e}"));
                        continue;
                    }
                };
                tokio::spawn(task);
                for _ in 0..10 {
                    sent += 1;
                    match c.execute("insert into hits values ($1, $2)", &[&client, &n]).await {
                        Ok(1) => acked += 1,
                        Ok(k) => failed.push(format!("insert reported {k} rows")),
                        Err(e) => failed.push(format!("insert: {e}")),
                    }
                    n += 1;
                }
            }
            (sent, acked, failed)
        }));
    }
    let mut peak = 0;
    while Instant::now() < until {
        let s = local.status();
        if let Some(d) = database(&s, "postgres") {
            peak = peak.max(d["replicas"].as_u64().unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (mut sent, mut acked) = (0, 0);
    for c in clients {
        let (s, a, failed) = c.await.expect("client task");
        assert!(failed.is_empty(), "client errors: {failed:?}\n{}", local.log_text());
        sent += s;
        acked += a;
    }
    assert_eq!(sent, acked, "every query got its answer");
    assert_eq!(peak, 4, "the burst scaled out to --max-replicas\n{}", local.log_text());
    let c = local.connect().await;
    let rows: i64 = c.query_one("select count(*) from hits", &[]).await.expect("count").get(0);
    assert_eq!(rows as u64, acked, "every acknowledged insert is stored, nothing else");
    drop(c);
    // The burst is over: scale-in drains computes back down to one.
    local
        .wait_status("scale-in", Duration::from_secs(40), |s| database(s, "postgres").is_some_and(|d| d["replicas"] == 1))
        .await;
    assert!(local.log_text().contains("scaling in: draining"), "scale-in went through drains");
}

#[tokio::test]
async fn tls_connections_work_with_sslmode_require() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl must be installed");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (c, k) = (cert.to_string_lossy().to_string(), key.to_string_lossy().to_string());
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1", "--tls-cert", &c, "--tls-key", &k]).await;
    let out = Command::new("psql")
        .arg(format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require", local.port))
        .args(["-X", "-A", "-t", "-c", "select 40 + 2", "-c", "\\conninfo"])
        .output()
        .expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), local.log_tail());
    assert!(stdout.starts_with("42"), "{stdout}");
    assert!(stdout.contains("SSL connection (protocol: TLSv1."), "psql reports TLS: {stdout}");
    // Without TLS (sslmode=disable) the same proxy still serves plain connections.
    let (ok, out, err) = local.psql("select 1");
    assert!(ok && out.trim() == "1", "{out}{err}");
}

async fn connect_as(port: u16, user: &str, password: &str, database: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user={user} password={password} dbname={database}"), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

fn code(r: Result<Client, tokio_postgres::Error>) -> String {
    match r {
        Ok(_) => "connected".into(),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

#[tokio::test]
async fn scram_roles_and_connect_grants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1", "--auth", "scram", "--password", "s3cret"]).await;
    let port = local.port;
    assert_eq!(code(connect_as(port, "postgres", "wrong", "postgres").await), "28P01");
    assert_eq!(code(connect_as(port, "nobody", "s3cret", "postgres").await), "28P01", "unknown roles fail like wrong passwords");
    let admin = connect_as(port, "postgres", "s3cret", "postgres").await.expect("superuser logs in");
    admin
        .batch_execute(
            "CREATE ROLE alice WITH LOGIN PASSWORD 'wonderland'; CREATE ROLE bob PASSWORD 'builder'; CREATE DATABASE app",
        )
        .await
        .expect("roles and database");
    let err = admin.batch_execute("CREATE ROLE alice LOGIN").await.expect_err("duplicate role");
    assert_eq!(err.code().map(|c| c.code()), Some("42710"));
    // A role without CONNECT on a database cannot reach it.
    assert_eq!(code(connect_as(port, "alice", "wonderland", "app").await), "42501");
    assert_eq!(code(connect_as(port, "bob", "builder", "postgres").await), "28000", "bob has no LOGIN");
    {
        let app = connect_as(port, "postgres", "s3cret", "app").await.expect("superuser reaches app");
        app.batch_execute("CREATE TABLE secrets (id int PRIMARY KEY, v text); INSERT INTO secrets VALUES (1, 'x')").await.expect("app data");
    }
    admin.batch_execute("GRANT CONNECT ON DATABASE app TO alice").await.expect("grant");
    let alice = connect_as(port, "alice", "wonderland", "app").await.expect("alice reaches app after GRANT");
    let n: i64 = alice.query_one("select count(*) from secrets", &[]).await.expect("read").get(0);
    assert_eq!(n, 1);
    let err = alice.batch_execute("CREATE ROLE mallory LOGIN SUPERUSER").await.expect_err("alice is no superuser");
    assert_eq!(err.code().map(|c| c.code()), Some("42501"));
    assert_eq!(code(connect_as(port, "alice", "wonderland", "postgres").await), "42501");
    admin.batch_execute("ALTER ROLE alice WITH PASSWORD 'looking-glass'; REVOKE CONNECT ON DATABASE app FROM alice").await.expect("alter, revoke");
    assert_eq!(code(connect_as(port, "alice", "wonderland", "app").await), "28P01", "old password gone");
    assert_eq!(code(connect_as(port, "alice", "looking-glass", "app").await), "42501", "CONNECT revoked");
    admin.batch_execute("DROP ROLE alice").await.expect("drop role");
    assert_eq!(code(connect_as(port, "alice", "looking-glass", "app").await), "28P01");
    // psql with a password from the environment, over the same proxy.
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "-X", "-A", "-t", "-c", "select 7", "postgres"])
        .env("PGPASSWORD", "s3cret")
        .output()
        .expect("psql");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "7", "{}", String::from_utf8_lossy(&out.stderr));
}

/// A cancel request sent to the proxy reaches the compute running the query.
#[tokio::test]
async fn cancel_requests_reach_the_compute_through_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let c = local.connect().await;
    let token = c.cancel_token();
    let started = Instant::now();
    let long = tokio::spawn(async move {
        let r = c.simple_query("SELECT count(*) FROM generate_series(1, 2000000000) a").await;
        (r, c)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(NoTls).await.expect("cancel request sent");
    let (r, c) = tokio::time::timeout(Duration::from_secs(20), long).await.expect("cancelled in time").expect("task");
    let err = r.expect_err("the query was cancelled");
    assert_eq!(err.code().map(|c| c.code()), Some("57014"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The session is still usable.
    let rows = c.simple_query("SELECT 1").await.expect("after cancel");
    assert!(!rows.is_empty());
}

/// `kill -9` of the compute serving one database: its session gets an
/// error, a session of another database (on another compute) carries on,
/// and the next connection gets a replacement.
#[tokio::test]
async fn killing_one_compute_leaves_other_sessions_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "0"]).await;
    let admin = local.connect().await;
    admin.batch_execute("CREATE DATABASE other").await.expect("create database");
    let other = local.connect_to("other").await.expect("connect other");
    other.batch_execute("CREATE TABLE o (id int PRIMARY KEY); INSERT INTO o VALUES (1)").await.expect("other data");
    let s = local
        .wait_status("two databases running", Duration::from_secs(10), |s| {
            ["postgres", "other"].iter().all(|d| database(s, d).is_some_and(|d| d["replicas"] == 1))
        })
        .await;
    let addr = database(&s, "postgres").and_then(|d| d["computes"][0].as_str()).expect("postgres compute address").to_string();
    let port: u16 = addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("port");
    let victim = pid_listening_on(port, &local.compute_pids()).expect("the compute serving postgres");
    let _ = Command::new("kill").args(["-KILL", &victim.to_string()]).status();
    let r = tokio::time::timeout(Duration::from_secs(10), admin.simple_query("select 1")).await.expect("no hang");
    assert!(r.is_err(), "the killed compute's session fails");
    let n: i64 = other.query_one("select count(*) from o", &[]).await.expect("the other database's session carries on").get(0);
    assert_eq!(n, 1);
    let again = local.connect().await;
    again.simple_query("select 1").await.expect("a replacement serves postgres");
    assert!(!local.compute_pids().contains(&victim));
}

/// Computes started by `ebb local` exit on their own when it is killed
/// with SIGKILL (and so cannot stop them).
#[tokio::test]
async fn computes_exit_when_ebb_local_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let c = local.connect().await;
    c.simple_query("SELECT 1").await.expect("query");
    let pids = local.compute_pids();
    assert!(!pids.is_empty());
    let _ = local.child.kill();
    let _ = local.child.wait();
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(alive) {
        assert!(Instant::now() < deadline, "computes outlived a killed ebb local: {pids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A standalone `ebb proxy` process, killed when dropped.
struct ProxyProc {
    child: Child,
    log: PathBuf,
}

impl Drop for ProxyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebb proxy` as a process of its own, in front of `ebb local`'s
/// controller through its broker (cluster `local`): both proxies reach the
/// same computes; load is counted at the computes, so a session held only
/// through the second proxy keeps its database awake; unknown databases get
/// 3D000; once that session ends the database scales to zero.
#[tokio::test]
async fn a_standalone_proxy_fronts_ebb_local_through_its_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = free_port();
    let broker_listen = format!("127.0.0.1:{broker}");
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1", "--idle-timeout", "3s", "--broker-listen", &broker_listen]).await;
    let port = free_port();
    let log = dir.path().join("proxy.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["proxy", "--listen", &format!("127.0.0.1:{port}"), "--broker", &format!("http://{broker_listen}"), "--cluster", "local", "--auth", "trust"])
        .env("EBB_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn ebb proxy");
    let proxy = ProxyProc { child, log };
    let connect = |database: &'static str| async move {
        let (client, conn) = tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=postgres dbname={database}"), NoTls).await?;
        tokio::spawn(conn);
        Ok::<Client, tokio_postgres::Error>(client)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let via_proxy = loop {
        match connect("postgres").await {
            Ok(c) => break c,
            Err(e) => {
                let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
                assert!(Instant::now() < deadline, "cannot connect through ebb proxy: {e}\n{log}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    via_proxy.batch_execute("CREATE TABLE via_proxy (id int PRIMARY KEY); INSERT INTO via_proxy VALUES (1), (2)").await.expect("write through ebb proxy");
    let via_local = local.connect().await;
    let n: i64 = via_local.query_one("SELECT count(*) FROM via_proxy", &[]).await.expect("read through ebb local").get(0);
    assert_eq!(n, 2);
    local.wait_status("postgres running", Duration::from_secs(10), |s| database(s, "postgres").is_some()).await;
    let status = local.status();
    assert_eq!(database(&status, "postgres").expect("postgres")["replicas"], 1, "one compute serves both proxies: {status}");
    drop(via_local);

    // Past the idle timeout, held only through the standalone proxy.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rows = via_proxy.query_one("SELECT count(*) FROM via_proxy", &[]).await.expect("the session through ebb proxy lived on");
    assert_eq!(rows.get::<_, i64>(0), 2);
    let err = connect("nope").await.err().expect("unknown database refused");
    assert_eq!(err.code().map(|c| c.code()), Some("3D000"), "{err}");

    drop(via_proxy);
    local
        .wait_status("scale to zero after the last session through ebb proxy", Duration::from_secs(30), |s| {
            database(s, "postgres").is_some_and(|d| d["replicas"] == 0)
        })
        .await;
}

/// A standard output that cannot be written (here /dev/full) does not stop
/// `ebb local`; but a password it would generate and could not show is
/// refused rather than set, so nobody is locked out.
#[tokio::test]
async fn an_unwritable_standard_output_does_not_stop_ebb_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("local.log");
    let port = free_port();
    let start = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["local", "--listen", &format!("127.0.0.1:{port}"), "--pool-size", "1"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(std::fs::OpenOptions::new().write(true).open("/dev/full").expect("/dev/full"))
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn ebb local")
    };
    let mut scram = start(&["--auth", "scram"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = scram.try_wait().expect("try_wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ebb local went on without showing the generated password");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success() && text.contains("cannot show the generated password"), "{status}:\n{text}");
    // With a password given there is nothing to show: it starts and serves.
    let mut local = start(&["--password", "given"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = tool_at(port, "psql", &["-X", "-A", "-t", "-c", "SELECT 6 * 7", "postgres"]);
        if ok {
            assert_eq!(out.trim(), "42");
            break;
        }
        if let Some(s) = local.try_wait().expect("try_wait") {
            panic!("ebb local exited with {s}:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "ebb local did not serve:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(local.try_wait().expect("try_wait").is_none(), "still running after its banner failed to print");
    let _ = Command::new("kill").args(["-TERM", &local.id().to_string()]).status();
    let _ = local.wait();
}
