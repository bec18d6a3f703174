//! [`BtrfsView`]: a btrfs read-only snapshot as a read-only [`FileSystem`].
//!
//! The snapshot is a plain directory tree that the kernel already keeps as of the commit, so
//! the view is the host directory with the volume's hidden metadata directory left out and
//! every mutation refused. A handle opened before the snapshot is deleted keeps reading.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use crate::fs::{DirEntry, FileRef, FileSystem, Metadata, OpenMode, normalize, read_only};
use crate::host::{HostFile, host_metadata, list_host_dir, open_host};
use crate::volume::HIDDEN;

/// A read-only view of one btrfs snapshot. `Send + Sync`; cheap to clone.
#[derive(Debug, Clone)]
pub struct BtrfsView {
    id: Uuid,
    root: PathBuf,
}

impl BtrfsView {
    pub(crate) fn new(id: Uuid, root: PathBuf) -> Self {
        BtrfsView { id, root }
    }

    /// The snapshot's id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The snapshot's directory (a read-only btrfs subvolume).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn host(&self, path: &Path) -> io::Result<PathBuf> {
        let p = normalize(path)?;
        if p.components().next().is_some_and(|c| c.as_os_str() == HIDDEN) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: not in the snapshot", path.display()),
            ));
        }
        Ok(self.root.join(p))
    }
}

const WHAT: &str = "btrfs snapshots";

impl FileSystem for BtrfsView {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        if mode.writable() {
            return Err(read_only(WHAT));
        }
        let file = open_host(&self.host(path)?, OpenMode::Read)?;
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(Arc::new(HostFile::new(file, false)))
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Err(read_only(WHAT))
    }

    fn remove_file(&self, _path: &Path) -> io::Result<()> {
        Err(read_only(WHAT))
    }

    fn remove_dir(&self, _path: &Path) -> io::Result<()> {
        Err(read_only(WHAT))
    }

    fn rename(&self, _from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only(WHAT))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let host = self.host(path)?;
        let at_root = host == self.root;
        list_host_dir(&host, |n| at_root && n == HIDDEN)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        Ok(host_metadata(&fs::metadata(self.host(path)?)?))
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}
