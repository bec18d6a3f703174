//! The [`Coordinator`]: the per-node registry of writers and providers, the snapshot-set gate,
//! and the machinery every session uses to call writers under deadlines and record what
//! happened (writer states, failure codes, events).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use events::{EventDef, EventSink, catalog};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use uuid::Uuid;
use volume::FsRef;

use crate::call::{self, CallError};
use crate::document::BackupComponentsDocument;
use crate::error::{SessionPhase, VssError};
use crate::gate::SnapshotSetGate;
use crate::journal::{JobJournal, JobRecord};
use crate::metadata::WriterKey;
pub(crate) use crate::participant::{JobRef, Participant, RegisteredWriter, placeholder_metadata};
use crate::provider::{Provider, SnapshotContext, SnapshotInfo};
use crate::restore::RestoreSession;
use crate::session::BackupSession;
use crate::writer::{
    Phase, Writer, WriterContext, WriterError, WriterFailure, WriterState, WriterStatus,
};

/// Deadlines and limits. Every wait of the coordinator is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// Deadline of a writer event unless `phase_timeouts` names the phase.
    pub event_timeout: Duration,
    /// Per-event overrides.
    pub phase_timeouts: BTreeMap<Phase, Duration>,
    /// Longest time from freeze issued to thaw (the reference: 60 s). Enforced by a watchdog.
    pub freeze_window: Duration,
    /// Longest flush-and-hold of a provider commit (the reference: 10 s).
    pub flush_hold_timeout: Duration,
    /// How long a session waits for another job's snapshot-set creation to finish.
    pub snapshot_set_wait: Duration,
    /// Most volumes in one snapshot set (the reference: 64).
    pub max_volumes_per_set: usize,
    /// Most concurrently open backup sessions (the reference: 64).
    pub max_sessions: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            event_timeout: Duration::from_secs(60),
            phase_timeouts: BTreeMap::new(),
            freeze_window: Duration::from_secs(60),
            flush_hold_timeout: Duration::from_secs(10),
            snapshot_set_wait: Duration::from_secs(120),
            max_volumes_per_set: 64,
            max_sessions: 64,
        }
    }
}

impl CoordinatorConfig {
    /// The deadline of writer event `phase`.
    pub fn timeout(&self, phase: Phase) -> Duration {
        self.phase_timeouts.get(&phase).copied().unwrap_or(self.event_timeout)
    }

    /// The same deadline for every writer event (handy in tests).
    pub fn with_event_timeout(mut self, t: Duration) -> Self {
        self.event_timeout = t;
        self
    }
}

/// One line of [`Coordinator::list_writers`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriterListing {
    pub key: WriterKey,
    pub writer_name: String,
    pub status: WriterStatus,
}

/// State shared by the coordinator, its sessions and their watchdogs.
pub(crate) struct Inner {
    pub node: String,
    pub config: CoordinatorConfig,
    pub events: Arc<dyn EventSink>,
    pub writers: RwLock<Vec<Arc<RegisteredWriter>>>,
    pub providers: RwLock<Vec<Arc<dyn Provider>>>,
    pub gate: SnapshotSetGate,
    pub sessions: AtomicUsize,
    pub journal: Option<JobJournal>,
}

impl Inner {
    pub fn emit(&self, def: &EventDef, job: Option<Uuid>, fields: serde_json::Value) {
        self.events.emit(def, job, fields);
    }

    /// Emits without waiting for durability (inside the freeze window; see
    /// [`EventSink::emit_relaxed`]).
    pub fn emit_relaxed(&self, def: &EventDef, job: Option<Uuid>, fields: serde_json::Value) {
        self.events.emit_relaxed(def, job, fields);
    }

