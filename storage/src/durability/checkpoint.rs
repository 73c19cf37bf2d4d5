//! Checkpoints: a RocksDB checkpoint uploaded to the object store with a
//! manifest, so that a node with an empty disk can restore the database.
//!
//! ```text
//! sst/<epoch>-<file>.sst                 SST files (immutable, shared by checkpoints)
//! checkpoints/<applied_ts>/<file>        MANIFEST, CURRENT, OPTIONS of one checkpoint
//! checkpoints/<applied_ts>.json          the manifest, written last and create-only
//! ```

use std::collections::HashSet;
use std::path::Path as FsPath;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::objects::Objects;
use crate::error::{Result, StorageError};

/// A checkpoint's manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Every commit at or below this timestamp is in the checkpoint.
    pub applied_ts: u64,
    /// Epoch of the node that made it.
    pub epoch: u64,
    /// Unix time of creation, in milliseconds.
    pub created_unix_ms: u64,
    /// Files to download: local name → object key.
    pub files: Vec<ManifestFile>,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub key: String,
    pub size: u64,
}

fn manifest_key(applied_ts: u64) -> String {
    format!("checkpoints/{applied_ts:020}.json")
}

/// Uploads the RocksDB checkpoint in `dir` and writes its manifest.
/// `uploaded` remembers SST objects already in the store so they are not sent twice.
pub async fn upload(
    objects: &Objects,
    dir: &FsPath,
    applied_ts: u64,
    epoch: u64,
    uploaded: &mut HashSet<String>,
) -> Result<Manifest> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        let size = entry.metadata()?.len();
        let key = if name.ends_with(".sst") {
            format!("sst/{epoch:010}-{name}")
        } else {
            format!("checkpoints/{applied_ts:020}/{name}")
        };
        if !uploaded.contains(&key) {
            let data = tokio::fs::read(entry.path()).await?;
            objects.put(&key, Bytes::from(data)).await?;
            if name.ends_with(".sst") {
                uploaded.insert(key.clone());
            }
        }
        files.push(ManifestFile { name, key, size });
    }
    let manifest = Manifest { applied_ts, epoch, created_unix_ms: now_ms(), files };
    let body = serde_json::to_vec_pretty(&manifest).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    // Create-only: a manifest for the same timestamp describes the same state.
    objects.put_if_absent(&manifest_key(applied_ts), Bytes::from(body)).await?;
    Ok(manifest)
}

/// The newest checkpoint manifest, if any.
pub async fn latest(objects: &Objects) -> Result<Option<Manifest>> {
    let newest = objects
        .list("checkpoints")
        .await?
        .into_iter()
        .filter(|(n, _)| n.ends_with(".json") && !n.contains('/'))
        .map(|(n, _)| n)
        .max();
    let Some(name) = newest else { return Ok(None) };
    let Some(body) = objects.get(&format!("checkpoints/{name}")).await? else { return Ok(None) };
    serde_json::from_slice(&body).map(Some).map_err(|e| StorageError::Corrupt(format!("checkpoint manifest {name}: {e}")))
}

/// Downloads a checkpoint into `dir`, which must not exist yet.
pub async fn restore(objects: &Objects, manifest: &Manifest, dir: &FsPath) -> Result<()> {
    let tmp = dir.with_extension("restoring");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    for f in &manifest.files {
        let data = objects.get(&f.key).await?.ok_or_else(|| {
            StorageError::Corrupt(format!("checkpoint {} lacks object {}", manifest.applied_ts, f.key))
        })?;
        if data.len() as u64 != f.size {
            return Err(StorageError::Corrupt(format!(
                "checkpoint object {} has {} bytes, manifest says {}",
                f.key,
                data.len(),
                f.size
            )));
        }
        tokio::fs::write(tmp.join(&f.name), &data).await?;
    }
    std::fs::rename(&tmp, dir)?;
    Ok(())
}

/// Deletes manifests older than `keep`, their files, and SST objects that
/// `keep` does not reference.
pub async fn collect_garbage(objects: &Objects, keep: &Manifest, uploaded: &mut HashSet<String>) -> Result<()> {
    let referenced: HashSet<&str> = keep.files.iter().map(|f| f.key.as_str()).collect();
    let keep_prefix = format!("{:020}", keep.applied_ts);
    for (name, _) in objects.list("checkpoints").await? {
        if !name.starts_with(&keep_prefix) {
            objects.delete(&format!("checkpoints/{name}")).await?;
        }
    }
    for (name, _) in objects.list("sst").await? {
        let key = format!("sst/{name}");
        if !referenced.contains(key.as_str()) {
            objects.delete(&key).await?;
            uploaded.remove(&key);
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
