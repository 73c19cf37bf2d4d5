//! Transaction semantics through the engine API: snapshot isolation, READ
//! COMMITTED over row locks, rollback and timeouts.

use std::time::Duration;

use ebb_proto::storage::{Isolation, WriteKind};
use ebb_storage::StorageError;
use ebb_storage::engine::EngineConfig;

use crate::support::*;

/// Starts a write of `txn` on another task and checks that it waits for a
/// row lock another transaction holds.
async fn waiting_write(
    db: &std::sync::Arc<ebb_storage::Database>,
    txn: u64,
    w: ebb_proto::storage::TableWrite,
) -> tokio::task::JoinHandle<ebb_storage::Result<u64>> {
    let db = db.clone();
    let handle = tokio::spawn(async move { db.write(txn, &w).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!handle.is_finished(), "the second writer must wait for the row lock");
    handle
}

#[tokio::test]
async fn lost_update_is_prevented_by_a_conflict() {
    let (_node, db) = accounts_holding(&[(1, "ann", 100)]).await;

    // Two transactions read the balance and both try to add to it.
    let (t1, _) = db.begin(None).unwrap();
    let (t2, _) = db.begin(None).unwrap();
    let b1 = balances(&scan(&db, scan_req("accounts", t1)).await.unwrap())[0].1;
    let b2 = balances(&scan(&db, scan_req("accounts", t2)).await.unwrap())[0].1;
    db.write(t1, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b1 + 10)]))).await.unwrap();
    // The second writer waits for the first one's row lock …
    let second = waiting_write(&db, t2, write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b2 + 20)]))).await;
    db.commit(t1, &[]).await.expect("first committer wins");
    // … and fails once the first committed, as REPEATABLE READ does.
    let err = second.await.unwrap().expect_err("second writer must fail");
    assert!(matches!(err, StorageError::Conflict), "got {err:?}");
    assert_eq!(err.sqlstate(), "40001");
    db.rollback(t2).unwrap();
    let after = balances(&scan(&db, scan_req("accounts", 0)).await.unwrap());
    assert_eq!(after, vec![(1, 110)], "only the first update is applied");
}

#[tokio::test]
async fn read_committed_waits_for_the_row_then_retries_the_statement_on_the_new_version() {
    let (_node, db) = accounts_holding(&[(1, "ann", 100)]).await;

    let (t1, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (t2, s2) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let b1 = balances(&scan(&db, scan_req("accounts", t1)).await.unwrap())[0].1;
    let b2 = balances(&scan(&db, scan_req("accounts", t2)).await.unwrap())[0].1;
    db.write(t1, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b1 + 10)]))).await.unwrap();
    let second = waiting_write(&db, t2, write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b2 + 20)]))).await;
    db.commit(t1, &[]).await.unwrap();
    let err = second.await.unwrap().expect_err("the row changed after t2's statement snapshot");
    assert!(matches!(err, StorageError::RetryStatement), "got {err:?}");
    // t2 keeps the lock: it refreshes its snapshot, re-reads and writes again.
    let s2b = db.refresh_snapshot(t2).await.unwrap();
    assert!(s2b > s2, "the snapshot moved forward");
    let b2 = balances(&scan(&db, scan_req("accounts", t2)).await.unwrap())[0].1;
    assert_eq!(b2, 110, "the refreshed snapshot sees t1's commit");
    db.write(t2, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b2 + 20)]))).await.unwrap();
    db.commit(t2, &[]).await.unwrap();
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 130)], "no update is lost");

    // A snapshot-isolation transaction cannot move its snapshot.
    let (t3, _) = db.begin(None).unwrap();
    assert!(matches!(db.refresh_snapshot(t3).await, Err(StorageError::InvalidRequest(_))));
}

