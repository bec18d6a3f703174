//! The writer model: the trait applications implement, the events they receive, and the states
//! and failure codes the reference framework defines (with its numeric values, so that a
//! listing reads like the reference's `State: [1] Stable`).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::document::BackupComponentsDocument;
use crate::metadata::{BackupType, ComponentKey, WriterKey, WriterMetadata};
use crate::provider::SnapshotContext;

/// The events a writer receives, in backup order, then the restore ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Identify,
    PrepareBackup,
    PrepareSnapshot,
    Freeze,
    Thaw,
    PostSnapshot,
    BackupComplete,
    BackupShutdown,
    Abort,
    PreRestore,
    PostRestore,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Identify => "identify",
            Phase::PrepareBackup => "prepare_backup",
            Phase::PrepareSnapshot => "prepare_snapshot",
            Phase::Freeze => "freeze",
            Phase::Thaw => "thaw",
            Phase::PostSnapshot => "post_snapshot",
            Phase::BackupComplete => "backup_complete",
            Phase::BackupShutdown => "backup_shutdown",
            Phase::Abort => "abort",
            Phase::PreRestore => "pre_restore",
            Phase::PostRestore => "post_restore",
        }
    }

    /// The state a writer is left in when it fails this event. Abort has no failed state in
    /// the reference (a failing abort leaves the state as it was).
    pub fn failed_state(self) -> Option<WriterState> {
        Some(match self {
            Phase::Identify => WriterState::FailedAtIdentify,
            Phase::PrepareBackup => WriterState::FailedAtPrepareBackup,
            Phase::PrepareSnapshot => WriterState::FailedAtPrepareSnapshot,
            Phase::Freeze => WriterState::FailedAtFreeze,
            Phase::Thaw => WriterState::FailedAtThaw,
            Phase::PostSnapshot => WriterState::FailedAtPostSnapshot,
            Phase::BackupComplete => WriterState::FailedAtBackupComplete,
            Phase::BackupShutdown => WriterState::FailedAtBackupShutdown,
            Phase::PreRestore => WriterState::FailedAtPreRestore,
            Phase::PostRestore => WriterState::FailedAtPostRestore,
            Phase::Abort => return None,
        })
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writer states with the reference's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum WriterState {
    Stable = 1,
    WaitingForFreeze = 2,
    WaitingForThaw = 3,
    WaitingForPostSnapshot = 4,
    WaitingForBackupComplete = 5,
    FailedAtIdentify = 6,
    FailedAtPrepareBackup = 7,
    FailedAtPrepareSnapshot = 8,
    FailedAtFreeze = 9,
    FailedAtThaw = 10,
    FailedAtPostSnapshot = 11,
    FailedAtBackupComplete = 12,
    FailedAtPreRestore = 13,
    FailedAtPostRestore = 14,
    FailedAtBackupShutdown = 15,
}

impl WriterState {
    /// The reference's numeric value.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn is_failed(self) -> bool {
        self.code() >= 6
    }

    pub fn name(self) -> &'static str {
        match self {
            WriterState::Stable => "stable",
            WriterState::WaitingForFreeze => "waiting_for_freeze",
            WriterState::WaitingForThaw => "waiting_for_thaw",
            WriterState::WaitingForPostSnapshot => "waiting_for_post_snapshot",
            WriterState::WaitingForBackupComplete => "waiting_for_backup_complete",
            WriterState::FailedAtIdentify => "failed_at_identify",
            WriterState::FailedAtPrepareBackup => "failed_at_prepare_backup",
            WriterState::FailedAtPrepareSnapshot => "failed_at_prepare_snapshot",
            WriterState::FailedAtFreeze => "failed_at_freeze",
            WriterState::FailedAtThaw => "failed_at_thaw",
            WriterState::FailedAtPostSnapshot => "failed_at_post_snapshot",
            WriterState::FailedAtBackupComplete => "failed_at_backup_complete",
            WriterState::FailedAtPreRestore => "failed_at_pre_restore",
            WriterState::FailedAtPostRestore => "failed_at_post_restore",
            WriterState::FailedAtBackupShutdown => "failed_at_backup_shutdown",
        }
    }
}

impl fmt::Display for WriterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code(), self.name())
    }
}

/// Why a writer failed (the reference's writer failure codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriterFailure {
    /// The snapshot covers only some of a component's volumes.
    InconsistentSnapshot,
    OutOfResources,
    /// A deadline (an event's, or the freeze→thaw window) passed.
    Timeout,
    /// Transient; the requester may retry the job.
    Retryable,
    NonRetryable,
}

