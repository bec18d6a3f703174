//! The coordinator's errors.

use std::time::Duration;

use uuid::Uuid;

use crate::metadata::{BackupType, ComponentKey, WriterKey};
use crate::provider::ProviderError;
use crate::writer::{Phase, WriterFailure};

/// Where a requester session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionPhase {
    Created,
    MetadataGathered,
    BackupStateSet,
    PreparedForBackup,
    SnapshotSetDone,
    BackupCompleted,
    Aborted,
    Ended,
}

/// Errors of the coordinator and its sessions.
#[derive(Debug, thiserror::Error)]
pub enum VssError {
    #[error("snapshot set in progress for job {holder}; waited {waited:?} for it")]
    SnapshotSetInProgress { holder: Uuid, waited: Duration },
    #[error("writer '{writer}' ({instance}) failed at {phase}: {failure}: {message}")]
    Writer {
        writer: String,
        instance: String,
        phase: Phase,
        failure: WriterFailure,
        message: String,
    },
    #[error("provider {provider}: {source}")]
    Provider {
        provider: String,
        #[source]
        source: ProviderError,
    },
    #[error("provider {provider}: commit of snapshot set {set} did not return within {timeout:?}")]
    ProviderTimeout { provider: String, set: Uuid, timeout: Duration },
    #[error("no registered provider supports volume {volume}")]
    NoProvider { volume: String },
    #[error("a snapshot set of {count} volumes exceeds the limit of {max}")]
    TooManyVolumes { count: usize, max: usize },
    #[error("nothing to snapshot: the selection names no volume")]
    NoVolumes,
    #[error("component {component} is not offered by its writer's metadata")]
    UnknownComponent { component: ComponentKey },
    #[error(
        "writer {writer} is not part of this session (not registered, excluded, or failed identify)"
    )]
    UnknownWriter { writer: WriterKey },
    #[error("{op} is not allowed in session phase {phase:?}")]
    OutOfOrder { op: &'static str, phase: SessionPhase },
    #[error("backup job {base} cannot be the base of a {kind} backup of writer {writer}: {reason}")]
    InvalidBase { base: Uuid, kind: BackupType, writer: WriterKey, reason: &'static str },
    #[error(
        "freeze window of {window:?} for snapshot set {set} expired; the watchdog thawed the writers"
    )]
    FreezeWindowExpired { set: Uuid, window: Duration },
    #[error("the session was aborted: {reason}")]
    Aborted { reason: String },
    #[error("{max} backup sessions are already open (the limit)")]
    TooManySessions { max: usize },
    #[error("writer {writer} is already registered")]
    DuplicateWriter { writer: WriterKey },
    #[error("snapshot {snapshot} is not known to any provider")]
    UnknownSnapshot { snapshot: Uuid },
}
