//! The compute node end to end: real `ebb storage` and `ebb compute`
//! processes, spoken to by psql and by tokio-postgres (extended protocol).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::support::*;

/// A running `ebb compute`, killed when dropped.
pub struct ComputeProc {
    pub child: Child,
    pub port: u16,
    pub log: std::path::PathBuf,
}

impl ComputeProc {
    pub async fn start(storage: &StorageProc, dir: &std::path::Path, extra: &[&str]) -> Self {
        let port = free_port();
        let log = dir.join(format!("compute-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_ebb"))
            .args(["compute", "--listen", &format!("127.0.0.1:{port}"), "--storage", &format!("http://{}", storage.addr)])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn ebb compute");
        let mut me = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(s) = me.child.try_wait().expect("try_wait") {
                panic!("ebb compute exited with {s}:\n{}", std::fs::read_to_string(&me.log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "compute did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        me
    }

    pub async fn connect(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port), NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }

    /// Runs psql with `-c sql`; returns stdout (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> (bool, String, String) {
        psql_at(self.port, sql, None)
    }

    /// Runs psql with `-c sql`, feeding `stdin` (the data of a COPY … FROM STDIN).
    pub fn psql_stdin(&self, sql: &str, stdin: &str) -> (bool, String, String) {
        psql_at(self.port, sql, Some(stdin))
    }

    /// Runs a client tool (pgbench, psql) against this compute with `args`.
    pub fn tool(&self, program: &str, args: &[&str]) -> (bool, String, String) {
        tool_at(self.port, program, args)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ComputeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn cluster(storage_extra: &[&str]) -> (tempfile::TempDir, StorageProc, ComputeProc) {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    let storage = StorageProc::start(&store, &dir.path().join("cache"), storage_extra, &[]).await;
    let compute = ComputeProc::start(&storage, dir.path(), &[]).await;
    (dir, storage, compute)
}

pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_creates_inserts_and_selects() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let (ok, _, err) = compute.psql("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2))");
    assert!(ok, "{err}");
    let (ok, out, err) = compute.psql("INSERT INTO items VALUES (1, 'apple', 1.25), (2, 'pear', 2.5), (3, 'fig', NULL)");
    assert!(ok, "{err}");
    let _ = out;
    let (ok, out, err) = compute.psql("SELECT id, name, price FROM items WHERE id >= 2 ORDER BY id");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "2|pear|2.50\n3|fig|");
    let (ok, out, _) = compute.psql("SELECT count(*), sum(price) FROM items");
    assert!(ok);
    assert_eq!(out.trim(), "3|3.75");
    let (ok, out, err) = compute.psql("UPDATE items SET price = price * 2 WHERE name = 'apple'");
    assert!(ok, "{err}");
    let _ = out;
    let (_, out, _) = compute.psql("SELECT price FROM items WHERE id = 1");
    assert_eq!(out.trim(), "2.50");
    let (ok, _, err) = compute.psql("DELETE FROM items WHERE id IN (SELECT id FROM items WHERE price IS NULL)");
    assert!(ok, "{err}");
    let (_, out, _) = compute.psql("SELECT string_agg(name, ',' ORDER BY id) FROM items");
    assert_eq!(out.trim(), "apple,pear");
    let (ok, _, err) = compute.psql("SELECT * FROM nope");
    assert!(!ok && err.contains("nope"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_tags_parameters_and_errors() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let c = compute.connect().await;
    c.batch_execute("CREATE TABLE t (id integer PRIMARY KEY, v text, n bigint)").await.unwrap();
    let insert = c.prepare("INSERT INTO t VALUES ($1, $2, $3)").await.unwrap();
    for i in 0..10i32 {
        let n = c.execute(&insert, &[&i, &format!("v{i}"), &(i as i64 * 10)]).await.unwrap();
        assert_eq!(n, 1, "INSERT 0 1");
    }
    // The primary-key equality goes to storage as a key bound; EXPLAIN shows it.
    let plan: Vec<String> = c.query("EXPLAIN SELECT v FROM t WHERE id = 4", &[]).await.unwrap().iter().map(|r| r.get::<_, String>(1)).collect();
    assert!(plan.iter().any(|p| p.contains("StorageScanExec") && p.contains("key=(4)")), "{plan:?}");
    // Whole-table aggregates are computed in storage.
    let plan: Vec<String> = c.query("EXPLAIN SELECT count(*), max(n) FROM t WHERE id > 2", &[]).await.unwrap().iter().map(|r| r.get::<_, String>(1)).collect();
    assert!(plan.iter().any(|p| p.contains("StorageScanExec") && p.contains("aggregates=[count(*), max(n)]")), "{plan:?}");
    assert!(!plan.iter().any(|p| p.contains("AggregateExec")), "{plan:?}");
    let row = c.query_one("SELECT count(*), max(n), sum(id) FROM t WHERE id > 2", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2)), (7, 90, 42));
    let rows = c.query("SELECT v, n FROM t WHERE id = $1", &[&4i32]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), "v4");
    assert_eq!(rows[0].get::<_, i64>(1), 40);
    assert_eq!(c.execute("UPDATE t SET n = n + 1 WHERE id < $1", &[&5i32]).await.unwrap(), 5);
    assert_eq!(c.execute("DELETE FROM t WHERE n > $1", &[&50i64]).await.unwrap(), 4);
    let e = c.execute("INSERT INTO t VALUES (1, 'dup', 0)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e}");
    let e = c.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    let e = c.simple_query("SELECT * FROM missing").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P01", "{e}");
    // The session survives every error.
    let rows = c.query("SELECT count(*) FROM t", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 6);
    // Result columns are named as PostgreSQL names them, in Describe and in the simple protocol.
    let names = |cols: &[tokio_postgres::Column]| cols.iter().map(|c| c.name().to_string()).collect::<Vec<_>>();
    let stmt = c.prepare("SELECT count(*), sum(n), v, sum(n) + 1, upper(v) AS up FROM t GROUP BY v ORDER BY v LIMIT 1").await.unwrap();
    assert_eq!(names(stmt.columns()), ["count", "sum", "v", "?column?", "up"]);
    assert_eq!(c.query(&stmt, &[]).await.unwrap()[0].get::<_, i64>("count"), 1);
    // Repeated names are allowed, as in PostgreSQL (DataFusion refuses them).
    let stmt = c.prepare("SELECT v, t.v, 1, 1, id AS x, n AS x FROM t WHERE id = 3").await.unwrap();
    assert_eq!(names(stmt.columns()), ["v", "v", "?column?", "?column?", "x", "x"]);
    let row = c.query_one(&stmt, &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(1), row.get::<_, i32>(4), row.get::<_, i64>(5)), ("v3".to_string(), 3, 31));
    let simple = c.simple_query("SELECT count(*) FROM t").await.unwrap();
    assert!(matches!(&simple[0], tokio_postgres::SimpleQueryMessage::RowDescription(d) if d[0].name() == "count"), "{:?}", simple.first().map(|_| ()));
    let v = c.simple_query("SHOW server_version").await.unwrap();
    assert!(matches!(&v[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0).unwrap_or("").starts_with("15")));
}

