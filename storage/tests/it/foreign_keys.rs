//! FOREIGN KEY constraints: references must exist, referenced rows cannot
//! go, concurrent transactions on both sides, and ADD FOREIGN KEY over
//! existing rows.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use ebb_proto::storage::alter_table_request::Action;
use ebb_proto::storage::{AlterTableRequest, ForeignKeyDef, TypeKind, WriteKind};
use ebb_storage::Database;

use crate::support::*;

/// `orders(id int primary key, account int)` referencing `accounts`.
async fn with_orders(db: &Database) {
    db.create_table("", "orders", &[col("id", TypeKind::Integer), col("account", TypeKind::Integer)], &["id".into()], false).await.unwrap();
}

fn orders(rows: &[(i32, Option<i32>)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, false), Field::new("account", DataType::Int32, true)]));
    let ids = Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let accounts = Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(accounts)]).unwrap()
}

async fn add_key(db: &Database) -> ebb_storage::Result<ebb_proto::storage::TableDef> {
    let orders = db.table("", "orders").unwrap();
    let accounts = db.table("", "accounts").unwrap();
    let account = orders.columns.iter().find(|c| c.name == "account").unwrap().id;
    let fk = ForeignKeyDef { name: "orders_account_fkey".into(), column_ids: vec![account], ref_table: accounts.id(), deferred: false, on_delete: String::new() };
    db.alter_table(&AlterTableRequest { database: "postgres".into(), name: "orders".into(), action: Some(Action::AddForeignKey(fk)), ..Default::default() }).await
}

#[tokio::test]
async fn references_must_exist_and_referenced_rows_stay() {
    let (_n, db) = accounts_holding(&[(1, "ann", 0), (2, "bob", 0)]).await;
    with_orders(&db).await;
    add_key(&db).await.unwrap();
    db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(10, Some(1)), (11, None)]))]).await.unwrap();
    let e = db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(12, Some(99))]))]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("23503", "insert or update on table \"orders\" violates foreign key constraint \"orders_account_fkey\""));
    let e = db.commit(0, &[write("orders", WriteKind::Upsert, &orders(&[(10, Some(99))]))]).await.unwrap_err();
    assert_eq!(e.sqlstate(), "23503");
    let e = db.commit(0, &[write("accounts", WriteKind::Delete, &account_keys(&[1]))]).await.unwrap_err();
    assert_eq!(
        (e.sqlstate(), e.to_string().as_str()),
        ("23503", "update or delete on table \"accounts\" violates foreign key constraint \"orders_account_fkey\" on table \"orders\"")
    );
    // Updating the referenced row (same key) is fine; so is deleting the
    // reference first, in the same transaction.
    db.commit(0, &[write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", 5)]))]).await.unwrap();
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("orders", WriteKind::Delete, &orders(&[(10, None)]).project(&[0]).unwrap())).await.unwrap();
    db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[1]))).await.unwrap();
    db.commit(t, &[]).await.unwrap();
    // A parent and its child inserted in one transaction.
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(3, "cy", 0)]))).await.unwrap();
    db.write(t, &write("orders", WriteKind::Insert, &orders(&[(13, Some(3))]))).await.unwrap();
    db.commit(t, &[]).await.unwrap();

    // The referenced table cannot be dropped while the key exists.
    assert_eq!(db.drop_table("", "accounts", false, false).await.unwrap_err().sqlstate(), "2BP01");
    let drop = AlterTableRequest { database: "postgres".into(), name: "orders".into(), action: Some(Action::DropForeignKey("orders_account_fkey".into())), ..Default::default() };
    db.alter_table(&drop).await.unwrap();
    db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(14, Some(99))]))]).await.unwrap();
    // Adding it back checks the rows there: 99 does not exist.
    assert_eq!(add_key(&db).await.unwrap_err().sqlstate(), "23503");
    assert!(db.table("", "orders").unwrap().foreign_keys.is_empty());
    db.commit(0, &[write("orders", WriteKind::Delete, &orders(&[(14, None)]).project(&[0]).unwrap())]).await.unwrap();
    add_key(&db).await.unwrap();
    db.drop_table("", "orders", false, false).await.unwrap();
    db.drop_table("", "accounts", false, false).await.unwrap();
}

