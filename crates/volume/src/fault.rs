//! Fault injection over any file system.
//!
//! [`FaultInjector`] wraps an [`FsRef`] and makes chosen operations fail or chosen reads come
//! back corrupted. It is how tests prove that a verification catches a bad page read from a
//! snapshot, or that an I/O error in the middle of a backup fails it cleanly.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::{DirEntry, File, FileRef, FileSystem, FsRef, Metadata, OpenMode, normalize};

/// The error an injected fault produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// An I/O error (EIO).
    Eio,
    /// No space left on device (ENOSPC).
    NoSpace,
}

impl FaultKind {
    /// The `io::Error` for this fault at operation number `op`.
    pub fn to_error(self, op: u64) -> io::Error {
        match self {
            FaultKind::Eio => io::Error::from_raw_os_error(libc::EIO),
            FaultKind::NoSpace => io::Error::from_raw_os_error(libc::ENOSPC),
        }
        .with_op(op)
    }
}

trait WithOp {
    fn with_op(self, op: u64) -> io::Error;
}

impl WithOp for io::Error {
    fn with_op(self, op: u64) -> io::Error {
        io::Error::new(self.kind(), format!("injected fault at operation {op}: {self}"))
    }
}

#[derive(Debug, Default)]
struct Rules {
    ops: u64,
    fail_from: Option<(u64, FaultKind)>,
    corrupt: Vec<(PathBuf, Range<u64>)>,
    /// Renames onto these paths fail.
    rename_onto: Vec<(PathBuf, FaultKind)>,
    /// The next sync of each of these files fails.
    sync_of: Vec<(PathBuf, FaultKind)>,
}

impl Rules {
    fn op(&mut self) -> io::Result<()> {
        self.ops += 1;
        match self.fail_from {
            Some((from, kind)) if self.ops >= from => Err(kind.to_error(self.ops)),
            _ => Ok(()),
        }
    }
}

/// A file system that forwards to another one, except where a rule says otherwise.
#[derive(Clone)]
pub struct FaultInjector {
    inner: FsRef,
    rules: Arc<Mutex<Rules>>,
}

impl fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjector").field("inner", &self.inner).finish()
    }
}

impl FaultInjector {
    /// Wraps `inner` with no rule armed.
    pub fn new(inner: FsRef) -> Self {
        Self { inner, rules: Arc::default() }
    }

    /// Reads of `range` (byte offsets) of the file at `path` come back with every byte's bits
    /// flipped, as a media error that slipped past the disk's own checks would.
    pub fn corrupt_reads(&self, path: impl AsRef<Path>, range: Range<u64>) {
        #[allow(clippy::expect_used)] // test support: a bad path is a bug of the test arming it
        let path = normalize(path.as_ref()).expect("a valid relative path");
        self.rules.lock().corrupt.push((path, range));
    }

    /// The `n`-th operation from now (1 = the next one), reads included, and every one after
    /// it, fail with `kind` until [`FaultInjector::clear`].
    pub fn fail_after(&self, n: u64, kind: FaultKind) {
        let mut r = self.rules.lock();
        r.fail_from = Some((r.ops + n.max(1), kind));
    }

    /// The next rename whose destination is `path` fails with `kind` (once: the rule is
    /// used up): the last step of an atomic replace failing after the steps before it
    /// succeeded.
    pub fn fail_rename_onto(&self, path: impl AsRef<Path>, kind: FaultKind) {
        #[allow(clippy::expect_used)] // test support: a bad path is a bug of the test arming it
        let path = normalize(path.as_ref()).expect("a valid relative path");
        self.rules.lock().rename_onto.push((path, kind));
    }

    /// The next sync of the file at `path` fails with `kind` (once: the rule is used up), as
    /// a write-back error reported to one sync would; later syncs succeed.
    pub fn fail_sync_of(&self, path: impl AsRef<Path>, kind: FaultKind) {
        #[allow(clippy::expect_used)] // test support: a bad path is a bug of the test arming it
        let path = normalize(path.as_ref()).expect("a valid relative path");
        self.rules.lock().sync_of.push((path, kind));
    }

