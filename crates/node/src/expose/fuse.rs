//! A snapshot view served as a read-only FUSE file system.
//!
//! Any [`volume::FileSystem`] can be served — the software provider's snapshot views and any
//! other provider's — because everything comes through the seam: names from `read_dir`,
//! ownership, permissions and times from `attributes`, holes from `File::seek_data`, bytes from
//! `read_at`. Inode numbers are given out here, one per path, in the order the kernel first
//! looks a path up; a snapshot never changes, so every answer may be cached by the kernel for
//! long ([`TTL`]) and open files keep their page cache (`FOPEN_KEEP_CACHE`).
//!
//! Every request that would change something answers `EROFS` (the mount is read-only too, so
//! the kernel normally refuses before asking).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::{Mutex, RwLock};
use volume::{Attributes, FileKind, FileRef, FsRef, OpenMode};

/// How long the kernel may keep names and attributes: a snapshot does not change.
const TTL: Duration = Duration::from_secs(3600);

/// The I/O size `stat` advertises, so that `cp` and friends read in large pieces.
const BLKSIZE: u32 = 1 << 20;

/// `lseek` whence values the kernel forwards (it handles the others itself).
const SEEK_DATA: i32 = 3;
const SEEK_HOLE: i32 = 4;

/// Path of every inode given out: inode `n` is `paths[n - 1]`, the root (1) is "".
#[derive(Debug, Default)]
struct Inodes {
    paths: Vec<PathBuf>,
    by_path: HashMap<PathBuf, u64>,
}

impl Inodes {
    fn new() -> Self {
        let mut i = Inodes::default();
        i.paths.push(PathBuf::new());
        i.by_path.insert(PathBuf::new(), 1);
        i
    }
}

/// What an open handle holds.
#[derive(Debug)]
enum Handle {
    File(FileRef),
    /// A directory's entries as listed at `opendir`, so that `readdir` offsets stay valid.
    Dir(Vec<(u64, FileType, String)>),
}

/// A snapshot view as a FUSE file system.
#[derive(Debug)]
pub struct SnapshotFs {
    fs: FsRef,
    inodes: RwLock<Inodes>,
    handles: Mutex<HashMap<u64, std::sync::Arc<Handle>>>,
    next_handle: AtomicU64,
}

/// The errno of an error of the seam: the OS error when there is one, else by kind.
fn errno(e: &io::Error) -> Errno {
    if let Some(code) = e.raw_os_error() {
        return Errno::from_i32(code);
    }
    match e.kind() {
        io::ErrorKind::NotFound => Errno::ENOENT,
        io::ErrorKind::IsADirectory => Errno::EISDIR,
        io::ErrorKind::NotADirectory => Errno::ENOTDIR,
        io::ErrorKind::InvalidInput => Errno::EINVAL,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => Errno::EROFS,
        _ => Errno::EIO,
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
    }
}

fn time_of((secs, nanos): (i64, u32)) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

