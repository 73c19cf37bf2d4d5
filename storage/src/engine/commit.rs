//! The commit pipeline: one committer task per database validates commits
//! (first committer wins), assigns timestamps, makes a whole group durable at
//! once — one WAL object in `remote` mode, one fsynced RocksDB write in
//! `local` mode — and acknowledges them. In `remote` mode the next group is
//! validated while earlier puts are still in flight, and its put overlaps
//! theirs once the oldest has taken a while (a slow store; on a fast one puts
//! go one at a time and groups grow); groups are acknowledged strictly in
//! order. With no put in flight, the next put may wait a moment for the
//! writers just answered (`commit_gather`).
//!
//! Early lock release (`remote` mode): a validated group is applied to the
//! local copy at once and its transactions' row locks are released, before
//! its WAL put lands; new snapshots still read only durable commits. A
//! writer that waited for one of those locks reads the row's newest version
//! (`Snapshots::acquire_applied`), so a hot row is held for the statements
//! of one transaction, not for a WAL put as well. Such a dependent group
//! puts its WAL object only after every earlier group landed (commits
//! accepted meanwhile join it), so no object can land whose commits read
//! one that never did; a read-only transaction that read such a commit
//! waits for it before it is acknowledged. If a put fails the node is
//! poisoned or fenced, and the local copy — which may hold commits the store
//! never got — is restored from the object store when the database is next
//! opened (`durable_ts` behind `applied_ts`). DDL, and groups validated
//! while a checkpoint waits for a durable-only local copy, are applied after
//! their put as before.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot, watch};

use super::commit_gather::Gather;
use super::config::Durability;
use super::database::Database;
use super::locks::LockSet;
use super::mvcc::newest_version;
use super::row_watch::AckWait;
use super::txn::{Pending, PendingKind, SnapshotGuard, Txn};
use crate::durability::wal::{AppendError, WAL_PIPELINE_DEPTH, WalCommit, WalOp, WalPutter};
use crate::error::{Result, StorageError};
use crate::catalog::{Catalog, Index, Table};
use crate::keys::{self, CATALOG_TABLE_ID, FIRST_USER_TABLE_ID};
use ebb_proto::storage::TableDef;
use prost::Message;

/// A transaction ready to commit.
pub struct CommitJob {
    pub snapshot_ts: u64,
    pub writes: Vec<(Vec<u8>, Pending)>,
    pub dropped_tables: Vec<u32>,
    /// The definition version of each table written, as staged.
    pub table_versions: Vec<(u32, u64)>,
    /// Work the committer does for this (DDL) commit, alone in its group,
    /// once every earlier commit is applied and before any later one is
    /// validated.
    pub prepare: Option<Prepare>,
    pub reply: oneshot::Sender<Result<u64>>,
    /// The transaction's snapshot and row locks, released once its commit
    /// is applied (or refused): the snapshot keeps the versions validation
    /// reads out of garbage collection, the locks make a waiting writer
    /// see the commit.
    pub held: Option<(SnapshotGuard, LockSet)>,
    /// When it was sent to the committer.
    pub queued_at: Instant,
}

