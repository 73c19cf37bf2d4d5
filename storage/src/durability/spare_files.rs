//! Staging files made ahead of time for the `file://` store's create-only
//! puts (the WAL's, mostly).
//!
//! A durable create-only put into a local directory writes a staging file,
//! fdatasyncs it, hard-links it to the object's name and fsyncs the
//! directory. Creating the staging file is the expensive part on ext4 (inode
//! allocation, and the new entry makes the file's fdatasync sync the
//! directory too): done inline it doubles a put's latency, which is a commit's
//! latency in `remote` mode. So a directory that takes create-only puts in
//! quick succession gets a few empty staging files created on a blocking
//! thread between puts; a put takes one, writes it and links it as usual.
//! Crash safety is unchanged: the data and the inode (link count 1) are
//! synced before the link, the link before the put returns.
//!
//! Spares are named `spare#<digits>`, which `LocalFileSystem` listings skip,
//! like its own staging files. They are removed when the store is dropped;
//! those a killed process left behind are removed when a directory first
//! gets spares, once they are an hour old (a live process whose spare was
//! removed makes a staging file of its own instead).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Spares kept ready per busy directory (the commit pipeline has up to 4 WAL
/// puts in flight; a refill runs between puts).
const TARGET: usize = 8;
/// A directory whose previous create-only put is at most this old is busy
/// and gets spares; one that sees a put now and then (checkpoint manifests,
/// fencing epochs) does not.
const BUSY_WITHIN: Duration = Duration::from_secs(1);
/// Directories tracked at most; beyond, the least recently used is
/// forgotten and its spares removed.
const MAX_DIRS: usize = 64;
/// Spares older than this in a directory that gets spares are leftovers of
/// a process that was killed.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// An empty staging file, created and open, ready to be written.
pub(crate) struct Spare {
    /// Its name (in the directory of the object it will become).
    pub path: PathBuf,
    /// Open for writing.
    pub file: File,
}

struct DirSpares {
    ready: Vec<Spare>,
    /// The last create-only put into it (`None`: none yet).
    last_put: Option<Instant>,
    refilling: bool,
    /// Stale spares of killed processes were removed.
    swept: bool,
}

/// The spare staging files of every busy directory of one store.
#[derive(Default)]
pub(crate) struct SpareFiles {
    dirs: Mutex<HashMap<PathBuf, DirSpares>>,
}

impl std::fmt::Debug for SpareFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpareFiles").finish_non_exhaustive()
    }
}

impl SpareFiles {
    /// Notes a create-only put into `dir` and hands out a spare there if one
    /// is ready. The flag says the directory is busy and short of spares:
    /// the caller should run [`SpareFiles::refill`] (on a blocking thread).
    pub fn take(&self, dir: &Path) -> (Option<Spare>, bool) {
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !dirs.contains_key(dir) {
            if dirs.len() >= MAX_DIRS {
                forget_least_recent(&mut dirs);
            }
            dirs.insert(dir.to_path_buf(), DirSpares { ready: Vec::new(), last_put: None, refilling: false, swept: false });
        }
        // Looked up by reference: a put into a known directory copies no path.
        let Some(entry) = dirs.get_mut(dir) else { return (None, false) };
        let busy = entry.last_put.is_some_and(|t| now.duration_since(t) <= BUSY_WITHIN);
        entry.last_put = Some(now);
        let spare = entry.ready.pop();
        let refill = busy && !entry.refilling && entry.ready.len() < TARGET;
        if refill {
            entry.refilling = true;
        }
        (spare, refill)
    }

