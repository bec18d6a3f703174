//! Transactions and cursors.
//!
//! [`WriteTxn`]: the single writer. Its changes live in private page copies until commit, so
//! a rollback (or a dropped transaction) leaves no trace. [`ReadTxn`]: any number of readers,
//! each seeing the state as of the last commit installed when it began, undisturbed by later
//! commits (see the cache module: versioned pages pinned per reader).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::MutexGuard;

use crate::btree::{self, Changes, Pages, PagesMut, Seek};
use crate::cache::PageKey;
use crate::error::{EngineError, Result};
use crate::instance::{Db, Inner, Instance};
use crate::logfmt::{PageDelta, Record};
use crate::lsn::Lsn;
use crate::page::{self, PAGE_HEADER};

/// How durable a commit must be before `commit` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The commit record is on stable storage (group commit shares the fsync).
    Durable,
    /// The commit is in the log buffer; the lazy writer flushes it shortly. A crash may lose
    /// it (but never half of it).
    Lazy,
}

/// A page as the transaction changed it.
struct Private {
    /// The newest committed version when the transaction first changed the page (what redo
    /// applies a delta to); `None` when the page was not cached (it is then logged whole).
    base: Option<Arc<Vec<u8>>>,
    cur: Arc<Vec<u8>>,
    /// What changed since `base`.
    changed: Changed,
}

/// The changed part of a private page.
enum Changed {
    /// Byte ranges `[start, end)` reported by in-place changes: the commit logs them as they
    /// are, with no comparison against `base`.
    Ranges(Vec<(usize, usize)>),
    /// The page was replaced whole: the commit compares it with `base`.
    Whole,
}

impl Changed {
    fn add(&mut self, changes: Changes) {
        if let Changed::Ranges(r) = self {
            r.extend(changes.into_iter().filter(|(s, e)| s < e));
        }
    }
}

/// The write transaction (one at a time per instance).
pub struct WriteTxn<'a> {
    inner: &'a Arc<Inner>,
    guard: Option<MutexGuard<'a, ()>>,
    pages: HashMap<PageKey, Private>,
}

/// A read-only snapshot.
pub struct ReadTxn {
    inner: Arc<Inner>,
    snapshot: Lsn,
}

impl Instance {
    /// Begins the write transaction, waiting for the current one to finish.
    pub fn begin_write(&self) -> Result<WriteTxn<'_>> {
        self.inner.check_writable()?;
        let guard = self.inner.writer.lock();
        self.inner.check_writable()?;
        Ok(WriteTxn { inner: &self.inner, guard: Some(guard), pages: HashMap::new() })
    }

    /// Begins a read transaction on the last committed state.
    pub fn begin_read(&self) -> Result<ReadTxn> {
        self.inner.check_open()?;
        let snapshot = self.inner.cache.lock().pin();
        Ok(ReadTxn { inner: self.inner.clone(), snapshot })
    }
}

struct TxnView<'t, 'a> {
    txn: &'t WriteTxn<'a>,
    db: Arc<Db>,
}

struct TxnViewMut<'t, 'a> {
    txn: &'t mut WriteTxn<'a>,
    db: Arc<Db>,
}

struct ReadView<'r> {
    r: &'r ReadTxn,
    db: Arc<Db>,
}

fn corrupt(db: &Db, pgno: u64, why: String) -> EngineError {
    EngineError::PageCorrupt { path: db.path.clone(), pgno, why }
}

impl Pages for TxnView<'_, '_> {
    fn page_size(&self) -> usize {
        self.db.page_size
    }
    fn read(&self, pgno: u64) -> Result<Arc<Vec<u8>>> {
        if let Some(p) = self.txn.pages.get(&(self.db.dbid, pgno)) {
            return Ok(p.cur.clone());
        }
        self.txn.inner.read_page(&self.db, pgno, None)
    }
    fn corrupt(&self, pgno: u64, why: String) -> EngineError {
        corrupt(&self.db, pgno, why)
    }
}

