//! TCP settings of ebb's own connections.
//!
//! Accepting gRPC connections with Nagle's algorithm off: tonic only sets
//! `TCP_NODELAY` on listeners it binds itself; on a listener we bind (to
//! learn the port, or port 0 in tests) small responses would otherwise wait
//! for the peer's delayed ACK — about 40 ms per round trip.
//!
//! Noticing a vanished peer on a plain connection (the storage lane's):
//! HTTP/2 connections ping, a plain one relies on TCP keepalive probes while
//! it waits for an answer, and on a user timeout while what it sent goes
//! unacknowledged.

use std::time::Duration;

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

/// Idle time before the first keepalive probe, and between probes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes after which the peer is gone.
const KEEPALIVE_PROBES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection fails.
const USER_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns on keepalive probes and the user timeout on `stream`, so that a
/// peer that vanished without closing (a lost node, a partition) fails the
/// connection within about half a minute instead of never.
pub fn notice_vanished_peer(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&keepalive)?;
    socket.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vanished_peer_is_noticed_by_keepalive_and_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        notice_vanished_peer(&stream).expect("set");
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().expect("keepalive"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().expect("probes"), KEEPALIVE_PROBES);
        assert_eq!(socket.tcp_user_timeout().expect("user timeout"), Some(USER_TIMEOUT));
    }
}
