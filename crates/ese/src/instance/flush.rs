//! Page flushing and checkpoint advance: the lazy writer writes dirty pages once the log is
//! durable past them (write-ahead rule), then moves the checkpoint to the oldest change still
//! unwritten and, with circular logging, deletes the generations below it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Db, Inner, Instance};
use crate::checkpoint::{self, Checkpoint};
use crate::dbheader::{self};
use crate::error::{EngineError, IoContext, Result};
use crate::logfmt::{self};
use crate::lsn::Lsn;
use crate::page::{self};

impl Inner {
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

    pub(super) fn lazy_tick(&self) {
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
}

impl Instance {
    /// Writes dirty pages and advances the checkpoint now (normally the lazy writer's job).
    pub fn checkpoint_now(&self) -> Result<()> {
        self.inner.check_open()?;
        let _w = self.inner.writer.lock();
        self.inner.flush_pages().map(|_| ())
    }
}
