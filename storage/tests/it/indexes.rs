//! Secondary indexes: entries follow every write, a unique index refuses
//! duplicates (concurrent ones too), CREATE INDEX misses no commit, and
//! indexes survive a takeover.

use std::sync::Arc;

use ebb_proto::storage::{CreateIndexRequest, KeyBound, ScanRequest, Value, WriteKind, value::Kind};
use ebb_storage::Database;
use object_store::memory::InMemory;

use crate::support::*;

fn index_req(name: &str, columns: &[&str], unique: bool) -> CreateIndexRequest {
    CreateIndexRequest {
        database: "postgres".into(),
        table: "accounts".into(),
        name: name.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        unique,
        ..Default::default()
    }
}

fn text(s: &str) -> Value {
    Value { kind: Some(Kind::Text(s.into())) }
}

/// A scan of accounts through `index` for `owner = value`.
fn by_owner(index: &str, value: &str, txn: u64) -> ScanRequest {
    let bound = KeyBound { values: vec![text(value)], inclusive: true };
    ScanRequest { index: index.into(), lower: Some(bound.clone()), upper: Some(bound), ..scan_req("accounts", txn) }
}

/// Ids of the accounts a scan returned, sorted.
async fn ids(db: &Arc<Database>, req: ScanRequest) -> Vec<i64> {
    let mut ids: Vec<i64> = balances(&scan(db, req).await.unwrap()).into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_index_finds_rows_by_value_through_updates_deletes_and_a_takeover() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let db = first.db().await;
    create_accounts(&db).await;
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "ann", 10), (2, "bob", 20), (3, "bob", 30)]))]).await.unwrap();
    let (def, created) = db.create_index(&index_req("accounts_owner", &["owner"], false)).await.unwrap();
    assert!(created && def.indexes.len() == 1);
    assert_eq!(ids(&db, by_owner("accounts_owner", "bob", 0)).await, vec![2, 3], "rows from before the index are in it");

    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(4, "bob", 40)]))]).await.unwrap();
    db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(2, "ann", 21)]))]).await.unwrap();
    db.commit(0, &[write("accounts", WriteKind::Delete, &account_keys(&[3]))]).await.unwrap();
    assert_eq!(ids(&db, by_owner("accounts_owner", "bob", 0)).await, vec![4]);
    assert_eq!(ids(&db, by_owner("accounts_owner", "ann", 0)).await, vec![1, 2]);

    // A transaction reads its own writes through the index, and a
    // rollback leaves no entry behind.
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Upsert, &accounts(&[(1, "bob", 11), (5, "bob", 50)]))).await.unwrap();
    db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[4]))).await.unwrap();
    assert_eq!(ids(&db, by_owner("accounts_owner", "bob", t)).await, vec![1, 5]);
    assert_eq!(ids(&db, by_owner("accounts_owner", "ann", t)).await, vec![2]);
    assert_eq!(ids(&db, by_owner("accounts_owner", "bob", 0)).await, vec![4], "others do not see it");
    db.rollback(t).unwrap();
    assert_eq!(ids(&db, by_owner("accounts_owner", "bob", 0)).await, vec![4]);

    // Predicates still apply to the rows an index names.
    let req = ScanRequest {
        predicates: vec![ebb_proto::storage::Predicate {
            column: "balance".into(),
            op: ebb_proto::storage::CompareOp::Gt as i32,
            values: vec![Value { kind: Some(Kind::Int(15)) }],
        }],
        ..by_owner("accounts_owner", "ann", 0)
    };
    assert_eq!(ids(&db, req).await, vec![2]);

    // No clean shutdown: the next owner replays the WAL.
    let second = start(store.clone(), test_config()).await;
    let db2 = second.db().await;
    assert_eq!(ids(&db2, by_owner("accounts_owner", "ann", 0)).await, vec![1, 2]);
    assert_eq!(ids(&db2, by_owner("accounts_owner", "bob", 0)).await, vec![4]);
}

