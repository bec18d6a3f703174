//! The btrfs ioctls the provider needs, and nothing else: create a read-only snapshot of a
//! subvolume, destroy one, and map a file's extents to their places on disk (shadow-storage
//! accounting). Subvolume detection and `syncfs` need no `unsafe` (`rustix`).
//!
//! Why raw ioctls: no maintained crate wraps the btrfs snapshot ioctls, and shelling out to
//! `btrfs` would make the provider depend on a command's output format and on `PATH`. Each
//! `unsafe` block below passes a buffer whose layout is the kernel's `#[repr(C)]` structure
//! (sizes asserted at compile time) to `ioctl(2)` on a file descriptor that stays open for the
//! call.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `BTRFS_SUPER_MAGIC`: `statfs(2)`'s `f_type` on a btrfs file system.
pub const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root directory.
pub const SUBVOLUME_ROOT_INO: u64 = 256;

const BTRFS_IOCTL_MAGIC: u64 = 0x94;
/// Longest snapshot name the kernel accepts (`BTRFS_SUBVOL_NAME_MAX`).
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_PATH_NAME_MAX`.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_SUBVOL_RDONLY`.
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `_IOC(dir, type, nr, size)` of the generic ioctl encoding (x86, arm, riscv...).
const fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READWRITE: u64 = 3;

/// `struct btrfs_ioctl_vol_args_v2`.
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);

/// `BTRFS_IOC_SNAP_CREATE_V2`.
const SNAP_CREATE_V2: u64 = ioc(IOC_WRITE, BTRFS_IOCTL_MAGIC, 23, 4096);
/// `BTRFS_IOC_SNAP_DESTROY`.
const SNAP_DESTROY: u64 = ioc(IOC_WRITE, BTRFS_IOCTL_MAGIC, 15, 4096);

/// `struct fiemap` with room for [`EXTENTS_PER_CALL`] `struct fiemap_extent`s.
#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS_PER_CALL],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

const EXTENTS_PER_CALL: usize = 128;
const _: () = assert!(std::mem::size_of::<FiemapExtent>() == 56);
/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)` (the header is 32 bytes).
const FS_IOC_FIEMAP: u64 = ioc(IOC_READWRITE, b'f' as u64, 11, 32);
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// `FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE |
/// FIEMAP_EXTENT_NOT_ALIGNED`: no physical range to account.
const NO_RANGE_OF_ITS_OWN: u32 = 0x2 | 0x4 | 0x200 | 0x100;

fn name_bytes<const N: usize>(name: &OsStr) -> io::Result<[u8; N]> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= N || b.contains(&0) || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a valid snapshot name", name.to_string_lossy()),
        ));
    }
    let mut out = [0u8; N];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Creates a read-only snapshot of the subvolume at `source` as `parent/name`.
pub fn snapshot_readonly(source: &Path, parent: &Path, name: &OsStr) -> io::Result<()> {
    let src = File::open(source)?;
    let dst = File::open(parent)?;
    let mut args = Box::new(VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: SUBVOL_RDONLY,
        unused: [0; 4],
        name: name_bytes(name)?,
    });
    // SAFETY: `dst` is an open directory for the whole call; `args` is a live, exclusively
    // borrowed `struct btrfs_ioctl_vol_args_v2` (4096 bytes, layout asserted above) with a
    // NUL-terminated name, and `args.fd` names `src`, also open for the call. The kernel only
    // reads the structure (an `_IOW` request).
    let rc =
        unsafe { libc::ioctl(dst.as_raw_fd(), SNAP_CREATE_V2 as _, &mut *args as *mut VolArgsV2) };
    check(rc)
}

/// Destroys the subvolume (snapshot) `parent/name`.
pub fn destroy_subvolume(parent: &Path, name: &OsStr) -> io::Result<()> {
    let dir = File::open(parent)?;
    let mut args = Box::new(VolArgs { fd: 0, name: name_bytes(name)? });
    // SAFETY: `dir` is an open directory for the whole call; `args` is a live, exclusively
    // borrowed `struct btrfs_ioctl_vol_args` (4096 bytes, layout asserted above) with a
    // NUL-terminated name. The kernel only reads it (`_IOW`).
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), SNAP_DESTROY as _, &mut *args as *mut VolArgs) };
    check(rc)
}

/// Appends to `out` the on-disk byte ranges `(physical start, length)` of `file`'s data
/// extents. Inline data (kept inside the metadata) and extents not yet allocated (delayed
/// allocation; the caller syncs first) have no range of their own and are skipped.
pub fn physical_extents(file: &File, out: &mut Vec<(u64, u64)>) -> io::Result<()> {
    let mut map = Box::new(Fiemap {
        start: 0,
        length: u64::MAX,
        flags: 0,
        mapped_extents: 0,
        extent_count: EXTENTS_PER_CALL as u32,
        reserved: 0,
        extents: [FiemapExtent::default(); EXTENTS_PER_CALL],
    });
    loop {
        map.mapped_extents = 0;
        // SAFETY: `file` is open for the call; `map` is a live, exclusively borrowed
        // `struct fiemap` whose `extent_count` matches the array that follows it, so the
        // kernel writes at most `EXTENTS_PER_CALL` extents inside the allocation.
        let rc =
            unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *map as *mut Fiemap) };
        check(rc)?;
        let n = (map.mapped_extents as usize).min(EXTENTS_PER_CALL);
        if n == 0 {
            return Ok(());
        }
        for e in &map.extents[..n] {
            if e.flags & NO_RANGE_OF_ITS_OWN == 0 && e.length > 0 {
                out.push((e.physical, e.length));
            }
        }
        let last = map.extents[n - 1];
        if last.flags & FIEMAP_EXTENT_LAST != 0 {
            return Ok(());
        }
        let next = last.logical + last.length;
        map.start = next;
        map.length = u64::MAX - next;
    }
}
