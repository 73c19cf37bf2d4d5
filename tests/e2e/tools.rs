//! Client tools against a real compute: COPY through psql and
//! tokio-postgres, psql's describe commands, and pgbench unmodified.

use futures::SinkExt;

use crate::local::LocalProc;
use crate::compute::{cluster, sqlstate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_stdin_in_text_and_csv() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let (ok, _, err) = compute.psql("CREATE TABLE people (id int PRIMARY KEY, name text, born date, note text)");
    assert!(ok, "{err}");
    // Text format: tabs, backslash escapes, \N for NULL.
    let (ok, out, err) = compute.psql_stdin("COPY people FROM STDIN", "1\tada\t1815-12-10\tfirst\\tprogrammer\n2\tgrace\t\\N\t\\N\n\\.\n");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "COPY 2");
    // CSV with a header, a column list, quotes, a quoted newline.
    let csv = "id,name,note\n3,\"hopper, g.\",\"line one\nline two\"\n4,linus,\n";
    let (ok, out, err) = compute.psql_stdin("COPY people (id, name, note) FROM STDIN WITH (FORMAT csv, HEADER true)", csv);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "COPY 2");
    let (_, out, _) = compute.psql("SELECT id, name, born, note IS NULL, length(note) FROM people ORDER BY id");
    assert_eq!(out.trim(), "1|ada|1815-12-10|f|16\n2|grace||t|\n3|hopper, g.||f|17\n4|linus||t|");
    // A bad row fails the whole COPY; nothing of it is kept.
    let (ok, _, err) = compute.psql_stdin("COPY people FROM STDIN", "5\teve\t\\N\t\\N\n6\tmallory\tnot a date\t\\N\n");
    assert!(!ok && err.contains("date"), "{err}");
    let (ok, _, err) = compute.psql_stdin("COPY people FROM STDIN", "7\ttoo\tfew\n");
    assert!(!ok && err.contains("missing data for column"), "{err}");
    let (_, out, _) = compute.psql("SELECT count(*) FROM people");
    assert_eq!(out.trim(), "4");
    let (ok, _, err) = compute.psql("COPY people FROM '/etc/passwd'");
    assert!(!ok && err.contains("STDIN"), "{err}");

    // The extended protocol (tokio-postgres), inside a transaction block.
    let mut c = compute.connect().await;
    let tx = c.transaction().await.unwrap();
    let sink = tx.copy_in("COPY people (id, name) FROM STDIN (FORMAT csv)").await.unwrap();
    futures::pin_mut!(sink);
    for i in 100..1100 {
        sink.send(bytes::Bytes::from(format!("{i},n{i}\n"))).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 1000);
    assert_eq!(tx.query_one("SELECT count(*) FROM people", &[]).await.unwrap().get::<_, i64>(0), 1004);
    tx.rollback().await.unwrap();
    assert_eq!(c.query_one("SELECT count(*) FROM people", &[]).await.unwrap().get::<_, i64>(0), 4);
    // A duplicate key reports 23505 at the end of the COPY.
    let sink = c.copy_in("COPY people (id, name) FROM STDIN (FORMAT csv)").await.unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1,dup\n")).await.unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(sqlstate(&e), "23505", "{e}");
    assert_eq!(c.query_one("SELECT name FROM people WHERE id = 1", &[]).await.unwrap().get::<_, String>(0), "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_primary_key_and_describe_with_psql() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let (ok, _, err) = compute.psql("CREATE TABLE heap (id int NOT NULL, v text, n numeric(8,2)); INSERT INTO heap VALUES (2, 'b', 1.5), (1, 'a', NULL), (2, 'dup', 0)");
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql("ALTER TABLE heap ADD PRIMARY KEY (id)");
    assert!(!ok && (err.contains("duplicate") || err.contains("unique")), "{err}");
    let (ok, _, err) = compute.psql("DELETE FROM heap WHERE v = 'dup'; ALTER TABLE heap ADD PRIMARY KEY (id)");
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql("INSERT INTO heap VALUES (1, 'again', 0)");
    assert!(!ok && err.contains("duplicate key"), "{err}");
    let (_, out, _) = compute.psql("SELECT id, v FROM heap WHERE id = 2");
    assert_eq!(out.trim(), "2|b");

    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\dt"]);
    assert!(ok, "{err}");
    assert!(out.contains("heap") && out.contains("table"), "{out}");
    let (ok, _, err) = compute.psql("ALTER TABLE heap ADD COLUMN k int DEFAULT 7");
    assert!(ok, "{err}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d heap"]);
    assert!(ok, "{err}");
    for column in ["id", "v", "n"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(column)), "column {column} missing:\n{out}");
    }
    // As PostgreSQL prints it: types with modifiers, NOT NULL, defaults, the key's index.
    let row = |name: &str| out.lines().find(|l| l.trim_start().starts_with(name)).map(|l| l.split('|').map(str::trim).collect::<Vec<_>>());
    assert_eq!(row("n ").as_deref(), Some(&["n", "numeric(8,2)", "", "", ""][..]), "{out}");
    assert_eq!(row("id").as_deref(), Some(&["id", "integer", "", "not null", ""][..]), "{out}");
    assert_eq!(row("k ").as_deref(), Some(&["k", "integer", "", "", "7"][..]), "{out}");
    assert!(out.contains("\"heap_pkey\" PRIMARY KEY, btree (id)"), "{out}");
    // \d+ adds storage, compression, statistics target and description.
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d+ heap"]);
    assert!(ok, "{err}");
    let plus = |name: &str| out.lines().find(|l| l.trim_start().starts_with(name)).map(|l| l.split('|').map(str::trim).collect::<Vec<_>>());
    assert_eq!(plus("k ").as_deref(), Some(&["k", "integer", "", "", "7", "plain", "", "", ""][..]), "{out}");
    assert!(out.contains("\"heap_pkey\" PRIMARY KEY, btree (id)") && out.contains("Access method: heap"), "{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d heap_pkey"]);
    assert!(ok && out.contains("primary key, btree, for table \"public.heap\""), "{err}\n{out}");
    // Sizes, from storage: the table's two rows take some bytes, its key's index none of its own.
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\dt+ heap"]);
    let size = out.lines().find(|l| l.contains("heap")).and_then(|l| l.split('|').nth(6)).map(str::trim).unwrap_or_default().to_string();
    assert!(ok && size.ends_with("bytes") && size != "0 bytes", "{err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\di+ heap_pkey"]);
    assert!(ok && out.contains("| 0 bytes"), "{err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\l+ postgres"]);
    assert!(ok && out.lines().any(|l| l.starts_with(" postgres") && (l.contains(" kB") || l.contains(" MB") || l.contains(" bytes"))), "{err}\n{out}");
    // Schemas with their access privileges (`nspacl` is an array).
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\dn+"]);
    assert!(ok && out.lines().any(|l| l.trim_start().starts_with("public")), "{err}\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_columns_fill_through_copy_and_psql_describes_their_sequence() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let (ok, _, err) = compute.psql("CREATE TABLE events (id bigserial PRIMARY KEY, what text, at timestamp DEFAULT now())");
    assert!(ok, "{err}");
    // COPY without the column: each row takes the sequence's next value.
    let (ok, out, err) = compute.psql_stdin("COPY events (what) FROM STDIN", "boot\nlogin\nlogout\n\\.\n");
    assert!(ok && out.trim() == "COPY 3", "{err}\n{out}");
    let (ok, _, err) = compute.psql("INSERT INTO events VALUES (DEFAULT, 'shutdown', DEFAULT)");
    assert!(ok, "{err}");
    let (_, out, _) = compute.psql("SELECT id, what, at IS NOT NULL FROM events ORDER BY id");
    assert_eq!(out.trim(), "1|boot|t\n2|login|t\n3|logout|t\n4|shutdown|t");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d events_id_seq"]);
    assert!(ok, "{err}");
    let row = out.lines().find(|l| l.contains("bigint")).map(|l| l.split('|').map(str::trim).collect::<Vec<_>>());
    assert_eq!(row.as_deref(), Some(&["bigint", "1", "1", "9223372036854775807", "1", "no", "1"][..]), "{out}");
    assert!(out.contains("Owned by: public.events.id"), "{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\ds"]);
    assert!(ok && out.contains("events_id_seq") && out.contains("sequence"), "{err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\dt"]);
    assert!(ok && out.contains("events") && !out.contains("events_id_seq"), "{err}\n{out}");
    // Four clients inserting at once: every row gets its own value, none is skipped.
    let script = tempfile::NamedTempFile::new().expect("script file");
    std::fs::write(script.path(), "INSERT INTO events (what) VALUES ('tick');\n").expect("write script");
    let path = script.path().display().to_string();
    let (ok, out, err) = compute.tool("pgbench", &["-n", "-f", &path, "-c", "4", "-j", "2", "-t", "100", "postgres"]);
    assert!(ok && out.contains("number of failed transactions: 0"), "{out}\n{err}");
    let (_, out, _) = compute.psql("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events");
    assert_eq!(out.trim(), "404|404|1|404");
    // The sequence goes with its table.
    let (ok, _, err) = compute.psql("DROP TABLE events");
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql("SELECT nextval('events_id_seq')");
    assert!(!ok && err.contains("does not exist"), "{err}");
}

