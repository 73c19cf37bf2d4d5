//! The commit pipeline: one committer task per database validates commits
//! (first committer wins), assigns timestamps, makes a whole group durable at
//! once — one WAL object in `remote` mode, one fsynced RocksDB write in
//! `local` mode — then applies and acknowledges them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::config::Durability;
use super::database::Database;
use super::mvcc::newest_version;
use super::txn::{Pending, PendingKind, Txn};
use crate::durability::wal::{AppendError, WalCommit, WalOp};
use crate::error::{Result, StorageError};
use crate::keys::{self, CATALOG_TABLE_ID, FIRST_USER_TABLE_ID};

/// A transaction ready to commit.
pub struct CommitJob {
    pub snapshot_ts: u64,
    pub writes: Vec<(Vec<u8>, Pending)>,
    pub dropped_tables: Vec<u32>,
    pub reply: oneshot::Sender<Result<u64>>,
}

impl Database {
    /// Commits a transaction's buffered writes; returns the commit timestamp.
    pub(crate) async fn commit_txn(&self, txn: Txn) -> Result<u64> {
        self.check_owned()?;
        if txn.writes.is_empty() && txn.dropped_tables.is_empty() {
            return Ok(txn.snapshot_ts());
        }
        let (reply, rx) = oneshot::channel();
        let job = CommitJob {
            snapshot_ts: txn.snapshot_ts(),
            writes: txn.writes.into_iter().collect(),
            dropped_tables: txn.dropped_tables,
            reply,
        };
        self.submit(job).await?;
        // The snapshot guard lives until here, keeping the versions the
        // validation reads out of garbage collection; the row locks are
        // released only once the commit is visible (or failed), so a waiting
        // writer then sees it.
        let _snapshot = txn.snapshot;
        let _locks = txn.locks;
        match tokio::time::timeout(self.commit_timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(StorageError::ShuttingDown),
            Err(_) => {
                self.metrics.commit_failures.inc();
                Err(StorageError::CommitOutcomeUnknown(format!(
                    "no confirmation within {:?}",
                    self.commit_timeout()
                )))
            }
        }
    }

    /// First-committer-wins: fails if any written key has a version newer
    /// than the snapshot, or was written by an earlier commit of this group.
    fn validate(&self, job: &CommitJob, group_keys: &HashSet<Vec<u8>>) -> Result<()> {
        let catalog = self.catalog_read();
        // Catalog entries this job itself writes (a re-keyed table's new id).
        let defined: HashSet<&[u8]> = job
            .writes
            .iter()
            .filter(|(k, p)| p.kind != PendingKind::Delete && keys::table_of(k) == Some(CATALOG_TABLE_ID))
            .map(|(k, _)| k.as_slice())
            .collect();
        for (key, pending) in &job.writes {
            if group_keys.contains(key) {
                return Err(StorageError::Conflict);
            }
            if let Some((ts, live)) = newest_version(&self.db, key)?
                && ts > job.snapshot_ts
            {
                if pending.kind == PendingKind::Insert && live {
                    let table = keys::table_of(key).and_then(|t| catalog.get_by_id(t));
                    return Err(StorageError::UniqueViolation(
                        table.map(|t| t.def.name.clone()).unwrap_or_default(),
                    ));
                }
                return Err(StorageError::Conflict);
            }
            if let Some(t) = keys::table_of(key)
                && t >= FIRST_USER_TABLE_ID
                && catalog.get_by_id(t).is_none()
                && !defined.contains(keys::catalog_key(t).as_slice())
            {
                return Err(StorageError::UnknownTable(format!("(table id {t}, dropped meanwhile)")));
            }
        }
        Ok(())
    }
}

