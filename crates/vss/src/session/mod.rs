//! [`BackupSession`]: one requester's backup job, driven through the reference's phases.
//!
//! ```text
//! gather_writer_metadata → set_backup_state → prepare_for_backup → do_snapshot_set
//!   → (requester copies from snapshot views, set_backup_succeeded per component)
//!   → backup_complete → shutdown
//! ```
//!
//! Any failure aborts the job: every frozen writer is thawed, abort reaches every involved
//! writer, the snapshot set is released, the snapshot-set gate is freed, and the session
//! refuses anything but [`BackupSession::abort`] and [`BackupSession::shutdown`]. Dropping an
//! unfinished session does the same (a requester that crashes or forgets cannot leave writers
//! frozen or "backup in progress"), and backup_shutdown reaches every involved writer however
//! the session ends.

mod snapshot_set;
mod teardown;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::catalog;
use serde_json::json;
use uuid::Uuid;
use volume::FsRef;

use crate::call::{self, CallError};
use crate::coordinator::{Inner, JobRef, Participant, placeholder_metadata};
use crate::document::{
    BackupComponentsDocument, ComponentEntry, DOCUMENT_VERSION, SnapshotRecord, WriterEntry,
};
use crate::error::{SessionPhase, VssError};
use crate::freeze::FreezeControl;
use crate::metadata::{BackupType, ComponentKey, WriterKey, WriterMetadata};
use crate::provider::{CommittedSnapshot, Provider, SnapshotContext};
use crate::writer::{ComponentResult, Phase, WriterState, WriterStatus};

/// What the requester wants backed up.
#[derive(Debug, Clone, Default)]
pub struct BackupState {
    pub backup_type: BackupTypeChoice,
    /// Selected components.
    pub components: Vec<ComponentKey>,
    /// Writers left out of the job altogether.
    pub excluded_writers: Vec<WriterKey>,
    /// The backup this one builds on (incremental/differential): its writers' stamps are
    /// handed to the writers, and a copy backup is refused as a base.
    pub base: Option<BackupComponentsDocument>,
    /// Volumes to include beyond those of the selected components (the only source of volumes
    /// in the contexts without writers).
    pub volumes: Vec<String>,
}

/// The backup type (a newtype so that `BackupState::default()` is a full backup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupTypeChoice(pub BackupType);

impl Default for BackupTypeChoice {
    fn default() -> Self {
        BackupTypeChoice(BackupType::Full)
    }
}

impl From<BackupType> for BackupTypeChoice {
    fn from(t: BackupType) -> Self {
        BackupTypeChoice(t)
    }
}

/// A writer as seen by the requester after gathering metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterDescription {
    pub key: WriterKey,
    pub metadata: WriterMetadata,
    pub status: WriterStatus,
}

/// One snapshot of a committed set.
#[derive(Clone, Debug)]
pub struct SetSnapshot {
    pub volume: String,
    pub snapshot_id: Uuid,
    pub provider: String,
    /// Read-only view of the volume as of the commit.
    pub view: FsRef,
}

/// A committed snapshot set.
#[derive(Clone, Debug)]
pub struct SnapshotSet {
    pub id: Uuid,
    pub snapshots: Vec<SetSnapshot>,
    /// Unix ms of the commit.
    pub committed_ms: u64,
    /// How long the providers held writes.
    pub hold: Duration,
    /// How long the providers' commit took in all (the hold, the scan ahead of it, recording
    /// the snapshots after it).
    pub commit: Duration,
}

/// The snapshot set while it is being made.
struct SetInProgress {
    id: Uuid,
    /// Providers with the volumes each one snapshots.
    providers: Vec<(Arc<dyn Provider>, Vec<String>)>,
    committed: Vec<(String, CommittedSnapshot)>,
    freeze: Option<Arc<FreezeControl>>,
}

