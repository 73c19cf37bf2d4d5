//! Scans: projection, key ranges, predicates, limits, tables without keys.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};
use ebb_proto::storage::{CompareOp, KeyBound, Predicate, TypeKind, Value, WriteKind, value::Kind};

use crate::support::*;

fn int(v: i64) -> Value {
    Value { kind: Some(Kind::Int(v)) }
}

fn pred(column: &str, op: CompareOp, values: Vec<Value>) -> Predicate {
    Predicate { column: column.into(), op: op as i32, values }
}

async fn seeded() -> (TestNode, Arc<ebb_storage::Database>) {
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    let rows: Vec<(i64, String, i64)> = (1..=100).map(|i| (i, format!("o{}", i % 7), i * 10)).collect();
    let refs: Vec<(i64, &str, i64)> = rows.iter().map(|(a, b, c)| (*a, b.as_str(), *c)).collect();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&refs))]).await.unwrap();
    (n, db)
}

fn ids(b: &RecordBatch) -> Vec<i64> {
    b.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec()
}

#[tokio::test]
async fn projection_and_limit() {
    let (_n, db) = seeded().await;
    let mut req = scan_req("accounts", 0);
    req.projection = vec!["balance".into(), "id".into()];
    req.limit = 5;
    let b = scan(&db, req).await.unwrap();
    assert_eq!(b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["balance", "id"]);
    assert_eq!(ids(&b), vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn primary_key_ranges() {
    let (_n, db) = seeded().await;
    let mut req = scan_req("accounts", 0);
    req.lower = Some(KeyBound { values: vec![int(10)], inclusive: false });
    req.upper = Some(KeyBound { values: vec![int(15)], inclusive: true });
    assert_eq!(ids(&scan(&db, req).await.unwrap()), vec![11, 12, 13, 14, 15]);
    // A point lookup.
    let mut req = scan_req("accounts", 0);
    req.lower = Some(KeyBound { values: vec![int(42)], inclusive: true });
    req.upper = Some(KeyBound { values: vec![int(42)], inclusive: true });
    assert_eq!(ids(&scan(&db, req).await.unwrap()), vec![42]);
    // Upper exclusive.
    let mut req = scan_req("accounts", 0);
    req.upper = Some(KeyBound { values: vec![int(3)], inclusive: false });
    assert_eq!(ids(&scan(&db, req).await.unwrap()), vec![1, 2]);
}

#[tokio::test]
async fn predicates_on_any_column() {
    let (_n, db) = seeded().await;
    let cases: Vec<(Vec<Predicate>, Vec<i64>)> = vec![
        (vec![pred("balance", CompareOp::Eq, vec![int(500)])], vec![50]),
        (vec![pred("balance", CompareOp::Lt, vec![int(30)])], vec![1, 2]),
        (vec![pred("balance", CompareOp::Le, vec![int(30)])], vec![1, 2, 3]),
        (vec![pred("balance", CompareOp::Gt, vec![int(980)])], vec![99, 100]),
        (vec![pred("balance", CompareOp::Ge, vec![int(990)])], vec![99, 100]),
        (vec![pred("id", CompareOp::In, vec![int(3), int(77), int(1000)])], vec![3, 77]),
        (
            vec![pred("owner", CompareOp::Eq, vec![Value { kind: Some(Kind::Text("o3".into())) }]), pred("id", CompareOp::Lt, vec![int(30)])],
            vec![3, 10, 17, 24],
        ),
    ];
    for (preds, want) in cases {
        let mut req = scan_req("accounts", 0);
        req.predicates = preds.clone();
        req.batch_size = 16;
        assert_eq!(ids(&scan(&db, req).await.unwrap()), want, "{preds:?}");
    }
    // A limit applies after the predicates.
    let mut req = scan_req("accounts", 0);
    req.predicates = vec![pred("balance", CompareOp::Gt, vec![int(500)])];
    req.limit = 3;
    req.batch_size = 2;
    assert_eq!(ids(&scan(&db, req).await.unwrap()), vec![51, 52, 53]);
}

#[tokio::test]
async fn is_null_and_tables_without_a_primary_key() {
    let n = start_memory().await;
    let db = n.db().await;
    db.create_table("", "events", &[col("kind", TypeKind::Integer), col("note", TypeKind::Text)], &[], false).await.unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("kind", DataType::Int32, true), Field::new("note", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![Some(1), Some(1), None, Some(2)])),
            Arc::new(StringArray::from(vec![Some("x"), Some("x"), Some("y"), None])),
        ],
    )
    .unwrap();
    db.commit(0, &[write("events", WriteKind::Insert, &batch)]).await.unwrap();
    let mut req = scan_req("events", 0);
    req.predicates = vec![pred("kind", CompareOp::IsNull, vec![])];
    assert_eq!(scan(&db, req).await.unwrap().num_rows(), 1);
    let mut req = scan_req("events", 0);
    req.predicates = vec![pred("note", CompareOp::IsNotNull, vec![])];
    assert_eq!(scan(&db, req).await.unwrap().num_rows(), 3, "duplicate rows are kept");

    // Delete one of two identical rows by its hidden row id.
    let mut req = scan_req("events", 0);
    req.include_row_id = true;
    req.predicates = vec![pred("kind", CompareOp::Eq, vec![int(1)])];
    let b = scan(&db, req).await.unwrap();
    let rowid = b.column_by_name("_rowid").unwrap().as_primitive::<Int64Type>().value(0);
    let del = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("_rowid", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![rowid]))],
    )
    .unwrap();
    let (_, deleted) = db.commit(0, &[write("events", WriteKind::Delete, &del)]).await.unwrap();
    assert_eq!(deleted, 1);
    let all = scan(&db, scan_req("events", 0)).await.unwrap();
    assert_eq!(all.num_rows(), 3);
    let kinds = all.column(0).as_primitive::<Int32Type>();
    assert_eq!((0..3).filter(|i| !kinds.is_null(*i) && kinds.value(*i) == 1).count(), 1);
}