    /// Removes every rule.
    pub fn clear(&self) {
        let mut r = self.rules.lock();
        r.fail_from = None;
        r.corrupt.clear();
        r.rename_onto.clear();
        r.sync_of.clear();
    }

    /// A shared handle usable wherever an [`FsRef`] is expected.
    pub fn as_ref(&self) -> FsRef {
        Arc::new(self.clone())
    }
}

#[derive(Debug)]
struct FaultFile {
    inner: FileRef,
    path: PathBuf,
    rules: Arc<Mutex<Rules>>,
}

impl File for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.rules.lock().op()?;
        let n = self.inner.read_at(buf, offset)?;
        let rules = self.rules.lock();
        for (path, range) in &rules.corrupt {
            if *path != self.path {
                continue;
            }
            let start = range.start.max(offset);
            let end = range.end.min(offset + n as u64);
            for pos in start..end {
                buf[(pos - offset) as usize] ^= 0xFF;
            }
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.rules.lock().op()?;
        self.inner.write_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.rules.lock().op()?;
        self.inner.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        {
            let mut rules = self.rules.lock();
            rules.op()?;
            if let Some(i) = rules.sync_of.iter().position(|(p, _)| *p == self.path) {
                let (_, kind) = rules.sync_of.remove(i);
                return Err(kind.to_error(rules.ops));
            }
        }
        self.inner.sync()
    }
}

impl FileSystem for FaultInjector {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        self.rules.lock().op()?;
        let inner = self.inner.open(path, mode)?;
        Ok(Arc::new(FaultFile { inner, path: normalize(path)?, rules: self.rules.clone() }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.rules.lock().op()?;
        self.inner.create_dir_all(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.rules.lock().op()?;
        self.inner.remove_file(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.rules.lock().op()?;
        self.inner.remove_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut rules = self.rules.lock();
        rules.op()?;
        let dest = normalize(to)?;
        if let Some(i) = rules.rename_onto.iter().position(|(p, _)| *p == dest) {
            let (_, kind) = rules.rename_onto.remove(i);
            return Err(kind.to_error(rules.ops));
        }
        drop(rules);
        self.inner.rename(from, to)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.rules.lock().op()?;
        self.inner.read_dir(path)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.inner.metadata(path)
    }

    // Not counted as an operation, like `metadata`: the fault schedules of existing tests
    // count the calls that write data or names.
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.inner.set_mode(path, mode)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.rules.lock().op()?;
        self.inner.sync_dir(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemFs;

    #[test]
    fn corrupts_only_the_chosen_range_of_the_chosen_file() {
        let mem = MemFs::new();
        let fi = FaultInjector::new(mem.as_ref());
        for name in ["a", "b"] {
            let f = fi.open(Path::new(name), OpenMode::Create).unwrap();
            f.write_at(&[0u8; 100], 0).unwrap();
        }
        fi.corrupt_reads("a", 10..20);
        let mut buf = [0u8; 100];
        fi.open(Path::new("a"), OpenMode::Read).unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..10].iter().all(|&b| b == 0));
        assert!(buf[10..20].iter().all(|&b| b == 0xFF));
        assert!(buf[20..].iter().all(|&b| b == 0));
        let mut part = [0u8; 10];
        fi.open(Path::new("a"), OpenMode::Read).unwrap().read_exact_at(&mut part, 15).unwrap();
        assert_eq!(&part[..5], &[0xFF; 5]);
        assert_eq!(&part[5..], &[0; 5]);
        fi.open(Path::new("b"), OpenMode::Read).unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "other files are untouched");
        // The data underneath was never changed.
        mem.open(Path::new("a"), OpenMode::Read).unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn fails_from_the_chosen_operation_until_cleared() {
        let fi = FaultInjector::new(MemFs::new().as_ref());
        let f = fi.open(Path::new("f"), OpenMode::Create).unwrap();
        fi.fail_after(2, FaultKind::NoSpace);
        f.write_at(b"ok", 0).unwrap();
        let err = f.write_at(b"no", 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert!(err.to_string().contains("injected fault"));
        fi.clear();
        f.write_at(b"ok", 2).unwrap();
    }
}
