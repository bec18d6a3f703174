//! The btrfs provider: redirect-on-write snapshots of volumes whose directory is a btrfs
//! subvolume, taken by the file system itself.
//!
//! Why it lives here, beside the software provider ([`crate::provider`]): a btrfs volume is
//! still a [`Volume`] — the node writes through the same filter, so the flush-and-hold of a
//! commit holds those writes on the same barrier ([`crate::hold`]), and the volume's event hub
//! reports deletions and overflows to the node exactly as for the software provider. Only how
//! the snapshot is taken, read, counted and deleted differs, and that is this module; the
//! `unsafe` ioctls are confined to [`ioctl`].
//!
//! What it protects: everything on the subvolume, also files other programs write directly
//! (not through the node), because btrfs snapshots the whole subvolume at the commit. Nothing
//! is copied on write: btrfs writes new data to new blocks and the snapshot keeps the old ones.
//!
//! Layout, inside the subvolume's hidden directory (nested subvolumes are not part of a
//! snapshot, so snapshots never contain each other):
//! `<root>/.shadowcopy/btrfs/<seq>-<id>` (a read-only snapshot subvolume),
//! `<root>/.shadowcopy/btrfs/<seq>-<id>.json` (its set, time and persistence, written after the
//! snapshot: a snapshot without one is an interrupted commit, destroyed on open) and
//! `storage.json` (the shadow-storage limit). On open, non-persistent snapshots a previous run
//! left are destroyed (reason `restart`); persistent ones are found again.
//!
//! Shadow storage: the bytes on disk that the snapshots keep and the live subvolume no longer
//! uses, from the extent maps (`FIEMAP`) — a snapshot is charged the blocks it holds that
//! neither the live subvolume nor a newer snapshot holds, as a software snapshot's diff area
//! holds the blocks overwritten between it and the next. Because other programs write without
//! the node seeing it, the limit is enforced when a snapshot is committed, when the limit
//! changes (for a volume with a limit), and whenever [`BtrfsProvider::check_shadow_storage`]
//! runs (the node does periodically): over the limit, the oldest snapshots are deleted, each with the overflow
//! event.

pub mod ioctl;
pub mod scratch;
mod view;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, VolumeError};
use crate::events::{DeleteReason, VolumeEvent};
use crate::hold::{CommitOptions, WithinError, barrier_order, hold_writes};
use crate::provider::VolumeInfo;
use crate::snapshot::ShadowCopyInfo;
use crate::volume::{HIDDEN, MAX_SNAPSHOTS, ShadowStorageInfo, Volume};

pub use view::BtrfsView;

/// Name under which the provider registers with the coordinator.
pub const PROVIDER_NAME: &str = "shadowcopy-btrfs-provider";

/// Share of the shadow-storage maximum past which a warning event is sent (as the software
/// provider's).
const NEAR_FULL_PERCENT: u64 = 90;

/// Whether `path` is the root of a btrfs subvolume (a directory of inode 256 on btrfs).
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    let md = fs::metadata(path)?;
    if !md.is_dir() || md.ino() != ioctl::SUBVOLUME_ROOT_INO {
        return Ok(false);
    }
    let st = rustix::fs::statfs(path).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    let magic = st.f_type as i64;
    Ok(magic == ioctl::BTRFS_SUPER_MAGIC)
}