#[tokio::test]
async fn a_read_for_update_waits_for_the_row_and_reads_its_newest_version() {
    let (_node, db) = accounts_holding(&[(1, "ann", 100)]).await;

    let (t1, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (t2, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let b1 = balances(&scan(&db, read_for_update(t1, 1)).await.unwrap())[0].1;
    db.write(t1, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b1 + 10)]))).await.unwrap();
    // t2's read waits for t1's lock …
    let reader = {
        let db = db.clone();
        tokio::spawn(async move { scan(&db, read_for_update(t2, 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reader.is_finished(), "the read for update must wait for the row lock");
    db.commit(t1, &[]).await.unwrap();
    // … then reads the version t1 committed, and its write needs no retry.
    let b2 = balances(&reader.await.unwrap().unwrap())[0].1;
    assert_eq!(b2, 110, "the newest version, not the one of t2's first snapshot");
    db.write(t2, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", b2 + 20)]))).await.expect("no conflict: t2 holds the lock");
    db.commit(t2, &[]).await.unwrap();
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 130)], "no update is lost");

    // Under SNAPSHOT isolation the changed row is a conflict at once.
    let (t3, _) = db.begin(None).unwrap();
    let (t4, _) = db.begin(None).unwrap();
    assert_eq!(balances(&scan(&db, scan_req("accounts", t4)).await.unwrap()), vec![(1, 130)], "t4's snapshot is taken");
    scan(&db, read_for_update(t3, 1)).await.unwrap();
    db.write(t3, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", 1)]))).await.unwrap();
    db.commit(t3, &[]).await.unwrap();
    let err = scan(&db, read_for_update(t4, 1)).await.expect_err("the row changed after t4's snapshot");
    assert!(matches!(err, StorageError::Conflict), "got {err:?}");

    // Only a point read in a transaction can lock.
    let err = scan(&db, read_for_update(0, 1)).await.expect_err("no transaction");
    assert!(matches!(err, StorageError::InvalidRequest(_)), "got {err:?}");
    let (t5, _) = db.begin(None).unwrap();
    let whole = ebb_proto::storage::ScanRequest { lock_row: true, ..scan_req("accounts", t5) };
    assert!(matches!(scan(&db, whole).await, Err(StorageError::InvalidRequest(_))));
}

#[tokio::test]
async fn a_lock_held_too_long_times_out_and_a_rollback_releases_it() {
    let cfg = EngineConfig { lock_timeout: Duration::from_millis(200), ..test_config() };
    let n = start(std::sync::Arc::new(object_store::memory::InMemory::new()), cfg).await;
    let db = n.db().await;
    create_accounts(&db).await;
    let (t1, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (t2, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    db.write(t1, &write("accounts", WriteKind::Insert, &accounts(&[(7, "x", 1)]))).await.unwrap();
    let err = db.write(t2, &write("accounts", WriteKind::Upsert, &accounts(&[(7, "y", 2)]))).await.unwrap_err();
    assert!(matches!(err, StorageError::LockTimeout(200)), "got {err:?}");
    assert_eq!(err.sqlstate(), "40P01");
    db.rollback(t1).unwrap();
    // The rolled-back holder's lock is gone; t2 (still open) now writes.
    db.write(t2, &write("accounts", WriteKind::Upsert, &accounts(&[(7, "y", 2)]))).await.unwrap();
    db.commit(t2, &[]).await.unwrap();
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(7, 2)]);
}

#[tokio::test]
async fn a_transaction_reads_its_own_writes_and_others_do_not() {
    let (_node, db) = accounts_holding(&[(1, "a", 1), (2, "b", 2)]).await;
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(3, "c", 3)]))).await.unwrap();
    db.write(t, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "a", 10)]))).await.unwrap();
    let deleted = db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[2, 99]))).await.unwrap();
    assert_eq!(deleted, 1, "only the existing row counts as deleted");
    let mine = balances(&scan(&db, scan_req("accounts", t)).await.unwrap());
    assert_eq!(mine, vec![(1, 10), (3, 3)]);
    let theirs = balances(&scan(&db, scan_req("accounts", 0)).await.unwrap());
    assert_eq!(theirs, vec![(1, 1), (2, 2)], "uncommitted writes are invisible to others");
    db.commit(t, &[]).await.unwrap();
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 10), (3, 3)]);
}

