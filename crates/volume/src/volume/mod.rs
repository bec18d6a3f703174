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
//!
//! The module is split by concept: [`shadow_storage`] (limits, accounting, oldest-first
//! deletion and the hand-over of preserved blocks), [`recovery`] (what [`Volume::open`] finds
//! on disk), and [`live`] (the live-file path: [`LiveFile`] and the volume's [`FileSystem`]).
//! This file keeps the volume's state, its snapshot registry and the commit steps.

mod live;
mod recovery;
mod shadow_storage;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak, mpsc};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cow::FileState;
use crate::diff::DiffArea;
use crate::error::{Result, VolumeError};
use crate::events::{DeleteReason, EventHub, VolumeEvent};
use crate::file_id::FileId;
use crate::host::sync_host_dir;
use crate::snapshot::{self, ShadowCopyInfo, Snapshot};
use crate::table::FileTable;
use crate::view::SnapshotView;

pub use live::LiveFile;
use shadow_storage::diff_dir_of;
pub use shadow_storage::{ShadowStorageInfo, StorageConfig};

/// Name of the hidden metadata directory at the root of every volume.
pub const HIDDEN: &str = ".shadowcopy";
/// Default copy-on-write block size (the reference system's 16 KiB).
pub const DEFAULT_BLOCK_SIZE: u64 = 16 * 1024;
/// Snapshots a volume may hold at once.
pub const MAX_SNAPSHOTS: usize = 512;

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
///
/// Lock order (a thread holding one of these may only take those listed after it; a deadlock
/// is otherwise possible between a live write, a commit and a deletion):
///
/// 1. `barrier` — shared by every mutation, exclusive during a commit's flush-and-hold (a set
///    takes the barriers of its volumes in one fixed order, see [`crate::hold`]);
/// 2. `ns` — namespace changes (park, then remove or rename);
/// 3. a file's copy-on-write cache ([`FileState`], held across the preservation of a block);
/// 4. `room` — overflow handling, which deletes snapshots;
/// 5. `linked` — the set of parked files;
/// 6. `snaps` — never held while taking `linked` (deletion drops it before collecting links);
/// 7. `storage` — the shadow-storage configuration.
///
/// `files` is a leaf: nothing else is taken while it is held. The atomics need no order.
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
    /// Called with a snapshot's id before it is deleted ([`Volume::on_before_delete`]).
    before_delete: RwLock<Option<BeforeDelete>>,
    _lock: fs::File,
}

/// The hook of [`Volume::on_before_delete`].
#[derive(Clone)]
struct BeforeDelete(Arc<dyn Fn(Uuid) + Send + Sync>);

impl VolumeInner {
    /// Calls the [`Volume::on_before_delete`] hook, if one is set, for snapshot `id` — by
    /// either provider, just before it deletes the snapshot.
    pub(crate) fn run_before_delete(&self, id: Uuid) {
        let hook = self.before_delete.read().clone();
        if let Some(hook) = hook {
            (hook.0)(id);
        }
    }
}

impl std::fmt::Debug for BeforeDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeDelete")
    }
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

    /// Opens the volume at `root`, or creates it with `opts`. An existing volume whose block
    /// size is not `opts.block_size` is refused rather than opened with its own: a changed
    /// configuration that silently does nothing would mislead whoever changed it.
    pub fn open_or_create(root: impl Into<PathBuf>, opts: VolumeOptions) -> Result<Volume> {
        let root: PathBuf = root.into();
        if root.join(HIDDEN).join("volume.json").exists() {
            let vol = Self::open(root)?;
            if vol.block_size() != opts.block_size {
                let changed = crate::error::BlockSizeChanged {
                    created: vol.block_size(),
                    configured: opts.block_size,
                };
                return Err(VolumeError::io(
                    vol.root(),
                    io::Error::new(io::ErrorKind::InvalidInput, changed),
                ));
            }
            Ok(vol)
        } else {
            Self::create(root, opts)
        }
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
        #[allow(clippy::expect_used)] // commit_set reports one snapshot per volume given
        let one = r.snapshots.into_iter().next().expect("one volume, one snapshot");
        Ok(one)
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

    /// Calls `hook` with a snapshot's id just before the snapshot is deleted, whatever the
    /// reason (a request, the release of a backup's set, shadow-storage overflow, a failed
    /// preservation), so that what serves the snapshot to others — the node's FUSE mount of
    /// it — is taken away first instead of failing its readers. Replaces an earlier hook.
    /// The hook runs inside the deletion, which for an overflow is inside a live write: it
    /// must not wait for anything slow (a lazy unmount, not one that waits for readers), and
    /// must not call back into this volume's snapshot deletion.
    pub fn on_before_delete(&self, hook: impl Fn(Uuid) + Send + Sync + 'static) {
        *self.inner.before_delete.write() = Some(BeforeDelete(Arc::new(hook)));
    }

    /// Holds the write barrier shared, exactly as a write in flight does, until the guard is
    /// dropped. A writer that needs several operations to fall on the same side of a snapshot
    /// uses it (and must not write through the volume on the same thread meanwhile); tests use
    /// it to model a write that does not drain.
    pub fn hold_in_flight_write(&self) -> InFlightWrite<'_> {
        InFlightWrite { _g: self.inner.barrier.read() }
    }

    /// Whether a commit holds this volume's writes right now (its write barrier exclusively):
    /// lets a test or a diagnostic see a flush-and-hold in progress without timing it.
    pub fn writes_held(&self) -> bool {
        self.inner.barrier.is_locked_exclusive()
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
    /// else scans again (and says how long that took); then creates the diff area.
    pub(crate) fn prepare_snapshot(
        &self,
        set_id: Uuid,
        persistent: bool,
        pre: Option<PreScan>,
    ) -> Result<(Arc<Snapshot>, Option<std::time::Duration>)> {
        let count = self.snaps.read().len();
        if count >= MAX_SNAPSHOTS {
            return Err(VolumeError::TooManySnapshots { volume: self.label.clone(), count });
        }
        let err = self.err();
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let id = Uuid::new_v4();
        let (table, rescan) = match pre {
            Some(p) if p.mutations == self.mutations.load(Ordering::Acquire) => (p.table, None),
            _ => {
                let began = std::time::Instant::now();
                (FileTable::scan(&self.root, HIDDEN).map_err(&err)?, Some(began.elapsed()))
            }
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
        let snapshot = Arc::new(Snapshot {
            id,
            set_id,
            volume: self.guid,
            seq,
            created: SystemTime::now(),
            persistent,
            table,
            diff,
            dir: self.hidden.join("snapshots").join(stem),
        });
        Ok((snapshot, rescan))
    }

    /// Flush-and-hold step 3 (barrier held): the snapshot goes live.
    pub(crate) fn install(&self, s: Arc<Snapshot>) {
        self.snaps.write().push(s);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes a prepared snapshot that never went live.
    pub(crate) fn discard_prepared(&self, s: &Snapshot) {
        if let Err(e) = remove_if_exists(s.diff.path()) {
            tracing::warn!(volume = %self.label, path = %s.diff.path().display(), error = %e,
                "could not remove the diff area of a snapshot that never went live");
        }
    }

    /// After the hold: persistent snapshots' tables are made durable.
    pub(crate) fn persist(&self, s: &Snapshot) -> Result<()> {
        if s.persistent {
            fs::create_dir_all(&s.dir).map_err(self.err())?;
            s.persist_meta(self.block_size).map_err(self.err())?;
        }
        Ok(())
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
