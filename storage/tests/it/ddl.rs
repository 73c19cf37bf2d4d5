//! Catalog: DDL, PostgreSQL types, constraints and defaults.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::array_value_to_string;
use ebb_proto::storage::{AlterTableRequest, ColumnDef, ColumnType, PrimaryKey, RenameColumn, TypeKind, WriteKind, alter_table_request::Action};

use crate::support::*;

fn typed(name: &str, kind: TypeKind, length: u32, scale: u32) -> ColumnDef {
    ColumnDef { name: name.into(), r#type: Some(ColumnType { kind: kind as i32, length, scale }), ..Default::default() }
}

fn text_batch(cols: &[(&str, Option<&str>)]) -> RecordBatch {
    let fields: Vec<Field> = cols.iter().map(|(n, _)| Field::new(*n, DataType::Utf8, true)).collect();
    let arrays: Vec<ArrayRef> = cols.iter().map(|(_, v)| Arc::new(StringArray::from(vec![*v])) as ArrayRef).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

#[tokio::test]
async fn every_postgres_type_round_trips_from_text() {
    let n = start_memory().await;
    let db = n.db().await;
    let cols = vec![
        typed("k", TypeKind::Integer, 0, 0),
        typed("s", TypeKind::Smallint, 0, 0),
        typed("b", TypeKind::Bigint, 0, 0),
        typed("n", TypeKind::Numeric, 10, 2),
        typed("r", TypeKind::Real, 0, 0),
        typed("d", TypeKind::Double, 0, 0),
        typed("t", TypeKind::Text, 0, 0),
        typed("v", TypeKind::Varchar, 5, 0),
        typed("c", TypeKind::Char, 4, 0),
        typed("bo", TypeKind::Boolean, 0, 0),
        typed("dt", TypeKind::Date, 0, 0),
        typed("ts", TypeKind::Timestamp, 0, 0),
        typed("tz", TypeKind::Timestamptz, 0, 0),
        typed("by", TypeKind::Bytea, 0, 0),
        typed("u", TypeKind::Uuid, 0, 0),
        typed("j", TypeKind::Json, 0, 0),
        typed("jb", TypeKind::Jsonb, 0, 0),
    ];
    db.create_table("", "everything", &cols, &["k".into()], false).await.unwrap();
    let input = [
        ("k", Some("1")),
        ("s", Some("-32768")),
        ("b", Some("9223372036854775807")),
        ("n", Some("12345.678")),
        ("r", Some("1.5")),
        ("d", Some("-2.25")),
        ("t", Some("héllo")),
        ("v", Some("abc")),
        ("c", Some("ab")),
        ("bo", Some("true")),
        ("dt", Some("2024-02-29")),
        ("ts", Some("2024-02-29 12:34:56.789")),
        ("tz", Some("2024-02-29 12:34:56+02:00")),
        ("by", None),
        ("u", Some("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")),
        ("j", Some("{\"a\": [1, 2]}")),
        ("jb", Some("{\"b\": 1,   \"a\": 2}")),
    ];
    // Strings cast into every type on the way in (storage parses text
    // input); bytea comes as binary.
    let b = text_batch(&input);
    let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut arrays: Vec<ArrayRef> = b.columns().to_vec();
    let by = fields.iter().position(|f| f.name() == "by").unwrap();
    fields[by] = Field::new("by", DataType::Binary, true);
    arrays[by] = Arc::new(arrow::array::BinaryArray::from(vec![Some(&[0u8, 255, 16][..])]));
    let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap();
    db.commit(0, &[write("everything", WriteKind::Insert, &b)]).await.unwrap();
    let out = scan(&db, scan_req("everything", 0)).await.unwrap();
    let got: Vec<String> = out.columns().iter().map(|a| array_value_to_string(a, 0).unwrap()).collect();
    assert_eq!(
        got,
        vec![
            "1",
            "-32768",
            "9223372036854775807",
            "12345.68",
            "1.5",
            "-2.25",
            "héllo",
            "abc",
            "ab  ",
            "true",
            "2024-02-29",
            "2024-02-29T12:34:56.789",
            "2024-02-29T10:34:56Z",
            "00ff10",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{\"a\": [1, 2]}",
            "{\"a\": 2, \"b\": 1}",
        ]
    );
    let types: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.metadata().get(ebb_storage::types::PG_TYPE_METADATA).cloned().unwrap_or_default())
        .collect();
    assert_eq!(types[3], "numeric(10,2)");
    assert_eq!(types[7], "character varying(5)");
    assert_eq!(types[12], "timestamp with time zone");
}

#[tokio::test]
async fn constraint_violations_have_their_sqlstates() {
    let n = start_memory().await;
    let db = n.db().await;
    let mut note = typed("note", TypeKind::Varchar, 3, 0);
    note.not_null = true;
    let cols = vec![typed("id", TypeKind::Integer, 0, 0), note, typed("amount", TypeKind::Numeric, 5, 2), typed("u", TypeKind::Uuid, 0, 0)];
    db.create_table("", "t", &cols, &["id".into()], false).await.unwrap();
    let cases = [
        (text_batch(&[("id", Some("1")), ("note", Some("toolong"))]), "22001"),
        (text_batch(&[("id", Some("1")), ("note", None)]), "23502"),
        (text_batch(&[("id", Some("1"))]), "23502"),
        (text_batch(&[("id", None), ("note", Some("a"))]), "23502"),
        (text_batch(&[("id", Some("1")), ("note", Some("a")), ("amount", Some("1000.00"))]), "22003"),
        (text_batch(&[("id", Some("1")), ("note", Some("a")), ("u", Some("not-a-uuid"))]), "22P02"),
        (text_batch(&[("id", Some("one")), ("note", Some("a"))]), "22P02"),
        (text_batch(&[("id", Some("1")), ("nope", Some("a"))]), "42703"),
    ];
    for (batch, state) in cases {
        let err = db.commit(0, &[write("t", WriteKind::Insert, &batch)]).await.unwrap_err();
        assert_eq!(err.sqlstate(), state, "{err}");
    }
    let err = db.commit(0, &[write("missing", WriteKind::Insert, &text_batch(&[("id", Some("1"))]))]).await.unwrap_err();
    assert_eq!(err.sqlstate(), "42P01");
    assert_eq!(scan(&db, scan_req("t", 0)).await.unwrap().num_rows(), 0);
}

#[tokio::test]
async fn create_drop_and_alter() {
    let n = start_memory().await;
    let db = n.db().await;
    let mut region = typed("region", TypeKind::Text, 0, 0);
    region.not_null = true;
    let cols = vec![region, typed("id", TypeKind::Integer, 0, 0), typed("qty", TypeKind::Integer, 0, 0)];
    db.create_table("", "stock", &cols, &["region".into(), "id".into()], false).await.unwrap();
    assert_eq!(db.create_table("", "stock", &cols, &[], false).await.unwrap_err().sqlstate(), "42P07");
    assert!(!db.create_table("", "stock", &cols, &[], true).await.unwrap().1, "IF NOT EXISTS");

    let schema = Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("id", DataType::Int32, false),
        Field::new("qty", DataType::Int32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["eu", "us", "eu"])),
            Arc::new(Int32Array::from(vec![2, 1, 1])),
            Arc::new(Int32Array::from(vec![20, 10, 5])),
        ],
    )
    .unwrap();
    db.commit(0, &[write("stock", WriteKind::Insert, &batch)]).await.unwrap();

    // ADD COLUMN with a default: existing rows read the default.
    let mut col = typed("status", TypeKind::Text, 0, 0);
    col.default_literal = Some("active".into());
    let alter = |action| AlterTableRequest { database: "postgres".into(), schema: String::new(), name: "stock".into(), action: Some(action) };
    db.alter_table(&alter(Action::AddColumn(col))).await.unwrap();
    // NOT NULL without a default on a non-empty table is refused.
    let mut strict = typed("strict", TypeKind::Integer, 0, 0);
    strict.not_null = true;
    assert_eq!(db.alter_table(&alter(Action::AddColumn(strict))).await.unwrap_err().sqlstate(), "23502");
    db.alter_table(&alter(Action::RenameColumn(RenameColumn { from: "qty".into(), to: "quantity".into() }))).await.unwrap();
    db.alter_table(&alter(Action::DropColumn("quantity".into()))).await.unwrap();
    assert_eq!(db.alter_table(&alter(Action::DropColumn("id".into()))).await.unwrap_err().sqlstate(), "0A000");

    let out = scan(&db, scan_req("stock", 0)).await.unwrap();
    let names: Vec<_> = out.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["region", "id", "status"]);
    // Composite key order: (eu,1), (eu,2), (us,1).
    let regions = out.column(0).as_string::<i32>();
    let ids = out.column(1).as_primitive::<arrow::datatypes::Int32Type>();
    let got: Vec<(String, i32)> = (0..3).map(|i| (regions.value(i).to_string(), ids.value(i))).collect();
    assert_eq!(got, vec![("eu".into(), 1), ("eu".into(), 2), ("us".into(), 1)]);
    assert!((0..3).all(|i| out.column(2).as_string::<i32>().value(i) == "active"));

    db.alter_table(&alter(Action::RenameTable("inventory".into()))).await.unwrap();
    assert_eq!(scan(&db, scan_req("stock", 0)).await.unwrap_err().sqlstate(), "42P01");
    assert_eq!(scan(&db, scan_req("inventory", 0)).await.unwrap().num_rows(), 3);
    assert!(db.drop_table("", "inventory", false, false).await.unwrap());
    assert!(!db.drop_table("", "inventory", true, false).await.unwrap());
    assert_eq!(db.drop_table("", "inventory", false, false).await.unwrap_err().sqlstate(), "42P01");
    // A new table of the same name starts empty.
    db.create_table("", "inventory", &[typed("id", TypeKind::Bigint, 0, 0)], &[], false).await.unwrap();
    assert_eq!(scan(&db, scan_req("inventory", 0)).await.unwrap().num_rows(), 0);
}

