//! Where a repository's objects live.
//!
//! A repository is a handful of kinds of immutable objects (`packs/<id>.pack`,
//! `packs/<id>.idx`, `sets/<id>.manifest`, `keys/<id>`, `locks/<id>`) and one
//! `repository.json`. Each object is written whole, once, and read whole or by range; nothing is
//! ever appended or renamed by the repository's logic. That is exactly what both a directory
//! (write to a temporary name, sync, rename, sync the directory) and an object store (a PUT is
//! atomic) give, so the repository's logic is written once against [`Backend`] and runs on
//! either.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use volume::fs::{FileKind, FileRef, FsRef, OpenMode, read_all, write_atomic};

/// One stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's name inside its directory (`<uuid>.pack`).
    pub name: String,
    pub size: u64,
}

/// The storage under a repository. Keys are `<dir>/<name>` with one level of directory.
///
/// Errors are `io::Error`s; a missing object is [`io::ErrorKind::NotFound`], which callers
/// tell apart from other failures.
pub trait Backend: Send + Sync {
    /// Reads a whole object.
    fn get(&self, key: &str) -> io::Result<Vec<u8>>;
    /// Opens an object for reading from its start, with its length, for a caller that
    /// decodes a large object (the chunk index file) as it arrives rather than holding it
    /// whole beside what it decodes. The default reads it whole (an object store's GET).
    fn reader(&self, key: &str) -> io::Result<(u64, Box<dyn Read + Send + '_>)> {
        let bytes = self.get(key)?;
        Ok((bytes.len() as u64, Box::new(io::Cursor::new(bytes))))
    }
    /// Reads `len` bytes of an object from `offset`; fewer bytes is an error.
    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Stores an object whole, durably: once this returns, a crash or power loss leaves either
    /// all of it under `key` or (if it never returned) nothing new under `key`.
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()>;
    /// The objects directly under `dir`, in no particular order. A missing directory is empty.
    fn list(&self, dir: &str) -> io::Result<Vec<ObjectInfo>>;
    /// The names of the objects directly under `dir` (what [`Backend::list`] lists, without
    /// the sizes), in no particular order. A directory lists names without a `stat` per
    /// object, which an open's listing of `packs/` (a pack index per 64 chunks) needs.
    fn list_names(&self, dir: &str) -> io::Result<Vec<String>> {
        Ok(self.list(dir)?.into_iter().map(|o| o.name).collect())
    }
    /// Removes an object; removing a missing one is [`io::ErrorKind::NotFound`].
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Whether an object exists.
    fn exists(&self, key: &str) -> io::Result<bool>;
    /// Where `key` is, for messages: a path, or a URL.
    fn locate(&self, key: &str) -> PathBuf;
    /// Makes the removals and stores under `dir` so far durable (a directory sync on a file
    /// system; nothing on an object store, where each call is already durable).
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// Removes what interrupted stores left under `dir` and returns the bytes freed. Only
    /// safe while no store runs (under the repository's exclusive lock). An object store
    /// leaves nothing: a PUT that did not finish stored nothing.
    fn remove_incomplete(&self, dir: &str) -> io::Result<u64> {
        let _ = dir;
        Ok(0)
    }
    /// How many reads a sequential reader of a stored file keeps in flight ahead of it. A
    /// local read costs little next to decompressing and hashing the chunk, so two keep the
    /// cores busy; a round trip to an object store costs far more than either, so there many
    /// requests must overlap to keep a restore going.
    fn read_ahead(&self) -> usize {
        2
    }
    /// Up to how many bytes of chunks lying back to back in one pack a sequential reader
    /// fetches with one read. Locally each chunk is its own read (`0`): a read is cheap, and
    /// separate reads let the cores decompress side by side. On an object store one request
    /// per run saves a round trip per chunk.
    fn coalesce_bytes(&self) -> usize {
        0
    }
}

/// A repository in a directory of a [`volume::FileSystem`]: the host's in production, an
/// in-memory power-loss file system in crash tests.
pub struct LocalBackend {
    fs: FsRef,
    root: PathBuf,
    /// Where the root is on the host, for messages (`fs` may be rooted at the repository).
    shown: Option<PathBuf>,
}

impl LocalBackend {
    pub fn new(fs: FsRef, root: impl Into<PathBuf>) -> Self {
        Self { fs, root: root.into(), shown: None }
    }

    /// Names objects in messages as under `host_root` (the repository's host directory).
    pub fn shown_as(mut self, host_root: &Path) -> Self {
        self.shown = Some(host_root.to_path_buf());
        self
    }

    /// The directory the repository is in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl Backend for LocalBackend {
    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        read_all(self.fs.as_ref(), &self.path(key))
    }

    fn reader(&self, key: &str) -> io::Result<(u64, Box<dyn Read + Send + '_>)> {
        let file = self.fs.open(&self.path(key), OpenMode::Read)?;
        let len = file.len()?;
        Ok((len, Box::new(FileReader { file, at: 0 })))
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let f = self.fs.open(&self.path(key), OpenMode::Read)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        if let Some(dir) = path.parent()
            && !self.fs.exists(dir)?
        {
            // Directories made by later formats (keys/, locks/) appear on first use; the
            // parent is synced so that the new directory's name is durable too.
            self.fs.create_dir_all(dir)?;
            self.fs.sync_dir(&self.root)?;
        }
        write_atomic(self.fs.as_ref(), &path, data)
    }

    fn list(&self, dir: &str) -> io::Result<Vec<ObjectInfo>> {
        let path = self.path(dir);
        let entries = match self.fs.read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            // `.<name>.tmp` is a store in progress (or one a crash interrupted), not an object.
            if e.kind != FileKind::File || e.name.starts_with('.') {
                continue;
            }
            out.push(ObjectInfo { name: e.name, size: e.len });
        }
        Ok(out)
    }

    fn list_names(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut names = match self.fs.file_names(&self.path(dir)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        // As `list`: `.<name>.tmp` is a store in progress, not an object.
        names.retain(|n| !n.starts_with('.'));
        Ok(names)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        self.fs.remove_file(&self.path(key))
    }

    fn exists(&self, key: &str) -> io::Result<bool> {
        self.fs.exists(&self.path(key))
    }

    fn locate(&self, key: &str) -> PathBuf {
        match &self.shown {
            Some(host) if key.is_empty() => host.clone(),
            Some(host) => host.join(key),
            None => self.path(key),
        }
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.fs.sync_dir(&self.path(dir))
    }

    fn remove_incomplete(&self, dir: &str) -> io::Result<u64> {
        let path = self.path(dir);
        let entries = match self.fs.read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut freed = 0;
        for e in entries {
            // `write_atomic`'s temporary names: `.<name>.tmp`.
            if e.kind == FileKind::File && e.name.starts_with('.') && e.name.ends_with(".tmp") {
                self.fs.remove_file(&path.join(&e.name))?;
                freed += e.len;
            }
        }
        if freed > 0 {
            self.fs.sync_dir(&path)?;
        }
        Ok(freed)
    }
}

/// A file of a [`volume::FileSystem`] read from its start (its handles are positionless).
struct FileReader {
    file: FileRef,
    at: u64,
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}
