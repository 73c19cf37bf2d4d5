//! Keeps each database's row cache (`row_cache`) true to storage: one
//! row-change watch per database this compute serves, opened with the
//! database's first session and kept open (reopened after a failure) for
//! the life of the process — or until storage says the database does not
//! exist (dropped, or a name a client made up), when the cache is
//! forgotten (sessions holding it find it dark). Each message is applied to the cache before it
//! is acknowledged, and each acknowledgement extends the cache's lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_proto::storage::WatchRowsRequest;
use tokio::sync::mpsc;

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
}

impl RowCaches {
    /// No caches yet; each will hold up to `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self { budget, caches: Arc::default(), counters: RowCacheCounters::new() }
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
        tokio::spawn(keep_watching(client.clone(), forget));
        cache
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
async fn keep_watching(client: StorageClient, forget: Forget) {
    let (database, cache) = (forget.database.clone(), forget.cache.clone());
    let mut backoff = Duration::from_millis(50);
    loop {
        let opened = Instant::now();
        let ended = watch(&client, &database, &cache).await;
        cache.go_dark();
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
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch, until it ends.
async fn watch(client: &StorageClient, database: &str, cache: &RowCache) -> Result<()> {
    let (acks, outgoing) = mpsc::unbounded_channel();
    let ack = |seq: u64| {
        acks.send(WatchRowsRequest { database: String::new(), acked: seq }).map_err(|_| ComputeError::Internal("row watch acknowledgements closed".into()))
    };
    acks.send(WatchRowsRequest { database: database.to_string(), acked: 0 }).map_err(|_| ComputeError::Internal("row watch closed".into()))?;
    let mut changes = client.watch_rows(outgoing).await?;
    let Some(first) = changes.message().await? else { return Ok(()) };
    let lease = Duration::from_millis(first.lease_ms);
    cache.restart(first.floor_ts);
    let sent_at = Instant::now();
    ack(first.seq)?;
    cache.live_for(sent_at, lease);
    tracing::debug!(%database, floor_ts = first.floor_ts, ?lease, "row watch open");
    while let Some(m) = changes.message().await? {
        if m.commit_ts != 0 {
            cache.apply(&m);
        }
        let sent_at = Instant::now();
        ack(m.seq)?;
        cache.live_for(sent_at, lease);
    }
    Ok(())
}