/// A prepared statement keeps its plan between executions and follows DDL
/// made by another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_keep_their_plan_across_ddl() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let (a, b) = (compute.connect().await, compute.connect().await);
    a.batch_execute("CREATE TABLE p (id integer PRIMARY KEY, v text)").await.unwrap();
    a.batch_execute("INSERT INTO p VALUES (1, 'one'), (2, 'two')").await.unwrap();
    let named = b.prepare("SELECT v FROM p WHERE id = $1").await.unwrap();
    let star = b.prepare("SELECT * FROM p WHERE id = $1").await.unwrap();
    for (id, v) in [(1i32, "one"), (2, "two"), (3, "")] {
        let rows = b.query(&named, &[&id]).await.unwrap();
        assert_eq!(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), if v.is_empty() { vec![] } else { vec![v.to_string()] });
    }
    assert_eq!(b.query(&star, &[&1i32]).await.unwrap().len(), 1);
    // Another connection adds a column and writes it: the named-column
    // statement still runs (its result is unchanged) and reads current data.
    a.batch_execute("ALTER TABLE p ADD COLUMN w bigint; UPDATE p SET v = 'uno', w = 5 WHERE id = 1").await.unwrap();
    let rows = b.query(&named, &[&1i32]).await.unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "uno");
    // `SELECT *` would now return another column than the client was told:
    // PostgreSQL's error, which drivers answer by preparing again.
    let e = b.query(&star, &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "0A000", "{e}");
    assert_eq!(e.as_db_error().map(|d| d.message()), Some("cached plan must not change result type"), "{e:?}");
    let star = b.prepare("SELECT * FROM p WHERE id = $1").await.unwrap();
    let rows = b.query(&star, &[&1i32]).await.unwrap();
    assert_eq!((rows[0].get::<_, String>(1), rows[0].get::<_, i64>(2)), ("uno".to_string(), 5));
    // A dropped column the statement names is an error, not stale data.
    a.batch_execute("ALTER TABLE p DROP COLUMN v").await.unwrap();
    let e = b.query(&named, &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42703", "{e}");
    // An insert prepared before the table was recreated with other types.
    let insert = b.prepare("INSERT INTO p (id) VALUES ($1)").await.unwrap();
    a.batch_execute("DROP TABLE p; CREATE TABLE p (id bigint PRIMARY KEY)").await.unwrap();
    assert_eq!(b.execute(&insert, &[&7i32]).await.unwrap(), 1);
    let rows = a.query("SELECT id FROM p", &[]).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(), vec![7]);
}

