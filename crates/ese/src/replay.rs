//! Continuous replay into a passive copy of a storage group's databases.
//!
//! A passive copy is a set of database files seeded from a snapshot of the active (dirty
//! shutdown, with the required log range in their headers) plus the closed log generations
//! shipped to it. [`PassiveReplay`] applies those generations one at a time with the same redo
//! as hard recovery, and keeps its own checkpoint (a two-slot file at a path the caller chooses) so a passive killed at any point resumes where it stopped instead of being reseeded.
//! The databases are never mounted: no [`crate::Instance`] is opened on them, so nothing but
//! redo writes their pages.
//!
//! Why a checkpoint of its own rather than the engine's `E00.chk`: the passive has no log
//! stream of its own, and its position is in the *active's* stream (same signature). The
//! checkpoint records where the next replay starts (`replay_from`: the start of the next
//! generation, or the begin of a transaction whose commit is in a later generation, since a
//! transaction's records may span a roll), the last generation applied and that generation's
//! creation time (so the log inspector can check the next generation continues it).
//!
//! After each generation, in this order: the pages are journaled (below), written in place and
//! synced, the database
//! headers get the new required range (still dirty shutdown, so hard recovery of the passive
//! at activation starts at the right place) and the backup stamps the batch's log records
//! carry (surrogate backups recorded on the active, so every copy's headers show the same
//! backup history), then the checkpoint slot is written and synced.
//! A crash between any two steps leaves an older checkpoint: replay from it is idempotent
//! (page LSNs), so the passive ends identical.
//!
//! Torn pages: the active logs a page's full image only after each of *its* checkpoints, so a
//! page torn by a power loss while the passive writes it could not always be rebuilt from the
//! log. Redo therefore writes into a staging layer; the page images of one generation are
//! first written and synced to a journal next to the checkpoint (`<checkpoint>.jrn`, with a
//! checksum and the generation it brings the copy to), and only then in place. Opening a
//! passive whose journal is valid and one generation ahead of its checkpoint writes the
//! journal's images again before anything else, which repairs any page the crash tore. The
//! staged pages of one apply are held in memory: at most the pages one generation changed.
//!
//! Every database the log stream changes must be part of the copy: a database attached on the
//! active after the seed stops replay with [`EngineError::DatabaseMissing`] (it needs its own
//! seed) rather than being skipped silently.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use volume::{FileRef, FsRef, OpenMode};

use crate::codec::{Reader, Writer, get_u32};
use crate::dbheader::{self, DbHeader, DbState};
use crate::error::{EngineError, IoContext, Result};
use crate::instance::DatabaseSpec;
use crate::logfmt::{self, LOG_HEADER_SIZE, LogFile, LogHeader, Record, ScanEnd};
use crate::lsn::Lsn;
use crate::redo;

/// Activation of a passive copy as the new active lives beside the replay it finishes.
pub use crate::activate::{Activation, activate};

const MAGIC: u32 = 0x5053_4545; // "EESP"
const JOURNAL_MAGIC: u32 = 0x4a53_4545; // "EESJ"
const SLOT_SIZE: usize = 512;

/// Where the passive copy lives.
#[derive(Debug, Clone)]
pub struct PassiveConfig {
    /// The passive database files (names as in the storage group).
    pub databases: Vec<DatabaseSpec>,
    /// The passive checkpoint file.
    pub checkpoint_fs: FsRef,
    pub checkpoint_path: PathBuf,
    /// Log file prefix of the storage group (`E00`).
    pub prefix: String,
}

/// The passive checkpoint: how far replay got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PassiveState {
    /// The active's log signature (the seed's).
    #[serde(serialize_with = "crate::lsn::ser_hex")]
    pub signature: [u8; 16],
    /// The next replay starts reading here.
    pub replay_from: Lsn,
    /// The last generation applied (one below the seed's first required generation at first).
    pub replayed_generation: u32,
    /// Creation time of the last generation applied (0 before the first).
    pub last_created: u64,
}

