//! The compute's side of the lane (`ebb_proto::lane`): point reads, writes,
//! commits and rollbacks on plain TCP connections to storage instead of
//! gRPC calls on the shared HTTP/2 connection.
//!
//! A call takes an idle connection (or dials one), writes its request and
//! reads the answer on the calling session's own task, then puts the
//! connection back (one that closed while idle is dropped first). A call given up on (its future dropped: statement
//! timeout, cancel) drops its connection with it, which tells storage to
//! drop the call. When a connection fails, every idle one is dropped too
//! (storage restarted or moved: they are all dead), and the call reports
//! storage unavailable — as a call on a dead HTTP/2 connection does. A
//! storage that does not answer the lane's hello gets gRPC from then on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ebb_proto::lane::{self, ANSWER_ERROR, ANSWER_OK, Call, FrameReader};
use ebb_proto::storage::LaneError;
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::Status;

/// How long dialing storage and its hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept at most; more are closed when their call ends.
const MAX_IDLE: usize = 64;
/// Largest answer taken.
const MAX_ANSWER: usize = 256 << 20;

/// The lane connections to one storage address.
pub(crate) struct Lanes {
    /// `host:port`.
    addr: String,
    idle: Mutex<Vec<Lane>>,
    /// Storage answered the hello with something else: it has no lane.
    unsupported: AtomicBool,
}

/// One connection, between calls.
struct Lane {
    stream: TcpStream,
    frames: FrameReader,
}

impl Lanes {
    /// Lanes to `addr` (`host:port`); nothing is dialed yet.
    pub(crate) fn new(addr: String) -> Self {
        Self { addr, idle: Mutex::new(Vec::new()), unsupported: AtomicBool::new(false) }
    }

    /// Makes `call` with `req`. `None`: storage has no lane, use gRPC.
    pub(crate) async fn call<Q: Message, A: Message + Default>(&self, call: Call, req: &Q) -> Option<Result<A, Status>> {
        if self.unsupported.load(Ordering::Relaxed) {
            return None;
        }
        let mut lane = match self.take() {
            Some(lane) => lane,
            None => match self.dial().await {
                Ok(Some(lane)) => lane,
                Ok(None) => return None,
                Err(e) => return Some(Err(self.unavailable(e))),
            },
        };
        match lane.call(call, req).await {
            Ok(answer) => {
                self.put_back(lane);
                Some(answer)
            }
            Err(e) => {
                tracing::debug!(storage = %self.addr, call = call.name(), error = %e, "lane connection failed");
                self.lock().clear();
                Some(Err(self.unavailable(e)))
            }
        }
    }

    fn unavailable(&self, e: std::io::Error) -> Status {
        Status::unavailable(format!("storage at {}: {e}", self.addr))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Lane>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection that is still open (one whose storage went away
    /// while it was idle is dropped, as a closed HTTP/2 connection is
    /// noticed between calls).
    fn take(&self) -> Option<Lane> {
        loop {
            let lane = self.lock().pop()?;
            let mut probe = [0u8; 1];
            match lane.stream.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(lane),
                _ => tracing::debug!(storage = %self.addr, "idle lane connection closed"),
            }
        }
    }

    fn put_back(&self, lane: Lane) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(lane);
        }
    }

    /// A new connection; `None` if storage does not speak the lane.
    async fn dial(&self) -> std::io::Result<Option<Lane>> {
        let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no connection within {CONNECT_TIMEOUT:?}"));
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr)).await.map_err(|_| timed_out())??;
        stream.set_nodelay(true)?;
        ebb_common::net::notice_vanished_peer(&stream)?;
        stream.write_all(lane::HELLO).await?;
        if !tokio::time::timeout(CONNECT_TIMEOUT, lane::read_hello(&mut stream)).await.map_err(|_| timed_out())?? {
            if !self.unsupported.swap(true, Ordering::Relaxed) {
                tracing::warn!(storage = %self.addr, "storage does not speak the lane: point reads and commits go over gRPC");
            }
            return Ok(None);
        }
        Ok(Some(Lane { stream, frames: FrameReader::default() }))
    }
}

