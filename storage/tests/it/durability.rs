//! Durability in process: restore from the object store alone, checkpoints,
//! local-mode shipping and fencing between two nodes.

use std::sync::Arc;
use std::time::Duration;

use ebb_proto::storage::WriteKind;
use ebb_storage::engine::Durability;
use ebb_storage::engine::background::take_checkpoint;
use ebb_storage::StorageError;
use object_store::memory::InMemory;
use object_store::ObjectStore;

use crate::support::*;

async fn count_objects(store: &Arc<dyn ObjectStore>, infix: &str) -> usize {
    use futures::TryStreamExt;
    let all: Vec<_> = store.list(None).try_collect().await.unwrap();
    all.iter().filter(|m| m.location.as_ref().contains(infix)).count()
}

#[tokio::test]
async fn a_node_with_an_empty_disk_restores_every_acknowledged_commit() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let db = first.db().await;
    create_accounts(&db).await;
    // 8 concurrent writers, 25 commits each.
    let mut tasks = Vec::new();
    for w in 0..8i64 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25i64 {
                let id = w * 1000 + i;
                db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(id, "w", id)]))]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // No clean shutdown: the second node only has the object store.
    let second = start(store.clone(), test_config()).await;
    let db2 = second.db().await;
    let rows = balances(&scan(&db2, scan_req("accounts", 0)).await.unwrap());
    assert_eq!(rows.len(), 200);
    assert!(rows.iter().all(|(id, bal)| id == bal));
}

#[tokio::test]
async fn checkpoints_truncate_the_wal_and_restore_with_the_wal_after_them() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let db = first.db().await;
    create_accounts(&db).await;
    for i in 0..50 {
        db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(i, "a", i)]))]).await.unwrap();
    }
    let wal_before = count_objects(&store, "/wal/").await;
    assert!(wal_before >= 50, "one WAL object per sequential commit, got {wal_before}");
    take_checkpoint(&db).await.unwrap();
    let wal_after = count_objects(&store, "/wal/").await;
    assert_eq!(wal_after, 1, "only the newest WAL object stays after a checkpoint");
    assert!(count_objects(&store, ".sst").await >= 1, "SST files uploaded");
    for i in 50..60 {
        db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(i - 50, "b", -i)]))]).await.unwrap();
    }
    let second = start(store.clone(), test_config()).await;
    let rows = balances(&scan(&second.db().await, scan_req("accounts", 0)).await.unwrap());
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0], (0, -50));
    assert_eq!(rows[9], (9, -59));
    assert_eq!(rows[10], (10, 10));
}

#[tokio::test]
async fn local_durability_ships_within_the_interval() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cfg = || {
        let mut c = test_config();
        c.durability = Durability::Local;
        c.ship_interval = Duration::from_millis(200);
        c
    };
    let first = start(store.clone(), cfg()).await;
    let db = first.db().await;
    create_accounts(&db).await;
    for i in 0..30 {
        db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(i, "l", i)]))]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = start(store.clone(), cfg()).await;
    assert_eq!(scan(&second.db().await, scan_req("accounts", 0)).await.unwrap().num_rows(), 30);
}

#[tokio::test]
async fn a_second_node_fences_the_first() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let old = first.db().await;
    create_accounts(&old).await;
    old.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "old", 1)]))]).await.unwrap();

    let second = start(store.clone(), test_config()).await;
    let new = second.db().await;
    let err = old.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(2, "stale", 2)]))]).await.unwrap_err();
    assert!(matches!(err, StorageError::Fenced(_)), "got {err:?}");
    assert!(old.is_fenced());
    assert!(matches!(old.begin(None).unwrap_err(), StorageError::Fenced(_)));
    new.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(3, "new", 3)]))]).await.unwrap();
    assert_eq!(balances(&scan(&new, scan_req("accounts", 0)).await.unwrap()), vec![(1, 1), (3, 3)]);
    // The registry and the WAL agree after the takeover: a third node sees the same.
    let third = start(store.clone(), test_config()).await;
    assert_eq!(balances(&scan(&third.db().await, scan_req("accounts", 0)).await.unwrap()), vec![(1, 1), (3, 3)]);
}

/// Moves the newest WAL object one sequence number up under another writer's
/// name: the store then looks as if a pipelined owner crashed with its older
/// put missing and a newer one landed (never acknowledged).
async fn leave_a_pipeline_gap(store: &Arc<dyn ObjectStore>) -> u64 {
    use ebb_storage::durability::wal::WalObject;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;
    let all: Vec<_> = store.list(None).try_collect().await.unwrap();
    let newest = all.iter().filter(|m| m.location.as_ref().contains("/wal/")).map(|m| m.location.clone()).max().unwrap();
    let bytes = store.get(&newest).await.unwrap().bytes().await.unwrap();
    let mut obj = WalObject::decode_bytes(&bytes).unwrap();
    assert!(!obj.commits.is_empty(), "the newest object holds the last commit");
    store.delete(&newest).await.unwrap();
    obj.seq += 1;
    obj.writer_id = "a-crashed-writer".into();
    let name = newest.as_ref().rsplit_once('/').unwrap().0.to_string();
    let moved = Path::from(format!("{name}/{}", ebb_storage::durability::wal::wal_key(obj.seq).trim_start_matches("wal/")));
    store.put(&moved, obj.encode_bytes().into()).await.unwrap();
    obj.seq - 1
}

#[tokio::test]
async fn an_opener_seals_a_gap_left_by_a_crashed_pipeline_and_fences_the_old_owner() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let old = first.db().await;
    create_accounts(&old).await;
    old.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "acked", 1)]))]).await.unwrap();
    old.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(2, "landed late", 2)]))]).await.unwrap();
    let gap = leave_a_pipeline_gap(&store).await;

    let second = start(store.clone(), test_config()).await;
    let new = second.db().await;
    // The object after the gap is replayed (its commits never saw the
    // missing group's writes); the gap is sealed with an empty object.
    assert_eq!(balances(&scan(&new, scan_req("accounts", 0)).await.unwrap()), vec![(1, 1), (2, 2)]);
    let sealed = format!("/wal/{gap:020}");
    assert_eq!(count_objects(&store, &sealed).await, 1, "gap {gap} sealed");
    // The old owner's next put collides with the moved object: fenced.
    let err = old.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(9, "stale", 9)]))]).await.unwrap_err();
    assert!(matches!(err, StorageError::Fenced(_)), "got {err:?}");
    new.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(3, "new", 3)]))]).await.unwrap();
    let third = start(store.clone(), test_config()).await;
    assert_eq!(balances(&scan(&third.db().await, scan_req("accounts", 0)).await.unwrap()), vec![(1, 1), (2, 2), (3, 3)]);
}