impl Pages for TxnViewMut<'_, '_> {
    fn page_size(&self) -> usize {
        self.db.page_size
    }
    fn read(&self, pgno: u64) -> Result<Arc<Vec<u8>>> {
        TxnView { txn: self.txn, db: self.db.clone() }.read(pgno)
    }
    fn corrupt(&self, pgno: u64, why: String) -> EngineError {
        corrupt(&self.db, pgno, why)
    }
}

impl PagesMut for TxnViewMut<'_, '_> {
    fn write(&mut self, pgno: u64, page: Vec<u8>) {
        let key = (self.db.dbid, pgno);
        let cur = Arc::new(page);
        match self.txn.pages.get_mut(&key) {
            Some(p) => {
                p.cur = cur;
                p.changed = Changed::Whole;
            }
            None => {
                let base = self.txn.inner.cache.lock().newest(key);
                self.txn.pages.insert(key, Private { base, cur, changed: Changed::Whole });
            }
        }
    }

    fn modify(&mut self, pgno: u64, f: &mut dyn FnMut(&mut [u8]) -> Changes) -> Result<()> {
        let key = (self.db.dbid, pgno);
        if let Some(p) = self.txn.pages.get_mut(&key) {
            let changes = f(Arc::make_mut(&mut p.cur).as_mut_slice());
            p.changed.add(changes);
            return Ok(());
        }
        // The newest committed version (loaded into the cache if need be): the base the
        // reported ranges are relative to.
        let base = self.txn.inner.read_page(&self.db, pgno, None)?;
        let mut cur = base.as_ref().clone();
        let mut changed = Changed::Ranges(Vec::new());
        changed.add(f(&mut cur));
        self.txn.pages.insert(key, Private { base: Some(base), cur: Arc::new(cur), changed });
        Ok(())
    }
}

impl Pages for ReadView<'_> {
    fn page_size(&self) -> usize {
        self.db.page_size
    }
    fn read(&self, pgno: u64) -> Result<Arc<Vec<u8>>> {
        self.r.inner.read_page(&self.db, pgno, Some(self.r.snapshot))
    }
    fn corrupt(&self, pgno: u64, why: String) -> EngineError {
        corrupt(&self.db, pgno, why)
    }
}

fn table_root<P: Pages + ?Sized>(p: &P, db: &Db, table: &str) -> Result<u64> {
    btree::find_table(p, table)?
        .ok_or_else(|| EngineError::NoSuchTable { db: db.name.clone(), table: table.into() })
}

/// Byte ranges of `new` that differ from `old` (both full page images), from the body on.
pub(crate) fn diff_ranges(old: &[u8], new: &[u8]) -> Vec<(u32, Vec<u8>)> {
    const BLOCK: usize = 64;
    let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let mut i = PAGE_HEADER;
    while i < new.len() {
        let end = (i + BLOCK).min(new.len());
        if old[i..end] != new[i..end] {
            let differ = |(a, b): (&u8, &u8)| a != b;
            let (Some(first), Some(last)) = (
                old[i..end].iter().zip(&new[i..end]).position(differ),
                old[i..end].iter().zip(&new[i..end]).rposition(differ),
            ) else {
                unreachable!("the ranges differ, so a first and a last differing byte exist")
            };
            let (first, last) = (i + first, i + last + 1);
            run = Some(match run {
                Some((s, e)) if first - e <= 16 => (s, last),
                Some((s, e)) => {
                    out.push((s as u32, new[s..e].to_vec()));
                    (first, last)
                }
                None => (first, last),
            });
        }
        i = end;
    }
    if let Some((s, e)) = run {
        out.push((s as u32, new[s..e].to_vec()));
    }
    out
}

