//! An active storage group writing rows, its seed and shipping, and reading a passive copy.
#![allow(dead_code)]
// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ese::{BackupKind, DatabaseSpec, Durability, Instance, InstanceConfig, PassiveConfig};
use replication::ReplayerConfig;
use volume::mem::MemFs;
use volume::{FsRef, OpenMode};

pub const DB: &str = "mb1";
pub const T: &str = "rows";
pub const PREFIX: &str = "E00";
pub const DB_PATH: &str = "db/mb1.edb";

pub type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

/// 64 KiB logs and 4 KiB pages, so a few hundred rows span several generations.
pub fn config(fs: &FsRef) -> InstanceConfig {
    let mut c = InstanceConfig::new(fs.clone(), "logs", fs.clone(), "sys");
    c.log_file_size = 64 * 1024;
    c.page_size = 4096;
    c.cache_pages = 64;
    c.lazy_interval = Duration::from_millis(5);
    c
}

/// The active copy: an instance with one database and table, and what it holds after each
/// generation it closed with an explicit roll.
pub struct Active {
    pub fs: FsRef,
    pub inst: Instance,
    pub rows: Rows,
    /// Content as of the end of each explicitly rolled generation.
    pub at: HashMap<u32, Rows>,
    next_key: u64,
}

impl Active {
    pub fn new() -> Active {
        let fs: FsRef = Arc::new(MemFs::new());
        let inst = Instance::create(config(&fs)).unwrap();
        inst.create_database(DB, fs.clone(), DB_PATH).unwrap();
        let mut t = inst.begin_write().unwrap();
        t.create_table(DB, T).unwrap();
        t.commit(Durability::Durable).unwrap();
        Active { fs, inst, rows: Rows::new(), at: HashMap::new(), next_key: 0 }
    }

    /// Commits `n` transactions of a few rows each (some overwrite, some delete).
    pub fn write(&mut self, n: usize) {
        for _ in 0..n {
            let mut t = self.inst.begin_write().unwrap();
            for _ in 0..4 {
                let k = self.next_key;
                self.next_key += 1;
                let key = format!("k{:06}", k % 97 * 1000 + k / 97).into_bytes();
                if k % 11 == 5 {
                    let victim = format!("k{:06}", (k - 1) % 97 * 1000 + (k - 1) / 97).into_bytes();
                    t.delete(DB, T, &victim).unwrap();
                    self.rows.remove(&victim);
                }
                let val = value(k, 60 + (k % 200) as usize);
                t.put(DB, T, &key, &val).unwrap();
                self.rows.insert(key, val);
            }
            t.commit(Durability::Durable).unwrap();
        }
    }

    /// Commits one transaction of `rows` rows of `len` bytes: large enough, it is logged as
    /// several records that span generations.
    pub fn write_big(&mut self, rows: usize, len: usize) {
        let mut t = self.inst.begin_write().unwrap();
        for i in 0..rows {
            let k = self.next_key;
            self.next_key += 1;
            let key = format!("big{i:05}-{k}").into_bytes();
            let val = value(k, len);
            t.put(DB, T, &key, &val).unwrap();
            self.rows.insert(key, val);
        }
        t.commit(Durability::Durable).unwrap();
    }

    /// Closes the current generation; remembers the content at its end.
    pub fn roll(&mut self) -> u32 {
        let g = self.inst.roll_log().unwrap();
        self.at.insert(g, self.rows.clone());
        g
    }

    /// The closed generations on the active's log volume.
    pub fn closed(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .fs
            .read_dir(Path::new("logs"))
            .unwrap()
            .into_iter()
            .filter_map(|e| ese::logfmt::parse_generation_name(PREFIX, &e.name))
            .collect();
        out.sort();
        out
    }

    pub fn log_path(g: u32) -> PathBuf {
        Path::new("logs").join(ese::logfmt::generation_name(PREFIX, g))
    }

    /// Seeds a passive copy: the database file copied while the engine holds it frozen (a
    /// copy-kind backup session: prepare, freeze — which rolls the log and holds page and
    /// log writes, so the file is a crash-consistent image whose header names the log range
    /// it needs — copy, thaw, end). Returns the generation the freeze closed.
    pub fn seed(&mut self, passive: &FsRef) -> u32 {
        let mut b = self.inst.backup_session(BackupKind::Copy).unwrap();
        b.prepare().unwrap();
        let rolled = b.freeze().unwrap();
        copy(&self.fs, Path::new(DB_PATH), passive, Path::new(DB_PATH));
        b.thaw().unwrap();
        b.end().unwrap();
        self.at.insert(rolled, self.rows.clone());
        rolled
    }

