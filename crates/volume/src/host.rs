//! [`HostFs`]: a plain host directory behind the [`FileSystem`] seam, with no snapshots.
//!
//! Used where no shadow volume is wanted (an alternate restore target, a backup repository's
//! scratch space, tests and benchmarks that need a baseline) and as the storage underneath the
//! volume filter itself.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::fs::{
    Attributes, DirEntry, File, FileKind, FileRef, FileSystem, Metadata, OpenMode, normalize,
};

/// A host directory used as a file system root.
#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    /// Uses `root` (created if missing) as the root.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    /// The host directory behind this file system.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The host path of a path inside this file system.
    pub fn host_path(&self, path: &Path) -> io::Result<PathBuf> {
        Ok(self.root.join(normalize(path)?))
    }
}

/// An open host file.
#[derive(Debug)]
pub struct HostFile {
    file: fs::File,
    writable: bool,
}

impl HostFile {
    /// Wraps an open std file.
    pub fn new(file: fs::File, writable: bool) -> Self {
        Self { file, writable }
    }

    /// The std file behind the handle.
    pub fn std_file(&self) -> &fs::File {
        &self.file
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only"))
        }
    }
}

impl File for HostFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn seek_data(&self, offset: u64, hole: bool) -> io::Result<Option<u64>> {
        host_seek_data(&self.file, offset, hole)
    }
}

/// `SEEK_DATA`/`SEEK_HOLE` on a host file (see [`File::seek_data`]). The handle's file
/// position moves, which no caller uses: every read and write names its offset.
pub fn host_seek_data(file: &fs::File, offset: u64, hole: bool) -> io::Result<Option<u64>> {
    use rustix::fs::{SeekFrom, seek};
    use rustix::io::Errno;
    let whence = if hole { SeekFrom::Hole(offset) } else { SeekFrom::Data(offset) };
    match seek(file, whence) {
        Ok(pos) => Ok(Some(pos)),
        Err(Errno::NXIO) => Ok(None),
        // A host file system without SEEK_DATA: everything is data.
        Err(Errno::INVAL) => {
            let len = file.metadata()?.len();
            Ok((offset < len).then_some(if hole { len } else { offset }))
        }
        Err(e) => Err(e.into()),
    }
}

/// Converts std metadata into the seam's [`Attributes`].
pub fn host_attributes(m: &fs::Metadata) -> Attributes {
    use std::os::unix::fs::MetadataExt;
    let base = host_metadata(m);
    Attributes {
        kind: base.kind,
        len: base.len,
        allocated: m.blocks().saturating_mul(512),
        mode: base.mode,
        uid: m.uid(),
        gid: m.gid(),
        mtime: (m.mtime(), m.mtime_nsec().clamp(0, 999_999_999) as u32),
        nlink: m.nlink().min(u64::from(u32::MAX)) as u32,
    }
}

/// Opens a host file with the seam's open modes.
pub fn open_host(path: &Path, mode: OpenMode) -> io::Result<fs::File> {
    let mut o = fs::OpenOptions::new();
    o.read(true);
    match mode {
        OpenMode::Read => {}
        OpenMode::ReadWrite => {
            o.write(true);
        }
        OpenMode::Create => {
            o.write(true).create(true);
        }
        OpenMode::CreateNew => {
            o.write(true).create_new(true);
        }
    }
    o.open(path)
}

/// Converts std metadata into the seam's.
pub fn host_metadata(m: &fs::Metadata) -> Metadata {
    use std::os::unix::fs::PermissionsExt;
    let mode = m.permissions().mode() & 0o7777;
    if m.is_dir() {
        Metadata { kind: FileKind::Dir, len: 0, mode }
    } else {
        Metadata { kind: FileKind::File, len: m.len(), mode }
    }
}

/// Sets the permission bits of a host path.
pub fn set_host_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
}

/// Lists a host directory, sorted, skipping names for which `hide` returns true.
pub fn list_host_dir(path: &Path, hide: impl Fn(&str) -> bool) -> io::Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    for e in fs::read_dir(path)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if hide(&name) {
            continue;
        }
        // An entry renamed or removed while we list is simply not there any more: skip it
        // rather than fail the whole listing (the engine renames logs while others list them).
        let m = match e.metadata() {
            Ok(m) => host_metadata(&m),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        out.push(DirEntry { name, kind: m.kind, len: m.len });
    }
    out.sort();
    Ok(out)
}