impl PassiveState {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        w.bytes(&self.signature);
        w.u64(self.replay_from.0);
        w.u32(self.replayed_generation);
        w.u64(self.last_created);
        w.buf
    }

    fn decode(body: &[u8]) -> Option<Self> {
        let mut r = Reader::new(body);
        if r.u32().ok()? != MAGIC {
            return None;
        }
        let signature: [u8; 16] = r.take(16).ok()?.try_into().ok()?;
        Some(PassiveState {
            signature,
            replay_from: Lsn(r.u64().ok()?),
            replayed_generation: r.u32().ok()?,
            last_created: r.u64().ok()?,
        })
    }
}

/// What applying one generation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ApplyReport {
    pub generation: u32,
    /// False when the generation had been applied before (nothing was done).
    pub applied: bool,
    pub transactions: u64,
    pub pages_written: u64,
}

struct PassiveDb {
    spec: DatabaseSpec,
    file: FileRef,
    header: DbHeader,
}

/// A passive copy being kept up to date by replaying shipped generations.
pub struct PassiveReplay {
    cfg: PassiveConfig,
    dbs: Vec<PassiveDb>,
    state: PassiveState,
    /// Sequence number of the newer checkpoint slot.
    seq: u64,
}

impl std::fmt::Debug for PassiveReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassiveReplay").field("state", &self.state).finish_non_exhaustive()
    }
}

impl PassiveReplay {
    /// Opens the passive copy: resumes from its checkpoint, or, the first time, starts at the
    /// oldest position the seed's headers require and writes the first checkpoint.
    pub fn open(cfg: PassiveConfig) -> Result<PassiveReplay> {
        let mut dbs = Vec::new();
        for spec in &cfg.databases {
            let file = spec.fs.open(&spec.path, OpenMode::ReadWrite).at(&spec.path)?;
            let header = dbheader::read_header(file.as_ref(), &spec.path)?;
            dbs.push(PassiveDb { spec: spec.clone(), file, header });
        }
        let Some(first) = dbs.first() else {
            return Err(EngineError::Config("a passive copy needs at least one database".into()));
        };
        let signature = first.header.log_signature;
        if let Some(d) = dbs.iter().find(|d| d.header.log_signature != signature) {
            return Err(EngineError::DatabaseMismatch {
                path: d.spec.path.clone(),
                why: "its log signature differs from the other passive databases".into(),
            });
        }
        let fs = cfg.checkpoint_fs.clone();
        let path = cfg.checkpoint_path.clone();
        let (state, seq) = if fs.exists(&path).at(&path)? {
            let (seq, state) = read_state(fs.as_ref(), &path)?;
            if state.signature != signature {
                return Err(EngineError::DatabaseMismatch {
                    path: first.spec.path.clone(),
                    why: format!(
                        "its log signature differs from the passive checkpoint {}",
                        path.display()
                    ),
                });
            }
            (state, seq)
        } else {
            let Some(start) = dbs
                .iter()
                .filter(|d| d.header.state == DbState::DirtyShutdown)
                .map(|d| d.header.min_required)
                .min()
            else {
                return Err(EngineError::DatabaseMismatch {
                    path: first.spec.path.clone(),
                    why: "a passive seed must be a snapshot copy (dirty shutdown with its \
                          required log range); this one is clean"
                        .into(),
                });
            };
            let state = PassiveState {
                signature,
                replay_from: start,
                replayed_generation: start.generation().saturating_sub(1),
                last_created: 0,
            };
            (state, 0)
        };
        let mut me = PassiveReplay { cfg, dbs, state, seq };
        if seq == 0 {
            // A new passive: a journal beside it is a previous copy's (a reseed), and its page
            // images must never reach these databases at a later open.
            let jrn = me.journal_path();
            if fs.exists(&jrn).at(&jrn)? {
                fs.remove_file(&jrn).at(&jrn)?;
            }
            me.persist()?;
        } else {
            me.repair_from_journal()?;
        }
        Ok(me)
    }

