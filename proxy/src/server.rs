//! The accept loop and the life of one client session: first packet, wake
//! the database (holding the client up to a deadline), hand the startup to
//! the compute, then relay bytes both ways while counting queries.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tokio_rustls::TlsAcceptor;

use crate::auth::{self, Roles};
use crate::cancel::CancelKeys;
use crate::frames::FrameTracker;
use crate::load::LoadTable;
use crate::protocol::{self, FirstPacket};
use crate::{Route, RouteError, Router};

/// Settings of the proxy.
#[derive(Clone)]
pub struct ProxyConfig {
    /// How long a client is held while its database wakes.
    pub wake_timeout: Duration,
    /// TLS for clients that send SSLRequest (otherwise they are told `N`).
    pub tls: Option<TlsAcceptor>,
    /// How clients authenticate.
    pub auth: Auth,
}

/// Client authentication.
#[derive(Clone)]
pub enum Auth {
    /// Everyone is let in as whoever they say they are.
    Trust,
    /// SCRAM-SHA-256 against these roles, then the CONNECT check.
    Scram(Arc<dyn Roles>),
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self { wake_timeout: Duration::from_secs(30), tls: None, auth: Auth::Trust }
    }
}

/// The proxy: routes sessions to computes and counts their load.
pub struct Proxy {
    router: Arc<dyn Router>,
    cfg: ProxyConfig,
    load: LoadTable,
    cancels: CancelKeys,
}

/// Why a session ended early (logged; the client got an ErrorResponse
/// where the protocol allowed one).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error(transparent)]
    Frame(#[from] crate::frames::BadFrame),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Refused(String),
    #[error("the client did not finish connecting within {0:?}")]
    Timeout(Duration),
}

/// How long a client may take from connecting to being authenticated
/// (PostgreSQL's `authentication_timeout` defaults to a minute too).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a handshake step within [`HANDSHAKE_TIMEOUT`].
async fn handshake<T>(step: impl std::future::Future<Output = Result<T, SessionError>>) -> Result<T, SessionError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, step).await.map_err(|_| SessionError::Timeout(HANDSHAKE_TIMEOUT))?
}

const FATAL: &str = "FATAL";

impl Proxy {
    /// A proxy over `router`.
    pub fn new(router: Arc<dyn Router>, cfg: ProxyConfig) -> Arc<Self> {
        Arc::new(Self { router, cfg, load: LoadTable::default(), cancels: CancelKeys::default() })
    }

    /// Per-compute load counters.
    pub fn load(&self) -> &LoadTable {
        &self.load
    }

