//! The coordinator's backup rules, end to end with scripted writers and a copying provider.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Rig, quick_config, rig};
use events::catalog::*;
use parking_lot::{Condvar, Mutex};
use vss::testing::{Behavior, CommitBehavior};
use vss::{
    BackupSchema, BackupState, BackupType, Phase, Provider, SchemaFeature, SessionPhase,
    SnapshotContext, VssError, WriterFailure, WriterState,
};

fn ids(defs: &[&events::EventDef]) -> Vec<u32> {
    defs.iter().map(|d| d.id).collect()
}

fn select_all(rig: &Rig, kind: BackupType) -> BackupState {
    BackupState {
        backup_type: kind.into(),
        components: rig.writers.iter().flat_map(|w| w.component_keys()).collect(),
        ..BackupState::default()
    }
}

#[test]
fn successful_full_backup_walks_every_phase_and_releases_the_set() {
    let rig = rig(2, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    let described = s.gather_writer_metadata().unwrap();
    assert_eq!(described.len(), 2);
    assert!(described.iter().all(|d| d.status.state == WriterState::Stable));
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    assert_eq!(rig.coord.snapshot_set_in_progress(), Some(job));
    let set = s.do_snapshot_set().unwrap().clone();
    assert_eq!(rig.coord.snapshot_set_in_progress(), None, "the gate is freed after post_snapshot");
    assert_eq!(set.snapshots.len(), 2);
    for w in &rig.writers {
        assert_eq!(s.writer_status(&w.key()).unwrap().state, WriterState::WaitingForBackupComplete);
        assert!(!w.is_frozen());
    }

    // The views hold the data as of the commit, read-only.
    let db = s.snapshot_view("db").unwrap();
    std::fs::write(rig.tmp.path().join("vol-db/sg0/mail0.edb"), b"changed after the snapshot")
        .unwrap();
    assert_eq!(
        volume::fs::read_all(db.as_ref(), Path::new("sg0/mail0.edb")).unwrap(),
        b"database 0"
    );
    let err = db.open(Path::new("sg0/mail0.edb"), volume::OpenMode::ReadWrite).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);

    for c in rig.writers.iter().flat_map(|w| w.component_keys()) {
        s.set_backup_succeeded(&c, true).unwrap();
    }
    let doc = s.backup_complete().unwrap();
    assert!(doc.completed);
    assert_eq!(doc.snapshot_set, Some(set.id));
    assert!(doc.writers.iter().all(|w| w.counts_as_base() && w.backup_stamp.is_some()));
    assert_eq!(rig.provider.query().len(), 2, "held until the session ends");
    s.shutdown();
    assert!(rig.provider.query().is_empty(), "non-persistent snapshots are released");

    for w in &rig.writers {
        assert_eq!(
            w.phases(job),
            [
                Phase::Identify,
                Phase::PrepareBackup,
                Phase::PrepareSnapshot,
                Phase::Freeze,
                Phase::Thaw,
                Phase::PostSnapshot,
                Phase::BackupComplete,
                Phase::BackupShutdown
            ]
        );
        let complete = w.received().into_iter().find(|r| r.phase == Phase::BackupComplete).unwrap();
        assert!(complete.results.unwrap().iter().all(|r| r.succeeded));
    }
    assert!(rig.coord.list_writers().iter().all(|l| l.status.state == WriterState::Stable));
    assert_eq!(
        rig.trail_ids(job),
        ids(&[
            &COORD_SESSION_STARTED,
            &COORD_METADATA_GATHERED,
            &COORD_BACKUP_STATE_SET,
            &COORD_PREPARE_BACKUP,
            &COORD_SNAPSHOT_SET_STARTED,
            &COORD_FREEZE_ISSUED,
            &COORD_SNAPSHOT_SET_COMMITTED,
            &COORD_THAW_ISSUED,
            &COORD_POST_SNAPSHOT,
            &COORD_BACKUP_COMPLETE,
            &PROVIDER_SNAPSHOT_DELETED,
            &PROVIDER_SNAPSHOT_DELETED,
            &COORD_SESSION_SHUTDOWN,
        ])
    );
    let trail = rig.trail(job);
    assert!(trail[6].message.contains("volumes db, logs"), "{}", trail[6].message);
    assert!(trail.last().unwrap().message.contains("completed"));
}