    /// The checkpoint as it is on disk.
    pub fn state(&self) -> PassiveState {
        self.state
    }

    /// The last generation applied.
    pub fn replayed_generation(&self) -> u32 {
        self.state.replayed_generation
    }

    /// The oldest generation a later replay still reads: shipped generations below it may be
    /// deleted.
    pub fn oldest_needed_generation(&self) -> u32 {
        self.state.replay_from.generation()
    }

    /// The passive databases' current headers.
    pub fn headers(&self) -> Vec<DbHeader> {
        self.dbs.iter().map(|d| d.header.clone()).collect()
    }

    /// Applies the closed generation at `path` (on `fs`), which must be the generation after
    /// [`Self::replayed_generation`]; a generation already applied is skipped. Earlier
    /// generations from [`Self::oldest_needed_generation`] are read from the same directory
    /// under their closed names (a transaction may have begun in one of them).
    pub fn apply(&mut self, fs: &FsRef, path: &Path) -> Result<ApplyReport> {
        self.apply_batch(fs, &[path.to_path_buf()])
    }

    /// Applies consecutive closed generations in one pass, the first of which must be the
    /// generation after [`Self::replayed_generation`] (those already applied are skipped).
    ///
    /// Why batches: each apply journals, writes in place and syncs every page it changed, then
    /// moves the checkpoint. A page that several generations of a batch change is written once,
    /// and the syncs are paid once per batch instead of once per generation — what bounds a
    /// copy catching up on a backlog. The page images of a batch are held in memory until they
    /// are journaled, so callers bound a batch's size.
    pub fn apply_batch(&mut self, fs: &FsRef, paths: &[PathBuf]) -> Result<ApplyReport> {
        let mut new: Vec<LogFile> = Vec::new();
        for path in paths {
            let header = read_log_header(fs, path, 0)?;
            let g = header.generation;
            if header.signature != self.state.signature {
                return Err(EngineError::ForeignLog { path: path.to_path_buf(), generation: g });
            }
            if g <= self.state.replayed_generation {
                continue;
            }
            let expected = new
                .last()
                .map(|l| l.header.generation + 1)
                .unwrap_or(self.state.replayed_generation + 1);
            if g != expected {
                return Err(EngineError::LogGap {
                    missing: expected,
                    after_path: path.to_path_buf(),
                });
            }
            new.push(LogFile { path: path.to_path_buf(), header });
        }
        let Some(last) = new.last().cloned() else {
            let g = paths
                .last()
                .map(|p| read_log_header(fs, p, 0).map(|h| h.generation))
                .transpose()?
                .unwrap_or(self.state.replayed_generation);
            return Ok(ApplyReport { generation: g, ..Default::default() });
        };
        let (path, header, g) = (last.path.clone(), last.header.clone(), last.header.generation);
        let first = new[0].header.generation;
        let dir = new[0].path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut files = Vec::new();
        for earlier in self.state.replay_from.generation()..first {
            let p = dir.join(logfmt::generation_name(&self.cfg.prefix, earlier));
            let header = read_log_header(fs, &p, earlier)?;
            files.push(LogFile { path: p, header });
        }
        files.extend(new);
        let staged: Vec<Arc<Staged>> = self
            .dbs
            .iter()
            .map(|d| Arc::new(Staged { inner: d.file.clone(), pages: Mutex::new(BTreeMap::new()) }))
            .collect();
        let redo_dbs: HashMap<String, redo::RedoDb> = self
            .dbs
            .iter()
            .zip(&staged)
            .map(|(d, st)| {
                let file: FileRef = st.clone();
                let page_size = d.header.page_size as usize;
                (d.spec.name.clone(), redo::RedoDb { path: d.spec.path.clone(), file, page_size })
            })
            .collect();
        let out = redo::replay(
            &|_: &LogFile| fs.clone(),
            &files,
            self.state.replay_from,
            self.state.signature,
            &redo_dbs,
            // The ids the databases had on the active when they were seeded: a generation
            // written after the active remounted may name its databases in neither its header
            // nor an attach record (the active knows them from its checkpoint).
            self.dbs.iter().map(|d| (d.header.dbid, d.spec.name.clone())).collect(),
            redo::Unknown::Fail,
            true,
        )?;
        if out.last_end != Some(ScanEnd::Closed) {
            return Err(EngineError::LogCorrupt {
                path: path.clone(),
                generation: g,
                why: "generation has no end-of-generation record: it is not closed".into(),
            });
        }
        // Where the next replay starts: the begin of a transaction still open at the end of
        // this generation, else the next generation.
        let image = volume::fs::read_all(fs.as_ref(), &path).at(&path)?;
        let scan = logfmt::scan(g, &image, 0);
        let open_txn = scan.records.iter().rev().find_map(|(_, r)| match r {
            Record::Txn { commit, begin, .. } => Some((*commit, *begin)),
            _ => None,
        });
        let replay_from = match open_txn {
            Some((false, begin)) => begin,
            _ => Lsn::new(g + 1, 0),
        };
        let writes: Vec<(String, u64, Vec<u8>)> = self
            .dbs
            .iter()
            .zip(&staged)
            .flat_map(|(d, st)| {
                let pages = std::mem::take(&mut *st.pages.lock());
                pages.into_iter().map(|(off, img)| (d.spec.name.clone(), off, img))
            })
            .collect();
        self.write_journal(g, &writes)?;
        self.write_in_place(&writes)?;
        for d in &mut self.dbs {
            // Surrogate backups stamped on the active: the copy's headers show the same
            // history. Written with the required range, before the checkpoint moves: a crash
            // in between replays the batch, and the stamps again (idempotent).
            redo::apply_stamps(&out.stamps, &d.spec.name, &mut d.header);
            d.header.min_required = replay_from;
            d.header.max_required = d.header.max_required.max(out.end);
            d.header.state = DbState::DirtyShutdown;
            dbheader::write_header(d.file.as_ref(), &d.spec.path, &mut d.header)?;
        }
        self.state = PassiveState {
            signature: self.state.signature,
            replay_from,
            replayed_generation: g,
            last_created: header.created,
        };
        self.persist()?;
        Ok(ApplyReport {
            generation: g,
            applied: true,
            transactions: out.transactions,
            pages_written: out.pages_written,
        })
    }

