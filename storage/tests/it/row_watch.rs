//! Row-change watches over gRPC: a commit is sent to every watch and
//! becomes visible only once each acknowledged it or was ended for not
//! acknowledging within its lease; a watch that says goodbye holds nothing
//! up, one that just ends holds commits until its lease has run out.

use std::sync::Arc;
use std::time::Duration;

use ebb_proto::row_keys;
use ebb_proto::storage::storage_client::StorageClient;
use ebb_proto::storage::*;
use object_store::memory::InMemory;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::support::*;

/// A node whose watches have `lease`, serving gRPC, with `accounts`.
async fn serve(lease: Duration) -> (TestNode, StorageClient<Channel>) {
    let n = start(Arc::new(InMemory::new()), ebb_storage::EngineConfig { row_watch_lease: lease, ..test_config() }).await;
    create_accounts(&*n.db().await).await;
    serve_node(n).await
}

/// An open watch: its acknowledgements and its messages.
struct Watch {
    acks: mpsc::UnboundedSender<WatchRowsRequest>,
    changes: tonic::Streaming<RowChanges>,
}

impl Watch {
    async fn open(c: &mut StorageClient<Channel>) -> (Self, RowChanges) {
        let (acks, rx) = mpsc::unbounded_channel();
        acks.send(WatchRowsRequest { database: "postgres".into(), ..Default::default() }).unwrap();
        let mut changes = c.watch_rows(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)).await.unwrap().into_inner();
        let first = changes.message().await.unwrap().expect("a first message");
        let w = Self { acks, changes };
        w.ack(first.seq);
        (w, first)
    }

    fn ack(&self, seq: u64) {
        self.acks.send(WatchRowsRequest { database: String::new(), acked: seq, bye: false }).unwrap();
    }

    /// The next message that is not a ping.
    async fn next_change(&mut self) -> RowChanges {
        loop {
            let m = self.changes.message().await.unwrap().expect("a message");
            if m.commit_ts != 0 {
                return m;
            }
        }
    }
}

fn insert(id: i64) -> CommitRequest {
    CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![write("accounts", WriteKind::Insert, &accounts(&[(id, "a", 10)]))] }
}

/// (rows, snapshot) of the latest accounts, over gRPC.
async fn read_accounts(c: &mut StorageClient<Channel>) -> (usize, u64) {
    let response = c.scan(scan_req("accounts", 0)).await.unwrap();
    let ts = response.metadata().get(ebb_proto::SNAPSHOT_TS_METADATA_KEY).expect("a snapshot").to_str().unwrap().parse().unwrap();
    let mut stream = response.into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&m.arrow_ipc);
    }
    let (_, batches) = ebb_proto::arrow_ipc::decode_with_schema(&bytes).unwrap();
    (batches.iter().map(|b| b.num_rows()).sum(), ts)
}

#[tokio::test]
async fn a_commit_is_visible_only_once_the_watch_acknowledged_it() {
    let (n, mut c) = serve(Duration::from_secs(3)).await;
    let (mut w, first) = Watch::open(&mut c).await;
    assert_eq!((first.seq, first.lease_ms), (1, 3000));
    let (_, before) = read_accounts(&mut c).await;
    assert_eq!(first.floor_ts, before, "the floor is the newest visible commit (nothing in flight)");

    let mut committer = c.clone();
    let mut commit = tokio::spawn(async move { committer.commit(insert(7)).await });
    let change = w.next_change().await;
    let table = n.db().await.table("", "accounts").unwrap().id();
    let mut key = row_keys::table_prefix(table);
    row_keys::encode_i64(7, &mut key);
    assert_eq!(change.keys, vec![key], "the row's storage key");
    assert!(!change.everything);
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut commit).await.is_err(), "the commit waits for the watch");
    assert_eq!(read_accounts(&mut c).await.0, 0, "not visible before the watch acknowledged it");

    w.ack(change.seq);
    let ts = commit.await.unwrap().expect("commit").into_inner().commit_ts;
    assert_eq!(ts, change.commit_ts);
    let (rows, snapshot) = read_accounts(&mut c).await;
    assert_eq!(rows, 1);
    assert!(snapshot >= ts);

    // A bulk write names its table instead of every key.
    let bulk: Vec<(i64, &str, i64)> = (100..5100).map(|i| (i, "b", 1)).collect();
    let mut committer = c.clone();
    let commit = tokio::spawn(async move {
        committer.commit(CommitRequest { database: "postgres".into(), txn_id: 0, writes: vec![write("accounts", WriteKind::Insert, &accounts(&bulk))] }).await
    });
    let change = w.next_change().await;
    assert_eq!((change.tables.clone(), change.keys.len()), (vec![table], 0));
    w.ack(change.seq);
    commit.await.unwrap().expect("bulk commit");

    // DDL: every cached row is to be forgotten.
    let mut ddl = c.clone();
    let create = tokio::spawn(async move {
        ddl.create_table(CreateTableRequest {
            database: "postgres".into(),
            name: "other".into(),
            columns: vec![col("k", TypeKind::Integer)],
            primary_key: vec!["k".into()],
            ..Default::default()
        })
        .await
    });
    let change = w.next_change().await;
    assert!(change.everything && change.keys.is_empty());
    w.ack(change.seq);
    create.await.unwrap().expect("create table");
}