/// Writes back every dirty page of the file system holding `path` (`syncfs(2)`).
fn syncfs(path: &Path) -> io::Result<()> {
    let dir = fs::File::open(path)?;
    rustix::fs::syncfs(&dir).map_err(io::Error::from)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What `<seq>-<id>.json` records of a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapState {
    id: Uuid,
    set_id: Uuid,
    seq: u64,
    created_unix_ms: u64,
    persistent: bool,
    files: usize,
}

impl SnapState {
    fn name(&self) -> String {
        stem(self.seq, self.id)
    }
}

fn stem(seq: u64, id: Uuid) -> String {
    format!("{seq:08}-{id}")
}

#[derive(Debug)]
struct BtrfsSnap {
    state: SnapState,
    /// Bytes charged to it at the last measure (see the module documentation).
    held_bytes: AtomicU64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StorageState {
    max_bytes: Option<u64>,
}

/// One registered btrfs volume.
#[derive(Debug)]
struct BtrfsVolume {
    vol: Volume,
    /// `<root>/.shadowcopy/btrfs`.
    dir: PathBuf,
    /// Live snapshots, oldest first.
    snaps: RwLock<Vec<Arc<BtrfsSnap>>>,
    next_seq: AtomicU64,
    max: Mutex<Option<u64>>,
    used: AtomicU64,
    /// Serializes measuring and overflow deletion.
    room: Mutex<()>,
    near_full: AtomicBool,
}

impl BtrfsVolume {
    fn err(&self) -> impl Fn(io::Error) -> VolumeError + '_ {
        |e| VolumeError::io(self.vol.root(), e)
    }

    fn info(&self, s: &BtrfsSnap) -> ShadowCopyInfo {
        ShadowCopyInfo {
            id: s.state.id,
            set_id: s.state.set_id,
            volume: self.vol.guid(),
            volume_label: self.vol.label().to_string(),
            seq: s.state.seq,
            created_unix_ms: s.state.created_unix_ms,
            persistent: s.state.persistent,
            diff_area_bytes: s.held_bytes.load(Ordering::Acquire),
            files: s.state.files,
        }
    }

    /// Opens the snapshot directory: finds the snapshots a previous run made, destroys the
    /// non-persistent ones and the remains of interrupted commits.
    fn open(vol: Volume) -> Result<BtrfsVolume> {
        let root = vol.root().to_path_buf();
        let err = |e| VolumeError::io(&root, e);
        let dir = root.join(HIDDEN).join("btrfs");
        fs::create_dir_all(&dir).map_err(err)?;
        let max = match fs::read(dir.join("storage.json")) {
            Ok(b) => {
                serde_json::from_slice::<StorageState>(&b)
                    .map_err(|e| VolumeError::CorruptMetadata {
                        path: dir.join("storage.json"),
                        why: e.to_string(),
                    })?
                    .max_bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(e)),
        };
        let mut states = Vec::new();
        let mut subvols = Vec::new();
        for e in fs::read_dir(&dir).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json") {
                if stem == "storage" {
                    continue;
                }
                let path = e.path();
                let bytes = fs::read(&path).map_err(err)?;
                let s: SnapState = serde_json::from_slice(&bytes).map_err(|e| {
                    VolumeError::CorruptMetadata { path: path.clone(), why: e.to_string() }
                })?;
                states.push(s);
            } else if e.file_type().map_err(err)?.is_dir() {
                subvols.push(name);
            }
        }
        states.sort_by_key(|s| s.seq);
        let v = BtrfsVolume {
            next_seq: AtomicU64::new(states.last().map_or(0, |s| s.seq + 1)),
            vol,
            dir,
            snaps: RwLock::new(Vec::new()),
            max: Mutex::new(max),
            used: AtomicU64::new(0),
            room: Mutex::new(()),
            near_full: AtomicBool::new(false),
        };
        for name in &subvols {
            if !states.iter().any(|s| &s.name() == name) {
                tracing::warn!(volume = v.vol.label(), snapshot = %name,
                    "destroying the snapshot of an interrupted commit");
                ioctl::destroy_subvolume(&v.dir, OsStr::new(name)).map_err(err)?;
            }
        }
        for s in states {
            let name = s.name();
            if !subvols.contains(&name) {
                remove_if_exists(&v.dir.join(format!("{name}.json"))).map_err(err)?;
                continue;
            }
            let snap = Arc::new(BtrfsSnap { state: s, held_bytes: AtomicU64::new(0) });
            if snap.state.persistent {
                v.snaps.write().push(snap);
            } else {
                v.destroy(&snap)?;
                v.vol.inner.events.emit(VolumeEvent::SnapshotDeleted {
                    volume: v.vol.guid(),
                    snapshot: snap.state.id,
                    reason: DeleteReason::Restart,
                    bytes_freed: 0,
                });
            }
        }
        Ok(v)
    }

    /// Destroys the snapshot's subvolume, then its state file.
    fn destroy(&self, s: &BtrfsSnap) -> Result<()> {
        let name = s.state.name();
        match ioctl::destroy_subvolume(&self.dir, OsStr::new(&name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(self.err()(e)),
            _ => {}
        }
        remove_if_exists(&self.dir.join(format!("{name}.json"))).map_err(self.err())
    }

    /// Deletes snapshot `id`, unexposing it first ([`Volume::on_before_delete`]) whatever the
    /// reason — a request, a backup's release, overflow.
    fn delete(&self, id: Uuid, reason: DeleteReason) -> Result<u64> {
        if self.snaps.read().iter().any(|s| s.state.id == id) {
            self.vol.inner.run_before_delete(id);
        }
        let s = {
            let mut snaps = self.snaps.write();
            let pos = snaps
                .iter()
                .position(|s| s.state.id == id)
                .ok_or(VolumeError::SnapshotNotFound(id))?;
            snaps.remove(pos)
        };
        if let Err(e) = self.destroy(&s) {
            let mut snaps = self.snaps.write();
            snaps.push(s);
            snaps.sort_by_key(|s| s.state.seq);
            return Err(e);
        }
        let bytes = s.held_bytes.load(Ordering::Acquire);
        self.used.fetch_sub(bytes.min(self.used.load(Ordering::Acquire)), Ordering::AcqRel);
        self.vol.inner.events.emit(VolumeEvent::SnapshotDeleted {
            volume: self.vol.guid(),
            snapshot: id,
            reason,
            bytes_freed: bytes,
        });
        Ok(bytes)
    }

    /// Measures what every snapshot holds (module documentation); returns the total.
    fn measure(&self) -> Result<u64> {
        let err = self.err();
        syncfs(self.vol.root()).map_err(&err)?;
        let mut newer = extents_of_tree(self.vol.root()).map_err(&err)?;
        let snaps = self.snaps.read().clone();
        let mut total = 0;
        for s in snaps.iter().rev() {
            let dir = self.dir.join(s.state.name());
            let mine = match extents_of_tree(&dir) {
                Ok(x) => x,
                // Deleted meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err(e)),
            };
            let held = ranges::bytes_not_in(&mine, &newer);
            s.held_bytes.store(held, Ordering::Release);
            total += held;
            newer = ranges::union(&newer, &mine);
        }
        self.used.store(total, Ordering::Release);
        Ok(total)
    }

    /// Measures, and deletes the oldest snapshots while shadow storage exceeds its limit.
    fn enforce(&self) -> Result<u64> {
        let _g = self.room.lock();
        loop {
            let used = self.measure()?;
            let Some(max) = *self.max.lock() else { return Ok(used) };
            if used <= max {
                let near = used * 100 >= max * NEAR_FULL_PERCENT;
                if near && !self.near_full.swap(true, Ordering::AcqRel) {
                    self.vol.inner.events.emit(VolumeEvent::ShadowStorageNearFull {
                        volume: self.vol.guid(),
                        used,
                        max,
                    });
                } else if !near && used * 100 < max * (NEAR_FULL_PERCENT - 10) {
                    self.near_full.store(false, Ordering::Release);
                }
                return Ok(used);
            }
            let Some(oldest) = self.snaps.read().first().map(|s| s.state.id) else {
                return Ok(used);
            };
            tracing::warn!(volume = self.vol.label(), used, max, snapshot = %oldest,
                "btrfs shadow storage over its limit: deleting the oldest snapshot");
            self.delete(oldest, DeleteReason::Overflow)?;
        }
    }
}

