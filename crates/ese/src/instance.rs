//! The instance (storage group): one log stream, one checkpoint, databases sharing them, the
//! buffer cache and the lazy writer.
//!
//! Write path (no-steal, redo-only): a write transaction changes private copies of pages; at
//! commit one or more log records carry, per changed page, either a full body image (the first
//! change of a page since it was last written to the file, so a torn page can always be
//! rebuilt) or the changed byte ranges. The new versions are installed in the cache as dirty;
//! the lazy writer writes dirty pages only after the log is durable past them (write-ahead
//! rule), then advances the checkpoint to the oldest change still unwritten. Rollback throws
//! the private copies away; nothing uncommitted ever reaches a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use volume::{FileRef, FsRef, OpenMode};

use crate::backup::{BackupRegistry, EngineNotice};
use crate::cache::Cache;
use crate::checkpoint::{self, Checkpoint};
use crate::codec::now_secs;
use crate::dbheader::{self, DbHeader, DbState};
use crate::error::{EngineError, IoContext, Result};
use crate::log::{self, Log, LogConfig};
use crate::logfmt::{self, AttachedDb, Record, ScanEnd};
use crate::lsn::Lsn;
use crate::page::{self, PageProblem, ROOT_PGNO};
use crate::redo;

/// Receives the engine's notices (backup steps, truncation decisions).
pub type NoticeSink = Arc<dyn Fn(&EngineNotice) + Send + Sync>;

/// How to create or open an instance.
#[derive(Clone)]
pub struct InstanceConfig {
    /// File system and directory of the transaction logs.
    pub log_fs: FsRef,
    pub log_dir: PathBuf,
    /// File system and directory of the checkpoint file.
    pub system_fs: FsRef,
    pub system_dir: PathBuf,
    /// Log prefix: `E00`, `E01`, ...
    pub prefix: String,
    /// Size of each log generation (64 KiB–32 MiB, 1 MiB by default).
    pub log_file_size: u32,
    /// Database page size (4–32 KiB, 32 KiB by default).
    pub page_size: usize,
    /// Buffer cache size in pages.
    pub cache_pages: usize,
    /// Reuse logs once the checkpoint passed them; only full and copy backups are then allowed.
    pub circular_logging: bool,
    /// How long a snapshot freeze may last before the watchdog thaws it (70 s by default).
    pub freeze_timeout: Duration,
    /// How often the lazy writer flushes lazy commits and checks the checkpoint.
    pub lazy_interval: Duration,
    /// Where notices go.
    pub notice: Option<NoticeSink>,
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConfig")
            .field("log_dir", &self.log_dir)
            .field("system_dir", &self.system_dir)
            .field("prefix", &self.prefix)
            .field("log_file_size", &self.log_file_size)
            .field("page_size", &self.page_size)
            .field("cache_pages", &self.cache_pages)
            .field("circular_logging", &self.circular_logging)
            .field("freeze_timeout", &self.freeze_timeout)
            .finish()
    }
}

impl InstanceConfig {
    /// Defaults: prefix `E00`, 1 MiB logs, 32 KiB pages, 1024 cache pages, no circular
    /// logging, 70 s freeze timeout.
    pub fn new(
        log_fs: FsRef,
        log_dir: impl Into<PathBuf>,
        system_fs: FsRef,
        system_dir: impl Into<PathBuf>,
    ) -> Self {
        InstanceConfig {
            log_fs,
            log_dir: log_dir.into(),
            system_fs,
            system_dir: system_dir.into(),
            prefix: "E00".into(),
            log_file_size: logfmt::DEFAULT_LOG_FILE_SIZE,
            page_size: page::DEFAULT_PAGE_SIZE,
            cache_pages: 1024,
            circular_logging: false,
            freeze_timeout: Duration::from_secs(70),
            lazy_interval: Duration::from_millis(50),
            notice: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(64 * 1024..=32 * 1024 * 1024).contains(&self.log_file_size) {
            return Err(EngineError::Config(format!(
                "log file size {} is outside 64 KiB..32 MiB",
                self.log_file_size
            )));
        }
        if !page::valid_page_size(self.page_size) {
            return Err(EngineError::Config(format!(
                "page size {} is not a power of two in 4..32 KiB",
                self.page_size
            )));
        }
        if self.page_size * 2 + 8192 > self.log_file_size as usize {
            return Err(EngineError::Config("log files must hold two full pages".into()));
        }
        if self.prefix.len() != 3 || !self.prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(EngineError::Config(format!(
                "log prefix {:?} must be 3 characters like E00",
                self.prefix
            )));
        }
        Ok(())
    }