    /// Accepts clients until `shutdown` resolves.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        let _ = socket.set_nodelay(true);
                        let this = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = this.session(socket).await {
                                tracing::debug!(%peer, error = %e, "session ended early");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut shutdown => return,
            }
        }
    }

    async fn session(&self, mut client: TcpStream) -> Result<(), SessionError> {
        // On the plain socket: decline GSS encryption (libpq may ask for it
        // before SSL); an SSLRequest upgrades when TLS is configured.
        let first = handshake(async {
            loop {
                match protocol::read_first_packet(&mut client).await {
                    Ok(FirstPacket::GssEnc) => client.write_all(b"N").await?,
                    other => return Ok(other),
                }
            }
        })
        .await?;
        if let (Ok(FirstPacket::Ssl), Some(tls)) = (&first, &self.cfg.tls) {
            client.write_all(b"S").await?;
            let client = handshake(async { Ok(tls.accept(client).await?) }).await?;
            return self.negotiate(client, None).await;
        }
        self.negotiate(client, Some(first)).await
    }

    /// Reads packets up to the startup message (answering SSL and GSS
    /// requests with `N`) and authenticates, within [`HANDSHAKE_TIMEOUT`];
    /// then serves the session.
    async fn negotiate<S>(&self, mut client: S, pending: Option<Result<FirstPacket, protocol::ProtocolError>>) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let Some((startup, database)) = handshake(self.open(&mut client, pending)).await? else {
            return Ok(());
        };
        let FirstPacket::Startup { raw, .. } = &startup else { unreachable!("loop breaks on Startup only") };
        let deadline = Instant::now() + self.cfg.wake_timeout;
        let (route, compute, key) = loop {
            let (route, mut compute) = match self.connect(&database, deadline).await {
                Ok(r) => r,
                Err((sqlstate, message)) => {
                    client.write_all(&protocol::error_response(FATAL, sqlstate, &message)).await?;
                    return Err(SessionError::Refused(message));
                }
            };
            compute.write_all(raw).await?;
            let answer_within = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(5));
            match relay_startup(&mut compute, &mut client, answer_within).await {
                Ok(key) => break (route, compute, key),
                // Nothing reached the client yet: try another compute.
                Err(StartupError::Retry(why)) => {
                    tracing::info!(%database, compute = %route.compute_id, %why, "compute refused a new session; acquiring again");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(StartupError::Failed(e)) => return Err(e),
            }
        };
        if let Some((pid, secret)) = &key {
            self.cancels.insert(*pid, secret.clone(), route.addr);
        }
        self.load.session_opened(&route.compute_id, &database);
        let unanswered = AtomicU64::new(0);
        let result = self.relay(&route, client, compute, &unanswered).await;
        self.load.session_closed(&route.compute_id, unanswered.load(Ordering::Relaxed));
        if let Some((pid, secret)) = &key {
            self.cancels.remove(*pid, secret);
        }
        result
    }

    /// Reads the startup message and authenticates the client; returns it
    /// with the database asked for. `None` when the connection was a cancel
    /// request (already forwarded).
    async fn open<S>(
        &self,
        client: &mut S,
        mut pending: Option<Result<FirstPacket, protocol::ProtocolError>>,
    ) -> Result<Option<(FirstPacket, String)>, SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let startup = loop {
            let packet = match pending.take() {
                Some(p) => p,
                None => protocol::read_first_packet(client).await,
            };
            match packet {
                Ok(FirstPacket::Ssl | FirstPacket::GssEnc) => client.write_all(b"N").await?,
                Ok(FirstPacket::Cancel { pid, secret }) => {
                    self.forward_cancel(pid, &secret).await?;
                    return Ok(None);
                }
                Ok(p @ FirstPacket::Startup { .. }) => break p,
                Err(e) => {
                    let _ = client.write_all(&protocol::error_response(FATAL, "08P01", &e.to_string())).await;
                    return Err(e.into());
                }
            }
        };
        let user = startup.param("user").unwrap_or("postgres").to_string();
        let database = startup.param("database").unwrap_or(&user).to_string();
        if let Auth::Scram(roles) = &self.cfg.auth
            && let Err(e) = auth::authenticate(client, roles.as_ref(), &user, &database).await
        {
            let _ = client.write_all(&protocol::error_response(FATAL, e.sqlstate, &e.message)).await;
            return Err(SessionError::Refused(e.message));
        }
        Ok(Some((startup, database)))
    }

    /// Acquires a compute for `database` and connects to it, retrying until
    /// the wake deadline; the error is a SQLSTATE and message for the client.
    async fn connect(&self, database: &str, deadline: Instant) -> Result<(Route, TcpStream), (&'static str, String)> {
        let mut last = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(("57P03", format!(
                    "database \"{database}\" could not be woken within {:?}{}; try again",
                    self.cfg.wake_timeout,
                    if last.is_empty() { String::new() } else { format!(" (last error: {last})") }
                )));
            }
            let route = match tokio::time::timeout(left, self.router.acquire(database)).await {
                Err(_) => continue,
                Ok(Err(RouteError::UnknownDatabase(_))) => {
                    return Err(("3D000", format!("database \"{database}\" does not exist")));
                }
                Ok(Err(RouteError::Unavailable(e))) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100).min(left)).await;
                    continue;
                }
                Ok(Ok(route)) => route,
            };
            match TcpStream::connect(route.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok((route, s));
                }
                Err(e) => {
                    last = format!("compute {} at {}: {e}", route.compute_id, route.addr);
                    tracing::warn!(%database, error = %last, "compute unreachable; acquiring again");
                    tokio::time::sleep(Duration::from_millis(50).min(left)).await;
                }
            }
        }
    }

    async fn forward_cancel(&self, pid: i32, secret: &[u8]) -> Result<(), SessionError> {
        // The client expects no answer; an unknown key is ignored, as PostgreSQL does.
        if let Some(addr) = self.cancels.lookup(pid, secret) {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(&protocol::cancel_request(pid, secret)).await?;
            let _ = s.shutdown().await;
        }
        Ok(())
    }

    /// Relays until either side closes, counting queries.
    async fn relay<S>(&self, route: &Route, client: S, compute: TcpStream, unanswered: &AtomicU64) -> Result<(), SessionError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (mut client_rd, mut client_wr) = tokio::io::split(client);
        let (mut compute_rd, mut compute_wr) = compute.into_split();
        let upstream = async {
            let mut frames = FrameTracker::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = client_rd.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, SessionError>(());
                }
                frames.feed(&buf[..n], |t| {
                    if t == b'Q' || t == b'S' {
                        unanswered.fetch_add(1, Ordering::Relaxed);
                        self.load.query_sent(&route.compute_id);
                    }
                })?;
                compute_wr.write_all(&buf[..n]).await?;
            }
        };
        let downstream = async {
            let mut frames = FrameTracker::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match compute_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                frames.feed(&buf[..n], |t| {
                    if t == b'Z' {
                        let _ = unanswered.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(1)));
                        self.load.query_answered(&route.compute_id);
                    }
                })?;
                client_wr.write_all(&buf[..n]).await?;
            }
            // The compute went away under a live client: say so rather than
            // just closing, when the stream is between messages.
            if frames.at_boundary() {
                let msg = format!("terminating connection: compute {} serving this database stopped; reconnect", route.compute_id);
                let _ = client_wr.write_all(&protocol::error_response(FATAL, "57P01", &msg)).await;
            }
            Ok::<_, SessionError>(())
        };
        tokio::select! {
            r = upstream => r,
            r = downstream => r,
        }
    }
}

