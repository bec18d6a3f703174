//! Writing one backup set: chunking, hashing, compressing and packing files, then publishing.
//!
//! Each file is copied through a small pipeline so that both cores work: the calling thread
//! reads chunks from the source in order, worker threads hash them and compress the ones the
//! repository does not hold yet, and a collector appends results to the pack in order and
//! derives the file's identity from the chunk ids (each byte is hashed once, by the workers).
//! Reading, compressing and writing overlap.
//!
//! Under [`Compression::Auto`] each worker chooses a new chunk's codec from the copy's pace
//! ([`Pace`]): while the workers have lately been busy nearly all the time (they are the
//! limit) the fast one, lz4; while they wait for the reader or the collector, zstd, which
//! costs more CPU and stores less. A chunk that does not compress is stored raw, and after
//! one such chunk a worker probes the next with lz4 (cheap on such content) before spending
//! zstd on it.
//!
//! A caller may pass a [`ChunkCheck`] run by the workers on every chunk as it passes: the
//! requester checks database pages there, in the buffers the copy already holds, rather than
//! reading the file a second time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;
use volume::fs::File;
use vss::BackupType;

use super::Repository;
use super::codec::{Codec, Compression, Compressor};
use super::error::{RepoError, Result};
use super::manifest::{
    BackupSet, ChunkListHasher, ChunkRef, FileEntry, FileRole, LogRange, MANIFEST_FORMAT,
};
use super::pack::{ChunkLoc, PackWriter};

/// A pack is sealed and a new one started past this size. Packs are built in memory and
/// stored whole on a thread of their own while the copy goes on, so only the last one's store
/// is waited for: smaller packs make that wait short and hold less memory, at the cost of more
/// objects (restic's default is 16 MiB).
const PACK_TARGET: u64 = 32 << 20;

/// At most this many full packs are being stored at once; the copy waits for the oldest past
/// it, so that a slow storage holds back the copy rather than filling memory.
const MAX_STORING: usize = 2;

/// A full pack being synced and indexed on its own thread.
type Sealing = thread::JoinHandle<Result<Vec<(blake3::Hash, ChunkLoc)>>>;

/// A check of a file's content made while it is copied, on the copy's worker threads: given
/// a chunk's offset in the file and its bytes, an error (what is wrong, naming the place)
/// stops the copy with [`RepoError::Rejected`]. Chunks of one file reach it in any order.
pub type ChunkCheck<'a> = dyn Fn(u64, &[u8]) -> std::result::Result<(), String> + Sync + 'a;

/// Everything in a manifest except the files, which the writer collects.
#[derive(Debug, Clone)]
pub struct SetMeta {
    pub node: String,
    pub backup_type: BackupType,
    pub storage_group: String,
    pub job_id: Option<Uuid>,
    pub base_set: Option<Uuid>,
    pub log_range: Option<LogRange>,
    pub writer_metadata: serde_json::Value,
    pub components: serde_json::Value,
    pub database_headers: serde_json::Value,
}

impl SetMeta {
    /// Everything of `set` but its files: what a copy of it publishes.
    pub fn of(set: &BackupSet) -> Self {
        Self {
            node: set.node.clone(),
            backup_type: set.backup_type,
            storage_group: set.storage_group.clone(),
            job_id: set.job_id,
            base_set: set.base_set,
            log_range: set.log_range,
            writer_metadata: set.writer_metadata.clone(),
            components: set.components.clone(),
            database_headers: set.database_headers.clone(),
        }
    }
}

/// A full backup of no named node or storage group with nothing but its files: what tests
/// that write sets by hand start from.
impl Default for SetMeta {
    fn default() -> Self {
        Self {
            node: String::new(),
            backup_type: BackupType::Full,
            storage_group: String::new(),
            job_id: None,
            base_set: None,
            log_range: None,
            writer_metadata: serde_json::Value::Null,
            components: serde_json::Value::Null,
            database_headers: serde_json::Value::Null,
        }
    }
}

/// A backup set being written. Dropped without [`SetWriter::publish`], it leaves no set.
pub struct SetWriter<'r> {
    repo: &'r Repository,
    id: Uuid,
    pack: Option<PackWriter>,
    /// Chunks stored by this writer, not yet in the shared index.
    pending: HashMap<blake3::Hash, ChunkLoc>,
    /// Full packs being sealed in the background.
    sealing: Vec<Sealing>,
    /// A pack is sealed past this many bytes ([`PACK_TARGET`]; tests make it small).
    pack_target: u64,
    files: Vec<FileEntry>,
    stored_bytes: u64,
    read_bytes: u64,
    /// The creation time the set keeps (a set copied from another repository keeps its own);
    /// else the time it is published.
    created_unix_ms: Option<u64>,
}

