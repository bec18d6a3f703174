//! The log writer: record append, group commit, generation rolls, freeze holding, reserve logs.
//!
//! Appending is logical and in memory: a record gets its LSN (generation, offset) at once,
//! and a record that does not fit in the current generation closes it with an
//! end-of-generation record and goes to the next. The bytes wait in a pending buffer until
//! someone needs them durable. Whoever calls [`Log::flush_to`] first becomes the flusher: it
//! takes *everything* pending, writes it, rolls files as the LSNs cross generations, fsyncs
//! once, and wakes every waiter whose commit that covered — that is group commit: sixteen
//! committers waiting on one flush share one fsync.
//!
//! While frozen (snapshot), flushes wait: appends keep going into memory and durable
//! committers block until the thaw, so the snapshot never sees a half-written generation.
//!
//! Rolling: the next generation is prepared as `E00tmp.log` (header written, pre-allocated to
//! the generation size, synced), then `E00.log` is renamed to its closed name and the tmp file
//! to `E00.log`, and the directory synced. A crash anywhere in between leaves either the old
//! names or the new ones (recovery identifies generations by header, not by name). When the
//! volume is full, a reserve log (`E00res00001.jrs`, pre-allocated at creation) is renamed into
//! place instead — renaming needs no space — and the instance is flagged disk-full so it
//! refuses new work and can still shut down cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use volume::{FileRef, FsRef, OpenMode};

use crate::codec::now_secs;
use crate::error::{EngineError, IoContext, Result};
use crate::gate::{CommitGate, CurrentLogRead};
use crate::logfmt::{self, AttachedDb, FRAME, LOG_HEADER_SIZE, LogHeader, Record};
use crate::lsn::Lsn;

/// Where the log lives and its fixed parameters.
#[derive(Debug, Clone)]
pub(crate) struct LogConfig {
    pub fs: FsRef,
    pub dir: PathBuf,
    pub prefix: String,
    pub file_size: u32,
    pub signature: [u8; 16],
}

impl LogConfig {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Largest record that fits in an empty generation with room for its end record.
    pub fn max_record(&self) -> usize {
        (self.file_size - LOG_HEADER_SIZE) as usize - 2 * FRAME
    }
}

#[derive(Debug)]
struct LogState {
    generation: u32,
    offset: u32,
    pending: Vec<(Lsn, Vec<u8>)>,
    durable: Lsn,
    flushing: bool,
    frozen: bool,
    error: Option<String>,
    attached: Vec<AttachedDb>,
}

#[derive(Debug)]
struct Phys {
    file: FileRef,
    generation: u32,
    created: u64,
}

/// The log stream of an instance.
#[derive(Debug)]
pub(crate) struct Log {
    pub cfg: LogConfig,
    state: Mutex<LogState>,
    /// Signalled whenever a flush ends (the durable end moved or a flush failed) and on a
    /// freeze change: flush waiters and [`Log::wait_durable_beyond`] wait on it.
    cond: Condvar,
    phys: Mutex<Phys>,
    disk_full: std::sync::atomic::AtomicBool,
    /// The commit gate; `has_gate` lets a commit skip the lock when none is set.
    gate: GateSlot,
}

/// The commit gate, behind a lock, with a flag read without it.
#[derive(Default)]
struct GateSlot {
    has_gate: AtomicBool,
    gate: RwLock<Option<Arc<dyn CommitGate>>>,
}

impl std::fmt::Debug for GateSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GateSlot({})", self.has_gate.load(Ordering::Relaxed))
    }
}

impl Log {
    /// Creates generation `generation` as the current log file (used at creation and after
    /// recovery, when the previous current generation is closed and named already or sealed).
    pub fn start(
        cfg: LogConfig,
        generation: u32,
        previous_created: u64,
        attached: Vec<AttachedDb>,
    ) -> Result<Log> {
        let created = now_secs();
        let header = LogHeader {
            generation,
            signature: cfg.signature,
            created,
            previous_created,
            file_size: cfg.file_size,
            attached: attached.clone(),
        };
        let (file, _) = prepare_generation(&cfg, &header)?;
        let cur = cfg.path(&logfmt::current_name(&cfg.prefix));
        if cfg.fs.exists(&cur).at(&cur)? {
            // The previous current generation: give it its closed name first.
            let f = cfg.fs.open(&cur, OpenMode::Read).at(&cur)?;
            let mut block = vec![0u8; LOG_HEADER_SIZE as usize];
            let n = f.read_at(&mut block, 0).at(&cur)?;
            if let Ok(h) = LogHeader::decode(&block[..n]) {
                let closed = cfg.path(&logfmt::generation_name(&cfg.prefix, h.generation));
                cfg.fs.rename(&cur, &closed).at(&closed)?;
            }
        }
        let tmp = cfg.path(&logfmt::tmp_name(&cfg.prefix));
        cfg.fs.rename(&tmp, &cur).at(&cur)?;
        cfg.fs.sync_dir(&cfg.dir).at(&cfg.dir)?;
        let start = Lsn::new(generation, LOG_HEADER_SIZE);
        Ok(Log {
            state: Mutex::new(LogState {
                generation,
                offset: LOG_HEADER_SIZE,
                pending: Vec::new(),
                durable: start,
                flushing: false,
                frozen: false,
                error: None,
                attached,
            }),
            cond: Condvar::new(),
            phys: Mutex::new(Phys { file, generation, created }),
            disk_full: Default::default(),
            gate: GateSlot::default(),
            cfg,
        })
    }

