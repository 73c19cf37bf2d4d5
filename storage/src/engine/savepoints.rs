//! Savepoints: undoing part of a transaction's buffered writes.
//!
//! A compute numbers the savepoints of a transaction block in the order they
//! are set and sends the newest open one with every write. The transaction
//! keeps, per savepoint that saw writes, the buffered value each key had
//! before its first write there (an undo frame). `ROLLBACK TO SAVEPOINT n`
//! restores the frames of `n` and every later savepoint, newest first, so
//! the buffer is as it was when `n` was set; the savepoint stays open, as in
//! PostgreSQL. Row locks taken since are kept until the transaction ends
//! (PostgreSQL releases them; here a rolled-back write still blocks other
//! writers of its row until commit or rollback).

use std::collections::BTreeMap;

use super::txn::{Pending, Txn};

/// The buffered values keys had before the first write under one savepoint.
#[derive(Debug, Default)]
pub struct UndoFrame {
    /// The savepoint's number.
    savepoint: u64,
    /// Previous buffered value by key (`None`: the key had no buffered write).
    previous: BTreeMap<Vec<u8>, Option<Pending>>,
}

impl Txn {
    /// Adds staged writes to the buffer, under savepoint `savepoint` (0: none).
    pub fn buffer(&mut self, savepoint: u64, staged: BTreeMap<Vec<u8>, Pending>) {
        if savepoint > 0 {
            if self.undo.last().is_none_or(|f| f.savepoint < savepoint) {
                self.undo.push(UndoFrame { savepoint, previous: BTreeMap::new() });
            }
            // A frame newer than `savepoint` exists when that newer one was
            // released: its writes and these both undo with `savepoint`.
            if let Some(frame) = self.undo.last_mut() {
                for key in staged.keys() {
                    if !frame.previous.contains_key(key) {
                        frame.previous.insert(key.clone(), self.writes.get(key).cloned());
                    }
                }
            }
        }
        if let Some(journal) = self.journal.as_mut() {
            for key in staged.keys() {
                if !journal.contains_key(key) {
                    journal.insert(key.clone(), self.writes.get(key).cloned());
                }
            }
        }
        self.writes.extend(staged);
    }

    /// Undoes every write buffered under savepoint `savepoint` or a later one.
    pub fn rollback_to(&mut self, savepoint: u64) {
        while let Some(frame) = self.undo.pop_if(|f| f.savepoint >= savepoint) {
            for (key, previous) in frame.previous {
                match previous {
                    Some(p) => self.writes.insert(key, p),
                    None => self.writes.remove(&key),
                };
            }
        }
    }
}