/// Runs a full job with writer 0 scripted to `behavior` at `phase`; returns the rig, the job
/// id, the error, and writer 0's status at the failure.
fn failing_job(phase: Phase, behavior: Behavior) -> (Rig, uuid::Uuid, VssError, vss::WriterStatus) {
    let rig = rig(2, quick_config(), BackupSchema::default());
    rig.writers[0].set(phase, behavior);
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    let err = s
        .prepare_for_backup()
        .and_then(|_| s.do_snapshot_set().map(|_| ()))
        .expect_err("the job must fail");
    assert_eq!(s.phase(), SessionPhase::Aborted);
    assert!(matches!(s.backup_complete(), Err(VssError::Aborted { .. })));
    let status = s.writer_status(&rig.writers[0].key()).unwrap();
    drop(s);
    (rig, job, err, status)
}

#[test]
fn a_failure_at_any_phase_aborts_thaws_and_releases_everything() {
    let phases = [
        Phase::PrepareBackup,
        Phase::PrepareSnapshot,
        Phase::Freeze,
        Phase::Thaw,
        Phase::PostSnapshot,
    ];
    for phase in phases {
        for behavior in
            [Behavior::Fail(WriterFailure::Retryable), Behavior::Stall(Duration::from_secs(60))]
        {
            let (rig, job, err, status) = failing_job(phase, behavior);
            let case = format!("{phase} {behavior:?}");
            let expected = match behavior {
                Behavior::Stall(_) => WriterFailure::Timeout,
                _ => WriterFailure::Retryable,
            };
            match &err {
                VssError::Writer { phase: p, failure, .. } => {
                    assert_eq!((*p, *failure), (phase, expected), "{case}")
                }
                other => panic!("{case}: unexpected error {other}"),
            }
            assert!(err.is_retryable(), "{case}: retryable and timeout failures may be retried");
            assert_eq!(status.state, phase.failed_state().unwrap(), "{case}");
            assert_eq!(status.failure, Some(expected), "{case}");
            for w in &rig.writers {
                let phases = w.phases(job);
                assert!(phases.contains(&Phase::Abort), "{case}: abort reaches every writer");
                assert!(
                    !phases.contains(&Phase::BackupComplete),
                    "{case}: no backup_complete after a failure"
                );
                assert_eq!(
                    phases.last(),
                    Some(&Phase::BackupShutdown),
                    "{case}: shutdown ends the job"
                );
                if phase >= Phase::Freeze {
                    assert!(phases.contains(&Phase::Thaw), "{case}: every frozen writer is thawed");
                }
                assert!(!w.is_frozen(), "{case}");
            }
            assert!(rig.provider.query().is_empty(), "{case}: the snapshot set is released");
            assert_eq!(rig.provider.open_sets(), 0, "{case}");
            assert_eq!(rig.coord.snapshot_set_in_progress(), None, "{case}: gate freed");
            let trail = rig.trail_ids(job);
            let failure_event = if matches!(behavior, Behavior::Stall(_)) {
                &COORD_WRITER_TIMED_OUT
            } else {
                &COORD_WRITER_FAILED
            };
            assert!(trail.contains(&failure_event.id), "{case}: {trail:?}");
            assert!(trail.contains(&COORD_ABORT.id), "{case}");
            assert_eq!(trail.last(), Some(&COORD_SESSION_SHUTDOWN.id), "{case}");
            let listing = rig.coord.list_writers();
            assert_eq!(
                listing[0].status.state.code(),
                phase.failed_state().unwrap().code(),
                "{case}"
            );
        }
    }
}

