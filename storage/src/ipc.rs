//! Arrow IPC stream helpers for the payloads of the storage protocol.

use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, StorageError};

/// Encodes batches (all of one schema) as one IPC stream.
pub fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let first = batches.first().ok_or_else(|| StorageError::InvalidRequest("no batches to encode".into()))?;
    let mut w = StreamWriter::try_new(Vec::new(), first.schema_ref())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    Ok(w.into_inner()?)
}

/// Decodes a whole IPC stream.
pub fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    Ok(decode_with_schema(bytes)?.1)
}

/// Decodes a whole IPC stream, keeping its schema (a stream may have no batches).
///
/// Uses the incremental decoder, which never allocates more than the bytes it
/// was given: `StreamReader` trusts the lengths in the stream and would
/// allocate gigabytes for a few bytes of garbage.
pub fn decode_with_schema(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut decoder = StreamDecoder::new();
    let mut buf = Buffer::from(bytes);
    let mut batches = Vec::new();
    while !buf.is_empty() {
        let before = buf.len();
        if let Some(b) = decoder.decode(&mut buf)? {
            batches.push(b);
        } else if buf.len() == before {
            break;
        }
    }
    decoder.finish()?;
    let schema = decoder
        .schema()
        .ok_or_else(|| StorageError::InvalidRequest("Arrow IPC stream has no schema".into()))?;
    Ok((schema, batches))
}