#[tokio::test]
async fn large_scans_stream_in_batches() {
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    for chunk in 0..10 {
        let rows: Vec<(i64, &str, i64)> = (0..10_000).map(|i| (chunk * 10_000 + i, "x", i)).collect();
        db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&rows))]).await.unwrap();
    }
    let mut rx = db.scan(&scan_req("accounts", 0)).await.unwrap();
    let mut chunks = 0;
    let mut bytes = Vec::new();
    while let Some(c) = rx.recv().await {
        bytes.extend_from_slice(&c.unwrap());
        chunks += 1;
    }
    let batches = ebb_proto::arrow_ipc::decode(&bytes).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 100_000);
    assert!(chunks > 10, "streamed in pieces, got {chunks}");
}

/// Scans of flushed tables are served from the node's shared block cache,
/// which flushes and compactions fill as they write, and reads fill with
/// the blocks of files written elsewhere (restored from a checkpoint).
#[tokio::test]
async fn scans_fill_the_shared_block_cache() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let cache = ebb_storage::engine::BlockCache::new(8 << 20);
    let n = start(store.clone(), ebb_storage::EngineConfig { block_cache: cache.clone(), ..test_config() }).await;
    let db = n.db().await;
    create_accounts(&db).await;
    let rows: Vec<(i64, String, i64)> = (1..=2000).map(|i| (i, format!("owner {i}"), i)).collect();
    let refs: Vec<(i64, &str, i64)> = rows.iter().map(|(a, b, c)| (*a, b.as_str(), *c)).collect();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&refs))]).await.unwrap();
    let before = cache.usage();
    db.compact();
    assert!(cache.usage() > before + 2000 * 10, "the compaction's blocks are cached ({before} → {} bytes)", cache.usage());
    assert_eq!(cache.bytes(), 8 << 20);
    ebb_storage::engine::background::take_checkpoint(&db).await.unwrap();

    let restored_cache = ebb_storage::engine::BlockCache::new(8 << 20);
    let restored = start(store, ebb_storage::EngineConfig { block_cache: restored_cache.clone(), ..test_config() }).await;
    let db = restored.db().await;
    let before = restored_cache.usage();
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 2000);
    let after = restored_cache.usage();
    assert!(after > before + 2000 * 10, "the scan's blocks are cached ({before} → {after} bytes)");
}