/// Runs until shutdown: takes every waiting commit, validates, makes the
/// group durable, applies it and answers.
pub async fn run_committer(db: Arc<Database>, mut rx: mpsc::Receiver<CommitJob>, mut shutdown: watch::Receiver<bool>) {
    let mut next_ts = db.visible_ts() + 1;
    loop {
        let first = tokio::select! {
            job = rx.recv() => match job { Some(j) => j, None => return },
            _ = shutdown.changed() => return,
        };
        let mut jobs = vec![first];
        while jobs.len() < db.cfg.max_group_commits {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if let Err(e) = db.check_owned() {
            for j in jobs {
                let _ = j.reply.send(Err(match &e {
                    StorageError::Fenced(n) => StorageError::Fenced(n.clone()),
                    _ => StorageError::Poisoned(db.name.clone()),
                }));
            }
            continue;
        }
        // Validate and assign timestamps.
        let mut group_keys = HashSet::new();
        let mut accepted = Vec::with_capacity(jobs.len());
        let mut commits = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Err(e) = db.validate(&job, &group_keys) {
                if matches!(e, StorageError::Conflict) {
                    db.metrics.conflicts.inc();
                }
                let _ = job.reply.send(Err(e));
                continue;
            }
            let ts = next_ts;
            next_ts += 1;
            let mut ops = Vec::with_capacity(job.writes.len());
            for (key, p) in &job.writes {
                group_keys.insert(key.clone());
                ops.push(WalOp { key: key.clone(), value: p.value.clone() });
            }
            commits.push(WalCommit { commit_ts: ts, ops, dropped_tables: job.dropped_tables.clone() });
            accepted.push((job, ts));
        }
        if accepted.is_empty() {
            continue;
        }
        db.metrics.group_size.observe(accepted.len() as f64);
        let durable = match db.cfg.durability {
            Durability::Remote => write_wal(&db, commits.clone(), &mut shutdown).await,
            Durability::Local => Ok(()),
        };
        let result = durable.and_then(|()| {
            let _guard = db.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
            db.apply(&commits)
        });
        match result {
            Ok(()) => {
                db.snapshots.advance(next_ts - 1);
                db.metrics.commits.inc_by(accepted.len() as u64);
                for (job, ts) in accepted {
                    let _ = job.reply.send(Ok(ts));
                }
            }
            Err(e) => {
                // Nothing of this group was applied; its timestamps are burnt.
                tracing::error!(database = %db.name, error = %e, "commit group failed");
                db.metrics.commit_failures.inc_by(accepted.len() as u64);
                let msg = e.to_string();
                for (job, _) in accepted {
                    let err = match &e {
                        StorageError::Fenced(n) => StorageError::Fenced(n.clone()),
                        StorageError::ShuttingDown => StorageError::ShuttingDown,
                        _ => StorageError::CommitOutcomeUnknown(msg.clone()),
                    };
                    let _ = job.reply.send(Err(err));
                }
                if matches!(e, StorageError::Fenced(_) | StorageError::ShuttingDown) {
                    continue;
                }
                // The group is durable (remote) or may be partly on disk
                // (local), but the local copy could not take it: stop taking
                // writes rather than diverge; a restart recovers.
                db.poison(&msg);
            }
        }
    }
}

/// Makes one group durable as the next WAL object, retrying store errors
/// with backoff until it succeeds, the node is fenced or shuts down.
async fn write_wal(db: &Database, commits: Vec<WalCommit>, shutdown: &mut watch::Receiver<bool>) -> Result<()> {
    let mut wal = db.wal.lock().await;
    let mut backoff = Duration::from_millis(10);
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        match wal.append(commits.clone()).await {
            Ok(_) => {
                db.metrics.wal_upload_seconds.observe(attempt.elapsed().as_secs_f64());
                return Ok(());
            }
            Err(AppendError::Fenced) => {
                db.mark_fenced();
                return Err(StorageError::Fenced(db.name.clone()));
            }
            Err(AppendError::Store(e)) => {
                tracing::warn!(database = %db.name, error = %e, waited = ?started.elapsed(), "WAL upload failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Err(StorageError::ShuttingDown),
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
