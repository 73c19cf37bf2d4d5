//! The compute's HTTP/2 connection to storage, without tonic's request queue.
//!
//! tonic's `Channel` hands every request to a queue task (tower's `Buffer`)
//! that passes it on to the connection task: one more task, and one more
//! cross-thread wake-up, per storage call — on a path where a point read is
//! tens of microseconds of work, and a TPC-B transaction makes ten calls.
//! [`DirectChannel`] sends each request straight onto the shared HTTP/2
//! connection (requests of all sessions are multiplexed on it, as on a
//! `Channel`). It dials on first use and dials again on the call after the
//! connection closed (storage restarted or moved); a call that fails on a
//! dead connection fails, as a `Channel`'s does, and the session reports
//! storage as unavailable.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::body::Body;

/// How long dialing storage may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings on an idle connection, so a vanished peer is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A cheap-to-clone gRPC transport to one storage address.
#[derive(Clone)]
pub struct DirectChannel {
    shared: Arc<Shared>,
}

struct Shared {
    /// `host:port`.
    addr: String,
    /// The open connection, if any.
    sender: Mutex<Option<SendRequest<Body>>>,
    /// Held while dialing, so calls that find the connection closed at once
    /// wait for one new connection instead of each dialing its own.
    dialing: tokio::sync::Mutex<()>,
}

impl DirectChannel {
    /// A channel to `addr` (`host:port`); nothing is dialed yet.
    pub fn lazy(addr: String) -> Self {
        Self { shared: Arc::new(Shared { addr, sender: Mutex::new(None), dialing: tokio::sync::Mutex::new(()) }) }
    }
}

impl Shared {
    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<Body>, BoxError> {
        if let Some(s) = self.open() {
            return Ok(s);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(s) = self.open() {
            return Ok(s);
        }
        let sender = self.dial().await.map_err(|e| -> BoxError { Box::new(tonic::Status::unavailable(format!("storage at {}: {e}", self.addr))) })?;
        *self.lock() = Some(sender.clone());
        Ok(sender)
    }

    fn open(&self) -> Option<SendRequest<Body>> {
        self.lock().as_ref().filter(|s| !s.is_closed()).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SendRequest<Body>>> {
        self.sender.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn dial(&self) -> Result<SendRequest<Body>, BoxError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        stream.set_nodelay(true)?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await?;
        let addr = self.addr.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(storage = %addr, error = %e, "storage connection closed");
            }
        });
        Ok(sender)
    }
}

impl tower_service::Service<http::Request<Body>> for DirectChannel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's, awaited per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move {
            let mut sender = shared.sender().await?;
            sender.ready().await?;
            Ok(sender.send_request(req).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use ebb_proto::control::StatsRequest;
    use ebb_proto::control::compute_control_client::ComputeControlClient;
    use ebb_proto::control::compute_control_server::ComputeControlServer;
    use tokio::sync::oneshot;

    use super::*;
    use crate::binding::Binding;
    use crate::control::ControlService;
    use crate::storage_client::StorageClient;

    /// Serves a compute's control service on `addr` until the sender is used.
    async fn serve(addr: SocketAddr) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let storage = StorageClient::connect_lazy("http://127.0.0.1:1").expect("client");
        let service = ComputeControlServer::new(ControlService::new(Arc::new(Binding::unbound()), storage));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        (stop, tokio::spawn(async move { server.await.expect("serve") }))
    }

    #[tokio::test]
    async fn a_dead_peer_is_unavailable_and_the_next_call_dials_again() {
        // Nothing listens: storage is unavailable (08006), not an internal error.
        let nobody = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let err = StorageClient::connect_lazy(&format!("http://{nobody}")).expect("client").list_databases().await.expect_err("no storage");
        assert!(matches!(err, crate::ComputeError::StorageUnavailable(_)), "got {err:?}");
        assert_eq!(err.sqlstate(), "08006");

        let addr = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let origin: http::Uri = format!("http://{addr}/").parse().expect("uri");
        let mut client = ComputeControlClient::with_origin(DirectChannel::lazy(addr.to_string()), origin);
        let (stop, server) = serve(addr).await;
        client.stats(StatsRequest {}).await.expect("served");
        stop.send(()).expect("stop");
        server.await.expect("stopped");
        let status = client.stats(StatsRequest {}).await.expect_err("the peer is gone");
        assert!(matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Unknown), "got {status:?}");
        // A new peer on the same address: a later call dials it.
        let (_stop, _server) = serve(addr).await;
        let mut answered = false;
        for _ in 0..50 {
            if client.stats(StatsRequest {}).await.is_ok() {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered, "the channel dials the new peer");
    }
}