#[tokio::test]
async fn a_snapshot_stays_stable_while_others_commit() {
    let (_node, db) = accounts_holding(&[(1, "a", 1)]).await;
    let (reader, _) = db.begin(None).unwrap();
    for i in 2..=20 {
        db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(i, "x", i)]))]).await.unwrap();
        db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(1, "a", i * 100)]))]).await.unwrap();
        let seen = balances(&scan(&db, scan_req("accounts", reader)).await.unwrap());
        assert_eq!(seen, vec![(1, 1)], "the reader's snapshot must not move");
    }
    db.commit(reader, &[]).await.unwrap();
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 20);
}

#[tokio::test]
async fn rollback_leaves_nothing() {
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(1, "a", 1), (2, "b", 2)]))).await.unwrap();
    db.rollback(t).unwrap();
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 0);
    let err = db.commit(t, &[]).await.expect_err("a rolled-back transaction cannot commit");
    assert!(matches!(err, StorageError::UnknownTransaction(_)), "got {err:?}");
}

#[tokio::test]
async fn an_abandoned_transaction_is_aborted_after_its_timeout() {
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    let (t, _) = db.begin(Some(Duration::from_millis(300))).unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(1, "a", 1)]))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = db.commit(t, &[]).await.expect_err("timed out");
    assert!(matches!(err, StorageError::TransactionTimedOut { .. }), "got {err:?}");
    assert_eq!(err.sqlstate(), "25P03");
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 0);
    // A transaction that keeps working is not aborted.
    let (busy, _) = db.begin(Some(Duration::from_millis(500))).unwrap();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        db.write(busy, &write("accounts", WriteKind::Insert, &accounts(&[(10 + i, "b", i)]))).await.unwrap();
    }
    db.commit(busy, &[]).await.expect("an active transaction survives");
}

#[tokio::test]
async fn duplicate_keys_are_unique_violations() {
    let (_node, db) = accounts_holding(&[(1, "a", 1)]).await;
    let err = db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "again", 2)]))]).await.unwrap_err();
    assert_eq!(err.sqlstate(), "23505", "{err}");
    let err = db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(5, "x", 1), (5, "y", 2)]))]).await.unwrap_err();
    assert_eq!(err.sqlstate(), "23505", "a duplicate within one statement: {err}");
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 1, "a failed statement writes nothing");
    // Two concurrent inserts of one key: the second waits for the first and
    // is a unique violation once it commits.
    let (t1, _) = db.begin(None).unwrap();
    let (t2, _) = db.begin(None).unwrap();
    db.write(t1, &write("accounts", WriteKind::Insert, &accounts(&[(7, "p", 1)]))).await.unwrap();
    let second = waiting_write(&db, t2, write("accounts", WriteKind::Insert, &accounts(&[(7, "q", 1)]))).await;
    db.commit(t1, &[]).await.unwrap();
    assert_eq!(second.await.unwrap().unwrap_err().sqlstate(), "23505");
    db.rollback(t2).unwrap();
    // INSERT_OR_IGNORE skips existing keys.
    let (_, n_rows) = db.commit(0, &[write("accounts", WriteKind::InsertOrIgnore, &accounts(&[(1, "z", 0), (8, "new", 0)]))]).await.unwrap();
    assert_eq!(n_rows, 1);
}

#[tokio::test]
async fn old_versions_are_garbage_collected_below_the_oldest_snapshot() {
    let (_node, db) = accounts_holding(&[(1, "a", 0)]).await;
    let (old_reader, _) = db.begin(None).unwrap();
    for i in 1..=50 {
        db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(1, "a", i)]))]).await.unwrap();
    }
    let key = {
        let mut k = ebb_storage::keys::table_prefix(db.table("", "accounts").unwrap().id());
        ebb_storage::keys::encode_key_datum(&ebb_storage::types::Datum::I64(1), &mut k);
        k
    };
    db.compact();
    assert_eq!(db.version_count(&key), 51, "the open snapshot pins every newer version and its own");
    assert_eq!(balances(&scan(&db, scan_req("accounts", old_reader)).await.unwrap()), vec![(1, 0)]);
    db.rollback(old_reader).unwrap();
    db.compact();
    assert_eq!(db.version_count(&key), 1, "only the newest version survives");
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 50)]);
}

