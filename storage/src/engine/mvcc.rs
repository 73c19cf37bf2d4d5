//! Snapshot reads over the versioned key space.
//!
//! A stored value is either an encoded row or empty (a delete marker).

use rocksdb::{DB, DBRawIterator, ReadOptions};

use crate::error::Result;
use crate::keys::{split_versioned, versioned};

/// The row visible at `ts` under `user_key`, if any.
pub fn get_visible(db: &DB, user_key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
    let mut it = versions_of(db, user_key);
    it.seek(versioned(user_key, ts));
    if let (Some(k), Some(v)) = (it.key(), it.value())
        && let Some((u, _)) = split_versioned(k)
        && u == user_key
    {
        return Ok((!v.is_empty()).then(|| v.to_vec()));
    }
    it.status()?;
    Ok(None)
}

/// The newest version of `user_key`: its timestamp and whether it is a live row.
pub fn newest_version(db: &DB, user_key: &[u8]) -> Result<Option<(u64, bool)>> {
    let mut it = versions_of(db, user_key);
    it.seek(versioned(user_key, u64::MAX));
    if let (Some(k), Some(v)) = (it.key(), it.value())
        && let Some((u, ts)) = split_versioned(k)
        && u == user_key
    {
        return Ok(Some((ts, !v.is_empty())));
    }
    it.status()?;
    Ok(None)
}

/// An iterator that ends after the oldest version of `user_key`. Without
/// the bound, a seek for a key with no versions (a new row) steps over every
/// RocksDB tombstone that follows it, such as the old versions garbage
/// collection just deleted from a much-updated table next in key order:
/// thousands of them, milliseconds per seek.
fn versions_of<'a>(db: &'a DB, user_key: &[u8]) -> DBRawIterator<'a> {
    let mut bound = versioned(user_key, 0);
    bound.push(0);
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(bound);
    db.raw_iterator_opt(opts)
}

/// Iterates the rows visible at a snapshot in `[start, end)` (user keys).
pub struct VisibleRows<'a> {
    it: DBRawIterator<'a>,
    ts: u64,
    end: Option<Vec<u8>>,
    last: Vec<u8>,
    has_last: bool,
    started: bool,
}

impl<'a> VisibleRows<'a> {
    /// Positions before the first visible row at or after `start`.
    pub fn new(db: &'a DB, ts: u64, start: &[u8], end: Option<Vec<u8>>) -> Self {
        let mut opts = ReadOptions::default();
        if let Some(e) = &end {
            // Versioned keys of user keys below `end` sort below `end | 0xFF…`.
            let mut bound = e.clone();
            bound.extend_from_slice(&[0xFF; 9]);
            opts.set_iterate_upper_bound(bound);
        }
        let mut it = db.raw_iterator_opt(opts);
        it.seek(start);
        Self { it, ts, end, last: Vec::new(), has_last: false, started: false }
    }

    /// Moves to the next visible row; false at the end.
    pub fn advance(&mut self) -> Result<bool> {
        if self.started {
            self.it.next();
        }
        self.started = true;
        loop {
            let Some(k) = self.it.key() else {
                self.it.status()?;
                return Ok(false);
            };
            let Some((user, ts)) = split_versioned(k) else {
                self.it.next();
                continue;
            };
            if let Some(e) = &self.end
                && user >= e.as_slice()
            {
                return Ok(false);
            }
            if (self.has_last && user == self.last.as_slice()) || ts > self.ts {
                self.it.next();
                continue;
            }
            self.last.clear();
            self.last.extend_from_slice(user);
            self.has_last = true;
            if self.it.value().is_none_or(|v| v.is_empty()) {
                self.it.next();
                continue;
            }
            return Ok(true);
        }
    }

    /// User key of the current row.
    pub fn user_key(&self) -> &[u8] {
        &self.last
    }

    /// Encoded current row.
    pub fn value(&self) -> &[u8] {
        self.it.value().unwrap_or_default()
    }
}
