//! sqllogictest over the PostgreSQL protocol: ebb's own `tests/slt/*.slt`
//! and SQLite's select suite, against real storage and compute processes.
//!
//! `sqlite_suite` runs `tests/sqlite/select1.test` and `select2.test` by
//! default; set `EBB_SLT_FILES` to a space-separated list of files to run
//! others (see `scripts/sqlite-suite.sh`). It prints the pass rate per file
//! and fails below `EBB_SLT_MIN_RATE` percent (default 100: every record).
//! ebb's own files must pass completely.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Record, Runner};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::compute::{ComputeProc, cluster};

/// One tokio-postgres connection as a sqllogictest database.
struct Pg {
    client: Client,
}

#[async_trait]
impl AsyncDB for Pg {
    type Error = tokio_postgres::Error;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        let messages = self.client.simple_query(sql).await?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut affected = 0;
        for m in messages {
            match m {
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::Row(r) => {
                    columns = Some(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| match r.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(v) => v.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows { types: vec![DefaultColumnType::Any; n], rows },
            None => DBOutput::StatementComplete(affected),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "postgresql"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &Self::Error) -> Option<String> {
        err.code().map(|c| c.code().to_string())
    }
}

/// Records that passed and records run, with the first failures' messages.
struct Outcome {
    passed: usize,
    total: usize,
    failures: Vec<String>,
}

/// Runs every record of `file` in a fresh database, counting passes (the
/// crate's own runner stops at the first failure; this one goes on).
async fn run_file(compute: &ComputeProc, file: &Path, database: &str) -> Outcome {
    let admin = compute.connect().await;
    admin.batch_execute(&format!("CREATE DATABASE {database}")).await.expect("create database");
    let conninfo = format!("host=127.0.0.1 port={} user=postgres dbname={database}", compute.port);
    let mut runner = Runner::new(move || {
        let conninfo = conninfo.clone();
        async move {
            let (client, conn) = tokio_postgres::connect(&conninfo, NoTls).await?;
            tokio::spawn(conn);
            Ok(Pg { client })
        }
    });
    runner.add_label("postgresql");
    let records = sqllogictest::parse_file::<DefaultColumnType>(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut out = Outcome { passed: 0, total: 0, failures: Vec::new() };
    for record in records {
        let counted = matches!(record, Record::Statement { .. } | Record::Query { .. });
        let result = runner.run_async(record).await;
        if counted {
            out.total += 1;
            match result {
                Ok(_) => out.passed += 1,
                Err(e) if out.failures.len() < 5 => out.failures.push(e.display(false).to_string()),
                Err(_) => {}
            }
        }
    }
    out
}

/// Runs `files`; fails unless each passes at least `min_rate` percent of its records.
async fn run_files(files: &[PathBuf], min_rate: f64) {
    assert!(!files.is_empty(), "no sqllogictest files to run");
    let (_dir, _storage, compute) = cluster(&[]).await;
    let mut failed = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let o = run_file(&compute, file, &format!("slt_{i}")).await;
        let rate = 100.0 * o.passed as f64 / o.total.max(1) as f64;
        println!("{}: {}/{} records pass ({rate:.1}%)", file.display(), o.passed, o.total);
        for f in &o.failures {
            println!("  {f}");
        }
        if rate < min_rate {
            failed.push(format!(
                "{}: {} of {} failed ({rate:.1}% pass, {min_rate}% required); first: {}",
                file.display(),
                o.total - o.passed,
                o.total,
                o.failures.join("\n")
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_files_pass() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/slt"))
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    run_files(&files, 100.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_suite() {
    let files: Vec<PathBuf> = match std::env::var("EBB_SLT_FILES") {
        Ok(list) => list.split_whitespace().map(PathBuf::from).collect(),
        Err(_) => vec![repo().join("tests/sqlite/select1.test"), repo().join("tests/sqlite/select2.test")],
    };
    // CI runs select1–2 (every record passes). select3, select4 and select5
    // pass every record too when run by `scripts/sqlite-suite.sh` (select3
    // 3351/3351, select5 1436/1436 on 2026-11-26; select4 3857/3857 on
    // 2026-11-27, once CREATE INDEX existed; kept out of CI for time).
    let min_rate = std::env::var("EBB_SLT_MIN_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(100.0);
    run_files(&files, min_rate).await;
}
