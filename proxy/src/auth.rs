//! Client authentication in the proxy: SCRAM-SHA-256 against the roles of
//! the cluster catalog, then the database access check. Runs before a
//! compute is woken, so an unauthenticated client costs no compute.

use bytes::{BufMut, BytesMut};
use ebb_common::scram::{MECHANISM, ScramError, ServerExchange, Verifier};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A role as the proxy needs it.
#[derive(Debug, Clone, Default)]
pub struct RoleInfo {
    pub login: bool,
    pub superuser: bool,
    /// SCRAM verifier text; `None` when the role has no password.
    pub verifier: Option<String>,
    /// Databases the role may connect to (superusers: all).
    pub connect: Vec<String>,
}

/// Where the proxy looks roles up (storage's cluster catalog).
#[async_trait::async_trait]
pub trait Roles: Send + Sync + 'static {
    /// The role called `name`, if any.
    async fn role(&self, name: &str) -> Result<Option<RoleInfo>, String>;
}

/// Why a client was not let in: SQLSTATE and message for its ErrorResponse.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AuthFailure {
    pub sqlstate: &'static str,
    pub message: String,
}

impl AuthFailure {
    fn new(sqlstate: &'static str, message: impl Into<String>) -> Self {
        Self { sqlstate, message: message.into() }
    }
}

const MAX_AUTH_MESSAGE: u32 = 8 * 1024;

async fn send_auth<S: AsyncWrite + Unpin>(client: &mut S, code: i32, data: &[u8]) -> Result<(), AuthFailure> {
    let mut m = BytesMut::with_capacity(9 + data.len());
    m.put_u8(b'R');
    m.put_u32(8 + data.len() as u32);
    m.put_i32(code);
    m.put_slice(data);
    client.write_all(&m).await.map_err(|e| AuthFailure::new("08006", e.to_string()))
}

/// Reads one `p` message (SASLInitialResponse / SASLResponse) body.
async fn read_password_message<S: AsyncRead + Unpin>(client: &mut S) -> Result<Vec<u8>, AuthFailure> {
    let io = |e: std::io::Error| AuthFailure::new("08006", format!("connection lost during authentication: {e}"));
    let kind = client.read_u8().await.map_err(io)?;
    let len = client.read_u32().await.map_err(io)?;
    if kind != b'p' || !(4..=MAX_AUTH_MESSAGE).contains(&len) {
        return Err(AuthFailure::new("08P01", format!("expected a SASL response, got message {:?} of length {len}", kind as char)));
    }
    let mut body = vec![0u8; len as usize - 4];
    client.read_exact(&mut body).await.map_err(io)?;
    Ok(body)
}

/// Parses SASLInitialResponse: mechanism, then the length-prefixed data.
fn initial_response(body: &[u8]) -> Result<(&str, &[u8]), AuthFailure> {
    let bad = || AuthFailure::new("08P01", "malformed SASLInitialResponse");
    let end = body.iter().position(|&c| c == 0).ok_or_else(bad)?;
    let mechanism = std::str::from_utf8(&body[..end]).map_err(|_| bad())?;
    let rest = &body[end + 1..];
    let len = i32::from_be_bytes(rest.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
    let data = rest.get(4..).ok_or_else(bad)?;
    if len < 0 || len as usize != data.len() {
        return Err(bad());
    }
    Ok((mechanism, data))
}

/// Runs SCRAM-SHA-256 with the client as `user`, then checks that the role
/// may log in and connect to `database`.
pub async fn authenticate<S>(client: &mut S, roles: &dyn Roles, user: &str, database: &str) -> Result<(), AuthFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = || AuthFailure::new("28P01", format!("password authentication failed for user \"{user}\""));
    let role = roles.role(user).await.map_err(|e| AuthFailure::new("08006", format!("cannot look up roles: {e}")))?;
    // An unknown role or one without a password still goes through the
    // exchange (with a mock verifier), so a client cannot tell them apart.
    let verifier = role.as_ref().and_then(|r| r.verifier.as_deref()).and_then(|v| Verifier::parse(v).ok());
    let known = verifier.is_some();
    let verifier = verifier.unwrap_or_else(|| Verifier::mock(user));

    let mut offer = MECHANISM.as_bytes().to_vec();
    offer.extend_from_slice(&[0, 0]);
    send_auth(client, 10, &offer).await?;
    let body = read_password_message(client).await?;
    let (mechanism, data) = initial_response(&body)?;
    if mechanism != MECHANISM {
        return Err(AuthFailure::new("28000", format!("SASL mechanism {mechanism} is not supported; use {MECHANISM}")));
    }
    let client_first = std::str::from_utf8(data).map_err(|_| AuthFailure::new("08P01", "SCRAM message is not UTF-8"))?;
    let (exchange, server_first) = ServerExchange::start(verifier, client_first).map_err(|e| match e {
        ScramError::ChannelBinding => AuthFailure::new("28000", "SCRAM channel binding is not supported; connect with channel_binding=disable or prefer"),
        other => AuthFailure::new("08P01", other.to_string()),
    })?;
    send_auth(client, 11, server_first.as_bytes()).await?;
    let body = read_password_message(client).await?;
    let client_final = std::str::from_utf8(&body).map_err(|_| AuthFailure::new("08P01", "SCRAM message is not UTF-8"))?;
    let server_final = match exchange.finish(client_final) {
        Ok(f) if known => f,
        Ok(_) | Err(ScramError::WrongPassword) => return Err(failed()),
        Err(e) => return Err(AuthFailure::new("08P01", e.to_string())),
    };
    send_auth(client, 12, server_final.as_bytes()).await?;
    let role = role.ok_or_else(failed)?;
    if !role.login {
        return Err(AuthFailure::new("28000", format!("role \"{user}\" is not permitted to log in")));
    }
    if !role.superuser && !role.connect.iter().any(|d| d == database) {
        return Err(AuthFailure::new(
            "42501",
            format!("permission denied for database \"{database}\": role \"{user}\" has no CONNECT privilege (GRANT CONNECT ON DATABASE {database} TO {user})"),
        ));
    }
    Ok(())
}
