//! Making the snapshot set: the serialized stretch of a backup job, from prepare_snapshot to
//! post_snapshot, split into its steps. Any step's error goes through the session's abort
//! path (see `teardown`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{catalog, now_ms};
use serde_json::json;
use uuid::Uuid;

use super::{BackupSession, SetInProgress, SetSnapshot, SnapshotSet, first_error};
use crate::call::{self, CallError};
use crate::error::{SessionPhase, VssError};
use crate::freeze::FreezeControl;
use crate::journal::JobRecord;
use crate::provider::{CommittedSnapshot, Provider, ProviderError};
use crate::writer::{Phase, WriterFailure, WriterState};

impl BackupSession {
    /// The snapshot set being made (from `begin_set` until the session ends); asking without
    /// one is an internal sequencing error, reported rather than a panic.
    fn set_ref(&self) -> Result<&SetInProgress, VssError> {
        self.set.as_ref().ok_or(VssError::OutOfOrder { op: "snapshot set", phase: self.phase })
    }

    /// See [`BackupSession::set_ref`].
    fn set_mut(&mut self) -> Result<&mut SetInProgress, VssError> {
        let phase = self.phase;
        self.set.as_mut().ok_or(VssError::OutOfOrder { op: "snapshot set", phase })
    }

    /// Creates the snapshot set: prepare_snapshot → freeze → provider commit (flush-and-hold)
    /// → thaw → post_snapshot, then frees the gate. On success the snapshot views are ready.
    ///
    /// The events logged between freeze and thaw are emitted *relaxed* (in order, durable with
    /// the next event) so that the freeze window never waits on an fsync of the event log.
    pub fn do_snapshot_set(&mut self) -> Result<&SnapshotSet, VssError> {
        self.require_phase("do_snapshot_set", SessionPhase::PreparedForBackup)?;
        match self.make_snapshot_set() {
            Ok(()) => self
                .snapshot_set
                .as_ref()
                .ok_or(VssError::OutOfOrder { op: "do_snapshot_set", phase: self.phase }),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn make_snapshot_set(&mut self) -> Result<(), VssError> {
        let volumes: Vec<String> = self.volumes().into_iter().collect();
        let set_id = self.begin_set(&volumes)?;
        let writers = self.context.writers() && !self.participants.is_empty();
        if writers {
            self.prepare_and_freeze(set_id)?;
        }
        let commit = self.commit_providers(set_id)?;
        // The writes were held only for part of the commit (not while the file tables were
        // scanned ahead, nor while the snapshots were recorded after): the providers that
        // measure their hold say how long; for the others the whole commit counts.
        let hold =
            self.set_ref()?.committed.iter().filter_map(|(_, s)| s.held).max().unwrap_or(commit);
        self.check_consistency(&volumes)?;
        let committed_ms = now_ms();
        self.inner.emit_relaxed(
            &catalog::COORD_SNAPSHOT_SET_COMMITTED,
            Some(self.job),
            json!({"snapshot_set": set_id.to_string(), "volumes": volumes.join(", "),
                   "hold_ms": hold.as_millis() as u64, "commit_ms": commit.as_millis() as u64}),
        );
        if writers {
            self.thaw(set_id)?;
            self.post_snapshot(set_id)?;
        }
        self.inner.gate.release(self.job);
        self.holds_gate = false;
        let set = self.set_ref()?;
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
            commit,
        });
        self.phase = SessionPhase::SnapshotSetDone;
        self.record(SessionPhase::SnapshotSetDone)
    }

    /// Checks the volumes, picks a provider for each, journals the set id and begins the set
    /// at every provider.
    fn begin_set(&mut self, volumes: &[String]) -> Result<Uuid, VssError> {
        if volumes.is_empty() {
            return Err(VssError::NoVolumes);
        }
        let max = self.inner.config.max_volumes_per_set;
        if volumes.len() > max {
            return Err(VssError::TooManyVolumes { count: volumes.len(), max });
        }
        let mut by_provider: Vec<(Arc<dyn Provider>, Vec<String>)> = Vec::new();
        for v in volumes {
            let p = self
                .inner
                .provider_for(v)
                .ok_or_else(|| VssError::NoProvider { volume: v.clone() })?;
            match by_provider.iter_mut().find(|(q, _)| q.id() == p.id()) {
                Some((_, vs)) => vs.push(v.clone()),
                None => by_provider.push((p, vec![v.clone()])),
            }
        }
        let set_id = Uuid::new_v4();
        // Journal the set id before any provider knows it, so recovery can always find it.
        self.journal_set = Some(set_id);
        self.record(SessionPhase::PreparedForBackup)?;
        self.set = Some(SetInProgress {
            id: set_id,
            providers: Vec::new(),
            committed: Vec::new(),
            freeze: None,
        });
        for (p, vs) in by_provider {
            p.begin_set(set_id, &vs, self.context)
                .map_err(|source| VssError::Provider { provider: p.name(), source })?;
            self.set_mut()?.providers.push((p, vs));
        }
        self.inner.emit(
            &catalog::COORD_SNAPSHOT_SET_STARTED,
            Some(self.job),
            json!({"snapshot_set": set_id.to_string(), "volumes": volumes.join(", ")}),
        );
        Ok(set_id)
    }

