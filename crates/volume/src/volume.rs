//! [`Volume`]: a host directory behind the copy-on-write filter.
//!
//! The live view ([`FileSystem`] on [`Volume`]) sends every mutation through the filter:
//! writes and truncations first preserve the old content of the blocks a live snapshot still
//! needs ([`crate::cow`]); removals and renames first park the file under the hidden directory
//! (a hard link, `O(1)`) so that every snapshot can still reach its old bytes by identity.
//! All of it happens under the volume's write barrier (shared), which the flush-and-hold of a
//! snapshot commit takes exclusively.
//!
//! Hidden layout (`<root>/.shadowcopy/`, never listed and never reachable through the volume):
//! `volume.json` (label, GUID, block size, shadow storage), `lock` (one opener at a time),
//! `snapshots/<seq>-<id>/meta.json` (persistent snapshots' tables), `links/<dev>-<ino>` (parked
//! files) and, when shadow storage is on this volume, `diff/<volume guid>/<seq>-<id>.log`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cow::{Change, FileState};
use crate::diff::{Appended, DiffArea};
use crate::error::{Result, VolumeError};
use crate::events::{DeleteReason, EventHub, VolumeEvent};
use crate::file_id::FileId;
use crate::fs::{DirEntry, File, FileRef, FileSystem, Metadata, OpenMode, normalize};
use crate::host::{host_metadata, list_host_dir, open_host, sync_host_dir};
use crate::snapshot::{self, ShadowCopyInfo, Snapshot};
use crate::table::FileTable;
use crate::view::SnapshotView;

/// Name of the hidden metadata directory at the root of every volume.
pub const HIDDEN: &str = ".shadowcopy";
/// Default copy-on-write block size (the reference system's 16 KiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 16 * 1024;
/// Snapshots a volume may hold at once.
pub const MAX_SNAPSHOTS: usize = 512;
/// Share of the shadow-storage maximum past which a warning event is sent.
const NEAR_FULL_PERCENT: u64 = 90;

/// Options for creating a volume.
#[derive(Debug, Clone)]
pub struct VolumeOptions {
    /// Human name, e.g. `logs` or `db`.
    pub label: String,
    /// Copy-on-write block size: a power of two between 512 B and 1 MiB.
    pub block_size: u64,
}

impl VolumeOptions {
    /// A label with the default block size.
    pub fn new(label: impl Into<String>) -> Self {
        VolumeOptions { label: label.into(), block_size: DEFAULT_BLOCK_SIZE }
    }
}

/// Where a volume's diff areas live and how large they may grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageConfig {
    /// GUID of the volume that holds the diff areas.
    pub on_volume: Uuid,
    /// Host root of that volume.
    pub on_root: PathBuf,
    /// Maximum bytes; `None` is unbounded.
    pub max_bytes: Option<u64>,
}

/// Shadow storage as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowStorageInfo {
    pub for_volume: Uuid,
    pub for_label: String,
    pub on_volume: Uuid,
    pub on_root: PathBuf,
    pub used_bytes: u64,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VolumeConfig {
    label: String,
    guid: Uuid,
    block_size: u64,
    storage: StorageConfig,
}

/// A shadow volume. Cheap to clone (shared inner state).
#[derive(Debug, Clone)]
pub struct Volume {
    pub(crate) inner: Arc<VolumeInner>,
}

/// State shared by a volume, its open files and its snapshot views.
#[derive(Debug)]
pub struct VolumeInner {
    pub(crate) root: PathBuf,
    hidden: PathBuf,
    label: String,
    guid: Uuid,
    pub(crate) block_size: u64,
    /// Shared by every mutation; exclusive during the flush-and-hold of a commit.
    pub(crate) barrier: RwLock<()>,
    /// Mutations completed through the volume; see [`VolumeInner::mutation`].
    mutations: AtomicU64,
    /// Serializes namespace changes (park-then-rename must not interleave).
    ns: Mutex<()>,
    /// Live snapshots, oldest first.
    snaps: RwLock<Vec<Arc<Snapshot>>>,
    epoch: AtomicU64,
    next_seq: AtomicU64,
    files: Mutex<HashMap<FileId, Weak<FileState>>>,
    linked: Mutex<HashSet<FileId>>,
    storage: Mutex<StorageConfig>,
    /// Serializes overflow handling.
    room: Mutex<()>,
    used: AtomicU64,
    /// Blocks copied on write into a diff area since the volume was opened (for metrics).
    preserved_blocks: AtomicU64,
    near_full: AtomicBool,
    pub(crate) events: EventHub,
    _lock: fs::File,
}

