//! Row-change watches: how a compute may answer reads from rows it cached
//! and still give every read the latest commit.
//!
//! A compute that caches rows opens a watch on the database (`WatchRows`).
//! Every commit group is sent to every watch as its WAL put starts (before
//! it can become visible to a new snapshot or be acknowledged) — the user keys it
//! wrote (the tables, when it wrote thousands of rows), or "everything"
//! when it changed table definitions — and, once durable, the group waits
//! until each watch has acknowledged it before it is made visible. So by the time anyone can
//! read a commit, no compute still serves an older copy of its rows.
//!
//! A watch must acknowledge something at least once per lease (storage
//! sends it a ping every quarter lease). One that does not — a hung or cut
//! off compute — is ended, and the commits waiting for it go on; its
//! compute stops answering from its cache when its own lease, counted from
//! when it *sent* its newest acknowledgement (never later than storage
//! received it), runs out. A watch whose compute says goodbye (it stopped
//! using its cache) ends at once; one that just ends — its compute died,
//! or the connection broke on one side only — holds commits until its
//! lease from the last acknowledgement has run out, since its compute may
//! still be answering from its cache.
//!
//! A new watch is told the newest commit sent to watches so far
//! (`floor_ts`): a commit accepted just before the watch opened, and not
//! sent to it, may not be visible yet, so rows read at an older snapshot
//! must not be cached.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ebb_proto::storage::RowChanges;
use tokio::sync::{mpsc, watch};

use crate::durability::wal::WalCommit;
use crate::keys::{self, CATALOG_TABLE_ID};
use crate::metrics::StorageMetrics;

/// Most keys a message lists; a group that wrote more names the tables
/// instead (`RowChanges.tables`), so a bulk load costs its watches a few
/// bytes, not a copy of every key.
const MAX_KEYS: usize = 4096;

/// The open watches of one database.
pub struct RowWatches {
    state: Mutex<State>,
    lease: Duration,
    metrics: StorageMetrics,
}

#[derive(Default)]
struct State {
    watches: Vec<Arc<Watch>>,
    next_id: u64,
    /// The newest commit sent to watches (or committed while none was open).
    published_ts: u64,
    /// Until when watches that ended without a goodbye may still be
    /// served from: later commits wait for it.
    hold_until: Option<Instant>,
}

/// One compute's watch.
pub struct Watch {
    id: u64,
    /// Taken when the watch ends, which ends its stream.
    tx: Mutex<Option<mpsc::UnboundedSender<RowChanges>>>,
    /// The number of the newest message sent.
    sent: AtomicU64,
    acked: watch::Sender<Acked>,
    /// When the newest acknowledgement arrived.
    last_ack: Mutex<Instant>,
}

/// How far a watch has acknowledged.
#[derive(Clone, Copy, Default)]
struct Acked {
    /// The newest `seq` acknowledged.
    seq: u64,
    /// Once the watch ended: when nothing need wait for it any more.
    released: Option<Instant>,
}

/// How a watch ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ending {
    /// Its compute said goodbye: it no longer answers from its cache.
    Goodbye,
    /// It just ended (or the database closed): its compute may answer
    /// from its cache until its lease runs out.
    Abrupt,
    /// It acknowledged nothing for a lease: its compute no longer answers
    /// from its cache.
    Expired,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::Goodbye => "goodbye",
            Ending::Abrupt => "abrupt",
            Ending::Expired => "expired",
        }
    }
}

/// What a commit group waits for before it becomes visible.
pub struct AckWait {
    waits: Vec<(Arc<Watch>, u64)>,
    /// Watches that ended without a goodbye, not yet past their lease.
    hold_until: Option<Instant>,
}