fn remove_if_exists(p: &Path) -> io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Calls `each` with every regular file under `root` (the hidden directory at its top left
/// out: it holds the snapshots themselves).
fn for_each_file(root: &Path, each: &mut dyn FnMut(&Path) -> io::Result<()>) -> io::Result<()> {
    let mut stack = vec![(root.to_path_buf(), true)];
    while let Some((dir, top)) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            if top && e.file_name() == HIDDEN {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push((e.path(), false));
            } else if ft.is_file() {
                each(&e.path())?;
            }
        }
    }
    Ok(())
}

/// The merged on-disk ranges of every regular file under `root`.
fn extents_of_tree(root: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for_each_file(root, &mut |path| match fs::File::open(path) {
        Ok(f) => ioctl::physical_extents(&f, &mut out),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    })?;
    Ok(ranges::merge(out))
}

fn count_files(root: &Path) -> io::Result<usize> {
    let mut n = 0;
    for_each_file(root, &mut |_| {
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

/// Byte ranges `(start, length)`, sorted and merged.
mod ranges {
    /// Sorts and merges overlapping or touching ranges.
    pub fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (s, l) in v {
            match out.last_mut() {
                Some((ls, ll)) if s <= *ls + *ll => *ll = (*ll).max(s + l - *ls),
                _ => out.push((s, l)),
            }
        }
        out
    }

    pub fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
        merge(a.iter().chain(b).copied().collect())
    }

    /// Bytes of merged `a` that merged `b` does not cover.
    pub fn bytes_not_in(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
        let mut total = 0;
        let mut j = 0;
        for &(s, l) in a {
            let end = s + l;
            let mut at = s;
            while j < b.len() && b[j].0 + b[j].1 <= at {
                j += 1;
            }
            let mut k = j;
            while at < end {
                match b.get(k) {
                    Some(&(bs, bl)) if bs < end => {
                        if bs > at {
                            total += bs - at;
                        }
                        at = at.max(bs + bl);
                        k += 1;
                    }
                    _ => {
                        total += end - at;
                        at = end;
                    }
                }
            }
        }
        total
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn merge_union_and_difference() {
            assert_eq!(merge(vec![(10, 5), (0, 4), (4, 2), (14, 1)]), vec![(0, 6), (10, 5)]);
            let a = merge(vec![(0, 100), (200, 50)]);
            let b = merge(vec![(10, 10), (90, 120)]);
            // 0..10, 20..90, 210..250
            assert_eq!(bytes_not_in(&a, &b), 10 + 70 + 40);
            assert_eq!(bytes_not_in(&a, &[]), 150);
            assert_eq!(bytes_not_in(&a, &a), 0);
            assert_eq!(union(&a, &b), vec![(0, 250)]);
        }
    }
}

/// What a btrfs commit made.
#[derive(Debug, Clone)]
pub struct BtrfsCommitReport {
    pub set_id: Uuid,
    /// One per volume, in the order the volumes were given.
    pub snapshots: Vec<ShadowCopyInfo>,
    /// How long writes through the node were held.
    pub hold: Duration,
}

/// The btrfs provider. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct BtrfsProvider {
    volumes: RwLock<BTreeMap<Uuid, Arc<BtrfsVolume>>>,
    /// One commit at a time.
    commit_lock: Mutex<()>,
}

