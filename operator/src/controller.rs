//! The controller: a warm pool of unbound computes, `acquire` for the proxy,
//! and a periodic tick that notices dead computes, refills the pool, scales
//! databases with their load, drains before scale-in and scales idle
//! databases to zero. Runtime-agnostic: the same code drives processes
//! (`ebb local`) and pods (`ebb operator`). Load comes from the proxy when
//! it runs in the same process, else from the computes' own stats.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::autoscaler::{Autoscaler, AutoscalerConfig};
use crate::control_client::{ControlClient, ControlError};
use crate::runtime::{ComputeInstance, Runtime};

/// How long `acquire` waits for a pool compute that is starting before it
/// starts one of its own.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// How long the tick waits for a compute's stats.
const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// Controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Unbound computes kept warm.
    pub pool_size: usize,
    /// A database with no sessions for this long scales to zero.
    pub idle_timeout: Duration,
    /// Scaling of each database while it has sessions.
    pub autoscaler: AutoscalerConfig,
    /// How often the controller looks at load and health.
    pub tick: Duration,
    /// Serve only databases configured with
    /// [`configure_database`](Controller::configure_database) (Kubernetes:
    /// those with a `Database` resource); others are unknown.
    pub configured_only: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            pool_size: 2,
            idle_timeout: Duration::from_secs(300),
            autoscaler: AutoscalerConfig::default(),
            tick: Duration::from_millis(500),
            configured_only: false,
        }
    }
}

/// Settings of one database (a Kubernetes `Database` sets its own; `ebb
/// local` uses the controller's defaults for every database).
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// Computes kept even without sessions; 0 lets it scale to zero.
    pub min_replicas: u32,
    /// With `min_replicas` 0: no sessions for this long scales it to zero.
    pub idle_timeout: Duration,
    /// Scaling while it has sessions (its `min_replicas` is at least 1).
    pub autoscaler: AutoscalerConfig,
}

impl ControllerConfig {
    /// The settings of a database that sets none of its own.
    pub fn database_defaults(&self) -> DatabaseConfig {
        DatabaseConfig { min_replicas: 0, idle_timeout: self.idle_timeout, autoscaler: self.autoscaler.clone() }
    }
}

/// Open sessions per compute id, as the proxy counts them.
pub trait LoadSource: Send + Sync + 'static {
    /// Sessions per compute id.
    fn sessions(&self) -> HashMap<String, u64>;
}

/// Why `acquire` found no compute.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("no compute available: {0}")]
    Unavailable(String),
}

/// How a database got its compute (the resume-latency label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Claimed from the warm pool.
    PoolHit,
    /// The pool was empty but refilling: waited for a pool compute.
    PoolMiss,
    /// The pool was empty: a compute was started for it.
    Cold,
}

/// State of a database as `ebb status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseState {
    Suspended,
    Resuming,
    Running,
    Draining,
}

impl DatabaseState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspended => "suspended",
            Self::Resuming => "resuming",
            Self::Running => "running",
            Self::Draining => "draining",
        }
    }
}

/// One database in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseStatus {
    pub name: String,
    pub state: DatabaseState,
    /// Computes serving it (not draining).
    pub replicas: usize,
    pub connections: u64,
    /// PostgreSQL addresses of the computes serving it (not draining).
    pub computes: Vec<std::net::SocketAddr>,
}

/// What the controller runs right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub databases: Vec<DatabaseStatus>,
    /// Configured pool size.
    pub pool_size: usize,
    /// Unbound computes ready now.
    pub pool_ready: usize,
}

struct Bound {
    instance: ComputeInstance,
    client: ControlClient,
    draining: bool,
}

struct Db {
    cfg: DatabaseConfig,
    computes: Vec<Bound>,
    autoscaler: Autoscaler,
    last_active: Instant,
    /// Held while a compute is being added, so concurrent clients of a
    /// sleeping database wake it once.
    waking: Arc<tokio::sync::Mutex<()>>,
    resuming: bool,
    /// Scale-outs that failed in a row, and when the next may be tried.
    grow_failures: u32,
    grow_after: Option<Instant>,
}

