//! Crash recovery of the real binary: `kill -9`, delete the cache, start a
//! fresh process on the same object store.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ebb_proto::storage::*;

use crate::support::*;

/// Runs 8 writers of two-row transactions until `acks` commits were
/// acknowledged, then kills the process mid-flight; returns the acknowledged groups.
async fn write_until_killed(proc: &mut StorageProc, acks: usize) -> BTreeSet<i64> {
    let mut c = proc.client().await;
    create_t(&mut c).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for w in 0..8i64 {
        let mut c = proc.client().await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let grp = w * 1_000_000 + i;
                // A two-statement transaction: begin, write, commit with a second write.
                let Ok(b) = c.begin(BeginRequest { database: "postgres".into(), ..Default::default() }).await else { return };
                let txn = b.into_inner().txn_id;
                let w1 = WriteRequest { database: "postgres".into(), txn_id: txn, write: Some(insert(&[(grp * 2, grp, i)])), statement: 0, savepoint: 0, earlier_writes: vec![] };
                if c.write(w1).await.is_err() {
                    return;
                }
                let commit = CommitRequest { database: "postgres".into(), txn_id: txn, writes: vec![insert(&[(grp * 2 + 1, grp, i)])] };
                match c.commit(commit).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(grp);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < acks {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Replies only come from the live process, so the set taken after the
    // kill is exactly what was acknowledged.
    proc.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let set = acked.lock().unwrap().clone();
    set
}

/// Every acknowledged group has both rows, and no group is half there.
fn check(rows: &[(i64, i64, i64)], acked: &BTreeSet<i64>) {
    let mut groups: BTreeMap<i64, usize> = BTreeMap::new();
    for (id, grp, _) in rows {
        assert_eq!(id / 2, *grp, "row {id} in the wrong group");
        *groups.entry(*grp).or_default() += 1;
    }
    let half: Vec<_> = groups.iter().filter(|(_, n)| **n != 2).collect();
    assert!(half.is_empty(), "half-applied transactions: {half:?}");
    let missing: Vec<_> = acked.iter().filter(|g| !groups.contains_key(g)).collect();
    assert!(missing.is_empty(), "{} acknowledged commits lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
}

async fn crash_and_recover(object_store: &str, dir: &std::path::Path, extra: &[&str], acks: usize) {
    let cache1 = dir.join("cache1");
    let mut first = StorageProc::start(object_store, &cache1, extra, &[]).await;
    let acked = write_until_killed(&mut first, acks).await;
    std::fs::remove_dir_all(&cache1).expect("delete the cache directory");
    let cache2 = dir.join("cache2");
    let second = StorageProc::start(object_store, &cache2, extra, &[]).await;
    let rows = read_t(&mut second.client().await).await;
    check(&rows, &acked);
    assert!(rows.len() >= 2 * acks, "{} rows", rows.len());
    // The recovered node takes writes.
    let mut c = second.client().await;
    c.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(-2, -1, 0), (-1, -1, 0)])] })
        .await
        .expect("write after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remote_mode_loses_no_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects");
    let store = format!("file://{}", objects.display());
    // Frequent checkpoints, so the crash lands between checkpoints, WAL
    // truncation and commits, and recovery restores a checkpoint plus WAL.
    crash_and_recover(&store, dir.path(), &["--checkpoint-interval", "300ms"], 3000).await;
    let manifests = walk(&objects).into_iter().filter(|p| p.contains("/checkpoints/") && p.ends_with(".json")).count();
    assert!(manifests >= 1, "a checkpoint was taken during the run");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_mode_loses_nothing_once_the_shipping_interval_passed() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    // Local mode acknowledges before shipping: what is guaranteed is every
    // commit acknowledged more than one shipping interval before the crash.
    let cache1 = dir.path().join("cache1");
    let args = ["--durability", "local", "--ship-interval", "200ms"];
    let mut first = StorageProc::start(&store, &cache1, &args, &[]).await;
    let mut c = first.client().await;
    create_t(&mut c).await;
    let mut acked = BTreeSet::new();
    for grp in 0..200i64 {
        c.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(grp * 2, grp, 0), (grp * 2 + 1, grp, 0)])] })
            .await
            .expect("commit");
        acked.insert(grp);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    first.kill9();
    std::fs::remove_dir_all(&cache1).unwrap();
    let second = StorageProc::start(&store, &dir.path().join("cache2"), &args, &[]).await;
    let rows = read_t(&mut second.client().await).await;
    check(&rows, &acked);
    assert_eq!(rows.len(), 400);
}
