//! Redo: replays committed transactions from log generations into database files.
//!
//! Shared by soft recovery (at open, from the checkpoint) and hard recovery (after a restore,
//! from the database header's required range). Replay is idempotent: a page change is applied
//! only when the page's LSN is older than the transaction, and the first change of a page after
//! a checkpoint is logged as a full image, so a page torn by a crash is rebuilt from the log
//! rather than patched. A transaction is applied only once its commit record has been read;
//! the records of a transaction whose commit never reached the log are ignored.

use std::collections::HashMap;
use std::path::PathBuf;

use volume::{FileRef, FsRef};

use crate::backup::BackupKind;
use crate::dbheader::{BackupSlot, DbHeader};
use crate::error::{EngineError, IoContext, Result};
use crate::logfmt::{self, LogFile, PageDelta, Record, ScanEnd};
use crate::lsn::Lsn;
use crate::page::{self, PAGE_HEADER, PageProblem};

/// A database file redo writes into.
#[derive(Debug, Clone)]
pub(crate) struct RedoDb {
    pub path: PathBuf,
    pub file: FileRef,
    pub page_size: usize,
}

/// What to do with records of a database that was not provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// Soft recovery: every database of the log stream must be there.
    Fail,
    /// Hard recovery of a subset of a storage group's databases.
    Skip,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Default)]
pub(crate) struct RedoOutcome {
    /// End of the last good record.
    pub end: Lsn,
    /// Generations read.
    pub generations: Vec<u32>,
    /// How the last generation ended.
    pub last_end: Option<ScanEnd>,
    pub transactions: u64,
    pub pages_written: u64,
    pub bytes_read: u64,
    /// The backup stamps read, in log order: redo writes pages only, so the caller applies
    /// them to the headers it writes afterwards ([`apply_stamps`]).
    pub stamps: Vec<LoggedStamp>,
}

/// A [`Record::BackupStamp`] read by redo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedStamp {
    pub kind: BackupKind,
    pub slot: BackupSlot,
    pub databases: Vec<String>,
}

/// Applies, in log order, the stamps that name database `name` to its header; returns
/// whether the header changed. Idempotent (see [`DbHeader::replay_backup`]), as redo may read
/// a stamp again after a crash.
pub(crate) fn apply_stamps(stamps: &[LoggedStamp], name: &str, header: &mut DbHeader) -> bool {
    let mut changed = false;
    for s in stamps.iter().filter(|s| s.databases.iter().any(|d| d == name)) {
        changed |= header.replay_backup(s.kind, s.slot);
    }
    changed
}

enum Slot {
    Valid(Vec<u8>),
    /// Torn, never written, or past the end of the file: only a full image can restore it.
    Broken(String),
}

