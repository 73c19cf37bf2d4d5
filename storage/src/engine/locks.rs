//! Row write locks. Every transaction that writes a key holds that key's lock
//! until it commits or aborts; a second writer waits for it. This is what lets
//! READ COMMITTED transactions update a contended row without failing: they
//! wait for the holder, then re-run the statement on the newly committed
//! version (PostgreSQL's behaviour), instead of losing at commit time.
//!
//! A row that a foreign key references is locked shared instead
//! (PostgreSQL's FOR KEY SHARE): many transactions may reference it at once,
//! and a writer of it waits until they end. A transaction that holds the
//! only shared lock of a row may take it exclusively.
//!
//! Deadlocks are not detected by graph; a writer that waits longer than the
//! lock timeout gives up with [`StorageError::LockTimeout`] (SQLSTATE 40P01),
//! which also breaks any cycle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{Result, StorageError};

/// How a row is locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// To write it.
    Exclusive,
    /// To reference it (a foreign key): many may hold it at once.
    Shared,
}

/// Who holds a row's lock.
enum Holder {
    Exclusive(u64),
    /// The transactions holding it shared (at least one).
    Shared(Vec<u64>),
}

/// The lock table of one database.
#[derive(Default)]
pub struct LockTable {
    held: Mutex<HashMap<Vec<u8>, Holder>>,
    released: Notify,
}

impl LockTable {
    /// A new, empty lock table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Holder>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the locks of `keys` in `mode` for transaction `owner`, waiting
    /// up to `timeout` for other holders. Keys `owner` already holds are
    /// skipped; the keys newly taken (a shared lock made exclusive counts)
    /// are added to `set`, also when the wait fails (the caller's
    /// transaction then still releases them when it ends).
    pub async fn acquire<'k>(
        &self,
        owner: u64,
        keys: impl IntoIterator<Item = &'k [u8]>,
        set: &mut LockSet,
        timeout: Duration,
        mode: LockMode,
    ) -> Result<()> {
        self.take(owner, keys, set, timeout, mode == LockMode::Shared).await
    }

    async fn take<'k>(&self, owner: u64, keys: impl IntoIterator<Item = &'k [u8]>, set: &mut LockSet, timeout: Duration, shared: bool) -> Result<()> {
        set.owner = owner;
        let deadline = tokio::time::Instant::now() + timeout;
        for key in keys {
            loop {
                // Register interest before checking, so a release between the
                // check and the wait is not missed.
                let notified = self.released.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.try_take(owner, key, set, shared) {
                    break;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Err(StorageError::LockTimeout(timeout.as_millis() as u64));
                }
            }
        }
        Ok(())
    }

    /// Takes one lock if it is free to take; false to wait.
    fn try_take(&self, owner: u64, key: &[u8], set: &mut LockSet, shared: bool) -> bool {
        let mut held = self.held();
        match held.get_mut(key) {
            None => {
                let holder = if shared { Holder::Shared(vec![owner]) } else { Holder::Exclusive(owner) };
                held.insert(key.to_vec(), holder);
                set.keys.push(key.to_vec());
                true
            }
            Some(Holder::Exclusive(o)) => *o == owner,
            Some(Holder::Shared(owners)) if shared => {
                if !owners.contains(&owner) {
                    owners.push(owner);
                    set.keys.push(key.to_vec());
                }
                true
            }
            Some(holder @ Holder::Shared(_)) => {
                let Holder::Shared(owners) = &*holder else { return false };
                if owners.as_slice() != [owner] {
                    return false;
                }
                // Its only holder makes it exclusive: newly taken as such.
                *holder = Holder::Exclusive(owner);
                set.keys.push(key.to_vec());
                true
            }
        }
    }

    /// Releases every lock in `set` and wakes waiters.
    pub fn release(&self, set: &mut LockSet) {
        if set.keys.is_empty() {
            return;
        }
        {
            let mut held = self.held();
            for key in set.keys.drain(..) {
                let gone = match held.get_mut(&key) {
                    Some(Holder::Exclusive(o)) => *o == set.owner,
                    Some(Holder::Shared(owners)) => {
                        owners.retain(|o| *o != set.owner);
                        owners.is_empty()
                    }
                    None => false,
                };
                if gone {
                    held.remove(&key);
                }
            }
        }
        self.released.notify_waiters();
    }

    /// Number of keys locked.
    pub fn len(&self) -> usize {
        self.held().len()
    }

    /// True when nothing is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The locks one transaction holds; released when dropped.
