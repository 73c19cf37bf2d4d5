//! Turns an object-store URL (`file://`, `memory://`, `s3://`) into a store,
//! and makes `file://` stores fsync what they write so that a successful put
//! is as durable as an S3 PUT.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

use super::rename_new::rename_new;
use super::spare_files::{Spare, SpareFiles};
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
            Ok((Arc::new(FsyncLocalStore { inner, root: dir, spares: Arc::default() }), Path::default()))
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
    /// Staging files made ahead for create-only puts into busy directories.
    spares: Arc<SpareFiles>,
}

impl fmt::Display for FsyncLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FsyncLocalStore({})", self.root.display())
    }
}

impl FsyncLocalStore {
    fn fs_path(&self, location: &Path) -> PathBuf {
        fs_path(&self.root, location)
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

/// The file an object is kept in under `root`.
fn fs_path(root: &std::path::Path, location: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in location.parts() {
        p.push(part.as_ref());
    }
    p
}

fn generic(source: Box<dyn std::error::Error + Send + Sync>) -> object_store::Error {
    object_store::Error::Generic { store: "FsyncLocalStore", source }
}

/// Writes `payload` to `path` so that it survives a crash once this returns:
/// staging file (a spare made ahead, or one named like `LocalFileSystem`'s,
/// `<name>#<n>`, which its listings skip; a recycled spare is cut to the
/// payload's length), fdatasync, rename (create-only: refused with
/// `AlreadyExists` if the name is taken), then fsync of the directory.
fn put_durably(path: &std::path::Path, payload: &PutPayload, create: bool, spare: Option<Spare>) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().ok_or_else(|| std::io::Error::other("object path has no parent directory"))?;
    let (staging, mut f, old_len) = match spare {
        Some(s) => (s.path, s.file, s.len),
        None => {
            std::fs::create_dir_all(dir)?;
            let mut staging = path.as_os_str().to_owned();
            staging.push(format!("#{}", rand::random::<u32>()));
            let staging = PathBuf::from(staging);
            let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&staging)?;
            (staging, f, 0)
        }
    };
    let written = (|| {
        for chunk in payload.iter() {
            f.write_all(chunk)?;
        }
        let len = payload.content_length() as u64;
        if old_len > len {
            f.set_len(len)?;
        }
        f.sync_data()?;
        if create { rename_new(&staging, path) } else { std::fs::rename(&staging, path) }
    })();
    drop(f);
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// What `FsyncLocalStore` refuses rather than do without an fsync.
fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented { operation: operation.into(), implementer: "FsyncLocalStore".into() }
}