impl RowWatches {
    /// No watches; a watch that acknowledges nothing for `lease` is ended.
    /// `visible_ts`: the newest commit visible when the database opened
    /// (the first watches' floor).
    pub fn new(lease: Duration, metrics: StorageMetrics, visible_ts: u64) -> Self {
        Self { state: Mutex::new(State { published_ts: visible_ts, ..State::default() }), lease, metrics }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a watch: its handle, its stream of messages, the first of
    /// which (floor and lease) is already in it.
    pub fn open(&self) -> (Arc<Watch>, mpsc::UnboundedReceiver<RowChanges>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.state();
        state.next_id += 1;
        let w = Arc::new(Watch {
            id: state.next_id,
            tx: Mutex::new(Some(tx)),
            sent: AtomicU64::new(0),
            acked: watch::Sender::new(Acked::default()),
            last_ack: Mutex::new(Instant::now()),
        });
        let first = RowChanges { floor_ts: state.published_ts, lease_ms: self.lease.as_millis() as u64, ..Default::default() };
        w.send(first);
        state.watches.push(w.clone());
        self.metrics.row_watches.set(state.watches.len() as i64);
        (w, rx)
    }

    /// Ends a watch (its stream ends; see [`Ending`] for what still waits
    /// for it).
    pub fn close(&self, w: &Watch, ending: Ending) {
        let released = match ending {
            Ending::Goodbye => Instant::now(),
            Ending::Abrupt | Ending::Expired => w.last_ack() + self.lease,
        };
        let mut state = self.state();
        let was_open = state.watches.iter().any(|o| o.id == w.id);
        state.watches.retain(|o| o.id != w.id);
        if ending == Ending::Abrupt {
            state.hold_until = state.hold_until.max(Some(released));
        }
        if was_open {
            self.metrics.row_watch_ends.with_label_values(&[ending.label()]).inc();
        }
        self.metrics.row_watches.set(state.watches.len() as i64);
        drop(state);
        w.end(released);
    }

    /// How many watches are open.
    pub fn count(&self) -> usize {
        self.state().watches.len()
    }

    /// Ends every watch (the database closes).
    pub fn close_all(&self) {
        let watches = std::mem::take(&mut self.state().watches);
        self.metrics.row_watches.set(0);
        for w in watches {
            w.end(w.last_ack() + self.lease);
        }
    }

    /// Sends a ping to `w`, or ends it if its lease ran out; false once
    /// it has ended.
    pub fn ping(&self, w: &Watch) -> bool {
        if w.ended() {
            return false;
        }
        if w.expired(self.lease) {
            self.expire(w);
            return false;
        }
        let _state = self.state();
        w.send(RowChanges::default())
    }

    fn expire(&self, w: &Watch) {
        tracing::warn!(watch = w.id, lease = ?self.lease, "a row-change watch acknowledged nothing within its lease; ended");
        // Past its lease already: nothing waits.
        self.close(w, Ending::Expired);
    }

    /// Sends the changes of a group of commits (the newest `ts`) to every
    /// watch; `None` when there is none to wait for.
    pub fn publish(&self, commits: &[WalCommit], ts: u64) -> Option<AckWait> {
        let mut state = self.state();
        state.published_ts = state.published_ts.max(ts);
        let hold_until = state.hold_until.filter(|t| *t > Instant::now());
        state.hold_until = hold_until;
        if state.watches.is_empty() {
            return hold_until.map(|_| AckWait { waits: Vec::new(), hold_until });
        }
        let changes = changes_of(commits, ts);
        let mut waits = Vec::with_capacity(state.watches.len());
        for w in &state.watches {
            if w.send(changes.clone()) {
                waits.push((w.clone(), w.sent.load(Ordering::SeqCst)));
            }
        }
        Some(AckWait { waits, hold_until })
    }

    /// Waits until every watch acknowledged what `wait` sent it, ending
    /// those whose lease runs out first.
    pub async fn wait(&self, wait: AckWait) {
        let started = Instant::now();
        if let Some(t) = wait.hold_until {
            tokio::time::sleep_until(t.into()).await;
        }
        for (w, seq) in wait.waits {
            let mut acked = w.acked.subscribe();
            loop {
                let a = *acked.borrow_and_update();
                if a.seq >= seq {
                    break;
                }
                if let Some(released) = a.released {
                    tokio::time::sleep_until(released.into()).await;
                    break;
                }
                let deadline = w.last_ack() + self.lease;
                match tokio::time::timeout_at(deadline.into(), acked.changed()).await {
                    Ok(_) => continue,
                    // Ends it, released at once (its lease is over).
                    Err(_) if w.expired(self.lease) => self.expire(&w),
                    // Acknowledged something in the meantime: a new deadline.
                    Err(_) => continue,
                }
            }
        }
        self.metrics.row_watch_wait_seconds.observe(started.elapsed().as_secs_f64());
    }
}

/// What a group of commits (the newest `ts`) changed, as watches are told.
fn changes_of(commits: &[WalCommit], ts: u64) -> RowChanges {
    let mut changes = RowChanges { commit_ts: ts, ..Default::default() };
    let written = commits.iter().map(|c| c.ops.len()).sum::<usize>();
    for c in commits {
        if !c.dropped_tables.is_empty() {
            changes.everything = true;
        }
        for op in &c.ops {
            match keys::table_of(&op.key) {
                Some(CATALOG_TABLE_ID) => changes.everything = true,
                Some(table) if written > MAX_KEYS && !changes.tables.contains(&table) => changes.tables.push(table),
                Some(_) if written > MAX_KEYS => {}
                Some(_) => changes.keys.push(op.key.clone()),
                None => {}
            }
        }
    }
    if changes.everything {
        changes.keys.clear();
        changes.tables.clear();
    }
    changes
}

impl Watch {
    /// Records an acknowledgement of every message up to `seq`. Only an
    /// acknowledgement of something not acknowledged before renews the
    /// lease (a compute repeating an old one is still silent). False, and
    /// nothing recorded, for an acknowledgement of messages never sent: the
    /// compute is broken and its watch must end.
    pub fn ack(&self, seq: u64) -> bool {
        if seq > self.sent.load(Ordering::SeqCst) {
            return false;
        }
        let renewed = self.acked.send_if_modified(|a| {
            let newer = seq > a.seq && a.released.is_none();
            if newer {
                a.seq = seq;
            }
            newer
        });
        if renewed {
            *self.last_ack.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
        true
    }

    fn last_ack(&self) -> Instant {
        *self.last_ack.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers and sends a message; false if the watch has ended. Callers
    /// hold the state lock, so each watch sees messages in commit order.
    fn send(&self, mut msg: RowChanges) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else { return false };
        msg.seq = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        tx.send(msg).is_ok()
    }

    fn end(&self, released: Instant) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.acked.send_modify(|a| {
            a.released.get_or_insert(released);
        });
    }

    fn ended(&self) -> bool {
        self.acked.borrow().released.is_some()
    }

    fn expired(&self, lease: Duration) -> bool {
        self.last_ack().elapsed() > lease
    }
}