impl WriterFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            WriterFailure::InconsistentSnapshot => "inconsistent_snapshot",
            WriterFailure::OutOfResources => "out_of_resources",
            WriterFailure::Timeout => "timeout",
            WriterFailure::Retryable => "retryable",
            WriterFailure::NonRetryable => "non_retryable",
        }
    }
}

impl fmt::Display for WriterFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a writer returns when it fails an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{failure}: {message}")]
pub struct WriterError {
    pub failure: WriterFailure,
    pub message: String,
}

impl WriterError {
    pub fn new(failure: WriterFailure, message: impl Into<String>) -> Self {
        WriterError { failure, message: message.into() }
    }
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::new(WriterFailure::Retryable, message)
    }
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Self::new(WriterFailure::NonRetryable, message)
    }
}

/// A writer's state and last failure, as a listing shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterStatus {
    pub state: WriterState,
    pub failure: Option<WriterFailure>,
    /// The failing writer's message, or the coordinator's (e.g. which deadline passed).
    pub message: Option<String>,
}

impl Default for WriterStatus {
    fn default() -> Self {
        WriterStatus { state: WriterState::Stable, failure: None, message: None }
    }
}

/// What every writer event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterContext {
    /// The job: the writer instance GUID of this job (fresh per job, shared by every writer
    /// of the job so that one GUID follows the job through every event log).
    pub job: Uuid,
    /// The requested backup type as it applies to this writer (full when its schema lacks
    /// the requested one).
    pub backup_type: BackupType,
    /// The writer's selected components (empty for a writer with none: it then gets no
    /// event after prepare_backup).
    pub components: Vec<ComponentKey>,
    pub context: SnapshotContext,
    /// The snapshot set, once started.
    pub snapshot_set: Option<Uuid>,
    /// The writer's backup stamp from the base backup (incremental/differential).
    pub previous_stamp: Option<String>,
}

/// Per-component outcome handed to [`Writer::backup_complete`] and [`Writer::post_restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentResult {
    pub component: ComponentKey,
    pub succeeded: bool,
}

impl ComponentResult {
    /// The outcome of each of `components` by the requester's report (`true` = succeeded;
    /// a component it did not report failed).
    pub fn of(
        components: &[ComponentKey],
        reported: &std::collections::BTreeMap<ComponentKey, bool>,
    ) -> Vec<ComponentResult> {
        components
            .iter()
            .map(|c| ComponentResult {
                component: c.clone(),
                succeeded: reported.get(c) == Some(&true),
            })
            .collect()
    }
}

/// Static identity of a writer (no I/O; available without a deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterIdentity {
    pub writer_id: Uuid,
    pub writer_name: String,
    pub instance_name: String,
}

impl WriterIdentity {
    pub fn key(&self) -> WriterKey {
        WriterKey { writer_id: self.writer_id, instance_name: self.instance_name.clone() }
    }
}

/// An application that owns data and takes part in backups.
///
/// Every method except [`Writer::identity`] is called on a worker thread under a deadline;
/// a method that does not return in time marks the writer failed with
/// [`WriterFailure::Timeout`] and the job goes on without waiting for it (the call's thread is
/// left to finish on its own). [`Writer::abort`] and [`Writer::thaw`] may therefore arrive while
/// an earlier call of the same job is still running, and abort may arrive more than once; both
/// must put the application back into normal running and be harmless when repeated.
pub trait Writer: Send + Sync {
    fn identity(&self) -> WriterIdentity;
    fn identify(&self, ctx: &WriterContext) -> Result<WriterMetadata, WriterError>;
    fn prepare_backup(&self, ctx: &WriterContext) -> Result<(), WriterError>;
    fn prepare_snapshot(&self, ctx: &WriterContext) -> Result<(), WriterError>;
    fn freeze(&self, ctx: &WriterContext) -> Result<(), WriterError>;
    fn thaw(&self, ctx: &WriterContext) -> Result<(), WriterError>;
    /// Returns the writer's backup stamp for this backup, if it keeps one (recorded in the
    /// backup components document and handed back as `previous_stamp` to a later job).
    fn post_snapshot(&self, ctx: &WriterContext) -> Result<Option<String>, WriterError>;
    fn backup_complete(
        &self,
        ctx: &WriterContext,
        results: &[ComponentResult],
    ) -> Result<(), WriterError>;
    fn backup_shutdown(&self, ctx: &WriterContext) -> Result<(), WriterError>;
    fn abort(&self, ctx: &WriterContext) -> Result<(), WriterError>;
    fn pre_restore(
        &self,
        ctx: &WriterContext,
        document: &BackupComponentsDocument,
    ) -> Result<(), WriterError>;
    fn post_restore(
        &self,
        ctx: &WriterContext,
        document: &BackupComponentsDocument,
        results: &[ComponentResult],
    ) -> Result<(), WriterError>;
}