struct Work {
    seq: u64,
    off: u64,
    data: Vec<u8>,
}

struct Done {
    seq: u64,
    hash: blake3::Hash,
    data: Vec<u8>,
    /// The bytes to store, when the chunk is new and they are not `data` as it is: compressed
    /// (when that paid) and sealed by the repository's [`super::Crypto`].
    stored: Option<Vec<u8>>,
    /// How the stored bytes are encoded.
    codec: Codec,
    /// Whether the repository already held the chunk when it was hashed.
    known: bool,
    /// What the caller's check found wrong with the chunk.
    rejected: Option<String>,
}

/// How busy the copy's workers have been lately, for [`Compression::Auto`]: the share of
/// their time spent on chunks (hashing, checking, compressing) rather than waiting for the
/// reader to hand one over or for the collector to take one, as a moving average over the
/// last chunks, in parts of [`Pace::WHOLE`].
///
/// Why an average of time and not the queues' depth at one instant: a reader served by
/// read-ahead hands chunks over in bursts, so a deep queue at one moment does not mean the
/// workers are the limit, and choosing lz4 then only stores more for the disk to write.
#[derive(Default)]
struct Pace {
    busy: AtomicU32,
}

impl Pace {
    const WHOLE: u32 = 1024;
    /// Busy at least this share of the time: the workers are the copy's limit. At 90% a
    /// 2 GiB copy on a 2-core machine took lz4 for over half its chunks (stored 1.68x zstd's
    /// size for 8% more speed); lz4 is for when the workers leave the disk idle, not for the
    /// odd pause.
    const LIMIT: u32 = Self::WHOLE * 19 / 20;

    /// Whether the workers have lately been the copy's limit.
    fn workers_are_the_limit(&self) -> bool {
        self.busy.load(Ordering::Relaxed) >= Self::LIMIT
    }

    /// Folds one chunk into the average: `work` spent on it, `waited` for it and after it.
    fn record(&self, work: Duration, waited: Duration) {
        let total = (work + waited).as_nanos().max(1);
        let share = (work.as_nanos() * u128::from(Self::WHOLE) / total) as u32;
        // Each chunk weighs 1/8: the average follows a change within a few dozen chunks.
        let _ = self
            .busy
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b - b / 8 + share / 8));
    }
}

/// A new chunk's codec and stored bytes under `setting` (`None`: stored raw). `cpu_bound`
/// and `last_raw` (the worker's previous chunk did not compress) steer `auto`.
fn pack_chunk(
    c: &mut Compressor,
    setting: Compression,
    cpu_bound: bool,
    last_raw: bool,
    data: &[u8],
) -> (Codec, Option<Vec<u8>>) {
    let codec = match setting {
        Compression::None => return (Codec::Raw, None),
        Compression::Lz4 => Codec::Lz4,
        Compression::Zstd(_) => Codec::Zstd,
        Compression::Auto if cpu_bound => Codec::Lz4,
        Compression::Auto if last_raw => {
            // Content that did not compress tends to go on not compressing: lz4 finds out
            // for a fraction of zstd's cost, and only a chunk that compresses gets zstd.
            if c.compress(Codec::Lz4, data).is_none() {
                return (Codec::Raw, None);
            }
            Codec::Zstd
        }
        Compression::Auto => Codec::Zstd,
    };
    match c.compress(codec, data) {
        Some(packed) => (codec, Some(packed)),
        None => (Codec::Raw, None),
    }
}

impl<'r> SetWriter<'r> {
    pub(crate) fn new(repo: &'r Repository) -> Self {
        Self {
            repo,
            id: Uuid::new_v4(),
            pack: None,
            pending: HashMap::new(),
            sealing: Vec::new(),
            pack_target: PACK_TARGET,
            files: Vec::new(),
            stored_bytes: 0,
            read_bytes: 0,
            created_unix_ms: None,
        }
    }

    /// A writer of a set that is `set` brought from another repository: same id and creation
    /// time, so that copying twice finds it there and a chain keeps its order.
    pub(crate) fn copy_of(repo: &'r Repository, set: &BackupSet) -> Self {
        let mut w = Self::new(repo);
        w.id = set.id;
        w.created_unix_ms = Some(set.created_unix_ms);
        w
    }

