//! The physical-consistency check of a backup, shared by the requester (on a set it just
//! stored, before it reports success to the writers) and by `verify` of a stored set later:
//! every database page checksum, every log record checksum, log generations contiguous, and
//! one log signature across the databases and the logs.
//!
//! `verify` of a stored set reads every file back through the repository ([`StoredFiles`]):
//! every byte decompressed and checked against its chunk hash, so what passes is exactly what
//! a restore will read. A backup checks its database pages as it copies them instead
//! ([`CopyPageCheck`], in the very buffers it hashes and compresses, so the pages checked are
//! the bytes stored under those hashes), and reads back only the headers and the logs: a
//! second pass over every database byte would cost more than the copy's compression.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ese::DbHeader;
use serde::Serialize;
use volume::FsRef;

use crate::error::{RequesterError, Result};
use crate::repo::{BackupSet, FileRole, Repository, StoredFiles};
use crate::requester::Progress;

/// A database file of a backup: its volume label and path on the volume.
#[derive(Debug, Clone)]
pub struct DbFile {
    pub volume: String,
    pub path: PathBuf,
    /// Pages already verified while the file was copied ([`CopyPageCheck`]): only its header
    /// and length are read then. `None`: every page is read and checked.
    pub pages_verified: Option<u64>,
}

/// The page checks of one database file, made on the copy's worker threads as its chunks
/// pass ([`crate::repo::ChunkCheck`]).
#[derive(Debug)]
pub struct CopyPageCheck {
    path: PathBuf,
    page_size: usize,
    verified: AtomicU64,
}

impl CopyPageCheck {
    /// Reads the header of `path` on `fs` for its page size. `None` when chunks of
    /// `chunk_size` bytes do not hold whole pages (the file is then checked after the copy).
    pub fn new(
        fs: &dyn volume::FileSystem,
        path: &Path,
        chunk_size: u32,
    ) -> Result<Option<Self>, String> {
        let header = ese::inspect::dump_database_header(fs, path).map_err(|e| e.to_string())?;
        let page_size = header.page_size as usize;
        if page_size == 0 || !(chunk_size as usize).is_multiple_of(page_size) {
            return Ok(None);
        }
        Ok(Some(Self { path: path.into(), page_size, verified: AtomicU64::new(0) }))
    }

    /// Checks the whole pages of the chunk at `off` (a partial page at the end of the file is
    /// reported by [`check`], which compares the length with the page size).
    pub fn check(&self, off: u64, data: &[u8]) -> Result<(), String> {
        let whole = data.len() - data.len() % self.page_size;
        let mut tally = ese::inspect::PageTally::default();
        ese::inspect::verify_pages(
            &self.path,
            off / self.page_size as u64,
            &data[..whole],
            self.page_size,
            &mut tally,
        )
        .map_err(|e| e.to_string())?;
        self.verified.fetch_add(tally.verified, Ordering::Relaxed);
        Ok(())
    }

    /// Pages verified so far.
    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }
}

/// The closed log generations of a backup: `first..=last` of `prefix` in `dir` on `volume`.
#[derive(Debug, Clone)]
pub struct LogFiles {
    pub volume: String,
    pub dir: PathBuf,
    pub prefix: String,
    pub first: u32,
    pub last: u32,
}

/// What the checks found.
#[derive(Debug, Clone, Serialize)]
pub struct Physical {
    /// The header of each database checked, in the order given.
    pub headers: Vec<DbHeader>,
    pub databases: u64,
    /// Pages whose checksum was verified.
    pub pages: u64,
    /// First and last log generation checked.
    pub first: u32,
    pub last: u32,
    /// Log records whose checksum was verified.
    pub records: u64,
}

/// A failed check: the file (`<volume>/<path>`) and what is wrong with it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub file: String,
    pub error: String,
}

impl Failure {
    fn new(file: String, error: impl ToString) -> Self {
        Self { file, error: error.to_string() }
    }
}

