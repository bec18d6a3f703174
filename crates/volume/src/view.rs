//! [`SnapshotView`]: a snapshot as a read-only [`FileSystem`].
//!
//! Names, sizes and directory listings come from the snapshot's frozen table. A block's bytes
//! come from the first diff area that holds it along the read chain (this snapshot, then each
//! newer one), else from the live file. Readers take no lock the writers take: a read of the
//! live file is followed by a second look at the chain, and because a writer records a block
//! in a diff area *before* it overwrites the block, a read that raced an overwrite finds the
//! preserved copy on that second look and uses it instead.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use uuid::Uuid;

use crate::cow::read_full;
use crate::error::VolumeError;
use crate::fs::{
    Attributes, DEFAULT_DIR_MODE, DirEntry, File, FileKind, FileRef, FileSystem, Metadata,
    OpenMode, normalize,
};
use crate::snapshot::{ShadowCopyInfo, Snapshot};
use crate::table::{FileEntry, Node};
use crate::volume::VolumeInner;

/// A read-only view of one snapshot. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    vol: Arc<VolumeInner>,
    snap: Arc<Snapshot>,
}

fn read_only() -> io::Error {
    crate::fs::read_only("snapshot views")
}

fn key(path: &Path) -> io::Result<String> {
    Ok(normalize(path)?.to_string_lossy().into_owned())
}

impl SnapshotView {
    pub(crate) fn new(vol: Arc<VolumeInner>, snap: Arc<Snapshot>) -> Self {
        SnapshotView { vol, snap }
    }

    /// The snapshot's id.
    pub fn id(&self) -> Uuid {
        self.snap.id
    }

    /// What the provider reports about the snapshot.
    pub fn info(&self) -> ShadowCopyInfo {
        self.vol.info(&self.snap)
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.snap.diff.is_deleted() {
            return Err(VolumeError::SnapshotDeleted(self.snap.id).into());
        }
        Ok(())
    }

    fn node(&self, path: &Path) -> io::Result<Node> {
        self.check_alive()?;
        let k = key(path)?;
        self.snap.table.get(&k).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{k} does not exist in snapshot {}", self.snap.id),
            )
        })
    }
}

impl FileSystem for SnapshotView {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        if mode != OpenMode::Read {
            return Err(read_only());
        }
        let entry = match self.node(path)? {
            Node::Dir => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            Node::File(e) => e,
        };
        let live =
            if entry.len == 0 { None } else { Some(self.vol.open_by_id(&key(path)?, entry.id)?) };
        Ok(Arc::new(SnapshotFile { vol: self.vol.clone(), snap: self.snap.clone(), entry, live }))
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
        self.check_alive()?;
        let k = key(path)?;
        self.snap.table.list(&k).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {k} does not exist in snapshot {}", self.snap.id),
            )
        })
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        Ok(match self.node(path)? {
            Node::Dir => Metadata { kind: FileKind::Dir, len: 0, mode: DEFAULT_DIR_MODE },
            Node::File(e) => Metadata { kind: FileKind::File, len: e.len, mode: e.mode },
        })
    }

    /// As the snapshot's table recorded them: the permissions, owner and modification time
    /// each file and directory had at snapshot time.
    fn attributes(&self, path: &Path) -> io::Result<Attributes> {
        Ok(match self.node(path)? {
            Node::Dir => {
                let a = self.snap.table.dirs.get(&key(path)?).copied();
                let owner = a.map(|a| a.owner).unwrap_or_default();
                Attributes {
                    kind: FileKind::Dir,
                    len: 0,
                    allocated: 0,
                    mode: a.map_or(DEFAULT_DIR_MODE, |a| a.mode),
                    uid: owner.uid,
                    gid: owner.gid,
                    mtime: owner.mtime,
                    nlink: 2,
                }
            }
            Node::File(e) => Attributes {
                kind: FileKind::File,
                len: e.len,
                allocated: e.extents.bytes(),
                mode: e.mode,
                uid: e.owner.uid,
                gid: e.owner.gid,
                mtime: e.owner.mtime,
                nlink: 1,
            },
        })
    }

    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// A file of a snapshot, open for reading.
#[derive(Debug)]
pub struct SnapshotFile {
    vol: Arc<VolumeInner>,
    snap: Arc<Snapshot>,
    entry: Arc<FileEntry>,
    live: Option<fs::File>,
}

impl SnapshotFile {
    /// Finds block `b` along the chain and copies `buf.len()` bytes from `skip` into it.
    fn read_chain(
        &self,
        chain: &[Arc<Snapshot>],
        b: u64,
        skip: u64,
        buf: &mut [u8],
    ) -> io::Result<bool> {
        for s in chain {
            if let Some(slot) = s.diff.lookup(self.entry.id, b) {
                s.diff.read_slot(slot, skip, buf)?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl File for SnapshotFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if self.snap.diff.is_deleted() {
            return Err(VolumeError::SnapshotDeleted(self.snap.id).into());
        }
        let len = self.entry.len;
        if offset >= len || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(len - offset) as usize;
        let bs = self.vol.block_size;
        let chain = self.vol.chain_from(self.snap.seq);
        if chain.first().is_none_or(|s| s.id != self.snap.id) {
            return Err(VolumeError::SnapshotDeleted(self.snap.id).into());
        }
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let b = pos / bs;
            let block_start = b * bs;
            let block_end = (block_start + bs).min(len);
            let take = ((block_end - pos) as usize).min(n - done);
            let out = &mut buf[done..done + take];
            let skip = pos - block_start;
            if !self.entry.extents.overlaps(block_start, block_end) {
                out.fill(0);
            } else if !self.read_chain(&chain, b, skip, out)? {
                let live = self.live.as_ref().ok_or_else(|| {
                    io::Error::other("snapshot view: a non-empty file has no live handle")
                })?;
                read_full(live, out, pos)?;
                // Second look: a writer that overwrote the block meanwhile preserved it first.
                self.read_chain(&chain, b, skip, out)?;
            }
            done += take;
        }
        Ok(n)
    }

    fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.entry.len)
    }

    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }

    /// From the allocated ranges recorded at snapshot time: a hole then reads as zeros.
    fn seek_data(&self, offset: u64, hole: bool) -> io::Result<Option<u64>> {
        Ok(self.entry.extents.seek(offset, self.entry.len, hole))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn views_and_volumes_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::SnapshotView>();
        send_sync::<super::SnapshotFile>();
        send_sync::<crate::volume::Volume>();
        send_sync::<crate::provider::SoftwareProvider>();
    }
}
