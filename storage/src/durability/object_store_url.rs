//! Turns an object-store URL (`file://`, `memory://`, `s3://`) into a store,
//! and makes `file://` stores fsync what they write so that a successful put
//! is as durable as an S3 PUT.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

use crate::error::{Result, StorageError};

/// Opens the object store a URL names; returns it with the key prefix to use.
pub fn open_url(url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let parsed = Url::parse(url)
        .map_err(|e| StorageError::InvalidRequest(format!("object store URL \"{url}\": {e}")))?;
    match parsed.scheme() {
        "file" => {
            let dir = parsed.to_file_path().map_err(|_| {
                StorageError::InvalidRequest(format!("object store URL \"{url}\" is not an absolute file path"))
            })?;
            std::fs::create_dir_all(&dir)?;
            let inner = LocalFileSystem::new_with_prefix(&dir)?;
            Ok((Arc::new(FsyncLocalStore { inner, root: dir }), Path::default()))
        }
        "memory" => Ok((Arc::new(InMemory::new()), Path::default())),
        "s3" | "s3a" => {
            let bucket = parsed.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(StorageError::InvalidRequest(format!("object store URL \"{url}\" names no bucket")));
            }
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            Ok((Arc::new(store), Path::from(parsed.path().trim_matches('/'))))
        }
        "gs" | "az" | "azure" | "abfs" => Err(StorageError::NotSupported(format!(
            "object store scheme \"{}\" is not built into this ebb binary (file://, memory:// and s3:// are)",
            parsed.scheme()
        ))),
        other => Err(StorageError::InvalidRequest(format!("unknown object store scheme \"{other}\" in \"{url}\""))),
    }
}

/// A local-directory store whose puts are fsynced (file and directory) before
/// they return, matching the durability contract of cloud object stores.
#[derive(Debug)]
pub struct FsyncLocalStore {
    inner: LocalFileSystem,
    root: PathBuf,
}

impl fmt::Display for FsyncLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FsyncLocalStore({})", self.root.display())
    }
}

impl FsyncLocalStore {
    fn fs_path(&self, location: &Path) -> PathBuf {
        let mut p = self.root.clone();
        for part in location.parts() {
            p.push(part.as_ref());
        }
        p
    }

    async fn sync(&self, location: &Path) -> object_store::Result<()> {
        let file = self.fs_path(location);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| object_store::Error::Generic { store: "FsyncLocalStore", source: Box::new(e) })?
        .map_err(|e| object_store::Error::Generic { store: "FsyncLocalStore", source: Box::new(e) })
    }
}

#[async_trait]
impl ObjectStore for FsyncLocalStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Multipart uploads are not used by ebb; refuse rather than skip the fsync.
        let _ = (location, opts);
        Err(object_store::Error::NotImplemented {
            operation: "put_multipart".into(),
            implementer: "FsyncLocalStore".into(),
        })
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to).await
    }
}