    pub(crate) fn checkpoint_path(&self) -> PathBuf {
        self.system_dir.join(logfmt::checkpoint_name(&self.prefix))
    }
}

/// Where a database file is.
#[derive(Debug, Clone)]
pub struct DatabaseSpec {
    pub name: String,
    pub fs: FsRef,
    pub path: PathBuf,
}

impl DatabaseSpec {
    pub fn new(name: impl Into<String>, fs: FsRef, path: impl Into<PathBuf>) -> Self {
        DatabaseSpec { name: name.into(), fs, path: path.into() }
    }
}

/// An attached database.
#[derive(Debug)]
pub(crate) struct Db {
    pub dbid: u32,
    pub name: String,
    #[allow(dead_code)] // kept for diagnostics and future detach-to-elsewhere
    pub fs: FsRef,
    pub path: PathBuf,
    pub file: FileRef,
    pub header: Mutex<DbHeader>,
    pub page_size: usize,
    /// File length as last set by the engine (pages are written only below it, see
    /// [`Inner::reserve_pages`]).
    pub len: AtomicU64,
}

impl Db {
    /// Reads and verifies a page from the file.
    pub fn read_page(&self, pgno: u64) -> Result<Vec<u8>> {
        let mut img = vec![0u8; self.page_size];
        let n = self.file.read_at(&mut img, pgno * self.page_size as u64).at(&self.path)?;
        if n < self.page_size {
            return Err(EngineError::PageNotInitialized { path: self.path.clone(), pgno });
        }
        match page::verify(pgno, &img) {
            Ok(()) => Ok(img),
            Err(PageProblem::NotInitialized) => {
                Err(EngineError::PageNotInitialized { path: self.path.clone(), pgno })
            }
            Err(PageProblem::Corrupt(why)) => {
                Err(EngineError::PageCorrupt { path: self.path.clone(), pgno, why })
            }
        }
    }

    fn attached(&self) -> AttachedDb {
        AttachedDb {
            dbid: self.dbid,
            name: self.name.clone(),
            path: self.path.display().to_string(),
        }
    }
}

/// What recovery did when the instance was opened.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryInfo {
    /// The instance had been shut down cleanly: nothing to redo.
    pub was_clean: bool,
    /// Generations read.
    pub generations: Vec<u32>,
    /// Committed transactions replayed.
    pub transactions: u64,
    /// Pages written by redo.
    pub pages_written: u64,
    /// A damaged record ended the log (a torn tail), with the reason.
    pub torn_tail: Option<String>,
}

/// Log positions of the instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogState {
    /// Generation of `E00.log`.
    pub current_generation: u32,
    /// Generation of the checkpoint.
    pub checkpoint_generation: u32,
    /// Every generation with a file on disk, ascending.
    pub generations: Vec<u32>,
    /// The instance switched to its reserve logs after a storage-full error.
    pub disk_full: bool,
}

pub(crate) struct Inner {
    pub cfg: InstanceConfig,
    pub signature: [u8; 16],
    pub log: Log,
    /// One write transaction at a time; also held by the lazy writer's page flush.
    pub writer: Mutex<()>,
    pub dbs: RwLock<Vec<Arc<Db>>>,
    pub cache: Mutex<Cache>,
    pub next_dbid: AtomicU32,
    pub disk_full: AtomicBool,
    pub shut: AtomicBool,
    pub checkpoint: Mutex<Lsn>,
    pub backup: Mutex<BackupRegistry>,
    pub backup_cond: Condvar,
    pub snapshot_counter: AtomicU64,
    lazy_stop: Mutex<bool>,
    lazy_cond: Condvar,
}

impl Inner {
    pub fn notify(&self, n: EngineNotice) {
        tracing::info!(prefix = %self.cfg.prefix, notice = ?n, "engine notice");
        if let Some(sink) = &self.cfg.notice {
            sink(&n);
        }
    }