#[async_trait]
impl ObjectStore for FsyncLocalStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        // Conditional updates and attributes are not used by ebb; refuse them
        // rather than write without the fsync.
        let create = match opts.mode {
            PutMode::Create => true,
            PutMode::Overwrite => false,
            PutMode::Update(_) => return Err(not_implemented("put with PutMode::Update")),
        };
        if !opts.attributes.is_empty() {
            return Err(not_implemented("put with attributes"));
        }
        let path = self.fs_path(location);
        let shown = location.to_string();
        let spares = self.spares.clone();
        // One blocking task does it all: write a staging file, fdatasync it,
        // rename it into place (create-only if asked), fsync the directory;
        // then, the put answered, it makes spares if the directory is busy
        // (it runs to the end even if the caller goes away).
        let (answer, put) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            let (spare, refill) = if create { spares.take(&dir) } else { (None, false) };
            let with_spare = spare.is_some();
            let mut put = put_durably(&path, &payload, create, spare);
            if with_spare && put.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
                // The spare's name (or its directory) was removed behind our back.
                spares.forget(&dir);
                put = put_durably(&path, &payload, create, None);
            }
            let _ = answer.send(put);
            if refill {
                spares.refill(&dir);
            }
        });
        put.await.map_err(|e| generic(e.into()))?.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => object_store::Error::AlreadyExists { path: shown, source: Box::new(e) },
            _ => generic(e.into()),
        })?;
        Ok(PutResult { e_tag: None, version: None })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Multipart uploads are not used by ebb; refuse rather than skip the fsync.
        let _ = (location, opts);
        Err(not_implemented("put_multipart"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Like `LocalFileSystem`'s, except that a busy directory's deleted
        // files are recycled as spare staging files (see `spare_files`).
        let root = self.root.clone();
        let spares = self.spares.clone();
        locations
            .map(move |location| {
                let root = root.clone();
                let spares = spares.clone();
                async move {
                    let location = location?;
                    let file = fs_path(&root, &location);
                    tokio::task::spawn_blocking(move || spares.delete(&file).map_err(|e| (file, e)))
                        .await
                        .map_err(|e| generic(e.into()))?
                        .map_err(|(file, e)| match e.kind() {
                            std::io::ErrorKind::NotFound => {
                                object_store::Error::NotFound { path: file.display().to_string(), source: e.into() }
                            }
                            _ => generic(e.into()),
                        })?;
                    Ok(location)
                }
            })
            .buffered(10)
            .boxed()
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

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn file_puts_are_create_only_when_asked_and_leave_no_staging_files() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = open_url(&format!("file://{}", dir.path().display())).unwrap();
        let p = Path::from("wal/00000000000000000001");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        store.put_opts(&p, PutPayload::from("first"), create.clone()).await.unwrap();
        let again = store.put_opts(&p, PutPayload::from("second"), create).await;
        assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap().as_ref(), b"first");
        store.put(&p, PutPayload::from("third")).await.unwrap();
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap().as_ref(), b"third");
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let on_disk: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("spare#"))
            .collect();
        assert_eq!(on_disk, ["00000000000000000001"], "no staging file left behind");
    }

    /// A store whose `wal` directory took create-only puts of `payload` at
    /// 1 and 2 (so it is busy) and has its spares made; with the directory.
    async fn busy_wal_store(payload: &'static str) -> (tempfile::TempDir, FsyncLocalStore, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsyncLocalStore {
            inner: LocalFileSystem::new_with_prefix(dir.path()).unwrap(),
            root: dir.path().to_path_buf(),
            spares: Arc::default(),
        };
        let wal = dir.path().join("wal");
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        for seq in 1..=2 {
            store.put_opts(&Path::from(format!("wal/{seq:020}")), PutPayload::from(payload), create.clone()).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.spares.ready(&wal) == 0 {
            assert!(std::time::Instant::now() < deadline, "no spares were made");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        (dir, store, wal)
    }

    #[tokio::test]
    async fn create_only_puts_into_a_busy_directory_use_spares_made_ahead() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, store, wal) = busy_wal_store("x").await;
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let spare_inodes: std::collections::HashSet<u64> = std::fs::read_dir(&wal)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().starts_with("spare#"))
            .map(|e| e.metadata().unwrap().ino())
            .collect();
        let p = Path::from(format!("wal/{:020}", 3));
        store.put_opts(&p, PutPayload::from("third"), create.clone()).await.unwrap();
        let ino = std::fs::metadata(wal.join(format!("{:020}", 3))).unwrap().ino();
        assert!(spare_inodes.contains(&ino), "the object is one of the spares");
        assert_eq!(store.get(&p).await.unwrap().bytes().await.unwrap().as_ref(), b"third");
        let again = store.put_opts(&p, PutPayload::from("fourth"), create).await;
        assert!(matches!(again, Err(object_store::Error::AlreadyExists { .. })), "{again:?}");
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 3, "spares are not listed: {listed:?}");
    }

    #[tokio::test]
    async fn deleted_objects_of_a_busy_directory_become_later_objects() {
        use std::os::unix::fs::MetadataExt;
        let (_dir, store, wal) = busy_wal_store("a long first object, longer than the ones after it").await;
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        let key = |seq: u64| Path::from(format!("wal/{seq:020}"));
        let old_ino = std::fs::metadata(wal.join(format!("{:020}", 1))).unwrap().ino();
        store.delete(&key(1)).await.unwrap();
        assert!(matches!(store.get(&key(1)).await, Err(object_store::Error::NotFound { .. })));
        let again = store.delete(&key(1)).await;
        assert!(matches!(again, Err(object_store::Error::NotFound { .. })), "{again:?}");
        assert_eq!(store.spares.recycled(&wal), 1);
        // Puts use up the ready spares, then the recycled file.
        let mut inodes = Vec::new();
        for seq in 3..3 + super::super::spare_files::TARGET as u64 + 4 {
            store.put_opts(&key(seq), PutPayload::from(format!("object {seq}")), create.clone()).await.unwrap();
            inodes.push(std::fs::metadata(wal.join(format!("{seq:020}"))).unwrap().ino());
            assert_eq!(store.get(&key(seq)).await.unwrap().bytes().await.unwrap(), format!("object {seq}").as_bytes());
        }
        assert!(inodes.contains(&old_ino), "the deleted object's file became a later object");
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert_eq!(listed.len(), 1 + super::super::spare_files::TARGET + 4, "spares are not listed: {listed:?}");
    }
}
