//! The lane: the compute's request/response storage calls on plain TCP.
//!
//! A TPC-B transaction makes four storage calls (three point reads that lock
//! their row, one commit) and each went through gRPC: HPACK headers, DATA
//! frames, trailers and flow-control updates over one HTTP/2 connection that
//! a task of its own drives on each side, so every call also crossed tasks
//! (and threads) twice per side. The lane carries the same protobuf messages
//! on connections of their own, one call at a time per connection: the
//! compute's session writes its request and reads the answer on its own
//! task, storage answers on the connection's task — one write and one read
//! per call on each side.
//!
//! It shares the storage port with gRPC: a lane connection starts with
//! [`HELLO`], whose first byte no HTTP/2 client sends ([`is_lane`]), and
//! storage answers with the same bytes (a storage without the lane closes
//! the connection instead, and the compute falls back to gRPC). Then each
//! message is a frame: a little-endian `u32` length of what follows, a kind
//! byte and the protobuf encoding. A request's kind is its [`Call`]; an
//! answer's is [`ANSWER_OK`] (the call's response message;
//! `LaneScanResponse` for a scan) or [`ANSWER_ERROR`] (`LaneError`: the
//! status gRPC would have returned, metadata included). A compute that gives
//! up on a call (statement timeout, cancel) closes the connection; storage
//! then drops the call as it does a cancelled gRPC call.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};

use crate::storage::LaneError;

/// First bytes of a lane connection, from each side: `EBBL` and version 1.
pub const HELLO: &[u8; 5] = b"EBBL\x01";

/// Answer kind: the call's response message follows.
pub const ANSWER_OK: u8 = 0;
/// Answer kind: a `LaneError` follows.
pub const ANSWER_ERROR: u8 = 1;

/// Whether a connection whose first byte is `first` speaks the lane (an
/// HTTP/2 connection starts with its preface, `PRI * HTTP/2.0`).
pub fn is_lane(first: u8) -> bool {
    first == HELLO[0]
}

/// The calls the lane carries, by request kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `ScanRequest` → `LaneScanResponse` (the whole scan at once).
    Scan = 1,
    /// `WriteRequest` → `WriteResponse`.
    Write = 2,
    /// `CommitRequest` → `CommitResponse`.
    Commit = 3,
    /// `RollbackRequest` → `RollbackResponse`.
    Rollback = 4,
    /// `RollbackToSavepointRequest` → `RollbackToSavepointResponse`.
    RollbackToSavepoint = 5,
    /// `BeginRequest` → `BeginResponse`.
    Begin = 6,
}

impl Call {
    /// Every call, in kind order (`ALL[kind - 1]`).
    pub const ALL: [Call; 6] = [Self::Scan, Self::Write, Self::Commit, Self::Rollback, Self::RollbackToSavepoint, Self::Begin];

    /// The call a request's kind byte names.
    pub fn from_kind(kind: u8) -> Option<Self> {
        Self::ALL.get(usize::from(kind).checked_sub(1)?).copied()
    }

    /// Its name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scan => "scan",
            Self::Write => "write",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
            Self::RollbackToSavepoint => "rollback_to_savepoint",
            Self::Begin => "begin",
        }
    }
}

/// One frame: `kind` and `msg`, length first.
pub fn frame(kind: u8, msg: &impl Message) -> io::Result<Vec<u8>> {
    let len = 1 + msg.encoded_len();
    let len32 = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("a lane message of {len} bytes is too large")))?;
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&len32.to_le_bytes());
    buf.push(kind);
    msg.encode(&mut buf).map_err(io::Error::other)?;
    Ok(buf)
}

/// Writes one frame (see [`frame`]) in one write.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, kind: u8, msg: &impl Message) -> io::Result<()> {
    w.write_all(&frame(kind, msg)?).await
}

/// Room made for each read.
const READ_CHUNK: usize = 64 << 10;

/// Reads frames from one connection, buffering what arrives past a frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    /// The next frame as `(kind, payload)`; `None` when the peer closed the
    /// connection between frames. A frame longer than `max` bytes, or one
    /// cut short, is an error. Cancel-safe: bytes read stay buffered.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R, max: usize) -> io::Result<Option<(u8, Bytes)>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
                if len == 0 || len - 1 > max {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a lane frame of {len} bytes (at most {} allowed)", max.saturating_add(1))));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    let mut frame = self.buf.split_to(len);
                    let kind = frame.get_u8();
                    return Ok(Some((kind, frame.freeze())));
                }
                // Grown as the bytes come, not all at once on a header's word.
                self.buf.reserve((4 + len - self.buf.len()).min(READ_CHUNK));
            } else {
                self.buf.reserve(READ_CHUNK);
            }
            if r.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a lane frame"))
                };
            }
        }
    }
}