#[tokio::test]
async fn a_reference_and_a_delete_of_its_row_take_turns() {
    let (_n, db) = accounts_holding(&[(1, "ann", 0), (2, "bob", 0)]).await;
    with_orders(&db).await;
    add_key(&db).await.unwrap();
    // A transaction references account 2; a delete of it waits, then fails.
    let (a, _) = db.begin(None).unwrap();
    db.write(a, &write("orders", WriteKind::Insert, &orders(&[(20, Some(2))]))).await.unwrap();
    let delete = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(0, &[write("accounts", WriteKind::Delete, &account_keys(&[2]))]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!delete.is_finished(), "the delete waits for the referencing transaction");
    db.commit(a, &[]).await.unwrap();
    assert_eq!(delete.await.unwrap().unwrap_err().sqlstate(), "23503");

    // Two open transactions reference account 1 at once: neither waits.
    let (x, _) = db.begin(None).unwrap();
    let (y, _) = db.begin(None).unwrap();
    db.write(x, &write("orders", WriteKind::Insert, &orders(&[(30, Some(1))]))).await.unwrap();
    let quick = tokio::time::timeout(Duration::from_secs(2), db.write(y, &write("orders", WriteKind::Insert, &orders(&[(31, Some(1))])))).await;
    assert!(quick.is_ok_and(|r| r.is_ok()), "references share the referenced row's lock");
    db.commit(x, &[]).await.unwrap();
    db.commit(y, &[]).await.unwrap();
    db.commit(0, &[write("orders", WriteKind::Delete, &orders(&[(30, None), (31, None)]).project(&[0]).unwrap())]).await.unwrap();

    // A transaction deletes account 1; a reference to it waits, then fails.
    let (b, _) = db.begin(None).unwrap();
    db.write(b, &write("accounts", WriteKind::Delete, &account_keys(&[1]))).await.unwrap();
    let reference = {
        let db = db.clone();
        tokio::spawn(async move { db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(21, Some(1))]))]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reference.is_finished(), "the reference waits for the deleting transaction");
    db.commit(b, &[]).await.unwrap();
    assert_eq!(reference.await.unwrap().unwrap_err().sqlstate(), "23503");
}

#[tokio::test]
async fn a_delete_staged_before_the_key_existed_does_not_commit() {
    let (_n, db) = accounts_holding(&[(1, "ann", 0)]).await;
    with_orders(&db).await;
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[1]))).await.unwrap();
    add_key(&db).await.unwrap();
    assert_eq!(db.commit(t, &[]).await.unwrap_err().sqlstate(), "40001");
    db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(1, Some(1))]))]).await.unwrap();
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 1);
}

#[tokio::test]
async fn a_deferred_key_is_checked_at_commit_on_the_rows_as_they_are_then() {
    let (_n, db) = accounts_holding(&[(1, "ann", 0)]).await;
    with_orders(&db).await;
    let account = db.table("", "orders").unwrap().columns.iter().find(|c| c.name == "account").unwrap().id;
    let fk = ForeignKeyDef { name: "orders_account_fkey".into(), column_ids: vec![account], ref_table: db.table("", "accounts").unwrap().id(), deferred: true, on_delete: String::new() };
    db.alter_table(&AlterTableRequest { database: "postgres".into(), name: "orders".into(), action: Some(Action::AddForeignKey(fk)), ..Default::default() }).await.unwrap();
    // A reference written before the row it references.
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("orders", WriteKind::Insert, &orders(&[(1, Some(2))]))).await.unwrap();
    db.write(t, &write("accounts", WriteKind::Insert, &accounts(&[(2, "bob", 0)]))).await.unwrap();
    db.commit(t, &[]).await.unwrap();
    // A reference that is still missing at commit.
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("orders", WriteKind::Insert, &orders(&[(2, Some(3))]))).await.unwrap();
    assert_eq!(db.commit(t, &[]).await.unwrap_err().sqlstate(), "23503");
    // A referenced row deleted, then its reference: fine at commit.
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[2]))).await.unwrap();
    db.write(t, &write("orders", WriteKind::Delete, &orders(&[(1, None)]).project(&[0]).unwrap())).await.unwrap();
    db.commit(t, &[]).await.unwrap();
    // A referenced row deleted and its reference left: refused at commit.
    db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(3, Some(1))]))]).await.unwrap();
    let (t, _) = db.begin(None).unwrap();
    db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[1]))).await.unwrap();
    assert_eq!(db.commit(t, &[]).await.unwrap_err().sqlstate(), "23503");
    assert_eq!(scan(&db, scan_req("accounts", 0)).await.unwrap().num_rows(), 1);
}