    pub fn db(&self, name: &str) -> Result<Arc<Db>> {
        self.dbs
            .read()
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| EngineError::NoSuchDatabase(name.into()))
    }

    pub fn db_by_id(&self, dbid: u32) -> Option<Arc<Db>> {
        self.dbs.read().iter().find(|d| d.dbid == dbid).cloned()
    }

    pub fn check_open(&self) -> Result<()> {
        if self.shut.load(Ordering::SeqCst) {
            return Err(EngineError::ShutDown(self.cfg.prefix.clone()));
        }
        Ok(())
    }

    pub fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.disk_full.load(Ordering::SeqCst) || self.log.disk_full() {
            return Err(EngineError::DiskFullState { prefix: self.cfg.prefix.clone() });
        }
        Ok(())
    }

    /// The version of a page visible at `snapshot` (None = newest committed).
    pub fn read_page(&self, db: &Db, pgno: u64, snapshot: Option<Lsn>) -> Result<Arc<Vec<u8>>> {
        let key = (db.dbid, pgno);
        let mut cache = self.cache.lock();
        let hit = match snapshot {
            Some(s) => cache.visible(key, s),
            None => cache.newest(key).map(Some),
        };
        match hit {
            Some(Some(img)) => Ok(img),
            Some(None) => Err(EngineError::PageCorrupt {
                path: db.path.clone(),
                pgno,
                why: "no version of the page is visible to this reader".into(),
            }),
            None => {
                // Loaded under the cache lock so no commit can slip a newer version in between.
                let img = Arc::new(db.read_page(pgno)?);
                cache.insert_loaded(key, img.clone());
                Ok(img)
            }
        }
    }

    fn checkpoint_record(&self, at: Lsn) -> Checkpoint {
        Checkpoint {
            signature: self.signature,
            checkpoint: at,
            attached: self.dbs.read().iter().map(|d| d.attached()).collect(),
            next_dbid: self.next_dbid.load(Ordering::SeqCst),
            log_file_size: self.cfg.log_file_size,
            page_size: self.cfg.page_size as u32,
            circular_logging: self.cfg.circular_logging,
        }
    }

    pub fn write_checkpoint(&self, at: Lsn) -> Result<()> {
        let path = self.cfg.checkpoint_path();
        checkpoint::write_checkpoint(
            self.cfg.system_fs.as_ref(),
            &path,
            &self.checkpoint_record(at),
        )?;
        *self.checkpoint.lock() = at;
        Ok(())
    }

    /// The lazy writer's page flush. The caller holds the writer lock (so no commit installs
    /// while pages are written and the checkpoint computed). Returns false when held by a freeze.
    pub fn flush_pages(&self) -> Result<bool> {
        if self.log.frozen() {
            return Ok(false);
        }
        let end = self.log.end();
        self.log.flush_to(end)?;
        let dirty = self.cache.lock().dirty_pages();
        let mut touched: HashMap<u32, Arc<Db>> = HashMap::new();
        for (key, img, lsn, d) in &dirty {
            debug_assert!(d.commit_end <= self.log.durable());
            let Some(db) = self.db_by_id(key.0) else { continue };
            let mut out = img.as_ref().clone();
            page::seal(&mut out, key.1, lsn.0);
            if let Err(e) = db.file.write_at(&out, key.1 * db.page_size as u64) {
                let e = EngineError::io(&db.path, e);
                if e.is_storage_full() {
                    self.disk_full.store(true, Ordering::SeqCst);
                }
                return Err(e);
            }
            touched.insert(db.dbid, db);
        }
        for db in touched.values() {
            db.file.sync().at(&db.path)?;
        }
        let checkpoint = {
            let mut cache = self.cache.lock();
            for (key, _, lsn, _) in &dirty {
                cache.mark_clean(*key, *lsn);
            }
            cache.evict();
            cache.min_dirty().unwrap_or(end).min(end)
        };
        for db in self.dbs.read().iter() {
            let mut h = db.header.lock();
            if h.min_required != checkpoint || h.max_required != end {
                h.min_required = checkpoint;
                h.max_required = end;
                dbheader::write_header(db.file.as_ref(), &db.path, &mut h)?;
            }
        }
        if *self.checkpoint.lock() != checkpoint {
            self.write_checkpoint(checkpoint)?;
        }
        if self.cfg.circular_logging {
            self.delete_generations_below(checkpoint.generation())?;
        }
        Ok(true)
    }

    /// Deletes closed generations below `generation`; returns the range deleted.
    pub fn delete_generations_below(&self, generation: u32) -> Result<Option<(u32, u32)>> {
        let cfg = &self.log.cfg;
        let current = self.log.generation();
        let mut range: Option<(u32, u32)> = None;
        for e in crate::logfmt::read_dir_stable(cfg.fs.as_ref(), &cfg.dir).at(&cfg.dir)? {
            let Some(g) = logfmt::parse_generation_name(&cfg.prefix, &e.name) else { continue };
            if g < generation && g < current {
                let p = cfg.dir.join(&e.name);
                cfg.fs.remove_file(&p).at(&p)?;
                range = Some(match range {
                    None => (g, g),
                    Some((lo, hi)) => (lo.min(g), hi.max(g)),
                });
            }
        }
        if range.is_some() {
            cfg.fs.sync_dir(&cfg.dir).at(&cfg.dir)?;
        }
        Ok(range)
    }

    fn lazy_tick(&self) {
        if self.log.frozen() {
            return;
        }
        if let Err(e) = self.log.try_flush() {
            tracing::warn!(prefix = %self.cfg.prefix, error = %e, "lazy log flush failed");
        }
        let need = {
            let c = self.cache.lock();
            c.dirty_count() * 2 >= self.cfg.cache_pages.max(16)
        } || self.log.generation() > self.checkpoint.lock().generation();
        if need
            && let Some(_g) = self.writer.try_lock_for(Duration::from_millis(20))
            && let Err(e) = self.flush_pages()
        {
            tracing::warn!(prefix = %self.cfg.prefix, error = %e, "lazy writer failed");
        }
    }

    /// Grows a database file ahead of the pages a commit is about to log (callers hold the
    /// writer lock, so no page write runs concurrently), so the lazy writer never has to grow
    /// it: when the volume fills up, the commit that needed the space fails
    /// (nothing logged) and every page already committed can still be written, which is what
    /// lets a full instance shut down cleanly.
    pub fn reserve_pages(&self, db: &Db, pages: u64) -> Result<()> {
        let need = pages * db.page_size as u64;
        if need <= db.len.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Pages written while a freeze held growth back may lie past the tracked length:
        // never zero over them.
        let cur = db.file.len().at(&db.path)?.max(db.len.load(Ordering::SeqCst));
        if need <= cur {
            db.len.store(cur, Ordering::SeqCst);
            return Ok(());
        }
        let target = need + 32 * db.page_size as u64;
        // Zeros are written rather than the file extended, so the space is really allocated
        // (a sparse extension would still fail later with ENOSPC on a real volume).
        if let Err(e) = db.file.write_at(&vec![0u8; (target - cur) as usize], cur) {
            let e = EngineError::io(&db.path, e);
            if e.is_storage_full() {
                self.disk_full.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        db.len.store(target, Ordering::SeqCst);
        Ok(())
    }

    pub fn attached_list(&self) -> Vec<AttachedDb> {
        self.dbs.read().iter().map(|d| d.attached()).collect()
    }
}

/// A running instance.
pub struct Instance {
    pub(crate) inner: Arc<Inner>,
    lazy: Mutex<Option<std::thread::JoinHandle<()>>>,
    recovery: RecoveryInfo,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").field("prefix", &self.inner.cfg.prefix).finish()
    }
}