/// A requester's backup job. See the module docs for the order of calls.
pub struct BackupSession {
    inner: Arc<Inner>,
    job: Uuid,
    context: SnapshotContext,
    phase: SessionPhase,
    /// Writers identified in this job, not excluded; narrowed to those with selected
    /// components after prepare_backup.
    participants: Vec<Arc<Participant>>,
    /// Every identified writer (for status reporting), including excluded/uninvolved ones.
    identified: Vec<Arc<Participant>>,
    backup_type: BackupType,
    base_job: Option<Uuid>,
    extra_volumes: BTreeSet<String>,
    holds_gate: bool,
    set: Option<SetInProgress>,
    snapshot_set: Option<SnapshotSet>,
    stamps: BTreeMap<WriterKey, Option<String>>,
    results: BTreeMap<ComponentKey, bool>,
    abort_reason: Option<String>,
    completed: bool,
    released: bool,
    /// The set id as recorded in the job journal (set before the provider sees it).
    journal_set: Option<Uuid>,
    journaled: bool,
}

impl std::fmt::Debug for BackupSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSession").field("job", &self.job).field("phase", &self.phase).finish()
    }
}

impl BackupSession {
    pub(crate) fn new(inner: Arc<Inner>, context: SnapshotContext) -> Self {
        let job = Uuid::new_v4();
        inner.emit(
            &catalog::COORD_SESSION_STARTED,
            Some(job),
            json!({"job": job.to_string(), "context": context.as_str()}),
        );
        BackupSession {
            inner,
            job,
            context,
            phase: SessionPhase::Created,
            participants: Vec::new(),
            identified: Vec::new(),
            backup_type: BackupType::Full,
            base_job: None,
            extra_volumes: BTreeSet::new(),
            holds_gate: false,
            set: None,
            snapshot_set: None,
            stamps: BTreeMap::new(),
            results: BTreeMap::new(),
            abort_reason: None,
            completed: false,
            released: false,
            journal_set: None,
            journaled: false,
        }
    }

    /// The job id: the writer instance GUID every writer and event of this job carries.
    pub fn job(&self) -> Uuid {
        self.job
    }

    pub fn phase(&self) -> SessionPhase {
        self.phase
    }

    pub fn context(&self) -> SnapshotContext {
        self.context
    }

    /// Why the session was aborted, if it was.
    pub fn abort_reason(&self) -> Option<&str> {
        self.abort_reason.as_deref()
    }

    fn job_ref(&self) -> JobRef {
        JobRef { job: self.job, context: self.context, set: self.set.as_ref().map(|s| s.id) }
    }

    fn require_phase(&self, op: &'static str, phase: SessionPhase) -> Result<(), VssError> {
        if self.phase == phase {
            return Ok(());
        }
        match &self.abort_reason {
            Some(reason) => Err(VssError::Aborted { reason: reason.clone() }),
            None => Err(VssError::OutOfOrder { op, phase: self.phase }),
        }
    }

    /// Asks every registered writer for its metadata (identify, under its deadline). Writers
    /// that fail are left out of the job and shown as failed_at_identify.
    pub fn gather_writer_metadata(&mut self) -> Result<Vec<WriterDescription>, VssError> {
        self.require_phase("gather_writer_metadata", SessionPhase::Created)?;
        if self.context.writers() {
            let registered = self.inner.writers.read().clone();
            let job = self.job_ref();
            let timeout = self.inner.config.timeout(Phase::Identify);
            let deadline = Instant::now() + timeout;
            let pending: Vec<_> = registered
                .iter()
                .map(|reg| {
                    let w = reg.writer.clone();
                    let ctx = crate::writer::WriterContext {
                        job: job.job,
                        backup_type: BackupType::Full,
                        components: Vec::new(),
                        context: job.context,
                        snapshot_set: None,
                        previous_stamp: None,
                    };
                    call::spawn(format!("vss-identify-{}", reg.identity.instance_name), move || {
                        w.identify(&ctx)
                    })
                })
                .collect();
            for (reg, pending) in registered.iter().zip(pending) {
                let outcome = pending.wait_until(deadline);
                match outcome {
                    Ok(metadata) => {
                        *reg.last.lock() = WriterStatus::default();
                        let p = Arc::new(Participant::new(reg.clone(), metadata));
                        self.identified.push(p.clone());
                        self.participants.push(p);
                    }
                    Err(e) => {
                        let (failure, message, timeout) = match e {
                            CallError::Failed(e) => (e.failure, e.message, None),
                            CallError::TimedOut(_) => (
                                crate::WriterFailure::Timeout,
                                format!("no answer to identify within {timeout:?}"),
                                Some(timeout),
                            ),
                            CallError::Panicked(m) => (crate::WriterFailure::NonRetryable, m, None),
                        };
                        // Record on a throw-away participant so the registry shows the state.
                        let p = Participant::new(reg.clone(), placeholder_metadata(&reg.identity));
                        self.inner.writer_failed(
                            self.job,
                            &p,
                            Phase::Identify,
                            failure,
                            &message,
                            timeout,
                        );
                    }
                }
            }
        }
        self.inner.emit(
            &catalog::COORD_METADATA_GATHERED,
            Some(self.job),
            json!({"writers": self.participants.len()}),
        );
        self.phase = SessionPhase::MetadataGathered;
        Ok(self.writers())
    }

