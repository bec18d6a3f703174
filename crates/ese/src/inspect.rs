//! Inspection: header, log and checkpoint dumps, and `verify`, the physical-consistency check
//! a backup runs on its copy before reporting success.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use volume::{FileSystem, OpenMode};

use crate::checkpoint::{self, Checkpoint};
use crate::dbheader::{self, DbHeader};
use crate::error::{EngineError, IoContext, Result};
use crate::logfmt::{self, LogHeader, Record, ScanEnd};
use crate::lsn::{Lsn, hex};
use crate::page::{self, PageProblem};

/// Reads a database header (the newer valid copy). A file in which neither copy is a valid
/// header page is reported as not being a database header in one sentence: the per-copy,
/// per-page-size problems a mount names to diagnose a torn header say nothing to someone who
/// pointed `inspect` at the wrong file.
pub fn dump_database_header(fs: &dyn FileSystem, path: &Path) -> Result<DbHeader> {
    let f = fs.open(path, OpenMode::Read).at(path)?;
    dbheader::read_header(f.as_ref(), path).map_err(|e| match e {
        EngineError::HeaderCorrupt { path, .. } => EngineError::HeaderCorrupt {
            path,
            why: "not a database header (neither header copy, page 0 or 1, is valid at any \
                  page size)"
                .into(),
        },
        other => other,
    })
}

/// Reads a checkpoint file.
pub fn dump_checkpoint(fs: &dyn FileSystem, path: &Path) -> Result<Checkpoint> {
    checkpoint::read_checkpoint(fs, path)
}

impl fmt::Display for DbHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database:          {} (id {})", self.name, self.dbid)?;
        writeln!(f, "state:             {:?}", self.state)?;
        writeln!(f, "page size:         {}", self.page_size)?;
        writeln!(f, "log signature:     {}", hex(&self.log_signature))?;
        writeln!(
            f,
            "required logs:     {:#X}-{:#X} ({} .. {})",
            self.min_required_generation(),
            self.max_required_generation(),
            self.min_required,
            self.max_required
        )?;
        writeln!(f, "created:           {}", self.created)?;
        writeln!(f, "last attach:       {}", self.last_attach)?;
        writeln!(f, "last detach:       {}", self.last_detach)?;
        for (name, slot) in [
            ("previous full", &self.previous_full),
            ("previous incr.", &self.previous_incremental),
            ("previous diff.", &self.previous_differential),
            ("previous copy", &self.previous_copy),
        ] {
            match slot {
                None => writeln!(f, "{name:<18} none")?,
                Some(s) => writeln!(
                    f,
                    "{name:<18} time {} logs {:#X}-{:#X} ({:?})",
                    s.time, s.gen_low, s.gen_high, s.kind
                )?,
            }
        }
        Ok(())
    }
}

/// One record of a log dump.
#[derive(Debug, Clone, Serialize)]
pub struct RecordSummary {
    pub lsn: String,
    pub kind: &'static str,
    pub detail: String,
}

/// A log file's header and records.
#[derive(Debug, Clone, Serialize)]
pub struct LogDump {
    pub path: PathBuf,
    pub header: LogHeader,
    pub records: Vec<RecordSummary>,
    pub end: ScanEnd,
}

/// Dumps a log file.
pub fn dump_log(fs: &dyn FileSystem, path: &Path) -> Result<LogDump> {
    let image = volume::fs::read_all(fs, path).at(path)?;
    let header = LogHeader::decode(&image).map_err(|why| EngineError::LogCorrupt {
        path: path.to_path_buf(),
        generation: 0,
        why,
    })?;
    let scan = logfmt::scan(header.generation, &image, 0);
    let records = scan
        .records
        .iter()
        .map(|(lsn, r)| match r {
            Record::Txn { commit, begin, pages } => RecordSummary {
                lsn: lsn.to_string(),
                kind: if *commit { "commit" } else { "txn-part" },
                detail: format!(
                    "begin {begin}, {} pages: {}",
                    pages.len(),
                    pages
                        .iter()
                        .take(8)
                        .map(|p| format!(
                            "db{}:{}{}",
                            p.dbid,
                            p.pgno,
                            if p.full { "(full)" } else { "" }
                        ))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            },
            Record::Attach(a) => RecordSummary {
                lsn: lsn.to_string(),
                kind: "attach",
                detail: format!("db {} {} at {}", a.dbid, a.name, a.path),
            },
            Record::EndOfGeneration => {
                RecordSummary { lsn: lsn.to_string(), kind: "end", detail: String::new() }
            }
            Record::BackupStamp { kind, slot, databases } => RecordSummary {
                lsn: lsn.to_string(),
                kind: "backup",
                detail: format!(
                    "{kind} backup ({:?}) logs {:#X}-{:#X} time {}: {}",
                    slot.kind,
                    slot.gen_low,
                    slot.gen_high,
                    slot.time,
                    databases.join(", ")
                ),
            },
        })
        .collect();
    Ok(LogDump { path: path.to_path_buf(), header, records, end: scan.how })
}

impl fmt::Display for LogDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "log file:          {}", self.path.display())?;
        write!(f, "{}", self.header)?;
        for r in &self.records {
            writeln!(f, "  {} {:<8} {}", r.lsn, r.kind, r.detail)?;
        }
        writeln!(f, "scan ended:        {}", scan_end(&self.end))
    }
}