/// Secondary indexes and constraints through psql: rows found through an
/// index (EXPLAIN names it), a UNIQUE constraint refusing a duplicate, a
/// CHECK constraint refusing a COPY row, and `\\d` / `\\di` printing them
/// as PostgreSQL 15 does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_and_constraints_hold_and_psql_describes_them() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let (ok, _, err) = compute.psql("CREATE TABLE orders (id int PRIMARY KEY, ref text UNIQUE, city text, total int)");
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql(
        "INSERT INTO orders SELECT i, 'r' || i, (ARRAY['Oslo','Rome','Lima'])[i % 3 + 1], i % 100 FROM generate_series(1, 3000) AS s(i)",
    );
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql("CREATE INDEX ON orders (city, total)");
    assert!(ok, "{err}");
    let (_, out, _) = compute.psql("EXPLAIN SELECT id FROM orders WHERE city = 'Rome' AND total = 7");
    assert!(out.contains("index=orders_city_total_idx"), "{out}");
    let (_, out, _) = compute.psql("SELECT count(*), min(id), max(id) FROM orders WHERE city = 'Rome' AND total = 7");
    assert_eq!(out.trim(), "10|7|2707");
    let (_, out, _) = compute.psql("EXPLAIN SELECT id FROM orders WHERE ref = 'r42'");
    assert!(out.contains("index=orders_ref_key"), "{out}");
    let (_, out, _) = compute.psql("SELECT id FROM orders WHERE ref = 'r42'");
    assert_eq!(out.trim(), "42");
    let (ok, _, err) = compute.psql("INSERT INTO orders VALUES (3001, 'r42', 'Oslo', 1)");
    assert!(!ok && err.contains("duplicate key value violates unique constraint \"orders_ref_key\""), "{err}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d orders"]);
    assert!(ok, "{err}");
    let indexes: Vec<&str> = out.lines().skip_while(|l| *l != "Indexes:").map(str::trim).collect();
    assert_eq!(
        indexes,
        ["Indexes:", "\"orders_pkey\" PRIMARY KEY, btree (id)", "\"orders_city_total_idx\" btree (city, total)", "\"orders_ref_key\" UNIQUE CONSTRAINT, btree (ref)", ""],
        "{out}"
    );
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\di"]);
    assert!(ok && out.contains("orders_city_total_idx | index") && out.contains("(3 rows)"), "{err}\n{out}");
    // CHECK constraints hold for COPY's rows too, and `\\d` lists them.
    let (ok, _, err) = compute.psql("ALTER TABLE orders ADD CONSTRAINT total_small CHECK (total < 100)");
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql_stdin("COPY orders FROM STDIN", "4000\tr4000\tOslo\t5\n4001\tr4001\tOslo\t500\n\\.\n");
    assert!(!ok && err.contains("violates check constraint \"total_small\""), "{err}");
    let (_, out, _) = compute.psql("SELECT count(*) FROM orders WHERE id >= 4000");
    assert_eq!(out.trim(), "0", "a failed COPY keeps none of its rows");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d orders"]);
    let checks: Vec<&str> = out.lines().skip_while(|l| *l != "Check constraints:").map(str::trim).collect();
    assert!(ok && checks == ["Check constraints:", "\"total_small\" CHECK (total < 100)", ""], "{err}\n{out}");
    // A foreign key, seen from both of its tables.
    let (ok, _, err) = compute.psql("CREATE TABLE items (id int PRIMARY KEY, order_id int REFERENCES orders)");
    assert!(ok, "{err}");
    let (ok, _, err) = compute.psql("INSERT INTO items VALUES (1, 99999)");
    assert!(!ok && err.contains("violates foreign key constraint \"items_order_id_fkey\""), "{err}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d items"]);
    let keys: Vec<&str> = out.lines().skip_while(|l| *l != "Foreign-key constraints:").map(str::trim).collect();
    assert!(ok && keys == ["Foreign-key constraints:", "\"items_order_id_fkey\" FOREIGN KEY (order_id) REFERENCES orders(id)", ""], "{err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d orders"]);
    let referenced: Vec<&str> = out.lines().skip_while(|l| *l != "Referenced by:").map(str::trim).collect();
    assert!(
        ok && referenced == ["Referenced by:", "TABLE \"items\" CONSTRAINT \"items_order_id_fkey\" FOREIGN KEY (order_id) REFERENCES orders(id)", ""],
        "{err}\n{out}"
    );
}