/// Large scans run in two halves at once; the reader still gets every row
/// once, in key order, with predicates, projections and deletions applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_scans_return_every_row_once_in_key_order() {
    let cfg = ebb_storage::EngineConfig { split_scans_from_keys: 0, scan_batch_rows: 64, ..test_config() };
    let n = start(Arc::new(object_store::memory::InMemory::new()), cfg).await;
    let db = n.db().await;
    create_accounts(&db).await;
    let rows: Vec<(i64, String, i64)> = (1..=5000).map(|i| (i * 3 - 7000, format!("o{}", i % 5), i)).collect();
    let refs: Vec<(i64, &str, i64)> = rows.iter().map(|(a, b, c)| (*a, b.as_str(), *c)).collect();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&refs))]).await.unwrap();
    // Some rows deleted, some flushed to SST files, some still in the memtable.
    db.commit(0, &[write("accounts", WriteKind::Delete, &account_keys(&[-6997, 500, 7999]))]).await.unwrap();
    db.compact();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(20_000, "late", 1)]))]).await.unwrap();

    let all = scan(&db, scan_req("accounts", 0)).await.unwrap();
    assert_eq!(n.node.metrics().split_scans.get(), 1, "the scan was split");
    let mut want: Vec<i64> = rows.iter().map(|r| r.0).filter(|id| ![-6997, 500, 7999].contains(id)).collect();
    want.push(20_000);
    assert_eq!(ids(&all), want, "every row once, in key order");

    let mut req = scan_req("accounts", 0);
    req.projection = vec!["balance".into(), "id".into()];
    req.predicates = vec![pred("owner", CompareOp::Eq, vec![Value { kind: Some(Kind::Text("o3".into())) }])];
    let some = scan(&db, req).await.unwrap();
    assert_eq!(some.schema().field(0).name(), "balance");
    let want: Vec<i64> = rows.iter().filter(|r| r.1 == "o3" && ![-6997, 500, 7999].contains(&r.0)).map(|r| r.0).collect();
    assert_eq!(ids(&some), want);

    // Key ranges and limits keep a scan in one piece.
    let mut req = scan_req("accounts", 0);
    req.lower = Some(KeyBound { values: vec![int(0)], inclusive: true });
    req.upper = Some(KeyBound { values: vec![int(3000)], inclusive: false });
    let want: Vec<i64> = rows.iter().map(|r| r.0).filter(|id| (0..3000).contains(id) && *id != 500).collect();
    assert_eq!(ids(&scan(&db, req.clone()).await.unwrap()), want);
    req.limit = 10;
    assert_eq!(ids(&scan(&db, req).await.unwrap()), want[..10].to_vec());
    let mut req = scan_req("accounts", 0);
    req.limit = 4000;
    assert_eq!(scan(&db, req).await.unwrap().num_rows(), 4000);
    assert_eq!(n.node.metrics().split_scans.get(), 2, "only the two whole-table scans were split");
}