#[tokio::test]
async fn a_watch_that_stops_acknowledging_is_ended_and_commits_go_on() {
    let (n, mut c) = serve(Duration::from_millis(600)).await;
    let (mut w, _) = Watch::open(&mut c).await;
    let mut committer = c.clone();
    let mut commit = tokio::spawn(async move { committer.commit(insert(1)).await });
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut commit).await.is_err(), "the commit waits for the watch");
    tokio::time::timeout(Duration::from_secs(5), commit).await.expect("the lease ends the wait").unwrap().expect("commit");
    assert_eq!(n.db().await.row_watches.count(), 0, "the watch was ended");
    // Its stream ends after what was sent.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.changes.message().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    });
    ended.await.expect("the watch's stream ends");
    assert_eq!(read_accounts(&mut c).await.0, 1);
}

/// A compute that keeps repeating an old acknowledgement is as silent as
/// one that says nothing: it releases no commit and its watch is ended
/// after its lease. One that acknowledges a message never sent is ended at
/// once, and commits are held for the lease of its last true
/// acknowledgement (it may still answer from its cache until then).
#[tokio::test]
async fn acknowledgements_of_nothing_new_do_not_keep_a_watch_alive() {
    let lease = Duration::from_millis(600);
    let (n, mut c) = serve(lease).await;
    let (w, first) = Watch::open(&mut c).await;
    let mut committer = c.clone();
    let started = std::time::Instant::now();
    let mut commit = tokio::spawn(async move { committer.commit(insert(4)).await });
    let repeat = tokio::spawn({
        let acks = w.acks.clone();
        async move {
            loop {
                let _ = acks.send(WatchRowsRequest { database: String::new(), acked: first.seq, bye: false });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    assert!(tokio::time::timeout(Duration::from_millis(300), &mut commit).await.is_err(), "an old ack releases nothing");
    tokio::time::timeout(Duration::from_secs(5), commit).await.expect("the lease ends the wait").unwrap().expect("commit");
    assert!(started.elapsed() >= lease - Duration::from_millis(100), "released by the lease, after {:?}", started.elapsed());
    no_watch_open(&n).await;
    repeat.abort();

    let (w, _) = Watch::open(&mut c).await;
    let opened = std::time::Instant::now();
    w.ack(u64::MAX);
    no_watch_open(&n).await;
    let mut commit = tokio::spawn(async move { c.commit(insert(5)).await });
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut commit).await.is_err(), "held for the last true ack's lease");
    tokio::time::timeout(Duration::from_secs(5), commit).await.expect("the lease runs out").unwrap().expect("commit");
    assert!(opened.elapsed() >= lease - Duration::from_millis(100), "released after {:?}", opened.elapsed());
}

/// Waits until `n`'s database has no watch open.
async fn no_watch_open(n: &TestNode) {
    let db = n.db().await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while db.row_watches.count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the watch closes");
}

#[tokio::test]
async fn a_watch_that_says_goodbye_holds_nothing_up() {
    let (n, mut c) = serve(Duration::from_secs(30)).await;
    let (w, first) = Watch::open(&mut c).await;
    assert_eq!(n.db().await.row_watches.count(), 1);
    w.acks.send(WatchRowsRequest { database: String::new(), acked: first.seq, bye: true }).unwrap();
    no_watch_open(&n).await;
    // With a 30 s lease, a commit that waited for the watch would time out here.
    tokio::time::timeout(Duration::from_secs(5), c.commit(insert(2))).await.expect("no wait").expect("commit");
}

#[tokio::test]
async fn a_watch_that_just_ends_holds_commits_until_its_lease_runs_out() {
    let (n, mut c) = serve(Duration::from_millis(1500)).await;
    let (w, _) = Watch::open(&mut c).await;
    drop(w);
    no_watch_open(&n).await;
    // Its compute may still answer from its cache for the rest of the lease.
    let mut commit = tokio::spawn(async move { c.commit(insert(3)).await });
    assert!(tokio::time::timeout(Duration::from_millis(400), &mut commit).await.is_err(), "the commit waits out the lease");
    tokio::time::timeout(Duration::from_secs(5), commit).await.expect("the lease runs out").unwrap().expect("commit");
}

#[tokio::test]
async fn a_node_that_is_fenced_ends_its_watches() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(InMemory::new());
    let cfg = || ebb_storage::EngineConfig { row_watch_lease: Duration::from_millis(400), ..test_config() };
    let first = start(store.clone(), cfg()).await;
    create_accounts(&*first.db().await).await;
    let (first, mut c) = serve_node(first).await;
    let (mut w, _) = Watch::open(&mut c).await;
    let old = first.db().await;
    let _second = start(store, cfg()).await;
    // The old owner learns it is fenced at its next write.
    let err = old.commit(0, &[write("accounts", WriteKind::Insert, &accounts(&[(2, "stale", 2)]))]).await.unwrap_err();
    assert!(matches!(err, ebb_storage::StorageError::Fenced(_)), "got {err:?}");
    // Its watch ends (the compute stops answering from rows this node sent),
    // although the compute keeps acknowledging.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match w.changes.message().await {
                Ok(Some(m)) => w.ack(m.seq),
                _ => return,
            }
        }
    });
    ended.await.expect("the fenced node ends its watch");
    assert_eq!(old.row_watches.count(), 0);
}