#[tokio::test]
async fn on_delete_cascade_and_set_null_write_the_referencing_rows() {
    let (_n, db) = accounts_holding(&[(1, "ann", 0), (2, "bob", 0)]).await;
    with_orders(&db).await;
    // lines(id, order_id → orders ON DELETE CASCADE, note_of → orders ON DELETE SET NULL)
    db.create_table("", "lines", &[col("id", TypeKind::Integer), col("order_id", TypeKind::Integer), col("note_of", TypeKind::Integer)], &["id".into()], false).await.unwrap();
    let key = |table: &str, name: &str, column: &str, parent: &str, on_delete: &str| {
        let id = db.table("", table).unwrap().columns.iter().find(|c| c.name == column).unwrap().id;
        let fk = ForeignKeyDef { name: name.into(), column_ids: vec![id], ref_table: db.table("", parent).unwrap().id(), deferred: false, on_delete: on_delete.into() };
        AlterTableRequest { database: "postgres".into(), name: table.into(), action: Some(Action::AddForeignKey(fk)), ..Default::default() }
    };
    db.alter_table(&key("orders", "orders_account", "account", "accounts", "c")).await.unwrap();
    db.alter_table(&key("lines", "lines_order", "order_id", "orders", "c")).await.unwrap();
    db.alter_table(&key("lines", "lines_note", "note_of", "orders", "n")).await.unwrap();
    db.create_index(&ebb_proto::storage::CreateIndexRequest { database: "postgres".into(), table: "lines".into(), name: "lines_order_idx".into(), columns: vec!["order_id".into()], ..Default::default() }).await.unwrap();
    db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(10, Some(1)), (11, Some(1)), (20, Some(2))]))]).await.unwrap();
    let lines = |rows: &[(i32, i32, Option<i32>)]| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("order_id", DataType::Int32, true),
            Field::new("note_of", DataType::Int32, true),
        ]));
        let cols: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(rows.iter().map(|r| Some(r.1)).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    };
    db.commit(0, &[write("lines", WriteKind::Insert, &lines(&[(1, 10, Some(20)), (2, 11, None), (3, 20, Some(10))]))]).await.unwrap();
    // Deleting account 1 deletes its orders 10 and 11, and their lines 1
    // and 2; line 3 (of order 20) loses its note of order 10.
    let (_, deleted) = db.commit(0, &[write("accounts", WriteKind::Delete, &account_keys(&[1]))]).await.unwrap();
    assert_eq!(deleted, 1);
    let ids = |table: &str| {
        let db = db.clone();
        let table = table.to_string();
        async move {
            let b = scan(&db, scan_req(&table, 0)).await.unwrap();
            let ids = b.column(0).as_any().downcast_ref::<Int32Array>().map(|a| a.values().to_vec()).unwrap_or_default();
            (ids, b)
        }
    };
    assert_eq!(ids("orders").await.0, vec![20]);
    let (line_ids, batch) = ids("lines").await;
    assert_eq!(line_ids, vec![3]);
    assert!(batch.column(2).is_null(0), "SET NULL");
    // The index followed the cascade: no entry names a deleted line.
    let bound = ebb_proto::storage::KeyBound { values: vec![ebb_proto::storage::Value { kind: Some(ebb_proto::storage::value::Kind::Int(10)) }], inclusive: true };
    let through = ebb_proto::storage::ScanRequest { index: "lines_order_idx".into(), lower: Some(bound.clone()), upper: Some(bound), ..scan_req("lines", 0) };
    assert_eq!(scan(&db, through).await.unwrap().num_rows(), 0);
    // SET NULL on a NOT NULL column is refused, and nothing of the delete stays.
    let alter = AlterTableRequest {
        database: "postgres".into(),
        name: "lines".into(),
        action: Some(Action::AlterColumn(ebb_proto::storage::AlterColumn { column: "note_of".into(), change: Some(ebb_proto::storage::alter_column::Change::NotNull(true)) })),
        ..Default::default()
    };
    db.commit(0, &[write("orders", WriteKind::Insert, &orders(&[(21, Some(2))]))]).await.unwrap();
    db.commit(0, &[write("lines", WriteKind::Upsert, &lines(&[(3, 21, Some(20))]))]).await.unwrap();
    db.alter_table(&alter).await.unwrap();
    let e = db.commit(0, &[write("orders", WriteKind::Delete, &orders(&[(20, None)]).project(&[0]).unwrap())]).await.unwrap_err();
    assert_eq!(e.sqlstate(), "23502", "{e}");
    assert_eq!(ids("orders").await.0, vec![20, 21]);
}