fn io_at(root: &Path) -> impl Fn(io::Error) -> VolumeError + '_ {
    move |e| VolumeError::io(root, e)
}

impl Volume {
    /// Creates a new volume at host directory `root` (created if missing).
    pub fn create(root: impl Into<PathBuf>, opts: VolumeOptions) -> Result<Volume> {
        let root: PathBuf = root.into();
        let bs = opts.block_size;
        if !bs.is_power_of_two() || !(512..=1 << 20).contains(&bs) {
            return Err(VolumeError::BadBlockSize(bs));
        }
        let hidden = root.join(HIDDEN);
        let cfg_path = hidden.join("volume.json");
        if cfg_path.exists() {
            return Err(VolumeError::io(
                &root,
                io::Error::new(io::ErrorKind::AlreadyExists, "a volume already exists here"),
            ));
        }
        fs::create_dir_all(&hidden).map_err(io_at(&root))?;
        let guid = Uuid::new_v4();
        let cfg = VolumeConfig {
            label: opts.label,
            guid,
            block_size: bs,
            storage: StorageConfig { on_volume: guid, on_root: root.clone(), max_bytes: None },
        };
        write_config(&hidden, &cfg).map_err(io_at(&root))?;
        Self::open(root)
    }

    /// Opens the volume at `root`, or creates it with `opts`.
    pub fn open_or_create(root: impl Into<PathBuf>, opts: VolumeOptions) -> Result<Volume> {
        let root: PathBuf = root.into();
        if root.join(HIDDEN).join("volume.json").exists() {
            Self::open(root)
        } else {
            Self::create(root, opts)
        }
    }

    /// Opens an existing volume: recovers persistent snapshots (rebuilding diff-area indexes
    /// and cutting torn log tails), and removes non-persistent and half-committed ones, whose
    /// preserved blocks are first handed to the next older snapshot that may read through them.
    pub fn open(root: impl Into<PathBuf>) -> Result<Volume> {
        let root: PathBuf = root.into();
        let root_c = root.clone();
        let err = io_at(&root_c);
        let hidden = root.join(HIDDEN);
        let cfg_path = hidden.join("volume.json");
        let cfg: VolumeConfig =
            serde_json::from_slice(&fs::read(&cfg_path).map_err(&err)?).map_err(|e| {
                VolumeError::CorruptMetadata { path: cfg_path.clone(), why: e.to_string() }
            })?;
        for d in ["snapshots", "links"] {
            fs::create_dir_all(hidden.join(d)).map_err(&err)?;
        }
        let lock_path = hidden.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(&err)?;
        // SAFETY: flock on a valid descriptor owned by `lock`; released when it is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(VolumeError::Locked { root, lock: lock_path });
        }
        let diff_dir = diff_dir_of(&cfg.storage, cfg.guid);
        fs::create_dir_all(&diff_dir).map_err(&err)?;
        // Make the metadata directories themselves durable (once per open), so that a
        // persistent snapshot's files never hang off a directory entry a crash could lose.
        let mut to_sync = vec![hidden.clone()];
        to_sync.extend(diff_dir.ancestors().skip(1).take(2).map(Path::to_path_buf));
        for d in to_sync {
            sync_host_dir(&d).map_err(&err)?;
        }