/// Aggregates are computed in storage over the rows that pass the
/// predicates: in both halves of a split scan, and over a transaction's own
/// writes; what storage cannot compute exactly is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_fold_every_visible_row_once() {
    use ebb_proto::storage::{Aggregate, AggregateFunction};
    let cfg = ebb_storage::EngineConfig { split_scans_from_keys: 0, scan_batch_rows: 64, ..test_config() };
    let n = start(Arc::new(object_store::memory::InMemory::new()), cfg).await;
    let db = n.db().await;
    create_accounts(&db).await;
    let rows: Vec<(i64, String, i64)> = (1..=3000).map(|i| (i, format!("o{}", i % 4), i * 2 - 3000)).collect();
    let refs: Vec<(i64, &str, i64)> = rows.iter().map(|(a, b, c)| (*a, b.as_str(), *c)).collect();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&refs))]).await.unwrap();
    db.commit(0, &[write("accounts", WriteKind::Delete, &account_keys(&[1, 1500, 3000]))]).await.unwrap();
    db.compact();
    let agg = |function: AggregateFunction, column: &str| Aggregate { function: function as i32, column: column.into() };
    let request = |txn: u64, predicates: Vec<Predicate>| {
        let mut req = scan_req("accounts", txn);
        req.predicates = predicates;
        req.aggregates = vec![
            agg(AggregateFunction::CountRows, ""),
            agg(AggregateFunction::Count, "owner"),
            agg(AggregateFunction::Min, "balance"),
            agg(AggregateFunction::Max, "balance"),
        ];
        req
    };
    let answer = |b: &RecordBatch| -> Vec<i64> {
        assert_eq!(b.num_rows(), 1, "one row");
        (0..b.num_columns()).map(|i| b.column(i).as_primitive::<Int64Type>().value(0)).collect()
    };
    let live: Vec<&(i64, String, i64)> = rows.iter().filter(|r| ![1, 1500, 3000].contains(&r.0)).collect();
    let expect = |rows: &[&(i64, String, i64)]| {
        let n = rows.len() as i64;
        vec![n, n, rows.iter().map(|r| r.2).min().unwrap(), rows.iter().map(|r| r.2).max().unwrap()]
    };
    let all = scan(&db, request(0, vec![])).await.unwrap();
    assert_eq!(answer(&all), expect(&live));
    assert_eq!(n.node.metrics().split_scans.get(), 1, "the halves were folded apart and merged");
    let o2 = scan(&db, request(0, vec![pred("owner", CompareOp::Eq, vec![Value { kind: Some(Kind::Text("o2".into())) }])])).await.unwrap();
    let live_o2: Vec<&(i64, String, i64)> = live.iter().copied().filter(|r| r.1 == "o2").collect();
    assert_eq!(answer(&o2), expect(&live_o2));

    // Nothing passes: counts are zero, extremes NULL.
    let none = scan(&db, request(0, vec![pred("balance", CompareOp::Gt, vec![int(1 << 40)])])).await.unwrap();
    assert_eq!(none.column(0).as_primitive::<Int64Type>().value(0), 0);
    assert!(none.column(2).is_null(0) && none.column(3).is_null(0));

    // A transaction's own insert and delete count, others' do not yet.
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(5000, "new", 1 << 20)]))).await.unwrap();
    db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[2]))).await.unwrap();
    let mut mine: Vec<&(i64, String, i64)> = live.iter().copied().filter(|r| r.0 != 2).collect();
    let added = (5000, "new".to_string(), 1 << 20);
    mine.push(&added);
    assert_eq!(answer(&scan(&db, request(t, vec![])).await.unwrap()), expect(&mine));
    assert_eq!(answer(&scan(&db, request(0, vec![])).await.unwrap()), expect(&live));
    db.rollback(t).unwrap();

    // SUM of bigint is numeric in PostgreSQL: not computed here. Nor are
    // aggregates mixed with a projection.
    let mut sum = scan_req("accounts", 0);
    sum.aggregates = vec![agg(AggregateFunction::Sum, "balance")];
    let e = scan(&db, sum).await.unwrap_err();
    assert!(matches!(e, ebb_storage::StorageError::InvalidRequest(_)), "{e:?}");
    let mut mixed = request(0, vec![]);
    mixed.projection = vec!["id".into()];
    assert!(matches!(scan(&db, mixed).await.unwrap_err(), ebb_storage::StorageError::InvalidRequest(_)));
}

/// SUM of smallint and integer columns adds in 64 bits.
#[tokio::test]
async fn sums_of_integers_do_not_overflow() {
    use ebb_proto::storage::{Aggregate, AggregateFunction};
    let n = start_memory().await;
    let db = n.db().await;
    db.create_table("", "ints", &[col("id", TypeKind::Integer), col("v", TypeKind::Integer)], &["id".into()], false).await.unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("v", DataType::Int32, true)]));
    let ids: Vec<i32> = (0..10).collect();
    let values: Vec<Option<i32>> = (0..10).map(|i| if i == 3 { None } else { Some(i32::MAX) }).collect();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(ids)), Arc::new(Int32Array::from(values))]).unwrap();
    db.commit(0, &[write("ints", WriteKind::Insert, &batch)]).await.unwrap();
    let mut req = scan_req("ints", 0);
    req.aggregates = vec![
        Aggregate { function: AggregateFunction::Sum as i32, column: "v".into() },
        Aggregate { function: AggregateFunction::Max as i32, column: "v".into() },
    ];
    let b = scan(&db, req).await.unwrap();
    assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 9 * i32::MAX as i64);
    assert_eq!(b.column(1).as_primitive::<Int32Type>().value(0), i32::MAX, "max keeps the column's type");
}

/// Table sizes count rows in the memtables and in table files alike; a
/// dropped table is gone from the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relation_sizes_count_memtables_and_files() {
    let n = start(Arc::new(object_store::memory::InMemory::new()), test_config()).await;
    let db = n.db().await;
    create_accounts(&db).await;
    let accounts_id = db.tables().iter().find(|t| t.def.name == "accounts").map(|t| t.id()).expect("accounts");
    let size = |db: &ebb_storage::Database| db.table_sizes().into_iter().find(|(id, _)| *id == accounts_id).map(|(_, b)| b);
    assert_eq!(size(&db), Some(0), "no rows yet");
    let rows: Vec<(i64, String, i64)> = (1..=2000).map(|i| (i, format!("owner number {i}"), i)).collect();
    let refs: Vec<(i64, &str, i64)> = rows.iter().map(|(a, b, c)| (*a, b.as_str(), *c)).collect();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&refs))]).await.unwrap();
    let in_memory = size(&db).expect("listed");
    assert!(in_memory > 2000 * 20, "2000 rows of 20+ bytes in the memtable: {in_memory} bytes");
    db.compact();
    let in_files = size(&db).expect("listed");
    assert!(in_files > 2000 * 5, "the same rows in table files (compressed): {in_files} bytes");
    let database = db.database_size();
    assert!(database >= in_files, "the database ({database} bytes) holds the table ({in_files} bytes)");
    assert!(db.drop_table("", "accounts", false, false).await.unwrap());
    assert_eq!(size(&db), None, "a dropped table is not listed");
}