/// The bytes of `page` in the reported `ranges` (sorted and merged, ranges less than 16 bytes
/// apart joined as [`diff_ranges`] joins them), from the body on.
fn tracked_ranges(page: &[u8], ranges: &mut [(usize, usize)]) -> Vec<(u32, Vec<u8>)> {
    ranges.sort_unstable();
    let mut out: Vec<(u32, Vec<u8>)> = Vec::with_capacity(ranges.len());
    let mut run: Option<(usize, usize)> = None;
    for &(s, e) in ranges.iter() {
        let (s, e) = (s.max(PAGE_HEADER), e.min(page.len()));
        if s >= e {
            continue;
        }
        run = Some(match run {
            Some((rs, re)) if s <= re + 16 => (rs, re.max(e)),
            Some((rs, re)) => {
                out.push((rs as u32, page[rs..re].to_vec()));
                (s, e)
            }
            None => (s, e),
        });
    }
    if let Some((s, e)) = run {
        out.push((s as u32, page[s..e].to_vec()));
    }
    out
}

/// A full body image, without its trailing zeros (redo applies it to a zeroed page).
fn full_range(new: &[u8]) -> Vec<(u32, Vec<u8>)> {
    // Whole zero words are skipped eight bytes at a time: a page is often half empty.
    let body = &new[PAGE_HEADER..];
    let words = body.len() / 8 * 8;
    let mut end = body.len();
    while end > words && body[end - 1] == 0 {
        end -= 1;
    }
    if end == words {
        while end >= 8 && body[end - 8..end] == [0u8; 8] {
            end -= 8;
        }
        while end > 0 && body[end - 1] == 0 {
            end -= 1;
        }
    }
    vec![(PAGE_HEADER as u32, body[..end].to_vec())]
}

impl<'a> WriteTxn<'a> {
    fn view(&self, db: &str) -> Result<TxnView<'_, 'a>> {
        Ok(TxnView { db: self.inner.db(db)?, txn: self })
    }

    fn view_mut(&mut self, db: &str) -> Result<TxnViewMut<'_, 'a>> {
        Ok(TxnViewMut { db: self.inner.db(db)?, txn: self })
    }

    /// Creates a table; an error if it exists.
    pub fn create_table(&mut self, db: &str, table: &str) -> Result<()> {
        if table.is_empty() || table.len() > 255 {
            return Err(EngineError::TooLarge { what: "table name", len: table.len(), max: 255 });
        }
        let mut v = self.view_mut(db)?;
        match btree::create_table(&mut v, table)? {
            Some(_) => Ok(()),
            None => Err(EngineError::TableExists { db: db.into(), table: table.into() }),
        }
    }

    /// Creates a table unless it exists.
    pub fn ensure_table(&mut self, db: &str, table: &str) -> Result<()> {
        match self.create_table(db, table) {
            Err(EngineError::TableExists { .. }) => Ok(()),
            r => r,
        }
    }

    /// Table names of a database.
    pub fn tables(&self, db: &str) -> Result<Vec<String>> {
        btree::list_tables(&self.view(db)?)
    }

    /// Inserts or replaces a row.
    pub fn put(&mut self, db: &str, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let mut v = self.view_mut(db)?;
        let root = table_root(&v, &v.db.clone(), table)?;
        btree::put(&mut v, root, key, value)
    }

    /// Deletes a row; whether it existed.
    pub fn delete(&mut self, db: &str, table: &str, key: &[u8]) -> Result<bool> {
        let mut v = self.view_mut(db)?;
        let root = table_root(&v, &v.db.clone(), table)?;
        btree::delete(&mut v, root, key)
    }

    /// Reads a row, seeing this transaction's own changes.
    pub fn get(&self, db: &str, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.view(db)?;
        let root = table_root(&v, &v.db, table)?;
        btree::get(&v, root, key)
    }