impl Lane {
    /// One call: `Err` if the connection failed (it is unusable then),
    /// `Ok(Err)` if storage answered with an error.
    async fn call<Q: Message, A: Message + Default>(&mut self, call: Call, req: &Q) -> std::io::Result<Result<A, Status>> {
        lane::write_frame(&mut self.stream, call as u8, req).await?;
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let (kind, body) = self.frames.next(&mut self.stream, MAX_ANSWER).await?.ok_or_else(|| bad("storage closed the lane before answering".into()))?;
        Ok(match kind {
            ANSWER_OK => Ok(A::decode(body).map_err(|e| bad(format!("bad lane answer: {e}")))?),
            ANSWER_ERROR => Err(lane::status_of(LaneError::decode(body).map_err(|e| bad(format!("bad lane error: {e}")))?)),
            other => return Err(bad(format!("unknown lane answer kind {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use ebb_proto::storage::{CommitRequest, CommitResponse};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A storage stand-in that speaks the lane: answers every commit with
    /// `commit_ts` = its txn id, or an error for txn 0; closes each
    /// connection after `calls_per_connection` calls, or on a request
    /// while `failing` is set (a storage that died mid-call). Counts
    /// connections.
    async fn fake_storage_failing(calls_per_connection: usize, failing: Arc<AtomicBool>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let failing = failing.clone();
                tokio::spawn(async move {
                    assert!(lane::read_hello(&mut s).await.expect("hello"));
                    s.write_all(lane::HELLO).await.expect("hello back");
                    let mut frames = FrameReader::default();
                    for _ in 0..calls_per_connection {
                        let Some((kind, body)) = frames.next(&mut s, 1 << 20).await.expect("frame") else { return };
                        if failing.load(Ordering::SeqCst) {
                            return;
                        }
                        assert_eq!(Call::from_kind(kind), Some(Call::Commit));
                        let req = CommitRequest::decode(body).expect("request");
                        if req.txn_id == 0 {
                            let mut status = Status::failed_precondition("no such transaction");
                            status.metadata_mut().insert(ebb_proto::SQLSTATE_METADATA_KEY, "25P01".parse().expect("ascii"));
                            lane::write_frame(&mut s, ANSWER_ERROR, &lane::error_of(&status)).await.expect("answer");
                        } else {
                            lane::write_frame(&mut s, ANSWER_OK, &CommitResponse { commit_ts: req.txn_id, rows_affected: 1 }).await.expect("answer");
                        }
                    }
                });
            }
        });
        (addr, connections)
    }

    async fn fake_storage(calls_per_connection: usize) -> (String, Arc<AtomicUsize>) {
        fake_storage_failing(calls_per_connection, Arc::new(AtomicBool::new(false))).await
    }

    fn commit(txn_id: u64) -> CommitRequest {
        CommitRequest { database: "db".into(), txn_id, writes: vec![] }
    }

    #[tokio::test]
    async fn calls_reuse_one_connection_and_errors_keep_their_metadata() {
        let (addr, connections) = fake_storage(usize::MAX).await;
        let lanes = Lanes::new(addr);
        for txn in 1..=3 {
            let answer: CommitResponse = lanes.call(Call::Commit, &commit(txn)).await.expect("lane").expect("answer");
            assert_eq!(answer.commit_ts, txn);
        }
        let error = lanes.call::<_, CommitResponse>(Call::Commit, &commit(0)).await.expect("lane").unwrap_err();
        assert_eq!(error.code(), tonic::Code::FailedPrecondition);
        assert_eq!(error.metadata().get(ebb_proto::SQLSTATE_METADATA_KEY).expect("sqlstate"), "25P01");
        // An error answer leaves the connection usable.
        let answer: CommitResponse = lanes.call(Call::Commit, &commit(9)).await.expect("lane").expect("answer");
        assert_eq!(answer.commit_ts, 9);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_before_the_next_call() {
        let (addr, connections) = fake_storage(1).await;
        let lanes = Lanes::new(addr);
        for txn in 1..=3 {
            let answer: CommitResponse = lanes.call(Call::Commit, &commit(txn)).await.expect("lane").expect("answer");
            assert_eq!(answer.commit_ts, txn);
            // Let the stand-in's close arrive.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_failing_mid_call_reports_storage_unavailable_and_drops_the_idle_ones() {
        let failing = Arc::new(AtomicBool::new(false));
        let (addr, connections) = fake_storage_failing(usize::MAX, failing.clone()).await;
        let lanes = Lanes::new(addr);
        // Two calls at once: two connections, both idle afterwards.
        let (one, two) = (commit(1), commit(2));
        let (a, b) = tokio::join!(lanes.call::<_, CommitResponse>(Call::Commit, &one), lanes.call::<_, CommitResponse>(Call::Commit, &two));
        assert_eq!((a.expect("lane").expect("answer").commit_ts, b.expect("lane").expect("answer").commit_ts), (1, 2));
        assert_eq!((connections.load(Ordering::SeqCst), lanes.lock().len()), (2, 2));
        // Storage dies with the next request unanswered.
        failing.store(true, Ordering::SeqCst);
        let error = lanes.call::<_, CommitResponse>(Call::Commit, &commit(3)).await.expect("lane").unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unavailable, "{error}");
        assert_eq!(lanes.lock().len(), 0, "the other idle connection went with it");
    }

    #[tokio::test]
    async fn a_storage_without_the_lane_sends_calls_to_grpc() {
        // What an HTTP/2-only server does with the hello: reads it, closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 24];
                let _ = s.read(&mut buf).await;
            }
        });
        let lanes = Lanes::new(addr);
        assert!(lanes.call::<_, CommitResponse>(Call::Commit, &commit(1)).await.is_none());
        assert!(lanes.unsupported.load(Ordering::Relaxed));
        assert!(lanes.call::<_, CommitResponse>(Call::Commit, &commit(1)).await.is_none(), "not dialed again");
    }

    #[tokio::test]
    async fn a_storage_that_is_down_is_unavailable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
        let error = Lanes::new(addr).call::<_, CommitResponse>(Call::Commit, &commit(1)).await.expect("not known to lack the lane").unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unavailable, "{error}");
    }
}