#[tokio::test]
async fn a_unique_index_refuses_duplicates_but_not_nulls() {
    let (_n, db) = accounts_holding(&[(1, "ann", 10), (2, "bob", 20)]).await;
    db.create_index(&index_req("accounts_owner_key", &["owner"], true)).await.unwrap();
    let e = db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(3, "ann", 30)]))]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("23505", "duplicate key value violates unique constraint \"accounts_owner_key\""));
    // An update that keeps its value, one that frees a value and one that takes it.
    db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", 11)]))]).await.unwrap();
    db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(2, "cy", 20)]))]).await.unwrap();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(3, "bob", 30)]))]).await.unwrap();
    // ON CONFLICT DO NOTHING skips a row that would duplicate an entry.
    let (_, skipped) = db.commit(0, &[write("accounts", WriteKind::InsertOrIgnore, &accounts(&[(4, "bob", 1), (5, "dee", 1)]))]).await.unwrap();
    assert_eq!(skipped, 1);
    // NULLs never collide.
    let nulls = arrow::array::RecordBatch::try_new(
        accounts(&[]).schema(),
        vec![
            Arc::new(arrow::array::Int64Array::from(vec![6, 7])),
            Arc::new(arrow::array::StringArray::from(vec![None::<&str>, None])),
            Arc::new(arrow::array::Int64Array::from(vec![0, 0])),
        ],
    )
    .unwrap();
    db.commit(0, &[write("accounts", WriteKind::Insert, &nulls)]).await.unwrap();
    assert_eq!(ids(&db, by_owner("accounts_owner_key", "bob", 0)).await, vec![3]);

    // Two transactions take the same value: the second is refused, at
    // its write (it waits for the first's lock) or at its commit.
    let (a, _) = db.begin(None).unwrap();
    let (b, _) = db.begin(None).unwrap();
    db.write(a, &write("accounts", WriteKind::Insert, &accounts(&[(8, "eve", 0)]))).await.unwrap();
    let second = {
        let db = db.clone();
        tokio::spawn(async move {
            db.write(b, &write("accounts", WriteKind::Insert, &accounts(&[(9, "eve", 0)]))).await?;
            db.commit(b, &[]).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    db.commit(a, &[]).await.unwrap();
    let e = second.await.unwrap().unwrap_err();
    assert_eq!(e.sqlstate(), "23505", "{e}");
    assert_eq!(ids(&db, by_owner("accounts_owner_key", "eve", 0)).await, vec![8]);

    // A unique index over duplicate values is not created.
    let e = db.create_index(&index_req("accounts_balance_key", &["balance"], true)).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("23505", "could not create unique index \"accounts_balance_key\": two rows hold the same values"));
    assert_eq!(db.table("", "accounts").unwrap().indexes.len(), 1);
}

#[tokio::test]
async fn a_write_staged_before_an_index_existed_does_not_commit() {
    let (_n, db) = accounts_holding(&[(1, "ann", 10)]).await;
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(2, "bob", 20)]))).await.unwrap();
    db.create_index(&index_req("accounts_owner", &["owner"], false)).await.unwrap();
    // A later write of it to the same table cannot make up for the first.
    let e = db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(3, "cy", 30)]))).await.unwrap_err();
    assert_eq!(e.sqlstate(), "40001", "{e}");
    let e = db.commit(t, &[]).await.unwrap_err();
    assert_eq!(e.sqlstate(), "40001", "{e}");
    // Every row is reachable through the index.
    let all = ids(&db, scan_req("accounts", 0)).await;
    let mut through_index = ids(&db, by_owner("accounts_owner", "ann", 0)).await;
    through_index.extend(ids(&db, by_owner("accounts_owner", "bob", 0)).await);
    assert_eq!(all, through_index);
}

