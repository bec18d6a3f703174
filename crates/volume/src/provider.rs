//! The software provider: what the coordinator drives to make snapshots of shadow volumes.
//!
//! It holds the registered volumes (found by label or GUID) and offers the provider verbs of
//! the reference system in plain Rust: begin a snapshot set, add volumes, commit it with
//! flush-and-hold (bounded by a timeout) or abort it; delete snapshots by id, by set, oldest
//! of a volume or all of a volume; query snapshots; add, resize and list shadow storage.
//!
//! A committed set of non-persistent snapshots is released — its snapshots deleted — when the
//! [`CommittedSet`] handle is dropped (or [`CommittedSet::release`]d), so a requester that
//! ends for any reason cannot leave backup snapshots behind. [`CommittedSet::keep`] detaches
//! the handle (the snapshots then live until deleted or until the next restart).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Result, VolumeError};
use crate::events::DeleteReason;
use crate::hold::{CommitOptions, commit_set};
use crate::snapshot::ShadowCopyInfo;
use crate::view::SnapshotView;
use crate::volume::{ShadowStorageInfo, Volume};

/// Name under which the provider registers with the coordinator.
pub const PROVIDER_NAME: &str = "shadowcopy-software-provider";

/// A registered volume as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub guid: Uuid,
    pub label: String,
    pub root: PathBuf,
    pub block_size: u64,
    pub snapshots: usize,
}

/// One snapshot of a committed set, with its view.
#[derive(Debug, Clone)]
pub struct ShadowCopy {
    pub info: ShadowCopyInfo,
    pub view: Arc<SnapshotView>,
}

/// A committed snapshot set. Dropping it releases non-persistent snapshots.
#[derive(Debug)]
pub struct CommittedSet {
    pub set_id: Uuid,
    pub snapshots: Vec<ShadowCopy>,
    /// How long writes were held.
    pub hold: Duration,
    release_on_drop: Vec<(Volume, Uuid)>,
}

impl CommittedSet {
    /// Detaches the handle: dropping it no longer deletes the snapshots.
    pub fn keep(mut self) -> Self {
        self.release_on_drop.clear();
        self
    }

    /// Deletes the set's non-persistent snapshots now (persistent ones stay).
    pub fn release(mut self) {
        self.release_now();
    }

    fn release_now(&mut self) {
        for (v, id) in self.release_on_drop.drain(..) {
            match v.delete_snapshot_because(id, DeleteReason::Released) {
                Ok(_) | Err(VolumeError::SnapshotNotFound(_)) => {}
                Err(e) => {
                    tracing::error!(snapshot = %id, error = %e, "releasing a snapshot failed")
                }
            }
        }
    }
}

impl Drop for CommittedSet {
    fn drop(&mut self) {
        self.release_now();
    }
}

#[derive(Debug)]
struct PendingSet {
    opts: CommitOptions,
    volumes: Vec<Uuid>,
}

/// The software provider. `Send + Sync`; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct SoftwareProvider {
    volumes: RwLock<BTreeMap<Uuid, Volume>>,
    sets: Mutex<HashMap<Uuid, PendingSet>>,
    /// One commit at a time: a second waits rather than interleaving barriers.
    commit_lock: Mutex<()>,
}

impl SoftwareProvider {
    /// A provider with no volumes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an open volume (replacing one with the same GUID).
    pub fn register(&self, v: Volume) {
        self.volumes.write().insert(v.guid(), v);
    }

    /// Forgets a volume; returns it.
    pub fn unregister(&self, key: &str) -> Result<Volume> {
        let guid = self.volume(key)?.guid();
        self.volumes.write().remove(&guid).ok_or_else(|| VolumeError::UnknownVolume(key.into()))
    }

    /// The registered volume whose label or GUID is `key`.
    pub fn volume(&self, key: &str) -> Result<Volume> {
        let vols = self.volumes.read();
        if let Ok(g) = key.parse::<Uuid>()
            && let Some(v) = vols.get(&g)
        {
            return Ok(v.clone());
        }
        vols.values()
            .find(|v| v.label() == key)
            .cloned()
            .ok_or_else(|| VolumeError::UnknownVolume(key.to_string()))
    }

    /// Whether this provider can snapshot the volume named `key`.
    pub fn is_supported(&self, key: &str) -> bool {
        self.volume(key).is_ok()
    }