#[test]
fn a_writer_stalling_in_freeze_ends_failed_at_freeze_with_timeout_and_the_trail_says_so() {
    let (rig, job, _err, status) =
        failing_job(Phase::Freeze, Behavior::Stall(Duration::from_secs(60)));
    assert_eq!(status.state, WriterState::FailedAtFreeze);
    assert_eq!(status.state.code(), 9);
    assert_eq!(status.failure, Some(WriterFailure::Timeout));
    assert_eq!(
        rig.trail_ids(job),
        ids(&[
            &COORD_SESSION_STARTED,
            &COORD_METADATA_GATHERED,
            &COORD_BACKUP_STATE_SET,
            &COORD_PREPARE_BACKUP,
            &COORD_SNAPSHOT_SET_STARTED,
            &COORD_FREEZE_ISSUED,
            &COORD_WRITER_TIMED_OUT,
            &COORD_THAW_ISSUED,
            &COORD_SNAPSHOT_SET_ABORTED,
            &COORD_ABORT,
            &COORD_SESSION_SHUTDOWN,
        ])
    );
    let timed_out = rig.trail(job).into_iter().find(|e| e.is(&COORD_WRITER_TIMED_OUT)).unwrap();
    assert_eq!(timed_out.fields["phase"], "freeze");
    assert_eq!(timed_out.fields["instance"], "instance-0");
}

#[test]
fn a_thaw_failure_after_commit_deletes_the_committed_snapshots() {
    let (rig, job, _err, status) =
        failing_job(Phase::Thaw, Behavior::Fail(WriterFailure::NonRetryable));
    assert_eq!(status.state, WriterState::FailedAtThaw);
    assert_eq!(
        rig.trail_ids(job),
        ids(&[
            &COORD_SESSION_STARTED,
            &COORD_METADATA_GATHERED,
            &COORD_BACKUP_STATE_SET,
            &COORD_PREPARE_BACKUP,
            &COORD_SNAPSHOT_SET_STARTED,
            &COORD_FREEZE_ISSUED,
            &COORD_SNAPSHOT_SET_COMMITTED,
            &COORD_THAW_ISSUED,
            &COORD_WRITER_FAILED,
            &PROVIDER_SNAPSHOT_DELETED,
            &PROVIDER_SNAPSHOT_DELETED,
            &COORD_SNAPSHOT_SET_ABORTED,
            &COORD_ABORT,
            &COORD_SESSION_SHUTDOWN,
        ])
    );
}

