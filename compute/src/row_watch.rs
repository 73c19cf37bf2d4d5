//! Keeps each database's row cache (`row_cache`) true to storage: one
//! row-change watch per database this compute serves, opened with the
//! database's first session and kept open (reopened after a failure) for
//! the life of the process — or until storage says the database does not
//! exist (dropped, or a name a client made up), when the cache is
//! forgotten (sessions holding it find it dark). When the compute stops,
//! each cache goes dark and its watch says goodbye, so storage's commits
//! need not wait out the lease of a compute that is gone. Each message is applied to the cache before it
//! is acknowledged, and each acknowledgement extends the cache's lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_proto::storage::WatchRowsRequest;
use tokio::sync::{mpsc, watch};

use crate::error::{ComputeError, Result};
use crate::row_cache::{RowCache, RowCacheCounters};
use crate::storage_client::StorageClient;

/// Longest pause between attempts to reopen a watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The row caches of one compute, by database.
pub struct RowCaches {
    /// Bytes each database's cache may hold.
    budget: usize,
    caches: Arc<Mutex<HashMap<String, Arc<RowCache>>>>,
    counters: RowCacheCounters,
    /// Set when the compute stops: watches say goodbye and end.
    closing: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl RowCaches {
    /// No caches yet; each will hold up to `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { budget, caches: Arc::default(), counters: RowCacheCounters::new(), closing: watch::Sender::new(false), tasks: Mutex::default() }
    }

    /// The counters the caches add to (for the metrics registry).
    pub fn counters(&self) -> &RowCacheCounters {
        &self.counters
    }

    /// Bytes all caches hold.
    pub fn bytes(&self) -> usize {
        self.caches.lock().unwrap_or_else(|p| p.into_inner()).values().map(|c| c.bytes()).sum()
    }

    /// The cache of `database`, its watch started by `client` if this is
    /// the first time.
    pub fn for_database(&self, client: &StorageClient, database: &str) -> Arc<RowCache> {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = caches.get(database) {
            return c.clone();
        }
        let cache = Arc::new(RowCache::new(self.budget, self.counters.clone()));
        caches.insert(database.to_string(), cache.clone());
        let forget = Forget { caches: self.caches.clone(), database: database.to_string(), cache: cache.clone() };
        let task = tokio::spawn(keep_watching(client.clone(), forget, self.closing.subscribe()));
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(task);
        cache
    }

    /// The compute stops: every cache goes dark and its watch says
    /// goodbye (waited for up to a second).
    pub async fn close_all(&self) {
        self.closing.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = tokio::time::timeout(Duration::from_secs(1), futures::future::join_all(tasks)).await;
    }
}

/// Removes a database's cache from its compute's caches.
struct Forget {
    caches: Arc<Mutex<HashMap<String, Arc<RowCache>>>>,
    database: String,
    cache: Arc<RowCache>,
}

impl Forget {
    fn forget(self) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        if caches.get(&self.database).is_some_and(|c| Arc::ptr_eq(c, &self.cache)) {
            caches.remove(&self.database);
        }
    }
}

/// Watches a database for as long as the process runs (or the database
/// exists), reopening the watch when it ends; the cache serves nothing
/// while there is none.
async fn keep_watching(client: StorageClient, forget: Forget, mut closing: watch::Receiver<bool>) {
    let (database, cache) = (forget.database.clone(), forget.cache.clone());
    let mut backoff = Duration::from_millis(50);
    loop {
        let opened = Instant::now();
        let ended = watch(&client, &database, &cache, &mut closing).await;
        cache.go_dark();
        if *closing.borrow() {
            return;
        }
        match ended {
            Ok(()) => tracing::debug!(%database, "row watch ended by storage; reopening"),
            Err(e) if e.sqlstate() == "3D000" => {
                tracing::debug!(%database, "no such database: its row cache is forgotten");
                forget.forget();
                return;
            }
            Err(e) => tracing::debug!(%database, error = %e, "row watch failed; reopening"),
        }
        if opened.elapsed() > MAX_BACKOFF {
            backoff = Duration::from_millis(50);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = closing.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch, until it ends (or says goodbye when `closing` is set).
async fn watch(client: &StorageClient, database: &str, cache: &RowCache, closing: &mut watch::Receiver<bool>) -> Result<()> {
    let (acks, outgoing) = mpsc::unbounded_channel();
    let ack = |seq: u64| {
        acks.send(WatchRowsRequest { database: String::new(), acked: seq, bye: false }).map_err(|_| ComputeError::Internal("row watch acknowledgements closed".into()))
    };
    acks.send(WatchRowsRequest { database: database.to_string(), ..Default::default() }).map_err(|_| ComputeError::Internal("row watch closed".into()))?;
    let mut changes = client.watch_rows(outgoing).await?;
    let Some(first) = changes.message().await? else { return Ok(()) };
    let lease = Duration::from_millis(first.lease_ms);
    cache.restart(first.floor_ts);
    let sent_at = Instant::now();
    ack(first.seq)?;
    cache.live_for(sent_at, lease);
    tracing::debug!(%database, floor_ts = first.floor_ts, ?lease, "row watch open");
    let mut last = first.seq;
    loop {
        let m = tokio::select! {
            m = changes.message() => Some(m?),
            _ = closing.wait_for(|c| *c) => None,
        };
        let Some(m) = m else {
            cache.go_dark();
            acks.send(WatchRowsRequest { database: String::new(), acked: last, bye: true }).map_err(|_| ComputeError::Internal("row watch closed".into()))?;
            // Storage ends the stream once it has the goodbye.
            while changes.message().await?.is_some() {}
            return Ok(());
        };
        let Some(m) = m else { return Ok(()) };
        if m.commit_ts != 0 {
            cache.apply(&m);
        }
        let sent_at = Instant::now();
        ack(m.seq)?;
        last = m.seq;
        cache.live_for(sent_at, lease);
    }
}
