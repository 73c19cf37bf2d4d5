//! Object-store faults: commits wait or fail, none is acknowledged without
//! being durable, and the node recovers when the store does.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ebb_proto::storage::WriteKind;
use ebb_storage::durability::failing::Faults;
use ebb_storage::{Database, StorageError};
use object_store::ObjectStore;

use crate::support::*;

/// A node on a fault-injecting in-memory store, with the `accounts` table
/// created: the store (for a node restoring from it), its fault switches,
/// the node and its `postgres` database.
async fn accounts_on_faulty_store() -> (Arc<dyn ObjectStore>, Arc<Faults>, TestNode, Arc<Database>) {
    let (store, faults) = faulty_store();
    let n = start(store.clone(), test_config()).await;
    let db = n.db().await;
    create_accounts(&db).await;
    (store, faults, n, db)
}

#[tokio::test]
async fn commits_wait_while_the_store_fails_and_complete_when_it_recovers() {
    let (_store, faults, _node, db) = accounts_on_faulty_store().await;
    faults.set_fail_writes(true);
    let pending = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "a", 1)]))]).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "a commit is not acknowledged while its WAL cannot be written");
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 0, "and it is not visible");
    assert!(faults.write_attempts.load(Ordering::SeqCst) > 1, "the upload is retried");
    faults.set_fail_writes(false);
    pending.await.unwrap().expect("the commit completes once the store is back");
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 1);
}

#[tokio::test]
async fn a_commit_that_cannot_be_made_durable_is_never_acknowledged() {
    let (store, faults) = faulty_store();
    let mut cfg = test_config();
    cfg.commit_timeout = Duration::from_millis(400);
    let n = start(store.clone(), cfg).await;
    let db = n.db().await;
    create_accounts(&db).await;
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "ok", 1)]))]).await.unwrap();
    faults.set_fail_writes(true);
    let err = db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(2, "lost?", 2)]))]).await.unwrap_err();
    assert!(matches!(err, StorageError::CommitOutcomeUnknown(_)), "got {err:?}");
    assert_eq!(err.sqlstate(), "40003");
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 1, "unacknowledged work is not visible");
    faults.set_fail_writes(false);
    // The server serves again; the earlier commit's fate is decided by its
    // WAL object, which the retry loop writes once the store is back.
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(3, "after", 3)]))]).await.unwrap();
    let rows = balances(&scan(&db, scan_req("accounts", 0)).await.unwrap());
    assert!(rows.contains(&(1, 1)) && rows.contains(&(3, 3)), "{rows:?}");
    // Whatever this node shows, a node restoring from the store shows the same.
    let restored = start(store.clone(), test_config()).await;
    assert_eq!(balances(&scan(&restored.db().await, scan_req("accounts", 0)).await.unwrap()), rows);
}

#[tokio::test]
async fn store_latency_delays_acknowledgement() {
    let (_store, faults, _node, db) = accounts_on_faulty_store().await;
    faults.set_latency(Duration::from_millis(150));
    let t = Instant::now();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "slow", 1)]))]).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150), "acknowledged only after the slow upload: {:?}", t.elapsed());
    // Concurrent commits share one slow upload (group commit).
    let before = faults.write_attempts.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(100 + i, "g", i)]))]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let uploads = faults.write_attempts.load(Ordering::SeqCst) - before;
    assert!(uploads < 16, "16 concurrent commits took {uploads} uploads");
}

#[tokio::test]
async fn a_slow_store_gets_overlapping_puts_but_never_more_than_the_pipeline_depth() {
    let (_store, faults, _node, db) = accounts_on_faulty_store().await;
    faults.set_latency(Duration::from_millis(100));
    // Commits arriving every 10 ms, each while earlier puts are under way.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(i, "o", i)]))]).await
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let most = faults.max_puts_in_flight.load(Ordering::SeqCst);
    assert!(most >= 2, "puts to a slow store overlap: at most {most} at once");
    assert!(most <= ebb_storage::durability::wal::WAL_PIPELINE_DEPTH as u64, "fencing allows {} in flight, saw {most}", ebb_storage::durability::wal::WAL_PIPELINE_DEPTH);
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 30);
}

