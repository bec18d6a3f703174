//! Creating an instance, and opening one with soft recovery: the logs since the checkpoint
//! are replayed into the databases named, the last generation sealed and a new one started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex, RwLock};
use volume::OpenMode;

use super::config::log_config;
use super::{DatabaseSpec, Db, Inner, Instance, InstanceConfig, create_dir_durable};
use crate::backup::BackupRegistry;
use crate::cache::Cache;
use crate::checkpoint::{self};
use crate::codec::now_secs;
use crate::dbheader::{self, DbState};
use crate::error::{EngineError, IoContext, Result};
use crate::log::{self, Log};
use crate::logfmt::{self, Record, ScanEnd};
use crate::lsn::Lsn;
use crate::redo;

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
        )?;
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
    ) -> Result<Instance> {
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
            .map_err(|source| EngineError::ThreadSpawn { what: "lazy writer", source })?;
        Ok(Instance { inner, lazy: Mutex::new(Some(handle)), recovery })
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
            #[allow(clippy::expect_used)] // every spec's header was read above
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
            // A surrogate backup's stamp whose header write a crash lost.
            redo::apply_stamps(&out.stamps, &spec.name, &mut h);
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
        let inst = Self::assemble(cfg, chk.signature, log, dbs, next_dbid, recovery)?;
        let inner = &inst.inner;
        inner.log.set_attached(inner.attached_list());
        for dbid in newly {
            let db = inner.db_by_id(dbid).ok_or_else(|| {
                EngineError::NoSuchDatabase(format!("(database id {dbid}, attached at open)"))
            })?;
            let (_, end) = inner.log.append(vec![Record::Attach(db.attached())])?;
            inner.log.flush_to(end)?;
        }
        inner.write_checkpoint(start)?;
        Ok(inst)
    }
}

impl Instance {
    /// Starts an instance over databases that redo brought up to date elsewhere (a passive
    /// copy being activated, see [`crate::activate`]): no recovery, a new current log of
    /// `generation` in the log stream `signature`, whose header says the previous generation
    /// was created at `previous_created` — exactly what a roll on the old active would have
    /// written, so the copies of the stream accept it after the generations they have.
    ///
    /// The databases keep the ids their headers carry (the ids of the stream's log records),
    /// so the checkpoint maps the log's database ids to these files. The checkpoint is
    /// written last: a crash before it leaves no checkpoint and an empty current log, and the
    /// caller starts over.
    pub(crate) fn start_activated(
        cfg: InstanceConfig,
        databases: Vec<DatabaseSpec>,
        signature: [u8; 16],
        generation: u32,
        previous_created: u64,
    ) -> Result<Instance> {
        cfg.validate()?;
        create_dir_durable(&cfg.log_fs, &cfg.log_dir)?;
        create_dir_durable(&cfg.system_fs, &cfg.system_dir)?;
        let lcfg = log_config(&cfg, signature);
        let tmp = lcfg.path(&logfmt::tmp_name(&cfg.prefix));
        if cfg.log_fs.exists(&tmp).at(&tmp)? {
            cfg.log_fs.remove_file(&tmp).at(&tmp)?;
        }
        let cur = lcfg.path(&logfmt::current_name(&cfg.prefix));
        if cfg.log_fs.exists(&cur).at(&cur)? {
            // Starting the log would give it a closed name: the caller sets it aside first.
            return Err(EngineError::InstanceFiles(format!(
                "cannot start generation {generation:#X}: {} is present",
                cur.display()
            )));
        }
        let mut opened = Vec::new();
        for spec in databases {
            let f = spec.fs.open(&spec.path, OpenMode::ReadWrite).at(&spec.path)?;
            let h = dbheader::read_header(f.as_ref(), &spec.path)?;
            if h.log_signature != signature {
                return Err(EngineError::DatabaseMismatch {
                    path: spec.path.clone(),
                    why: "its log signature differs from the stream being continued".into(),
                });
            }
            if opened
                .iter()
                .any(|(_, _, o): &(DatabaseSpec, _, dbheader::DbHeader)| o.dbid == h.dbid)
            {
                return Err(EngineError::DatabaseMismatch {
                    path: spec.path.clone(),
                    why: format!("another database of the copy has the same id {}", h.dbid),
                });
            }
            opened.push((spec, f, h));
        }
        let attached: Vec<logfmt::AttachedDb> = opened
            .iter()
            .map(|(s, _, h)| logfmt::AttachedDb {
                dbid: h.dbid,
                name: s.name.clone(),
                path: s.path.display().to_string(),
            })
            .collect();
        let next_dbid = opened.iter().map(|(_, _, h)| h.dbid + 1).max().unwrap_or(1).max(1);
        let log = Log::start(lcfg.clone(), generation, previous_created, attached)?;
        let start = log.end();
        let mut dbs = Vec::new();
        for (spec, file, mut h) in opened {
            h.state = DbState::DirtyShutdown;
            h.last_attach = now_secs();
            h.min_required = start;
            h.max_required = start;
            dbheader::write_header(file.as_ref(), &spec.path, &mut h)?;
            let len = file.len().at(&spec.path)?;
            dbs.push(Arc::new(Db {
                dbid: h.dbid,
                name: spec.name.clone(),
                fs: spec.fs.clone(),
                path: spec.path.clone(),
                file,
                page_size: h.page_size as usize,
                header: Mutex::new(h),
                len: AtomicU64::new(len),
            }));
        }
        log::ensure_reserves(&lcfg)?;
        let recovery = RecoveryInfo { was_clean: false, ..Default::default() };
        let inst = Self::assemble(cfg, signature, log, dbs, next_dbid, recovery)?;
        inst.inner.write_checkpoint(start)?;
        tracing::info!(prefix = %inst.inner.cfg.prefix, generation, "copy activated: log stream continued");
        Ok(inst)
    }
}