    /// Creates spares in `dir` until it has [`TARGET`] (blocking; called
    /// after [`SpareFiles::take`] asked for it). Failures are logged: puts
    /// then make their staging files themselves.
    pub fn refill(&self, dir: &Path) {
        let (have, sweep) = match self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(dir) {
            Some(d) => (d.ready.len(), !std::mem::replace(&mut d.swept, true)),
            None => (0, false),
        };
        if sweep {
            remove_stale(dir, STALE_AFTER);
        }
        let mut made = Vec::new();
        for _ in have..TARGET {
            match create_spare(dir) {
                Ok(s) => made.push(s),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not make spare staging files");
                    break;
                }
            }
        }
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        match dirs.get_mut(dir) {
            Some(d) => {
                d.ready.extend(made);
                d.refilling = false;
            }
            // Forgotten meanwhile: nobody will use these.
            None => remove(made),
        }
    }

    /// Drops `dir`'s spares (their directory entries are gone, say).
    pub fn forget(&self, dir: &Path) {
        let gone = self.dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
        if let Some(d) = gone {
            remove(d.ready);
        }
    }

    #[cfg(test)]
    pub fn ready(&self, dir: &Path) -> usize {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get(dir).map_or(0, |d| d.ready.len())
    }
}

impl Drop for SpareFiles {
    fn drop(&mut self) {
        let dirs = std::mem::take(self.dirs.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (_, d) in dirs {
            remove(d.ready);
        }
    }
}

fn forget_least_recent(dirs: &mut HashMap<PathBuf, DirSpares>) {
    let oldest = dirs.iter().min_by_key(|(_, d)| d.last_put).map(|(p, _)| p.clone());
    if let Some(d) = oldest.and_then(|p| dirs.remove(&p)) {
        remove(d.ready);
    }
}

/// Removes spares in `dir` last modified more than `age` ago.
fn remove_stale(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let stale = entry.file_name().to_str().is_some_and(|n| n.starts_with("spare#"))
            && entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
        if stale && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::debug!(path = %entry.path().display(), error = %e, "could not remove a stale spare staging file");
        }
    }
}

fn create_spare(dir: &Path) -> std::io::Result<Spare> {
    let path = dir.join(format!("spare#{}", rand::random::<u64>()));
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok(Spare { path, file })
}

fn remove(spares: Vec<Spare>) {
    for s in spares {
        drop(s.file);
        if let Err(e) = std::fs::remove_file(&s.path) {
            tracing::debug!(path = %s.path.display(), error = %e, "could not remove a spare staging file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_directory_gets_spares_and_they_are_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let spares = SpareFiles::default();
        let (none, refill) = spares.take(dir.path());
        assert!(none.is_none());
        assert!(!refill, "a first put does not make a directory busy");
        let (none, refill) = spares.take(dir.path());
        assert!(none.is_none());
        assert!(refill, "a second put within {BUSY_WITHIN:?} does");
        assert!(!spares.take(dir.path()).1, "one refill at a time");
        spares.refill(dir.path());
        assert_eq!(spares.ready(dir.path()), TARGET);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), TARGET);
        let (spare, refill) = spares.take(dir.path());
        let spare = spare.expect("a spare is ready");
        assert!(spare.path.starts_with(dir.path()));
        assert!(refill, "short of spares again");
        drop(spare);
        drop(spares);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 1, "only the spare handed out is left (its put would have linked and removed it): {left:?}");
    }

    #[test]
    fn only_old_spares_are_removed_as_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("spare#1");
        std::fs::write(&old, b"").unwrap();
        std::fs::write(dir.path().join("00000000000000000001"), b"object").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let young = dir.path().join("spare#2");
        std::fs::write(&young, b"").unwrap();
        remove_stale(dir.path(), Duration::from_millis(20));
        assert!(!old.exists(), "a leftover spare is removed");
        assert!(young.exists(), "a young one (maybe another process's) is kept");
        assert!(dir.path().join("00000000000000000001").exists(), "objects are never touched");
    }

    #[test]
    fn a_forgotten_directory_gets_no_late_spares() {
        let dir = tempfile::tempdir().unwrap();
        let spares = SpareFiles::default();
        spares.take(dir.path());
        assert!(spares.take(dir.path()).1);
        spares.forget(dir.path());
        spares.refill(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
