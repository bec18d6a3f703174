//! [`RestoreSession`]: putting a backup back, with the writers' pre_restore and post_restore.
//!
//! The reference has no abort for restores: a writer that fails pre_restore fails the restore
//! (the requester must not write the files), and a requester that gives up after pre_restore
//! still owes the writers a post_restore — dropping the session sends it with every component
//! marked failed, so a writer never stays in "restore pending".

use std::collections::BTreeMap;
use std::sync::Arc;

use events::catalog;
use serde_json::json;
use uuid::Uuid;

use crate::coordinator::{Inner, JobRef, Participant};
use crate::document::BackupComponentsDocument;
use crate::error::VssError;
use crate::metadata::ComponentKey;
use crate::writer::{ComponentResult, Phase, WriterContext, WriterState, WriterStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestorePhase {
    Created,
    PreRestoreDone,
    Ended,
}

/// A restore job for the backup described by a backup components document.
pub struct RestoreSession {
    inner: Arc<Inner>,
    job: Uuid,
    document: Arc<BackupComponentsDocument>,
    participants: Vec<Arc<Participant>>,
    phase: RestorePhase,
}

impl std::fmt::Debug for RestoreSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreSession").field("job", &self.job).finish()
    }
}

impl RestoreSession {
    pub(crate) fn new(inner: Arc<Inner>, job: Uuid, document: BackupComponentsDocument) -> Self {
        inner.emit(
            &catalog::COORD_SESSION_STARTED,
            Some(job),
            json!({"job": job.to_string(), "context": "restore"}),
        );
        RestoreSession {
            inner,
            job,
            document: Arc::new(document),
            participants: Vec::new(),
            phase: RestorePhase::Created,
        }
    }

    pub fn job(&self) -> Uuid {
        self.job
    }

    pub fn document(&self) -> &BackupComponentsDocument {
        &self.document
    }

    fn job_ref(&self) -> JobRef {
        JobRef { job: self.job, context: self.document.context, set: self.document.snapshot_set }
    }

    /// Identifies the writers of the document and sends them pre_restore. Fails if a writer of
    /// the document is not registered or fails identify or pre_restore.
    pub fn pre_restore(&mut self) -> Result<(), VssError> {
        if self.phase != RestorePhase::Created {
            return Err(VssError::Aborted { reason: "pre_restore was already sent".into() });
        }
        let job = self.job_ref();
        let registered = self.inner.writers.read().clone();
        let mut participants = Vec::new();
        for entry in &self.document.writers {
            let reg = registered
                .iter()
                .find(|r| r.identity.key() == entry.key)
                .ok_or_else(|| VssError::UnknownWriter { writer: entry.key.clone() })?;
            let ctx = WriterContext {
                job: self.job,
                backup_type: entry.backup_type,
                components: Vec::new(),
                context: job.context,
                snapshot_set: job.set,
                previous_stamp: None,
            };
            let w = reg.writer.clone();
            let metadata = crate::call::spawn(
                format!("vss-identify-{}", reg.identity.instance_name),
                move || w.identify(&ctx),
            )
            .wait_until(std::time::Instant::now() + self.inner.config.timeout(Phase::Identify));
            let metadata = match metadata {
                Ok(m) => m,
                Err(_) => {
                    let p = Participant::new(
                        reg.clone(),
                        crate::WriterMetadata {
                            version: crate::metadata::WRITER_METADATA_VERSION,
                            writer_id: entry.key.writer_id,
                            writer_name: entry.writer_name.clone(),
                            instance_name: entry.key.instance_name.clone(),
                            components: Vec::new(),
                            schema: Default::default(),
                            restore_method: crate::RestoreMethod::Custom,
                        },
                    );
                    return Err(self.inner.writer_failed(
                        self.job,
                        &p,
                        Phase::Identify,
                        crate::WriterFailure::Retryable,
                        "identify failed before restore",
                        None,
                    ));
                }
            };
            let mut p = Participant::new(reg.clone(), metadata);
            p.backup_type = entry.backup_type;
            p.components = self
                .document
                .component_keys()
                .into_iter()
                .filter(|k| k.writer == entry.key)
                .collect();
            *p.status.lock() = WriterStatus::default();
            participants.push(Arc::new(p));
        }
        self.participants = participants;
        self.inner.emit(
            &catalog::COORD_PRE_RESTORE,
            Some(self.job),
            json!({"writers": self.participants.len(),
                   "snapshot_set": job.set.map(|s| s.to_string()).unwrap_or_default()}),
        );
        let doc = self.document.clone();
        let r = self.inner.call_all(
            &job,
            Phase::PreRestore,
            &self.participants,
            Some(WriterState::Stable),
            move |w, ctx| w.pre_restore(ctx, &doc),
        );
        self.phase = RestorePhase::PreRestoreDone;
        if let Some(e) = r.into_iter().find_map(|(_, r)| r.err()) {
            // Nothing was restored: post_restore (all failed) releases the writers.
            self.post_restore(&BTreeMap::new()).ok();
            return Err(e);
        }
        Ok(())
    }

    /// Sends post_restore with each component's outcome (components not named count as failed).
    pub fn post_restore(&mut self, results: &BTreeMap<ComponentKey, bool>) -> Result<(), VssError> {
        if self.phase != RestorePhase::PreRestoreDone {
            return Err(VssError::Aborted {
                reason: "post_restore needs a pre_restore first".into(),
            });
        }
        self.phase = RestorePhase::Ended;
        let job = self.job_ref();
        let doc = self.document.clone();
        let results = Arc::new(results.clone());
        let ok = results.values().filter(|v| **v).count();
        self.inner.emit(
            &catalog::COORD_POST_RESTORE,
            Some(self.job),
            json!({"writers": self.participants.len(), "outcome": format!("{ok} components restored")}),
        );
        let r = self.inner.call_all(
            &job,
            Phase::PostRestore,
            &self.participants,
            Some(WriterState::Stable),
            move |w, ctx| {
                w.post_restore(ctx, &doc, &ComponentResult::of(&ctx.components, &results))
            },
        );
        match r.into_iter().find_map(|(_, r)| r.err()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for RestoreSession {
    fn drop(&mut self) {
        if self.phase == RestorePhase::PreRestoreDone
            && let Err(e) = self.post_restore(&BTreeMap::new())
        {
            tracing::warn!(error = %e, "post_restore of a dropped restore session failed");
        }
        self.inner.emit(
            &catalog::COORD_SESSION_SHUTDOWN,
            Some(self.job),
            json!({"job": self.job.to_string(), "outcome": "restore session ended"}),
        );
    }
}