/// How a scan ended, in words.
pub fn scan_end(end: &ScanEnd) -> String {
    match end {
        ScanEnd::Closed => "closed (end-of-generation record)".into(),
        ScanEnd::Unwritten => "unwritten space (the generation is still open)".into(),
        ScanEnd::Damaged(why) => format!("damaged: {why}"),
    }
}

impl LogDump {
    /// The one sentence naming what is wrong with the file, when its records end in damage
    /// (a truncated or corrupt log), so that a caller can fail after showing the good records.
    pub fn damage(&self) -> Option<String> {
        match &self.end {
            ScanEnd::Damaged(why) => Some(format!(
                "log {} (generation {:#X}) is damaged: {why}; the {} records before it are good",
                self.path.display(),
                self.header.generation,
                self.records.len()
            )),
            _ => None,
        }
    }
}

/// Result of verifying a database file.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseVerify {
    pub path: PathBuf,
    pub pages: u64,
    pub verified: u64,
    /// Pages never written (allocated while a snapshot was taken, before the lazy writer got
    /// to them; their content is in the logs).
    pub uninitialized: u64,
    #[serde(serialize_with = "crate::lsn::ser_hex")]
    pub log_signature: [u8; 16],
    pub min_required_generation: u32,
    pub max_required_generation: u32,
}

/// Checks every page checksum of a database file. The first bad page is an error naming the
/// file and page.
pub fn verify_database(fs: &dyn FileSystem, path: &Path) -> Result<DatabaseVerify> {
    let f = fs.open(path, OpenMode::Read).at(path)?;
    let h = dbheader::read_header(f.as_ref(), path)?;
    let ps = h.page_size as usize;
    let len = f.len().at(path)?;
    let pages = len / ps as u64;
    let mut out = DatabaseVerify {
        path: path.to_path_buf(),
        pages,
        verified: 0,
        uninitialized: 0,
        log_signature: h.log_signature,
        min_required_generation: h.min_required_generation(),
        max_required_generation: h.max_required_generation(),
    };
    let mut tally = PageTally::default();
    let mut buf = vec![0u8; ps * 32];
    let mut pgno = 0u64;
    while pgno < pages {
        let n = ((pages - pgno) as usize).min(32);
        f.read_exact_at(&mut buf[..n * ps], pgno * ps as u64).at(path)?;
        verify_pages(path, pgno, &buf[..n * ps], ps, &mut tally)?;
        pgno += n as u64;
    }
    (out.verified, out.uninitialized) = (tally.verified, tally.uninitialized);
    if len % ps as u64 != 0 {
        return Err(EngineError::PageCorrupt {
            path: path.to_path_buf(),
            pgno: pages,
            why: format!("file length {len} is not a multiple of the page size {ps}"),
        });
    }
    Ok(out)
}

/// Pages counted by [`verify_pages`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PageTally {
    /// Pages whose checksum and page number matched.
    pub verified: u64,
    /// Pages never written (all zeros) past the header pages.
    pub uninitialized: u64,
}

/// Checks a run of whole pages of the database file `path`, the first being page
/// `first_pgno`: the check [`verify_database`] makes of every page, offered on its own so
/// that a copy can check pages in the buffers it already holds instead of reading the file
/// again. The first bad page is an error naming the file and page.
pub fn verify_pages(
    path: &Path,
    first_pgno: u64,
    buf: &[u8],
    page_size: usize,
    tally: &mut PageTally,
) -> Result<()> {
    let corrupt =
        |pgno: u64, why: String| EngineError::PageCorrupt { path: path.to_path_buf(), pgno, why };
    if page_size == 0 || !buf.len().is_multiple_of(page_size) {
        return Err(corrupt(
            first_pgno,
            format!("{} bytes are not whole pages of {page_size}", buf.len()),
        ));
    }
    for (i, img) in buf.chunks_exact(page_size).enumerate() {
        let p = first_pgno + i as u64;
        match page::verify(p, img) {
            Ok(()) => tally.verified += 1,
            Err(PageProblem::NotInitialized) if p > page::SHADOW_HEADER_PGNO => {
                tally.uninitialized += 1
            }
            Err(PageProblem::NotInitialized) => {
                return Err(corrupt(p, "header copy not initialized".into()));
            }
            Err(PageProblem::Corrupt(why)) => return Err(corrupt(p, why)),
        }
    }
    Ok(())
}

/// Result of verifying log generations.
#[derive(Debug, Clone, Serialize)]
pub struct LogVerify {
    pub generations: Vec<u32>,
    pub records: u64,
    pub end: Lsn,
}