/// The names of a host directory's entries that [`list_host_dir`] calls files (all but
/// directories), sorted, from the directory entries alone: their kind is the one the
/// directory records (`d_type`), so no entry is `stat`ed (except on the rare file systems
/// that record no kind, where the standard library asks).
pub fn list_host_file_names(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(path)? {
        let e = e?;
        match e.file_type() {
            Ok(t) if t.is_dir() => {}
            Ok(_) => out.push(e.file_name().to_string_lossy().into_owned()),
            // Removed while we list: not there any more (as in `list_host_dir`).
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    out.sort();
    Ok(out)
}

/// fsyncs a host directory so that entries created, renamed or removed in it are durable.
pub fn sync_host_dir(path: &Path) -> io::Result<()> {
    fs::File::open(path)?.sync_all()
}

impl FileSystem for HostFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let file = open_host(&self.host_path(path)?, mode)?;
        if file.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        Ok(Arc::new(HostFile::new(file, mode.writable())))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(self.host_path(path)?)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(self.host_path(path)?)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(self.host_path(path)?)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(self.host_path(from)?, self.host_path(to)?)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        list_host_dir(&self.host_path(path)?, |_| false)
    }

    fn file_names(&self, path: &Path) -> io::Result<Vec<String>> {
        list_host_file_names(&self.host_path(path)?)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        Ok(host_metadata(&fs::metadata(self.host_path(path)?)?))
    }

    fn attributes(&self, path: &Path) -> io::Result<Attributes> {
        Ok(host_attributes(&fs::metadata(self.host_path(path)?)?))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        sync_host_dir(&self.host_path(path)?)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> io::Result<()> {
        set_host_mode(&self.host_path(path)?, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{read_all, write_atomic};

    #[test]
    fn host_round_trip_and_escape_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fs = HostFs::new(dir.path()).unwrap();
        fs.create_dir_all(Path::new("a/b")).unwrap();
        let f = fs.open(Path::new("a/b/f"), OpenMode::CreateNew).unwrap();
        f.write_at(b"hello", 3).unwrap();
        assert_eq!(f.len().unwrap(), 8);
        let mut buf = [9u8; 8];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"\0\0\0hello");
        assert!(fs.open(Path::new("a/b/f"), OpenMode::CreateNew).is_err());
        assert!(fs.open(Path::new("../outside"), OpenMode::Create).is_err());
        write_atomic(&fs, Path::new("a/x"), b"v1").unwrap();
        write_atomic(&fs, Path::new("a/x"), b"v2").unwrap();
        assert_eq!(read_all(&fs, Path::new("a/x")).unwrap(), b"v2");
        let names: Vec<_> =
            fs.read_dir(Path::new("a")).unwrap().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["b", "x"]);
        let ro = fs.open(Path::new("a/x"), OpenMode::Read).unwrap();
        assert_eq!(ro.write_at(b"z", 0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn file_names_are_the_files_read_dir_lists() {
        let dir = tempfile::tempdir().unwrap();
        let fs = HostFs::new(dir.path()).unwrap();
        fs.create_dir_all(Path::new("d/sub")).unwrap();
        for name in ["d/b", "d/a", "d/.hidden", "d/sub/inner"] {
            write_atomic(&fs, Path::new(name), b"x").unwrap();
        }
        std::os::unix::fs::symlink("a", dir.path().join("d/link")).unwrap();
        let listed: Vec<String> = fs
            .read_dir(Path::new("d"))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == FileKind::File)
            .map(|e| e.name)
            .collect();
        assert_eq!(listed, [".hidden", "a", "b", "link"]);
        assert_eq!(fs.file_names(Path::new("d")).unwrap(), listed);
        let missing = fs.file_names(Path::new("nope")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn host_metadata_reports_the_mode_that_set_mode_sets() {
        let dir = tempfile::tempdir().unwrap();
        let fs = HostFs::new(dir.path()).unwrap();
        write_atomic(&fs, Path::new("f"), b"x").unwrap();
        fs.set_mode(Path::new("f"), 0o640).unwrap();
        assert_eq!(fs.metadata(Path::new("f")).unwrap().mode, 0o640);
        fs.set_mode(Path::new("f"), 0o600).unwrap();
        assert_eq!(fs.metadata(Path::new("f")).unwrap().mode, 0o600);
    }
}
