//! Accepting gRPC connections with Nagle's algorithm off. tonic only sets
//! `TCP_NODELAY` on listeners it binds itself; on a listener we bind (to
//! learn the port, or port 0 in tests) small responses would otherwise wait
//! for the peer's delayed ACK — about 40 ms per round trip.

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::{Stream, StreamExt};

/// The listener's connections, each with `TCP_NODELAY` set.
pub fn nodelay_incoming(listener: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    })
}