/// Why a compute's answer to a startup message was not relayed.
enum StartupError {
    /// The compute refused before anything reached the client (it is
    /// draining, or died): another compute may take the session.
    Retry(String),
    /// The session cannot go on.
    Failed(SessionError),
}

impl<E: Into<SessionError>> From<E> for StartupError {
    fn from(e: E) -> Self {
        Self::Failed(e.into())
    }
}

/// Relays the compute's answer to the startup message up to the first
/// ReadyForQuery (or error), returning the BackendKeyData it carried.
/// One backend message: kind, length, body.
async fn read_message<R: AsyncRead + Unpin>(compute: &mut R) -> Result<(u8, u32, Vec<u8>), StartupError> {
    let kind = compute.read_u8().await?;
    let len = compute.read_u32().await?;
    if !(4..=1 << 20).contains(&len) {
        return Err(crate::frames::BadFrame(len, kind as char).into());
    }
    let mut body = vec![0u8; len as usize - 4];
    compute.read_exact(&mut body).await?;
    Ok((kind, len, body))
}

async fn relay_startup<R, W>(compute: &mut R, client: &mut W, answer_within: Duration) -> Result<Option<(i32, Vec<u8>)>, StartupError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut key = None;
    let mut first = true;
    let deadline = tokio::time::Instant::now() + answer_within;
    loop {
        // Only while nothing reached the client may another compute be tried.
        let (kind, len, body) = match tokio::time::timeout_at(deadline, read_message(compute)).await {
            Ok(Ok(m)) => m,
            Ok(Err(StartupError::Failed(SessionError::Io(e)))) if first => {
                return Err(StartupError::Retry(format!("closed before answering: {e}")));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if first => return Err(StartupError::Retry(format!("no answer to the startup message within {answer_within:?}"))),
            Err(_) => return Err(SessionError::Refused(format!("the compute stopped answering during the startup ({answer_within:?})")).into()),
        };
        if first && kind == b'E' && protocol::error_sqlstate(&body) == Some("57P03") {
            return Err(StartupError::Retry(protocol::error_message(&body).unwrap_or_default().to_string()));
        }
        first = false;
        let mut msg = Vec::with_capacity(len as usize + 1);
        msg.push(kind);
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(&body);
        client.write_all(&msg).await?;
        match kind {
            b'K' if body.len() >= 8 => key = Some((i32::from_be_bytes([body[0], body[1], body[2], body[3]]), body[4..].to_vec())),
            b'Z' => return Ok(key),
            b'E' => return Err(SessionError::Refused("the compute refused the session".into()).into()),
            _ => {}
        }
    }
}
