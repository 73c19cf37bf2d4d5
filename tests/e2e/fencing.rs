//! Two storage processes on one database: the second takes over, the first's
//! writes fail, no committed data is lost.

use ebb_proto::storage::*;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_process_fences_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("objects").display());
    let first = StorageProc::start(&store, &dir.path().join("a"), &[], &[]).await;
    let mut a = first.client().await;
    create_t(&mut a).await;
    for i in 0..20 {
        a.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(i, i, 1)])] }).await.unwrap();
    }
    // A transaction open on the first node across the takeover.
    let txn = a.begin(BeginRequest { database: "postgres".into(), ..Default::default() }).await.unwrap().into_inner().txn_id;

    let second = StorageProc::start(&store, &dir.path().join("b"), &[], &[]).await;
    let mut b = second.client().await;
    let e = a
        .commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(100, 100, 1)])] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("owned by another storage node"), "{}", e.message());
    let e = a.commit(CommitRequest { database: "postgres".into(), txn_id: txn, writes: vec![insert(&[(101, 101, 1)])] }).await.unwrap_err();
    assert!(matches!(e.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound), "{e}");

    let rows = read_t(&mut b).await;
    assert_eq!(rows.len(), 20, "every commit of the first node is on the second");
    b.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![insert(&[(200, 200, 2)])] }).await.unwrap();
    assert_eq!(read_t(&mut b).await.len(), 21);
    assert!(first.log_text().contains("fenced"), "the first node logs that it was fenced");
}
