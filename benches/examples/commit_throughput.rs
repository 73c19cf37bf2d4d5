//! Load harness: single-row commits from N concurrent writers for a fixed
//! time on a `file://` store, reported as commits per second (the median of
//! several runs). Steadier than a criterion sample for a throughput target,
//! because every writer runs for the whole interval.
//!
//! `cargo run --release -p ebb-bench --example commit_throughput -- [writers] [seconds] [runs] [remote|local]`

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ebb_bench::{bench_rows, create_bench_table, start};
use ebb_proto::storage::WriteKind;
use ebb_storage::engine::Durability;

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let writers: usize = arg(1, 8);
    let secs: u64 = arg(2, 5);
    let runs: usize = arg(3, 3);
    let durability = match arg(4, "remote".to_string()).as_str() {
        "local" => Durability::Local,
        _ => Durability::Remote,
    };
    let node = start(durability).await;
    create_bench_table(&node.db).await;
    let next = Arc::new(AtomicI64::new(0));
    let mut rates = Vec::new();
    let puts = &node.metrics.wal_upload_seconds;
    let groups = &node.metrics.group_size;
    let (puts_before, put_secs_before) = (puts.get_sample_count(), puts.get_sample_sum());
    let (groups_before, commits_before) = (groups.get_sample_count(), groups.get_sample_sum());
    for _ in 0..runs {
        let before = next.load(Ordering::Relaxed);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let db = node.db.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move {
                while t.elapsed() < Duration::from_secs(secs) {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    db.commit(0, &[bench_rows(id..id + 1, WriteKind::Insert)]).await.expect("commit");
                }
            }));
        }
        for task in tasks {
            task.await.expect("writer");
        }
        rates.push((next.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let put_count = (puts.get_sample_count() - puts_before).max(1) as f64;
    let group_count = (groups.get_sample_count() - groups_before).max(1) as f64;
    println!(
        "ebb commit_throughput durability={durability} writers={writers} median={median:.0}/s runs={rates:.0?} \
         mean_group={:.1} mean_wal_put_us={:.0} gathers_filled={} gathers_timed_out={}",
        (groups.get_sample_sum() - commits_before) / group_count,
        (puts.get_sample_sum() - put_secs_before) / put_count * 1e6,
        node.metrics.commit_gathers.with_label_values(&["filled"]).get(),
        node.metrics.commit_gathers.with_label_values(&["timed_out"]).get(),
    );
    node.node.shutdown().await;
}
