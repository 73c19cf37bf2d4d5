//! Object-store faults: commits wait or fail, none is acknowledged without
//! being durable, and the node recovers when the store does.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ebb_proto::storage::WriteKind;
use ebb_storage::StorageError;

use crate::support::*;

#[tokio::test]
async fn commits_wait_while_the_store_fails_and_complete_when_it_recovers() {
    let (store, faults) = faulty_store();
    let n = start(store.clone(), test_config()).await;
    let db = n.db().await;
    create_accounts(&db).await;
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
    let (store, faults) = faulty_store();
    let n = start(store, test_config()).await;
    let db = n.db().await;
    create_accounts(&db).await;
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