#[test]
fn identify_failures_leave_the_writer_out_and_the_job_goes_on() {
    let rig = rig(2, quick_config(), BackupSchema::default());
    // Stalls far past the deadline (the coordinator leaves it out and never waits for it).
    rig.writers[0].set(Phase::Identify, Behavior::Stall(Duration::from_secs(60)));
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let described = s.gather_writer_metadata().unwrap();
    assert_eq!(described.len(), 1);
    assert_eq!(described[0].key, rig.writers[1].key());
    let listing = rig.coord.list_writers();
    assert_eq!(listing[0].status.state, WriterState::FailedAtIdentify);
    assert_eq!(listing[0].status.failure, Some(WriterFailure::Timeout));
    s.set_backup_state(BackupState {
        components: rig.writers[1].component_keys(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    s.backup_complete().unwrap();
    let job = s.job();
    s.shutdown();
    assert_eq!(rig.writers[0].phases(job), [Phase::Identify]);
    // Selecting a component of a writer that is not in the job is refused.
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    rig.writers[1].set(Phase::Identify, Behavior::Fail(WriterFailure::Retryable));
    s.gather_writer_metadata().unwrap();
    let err = s.set_backup_state(BackupState {
        components: rig.writers[1].component_keys(),
        ..BackupState::default()
    });
    assert!(matches!(err, Err(VssError::UnknownWriter { .. })));
}

#[test]
fn backup_complete_and_shutdown_failures_are_recorded_without_abort() {
    let rig = rig(2, quick_config(), BackupSchema::default());
    rig.writers[0].set(Phase::BackupComplete, Behavior::Fail(WriterFailure::OutOfResources));
    rig.writers[1].set(Phase::BackupShutdown, Behavior::Stall(Duration::from_secs(60)));
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    let err = s.backup_complete().unwrap_err();
    assert!(matches!(
        err,
        VssError::Writer {
            phase: Phase::BackupComplete,
            failure: WriterFailure::OutOfResources,
            ..
        }
    ));
    s.shutdown();
    let listing = rig.coord.list_writers();
    assert_eq!(listing[0].status.state.code(), 12);
    assert_eq!(listing[1].status.state.code(), 15);
    assert_eq!(listing[1].status.failure, Some(WriterFailure::Timeout));
    assert!(rig.writers.iter().all(|w| !w.phases(job).contains(&Phase::Abort)));
    assert!(rig.provider.query().is_empty());
}

#[test]
fn the_watchdog_thaws_within_the_freeze_window_while_the_job_thread_still_waits() {
    let mut config = quick_config();
    // The window passes long before the job thread's freeze deadline: the order of thaw and
    // abort below does not depend on how busy the machine is.
    config.freeze_window = Duration::from_millis(300);
    config.phase_timeouts.insert(Phase::Freeze, Duration::from_secs(6));
    let rig = rig(2, config, BackupSchema::default());
    rig.writers[1].set(Phase::Freeze, Behavior::Stall(Duration::from_secs(60)));
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    let err = s.do_snapshot_set().unwrap_err();
    assert!(
        matches!(
            err,
            VssError::Writer { phase: Phase::Freeze, failure: WriterFailure::Timeout, .. }
        ),
        "{err}"
    );
    let s0 = s.writer_status(&rig.writers[0].key()).unwrap();
    assert_eq!((s0.state, s0.failure), (WriterState::FailedAtFreeze, Some(WriterFailure::Timeout)));
    drop(s);
    // Writer 0 was thawed (by the watchdog) before the job thread gave up on writer 1's freeze
    // and sent abort.
    let journal = rig.journal.lock().clone();
    let pos = |inst: &str, phase: Phase| {
        journal.iter().position(|r| r.job == job && r.instance == inst && r.phase == phase).unwrap()
    };
    assert!(pos("instance-0", Phase::Thaw) < pos("instance-1", Phase::Abort));
    assert_eq!(
        journal.iter().filter(|r| r.job == job && r.phase == Phase::Thaw).count(),
        2,
        "thaw dispatched once per writer"
    );
    assert!(rig.trail_ids(job).contains(&COORD_FREEZE_WINDOW_EXPIRED.id));
    assert!(rig.writers.iter().all(|w| !w.is_frozen()));
}

#[test]
fn provider_failures_and_stuck_commits_abort_and_thaw() {
    for behavior in [
        CommitBehavior::Fail,
        CommitBehavior::Stall { hold: Duration::from_secs(2), honour_timeout: true },
        // Hangs until released below (the coordinator's deadline must pass first).
        CommitBehavior::Stall { hold: Duration::from_secs(600), honour_timeout: false },
    ] {
        let mut config = quick_config();
        config.flush_hold_timeout = Duration::from_millis(200);
        let rig = rig(2, config, BackupSchema::default());
        rig.provider.set_commit_behavior(behavior);
        let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
        let job = s.job();
        s.gather_writer_metadata().unwrap();
        s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
        s.prepare_for_backup().unwrap();
        let err = s.do_snapshot_set().unwrap_err();
        match behavior {
            CommitBehavior::Fail => assert!(matches!(err, VssError::Provider { .. }), "{err}"),
            CommitBehavior::Stall { honour_timeout: true, .. } => {
                assert!(
                    matches!(
                        err,
                        VssError::Provider {
                            source: vss::ProviderError::FlushHoldTimeout { .. },
                            ..
                        }
                    ),
                    "{err}"
                )
            }
            _ => assert!(matches!(err, VssError::ProviderTimeout { .. }), "{err}"),
        }
        drop(s);
        for w in &rig.writers {
            let phases = w.phases(job);
            assert!(
                phases.contains(&Phase::Thaw) && phases.contains(&Phase::Abort),
                "{behavior:?}"
            );
            assert!(!w.is_frozen());
        }
        let trail = rig.trail_ids(job);
        if !matches!(behavior, CommitBehavior::Fail) {
            assert!(trail.contains(&PROVIDER_FLUSH_HOLD_TIMED_OUT.id), "{behavior:?} {trail:?}");
        }
        assert_eq!(rig.provider.open_sets(), 0);
        // The (stuck) commit returns — later, for the stuck one — and must find its set
        // abandoned.
        rig.provider.release_stalled_commits();
        assert!(
            rig.provider.wait_for_finished_commits(1, Duration::from_secs(60)),
            "{behavior:?}: timed out after 60 s waiting for the provider's commit to return"
        );
        assert!(rig.provider.query().is_empty(), "{behavior:?}");
    }
}

#[test]
fn snapshot_set_creation_is_serialized_while_copies_run_in_parallel() {
    let rig = Arc::new(rig(2, quick_config(), BackupSchema::default()));
    let copying = Arc::new((Mutex::new(0usize), Condvar::new()));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let rig = rig.clone();
            let copying = copying.clone();
            std::thread::spawn(move || {
                let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
                s.gather_writer_metadata().unwrap();
                let mine = rig.writers[i].component_keys();
                s.set_backup_state(BackupState {
                    components: mine.clone(),
                    ..BackupState::default()
                })
                .unwrap();
                s.prepare_for_backup().unwrap();
                s.do_snapshot_set().unwrap();
                // Copy phase: wait (bounded) until the other job is copying too.
                let (count, cv) = &*copying;
                let mut n = count.lock();
                *n += 1;
                cv.notify_all();
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while *n < 2 && !cv.wait_until(&mut n, deadline).timed_out() {}
                let overlapped = *n >= 2;
                drop(n);
                let view = s.snapshot_view("db").unwrap();
                let data =
                    volume::fs::read_all(view.as_ref(), Path::new(&format!("sg{i}/mail{i}.edb")))
                        .unwrap();
                assert_eq!(data, format!("database {i}").as_bytes());
                for c in &mine {
                    s.set_backup_succeeded(c, true).unwrap();
                }
                s.backup_complete().unwrap();
                let job = s.job();
                s.shutdown();
                (job, overlapped)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(results.iter().all(|(_, overlapped)| *overlapped), "copy phases overlap");
    let journal = rig.journal.lock().clone();
    let creation = [
        Phase::PrepareBackup,
        Phase::PrepareSnapshot,
        Phase::Freeze,
        Phase::Thaw,
        Phase::PostSnapshot,
    ];
    let range = |job| {
        let idx: Vec<usize> = journal
            .iter()
            .enumerate()
            .filter(|(_, r)| r.job == job && creation.contains(&r.phase))
            .map(|(i, _)| i)
            .collect();
        (*idx.first().unwrap(), *idx.last().unwrap())
    };
    let (a, b) = (range(results[0].0), range(results[1].0));
    assert!(a.1 < b.0 || b.1 < a.0, "snapshot-set creations overlap: {a:?} {b:?}");
    // Each job's writer without a selected component got nothing after prepare_backup.
    for (i, (job, _)) in results.iter().enumerate() {
        let other = &rig.writers[1 - i];
        assert_eq!(other.phases(*job), [Phase::Identify, Phase::PrepareBackup]);
        assert!(rig.trail_ids(*job).contains(&COORD_WRITER_NOT_INVOLVED.id));
    }
}

#[test]
fn a_second_job_waits_for_the_gate_then_fails_with_snapshot_set_in_progress() {
    let mut config = quick_config();
    config.snapshot_set_wait = Duration::from_millis(100);
    let rig = rig(1, config, BackupSchema::default());
    let mut a = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let mut b = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    for s in [&mut a, &mut b] {
        s.gather_writer_metadata().unwrap();
        s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    }
    a.prepare_for_backup().unwrap();
    match b.prepare_for_backup() {
        Err(VssError::SnapshotSetInProgress { holder, .. }) => assert_eq!(holder, a.job()),
        other => panic!("expected snapshot set in progress, got {other:?}"),
    }
    assert!(rig.trail_ids(b.job()).contains(&COORD_SNAPSHOT_SET_BUSY.id));
    a.do_snapshot_set().unwrap();
    b.prepare_for_backup().unwrap();
    b.do_snapshot_set().unwrap();
    a.backup_complete().unwrap();
    b.backup_complete().unwrap();
}

#[test]
fn a_requester_dropped_mid_job_aborts_cleanly_and_shutdown_reaches_the_writers() {
    let rig = rig(2, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    drop(s); // the requester goes away while copying
    for w in &rig.writers {
        let phases = w.phases(job);
        assert_eq!(&phases[phases.len() - 2..], [Phase::Abort, Phase::BackupShutdown]);
        assert!(!phases.contains(&Phase::BackupComplete));
    }
    assert!(rig.provider.query().is_empty());
    let trail = rig.trail_ids(job);
    assert_eq!(
        trail[trail.len() - 5..],
        ids(&[
            &PROVIDER_SNAPSHOT_DELETED,
            &PROVIDER_SNAPSHOT_DELETED,
            &COORD_SNAPSHOT_SET_ABORTED,
            &COORD_ABORT,
            &COORD_SESSION_SHUTDOWN
        ])
    );

    // A requester thread that panics while holding the gate: unwinding ends its session.
    let coord = rig.coord.clone();
    let all = select_all(&rig, BackupType::Full);
    let crashed = std::thread::spawn(move || {
        let mut s = coord.backup_session(SnapshotContext::Backup).unwrap();
        s.gather_writer_metadata().unwrap();
        s.set_backup_state(all).unwrap();
        s.prepare_for_backup().unwrap();
        let job = s.job();
        std::panic::panic_any(job);
    })
    .join()
    .unwrap_err();
    let job = *crashed.downcast::<uuid::Uuid>().unwrap();
    assert_eq!(rig.coord.snapshot_set_in_progress(), None);
    for w in &rig.writers {
        assert_eq!(
            w.phases(job),
            [Phase::Identify, Phase::PrepareBackup, Phase::Abort, Phase::BackupShutdown]
        );
    }
}

#[test]
fn excluded_and_uninvolved_writers_and_type_fallback() {
    let rig = rig(3, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        backup_type: BackupType::Incremental.into(),
        components: rig.writers[0].component_keys(),
        excluded_writers: vec![rig.writers[2].key()],
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    let doc = s.backup_complete().unwrap();
    s.shutdown();
    // Full-only schema: asked for incremental, backed up as full.
    let got = rig.writers[0].received();
    assert!(
        got.iter()
            .filter(|r| r.job == job && r.phase != Phase::Identify)
            .all(|r| r.backup_type == BackupType::Full)
    );
    assert_eq!(doc.backup_type, BackupType::Incremental);
    assert_eq!(doc.writers.len(), 1);
    assert_eq!(doc.writers[0].backup_type, BackupType::Full);
    assert!(rig.trail_ids(job).contains(&COORD_BACKUP_TYPE_DOWNGRADED.id));
    assert_eq!(rig.writers[1].phases(job), [Phase::Identify, Phase::PrepareBackup]);
    assert_eq!(rig.writers[2].phases(job), [Phase::Identify]);
}

#[test]
fn copy_backups_never_serve_as_a_base_and_stamps_flow_from_a_full() {
    let schema = BackupSchema::with([
        SchemaFeature::Copy,
        SchemaFeature::Incremental,
        SchemaFeature::Differential,
    ]);
    let rig = rig(1, quick_config(), schema);
    let run = |kind: BackupType, base: Option<vss::BackupComponentsDocument>| {
        let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
        s.gather_writer_metadata().unwrap();
        let mut state = select_all(&rig, kind);
        state.base = base;
        s.set_backup_state(state)?;
        s.prepare_for_backup()?;
        s.do_snapshot_set()?;
        for c in rig.writers[0].component_keys() {
            s.set_backup_succeeded(&c, true)?;
        }
        s.backup_complete()
    };
    let copy = run(BackupType::Copy, None).unwrap();
    assert_eq!(copy.writers[0].backup_type, BackupType::Copy);
    assert!(!copy.writers[0].counts_as_base());
    assert!(!copy.is_base_for(&rig.writers[0].key()));
    let err = run(BackupType::Incremental, Some(copy.clone())).unwrap_err();
    assert!(
        matches!(err, VssError::InvalidBase { reason, .. } if reason.contains("copy")),
        "{err}"
    );
    let full = run(BackupType::Full, None).unwrap();
    assert!(full.is_base_for(&rig.writers[0].key()));
    let inc = run(BackupType::Incremental, Some(full.clone())).unwrap();
    assert_eq!(inc.base_job, Some(full.job));
    assert_eq!(inc.writers[0].previous_stamp, full.writers[0].backup_stamp);
    // The document survives JSON unchanged.
    assert_eq!(vss::BackupComponentsDocument::from_json(&inc.to_json()).unwrap(), inc);
}

#[test]
fn abort_may_reach_a_writer_twice_and_results_are_per_component() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    s.abort("operator cancelled").unwrap();
    s.abort("operator cancelled again").unwrap();
    assert!(matches!(s.do_snapshot_set(), Err(VssError::Aborted { .. })));
    assert_eq!(s.abort_reason(), Some("the session was aborted: operator cancelled"));
    drop(s);
    assert_eq!(
        rig.writers[0].phases(job),
        [Phase::Identify, Phase::PrepareBackup, Phase::Abort, Phase::Abort, Phase::BackupShutdown]
    );

    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    let keys = rig.writers[0].component_keys();
    s.set_backup_succeeded(&keys[0], true).unwrap();
    let doc = s.backup_complete().unwrap();
    assert_eq!(
        doc.writers[0].components.iter().map(|c| c.succeeded).collect::<Vec<_>>(),
        [Some(true), None]
    );
    assert!(!doc.is_base_for(&rig.writers[0].key()));
    let got = rig.writers[0]
        .received()
        .into_iter()
        .find(|r| r.job == job && r.phase == Phase::BackupComplete)
        .unwrap();
    let results = got.results.unwrap();
    assert!(results.iter().any(|r| r.component == keys[0] && r.succeeded));
    assert!(results.iter().any(|r| r.component == keys[1] && !r.succeeded));
}

#[test]
fn persistent_contexts_keep_their_snapshots_and_writerless_ones_skip_writers() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::ClientAccessible).unwrap();
    let job = s.job();
    assert!(s.gather_writer_metadata().unwrap().is_empty());
    s.set_backup_state(BackupState { volumes: vec!["db".into()], ..BackupState::default() })
        .unwrap();
    s.prepare_for_backup().unwrap();
    let set = s.do_snapshot_set().unwrap().clone();
    s.shutdown();
    assert!(rig.writers[0].phases(job).is_empty(), "no writer takes part");
    let listed = rig.coord.list_snapshots();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].1.persistent);
    let id = set.snapshots[0].snapshot_id;
    let view = rig.coord.snapshot_view(id).unwrap();
    assert_eq!(
        volume::fs::read_all(view.as_ref(), Path::new("sg0/mail0.edb")).unwrap(),
        b"database 0"
    );
    rig.coord.delete_snapshot(id).unwrap();
    assert!(rig.coord.list_snapshots().is_empty());
    assert!(matches!(rig.coord.delete_snapshot(id), Err(VssError::UnknownSnapshot { .. })));

    // Persistent with writers: writers take part, snapshots stay.
    let mut s = rig.coord.backup_session(SnapshotContext::AppRollback).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    s.backup_complete().unwrap();
    s.shutdown();
    assert_eq!(rig.writers[0].phases(job).len(), 8);
    assert_eq!(rig.coord.list_snapshots().len(), 2);
}

#[test]
fn restore_hands_the_document_to_pre_and_post_restore() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    let doc = s.backup_complete().unwrap();
    s.shutdown();

    let keys = rig.writers[0].component_keys();
    let mut r = rig.coord.restore_session(doc.clone());
    let job = r.job();
    r.pre_restore().unwrap();
    r.post_restore(&[(keys[0].clone(), true), (keys[1].clone(), true)].into_iter().collect())
        .unwrap();
    drop(r);
    assert_eq!(
        rig.writers[0].phases(job),
        [Phase::Identify, Phase::PreRestore, Phase::PostRestore]
    );
    let post = rig.writers[0]
        .received()
        .into_iter()
        .find(|x| x.job == job && x.phase == Phase::PostRestore)
        .unwrap();
    assert!(post.results.unwrap().iter().all(|c| c.succeeded));
    assert_eq!(
        rig.trail_ids(job),
        ids(&[
            &COORD_SESSION_STARTED,
            &COORD_PRE_RESTORE,
            &COORD_POST_RESTORE,
            &COORD_SESSION_SHUTDOWN
        ])
    );

    // A restore abandoned after pre_restore still releases the writer with post_restore (failed).
    let mut r = rig.coord.restore_session(doc);
    let job = r.job();
    r.pre_restore().unwrap();
    drop(r);
    let post = rig.writers[0]
        .received()
        .into_iter()
        .find(|x| x.job == job && x.phase == Phase::PostRestore)
        .unwrap();
    assert!(post.results.unwrap().iter().all(|c| !c.succeeded));
}

#[test]
fn the_session_limit_is_enforced_and_freed_on_drop() {
    let mut config = quick_config();
    config.max_sessions = 1;
    let rig = rig(1, config, BackupSchema::default());
    let first = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    assert!(matches!(
        rig.coord.backup_session(SnapshotContext::Backup),
        Err(VssError::TooManySessions { max: 1 })
    ));
    drop(first);
    rig.coord.backup_session(SnapshotContext::Backup).unwrap();
}

#[test]
fn calls_out_of_order_are_refused_by_name() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let err = s.do_snapshot_set().unwrap_err();
    assert!(
        matches!(err, VssError::OutOfOrder { op: "do_snapshot_set", phase: SessionPhase::Created }),
        "{err}"
    );
    assert_eq!(s.phase(), SessionPhase::Created, "a refused call changes nothing");
    s.gather_writer_metadata().unwrap();
    let mut bogus = rig.writers[0].component_keys()[0].clone();
    bogus.name = "no-such-database".into();
    let err = s
        .set_backup_state(BackupState { components: vec![bogus], ..BackupState::default() })
        .unwrap_err();
    assert!(err.to_string().contains("no-such-database"), "{err}");
}

#[test]
fn the_sets_hold_is_the_time_the_provider_held_writes_not_its_whole_commit() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    // A provider that does not measure its hold: the whole commit counts.
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    let set = s.do_snapshot_set().unwrap().clone();
    assert_eq!(set.hold, set.commit, "without a measured hold, the commit's time stands for it");
    s.abort("the test is done with it").unwrap();
    drop(s);

    // One that does: its figure, although the copy of the volumes took longer than that.
    let held = std::time::Duration::from_nanos(1);
    rig.provider.report_hold(held);
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(select_all(&rig, BackupType::Full)).unwrap();
    s.prepare_for_backup().unwrap();
    let set = s.do_snapshot_set().unwrap().clone();
    assert_eq!(set.hold, held);
    assert!(set.commit > held, "the commit ({:?}) includes more than the hold", set.commit);
}