    /// Installs (or removes) the commit gate durable commits pass after their local fsync.
    pub fn set_gate(&self, gate: Option<Arc<dyn CommitGate>>) {
        let mut g = self.gate.gate.write();
        self.gate.has_gate.store(gate.is_some(), Ordering::SeqCst);
        *g = gate;
    }

    /// Passes the commit gate for a commit durable up to `to` (immediately when no gate is
    /// set). Called with no engine lock held, so committers wait on the gate concurrently.
    pub fn replicated(&self, to: Lsn) -> Result<()> {
        if !self.gate.has_gate.load(Ordering::Relaxed) {
            return Ok(());
        }
        let gate = self.gate.gate.read().clone();
        match gate {
            None => Ok(()),
            Some(g) => g.replicated(to).map_err(|why| EngineError::NotReplicated { lsn: to, why }),
        }
    }

    /// Reads the current generation `generation` from `from` up to its durable end, at most
    /// `max` bytes. The physical file is read under the lock the flusher writes it under, so
    /// the bytes and the generation they belong to are consistent; only bytes before the
    /// durable end are returned, never bytes written but not yet synced.
    pub fn read_current(&self, generation: u32, from: u64, max: usize) -> Result<CurrentLogRead> {
        let p = self.phys.lock();
        // Lock order phys -> state: the flusher never holds state while taking phys.
        let durable = self.state.lock().durable;
        let cur = self.cfg.path(&logfmt::current_name(&self.cfg.prefix));
        if generation != p.generation {
            return Ok(CurrentLogRead {
                bytes: Vec::new(),
                durable_end: durable,
                closed: generation < p.generation,
                current: p.generation,
            });
        }
        // The flusher updates the durable end after it rolled the file: while it still names
        // an earlier generation, the new file holds its synced header only.
        let end = if durable.generation() == generation {
            durable.offset() as u64
        } else {
            LOG_HEADER_SIZE as u64
        };
        let durable_end = Lsn::new(generation, end as u32);
        let mut bytes = Vec::new();
        if from < end {
            let n = ((end - from) as usize).min(max);
            bytes.resize(n, 0);
            p.file.read_exact_at(&mut bytes, from).at(&cur)?;
        }
        Ok(CurrentLogRead { bytes, durable_end, closed: false, current: generation })
    }

    /// Waits until the durable end is past `lsn`, or in another generation than `lsn`'s, or
    /// `timeout` passed; returns the durable end. Woken by the flusher, no polling.
    pub fn wait_durable_beyond(&self, lsn: Lsn, timeout: Duration) -> Lsn {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock();
        while s.durable <= lsn && s.durable.generation() == lsn.generation() {
            if self.cond.wait_until(&mut s, deadline).timed_out() {
                break;
            }
        }
        s.durable
    }

    /// The logical end of the log (next append position).
    pub fn end(&self) -> Lsn {
        let s = self.state.lock();
        Lsn::new(s.generation, s.offset)
    }

    /// Everything before this position is durable.
    pub fn durable(&self) -> Lsn {
        self.state.lock().durable
    }

    /// The current generation (logical).
    pub fn generation(&self) -> u32 {
        self.state.lock().generation
    }

    /// Whether a roll had to use a reserve log.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces the attached-database list written into new generation headers.
    pub fn set_attached(&self, attached: Vec<AttachedDb>) {
        self.state.lock().attached = attached;
    }

