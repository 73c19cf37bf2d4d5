//! Storage's side of the lane (`ebb_proto::lane`): the storage port's
//! connections are sorted by their first byte into gRPC's and the lane's,
//! and each lane connection is served by a task of its own, one call at a
//! time, through the same handlers as gRPC (`StorageService`).

use std::time::Duration;

use bytes::Bytes;
use ebb_proto::lane::{self, Call, FrameReader, ANSWER_ERROR, ANSWER_OK};
use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::service::StorageService;

/// How long a new connection may take to send its first byte, and a lane
/// connection its hello.
const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(10);

/// Pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How long shutdown waits for lane calls under way.
const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// Accepts the storage port's connections until `stop` turns true: lane
/// connections are served here, the rest are handed to gRPC through the
/// returned stream; [`Drained`] waits for the lane connections to close.
pub(crate) fn accept(listener: TcpListener, service: StorageService, stop: watch::Receiver<bool>) -> (impl tokio_stream::Stream<Item = std::io::Result<TcpStream>>, Drained) {
    let (grpc_tx, grpc_rx) = mpsc::channel(64);
    let (alive, drained) = mpsc::channel::<()>(1);
    tokio::spawn(accept_loop(listener, service, stop, grpc_tx, alive));
    (tokio_stream::wrappers::ReceiverStream::new(grpc_rx), Drained(drained))
}

/// Resolves once every lane connection has closed.
pub(crate) struct Drained(mpsc::Receiver<()>);

impl Drained {
    /// Waits (at most [`DRAIN_WITHIN`]) for the lane connections to finish
    /// their calls under way; call after the stop was signalled.
    pub(crate) async fn wait(mut self) {
        if tokio::time::timeout(DRAIN_WITHIN, self.0.recv()).await.is_err() {
            tracing::warn!("lane calls still under way at shutdown");
        }
    }
}

async fn accept_loop(listener: TcpListener, service: StorageService, mut stop: watch::Receiver<bool>, grpc: mpsc::Sender<std::io::Result<TcpStream>>, alive: mpsc::Sender<()>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: try again shortly rather than spin.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let (service, grpc, alive, mut stop) = (service.clone(), grpc.clone(), alive.clone(), stop.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let peeked = tokio::select! {
                peeked = tokio::time::timeout(FIRST_BYTES_WITHIN, stream.peek(&mut first)) => peeked,
                _ = stop.wait_for(|s| *s) => return,
            };
            match peeked {
                Ok(Ok(1)) if lane::is_lane(first[0]) => serve(stream, service, stop, alive).await,
                Ok(Ok(1)) => {
                    let _ = grpc.send(Ok(stream)).await;
                }
                // Closed, failed or silent before its first byte: nothing to serve.
                _ => {}
            }
        });
    }
}

/// Serves one lane connection until the compute closes it or storage stops.
async fn serve(mut stream: TcpStream, service: StorageService, mut stop: watch::Receiver<bool>, _alive: mpsc::Sender<()>) {
    match tokio::time::timeout(FIRST_BYTES_WITHIN, lane::read_hello(&mut stream)).await {
        Ok(Ok(true)) => {}
        _ => return,
    }
    if stream.write_all(lane::HELLO).await.is_err() {
        return;
    }
    if let Err(e) = ebb_common::net::notice_vanished_peer(&stream) {
        tracing::warn!(error = %e, "cannot set keepalive on a lane connection");
    }
    let metrics = service.node().metrics();
    let (connections, calls) = (metrics.lane_connections.clone(), Call::ALL.map(|c| metrics.lane_calls.with_label_values(&[c.name()])));
    connections.inc();
    let limit = service.message_limit();
    let mut frames = FrameReader::default();
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            next = frames.next(&mut stream, limit) => next,
        };
        let (kind, body) = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "lane connection closed");
                break;
            }
        };
        let Some(call) = Call::from_kind(kind) else {
            if let Ok(frame) = lane::frame(ANSWER_ERROR, &lane::error_of(&Status::invalid_argument(format!("unknown lane call {kind}")))) {
                let _ = stream.write_all(&frame).await;
            }
            break;
        };
        calls[call as usize - 1].inc();
        // The compute closes the connection when it gives up on a call
        // (statement timeout, cancel): the call is dropped then, as a
        // cancelled gRPC call is — a lock wait stops waiting, a transaction
        // the scan began is rolled back.
        let answered = tokio::select! {
            biased;
            answer = handle(&service, call, body, limit) => answer,
            peer = frames.next(&mut stream, limit) => {
                if let Ok(Some(_)) = peer {
                    tracing::debug!("lane connection sent a request before its previous one was answered");
                }
                break;
            }
        };
        let frame = match answered {
            Ok(frame) => Ok(frame),
            Err(status) => lane::frame(ANSWER_ERROR, &lane::error_of(&status)),
        };
        let written = match frame {
            Ok(frame) => stream.write_all(&frame).await,
            Err(e) => Err(e),
        };
        if written.is_err() {
            break;
        }
    }
    connections.dec();
}

/// Runs one call; its answer frame.
async fn handle(service: &StorageService, call: Call, body: Bytes, limit: usize) -> Result<Vec<u8>, Status> {
    fn decode<M: Message + Default>(body: Bytes) -> Result<M, Status> {
        M::decode(body).map_err(|e| Status::invalid_argument(format!("bad lane request: {e}")))
    }
    fn ok(msg: &impl Message) -> Result<Vec<u8>, Status> {
        lane::frame(ANSWER_OK, msg).map_err(|e| Status::resource_exhausted(e.to_string()))
    }
    match call {
        Call::Scan => ok(&service.scan_whole(decode(body)?, limit).await?),
        Call::Write => ok(&service.write_call(decode(body)?).await?),
        Call::Commit => ok(&service.commit_call(decode(body)?).await?),
        Call::Rollback => ok(&service.rollback_call(decode(body)?).await?),
        Call::RollbackToSavepoint => ok(&service.rollback_to_savepoint_call(decode(body)?).await?),
        Call::Begin => ok(&service.begin_call(decode(body)?).await?),
    }
}
