//! A snapshot's file table: every directory and file of the volume at snapshot time, with each
//! file's identity, length and allocated ranges.
//!
//! Taking it costs one `stat` per entry (plus two `lseek`s per data extent of a sparse file),
//! never a read of file data: this is the "copy of the MFT and the in-use bitmap" that makes a
//! snapshot cheap.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::extents::{self, Extents};
use crate::file_id::FileId;
use crate::fs::{DirEntry, FileKind};

/// One file as the snapshot saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: FileId,
    pub len: u64,
    pub extents: Extents,
    /// Permission bits at snapshot time, so that a backup from the snapshot records them.
    /// Tables persisted before modes were kept read as the default file mode.
    #[serde(default = "default_file_mode")]
    pub mode: u32,
    /// Owner, group and modification time at snapshot time, so that an exposed snapshot shows
    /// its files as they were. Tables persisted before these were kept read as root's, at
    /// the epoch.
    #[serde(flatten)]
    pub owner: Owner,
}

/// Owner, group and modification time of a file or directory at snapshot time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Seconds and nanoseconds since the Unix epoch.
    #[serde(default)]
    pub mtime: (i64, u32),
}

impl Owner {
    /// The owner, group and modification time of host metadata.
    pub fn of(m: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Owner {
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec().clamp(0, 999_999_999) as u32),
        }
    }
}

/// A directory as the snapshot saw it (permissions and owner), for a mount of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirAttrs {
    pub mode: u32,
    #[serde(flatten)]
    pub owner: Owner,
}

fn default_file_mode() -> u32 {
    crate::fs::DEFAULT_FILE_MODE
}

/// A node of the table.
#[derive(Debug, Clone)]
pub enum Node {
    Dir,
    File(Arc<FileEntry>),
}

/// The frozen namespace of a snapshot.
#[derive(Debug, Default)]
pub struct FileTable {
    /// Every path (relative, `/`-separated, the root excluded).
    pub paths: BTreeMap<String, Node>,
    /// Files by identity.
    pub by_id: HashMap<FileId, Arc<FileEntry>>,
    /// Directories' permissions and owners by path ("" is the root); a directory missing here
    /// (tables persisted before they were kept) reads as [`crate::fs::DEFAULT_DIR_MODE`],
    /// owned by root.
    pub dirs: HashMap<String, DirAttrs>,
}

/// Serialized form of a table row.
#[derive(Debug, Serialize, Deserialize)]
pub struct Row {
    pub path: String,
    pub kind: FileKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileEntry>,
    /// A directory's permissions and owner (absent in tables persisted before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<DirAttrs>,
}

/// Permission bits of host metadata.
fn mode_of(m: &fs::Metadata) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
}

impl FileTable {
    /// Scans the host directory `root`, skipping the top-level entry named `hidden`.
    pub fn scan(root: &Path, hidden: &str) -> io::Result<Self> {
        let mut t = FileTable::default();
        let m = fs::metadata(root)?;
        t.dirs.insert(String::new(), DirAttrs { mode: mode_of(&m), owner: Owner::of(&m) });
        t.scan_dir(root, "", Some(hidden))?;
        Ok(t)
    }

    fn scan_dir(&mut self, dir: &Path, prefix: &str, hidden: Option<&str>) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if Some(name) == hidden {
                continue;
            }
            let path =
                if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
            let ft = e.file_type()?;
            if ft.is_dir() {
                match e.metadata() {
                    Ok(m) => {
                        let attrs = DirAttrs { mode: mode_of(&m), owner: Owner::of(&m) };
                        self.dirs.insert(path.clone(), attrs);
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
                self.paths.insert(path.clone(), Node::Dir);
                self.scan_dir(&e.path(), &path, None)?;
            } else if ft.is_file() {
                let m = match e.metadata() {
                    Ok(m) => m,
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                };
                let extents = extents::scan(&e.path(), &m)?;
                let entry = FileEntry {
                    id: FileId::of(&m),
                    len: m.len(),
                    extents,
                    mode: mode_of(&m),
                    owner: Owner::of(&m),
                };
                self.insert_file(path, entry);
            }
        }
        Ok(())
    }

    fn insert_file(&mut self, path: String, entry: FileEntry) {
        let entry = Arc::new(entry);
        self.by_id.entry(entry.id).or_insert_with(|| entry.clone());
        self.paths.insert(path, Node::File(entry));
    }

    /// Rows for persistence.
    pub fn rows(&self) -> Vec<Row> {
        let root = self.dirs.get("").map(|a| Row {
            path: String::new(),
            kind: FileKind::Dir,
            file: None,
            dir: Some(*a),
        });
        root.into_iter()
            .chain(self.paths.iter().map(|(p, n)| match n {
                Node::Dir => Row {
                    path: p.clone(),
                    kind: FileKind::Dir,
                    file: None,
                    dir: self.dirs.get(p).copied(),
                },
                Node::File(f) => Row {
                    path: p.clone(),
                    kind: FileKind::File,
                    file: Some((**f).clone()),
                    dir: None,
                },
            }))
            .collect()
    }

    /// Rebuilds a table from persisted rows.
    pub fn from_rows(rows: Vec<Row>) -> Self {
        let mut t = FileTable::default();
        for r in rows {
            match (r.kind, r.file) {
                (FileKind::File, Some(f)) => t.insert_file(r.path, f),
                _ => {
                    if let Some(a) = r.dir {
                        t.dirs.insert(r.path.clone(), a);
                    }
                    // The root's row carries only its attributes: the root is implicit.
                    if !r.path.is_empty() {
                        t.paths.insert(r.path, Node::Dir);
                    }
                }
            }
        }
        t
    }

    /// The node at `path` ("" is the root directory).
    pub fn get(&self, path: &str) -> Option<Node> {
        if path.is_empty() {
            return Some(Node::Dir);
        }
        self.paths.get(path).cloned()
    }

    /// The entries directly inside directory `dir`, sorted by name.
    pub fn list(&self, dir: &str) -> Option<Vec<DirEntry>> {
        if !matches!(self.get(dir)?, Node::Dir) {
            return None;
        }
        let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
        let mut out = Vec::new();
        for (p, n) in self.paths.range(prefix.clone()..) {
            let Some(rest) = p.strip_prefix(&prefix) else { break };
            if rest.is_empty() || rest.contains('/') {
                continue;
            }
            let (kind, len) = match n {
                Node::Dir => (FileKind::Dir, 0),
                Node::File(f) => (FileKind::File, f.len),
            };
            out.push(DirEntry { name: rest.to_string(), kind, len });
        }
        out.sort();
        Some(out)
    }

    /// Number of files.
    pub fn file_count(&self) -> usize {
        self.by_id.len()
    }
}