        let inner = VolumeInner {
            hidden: hidden.clone(),
            label: cfg.label,
            guid: cfg.guid,
            block_size: cfg.block_size,
            barrier: RwLock::new(()),
            mutations: AtomicU64::new(0),
            ns: Mutex::new(()),
            snaps: RwLock::new(Vec::new()),
            epoch: AtomicU64::new(0),
            next_seq: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            linked: Mutex::new(HashSet::new()),
            storage: Mutex::new(cfg.storage),
            room: Mutex::new(()),
            used: AtomicU64::new(0),
            preserved_blocks: AtomicU64::new(0),
            near_full: AtomicBool::new(false),
            events: EventHub::default(),
            _lock: lock,
            root,
        };
        inner.recover(&diff_dir)?;
        Ok(Volume { inner: Arc::new(inner) })
    }

    /// The volume's label.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The volume's GUID.
    pub fn guid(&self) -> Uuid {
        self.inner.guid
    }

    /// The host directory behind the volume.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Copy-on-write block size.
    pub fn block_size(&self) -> u64 {
        self.inner.block_size
    }

    /// Receives every later event of this volume.
    pub fn subscribe(&self) -> mpsc::Receiver<VolumeEvent> {
        self.inner.events.subscribe()
    }

    /// Live snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<ShadowCopyInfo> {
        self.inner.snaps.read().iter().map(|s| self.inner.info(s)).collect()
    }

    /// A read-only view of snapshot `id`.
    pub fn view(&self, id: Uuid) -> Result<SnapshotView> {
        let s = self.inner.find(id).ok_or(VolumeError::SnapshotNotFound(id))?;
        Ok(SnapshotView::new(self.inner.clone(), s))
    }

    /// Takes a snapshot of this volume alone (a one-volume set) with the default hold timeout.
    pub fn snapshot(&self, persistent: bool) -> Result<ShadowCopyInfo> {
        let opts = crate::hold::CommitOptions { persistent, ..Default::default() };
        let r = crate::hold::commit_set(std::slice::from_ref(self), Uuid::new_v4(), &opts)?;
        Ok(r.snapshots.into_iter().next().expect("one volume, one snapshot"))
    }

    /// Deletes snapshot `id`. Its preserved blocks that an older snapshot reads through are
    /// handed to that older snapshot first.
    pub fn delete_snapshot(&self, id: Uuid) -> Result<u64> {
        self.inner.delete(id, DeleteReason::Requested)
    }

    /// Deletes `id` with a given reason (the provider's release path).
    pub fn delete_snapshot_because(&self, id: Uuid, reason: DeleteReason) -> Result<u64> {
        self.inner.delete(id, reason)
    }

    /// Makes every diff area of this volume durable. Non-persistent snapshots never sync their
    /// diff areas on the write path; this lets a caller (or a benchmark separating its passes)
    /// flush them at a moment of its choosing.
    pub fn sync_shadow_storage(&self) -> Result<()> {
        let snaps: Vec<Arc<Snapshot>> = self.inner.snaps.read().clone();
        for s in snaps {
            s.diff.sync().map_err(io_at(self.root()))?;
        }
        Ok(())
    }

    /// Bytes the diff areas of this volume occupy.
    pub fn shadow_storage_used(&self) -> u64 {
        self.inner.used.load(Ordering::Acquire)
    }

    /// Blocks copied on write into a snapshot's diff area since the volume was opened: the
    /// copy-on-write work live writes paid for the snapshots (blocks handed between diff
    /// areas when a snapshot is deleted are not counted again).
    pub fn blocks_preserved(&self) -> u64 {
        self.inner.preserved_blocks.load(Ordering::Relaxed)
    }

    /// Shadow storage of this volume.
    pub fn shadow_storage(&self) -> ShadowStorageInfo {
        let st = self.inner.storage.lock().clone();
        ShadowStorageInfo {
            for_volume: self.guid(),
            for_label: self.label().to_string(),
            on_volume: st.on_volume,
            on_root: st.on_root,
            used_bytes: self.shadow_storage_used(),
            max_bytes: st.max_bytes,
        }
    }

    /// Sets the maximum size of shadow storage (`None`: unbounded). Shrinking below the used
    /// size deletes the oldest snapshots until it fits (each deletion is an event).
    pub fn set_shadow_storage_max(&self, max_bytes: Option<u64>) -> Result<()> {
        if let Some(m) = max_bytes
            && m < 1 << 20
        {
            return Err(VolumeError::ShadowStorage {
                volume: self.label().to_string(),
                why: format!("maximum {m} B is below the 1 MiB minimum"),
            });
        }
        self.inner.storage.lock().max_bytes = max_bytes;
        self.inner.save_config()?;
        self.inner.make_room(0);
        Ok(())
    }

    /// Moves shadow storage to volume `on` (which may be this one). Allowed only while this
    /// volume holds no snapshot, so no diff area ever has to move.
    pub fn set_shadow_storage_location(&self, on: &Volume) -> Result<()> {
        let snaps = self.inner.snaps.write();
        if !snaps.is_empty() {
            return Err(VolumeError::ShadowStorage {
                volume: self.label().to_string(),
                why: format!("cannot move shadow storage while {} snapshots exist", snaps.len()),
            });
        }
        let mut st = self.inner.storage.lock();
        st.on_volume = on.guid();
        st.on_root = on.root().to_path_buf();
        let dir = diff_dir_of(&st, self.guid());
        drop(st);
        fs::create_dir_all(&dir).map_err(io_at(self.root()))?;
        self.inner.save_config()
    }

    /// Holds the write barrier shared, exactly as a write in flight does, until the guard is
    /// dropped. A writer that needs several operations to fall on the same side of a snapshot
    /// uses it (and must not write through the volume on the same thread meanwhile); tests use
    /// it to model a write that does not drain.
    pub fn hold_in_flight_write(&self) -> InFlightWrite<'_> {
        InFlightWrite { _g: self.inner.barrier.read() }
    }
}