/// `now()` is the start of the current transaction: it moves between
/// statements outside a block and stands still inside one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_is_the_transaction_start() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let c = compute.connect().await;
    let now = |sql: &'static str| {
        let c = &c;
        async move { c.simple_query(sql).await.unwrap().into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        }).expect("a row") }
    };
    let a = now("SELECT CAST(now() AS text)").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = now("SELECT CAST(now() AS text)").await;
    assert!(b > a, "{a} then {b}");
    c.batch_execute("BEGIN").await.unwrap();
    let a = now("SELECT CAST(now() AS text)").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = now("SELECT CAST(CURRENT_TIMESTAMP AS text)").await;
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(a, b, "one transaction, one now()");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(now("SELECT CAST(now() AS text)").await > b);
    // now() is a timestamptz, as in PostgreSQL, printed with its offset (sessions run in UTC).
    let stmt = c.prepare("SELECT now(), CURRENT_TIMESTAMP, TIMESTAMPTZ '2020-01-02 03:04:05+02'").await.unwrap();
    assert!(stmt.columns().iter().all(|col| col.type_() == &tokio_postgres::types::Type::TIMESTAMPTZ), "{:?}", stmt.columns());
    assert!(now("SELECT now()").await.ends_with("+00"));
    assert_eq!(now("SELECT TIMESTAMPTZ '2020-01-02 03:04:05+02'").await, "2020-01-02 01:04:05+00");
    // Cast to text, timestamps read as PostgreSQL prints them (DataFusion alone: ISO 8601).
    assert!(now("SELECT now()::text").await.ends_with("+00"));
    assert_eq!(now("SELECT CAST(TIMESTAMP '2020-01-02 03:04:05.250' AS varchar) || '!'").await, "2020-01-02 03:04:05.25!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_conflicts_and_failed_blocks() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let a = compute.connect().await;
    let b = compute.connect().await;
    a.batch_execute("CREATE TABLE acct (id int PRIMARY KEY, bal bigint); INSERT INTO acct VALUES (1, 100)").await.unwrap();
    // Rollback leaves nothing.
    a.batch_execute("BEGIN; INSERT INTO acct VALUES (2, 5); ROLLBACK").await.unwrap();
    assert_eq!(a.query("SELECT count(*) FROM acct", &[]).await.unwrap()[0].get::<_, i64>(0), 1);
    // REPEATABLE READ: two sessions update the same row; the second waits
    // for the first one's row lock, then gets 40001 once it commits.
    a.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
    b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
    assert_eq!(b.query("SELECT bal FROM acct WHERE id = 1", &[]).await.unwrap()[0].get::<_, i64>(0), 100);
    a.execute("UPDATE acct SET bal = bal + 10 WHERE id = 1", &[]).await.unwrap();
    let b = std::sync::Arc::new(b);
    let b2 = b.clone();
    let second = tokio::spawn(async move { b2.execute("UPDATE acct SET bal = bal + 20 WHERE id = 1", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second update waits for the row lock");
    a.batch_execute("COMMIT").await.unwrap();
    let e = second.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&e), "40001", "{e}");
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(a.query("SELECT bal FROM acct WHERE id = 1", &[]).await.unwrap()[0].get::<_, i64>(0), 110, "no lost update");
    // READ COMMITTED (the default): the second update waits, then applies to
    // the row the first one committed — both increments count.
    a.batch_execute("BEGIN").await.unwrap();
    b.batch_execute("BEGIN").await.unwrap();
    a.execute("UPDATE acct SET bal = bal + 10 WHERE id = 1", &[]).await.unwrap();
    let b2 = b.clone();
    let second = tokio::spawn(async move { b2.execute("UPDATE acct SET bal = bal + 20 WHERE id = 1", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "the second update waits for the row lock");
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 1);
    assert_eq!(b.query("SELECT bal FROM acct WHERE id = 1", &[]).await.unwrap()[0].get::<_, i64>(0), 140, "b sees its own update on a's");
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(a.query("SELECT bal FROM acct WHERE id = 1", &[]).await.unwrap()[0].get::<_, i64>(0), 140, "no lost update");
    // Autocommit increments from two sessions at once all count.
    let (x, y) = (compute.connect().await, compute.connect().await);
    let bump = |c: Client| async move {
        for _ in 0..20 {
            c.execute("UPDATE acct SET bal = bal + 1 WHERE id = 1", &[]).await.unwrap();
        }
    };
    tokio::join!(bump(x), bump(y));
    assert_eq!(a.query("SELECT bal FROM acct WHERE id = 1", &[]).await.unwrap()[0].get::<_, i64>(0), 180);
    // After an error in a block, statements get 25P02 until ROLLBACK.
    a.batch_execute("BEGIN").await.unwrap();
    assert!(a.simple_query("SELECT * FROM nope").await.is_err());
    let e = a.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(a.query("SELECT 1::bigint", &[]).await.unwrap()[0].get::<_, i64>(0), 1);
    // Read-your-writes and snapshot stability inside a block.
    a.batch_execute("BEGIN; INSERT INTO acct VALUES (3, 3)").await.unwrap();
    assert_eq!(a.query("SELECT count(*) FROM acct", &[]).await.unwrap()[0].get::<_, i64>(0), 2);
    assert_eq!(b.query("SELECT count(*) FROM acct", &[]).await.unwrap()[0].get::<_, i64>(0), 1);
    a.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_compute_mid_transaction_loses_nothing_committed() {
    let (dir, storage, mut compute) = cluster(&["--txn-idle-timeout", "1s"]).await;
    let c = compute.connect().await;
    c.batch_execute("CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k VALUES (1, 'committed')").await.unwrap();
    c.batch_execute("BEGIN; INSERT INTO k VALUES (2, 'in flight')").await.unwrap();
    compute.kill9();
    assert!(c.simple_query("COMMIT").await.is_err(), "the client sees the connection die");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let fresh = ComputeProc::start(&storage, dir.path(), &[]).await;
    let c2 = fresh.connect().await;
    let rows = c2.query("SELECT id, v FROM k ORDER BY id", &[]).await.unwrap();
    assert_eq!(rows.len(), 1, "the open transaction was aborted by storage");
    assert_eq!(rows[0].get::<_, String>(1), "committed");
    // Its key is free again: nothing of the aborted transaction lingers.
    c2.batch_execute("INSERT INTO k VALUES (2, 'again')").await.unwrap();
}

/// A counter on the /metrics page at `addr`.
fn counter(addr: std::net::SocketAddr, name: &str) -> f64 {
    let page = http_get(addr, "/metrics");
    metric(&page, name).unwrap_or_else(|| panic!("no {name} in:\n{page}"))
}

/// Writes whose outcome compute knows (an UPDATE or DELETE of a row its FOR
/// UPDATE read locked, an INSERT into a table without a key) are deferred
/// and carried by the transaction's next request: every later statement
/// sees them, ROLLBACK drops them, COMMIT applies them, other sessions see
/// nothing before. A value storage would refuse is not deferred: its error
/// belongs to its statement. A transaction's first point read carries its
/// begin; its reads of rows it locked and wrote are answered by compute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_writes_are_read_back_and_commit_with_their_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let storage = StorageProc::start(&store, &dir.path().join("cache"), &["--metrics-listen", &metrics.to_string()], &[]).await;
    let compute_metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let compute = ComputeProc::start(&storage, dir.path(), &["--metrics-listen", &compute_metrics.to_string()]).await;
    let own_reads = || counter(compute_metrics, "ebb_compute_own_row_reads_total");
    let c = compute.connect().await;
    let other = compute.connect().await;
    c.batch_execute(
        "CREATE TABLE acct (id int PRIMARY KEY, bal int NOT NULL, note char(4)); CREATE TABLE hist (id int, delta int NOT NULL, at timestamp);
         INSERT INTO acct VALUES (1, 10, 'a'), (2, 20, 'b')",
    )
    .await
    .unwrap();
    async fn bal(c: &Client, id: i32) -> Option<i32> {
        c.query_opt("SELECT bal FROM acct WHERE id = $1", &[&id]).await.unwrap().map(|r| r.get::<_, i32>(0))
    }
    async fn count(c: &Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    }
    let carried_before = counter(metrics, "ebb_storage_carried_writes_total");
    c.batch_execute("BEGIN").await.unwrap();
    assert_eq!(c.execute("UPDATE acct SET bal = bal + $1 WHERE id = $2", &[&5i32, &1i32]).await.unwrap(), 1);
    let own_before = own_reads();
    assert_eq!(bal(&c, 1).await, Some(15), "a point read of the row sees its update");
    assert_eq!(own_reads() - own_before, 1.0, "answered from the row the transaction wrote");
    assert_eq!(c.execute("UPDATE acct SET bal = bal - 5 WHERE id = 2", &[]).await.unwrap(), 1);
    assert_eq!(c.execute("INSERT INTO hist VALUES (1, 5, now())", &[]).await.unwrap(), 1);
    assert_eq!(count(&c, "SELECT sum(bal)::bigint FROM acct").await, 30, "a full scan sends them first");
    assert_eq!(count(&c, "SELECT count(*) FROM hist").await, 1);
    assert_eq!(c.execute("DELETE FROM acct WHERE id = 2", &[]).await.unwrap(), 1);
    assert_eq!(c.execute("INSERT INTO hist (id, delta) VALUES (2, -5)", &[]).await.unwrap(), 1);
    assert_eq!((bal(&other, 1).await, bal(&other, 2).await, count(&other, "SELECT count(*) FROM hist").await), (Some(10), Some(20), 0));
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!((bal(&other, 1).await, bal(&other, 2).await, count(&other, "SELECT count(*) FROM hist").await), (Some(15), None, 2));
    let carried = counter(metrics, "ebb_storage_carried_writes_total") - carried_before;
    // Carried: update 1 by update 2's read, update 2 by the flush before the
    // sum (with the insert as the flush's own write), delete + insert by COMMIT.
    assert_eq!(carried, 4.0, "the writes rode on later requests");
    // ROLLBACK drops what was deferred.
    c.batch_execute("BEGIN; UPDATE acct SET bal = 0 WHERE id = 1; INSERT INTO hist VALUES (9, 9, now()); ROLLBACK").await.unwrap();
    assert_eq!((bal(&other, 1).await, count(&other, "SELECT count(*) FROM hist").await), (Some(15), 2));
    // A savepoint after a deferred write: ROLLBACK TO keeps the earlier write.
    c.batch_execute("BEGIN; UPDATE acct SET bal = 100 WHERE id = 1; SAVEPOINT s; UPDATE acct SET bal = 200 WHERE id = 1; ROLLBACK TO s; COMMIT")
        .await
        .unwrap();
    assert_eq!(bal(&other, 1).await, Some(100));
    // Autocommit: the statement's own transaction commits it.
    assert_eq!(c.execute("UPDATE acct SET bal = 7 WHERE id = 1", &[]).await.unwrap(), 1);
    assert_eq!(bal(&other, 1).await, Some(7));
    // Values storage checks are sent at once: the error is the statement's.
    c.batch_execute("BEGIN").await.unwrap();
    let e = c.execute("UPDATE acct SET note = 'too long' WHERE id = 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "22001", "{e}");
    c.batch_execute("ROLLBACK; BEGIN").await.unwrap();
    let e = c.execute("INSERT INTO hist (id) VALUES (3)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "23502", "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!((bal(&other, 1).await, count(&other, "SELECT count(*) FROM hist").await), (Some(7), 2));
    // pgbench's TPC-B transaction, statement for statement: all four writes
    // ride on other requests, and the account's balance is read back from
    // its update (so its round trips to storage are three point reads, the
    // first carrying the begin, and the commit — all on the lane).
    c.batch_execute("INSERT INTO acct VALUES (3, 30, 'c'); INSERT INTO acct VALUES (4, 40, 'd')").await.unwrap();
    // A block whose first request is a full scan begins its transaction
    // with a Begin of its own; one whose first is a point read has the read
    // carry the begin (no round trip for it).
    let begun = |by: &str| counter(metrics, &format!("ebb_storage_transactions_begun_total{{by=\"{by}\"}}"));
    let scans = begun("scan");
    c.batch_execute("BEGIN; SELECT count(*) FROM acct; UPDATE acct SET bal = bal WHERE id = 3; COMMIT").await.unwrap();
    assert_eq!(begun("scan"), scans, "a full scan carries no begin");
    let (begins, scans) = (begun("begin"), begun("scan"));
    let (carried_before, own_before) = (counter(metrics, "ebb_storage_carried_writes_total"), own_reads());
    let lane = |call: &str| counter(metrics, &format!("ebb_storage_lane_calls_total{{call=\"{call}\"}}"));
    let (lane_scans, lane_commits) = (lane("scan"), lane("commit"));
    c.batch_execute(
        "BEGIN; UPDATE acct SET bal = bal + 1 WHERE id = 1; SELECT bal FROM acct WHERE id = 1; UPDATE acct SET bal = bal + 1 WHERE id = 3;
         UPDATE acct SET bal = bal + 1 WHERE id = 4; INSERT INTO hist (id, delta, at) VALUES (1, 1, CURRENT_TIMESTAMP); END",
    )
    .await
    .unwrap();
    assert_eq!(counter(metrics, "ebb_storage_carried_writes_total") - carried_before, 4.0);
    assert_eq!((lane("scan") - lane_scans, lane("commit") - lane_commits), (3.0, 1.0), "the block's storage calls went over the lane");
    assert_eq!(own_reads() - own_before, 1.0, "the balance read back without a request");
    assert_eq!((begun("begin") - begins, begun("scan") - scans), (0.0, 1.0), "the first point read began the transaction");
    assert_eq!((bal(&other, 1).await, bal(&other, 3).await, bal(&other, 4).await), (Some(8), Some(31), Some(41)));
    assert_eq!(count(&other, "SELECT count(*) FROM hist").await, 3);
    // So does an autocommit UPDATE's read: two round trips, the read and the commit.
    assert_eq!(c.execute("UPDATE acct SET bal = bal - 1 WHERE id = 1", &[]).await.unwrap(), 1);
    assert_eq!((begun("begin") - begins, begun("scan") - scans), (0.0, 2.0));
    assert_eq!(bal(&other, 1).await, Some(7));
    // Reads that find no row still begin (and end) their transactions.
    assert_eq!(c.execute("UPDATE acct SET bal = 0 WHERE id = 99", &[]).await.unwrap(), 0);
    c.batch_execute("BEGIN; SELECT bal FROM acct WHERE id = 99; COMMIT").await.unwrap();
}

/// A row a transaction locked and wrote is read back by compute, and stays
/// the transaction's: another session's update of it waits for the commit
/// and then applies to the committed row; other sessions read the row as
/// committed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_block_wrote_are_its_own_until_it_commits() {
    let (dir, storage, _a) = cluster(&[]).await;
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let compute = ComputeProc::start(&storage, dir.path(), &["--metrics-listen", &metrics.to_string()]).await;
    let (c, other) = (compute.connect().await, compute.connect().await);
    c.batch_execute("CREATE TABLE acct (id int PRIMARY KEY, bal bigint NOT NULL); INSERT INTO acct VALUES (1, 100), (2, 200)").await.unwrap();
    let read = c.prepare("SELECT bal FROM acct WHERE id = $1").await.unwrap();
    async fn bal(c: &Client, id: i32) -> i64 {
        c.query_one("SELECT bal FROM acct WHERE id = $1", &[&id]).await.unwrap().get(0)
    }
    let own_before = counter(metrics, "ebb_compute_own_row_reads_total");
    c.batch_execute("BEGIN; UPDATE acct SET bal = bal + 5 WHERE id = 1").await.unwrap();
    assert_eq!(c.query_one(&read, &[&1i32]).await.unwrap().get::<_, i64>(0), 105);
    assert_eq!(c.query_one(&read, &[&2i32]).await.unwrap().get::<_, i64>(0), 200, "a row not written is read from storage");
    assert_eq!(counter(metrics, "ebb_compute_own_row_reads_total") - own_before, 1.0);
    // Another session: reads the committed row, and its update waits.
    assert_eq!(bal(&other, 1).await, 100);
    let other = std::sync::Arc::new(other);
    let waiting = {
        let other = other.clone();
        tokio::spawn(async move { other.execute("UPDATE acct SET bal = bal * 2 WHERE id = 1", &[]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the row is locked by the open block");
    c.batch_execute("UPDATE acct SET bal = bal + 1 WHERE id = 1").await.unwrap();
    assert_eq!(c.query_one(&read, &[&1i32]).await.unwrap().get::<_, i64>(0), 106);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert_eq!(bal(&other, 1).await, 212, "the waiting update applied to the committed row");
    assert_eq!(c.query_one(&read, &[&1i32]).await.unwrap().get::<_, i64>(0), 212);
}

/// A writing statement stopped by statement_timeout outside a block leaves
/// no transaction open behind it: the next statement commits on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_statement_leaves_no_transaction_behind() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let c = compute.connect().await;
    let other = compute.connect().await;
    c.batch_execute("CREATE TABLE big (id bigint)").await.unwrap();
    c.batch_execute("SET statement_timeout = 200").await.unwrap();
    let e = c.batch_execute("INSERT INTO big SELECT x FROM generate_series(1, 500000000) x").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    c.batch_execute("INSERT INTO big VALUES (1)").await.unwrap();
    let n: i64 = other.query_one("SELECT count(*) FROM big", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the insert after the timeout committed, and nothing of the timed-out one did");
}

/// Runs `sql` on `c` and sends a cancel request `after` it started; the
/// client back and the error the statement ended with (it must end within
/// 20 s, and with an error).
async fn cancelled(c: Client, sql: &'static str, after: Duration) -> (std::sync::Arc<Client>, tokio_postgres::Error) {
    let token = c.cancel_token();
    let c = std::sync::Arc::new(c);
    let long = {
        let c = c.clone();
        tokio::spawn(async move { c.simple_query(sql).await })
    };
    tokio::time::sleep(after).await;
    token.cancel_query(NoTls).await.expect("cancel request sent");
    let e = tokio::time::timeout(Duration::from_secs(20), long).await.expect("cancelled in time").unwrap().expect_err("the statement was cancelled");
    (c, e)
}

/// A statement stopped by a cancel request inside a block fails the block,
/// as any error does: what the block wrote or deferred does not commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_statement_fails_its_block() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let c = compute.connect().await;
    c.batch_execute("CREATE TABLE acct (id int PRIMARY KEY, bal int); INSERT INTO acct VALUES (1, 10)").await.unwrap();
    c.batch_execute("BEGIN; UPDATE acct SET bal = 99 WHERE id = 1").await.unwrap();
    let (c, e) = cancelled(c, "SELECT count(*) FROM generate_series(1, 2000000000) a", Duration::from_millis(500)).await;
    assert_eq!(sqlstate(&e), "57014", "{e}");
    let e = c.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "the block failed: {e}");
    let done = c.simple_query("COMMIT").await.unwrap();
    assert!(matches!(done.last(), Some(tokio_postgres::SimpleQueryMessage::CommandComplete(_))));
    let bal: i32 = c.query_one("SELECT bal FROM acct WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(bal, 10, "the update of the failed block did not commit");
}

/// `pg_sleep` waits without holding a runtime thread, in both protocols,
/// and `statement_timeout` and cancel requests end it like any statement;
/// its parameter, like a cast's, is announced with its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_sleep_waits_and_is_ended_by_timeouts_and_cancel_requests() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let c = compute.connect().await;
    let started = std::time::Instant::now();
    let rows = c.simple_query("SELECT pg_sleep(0.2)").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "slept: {:?}", started.elapsed());
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string)),
            _ => None,
        })
        .collect();
    assert_eq!(values, [Some(String::new())], "one void value, whose text is empty as in PostgreSQL");
    // Extended protocol, once per row.
    let n = c.query("SELECT pg_sleep(0.01) FROM generate_series(1, 3)", &[]).await.unwrap().len();
    assert_eq!(n, 3);
    // Parameters take their types from a cast and from pg_sleep's argument,
    // as in PostgreSQL, so typed values bind.
    let typed = c.prepare("SELECT $1::int, pg_sleep($2)").await.unwrap();
    assert_eq!(typed.params(), [tokio_postgres::types::Type::INT4, tokio_postgres::types::Type::FLOAT8]);
    let back: i32 = c.query_one(&typed, &[&42i32, &0.01f64]).await.unwrap().get(0);
    assert_eq!(back, 42);
    // statement_timeout ends it; the session goes on.
    c.batch_execute("SET statement_timeout = 150").await.unwrap();
    let e = c.simple_query("SELECT pg_sleep(30)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    c.batch_execute("SET statement_timeout = 0").await.unwrap();
    // So does a cancel request.
    let (c, e) = cancelled(c, "SELECT pg_sleep(30)", Duration::from_millis(300)).await;
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert_eq!(c.simple_query("SELECT 1").await.unwrap().len(), 3, "the session serves on");
}

/// RETURNING through the extended protocol: Describe announces the columns,
/// parameters bind, and the command tag still counts rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_with_prepared_statements() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let c = compute.connect().await;
    c.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2) DEFAULT 1.50)").await.expect("create");
    let insert = c.prepare("INSERT INTO items (id, name) VALUES ($1, $2) RETURNING id, name, price").await.expect("prepare");
    assert_eq!(insert.columns().iter().map(|c| c.name()).collect::<Vec<_>>(), vec!["id", "name", "price"]);
    let rows = c.query(&insert, &[&7i64, &"fig"]).await.expect("insert returning");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].get::<_, i64>(0), rows[0].get::<_, String>(1)), (7, "fig".to_string()));
    let upd = c.prepare("UPDATE items SET price = price * 2 WHERE id = $1 RETURNING price * 2, lower(name)").await.expect("prepare");
    assert_eq!(upd.columns().iter().map(|c| c.name()).collect::<Vec<_>>(), vec!["?column?", "lower"], "PostgreSQL's names");
    assert_eq!(c.query(&upd, &[&7i64]).await.expect("update returning")[0].get::<_, String>("lower"), "fig");
    let n = c.execute("UPDATE items SET name = upper(name) WHERE id = $1 RETURNING name", &[&7i64]).await.expect("update returning");
    assert_eq!(n, 1, "UPDATE 1 tag");
    let gone = c.query("DELETE FROM items WHERE id = $1 RETURNING name", &[&7i64]).await.expect("delete returning");
    assert_eq!(gone[0].get::<_, String>(0), "FIG");
    let left: i64 = c.query_one("SELECT count(*) FROM items", &[]).await.expect("count").get(0);
    assert_eq!(left, 0);
}

