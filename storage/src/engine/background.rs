//! Background work of an open database: aborting idle transactions,
//! shipping local-mode commits to the object store, and checkpoints.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::Durability;
use super::database::{Database, read_outbox};
use crate::durability::checkpoint;
use crate::durability::wal::AppendError;
use crate::error::{Result, StorageError};
use crate::keys;

/// Most commits shipped in one WAL object.
const MAX_SHIP_BATCH: usize = 10_000;

/// Starts the background tasks of `db`.
pub fn spawn_all(db: &Arc<Database>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![
        tokio::spawn(reap_idle(db.clone(), shutdown.clone())),
        tokio::spawn(checkpoint_loop(db.clone(), shutdown.clone())),
    ];
    if db.cfg.durability == Durability::Local {
        tasks.push(tokio::spawn(ship_loop(db.clone(), shutdown)));
    }
    tasks
}

async fn reap_idle(db: Arc<Database>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let aborted = db.txns.reap(Instant::now());
        if !aborted.is_empty() {
            db.metrics.txn_timeouts.inc_by(aborted.len() as u64);
            tracing::info!(database = %db.name, ?aborted, "aborted idle transactions");
        }
    }
}

async fn ship_loop(db: Arc<Database>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(db.cfg.ship_interval);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        loop {
            match ship_outbox(&db).await {
                Ok(n) if n == MAX_SHIP_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(database = %db.name, error = %e, "shipping local commits failed; will retry");
                    break;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Ships up to `MAX_SHIP_BATCH` unshipped commits as one WAL object.
pub(crate) async fn ship_outbox(db: &Database) -> Result<usize> {
    if db.is_fenced() {
        return Ok(0);
    }
    let mut commits = read_outbox(&db.db)?;
    commits.truncate(MAX_SHIP_BATCH);
    if commits.is_empty() {
        return Ok(0);
    }
    let started = Instant::now();
    let mut wal = db.wal.lock().await;
    match wal.append(commits.clone()).await {
        Ok(_) => {}
        Err(AppendError::Fenced) => {
            db.mark_fenced();
            return Err(StorageError::Fenced(db.name.clone()));
        }
        Err(AppendError::Store(e)) => return Err(e),
    }
    drop(wal);
    db.metrics.wal_upload_seconds.observe(started.elapsed().as_secs_f64());
    let mut batch = WriteBatch::default();
    for c in &commits {
        batch.delete(keys::outbox_key(c.commit_ts));
    }
    db.db.write(batch)?;
    Ok(commits.len())
}

async fn checkpoint_loop(db: Arc<Database>, mut shutdown: watch::Receiver<bool>) {
    let tick_every = db.cfg.checkpoint_interval.min(Duration::from_secs(1));
    let mut tick = tokio::time::interval(tick_every);
    let mut last_attempt = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let age_ms = checkpoint::now_ms().saturating_sub(db.last_checkpoint_ms.load(Ordering::SeqCst));
        db.metrics.checkpoint_age_seconds.with_label_values(&[db.name.as_str()]).set((age_ms / 1000) as i64);
        db.metrics.block_cache_bytes.set(db.cfg.block_cache.usage() as i64);
        let pending_objects = db.wal.lock().await.object_count();
        let due = last_attempt.elapsed() >= db.cfg.checkpoint_interval || pending_objects >= db.cfg.checkpoint_wal_objects;
        if !due || db.visible_ts() <= db.checkpointed_ts.load(Ordering::SeqCst) || db.check_owned().is_err() {
            continue;
        }
        last_attempt = Instant::now();
        if let Err(e) = take_checkpoint(&db).await {
            tracing::warn!(database = %db.name, error = %e, "checkpoint failed; will retry");
        }
    }
}

/// Creates a RocksDB checkpoint of the local copy in `dir` once every
/// commit applied to it is durable (groups applied early have landed);
/// returns its `applied_ts`.
async fn local_checkpoint(db: &Arc<Database>, dir: &std::path::Path) -> Result<u64> {
    let deadline = Instant::now() + db.commit_timeout();
    // Flushed first without the lock, commits going on: the checkpoint then
    // flushes only what came since, and commits wait for that alone (a whole
    // memtable took ~0.25 s under TPC-B).
    let handle = db.clone();
    tokio::task::spawn_blocking(move || handle.db.flush())
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
    loop {
        let handle = db.clone();
        let local_dir = dir.to_path_buf();
        let taken = tokio::task::spawn_blocking(move || -> Result<Option<u64>> {
            let _guard = handle.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
            if handle.local_ts() > handle.visible_ts() {
                return Ok(None);
            }
            let applied = handle.applied_ts()?;
            rocksdb::checkpoint::Checkpoint::new(&handle.db)?.create_checkpoint(&local_dir)?;
            Ok(Some(applied))
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))??;
        match taken {
            Some(applied) => return Ok(applied),
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(2)).await,
            None => return Err(StorageError::CommitOutcomeUnknown("commits applied early did not become durable in time".into())),
        }
    }
}

/// Takes a checkpoint now: uploads it, then drops WAL and files it makes obsolete.
pub async fn take_checkpoint(db: &Arc<Database>) -> Result<u64> {
    let started = Instant::now();
    let dir = db.dir.with_extension(format!("checkpoint-{}", checkpoint::now_ms()));
    let applied = {
        // The local copy must hold durable commits only: groups are applied
        // after their put until the local checkpoint is taken.
        db.hold_early_apply.fetch_add(1, Ordering::SeqCst);
        let taken = local_checkpoint(db, &dir).await;
        db.hold_early_apply.fetch_sub(1, Ordering::SeqCst);
        taken?
    };
    let result = async {
        let mut uploaded = db.uploaded_ssts.lock().await;
        let manifest = checkpoint::upload(&db.objects, &dir, applied, db.epoch, &mut uploaded).await?;
        // Deleting thousands of covered WAL objects takes a while: the
        // writer is not held meanwhile (commits need it for every put).
        let covered = db.wal.lock().await.covered(applied);
        let (deleted, outcome) = covered.delete().await;
        db.wal.lock().await.forget(&covered.seqs[..deleted]);
        outcome?;
        checkpoint::collect_garbage(&db.objects, &manifest, &mut uploaded).await?;
        Ok::<_, StorageError>(manifest)
    }
    .await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove local checkpoint directory");
    }
    let manifest = result?;
    db.checkpointed_ts.store(applied, Ordering::SeqCst);
    db.last_checkpoint_ms.store(manifest.created_unix_ms, Ordering::SeqCst);
    tracing::info!(database = %db.name, applied_ts = applied, files = manifest.files.len(), took = ?started.elapsed(), "checkpoint uploaded");
    Ok(applied)
}
