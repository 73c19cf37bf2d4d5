//! Sequences: values in order, bounds, setval, durability across a
//! takeover, and that only nextval/setval change them.

use std::sync::Arc;

use arrow::array::AsArray;

use ebb_proto::storage::alter_table_request::Action;
use ebb_proto::storage::{AlterTableRequest, PrimaryKey, SequenceOptions, TypeKind, WriteKind};
use ebb_storage::engine::sequences::LOG_AHEAD;
use object_store::memory::InMemory;

use crate::support::*;

fn options(start: i64, increment: i64, min: i64, max: i64, cycle: bool) -> SequenceOptions {
    SequenceOptions { start, increment, min_value: min, max_value: max, cycle, cache: 1, ..Default::default() }
}

#[tokio::test]
async fn values_follow_each_other_and_stop_or_cycle_at_the_bound() {
    let n = start_memory().await;
    let db = n.db().await;
    db.create_sequence("", "s", &options(1, 1, 1, i64::MAX, false), false).await.unwrap();
    assert_eq!(db.next_values("", "s", 1).await.unwrap(), vec![1]);
    assert_eq!(db.next_values("", "s", 3).await.unwrap(), vec![2, 3, 4]);

    db.create_sequence("", "down", &options(3, -2, -1, 3, false), false).await.unwrap();
    assert_eq!(db.next_values("", "down", 3).await.unwrap(), vec![3, 1, -1]);
    let e = db.next_values("", "down", 1).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("2200H", "nextval: reached minimum value of sequence \"down\" (-1)"));

    db.create_sequence("", "ring", &options(2, 1, 1, 3, true), false).await.unwrap();
    assert_eq!(db.next_values("", "ring", 5).await.unwrap(), vec![2, 3, 1, 2, 3]);

    db.set_value("", "s", 100, true).await.unwrap();
    assert_eq!(db.next_values("", "s", 1).await.unwrap(), vec![101]);
    db.set_value("", "s", 7, false).await.unwrap();
    assert_eq!(db.next_values("", "s", 2).await.unwrap(), vec![7, 8]);
    assert_eq!(db.set_value("", "ring", 4, true).await.unwrap_err().sqlstate(), "22003");

    let e = db.create_sequence("", "bad", &options(0, 1, 1, 10, false), false).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("22023", "START value (0) cannot be less than MINVALUE (1)"));
    assert_eq!(db.create_sequence("", "bad", &options(1, 0, 1, 10, false), false).await.unwrap_err().sqlstate(), "22023");
    assert_eq!(db.create_sequence("", "s", &options(1, 1, 1, 10, false), false).await.unwrap_err().sqlstate(), "42P07");
    assert_eq!(db.next_values("", "s", u64::MAX).await.unwrap_err().sqlstate(), "08P01", "a bad count is refused, not looped over");
    assert_eq!(db.next_values("", "s", 1).await.unwrap(), vec![9], "and takes nothing");
}

#[tokio::test]
async fn no_value_is_handed_out_twice_across_a_takeover() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let db = first.db().await;
    db.create_sequence("", "ids", &options(1, 1, 1, i64::MAX, false), false).await.unwrap();
    let mut taken = db.next_values("", "ids", 5).await.unwrap();
    let commits = first.node.metrics().commits.get();
    taken.extend(db.next_values("", "ids", 10).await.unwrap());
    assert_eq!(first.node.metrics().commits.get(), commits, "values already covered by the durable row need no commit");
    // No clean shutdown: the second node knows what the object store holds.
    let second = start(store.clone(), test_config()).await;
    let after = second.db().await.next_values("", "ids", 1).await.unwrap()[0];
    assert!(after > *taken.last().unwrap(), "{after} was handed out before the takeover");
    assert!(after <= 5 + LOG_AHEAD as i64 + 1, "at most {LOG_AHEAD} values skipped, got {after}");
    drop(first);
}