    /// Seals packs past `bytes` instead of [`PACK_TARGET`]: tests (of every backend) use small
    /// packs so that several are stored while a small copy goes on.
    pub fn with_pack_target(mut self, bytes: u64) -> Self {
        self.pack_target = bytes;
        self
    }

    /// The id the set will have.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Bytes this set has written into packs so far (new chunks only, as stored).
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// Bytes read from sources so far.
    pub fn read_bytes(&self) -> u64 {
        self.read_bytes
    }

    /// Files added so far.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Copies `src` into the set as `path` (`<volume label>/<path on the volume>`).
    /// `progress` receives the bytes of this file copied so far.
    pub fn add_file(
        &mut self,
        path: &str,
        role: FileRole,
        component: &str,
        src: &dyn File,
        progress: &dyn Fn(u64),
    ) -> Result<&FileEntry> {
        self.add_file_checked(path, role, component, src, None, None, progress)
    }

    /// [`SetWriter::add_file`], recording `mode` (the file's permission bits, when known) in
    /// the manifest and running `check` (when given) on every chunk as it passes.
    #[allow(clippy::too_many_arguments)] // Each is one fact about the file; a struct adds nothing.
    pub fn add_file_checked(
        &mut self,
        path: &str,
        role: FileRole,
        component: &str,
        src: &dyn File,
        mode: Option<u32>,
        check: Option<&ChunkCheck>,
        progress: &dyn Fn(u64),
    ) -> Result<&FileEntry> {
        let size = src.len().map_err(|source| RepoError::Source { file: path.into(), source })?;
        let chunk = self.repo.config.chunk_size as u64;
        let setting = self.repo.config.compression_setting();
        let level = match setting {
            Compression::Zstd(level) => level,
            _ => self.repo.config.zstd_level,
        };
        let pace = Pace::default();
        let crypto = &self.repo.crypto;
        let plain = matches!(crypto, super::Crypto::Plain);
        let workers = thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 8);
        let in_flight: Mutex<HashSet<blake3::Hash>> = Mutex::default();
        // Set when the collector fails: the reader stops reading, and the collector keeps
        // draining results so that no thread ever blocks on a full channel.
        let cancel = AtomicBool::new(false);
        let repo = self.repo;

