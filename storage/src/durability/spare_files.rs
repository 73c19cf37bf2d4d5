//! Staging files made ahead of time for the `file://` store's create-only
//! puts (the WAL's, mostly).
//!
//! A durable create-only put into a local directory writes a staging file,
//! fdatasyncs it, renames it to the object's name (refusing a taken name)
//! and fsyncs the directory. Creating the staging file is the expensive part on ext4 (inode
//! allocation, and the new entry makes the file's fdatasync sync the
//! directory too): done inline it doubles a put's latency, which is a commit's
//! latency in `remote` mode. So a directory that takes create-only puts in
//! quick succession gets a few empty staging files created on a blocking
//! thread between puts; a put takes one, writes it and renames it as usual.
//! Crash safety is unchanged: the data and the inode are synced before the
//! rename, the rename before the put returns.
//!
//! Deleting an object from a busy directory (the WAL's, once a checkpoint
//! covers it) recycles its file as a spare instead of freeing the inode, as
//! PostgreSQL recycles WAL segments: on ext4 without a journal, every inode
//! freed in the last minutes makes each later inode allocation scan past it,
//! and a checkpoint frees tens of thousands. A recycled spare keeps its old
//! bytes until a put overwrites it and cuts it to the new length before the
//! fdatasync; a crash in between leaves a spare, never a torn object.
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
pub(crate) const TARGET: usize = 8;
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
/// A deleted object's file is recycled if its directory took a create-only
/// put at most this long ago (a checkpoint's WAL truncation comes up to a
/// checkpoint interval, 60 s by default, after the puts it covers).
const RECYCLE_WITHIN: Duration = Duration::from_secs(300);
/// Recycled files kept per directory at most (names only, not open), and
/// the bytes they may hold together; further deletions free their inodes
/// (and their space: a checkpoint's deleted SST files are not kept).
const MAX_RECYCLED: usize = 16_384;
const MAX_RECYCLED_BYTES: u64 = 64 << 20;

/// A staging file, open and ready to be written from its start: made empty,
/// or recycled from a deleted object (then `len` bytes of old content remain
/// to be cut).
pub(crate) struct Spare {
    /// Its name (in the directory of the object it will become).
    pub path: PathBuf,
    /// Open for writing.
    pub file: File,
    /// Bytes it holds (0 unless recycled).
    pub len: u64,
}

struct DirSpares {
    ready: Vec<Spare>,
    /// Deleted objects' files renamed to spare names, not yet opened, with
    /// their lengths.
    recycled: Vec<(PathBuf, u64)>,
    /// The bytes they hold.
    recycled_bytes: u64,
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
            dirs.insert(
                dir.to_path_buf(),
                DirSpares {
                    ready: Vec::new(),
                    recycled: Vec::new(),
                    recycled_bytes: 0,
                    last_put: None,
                    refilling: false,
                    swept: false,
                },
            );
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

    /// Readies spares in `dir` until it has [`TARGET`]: opens recycled files
    /// first, creates the rest (blocking; called after [`SpareFiles::take`]
    /// asked for it). Failures are logged: puts then make their staging
    /// files themselves.
    pub fn refill(&self, dir: &Path) {
        let (have, sweep, mut recycled) = match self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(dir) {
            Some(d) => {
                let want = TARGET.saturating_sub(d.ready.len());
                let from = d.recycled.len().saturating_sub(want);
                let recycled = d.recycled.split_off(from);
                d.recycled_bytes -= recycled.iter().map(|(_, len)| len).sum::<u64>();
                (d.ready.len(), !std::mem::replace(&mut d.swept, true), recycled)
            }
            None => (0, false, Vec::new()),
        };
        if sweep {
            remove_stale(dir, STALE_AFTER);
        }
        let mut made = Vec::new();
        for _ in have..TARGET {
            let spare = match recycled.pop() {
                Some((path, _)) => open_recycled(path),
                None => create_spare(dir),
            };
            match spare {
                Ok(s) => made.push(s),
                // Swept by another process meanwhile: the next one, or a new file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not make spare staging files");
                    break;
                }
            }
        }
        remove_paths(recycled.into_iter().map(|(path, _)| path).collect());
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

    /// Deletes the object file at `path`: renames it to a spare name kept
    /// for a later put if its directory is busy and has room (the directory
    /// must have been swept already, so that the old file's age does not get
    /// it swept as a leftover), removes it otherwise. Blocking.
    pub fn delete(&self, path: &Path) -> std::io::Result<()> {
        let Some(dir) = path.parent() else { return std::fs::remove_file(path) };
        let len = std::fs::symlink_metadata(path)?.len();
        let recyclable = self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get(dir).is_some_and(|d| {
            d.swept
                && d.recycled.len() < MAX_RECYCLED
                && d.recycled_bytes + len <= MAX_RECYCLED_BYTES
                && d.last_put.is_some_and(|t| t.elapsed() <= RECYCLE_WITHIN)
        });
        if !recyclable {
            return std::fs::remove_file(path);
        }
        let spare = spare_path(dir);
        std::fs::rename(path, &spare)?;
        let mut dirs = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        match dirs.get_mut(dir) {
            Some(d) => {
                d.recycled.push((spare, len));
                d.recycled_bytes += len;
            }
            None => {
                drop(dirs);
                remove_paths(vec![spare]);
            }
        }
        Ok(())
    }