    /// Sends event `phase` to every target in parallel under the phase's deadline, records
    /// the outcome (success state or failure state + code + event) and returns each result.
    pub fn call_all<T, F>(
        &self,
        job: &JobRef,
        phase: Phase,
        targets: &[Arc<Participant>],
        on_success: Option<WriterState>,
        f: F,
    ) -> Vec<(Arc<Participant>, Result<T, VssError>)>
    where
        T: Send + 'static,
        F: Fn(&dyn Writer, &WriterContext) -> Result<T, WriterError> + Send + Sync + 'static,
    {
        let timeout = self.config.timeout(phase);
        let deadline = Instant::now() + timeout;
        let f = Arc::new(f);
        let pending: Vec<_> = targets
            .iter()
            .map(|p| {
                let writer = p.reg.writer.clone();
                let ctx = p.ctx(job);
                let f = f.clone();
                let name = format!("vss-{}-{}", phase.as_str(), p.reg.identity.instance_name);
                call::spawn(name, move || f(writer.as_ref(), &ctx))
            })
            .collect();
        targets
            .iter()
            .zip(pending)
            .map(|(p, pending)| {
                let r = match pending.wait_until(deadline) {
                    Ok(v) => {
                        if let Some(s) = on_success {
                            p.advance(s);
                        }
                        Ok(v)
                    }
                    Err(CallError::Failed(e)) => {
                        Err(self.writer_failed(job.job, p, phase, e.failure, &e.message, None))
                    }
                    Err(CallError::TimedOut(_)) => Err(self.writer_failed(
                        job.job,
                        p,
                        phase,
                        WriterFailure::Timeout,
                        &format!("no answer to {phase} within {timeout:?}"),
                        Some(timeout),
                    )),
                    Err(CallError::Panicked(m)) => Err(self.writer_failed(
                        job.job,
                        p,
                        phase,
                        WriterFailure::NonRetryable,
                        &m,
                        None,
                    )),
                };
                (p.clone(), r)
            })
            .collect()
    }

    /// Records a writer failure (state, code, event) and returns it as an error.
    pub fn writer_failed(
        &self,
        job: Uuid,
        p: &Participant,
        phase: Phase,
        failure: WriterFailure,
        message: &str,
        timeout: Option<Duration>,
    ) -> VssError {
        if let Some(state) = phase.failed_state() {
            p.fail(state, failure, message);
        }
        let id = &p.reg.identity;
        tracing::warn!(writer = %id.writer_name, instance = %id.instance_name, %phase, %failure, message, "writer failed");
        match timeout {
            Some(t) => self.emit(
                &catalog::COORD_WRITER_TIMED_OUT,
                Some(job),
                json!({"writer": id.writer_name, "instance": id.instance_name,
                       "phase": phase.as_str(), "timeout_ms": t.as_millis() as u64}),
            ),
            None => self.emit(
                &catalog::COORD_WRITER_FAILED,
                Some(job),
                json!({"writer": id.writer_name, "instance": id.instance_name,
                       "phase": phase.as_str(), "failure": failure.as_str(), "error": message}),
            ),
        }
        VssError::Writer {
            writer: id.writer_name.clone(),
            instance: id.instance_name.clone(),
            phase,
            failure,
            message: message.to_string(),
        }
    }

    pub fn provider_for(&self, volume: &str) -> Option<Arc<dyn Provider>> {
        self.providers.read().iter().find(|p| p.supports(volume)).cloned()
    }
}

/// The per-node coordinator. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("node", &self.inner.node).finish()
    }
}

impl Coordinator {
    /// A coordinator for node `node` that records its events in `events`.
    pub fn new(
        node: impl Into<String>,
        config: CoordinatorConfig,
        events: Arc<dyn EventSink>,
    ) -> Self {
        Self::build(node.into(), config, events, None)
    }

    /// Like [`Coordinator::new`], with a durable job journal so that jobs interrupted by a
    /// node crash are found and cleaned up at the next start
    /// ([`Coordinator::recover_interrupted_jobs`]).
    pub fn with_journal(
        node: impl Into<String>,
        config: CoordinatorConfig,
        events: Arc<dyn EventSink>,
        journal: JobJournal,
    ) -> Self {
        Self::build(node.into(), config, events, Some(journal))
    }

