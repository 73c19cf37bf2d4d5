//! The gRPC service with bad input: every request gets a clear status with
//! its SQLSTATE, and the server keeps serving.

use std::sync::Arc;
use std::time::Duration;

use ebb_proto::SQLSTATE_METADATA_KEY;
use ebb_proto::storage::storage_client::StorageClient;
use ebb_proto::storage::*;
use tonic::transport::Channel;

use crate::support::*;

async fn serve() -> (TestNode, StorageClient<Channel>) {
    serve_node(start_memory().await).await
}

fn sqlstate(s: &tonic::Status) -> String {
    s.metadata().get(SQLSTATE_METADATA_KEY).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
}

fn begin_req(isolation: Isolation) -> BeginRequest {
    BeginRequest { database: "postgres".into(), idle_timeout_ms: 0, isolation: isolation as i32 }
}

fn commit_req(w: TableWrite) -> CommitRequest {
    CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![w] }
}

#[tokio::test]
async fn bad_requests_get_clear_statuses_and_the_server_keeps_serving() {
    let (n, mut c) = serve().await;
    create_accounts(&*n.db().await).await;

    // Unknown database.
    let e = c.begin(BeginRequest { database: "nope".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!((e.code(), sqlstate(&e).as_str()), (tonic::Code::NotFound, "3D000"), "{e}");
    // Unknown table.
    let e = c.commit(commit_req(write("ghost", WriteKind::Insert, &accounts(&[(1, "a", 1)])))).await.unwrap_err();
    assert_eq!((e.code(), sqlstate(&e).as_str()), (tonic::Code::NotFound, "42P01"), "{e}");
    assert!(e.message().contains("ghost"), "{}", e.message());
    // Malformed Arrow IPC.
    let mut w = write("accounts", WriteKind::Insert, &accounts(&[(1, "a", 1)]));
    w.arrow_ipc = b"definitely not arrow".to_vec();
    let e = c.commit(commit_req(w)).await.unwrap_err();
    assert_eq!((e.code(), sqlstate(&e).as_str()), (tonic::Code::InvalidArgument, "08P01"), "{e}");
    // Truncated Arrow IPC.
    let mut w = write("accounts", WriteKind::Insert, &accounts(&[(1, "a", 1)]));
    w.arrow_ipc.truncate(w.arrow_ipc.len() / 2);
    let e = c.commit(commit_req(w)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    // Unknown write kind.
    let mut w = write("accounts", WriteKind::Insert, &accounts(&[(1, "a", 1)]));
    w.kind = 99;
    assert_eq!(c.commit(commit_req(w)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // Type mismatch: text where bigint belongs.
    let bad = {
        use arrow::array::StringArray;
        use arrow::datatypes::{DataType, Field, Schema};
        arrow::array::RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["twelve"]))],
        )
        .unwrap()
    };
    let e = c.commit(commit_req(write("accounts", WriteKind::Insert, &bad))).await.unwrap_err();
    assert_eq!((e.code(), sqlstate(&e).as_str()), (tonic::Code::InvalidArgument, "22P02"), "{e}");
    eprintln!("before oversize {:?}", std::time::Instant::now());
    // An oversize value (over the 16 MiB default).
    let big = "x".repeat(17 << 20);
    let e = c.commit(commit_req(write("accounts", WriteKind::Insert, &accounts(&[(1, &big, 1)])))).await.unwrap_err();
    assert_eq!((e.code(), sqlstate(&e).as_str()), (tonic::Code::OutOfRange, "54000"), "{e}");
    eprintln!("after oversize {:?}", std::time::Instant::now());
    // Unknown transaction, unknown column in a scan, bad predicate.
    let e = c.commit(CommitRequest { database: "postgres".into(), txn_id: 12345, writes: vec![] }).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P01");
    let mut req = scan_req("accounts", 0);
    req.projection = vec!["nope".into()];
    assert_eq!(sqlstate(&c.scan(req).await.unwrap_err()), "42703");
    let mut req = scan_req("accounts", 0);
    req.predicates = vec![Predicate { column: "id".into(), op: CompareOp::Eq as i32, values: vec![] }];
    assert_eq!(c.scan(req).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // Bad DDL.
    let e = c
        .create_table(CreateTableRequest {
            database: "postgres".into(),
            name: "t".into(),
            columns: vec![ColumnDef { name: "a".into(), r#type: None, ..Default::default() }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // Still serving: a good commit and scan work.
    c.commit(commit_req(write("accounts", WriteKind::Insert, &accounts(&[(7, "fine", 7)])))).await.unwrap();
    let mut stream = c.scan(scan_req("accounts", 0)).await.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        bytes.extend(m.arrow_ipc);
    }
    let batches = ebb_proto::arrow_ipc::decode(&bytes).unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test]
async fn databases_can_be_created_listed_and_dropped() {
    let (_n, mut c) = serve().await;
    let list = c.list_databases(ListDatabasesRequest {}).await.unwrap().into_inner();
    assert_eq!(list.databases.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["postgres"]);
    c.create_database(CreateDatabaseRequest { name: "shop".into(), if_not_exists: false }).await.unwrap();
    let e = c.create_database(CreateDatabaseRequest { name: "shop".into(), if_not_exists: false }).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P04");
    let r = c.create_database(CreateDatabaseRequest { name: "shop".into(), if_not_exists: true }).await.unwrap().into_inner();
    assert!(!r.created);
    c.create_table(CreateTableRequest {
        database: "shop".into(),
        name: "items".into(),
        columns: vec![col("id", TypeKind::Integer)],
        primary_key: vec!["id".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let tables = c.list_tables(ListTablesRequest { database: "shop".into() }).await.unwrap().into_inner();
    assert_eq!(tables.tables.len(), 1);
    assert!(c.drop_database(DropDatabaseRequest { name: "shop".into(), if_exists: false }).await.unwrap().into_inner().dropped);
    let e = c.list_tables(ListTablesRequest { database: "shop".into() }).await.unwrap_err();
    assert_eq!(sqlstate(&e), "3D000");
}

/// A scan that carries `begin` runs in a transaction it begins, whose id
/// comes back in the response metadata; a scan that fails before answering
/// leaves no transaction behind.
#[tokio::test]
async fn a_scan_can_begin_its_transaction() {
    let (n, db) = accounts_holding(&[(1, "ann", 10)]).await;
    let (_n, mut c) = serve_node(n).await;
    let begin = Some(Isolation::ReadCommitted as i32);
    let response = c.scan(ScanRequest { begin, ..read_for_update(0, 1) }).await.unwrap();
    let txn: u64 = response.metadata().get(ebb_proto::BEGUN_TXN_METADATA_KEY).expect("the begun transaction").to_str().unwrap().parse().unwrap();
    let mut stream = response.into_inner();
    while stream.message().await.unwrap().is_some() {}
    // The read locked the row in that transaction: its write and commit follow.
    let update = write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", 11)]));
    c.commit(CommitRequest { database: "postgres".into(), txn_id: txn, writes: vec![update] }).await.unwrap();
    let rows = scan(&db, scan_req("accounts", 0)).await.unwrap();
    assert_eq!(balances(&rows), [(1, 11)]);
    // Naming a transaction and beginning one is a contradiction.
    let e = c.scan(ScanRequest { begin, ..scan_req("accounts", txn) }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    // A scan of a table that does not exist fails, and the transaction it
    // began (the id before the next one) is gone.
    c.scan(ScanRequest { begin, ..scan_req("nowhere", 0) }).await.unwrap_err();
    let next = c.begin(begin_req(Isolation::Snapshot)).await.unwrap().into_inner().txn_id;
    let e = c.rollback(RollbackRequest { database: "postgres".into(), txn_id: next - 1 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    c.rollback(RollbackRequest { database: "postgres".into(), txn_id: next }).await.unwrap();
}

/// A caller that goes away while its beginning scan waits for a row lock
/// (a statement timeout) never learns the transaction's id: storage rolls
/// it back at once rather than leaving it to its idle timeout.
#[tokio::test]
async fn a_begun_transaction_whose_caller_went_away_is_rolled_back() {
    let (n, _db) = accounts_holding(&[(1, "ann", 10)]).await;
    let (_n, mut c) = serve_node(n).await;
    let holder = c.begin(begin_req(Isolation::ReadCommitted)).await.unwrap().into_inner().txn_id;
    let mut held = c.scan(read_for_update(holder, 1)).await.unwrap().into_inner();
    while held.message().await.unwrap().is_some() {}
    let waiting = c.scan(ScanRequest { begin: Some(Isolation::ReadCommitted as i32), ..read_for_update(0, 1) });
    assert!(tokio::time::timeout(Duration::from_millis(300), waiting).await.is_err(), "it waits for the row lock");
    // The waiting scan's transaction is the one before the next.
    let next = c.begin(begin_req(Isolation::ReadCommitted)).await.unwrap().into_inner().txn_id;
    // Probed without ending it: refreshing a transaction's snapshot.
    let gone = async {
        loop {
            match c.refresh_snapshot(RefreshSnapshotRequest { database: "postgres".into(), txn_id: next - 1 }).await {
                Err(e) if e.code() == tonic::Code::NotFound => break,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), gone).await.expect("rolled back while the lock is still held");
}
