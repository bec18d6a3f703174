//! [`MemFs`]: an in-memory file system that can lose power.
//!
//! Crash tests need a file system that behaves like a disk with a volatile cache: what a
//! program wrote but did not sync may be gone after a power loss. `MemFs` keeps two states of
//! everything — what the program sees (*live*) and what would survive a power loss
//! (*durable*) — and moves the second forward only where POSIX promises it:
//!
//! - a file's content and length become durable when the file is synced ([`File::sync`]);
//! - a name (creation, rename, removal) becomes durable when its parent directory is synced
//!   ([`FileSystem::sync_dir`]), exactly the rule that makes `rename` + `fsync(dir)` the
//!   atomic-replace idiom.
//!
//! [`MemFs::crash`] throws away everything else; [`MemFs::crash_torn`] is harsher and lets a
//! random subset of the unsynced writes survive, each possibly torn at 512-byte sectors, as a
//! real disk may. [`MemFs::crash_after`] arms a crash at the N-th mutating operation, which
//! gives tests reproducible crash points. After a crash every handle opened before it fails,
//! like the file descriptors of a process that died with the machine.
//!
//! Error injection ([`MemFs::fail_after`]) and a capacity limit ([`MemFs::set_capacity`],
//! failing with `StorageFull`) cover the disk-error and disk-full paths.
//!
//! Renaming a non-empty directory is refused (`Unsupported`): nothing in the system does it,
//! and modelling its durability would complicate the model for no test.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fault::FaultKind;
use crate::fs::{DirEntry, File, FileKind, FileRef, FileSystem, Metadata, OpenMode, normalize};

/// An open file's inode is missing: cannot happen (an open handle keeps its inode alive), so
/// it is reported as an I/O error rather than a panic.
fn gone(ino: u64) -> io::Error {
    io::Error::other(format!("in-memory file system: inode {ino} of an open file is missing"))
}

/// Sector size at which [`MemFs::crash_torn`] tears writes.
pub const SECTOR: usize = 512;

type Ino = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File(Ino),
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Clone)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changes since the last sync, in order; replayed selectively by a torn crash.
    pending: Vec<Pending>,
    /// Permission bits. Kept (not crash-modelled: a crash keeps the last mode set) so that
    /// tests can check that backup and restore carry them.
    mode: u32,
}

impl Default for Inode {
    fn default() -> Self {
        Inode {
            live: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
            mode: crate::fs::DEFAULT_FILE_MODE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum CrashStyle {
    Clean,
    Torn(u64),
}

#[derive(Debug)]
struct State {
    /// Bumped by every crash; handles carry the epoch they were opened in.
    epoch: u64,
    live: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    inodes: HashMap<Ino, Inode>,
    next_ino: Ino,
    capacity: Option<u64>,
    /// Mutating operations performed so far.
    ops: u64,
    fail_from: Option<(u64, FaultKind)>,
    crash_at: Option<(u64, CrashStyle)>,
    crashes: u64,
}

/// An in-memory file system with power-loss simulation. Cloning shares the same file system.
#[derive(Clone)]
pub struct MemFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for MemFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("MemFs")
            .field("entries", &s.live.len())
            .field("epoch", &s.epoch)
            .field("ops", &s.ops)
            .finish()
    }
}

impl Default for MemFs {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

fn crashed() -> io::Error {
    io::Error::other("file handle is from before a simulated power loss")
}

impl State {
    fn parent_is_dir(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            None => Ok(()),
            Some(p) if p.as_os_str().is_empty() => Ok(()),
            Some(p) => match self.live.get(p) {
                Some(Node::Dir) => Ok(()),
                Some(Node::File(_)) => Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", p.display()),
                )),
                None => Err(not_found(p)),
            },
        }
    }

    fn used_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.live.len() as u64).sum()
    }

    /// Counts a mutating operation: fires an armed crash or an injected fault.
    fn mutating_op(&mut self) -> io::Result<()> {
        self.ops += 1;
        if let Some((at, style)) = self.crash_at
            && self.ops >= at
        {
            self.crash_at = None;
            self.crash(style);
            return Err(io::Error::other(format!(
                "simulated power loss at operation {}",
                self.ops
            )));
        }
        if let Some((from, kind)) = self.fail_from
            && self.ops >= from
        {
            return Err(kind.to_error(self.ops));
        }
        Ok(())
    }

    fn check_growth(&self, ino: Ino, new_len: u64) -> io::Result<()> {
        if let Some(cap) = self.capacity {
            let cur = self.inodes[&ino].live.len() as u64;
            if new_len > cur && self.used_bytes() + (new_len - cur) > cap {
                return Err(FaultKind::NoSpace.to_error(self.ops));
            }
        }
        Ok(())
    }

    fn crash(&mut self, style: CrashStyle) {
        let mut rng = match style {
            CrashStyle::Torn(seed) => Some(StdRng::seed_from_u64(seed)),
            CrashStyle::Clean => None,
        };
        // Names: only what reached a synced directory survives, and only under surviving dirs.
        let mut survivors = BTreeMap::new();
        for (path, node) in &self.durable {
            let parents_ok = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .all(|a| self.durable.get(a) == Some(&Node::Dir));
            if parents_ok {
                survivors.insert(path.clone(), *node);
            }
        }
        let mut inodes = HashMap::new();
        for node in survivors.values() {
            if let Node::File(ino) = node {
                if inodes.contains_key(ino) {
                    continue;
                }
                let old = &self.inodes[ino];
                let mut data = old.durable.clone();
                if let Some(rng) = rng.as_mut() {
                    for p in &old.pending {
                        if !rng.random_bool(0.5) {
                            continue;
                        }
                        match p {
                            Pending::SetLen(len) => data.resize(*len as usize, 0),
                            Pending::Write { offset, data: bytes } => {
                                apply_torn_write(&mut data, *offset as usize, bytes, rng)
                            }
                        }
                    }
                }
                inodes.insert(
                    *ino,
                    Inode {
                        live: data.clone(),
                        durable: data,
                        pending: Vec::new(),
                        mode: old.mode,
                    },
                );
            }
        }
        self.live = survivors.clone();
        self.durable = survivors;
        self.inodes = inodes;
        self.epoch += 1;
        self.crashes += 1;
    }
}