/// Runs the checks on `databases` and `logs` read through `views` (by volume label).
/// `signature`, when known from elsewhere (an incremental's databases are not in the set),
/// is the log signature every database and log must carry.
pub fn check(
    views: &BTreeMap<String, FsRef>,
    databases: &[DbFile],
    logs: Option<&LogFiles>,
    mut signature: Option<[u8; 16]>,
) -> Result<Physical, Failure> {
    let view = |volume: &str, file: &str| {
        views
            .get(volume)
            .ok_or_else(|| Failure::new(file.to_string(), format!("no volume {volume:?}")))
    };
    let mut out =
        Physical { headers: Vec::new(), databases: 0, pages: 0, first: 0, last: 0, records: 0 };
    let mut required = Vec::new();
    for db in databases {
        let name = format!("{}/{}", db.volume, db.path.display());
        let fs = view(&db.volume, &name)?;
        let header = ese::inspect::dump_database_header(fs.as_ref(), &db.path)
            .map_err(|e| Failure::new(name.clone(), e))?;
        let v = match db.pages_verified {
            None => ese::inspect::verify_database(fs.as_ref(), &db.path)
                .map_err(|e| Failure::new(name.clone(), e))?,
            Some(verified) => verified_copy(fs.as_ref(), db, &header, verified)
                .map_err(|e| Failure::new(name.clone(), e))?,
        };
        match signature {
            None => signature = Some(v.log_signature),
            Some(s) if s != v.log_signature => {
                return Err(Failure::new(
                    name,
                    "log signature differs from the other files of the storage group",
                ));
            }
            _ => {}
        }
        out.pages += v.verified;
        out.databases += 1;
        required.push((name, v.min_required_generation, v.max_required_generation));
        out.headers.push(header);
    }
    let Some(logs) = logs else {
        return Err(Failure::new("logs".into(), "the backup holds no closed log generation"));
    };
    let dir_name = format!("{}/{}", logs.volume, logs.dir.display());
    let fs = view(&logs.volume, &dir_name)?;
    let v = ese::inspect::verify_logs(
        fs.as_ref(),
        &logs.dir,
        &logs.prefix,
        Some((logs.first, logs.last)),
        signature,
    )
    .map_err(|e| Failure::new(dir_name, e))?;
    (out.first, out.last, out.records) = (logs.first, logs.last, v.records);
    for (name, lo, hi) in required {
        if lo != 0 && (lo < logs.first || hi > logs.last) {
            return Err(Failure::new(
                name,
                format!(
                    "needs log generations {lo:#X} to {hi:#X}, the backup holds {:#X} to {:#X}",
                    logs.first, logs.last
                ),
            ));
        }
    }
    Ok(out)
}

/// What [`ese::inspect::verify_database`] would report of a database whose pages were
/// verified as they were copied: the header's fields, and a length of whole pages.
fn verified_copy(
    fs: &dyn volume::FileSystem,
    db: &DbFile,
    header: &DbHeader,
    verified: u64,
) -> ese::Result<ese::inspect::DatabaseVerify> {
    let len = fs
        .open(&db.path, volume::OpenMode::Read)
        .and_then(|f| f.len())
        .map_err(|e| ese::EngineError::io(&db.path, e))?;
    let ps = u64::from(header.page_size.max(1));
    if len % ps != 0 {
        return Err(ese::EngineError::PageCorrupt {
            path: db.path.clone(),
            pgno: len / ps,
            why: format!("file length {len} is not a multiple of the page size {ps}"),
        });
    }
    Ok(ese::inspect::DatabaseVerify {
        path: db.path.clone(),
        pages: len / ps,
        verified,
        uninitialized: (len / ps).saturating_sub(verified),
        log_signature: header.log_signature,
        min_required_generation: header.min_required_generation(),
        max_required_generation: header.max_required_generation(),
    })
}

/// The report of [`verify_set`].
#[derive(Debug, Clone, Serialize)]
pub struct SetVerify {
    pub files: usize,
    pub bytes: u64,
    #[serde(flatten)]
    pub physical: Physical,
}

