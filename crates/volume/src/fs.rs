//! The file-system seam.
//!
//! Everything above the volume layer (the engine, the store, the backup copier) does its file
//! I/O through [`FileSystem`] and [`File`], never through `std::fs` directly. This is the same
//! layering as a database over NTFS over the snapshot filter driver: the engine does not know
//! whether its writes land on a plain directory ([`crate::host::HostFs`]), pass through the
//! copy-on-write filter of a shadow volume, or go to an in-memory file system that can simulate
//! a power loss ([`crate::mem::MemFs`]) or inject faults ([`crate::fault::FaultInjector`]).
//!
//! Errors are plain [`std::io::Error`]s so that the kinds the callers care about (not found,
//! already exists, storage full) travel unchanged through every layer.
//!
//! Paths are relative to the file system's root, use `/` as separator, and may not contain
//! `..` or be absolute; [`normalize`] enforces that for every implementation.

use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// How [`FileSystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; created empty if missing.
    Create,
    /// Read and write; fails with `AlreadyExists` if the file exists.
    CreateNew,
}

impl OpenMode {
    /// Whether the handle may write.
    pub fn writable(self) -> bool {
        !matches!(self, OpenMode::Read)
    }
}

/// What a directory entry is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
}

/// The permission bits a file system reports for a file whose mode it does not keep, and that
/// a restore gives a file whose backup recorded none: readable by its owner only, because data
/// files hold mail.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// The permission bits reported for a directory whose mode is not kept (snapshot tables record
/// files only).
pub const DEFAULT_DIR_MODE: u32 = 0o700;

/// Size, kind and permission bits of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    /// Length in bytes (0 for directories).
    pub len: u64,
    /// Permission bits (`0o7777` at most), so that a backup can record them and a restore
    /// give the file back the access it had.
    pub mode: u32,
}

/// Everything a mount of the file system shows about a path (the `stat` of a FUSE mount):
/// [`Metadata`] plus ownership, modification time and link count. A separate type and
/// method ([`FileSystem::attributes`]) rather than more fields of [`Metadata`], so that the
/// many file systems that keep no owners or times need not invent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub kind: FileKind,
    /// Length in bytes (0 for directories).
    pub len: u64,
    /// Bytes that hold data (the rest are holes): `st_blocks * 512`, which `tar` and `cp`
    /// compare with the length to tell a sparse file.
    pub allocated: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time as seconds and nanoseconds since the Unix epoch (0 when not kept).
    pub mtime: (i64, u32),
    /// Hard links (1 for a file, 2 for a directory when not kept).
    pub nlink: u32,
}

impl Attributes {
    /// The attributes of a file system that keeps no owners or times: owned by root, as of
    /// the epoch.
    pub fn from_metadata(m: Metadata) -> Self {
        Attributes {
            kind: m.kind,
            len: m.len,
            allocated: m.len,
            mode: m.mode,
            uid: 0,
            gid: 0,
            mtime: (0, 0),
            nlink: if m.kind == FileKind::Dir { 2 } else { 1 },
        }
    }
}

/// One entry of [`FileSystem::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub len: u64,
}

/// An open file. Handles are shared (`Arc`) and positionless: every call names its offset, so
/// many threads can read and write one handle at once.
pub trait File: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at or past EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `buf` at `offset`, extending the file if needed (a gap reads as zeros).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Truncates or extends (with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes the file's content and length durable (fsync). It does not make the file's *name*
    /// durable: after creating or renaming, call [`FileSystem::sync_dir`] on the parent.
    fn sync(&self) -> io::Result<()>;

    /// Makes the file's content durable, and its length when that changed (fdatasync), but
    /// not its timestamps: for a file rewritten within its length, such as a pre-allocated
    /// log, that spares the journal commit a full [`File::sync`] makes for the modification
    /// time on every call. Defaults to [`File::sync`].
    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short read at offset {offset}"),
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// `lseek(SEEK_DATA)` (`hole == false`) or `lseek(SEEK_HOLE)` (`hole == true`) from
    /// `offset`: where the next data, or the next hole, begins at or after `offset`; the end of
    /// the file counts as a hole. `None` when `offset` is at or past the end, or (for data)
    /// when only holes follow — the `ENXIO` of `lseek`. Tools that copy sparse files (`cp
    /// --sparse`, `tar --sparse`, rsync) ask this so as not to read or write the holes; a
    /// file system that does not know its holes reports all data, which is always correct.
    fn seek_data(&self, offset: u64, hole: bool) -> io::Result<Option<u64>> {
        let len = self.len()?;
        Ok(match (offset < len, hole) {
            (false, _) => None,
            (true, false) => Some(offset),
            (true, true) => Some(len),
        })
    }
}

