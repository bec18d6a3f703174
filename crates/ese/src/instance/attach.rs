//! Attaching and detaching databases: each change is logged and recorded in the checkpoint,
//! under the writer lock and never while a backup runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use volume::{FsRef, OpenMode};

use super::{Db, Instance, create_dir_durable};
use crate::codec::now_secs;
use crate::dbheader::{self, DbHeader, DbState};
use crate::error::{EngineError, IoContext, Result};
use crate::logfmt::Record;
use crate::page::{self, ROOT_PGNO};

impl Instance {
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
            h.mark_clean_shutdown();
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
}
