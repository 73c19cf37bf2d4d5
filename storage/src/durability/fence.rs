//! Ownership epochs. A storage node that opens a database claims the next
//! epoch with a create-only write; the epoch namespaces the files it uploads
//! and the row ids it hands out. Write fencing itself happens on the WAL
//! (see `wal`).

use bytes::Bytes;

use super::objects::{CreateOutcome, Objects};
use crate::error::{Result, StorageError};

/// Claims the next epoch of a database and returns it.
pub async fn claim_epoch(objects: &Objects, writer_id: &str) -> Result<u64> {
    let mut next = objects
        .list("epoch")
        .await?
        .iter()
        .filter_map(|(n, _)| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    for _ in 0..100 {
        let body = Bytes::from(format!("{{\"writer_id\":\"{writer_id}\"}}"));
        match objects.put_if_absent(&format!("epoch/{next:020}"), body).await? {
            CreateOutcome::Created => return Ok(next),
            CreateOutcome::AlreadyExists => next += 1,
        }
    }
    Err(StorageError::Corrupt("could not claim an ownership epoch after 100 attempts".into()))
}