/// A shared open file.
pub type FileRef = Arc<dyn File>;

/// A tree of directories and files.
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Opens (or creates, per `mode`) the file at `path`. The parent directory must exist.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef>;

    /// Creates `path` and any missing parents. Succeeds if it already exists as a directory.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;

    /// Renames a file (or directory), atomically replacing an existing file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Lists a directory, sorted by name.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;

    /// The names of the files (not directories) in a directory, sorted: what
    /// [`FileSystem::read_dir`] lists of them, without their sizes. A caller that needs only
    /// names says so, because a host directory lists them without a `stat` per entry, which in
    /// a directory of hundreds of thousands of files (a backup repository's `packs/`) is most
    /// of the listing's cost.
    fn file_names(&self, path: &Path) -> io::Result<Vec<String>> {
        let entries = self.read_dir(path)?;
        Ok(entries.into_iter().filter(|e| e.kind == FileKind::File).map(|e| e.name).collect())
    }

    /// Kind and size of `path`.
    fn metadata(&self, path: &Path) -> io::Result<Metadata>;

    /// Makes the directory's entries (creations, renames, removals inside it) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Sets the permission bits of `path` (`mode & 0o7777`). A restore calls it so that a
    /// file comes back with the access recorded in its backup. File systems that cannot
    /// change modes (read-only views) refuse.
    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let _ = mode;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{}: this file system cannot change permissions", path.display()),
        ))
    }

    /// Ownership, permissions, times and link count of `path`, as a mount of this file
    /// system shows them. The default is [`Attributes::from_metadata`]: file systems that keep
    /// owners and times (host directories, snapshot views) override it.
    fn attributes(&self, path: &Path) -> io::Result<Attributes> {
        self.metadata(path).map(Attributes::from_metadata)
    }

    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A shared file system.
pub type FsRef = Arc<dyn FileSystem>;

/// Checks that `path` is relative and free of `..`, and returns it without `.` components.
/// The empty path names the root.
pub fn normalize(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => {
                if p.to_str().is_none() {
                    return Err(invalid(path, "is not valid UTF-8"));
                }
                out.push(p)
            }
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid(path, "may not contain '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(invalid(path, "must be relative to the file system root"));
            }
        }
    }
    Ok(out)
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("path {}: {why}", path.display()))
}

/// Reads a whole file through the seam.
pub fn read_all(fs: &dyn FileSystem, path: &Path) -> io::Result<Vec<u8>> {
    let f = fs.open(path, OpenMode::Read)?;
    let len = f.len()? as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Writes a whole file durably and atomically: a temporary file is written and synced, renamed
/// over `path`, and the parent directory synced. After a crash `path` holds either the old or
/// the new content, never a mix.
pub fn write_atomic(fs: &dyn FileSystem, path: &Path, data: &[u8]) -> io::Result<()> {
    let path = normalize(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| invalid(&path, "names no file"))?
        .to_string_lossy()
        .into_owned();
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.tmp"));
    let f = fs.open(&tmp, OpenMode::Create)?;
    f.set_len(0)?;
    f.write_at(data, 0)?;
    f.sync()?;
    drop(f);
    fs.rename(&tmp, &path)?;
    fs.sync_dir(&parent)
}

/// The error every mutating call of a read-only file system returns (snapshot views, files
/// stored in a backup); `what` says what is read-only.
pub fn read_only(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{what} are read-only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_rejects_escapes_and_strips_dots() {
        assert_eq!(normalize(Path::new("a/./b")).unwrap(), PathBuf::from("a/b"));
        assert_eq!(normalize(Path::new("")).unwrap(), PathBuf::new());
        assert!(normalize(Path::new("../x")).is_err());
        assert!(normalize(Path::new("a/../../x")).is_err());
        assert!(normalize(Path::new("/etc/passwd")).is_err());
    }
}
