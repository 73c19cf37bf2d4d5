//! A fault-injecting object store for tests: wraps any store and, on demand,
//! fails or delays its requests (the approach of SlateDB's
//! `failing_object_store.rs`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Switches that control the faults; shared with the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail every write (put, copy, multipart).
    pub fail_writes: AtomicBool,
    /// Fail every read and listing.
    pub fail_reads: AtomicBool,
    /// Delay every request by this many milliseconds.
    pub latency_ms: AtomicU64,
    /// Writes attempted (including failed ones).
    pub write_attempts: AtomicU64,
    /// Puts under way now.
    pub puts_in_flight: AtomicU64,
    /// Most puts ever under way at once.
    pub max_puts_in_flight: AtomicU64,
    /// Deletes wait while this is on.
    pub hold_deletes: AtomicBool,
    /// Deletes waiting now.
    pub deletes_waiting: AtomicU64,
}

impl Faults {
    /// Turns write failures on or off.
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }
    /// Sets the injected latency.
    pub fn set_latency(&self, d: Duration) {
        self.latency_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Counts a put in flight until dropped (also when the put is cancelled).
struct InFlight<'a>(&'a Faults);

impl<'a> InFlight<'a> {
    fn enter(faults: &'a Faults) -> Self {
        let now = faults.puts_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        faults.max_puts_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(faults)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.puts_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The wrapping store.
#[derive(Debug)]
pub struct FailingObjectStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FailingObjectStore {
    /// Wraps `inner`; the returned `Faults` controls it.
    pub fn new(inner: Arc<dyn ObjectStore>) -> (Arc<Self>, Arc<Faults>) {
        let faults = Arc::new(Faults::default());
        (Arc::new(Self { inner, faults: faults.clone() }), faults)
    }

    async fn before(&self, write: bool) -> object_store::Result<()> {
        let ms = self.faults.latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if write {
            self.faults.write_attempts.fetch_add(1, Ordering::SeqCst);
        }
        let fail = if write { &self.faults.fail_writes } else { &self.faults.fail_reads };
        if fail.load(Ordering::SeqCst) {
            return Err(object_store::Error::Generic {
                store: "FailingObjectStore",
                source: "injected fault".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FailingObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FailingObjectStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FailingObjectStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> object_store::Result<PutResult> {
        let _counted = InFlight::enter(&self.faults);
        self.before(true).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before(true).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.before(false).await?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if self.faults.fail_writes.load(Ordering::SeqCst) {
            return locations
                .map(|_| Err(object_store::Error::Generic { store: "FailingObjectStore", source: "injected fault".into() }))
                .boxed();
        }
        let faults = self.faults.clone();
        let held = locations.then(move |location| {
            let faults = faults.clone();
            async move {
                if faults.hold_deletes.load(Ordering::SeqCst) {
                    faults.deletes_waiting.fetch_add(1, Ordering::SeqCst);
                    while faults.hold_deletes.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    faults.deletes_waiting.fetch_sub(1, Ordering::SeqCst);
                }
                location
            }
        });
        self.inner.delete_stream(held.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.faults.fail_reads.load(Ordering::SeqCst) {
            return futures::stream::once(async {
                Err(object_store::Error::Generic { store: "FailingObjectStore", source: "injected fault".into() })
            })
            .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.before(false).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.before(true).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