#[tokio::test]
async fn a_waiting_writer_gets_the_row_before_the_holders_put_lands_and_commits_after_it() {
    use ebb_proto::storage::Isolation;
    let (_store, faults, _node, db) = accounts_on_faulty_store().await;
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "hot", 100)]))]).await.unwrap();
    faults.set_latency(Duration::from_millis(400));

    let (t1, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (t2, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    scan(&db, read_for_update(t1, 1)).await.unwrap();
    db.write(t1, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "hot", 110)]))).await.unwrap();
    let started = Instant::now();
    let c1 = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(t1, &[]).await })
    };
    // t2 waits for t1's row lock, which t1 releases once its commit is
    // validated and applied — well before its slow WAL put lands.
    let b2 = balances(&scan(&db, read_for_update(t2, 1)).await.unwrap())[0].1;
    assert!(started.elapsed() < Duration::from_millis(300), "the lock came only after the put: {:?}", started.elapsed());
    assert!(!c1.is_finished(), "t1 is not acknowledged before its put lands");
    assert_eq!(b2, 110, "t2 reads t1's version");
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 100)], "a new snapshot reads durable commits only");
    db.write(t2, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "hot", b2 + 5)]))).await.expect("t2 holds the lock");
    db.commit(t2, &[]).await.expect("t2 commits");
    assert!(c1.is_finished(), "t2 read t1's commit, so it is acknowledged only after t1");
    c1.await.unwrap().expect("t1 commits");
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 115)], "no update is lost");

    // A reader that saw an early commit is not acknowledged before it lands.
    let (t3, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (t4, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    scan(&db, read_for_update(t3, 1)).await.unwrap();
    db.write(t3, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "hot", 120)]))).await.unwrap();
    let c3 = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(t3, &[]).await })
    };
    assert_eq!(balances(&scan(&db, read_for_update(t4, 1)).await.unwrap())[0].1, 120);
    db.commit(t4, &[]).await.expect("t4 ends without writes");
    assert!(c3.is_finished(), "t4 read t3's commit: it waited for it to be durable");
    c3.await.unwrap().unwrap();

    // A write that finds the row changed reports it only once the change is durable.
    let (t5, _) = db.begin(None).unwrap();
    let (t6, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    db.write(t6, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "hot", 130)]))).await.unwrap();
    let c6 = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(t6, &[]).await })
    };
    let err = db.write(t5, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "hot", 0)]))).await.expect_err("t6 wrote the row after t5's snapshot");
    assert!(matches!(err, StorageError::Conflict), "got {err:?}");
    assert!(c6.is_finished(), "the conflict names a commit only once it is durable");
    c6.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_commit_applied_early_and_never_durable_is_gone_when_the_fenced_node_reopens() {
    use ebb_proto::storage::Isolation;
    use ebb_storage::durability::failing::FailingObjectStore;
    use ebb_storage::metrics::StorageMetrics;
    use ebb_storage::StorageNode;
    let inner: std::sync::Arc<dyn object_store::ObjectStore> = std::sync::Arc::new(object_store::memory::InMemory::new());
    let (slow, faults) = FailingObjectStore::new(inner.clone());
    let cache = tempfile::tempdir().unwrap();
    let node = |store| StorageNode::start(store, Default::default(), cache.path().to_path_buf(), test_config(), StorageMetrics::unregistered());
    let first = node(slow).await.unwrap();
    let db = first.database("postgres").await.unwrap();
    create_accounts(&db).await;
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "hot", 100)]))]).await.unwrap();

    faults.set_latency(Duration::from_millis(1500));
    let (t1, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (t2, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    db.write(t1, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "phantom", 999)]))).await.unwrap();
    let c1 = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(t1, &[]).await })
    };
    // t1 is applied locally (t2 gets its lock and reads it) while its put is in flight …
    assert_eq!(balances(&scan(&db, read_for_update(t2, 1)).await.unwrap())[0].1, 999);
    // … when another node takes the database over: the put lands on a
    // claimed sequence number and t1 is never acknowledged.
    let other = start(inner.clone(), test_config()).await;
    let err = c1.await.unwrap().expect_err("t1's put collides with the new owner's claim");
    assert!(matches!(err, StorageError::Fenced(_)), "got {err:?}");
    assert!(db.commit(t2, &[]).await.is_err(), "t2 read t1: it cannot commit either");
    assert_eq!(balances(&scan(&other.db().await, scan_req("accounts", 0)).await.unwrap()), vec![(1, 100)]);
    first.shutdown().await;
    drop((db, first));

    // The first node's cache holds t1; reopening there restores from the store.
    other.node.shutdown().await;
    drop(other);
    let reopened = node(inner.clone()).await.unwrap();
    let rows = balances(&scan(&reopened.database("postgres").await.unwrap(), scan_req("accounts", 0)).await.unwrap());
    assert_eq!(rows, vec![(1, 100)], "the commit that never became durable is not in the reopened copy");
}

