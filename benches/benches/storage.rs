//! Storage benches: single-row commits (1 and 8 writers, both durability
//! modes, `file://` store), a full scan to Arrow, and point reads.
//!
//! `cargo bench -p ebb-bench --bench storage`; results in docs/benchmarks.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ebb_bench::{bench_rows, create_bench_table, load, start};
use ebb_proto::storage::{KeyBound, ScanRequest, Value, WriteKind, value::Kind};
use ebb_storage::engine::Durability;

fn commits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("single_row_commit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    for durability in [Durability::Remote, Durability::Local] {
        let node = rt.block_on(async {
            let n = start(durability).await;
            create_bench_table(&n.db).await;
            n
        });
        let next = Arc::new(AtomicI64::new(0));
        for writers in [1usize, 8] {
            let id = format!("{durability}/{writers}_writers");
            group.bench_function(id, |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let db = node.db.clone();
                    let next = next.clone();
                    async move {
                        // Writers draw from one budget, so none idles at the end.
                        let budget = Arc::new(AtomicI64::new(iters as i64));
                        let t = Instant::now();
                        let mut tasks = Vec::new();
                        for _ in 0..writers {
                            let db = db.clone();
                            let next = next.clone();
                            let budget = budget.clone();
                            tasks.push(tokio::spawn(async move {
                                while budget.fetch_sub(1, Ordering::Relaxed) > 0 {
                                    let id = next.fetch_add(1, Ordering::Relaxed);
                                    db.commit(0, &[bench_rows(id..id + 1, WriteKind::Insert)]).await.expect("commit");
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.expect("writer");
                        }
                        t.elapsed()
                    }
                })
            });
        }
        rt.block_on(node.node.shutdown());
    }
    group.finish();
}

const SCAN_ROWS: i64 = 1_000_000;

fn scans(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let node = rt.block_on(async {
        let n = start(Durability::Remote).await;
        create_bench_table(&n.db).await;
        load(&n.db, SCAN_ROWS).await;
        n.db.compact();
        n
    });
    let mut group = c.benchmark_group("scan");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SCAN_ROWS as u64));
    group.bench_function("full_scan_1m_rows_5_cols_to_arrow", |b| {
        b.to_async(&rt).iter(|| async {
            let req = ScanRequest { database: "postgres".into(), table: "bench".into(), ..Default::default() };
            let mut rx = node.db.scan(&req).await.expect("scan");
            let mut bytes = Vec::new();
            while let Some(chunk) = rx.recv().await {
                bytes.extend_from_slice(&chunk.expect("chunk"));
            }
            let rows: usize = ebb_proto::arrow_ipc::decode(&bytes).expect("decode").iter().map(|b| b.num_rows()).sum();
            assert_eq!(rows as i64, SCAN_ROWS);
        })
    });
    group.finish();

    let mut group = c.benchmark_group("point_read");
    let mut key = 0i64;
    group.bench_function("by_primary_key", |b| {
        b.to_async(&rt).iter(|| {
            key = (key + 7919) % SCAN_ROWS;
            let bound = KeyBound { values: vec![Value { kind: Some(Kind::Int(key)) }], inclusive: true };
            let req = ScanRequest {
                database: "postgres".into(),
                table: "bench".into(),
                lower: Some(bound.clone()),
                upper: Some(bound),
                limit: 1,
                ..Default::default()
            };
            let db = node.db.clone();
            async move {
                let mut rx = db.scan(&req).await.expect("scan");
                let mut bytes = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    bytes.extend_from_slice(&chunk.expect("chunk"));
                }
                assert_eq!(ebb_proto::arrow_ipc::decode(&bytes).expect("decode").iter().map(|b| b.num_rows()).sum::<usize>(), 1);
            }
        })
    });
    group.finish();
    rt.block_on(node.node.shutdown());
}

criterion_group!(benches, commits, scans);
criterion_main!(benches);