    /// Appends records; returns (LSN of the first, end after the last). `Txn` records get the
    /// first record's LSN as their `begin`.
    pub fn append(&self, mut records: Vec<Record>) -> Result<(Lsn, Lsn)> {
        let mut s = self.state.lock();
        if let Some(e) = &s.error {
            return Err(EngineError::LogWriterFailed {
                path: self.cfg.path(&logfmt::current_name(&self.cfg.prefix)),
                generation: s.generation,
                why: e.clone(),
            });
        }
        let mut first = None;
        for rec in records.iter_mut() {
            let len = rec.encoded_len();
            if len > self.cfg.max_record() {
                return Err(EngineError::TooLarge {
                    what: "log record",
                    len,
                    max: self.cfg.max_record(),
                });
            }
            if s.offset as usize + len + FRAME > self.cfg.file_size as usize {
                let at = Lsn::new(s.generation, s.offset);
                s.pending.push((at, Record::EndOfGeneration.encode(at)));
                s.generation += 1;
                s.offset = LOG_HEADER_SIZE;
            }
            let at = Lsn::new(s.generation, s.offset);
            let begin = *first.get_or_insert(at);
            if let Record::Txn { begin: b, .. } = rec {
                *b = begin;
            }
            let bytes = rec.encode(at);
            debug_assert_eq!(bytes.len(), len);
            s.offset += len as u32;
            s.pending.push((at, bytes));
        }
        let end = Lsn::new(s.generation, s.offset);
        Ok((first.unwrap_or(end), end))
    }

    /// Closes the current generation now (even if empty of records) and makes the next one
    /// current on disk; returns the generation closed.
    pub fn roll(&self) -> Result<u32> {
        let closed = {
            let mut s = self.state.lock();
            let at = Lsn::new(s.generation, s.offset);
            s.pending.push((at, Record::EndOfGeneration.encode(at)));
            s.generation += 1;
            s.offset = LOG_HEADER_SIZE;
            s.generation - 1
        };
        self.flush_to(self.end())?;
        Ok(closed)
    }

    /// Holds (true) or releases (false) log flushes.
    pub fn set_frozen(&self, frozen: bool) {
        let mut s = self.state.lock();
        s.frozen = frozen;
        self.cond.notify_all();
    }

    /// Whether flushes are held.
    pub fn frozen(&self) -> bool {
        self.state.lock().frozen
    }

    /// Waits until everything before `target` is durable, flushing as the group's flusher if
    /// nobody else is.
    pub fn flush_to(&self, target: Lsn) -> Result<()> {
        self.flush(target, true)
    }

    /// Flushes what is pending unless frozen or another flush is running (the lazy writer).
    pub fn try_flush(&self) -> Result<()> {
        let target = self.end();
        self.flush(target, false)
    }

    fn flush(&self, target: Lsn, wait: bool) -> Result<()> {
        let mut s = self.state.lock();
        loop {
            if s.durable >= target {
                return Ok(());
            }
            if !wait && (s.frozen || s.flushing) {
                return Ok(());
            }
            if let Some(e) = &s.error {
                return Err(EngineError::LogWriterFailed {
                    path: self.cfg.path(&logfmt::current_name(&self.cfg.prefix)),
                    generation: s.generation,
                    why: e.clone(),
                });
            }
            if s.frozen || s.flushing {
                self.cond.wait(&mut s);
                continue;
            }
            s.flushing = true;
            let batch = std::mem::take(&mut s.pending);
            let end = Lsn::new(s.generation, s.offset);
            let attached = s.attached.clone();
            drop(s);
            let r = self.write_batch(&batch, end, &attached);
            s = self.state.lock();
            s.flushing = false;
            match r {
                Ok(()) => s.durable = end,
                Err(e) => {
                    let mut rest = std::mem::take(&mut s.pending);
                    s.pending = batch;
                    s.pending.append(&mut rest);
                    self.cond.notify_all();
                    if !e.is_storage_full() {
                        s.error = Some(e.to_string());
                    }
                    return Err(e);
                }
            }
            self.cond.notify_all();
        }
    }

    fn write_batch(
        &self,
        batch: &[(Lsn, Vec<u8>)],
        end: Lsn,
        attached: &[AttachedDb],
    ) -> Result<()> {
        let mut p = self.phys.lock();
        let cur = self.cfg.path(&logfmt::current_name(&self.cfg.prefix));
        let mut run: Vec<u8> = Vec::new();
        let mut run_at: Option<Lsn> = None;
        for (lsn, bytes) in batch {
            if lsn.generation() != p.generation {
                if let Some(at) = run_at.take() {
                    p.file.write_at(&run, at.offset() as u64).at(&cur)?;
                    run.clear();
                }
                self.roll_physical(&mut p, lsn.generation(), attached)?;
            }
            if run_at.is_none() {
                run_at = Some(*lsn);
            }
            run.extend_from_slice(bytes);
        }
        if let Some(at) = run_at {
            p.file.write_at(&run, at.offset() as u64).at(&cur)?;
        }
        if end.generation() != p.generation {
            self.roll_physical(&mut p, end.generation(), attached)?;
        }
        // fdatasync: the file was written whole and synced when prepared, so appends land in
        // allocated blocks within its length and only their data needs to reach the disk.
        p.file.sync_data().at(&cur)
    }

