//! [`BtrfsProviderAdapter`]: the btrfs provider ([`volume::btrfs`]) behind the coordinator's
//! [`Provider`] trait — the same shape as [`crate::software::SoftwareProviderAdapter`]: it
//! commits under the coordinator's snapshot-set id and hands out read-only views, so backups,
//! verify and expose read a btrfs snapshot exactly as a software one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;
use volume::btrfs::PROVIDER_NAME;
use volume::{BtrfsProvider, CommitOptions, FsRef, VolumeError, WithinError};

use crate::provider::{
    CommittedSnapshot, Provider, ProviderError, ReadOnlyFs, SnapshotContext, SnapshotInfo,
};

/// A stable id for the btrfs provider.
pub const BTRFS_PROVIDER_ID: Uuid = Uuid::from_u128(0x5c0c_0b1a_7d2e_4a6f_9b31_0e5d_b7f5_e3a8);

/// The btrfs provider as a coordinator [`Provider`].
pub struct BtrfsProviderAdapter {
    inner: Arc<BtrfsProvider>,
    /// Sets begun and not yet committed or aborted: (volume labels, persistent).
    pending: Mutex<HashMap<Uuid, (Vec<String>, bool)>>,
}

impl BtrfsProviderAdapter {
    pub fn new(inner: Arc<BtrfsProvider>) -> Self {
        BtrfsProviderAdapter { inner, pending: Mutex::new(HashMap::new()) }
    }

    /// The wrapped provider (for shadow-storage administration).
    pub fn provider(&self) -> &Arc<BtrfsProvider> {
        &self.inner
    }
}

fn map_err(volume: &str, e: VolumeError) -> ProviderError {
    ProviderError::from_volume("btrfs provider", volume, e)
}

impl Provider for BtrfsProviderAdapter {
    fn id(&self) -> Uuid {
        BTRFS_PROVIDER_ID
    }

    fn name(&self) -> String {
        PROVIDER_NAME.to_string()
    }

    fn supports(&self, volume: &str) -> bool {
        self.inner.is_supported(volume)
    }

    fn begin_set(
        &self,
        set: Uuid,
        volumes: &[String],
        context: SnapshotContext,
    ) -> Result<(), ProviderError> {
        if let Some(v) = volumes.iter().find(|v| !self.inner.is_supported(v)) {
            return Err(ProviderError::UnsupportedVolume { volume: v.clone() });
        }
        self.pending.lock().insert(set, (volumes.to_vec(), context.persistent()));
        Ok(())
    }

    fn commit_set(
        &self,
        set: Uuid,
        hold_timeout: Duration,
    ) -> Result<Vec<CommittedSnapshot>, ProviderError> {
        self.commit_set_within(set, hold_timeout, &mut || Ok(()))
    }

    fn commit_set_within(
        &self,
        set: Uuid,
        hold_timeout: Duration,
        within: &mut dyn FnMut() -> Result<(), ProviderError>,
    ) -> Result<Vec<CommittedSnapshot>, ProviderError> {
        let (labels, persistent) =
            self.pending.lock().remove(&set).ok_or(ProviderError::UnknownSet { set })?;
        let opts = CommitOptions { persistent, timeout: hold_timeout };
        let (report, ()) =
            self.inner.commit_within(&labels, set, &opts, within).map_err(|e| match e {
                WithinError::Within(e) => e,
                WithinError::Volume(VolumeError::HoldTimeout { .. }) => {
                    ProviderError::FlushHoldTimeout { set, timeout: hold_timeout }
                }
                WithinError::Volume(other) => map_err(&labels.join(", "), other),
            })?;
        let mut out = Vec::new();
        for info in report.snapshots {
            let view = self.inner.view(info.id).map_err(|e| map_err(&info.volume_label, e))?;
            out.push(CommittedSnapshot {
                snapshot_id: info.id,
                volume: info.volume_label.clone(),
                view: ReadOnlyFs::wrap(Arc::new(view)),
                held: Some(report.hold),
            });
        }
        Ok(out)
    }

    fn holds_within(&self) -> bool {
        true
    }

    fn abort_set(&self, set: Uuid) -> Result<(), ProviderError> {
        self.pending.lock().remove(&set);
        Ok(())
    }

    fn delete(&self, snapshot: Uuid) -> Result<(), ProviderError> {
        self.inner.delete_snapshot(snapshot).map(|_| ()).map_err(|e| map_err("", e))
    }

    fn query(&self) -> Vec<SnapshotInfo> {
        self.inner
            .query()
            .into_iter()
            .map(|s| SnapshotInfo {
                snapshot_id: s.id,
                set_id: s.set_id,
                volume: s.volume_label,
                created_ms: s.created_unix_ms,
                persistent: s.persistent,
            })
            .collect()
    }

    fn view(&self, snapshot: Uuid) -> Result<FsRef, ProviderError> {
        let view = self.inner.view(snapshot).map_err(|e| map_err("", e))?;
        Ok(ReadOnlyFs::wrap(Arc::new(view)))
    }
}
