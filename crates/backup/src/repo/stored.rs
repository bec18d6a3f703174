//! A read-only [`FileSystem`] over files stored in the repository.
//!
//! The requester verifies a backup by reading it back from here — every byte decompressed and
//! checked against its chunk hash — with the engine's own checks (page checksums, log records,
//! generation continuity). What is verified is therefore exactly what was stored, not a second
//! read of the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;
use volume::fs::{
    DEFAULT_DIR_MODE, DirEntry, File, FileKind, FileRef, FileSystem, Metadata, OpenMode, normalize,
};

use super::{FileEntry, Repository, parse_hash};

/// The files of one volume in a (possibly unpublished) set, by their path on the volume.
pub struct StoredFiles {
    repo: Arc<Repository>,
    /// (path on the volume, entry)
    files: Vec<(PathBuf, FileEntry)>,
}

impl std::fmt::Debug for StoredFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFiles").field("files", &self.files.len()).finish()
    }
}

fn read_only() -> io::Error {
    volume::fs::read_only("stored backup files")
}

impl StoredFiles {
    /// The entries of `files` stored as `<volume>/<path>`, seen as that volume's tree.
    pub fn new(repo: Arc<Repository>, volume: &str, files: &[FileEntry]) -> Self {
        let prefix = format!("{volume}/");
        let files = files
            .iter()
            .filter_map(|e| e.path.strip_prefix(&prefix).map(|p| (PathBuf::from(p), e.clone())))
            .collect();
        Self { repo, files }
    }

    fn entry(&self, path: &Path) -> Option<&FileEntry> {
        self.files.iter().find(|(p, _)| p == path).map(|(_, e)| e)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.as_os_str().is_empty()
            || self.files.iter().any(|(p, _)| p.starts_with(path) && p != path)
    }
}

struct StoredFile {
    repo: Arc<Repository>,
    /// Shared with the read-ahead threads (a large file's chunk list is megabytes).
    entry: Arc<FileEntry>,
    /// Why the chunk list does not match the file's identity, if it does not: every read
    /// fails with it (reads are checked chunk by chunk, so the list must be the file's).
    bad_list: Option<String>,
    /// Start offset of each chunk.
    starts: Vec<u64>,
    /// The last chunk read (reads are mostly sequential).
    cache: Mutex<Option<(usize, Arc<Vec<u8>>)>>,
    /// Chunks being read ahead, by index: a sequential reader (the verification pass) finds
    /// the next chunks already decompressed and hash-checked by other threads, so that both
    /// cores work while it checks pages.
    ahead: Mutex<BTreeMap<usize, Pending>>,
}

/// A chunk being read on another thread.
type Pending = mpsc::Receiver<io::Result<Arc<Vec<u8>>>>;

impl std::fmt::Debug for StoredFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFile").field("path", &self.entry.path).finish()
    }
}

impl StoredFile {
    fn chunk(&self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        let last = {
            let cache = self.cache.lock();
            match &*cache {
                Some((j, data)) if *j == i => return Ok(data.clone()),
                Some((j, _)) => Some(*j),
                None => None,
            }
        };
        let pending = self.ahead.lock().remove(&i);
        let data = match pending {
            Some(rx) => rx.recv().unwrap_or_else(|_| self.read(i))?,
            None => self.read(i)?,
        };
        *self.cache.lock() = Some((i, data.clone()));
        if last.is_some_and(|j| j + 1 == i) || (i == 0 && last.is_none()) {
            self.read_ahead(i);
        }
        Ok(data)
    }

    /// Reads chunk `i` (decompressed and checked against its hash).
    fn read(&self, i: usize) -> io::Result<Arc<Vec<u8>>> {
        read_chunk(&self.repo, &self.entry, i)
    }