    fn roll_physical(&self, p: &mut Phys, generation: u32, attached: &[AttachedDb]) -> Result<()> {
        let cfg = &self.cfg;
        let cur = cfg.path(&logfmt::current_name(&cfg.prefix));
        p.file.sync().at(&cur)?;
        let header = LogHeader {
            generation,
            signature: cfg.signature,
            created: now_secs(),
            previous_created: p.created,
            file_size: cfg.file_size,
            attached: attached.to_vec(),
        };
        let (file, used_reserve) = prepare_generation(cfg, &header)?;
        if used_reserve {
            self.disk_full.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        let closed = cfg.path(&logfmt::generation_name(&cfg.prefix, p.generation));
        cfg.fs.rename(&cur, &closed).at(&closed)?;
        let tmp = cfg.path(&logfmt::tmp_name(&cfg.prefix));
        cfg.fs.rename(&tmp, &cur).at(&cur)?;
        cfg.fs.sync_dir(&cfg.dir).at(&cfg.dir)?;
        tracing::debug!(prefix = %cfg.prefix, generation, "log rolled");
        *p = Phys { file, generation, created: header.created };
        Ok(())
    }

    /// Syncs and releases the current file (shutdown).
    pub fn close(&self) -> Result<()> {
        let p = self.phys.lock();
        p.file.sync().at(&self.cfg.path(&logfmt::current_name(&self.cfg.prefix)))
    }
}

/// Writes `E00tmp.log` for `header`, pre-allocated and synced; on storage-full uses a reserve
/// log. Returns the open file and whether a reserve was used.
fn prepare_generation(cfg: &LogConfig, header: &LogHeader) -> Result<(FileRef, bool)> {
    let tmp = cfg.path(&logfmt::tmp_name(&cfg.prefix));
    let fresh = (|| -> std::io::Result<FileRef> {
        let f = cfg.fs.open(&tmp, OpenMode::Create)?;
        f.set_len(0)?;
        // Written, not just extended: a sparse file reserves no space, and appends into
        // allocated blocks make each commit's fsync cheaper (no block allocation to journal).
        let mut image = vec![0u8; cfg.file_size as usize];
        image[..LOG_HEADER_SIZE as usize].copy_from_slice(&header.encode());
        f.write_at(&image, 0)?;
        f.sync()?;
        Ok(f)
    })();
    match fresh {
        Ok(f) => Ok((f, false)),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            let _ = cfg.fs.remove_file(&tmp);
            for name in logfmt::reserve_names(&cfg.prefix) {
                let res = cfg.path(&name);
                if !cfg.fs.exists(&res).at(&res)? {
                    continue;
                }
                tracing::warn!(prefix = %cfg.prefix, reserve = %name, "disk full: using a reserve log");
                cfg.fs.rename(&res, &tmp).at(&tmp)?;
                let f = cfg.fs.open(&tmp, OpenMode::ReadWrite).at(&tmp)?;
                // Zero the record area start so stale bytes cannot look like records.
                let mut block = header.encode();
                block.resize(LOG_HEADER_SIZE as usize + 64, 0);
                f.write_at(&block, 0).at(&tmp)?;
                f.sync().at(&tmp)?;
                return Ok((f, true));
            }
            Err(EngineError::io(&tmp, e))
        }
        Err(e) => Err(EngineError::io(&tmp, e)),
    }
}

/// Creates the reserve logs that are missing.
pub(crate) fn ensure_reserves(cfg: &LogConfig) -> Result<()> {
    for name in logfmt::reserve_names(&cfg.prefix) {
        let p = cfg.path(&name);
        if cfg.fs.exists(&p).at(&p)? {
            continue;
        }
        let f = cfg.fs.open(&p, OpenMode::Create).at(&p)?;
        // Zeros written for real: the point of a reserve is space that is already allocated.
        f.write_at(&vec![0u8; cfg.file_size as usize], 0).at(&p)?;
        f.sync().at(&p)?;
    }
    cfg.fs.sync_dir(&cfg.dir).at(&cfg.dir)
}

/// Seals generation `generation` in `path` at `end` with an end-of-generation record (so a
/// torn tail past it is never read) and syncs it.
pub(crate) fn seal(fs: &FsRef, path: &Path, generation: u32, end: u32) -> Result<()> {
    let f = fs.open(path, OpenMode::ReadWrite).at(path)?;
    let at = Lsn::new(generation, end);
    let mut bytes = Record::EndOfGeneration.encode(at);
    bytes.resize(bytes.len() + FRAME, 0);
    let len = f.len().at(path)?;
    let n = bytes.len().min((len.saturating_sub(end as u64)) as usize);
    if n > 0 {
        // Never written past the end: that would only grow the file.
        f.write_at(&bytes[..n], end as u64).at(path)?;
    }
    f.sync().at(path)
}
