//! Shadow storage of a volume: where its diff areas live and how large they may grow, the
//! accounting of the bytes they use, and deletion — requested, or oldest first when storage
//! overflows — which first hands a deleted snapshot's preserved blocks to the next older one.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Volume, VolumeInner, io_at, remove_if_exists};
use crate::diff::{Appended, DiffArea};
use crate::error::{Result, VolumeError};
use crate::events::{DeleteReason, VolumeEvent};
use crate::snapshot::Snapshot;
use crate::table::FileTable;
use crate::volume::HIDDEN;

/// Share of the shadow-storage maximum past which a warning event is sent.
const NEAR_FULL_PERCENT: u64 = 90;

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
pub(super) fn diff_dir_of(st: &StorageConfig, guid: Uuid) -> PathBuf {
    st.on_root.join(HIDDEN).join("diff").join(guid.to_string())
}

/// Copies the records of `from` into `to` (blocks `to` lacks; only files `to`'s table holds,
/// when it has one). `to`'s content for such a block equals `from`'s: had the block changed
/// between the two snapshots, it would have been preserved into `to` at that time.
pub(super) fn merge_into(
    from: &DiffArea,
    to: &DiffArea,
    table: Option<&FileTable>,
) -> io::Result<u64> {
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

impl Volume {
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
}

impl VolumeInner {
    pub(crate) fn account_growth(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Counts `n` blocks copied on write (see [`Volume::blocks_preserved`]).
    pub(crate) fn count_preserved(&self, n: u64) {
        self.preserved_blocks.fetch_add(n, Ordering::Relaxed);
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
            // A run of blocks preserved at once can step over the near-full band: the
            // warning still comes before the deletion it warns of.
            if !self.near_full.swap(true, Ordering::AcqRel) {
                self.events.emit(VolumeEvent::ShadowStorageNearFull {
                    volume: self.guid,
                    used: used + need,
                    max,
                });
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
        if self.snaps.read().iter().any(|s| s.id == id) {
            self.run_before_delete(id);
        }
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
}