/// Applies the sectors of a write that a torn crash lets through: each sector independently.
fn apply_torn_write(data: &mut Vec<u8>, offset: usize, bytes: &[u8], rng: &mut StdRng) {
    let mut pos = 0;
    while pos < bytes.len() {
        // Sector boundaries are absolute, as on a disk.
        let abs = offset + pos;
        let end = ((abs / SECTOR + 1) * SECTOR - offset).min(bytes.len());
        if rng.random_bool(0.5) {
            let need = offset + end;
            if data.len() < need {
                data.resize(need, 0);
            }
            data[abs..offset + end].copy_from_slice(&bytes[pos..end]);
        }
        pos = end;
    }
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                epoch: 0,
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
                inodes: HashMap::new(),
                next_ino: 1,
                capacity: None,
                ops: 0,
                fail_from: None,
                crash_at: None,
                crashes: 0,
            })),
        }
    }

    /// Simulates a power loss: everything not made durable is lost, open handles die.
    pub fn crash(&self) {
        self.state.lock().crash(CrashStyle::Clean);
    }

    /// Simulates a power loss where a random subset (chosen by `seed`) of the unsynced writes
    /// reached the disk, each torn at [`SECTOR`] granularity.
    pub fn crash_torn(&self, seed: u64) {
        self.state.lock().crash(CrashStyle::Torn(seed));
    }

    /// Arms a clean crash at the `n`-th mutating operation from now (1 = the next one); that
    /// operation fails and the file system is left as after [`MemFs::crash`].
    pub fn crash_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some((s.ops + n.max(1), CrashStyle::Clean));
    }

    /// Like [`MemFs::crash_after`] with a torn crash.
    pub fn crash_after_torn(&self, n: u64, seed: u64) {
        let mut s = self.state.lock();
        s.crash_at = Some((s.ops + n.max(1), CrashStyle::Torn(seed)));
    }

    /// Whether an armed crash has not fired yet.
    pub fn crash_pending(&self) -> bool {
        self.state.lock().crash_at.is_some()
    }

    /// How many crashes have happened.
    pub fn crashes(&self) -> u64 {
        self.state.lock().crashes
    }

    /// Mutating operations performed so far (to choose crash points in range).
    pub fn op_count(&self) -> u64 {
        self.state.lock().ops
    }

    /// Limits the total bytes of file data; growth past it fails with `StorageFull`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Bytes of file data held now (live).
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().used_bytes()
    }

    /// Makes the `n`-th mutating operation from now (1 = the next one), and every one after
    /// it, fail with `kind` until [`MemFs::clear_faults`].
    pub fn fail_after(&self, n: u64, kind: FaultKind) {
        let mut s = self.state.lock();
        s.fail_from = Some((s.ops + n.max(1), kind));
    }

    /// Disarms injected faults and armed crashes.
    pub fn clear_faults(&self) {
        let mut s = self.state.lock();
        s.fail_from = None;
        s.crash_at = None;
    }

    /// A shared handle usable wherever an [`crate::FsRef`] is expected.
    pub fn as_ref(&self) -> crate::FsRef {
        Arc::new(self.clone())
    }
}

