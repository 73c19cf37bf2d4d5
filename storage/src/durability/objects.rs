//! The narrow object-store API the durability code uses: create-only puts
//! (the fencing primitive), plain puts, gets, listings and deletes, all under
//! one key prefix and all counted in the metrics.

use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::Result;
use crate::metrics::StorageMetrics;

/// What a create-only put found.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The object did not exist and now holds our bytes.
    Created,
    /// Somebody (perhaps an earlier attempt of ours) created it first.
    AlreadyExists,
}

/// An object store seen through a key prefix.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    metrics: StorageMetrics,
}

impl Objects {
    /// Wraps a store; every key is relative to `prefix`.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, metrics: StorageMetrics) -> Self {
        Self { store, prefix, metrics }
    }

    /// The same store under a deeper prefix.
    pub fn scoped(&self, sub: &str) -> Self {
        Self { store: self.store.clone(), prefix: self.path(sub), metrics: self.metrics.clone() }
    }

    fn path(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    fn count_error<T>(&self, op: &str, r: object_store::Result<T>) -> object_store::Result<T> {
        if r.is_err() {
            self.metrics.object_store_errors.with_label_values(&[op]).inc();
        }
        r
    }

    fn failed(&self, op: &str, e: object_store::Error) -> crate::error::StorageError {
        self.metrics.object_store_errors.with_label_values(&[op]).inc();
        e.into()
    }

    /// Writes `data` only if no object exists at `rel`.
    pub async fn put_if_absent(&self, rel: &str, data: Bytes) -> Result<CreateOutcome> {
        let len = data.len() as u64;
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let r = self.store.put_opts(&self.path(rel), PutPayload::from(data), opts).await;
        match r {
            Ok(_) => {
                self.metrics.object_store_bytes.with_label_values(&["put"]).inc_by(len);
                Ok(CreateOutcome::Created)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(CreateOutcome::AlreadyExists),
            Err(e) => Err(self.failed("put", e)),
        }
    }

    /// Writes `data` at `rel`, replacing what was there.
    pub async fn put(&self, rel: &str, data: Bytes) -> Result<()> {
        let len = data.len() as u64;
        let r = self.store.put(&self.path(rel), PutPayload::from(data)).await;
        self.count_error("put", r)?;
        self.metrics.object_store_bytes.with_label_values(&["put"]).inc_by(len);
        Ok(())
    }

    /// Reads an object; `None` if it does not exist.
    pub async fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        let r = match self.store.get(&self.path(rel)).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("get", e)),
        };
        let bytes = self.count_error("get", r.bytes().await)?;
        self.metrics.object_store_bytes.with_label_values(&["get"]).inc_by(bytes.len() as u64);
        Ok(Some(bytes))
    }

    /// Names (relative to `rel_dir`) and sizes of every object below `rel_dir`.
    pub async fn list(&self, rel_dir: &str) -> Result<Vec<(String, u64)>> {
        let dir = self.path(rel_dir);
        let metas: Vec<_> = self.count_error("list", self.store.list(Some(&dir)).try_collect().await)?;
        let mut out: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                let rel: Vec<String> = m.location.prefix_match(&dir)?.map(|p| p.as_ref().to_string()).collect();
                Some((rel.join("/"), m.size))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The contents of every object directly under `rel_dir`, in key
    /// order; one deleted between the list and its read is skipped.
    pub async fn get_all(&self, rel_dir: &str) -> Result<Vec<Bytes>> {
        let mut out = Vec::new();
        for (name, _) in self.list(rel_dir).await? {
            if let Some(b) = self.get(&format!("{rel_dir}/{name}")).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// Deletes an object; deleting a missing object is not an error.
    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", e)),
        }
    }

    /// Deletes every object below `rel_dir`.
    pub async fn delete_all(&self, rel_dir: &str) -> Result<()> {
        for (name, _) in self.list(rel_dir).await? {
            self.delete(&format!("{rel_dir}/{name}")).await?;
        }
        Ok(())
    }
}
