//! The live-file path: every mutation through the volume's [`FileSystem`] takes the write
//! barrier shared, preserves the old blocks a snapshot still needs ([`crate::cow`]), and parks a
//! file a snapshot needs before it is removed or renamed over.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use super::{HIDDEN, Volume, VolumeInner, remove_if_exists};
use crate::cow::{Change, FileState};
use crate::file_id::FileId;
use crate::fs::{DirEntry, File, FileRef, FileSystem, Metadata, OpenMode, normalize};
use crate::host::{host_metadata, list_host_dir, open_host, set_host_mode, sync_host_dir};

impl VolumeInner {
    fn file_state(&self, id: FileId) -> Arc<FileState> {
        let mut files = self.files.lock();
        if let Some(s) = files.get(&id).and_then(Weak::upgrade) {
            return s;
        }
        if files.len() >= 1024 && files.len().is_power_of_two() {
            files.retain(|_, w| w.strong_count() > 0);
        }
        let s = Arc::new(FileState::new(id));
        files.insert(id, Arc::downgrade(&s));
        s
    }

    /// Unlinks parked files no live snapshot needs any more.
    pub(super) fn gc_links(&self) -> io::Result<()> {
        let mut linked = self.linked.lock();
        let dead: Vec<FileId> = linked.iter().copied().filter(|id| !self.needed(*id)).collect();
        for id in dead {
            remove_if_exists(&self.links_dir().join(id.link_name()))?;
            linked.remove(&id);
        }
        Ok(())
    }

    /// Parks file `id` (now at host path `at`) under the hidden directory, so that snapshots can
    /// still reach it after the coming rename or removal.
    fn park(&self, id: FileId, at: &Path) -> io::Result<()> {
        let mut linked = self.linked.lock();
        if linked.contains(&id) {
            return Ok(());
        }
        match fs::hard_link(at, self.links_dir().join(id.link_name())) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        if self.any_persistent() {
            sync_host_dir(&self.links_dir())?;
        }
        linked.insert(id);
        Ok(())
    }

    /// Parks every file under host directory `dir` that a snapshot needs.
    fn park_tree(&self, dir: &Path) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                self.park_tree(&e.path())?;
            } else if ft.is_file() {
                let id = FileId::of(&e.metadata()?);
                if self.needed(id) {
                    self.park(id, &e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Opens the live file of identity `id` that a snapshot recorded at `path`: at its old
    /// name if it is still there, else where it was parked.
    pub(crate) fn open_by_id(&self, path: &str, id: FileId) -> io::Result<fs::File> {
        for p in [self.root.join(path), self.links_dir().join(id.link_name())] {
            if let Ok(f) = fs::File::open(&p)
                && FileId::of(&f.metadata()?) == id
            {
                return Ok(f);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("volume {}: file {path} ({id}) is no longer reachable", self.label),
        ))
    }

    fn check_path(&self, path: &Path) -> io::Result<PathBuf> {
        let p = normalize(path)?;
        if p.components().next().is_some_and(|c| c.as_os_str() == HIDDEN) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is reserved for the volume's metadata", path.display()),
            ));
        }
        Ok(self.root.join(p))
    }
}

/// A file opened through the live view of a volume.
#[derive(Debug)]
pub struct LiveFile {
    vol: Arc<VolumeInner>,
    file: fs::File,
    state: Arc<FileState>,
    writable: bool,
}

impl LiveFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only"))
        }
    }
}

impl File for LiveFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check_writable()?;
        if buf.is_empty() {
            return Ok(());
        }
        let _b = self.vol.mutation();
        let change = Change::Write { start: offset, end: offset + buf.len() as u64 };
        self.state.before_change(&self.vol, &self.file, change)?;
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let _b = self.vol.mutation();
        self.state.before_change(&self.vol, &self.file, Change::Truncate { len })?;
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl FileSystem for Volume {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let v = &self.inner;
        let host = v.check_path(path)?;
        let _b = matches!(mode, OpenMode::Create | OpenMode::CreateNew).then(|| v.mutation());
        let file = open_host(&host, mode)?;
        let m = file.metadata()?;
        if m.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        let state = v.file_state(FileId::of(&m));
        Ok(Arc::new(LiveFile { vol: v.clone(), file, state, writable: mode.writable() }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let host = self.inner.check_path(path)?;
        let _b = self.inner.mutation();
        fs::create_dir_all(host)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let v = &self.inner;
        let host = v.check_path(path)?;
        let _b = v.mutation();
        let _ns = v.ns.lock();
        let m = fs::symlink_metadata(&host)?;
        if m.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        let id = FileId::of(&m);
        if v.needed(id) {
            v.park(id, &host)?;
        }
        fs::remove_file(host)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let host = self.inner.check_path(path)?;
        if host == self.inner.root {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "cannot remove the root"));
        }
        let _b = self.inner.mutation();
        let _ns = self.inner.ns.lock();
        fs::remove_dir(host)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let v = &self.inner;
        let hf = v.check_path(from)?;
        let ht = v.check_path(to)?;
        let _b = v.mutation();
        let _ns = v.ns.lock();
        let m = fs::symlink_metadata(&hf)?;
        if m.is_dir() {
            v.park_tree(&hf)?;
        } else {
            let id = FileId::of(&m);
            if v.needed(id) {
                v.park(id, &hf)?;
            }
        }
        if let Ok(mt) = fs::symlink_metadata(&ht)
            && mt.is_file()
        {
            let id = FileId::of(&mt);
            if v.needed(id) {
                v.park(id, &ht)?;
            }
        }
        fs::rename(hf, ht)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let host = self.inner.check_path(path)?;
        let at_root = host == self.inner.root;
        list_host_dir(&host, |n| at_root && n == HIDDEN)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let host = self.inner.check_path(path)?;
        Ok(host_metadata(&fs::metadata(host)?))
    }

    fn attributes(&self, path: &Path) -> io::Result<crate::fs::Attributes> {
        let host = self.inner.check_path(path)?;
        Ok(crate::host::host_attributes(&fs::metadata(host)?))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        sync_host_dir(&self.inner.check_path(path)?)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        let host = self.inner.check_path(path)?;
        // A snapshot's table records modes: it must see the change wholly before or after.
        let _b = self.inner.mutation();
        set_host_mode(&host, mode)
    }
}