pub struct LockSet {
    table: Arc<LockTable>,
    /// The transaction (set by its first acquire).
    owner: u64,
    /// Keys taken, in order (a key taken shared, then exclusive, twice).
    keys: Vec<Vec<u8>>,
}

impl LockSet {
    /// An empty set on `table`.
    pub fn new(table: Arc<LockTable>) -> Self {
        Self { table, owner: 0, keys: Vec::new() }
    }

    /// True when `key` is held by this set.
    pub fn holds(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// Number of locks held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no lock is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys locked after the set held `before` locks.
    pub fn taken_since(&self, before: usize) -> &[Vec<u8>] {
        &self.keys[before.min(self.keys.len())..]
    }
}

impl Drop for LockSet {
    fn drop(&mut self) {
        let table = self.table.clone();
        table.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_writer_waits_for_the_first_to_release() {
        let table = LockTable::new();
        let mut a = LockSet::new(table.clone());
        table.acquire(1, [b"k".as_slice()], &mut a, Duration::from_secs(5), LockMode::Exclusive).await.unwrap();
        // Re-taking a held lock is free.
        table.acquire(1, [b"k".as_slice()], &mut a, Duration::from_secs(5), LockMode::Exclusive).await.unwrap();
        let t2 = table.clone();
        let waiter = tokio::spawn(async move {
            let mut b = LockSet::new(t2.clone());
            t2.acquire(2, [b"k".as_slice()], &mut b, Duration::from_secs(5), LockMode::Exclusive).await.map(|()| b.keys.len())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second writer must wait");
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        assert!(table.is_empty(), "dropping the set released the lock");
    }

    #[tokio::test]
    async fn shared_holders_share_and_a_writer_waits_for_all_of_them() {
        let table = LockTable::new();
        let (mut a, mut b) = (LockSet::new(table.clone()), LockSet::new(table.clone()));
        let wait = Duration::from_secs(5);
        table.acquire(1, [b"p".as_slice()], &mut a, wait, LockMode::Shared).await.unwrap();
        table.acquire(2, [b"p".as_slice()], &mut b, wait, LockMode::Shared).await.unwrap();
        // Not the only holder: 1 cannot make it exclusive.
        let e = table.acquire(1, [b"p".as_slice()], &mut a, Duration::from_millis(30), LockMode::Exclusive).await.unwrap_err();
        assert!(matches!(e, StorageError::LockTimeout(_)));
        let t = table.clone();
        let writer = tokio::spawn(async move {
            let mut c = LockSet::new(t.clone());
            t.acquire(3, [b"p".as_slice()], &mut c, Duration::from_secs(5), LockMode::Exclusive).await.map(|()| c.taken_since(0).len())
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!writer.is_finished(), "one shared holder is left");
        drop(b);
        assert_eq!(writer.await.unwrap().unwrap(), 1);
        // The only shared holder takes it exclusively: newly taken.
        let mut d = LockSet::new(table.clone());
        table.acquire(4, [b"q".as_slice()], &mut d, wait, LockMode::Shared).await.unwrap();
        table.acquire(4, [b"q".as_slice()], &mut d, wait, LockMode::Exclusive).await.unwrap();
        assert_eq!(d.taken_since(1).len(), 1);
        drop(d);
        assert!(table.is_empty());
    }

    #[tokio::test]
    async fn waiting_past_the_timeout_fails() {
        let table = LockTable::new();
        let mut a = LockSet::new(table.clone());
        table.acquire(1, [b"x".as_slice(), b"y".as_slice()], &mut a, Duration::from_secs(1), LockMode::Exclusive).await.unwrap();
        let mut b = LockSet::new(table.clone());
        let e = table.acquire(2, [b"z".as_slice(), b"y".as_slice()], &mut b, Duration::from_millis(50), LockMode::Exclusive).await.unwrap_err();
        assert!(matches!(e, StorageError::LockTimeout(50)), "{e}");
        assert!(b.holds(b"z"), "keys taken before the wait stay with the set");
        drop(b);
        assert_eq!(table.len(), 2);
    }
}