    /// Ships generation `g` into the passive's inbox (written aside, then renamed in).
    pub fn ship(&self, g: u32, passive: &FsRef) {
        let data = volume::fs::read_all(self.fs.as_ref(), &Self::log_path(g)).unwrap();
        passive.create_dir_all(Path::new("inbox")).unwrap();
        let to = Path::new("inbox").join(ese::logfmt::generation_name(PREFIX, g));
        volume::fs::write_atomic(passive.as_ref(), &to, &data).unwrap();
        sync_dirs(passive, &to);
    }
}

pub fn copy(from: &FsRef, src: &Path, to: &FsRef, dst: &Path) {
    let data = volume::fs::read_all(from.as_ref(), src).unwrap();
    if let Some(p) = dst.parent() {
        to.create_dir_all(p).unwrap();
    }
    let f = to.open(dst, OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(&data, 0).unwrap();
    f.sync().unwrap();
    sync_dirs(to, dst);
}

/// Makes `path`'s name and its directories' names durable (a power loss keeps them).
pub fn sync_dirs(fs: &FsRef, path: &Path) {
    for dir in path.ancestors().skip(1) {
        fs.sync_dir(dir).unwrap();
    }
}

pub fn passive_config(fs: &FsRef) -> PassiveConfig {
    PassiveConfig {
        databases: vec![DatabaseSpec::new(DB, fs.clone(), DB_PATH)],
        checkpoint_fs: fs.clone(),
        checkpoint_path: PathBuf::from("passive/E00.pchk"),
        prefix: PREFIX.into(),
    }
}

pub fn replayer_config(fs: &FsRef) -> ReplayerConfig {
    ReplayerConfig { passive: passive_config(fs), inbox_fs: fs.clone(), inbox: "inbox".into() }
}

/// Reads the passive database through the engine: a copy of its file, marked clean (the
/// passive is consistent at a generation boundary when no transaction is open across it),
/// attached to a scratch instance. The passive itself is left untouched.
pub fn passive_rows(passive: &FsRef) -> Rows {
    let scratch: FsRef = Arc::new(MemFs::new());
    copy(passive, Path::new(DB_PATH), &scratch, Path::new("copy.edb"));
    let f = scratch.open(Path::new("copy.edb"), OpenMode::ReadWrite).unwrap();
    let mut h = ese::dbheader::read_header(f.as_ref(), Path::new("copy.edb")).unwrap();
    h.state = ese::DbState::CleanShutdown;
    h.min_required = ese::Lsn(0);
    h.max_required = ese::Lsn(0);
    ese::dbheader::write_header(f.as_ref(), Path::new("copy.edb"), &mut h).unwrap();
    drop(f);
    let inst = Instance::create(config(&scratch)).unwrap();
    inst.attach(DB, scratch.clone(), "copy.edb").unwrap();
    let r = inst.begin_read().unwrap();
    let mut c = r.cursor(DB, T).unwrap();
    let rows = c
        .range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX)
        .unwrap()
        .into_iter()
        .collect();
    drop(c);
    drop(r);
    inst.shutdown().unwrap();
    rows
}

#[path = "../../../ese/tests/common/value.rs"]
mod value;
pub use value::value;

/// The manifest of a seed of the test database, copied to `seed_fs` at `generation`.
pub fn seed_manifest(
    sg: &str,
    seed_fs: &FsRef,
    signature: &[u8],
    generation: u32,
) -> replication::protocol::SeedManifest {
    let size = volume::fs::read_all(seed_fs.as_ref(), Path::new(DB_PATH)).unwrap().len();
    replication::protocol::SeedManifest {
        id: uuid::Uuid::new_v4(),
        sg: sg.into(),
        prefix: PREFIX.into(),
        signature: replication::protocol::hex(signature),
        generation,
        log_file_size: 64 * 1024,
        page_size: 4096,
        databases: vec![replication::protocol::SeedFile { name: DB.into(), size: size as u64 }],
        snapshot_set: uuid::Uuid::new_v4(),
    }
}

/// The seeded test database, opened for streaming.
pub fn seed_reader(seed_fs: &FsRef) -> replication::source::SeedReader {
    let file = seed_fs.open(Path::new(DB_PATH), OpenMode::Read).unwrap();
    let len = file.len().unwrap();
    replication::source::SeedReader { file, len }
}