    /// A cursor over a table, seeing this transaction's own changes.
    pub fn cursor(&self, db: &str, table: &str) -> Result<Cursor<'_>> {
        let v = self.view(db)?;
        let root = table_root(&v, &v.db, table)?;
        Ok(Cursor { pages: Box::new(v), root, pos: None })
    }

    /// Throws the transaction's changes away.
    pub fn rollback(mut self) {
        self.pages.clear();
    }

    /// Commits: logs the page changes, installs them, and for [`Durability::Durable`] waits
    /// until the log is on stable storage (sharing the flush with concurrent committers).
    /// Returns the commit's log position. If a durable flush fails the commit is installed but
    /// its durability unknown: the error says so and the instance stops taking writes.
    pub fn commit(mut self, durability: Durability) -> Result<Lsn> {
        let inner = self.inner;
        if self.pages.is_empty() {
            return self.commit_nothing(durability);
        }
        let mut keys: Vec<PageKey> = self.pages.keys().copied().collect();
        keys.sort_unstable();
        let mut deltas = Vec::with_capacity(keys.len());
        {
            let cache = inner.cache.lock();
            for key in &keys {
                #[allow(clippy::expect_used)] // `keys` are the transaction's pages
                let p = self.pages.get_mut(key).expect("page of the transaction");
                let (full, ranges) = match (&p.base, &mut p.changed) {
                    (Some(base), changed) if cache.is_dirty(*key) => match changed {
                        Changed::Whole => (false, diff_ranges(base, &p.cur)),
                        Changed::Ranges(r) => (false, tracked_ranges(&p.cur, r)),
                    },
                    _ => (true, full_range(&p.cur)),
                };
                if !full && ranges.is_empty() {
                    continue;
                }
                deltas.push(PageDelta { dbid: key.0, pgno: key.1, full, ranges });
            }
        }
        if deltas.is_empty() {
            return self.commit_nothing(durability);
        }
        // Pack the page changes into records that each fit in a generation.
        let max = inner.log.cfg.max_record() - 64;
        let mut records = Vec::new();
        let mut chunk: Vec<PageDelta> = Vec::new();
        let mut size = 0;
        let installed: Vec<PageKey> = deltas.iter().map(|d| (d.dbid, d.pgno)).collect();
        for d in deltas {
            let len = 17 + d.ranges.iter().map(|(_, b)| 8 + b.len()).sum::<usize>();
            if size + len > max && !chunk.is_empty() {
                records.push(Record::Txn {
                    commit: false,
                    begin: Lsn(0),
                    pages: std::mem::take(&mut chunk),
                });
                size = 0;
            }
            size += len;
            chunk.push(d);
        }
        records.push(Record::Txn { commit: true, begin: Lsn(0), pages: chunk });
        if !inner.log.frozen() {
            let mut highest: HashMap<u32, u64> = HashMap::new();
            for (dbid, pgno) in &installed {
                let h = highest.entry(*dbid).or_default();
                *h = (*h).max(*pgno);
            }
            for (dbid, pgno) in highest {
                if let Some(db) = inner.db_by_id(dbid) {
                    inner.reserve_pages(&db, pgno + 1)?;
                }
            }
        }
        let (begin, end) = inner.log.append(records)?;
        {
            let mut cache = inner.cache.lock();
            for key in installed {
                #[allow(clippy::expect_used)] // `installed` lists pages of this transaction
                let p = self.pages.remove(&key).expect("page of the transaction");
                let mut img = Arc::try_unwrap(p.cur).unwrap_or_else(|a| a.as_ref().clone());
                page::set_page_lsn(&mut img, begin.0);
                cache.install(key, begin, end, Arc::new(img));
            }
        }
        let pressure = {
            let mut c = inner.cache.lock();
            c.evict();
            c.over_capacity() && c.dirty_pressure()
        };
        if pressure && let Err(e) = inner.flush_pages() {
            tracing::warn!(error = %e, "forced page flush failed");
        }
        drop(self.guard.take());
        if durability == Durability::Durable {
            inner.log.flush_to(end)?;
            // After the local fsync, outside the writer and cache locks: the next
            // transaction proceeds and concurrent committers wait on the gate together.
            inner.log.replicated(end)?;
        }
        Ok(begin)
    }
}