    /// prepare_snapshot, then freeze with the freeze window's watchdog running.
    fn prepare_and_freeze(&mut self, set_id: Uuid) -> Result<(), VssError> {
        let job = self.job_ref();
        let r = self.inner.call_all(
            &job,
            Phase::PrepareSnapshot,
            &self.participants,
            Some(WriterState::WaitingForFreeze),
            |w, ctx| w.prepare_snapshot(ctx),
        );
        if let Some(e) = first_error(r) {
            return Err(e);
        }
        self.inner.emit(
            &catalog::COORD_FREEZE_ISSUED,
            Some(self.job),
            json!({"writers": self.participants.len(), "snapshot_set": set_id.to_string()}),
        );
        let fc = FreezeControl::start(self.inner.clone(), job, self.participants.clone());
        self.set_mut()?.freeze = Some(fc);
        let r = self.inner.call_all(
            &job,
            Phase::Freeze,
            &self.participants,
            Some(WriterState::WaitingForThaw),
            |w, ctx| w.freeze(ctx),
        );
        first_error(r).map_or(Ok(()), Err)
    }

    /// Commits every provider of the set inside one hold, on a worker, waiting no longer than
    /// the hold timeout (plus a quarter) and never past the freeze window. The providers are
    /// nested: each holds its writes and makes its snapshots, then commits the next one inside
    /// its hold ([`Provider::commit_set_within`]), so every volume of a set that mixes
    /// providers (a btrfs volume and a software one) is taken at the same instant. Providers
    /// that can run the next one inside their hold go outermost, in provider-id order (one
    /// fixed lock order for every set). Returns how long the commit took.
    fn commit_providers(&mut self, set_id: Uuid) -> Result<Duration, VssError> {
        let hold_timeout = self.inner.config.flush_hold_timeout;
        let started = Instant::now();
        let mut deadline = started + hold_timeout + hold_timeout / 4;
        if let Some(fc) = self.set.as_ref().and_then(|s| s.freeze.as_ref()) {
            deadline = deadline.min(started + fc.window());
        }
        let mut providers: Vec<Arc<dyn Provider>> =
            self.set_ref()?.providers.iter().map(|(p, _)| p.clone()).collect();
        providers.sort_by_key(|p| (!p.holds_within(), p.id()));
        let Some(outer) = providers.first().cloned() else { return Ok(started.elapsed()) };
        let chain = providers.clone();
        let pending = call::spawn(format!("vss-commit-{}", outer.name()), move || {
            let mut out = Vec::new();
            commit_nested(&chain, set_id, hold_timeout, &mut out).map(|()| out)
        });
        match pending.wait_until(deadline) {
            Ok(snaps) => {
                let set = self.set_mut()?;
                set.committed.extend(snaps);
                Ok(started.elapsed())
            }
            Err(CallError::Failed((p, source))) => {
                if let ProviderError::FlushHoldTimeout { .. } = source {
                    self.flush_hold_timed_out(p.as_ref(), set_id, hold_timeout);
                }
                Err(VssError::Provider { provider: p.name(), source })
            }
            Err(CallError::TimedOut(_)) => {
                self.flush_hold_timed_out(outer.as_ref(), set_id, hold_timeout);
                Err(VssError::ProviderTimeout {
                    provider: outer.name(),
                    set: set_id,
                    timeout: hold_timeout,
                })
            }
            Err(CallError::Panicked(m)) => {
                Err(VssError::Provider { provider: outer.name(), source: ProviderError::Failed(m) })
            }
        }
    }

    fn flush_hold_timed_out(&self, p: &dyn Provider, set: Uuid, timeout: Duration) {
        self.inner.emit(
            &catalog::PROVIDER_FLUSH_HOLD_TIMED_OUT,
            Some(self.job),
            json!({"provider": p.name(), "snapshot_set": set.to_string(),
                   "timeout_ms": timeout.as_millis() as u64}),
        );
    }