/// The control service of an unbound compute: sessions wait for `attach`,
/// `stats` counts them, a bound compute is never rebound, `drain` turns new
/// sessions away while open ones carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_service_attaches_counts_and_drains() {
    use ebb_proto::control::compute_control_client::ComputeControlClient;
    use ebb_proto::control::{AttachRequest, DrainRequest, StatsRequest};
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    let storage = StorageProc::start(&store, &dir.path().join("cache"), &[], &[]).await;
    let control_addr = format!("127.0.0.1:{}", free_port());
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let compute = ComputeProc::start(&storage, dir.path(), &["--control-listen", &control_addr, "--metrics-listen", &metrics_addr.to_string()]).await;
    // /metrics shows what stats say (sampled once a second).
    let metrics_show = |expected: &'static [&'static str]| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = http_get(metrics_addr, "/metrics");
            if expected.iter().all(|e| m.contains(e)) {
                return;
            }
            assert!(Instant::now() < deadline, "/metrics lacks {expected:?}:\n{m}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", compute.port);
    let unbound = tokio_postgres::connect(&conninfo, NoTls).await.err().expect("unbound compute refuses sessions");
    assert_eq!(sqlstate(&unbound), "57P03");

    let mut control = ComputeControlClient::connect(format!("http://{control_addr}")).await.expect("control service");
    let missing = control.attach(AttachRequest { database: "nosuch".into() }).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    control.attach(AttachRequest { database: "postgres".into() }).await.expect("attach");
    let c = compute.connect().await;
    c.simple_query("SELECT 1").await.expect("bound compute serves");
    let stats = control.stats(StatsRequest {}).await.expect("stats").into_inner();
    assert_eq!((stats.database.as_str(), stats.connections, stats.draining), ("postgres", 1, false));
    assert!(stats.memory_bytes > 0);
    metrics_show(&["ebb_compute_sessions 1", "ebb_compute_bound{database=\"postgres\"} 1", "ebb_compute_draining 0"]).await;
    c.batch_execute("CREATE DATABASE other").await.expect("create database");
    let rebind = control.attach(AttachRequest { database: "other".into() }).await.unwrap_err();
    assert_eq!(rebind.code(), tonic::Code::FailedPrecondition, "{rebind:?}");

    let open = control.drain(DrainRequest {}).await.expect("drain").into_inner().connections;
    assert_eq!(open, 1);
    let refused = tokio_postgres::connect(&conninfo, NoTls).await.err().expect("a draining compute refuses new sessions");
    assert_eq!(sqlstate(&refused), "57P03");
    c.simple_query("SELECT 1").await.expect("an open session carries on while draining");
    metrics_show(&["ebb_compute_draining 1"]).await;
}

