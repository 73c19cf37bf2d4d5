//! The savepoints of a transaction block.
//!
//! Each SAVEPOINT gets the next number of the block (from 1); writes carry
//! the newest open one's to storage, which keeps what they replaced, so
//! ROLLBACK TO SAVEPOINT undoes exactly the writes made since (see
//! `storage::engine::savepoints`). RELEASE forgets savepoints; their writes
//! then belong to the one before.

/// One savepoint.
#[derive(Debug, Clone)]
struct Savepoint {
    name: String,
    /// Its number in the block.
    number: u64,
    /// The session's accepted-write count when it was set.
    writes: u64,
}

/// The open savepoints of a block, oldest first.
#[derive(Debug, Default)]
pub struct Savepoints {
    open: Vec<Savepoint>,
    /// Numbers handed out in this block.
    numbered: u64,
}

impl Savepoints {
    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The newest open savepoint's number, 0 without one.
    pub fn newest(&self) -> u64 {
        self.open.last().map_or(0, |s| s.number)
    }

    /// SAVEPOINT `name` with `writes` accepted so far; returns its number.
    pub fn set(&mut self, name: &str, writes: u64) -> u64 {
        self.numbered += 1;
        self.open.push(Savepoint { name: name.to_string(), number: self.numbered, writes });
        self.numbered
    }

    /// RELEASE `name`: it and every later savepoint are forgotten; false if there is no such savepoint.
    pub fn release(&mut self, name: &str) -> bool {
        match self.position(name) {
            Some(i) => {
                self.open.truncate(i);
                true
            }
            None => false,
        }
    }

    /// ROLLBACK TO `name`: later savepoints are forgotten, `name` stays
    /// open; returns its number and the write count when it was set.
    pub fn roll_back_to(&mut self, name: &str) -> Option<(u64, u64)> {
        let i = self.position(name)?;
        self.open.truncate(i + 1);
        let s = &self.open[i];
        Some((s.number, s.writes))
    }

    /// The block ended.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The newest savepoint of that name.
    fn position(&self, name: &str) -> Option<usize> {
        self.open.iter().rposition(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_rise_and_names_resolve_to_the_newest() {
        let mut s = Savepoints::default();
        assert_eq!(s.newest(), 0);
        assert_eq!(s.set("a", 0), 1);
        assert_eq!(s.set("b", 2), 2);
        assert_eq!(s.set("a", 3), 3);
        assert_eq!(s.roll_back_to("a"), Some((3, 3)), "the newest of a name");
        assert!(s.release("a"));
        assert_eq!(s.newest(), 2);
        assert_eq!(s.roll_back_to("a"), Some((1, 0)));
        assert_eq!(s.newest(), 1, "b was set after a: forgotten");
        assert_eq!(s.roll_back_to("b"), None);
        assert_eq!(s.set("c", 5), 4, "numbers are never reused in a block");
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.set("d", 0), 1);
    }
}
