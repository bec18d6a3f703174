//! Typed errors of the shadow volume and the software provider.
//!
//! The [`crate::fs::FileSystem`] seam speaks `std::io::Error`; the volume's own management API
//! (snapshots, sets, shadow storage) returns [`VolumeError`], whose messages name the volume,
//! snapshot, file or block concerned. `From<VolumeError> for io::Error` keeps the kind callers
//! care about when an error has to cross the seam.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

/// An error of the shadow volume layer.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume at {root}: {source}")]
    Io {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volume at {root} is already open (lock held on {lock})")]
    Locked { root: PathBuf, lock: PathBuf },
    #[error("volume metadata {path} is corrupt: {why}")]
    CorruptMetadata { path: PathBuf, why: String },
    #[error("block size {0} is not a power of two between 512 B and 1 MiB")]
    BadBlockSize(u64),
    #[error("snapshot {0} not found")]
    SnapshotNotFound(Uuid),
    #[error("snapshot {0} was deleted")]
    SnapshotDeleted(Uuid),
    #[error("volume {0} is not registered with the provider")]
    UnknownVolume(String),
    #[error("snapshot set {0} not found (never begun, already committed or aborted)")]
    UnknownSet(Uuid),
    #[error("snapshot set {set} already holds volume {volume}")]
    VolumeAlreadyInSet { set: Uuid, volume: Uuid },
    #[error("snapshot set {0} has no volumes")]
    EmptySet(Uuid),
    #[error(
        "flush-and-hold of volume {volume} timed out after {waited:?} (limit {limit:?}); \
         no snapshot was created and writes resumed"
    )]
    HoldTimeout { volume: String, waited: Duration, limit: Duration },
    #[error("volume {volume} holds {count} snapshots, the maximum")]
    TooManySnapshots { volume: String, count: usize },
    #[error("shadow storage of volume {volume}: {why}")]
    ShadowStorage { volume: String, why: String },
    #[error(
        "volume {volume}: {root} is not a btrfs subvolume, so the btrfs provider cannot \
         snapshot it (make it one with `btrfs subvolume create`, or use the software provider)"
    )]
    NotBtrfsSubvolume { volume: String, root: PathBuf },
    #[error("volume {volume}: btrfs: {op}: {source}")]
    Btrfs {
        volume: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    pub(crate) fn io(root: impl Into<PathBuf>, source: io::Error) -> Self {
        VolumeError::Io { root: root.into(), source }
    }
}

impl From<VolumeError> for io::Error {
    fn from(e: VolumeError) -> Self {
        let kind = match &e {
            VolumeError::Io { source, .. } | VolumeError::Btrfs { source, .. } => source.kind(),
            VolumeError::SnapshotNotFound(_) | VolumeError::SnapshotDeleted(_) => {
                io::ErrorKind::NotFound
            }
            VolumeError::HoldTimeout { .. } => io::ErrorKind::TimedOut,
            VolumeError::Locked { .. } => io::ErrorKind::ResourceBusy,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Why an existing volume was not opened: the configuration asks for another block size than
/// the one it was created with. It travels as the payload of a [`VolumeError::Io`] of kind
/// `InvalidInput` (downcast its source to tell it apart), so that matches over
/// [`VolumeError`] elsewhere need no new arm.
#[derive(Debug, thiserror::Error)]
#[error(
    "it was created with block size {created} B, the configuration asks for {configured} B: \
     the block size of an existing volume cannot change (its snapshots' diff areas are laid \
     out in it); set it back to {created} B"
)]
pub struct BlockSizeChanged {
    pub created: u64,
    pub configured: u64,
}

/// Result of the volume layer's management API.
pub type Result<T, E = VolumeError> = std::result::Result<T, E>;
