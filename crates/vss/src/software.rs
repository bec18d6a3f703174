//! [`SoftwareProviderAdapter`]: the shadow volumes' software provider behind the coordinator's
//! [`Provider`] trait, and a bridge from volume events to the node's event log.
//!
//! The adapter keeps the provider's volume registry, queries, deletion and views, and commits
//! with [`volume::commit_set`] under the *coordinator's* snapshot-set id (rather than the id
//! [`SoftwareProvider::begin_set`] would invent), so that the id in the job's events, in the
//! backup components document, in the job journal and in a snapshot listing is one and the
//! same — and start-up recovery can find an interrupted job's snapshots by it.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use events::{EventSink, catalog};
use parking_lot::Mutex;
use serde_json::json;
use uuid::Uuid;
use volume::provider::PROVIDER_NAME;
use volume::{
    CommitOptions, DeleteReason, FsRef, SoftwareProvider, Volume, VolumeError, VolumeEvent,
    WithinError,
};

use crate::provider::{
    CommittedSnapshot, Provider, ProviderError, ReadOnlyFs, SnapshotContext, SnapshotInfo,
};

/// A stable id for the software provider (the reference gives its system provider a fixed id).
pub const SOFTWARE_PROVIDER_ID: Uuid = Uuid::from_u128(0x5c0c_0b1a_7d2e_4a6f_9b31_0e5d_a1f2_c3b4);

/// The software provider as a coordinator [`Provider`].
pub struct SoftwareProviderAdapter {
    inner: Arc<SoftwareProvider>,
    /// Sets begun and not yet committed or aborted: (volume labels, persistent).
    pending: Mutex<HashMap<Uuid, (Vec<String>, bool)>>,
    /// One flush-and-hold at a time through this adapter.
    commit_lock: Mutex<()>,
}

impl SoftwareProviderAdapter {
    pub fn new(inner: Arc<SoftwareProvider>) -> Self {
        SoftwareProviderAdapter {
            inner,
            pending: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
        }
    }

    /// The wrapped provider (for shadow-storage administration).
    pub fn provider(&self) -> &Arc<SoftwareProvider> {
        &self.inner
    }
}

fn map_err(volume: &str, e: VolumeError) -> ProviderError {
    ProviderError::from_volume("software provider", volume, e)
}

impl Provider for SoftwareProviderAdapter {
    fn id(&self) -> Uuid {
        SOFTWARE_PROVIDER_ID
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
        let volumes: Vec<Volume> = labels
            .iter()
            .map(|l| self.inner.volume(l).map_err(|e| map_err(l, e)))
            .collect::<Result<_, _>>()?;
        let _one = self.commit_lock.lock();
        let opts = CommitOptions { persistent, timeout: hold_timeout };
        let (report, ()) =
            volume::commit_set_within(&volumes, set, &opts, within).map_err(|e| match e {
                WithinError::Within(e) => e,
                WithinError::Volume(VolumeError::HoldTimeout { .. }) => {
                    ProviderError::FlushHoldTimeout { set, timeout: hold_timeout }
                }
                WithinError::Volume(other) => map_err(&labels.join(", "), other),
            })?;
        let mut out = Vec::new();
        for (v, info) in volumes.iter().zip(report.snapshots) {
            let view = match v.view(info.id) {
                Ok(view) => view,
                Err(e) => {
                    // Do not leave a half-reported set behind.
                    if let Err(e2) = self.inner.delete_set(set) {
                        tracing::warn!(set = %set, error = %e2,
                            "cannot delete a half-reported snapshot set");
                    }
                    return Err(map_err(v.label(), e));
                }
            };
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

/// Forwards a volume's events to the node's event log (snapshot deletions — with the
/// shadow-storage overflow ones as their own warning event — and shadow storage filling up),
/// on a thread that ends when the volume is dropped.
pub fn forward_volume_events(
    volume: &Volume,
    sink: Arc<dyn EventSink>,
) -> std::io::Result<JoinHandle<()>> {
    forward_volume_events_of(volume, sink, PROVIDER_NAME)
}

/// [`forward_volume_events`] for a volume whose snapshots `provider` takes (the name in the
/// deletion events).
pub fn forward_volume_events_of(
    volume: &Volume,
    sink: Arc<dyn EventSink>,
    provider: &'static str,
) -> std::io::Result<JoinHandle<()>> {
    let rx = volume.subscribe();
    let label = volume.label().to_string();
    std::thread::Builder::new().name(format!("vss-volume-events-{label}")).spawn(move || {
        for ev in rx {
            match ev {
                VolumeEvent::SnapshotDeleted { snapshot, reason: DeleteReason::Overflow, bytes_freed, .. } => sink
                    .emit(
                        &catalog::PROVIDER_SNAPSHOT_DELETED_OVERFLOW,
                        None,
                        json!({"volume": label, "snapshot": snapshot.to_string(), "bytes": bytes_freed}),
                    ),
                VolumeEvent::SnapshotDeleted { snapshot, reason, bytes_freed, .. } => sink.emit(
                    &catalog::PROVIDER_SNAPSHOT_DELETED,
                    None,
                    json!({"provider": provider, "snapshot": snapshot.to_string(), "volume": label,
                           "reason": format!("{reason:?}"), "bytes": bytes_freed}),
                ),
                VolumeEvent::ShadowStorageNearFull { used, max, .. } => sink.emit(
                    &catalog::PROVIDER_SHADOW_STORAGE_NEAR_FULL,
                    None,
                    json!({"volume": label, "used": used, "max": max}),
                ),
                VolumeEvent::PreservationFailed { snapshot, error, .. } => sink.emit(
                    &catalog::PROVIDER_PRESERVATION_FAILED,
                    None,
                    json!({"volume": label, "snapshot": snapshot.to_string(), "error": error}),
                ),
                VolumeEvent::SnapshotCreated { .. } => {}
            }
        }
    })
}
