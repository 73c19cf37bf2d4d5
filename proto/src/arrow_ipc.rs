//! Arrow IPC stream helpers: rows travel between compute and storage as
//! Arrow IPC streams (writes carry one, scans stream one back in pieces).

use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::ipc::writer::StreamWriter;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use arrow::error::ArrowError;

/// Result of the IPC helpers.
pub type Result<T> = std::result::Result<T, ArrowError>;

/// Encodes batches (all of one schema) as one IPC stream.
pub fn encode(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let first = batches.first().ok_or_else(|| ArrowError::InvalidArgumentError("no batches to encode".into()))?;
    let mut w = StreamWriter::try_new(Vec::new(), first.schema_ref())?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    w.into_inner()
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
        .ok_or_else(|| ArrowError::IpcError("Arrow IPC stream has no schema".into()))?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, RecordBatch};
    use std::sync::Arc;

    #[test]
    fn garbage_is_an_error_not_a_huge_allocation() {
        assert!(decode(b"definitely not arrow").is_err());
        let b = RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(vec![1, 2])) as _)]).unwrap();
        let mut bytes = encode(&[b]).unwrap();
        assert_eq!(decode(&bytes).unwrap()[0].num_rows(), 2);
        bytes.truncate(bytes.len() - 12);
        assert!(decode(&bytes).is_err(), "a truncated stream is refused");
    }
}