/// Replays `logs` (sorted, starting at the generation of `start`) into `dbs` (by name).
/// `strict_tail`: a damaged record even in the last generation is an error (hard recovery).
#[allow(clippy::too_many_arguments)]
pub(crate) fn replay(
    fs_of: &dyn Fn(&LogFile) -> FsRef,
    logs: &[LogFile],
    start: Lsn,
    signature: [u8; 16],
    dbs: &HashMap<String, RedoDb>,
    mut names: HashMap<u32, String>,
    unknown: Unknown,
    strict_tail: bool,
) -> Result<RedoOutcome> {
    let mut out = RedoOutcome { end: start, ..Default::default() };
    let mut pages: HashMap<(String, u64), Slot> = HashMap::new();
    let mut pending: Vec<PageDelta> = Vec::new();
    let mut pending_begin = Lsn(0);
    // Page changes read so far, and each database's length in pages before replay: a page
    // number past both sums is damage (see `within_reach`).
    let mut deltas_seen = 0u64;
    let mut start_pages: HashMap<String, u64> = HashMap::new();
    let mut prev: Option<&LogFile> = None;
    for (i, lf) in logs.iter().enumerate() {
        let g = lf.header.generation;
        if lf.header.signature != signature {
            return Err(EngineError::ForeignLog { path: lf.path.clone(), generation: g });
        }
        match prev {
            None if g != start.generation() => {
                return Err(EngineError::LogGap {
                    missing: start.generation(),
                    after_path: lf.path.clone(),
                });
            }
            Some(p) if p.header.generation.checked_add(1) != Some(g) => {
                return Err(EngineError::LogGap {
                    missing: p.header.generation.wrapping_add(1),
                    after_path: p.path.clone(),
                });
            }
            _ => {}
        }
        prev = Some(lf);
        for a in &lf.header.attached {
            names.insert(a.dbid, a.name.clone());
        }
        let image = volume::fs::read_all(fs_of(lf).as_ref(), &lf.path).at(&lf.path)?;
        out.bytes_read += image.len() as u64;
        let from = if g == start.generation() { start.offset() } else { 0 };
        let scan = logfmt::scan(g, &image, from);
        let last = i + 1 == logs.len();
        match &scan.how {
            ScanEnd::Closed => {}
            ScanEnd::Unwritten if last => {}
            ScanEnd::Damaged(why) if last && !strict_tail => {
                tracing::warn!(path = %lf.path.display(), generation = g, %why, "log tail is torn; recovery stops there");
            }
            ScanEnd::Unwritten | ScanEnd::Damaged(_) => {
                let why = match &scan.how {
                    ScanEnd::Damaged(w) => w.clone(),
                    _ => "generation ends without an end-of-generation record".into(),
                };
                return Err(EngineError::LogCorrupt { path: lf.path.clone(), generation: g, why });
            }
        }
        for (lsn, rec) in scan.records {
            match rec {
                Record::Attach(a) => {
                    names.insert(a.dbid, a.name);
                }
                Record::EndOfGeneration => {}
                Record::BackupStamp { kind, slot, databases } => {
                    out.stamps.push(LoggedStamp { kind, slot, databases });
                }
                Record::Txn { commit, begin, pages: deltas } => {
                    if !pending.is_empty() && begin != pending_begin {
                        // Records of a transaction that never committed: drop them.
                        pending.clear();
                    }
                    if pending.is_empty() && begin != lsn {
                        // The tail of a transaction that began before the start position.
                        continue;
                    }
                    pending_begin = begin;
                    deltas_seen += deltas.len() as u64;
                    pending.extend(deltas);
                    if commit {
                        for d in pending.drain(..) {
                            within_reach(&d, dbs, &names, deltas_seen, &mut start_pages).map_err(
                                |why| EngineError::LogCorrupt {
                                    path: lf.path.clone(),
                                    generation: g,
                                    why: format!("transaction at {begin}: {why}"),
                                },
                            )?;
                            apply(&d, begin, dbs, &names, unknown, &mut pages)?;
                        }
                        out.transactions += 1;
                    }
                }
            }
        }
        out.end = Lsn::new(g, scan.end);
        out.generations.push(g);
        out.last_end = Some(scan.how);
        if pages.len() > 4096 {
            out.pages_written += write_pages(dbs, &mut pages)?;
        }
    }
    out.pages_written += write_pages(dbs, &mut pages)?;
    for db in dbs.values() {
        db.file.sync().at(&db.path)?;
    }
    Ok(out)
}

/// Refuses a page change that no valid log can hold, before redo reads or writes the page
/// (a damaged record's page number would otherwise grow the database to any size).
///
/// Pages are allocated in order past the end (`btree::alloc`), and every page allocated
/// since the replay's start position is changed by a logged transaction (pages allocated
/// before it were flushed before the checkpoint advanced). So each page a replay can touch
/// lies below the database's length at the start plus the number of page changes read so far.
fn within_reach(
    d: &PageDelta,
    dbs: &HashMap<String, RedoDb>,
    names: &HashMap<u32, String>,
    deltas_seen: u64,
    start_pages: &mut HashMap<String, u64>,
) -> std::result::Result<(), String> {
    if d.pgno < deltas_seen {
        return Ok(());
    }
    let Some(db) = names.get(&d.dbid).and_then(|n| dbs.get(n).map(|db| (n, db))) else {
        return Ok(()); // `apply` reports or skips an unknown database.
    };
    let (name, db) = db;
    let pages = match start_pages.get(name) {
        Some(&p) => p,
        None => {
            let p = db.file.len().map_err(|e| format!("{}: {e}", db.path.display()))?
                / db.page_size.max(1) as u64;
            start_pages.insert(name.clone(), p);
            p
        }
    };
    if d.pgno >= pages.saturating_add(deltas_seen) {
        return Err(format!(
            "it changes page {} of {}, which has {pages} pages, and only {deltas_seen} page \
             changes were read: the record is damaged",
            d.pgno,
            db.path.display()
        ));
    }
    Ok(())
}