#[tokio::test]
async fn add_primary_key_rekeys_rows_and_checks_them() {
    let n = start_memory().await;
    let db = n.db().await;
    let cols = vec![typed("id", TypeKind::Integer, 0, 0), typed("v", TypeKind::Text, 0, 0)];
    db.create_table("", "heap", &cols, &[], false).await.unwrap();
    let rows = |ids: Vec<Option<i32>>| {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int32, true), Field::new("v", DataType::Utf8, true)]));
        let v: Vec<String> = ids.iter().map(|i| format!("v{i:?}")).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(ids)), Arc::new(StringArray::from(v))]).unwrap()
    };
    let alter = |name: &str, cols: &[&str]| AlterTableRequest {
        database: "postgres".into(),
        schema: String::new(),
        name: name.into(),
        action: Some(Action::AddPrimaryKey(PrimaryKey { columns: cols.iter().map(|c| c.to_string()).collect() })),
    };
    // Duplicates and NULLs in the key columns are refused, and nothing changes.
    db.commit(0, &[write("heap", WriteKind::Insert, &rows(vec![Some(3), Some(1), Some(3)]))]).await.unwrap();
    assert_eq!(db.alter_table(&alter("heap", &["id"])).await.unwrap_err().sqlstate(), "23505");
    db.create_table("", "holes", &cols, &[], false).await.unwrap();
    db.commit(0, &[write("holes", WriteKind::Insert, &rows(vec![Some(1), None]))]).await.unwrap();
    assert_eq!(db.alter_table(&alter("holes", &["id"])).await.unwrap_err().sqlstate(), "23502");
    assert_eq!(db.alter_table(&alter("holes", &["nope"])).await.unwrap_err().sqlstate(), "42703");

    // Unique keys: rows move to key order and the key is enforced from now on.
    db.create_table("", "accounts", &cols, &[], false).await.unwrap();
    db.commit(0, &[write("accounts", WriteKind::Insert, &rows(vec![Some(30), Some(10), Some(20)]))]).await.unwrap();
    let def = db.alter_table(&alter("accounts", &["id"])).await.unwrap();
    assert_eq!(def.primary_key, ["id"]);
    assert!(def.columns[0].not_null);
    let out = scan(&db, scan_req("accounts", 0)).await.unwrap();
    let ids = out.column(0).as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!(ids.values().to_vec(), vec![10, 20, 30]);
    assert_eq!(out.column(1).as_string::<i32>().value(0), "vSome(10)");
    let e = db.commit(0, &[write("accounts", WriteKind::Insert, &rows(vec![Some(20)]))]).await.unwrap_err();
    assert_eq!(e.sqlstate(), "23505");
    assert_eq!(db.alter_table(&alter("accounts", &["id"])).await.unwrap_err().sqlstate(), "42P16");
}