#[tokio::test]
async fn a_checkpoint_waits_for_commits_applied_early_to_become_durable() {
    let (_store, faults, _node, db) = accounts_on_faulty_store().await;
    faults.set_fail_writes(true);
    let c1 = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "early", 1)]))]).await })
    };
    // The commit is applied locally and its put keeps failing …
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.visible_ts() == db.local_ts() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let checkpoint = {
        let db = db.clone();
        tokio::spawn(async move { ebb_storage::engine::background::take_checkpoint(&db).await })
    };
    // … so a checkpoint waits rather than copy a local state the store may never get.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!checkpoint.is_finished(), "the checkpoint went ahead with a commit that is not durable");
    faults.set_fail_writes(false);
    let ts = c1.await.unwrap().expect("the commit lands once the store is back").0;
    let applied = checkpoint.await.unwrap().expect("the checkpoint follows");
    assert_eq!(applied, ts, "and holds the commit, now durable");
}

#[tokio::test]
async fn commits_go_on_while_a_checkpoint_deletes_the_wal_it_covers() {
    let (store, faults, _node, db) = accounts_on_faulty_store().await;
    for id in 1..=5 {
        db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(id, "before", id)]))]).await.expect("commit");
    }
    faults.hold_deletes.store(true, Ordering::SeqCst);
    let checkpoint = {
        let db = db.clone();
        tokio::spawn(async move { ebb_storage::engine::background::take_checkpoint(&db).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while faults.deletes_waiting.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the checkpoint never deleted a WAL object");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The checkpoint is deleting the WAL objects it covers; commits do not wait for that.
    let during = tokio::time::timeout(
        Duration::from_secs(10),
        db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(100, "during", 100)]))]),
    )
    .await
    .expect("a commit waited for the WAL's truncation")
    .expect("commit");
    faults.hold_deletes.store(false, Ordering::SeqCst);
    let applied = checkpoint.await.unwrap().expect("checkpoint");
    assert!(applied < during.0, "the commit came after the checkpoint's state");
    let listed: Vec<object_store::ObjectMeta> = futures::TryStreamExt::try_collect(store.list(None)).await.unwrap();
    let left: Vec<_> = listed.iter().map(|o| o.location.to_string()).filter(|p| p.contains("/wal/")).collect();
    assert!(left.len() <= 2, "covered WAL objects are gone (the newest before the checkpoint stays): {left:?}");
    let rows = balances(&scan(&db, scan_req("accounts", 0)).await.unwrap());
    assert_eq!(rows.len(), 6);
}