fn log_config(cfg: &InstanceConfig, signature: [u8; 16]) -> LogConfig {
    LogConfig {
        fs: cfg.log_fs.clone(),
        dir: cfg.log_dir.clone(),
        prefix: cfg.prefix.clone(),
        file_size: cfg.log_file_size,
        signature,
    }
}

impl Instance {
    /// Creates a new instance: first log generation, reserve logs, checkpoint. Fails if a
    /// checkpoint already exists; leftovers of an interrupted creation are replaced.
    pub fn create(cfg: InstanceConfig) -> Result<Instance> {
        cfg.validate()?;
        create_dir_durable(&cfg.log_fs, &cfg.log_dir)?;
        create_dir_durable(&cfg.system_fs, &cfg.system_dir)?;
        let chk = cfg.checkpoint_path();
        if cfg.system_fs.exists(&chk).at(&chk)? {
            if checkpoint::read_checkpoint(cfg.system_fs.as_ref(), &chk).is_ok() {
                return Err(EngineError::InstanceFiles(format!(
                    "instance {} already exists: {} is present",
                    cfg.prefix,
                    chk.display()
                )));
            }
            // A creation interrupted before its first checkpoint: start over.
            cfg.system_fs.remove_file(&chk).at(&chk)?;
        }
        for e in
            crate::logfmt::read_dir_stable(cfg.log_fs.as_ref(), &cfg.log_dir).at(&cfg.log_dir)?
        {
            if e.name.starts_with(&cfg.prefix) && e.name.ends_with(".log") {
                let p = cfg.log_dir.join(&e.name);
                cfg.log_fs.remove_file(&p).at(&p)?;
            }
        }
        let mut signature = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut signature[..]);
        let lcfg = log_config(&cfg, signature);
        let log = Log::start(lcfg.clone(), 1, 0, Vec::new())?;
        log::ensure_reserves(&lcfg)?;
        let inst = Self::assemble(
            cfg,
            signature,
            log,
            Vec::new(),
            1,
            RecoveryInfo { was_clean: true, ..Default::default() },
        );
        let start = inst.inner.log.end();
        inst.inner.write_checkpoint(start)?;
        tracing::info!(prefix = %inst.inner.cfg.prefix, "instance created");
        Ok(inst)
    }

    fn assemble(
        cfg: InstanceConfig,
        signature: [u8; 16],
        log: Log,
        dbs: Vec<Arc<Db>>,
        next_dbid: u32,
        recovery: RecoveryInfo,
    ) -> Instance {
        let start = log.end();
        let inner = Arc::new(Inner {
            cache: Mutex::new(Cache::new(cfg.cache_pages)),
            signature,
            log,
            writer: Mutex::new(()),
            dbs: RwLock::new(dbs),
            next_dbid: AtomicU32::new(next_dbid),
            disk_full: AtomicBool::new(false),
            shut: AtomicBool::new(false),
            checkpoint: Mutex::new(start),
            backup: Mutex::new(BackupRegistry::default()),
            backup_cond: Condvar::new(),
            snapshot_counter: AtomicU64::new(0),
            lazy_stop: Mutex::new(false),
            lazy_cond: Condvar::new(),
            cfg,
        });
        inner.cache.lock().last_installed = Lsn(0);
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let interval = inner.cfg.lazy_interval;
        let handle = std::thread::Builder::new()
            .name(format!("ese-lazy-{}", inner.cfg.prefix))
            .spawn(move || {
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    {
                        let mut stop = inner.lazy_stop.lock();
                        if *stop {
                            return;
                        }
                        inner.lazy_cond.wait_for(&mut stop, interval);
                        if *stop {
                            return;
                        }
                    }
                    inner.lazy_tick();
                }
            })
            .expect("spawn the lazy writer thread");
        Instance { inner, lazy: Mutex::new(Some(handle)), recovery }
    }

    /// Opens an existing instance, running soft recovery: replays the logs from the checkpoint
    /// into `databases`, seals the last generation and starts a new one. `databases` must name
    /// every database the logs since the checkpoint touch; others are attached afterwards.
    pub fn open(cfg: InstanceConfig, databases: Vec<DatabaseSpec>) -> Result<Instance> {
        cfg.validate()?;
        let chk_path = cfg.checkpoint_path();
        if !cfg.system_fs.exists(&chk_path).at(&chk_path)? {
            return Err(EngineError::InstanceFiles(format!(
                "instance {} has no checkpoint file {}",
                cfg.prefix,
                chk_path.display()
            )));
        }
        let chk = checkpoint::read_checkpoint(cfg.system_fs.as_ref(), &chk_path)?;
        if chk.log_file_size != cfg.log_file_size {
            return Err(EngineError::Config(format!(
                "the instance's logs are {} bytes, the configuration says {}",
                chk.log_file_size, cfg.log_file_size
            )));
        }
        let lcfg = log_config(&cfg, chk.signature);
        let tmp = lcfg.path(&logfmt::tmp_name(&cfg.prefix));
        if cfg.log_fs.exists(&tmp).at(&tmp)? {
            cfg.log_fs.remove_file(&tmp).at(&tmp)?;
        }
        let logs: Vec<_> = logfmt::list_logs(cfg.log_fs.as_ref(), &cfg.log_dir, &cfg.prefix)?
            .into_iter()
            .filter(|l| l.header.generation >= chk.generation())
            .collect();
        let Some(last) = logs.last().cloned() else {
            return Err(EngineError::LogGap { missing: chk.generation(), after_path: chk_path });
        };
        // Databases: open every one provided.
        let mut redo_dbs = HashMap::new();
        let mut headers = HashMap::new();
        for spec in &databases {
            let f = spec.fs.open(&spec.path, OpenMode::ReadWrite).at(&spec.path)?;
            let h = dbheader::read_header(f.as_ref(), &spec.path)?;
            redo_dbs.insert(
                spec.name.clone(),
                redo::RedoDb { path: spec.path.clone(), file: f, page_size: h.page_size as usize },
            );
            headers.insert(spec.name.clone(), h);
        }
        let names: HashMap<u32, String> =
            chk.attached.iter().map(|a| (a.dbid, a.name.clone())).collect();
        let was_clean_dbs = headers.values().all(|h| h.state != DbState::DirtyShutdown);
        let fs = cfg.log_fs.clone();
        let out = redo::replay(
            &|_| fs.clone(),
            &logs,
            chk.checkpoint,
            chk.signature,
            &redo_dbs,
            names,
            redo::Unknown::Fail,
            false,
        )?;
        let torn_tail = match &out.last_end {
            Some(ScanEnd::Damaged(w)) => Some(w.clone()),
            _ => None,
        };
        let last_gen = last.header.generation;
        if !matches!(out.last_end, Some(ScanEnd::Closed)) {
            log::seal(&cfg.log_fs, &last.path, last_gen, out.end.offset())?;
        }
        let log = Log::start(lcfg.clone(), last_gen + 1, last.header.created, Vec::new())?;
        let start = log.end();
        let mut dbs = Vec::new();
        let mut next_dbid = chk.next_dbid.max(1);
        let mut newly = Vec::new();
        for spec in databases {
            let mut h = headers.remove(&spec.name).expect("read above");
            let known = chk.attached.iter().find(|a| a.name == spec.name);
            if h.log_signature != chk.signature && h.state != DbState::CleanShutdown {
                return Err(EngineError::DatabaseMismatch {
                    path: spec.path.clone(),
                    why: "it is in dirty shutdown state from another log stream; run hard recovery first".into(),
                });
            }
            let dbid = match known {
                Some(a) => a.dbid,
                None => {
                    next_dbid += 1;
                    newly.push(next_dbid - 1);
                    next_dbid - 1
                }
            };
            h.state = DbState::DirtyShutdown;
            h.log_signature = chk.signature;
            h.dbid = dbid;
            h.last_attach = now_secs();
            h.min_required = start;
            h.max_required = start;
            let rd = &redo_dbs[&spec.name];
            dbheader::write_header(rd.file.as_ref(), &spec.path, &mut h)?;
            dbs.push(Arc::new(Db {
                dbid,
                name: spec.name.clone(),
                fs: spec.fs.clone(),
                path: spec.path.clone(),
                file: rd.file.clone(),
                page_size: h.page_size as usize,
                header: Mutex::new(h),
                len: AtomicU64::new(rd.file.len().at(&spec.path)?),
            }));
        }
        log::ensure_reserves(&lcfg)?;
        let recovery = RecoveryInfo {
            was_clean: was_clean_dbs && out.transactions == 0,
            generations: out.generations.clone(),
            transactions: out.transactions,
            pages_written: out.pages_written,
            torn_tail,
        };
        tracing::info!(prefix = %cfg.prefix, ?recovery, "soft recovery done");
        let inst = Self::assemble(cfg, chk.signature, log, dbs, next_dbid, recovery);
        let inner = &inst.inner;
        inner.log.set_attached(inner.attached_list());
        for dbid in newly {
            let db = inner.db_by_id(dbid).expect("attached");
            let (_, end) = inner.log.append(vec![Record::Attach(db.attached())])?;
            inner.log.flush_to(end)?;
        }
        inner.write_checkpoint(start)?;
        Ok(inst)
    }

    /// What recovery did at open.
    pub fn recovery_info(&self) -> &RecoveryInfo {
        &self.recovery
    }

    /// The instance's log signature.
    pub fn signature(&self) -> [u8; 16] {
        self.inner.signature
    }

    /// The configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.inner.cfg
    }

    /// Takes the writer lock for attaching database `name`: the instance must be writable,
    /// no backup running, and no database of that name attached.
    fn lock_for_attach(&self, name: &str) -> Result<parking_lot::MutexGuard<'_, ()>> {
        let inner = &self.inner;
        inner.check_writable()?;
        self.check_no_backup()?;
        let guard = inner.writer.lock();
        if inner.db(name).is_ok() {
            return Err(EngineError::DatabaseExists(name.into()));
        }
        Ok(guard)
    }

    /// Creates a new database file and attaches it.
    pub fn create_database(&self, name: &str, fs: FsRef, path: impl AsRef<Path>) -> Result<()> {
        let inner = &self.inner;
        let path = path.as_ref();
        let _w = self.lock_for_attach(name)?;
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        create_dir_durable(&fs, &parent)?;
        let file = fs.open(path, OpenMode::CreateNew).at(path)?;
        let dbid = inner.next_dbid.fetch_add(1, Ordering::SeqCst);
        let now = now_secs();
        let start = inner.log.end();
        let mut h = DbHeader {
            page_size: inner.cfg.page_size as u32,
            state: DbState::DirtyShutdown,
            log_signature: inner.signature,
            dbid,
            name: name.into(),
            created: now,
            last_attach: now,
            last_detach: 0,
            min_required: start,
            max_required: start,
            update_count: 0,
            previous_full: None,
            previous_incremental: None,
            previous_differential: None,
            previous_copy: None,
        };
        let mut root = crate::btree::init_root(inner.cfg.page_size);
        page::seal(&mut root, ROOT_PGNO, 0);
        file.write_at(&root, ROOT_PGNO * inner.cfg.page_size as u64).at(path)?;
        dbheader::write_header(file.as_ref(), path, &mut h)?;
        fs.sync_dir(&parent).at(&parent)?;
        self.finish_attach(Db {
            dbid,
            name: name.into(),
            fs,
            path: path.to_path_buf(),
            file,
            page_size: inner.cfg.page_size,
            header: Mutex::new(h),
            len: AtomicU64::new(0),
        })
    }

    /// Attaches an existing database file (clean, or dirty from this instance's log stream).
    pub fn attach(&self, name: &str, fs: FsRef, path: impl AsRef<Path>) -> Result<()> {
        let inner = &self.inner;
        let path = path.as_ref();
        let _w = self.lock_for_attach(name)?;
        let file = fs.open(path, OpenMode::ReadWrite).at(path)?;
        let mut h = dbheader::read_header(file.as_ref(), path)?;
        if h.log_signature != inner.signature && h.state == DbState::DirtyShutdown {
            return Err(EngineError::DatabaseMismatch {
                path: path.to_path_buf(),
                why:
                    "it is in dirty shutdown state from another log stream; run hard recovery first"
                        .into(),
            });
        }
        let dbid = inner.next_dbid.fetch_add(1, Ordering::SeqCst);
        let start = inner.log.end();
        h.state = DbState::DirtyShutdown;
        h.log_signature = inner.signature;
        h.dbid = dbid;
        h.name = name.into();
        h.last_attach = now_secs();
        h.min_required = start;
        h.max_required = start;
        dbheader::write_header(file.as_ref(), path, &mut h)?;
        let page_size = h.page_size as usize;
        self.finish_attach(Db {
            dbid,
            name: name.into(),
            fs,
            path: path.to_path_buf(),
            file,
            page_size,
            header: Mutex::new(h),
            len: AtomicU64::new(0),
        })
    }

    fn finish_attach(&self, db: Db) -> Result<()> {
        let inner = &self.inner;
        db.len.store(db.file.len().at(&db.path)?, Ordering::SeqCst);
        let rec = Record::Attach(db.attached());
        inner.dbs.write().push(Arc::new(db));
        inner.log.set_attached(inner.attached_list());
        let (_, end) = inner.log.append(vec![rec])?;
        inner.log.flush_to(end)?;
        let at = *inner.checkpoint.lock();
        inner.write_checkpoint(at)
    }

    /// Flushes a database's pages, marks it clean and detaches it.
    pub fn detach(&self, name: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        self.check_no_backup()?;
        let _w = inner.writer.lock();
        let db = inner.db(name)?;
        inner.flush_pages()?;
        {
            let mut h = db.header.lock();
            h.state = DbState::CleanShutdown;
            h.min_required = Lsn(0);
            h.max_required = Lsn(0);
            h.last_detach = now_secs();
            dbheader::write_header(db.file.as_ref(), &db.path, &mut h)?;
        }
        inner.dbs.write().retain(|d| d.dbid != db.dbid);
        inner.cache.lock().drop_db(db.dbid);
        inner.log.set_attached(inner.attached_list());
        let at = *inner.checkpoint.lock();
        inner.write_checkpoint(at)
    }

    fn check_no_backup(&self) -> Result<()> {
        if let Some(id) = self.inner.backup.lock().active {
            return Err(EngineError::BackupInProgress(id));
        }
        Ok(())
    }

    /// Names of the attached databases.
    pub fn databases(&self) -> Vec<String> {
        self.inner.dbs.read().iter().map(|d| d.name.clone()).collect()
    }

    /// A copy of a database's header as the engine holds it.
    pub fn database_header(&self, name: &str) -> Result<DbHeader> {
        Ok(self.inner.db(name)?.header.lock().clone())
    }

    /// Current generation, checkpoint generation and the generations on disk.
    pub fn log_state(&self) -> Result<LogState> {
        let cfg = &self.inner.log.cfg;
        let mut generations: Vec<u32> = logfmt::read_dir_stable(cfg.fs.as_ref(), &cfg.dir)
            .at(&cfg.dir)?
            .iter()
            .filter_map(|e| logfmt::parse_generation_name(&cfg.prefix, &e.name))
            .collect();
        let current = self.inner.log.generation();
        generations.push(current);
        generations.sort_unstable();
        generations.dedup();
        generations.retain(|g| *g <= current);
        Ok(LogState {
            current_generation: current,
            checkpoint_generation: self.inner.checkpoint.lock().generation(),
            generations,
            disk_full: self.inner.log.disk_full() || self.inner.disk_full.load(Ordering::SeqCst),
        })
    }

    /// Writes dirty pages and advances the checkpoint now (normally the lazy writer's job).
    pub fn checkpoint_now(&self) -> Result<()> {
        self.inner.check_open()?;
        let _w = self.inner.writer.lock();
        self.inner.flush_pages().map(|_| ())
    }

    /// Closes the current log generation now and makes the next one current, as a freeze
    /// does, so that every commit made before the call sits in a closed generation file: a
    /// reader (a restore rolling forward into another directory) can then copy closed
    /// generations only, which the log writer never changes again. Returns the generation
    /// closed.
    pub fn roll_log(&self) -> Result<u32> {
        self.inner.check_writable()?;
        let _w = self.inner.writer.lock();
        self.inner.log.roll()
    }

    /// Makes every commit so far durable.
    pub fn flush_log(&self) -> Result<()> {
        self.inner.log.flush_to(self.inner.log.end())
    }

    /// Shuts down cleanly: aborts a running backup, flushes the log and every dirty page,
    /// marks the databases clean shutdown and writes the final checkpoint.
    pub fn shutdown(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.shut.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        crate::backup::abort_active(inner);
        self.stop_lazy();
        let _w = inner.writer.lock();
        inner.log.flush_to(inner.log.end())?;
        inner.flush_pages()?;
        let end = inner.log.end();
        for db in inner.dbs.read().iter() {
            let mut h = db.header.lock();
            h.state = DbState::CleanShutdown;
            h.min_required = Lsn(0);
            h.max_required = Lsn(0);
            h.last_detach = now_secs();
            dbheader::write_header(db.file.as_ref(), &db.path, &mut h)?;
        }
        inner.write_checkpoint(end)?;
        inner.log.close()?;
        tracing::info!(prefix = %inner.cfg.prefix, "instance shut down cleanly");
        Ok(())
    }

    fn stop_lazy(&self) {
        *self.inner.lazy_stop.lock() = true;
        self.inner.lazy_cond.notify_all();
        if let Some(h) = self.lazy.lock().take() {
            let _ = h.join();
        }
    }

    /// Number of pages in the buffer cache.
    pub fn cached_pages(&self) -> usize {
        self.inner.cache.lock().len()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Without shutdown() this is a crash as far as the files are concerned: recovery at
        // the next open replays the log.
        crate::backup::abort_active(&self.inner);
        self.stop_lazy();
    }
}

/// Creates a directory and makes its name durable (syncing every ancestor).
pub(crate) fn create_dir_durable(fs: &FsRef, dir: &Path) -> Result<()> {
    fs.create_dir_all(dir).at(dir)?;
    let mut p = dir.to_path_buf();
    while let Some(parent) = p.parent() {
        fs.sync_dir(parent).at(parent)?;
        p = parent.to_path_buf();
    }
    Ok(())
}