    /// Starts reading the chunks after `i` on their own threads, and forgets read-aheads the
    /// reader has passed.
    fn read_ahead(&self, i: usize) {
        let mut ahead = self.ahead.lock();
        ahead.retain(|j, _| *j > i);
        let depth = self.repo.backend().read_ahead();
        for j in i + 1..=(i + depth).min(self.entry.chunks.len().saturating_sub(1)) {
            if ahead.contains_key(&j) {
                continue;
            }
            let (tx, rx) = mpsc::sync_channel(1);
            let (repo, entry) = (self.repo.clone(), self.entry.clone());
            // The receiver may be gone (the reader moved on): nothing to deliver then.
            let spawned = std::thread::Builder::new()
                .name("repo-read-ahead".into())
                .spawn(move || drop(tx.send(read_chunk(&repo, &entry, j))));
            match spawned {
                Ok(_) => {
                    ahead.insert(j, rx);
                }
                // Reading ahead only saves time: without a thread, the chunk is read when
                // it is asked for.
                Err(e) => {
                    tracing::warn!(error = %e, "starting a read-ahead thread failed");
                    break;
                }
            }
        }
    }
}

/// One stored file, read like any file: its chunk list checked against its identity when it
/// is opened, every chunk checked against its id as it is read.
pub fn open_stored(repo: Arc<Repository>, entry: FileEntry) -> FileRef {
    let bad_list = entry.check_chunk_list().err().map(|e| e.to_string());
    let mut starts = Vec::with_capacity(entry.chunks.len());
    let mut at = 0u64;
    for c in &entry.chunks {
        starts.push(at);
        at += c.len as u64;
    }
    let entry = Arc::new(entry);
    Arc::new(StoredFile {
        repo,
        entry,
        bad_list,
        starts,
        cache: Mutex::new(None),
        ahead: Mutex::default(),
    })
}

/// Reads chunk `i` of `entry` (decompressed and checked against its hash).
fn read_chunk(repo: &Repository, entry: &FileEntry, i: usize) -> io::Result<Arc<Vec<u8>>> {
    let c = &entry.chunks[i];
    let hash = parse_hash(&c.hash).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk hash {:?}", c.hash))
    })?;
    let data = repo.read_chunk(&hash, &entry.path).map_err(io::Error::other)?;
    // Offsets come from the manifest's lengths: a chunk of another length is damage.
    if data.len() != c.len as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: chunk {} holds {} bytes, the manifest says {}",
                entry.path,
                c.hash,
                data.len(),
                c.len
            ),
        ));
    }
    Ok(Arc::new(data))
}

impl File for StoredFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if let Some(why) = &self.bad_list {
            return Err(io::Error::new(io::ErrorKind::InvalidData, why.clone()));
        }
        if offset >= self.entry.size || buf.is_empty() {
            return Ok(0);
        }
        let i = self.starts.partition_point(|s| *s <= offset) - 1;
        let data = self.chunk(i)?;
        let within = (offset - self.starts[i]) as usize;
        let n = buf.len().min(data.len() - within);
        buf[..n].copy_from_slice(&data[within..within + n]);
        Ok(n)
    }

    fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.entry.size)
    }

    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

impl FileSystem for StoredFiles {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        if mode.writable() {
            return Err(read_only());
        }
        let path = normalize(path)?;
        let entry = self.entry(&path).cloned().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not in the backup", path.display()),
            )
        })?;
        Ok(open_stored(self.repo.clone(), entry))
    }

    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn remove_file(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn remove_dir(&self, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn rename(&self, _: &Path, _: &Path) -> io::Result<()> {
        Err(read_only())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let dir = normalize(path)?;
        if !self.is_dir(&dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not in the backup", dir.display()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for (p, e) in &self.files {
            let Ok(rest) = p.strip_prefix(&dir) else { continue };
            let mut comps = rest.components();
            let Some(first) = comps.next() else { continue };
            let name = first.as_os_str().to_string_lossy().into_owned();
            if !names.insert(name.clone()) {
                continue;
            }
            if comps.next().is_some() {
                out.push(DirEntry { name, kind: FileKind::Dir, len: 0 });
            } else {
                out.push(DirEntry { name, kind: FileKind::File, len: e.size });
            }
        }
        out.sort();
        Ok(out)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let path = normalize(path)?;
        if let Some(e) = self.entry(&path) {
            return Ok(Metadata { kind: FileKind::File, len: e.size, mode: e.restore_mode() });
        }
        if self.is_dir(&path) {
            return Ok(Metadata { kind: FileKind::Dir, len: 0, mode: DEFAULT_DIR_MODE });
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not in the backup", path.display()),
        ))
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}
