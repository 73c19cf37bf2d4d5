//! Moving a staging file to an object's name only if that name is free: the
//! create-only step of a `file://` put.
//!
//! `renameat2(RENAME_NOREPLACE)` does it in one directory operation. The
//! portable way, a hard link and then an unlink of the staging name, costs a
//! second directory update inside the put, before the directory's fsync (a
//! WAL put's latency is a commit's in `remote` mode): on the ext4 of this
//! project's test machines the mean WAL put of `commit_throughput` went from
//! 559–581 to 535–549 µs (docs/benchmarks.md). File systems or kernels
//! without the flag get the link and unlink.

use std::io;
use std::path::Path;

/// Renames `from` to `to`, failing with `AlreadyExists` (and leaving `from`
/// in place) if `to` exists.
pub(crate) fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    match rename_noreplace(from, to) {
        Err(e) if unsupported(&e) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        done => done,
    }
}

/// Errors that say the flag is not supported here rather than that the rename failed.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::EINVAL || code == libc::ENOSYS || code == libc::EOPNOTSUPP)
}

#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are NUL-terminated strings that outlive the call; the
    // syscall reads them and keeps no reference.
    let r = unsafe {
        libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_to_a_free_name_and_refuses_a_taken_one() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        std::fs::write(&a, b"first").unwrap();
        rename_new(&a, &b).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"first");

        std::fs::write(&c, b"second").unwrap();
        let e = rename_new(&c, &b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"first", "the taken name keeps its content");
        assert_eq!(std::fs::read(&c).unwrap(), b"second", "the refused file stays where it was");

        let e = rename_new(&dir.path().join("missing"), &dir.path().join("d")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