/// How long scale-out waits after `failures` failed attempts in a row:
/// 1 s, 2 s, 4 s, … up to a minute.
pub fn grow_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[derive(Default)]
struct State {
    pool: Vec<(ComputeInstance, ControlClient)>,
    starting: usize,
    databases: HashMap<String, Db>,
    /// Settings of databases configured one by one.
    configs: HashMap<String, DatabaseConfig>,
}

/// Things a tick decided to do outside the state lock.
#[derive(Default)]
struct Actions {
    stop: Vec<String>,
    drain: Vec<ControlClient>,
    grow: Vec<String>,
    start_pool: usize,
}

/// The controller.
pub struct Controller {
    runtime: Arc<dyn Runtime>,
    cfg: ControllerConfig,
    state: Mutex<State>,
    load: Mutex<Option<Arc<dyn LoadSource>>>,
    /// Unbound computes kept warm (starts as `cfg.pool_size`).
    pool_size: AtomicUsize,
    /// Sessions per compute from the computes' stats, when no load source is set.
    polled: Mutex<HashMap<String, u64>>,
    /// Every resume: how it was served and how long it took.
    resumes: Mutex<Vec<(Resume, Duration)>>,
    /// Signalled when a compute joins the pool.
    pool_filled: tokio::sync::Notify,
    /// Set by [`stop_all`](Self::stop_all).
    stopping: AtomicBool,
}

impl Controller {
    /// A controller over `runtime`; call [`run`](Self::run) to start it.
    pub fn new(runtime: Arc<dyn Runtime>, cfg: ControllerConfig) -> Arc<Self> {
        Arc::new(Self {
            runtime,
            pool_size: AtomicUsize::new(cfg.pool_size),
            cfg,
            state: Mutex::new(State::default()),
            load: Mutex::new(None),
            polled: Mutex::new(HashMap::new()),
            resumes: Mutex::new(Vec::new()),
            pool_filled: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        })
    }