impl WriteTxn<'_> {
    /// A transaction that changed nothing: a durable commit still makes every earlier commit
    /// durable, as callers expect of a durable commit.
    fn commit_nothing(mut self, durability: Durability) -> Result<Lsn> {
        let end = self.inner.log.end();
        drop(self.guard.take());
        if durability == Durability::Durable {
            self.inner.log.flush_to(end)?;
            self.inner.log.replicated(end)?;
        }
        Ok(end)
    }
}

impl ReadTxn {
    fn view(&self, db: &str) -> Result<ReadView<'_>> {
        Ok(ReadView { db: self.inner.db(db)?, r: self })
    }

    /// Reads a row.
    pub fn get(&self, db: &str, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.view(db)?;
        let root = table_root(&v, &v.db, table)?;
        btree::get(&v, root, key)
    }

    /// Table names of a database.
    pub fn tables(&self, db: &str) -> Result<Vec<String>> {
        btree::list_tables(&self.view(db)?)
    }

    /// A cursor over a table.
    pub fn cursor(&self, db: &str, table: &str) -> Result<Cursor<'_>> {
        let v = self.view(db)?;
        let root = table_root(&v, &v.db, table)?;
        Ok(Cursor { pages: Box::new(v), root, pos: None })
    }

    /// The commit position this reader sees.
    pub fn snapshot(&self) -> Lsn {
        self.snapshot
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        self.inner.cache.lock().unpin(self.snapshot);
    }
}

/// An ordered cursor over one table. Each step searches from the table root for the neighbour
/// of the current key, so a cursor needs no page pins and is never invalidated.
pub struct Cursor<'t> {
    pages: Box<dyn Pages + 't>,
    root: u64,
    pos: Option<Vec<u8>>,
}

/// A row.
pub type Row = (Vec<u8>, Vec<u8>);

impl Cursor<'_> {
    fn go(&mut self, key: Option<&[u8]>, mode: Seek) -> Result<Option<Row>> {
        let hit = btree::seek(self.pages.as_ref(), self.root, key, mode)?;
        if let Some((k, _)) = &hit {
            self.pos = Some(k.clone());
        }
        Ok(hit)
    }

    /// First row.
    pub fn first(&mut self) -> Result<Option<Row>> {
        self.go(None, Seek::Ge)
    }
    /// Last row.
    pub fn last(&mut self) -> Result<Option<Row>> {
        self.go(None, Seek::Le)
    }
    /// First row with key >= `key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<Option<Row>> {
        self.go(Some(key), Seek::Ge)
    }
    /// Last row with key <= `key`.
    pub fn seek_back(&mut self, key: &[u8]) -> Result<Option<Row>> {
        self.go(Some(key), Seek::Le)
    }
    /// The row after the current one (the first row if unpositioned).
    #[allow(clippy::should_implement_trait)] // fallible, so not an Iterator
    pub fn next(&mut self) -> Result<Option<Row>> {
        match self.pos.clone() {
            Some(k) => self.go(Some(&k), Seek::Gt),
            None => self.first(),
        }
    }
    /// The row before the current one (the last row if unpositioned).
    pub fn prev(&mut self) -> Result<Option<Row>> {
        match self.pos.clone() {
            Some(k) => self.go(Some(&k), Seek::Lt),
            None => self.last(),
        }
    }
    /// The rows with keys in the range, in order (at most `limit`).
    pub fn range(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let mut out = Vec::new();
        let mut row = match start {
            Bound::Unbounded => self.first()?,
            Bound::Included(k) => self.go(Some(k), Seek::Ge)?,
            Bound::Excluded(k) => self.go(Some(k), Seek::Gt)?,
        };
        while let Some((k, v)) = row {
            let inside = match end {
                Bound::Unbounded => true,
                Bound::Included(e) => k.as_slice() <= e,
                Bound::Excluded(e) => k.as_slice() < e,
            };
            if !inside || out.len() >= limit {
                break;
            }
            out.push((k, v));
            row = self.next()?;
        }
        Ok(out)
    }
}