/// Requests naming the table definition they were planned with are refused
/// once the table was altered, dropped or recreated, and change nothing.
#[tokio::test]
async fn requests_planned_with_an_old_definition_are_refused() {
    use ebb_proto::storage::TableVersion;
    let n = start_memory().await;
    let db = n.db().await;
    create_accounts(&db).await;
    let def = db.table("", "accounts").unwrap().def.clone();
    let current = TableVersion { id: def.id, version: def.version };
    let expecting = |v: &TableVersion| {
        let mut w = write("accounts", WriteKind::Insert, &accounts(&[(1, "ann", 10)]));
        w.expect = Some(*v);
        w
    };
    db.commit(0, &[expecting(&current)]).await.unwrap();
    let mut req = scan_req("accounts", 0);
    req.expect = Some(current);
    assert_eq!(scan(&db, req.clone()).await.unwrap().num_rows(), 1);

    let alter = AlterTableRequest {
        database: "postgres".into(),
        schema: String::new(),
        name: "accounts".into(),
        action: Some(Action::AddColumn(typed("note", TypeKind::Text, 0, 0))),
    };
    db.alter_table(&alter).await.unwrap();
    let changed = |e: ebb_storage::StorageError| {
        assert!(matches!(e, ebb_storage::StorageError::CatalogChanged(ref t) if t == "accounts"), "{e}");
        assert_eq!(e.sqlstate(), "40001");
        let status = tonic::Status::from(e);
        assert!(status.metadata().get(ebb_proto::CATALOG_CHANGED_METADATA_KEY).is_some());
    };
    changed(scan(&db, req.clone()).await.unwrap_err());
    changed(db.commit(0, &[expecting(&current)]).await.unwrap_err());
    let altered = db.table("", "accounts").unwrap().def.clone();
    assert_eq!(altered.id, current.id);
    let altered = TableVersion { id: altered.id, version: altered.version };

    // Dropped, then recreated under the same name: a new id.
    db.drop_table("", "accounts", false, false).await.unwrap();
    req.expect = Some(altered);
    changed(scan(&db, req.clone()).await.unwrap_err());
    create_accounts(&db).await;
    changed(scan(&db, req.clone()).await.unwrap_err());
    changed(db.commit(0, &[expecting(&altered)]).await.unwrap_err());
    // Nothing was written by the refused requests; without `expect` a
    // request is taken as it always was.
    req.expect = None;
    assert_eq!(scan(&db, req).await.unwrap().num_rows(), 0);
}