impl BtrfsProvider {
    /// A provider with no volumes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an open volume whose directory must be a btrfs subvolume; finds its
    /// persistent snapshots and destroys what a previous run left otherwise.
    pub fn register(&self, vol: Volume) -> Result<()> {
        let root = vol.root().to_path_buf();
        if !is_subvolume(&root).map_err(|e| VolumeError::io(&root, e))? {
            return Err(VolumeError::NotBtrfsSubvolume { volume: vol.label().to_string(), root });
        }
        let v = BtrfsVolume::open(vol)?;
        self.volumes.write().insert(v.vol.guid(), Arc::new(v));
        Ok(())
    }

    fn entry(&self, key: &str) -> Result<Arc<BtrfsVolume>> {
        let vols = self.volumes.read();
        if let Ok(g) = key.parse::<Uuid>()
            && let Some(v) = vols.get(&g)
        {
            return Ok(v.clone());
        }
        vols.values()
            .find(|v| v.vol.label() == key)
            .cloned()
            .ok_or_else(|| VolumeError::UnknownVolume(key.to_string()))
    }

    /// The registered volume whose label or GUID is `key`.
    pub fn volume(&self, key: &str) -> Result<Volume> {
        self.entry(key).map(|v| v.vol.clone())
    }

    /// Whether this provider snapshots the volume named `key`.
    pub fn is_supported(&self, key: &str) -> bool {
        self.entry(key).is_ok()
    }