fn apply(
    d: &PageDelta,
    begin: Lsn,
    dbs: &HashMap<String, RedoDb>,
    names: &HashMap<u32, String>,
    unknown: Unknown,
    pages: &mut HashMap<(String, u64), Slot>,
) -> Result<()> {
    let name = match names.get(&d.dbid) {
        Some(n) => n,
        None if unknown == Unknown::Skip => return Ok(()),
        None => return Err(EngineError::DatabaseMissing { name: "?".into(), dbid: d.dbid }),
    };
    let Some(db) = dbs.get(name) else {
        if unknown == Unknown::Skip {
            return Ok(());
        }
        return Err(EngineError::DatabaseMissing { name: name.clone(), dbid: d.dbid });
    };
    let key = (name.clone(), d.pgno);
    if !pages.contains_key(&key) {
        pages.insert(key.clone(), read_slot(db, d.pgno)?);
    }
    #[allow(clippy::expect_used)] // inserted just above
    let slot = pages.get_mut(&key).expect("inserted");
    let ps = db.page_size;
    match slot {
        Slot::Valid(img) if page::page_lsn(img) >= begin.0 => return Ok(()),
        Slot::Valid(img) if !d.full => patch(img, d, db)?,
        Slot::Broken(why) if !d.full => {
            return Err(EngineError::PageCorrupt {
                path: db.path.clone(),
                pgno: d.pgno,
                why: format!("{why}, and the log holds only a partial change for it at {begin}"),
            });
        }
        _ => {
            let mut img = vec![0u8; ps];
            patch(&mut img, d, db)?;
            *slot = Slot::Valid(img);
        }
    }
    if let Slot::Valid(img) = slot {
        page::set_page_lsn(img, begin.0);
    }
    Ok(())
}

fn patch(img: &mut [u8], d: &PageDelta, db: &RedoDb) -> Result<()> {
    for (off, bytes) in &d.ranges {
        let off = *off as usize;
        if off < PAGE_HEADER || off + bytes.len() > img.len() {
            return Err(EngineError::PageCorrupt {
                path: db.path.clone(),
                pgno: d.pgno,
                why: format!(
                    "log change at offset {off} length {} does not fit the page",
                    bytes.len()
                ),
            });
        }
        img[off..off + bytes.len()].copy_from_slice(bytes);
    }
    Ok(())
}

fn read_slot(db: &RedoDb, pgno: u64) -> Result<Slot> {
    let mut img = vec![0u8; db.page_size];
    let n = db.file.read_at(&mut img, pgno * db.page_size as u64).at(&db.path)?;
    if n < db.page_size {
        return Ok(Slot::Broken("page is past the end of the file".into()));
    }
    Ok(match page::verify(pgno, &img) {
        Ok(()) => Slot::Valid(img),
        Err(PageProblem::NotInitialized) => Slot::Broken("page not initialized".into()),
        Err(PageProblem::Corrupt(why)) => Slot::Broken(why),
    })
}

fn write_pages(
    dbs: &HashMap<String, RedoDb>,
    pages: &mut HashMap<(String, u64), Slot>,
) -> Result<u64> {
    let mut n = 0;
    let mut keys: Vec<_> = pages.keys().cloned().collect();
    keys.sort();
    for k in keys {
        if let Some(Slot::Valid(mut img)) = pages.remove(&k) {
            let db = &dbs[&k.0];
            let lsn = page::page_lsn(&img);
            page::seal(&mut img, k.1, lsn);
            db.file.write_at(&img, k.1 * db.page_size as u64).at(&db.path)?;
            n += 1;
        }
    }
    pages.clear();
    Ok(n)
}