        let mut identity = ChunkListHasher::new();
        let mut chunks = Vec::new();
        let mut copied = 0u64;
        let (work_tx, work_rx) = mpsc::sync_channel::<Work>(workers * 2);
        // Shared by the workers and dropped with the last of them (whether it returns or
        // panics), so that the reader's next send fails instead of waiting for ever.
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::sync_channel::<Done>(workers * 2);
        // Chunk buffers go back to the reader once stored, so that it reads into memory that
        // is already mapped rather than zeroing a fresh megabyte for every chunk.
        let (free_tx, free_rx) = mpsc::sync_channel::<Vec<u8>>(workers * 4 + 2);
        let result: Result<()> = thread::scope(|s| {
            // Owned by this closure: a panic here (a pack store's, carried on by
            // `store_chunk`) drops it while unwinding, so the workers' sends fail and they end,
            // which `thread::scope` waits for before it carries the panic on.
            let done_rx = done_rx;
            for i in 0..workers {
                let done_tx = done_tx.clone();
                let (work_rx, in_flight, pace) = (Arc::clone(&work_rx), &in_flight, &pace);
                // Named so that `top -H` and profilers tell the copy's threads apart.
                let worker = thread::Builder::new().name(format!("backup-pack-{i}"));
                worker
                    .spawn_scoped(s, move || {
                        // One compressor per worker, reused for every chunk.
                        let mut compressor = Compressor::new(level);
                        let mut last_raw = false;
                        let mut idle_since = Instant::now();
                        loop {
                            let Ok(w) = work_rx.lock().recv() else { return };
                            let started = Instant::now();
                            let cpu_bound = pace.workers_are_the_limit();
                            let rejected = check.and_then(|c| c(w.off, &w.data).err());
                            let hash = crypto.chunk_id(&w.data);
                            let known = rejected.is_some()
                                || repo.lookup(&hash).is_some()
                                || !in_flight.lock().insert(hash);
                            let (codec, packed) = if known {
                                (Codec::Raw, None)
                            } else {
                                let (codec, packed) = pack_chunk(
                                    &mut compressor,
                                    setting,
                                    cpu_bound,
                                    last_raw,
                                    &w.data,
                                );
                                last_raw = packed.is_none();
                                (codec, packed)
                            };
                            let stored = match packed {
                                Some(c) => Some(crypto.seal(c)),
                                None if known || plain => None,
                                None => Some(crypto.seal(w.data.clone())),
                            };
                            let done = Done {
                                seq: w.seq,
                                hash,
                                data: w.data,
                                stored,
                                codec,
                                known,
                                rejected,
                            };
                            let finished = Instant::now();
                            if done_tx.send(done).is_err() {
                                return;
                            }
                            let now = Instant::now();
                            pace.record(
                                finished - started,
                                (started - idle_since) + (now - finished),
                            );
                            idle_since = now;
                        }
                    })
                    .map_err(|e| RepoError::Source { file: path.into(), source: e })?;
            }
            drop(done_tx);
            drop(work_rx);
            // The reader: this scope's own thread feeds the workers from a second thread so
            // that the collector below can run here.
            let cancel = &cancel;
            let reader = thread::Builder::new().name("backup-read".into());
            let reader = reader.spawn_scoped(s, move || -> std::io::Result<()> {
                let mut off = 0u64;
                let mut seq = 0u64;
                while off < size && !cancel.load(Ordering::Relaxed) {
                    let n = chunk.min(size - off) as usize;
                    let mut data = free_rx.try_recv().unwrap_or_default();
                    data.resize(n, 0);
                    src.read_exact_at(&mut data, off)?;
                    if work_tx.send(Work { seq, off, data }).is_err() {
                        break;
                    }
                    off += n as u64;
                    seq += 1;
                }
                Ok(())
            });
            let reader = reader.map_err(|e| RepoError::Source { file: path.into(), source: e })?;
            let mut next = 0u64;
            let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
            let mut failure = None;
            for done in done_rx.iter() {
                waiting.insert(done.seq, done);
                while let Some(d) = waiting.remove(&next) {
                    next += 1;
                    if failure.is_some() {
                        continue;
                    }
                    if let Some(why) = d.rejected {
                        failure = Some(RepoError::Rejected { file: path.into(), why });
                        cancel.store(true, Ordering::Relaxed);
                        continue;
                    }
                    identity.push(&d.hash, d.data.len() as u32);
                    copied += d.data.len() as u64;
                    chunks.push(ChunkRef {
                        hash: d.hash.to_hex().to_string(),
                        len: d.data.len() as u32,
                    });
                    if let Err(e) = self.store_chunk(&d) {
                        failure = Some(e);
                        cancel.store(true, Ordering::Relaxed);
                        continue;
                    }
                    let _ = free_tx.try_send(d.data);
                    progress(copied);
                }
            }
            drop(done_rx);
            // A panic on the reading thread is a bug: carry it on here.
            let read = reader.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            if let Some(e) = failure {
                return Err(e);
            }
            read.map_err(|source| RepoError::Source { file: path.into(), source })
        });
        result?;
        if copied != size {
            return Err(RepoError::Source {
                file: path.into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("read {copied} of {size} bytes"),
                ),
            });
        }
        self.read_bytes += size;
        let added = self.files.len();
        self.files.push(FileEntry {
            path: path.into(),
            role,
            component: component.into(),
            size,
            blake3: String::new(),
            chunks,
            chunks_blake3: Some(identity.finish(size)),
            mode: mode.map(|m| m & 0o7777),
        });
        Ok(&self.files[added])
    }

    fn store_chunk(&mut self, d: &Done) -> Result<()> {
        if d.known || self.pending.contains_key(&d.hash) || self.repo.lookup(&d.hash).is_some() {
            return Ok(());
        }
        if self.pack.as_ref().is_some_and(|p| p.len() >= self.pack_target) {
            self.seal_in_background()?;
        }
        // Room for the chunk that crosses the target, as stored: no reallocation of the pack.
        let room = self.pack_target as usize
            + self.repo.config.chunk_size as usize
            + self.repo.crypto.overhead();
        let pack = self.pack.get_or_insert_with(|| PackWriter::new(room));
        let raw_len = d.data.len() as u32;
        let bytes = d.stored.as_deref().unwrap_or(&d.data);
        let loc = pack.append(d.hash, bytes, raw_len, d.codec);
        self.stored_bytes += loc.stored_len as u64;
        self.pending.insert(d.hash, loc);
        Ok(())
    }

    /// Makes every chunk written so far durable and readable (indexed), without publishing the
    /// set: the requester verifies the stored files between this and [`SetWriter::publish`].
    pub fn seal(&mut self) -> Result<()> {
        self.seal_pack()
    }

    /// Hands the current pack to a thread that stores and indexes it, so that the copy does
    /// not wait for the storage (unless [`MAX_STORING`] are already on their way). The first
    /// failure of a finished one is reported here.
    fn seal_in_background(&mut self) -> Result<()> {
        self.finish_sealed(false)?;
        while self.sealing.len() >= MAX_STORING {
            let oldest = self.sealing.remove(0);
            let entries = self.join_sealing(oldest)?;
            self.index(entries);
        }
        if let Some(p) = self.pack.take() {
            let (backend, crypto) = (self.repo.backend.clone(), self.repo.crypto.clone());
            let sealing = thread::Builder::new()
                .name("backup-seal".into())
                .spawn(move || p.seal(backend.as_ref(), &crypto))
                .map_err(|source| RepoError::Io {
                    op: "starting a thread to store a pack",
                    path: self.repo.location(),
                    source,
                })?;
            self.sealing.push(sealing);
        }
        Ok(())
    }

    /// Indexes the packs sealed in the background: the finished ones, or (`wait`) all.
    fn finish_sealed(&mut self, wait: bool) -> Result<()> {
        let mut first_error = None;
        for h in std::mem::take(&mut self.sealing) {
            if !wait && !h.is_finished() {
                self.sealing.push(h);
                continue;
            }
            match self.join_sealing(h) {
                Ok(entries) => self.index(entries),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Waits for a pack's store. A panic on its thread (a bug, in a backend say) fails this
    /// set like a failed store rather than carrying the panic on: carried on, it would unwind
    /// through the copy's scoped threads and this writer's `Drop` (which joins the other
    /// stores, and may meet a second panic there, aborting the process).
    fn join_sealing(&self, h: Sealing) -> Result<Vec<(blake3::Hash, ChunkLoc)>> {
        h.join().unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(RepoError::Io {
                op: "storing a pack (its thread panicked), in",
                path: self.repo.location(),
                source: std::io::Error::other(why),
            })
        })
    }

    /// Moves sealed chunks from this writer's pending ones to the shared index.
    fn index(&mut self, entries: Vec<(blake3::Hash, ChunkLoc)>) {
        for (h, _) in &entries {
            self.pending.remove(h);
        }
        self.repo.add_to_index(entries);
    }

    /// Seals the current pack and waits for every pack sealing in the background.
    fn seal_pack(&mut self) -> Result<()> {
        let last = self.pack.take().map(|p| p.seal(self.repo.backend.as_ref(), &self.repo.crypto));
        self.finish_sealed(true)?;
        if let Some(entries) = last {
            self.index(entries?);
        }
        Ok(())
    }

    /// Makes every chunk durable, then publishes the manifest atomically. Only now does the
    /// set exist.
    pub fn publish(mut self, meta: SetMeta) -> Result<BackupSet> {
        self.seal_pack()?;
        // A pack whose store failed (reported once, to the call that found it) leaves its
        // chunks unindexed: a manifest naming them would name chunks the repository lacks.
        if !self.pending.is_empty() {
            return Err(RepoError::Io {
                op: "publishing a set some of whose chunks were not stored, in",
                path: self.repo.location(),
                source: std::io::Error::other(format!(
                    "{} chunks of set {} are in no stored pack (an earlier store failed)",
                    self.pending.len(),
                    self.id
                )),
            });
        }
        let set = BackupSet {
            format: MANIFEST_FORMAT,
            id: self.id,
            created_unix_ms: self.created_unix_ms.unwrap_or_else(events::now_ms),
            node: meta.node,
            backup_type: meta.backup_type,
            storage_group: meta.storage_group,
            job_id: meta.job_id,
            base_set: meta.base_set,
            log_range: meta.log_range,
            writer_metadata: meta.writer_metadata,
            components: meta.components,
            database_headers: meta.database_headers,
            files: std::mem::take(&mut self.files),
        };
        self.repo.upgrade_format()?;
        self.repo.put_manifest(&set, "publishing")?;
        Ok(set)
    }
}

impl Drop for SetWriter<'_> {
    /// An unpublished set leaves no set. Its unsealed pack (in memory) is dropped; packs
    /// already stored are indexed like any sealed pack (a later backup may reuse their chunks).
    fn drop(&mut self) {
        drop(self.pack.take());
        if let Err(e) = self.finish_sealed(true) {
            tracing::warn!(set = %self.id, error = %e, "sealing a pack of an unpublished set failed");
        }
    }
}
