//! Ending a job: abort on failure or on request, release of the snapshot set, backup_shutdown,
//! and the `Drop` that does all of it for a requester that goes away.

use std::sync::atomic::Ordering;

use events::catalog;
use serde_json::json;

use super::BackupSession;
use crate::document::BackupComponentsDocument;
use crate::error::{SessionPhase, VssError};
use crate::writer::Phase;

impl BackupSession {
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
    pub(super) fn fail(&mut self, err: VssError) -> VssError {
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
            #[allow(clippy::expect_used)] // checked just above; releasing keeps the set
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
                if let Err(e) = p.delete(leftover.snapshot_id) {
                    tracing::warn!(set = %set.id, snapshot = %leftover.snapshot_id, error = %e,
                        "cannot delete a leftover snapshot of an aborted set");
                }
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
        // Without writers a committed set is the job's result (nothing to complete); with
        // writers, a set never followed by backup_complete is an unfinished job.
        let unfinished = match self.phase {
            SessionPhase::BackupStateSet | SessionPhase::PreparedForBackup => true,
            SessionPhase::SnapshotSetDone => self.context.writers(),
            _ => false,
        };
        if unfinished {
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
        } else if self.phase == SessionPhase::SnapshotSetDone {
            "snapshot set made".to_string()
        } else {
            format!("aborted: {}", self.abort_reason.as_deref().unwrap_or("no snapshot set made"))
        };
        self.inner.emit(
            &catalog::COORD_SESSION_SHUTDOWN,
            Some(self.job),
            json!({"job": self.job.to_string(), "outcome": outcome}),
        );
        if let (Some(journal), true) = (&self.inner.journal, self.journaled)
            && let Err(e) = journal.remove(self.job)
        {
            tracing::error!(job = %self.job, error = %e, "cannot remove the job's journal record");
        }
        self.inner.sessions.fetch_sub(1, Ordering::SeqCst);
        self.phase = SessionPhase::Ended;
    }
}

impl Drop for BackupSession {
    fn drop(&mut self) {
        self.end();
    }
}