    fn journal_path(&self) -> PathBuf {
        self.cfg.checkpoint_path.with_extension("jrn")
    }

    /// Writes the page images of a batch ending with generation `g` to the journal and syncs
    /// it.
    fn write_journal(&self, g: u32, writes: &[(String, u64, Vec<u8>)]) -> Result<()> {
        let fs = &self.cfg.checkpoint_fs;
        let path = self.journal_path();
        let mut w = Writer::new();
        w.u32(JOURNAL_MAGIC);
        w.u32(g);
        w.u32(writes.len() as u32);
        for (name, off, img) in writes {
            w.str(name);
            w.u64(*off);
            w.lbytes(img);
        }
        let mut data = w.buf;
        let crc = crc32c::crc32c(&data);
        let len = data.len() as u64;
        data.extend_from_slice(&crc.to_le_bytes());
        data.extend_from_slice(&len.to_le_bytes());
        let new = !fs.exists(&path).at(&path)?;
        let f =
            fs.open(&path, if new { OpenMode::Create } else { OpenMode::ReadWrite }).at(&path)?;
        f.write_at(&data, 0).at(&path)?;
        f.set_len(data.len() as u64).at(&path)?;
        f.sync().at(&path)?;
        if new {
            let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
            fs.sync_dir(&parent).at(&parent)?;
        }
        Ok(())
    }