/// An open [`MemFs`] file.
#[derive(Debug)]
pub struct MemFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    epoch: u64,
    writable: bool,
}

impl MemFile {
    fn with<T>(&self, write: bool, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.lock();
        if s.epoch != self.epoch {
            return Err(crashed());
        }
        if write && !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file was opened read-only",
            ));
        }
        f(&mut s)
    }
}

impl File for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(false, |s| {
            let data = &s.inodes[&self.ino].live;
            let off = offset as usize;
            if off >= data.len() {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - off);
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.with(true, |s| {
            s.mutating_op()?;
            let end = offset + buf.len() as u64;
            s.check_growth(self.ino, end)?;
            let inode = s.inodes.get_mut(&self.ino).ok_or_else(|| gone(self.ino))?;
            if inode.live.len() < end as usize {
                inode.live.resize(end as usize, 0);
            }
            inode.live[offset as usize..end as usize].copy_from_slice(buf);
            inode.pending.push(Pending::Write { offset, data: buf.to_vec() });
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(false, |s| Ok(s.inodes[&self.ino].live.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(true, |s| {
            s.mutating_op()?;
            s.check_growth(self.ino, len)?;
            let inode = s.inodes.get_mut(&self.ino).ok_or_else(|| gone(self.ino))?;
            inode.live.resize(len as usize, 0);
            inode.pending.push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.with(false, |s| {
            s.mutating_op()?;
            let inode = s.inodes.get_mut(&self.ino).ok_or_else(|| gone(self.ino))?;
            inode.durable = inode.live.clone();
            inode.pending.clear();
            Ok(())
        })
    }
}

impl FileSystem for MemFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let path = normalize(path)?;
        let mut s = self.state.lock();
        if path.as_os_str().is_empty() {
            return Err(io::Error::new(io::ErrorKind::IsADirectory, "the root is a directory"));
        }
        let ino = match (s.live.get(&path).copied(), mode) {
            (Some(Node::Dir), _) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            (Some(Node::File(_)), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} already exists", path.display()),
                ));
            }
            (Some(Node::File(ino)), _) => ino,
            (None, OpenMode::Read | OpenMode::ReadWrite) => return Err(not_found(&path)),
            (None, OpenMode::Create | OpenMode::CreateNew) => {
                s.parent_is_dir(&path)?;
                s.mutating_op()?;
                let ino = s.next_ino;
                s.next_ino += 1;
                s.inodes.insert(ino, Inode::default());
                s.live.insert(path, Node::File(ino));
                ino
            }
        };
        Ok(Arc::new(MemFile {
            state: self.state.clone(),
            ino,
            epoch: s.epoch,
            writable: mode.writable(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut s = self.state.lock();
        let mut cur = PathBuf::new();
        for c in path.components() {
            cur.push(c);
            match s.live.get(&cur) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is a file", cur.display()),
                    ));
                }
                None => {
                    s.mutating_op()?;
                    s.live.insert(cur.clone(), Node::Dir);
                }
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut s = self.state.lock();
        match s.live.get(&path) {
            Some(Node::File(_)) => {
                s.mutating_op()?;
                s.live.remove(&path);
                Ok(())
            }
            Some(Node::Dir) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            )),
            None => Err(not_found(&path)),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut s = self.state.lock();
        match s.live.get(&path) {
            Some(Node::Dir) => {
                if children(&s.live, &path).next().is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::DirectoryNotEmpty,
                        format!("{} is not empty", path.display()),
                    ));
                }
                s.mutating_op()?;
                s.live.remove(&path);
                Ok(())
            }
            Some(Node::File(_)) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file", path.display()),
            )),
            None => Err(not_found(&path)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = normalize(from)?;
        let to = normalize(to)?;
        let mut s = self.state.lock();
        let node = *s.live.get(&from).ok_or_else(|| not_found(&from))?;
        s.parent_is_dir(&to)?;
        if node == Node::Dir && children(&s.live, &from).next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "MemFs does not rename non-empty directories",
            ));
        }
        match (node, s.live.get(&to)) {
            (Node::File(_), Some(Node::Dir)) | (Node::Dir, Some(Node::File(_))) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot rename {} over {}", from.display(), to.display()),
                ));
            }
            (Node::Dir, Some(Node::Dir)) if children(&s.live, &to).next().is_some() => {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    format!("{} is not empty", to.display()),
                ));
            }
            _ => {}
        }
        s.mutating_op()?;
        s.live.remove(&from);
        s.live.insert(to, node);
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let path = normalize(path)?;
        let s = self.state.lock();
        if !path.as_os_str().is_empty() && s.live.get(&path) != Some(&Node::Dir) {
            return Err(not_found(&path));
        }
        let mut out: Vec<DirEntry> = children(&s.live, &path)
            .map(|(p, node)| {
                let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                match node {
                    Node::Dir => DirEntry { name, kind: FileKind::Dir, len: 0 },
                    Node::File(ino) => DirEntry {
                        name,
                        kind: FileKind::File,
                        len: s.inodes[ino].live.len() as u64,
                    },
                }
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let path = normalize(path)?;
        let s = self.state.lock();
        let dir = Metadata { kind: FileKind::Dir, len: 0, mode: crate::fs::DEFAULT_DIR_MODE };
        if path.as_os_str().is_empty() {
            return Ok(dir);
        }
        match s.live.get(&path) {
            Some(Node::Dir) => Ok(dir),
            Some(Node::File(ino)) => {
                let inode = &s.inodes[ino];
                Ok(Metadata {
                    kind: FileKind::File,
                    len: inode.live.len() as u64,
                    mode: inode.mode,
                })
            }
            None => Err(not_found(&path)),
        }
    }

    /// Keeps the mode of a file; directories always report [`crate::fs::DEFAULT_DIR_MODE`].
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let path = normalize(path)?;
        let mut s = self.state.lock();
        match s.live.get(&path).copied() {
            Some(Node::File(ino)) => {
                if let Some(inode) = s.inodes.get_mut(&ino) {
                    inode.mode = mode & 0o7777;
                }
                Ok(())
            }
            Some(Node::Dir) => Ok(()),
            None if path.as_os_str().is_empty() => Ok(()),
            None => Err(not_found(&path)),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = normalize(path)?;
        let mut s = self.state.lock();
        if !path.as_os_str().is_empty() && s.live.get(&path) != Some(&Node::Dir) {
            return Err(not_found(&path));
        }
        s.mutating_op()?;
        let live: Vec<(PathBuf, Node)> =
            children(&s.live, &path).map(|(p, n)| (p.clone(), *n)).collect();
        let stale: Vec<PathBuf> = children(&s.durable, &path).map(|(p, _)| p.clone()).collect();
        for p in stale {
            s.durable.remove(&p);
        }
        for (p, n) in live {
            s.durable.insert(p, n);
        }
        Ok(())
    }
}

