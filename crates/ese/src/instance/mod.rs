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
//!
//! The module is split by concept: [`config`] (how an instance is configured), [`open`]
//! (creation, and opening with soft recovery), [`attach`] (attaching and detaching databases)
//! and [`flush`] (page flushing by the lazy writer and checkpoint advance). This file keeps the
//! instance's state, page reads and shutdown.

mod attach;
mod config;
mod flush;
mod open;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex, RwLock};
use volume::{FileRef, FsRef};

use crate::backup::{BackupRegistry, EngineNotice};
use crate::cache::Cache;
use crate::codec::now_secs;
use crate::dbheader::{self, DbHeader};
use crate::error::{EngineError, IoContext, Result};
use crate::log::Log;
use crate::logfmt::{self, AttachedDb};
use crate::lsn::Lsn;
use crate::page::{self, PageProblem};

pub use config::{DatabaseSpec, InstanceConfig, NoticeSink, TruncationLimitFn};
pub use open::RecoveryInfo;

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
impl Instance {
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

    /// The end of the log: where the next record goes. Unchanged between two readings, no
    /// transaction committed in between.
    pub fn log_end(&self) -> Lsn {
        self.inner.log.end()
    }

    /// Closes the current generation if it holds records and the log ended at `seen` (read
    /// earlier with [`Self::log_end`]), i.e. nothing was logged since; returns the generation
    /// closed. Database copies on other nodes receive closed generations only, so an idle
    /// storage group rolls its log to let them catch up with its last commits.
    pub fn roll_log_if_idle(&self, seen: Lsn) -> Result<Option<u32>> {
        self.inner.check_writable()?;
        let _w = self.inner.writer.lock();
        let end = self.inner.log.end();
        if end != seen || end.offset() <= crate::logfmt::LOG_HEADER_SIZE {
            return Ok(None);
        }
        self.inner.log.roll().map(Some)
    }

    /// Makes every commit so far durable.
    pub fn flush_log(&self) -> Result<()> {
        self.inner.log.flush_to(self.inner.log.end())
    }

    /// Shuts down cleanly: aborts a running backup, flushes the log and every dirty page,
    /// marks the databases clean shutdown and writes the final checkpoint.
    pub fn shutdown(&self) -> Result<()> {
        if self.inner.shut.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.shutdown_inner(false).map(|_| ())
    }

    /// Shuts down cleanly, as [`Self::shutdown`], and closes the current generation as a
    /// named closed generation (as a log roll does) under the writer lock, so that no commit
    /// can come in between: every record ever acknowledged is then in a closed generation
    /// <= the returned generation G. A copy that fetches the closed generations up to G has
    /// the whole stream — what a switchover needs before it activates a copy.
    ///
    /// Afterwards the log directory holds the closed generations up to G (`E00<G>.log`) and
    /// a fresh, empty current log `E00.log` of generation G+1 (the roll creates it), and the
    /// checkpoint points at the start of G+1: a later [`Instance::open`] of this directory
    /// recovers nothing and continues the stream at G+2.
    ///
    /// Refused with [`EngineError::ShutDown`] when the instance is already shut down (by
    /// either call): whether the earlier shutdown sealed is not known any more, and a
    /// generation number returned then could mislead a switchover.
    pub fn shutdown_sealed(&self) -> Result<u32> {
        if self.inner.shut.swap(true, Ordering::SeqCst) {
            return Err(EngineError::ShutDown(self.inner.cfg.prefix.clone()));
        }
        self.shutdown_inner(true)
    }

    /// The shutdown proper, once `shut` is set; `seal` closes the current generation. Returns
    /// the last closed generation (with `seal`: the one just closed).
    fn shutdown_inner(&self, seal: bool) -> Result<u32> {
        let inner = &self.inner;
        crate::backup::abort_active(inner);
        self.stop_lazy();
        let _w = inner.writer.lock();
        inner.log.flush_to(inner.log.end())?;
        let sealed = if seal {
            // Durable with the next generation's file in place (the roll flushes).
            inner.log.roll()?
        } else {
            inner.log.generation().saturating_sub(1)
        };
        inner.flush_pages()?;
        let end = inner.log.end();
        for db in inner.dbs.read().iter() {
            let mut h = db.header.lock();
            h.mark_clean_shutdown();
            h.last_detach = now_secs();
            dbheader::write_header(db.file.as_ref(), &db.path, &mut h)?;
        }
        inner.write_checkpoint(end)?;
        inner.log.close()?;
        tracing::info!(prefix = %inner.cfg.prefix, sealed = seal, "instance shut down cleanly");
        Ok(sealed)
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