    /// Drops `dir`'s spares (their directory entries are gone, say).
    pub fn forget(&self, dir: &Path) {
        let gone = self.dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
        if let Some(d) = gone {
            d.remove();
        }
    }

    #[cfg(test)]
    pub fn ready(&self, dir: &Path) -> usize {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get(dir).map_or(0, |d| d.ready.len())
    }

    #[cfg(test)]
    pub fn recycled(&self, dir: &Path) -> usize {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get(dir).map_or(0, |d| d.recycled.len())
    }
}

impl DirSpares {
    /// Removes its spares' files.
    fn remove(self) {
        remove(self.ready);
        remove_paths(self.recycled.into_iter().map(|(path, _)| path).collect());
    }
}

impl Drop for SpareFiles {
    fn drop(&mut self) {
        let dirs = std::mem::take(self.dirs.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (_, d) in dirs {
            d.remove();
        }
    }
}

fn forget_least_recent(dirs: &mut HashMap<PathBuf, DirSpares>) {
    let oldest = dirs.iter().min_by_key(|(_, d)| d.last_put).map(|(p, _)| p.clone());
    if let Some(d) = oldest.and_then(|p| dirs.remove(&p)) {
        d.remove();
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

fn spare_path(dir: &Path) -> PathBuf {
    dir.join(format!("spare#{}", rand::random::<u64>()))
}

fn create_spare(dir: &Path) -> std::io::Result<Spare> {
    let path = spare_path(dir);
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok(Spare { path, file, len: 0 })
}

fn open_recycled(path: PathBuf) -> std::io::Result<Spare> {
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    let len = file.metadata()?.len();
    Ok(Spare { path, file, len })
}

fn remove(spares: Vec<Spare>) {
    remove_paths(spares.into_iter().map(|s| s.path).collect());
}

fn remove_paths(paths: Vec<PathBuf>) {
    for path in paths {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!(path = %path.display(), error = %e, "could not remove a spare staging file");
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
        assert_eq!(left.len(), 1, "only the spare handed out is left (its put would have renamed it): {left:?}");
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
    fn a_busy_directorys_deleted_files_are_recycled_as_spares() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let quiet = tempfile::tempdir().unwrap();
        let spares = SpareFiles::default();
        // A directory that never took a put: deleting frees the file.
        let lone = quiet.path().join("00000000000000000001");
        std::fs::write(&lone, b"object").unwrap();
        spares.delete(&lone).unwrap();
        assert_eq!(std::fs::read_dir(quiet.path()).unwrap().count(), 0);
        assert_eq!(spares.delete(&lone).unwrap_err().kind(), std::io::ErrorKind::NotFound);
        // A busy, swept one: the file is renamed to a spare name.
        spares.take(dir.path());
        assert!(spares.take(dir.path()).1);
        spares.refill(dir.path());
        let object = dir.path().join("00000000000000000001");
        std::fs::write(&object, b"an old WAL object").unwrap();
        let ino = std::fs::metadata(&object).unwrap().ino();
        spares.delete(&object).unwrap();
        assert!(!object.exists());
        assert_eq!(spares.recycled(dir.path()), 1);
        // A file too big to keep (a checkpoint's SST, say) is removed: its space matters.
        let big = dir.path().join("big");
        std::fs::File::create(&big).unwrap().set_len(MAX_RECYCLED_BYTES).unwrap();
        spares.delete(&big).unwrap();
        assert!(!big.exists());
        assert_eq!(spares.recycled(dir.path()), 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), TARGET + 1);
        // Once the ready spares are used up, the refill opens it instead of creating one.
        let mut taken = Vec::new();
        for _ in 0..TARGET {
            taken.push(spares.take(dir.path()).0.expect("a ready spare"));
        }
        spares.refill(dir.path());
        assert_eq!(spares.recycled(dir.path()), 0);
        assert_eq!(spares.ready(dir.path()), TARGET);
        let reused: Vec<_> = std::iter::from_fn(|| spares.take(dir.path()).0).filter(|s| s.len > 0).collect();
        assert_eq!(reused.len(), 1, "one ready spare is the recycled file");
        assert_eq!(reused[0].len, b"an old WAL object".len() as u64);
        assert_eq!(reused[0].file.metadata().unwrap().ino(), ino);
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