#[tokio::test]
async fn a_failed_cascade_leaves_nothing_and_cascades_stop_at_64_levels() {
    let (_n, db) = accounts_holding(&[(1, "ann", 0)]).await;
    // tree(id, parent → tree ON DELETE CASCADE, owner → accounts ON DELETE SET NULL, NOT NULL)
    db.create_table("", "tree", &[col("id", TypeKind::Integer), col("parent", TypeKind::Integer), col("owner", TypeKind::Integer)], &["id".into()], false).await.unwrap();
    let key = |name: &str, column: &str, parent: &str, on_delete: &str| {
        let id = db.table("", "tree").unwrap().columns.iter().find(|c| c.name == column).unwrap().id;
        let fk = ForeignKeyDef { name: name.into(), column_ids: vec![id], ref_table: db.table("", parent).unwrap().id(), deferred: false, on_delete: on_delete.into() };
        AlterTableRequest { database: "postgres".into(), name: "tree".into(), action: Some(Action::AddForeignKey(fk)), ..Default::default() }
    };
    db.alter_table(&key("tree_parent", "parent", "tree", "c")).await.unwrap();
    db.alter_table(&key("tree_owner", "owner", "accounts", "n")).await.unwrap();
    let rows = |rows: Vec<(i32, Option<i32>, Option<i32>)>| {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("parent", DataType::Int32, true),
            Field::new("owner", DataType::Int32, true),
        ]));
        let cols: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            Arc::new(Int32Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    };
    // A chain 1 ← 2 ← … ← 70: deleting its head would cascade 69 levels deep.
    db.commit(0, &[write("tree", WriteKind::Insert, &rows((1..=70).map(|i| (i, (i > 1).then_some(i - 1), None)).collect()))]).await.unwrap();
    let head = rows(vec![(1, None, None)]).project(&[0]).unwrap();
    let e = db.commit(0, &[write("tree", WriteKind::Delete, &head)]).await.unwrap_err();
    assert_eq!(e.sqlstate(), "54001", "{e}");
    assert_eq!(scan(&db, scan_req("tree", 0)).await.unwrap().num_rows(), 70);

    // One write whose first cascade is buffered and whose second fails
    // (SET NULL on a NOT NULL column) takes the first back: deleting
    // account 1 cascades to `cascaded`, then cannot set `nulled.account`.
    let mut not_null = col("account", TypeKind::Integer);
    not_null.not_null = true;
    db.create_table("", "cascaded", &[col("id", TypeKind::Integer), col("account", TypeKind::Integer)], &["id".into()], false).await.unwrap();
    db.create_table("", "nulled", &[col("id", TypeKind::Integer), not_null], &["id".into()], false).await.unwrap();
    for (table, action) in [("cascaded", "c"), ("nulled", "n")] {
        let id = db.table("", table).unwrap().columns.iter().find(|c| c.name == "account").unwrap().id;
        let fk = ForeignKeyDef { name: format!("{table}_fk"), column_ids: vec![id], ref_table: db.table("", "accounts").unwrap().id(), deferred: false, on_delete: action.into() };
        db.alter_table(&AlterTableRequest { database: "postgres".into(), name: table.into(), action: Some(Action::AddForeignKey(fk)), ..Default::default() }).await.unwrap();
        db.commit(0, &[write(table, WriteKind::Insert, &orders(&[(1, Some(1))]))]).await.unwrap();
    }
    let (t, _) = db.begin(None).unwrap();
    let e = db.write(t, &write("accounts", WriteKind::Delete, &account_keys(&[1]))).await.unwrap_err();
    assert_eq!(e.sqlstate(), "23502", "{e}");
    assert_eq!(scan(&db, scan_req("cascaded", t)).await.unwrap().num_rows(), 1, "the cascade of the failed write was taken back");
    db.commit(t, &[]).await.unwrap();
    assert_eq!(scan(&db, scan_req("cascaded", 0)).await.unwrap().num_rows(), 1);
}