/// The `stat` of inode `ino` with attributes `a`.
fn file_attr(ino: u64, a: &Attributes) -> FileAttr {
    let mtime = time_of(a.mtime);
    FileAttr {
        ino: INodeNo(ino),
        size: a.len,
        blocks: a.allocated.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

impl SnapshotFs {
    pub fn new(fs: FsRef) -> Self {
        SnapshotFs {
            fs,
            inodes: RwLock::new(Inodes::new()),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        let i = usize::try_from(ino.0).ok().and_then(|i| i.checked_sub(1)).ok_or(Errno::ENOENT)?;
        self.inodes.read().paths.get(i).cloned().ok_or(Errno::ENOENT)
    }

    /// The inode of `path`, given out now if it has none yet.
    fn ino(&self, path: &Path) -> u64 {
        if let Some(&n) = self.inodes.read().by_path.get(path) {
            return n;
        }
        let mut i = self.inodes.write();
        if let Some(&n) = i.by_path.get(path) {
            return n;
        }
        i.paths.push(path.to_path_buf());
        let n = i.paths.len() as u64;
        i.by_path.insert(path.to_path_buf(), n);
        n
    }

    fn attr(&self, ino: u64, path: &Path) -> Result<FileAttr, Errno> {
        let a = self.fs.attributes(path).map_err(|e| errno(&e))?;
        Ok(file_attr(ino, &a))
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, std::sync::Arc::new(h));
        FileHandle(fh)
    }

    fn handle(&self, fh: FileHandle) -> Result<std::sync::Arc<Handle>, Errno> {
        self.handles.lock().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn file(&self, fh: FileHandle) -> Result<FileRef, Errno> {
        match &*self.handle(fh)? {
            Handle::File(f) => Ok(f.clone()),
            Handle::Dir(_) => Err(Errno::EISDIR),
        }
    }

    /// Reads up to `size` bytes at `offset`: fewer only at the end of the file.
    fn read_full(f: &FileRef, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match f.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn list(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let path = self.path(ino)?;
        let entries = self.fs.read_dir(&path).map_err(|e| errno(&e))?;
        let parent = path.parent().map_or(1, |p| self.ino(p));
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push((ino.0, FileType::Directory, ".".to_string()));
        out.push((parent, FileType::Directory, "..".to_string()));
        for e in entries {
            let child = path.join(&e.name);
            out.push((self.ino(&child), file_type(e.kind), e.name));
        }
        Ok(out)
    }
}

impl Filesystem for SnapshotFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // As much readahead as the kernel allows: large sequential reads are the main use.
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.path(parent).and_then(|p| {
            let path = p.join(name);
            let a = self.fs.attributes(&path).map_err(|e| errno(&e))?;
            Ok(file_attr(self.ino(&path), &a))
        });
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).and_then(|p| self.attr(ino.0, &p)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY
            || flags.0 & rustix::fs::OFlags::TRUNC.bits() as i32 != 0
        {
            return reply.error(Errno::EROFS);
        }
        match self.path(ino).and_then(|p| self.fs.open(&p, OpenMode::Read).map_err(|e| errno(&e))) {
            Ok(f) => reply.opened(self.add_handle(Handle::File(f)), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.file(fh).and_then(|f| Self::read_full(&f, offset, size).map_err(|e| errno(&e))) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.list(ino) {
            Ok(entries) => reply.opened(self.add_handle(Handle::Dir(entries)), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.handle(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(entries) = &*h else { return reply.error(Errno::ENOTDIR) };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(start) {
            // The offset given with an entry is where the next readdir resumes.
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let hole = match whence {
            SEEK_DATA => false,
            SEEK_HOLE => true,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else { return reply.error(Errno::ENXIO) };
        match self.file(fh).and_then(|f| f.seek_data(offset, hole).map_err(|e| errno(&e))) {
            Ok(Some(pos)) => reply.offset(i64::try_from(pos).unwrap_or(i64::MAX)),
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.inodes.read().paths.len() as u64;
        reply.statfs(0, 0, 0, files, 0, BLKSIZE, 255, BLKSIZE);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) { reply.error(Errno::EROFS) } else { reply.ok() }
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 { reply.size(0) } else { reply.data(&[]) }
    }

    // ---- everything that would change the snapshot: read-only ----

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_and_after_the_epoch() {
        assert_eq!(time_of((0, 0)), UNIX_EPOCH);
        assert_eq!(time_of((2, 5)), UNIX_EPOCH + Duration::new(2, 5));
        assert_eq!(time_of((-2, 5)), UNIX_EPOCH - Duration::new(1, 999_999_995));
    }

    #[test]
    fn errors_of_the_seam_keep_their_meaning() {
        assert_eq!(errno(&io::Error::from_raw_os_error(28)).code(), 28);
        assert_eq!(errno(&io::ErrorKind::NotFound.into()).code(), Errno::ENOENT.code());
        assert_eq!(errno(&volume::fs::read_only("snapshot views")).code(), Errno::EROFS.code());
        assert_eq!(errno(&io::Error::other("x")).code(), Errno::EIO.code());
    }
}