/// A READ COMMITTED transaction reads the latest commits from the first
/// request of each new statement number on (no RefreshSnapshot round trip);
/// requests of the same statement share its snapshot, and a REPEATABLE READ
/// transaction ignores statement numbers.
#[tokio::test]
async fn statement_numbers_move_a_read_committed_snapshot() {
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    let insert = |id: i64| write("accounts", WriteKind::Insert, &accounts(&[(id, "x", id)]));
    let ids_in = |txn: u64, statement: u64| {
        let db = db.clone();
        async move {
            let mut req = scan_req("accounts", txn);
            req.statement = statement;
            balances(&scan(&db, req).await.unwrap()).into_iter().map(|(id, _)| id).collect::<Vec<_>>()
        }
    };
    let (rc, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let (rr, _) = db.begin_with(None, Isolation::Snapshot).unwrap();
    db.commit(0, &[insert(1)]).await.unwrap();
    assert_eq!(ids_in(rc, 1).await, vec![1], "statement 1 starts on a fresh snapshot");
    db.commit(0, &[insert(2)]).await.unwrap();
    assert_eq!(ids_in(rc, 1).await, vec![1], "the rest of statement 1 keeps it");
    assert_eq!(ids_in(rc, 0).await, vec![1], "no number: the snapshot stays");
    assert_eq!(ids_in(rc, 2).await, vec![1, 2], "statement 2 reads the latest commits");
    // A write can be a statement's first request.
    db.commit(0, &[insert(3)]).await.unwrap();
    db.write_in_statement(rc, 3, 0, &insert(10)).await.unwrap();
    assert_eq!(ids_in(rc, 3).await, vec![1, 2, 3, 10]);
    assert_eq!(ids_in(rr, 5).await, Vec::<i64>::new(), "REPEATABLE READ keeps its first snapshot");
    db.rollback(rc).unwrap();
    db.rollback(rr).unwrap();
}

/// ROLLBACK TO SAVEPOINT undoes exactly the writes made under that
/// savepoint and later ones (inserts, replacements, deletes), in the
/// transaction's own reads and in what it commits; the transaction and the
/// savepoint stay open, and a released savepoint's writes roll back with
/// the one before it.
#[tokio::test]
async fn savepoints_undo_only_what_came_after_them() {
    let (_node, db) = accounts_holding(&[(1, "a", 10), (2, "b", 20)]).await;
    let put = |rows: &[(i64, &str, i64)]| write("accounts", WriteKind::Upsert, &accounts(rows));
    let (t, _) = db.begin_with(None, Isolation::Snapshot).unwrap();
    let read = |txn: u64| {
        let db = db.clone();
        async move { balances(&scan(&db, scan_req("accounts", txn)).await.unwrap()) }
    };
    db.write_in_statement(t, 1, 0, &put(&[(1, "a", 11)])).await.unwrap();
    // Savepoint 1: replace, insert, delete.
    db.write_in_statement(t, 2, 1, &put(&[(1, "a", 12), (3, "c", 30)])).await.unwrap();
    db.write_in_statement(t, 3, 1, &write("accounts", WriteKind::Delete, &account_keys(&[2]))).await.unwrap();
    // Savepoint 2, later released: its writes now belong to savepoint 1.
    db.write_in_statement(t, 4, 2, &put(&[(4, "d", 40)])).await.unwrap();
    db.write_in_statement(t, 5, 1, &put(&[(5, "e", 50)])).await.unwrap();
    assert_eq!(read(t).await, vec![(1, 12), (3, 30), (4, 40), (5, 50)]);
    db.rollback_to_savepoint(t, 1).await.unwrap();
    assert_eq!(read(t).await, vec![(1, 11), (2, 20)], "back to the write before savepoint 1");
    // The savepoint stays usable: write again under it, undo again.
    db.write_in_statement(t, 6, 1, &put(&[(2, "b", 21)])).await.unwrap();
    db.rollback_to_savepoint(t, 1).await.unwrap();
    db.write_in_statement(t, 7, 3, &put(&[(6, "f", 60)])).await.unwrap();
    assert!(db.rollback_to_savepoint(t, 0).await.is_err(), "savepoints are numbered from 1");
    db.commit(t, &[]).await.unwrap();
    assert_eq!(read(0).await, vec![(1, 11), (2, 20), (6, 60)]);
    assert!(db.rollback_to_savepoint(t, 1).await.is_err(), "the transaction is gone");
}

/// Writes a client deferred ride on a later scan, write or commit of the
/// transaction: they are buffered before the request does anything else.
#[tokio::test]
async fn carried_writes_are_buffered_before_the_request_that_carries_them() {
    let (_node, db) = accounts_holding(&[(1, "a", 1), (2, "b", 2)]).await;
    let (t, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    // A point read of row 2 carries an update of row 1 that its own FOR UPDATE read locked.
    scan(&db, read_for_update(t, 1)).await.unwrap();
    let bump = write("accounts", WriteKind::Upsert, &accounts(&[(1, "a", 10)]));
    let read = ebb_proto::storage::ScanRequest { earlier_writes: vec![bump], ..read_for_update(t, 2) };
    assert_eq!(balances(&scan(&db, read).await.unwrap()), vec![(2, 2)]);
    assert_eq!(balances(&scan(&db, scan_req("accounts", t)).await.unwrap()), vec![(1, 10), (2, 2)], "the carried write is in the transaction");
    // A write carries an insert; a commit carries a delete.
    let insert = write("accounts", WriteKind::Insert, &accounts(&[(3, "c", 3)]));
    let n = db.write_carrying(t, 0, 0, &[insert], &write("accounts", WriteKind::Upsert, &accounts(&[(2, "b", 20)]))).await.unwrap();
    assert_eq!(n, 1, "rows affected are the request's own write's");
    let (_, rows) = db.commit(t, &[write("accounts", WriteKind::Delete, &account_keys(&[3]))]).await.unwrap();
    assert_eq!(rows, 1);
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 10), (2, 20)]);
}