    /// Writes page images into the database files and syncs them.
    fn write_in_place(&self, writes: &[(String, u64, Vec<u8>)]) -> Result<()> {
        for (name, off, img) in writes {
            let Some(d) = self.dbs.iter().find(|d| &d.spec.name == name) else {
                return Err(EngineError::DatabaseMissing { name: name.clone(), dbid: 0 });
            };
            d.file.write_at(img, *off).at(&d.spec.path)?;
        }
        for d in &self.dbs {
            d.file.sync().at(&d.spec.path)?;
        }
        Ok(())
    }

    /// Writes the journal's images again when its batch ends after the checkpoint:
    /// the crash came after the journal was synced and before the checkpoint moved, so the
    /// in-place writes may be torn. An invalid (torn) journal was never followed by in-place
    /// writes and is ignored, as is one of an older generation.
    fn repair_from_journal(&self) -> Result<()> {
        let fs = &self.cfg.checkpoint_fs;
        let path = self.journal_path();
        if !fs.exists(&path).at(&path)? {
            return Ok(());
        }
        let data = volume::fs::read_all(fs.as_ref(), &path).at(&path)?;
        // A journal of a batch that ends past the checkpoint: the batch's in-place writes
        // may be torn. (Its images are those at the batch's end; replaying the batch again
        // from the checkpoint leaves them, page LSNs being newer.)
        let Some(writes) = decode_journal(&data, self.state.replayed_generation) else {
            return Ok(());
        };
        tracing::info!(pages = writes.len(), "passive copy: rewriting pages from its journal");
        self.write_in_place(&writes)
    }

    /// Writes the state into the older checkpoint slot, in place, and syncs it: a torn write
    /// damages only that slot, so a reader always finds the previous or the new state.
    fn persist(&mut self) -> Result<()> {
        let fs = &self.cfg.checkpoint_fs;
        let path = &self.cfg.checkpoint_path;
        let body = self.state.encode();
        let seq = self.seq + 1;
        let mut slot = vec![0u8; SLOT_SIZE];
        slot[0..8].copy_from_slice(&seq.to_le_bytes());
        slot[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
        slot[12..16].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        slot[16..16 + body.len()].copy_from_slice(&body);
        let new = !fs.exists(path).at(path)?;
        let f = if new {
            if let Some(parent) = path.parent() {
                fs.create_dir_all(parent).at(parent)?;
            }
            let f = fs.open(path, OpenMode::Create).at(path)?;
            f.set_len(2 * SLOT_SIZE as u64).at(path)?;
            f
        } else {
            fs.open(path, OpenMode::ReadWrite).at(path)?
        };
        f.write_at(&slot, (seq % 2) * SLOT_SIZE as u64).at(path)?;
        f.sync().at(path)?;
        if new {
            // The file's name, and the names of directories just created for it, become
            // durable when their parents are synced.
            for dir in path.ancestors().skip(1) {
                fs.sync_dir(dir).at(dir)?;
            }
        }
        self.seq = seq;
        Ok(())
    }
}

/// Reads the newer valid slot of a passive checkpoint: (sequence, state).
pub fn read_state(fs: &dyn volume::FileSystem, path: &Path) -> Result<(u64, PassiveState)> {
    let f = fs.open(path, OpenMode::Read).at(path)?;
    let mut best: Option<(u64, PassiveState)> = None;
    let mut problems = Vec::new();
    for i in 0..2u64 {
        let mut slot = vec![0u8; SLOT_SIZE];
        if let Err(e) = f.read_exact_at(&mut slot, i * SLOT_SIZE as u64) {
            problems.push(format!("slot {i}: {e}"));
            continue;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&slot[0..8]);
        let seq = u64::from_le_bytes(seq);
        let n = (get_u32(&slot, 8) as usize).min(SLOT_SIZE - 16);
        let body = &slot[16..16 + n];
        if seq == 0 {
            problems.push(format!("slot {i}: empty"));
        } else if crc32c::crc32c(body) != get_u32(&slot, 12) {
            problems.push(format!("slot {i}: checksum mismatch"));
        } else if let Some(s) = PassiveState::decode(body) {
            if best.as_ref().is_none_or(|(b, _)| seq > *b) {
                best = Some((seq, s));
            }
        } else {
            problems.push(format!("slot {i}: not a passive checkpoint"));
        }
    }
    best.ok_or_else(|| EngineError::HeaderCorrupt {
        path: path.to_path_buf(),
        why: problems.join("; "),
    })
}

/// Reads and decodes a log generation's header; `expect` (when not 0) is the generation the
/// file must hold.
fn read_log_header(fs: &FsRef, path: &Path, expect: u32) -> Result<LogHeader> {
    let f = fs.open(path, OpenMode::Read).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound && expect != 0 {
            EngineError::LogGap { missing: expect, after_path: path.to_path_buf() }
        } else {
            EngineError::io(path, e)
        }
    })?;
    let mut block = vec![0u8; LOG_HEADER_SIZE as usize];
    let n = f.read_at(&mut block, 0).at(path)?;
    let header = LogHeader::decode(&block[..n]).map_err(|why| EngineError::LogCorrupt {
        path: path.to_path_buf(),
        generation: expect,
        why,
    })?;
    if expect != 0 && header.generation != expect {
        return Err(EngineError::LogCorrupt {
            path: path.to_path_buf(),
            generation: expect,
            why: format!("header says generation {:#X}", header.generation),
        });
    }
    Ok(header)
}

