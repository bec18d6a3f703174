//! Jobs interrupted by a node crash are found and cleaned up at the next start; a provider
//! that loses a volume makes the writers fail with inconsistent_snapshot.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{quick_config, rig};
use events::catalog::*;
use events::{EventLog, Filter, LogOptions};
use volume::mem::MemFs;
use vss::testing::CommitBehavior;
use vss::{
    BackupSchema, BackupState, Coordinator, JobJournal, Phase, Provider, SessionPhase,
    SnapshotContext, VssError, WriterFailure, WriterState,
};

/// A coordinator over the rig's writers and provider, journaling on `mem`.
fn coordinator(rig: &common::Rig, mem: &MemFs, log_dir: &str) -> (Coordinator, Arc<EventLog>) {
    let log =
        Arc::new(EventLog::open(mem.as_ref(), log_dir, "node-1", LogOptions::default()).unwrap());
    let journal = JobJournal::open(mem.as_ref(), "var/jobs").unwrap();
    let coord = Coordinator::with_journal("node-1", quick_config(), log.clone(), journal);
    coord.register_provider(rig.provider.clone());
    for w in &rig.writers {
        coord.register_writer(w.clone()).unwrap();
    }
    (coord, log)
}

#[test]
fn a_job_interrupted_by_a_node_crash_is_cleaned_up_at_start_up() {
    let rig = rig(2, quick_config(), BackupSchema::default());
    let mem = MemFs::new();
    let (before, _) = coordinator(&rig, &mem, "var/events");
    let mut s = before.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        components: rig.writers.iter().flat_map(|w| w.component_keys()).collect(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    // The node dies: no destructor runs, unsynced state is lost.
    std::mem::forget(s);
    mem.crash();
    assert_eq!(rig.provider.query().len(), 2, "the snapshots outlived the node");

    let (after, log) = coordinator(&rig, &mem, "var/events");
    let found = after.recover_interrupted_jobs().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].job, job);
    assert_eq!(found[0].phase, SessionPhase::SnapshotSetDone);
    assert!(rig.provider.query().is_empty(), "the interrupted job's snapshots are released");
    for w in &rig.writers {
        let phases = w.phases(job);
        assert_eq!(&phases[phases.len() - 2..], [Phase::Abort, Phase::BackupShutdown]);
    }
    let trail: Vec<u32> = log.query(&Filter::job(job)).unwrap().iter().map(|e| e.id).collect();
    assert!(trail.ends_with(&[COORD_INTERRUPTED_JOB_FOUND.id]), "{trail:?}");
    // Events the old coordinator synced before the crash are still there too.
    assert!(trail.contains(&COORD_SNAPSHOT_SET_COMMITTED.id), "{trail:?}");
    assert!(
        after.recover_interrupted_jobs().unwrap().is_empty(),
        "recovery forgets what it handled"
    );
}

#[test]
fn a_completed_persistent_set_survives_the_crash_and_ended_jobs_leave_no_record() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    let mem = MemFs::new();
    let (before, _) = coordinator(&rig, &mem, "var/events");
    // An ended job leaves nothing behind.
    let mut s = before.backup_session(SnapshotContext::Backup).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        components: rig.writers[0].component_keys(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    s.backup_complete().unwrap();
    s.shutdown();
    // A persistent writerless set, node crash before the session ended.
    let mut s = before.backup_session(SnapshotContext::NasRollback).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState { volumes: vec!["logs".into()], ..BackupState::default() })
        .unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    std::mem::forget(s);
    mem.crash();

    let (after, _) = coordinator(&rig, &mem, "var/events");
    let found = after.recover_interrupted_jobs().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].context, SnapshotContext::NasRollback);
    assert_eq!(rig.provider.query().len(), 1, "a committed persistent snapshot is kept");
}

#[test]
fn a_provider_that_loses_a_volume_fails_the_writers_with_inconsistent_snapshot() {
    let rig = rig(1, quick_config(), BackupSchema::default());
    rig.provider.set_commit_behavior(CommitBehavior::DropLastVolume);
    let mut s = rig.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        components: rig.writers[0].component_keys(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    let err = s.do_snapshot_set().unwrap_err();
    assert!(
        matches!(err, VssError::Writer { failure: WriterFailure::InconsistentSnapshot, .. }),
        "{err}"
    );
    let status = s.writer_status(&rig.writers[0].key()).unwrap();
    assert_eq!(status.state, WriterState::FailedAtPostSnapshot);
    assert!(status.message.unwrap().contains("logs"));
    drop(s);
    assert!(rig.provider.query().is_empty());
    let phases = rig.writers[0].phases(job);
    assert!(phases.contains(&Phase::Thaw) && phases.contains(&Phase::Abort));
    assert!(!phases.contains(&Phase::PostSnapshot));
}