    /// The volumes this provider supports.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.volumes
            .read()
            .values()
            .map(|v| VolumeInfo {
                guid: v.vol.guid(),
                label: v.vol.label().to_string(),
                root: v.vol.root().to_path_buf(),
                block_size: v.vol.block_size(),
                snapshots: v.snaps.read().len(),
            })
            .collect()
    }

    /// Commits one read-only snapshot of each volume of `keys` as set `set_id`.
    pub fn commit(
        &self,
        keys: &[String],
        set_id: Uuid,
        opts: &CommitOptions,
    ) -> Result<BtrfsCommitReport> {
        match self.commit_within(keys, set_id, opts, || Ok::<(), std::convert::Infallible>(())) {
            Ok((r, ())) => Ok(r),
            Err(WithinError::Volume(e)) => Err(e),
            Err(WithinError::Within(never)) => match never {},
        }
    }

    /// Commits under flush-and-hold: the dirty data of the subvolumes is written back, the
    /// writes through the node are held (the volumes' barriers, in GUID order, before the
    /// deadline), written back again, each subvolume is snapshotted read-only, `within` runs
    /// (another provider's commit of the same set), and the writes are released. If anything
    /// fails before the release, the snapshots made are destroyed. Afterwards the state files
    /// are written and shadow storage is checked against its limit.
    pub fn commit_within<T, E>(
        &self,
        keys: &[String],
        set_id: Uuid,
        opts: &CommitOptions,
        within: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<(BtrfsCommitReport, T), WithinError<E>> {
        let given: Vec<Arc<BtrfsVolume>> =
            keys.iter().map(|k| self.entry(k)).collect::<Result<_>>()?;
        if given.is_empty() {
            return Err(VolumeError::EmptySet(set_id).into());
        }
        let live: Vec<Volume> = given.iter().map(|v| v.vol.clone()).collect();
        let order = barrier_order(&live);
        let vols: Vec<Arc<BtrfsVolume>> = order
            .iter()
            .filter_map(|o| given.iter().find(|v| v.vol.guid() == o.guid()).cloned())
            .collect();
        let _one = self.commit_lock.lock();
        for v in &vols {
            let count = v.snaps.read().len();
            if count >= MAX_SNAPSHOTS {
                return Err(VolumeError::TooManySnapshots {
                    volume: v.vol.label().to_string(),
                    count,
                }
                .into());
            }
            // Most dirty data goes to disk before writes are held.
            syncfs(v.vol.root()).map_err(v.err())?;
        }
        let start = Instant::now();
        let deadline = start + opts.timeout;
        let guards = hold_writes(&order, start, deadline, opts.timeout)?;
        let mut made: Vec<(Arc<BtrfsVolume>, SnapState)> = Vec::with_capacity(vols.len());
        let undo = |made: &[(Arc<BtrfsVolume>, SnapState)]| {
            for (v, s) in made {
                let snap = BtrfsSnap { state: s.clone(), held_bytes: AtomicU64::new(0) };
                if let Err(e) = v.destroy(&snap) {
                    tracing::warn!(volume = v.vol.label(), snapshot = %s.id, error = %e,
                        "could not destroy a snapshot of a failed commit");
                }
            }
        };
        for v in &vols {
            let state = SnapState {
                id: Uuid::new_v4(),
                set_id,
                seq: v.next_seq.fetch_add(1, Ordering::AcqRel),
                created_unix_ms: now_ms(),
                persistent: opts.persistent,
                files: 0,
            };
            // The snapshot ioctl writes back the subvolume's dirty data itself; syncing first
            // keeps the flush an explicit step of the barrier, as for the software provider.
            let r = syncfs(v.vol.root()).and_then(|()| {
                ioctl::snapshot_readonly(v.vol.root(), &v.dir, OsStr::new(&state.name()))
            });
            if let Err(e) = r {
                undo(&made);
                drop(guards);
                return Err(VolumeError::Btrfs {
                    volume: v.vol.label().to_string(),
                    op: "creating a read-only snapshot",
                    source: e,
                }
                .into());
            }
            made.push((v.clone(), state));
            if Instant::now() > deadline {
                undo(&made);
                drop(guards);
                return Err(VolumeError::HoldTimeout {
                    volume: v.vol.label().to_string(),
                    waited: start.elapsed(),
                    limit: opts.timeout,
                }
                .into());
            }
        }
        let inner = match within() {
            Ok(t) => t,
            Err(e) => {
                undo(&made);
                drop(guards);
                return Err(WithinError::Within(e));
            }
        };
        drop(guards);
        let hold = start.elapsed();
        tracing::info!(set = %set_id, volumes = made.len(), hold_ms = hold.as_secs_f64() * 1e3,
            "btrfs snapshot set committed");
        // Record each snapshot; on failure no snapshot of the set survives.
        let mut recorded: Vec<(Arc<BtrfsVolume>, Arc<BtrfsSnap>)> = Vec::new();
        for (v, mut state) in made.iter().cloned() {
            let dir = v.dir.join(state.name());
            let r = count_files(&dir).and_then(|files| {
                state.files = files;
                let host = crate::host::HostFs::new(&v.dir)?;
                let json = serde_json::to_vec_pretty(&state)?;
                crate::fs::write_atomic(&host, Path::new(&format!("{}.json", state.name())), &json)
            });
            if let Err(e) = r {
                for (v2, s2) in &recorded {
                    if let Err(e2) = v2.delete(s2.state.id, DeleteReason::PreservationFailed) {
                        tracing::warn!(snapshot = %s2.state.id, error = %e2,
                            "could not delete a snapshot of a set whose recording failed");
                    }
                }
                undo(&made[recorded.len()..]);
                return Err(v.err()(e).into());
            }
            let snap = Arc::new(BtrfsSnap { state, held_bytes: AtomicU64::new(0) });
            v.snaps.write().push(snap.clone());
            recorded.push((v, snap));
        }
        for (v, s) in &recorded {
            v.vol.inner.events.emit(VolumeEvent::SnapshotCreated {
                volume: v.vol.guid(),
                snapshot: s.state.id,
                set: set_id,
                persistent: s.state.persistent,
            });
        }
        // Measuring walks every snapshot's extent map: only a volume with a limit pays it at
        // each commit (the others are measured by the periodic check).
        for v in vols.iter().filter(|v| v.max.lock().is_some()) {
            if let Err(e) = v.enforce() {
                tracing::warn!(volume = v.vol.label(), error = %e,
                    "could not check btrfs shadow storage after a commit");
            }
        }
        let snapshots = given
            .iter()
            .filter_map(|v| {
                recorded.iter().find(|(r, _)| r.vol.guid() == v.vol.guid()).map(|(r, s)| r.info(s))
            })
            .collect();
        Ok((BtrfsCommitReport { set_id, snapshots, hold }, inner))
    }

    fn owner_of(&self, id: Uuid) -> Result<Arc<BtrfsVolume>> {
        self.volumes
            .read()
            .values()
            .find(|v| v.snaps.read().iter().any(|s| s.state.id == id))
            .cloned()
            .ok_or(VolumeError::SnapshotNotFound(id))
    }

    /// Deletes snapshot `id`; returns the bytes it was charged at the last measure.
    pub fn delete_snapshot(&self, id: Uuid) -> Result<u64> {
        self.owner_of(id)?.delete(id, DeleteReason::Requested)
    }

    /// Deletes `id` with a given reason (the release of a backup's set).
    pub fn delete_snapshot_because(&self, id: Uuid, reason: DeleteReason) -> Result<u64> {
        self.owner_of(id)?.delete(id, reason)
    }

    /// Deletes the oldest snapshot of volume `key`; returns its id, if there was one.
    pub fn delete_oldest(&self, key: &str) -> Result<Option<Uuid>> {
        let v = self.entry(key)?;
        let Some(oldest) = v.snaps.read().first().map(|s| s.state.id) else { return Ok(None) };
        v.delete(oldest, DeleteReason::Requested)?;
        Ok(Some(oldest))
    }

    /// Deletes every snapshot of volume `key`; returns how many.
    pub fn delete_all(&self, key: &str) -> Result<usize> {
        let v = self.entry(key)?;
        let ids: Vec<Uuid> = v.snaps.read().iter().rev().map(|s| s.state.id).collect();
        for id in &ids {
            v.delete(*id, DeleteReason::Requested)?;
        }
        Ok(ids.len())
    }

    /// Every snapshot of every registered volume, by volume then age. Shadow-storage bytes
    /// are those of the last measure.
    pub fn query(&self) -> Vec<ShadowCopyInfo> {
        self.volumes
            .read()
            .values()
            .flat_map(|v| v.snaps.read().iter().map(|s| v.info(s)).collect::<Vec<_>>())
            .collect()
    }

    /// A read-only view of snapshot `id`.
    pub fn view(&self, id: Uuid) -> Result<BtrfsView> {
        let v = self.owner_of(id)?;
        let snaps = v.snaps.read();
        let s = snaps.iter().find(|s| s.state.id == id).ok_or(VolumeError::SnapshotNotFound(id))?;
        Ok(BtrfsView::new(id, v.dir.join(s.state.name())))
    }

    /// Sets the shadow-storage limit of volume `key` (`None`: unbounded; at least 1 MiB, as
    /// for the software provider). Shrinking below the used size deletes the oldest snapshots.
    pub fn set_shadow_storage_max(&self, key: &str, max_bytes: Option<u64>) -> Result<()> {
        let v = self.entry(key)?;
        if let Some(m) = max_bytes
            && m < 1 << 20
        {
            return Err(VolumeError::ShadowStorage {
                volume: v.vol.label().to_string(),
                why: format!("maximum {m} B is below the 1 MiB minimum"),
            });
        }
        let host = crate::host::HostFs::new(&v.dir).map_err(v.err())?;
        let json = serde_json::to_vec_pretty(&StorageState { max_bytes })
            .map_err(|e| v.err()(e.into()))?;
        crate::fs::write_atomic(&host, Path::new("storage.json"), &json).map_err(v.err())?;
        *v.max.lock() = max_bytes;
        v.enforce()?;
        Ok(())
    }

    /// Measures every volume's shadow storage and deletes the oldest snapshots of those over
    /// their limit (with the overflow event). Other programs write to the subvolumes without
    /// the node seeing it, so the node calls this periodically.
    pub fn check_shadow_storage(&self) -> Result<()> {
        let vols: Vec<Arc<BtrfsVolume>> = self.volumes.read().values().cloned().collect();
        for v in vols {
            if !v.snaps.read().is_empty() || v.used.load(Ordering::Acquire) != 0 {
                v.enforce()?;
            }
        }
        Ok(())
    }

    /// Shadow storage of every registered volume (kept on the volume itself), as last
    /// measured.
    pub fn list_shadow_storage(&self) -> Vec<ShadowStorageInfo> {
        self.volumes
            .read()
            .values()
            .map(|v| ShadowStorageInfo {
                for_volume: v.vol.guid(),
                for_label: v.vol.label().to_string(),
                on_volume: v.vol.guid(),
                on_root: v.vol.root().to_path_buf(),
                used_bytes: v.used.load(Ordering::Acquire),
                max_bytes: *v.max.lock(),
            })
            .collect()
    }
}