    /// The identified writers with their metadata and current state in this job.
    pub fn writers(&self) -> Vec<WriterDescription> {
        self.identified
            .iter()
            .map(|p| WriterDescription {
                key: p.key(),
                metadata: p.metadata.clone(),
                status: p.status(),
            })
            .collect()
    }

    /// The state of one writer in this job.
    pub fn writer_status(&self, key: &WriterKey) -> Option<WriterStatus> {
        self.identified.iter().find(|p| &p.key() == key).map(|p| p.status())
    }

    /// Sets the backup type, the selected components and the excluded writers.
    pub fn set_backup_state(&mut self, state: BackupState) -> Result<(), VssError> {
        self.require_phase("set_backup_state", SessionPhase::MetadataGathered)?;
        let kind = state.backup_type.0;
        let excluded: BTreeSet<WriterKey> = state.excluded_writers.iter().cloned().collect();
        let mut selected: BTreeMap<WriterKey, Vec<ComponentKey>> = BTreeMap::new();
        for c in &state.components {
            let p = self
                .participants
                .iter()
                .find(|p| p.key() == c.writer && !excluded.contains(&c.writer))
                .ok_or_else(|| VssError::UnknownWriter { writer: c.writer.clone() })?;
            if p.metadata.component(&c.logical_path, &c.name).is_none() {
                return Err(VssError::UnknownComponent { component: c.clone() });
            }
            let list = selected.entry(c.writer.clone()).or_default();
            if !list.contains(c) {
                list.push(c.clone());
            }
        }
        let mut next = Vec::new();
        for p in &self.participants {
            let key = p.key();
            if excluded.contains(&key) {
                continue;
            }
            let components = selected.remove(&key).unwrap_or_default();
            let effective = p.metadata.schema.effective(kind);
            if effective != kind && !components.is_empty() {
                self.inner.emit(
                    &catalog::COORD_BACKUP_TYPE_DOWNGRADED,
                    Some(self.job),
                    json!({"writer": p.reg.identity.writer_name, "requested": kind.as_str(),
                           "effective": effective.as_str()}),
                );
            }
            let mut previous_stamp = None;
            if let Some(base) = &state.base
                && !components.is_empty()
                && matches!(effective, BackupType::Incremental | BackupType::Differential)
            {
                let entry = base.writer(&key);
                let reason = match entry {
                    _ if !base.completed => Some("that backup never completed"),
                    None => Some("that backup does not include this writer"),
                    Some(e) if e.backup_type == BackupType::Copy => {
                        Some("a copy backup never counts as a base")
                    }
                    Some(e) if !e.counts_as_base() => Some("not every component of it succeeded"),
                    Some(_) => None,
                };
                if let Some(reason) = reason {
                    return Err(VssError::InvalidBase {
                        base: base.job,
                        kind: effective,
                        writer: key,
                        reason,
                    });
                }
                previous_stamp = entry.and_then(|e| e.backup_stamp.clone());
            }
            let mut np = Participant::new(p.reg.clone(), p.metadata.clone());
            np.components = components;
            np.backup_type = effective;
            np.previous_stamp = previous_stamp;
            *np.status.lock() = p.status();
            next.push(Arc::new(np));
        }
        // Replace the identified entries with the configured ones (same writers).
        for np in &next {
            if let Some(slot) = self.identified.iter_mut().find(|p| p.key() == np.key()) {
                *slot = np.clone();
            }
        }
        self.participants = next;
        self.backup_type = kind;
        self.base_job = state.base.as_ref().map(|b| b.job);
        self.extra_volumes = state.volumes.into_iter().collect();
        self.inner.emit(
            &catalog::COORD_BACKUP_STATE_SET,
            Some(self.job),
            json!({"backup_type": kind.as_str(), "components": state.components.len(),
                   "excluded": excluded_names(&excluded)}),
        );
        self.phase = SessionPhase::BackupStateSet;
        Ok(())
    }

