//! The cluster's database registry: `cluster/databases/<name>` objects that
//! map a database name to the id under which its data is stored.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::objects::{CreateOutcome, Objects};
use crate::error::{Result, StorageError};

/// A registry entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseEntry {
    pub name: String,
    pub id: String,
}

fn key(name: &str) -> String {
    format!("cluster/databases/{}", hex(name.as_bytes()))
}

/// Hex of `b`: object keys stand for names that may hold any character.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// Registers a new database; `Ok(false)` if the name is taken.
pub async fn register(objects: &Objects, entry: &DatabaseEntry) -> Result<bool> {
    let body = Bytes::from(serde_json::to_vec(entry).map_err(|e| StorageError::Corrupt(e.to_string()))?);
    Ok(objects.put_if_absent(&key(&entry.name), body).await? == CreateOutcome::Created)
}

/// Looks a database up by name.
pub async fn lookup(objects: &Objects, name: &str) -> Result<Option<DatabaseEntry>> {
    match objects.get(&key(name)).await? {
        Some(b) => Ok(Some(parse(&b)?)),
        None => Ok(None),
    }
}

/// Every registered database.
pub async fn list(objects: &Objects) -> Result<Vec<DatabaseEntry>> {
    let mut out = objects.get_all("cluster/databases").await?.iter().map(|b| parse(b)).collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Removes a database's registry entry.
pub async fn unregister(objects: &Objects, name: &str) -> Result<()> {
    objects.delete(&key(name)).await
}

fn parse(b: &[u8]) -> Result<DatabaseEntry> {
    serde_json::from_slice(b).map_err(|e| StorageError::Corrupt(format!("registry entry: {e}")))
}