/// A `pg_dump` of a PostgreSQL 15 database (`tests/e2e/fixtures/pg_dump_shop.sql`:
/// a SERIAL and an IDENTITY key, defaults, data by COPY, sequence
/// positions by setval, `ALTER SEQUENCE … OWNED BY`) restored with psql
/// without an error, and new rows continue the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_of_postgresql_restores_with_psql() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let dump = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures/pg_dump_shop.sql");
    let (ok, _, err) = compute.tool("psql", &["-d", "postgres", "-X", "-q", "-f", &dump.display().to_string()]);
    assert!(ok, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{err}");
    // OWNER TO says it changes nothing, as a NOTICE (PostgreSQL's severity for such messages).
    assert!(err.contains("NOTICE:  ebb's tables have no owners"), "{err}");
    let (_, out, _) = compute.psql("SELECT id, email, score FROM customers ORDER BY id");
    assert_eq!(out.trim(), "1|a@x|0.00\n2|b@x|0.00");
    let (ok, out, err) = compute.psql("INSERT INTO customers (email) VALUES ('c@x'), ('d@x') RETURNING id");
    assert!(ok && out.trim() == "3\n4\nINSERT 0 2", "{err}\n{out}");
    let (ok, out, err) = compute.psql("INSERT INTO orders (customer_id, total) VALUES (3, 1.25) RETURNING id");
    assert!(ok && out.trim() == "3\nINSERT 0 1", "{err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d orders"]);
    assert!(ok && out.contains("generated by default as identity"), "{err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d customers"]);
    assert!(ok && out.contains("nextval('customers_id_seq'::regclass)"), "{err}\n{out}");
}

