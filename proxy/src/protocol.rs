//! The PostgreSQL messages the proxy itself reads or writes: the untyped
//! first packet (startup, SSL, GSS or cancel request) and ErrorResponse.

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

const SSL_REQUEST: u32 = 80877103;
const GSSENC_REQUEST: u32 = 80877104;
const CANCEL_REQUEST: u32 = 80877102;
const PROTOCOL_3: u32 = 196608;
/// Startup packets above this size are refused (PostgreSQL uses 10 000).
const MAX_STARTUP_LEN: usize = 10_000;

/// The first packet of a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstPacket {
    /// SSLRequest: answer `S` or `N`, then read the next packet.
    Ssl,
    /// GSSENCRequest: answer `N`, then read the next packet.
    GssEnc,
    /// A cancel request for the session with this key.
    Cancel { pid: i32, secret: Vec<u8> },
    /// A protocol 3 startup message; `raw` is the whole packet as received.
    Startup { params: Vec<(String, String)>, raw: Vec<u8> },
}

impl FirstPacket {
    /// A startup parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Self::Startup { params, .. } => params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// A first packet that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid startup packet length {0}")]
    BadLength(usize),
    #[error("unsupported frontend protocol {0}.{1}: ebb speaks 3.0")]
    UnsupportedProtocol(u32, u32),
    #[error("malformed startup packet: {0}")]
    Malformed(&'static str),
    #[error("connection closed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one untyped packet (length-prefixed, no type byte).
pub async fn read_first_packet<R: AsyncRead + Unpin>(r: &mut R) -> Result<FirstPacket, ProtocolError> {
    let len = r.read_u32().await? as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadLength(len));
    }
    let mut body = vec![0u8; len - 4];
    r.read_exact(&mut body).await?;
    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    match code {
        SSL_REQUEST => Ok(FirstPacket::Ssl),
        GSSENC_REQUEST => Ok(FirstPacket::GssEnc),
        CANCEL_REQUEST => {
            if body.len() < 8 {
                return Err(ProtocolError::Malformed("cancel request too short"));
            }
            let pid = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            Ok(FirstPacket::Cancel { pid, secret: body[8..].to_vec() })
        }
        PROTOCOL_3 => {
            let params = parse_params(&body[4..])?;
            let mut raw = Vec::with_capacity(len);
            raw.extend_from_slice(&(len as u32).to_be_bytes());
            raw.extend_from_slice(&body);
            Ok(FirstPacket::Startup { params, raw })
        }
        other => Err(ProtocolError::UnsupportedProtocol(other >> 16, other & 0xffff)),
    }
}

fn parse_params(mut b: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut out = Vec::new();
    loop {
        let (key, rest) = cstr(b)?;
        if key.is_empty() {
            return Ok(out);
        }
        let (value, rest) = cstr(rest)?;
        // The proxy checks one value and the compute may read another.
        if out.iter().any(|(k, _)| *k == key) {
            return Err(ProtocolError::Malformed("a startup parameter is given twice"));
        }
        out.push((key, value));
        b = rest;
    }
}

fn cstr(b: &[u8]) -> Result<(String, &[u8]), ProtocolError> {
    let end = b.iter().position(|&c| c == 0).ok_or(ProtocolError::Malformed("unterminated string"))?;
    let s = std::str::from_utf8(&b[..end]).map_err(|_| ProtocolError::Malformed("parameter is not UTF-8"))?;
    Ok((s.to_string(), &b[end + 1..]))
}

/// An ErrorResponse message.
pub fn error_response(severity: &str, sqlstate: &str, message: &str) -> BytesMut {
    let mut body = BytesMut::new();
    for (field, value) in [(b'S', severity), (b'V', severity), (b'C', sqlstate), (b'M', message)] {
        body.put_u8(field);
        body.put_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut msg = BytesMut::with_capacity(body.len() + 5);
    msg.put_u8(b'E');
    msg.put_u32(body.len() as u32 + 4);
    msg.put_slice(&body);
    msg
}

/// A field of an ErrorResponse body (`C` = SQLSTATE, `M` = message).
fn error_field(body: &[u8], field: u8) -> Option<&str> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let end = tail.iter().position(|&c| c == 0)?;
        if code == field {
            return std::str::from_utf8(&tail[..end]).ok();
        }
        rest = &tail[end + 1..];
    }
    None
}

/// The SQLSTATE of an ErrorResponse body.
pub fn error_sqlstate(body: &[u8]) -> Option<&str> {
    error_field(body, b'C')
}

/// The message of an ErrorResponse body.
pub fn error_message(body: &[u8]) -> Option<&str> {
    error_field(body, b'M')
}

/// A cancel request packet for `pid`/`secret`.
pub fn cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + secret.len());
    out.extend_from_slice(&(12 + secret.len() as u32).to_be_bytes());
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = PROTOCOL_3.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        p.extend(body);
        p
    }

    #[tokio::test]
    async fn parses_startup_ssl_and_cancel_packets() {
        let raw = startup(&[("user", "alice"), ("database", "app")]);
        let p = read_first_packet(&mut raw.as_slice()).await.unwrap();
        assert_eq!(p.param("database"), Some("app"));
        assert_eq!(p.param("user"), Some("alice"));
        assert!(matches!(&p, FirstPacket::Startup { raw: r, .. } if *r == raw));
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert_eq!(read_first_packet(&mut ssl.as_slice()).await.unwrap(), FirstPacket::Ssl);
        let cancel = cancel_request(42, &[1, 2, 3, 4]);
        assert_eq!(
            read_first_packet(&mut cancel.as_slice()).await.unwrap(),
            FirstPacket::Cancel { pid: 42, secret: vec![1, 2, 3, 4] }
        );
    }

    #[test]
    fn error_responses_round_trip() {
        let e = error_response("FATAL", "57P03", "waking up");
        assert_eq!(error_sqlstate(&e[5..]), Some("57P03"));
        assert_eq!(error_message(&e[5..]), Some("waking up"));
        assert_eq!(error_sqlstate(&[b'C', b'x']), None, "unterminated field");
    }

    #[tokio::test]
    async fn refuses_broken_packets() {
        let huge = [0x7f, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(read_first_packet(&mut huge.as_slice()).await, Err(ProtocolError::BadLength(_))));
        let v2 = [0, 0, 0, 8, 0, 2, 0, 0];
        assert!(matches!(read_first_packet(&mut v2.as_slice()).await, Err(ProtocolError::UnsupportedProtocol(2, 0))));
        let mut unterminated = startup(&[("user", "a")]);
        let n = unterminated.len();
        unterminated[n - 1] = b'x';
        unterminated[n - 2] = b'x';
        assert!(matches!(read_first_packet(&mut unterminated.as_slice()).await, Err(ProtocolError::Malformed(_))));
        let twice = startup(&[("user", "alice"), ("user", "postgres")]);
        assert!(matches!(read_first_packet(&mut twice.as_slice()).await, Err(ProtocolError::Malformed(_))));
        let short = [0, 0, 0, 8, 0];
        assert!(matches!(read_first_packet(&mut short.as_slice()).await, Err(ProtocolError::Io(_))));
    }
}