/// The direct children of `dir` in a path-keyed tree.
fn children<'a>(
    tree: &'a BTreeMap<PathBuf, Node>,
    dir: &'a Path,
) -> impl Iterator<Item = (&'a PathBuf, &'a Node)> + 'a {
    tree.iter().filter(move |(p, _)| p.parent() == Some(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{read_all, write_atomic};

    fn write(fs: &MemFs, path: &str, data: &[u8]) -> FileRef {
        let f = fs.open(Path::new(path), OpenMode::Create).unwrap();
        f.write_at(data, 0).unwrap();
        f
    }

    #[test]
    fn unsynced_data_and_names_are_lost() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("d")).unwrap();
        fs.sync_dir(Path::new("")).unwrap();
        let a = write(&fs, "d/a", b"synced");
        a.sync().unwrap();
        fs.sync_dir(Path::new("d")).unwrap();
        a.write_at(b"XX", 0).unwrap(); // not synced
        let b = write(&fs, "d/b", b"data synced, name not");
        b.sync().unwrap();
        fs.crash();
        assert_eq!(read_all(&fs, Path::new("d/a")).unwrap(), b"synced");
        assert!(!fs.exists(Path::new("d/b")).unwrap());
        assert!(a.read_at(&mut [0u8; 1], 0).is_err(), "old handles die with the crash");
    }

    #[test]
    fn names_under_an_unsynced_directory_are_lost() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("x/y")).unwrap();
        fs.sync_dir(Path::new("x")).unwrap(); // y is durable in x, but x is not durable in root
        let f = write(&fs, "x/y/f", b"1");
        f.sync().unwrap();
        fs.sync_dir(Path::new("x/y")).unwrap();
        fs.crash();
        assert!(!fs.exists(Path::new("x")).unwrap());
    }

    #[test]
    fn rename_is_atomic_with_directory_sync() {
        let fs = MemFs::new();
        write_atomic(&fs, Path::new("cfg"), b"old").unwrap();
        write_atomic(&fs, Path::new("cfg"), b"new").unwrap();
        fs.crash();
        assert_eq!(read_all(&fs, Path::new("cfg")).unwrap(), b"new");
        // A rename not followed by a directory sync may be undone, but the old file is intact.
        let f = write(&fs, "tmp", b"newer");
        f.sync().unwrap();
        fs.rename(Path::new("tmp"), Path::new("cfg")).unwrap();
        fs.crash();
        assert_eq!(read_all(&fs, Path::new("cfg")).unwrap(), b"new");
    }

    #[test]
    fn removal_is_undone_without_directory_sync() {
        let fs = MemFs::new();
        write_atomic(&fs, Path::new("keep"), b"k").unwrap();
        fs.remove_file(Path::new("keep")).unwrap();
        fs.crash();
        assert_eq!(read_all(&fs, Path::new("keep")).unwrap(), b"k");
    }

    #[test]
    fn torn_crash_keeps_whole_sectors_of_old_or_new() {
        for seed in 0..20 {
            let fs = MemFs::new();
            let f = write(&fs, "f", &[1u8; 4 * SECTOR]);
            f.sync().unwrap();
            fs.sync_dir(Path::new("")).unwrap();
            f.write_at(&[2u8; 4 * SECTOR], 0).unwrap();
            fs.crash_torn(seed);
            let data = read_all(&fs, Path::new("f")).unwrap();
            assert_eq!(data.len(), 4 * SECTOR);
            for sector in data.chunks(SECTOR) {
                assert!(sector.iter().all(|&b| b == sector[0]), "a sector is never mixed");
            }
        }
    }

    #[test]
    fn crash_after_fires_at_the_chosen_operation() {
        let fs = MemFs::new();
        let f = write(&fs, "f", b"a");
        f.sync().unwrap();
        fs.sync_dir(Path::new("")).unwrap();
        fs.crash_after(2);
        f.write_at(b"b", 0).unwrap();
        assert!(f.sync().is_err(), "the second operation is the power loss");
        assert_eq!(fs.crashes(), 1);
        assert_eq!(read_all(&fs, Path::new("f")).unwrap(), b"a");
    }

    #[test]
    fn capacity_and_injected_faults() {
        let fs = MemFs::new();
        fs.set_capacity(Some(10));
        let f = write(&fs, "f", b"12345678");
        let err = f.write_at(b"abc", 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        f.write_at(b"zz", 0).unwrap(); // overwrites in place need no space
        fs.set_capacity(None);
        fs.fail_after(1, FaultKind::Eio);
        assert!(f.sync().is_err());
        assert!(f.write_at(b"q", 0).is_err(), "faults persist until cleared");
        fs.clear_faults();
        f.sync().unwrap();
    }

    #[test]
    fn directory_semantics() {
        let fs = MemFs::new();
        assert_eq!(
            fs.open(Path::new("no/f"), OpenMode::Create).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs.create_dir_all(Path::new("a/b")).unwrap();
        write(&fs, "a/b/f", b"");
        assert_eq!(
            fs.remove_dir(Path::new("a/b")).unwrap_err().kind(),
            io::ErrorKind::DirectoryNotEmpty
        );
        let names: Vec<_> =
            fs.read_dir(Path::new("a")).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["b"]);
        fs.remove_file(Path::new("a/b/f")).unwrap();
        fs.remove_dir(Path::new("a/b")).unwrap();
        assert!(fs.read_dir(Path::new("a")).unwrap().is_empty());
    }

    #[test]
    fn files_are_created_0600_and_keep_the_mode_set() {
        let fs = MemFs::new();
        write(&fs, "f", b"x");
        assert_eq!(fs.metadata(Path::new("f")).unwrap().mode, 0o600);
        fs.set_mode(Path::new("f"), 0o644).unwrap();
        assert_eq!(fs.metadata(Path::new("f")).unwrap().mode, 0o644);
        assert!(fs.set_mode(Path::new("missing"), 0o600).is_err());
    }
}