/// ALTER SEQUENCE's options: values go on from the position with the new
/// increment and bounds (also after a takeover, never repeating one); a
/// position outside the new bounds, or bad options, are refused and change
/// nothing; the owner is kept.
#[tokio::test]
async fn altered_options_take_effect_from_the_current_position() {
    use ebb_proto::storage::SequenceChange;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let db = first.db().await;
    db.create_sequence("", "ids", &options(1, 1, 1, i64::MAX, false), false).await.unwrap();
    assert_eq!(db.next_values("", "ids", 3).await.unwrap(), vec![1, 2, 3]);
    let alter = |options: SequenceOptions, restart: Option<i64>| AlterTableRequest {
        database: "postgres".into(),
        schema: String::new(),
        name: "ids".into(),
        action: Some(Action::SetSequenceOptions(SequenceChange { options: Some(options), restart })),
    };
    let def = db.alter_table(&alter(options(1, 10, 1, 100, false), None)).await.unwrap();
    assert_eq!(def.sequence.as_ref().map(|o| o.increment), Some(10));
    assert_eq!(db.next_values("", "ids", 3).await.unwrap(), vec![13, 23, 33]);

    // The position (33) must lie within the bounds; nothing changes otherwise.
    let e = db.alter_table(&alter(options(50, 1, 50, 100, false), None)).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("22023", "the current value (33) cannot be less than MINVALUE (50)"));
    assert_eq!(db.alter_table(&alter(options(1, 0, 1, 100, false), None)).await.unwrap_err().sqlstate(), "22023");
    assert_eq!(db.next_values("", "ids", 1).await.unwrap(), vec![43]);

    // With RESTART, the restart value is checked and taken next.
    assert_eq!(db.alter_table(&alter(options(50, 1, 50, 100, true), Some(20))).await.unwrap_err().sqlstate(), "22023");
    db.alter_table(&alter(options(50, 25, 50, 100, true), Some(90))).await.unwrap();
    assert_eq!(db.next_values("", "ids", 3).await.unwrap(), vec![90, 50, 75]);

    // After a takeover: on from the durable record with the new options,
    // never repeating a value.
    db.alter_table(&alter(options(50, 25, 50, 10_000, false), None)).await.unwrap();
    assert_eq!(db.next_values("", "ids", 2).await.unwrap(), vec![100, 125]);
    let second = start(store.clone(), test_config()).await;
    let db2 = second.db().await;
    let after = db2.next_values("", "ids", 1).await.unwrap()[0];
    assert!(after > 125 && after <= 125 + 25 * (LOG_AHEAD as i64 + 1) && (after - 50) % 25 == 0, "{after}");
    let seq = db2.tables().into_iter().find(|t| t.def.name == "ids").and_then(|t| t.def.sequence.clone()).expect("the sequence");
    assert_eq!((seq.increment, seq.min_value, seq.max_value, seq.cycle), (25, 50, 10_000, false));
    drop(first);
}

#[tokio::test]
async fn a_sequence_is_changed_only_by_nextval_and_setval_and_dropped_with_its_table() {
    let n = start_memory().await;
    let db = n.db().await;
    let (table, _) = db.create_table("", "items", &[col("id", TypeKind::Bigint)], &["id".into()], false).await.unwrap();
    let owned = SequenceOptions { owned_by_table: table.id, owned_by_column: "id".into(), ..options(1, 1, 1, i64::MAX, false) };
    db.create_sequence("", "items_id_seq", &owned, false).await.unwrap();
    db.next_values("", "items_id_seq", 2).await.unwrap();

    let rows = scan(&db, scan_req("items_id_seq", 0)).await.unwrap();
    assert_eq!(rows.num_rows(), 1, "one row: last_value, log_cnt, is_called");
    assert_eq!(rows.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["last_value", "log_cnt", "is_called"]);
    let last_value = rows.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
    assert_eq!(last_value, 2 + LOG_AHEAD as i64, "the row shows the position recorded 32 values ahead");

    let e = db.commit(0, &[write("items_id_seq", WriteKind::Upsert, &rows)]).await.unwrap_err();
    assert_eq!((e.sqlstate(), e.to_string().as_str()), ("42809", "cannot change sequence \"items_id_seq\""));
    assert_eq!(db.next_values("", "items", 1).await.unwrap_err().sqlstate(), "42809");
    assert_eq!(db.drop_table("", "items_id_seq", false, false).await.unwrap_err().sqlstate(), "42809");
    assert_eq!(db.drop_table("", "items", false, true).await.unwrap_err().sqlstate(), "42809");

    assert!(db.drop_table("", "items", false, false).await.unwrap());
    assert_eq!(db.next_values("", "items_id_seq", 1).await.unwrap_err().sqlstate(), "42P01", "dropped with its table");

    // A table re-keyed by ADD PRIMARY KEY gets a new id; its sequences follow.
    let (heap, _) = db.create_table("", "heap", &[col("id", TypeKind::Bigint)], &[], false).await.unwrap();
    let owned = SequenceOptions { owned_by_table: heap.id, ..options(1, 1, 1, i64::MAX, false) };
    db.create_sequence("", "heap_id_seq", &owned, false).await.unwrap();
    let req = AlterTableRequest {
        schema: String::new(),
        name: "heap".into(),
        action: Some(Action::AddPrimaryKey(PrimaryKey { columns: vec!["id".into()] })),
        ..Default::default()
    };
    assert_ne!(db.alter_table(&req).await.unwrap().id, heap.id);
    assert!(db.drop_table("", "heap", false, false).await.unwrap());
    assert_eq!(db.next_values("", "heap_id_seq", 1).await.unwrap_err().sqlstate(), "42P01", "followed the table to its new id");
}