/// Reads the peer's [`HELLO`]: false if it sent something else or closed.
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<bool> {
    let mut got = [0u8; HELLO.len()];
    match r.read_exact(&mut got).await {
        Ok(_) => Ok(&got == HELLO),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// A gRPC status as the lane carries it (binary metadata is not carried;
/// ebb sets none).
pub fn error_of(status: &tonic::Status) -> LaneError {
    let metadata = status
        .metadata()
        .iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v) => Some((k.as_str().to_string(), v.to_str().ok()?.to_string())),
            KeyAndValueRef::Binary(..) => None,
        })
        .collect();
    LaneError { code: status.code() as i32, message: status.message().to_string(), metadata }
}

/// The gRPC status a `LaneError` stands for.
pub fn status_of(error: LaneError) -> tonic::Status {
    let mut metadata = MetadataMap::new();
    for (k, v) in error.metadata {
        if let (Ok(k), Ok(v)) = (MetadataKey::from_bytes(k.as_bytes()), MetadataValue::try_from(v.as_str())) {
            metadata.insert(k, v);
        }
    }
    tonic::Status::with_metadata(tonic::Code::from(error.code), error.message, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::CommitResponse;

    #[tokio::test]
    async fn frames_round_trip_whole_split_and_back_to_back() {
        let mut wire = Vec::new();
        write_frame(&mut wire, ANSWER_OK, &CommitResponse { commit_ts: 7, rows_affected: 3 }).await.unwrap();
        write_frame(&mut wire, Call::Commit as u8, &CommitResponse { commit_ts: 9, rows_affected: 0 }).await.unwrap();
        // Bytes arriving one at a time assemble into the same frames.
        let (mut tx, mut rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move { tx.write_all(&wire).await });
        let mut reader = FrameReader::default();
        let (kind, body) = reader.next(&mut rx, 1 << 10).await.unwrap().unwrap();
        assert_eq!((kind, CommitResponse::decode(body).unwrap()), (ANSWER_OK, CommitResponse { commit_ts: 7, rows_affected: 3 }));
        let (kind, body) = reader.next(&mut rx, 1 << 10).await.unwrap().unwrap();
        assert_eq!(Call::from_kind(kind), Some(Call::Commit));
        assert_eq!(CommitResponse::decode(body).unwrap().commit_ts, 9);
        writer.await.unwrap().unwrap();
        assert!(reader.next(&mut rx, 1 << 10).await.unwrap().is_none(), "a close between frames ends the stream");
    }

    #[tokio::test]
    async fn a_frame_larger_than_a_read_arrives_whole() {
        let big = crate::storage::LaneScanResponse { arrow_ipc: (0..300_000u32).map(|i| i as u8).collect(), begun_txn: Some(5), snapshot_ts: None };
        let wire = frame(ANSWER_OK, &big).unwrap();
        let (mut tx, mut rx) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move { tx.write_all(&wire).await });
        let (kind, body) = FrameReader::default().next(&mut rx, 1 << 20).await.unwrap().unwrap();
        assert_eq!((kind, crate::storage::LaneScanResponse::decode(body).unwrap()), (ANSWER_OK, big));
        writer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn oversized_empty_and_cut_frames_are_errors() {
        let mut reader = FrameReader::default();
        let mut big = &[0xff, 0xff, 0xff, 0x7f, 1][..];
        let e = reader.next(&mut big, 1 << 20).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let mut empty = &[0, 0, 0, 0][..];
        assert_eq!(FrameReader::default().next(&mut empty, 16).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut cut = &[9, 0, 0, 0, 1, 2][..];
        assert_eq!(FrameReader::default().next(&mut cut, 16).await.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn kinds_name_their_calls() {
        for call in Call::ALL {
            assert_eq!(Call::from_kind(call as u8), Some(call));
        }
        assert_eq!((Call::from_kind(0), Call::from_kind(7)), (None, None));
    }

    #[tokio::test]
    async fn hello_is_recognised_and_anything_else_is_not() {
        assert!(read_hello(&mut &HELLO[..]).await.unwrap());
        assert!(!read_hello(&mut &b"PRI * HTTP/2.0"[..]).await.unwrap());
        assert!(!read_hello(&mut &b"EB"[..]).await.unwrap(), "a close before the whole hello");
        assert!(is_lane(HELLO[0]) && !is_lane(b'P'));
    }

    #[test]
    fn statuses_keep_code_message_and_metadata() {
        let mut status = tonic::Status::aborted("could not serialize access");
        status.metadata_mut().insert(crate::SQLSTATE_METADATA_KEY, MetadataValue::from_static("40001"));
        let back = status_of(error_of(&status));
        assert_eq!(back.code(), tonic::Code::Aborted);
        assert_eq!(back.message(), "could not serialize access");
        assert_eq!(back.metadata().get(crate::SQLSTATE_METADATA_KEY).unwrap(), "40001");
    }
}