    /// Where session counts come from (the proxy).
    pub fn set_load_source(&self, source: Arc<dyn LoadSource>) {
        *self.load.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> HashMap<String, u64> {
        let source = self.load.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match source {
            Some(s) => s.sessions(),
            None => self.polled.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Changes the pool size (Kubernetes: `spec.pool.size` changed).
    pub fn set_pool_size(&self, size: usize) {
        self.pool_size.store(size, Ordering::Relaxed);
    }

    /// Ids of every compute the controller knows (pool and bound).
    fn tracked(&self) -> std::collections::HashSet<String> {
        let st = self.state();
        st.pool.iter().map(|(i, _)| i.id.clone()).chain(st.databases.values().flat_map(|d| d.computes.iter().map(|c| c.instance.id.clone()))).collect()
    }

    /// Without a load source, asks every bound compute for its sessions.
    async fn poll_stats(&self) {
        if self.load.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return;
        }
        let clients: Vec<(String, String, ControlClient)> = {
            let st = self.state();
            st.databases
                .iter()
                .flat_map(|(name, d)| d.computes.iter().map(move |c| (name.clone(), c.instance.id.clone(), c.client.clone())))
                .collect()
        };
        let ids: std::collections::HashSet<String> = clients.iter().map(|(_, id, _)| id.clone()).collect();
        let polls = clients.into_iter().map(|(database, id, client)| async move {
            match tokio::time::timeout(STATS_TIMEOUT, client.stats()).await {
                Ok(Ok(stats)) => Some((database, id, stats)),
                Ok(Err(e)) => {
                    tracing::debug!(compute = %id, error = %e, "stats failed; keeping its last count");
                    None
                }
                Err(_) => None,
            }
        });
        let fresh: Vec<_> = futures::future::join_all(polls).await.into_iter().flatten().collect();
        // A compute that no longer knows its database restarted (its
        // binding lives in memory): it serves nobody, so it goes.
        let lost: Vec<(String, String)> =
            fresh.iter().filter(|(db, _, s)| s.database != *db).map(|(db, id, _)| (db.clone(), id.clone())).collect();
        {
            let mut polled = self.polled.lock().unwrap_or_else(|p| p.into_inner());
            // A compute that did not answer keeps its last count: a draining
            // one must not look idle because one poll failed.
            polled.retain(|id, _| ids.contains(id));
            polled.extend(fresh.into_iter().map(|(_, id, s)| (id, s.connections)));
        }
        for (database, id) in lost {
            tracing::warn!(%database, compute = %id, "a compute lost its database (restarted?); replacing it");
            if let Some(db) = self.state().databases.get_mut(&database) {
                db.computes.retain(|c| c.instance.id != id);
            }
            self.runtime.stop(&id).await;
        }
    }

    /// Sets the settings of `database` (they apply from the next tick; a
    /// changed autoscaler starts from fresh samples). A database with
    /// `min_replicas` > 0 is brought up to it even without sessions.
    pub fn configure_database(&self, database: &str, cfg: DatabaseConfig) {
        let now = Instant::now();
        let mut st = self.state();
        st.configs.insert(database.to_string(), cfg.clone());
        if let Some(db) = st.databases.get_mut(database) {
            if db.cfg.autoscaler != cfg.autoscaler {
                db.autoscaler = Autoscaler::new(cfg.autoscaler.clone());
            }
            db.cfg = cfg;
        } else if cfg.min_replicas > 0 {
            let db = self.new_db(cfg, now);
            st.databases.insert(database.to_string(), db);
        }
    }

    /// Forgets `database` (its resource was deleted): its computes are stopped.
    pub async fn remove_database(&self, database: &str) {
        let ids: Vec<String> = {
            let mut st = self.state();
            st.configs.remove(database);
            st.databases.remove(database).map(|d| d.computes.into_iter().map(|c| c.instance.id).collect()).unwrap_or_default()
        };
        for id in ids {
            self.runtime.stop(&id).await;
        }
    }

    fn config_of(&self, st: &State, database: &str) -> DatabaseConfig {
        st.configs.get(database).cloned().unwrap_or_else(|| self.cfg.database_defaults())
    }

    /// Resumes recorded so far (and clears them): for metrics.
    pub fn take_resumes(&self) -> Vec<(Resume, Duration)> {
        std::mem::take(&mut *self.resumes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A ready compute for `database`: the least-loaded one serving it,
    /// else one claimed from the pool, else a new one.
    pub async fn acquire(self: &Arc<Self>, database: &str) -> Result<ComputeInstance, AcquireError> {
        if let Some(i) = self.least_loaded(database) {
            return Ok(i);
        }
        // Waking runs as a task of its own: a caller that gives up (the
        // proxy's deadline) must not leave a compute attached but untracked,
        // or the database marked as resuming.
        let this = self.clone();
        let database = database.to_string();
        tokio::spawn(async move { this.wake(&database).await })
            .await
            .map_err(|e| AcquireError::Unavailable(format!("waking failed: {e}")))?
    }

    fn new_db(&self, cfg: DatabaseConfig, now: Instant) -> Db {
        Db {
            autoscaler: Autoscaler::new(cfg.autoscaler.clone()),
            cfg,
            computes: Vec::new(),
            last_active: now,
            waking: Arc::default(),
            resuming: false,
            grow_failures: 0,
            grow_after: None,
        }
    }

    async fn wake(&self, database: &str) -> Result<ComputeInstance, AcquireError> {
        let waking = {
            let mut st = self.state();
            if self.cfg.configured_only && !st.configs.contains_key(database) {
                return Err(AcquireError::UnknownDatabase(database.to_string()));
            }
            let now = Instant::now();
            let cfg = self.config_of(&st, database);
            st.databases.entry(database.to_string()).or_insert_with(|| self.new_db(cfg, now)).waking.clone()
        };
        let _waking = waking.lock().await;
        if let Some(i) = self.least_loaded(database) {
            return Ok(i);
        }
        self.set_resuming(database, true);
        let r = self.add_compute(database).await;
        self.set_resuming(database, false);
        if matches!(r, Err(AcquireError::UnknownDatabase(_))) {
            let mut st = self.state();
            if st.databases.get(database).is_some_and(|d| d.computes.is_empty()) {
                st.databases.remove(database);
            }
        }
        r
    }

    fn set_resuming(&self, database: &str, on: bool) {
        if let Some(db) = self.state().databases.get_mut(database) {
            db.resuming = on;
            db.last_active = Instant::now();
        }
    }

    fn least_loaded(&self, database: &str) -> Option<ComputeInstance> {
        let sessions = self.sessions();
        let st = self.state();
        let db = st.databases.get(database)?;
        db.computes
            .iter()
            .filter(|c| !c.draining && self.runtime.is_alive(&c.instance.id))
            .min_by_key(|c| sessions.get(&c.instance.id).copied().unwrap_or(0))
            .map(|c| c.instance.clone())
    }

    /// A pool compute: one that is ready, else one that is being started
    /// (waiting for it is faster than starting another); `None` when the
    /// pool is empty and not refilling.
    async fn claim_from_pool(&self, database: &str) -> Option<(ComputeInstance, ControlClient, Resume)> {
        if self.runtime.keeps_pool() {
            return self.claim_from_runtime(database).await;
        }
        let deadline = Instant::now() + POOL_WAIT;
        let mut how = Resume::PoolHit;
        loop {
            let filled = self.pool_filled.notified();
            {
                let mut st = self.state();
                if let Some((i, c)) = st.pool.pop() {
                    return Some((i, c, how));
                }
                if st.starting == 0 {
                    return None;
                }
            }
            how = Resume::PoolMiss;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, filled).await.is_err() {
                return None;
            }
        }
    }

    /// A compute claimed from the runtime's own pool.
    async fn claim_from_runtime(&self, database: &str) -> Option<(ComputeInstance, ControlClient, Resume)> {
        let instance = match self.runtime.claim(database).await {
            Ok(Some(i)) => i,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%database, error = %e, "claiming a warm compute failed; starting one");
                return None;
            }
        };
        match ControlClient::connect(instance.control_addr).await {
            Ok(c) => Some((instance, c, Resume::PoolHit)),
            Err(e) => {
                tracing::warn!(compute = %instance.id, error = %e, "a claimed warm compute is unreachable; stopping it");
                self.runtime.stop(&instance.id).await;
                None
            }
        }
    }

    /// Binds one more compute to `database`.
    async fn add_compute(&self, database: &str) -> Result<ComputeInstance, AcquireError> {
        let started = Instant::now();
        let (instance, client, how) = match self.claim_from_pool(database).await {
            Some((i, c, how)) => (i, c, how),
            None => {
                let i = self.runtime.start().await.map_err(|e| AcquireError::Unavailable(e.to_string()))?;
                match ControlClient::connect(i.control_addr).await {
                    Ok(c) => (i, c, Resume::Cold),
                    Err(e) => {
                        self.runtime.stop(&i.id).await;
                        return Err(AcquireError::Unavailable(e.to_string()));
                    }
                }
            }
        };
        match client.attach(database).await {
            Ok(()) => {
                let took = started.elapsed();
                tracing::info!(%database, compute = %instance.id, resume = ?how, ?took, "compute attached");
                self.resumes.lock().unwrap_or_else(|p| p.into_inner()).push((how, took));
                if how == Resume::Cold {
                    self.runtime.bound(&instance.id, database).await;
                }
                let mut st = self.state();
                let now = Instant::now();
                let cfg = self.config_of(&st, database);
                let db = st.databases.entry(database.to_string()).or_insert_with(|| self.new_db(cfg, now));
                db.computes.push(Bound { instance: instance.clone(), client, draining: false });
                db.last_active = now;
                Ok(instance)
            }
            Err(ControlError::UnknownDatabase(_)) if !self.runtime.keeps_pool() => {
                // Still unbound: back to the pool.
                self.state().pool.push((instance, client));
                self.pool_filled.notify_waiters();
                Err(AcquireError::UnknownDatabase(database.to_string()))
            }
            Err(ControlError::UnknownDatabase(_)) => {
                // Claimed out of the runtime's pool: it cannot go back.
                self.runtime.stop(&instance.id).await;
                Err(AcquireError::UnknownDatabase(database.to_string()))
            }
            Err(e) => {
                self.runtime.stop(&instance.id).await;
                Err(AcquireError::Unavailable(format!("attach to {}: {e}", instance.id)))
            }
        }
    }

    /// Runs the periodic tick until `shutdown`, then stops every compute.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        self.clone().run_ticks(shutdown).await;
        self.stop_all().await;
    }