/// A point read stops at its row: it does not step over the row's older
/// versions, which a much-updated row (pgbench's branch) piles up by the
/// thousand before a flush lets garbage collection drop them.
#[tokio::test]
async fn a_point_read_does_not_walk_a_rows_old_versions() {
    use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
    let (_n, db) = accounts_holding(&[(1, "ann", 0), (2, "bob", 0)]).await;
    for i in 1..=2000 {
        db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", i)]))]).await.unwrap();
    }
    let one = KeyBound { values: vec![int(1)], inclusive: true };
    let req = ebb_proto::storage::ScanRequest { lower: Some(one.clone()), upper: Some(one), ..scan_req("accounts", 0) };
    set_perf_stats(PerfStatsLevel::EnableCount);
    let mut perf = PerfContext::default();
    perf.reset();
    let b = scan(&db, req).await.unwrap();
    let stepped = perf.metric(PerfMetric::NextOnMemtableCount) + perf.metric(PerfMetric::InternalKeySkippedCount);
    assert_eq!(balances(&b), [(1, 2000)], "the newest version");
    assert!(stepped < 100, "{stepped} steps: the read walked the row's old versions");
}

/// A bulk commit that fills the memtable is acknowledged once the memtable
/// is flushed, its blocks already in the block cache, and once the
/// compaction the flush set off is done: the statements after a load read
/// files from memory instead of competing with the flush and compaction
/// and decompressing every block. A smaller commit does not wait.
#[tokio::test]
async fn a_bulk_commit_that_fills_the_memtable_returns_flushed_and_compacted() {
    let cfg = ebb_storage::EngineConfig { memtable_bytes: 1 << 20, ..test_config() };
    let cache = cfg.block_cache.clone();
    let n = start(Arc::new(object_store::memory::InMemory::new()), cfg).await;
    let db = n.db().await;
    create_accounts(&db).await;
    let flushes = || n.node.metrics().bulk_commit_flushes.get();
    let batch = |ids: std::ops::Range<i64>, owner: &str| {
        let rows: Vec<(i64, &str, i64)> = ids.map(|i| (i, owner, i)).collect();
        write("accounts", WriteKind::Insert, &accounts(&rows))
    };

    // 100 rows: not a bulk commit.
    db.commit(0, &[batch(0..100, "small")]).await.unwrap();
    assert_eq!(flushes(), 0);
    // 5 000 rows of ~40 bytes: a bulk commit, but the memtable is not full.
    db.commit(0, &[batch(100..5100, "a short owner name of some bytes")]).await.unwrap();
    assert_eq!(flushes(), 0, "a bulk commit that leaves the memtable below its size does not flush");
    assert!(!db.memtables_awaiting_flush());

    // 6 000 rows of ~300 bytes, ~1.8 MB, fill the 1 MB memtable; the fourth
    // such file in level 0 sets off a compaction.
    let long = "x".repeat(300);
    for load in 0..5 {
        let before = cache.usage();
        let first = 10_000 + load * 6000;
        db.commit(0, &[batch(first..first + 6000, &long)]).await.unwrap();
        assert_eq!(flushes(), load as u64 + 1, "the bulk commit flushed the memtable it filled");
        assert!(!db.memtables_awaiting_flush(), "acknowledged with its memtable flushed");
        assert!(!db.compactions_underway(), "acknowledged with the compaction its flush set off done");
        if load == 0 {
            let cached = cache.usage() - before;
            assert!(cached > 6000 * 300, "the flushed blocks are in the block cache: {cached} bytes");
        }
    }
    let rows = scan(&db, scan_req("accounts", 0)).await.unwrap();
    assert_eq!(rows.num_rows(), 5100 + 5 * 6000);
    assert_eq!(rows.column(1).as_string::<i32>().iter().filter(|o| *o == Some(long.as_str())).count(), 5 * 6000);
}