#[tokio::test]
async fn check_constraints_are_kept_with_the_table_and_named_once() {
    use ebb_proto::storage::CheckDef;
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let first = start(store.clone(), test_config()).await;
    let db = first.db().await;
    let check = |name: &str, expr: &str| CheckDef { name: name.into(), expr: expr.into() };
    let cols = [typed("id", TypeKind::Bigint, 0, 0), typed("qty", TypeKind::Integer, 0, 0)];
    let (def, _) = db.create_table_with_checks("", "stock", &cols, &["id".into()], &[check("stock_qty_check", "qty >= 0")], false).await.unwrap();
    assert_eq!(def.checks.len(), 1);
    let e = db.create_table_with_checks("", "twice", &cols, &[], &[check("c", "qty > 0"), check("c", "qty < 9")], false).await.unwrap_err();
    assert_eq!(e.sqlstate(), "42710");
    let alter = |action: Action| AlterTableRequest { database: "postgres".into(), schema: String::new(), name: "stock".into(), action: Some(action) };
    assert_eq!(db.alter_table(&alter(Action::AddCheck(check("stock_qty_check", "qty < 9")))).await.unwrap_err().sqlstate(), "42710");
    db.alter_table(&alter(Action::AddCheck(check("small", "qty < 9")))).await.unwrap();
    assert_eq!(db.alter_table(&alter(Action::DropCheck("nope".into()))).await.unwrap_err().sqlstate(), "42704");
    db.alter_table(&alter(Action::DropCheck("stock_qty_check".into()))).await.unwrap();
    // The next owner reads them from the WAL.
    let second = start(store, test_config()).await;
    let kept: Vec<(String, String)> = second.db().await.table("", "stock").unwrap().def.checks.iter().map(|c| (c.name.clone(), c.expr.clone())).collect();
    assert_eq!(kept, vec![("small".to_string(), "qty < 9".to_string())]);
}
