//! The lane (`ebb_proto::lane`) on a real storage port: the same answers as
//! gRPC on the same port, calls dropped when their connection closes, and
//! bad bytes closing only their own connection.

use std::time::{Duration, Instant};

use ebb_proto::lane::{self, ANSWER_ERROR, ANSWER_OK, Call, FrameReader};
use ebb_proto::storage::*;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// A raw lane connection.
struct RawLane {
    stream: TcpStream,
    frames: FrameReader,
}

impl RawLane {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(lane::HELLO).await.expect("hello");
        assert!(lane::read_hello(&mut stream).await.expect("hello back"), "storage answers the hello");
        Self { stream, frames: FrameReader::default() }
    }

    async fn send(&mut self, call: Call, req: &impl Message) {
        lane::write_frame(&mut self.stream, call as u8, req).await.expect("request");
    }

    async fn answer<A: Message + Default>(&mut self) -> Result<A, tonic::Status> {
        let (kind, body) = self.frames.next(&mut self.stream, 64 << 20).await.expect("answer").expect("an answer, not a close");
        match kind {
            ANSWER_OK => Ok(A::decode(body).expect("response")),
            ANSWER_ERROR => Err(lane::status_of(LaneError::decode(body).expect("error"))),
            other => panic!("answer kind {other}"),
        }
    }

    async fn call<A: Message + Default>(&mut self, call: Call, req: &impl Message) -> Result<A, tonic::Status> {
        self.send(call, req).await;
        self.answer().await
    }

    /// Whether storage closed the connection (after any answers it sent).
    async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.frames.next(&mut self.stream, 64 << 20)).await.expect("closed in time") {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return true,
            }
        }
    }
}

/// Serves a node whose accounts hold `rows`: the node, its address and a gRPC client.
async fn serve_accounts(rows: &[(i64, &str, i64)]) -> (TestNode, std::net::SocketAddr, storage_client::StorageClient<tonic::transport::Channel>) {
    let (n, db) = accounts_holding(rows).await;
    drop(db);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(ebb_storage::server::serve(listener, n.node.clone(), std::future::pending()));
    let client = storage_client::StorageClient::connect(format!("http://{addr}")).await.expect("gRPC on the same port");
    (n, addr, client)
}

fn lane_scan_balances(answer: &LaneScanResponse) -> Vec<(i64, i64)> {
    let (schema, batches) = ebb_proto::arrow_ipc::decode_with_schema(&answer.arrow_ipc).expect("arrow");
    balances(&arrow::compute::concat_batches(&schema, &batches).expect("concat"))
}