/// A carried write storage cannot buffer (here: the table changed since
/// the statement that deferred it) ends its transaction with 40001, and
/// the transaction's locks go with it.
#[tokio::test]
async fn a_carried_write_that_fails_rolls_its_transaction_back() {
    let (_node, db) = accounts_holding(&[(1, "a", 1)]).await;
    let (t, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    scan(&db, read_for_update(t, 1)).await.unwrap();
    let stale = ebb_proto::storage::TableWrite {
        expect: Some(ebb_proto::storage::TableVersion { id: 9999, version: 0 }),
        ..write("accounts", WriteKind::Upsert, &accounts(&[(1, "a", 10)]))
    };
    let read = ebb_proto::storage::ScanRequest { earlier_writes: vec![stale], ..scan_req("accounts", t) };
    let err = scan(&db, read).await.unwrap_err();
    assert!(matches!(&err, StorageError::EarlierWriteFailed(inner) if matches!(**inner, StorageError::CatalogChanged(_))), "got {err:?}");
    assert_eq!(err.sqlstate(), "40001");
    assert!(matches!(db.commit(t, &[]).await, Err(StorageError::UnknownTransaction(_))), "the transaction is gone");
    // Its lock on row 1 went with it: another transaction writes the row at once.
    let (t2, _) = db.begin_with(None, Isolation::ReadCommitted).unwrap();
    let w = write("accounts", WriteKind::Upsert, &accounts(&[(1, "a", 5)]));
    tokio::time::timeout(Duration::from_secs(5), db.write(t2, &w)).await.expect("no lock left behind").unwrap();
    db.commit(t2, &[]).await.unwrap();
    assert_eq!(balances(&scan(&db, scan_req("accounts", 0)).await.unwrap()), vec![(1, 5)]);
}
