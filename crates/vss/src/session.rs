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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use events::catalog;
use serde_json::json;
use uuid::Uuid;
use volume::FsRef;

use crate::call::{self, CallError};
use crate::coordinator::{Inner, JobRef, Participant, now_ms};
use crate::document::{
    BackupComponentsDocument, ComponentEntry, DOCUMENT_VERSION, SnapshotRecord, WriterEntry,
};
use crate::error::{SessionPhase, VssError};
use crate::freeze::FreezeControl;
use crate::metadata::{BackupType, ComponentKey, WriterKey, WriterMetadata};
use crate::provider::{CommittedSnapshot, Provider, ProviderError, SnapshotContext};
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

    fn expect(&self, op: &'static str, phase: SessionPhase) -> Result<(), VssError> {
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
        self.expect("gather_writer_metadata", SessionPhase::Created)?;
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
                        let p = Participant::new(reg.clone(), placeholder_metadata(reg));
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
        self.expect("set_backup_state", SessionPhase::MetadataGathered)?;
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
                   "excluded": excluded.iter().map(|k| k.instance_name.clone()).collect::<Vec<_>>().join(", ")}),
        );
        self.phase = SessionPhase::BackupStateSet;
        Ok(())
    }

    /// Takes this node's snapshot-set gate (waiting for another job's creation to finish, at
    /// most [`crate::CoordinatorConfig::snapshot_set_wait`]) and sends prepare_backup to every
    /// writer of the job. Writers with no selected component get no further event.
    pub fn prepare_for_backup(&mut self) -> Result<(), VssError> {
        self.expect("prepare_for_backup", SessionPhase::BackupStateSet)?;
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

    /// Creates the snapshot set: prepare_snapshot → freeze → provider commit (flush-and-hold)
    /// → thaw → post_snapshot, then frees the gate. On success the snapshot views are ready.
    pub fn do_snapshot_set(&mut self) -> Result<&SnapshotSet, VssError> {
        self.expect("do_snapshot_set", SessionPhase::PreparedForBackup)?;
        let volumes: Vec<String> = self.volumes().into_iter().collect();
        if volumes.is_empty() {
            return Err(self.fail(VssError::NoVolumes));
        }
        let max = self.inner.config.max_volumes_per_set;
        if volumes.len() > max {
            return Err(self.fail(VssError::TooManyVolumes { count: volumes.len(), max }));
        }
        let mut by_provider: Vec<(Arc<dyn Provider>, Vec<String>)> = Vec::new();
        for v in &volumes {
            let Some(p) = self.inner.provider_for(v) else {
                return Err(self.fail(VssError::NoProvider { volume: v.clone() }));
            };
            match by_provider.iter_mut().find(|(q, _)| q.id() == p.id()) {
                Some((_, vs)) => vs.push(v.clone()),
                None => by_provider.push((p, vec![v.clone()])),
            }
        }
        let set_id = Uuid::new_v4();
        self.set = Some(SetInProgress {
            id: set_id,
            providers: Vec::new(),
            committed: Vec::new(),
            freeze: None,
        });
        for (p, vs) in by_provider {
            if let Err(source) = p.begin_set(set_id, &vs, self.context) {
                return Err(self.fail(VssError::Provider { provider: p.name(), source }));
            }
            self.set.as_mut().expect("set").providers.push((p, vs));
        }
        self.inner.emit(
            &catalog::COORD_SNAPSHOT_SET_STARTED,
            Some(self.job),
            json!({"snapshot_set": set_id.to_string(), "volumes": volumes.join(", ")}),
        );
        let job = self.job_ref();
        let writers = self.context.writers() && !self.participants.is_empty();

        if writers {
            let r = self.inner.call_all(
                &job,
                Phase::PrepareSnapshot,
                &self.participants,
                Some(WriterState::WaitingForFreeze),
                |w, ctx| w.prepare_snapshot(ctx),
            );
            if let Some(e) = first_error(r) {
                return Err(self.fail(e));
            }
            self.inner.emit(
                &catalog::COORD_FREEZE_ISSUED,
                Some(self.job),
                json!({"writers": self.participants.len(), "snapshot_set": set_id.to_string()}),
            );
            let fc = FreezeControl::start(self.inner.clone(), job, self.participants.clone());
            self.set.as_mut().expect("set").freeze = Some(fc);
            let r = self.inner.call_all(
                &job,
                Phase::Freeze,
                &self.participants,
                Some(WriterState::WaitingForThaw),
                |w, ctx| w.freeze(ctx),
            );
            if let Some(e) = first_error(r) {
                return Err(self.fail(e));
            }
        }

        // Commit every provider under its flush-and-hold, bounded by the freeze window too.
        let hold_timeout = self.inner.config.flush_hold_timeout;
        let commit_started = Instant::now();
        let mut deadline = commit_started + hold_timeout + hold_timeout / 4;
        if let Some(fc) = self.set.as_ref().and_then(|s| s.freeze.as_ref()) {
            deadline = deadline.min(commit_started + fc.window());
        }
        let providers = self.set.as_ref().expect("set").providers.clone();
        let pending: Vec<_> = providers
            .iter()
            .map(|(p, _)| {
                let p = p.clone();
                call::spawn(format!("vss-commit-{}", p.name()), move || {
                    p.commit_set(set_id, hold_timeout)
                })
            })
            .collect();
        for ((p, _), pending) in providers.iter().zip(pending) {
            match pending.wait_until(deadline) {
                Ok(snaps) => {
                    let set = self.set.as_mut().expect("set");
                    set.committed.extend(snaps.into_iter().map(|s| (p.name(), s)));
                }
                Err(e) => {
                    let err = match e {
                        CallError::Failed(source) => {
                            if let ProviderError::FlushHoldTimeout { .. } = source {
                                self.flush_hold_timed_out(p.as_ref(), set_id, hold_timeout);
                            }
                            VssError::Provider { provider: p.name(), source }
                        }
                        CallError::TimedOut(_) => {
                            self.flush_hold_timed_out(p.as_ref(), set_id, hold_timeout);
                            VssError::ProviderTimeout {
                                provider: p.name(),
                                set: set_id,
                                timeout: hold_timeout,
                            }
                        }
                        CallError::Panicked(m) => VssError::Provider {
                            provider: p.name(),
                            source: ProviderError::Failed(m),
                        },
                    };
                    return Err(self.fail(err));
                }
            }
        }
        let hold = commit_started.elapsed();
        let committed_ms = now_ms();
        self.inner.emit(
            &catalog::COORD_SNAPSHOT_SET_COMMITTED,
            Some(self.job),
            json!({"snapshot_set": set_id.to_string(), "volumes": volumes.join(", "),
                   "hold_ms": hold.as_millis() as u64}),
        );

        if writers {
            let fc = self.set.as_ref().and_then(|s| s.freeze.clone()).expect("freeze control");
            if fc.expired() {
                let window = fc.window();
                return Err(self.fail(VssError::FreezeWindowExpired { set: set_id, window }));
            }
            if let Some(targets) = fc.take_thaw() {
                self.inner.emit(
                    &catalog::COORD_THAW_ISSUED,
                    Some(self.job),
                    json!({"writers": targets.len(), "snapshot_set": set_id.to_string()}),
                );
                let r = self.inner.call_all(
                    &job,
                    Phase::Thaw,
                    &targets,
                    Some(WriterState::WaitingForPostSnapshot),
                    |w, ctx| w.thaw(ctx),
                );
                fc.finish();
                if let Some(e) = first_error(r) {
                    return Err(self.fail(e));
                }
            } else {
                // The watchdog took the thaw: the window expired while we committed.
                fc.finish();
                let window = fc.window();
                return Err(self.fail(VssError::FreezeWindowExpired { set: set_id, window }));
            }
            self.inner.emit(
                &catalog::COORD_POST_SNAPSHOT,
                Some(self.job),
                json!({"writers": self.participants.len(), "snapshot_set": set_id.to_string()}),
            );
            let r = self.inner.call_all(
                &job,
                Phase::PostSnapshot,
                &self.participants,
                Some(WriterState::WaitingForBackupComplete),
                |w, ctx| w.post_snapshot(ctx),
            );
            let mut failed = None;
            for (p, res) in r {
                match res {
                    Ok(stamp) => {
                        self.stamps.insert(p.key(), stamp);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(self.fail(e));
            }
        }

        self.inner.gate.release(self.job);
        self.holds_gate = false;
        let set = self.set.as_ref().expect("set");
        self.snapshot_set = Some(SnapshotSet {
            id: set_id,
            snapshots: set
                .committed
                .iter()
                .map(|(provider, s)| SetSnapshot {
                    volume: s.volume.clone(),
                    snapshot_id: s.snapshot_id,
                    provider: provider.clone(),
                    view: s.view.clone(),
                })
                .collect(),
            committed_ms,
            hold,
        });
        self.phase = SessionPhase::SnapshotSetDone;
        Ok(self.snapshot_set.as_ref().expect("set"))
    }

    fn flush_hold_timed_out(&self, p: &dyn Provider, set: Uuid, timeout: Duration) {
        self.inner.emit(
            &catalog::PROVIDER_FLUSH_HOLD_TIMED_OUT,
            Some(self.job),
            json!({"provider": p.name(), "snapshot_set": set.to_string(),
                   "timeout_ms": timeout.as_millis() as u64}),
        );
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
        self.expect("set_backup_succeeded", SessionPhase::SnapshotSetDone)?;
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
        self.expect("backup_complete", SessionPhase::SnapshotSetDone)?;
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
                    let per: Vec<ComponentResult> = ctx
                        .components
                        .iter()
                        .map(|c| ComponentResult {
                            component: c.clone(),
                            succeeded: results.get(c) == Some(&true),
                        })
                        .collect();
                    w.backup_complete(ctx, &per)
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

    /// Aborts the job (the requester gave up). Abort reaches every involved writer, even if it
    /// already had one (a second abort is harmless by contract). Not allowed after
    /// backup_complete (the copy exists; just shut down).
    pub fn abort(&mut self, reason: &str) -> Result<(), VssError> {
        match self.phase {
            SessionPhase::BackupCompleted | SessionPhase::Ended => {
                Err(VssError::OutOfOrder { op: "abort", phase: self.phase })
            }
            _ => {
                self.fail(VssError::Aborted { reason: reason.to_string() });
                Ok(())
            }
        }
    }

    /// The abort path: thaw every frozen writer, release the snapshot set, abort every
    /// involved writer, free the gate. Returns `err` for the caller to return.
    fn fail(&mut self, err: VssError) -> VssError {
        let reason = err.to_string();
        tracing::warn!(job = %self.job, %reason, "backup job aborted");
        let job = self.job_ref();
        // 1. Thaw first: nothing may stay frozen while we clean up.
        if let Some(fc) = self.set.as_ref().and_then(|s| s.freeze.clone()) {
            if let Some(targets) = fc.take_thaw() {
                self.inner.emit(
                    &catalog::COORD_THAW_ISSUED,
                    Some(self.job),
                    json!({"writers": targets.len(),
                           "snapshot_set": job.set.map(|s| s.to_string()).unwrap_or_default()}),
                );
                self.inner.call_all(&job, Phase::Thaw, &targets, None, |w, ctx| w.thaw(ctx));
            }
            fc.finish();
        }
        // 2. Release the snapshot set.
        if self.set.is_some() && !self.released {
            self.release_snapshots();
            let set = self.set.as_ref().expect("set");
            self.inner.emit(
                &catalog::COORD_SNAPSHOT_SET_ABORTED,
                Some(self.job),
                json!({"snapshot_set": set.id.to_string(), "reason": reason}),
            );
        }
        // 3. Abort every involved writer.
        if self.context.writers()
            && self.phase >= SessionPhase::MetadataGathered
            && !self.participants.is_empty()
        {
            self.inner.emit(
                &catalog::COORD_ABORT,
                Some(self.job),
                json!({"writers": self.participants.len(), "reason": reason}),
            );
            self.inner
                .call_all(&job, Phase::Abort, &self.participants, None, |w, ctx| w.abort(ctx));
        }
        // 4. Let the next job create its snapshot set.
        if self.holds_gate {
            self.inner.gate.release(self.job);
            self.holds_gate = false;
        }
        if self.abort_reason.is_none() {
            self.abort_reason = Some(reason);
        }
        self.phase = SessionPhase::Aborted;
        err
    }

    /// Deletes the set's snapshots (committed ones) and abandons it at every provider.
    fn release_snapshots(&mut self) {
        self.released = true;
        let Some(set) = self.set.as_ref() else { return };
        for (provider, s) in &set.committed {
            let p =
                set.providers.iter().find(|(p, _)| &p.name() == provider).map(|(p, _)| p.clone());
            let Some(p) = p else { continue };
            match p.delete(s.snapshot_id) {
                Ok(()) => self.inner.emit(
                    &catalog::PROVIDER_SNAPSHOT_DELETED,
                    Some(self.job),
                    json!({"provider": provider, "snapshot": s.snapshot_id.to_string(), "volume": s.volume}),
                ),
                Err(e) => tracing::error!(snapshot = %s.snapshot_id, error = %e, "cannot delete snapshot"),
            }
        }
        for (p, _) in &set.providers {
            // Covers a set that was begun but not (or not entirely) committed, including a commit
            // that finished after we stopped waiting for it.
            if let Err(e) = p.abort_set(set.id) {
                tracing::error!(set = %set.id, error = %e, "cannot abort snapshot set");
            }
            for leftover in p.query().into_iter().filter(|s| s.set_id == set.id) {
                let _ = p.delete(leftover.snapshot_id);
            }
        }
    }

    /// Ends the session: aborts it if it is unfinished, sends backup_shutdown to every
    /// involved writer, releases non-persistent snapshots. Returns the final document.
    pub fn shutdown(mut self) -> BackupComponentsDocument {
        self.end();
        self.document()
    }

    fn end(&mut self) {
        if self.phase == SessionPhase::Ended {
            return;
        }
        if matches!(
            self.phase,
            SessionPhase::BackupStateSet
                | SessionPhase::PreparedForBackup
                | SessionPhase::SnapshotSetDone
        ) {
            self.fail(VssError::Aborted {
                reason: "the requester ended the session before backup complete".into(),
            });
        }
        let job = self.job_ref();
        if self.context.writers() && !self.participants.is_empty() {
            self.inner.call_all(&job, Phase::BackupShutdown, &self.participants, None, |w, ctx| {
                w.backup_shutdown(ctx)
            });
        }
        if self.context.auto_release() && !self.released {
            self.release_snapshots();
        }
        if self.holds_gate {
            self.inner.gate.release(self.job);
            self.holds_gate = false;
        }
        let outcome = if self.completed {
            "completed".to_string()
        } else {
            format!("aborted: {}", self.abort_reason.as_deref().unwrap_or("no snapshot set made"))
        };
        self.inner.emit(
            &catalog::COORD_SESSION_SHUTDOWN,
            Some(self.job),
            json!({"job": self.job.to_string(), "outcome": outcome}),
        );
        self.inner.sessions.fetch_sub(1, Ordering::SeqCst);
        self.phase = SessionPhase::Ended;
    }
}

impl Drop for BackupSession {
    fn drop(&mut self) {
        self.end();
    }
}

fn first_error<T>(results: Vec<(Arc<Participant>, Result<T, VssError>)>) -> Option<VssError> {
    results.into_iter().find_map(|(_, r)| r.err())
}

fn placeholder_metadata(reg: &crate::coordinator::RegisteredWriter) -> WriterMetadata {
    WriterMetadata {
        version: crate::metadata::WRITER_METADATA_VERSION,
        writer_id: reg.identity.writer_id,
        writer_name: reg.identity.writer_name.clone(),
        instance_name: reg.identity.instance_name.clone(),
        components: Vec::new(),
        schema: Default::default(),
        restore_method: crate::metadata::RestoreMethod::Custom,
    }
}