impl Database {
    /// Commits a transaction's buffered writes; returns the commit timestamp.
    pub(crate) async fn commit_txn(&self, txn: Txn) -> Result<u64> {
        self.check_owned()?;
        if txn.writes.is_empty() && txn.dropped_tables.is_empty() {
            let ts = txn.snapshot_ts();
            // It may have read commits applied early (after a lock wait).
            self.wait_durable(ts).await?;
            return Ok(ts);
        }
        let bulk = txn.writes.len() > BIG_GROUP_WRITES;
        let (reply, rx) = oneshot::channel();
        let job = CommitJob {
            snapshot_ts: txn.snapshot_ts(),
            writes: txn.writes.into_iter().collect(),
            dropped_tables: txn.dropped_tables,
            table_versions: txn.table_versions.into_iter().collect(),
            prepare: txn.prepare,
            reply,
            held: Some((txn.snapshot, txn.locks)),
            queued_at: Instant::now(),
        };
        self.submit(job).await?;
        match tokio::time::timeout(self.commit_timeout(), rx).await {
            Ok(Ok(Ok(ts))) if bulk => {
                self.settle_bulk_commit().await;
                Ok(ts)
            }
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

    /// After a bulk commit: flushes the memtables it filled and waits for
    /// that and for the compaction the new files set off (at most
    /// `BULK_SETTLE_LIMIT`), so the load pays for its own flush and
    /// compaction. RocksDB would run them in the background anyway, taking
    /// a core from the statements right after the load, which typically
    /// read what it wrote: from a memtable in mid-flush, then from files
    /// whose blocks were not cached yet (now the flush and the compaction
    /// cache them, see `open_rocks`). On two cores the first
    /// `count(*), sum(abalance)` over a freshly loaded `pgbench_accounts`
    /// (scale 10) took ~1.5× a later one. A failed flush is only logged:
    /// the commit stands, and RocksDB retries.
    async fn settle_bulk_commit(&self) {
        if !self.memtables_awaiting_flush() {
            return;
        }
        let started = Instant::now();
        self.metrics.bulk_commit_flushes.inc();
        if let Err(e) = blocking(|| self.db.flush()) {
            tracing::warn!(database = %self.name, error = %e, "flush after a bulk commit failed");
            return;
        }
        let flushed = started.elapsed();
        while self.compactions_underway() && started.elapsed() < BULK_SETTLE_LIMIT {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::debug!(database = %self.name, ?flushed, settled = ?started.elapsed(), "flushed and compacted after a bulk commit");
    }

    /// Whether a memtable is full: switched and waiting for (or in) its
    /// flush, or the active one at its size (RocksDB switches it at the
    /// next write).
    pub fn memtables_awaiting_flush(&self) -> bool {
        self.rocks_property("rocksdb.num-immutable-mem-table") > 0 || self.rocks_property("rocksdb.cur-size-active-mem-table") >= self.cfg.memtable_bytes as u64
    }

    /// Whether RocksDB is compacting files or has files it wants to compact.
    pub fn compactions_underway(&self) -> bool {
        self.rocks_property("rocksdb.compaction-pending") > 0 || self.rocks_property("rocksdb.num-running-compactions") > 0
    }

    /// A numeric RocksDB property (0 when RocksDB does not give it).
    fn rocks_property(&self, name: &str) -> u64 {
        self.db.property_int_value(name).ok().flatten().unwrap_or(0)
    }

    /// First-committer-wins: fails if any written key has a version newer
    /// than the snapshot, or is written by a commit that is accepted but not
    /// applied yet (earlier in this group, or in a group still in flight).
    fn validate(&self, job: &CommitJob, pending: &HashSet<Vec<u8>>) -> Result<()> {
        let catalog = self.catalog_read();
        for (id, version) in &job.table_versions {
            // Altered since the rows were staged (or by a commit ahead of
            // this one): they may lack an entry of an index created since.
            let altered = (!pending.is_empty() && pending.contains(&keys::catalog_key(*id)))
                || catalog.get_by_id(*id).is_some_and(|t| t.def.version != *version);
            if altered {
                let name = catalog.get_by_id(*id).map(|t| t.def.name.clone()).unwrap_or_default();
                return Err(StorageError::CatalogChanged(name));
            }
        }
        // Relations this job itself defines (a re-keyed table's new id, a
        // new index).
        let defined: HashSet<u32> = job
            .writes
            .iter()
            .filter(|(k, p)| p.kind != PendingKind::Delete && keys::table_of(k) == Some(CATALOG_TABLE_ID))
            .filter_map(|(_, p)| p.value.as_deref().and_then(|v| TableDef::decode(v).ok()))
            .flat_map(|def| std::iter::once(def.id).chain(def.indexes.iter().map(|ix| ix.id)).collect::<Vec<_>>())
            .collect();
        for (key, pending_write) in &job.writes {
            if pending.contains(key) {
                return Err(StorageError::Conflict);
            }
            if let Some((ts, live)) = newest_version(&self.db, key)?
                && ts > job.snapshot_ts
            {
                if pending_write.kind == PendingKind::Insert && live {
                    return Err(StorageError::UniqueViolation(constraint_name(&catalog, key)));
                }
                return Err(StorageError::Conflict);
            }
            if let Some(t) = keys::table_of(key)
                && t >= FIRST_USER_TABLE_ID
                && catalog.get_by_id(t).is_none()
                && catalog.index_owner(t).is_none()
                && !defined.contains(&t)
            {
                return Err(StorageError::UnknownTable(format!("(table id {t}, dropped meanwhile)")));
            }
        }
        Ok(())
    }
}

/// Writes in one commit group above which validating and applying it runs
/// off the runtime's worker (`heavy`); a transaction with more is a bulk
/// commit (`Database::settle_bulk_commit`).
const BIG_GROUP_WRITES: usize = 4096;

/// Longest a bulk commit waits for the flush and compaction it set off.
const BULK_SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Runs `f` through [`blocking`] when it is `big`, inline otherwise (moving
/// a worker's tasks to another thread costs more than a small group's work).
fn heavy<T>(big: bool, f: impl FnOnce() -> T) -> T {
    if big { blocking(f) } else { f() }
}

/// Runs `f`, which blocks, as `tokio::task::block_in_place` does on a
/// multi-threaded runtime (other tasks move to other workers); inline on
/// a current-thread one, which cannot.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Work the committer does for a DDL commit before validating it (see
/// `CommitJob::prepare`).
pub enum Prepare {
    /// CREATE INDEX: the entries of this index of this (new) table
    /// definition join the writes (`Database::fill_index`).
    FillIndex(Arc<Table>, Index),
    /// ADD FOREIGN KEY: every row of this (new) table definition must
    /// reference a row that exists (`Database::check_existing_references`).
    CheckForeignKey(Arc<Table>, usize),
    /// SET NOT NULL, ADD … IDENTITY, a narrowing ALTER COLUMN … TYPE: every
    /// row must fit this column of this (new) definition
    /// (`Database::check_column`).
    CheckColumn(Arc<Table>, String),
}

/// The unique constraint a written key belongs to (see `Table::constraint_of`).
fn constraint_name(catalog: &Catalog, key: &[u8]) -> String {
    let Some(id) = keys::table_of(key) else { return String::new() };
    catalog.get_by_id(id).or_else(|| catalog.index_owner(id)).map(|t| t.constraint_of(key)).unwrap_or_default()
}

impl CommitJob {
    /// Whether this commit changes the catalog (DDL). Such a commit is
    /// validated and applied with nothing else in flight, because validation
    /// reads the catalog as of the last applied commit.
    fn is_ddl(&self) -> bool {
        !self.dropped_tables.is_empty()
            || self.writes.iter().any(|(k, _)| keys::table_of(k) == Some(CATALOG_TABLE_ID))
    }
}

/// A validated group on its way to durability.
struct Group {
    accepted: Vec<(CommitJob, u64)>,
    commits: Vec<WalCommit>,
    /// Keys the group writes, when it is applied after its put (they block
    /// other writers until then); empty for a group applied early, whose
    /// versions validation finds in the local copy.
    keys: Vec<Vec<u8>>,
    /// WAL sequence number (remote mode).
    seq: u64,
    /// Applied to the local copy before its put (early lock release).
    early: bool,
    /// When its put started.
    put_at: Instant,
    /// Sent to computes' row watches (as its put starts, so their
    /// acknowledgements are usually in before it lands), and what it waits
    /// for from them.
    published: bool,
    acks: Option<AckWait>,
}

impl Group {
    fn new(early: bool) -> Self {
        Group { accepted: Vec::new(), commits: Vec::new(), keys: Vec::new(), seq: 0, early, put_at: Instant::now(), published: false, acks: None }
    }

    fn last_ts(&self) -> u64 {
        self.accepted.last().map(|(_, ts)| *ts).unwrap_or(0)
    }

    /// Adds the commits of a later group (both applied early).
    fn absorb(&mut self, later: Group) {
        self.accepted.extend(later.accepted);
        self.commits.extend(later.commits);
    }

    fn fail(self, err: impl Fn() -> StorageError) {
        for (job, _) in self.accepted {
            let _ = job.reply.send(Err(err()));
        }
    }
}

/// The groups accepted but not yet acknowledged, oldest first, with their
/// WAL puts (remote mode: up to [`WAL_PIPELINE_DEPTH`] at once).
struct Pipeline {
    groups: VecDeque<Group>,
    puts: FuturesOrdered<BoxFuture<'static, std::result::Result<(), AppendError>>>,
    /// Keys written by accepted commits not applied yet.
    pending: HashSet<Vec<u8>>,
    /// A group applied early whose put has not started: it waits until
    /// every group in flight has landed when some of its commits read
    /// theirs (`waiting_depends`); otherwise until the oldest put in flight
    /// has taken `overlap_after`, or, with none in flight, until the writers
    /// being gathered are back (`gathering`). Groups accepted meanwhile join it.
    waiting: Option<Group>,
    waiting_depends: bool,
    /// Puts overlap only once the oldest in flight has taken this long: a
    /// fast store gets one put at a time (and bigger groups), a slow one up
    /// to [`WAL_PIPELINE_DEPTH`] at once.
    overlap_after: Duration,
    gather: Gather,
    /// Commits the next put waits for, and until when.
    gathering: Option<(usize, Instant)>,
    /// The waiting group was held for `gathering`.
    gather_held: bool,
    shutdown: watch::Receiver<bool>,
}

impl Pipeline {
    fn is_full(&self, max_group_commits: usize) -> bool {
        self.groups.len() >= WAL_PIPELINE_DEPTH || self.waiting.as_ref().is_some_and(|w| w.accepted.len() >= max_group_commits)
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.waiting.is_none()
    }

    /// Starts the WAL put of `group`, the newest one.
    async fn start_put(&mut self, db: &Arc<Database>, mut group: Group) {
        db.metrics.group_size.observe(group.accepted.len() as f64);
        group.put_at = Instant::now();
        let mut wal = db.wal.lock().await;
        group.seq = wal.reserve();
        // In commit order, like the puts; the commits are not visible before
        // they land, so dropping their rows from caches now is early, never
        // late. Not DDL: computes reload their catalog when told of it, so
        // that is told once the new catalog is applied (in `finish`).
        if !group.accepted.iter().any(|(job, _)| job.is_ddl()) {
            group.acks = db.row_watches.publish(&group.commits, group.last_ts());
            group.published = true;
        }
        let put = put_wal(db.clone(), wal.putter(), group.seq, group.commits.clone(), self.shutdown.clone());
        drop(wal);
        self.puts.push_back(Box::pin(put));
        self.groups.push_back(group);
    }

    /// Takes a group applied early: its put starts now or becomes the
    /// waiting group (see `waiting`).
    async fn push_early(&mut self, db: &Arc<Database>, group: Group, depends: bool) {
        let depends = depends && !self.groups.is_empty();
        match self.waiting.as_mut() {
            Some(w) => {
                w.absorb(group);
                self.waiting_depends |= depends;
            }
            None => {
                if depends {
                    db.metrics.dependent_groups.inc();
                }
                self.waiting = Some(group);
                self.waiting_depends = depends;
            }
        }
        self.start_waiting(db).await;
        self.gather_held |= self.waiting.is_some() && self.groups.is_empty();
    }

    /// When the waiting group's put may start (`None`: no group waits, or
    /// only once every earlier group landed).
    fn waiting_due(&self) -> Option<Instant> {
        let waiting = self.waiting.as_ref()?;
        match self.groups.front() {
            // At most WAL_PIPELINE_DEPTH puts in flight: fencing relies on it.
            Some(_) if self.waiting_depends || self.groups.len() >= WAL_PIPELINE_DEPTH => None,
            Some(oldest) => Some(oldest.put_at + self.overlap_after),
            None => match self.gathering {
                Some((expected, until)) if waiting.accepted.len() < expected => Some(until),
                _ => Some(Instant::now()),
            },
        }
    }

    /// Starts the waiting group's put if it is due.
    async fn start_waiting(&mut self, db: &Arc<Database>) {
        if self.waiting_due().is_some_and(|due| due <= Instant::now()) {
            self.start_waiting_now(db).await;
        }
    }

    async fn start_waiting_now(&mut self, db: &Arc<Database>) {
        let Some(w) = self.waiting.take() else { return };
        if let Some((expected, _)) = self.gathering.take_if(|_| self.groups.is_empty())
            && std::mem::take(&mut self.gather_held)
        {
            let outcome = if w.accepted.len() >= expected { "filled" } else { "timed_out" };
            db.metrics.commit_gathers.with_label_values(&[outcome]).inc();
        }
        self.start_put(db, w).await;
    }

    /// Waits for the oldest put and retires its group (starting the
    /// waiting group's put first if nothing else is in flight).
    async fn retire_one(&mut self, db: &Arc<Database>) -> bool {
        if self.groups.is_empty() {
            self.start_waiting_now(db).await;
        }
        match self.puts.next().await {
            Some(result) => self.retire(db, result, 0).await,
            None => true,
        }
    }

    /// Answers the oldest group (applying it first unless it was applied
    /// early) once its put ended with `result`, `queued` commits waiting to
    /// be validated; `false` if the database cannot take more commits
    /// (fenced, poisoned, shutting down).
    async fn retire(&mut self, db: &Arc<Database>, result: std::result::Result<(), AppendError>, queued: usize) -> bool {
        let Some(group) = self.groups.pop_front() else { return true };
        self.gather.put_took(group.put_at.elapsed());
        if self.groups.is_empty() {
            let held = self.waiting.as_ref().map_or(0, |w| w.accepted.len());
            // A group never grows past max_group_commits (receiving stops there).
            let most = db.cfg.max_group_commits;
            self.gathering =
                self.gather.landed(group.accepted.len(), queued + held).map(|expected| (expected.min(most), Instant::now() + self.gather.wait()));
        }
        for k in &group.keys {
            self.pending.remove(k);
        }
        let result = match result {
            Ok(()) => {
                db.wal.lock().await.record(group.seq, group.last_ts());
                Ok(())
            }
            Err(AppendError::Fenced) => {
                db.mark_fenced();
                Err(StorageError::Fenced(db.name.clone()))
            }
            Err(AppendError::Store(e)) => Err(e),
        };
        if finish(db, group, result).await {
            self.start_waiting(db).await;
            return true;
        }
        // Later groups may or may not have landed; nobody learns they did.
        self.puts = FuturesOrdered::new();
        self.pending.clear();
        for g in self.groups.drain(..).chain(self.waiting.take()) {
            db.metrics.commit_failures.inc_by(g.accepted.len() as u64);
            g.fail(|| StorageError::CommitOutcomeUnknown("an earlier commit group failed".into()));
        }
        false
    }

    /// Retires every group in flight or waiting.
    async fn drain(&mut self, db: &Arc<Database>) {
        while !self.is_empty() {
            self.retire_one(db).await;
        }
    }
}

/// Runs until shutdown: takes every waiting commit, validates, makes the
/// group durable and answers. In remote mode several groups' WAL puts are
/// in flight at once; groups are answered strictly in order, each only
/// after its own put and every earlier one landed.
pub async fn run_committer(db: Arc<Database>, mut rx: mpsc::Receiver<CommitJob>, mut shutdown: watch::Receiver<bool>) {
    let mut next_ts = db.visible_ts() + 1;
    let mut pipeline = Pipeline {
        groups: VecDeque::new(),
        puts: FuturesOrdered::new(),
        pending: HashSet::new(),
        waiting: None,
        waiting_depends: false,
        overlap_after: db.cfg.overlap_puts_after,
        gather: Gather::new(db.cfg.commit_gather),
        gathering: None,
        gather_held: false,
        shutdown: shutdown.clone(),
    };
    // A job taken from the queue for the next group.
    let mut next: Option<CommitJob> = None;
    loop {
        let due = pipeline.waiting_due();
        let first = if let Some(j) = next.take() { j } else { tokio::select! {
            biased;
            _ = shutdown.changed() => {
                // Answer what is in flight (puts give up on shutdown).
                pipeline.drain(&db).await;
                return;
            }
            // Only the stream poll sits in the select (it is cancel-safe);
            // retiring happens outside it.
            Some(landed) = pipeline.puts.next(), if !pipeline.groups.is_empty() => {
                pipeline.retire(&db, landed, rx.len()).await;
                continue;
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                pipeline.start_waiting(&db).await;
                continue;
            }
            job = rx.recv(), if !pipeline.is_full(db.cfg.max_group_commits) => match job {
                Some(j) => j,
                None => {
                    pipeline.drain(&db).await;
                    return;
                }
            },
        } };
        let mut jobs = vec![first];
        // A commit with work to prepare goes in a group of its own.
        while jobs.len() < db.cfg.max_group_commits && jobs[0].prepare.is_none() {
            match rx.try_recv() {
                Ok(j) if j.prepare.is_some() => {
                    next = Some(j);
                    break;
                }
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        pipeline.gather.observe(&jobs);
        if let Err(e) = db.check_owned() {
            refuse(&db, jobs, &e);
            continue;
        }
        let ddl = jobs.iter().any(CommitJob::is_ddl);
        let remote = db.cfg.durability == Durability::Remote;
        let early = remote && !ddl && db.hold_early_apply.load(std::sync::atomic::Ordering::SeqCst) == 0;
        if ddl || (!early && pipeline.waiting.is_some()) {
            pipeline.drain(&db).await;
            // A group that failed while draining leaves the database fenced
            // or poisoned; the DDL must not be validated against that state.
            if let Err(e) = db.check_owned() {
                refuse(&db, jobs, &e);
                continue;
            }
        }
        // Validate and assign timestamps (a big group — a bulk load, a
        // table rewrite — off the runtime's worker: seconds of hashing and
        // key lookups there would stall the tasks queued behind it, such as
        // the row watches whose acknowledgements this very group awaits).
        let big = jobs.iter().map(|j| j.writes.len()).sum::<usize>() > BIG_GROUP_WRITES;
        let mut group = Group::new(early);
        heavy(big, || {
            for mut job in jobs {
                if let Some(prepare) = job.prepare.take() {
                    // Alone in a DDL group: every earlier commit is applied.
                    // A read of a whole table: off the runtime's worker when it has others.
                    let prepared = blocking(|| match prepare {
                        Prepare::FillIndex(table, index) => db.fill_index(&table, &index).map(|entries| job.writes.extend(entries)),
                        Prepare::CheckForeignKey(table, fk) => db.check_existing_references(&table, fk),
                        Prepare::CheckColumn(table, column) => db.check_column(&table, &column),
                    });
                    if let Err(e) = prepared {
                        job.held = None;
                        let _ = job.reply.send(Err(e));
                        continue;
                    }
                }
                if let Err(e) = db.validate(&job, &pipeline.pending) {
                    if matches!(e, StorageError::Conflict) {
                        db.metrics.conflicts.inc();
                    }
                    job.held = None;
                    let _ = job.reply.send(Err(e));
                    continue;
                }
                let ts = next_ts;
                next_ts += 1;
                let mut ops = Vec::with_capacity(job.writes.len());
                for (key, p) in &job.writes {
                    if !early {
                        pipeline.pending.insert(key.clone());
                        group.keys.push(key.clone());
                    }
                    ops.push(WalOp { key: key.clone(), value: p.value.clone() });
                }
                group.commits.push(WalCommit { commit_ts: ts, ops, dropped_tables: job.dropped_tables.clone() });
                group.accepted.push((job, ts));
            }
        });
        if group.accepted.is_empty() {
            continue;
        }
        // Commits that read commits applied early (after a lock wait) must
        // not land before those did.
        let visible = db.visible_ts();
        let depends = group.accepted.iter().any(|(j, _)| j.snapshot_ts > visible);
        if early {
            if let Err(e) = heavy(big, || apply_early(&db, &group)) {
                // Nothing of the group was applied and its put never started.
                tracing::error!(database = %db.name, error = %e, "applying a commit group failed");
                db.metrics.commit_failures.inc_by(group.accepted.len() as u64);
                db.poison(&e.to_string());
                group.fail(|| StorageError::Poisoned(db.name.clone()));
                continue;
            }
            for (job, _) in &mut group.accepted {
                job.held = None;
            }
            db.metrics.commits_applied_early.inc_by(group.accepted.len() as u64);
            pipeline.push_early(&db, group, depends).await;
            continue;
        }
        match db.cfg.durability {
            Durability::Remote => {
                if depends {
                    pipeline.drain(&db).await;
                    if let Err(e) = db.check_owned() {
                        // An earlier group failed: these never reach the store.
                        for k in &group.keys {
                            pipeline.pending.remove(k);
                        }
                        group.fail(|| refusal(&db, &e));
                        continue;
                    }
                }
                pipeline.start_put(&db, group).await;
                if ddl {
                    pipeline.drain(&db).await;
                }
            }
            Durability::Local => {
                db.metrics.group_size.observe(group.accepted.len() as f64);
                for k in &group.keys {
                    pipeline.pending.remove(k);
                }
                finish(&db, group, Ok(())).await;
            }
        }
    }
}

/// Applies a validated group before its put (early lock release).
fn apply_early(db: &Database, group: &Group) -> Result<()> {
    let _guard = db.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
    db.apply(&group.commits, false)?;
    db.snapshots.applied_up_to(group.last_ts());
    Ok(())
}

/// Answers commits the database can no longer take (fenced or poisoned).
fn refuse(db: &Database, jobs: Vec<CommitJob>, why: &StorageError) {
    for j in jobs {
        let _ = j.reply.send(Err(refusal(db, why)));
    }
}

/// The error for a commit refused because the database is fenced or
/// poisoned (`why`: what `check_owned` said).
fn refusal(db: &Database, why: &StorageError) -> StorageError {
    match why {
        StorageError::Fenced(n) => StorageError::Fenced(n.clone()),
        _ => StorageError::Poisoned(db.name.clone()),
    }
}

/// Makes a group whose durability step ended with `durable` visible —
/// applying it first unless it was applied early, and once computes'
/// row-change watches acknowledged it (see `row_watch`) — and answers its
/// commits. Returns `false` if the database can take no more commits.
async fn finish(db: &Database, mut group: Group, durable: Result<()>) -> bool {
    let result = durable.and_then(|()| {
        if group.early {
            return db.record_durable(group.last_ts());
        }
        let big = group.commits.iter().map(|c| c.ops.len()).sum::<usize>() > BIG_GROUP_WRITES;
        heavy(big, || {
            let _guard = db.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
            db.apply(&group.commits, true)
        })
    });
    match result {
        Ok(()) => {
            // Local durability and DDL publish here; the rest did as its put started.
            let acks = if group.published { group.acks.take() } else { db.row_watches.publish(&group.commits, group.last_ts()) };
            if let Some(acks) = acks {
                db.row_watches.wait(acks).await;
            }
            db.snapshots.advance(group.last_ts());
            db.metrics.commits.inc_by(group.accepted.len() as u64);
            for (job, ts) in group.accepted {
                let _ = job.reply.send(Ok(ts));
            }
            true
        }
        Err(e) => {
            // Not visible; its timestamps are burnt. A group applied early
            // stays in the local copy, which the next open restores.
            tracing::error!(database = %db.name, error = %e, "commit group failed");
            db.metrics.commit_failures.inc_by(group.accepted.len() as u64);
            let msg = e.to_string();
            // Shutting down here means a put was still being retried: an
            // earlier attempt may have landed, so the outcome is unknown.
            group.fail(|| match &e {
                StorageError::Fenced(n) => StorageError::Fenced(n.clone()),
                _ => StorageError::CommitOutcomeUnknown(msg.clone()),
            });
            if !matches!(e, StorageError::Fenced(_) | StorageError::ShuttingDown) {
                // The group is durable (remote) or may be partly on disk
                // (local), but the local copy could not take it: stop taking
                // writes rather than diverge; a restart recovers.
                db.poison(&msg);
            }
            false
        }
    }
}

/// Puts one group as WAL object `seq`, retrying store errors with backoff
/// until it lands, the node is fenced or shuts down.
async fn put_wal(
    db: Arc<Database>,
    putter: WalPutter,
    seq: u64,
    commits: Vec<WalCommit>,
    mut shutdown: watch::Receiver<bool>,
) -> std::result::Result<(), AppendError> {
    let mut backoff = Duration::from_millis(10);
    let started = Instant::now();
    loop {
        let attempt = Instant::now();
        match putter.put(seq, commits.clone()).await {
            Ok(_) => {
                db.metrics.wal_upload_seconds.observe(attempt.elapsed().as_secs_f64());
                return Ok(());
            }
            Err(AppendError::Fenced) => return Err(AppendError::Fenced),
            Err(AppendError::Store(e)) => {
                tracing::warn!(database = %db.name, seq, error = %e, waited = ?started.elapsed(), "WAL upload failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Err(AppendError::Store(StorageError::ShuttingDown)),
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