fn sqlstate(s: &tonic::Status) -> Option<&str> {
    s.metadata().get(ebb_proto::SQLSTATE_METADATA_KEY).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn lane_calls_answer_as_grpc_does_on_the_same_port() {
    let (_n, addr, mut grpc) = serve_accounts(&[(1, "ann", 100), (2, "bob", 50)]).await;
    let mut lane = RawLane::open(addr).await;

    // A FOR UPDATE point read that begins its transaction, a write, a commit.
    let read = ScanRequest { begin: Some(Isolation::ReadCommitted as i32), ..read_for_update(0, 1) };
    let answer: LaneScanResponse = lane.call(Call::Scan, &read).await.expect("scan");
    assert_eq!(lane_scan_balances(&answer), vec![(1, 100)]);
    let txn = answer.begun_txn.expect("the scan began a transaction");
    assert_eq!(answer.snapshot_ts, None, "a scan in a transaction names no snapshot");
    let update = WriteRequest { database: "postgres".into(), txn_id: txn, write: Some(write("accounts", WriteKind::Upsert, &accounts(&[(1, "ann", 70)]))), ..Default::default() };
    let written: WriteResponse = lane.call(Call::Write, &update).await.expect("write");
    assert_eq!(written.rows_affected, 1);
    let committed: CommitResponse = lane.call(Call::Commit, &CommitRequest { database: "postgres".into(), txn_id: txn, writes: vec![] }).await.expect("commit");
    assert!(committed.commit_ts > 0);

    // gRPC on the same port sees it; a lane scan outside a transaction names its snapshot.
    let mut stream = grpc.scan(scan_req("accounts", 0)).await.expect("gRPC scan").into_inner();
    let mut bytes = Vec::new();
    while let Some(m) = stream.message().await.expect("chunk") {
        bytes.extend_from_slice(&m.arrow_ipc);
    }
    let via_grpc = LaneScanResponse { arrow_ipc: bytes, ..Default::default() };
    let via_lane: LaneScanResponse = lane.call(Call::Scan, &scan_req("accounts", 0)).await.expect("scan");
    assert_eq!(lane_scan_balances(&via_lane), vec![(1, 70), (2, 50)]);
    assert_eq!(lane_scan_balances(&via_grpc), lane_scan_balances(&via_lane));
    assert!(via_lane.snapshot_ts.expect("snapshot") >= committed.commit_ts);

    // Errors carry what gRPC's carry: code, message, SQLSTATE.
    let gone = CommitRequest { database: "postgres".into(), txn_id: txn, writes: vec![] };
    let lane_error = lane.call::<CommitResponse>(Call::Commit, &gone).await.unwrap_err();
    let grpc_error = grpc.commit(gone).await.unwrap_err();
    assert_eq!((lane_error.code(), lane_error.message(), sqlstate(&lane_error)), (grpc_error.code(), grpc_error.message(), sqlstate(&grpc_error)));
    assert!(sqlstate(&lane_error).is_some(), "{lane_error}");
    let nowhere = BeginRequest { database: "nope".into(), ..Default::default() };
    let lane_error = lane.call::<BeginResponse>(Call::Begin, &nowhere).await.unwrap_err();
    assert_eq!((lane_error.code(), sqlstate(&lane_error)), (tonic::Code::NotFound, Some("3D000")), "{lane_error}");

    // Begin and rollback on the lane; the connection served every call.
    let begun: BeginResponse = lane.call(Call::Begin, &BeginRequest { database: "postgres".into(), ..Default::default() }).await.expect("begin");
    let _: RollbackResponse = lane.call(Call::Rollback, &RollbackRequest { database: "postgres".into(), txn_id: begun.txn_id }).await.expect("rollback");
}

#[tokio::test]
async fn a_lane_closed_while_its_call_waits_for_a_lock_drops_the_call() {
    let (n, addr, _grpc) = serve_accounts(&[(1, "ann", 100)]).await;
    let db = n.db().await;
    let (holder, _) = db.begin(None).expect("begin");
    scan(&db, read_for_update(holder, 1)).await.expect("holder locks row 1");

    // A lane's FOR UPDATE read that begins its transaction waits for the lock…
    let mut waiter = RawLane::open(addr).await;
    waiter.send(Call::Scan, &ScanRequest { begin: Some(Isolation::ReadCommitted as i32), ..read_for_update(0, 1) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …and its compute gives up on it (a statement timeout) and closes the lane.
    drop(waiter);
    tokio::time::sleep(Duration::from_millis(100)).await;
    db.commit(holder, &[]).await.expect("holder commits");

    // Had the dropped call taken the lock, its transaction would hold it
    // until its idle timeout (30 s) and this read would time out (10 s).
    let started = Instant::now();
    let mut next = RawLane::open(addr).await;
    let read = ScanRequest { begin: Some(Isolation::ReadCommitted as i32), ..read_for_update(0, 1) };
    let answer: LaneScanResponse = next.call(Call::Scan, &read).await.expect("the lock is free");
    assert_eq!(lane_scan_balances(&answer), vec![(1, 100)]);
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?} for the lock", started.elapsed());
}

#[tokio::test]
async fn bad_bytes_on_a_lane_close_only_that_connection() {
    let (_n, addr, mut grpc) = serve_accounts(&[(1, "ann", 100)]).await;

    // An unknown call: an error answer, then the connection closes.
    let mut lane = RawLane::open(addr).await;
    lane::write_frame(&mut lane.stream, 99, &RollbackRequest::default()).await.expect("send");
    let e = lane.answer::<RollbackResponse>().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(lane.closed().await);

    // A request that does not decode: an error answer; the lane goes on.
    let mut lane = RawLane::open(addr).await;
    lane.stream.write_all(&[3, 0, 0, 0, Call::Commit as u8, 0xff, 0xff]).await.expect("send");
    let e = lane.answer::<CommitResponse>().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let begun: BeginResponse = lane.call(Call::Begin, &BeginRequest { database: "postgres".into(), ..Default::default() }).await.expect("still serving");
    assert!(begun.txn_id > 0);

    // A frame longer than storage takes, a wrong hello, a frame cut short.
    let mut lane = RawLane::open(addr).await;
    lane.stream.write_all(&[0xf0, 0xff, 0xff, 0xff, 1]).await.expect("send");
    assert!(lane.closed().await);
    let mut wrong = TcpStream::connect(addr).await.expect("connect");
    wrong.write_all(b"EBBX\x01").await.expect("send");
    assert!(!lane::read_hello(&mut wrong).await.expect("read"), "a wrong hello is not answered");
    let mut lane = RawLane::open(addr).await;
    lane.stream.write_all(&[9, 0, 0, 0, Call::Commit as u8]).await.expect("send");
    lane.stream.shutdown().await.expect("half-close");
    assert!(lane.closed().await);

    // Storage still serves lanes and gRPC.
    let mut lane = RawLane::open(addr).await;
    let answer: LaneScanResponse = lane.call(Call::Scan, &scan_req("accounts", 0)).await.expect("scan");
    assert_eq!(lane_scan_balances(&answer), vec![(1, 100)]);
    grpc.begin(BeginRequest { database: "postgres".into(), ..Default::default() }).await.expect("gRPC still serves");
}

#[tokio::test]
async fn storage_stops_promptly_with_idle_lanes_open_and_finishes_calls_under_way() {
    let (n, db) = accounts_holding(&[(1, "ann", 100)]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ebb_storage::server::serve(listener, n.node.clone(), async move {
        let _ = stopped.await;
    }));
    let mut idle = RawLane::open(addr).await;
    let _: BeginResponse = idle.call(Call::Begin, &BeginRequest { database: "postgres".into(), ..Default::default() }).await.expect("begin");
    // A call under way when the stop comes: a read waiting for a lock.
    let (holder, _) = db.begin(None).expect("begin");
    scan(&db, read_for_update(holder, 1)).await.expect("holder locks row 1");
    let mut busy = RawLane::open(addr).await;
    busy.send(Call::Scan, &ScanRequest { begin: Some(Isolation::ReadCommitted as i32), ..read_for_update(0, 1) }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    stop.send(()).expect("stop");
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.commit(holder, &[]).await.expect("holder commits");
    let answer: LaneScanResponse = busy.answer().await.expect("the call under way is answered");
    assert_eq!(lane_scan_balances(&answer), vec![(1, 100)]);
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("storage stops").expect("task").expect("served");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(idle.closed().await && busy.closed().await, "lanes close at shutdown");
}
