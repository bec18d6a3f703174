//! The provider model: components that take snapshots of volumes.
//!
//! The coordinator asks a provider to *begin* a snapshot set (reserve what it needs for the
//! volumes), to *commit* it under one flush-and-hold (writes on the volumes held, bounded by a
//! timeout, while the snapshots are recorded) and gets back, per volume, a snapshot id and a
//! read-only view; or to *abort* it. Snapshots are later *deleted* (auto-release at the end of
//! a backup, or on request for persistent ones) and can be *queried*.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use volume::{DirEntry, FileRef, FileSystem, FsRef, Metadata, OpenMode};

/// The snapshot context (the reference's contexts and their attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotContext {
    /// Non-persistent, auto-release, writers involved. The default.
    #[default]
    Backup,
    /// Non-persistent, no writers.
    FileShareBackup,
    /// Persistent, writers involved.
    AppRollback,
    /// Persistent, no writers.
    NasRollback,
    /// Persistent, read-only, client-accessible, no writers.
    ClientAccessible,
    /// Persistent, client-accessible, with writers (application-consistent).
    ClientAccessibleWriters,
}

impl SnapshotContext {
    /// Whether snapshots survive the session (and a restart).
    pub fn persistent(self) -> bool {
        !matches!(self, SnapshotContext::Backup | SnapshotContext::FileShareBackup)
    }

    /// Whether snapshots are deleted when the requester's session ends.
    pub fn auto_release(self) -> bool {
        !self.persistent()
    }

    /// Whether writers take part.
    pub fn writers(self) -> bool {
        matches!(
            self,
            SnapshotContext::Backup
                | SnapshotContext::AppRollback
                | SnapshotContext::ClientAccessibleWriters
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotContext::Backup => "backup",
            SnapshotContext::FileShareBackup => "file_share_backup",
            SnapshotContext::AppRollback => "app_rollback",
            SnapshotContext::NasRollback => "nas_rollback",
            SnapshotContext::ClientAccessible => "client_accessible",
            SnapshotContext::ClientAccessibleWriters => "client_accessible_writers",
        }
    }
}

/// Errors of a provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("volume {volume} is not supported by this provider")]
    UnsupportedVolume { volume: String },
    #[error("snapshot set {set} is unknown to this provider")]
    UnknownSet { set: Uuid },
    #[error("snapshot {snapshot} is unknown to this provider")]
    UnknownSnapshot { snapshot: Uuid },
    #[error("flush-and-hold of snapshot set {set} exceeded {timeout:?}; writes released")]
    FlushHoldTimeout { set: Uuid, timeout: Duration },
    #[error("volume {volume}: {op}: {source}")]
    Io {
        volume: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("provider failed: {0}")]
    Failed(String),
}

impl ProviderError {
    /// A `volume` crate error of `provider` about `volume`, in the provider model's terms
    /// (unknown volumes, sets and snapshots keep their meaning; the rest is I/O).
    pub fn from_volume(provider: &'static str, volume: &str, e: volume::VolumeError) -> Self {
        use volume::VolumeError;
        match e {
            VolumeError::UnknownVolume(v) => ProviderError::UnsupportedVolume { volume: v },
            VolumeError::UnknownSet(set) => ProviderError::UnknownSet { set },
            VolumeError::SnapshotNotFound(snapshot) => ProviderError::UnknownSnapshot { snapshot },
            other => {
                ProviderError::Io { volume: volume.to_string(), op: provider, source: other.into() }
            }
        }
    }
}

/// A committed snapshot of one volume.
#[derive(Clone)]
pub struct CommittedSnapshot {
    pub snapshot_id: Uuid,
    pub volume: String,
    /// Read-only view of the volume as of the commit.
    pub view: FsRef,
    /// How long the commit that made this snapshot held writes, where the provider measures
    /// it. The outermost provider's hold covers those nested inside it, so the set's hold is
    /// the longest reported; scanning ahead of the hold and recording after it are not in it.
    pub held: Option<Duration>,
}

impl std::fmt::Debug for CommittedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommittedSnapshot")
            .field("snapshot_id", &self.snapshot_id)
            .field("volume", &self.volume)
            .finish()
    }
}