/// A mutation in progress: holds the write barrier shared and, when dropped, counts the
/// mutation as completed *before* releasing the barrier.
#[derive(Debug)]
pub(crate) struct Mutation<'a> {
    counter: &'a AtomicU64,
    _b: RwLockReadGuard<'a, ()>,
}

impl Drop for Mutation<'_> {
    fn drop(&mut self) {
        self.counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// A table scanned before the hold, valid if no mutation completed since.
#[derive(Debug)]
pub(crate) struct PreScan {
    table: FileTable,
    mutations: u64,
}

/// See [`Volume::hold_in_flight_write`].
#[derive(Debug)]
pub struct InFlightWrite<'a> {
    _g: RwLockReadGuard<'a, ()>,
}

/// A snapshot found on disk at open.
enum Loaded {
    Kept(Arc<Snapshot>),
    Discard { diff: DiffArea, seq: u64, id: Uuid },
}

fn diff_dir_of(st: &StorageConfig, guid: Uuid) -> PathBuf {
    st.on_root.join(HIDDEN).join("diff").join(guid.to_string())
}

fn write_config(hidden: &Path, cfg: &VolumeConfig) -> io::Result<()> {
    let host = crate::host::HostFs::new(hidden)?;
    crate::fs::write_atomic(&host, Path::new("volume.json"), &serde_json::to_vec_pretty(cfg)?)
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Copies the records of `from` into `to` (blocks `to` lacks; only files `to`'s table holds,
/// when it has one). `to`'s content for such a block equals `from`'s: had the block changed
/// between the two snapshots, it would have been preserved into `to` at that time.
fn merge_into(from: &DiffArea, to: &DiffArea, table: Option<&FileTable>) -> io::Result<u64> {
    let mut grew = 0;
    let mut buf = Vec::new();
    for (id, block, slot) in from.entries() {
        if table.is_some_and(|t| !t.by_id.contains_key(&id)) || to.lookup(id, block).is_some() {
            continue;
        }
        buf.resize(slot.len as usize, 0);
        from.read_slot(slot, 0, &mut buf)?;
        if let Appended::Grew(n) = to.append(id, block, &buf)? {
            grew += n;
        }
    }
    Ok(grew)
}

impl VolumeInner {
    fn err(&self) -> impl Fn(io::Error) -> VolumeError + '_ {
        io_at(&self.root)
    }

    fn diff_dir(&self) -> PathBuf {
        diff_dir_of(&self.storage.lock(), self.guid)
    }

    fn links_dir(&self) -> PathBuf {
        self.hidden.join("links")
    }

    fn save_config(&self) -> Result<()> {
        let cfg = VolumeConfig {
            label: self.label.clone(),
            guid: self.guid,
            block_size: self.block_size,
            storage: self.storage.lock().clone(),
        };
        write_config(&self.hidden, &cfg).map_err(self.err())
    }

    /// Startup recovery; see [`Volume::open`].
    fn recover(&self, diff_dir: &Path) -> Result<()> {
        let err = self.err();
        let snap_root = self.hidden.join("snapshots");
        let mut logs: Vec<(u64, Uuid)> = Vec::new();
        for e in fs::read_dir(diff_dir).map_err(&err)? {
            let name = e.map_err(&err)?.file_name().to_string_lossy().into_owned();
            match name.strip_suffix(".log").and_then(snapshot::parse_stem) {
                Some(k) => logs.push(k),
                None => tracing::warn!(file = %name, "shadow storage: ignoring unknown file"),
            }
        }
        logs.sort();
        // Snapshot directories without a log are leftovers of an interrupted deletion.
        for e in fs::read_dir(&snap_root).map_err(&err)? {
            let e = e.map_err(&err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !snapshot::parse_stem(&name).is_some_and(|k| logs.contains(&k)) {
                fs::remove_dir_all(e.path()).map_err(&err)?;
            }
        }
        // Load everything, oldest first: persistent snapshots with metadata are kept, the rest
        // (non-persistent, or a commit that never finished) are discarded below.
        let mut all: Vec<Loaded> = Vec::new();
        for (seq, id) in logs {
            let stem = snapshot::stem(seq, id);
            let log = diff_dir.join(format!("{stem}.log"));
            let dir = snap_root.join(&stem);
            let meta = Snapshot::load_meta(&dir).map_err(&err)?;
            let diff = DiffArea::open(&log, true).map_err(&err)?;
            self.next_seq.fetch_max(seq + 1, Ordering::AcqRel);
            match meta {
                Some(m) if m.persistent => {
                    if m.block_size != self.block_size {
                        return Err(VolumeError::CorruptMetadata {
                            path: dir.join("meta.json"),
                            why: format!(
                                "block size {} differs from the volume's {}",
                                m.block_size, self.block_size
                            ),
                        });
                    }
                    all.push(Loaded::Kept(Snapshot::from_meta(m, diff, dir)));
                }
                _ => all.push(Loaded::Discard { diff, seq, id }),
            }
        }
        // Discard newest first, handing each log's blocks to the next older snapshot.
        for i in (0..all.len()).rev() {
            let Loaded::Discard { diff, seq, id } = &all[i] else { continue };
            if i > 0 {
                let (target, table) = match &all[i - 1] {
                    Loaded::Kept(s) => (&s.diff, Some(&s.table)),
                    Loaded::Discard { diff, .. } => (diff, None),
                };
                merge_into(diff, target, table).map_err(&err)?;
            }
            let stem = snapshot::stem(*seq, *id);
            let _ = fs::remove_dir_all(snap_root.join(&stem));
            remove_if_exists(diff.path()).map_err(&err)?;
            self.events.emit(VolumeEvent::SnapshotDeleted {
                volume: self.guid,
                snapshot: *id,
                reason: DeleteReason::Restart,
                bytes_freed: diff.bytes(),
            });
        }
        sync_host_dir(diff_dir).map_err(&err)?;
        let kept: Vec<Arc<Snapshot>> = all
            .into_iter()
            .filter_map(|a| match a {
                Loaded::Kept(s) => Some(s),
                Loaded::Discard { .. } => None,
            })
            .collect();
        let used = kept.iter().map(|s| s.diff.bytes()).sum();
        self.used.store(used, Ordering::Release);
        *self.snaps.write() = kept;
        // Parked files.
        let mut linked = self.linked.lock();
        for e in fs::read_dir(self.links_dir()).map_err(&err)? {
            let name = e.map_err(&err)?.file_name().to_string_lossy().into_owned();
            if let Some(id) = FileId::from_link_name(&name) {
                linked.insert(id);
            }
        }
        drop(linked);
        self.gc_links().map_err(&err)?;
        Ok(())
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The newest live snapshot whose table holds file `id`, with its entry.
    pub(crate) fn newest_holding(
        &self,
        id: FileId,
    ) -> Option<(Arc<Snapshot>, Arc<crate::table::FileEntry>)> {
        let snaps = self.snaps.read();
        snaps.iter().rev().find_map(|s| s.table.by_id.get(&id).map(|e| (s.clone(), e.clone())))
    }

    fn needed(&self, id: FileId) -> bool {
        self.snaps.read().iter().any(|s| s.table.by_id.contains_key(&id))
    }

    fn any_persistent(&self) -> bool {
        self.snaps.read().iter().any(|s| s.persistent)
    }

    pub(crate) fn find(&self, id: Uuid) -> Option<Arc<Snapshot>> {
        self.snaps.read().iter().find(|s| s.id == id).cloned()
    }

    /// Live snapshots from `seq` on (the read chain of snapshot `seq`), oldest first.
    pub(crate) fn chain_from(&self, seq: u64) -> Vec<Arc<Snapshot>> {
        self.snaps.read().iter().filter(|s| s.seq >= seq).cloned().collect()
    }

    pub(crate) fn info(&self, s: &Snapshot) -> ShadowCopyInfo {
        ShadowCopyInfo {
            id: s.id,
            set_id: s.set_id,
            volume: self.guid,
            volume_label: self.label.clone(),
            seq: s.seq,
            created_unix_ms: s.created_unix_ms(),
            persistent: s.persistent,
            diff_area_bytes: s.diff.bytes(),
            files: s.table.file_count(),
        }
    }

    fn file_state(&self, id: FileId) -> Arc<FileState> {
        let mut files = self.files.lock();
        if let Some(s) = files.get(&id).and_then(Weak::upgrade) {
            return s;
        }
        if files.len() >= 1024 && files.len().is_power_of_two() {
            files.retain(|_, w| w.strong_count() > 0);
        }
        let s = Arc::new(FileState::new(id));
        files.insert(id, Arc::downgrade(&s));
        s
    }

    pub(crate) fn account_growth(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts one block copied on write (see [`Volume::blocks_preserved`]).
    pub(crate) fn count_preserved(&self) {
        self.preserved_blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// Deletes the oldest snapshots until `need` more bytes fit in shadow storage, and warns
    /// when storage passes [`NEAR_FULL_PERCENT`]. Never fails: a live write proceeds anyway.
    pub(crate) fn make_room(&self, need: u64) {
        let Some(max) = self.storage.lock().max_bytes else { return };
        let _g = self.room.lock();
        loop {
            let used = self.used.load(Ordering::Acquire);
            if used + need <= max {
                let near = (used + need) * 100 >= max * NEAR_FULL_PERCENT;
                if near && !self.near_full.swap(true, Ordering::AcqRel) {
                    self.events.emit(VolumeEvent::ShadowStorageNearFull {
                        volume: self.guid,
                        used: used + need,
                        max,
                    });
                } else if !near && (used + need) * 100 < max * (NEAR_FULL_PERCENT - 10) {
                    self.near_full.store(false, Ordering::Release);
                }
                return;
            }
            let Some(oldest) = self.snaps.read().first().map(|s| s.id) else { return };
            if let Err(e) = self.delete(oldest, DeleteReason::Overflow) {
                tracing::error!(volume = %self.label, snapshot = %oldest, error = %e,
                    "could not delete the oldest snapshot to make room");
                return;
            }
        }
    }

    /// A block could not be preserved into `snap`: the snapshot cannot stay exact, so it goes.
    pub(crate) fn preservation_failed(&self, snap: &Snapshot, e: &io::Error) {
        self.events.emit(VolumeEvent::PreservationFailed {
            volume: self.guid,
            snapshot: snap.id,
            error: e.to_string(),
        });
        if let Err(e2) = self.delete(snap.id, DeleteReason::PreservationFailed) {
            tracing::error!(snapshot = %snap.id, error = %e2, "deleting a failed snapshot failed");
        }
    }

    /// Deletes snapshot `id`; returns the bytes freed.
    pub(crate) fn delete(&self, id: Uuid, reason: DeleteReason) -> Result<u64> {
        let mut snaps = self.snaps.write();
        let pos = snaps.iter().position(|s| s.id == id).ok_or(VolumeError::SnapshotNotFound(id))?;
        let s = snaps[pos].clone();
        let bytes = s.diff.mark_deleted();
        if pos > 0 {
            let older = snaps[pos - 1].clone();
            match merge_into(&s.diff, &older.diff, Some(&older.table)) {
                Ok(grew) => self.account_growth(grew),
                Err(e) => {
                    // The older snapshot can no longer be read exactly: it goes too.
                    tracing::error!(snapshot = %older.id, error = %e, "merge of diff areas failed");
                    drop(snaps);
                    self.remove_snapshot_files_and_report(&s, bytes, reason)?;
                    self.snaps.write().retain(|x| x.id != id);
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                    return self
                        .delete(older.id, DeleteReason::PreservationFailed)
                        .map(|b| b + bytes);
                }
            }
        }
        snaps.remove(pos);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        drop(snaps);
        self.remove_snapshot_files_and_report(&s, bytes, reason)?;
        Ok(bytes)
    }

    fn remove_snapshot_files_and_report(
        &self,
        s: &Snapshot,
        bytes: u64,
        reason: DeleteReason,
    ) -> Result<()> {
        let err = self.err();
        // Metadata first: once it is gone, a restart treats the log as discardable.
        match fs::remove_dir_all(&s.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        remove_if_exists(s.diff.path()).map_err(&err)?;
        self.used.fetch_sub(bytes.min(self.used.load(Ordering::Acquire)), Ordering::AcqRel);
        self.gc_links().map_err(&err)?;
        self.events.emit(VolumeEvent::SnapshotDeleted {
            volume: self.guid,
            snapshot: s.id,
            reason,
            bytes_freed: bytes,
        });
        Ok(())
    }

    /// Unlinks parked files no live snapshot needs any more.
    fn gc_links(&self) -> io::Result<()> {
        let mut linked = self.linked.lock();
        let dead: Vec<FileId> = linked.iter().copied().filter(|id| !self.needed(*id)).collect();
        for id in dead {
            remove_if_exists(&self.links_dir().join(id.link_name()))?;
            linked.remove(&id);
        }
        Ok(())
    }

    /// Parks file `id` (now at host path `at`) under the hidden directory, so that snapshots can
    /// still reach it after the coming rename or removal.
    fn park(&self, id: FileId, at: &Path) -> io::Result<()> {
        let mut linked = self.linked.lock();
        if linked.contains(&id) {
            return Ok(());
        }
        match fs::hard_link(at, self.links_dir().join(id.link_name())) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        if self.any_persistent() {
            sync_host_dir(&self.links_dir())?;
        }
        linked.insert(id);
        Ok(())
    }

    /// Parks every file under host directory `dir` that a snapshot needs.
    fn park_tree(&self, dir: &Path) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                self.park_tree(&e.path())?;
            } else if ft.is_file() {
                let id = FileId::of(&e.metadata()?);
                if self.needed(id) {
                    self.park(id, &e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Opens the live file of identity `id` that a snapshot recorded at `path`: at its old
    /// name if it is still there, else where it was parked.
    pub(crate) fn open_by_id(&self, path: &str, id: FileId) -> io::Result<fs::File> {
        for p in [self.root.join(path), self.links_dir().join(id.link_name())] {
            if let Ok(f) = fs::File::open(&p)
                && FileId::of(&f.metadata()?) == id
            {
                return Ok(f);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("volume {}: file {path} ({id}) is no longer reachable", self.label),
        ))
    }

    /// Takes the write barrier shared for one mutation (see [`Mutation`]).
    pub(crate) fn mutation(&self) -> Mutation<'_> {
        Mutation { _b: self.barrier.read(), counter: &self.mutations }
    }

    /// Flush-and-hold step 1 (no barrier): scans the file table ahead of the hold. At commit
    /// time the applications' writers are frozen, so the volume is normally quiet and this
    /// table is still exact once the barrier is taken; the hold then costs no scan at all.
    pub(crate) fn prescan(&self) -> Result<PreScan> {
        let mutations = self.mutations.load(Ordering::Acquire);
        let table = FileTable::scan(&self.root, HIDDEN).map_err(self.err())?;
        Ok(PreScan { table, mutations })
    }

    /// Flush-and-hold step 2 (barrier held): takes the pre-scanned table if no mutation
    /// completed since it began (a mutation counts itself only after its change is done and
    /// before it releases the barrier, so an unchanged count means the scan saw every change),
    /// else scans again; then creates the diff area.
    pub(crate) fn prepare_snapshot(
        &self,
        set_id: Uuid,
        persistent: bool,
        pre: Option<PreScan>,
    ) -> Result<Arc<Snapshot>> {
        let count = self.snaps.read().len();
        if count >= MAX_SNAPSHOTS {
            return Err(VolumeError::TooManySnapshots { volume: self.label.clone(), count });
        }
        let err = self.err();
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let id = Uuid::new_v4();
        let table = match pre {
            Some(p) if p.mutations == self.mutations.load(Ordering::Acquire) => p.table,
            _ => FileTable::scan(&self.root, HIDDEN).map_err(&err)?,
        };
        let stem = snapshot::stem(seq, id);
        let diff_dir = self.diff_dir();
        // An older persistent snapshot reads through this diff area: it must be as durable.
        let durable = persistent || self.any_persistent();
        let diff =
            DiffArea::create(&diff_dir.join(format!("{stem}.log")), durable).map_err(&err)?;
        if durable {
            sync_host_dir(&diff_dir).map_err(&err)?;
        }
        Ok(Arc::new(Snapshot {
            id,
            set_id,
            volume: self.guid,
            seq,
            created: SystemTime::now(),
            persistent,
            table,
            diff,
            dir: self.hidden.join("snapshots").join(stem),
        }))
    }

    /// Flush-and-hold step 3 (barrier held): the snapshot goes live.
    pub(crate) fn install(&self, s: Arc<Snapshot>) {
        self.snaps.write().push(s);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes a prepared snapshot that never went live.
    pub(crate) fn discard_prepared(&self, s: &Snapshot) {
        let _ = remove_if_exists(s.diff.path());
    }

    /// After the hold: persistent snapshots' tables are made durable.
    pub(crate) fn persist(&self, s: &Snapshot) -> Result<()> {
        if s.persistent {
            fs::create_dir_all(&s.dir).map_err(self.err())?;
            s.persist_meta(self.block_size).map_err(self.err())?;
        }
        Ok(())
    }

    fn check_path(&self, path: &Path) -> io::Result<PathBuf> {
        let p = normalize(path)?;
        if p.components().next().is_some_and(|c| c.as_os_str() == HIDDEN) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is reserved for the volume's metadata", path.display()),
            ));
        }
        Ok(self.root.join(p))
    }
}

/// A clean close (the last handle, open file and view dropped) releases the non-persistent
/// snapshots at once instead of leaving their diff areas for the next open to remove.
impl Drop for VolumeInner {
    fn drop(&mut self) {
        let transient: Vec<Uuid> =
            self.snaps.read().iter().rev().filter(|s| !s.persistent).map(|s| s.id).collect();
        for id in transient {
            if let Err(e) = self.delete(id, DeleteReason::Released) {
                tracing::warn!(volume = %self.label, snapshot = %id, error = %e,
                    "could not release a non-persistent snapshot at close; the next open will");
            }
        }
    }
}

/// A file opened through the live view of a volume.
#[derive(Debug)]
pub struct LiveFile {
    vol: Arc<VolumeInner>,
    file: fs::File,
    state: Arc<FileState>,
    writable: bool,
}

impl LiveFile {
    fn check_writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::PermissionDenied, "file was opened read-only"))
        }
    }
}

impl File for LiveFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.check_writable()?;
        if buf.is_empty() {
            return Ok(());
        }
        let _b = self.vol.mutation();
        let change = Change::Write { start: offset, end: offset + buf.len() as u64 };
        self.state.before_change(&self.vol, &self.file, change)?;
        self.file.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let _b = self.vol.mutation();
        self.state.before_change(&self.vol, &self.file, Change::Truncate { len })?;
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl FileSystem for Volume {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        let v = &self.inner;
        let host = v.check_path(path)?;
        let _b = matches!(mode, OpenMode::Create | OpenMode::CreateNew).then(|| v.mutation());
        let file = open_host(&host, mode)?;
        let m = file.metadata()?;
        if m.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        let state = v.file_state(FileId::of(&m));
        Ok(Arc::new(LiveFile { vol: v.clone(), file, state, writable: mode.writable() }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let host = self.inner.check_path(path)?;
        let _b = self.inner.mutation();
        fs::create_dir_all(host)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let v = &self.inner;
        let host = v.check_path(path)?;
        let _b = v.mutation();
        let _ns = v.ns.lock();
        let m = fs::symlink_metadata(&host)?;
        if m.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory", path.display()),
            ));
        }
        let id = FileId::of(&m);
        if v.needed(id) {
            v.park(id, &host)?;
        }
        fs::remove_file(host)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let host = self.inner.check_path(path)?;
        if host == self.inner.root {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "cannot remove the root"));
        }
        let _b = self.inner.mutation();
        let _ns = self.inner.ns.lock();
        fs::remove_dir(host)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let v = &self.inner;
        let hf = v.check_path(from)?;
        let ht = v.check_path(to)?;
        let _b = v.mutation();
        let _ns = v.ns.lock();
        let m = fs::symlink_metadata(&hf)?;
        if m.is_dir() {
            v.park_tree(&hf)?;
        } else {
            let id = FileId::of(&m);
            if v.needed(id) {
                v.park(id, &hf)?;
            }
        }
        if let Ok(mt) = fs::symlink_metadata(&ht)
            && mt.is_file()
        {
            let id = FileId::of(&mt);
            if v.needed(id) {
                v.park(id, &ht)?;
            }
        }
        fs::rename(hf, ht)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let host = self.inner.check_path(path)?;
        let at_root = host == self.inner.root;
        list_host_dir(&host, |n| at_root && n == HIDDEN)
    }

    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        let host = self.inner.check_path(path)?;
        Ok(host_metadata(&fs::metadata(host)?))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        sync_host_dir(&self.inner.check_path(path)?)
    }
}