/// A `pg_dump` of a PostgreSQL 15 database with constraints
/// (`tests/e2e/fixtures/pg_dump_constraints.sql`: UNIQUE and PRIMARY KEY
/// added after the data — the UNIQUE first —, CHECKs, indexes, foreign keys
/// with ON DELETE CASCADE) restores with psql without an error, and the
/// constraints hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_with_constraints_restores_and_they_hold() {
    let (_dir, _storage, compute) = cluster(&[]).await;
    let dump = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures/pg_dump_constraints.sql");
    let (ok, _, err) = compute.tool("psql", &["-d", "postgres", "-X", "-q", "-f", &dump.display().to_string()]);
    assert!(ok, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{err}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d customers_id_seq"]);
    assert!(ok && out.contains("Owned by: public.customers.id"), "ALTER SEQUENCE … OWNED BY: {err}\n{out}");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d orders"]);
    assert!(ok, "{err}");
    for line in [
        "\"orders_pkey\" PRIMARY KEY, btree (id)",
        "\"orders_customer_idx\" btree (customer_id)",
        "\"orders_customer_id_fkey\" FOREIGN KEY (customer_id) REFERENCES customers(id) ON DELETE CASCADE",
        "TABLE \"items\" CONSTRAINT \"items_order_id_fkey\" FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    let (ok, _, err) = compute.psql("INSERT INTO customers (id, email, name) VALUES (3, 'a@x', 'Cy')");
    assert!(!ok && err.contains("customers_email_key"), "the UNIQUE constraint added before the key holds: {err}");
    let (ok, _, err) = compute.psql("INSERT INTO items VALUES (2, 'kiwi', 0)");
    assert!(!ok && err.contains("items_qty_check"), "{err}");
    let (ok, _, err) = compute.psql("DELETE FROM customers WHERE id = 1");
    assert!(ok, "{err}");
    let (_, out, _) = compute.psql("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM items)");
    assert_eq!(out.trim(), "1|1", "customer 1's order and its two items went with it");
}

/// pgbench unmodified, through `ebb local` (proxy, controller, a compute
/// claimed from the pool): client-side COPY load, the default TPC-B-like
/// script with 4 clients (READ COMMITTED: contended rows wait, nothing
/// fails), then the select-only script with prepared statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_initializes_and_runs_tpcb_and_select_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compute = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let (ok, out, err) = compute.tool("pgbench", &["-i", "-s", "1", "postgres"]);
    assert!(ok, "pgbench -i failed:\n{out}\n{err}");
    // The load's commits must not stall the compute's row watch past its
    // lease (at scale 10 they did, before storage moved big groups' work off
    // its runtime workers; at this scale the check guards, it does not
    // reproduce that).
    assert!(!compute.log_text().contains("acknowledged nothing within its lease"), "the load starved the row watch:\n{}", compute.log_tail());
    let (_, out, _) = compute.psql("SELECT count(*), sum(abalance) FROM pgbench_accounts");
    assert_eq!(out.trim(), "100000|0");
    let (_, out, _) = compute.psql("SELECT count(*) FROM pgbench_tellers");
    assert_eq!(out.trim(), "10");
    let (ok, out, err) = compute.tool("psql", &["-d", "postgres", "-X", "-c", "\\d pgbench_accounts"]);
    assert!(ok && out.contains("abalance") && out.contains("filler"), "{out}\n{err}");

    let (ok, out, err) = compute.tool("pgbench", &["-c", "4", "-j", "2", "-T", "20", "postgres"]);
    assert!(ok, "pgbench (TPC-B) failed:\n{out}\n{err}\ncompute log:\n{}", compute.log_tail());
    assert!(processed(&out) > 20, "{out}");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
    // Every committed transaction moved money consistently.
    let (_, accounts, _) = compute.psql("SELECT sum(abalance) FROM pgbench_accounts");
    let (_, history, _) = compute.psql("SELECT sum(delta), count(*) FROM pgbench_history");
    let (_, branches, _) = compute.psql("SELECT sum(bbalance) FROM pgbench_branches");
    let (delta, count) = history.trim().split_once('|').unwrap_or_else(|| panic!("history: {history}"));
    assert_eq!(accounts.trim(), delta, "sum(abalance) must equal sum(delta)");
    assert_eq!(branches.trim(), delta, "sum(bbalance) must equal sum(delta)");
    assert_eq!(count.parse::<u64>().unwrap(), processed(&out), "one history row per transaction");

    let (ok, out, err) = compute.tool("pgbench", &["-S", "-M", "prepared", "-c", "4", "-T", "20", "postgres"]);
    assert!(ok, "pgbench -S failed:\n{out}\n{err}");
    assert!(processed(&out) > 100, "{out}");
    assert!(out.contains("number of failed transactions: 0"), "{out}");
}