    /// Runs the periodic tick until `shutdown`, leaving computes running
    /// (the operator stepping down: its successor adopts them).
    pub async fn run_ticks(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.clone().tick(Instant::now()).await,
                _ = &mut shutdown => break,
            }
        }
    }

    /// Takes over a compute claimed for `database` (found running by an
    /// operator that just started). One claimed but never attached (its
    /// claimer crashed in between) is attached now; one bound to another
    /// database is refused.
    pub async fn adopt(&self, database: &str, instance: ComputeInstance) -> Result<(), ControlError> {
        let client = ControlClient::connect(instance.control_addr).await?;
        let stats = client.stats().await?;
        if stats.database.is_empty() {
            client.attach(database).await?;
        } else if stats.database != database {
            return Err(ControlError::Refused(format!("{} is bound to {:?}, not {database:?}", instance.id, stats.database)));
        }
        let draining = stats.draining;
        let mut st = self.state();
        let now = Instant::now();
        let cfg = self.config_of(&st, database);
        let db = st.databases.entry(database.to_string()).or_insert_with(|| self.new_db(cfg, now));
        if !db.computes.iter().any(|c| c.instance.id == instance.id) {
            tracing::info!(%database, compute = %instance.id, draining, "adopted a running compute");
            db.computes.push(Bound { instance, client, draining });
        }
        Ok(())
    }

    /// One look at health and load; acts on what it finds.
    pub async fn tick(self: Arc<Self>, now: Instant) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let tracked = self.tracked();
        self.runtime.refresh(&tracked).await;
        self.poll_stats().await;
        let sessions = self.sessions();
        let actions = self.decide(now, &sessions);
        for id in &actions.stop {
            self.runtime.stop(id).await;
        }
        for client in actions.drain {
            if let Err(e) = client.drain().await {
                tracing::warn!(error = %e, "drain failed; the compute will be stopped when its sessions end");
            }
        }
        for database in actions.grow {
            let this = self.clone();
            tokio::spawn(async move {
                let Some(waking) = this.state().databases.get(&database).map(|d| d.waking.clone()) else { return };
                let Ok(_guard) = waking.try_lock() else { return };
                let failed = this.add_compute(&database).await.err();
                let mut st = this.state();
                let Some(db) = st.databases.get_mut(&database) else { return };
                match failed {
                    None => (db.grow_failures, db.grow_after) = (0, None),
                    Some(e) => {
                        db.grow_failures += 1;
                        let wait = grow_backoff(db.grow_failures);
                        db.grow_after = Some(Instant::now() + wait);
                        tracing::warn!(%database, error = %e, failures = db.grow_failures, retry_in = ?wait, "scale-out failed");
                    }
                }
            });
        }
        for _ in 0..actions.start_pool {
            let this = self.clone();
            tokio::spawn(async move {
                let started = match this.runtime.start().await {
                    Ok(i) => match ControlClient::connect(i.control_addr).await {
                        Ok(c) => Some((i, c)),
                        Err(e) => {
                            tracing::warn!(error = %e, "a new pool compute is unreachable");
                            this.runtime.stop(&i.id).await;
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "could not refill the pool");
                        None
                    }
                };
                let orphan = {
                    let mut st = this.state();
                    st.starting -= 1;
                    match started {
                        // Started while shutting down: nothing would stop it later.
                        Some((i, _)) if this.stopping.load(Ordering::SeqCst) => Some(i.id),
                        Some(p) => {
                            st.pool.push(p);
                            None
                        }
                        None => None,
                    }
                };
                match orphan {
                    Some(id) => this.runtime.stop(&id).await,
                    None => this.pool_filled.notify_waiters(),
                }
            });
        }
    }

    /// The decisions of one tick, made under the state lock.
    fn decide(&self, now: Instant, sessions: &HashMap<String, u64>) -> Actions {
        let mut actions = Actions::default();
        let mut st = self.state();
        let runtime = &self.runtime;
        st.pool.retain(|(i, _)| {
            let alive = runtime.is_alive(&i.id);
            if !alive {
                tracing::warn!(compute = %i.id, "a pool compute died; replacing it");
            }
            alive
        });
        for (name, db) in st.databases.iter_mut() {
            db.computes.retain(|c| {
                let alive = runtime.is_alive(&c.instance.id);
                if !alive {
                    tracing::warn!(database = %name, compute = %c.instance.id, "a compute died; its sessions were ended");
                }
                alive
            });
            let load = |c: &Bound| sessions.get(&c.instance.id).copied().unwrap_or(0);
            let total: u64 = db.computes.iter().map(load).sum();
            if total > 0 || db.resuming {
                db.last_active = now;
            }
            // Drained computes go once their last session ended.
            db.computes.retain(|c| {
                let done = c.draining && load(c) == 0;
                if done {
                    actions.stop.push(c.instance.id.clone());
                }
                !done
            });
            let may_grow = db.grow_after.is_none_or(|t| now >= t);
            if db.computes.is_empty() {
                if db.cfg.min_replicas > 0 && !db.resuming && may_grow {
                    actions.grow.push(name.clone());
                }
                continue;
            }
            if total == 0 && db.cfg.min_replicas == 0 && now.duration_since(db.last_active) >= db.cfg.idle_timeout {
                tracing::info!(database = %name, idle = ?db.cfg.idle_timeout, "idle: scaling to zero");
                for c in db.computes.drain(..) {
                    actions.stop.push(c.instance.id);
                }
                db.autoscaler = Autoscaler::new(db.cfg.autoscaler.clone());
                continue;
            }
            db.autoscaler.record(now, total as f64);
            let ready = db.computes.iter().filter(|c| !c.draining).count() as u32;
            let desired = db.autoscaler.desired(now, ready);
            if desired > ready && may_grow {
                actions.grow.push(name.clone());
            } else if desired < ready {
                let mut candidates: Vec<&mut Bound> = db.computes.iter_mut().filter(|c| !c.draining).collect();
                candidates.sort_by_key(|c| sessions.get(&c.instance.id).copied().unwrap_or(0));
                for c in candidates.into_iter().take((ready - desired) as usize) {
                    tracing::info!(database = %name, compute = %c.instance.id, "scaling in: draining");
                    c.draining = true;
                    actions.drain.push(c.client.clone());
                }
            }
        }
        let have = st.pool.len() + st.starting;
        let pool_size = self.pool_size.load(Ordering::Relaxed);
        if !self.runtime.keeps_pool() && have < pool_size {
            actions.start_pool = pool_size - have;
            st.starting += actions.start_pool;
        }
        actions
    }

    /// Stops every compute (shutdown); pool computes still starting are
    /// stopped as soon as they are up.
    pub async fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let ids: Vec<String> = {
            let mut st = self.state();
            let mut ids: Vec<String> = st.pool.drain(..).map(|(i, _)| i.id).collect();
            for db in st.databases.values_mut() {
                ids.extend(db.computes.drain(..).map(|c| c.instance.id));
            }
            ids
        };
        for id in ids {
            self.runtime.stop(&id).await;
        }
    }

    /// What runs now.
    pub fn status(&self) -> Status {
        let sessions = self.sessions();
        let st = self.state();
        let mut databases: Vec<DatabaseStatus> = st
            .databases
            .iter()
            .map(|(name, db)| {
                let replicas = db.computes.iter().filter(|c| !c.draining).count();
                let draining = db.computes.len() - replicas;
                let state = match (replicas, draining, db.resuming) {
                    (_, _, true) => DatabaseState::Resuming,
                    (0, 0, false) => DatabaseState::Suspended,
                    (0, _, false) => DatabaseState::Draining,
                    _ => DatabaseState::Running,
                };
                let connections = db.computes.iter().map(|c| sessions.get(&c.instance.id).copied().unwrap_or(0)).sum();
                let computes = db.computes.iter().filter(|c| !c.draining).map(|c| c.instance.pg_addr).collect();
                DatabaseStatus { name: name.clone(), state, replicas, connections, computes }
            })
            .collect();
        databases.sort_by(|a, b| a.name.cmp(&b.name));
        let pool_ready = if self.runtime.keeps_pool() { self.runtime.warm_ready() } else { st.pool.len() };
        Status { databases, pool_size: self.pool_size.load(Ordering::Relaxed), pool_ready }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_out_backs_off_exponentially_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|f| grow_backoff(f).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(grow_backoff(u32::MAX), Duration::from_secs(60));
    }
}