    fn build(
        node: String,
        config: CoordinatorConfig,
        events: Arc<dyn EventSink>,
        journal: Option<JobJournal>,
    ) -> Self {
        Coordinator {
            inner: Arc::new(Inner {
                node,
                config,
                events,
                writers: RwLock::new(Vec::new()),
                providers: RwLock::new(Vec::new()),
                gate: SnapshotSetGate::default(),
                sessions: AtomicUsize::new(0),
                journal,
            }),
        }
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn config(&self) -> &CoordinatorConfig {
        &self.inner.config
    }

    /// Registers a writer; its (writer id, instance name) must be new.
    pub fn register_writer(&self, writer: Arc<dyn Writer>) -> Result<(), VssError> {
        let identity = writer.identity();
        let mut writers = self.inner.writers.write();
        if writers.iter().any(|w| w.identity.key() == identity.key()) {
            return Err(VssError::DuplicateWriter { writer: identity.key() });
        }
        writers.push(Arc::new(RegisteredWriter {
            writer,
            identity,
            last: Mutex::new(WriterStatus::default()),
        }));
        Ok(())
    }

    /// Removes a writer (jobs already running keep their reference).
    pub fn unregister_writer(&self, key: &WriterKey) -> bool {
        let mut writers = self.inner.writers.write();
        let before = writers.len();
        writers.retain(|w| &w.identity.key() != key);
        writers.len() != before
    }

    /// Registers a provider. For each volume the first registered provider that supports it
    /// is used.
    pub fn register_provider(&self, provider: Arc<dyn Provider>) {
        self.inner.providers.write().push(provider);
    }

    /// Every writer with the state its last job left it in.
    pub fn list_writers(&self) -> Vec<WriterListing> {
        self.inner
            .writers
            .read()
            .iter()
            .map(|w| WriterListing {
                key: w.identity.key(),
                writer_name: w.identity.writer_name.clone(),
                status: w.last.lock().clone(),
            })
            .collect()
    }

    /// Every provider: (id, name).
    pub fn list_providers(&self) -> Vec<(Uuid, String)> {
        self.inner.providers.read().iter().map(|p| (p.id(), p.name())).collect()
    }

    /// Every live snapshot of every provider: (provider name, snapshot).
    pub fn list_snapshots(&self) -> Vec<(String, SnapshotInfo)> {
        let providers = self.inner.providers.read().clone();
        providers.iter().flat_map(|p| p.query().into_iter().map(move |s| (p.name(), s))).collect()
    }

    /// Deletes a snapshot (e.g. a persistent one).
    pub fn delete_snapshot(&self, snapshot: Uuid) -> Result<(), VssError> {
        let p = self.provider_of(snapshot)?;
        let info = p.query().into_iter().find(|s| s.snapshot_id == snapshot);
        p.delete(snapshot).map_err(|source| VssError::Provider { provider: p.name(), source })?;
        self.inner.emit(
            &catalog::PROVIDER_SNAPSHOT_DELETED,
            None,
            json!({"provider": p.name(), "snapshot": snapshot.to_string(),
                   "volume": info.map(|i| i.volume).unwrap_or_default()}),
        );
        Ok(())
    }

    /// A read-only view of a live snapshot.
    pub fn snapshot_view(&self, snapshot: Uuid) -> Result<FsRef, VssError> {
        let p = self.provider_of(snapshot)?;
        p.view(snapshot).map_err(|source| VssError::Provider { provider: p.name(), source })
    }

    fn provider_of(&self, snapshot: Uuid) -> Result<Arc<dyn Provider>, VssError> {
        self.inner
            .providers
            .read()
            .iter()
            .find(|p| p.query().iter().any(|s| s.snapshot_id == snapshot))
            .cloned()
            .ok_or(VssError::UnknownSnapshot { snapshot })
    }

    /// Starts a backup session (a requester's job) in `context`.
    pub fn backup_session(&self, context: SnapshotContext) -> Result<BackupSession, VssError> {
        let max = self.inner.config.max_sessions;
        if self.inner.sessions.fetch_add(1, Ordering::SeqCst) >= max {
            self.inner.sessions.fetch_sub(1, Ordering::SeqCst);
            return Err(VssError::TooManySessions { max });
        }
        Ok(BackupSession::new(self.inner.clone(), context))
    }

    /// Starts a restore session for the backup described by `document`.
    pub fn restore_session(&self, document: BackupComponentsDocument) -> RestoreSession {
        RestoreSession::new(self.inner.clone(), uuid::Uuid::new_v4(), document)
    }

    /// A restore session filed under `job`: the caller's restore job, so that the
    /// coordinator's and the writers' events join the requester's in one trail.
    pub fn restore_session_as(
        &self,
        job: uuid::Uuid,
        document: BackupComponentsDocument,
    ) -> RestoreSession {
        RestoreSession::new(self.inner.clone(), job, document)
    }

    /// Start-up recovery: finds the jobs the journal says never ended (the node crashed
    /// under them), releases their snapshots (unless they are persistent and were completely
    /// made), sends abort and backup_shutdown to their writers, logs
    /// `COORD_INTERRUPTED_JOB_FOUND` for each, and forgets them. Call after registering the
    /// writers and providers. Returns the jobs found.
    pub fn recover_interrupted_jobs(&self) -> Result<Vec<JobRecord>, VssError> {
        let Some(journal) = &self.inner.journal else { return Ok(Vec::new()) };
        let records = journal.list()?;
        for r in &records {
            tracing::warn!(job = %r.job, phase = ?r.phase, "found a job interrupted by a node crash");
            let keep = r.context.persistent() && r.phase >= SessionPhase::SnapshotSetDone;
            if let (Some(set), false) = (r.snapshot_set, keep) {
                let providers = self.inner.providers.read().clone();
                for p in providers {
                    if let Err(e) = p.abort_set(set) {
                        tracing::warn!(job = %r.job, set = %set, error = %e,
                            "could not abort the snapshot set of an interrupted job");
                    }
                    for s in p.query().into_iter().filter(|s| s.set_id == set) {
                        match p.delete(s.snapshot_id) {
                            Ok(()) => self.inner.emit(
                                &catalog::PROVIDER_SNAPSHOT_DELETED,
                                Some(r.job),
                                json!({"provider": p.name(), "snapshot": s.snapshot_id.to_string(), "volume": s.volume}),
                            ),
                            Err(e) => tracing::error!(snapshot = %s.snapshot_id, error = %e, "cannot delete an interrupted job's snapshot"),
                        }
                    }
                }
            }
            let registered = self.inner.writers.read().clone();
            let targets: Vec<Arc<Participant>> = registered
                .iter()
                .filter(|w| r.writers.contains(&w.identity.key()))
                .map(|w| Arc::new(Participant::new(w.clone(), placeholder_metadata(&w.identity))))
                .collect();
            if !targets.is_empty() && r.context.writers() {
                let job = JobRef { job: r.job, context: r.context, set: r.snapshot_set };
                self.inner.call_all(&job, Phase::Abort, &targets, None, |w, ctx| w.abort(ctx));
                self.inner.call_all(&job, Phase::BackupShutdown, &targets, None, |w, ctx| {
                    w.backup_shutdown(ctx)
                });
            }
            self.inner.emit(
                &catalog::COORD_INTERRUPTED_JOB_FOUND,
                Some(r.job),
                json!({"job": r.job.to_string(), "phase": format!("{:?}", r.phase)}),
            );
            journal.remove(r.job)?;
        }
        Ok(records)
    }

    /// The job currently creating a snapshot set on this node, if any.
    pub fn snapshot_set_in_progress(&self) -> Option<Uuid> {
        self.inner.gate.holder()
    }
}