#[tokio::test]
async fn indexes_share_the_relation_namespace_and_go_with_their_columns_and_table() {
    let (_n, db) = accounts_holding(&[(1, "ann", 10)]).await;
    db.create_index(&index_req("accounts_owner", &["owner"], false)).await.unwrap();
    assert_eq!(db.create_index(&index_req("accounts", &["owner"], false)).await.unwrap_err().sqlstate(), "42P07");
    assert_eq!(db.create_index(&index_req("accounts_owner", &["balance"], false)).await.unwrap_err().sqlstate(), "42P07");
    let (_, created) = db.create_index(&CreateIndexRequest { if_not_exists: true, ..index_req("accounts_owner", &["balance"], false) }).await.unwrap();
    assert!(!created);
    let e = db.create_table("", "accounts_owner", &[col("x", ebb_proto::storage::TypeKind::Bigint)], &[], false).await.unwrap_err();
    assert_eq!(e.sqlstate(), "42P07");
    assert_eq!(db.create_index(&index_req("bad", &["nope"], false)).await.unwrap_err().sqlstate(), "42703");

    // A constraint's index is dropped as a constraint, not as an index.
    db.create_index(&CreateIndexRequest { constraint: true, ..index_req("accounts_balance_key", &["balance"], true) }).await.unwrap();
    assert_eq!(db.drop_index("", "accounts_balance_key", false, false).await.unwrap_err().sqlstate(), "2BP01");
    assert!(db.drop_index("", "accounts_balance_key", false, true).await.unwrap());
    assert!(!db.drop_index("", "accounts_balance_key", true, false).await.unwrap());
    assert_eq!(db.drop_index("", "accounts", false, false).await.unwrap_err().sqlstate(), "42809");

    // DROP COLUMN drops the indexes on it.
    let alter = ebb_proto::storage::AlterTableRequest {
        database: "postgres".into(),
        name: "accounts".into(),
        action: Some(ebb_proto::storage::alter_table_request::Action::DropColumn("owner".into())),
        ..Default::default()
    };
    db.alter_table(&alter).await.unwrap();
    assert!(db.table("", "accounts").unwrap().indexes.is_empty());
    assert_eq!(scan(&db, by_owner("accounts_owner", "ann", 0)).await.unwrap_err().sqlstate(), "42704");
    assert_eq!(db.drop_index("", "accounts_owner", false, false).await.unwrap_err().sqlstate(), "42704");
    db.create_index(&index_req("accounts_owner", &["balance"], false)).await.unwrap();
    db.drop_table("", "accounts", false, false).await.unwrap();
    db.create_table("", "accounts_owner", &[col("x", ebb_proto::storage::TypeKind::Bigint)], &[], false).await.unwrap();
}

#[tokio::test]
async fn add_primary_key_rebuilds_the_indexes_of_a_table_without_one() {
    // pg_dump adds a table's UNIQUE constraints before its primary key.
    let n = start_memory().await;
    let db = n.db().await;
    db.create_table("", "accounts", &[col("id", ebb_proto::storage::TypeKind::Bigint), col("owner", ebb_proto::storage::TypeKind::Text), col("balance", ebb_proto::storage::TypeKind::Bigint)], &[], false)
        .await
        .unwrap();
    db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(1, "ann", 10), (2, "bob", 20)]))]).await.unwrap();
    db.create_index(&CreateIndexRequest { constraint: true, ..index_req("accounts_owner_key", &["owner"], true) }).await.unwrap();
    let alter = ebb_proto::storage::AlterTableRequest {
        database: "postgres".into(),
        name: "accounts".into(),
        action: Some(ebb_proto::storage::alter_table_request::Action::AddPrimaryKey(ebb_proto::storage::PrimaryKey { columns: vec!["id".into()] })),
        ..Default::default()
    };
    db.alter_table(&alter).await.unwrap();
    assert_eq!(ids(&db, by_owner("accounts_owner_key", "bob", 0)).await, vec![2]);
    let e = db.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(3, "ann", 30)]))]).await.unwrap_err();
    assert_eq!(e.sqlstate(), "23505");
    db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(2, "cy", 21)]))]).await.unwrap();
    assert_eq!(ids(&db, by_owner("accounts_owner_key", "cy", 0)).await, vec![2]);
    assert!(ids(&db, by_owner("accounts_owner_key", "bob", 0)).await.is_empty());
    assert!(db.drop_index("", "accounts_owner_key", false, true).await.unwrap());
}