/// "number of transactions actually processed: N[/M]" of pgbench's report.
fn processed(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{out}"))
}

/// psycopg 3 (installed from PyPI by `.ci/run`) through `ebb local`:
/// connect, create, insert with parameters, select, transactions
/// (`tests/e2e/py/drivers.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_connects_writes_and_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let compute = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/py/drivers.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(compute.port.to_string())
        .output()
        .expect("python3 must be installed");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "drivers.py failed:\n{stdout}\n{stderr}\ncompute log:\n{}", compute.log_tail());
    assert!(stdout.contains("drivers ok"), "{stdout}");
}

/// SQLAlchemy Core with the psycopg 3 dialect (installed from PyPI by
/// `.ci/run`) through `ebb local` (`tests/e2e/py/sqlalchemy_core.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_core_creates_writes_and_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/py/sqlalchemy_core.py");
    let out = std::process::Command::new("python3").arg(&script).arg(local.port.to_string()).output().expect("python3 must be installed");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "sqlalchemy_core.py failed:\n{stdout}\n{stderr}\nlog:\n{}", local.log_tail());
    assert!(stdout.contains("sqlalchemy ok"), "{stdout}");
}

/// Django (from PyPI, installed by `.ci/run`) through `ebb local`:
/// `migrate` of its own apps and of an app with a foreign key, unique and
/// CHECK constraints and indexes, the ORM, and the database refusing rows
/// that break them (`tests/e2e/py/django_shop/run.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_migrates_and_its_constraints_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/py/django_shop/run.py");
    let out = std::process::Command::new("python3").arg(&script).arg(local.port.to_string()).output().expect("python3 must be installed");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "django_shop/run.py failed:\n{stdout}\n{stderr}\nlog:\n{}", local.log_tail());
    assert!(stdout.contains("django ok"), "{stdout}");
}

/// JDBC `DatabaseMetaData` with PostgreSQL's JDBC driver (Debian's
/// `libpostgresql-jdbc-java`, installed by `.ci/run` with a JDK) through
/// `ebb local` (`tests/e2e/java/JdbcMetadata.java`, compiled here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_database_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/java/JdbcMetadata.java");
    let driver = "/usr/share/java/postgresql.jar";
    let classes = dir.path().join("classes");
    let javac = std::process::Command::new("javac").arg("-d").arg(&classes).arg(&source).output().expect("javac must be installed");
    assert!(javac.status.success(), "javac failed:\n{}", String::from_utf8_lossy(&javac.stderr));
    let local = LocalProc::start(&dir.path().join("data"), &["--pool-size", "1"]).await;
    let classpath = format!("{driver}:{}", classes.display());
    let out = std::process::Command::new("java").args(["-cp", &classpath, "JdbcMetadata"]).arg(local.port.to_string()).output().expect("java must be installed");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "JdbcMetadata failed:\n{stdout}\n{stderr}\nlog:\n{}", local.log_tail());
    assert!(stdout.contains("jdbc ok"), "{stdout}");
}
