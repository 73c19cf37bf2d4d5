//! Row write locks. Every transaction that writes a key holds that key's lock
//! until it commits or aborts; a second writer waits for it. This is what lets
//! READ COMMITTED transactions update a contended row without failing: they
//! wait for the holder, then re-run the statement on the newly committed
//! version (PostgreSQL's behaviour), instead of losing at commit time.
//!
//! Deadlocks are not detected by graph; a writer that waits longer than the
//! lock timeout gives up with [`StorageError::LockTimeout`] (SQLSTATE 40P01),
//! which also breaks any cycle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{Result, StorageError};

/// The lock table of one database.
#[derive(Default)]
pub struct LockTable {
    held: Mutex<HashMap<Vec<u8>, u64>>,
    released: Notify,
}

impl LockTable {
    /// A new, empty lock table.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, u64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the locks of `keys` for transaction `owner`, waiting up to
    /// `timeout` for other holders. Keys `owner` already holds are skipped;
    /// the keys newly taken are added to `set`, also when the wait fails (the
    /// caller's transaction then still releases them when it ends).
    pub async fn acquire<'k>(
        &self,
        owner: u64,
        keys: impl IntoIterator<Item = &'k [u8]>,
        set: &mut LockSet,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for key in keys {
            loop {
                // Register interest before checking, so a release between the
                // check and the wait is not missed.
                let notified = self.released.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let mut held = self.held();
                    match held.get(key) {
                        Some(&o) if o == owner => break,
                        Some(_) => {}
                        None => {
                            held.insert(key.to_vec(), owner);
                            set.keys.push(key.to_vec());
                            break;
                        }
                    }
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Err(StorageError::LockTimeout(timeout.as_millis() as u64));
                }
            }
        }
        Ok(())
    }

    /// Releases every lock in `set` and wakes waiters.
    pub fn release(&self, set: &mut LockSet) {
        if set.keys.is_empty() {
            return;
        }
        {
            let mut held = self.held();
            for key in set.keys.drain(..) {
                held.remove(&key);
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
    keys: Vec<Vec<u8>>,
}

impl LockSet {
    /// An empty set on `table`.
    pub fn new(table: Arc<LockTable>) -> Self {
        Self { table, keys: Vec::new() }
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
        table.acquire(1, [b"k".as_slice()], &mut a, Duration::from_secs(5)).await.unwrap();
        // Re-taking a held lock is free.
        table.acquire(1, [b"k".as_slice()], &mut a, Duration::from_secs(5)).await.unwrap();
        let t2 = table.clone();
        let waiter = tokio::spawn(async move {
            let mut b = LockSet::new(t2.clone());
            t2.acquire(2, [b"k".as_slice()], &mut b, Duration::from_secs(5)).await.map(|()| b.keys.len())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second writer must wait");
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        assert!(table.is_empty(), "dropping the set released the lock");
    }

    #[tokio::test]
    async fn waiting_past_the_timeout_fails() {
        let table = LockTable::new();
        let mut a = LockSet::new(table.clone());
        table.acquire(1, [b"x".as_slice(), b"y".as_slice()], &mut a, Duration::from_secs(1)).await.unwrap();
        let mut b = LockSet::new(table.clone());
        let e = table.acquire(2, [b"z".as_slice(), b"y".as_slice()], &mut b, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(e, StorageError::LockTimeout(50)), "{e}");
        assert!(b.holds(b"z"), "keys taken before the wait stay with the set");
        drop(b);
        assert_eq!(table.len(), 2);
    }
}