/// Reads by key outside a transaction block are answered from the
/// compute's row cache, and every commit — by any compute, itself
/// included, DDL too — is seen by the next read: two computes write and
/// read the same rows of tables keyed by int, bigint, text and a pair,
/// each read checked against the value just committed. The hit counter
/// shows the cache answered the repeated reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_reads_see_every_commit_of_every_compute() {
    let storage_metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (dir, storage, mut a) = cluster(&["--metrics-listen", &storage_metrics.to_string()]).await;
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut b = ComputeProc::start(&storage, dir.path(), &["--metrics-listen", &metrics.to_string()]).await;
    let (ca, cb) = (a.connect().await, b.connect().await);
    ca.batch_execute(
        "CREATE TABLE ki (id int PRIMARY KEY, v int);
         CREATE TABLE kb (id bigint PRIMARY KEY, v int);
         CREATE TABLE kt (name text PRIMARY KEY, v int);
         CREATE TABLE kp (a smallint, b varchar(10), v int, PRIMARY KEY (a, b));
         INSERT INTO ki VALUES (1, 0); INSERT INTO kb VALUES (5000000000, 0);
         INSERT INTO kt VALUES ('x\u{e9}', 0); INSERT INTO kp VALUES (3, 'q', 0);",
    )
    .await
    .unwrap();
    let tables = [
        ("ki", "id = 1"),
        ("kb", "id = 5000000000"),
        ("kt", "name = 'x\u{e9}'"),
        ("kp", "a = 3 AND b = 'q'"),
    ];
    async fn value(c: &Client, table: &str, key: &str) -> Option<i32> {
        c.query_opt(&format!("SELECT v FROM {table} WHERE {key}"), &[]).await.unwrap().map(|r| r.get(0))
    }
    let hits = || counter(metrics, "ebb_compute_row_cache_hits_total");
    for (table, key) in tables {
        assert_eq!(value(&cb, table, key).await, Some(0), "{table}");
        for i in 1..=20 {
            // The writer alternates; both computes read after every commit.
            let writer = if i % 2 == 0 { &ca } else { &cb };
            writer.batch_execute(&format!("UPDATE {table} SET v = {i} WHERE {key}")).await.unwrap();
            assert_eq!(value(&cb, table, key).await, Some(i), "{table}: B after commit {i}");
            assert_eq!(value(&ca, table, key).await, Some(i), "{table}: A after commit {i}");
        }
        let before = hits();
        for _ in 0..10 {
            assert_eq!(value(&cb, table, key).await, Some(20));
        }
        assert!(hits() - before >= 9.0, "{table}: repeated reads are answered from the cache");
        ca.batch_execute(&format!("DELETE FROM {table} WHERE {key}")).await.unwrap();
        assert_eq!(value(&cb, table, key).await, None, "{table}: deleted");
    }
    // A prepared read, then DDL on the other compute: the new column shows.
    let stmt = cb.prepare("SELECT * FROM ki WHERE id = $1").await.unwrap();
    cb.batch_execute("INSERT INTO ki VALUES (2, 7)").await.unwrap();
    assert_eq!(cb.query_one(&stmt, &[&2i32]).await.unwrap().get::<_, i32>(1), 7);
    assert_eq!(cb.query_one(&stmt, &[&2i32]).await.unwrap().get::<_, i32>(1), 7);
    ca.batch_execute("ALTER TABLE ki ADD COLUMN w int DEFAULT 9").await.unwrap();
    let row = cb.query_one("SELECT * FROM ki WHERE id = 2", &[]).await.unwrap();
    assert_eq!((row.len(), row.get::<_, Option<i32>>(2)), (3, Some(9)), "the row as altered");
    // Inside a transaction block the block's snapshot is read, not the cache.
    cb.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ").await.unwrap();
    assert_eq!(value(&cb, "ki", "id = 2").await, Some(7));
    ca.batch_execute("UPDATE ki SET v = 8 WHERE id = 2").await.unwrap();
    assert_eq!(value(&cb, "ki", "id = 2").await, Some(7), "the block's snapshot");
    cb.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&cb, "ki", "id = 2").await, Some(8));

    // A compute that stops says goodbye (commits need not wait out its
    // lease); one that is killed just ends its watch.
    let ends = |how: &str| metric(&http_get(storage_metrics, "/metrics"), &format!("ebb_storage_row_watch_ends_total{{how=\"{how}\"}}")).unwrap_or(0.0);
    assert_eq!(counter(storage_metrics, "ebb_storage_row_watches"), 2.0);
    let term = Command::new("kill").args(["-TERM", &b.child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    b.child.wait().expect("compute B exits");
    a.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(storage_metrics, "ebb_storage_row_watches") > 0.0 {
        assert!(Instant::now() < deadline, "the watches did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((ends("goodbye"), ends("abrupt")), (1.0, 1.0));
}