    /// Thaws the writers — unless the watchdog already did because the window expired.
    fn thaw(&mut self, set_id: Uuid) -> Result<(), VssError> {
        let job = self.job_ref();
        let fc = self
            .set_ref()?
            .freeze
            .clone()
            .ok_or(VssError::OutOfOrder { op: "thaw", phase: self.phase })?;
        let window = fc.window();
        if fc.expired() {
            return Err(VssError::FreezeWindowExpired { set: set_id, window });
        }
        let Some(targets) = fc.take_thaw() else {
            // The watchdog took the thaw: the window expired while we committed.
            fc.finish();
            return Err(VssError::FreezeWindowExpired { set: set_id, window });
        };
        self.inner.emit_relaxed(
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
        first_error(r).map_or(Ok(()), Err)
    }

    /// post_snapshot; collects each writer's backup stamp.
    fn post_snapshot(&mut self, set_id: Uuid) -> Result<(), VssError> {
        let job = self.job_ref();
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
        failed.map_or(Ok(()), Err)
    }

    /// Every volume a selected component lives on must have a snapshot in the set; a writer
    /// whose component lost one fails with `inconsistent_snapshot` (its data would be copied
    /// from two different points in time).
    fn check_consistency(&self, volumes: &[String]) -> Result<(), VssError> {
        let set = self.set_ref()?;
        let missing: Vec<&String> = volumes
            .iter()
            .filter(|v| !set.committed.iter().any(|(_, s)| &s.volume == *v))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let msg = format!(
            "the snapshot set lacks volume(s) {}",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
        let mut first = None;
        for p in &self.participants {
            let touches = p.components.iter().any(|c| {
                p.metadata
                    .component(&c.logical_path, &c.name)
                    .is_some_and(|comp| comp.files.iter().any(|f| missing.contains(&&f.volume)))
            });
            if touches {
                let e = self.inner.writer_failed(
                    self.job,
                    p,
                    Phase::PostSnapshot,
                    WriterFailure::InconsistentSnapshot,
                    &msg,
                    None,
                );
                first.get_or_insert(e);
            }
        }
        Err(first.unwrap_or_else(|| VssError::Provider {
            provider: set.providers.first().map(|(p, _)| p.name()).unwrap_or_default(),
            source: ProviderError::Failed(msg),
        }))
    }

    /// Durably records the job in the node's job journal (if it has one), so a node crash
    /// cannot orphan its writers' state or its snapshots.
    pub(super) fn record(&mut self, phase: SessionPhase) -> Result<(), VssError> {
        let Some(journal) = &self.inner.journal else { return Ok(()) };
        journal.write(&JobRecord {
            job: self.job,
            context: self.context,
            phase,
            recorded_ms: now_ms(),
            writers: self.participants.iter().map(|p| p.key()).collect(),
            snapshot_set: self.journal_set,
            snapshots: self
                .snapshot_set
                .iter()
                .flat_map(|s| s.snapshots.iter())
                .map(|s| (s.provider.clone(), s.snapshot_id))
                .collect(),
        })?;
        self.journaled = true;
        Ok(())
    }
}

/// Commits `chain[0]` with the rest of the chain committed inside its hold (see
/// `commit_providers`); appends every snapshot with its provider's name. A failure names the
/// provider that failed.
fn commit_nested(
    chain: &[Arc<dyn Provider>],
    set: Uuid,
    hold_timeout: Duration,
    out: &mut Vec<(String, CommittedSnapshot)>,
) -> Result<(), (Arc<dyn Provider>, ProviderError)> {
    let Some((p, rest)) = chain.split_first() else { return Ok(()) };
    let mut inner_out = Vec::new();
    let mut inner_failed = None;
    let r = p.commit_set_within(set, hold_timeout, &mut || {
        commit_nested(rest, set, hold_timeout, &mut inner_out).map_err(|(q, e)| {
            let msg = format!("{} failed inside the hold: {e}", q.name());
            inner_failed = Some((q, e));
            ProviderError::Failed(msg)
        })
    });
    match r {
        Ok(snaps) => {
            out.extend(snaps.into_iter().map(|s| (p.name(), s)));
            out.extend(inner_out);
            Ok(())
        }
        Err(e) => Err(inner_failed.unwrap_or_else(|| (p.clone(), e))),
    }
}