    /// The volumes this provider supports.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.volumes
            .read()
            .values()
            .map(|v| VolumeInfo {
                guid: v.guid(),
                label: v.label().to_string(),
                root: v.root().to_path_buf(),
                block_size: v.block_size(),
                snapshots: v.snapshots().len(),
            })
            .collect()
    }

    /// Starts a snapshot set; returns its id.
    pub fn begin_set(&self, opts: CommitOptions) -> Uuid {
        let id = Uuid::new_v4();
        self.sets.lock().insert(id, PendingSet { opts, volumes: Vec::new() });
        id
    }

    /// Adds volume `key` to pending set `set`; returns the volume's GUID.
    pub fn add_volume(&self, set: Uuid, key: &str) -> Result<Uuid> {
        let guid = self.volume(key)?.guid();
        let mut sets = self.sets.lock();
        let s = sets.get_mut(&set).ok_or(VolumeError::UnknownSet(set))?;
        if s.volumes.contains(&guid) {
            return Err(VolumeError::VolumeAlreadyInSet { set, volume: guid });
        }
        s.volumes.push(guid);
        Ok(guid)
    }

    /// Commits pending set `set` with flush-and-hold. On failure nothing of the set remains
    /// and the set is gone (begin a new one to retry).
    pub fn commit(&self, set: Uuid) -> Result<CommittedSet> {
        let pending = self.sets.lock().remove(&set).ok_or(VolumeError::UnknownSet(set))?;
        if pending.volumes.is_empty() {
            return Err(VolumeError::EmptySet(set));
        }
        let vols: Vec<Volume> =
            pending.volumes.iter().map(|g| self.volume(&g.to_string())).collect::<Result<_>>()?;
        let _one = self.commit_lock.lock();
        let report = commit_set(&vols, set, &pending.opts)?;
        let mut snapshots = Vec::new();
        let mut release_on_drop = Vec::new();
        for (v, info) in vols.iter().zip(report.snapshots) {
            let view = Arc::new(v.view(info.id)?);
            if !info.persistent {
                release_on_drop.push((v.clone(), info.id));
            }
            snapshots.push(ShadowCopy { info, view });
        }
        Ok(CommittedSet { set_id: set, snapshots, hold: report.hold, release_on_drop })
    }

    /// Abandons pending set `set` (nothing was made yet).
    pub fn abort(&self, set: Uuid) -> Result<()> {
        self.sets.lock().remove(&set).map(|_| ()).ok_or(VolumeError::UnknownSet(set))
    }

    fn owner_of(&self, id: Uuid) -> Result<Volume> {
        self.volumes
            .read()
            .values()
            .find(|v| v.snapshots().iter().any(|s| s.id == id))
            .cloned()
            .ok_or(VolumeError::SnapshotNotFound(id))
    }

    /// Deletes snapshot `id`; returns the bytes freed.
    pub fn delete_snapshot(&self, id: Uuid) -> Result<u64> {
        self.owner_of(id)?.delete_snapshot(id)
    }

    /// Deletes every snapshot of set `set_id`; returns how many.
    pub fn delete_set(&self, set_id: Uuid) -> Result<usize> {
        let victims: Vec<ShadowCopyInfo> =
            self.query().into_iter().filter(|s| s.set_id == set_id).collect();
        for s in &victims {
            self.delete_snapshot(s.id)?;
        }
        Ok(victims.len())
    }

    /// Deletes the oldest snapshot of volume `key`; returns its id, if there was one.
    pub fn delete_oldest(&self, key: &str) -> Result<Option<Uuid>> {
        let v = self.volume(key)?;
        let Some(oldest) = v.snapshots().first().map(|s| s.id) else { return Ok(None) };
        v.delete_snapshot(oldest)?;
        Ok(Some(oldest))
    }

    /// Deletes every snapshot of volume `key`; returns how many.
    pub fn delete_all(&self, key: &str) -> Result<usize> {
        let v = self.volume(key)?;
        let ids: Vec<Uuid> = v.snapshots().iter().rev().map(|s| s.id).collect();
        for id in &ids {
            v.delete_snapshot(*id)?;
        }
        Ok(ids.len())
    }

    /// Every snapshot of every registered volume, by volume then age.
    pub fn query(&self) -> Vec<ShadowCopyInfo> {
        self.volumes.read().values().flat_map(|v| v.snapshots()).collect()
    }

    /// A read-only view of snapshot `id`.
    pub fn view(&self, id: Uuid) -> Result<SnapshotView> {
        self.owner_of(id)?.view(id)
    }

    /// Puts the diff areas of volume `for_key` on volume `on_key` with a maximum size
    /// (`None`: unbounded). Refused while `for_key` has snapshots.
    pub fn add_shadow_storage(&self, for_key: &str, on_key: &str, max: Option<u64>) -> Result<()> {
        let v = self.volume(for_key)?;
        let on = self.volume(on_key)?;
        v.set_shadow_storage_location(&on)?;
        v.set_shadow_storage_max(max)
    }

    /// Changes the maximum size of volume `for_key`'s shadow storage; shrinking below the used
    /// size deletes its oldest snapshots.
    pub fn resize_shadow_storage(&self, for_key: &str, max: Option<u64>) -> Result<()> {
        self.volume(for_key)?.set_shadow_storage_max(max)
    }

    /// Shadow storage of every registered volume.
    pub fn list_shadow_storage(&self) -> Vec<ShadowStorageInfo> {
        self.volumes.read().values().map(|v| v.shadow_storage()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FileSystem, OpenMode, read_all};
    use crate::volume::VolumeOptions;
    use std::path::Path;

    fn provider(dir: &Path) -> SoftwareProvider {
        let p = SoftwareProvider::new();
        for label in ["logs", "db"] {
            p.register(Volume::create(dir.join(label), VolumeOptions::new(label)).unwrap());
        }
        p
    }

    #[test]
    fn set_commit_views_release_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path());
        assert!(p.is_supported("logs") && !p.is_supported("nope"));
        let db = p.volume("db").unwrap();
        db.open(Path::new("e.edb"), OpenMode::Create).unwrap().write_at(b"v1", 0).unwrap();
        let set = p.begin_set(CommitOptions::default());
        p.add_volume(set, "logs").unwrap();
        let g = p.add_volume(set, &db.guid().to_string()).unwrap();
        assert_eq!(g, db.guid());
        assert!(matches!(p.add_volume(set, "db"), Err(VolumeError::VolumeAlreadyInSet { .. })));
        let committed = p.commit(set).unwrap();
        assert!(matches!(p.commit(set), Err(VolumeError::UnknownSet(_))));
        db.open(Path::new("e.edb"), OpenMode::ReadWrite).unwrap().write_at(b"v2", 0).unwrap();
        let view = &committed.snapshots[1].view;
        assert_eq!(read_all(&**view, Path::new("e.edb")).unwrap(), b"v1");
        let q = p.query();
        assert_eq!(q.len(), 2);
        assert!(q.iter().all(|s| s.set_id == set && !s.persistent));
        drop(committed); // non-persistent: released
        assert!(p.query().is_empty());

        let set = p.begin_set(CommitOptions { persistent: true, ..Default::default() });
        p.add_volume(set, "db").unwrap();
        let c = p.commit(set).unwrap();
        let id = c.snapshots[0].info.id;
        drop(c); // persistent: stays
        assert_eq!(p.delete_set(set).unwrap(), 1);
        assert!(matches!(p.delete_snapshot(id), Err(VolumeError::SnapshotNotFound(_))));

        let set = p.begin_set(CommitOptions::default());
        p.abort(set).unwrap();
        assert!(matches!(p.commit(set), Err(VolumeError::UnknownSet(_))));
    }

    #[test]
    fn delete_oldest_all_and_shadow_storage() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider(dir.path());
        let mut kept = Vec::new();
        for _ in 0..3 {
            let set = p.begin_set(CommitOptions::default());
            p.add_volume(set, "db").unwrap();
            kept.push(p.commit(set).unwrap().keep());
        }
        let first = kept[0].snapshots[0].info.id;
        assert_eq!(p.delete_oldest("db").unwrap(), Some(first));
        assert_eq!(p.delete_all("db").unwrap(), 2);
        assert_eq!(p.delete_oldest("db").unwrap(), None);
        p.add_shadow_storage("db", "logs", Some(8 << 20)).unwrap();
        let ss: Vec<_> =
            p.list_shadow_storage().into_iter().filter(|s| s.for_label == "db").collect();
        assert_eq!(ss[0].on_volume, p.volume("logs").unwrap().guid());
        assert_eq!(ss[0].max_bytes, Some(8 << 20));
        p.resize_shadow_storage("db", None).unwrap();
        assert!(p.resize_shadow_storage("db", Some(10)).is_err());
        assert_eq!(p.volumes().len(), 2);
    }
}
