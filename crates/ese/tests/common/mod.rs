//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ese::{DatabaseSpec, Instance, InstanceConfig};
use volume::FsRef;
use volume::fs::{FileKind, FileSystem, OpenMode};
use volume::mem::MemFs;

pub const DB: &str = "mb1";
pub const T: &str = "rows";

/// A small configuration on MemFs: 64 KiB logs, 4 KiB pages, small cache.
pub fn config(fs: &MemFs) -> InstanceConfig {
    let f: FsRef = Arc::new(fs.clone());
    let mut c = InstanceConfig::new(f.clone(), "logs", f, "sys");
    c.log_file_size = 64 * 1024;
    c.page_size = 4096;
    c.cache_pages = 64;
    c.lazy_interval = Duration::from_millis(5);
    c
}

pub fn spec(fs: &MemFs) -> DatabaseSpec {
    DatabaseSpec::new(DB, Arc::new(fs.clone()), "db/mb1.edb")
}

/// Creates an instance with one database and one table.
pub fn create(fs: &MemFs) -> Instance {
    let inst = Instance::create(config(fs)).unwrap();
    inst.create_database(DB, Arc::new(fs.clone()), "db/mb1.edb").unwrap();
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    t.commit(ese::Durability::Durable).unwrap();
    inst
}

pub fn open(fs: &MemFs) -> ese::Result<Instance> {
    Instance::open(config(fs), vec![spec(fs)])
}

/// Every row of the table.
pub fn all_rows(inst: &Instance) -> Vec<(Vec<u8>, Vec<u8>)> {
    let r = inst.begin_read().unwrap();
    let mut c = r.cursor(DB, T).unwrap();
    c.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX).unwrap()
}

/// Writes `data` at `dst` durably (the file and the names of its directories).
pub fn write_durable(fs: &MemFs, dst: &Path, data: &[u8]) {
    let parent = dst.parent().unwrap();
    fs.create_dir_all(parent).unwrap();
    let f = fs.open(dst, OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(data, 0).unwrap();
    f.sync().unwrap();
    for d in dst.ancestors().skip(1) {
        fs.sync_dir(d).unwrap();
    }
}

/// The files under `dirs` as they are now (synced or not: a killed process loses nothing
/// the kernel has), durable in a new file system.
pub fn clone_fs(from: &MemFs, dirs: &[&str]) -> MemFs {
    fn walk(from: &MemFs, to: &MemFs, dir: &Path) {
        for e in from.read_dir(dir).unwrap() {
            let p = dir.join(&e.name);
            if e.kind == FileKind::Dir {
                to.create_dir_all(&p).unwrap();
                walk(from, to, &p);
            } else {
                write_durable(to, &p, &volume::fs::read_all(from, &p).unwrap());
            }
        }
    }
    let to = MemFs::new();
    for d in dirs {
        walk(from, &to, Path::new(d));
    }
    to
}

/// The closed log generations (`E00xxxxxxxx.log`, prefix `E00`) in `dir`, in order.
pub fn closed_in(fs: &MemFs, dir: &Path) -> Vec<u32> {
    let mut v: Vec<u32> = fs
        .read_dir(dir)
        .unwrap()
        .into_iter()
        .filter_map(|e| ese::logfmt::parse_generation_name("E00", &e.name))
        .collect();
    v.sort_unstable();
    v
}

mod value;
pub use value::value;