/// What a provider reports about a live snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub snapshot_id: Uuid,
    pub set_id: Uuid,
    pub volume: String,
    pub created_ms: u64,
    pub persistent: bool,
}

/// A snapshot provider.
pub trait Provider: Send + Sync {
    /// Stable provider id.
    fn id(&self) -> Uuid;
    fn name(&self) -> String;
    /// Whether this provider can snapshot the volume with this label.
    fn supports(&self, volume: &str) -> bool;
    /// Starts snapshot set `set` of `volumes` (nothing is held yet).
    fn begin_set(
        &self,
        set: Uuid,
        volumes: &[String],
        context: SnapshotContext,
    ) -> Result<(), ProviderError>;
    /// Commits the set: holds writes on every volume of the set (at most `hold_timeout`, else
    /// fails with [`ProviderError::FlushHoldTimeout`] and releases them), records one snapshot
    /// per volume, releases the writes.
    fn commit_set(
        &self,
        set: Uuid,
        hold_timeout: Duration,
    ) -> Result<Vec<CommittedSnapshot>, ProviderError>;
    /// Commits the set like [`Provider::commit_set`], calling `within` while this provider's
    /// writes are still held and before its snapshots are released to anyone: the coordinator
    /// nests the commit of the set's next provider there, so that a set spanning several
    /// providers is taken at one instant (every volume's writes held while every snapshot is
    /// made). If `within` fails, this provider's snapshots of the set are undone and its error
    /// is returned.
    ///
    /// The default suits a provider that cannot run code inside its hold: it commits, then runs
    /// `within` and deletes its snapshots if that fails. The coordinator nests such a provider
    /// innermost (see `BackupSession`), where it is still one instant.
    fn commit_set_within(
        &self,
        set: Uuid,
        hold_timeout: Duration,
        within: &mut dyn FnMut() -> Result<(), ProviderError>,
    ) -> Result<Vec<CommittedSnapshot>, ProviderError> {
        let snaps = self.commit_set(set, hold_timeout)?;
        if let Err(e) = within() {
            for s in &snaps {
                if let Err(e2) = self.delete(s.snapshot_id) {
                    tracing::warn!(snapshot = %s.snapshot_id, error = %e2,
                        "could not undo a snapshot of a set whose other provider failed");
                }
            }
            return Err(e);
        }
        Ok(snaps)
    }
    /// Whether [`Provider::commit_set_within`] runs `within` inside this provider's hold (the
    /// default implementation does not).
    fn holds_within(&self) -> bool {
        false
    }
    /// Abandons a set that was begun but not committed (harmless if unknown or repeated).
    fn abort_set(&self, set: Uuid) -> Result<(), ProviderError>;
    /// Deletes a committed snapshot.
    fn delete(&self, snapshot: Uuid) -> Result<(), ProviderError>;
    /// Every live snapshot.
    fn query(&self) -> Vec<SnapshotInfo>;
    /// A view of a live snapshot (e.g. a persistent one reopened after the session).
    fn view(&self, snapshot: Uuid) -> Result<FsRef, ProviderError>;
}

/// A read-only wrapper: every mutation fails with `PermissionDenied`. Snapshot views are
/// handed out through it so no requester can change a snapshot.
#[derive(Debug, Clone)]
pub struct ReadOnlyFs {
    inner: FsRef,
}

impl ReadOnlyFs {
    pub fn new(inner: FsRef) -> Self {
        ReadOnlyFs { inner }
    }

    /// Wraps `inner` as a shared read-only file system.
    pub fn wrap(inner: FsRef) -> FsRef {
        Arc::new(ReadOnlyFs { inner })
    }
}

fn read_only(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{}: snapshot views are read-only", path.display()),
    )
}

impl FileSystem for ReadOnlyFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<FileRef> {
        if mode.writable() {
            return Err(read_only(path));
        }
        self.inner.open(path, mode)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        Err(read_only(path))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Err(read_only(path))
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        Err(read_only(path))
    }
    fn rename(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only(from))
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(path)
    }
    fn metadata(&self, path: &Path) -> io::Result<Metadata> {
        self.inner.metadata(path)
    }
    fn attributes(&self, path: &Path) -> io::Result<volume::Attributes> {
        self.inner.attributes(path)
    }
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
}