/// Verifies a stored set: every chunk and file hash, with every database page checked in the
/// same pass, then database headers and the logs as stored. `progress` hears of both steps
/// and of the bytes checked.
pub fn verify_set(
    repo: &Arc<Repository>,
    set: &BackupSet,
    progress: &dyn Progress,
) -> Result<SetVerify> {
    let mut views: BTreeMap<String, FsRef> = BTreeMap::new();
    let mut databases = Vec::new();
    let mut logs: Option<LogFiles> = None;
    for f in &set.files {
        let Some((volume, path)) = f.path.split_once('/') else {
            return Err(RequesterError::Verify(format!(
                "set {}: file {:?} names no volume",
                set.id, f.path
            )));
        };
        views.entry(volume.to_string()).or_insert_with(|| {
            Arc::new(StoredFiles::new(repo.clone(), volume, &set.files)) as FsRef
        });
        let path = Path::new(path);
        match f.role {
            FileRole::Database => databases.push(DbFile {
                volume: volume.into(),
                path: path.into(),
                pages_verified: None,
            }),
            FileRole::Log => {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let Some((prefix, g)) = log_generation(name) else {
                    return Err(RequesterError::Verify(format!(
                        "set {}: {} is not a log generation file",
                        set.id, f.path
                    )));
                };
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                match &mut logs {
                    None => {
                        logs = Some(LogFiles {
                            volume: volume.into(),
                            dir,
                            prefix: prefix.into(),
                            first: g,
                            last: g,
                        })
                    }
                    Some(l) => {
                        if l.volume != volume || l.dir != dir || l.prefix != prefix {
                            return Err(RequesterError::Verify(format!(
                                "set {}: {} is not in the log directory of the other logs",
                                set.id, f.path
                            )));
                        }
                        (l.first, l.last) = (l.first.min(g), l.last.max(g));
                    }
                }
            }
            FileRole::Checkpoint => {}
        }
    }
    let failed =
        |file: &str, why: String| RequesterError::Verify(format!("set {}: {file}: {why}", set.id));
    // One pass over every byte: chunk and file hashes, and the pages of each database in the
    // same buffers (as a backup checks them while it copies).
    let total = set.files.iter().map(|f| f.size).sum();
    progress.step("checking every chunk and file hash and every database page");
    let mut done = 0u64;
    for f in &set.files {
        let db =
            databases.iter_mut().find(|d| f.path == format!("{}/{}", d.volume, d.path.display()));
        let pages = match &db {
            Some(d) => {
                CopyPageCheck::new(views[&d.volume].as_ref(), &d.path, repo.config().chunk_size)
                    .map_err(|why| failed(&f.path, why))?
            }
            None => None,
        };
        let mut rejected = None;
        let read = repo.read_file(f, &mut |off, data| {
            if let Some(c) = &pages
                && let Err(why) = c.check(off, data)
            {
                rejected = Some(why);
                return Err(std::io::Error::other("a page check failed"));
            }
            done += data.len() as u64;
            progress.bytes(done, total);
            Ok(())
        });
        if let Some(why) = rejected {
            return Err(failed(&f.path, why));
        }
        read?;
        if let (Some(d), Some(c)) = (db, pages) {
            d.pages_verified = Some(c.verified());
        }
    }
    progress.step("checking database headers and log records");
    let physical = check(&views, &databases, logs.as_ref(), recorded_signature(set))
        .map_err(|f| failed(&f.file, f.error))?;
    Ok(SetVerify {
        files: set.files.len(),
        bytes: set.files.iter().map(|f| f.size).sum(),
        physical,
    })
}

/// The log signature the set's manifest recorded from the database headers (an incremental
/// holds no database file to read it from).
fn recorded_signature(set: &BackupSet) -> Option<[u8; 16]> {
    let headers = set.database_headers.as_object()?;
    let hex = headers.values().find_map(|h| h.get("log_signature")?.as_str())?;
    let mut out = [0u8; 16];
    if hex.len() != 32 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The prefix and generation of a closed log file name (`E01` + 8 hex digits + `.log`).
pub fn log_generation(name: &str) -> Option<(&str, u32)> {
    let stem = name.strip_suffix(".log")?;
    let prefix = stem.get(..stem.len().checked_sub(8)?)?;
    if prefix.len() != 3 {
        return None;
    }
    ese::logfmt::parse_generation_name(prefix, name).map(|g| (prefix, g))
}