    /// Takes this node's snapshot-set gate (waiting for another job's creation to finish, at
    /// most [`crate::CoordinatorConfig::snapshot_set_wait`]) and sends prepare_backup to every
    /// writer of the job. Writers with no selected component get no further event.
    pub fn prepare_for_backup(&mut self) -> Result<(), VssError> {
        self.require_phase("prepare_for_backup", SessionPhase::BackupStateSet)?;
        let wait = self.inner.config.snapshot_set_wait;
        let started = Instant::now();
        if let Err(holder) = self.inner.gate.acquire(self.job, wait) {
            let waited = started.elapsed();
            self.inner.emit(
                &catalog::COORD_SNAPSHOT_SET_BUSY,
                Some(self.job),
                json!({"waited_ms": waited.as_millis() as u64, "holder": holder.to_string()}),
            );
            return Err(VssError::SnapshotSetInProgress { holder, waited });
        }
        self.holds_gate = true;
        if let Err(e) = self.record(SessionPhase::PreparedForBackup) {
            return Err(self.fail(e));
        }
        if self.context.writers() {
            self.inner.emit(
                &catalog::COORD_PREPARE_BACKUP,
                Some(self.job),
                json!({"writers": self.participants.len(), "backup_type": self.backup_type.as_str()}),
            );
            let job = self.job_ref();
            let results = self.inner.call_all(
                &job,
                Phase::PrepareBackup,
                &self.participants,
                Some(WriterState::Stable),
                |w, ctx| w.prepare_backup(ctx),
            );
            if let Some(e) = first_error(results) {
                return Err(self.fail(e));
            }
            let (involved, idle): (Vec<_>, Vec<_>) =
                self.participants.drain(..).partition(|p| !p.components.is_empty());
            for p in idle {
                self.inner.emit(
                    &catalog::COORD_WRITER_NOT_INVOLVED,
                    Some(self.job),
                    json!({"writer": p.reg.identity.writer_name, "instance": p.reg.identity.instance_name}),
                );
            }
            self.participants = involved;
        }
        self.phase = SessionPhase::PreparedForBackup;
        Ok(())
    }

    /// The volumes of the snapshot set: those of the selected components' files plus the
    /// requested extra ones.
    pub fn volumes(&self) -> BTreeSet<String> {
        let mut v = self.extra_volumes.clone();
        for p in &self.participants {
            for c in &p.components {
                if let Some(comp) = p.metadata.component(&c.logical_path, &c.name) {
                    v.extend(comp.files.iter().map(|f| f.volume.clone()));
                }
            }
        }
        v
    }

    /// The committed snapshot set.
    pub fn snapshot_set(&self) -> Option<&SnapshotSet> {
        self.snapshot_set.as_ref()
    }

    /// The read-only view of `volume` in the committed set.
    pub fn snapshot_view(&self, volume: &str) -> Option<FsRef> {
        self.snapshot_set
            .as_ref()?
            .snapshots
            .iter()
            .find(|s| s.volume == volume)
            .map(|s| s.view.clone())
    }