/// Checks every record of the generations `low..=high` (all found when `None`) of `prefix` in
/// `dir`: headers, checksums, continuity, and the signature when given.
///
/// Every generation stored under a closed name (`E00` + 8 hex digits + `.log`) must end with
/// its end-of-generation record: the engine writes it when it rolls the generation, before
/// the file gets that name, so a closed file without it lost its tail (cut off or zeroed),
/// and records that were acknowledged may be missing. This is what a backup relies on, since
/// every generation it copies was closed by the freeze. Only the current log (`E00.log`),
/// which is still being written, may end in unwritten space, and only as the last
/// generation checked.
pub fn verify_logs(
    fs: &dyn FileSystem,
    dir: &Path,
    prefix: &str,
    range: Option<(u32, u32)>,
    signature: Option<[u8; 16]>,
) -> Result<LogVerify> {
    let logs: Vec<_> = logfmt::list_logs(fs, dir, prefix)?
        .into_iter()
        .filter(|l| range.is_none_or(|(lo, hi)| (lo..=hi).contains(&l.header.generation)))
        .collect();
    if let Some((lo, _)) = range
        && logs.first().is_none_or(|l| l.header.generation != lo)
    {
        return Err(EngineError::LogGap { missing: lo, after_path: dir.to_path_buf() });
    }
    if let Some((_, hi)) = range
        && logs.last().is_none_or(|l| l.header.generation != hi)
    {
        return Err(EngineError::LogGap {
            missing: logs.last().map_or(hi, |l| l.header.generation + 1),
            after_path: logs.last().map_or(dir.to_path_buf(), |l| l.path.clone()),
        });
    }
    let current = logfmt::current_name(prefix);
    let mut out = LogVerify { generations: Vec::new(), records: 0, end: Lsn(0) };
    for (i, l) in logs.iter().enumerate() {
        let g = l.header.generation;
        if let Some(sig) = signature
            && sig != l.header.signature
        {
            return Err(EngineError::ForeignLog { path: l.path.clone(), generation: g });
        }
        if i > 0 && logs[i - 1].header.generation + 1 != g {
            return Err(EngineError::LogGap {
                missing: logs[i - 1].header.generation + 1,
                after_path: logs[i - 1].path.clone(),
            });
        }
        let image = volume::fs::read_all(fs, &l.path).at(&l.path)?;
        let scan = logfmt::scan(g, &image, 0);
        let last = i + 1 == logs.len();
        let is_current = l.path.file_name().is_some_and(|n| n == current.as_str());
        match scan.how {
            ScanEnd::Closed => {}
            ScanEnd::Unwritten if last && is_current => {}
            ScanEnd::Unwritten => {
                return Err(EngineError::LogCorrupt {
                    path: l.path.clone(),
                    generation: g,
                    why: format!(
                        "closed generation has no end record: its tail after offset {} is missing or zeroed",
                        scan.end
                    ),
                });
            }
            ScanEnd::Damaged(why) => {
                return Err(EngineError::LogCorrupt { path: l.path.clone(), generation: g, why });
            }
        }
        out.records += scan.records.len() as u64;
        out.end = Lsn::new(g, scan.end);
        out.generations.push(g);
    }
    Ok(out)
}

/// Verifies a set of database files and their logs together: every page, every record,
/// generation continuity, and that the logs carry the databases' signature and cover their
/// required range.
pub fn verify_set(
    dbs: &[(&dyn FileSystem, &Path)],
    log_fs: &dyn FileSystem,
    log_dir: &Path,
    prefix: &str,
) -> Result<(Vec<DatabaseVerify>, LogVerify)> {
    let mut reports = Vec::new();
    for (fs, p) in dbs {
        reports.push(verify_database(*fs, p)?);
    }
    let signature = reports.first().map(|r| r.log_signature);
    for r in &reports {
        if Some(r.log_signature) != signature {
            return Err(EngineError::DatabaseMismatch {
                path: r.path.clone(),
                why: "log signature differs from the other databases".into(),
            });
        }
    }
    let logs = verify_logs(log_fs, log_dir, prefix, None, signature)?;
    for r in &reports {
        if r.min_required_generation != 0 && !logs.generations.contains(&r.min_required_generation)
        {
            return Err(EngineError::LogGap {
                missing: r.min_required_generation,
                after_path: log_dir.to_path_buf(),
            });
        }
    }
    Ok((reports, logs))
}

impl fmt::Display for DatabaseVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "database file:     {}", self.path.display())?;
        writeln!(
            f,
            "pages:             {} ({} verified, {} not initialized)",
            self.pages, self.verified, self.uninitialized
        )?;
        writeln!(f, "log signature:     {}", hex(&self.log_signature))?;
        writeln!(
            f,
            "required logs:     {:#X}-{:#X}",
            self.min_required_generation, self.max_required_generation
        )
    }
}

impl fmt::Display for LogVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.generations.first(), self.generations.last()) {
            (Some(lo), Some(hi)) => writeln!(
                f,
                "log generations:   {lo:#X}-{hi:#X} ({} files)",
                self.generations.len()
            )?,
            _ => writeln!(f, "log generations:   none")?,
        }
        writeln!(f, "records:           {}", self.records)?;
        writeln!(f, "end of log:        {}", self.end)
    }
}