/// The journal's page images if it is whole and brings the copy to generation `want`.
/// The page images of a valid journal whose batch ends after generation `replayed`.
fn decode_journal(data: &[u8], replayed: u32) -> Option<Vec<(String, u64, Vec<u8>)>> {
    let body_end = data.len().checked_sub(12)?;
    let len = u64::from_le_bytes(data[body_end + 4..].try_into().ok()?);
    if len != body_end as u64 || crc32c::crc32c(&data[..body_end]) != get_u32(data, body_end) {
        return None;
    }
    let mut r = Reader::new(&data[..body_end]);
    if r.u32().ok()? != JOURNAL_MAGIC || r.u32().ok()? <= replayed {
        return None;
    }
    let n = r.u32().ok()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let name = r.string().ok()?;
        let off = r.u64().ok()?;
        out.push((name, off, r.lbytes().ok()?.to_vec()));
    }
    Some(out)
}

/// A database file as redo sees it during one apply: page writes are kept in memory (and
/// read back from there) until the caller journals them and writes them in place.
#[derive(Debug)]
struct Staged {
    inner: FileRef,
    /// Written images by offset.
    pages: Mutex<BTreeMap<u64, Vec<u8>>>,
}

impl volume::File for Staged {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let mut n = self.inner.read_at(buf, offset)?;
        let end = offset + buf.len() as u64;
        for (off, img) in self.pages.lock().iter() {
            let (a, b) = (*off, *off + img.len() as u64);
            if b <= offset || a >= end {
                continue;
            }
            let (from, to) = (a.max(offset), b.min(end));
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&img[(from - a) as usize..(to - a) as usize]);
            n = n.max((to - offset) as usize);
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.pages.lock().insert(offset, buf.to_vec());
        Ok(())
    }

    fn len(&self) -> std::io::Result<u64> {
        let staged = self.pages.lock().iter().map(|(o, b)| o + b.len() as u64).max().unwrap_or(0);
        Ok(self.inner.len()?.max(staged))
    }

    fn set_len(&self, _len: u64) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "redo into a passive copy does not resize files",
        ))
    }

    /// Durability comes later, when the caller writes the staged pages.
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
}