    /// Records whether a component was backed up (copied and verified). Components never
    /// reported count as failed.
    pub fn set_backup_succeeded(
        &mut self,
        component: &ComponentKey,
        succeeded: bool,
    ) -> Result<(), VssError> {
        self.require_phase("set_backup_succeeded", SessionPhase::SnapshotSetDone)?;
        let known = self.participants.iter().any(|p| p.components.contains(component));
        if !known {
            return Err(VssError::UnknownComponent { component: component.clone() });
        }
        self.results.insert(component.clone(), succeeded);
        Ok(())
    }

    /// Sends backup_complete (with each component's success) to the involved writers and
    /// returns the backup components document. A writer failing backup_complete is reported
    /// as the error (the job is not aborted: its copy exists) and shown as
    /// failed_at_backup_complete; [`BackupSession::document`] still has the document.
    pub fn backup_complete(&mut self) -> Result<BackupComponentsDocument, VssError> {
        self.require_phase("backup_complete", SessionPhase::SnapshotSetDone)?;
        let results = Arc::new(self.results.clone());
        let summary: Vec<String> = self
            .participants
            .iter()
            .flat_map(|p| p.components.iter())
            .map(|c| format!("{c}={}", if results.get(c) == Some(&true) { "ok" } else { "failed" }))
            .collect();
        self.completed = true;
        self.phase = SessionPhase::BackupCompleted;
        let mut first = None;
        if self.context.writers() && !self.participants.is_empty() {
            self.inner.emit(
                &catalog::COORD_BACKUP_COMPLETE,
                Some(self.job),
                json!({"writers": self.participants.len(), "components": summary.join(", ")}),
            );
            let job = self.job_ref();
            let r = self.inner.call_all(
                &job,
                Phase::BackupComplete,
                &self.participants,
                Some(WriterState::Stable),
                move |w, ctx| {
                    w.backup_complete(ctx, &ComponentResult::of(&ctx.components, &results))
                },
            );
            first = first_error(r);
        }
        match first {
            Some(e) => Err(e),
            None => Ok(self.document()),
        }
    }

    /// The backup components document as it stands.
    pub fn document(&self) -> BackupComponentsDocument {
        let mut doc = BackupComponentsDocument {
            version: DOCUMENT_VERSION,
            job: self.job,
            node: self.inner.node.clone(),
            context: self.context,
            backup_type: self.backup_type,
            snapshot_set: self.snapshot_set.as_ref().map(|s| s.id),
            snapshots: self
                .snapshot_set
                .iter()
                .flat_map(|s| s.snapshots.iter())
                .map(|s| SnapshotRecord {
                    volume: s.volume.clone(),
                    snapshot_id: s.snapshot_id,
                    provider: s.provider.clone(),
                })
                .collect(),
            base_job: self.base_job,
            snapshot_time_ms: self.snapshot_set.as_ref().map(|s| s.committed_ms),
            completed: self.completed,
            writers: self
                .participants
                .iter()
                .map(|p| WriterEntry {
                    key: p.key(),
                    writer_name: p.reg.identity.writer_name.clone(),
                    backup_type: p.backup_type,
                    backup_stamp: self.stamps.get(&p.key()).cloned().flatten(),
                    previous_stamp: p.previous_stamp.clone(),
                    components: p
                        .components
                        .iter()
                        .filter_map(|c| {
                            let comp = p.metadata.component(&c.logical_path, &c.name)?;
                            Some(ComponentEntry {
                                logical_path: c.logical_path.clone(),
                                name: c.name.clone(),
                                component_type: comp.component_type,
                                succeeded: self.results.get(c).copied(),
                            })
                        })
                        .collect(),
                })
                .collect(),
        };
        doc.normalize();
        doc
    }
}

fn first_error<T>(results: Vec<(Arc<Participant>, Result<T, VssError>)>) -> Option<VssError> {
    results.into_iter().find_map(|(_, r)| r.err())
}

/// The writers a job excludes, for event 8002: "none" rather than an empty field, so that
/// the message does not end with `writers excluded: .`.
fn excluded_names(excluded: &BTreeSet<WriterKey>) -> String {
    let names: Vec<String> = excluded.iter().map(|k| k.instance_name.clone()).collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}
