//! The coordinator over the real software provider (copy-on-write shadow volumes).

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use events::catalog::*;
use events::{EventLog, Filter, LogOptions};
use uuid::Uuid;
use volume::{FileSystem, OpenMode, SoftwareProvider, Volume, VolumeOptions};
use vss::testing::{Behavior, ScriptedWriter};
use vss::{
    BackupSchema, BackupState, Coordinator, CoordinatorConfig, Phase, Provider, SnapshotContext,
    SoftwareProviderAdapter, VssError, WriterFailure, forward_volume_events,
};

struct Node {
    _tmp: tempfile::TempDir,
    coord: Coordinator,
    log: Arc<EventLog>,
    adapter: Arc<SoftwareProviderAdapter>,
    db: Volume,
    logs: Volume,
    writer: Arc<ScriptedWriter>,
}

fn write(v: &Volume, path: &str, data: &[u8]) {
    let p = Path::new(path);
    if let Some(parent) = p.parent() {
        v.create_dir_all(parent).unwrap();
    }
    let f = v.open(p, OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(data, 0).unwrap();
    f.sync().unwrap();
}

fn node(config: CoordinatorConfig) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let db = Volume::create(tmp.path().join("db"), VolumeOptions::new("db")).unwrap();
    let logs = Volume::create(tmp.path().join("logs"), VolumeOptions::new("logs")).unwrap();
    write(&db, "sg0/mail.edb", b"database v1");
    write(&logs, "sg0/E00.log", b"log v1");
    write(&logs, "sg0/E00.chk", b"checkpoint v1");
    let provider = Arc::new(SoftwareProvider::new());
    provider.register(db.clone());
    provider.register(logs.clone());
    let adapter = Arc::new(SoftwareProviderAdapter::new(provider));
    let fs: volume::FsRef = Arc::new(volume::HostFs::new(tmp.path().join("node")).unwrap());
    let log = Arc::new(EventLog::open(fs, "events", "node-1", LogOptions::default()).unwrap());
    let coord = Coordinator::new("node-1", config, log.clone());
    coord.register_provider(adapter.clone());
    let md = ScriptedWriter::store_metadata(
        Uuid::new_v4(),
        "store",
        &["sg0"],
        "db",
        "logs",
        BackupSchema::default(),
    );
    let writer = ScriptedWriter::new(md, None);
    coord.register_writer(writer.clone()).unwrap();
    Node { _tmp: tmp, coord, log, adapter, db, logs, writer }
}

fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        // Generous: a healthy writer or flush-and-hold on two busy CI cores never misses them.
        event_timeout: Duration::from_secs(10),
        flush_hold_timeout: Duration::from_secs(10),
        ..CoordinatorConfig::default()
    }
}

#[test]
fn a_backup_through_copy_on_write_snapshots() {
    let n = node(config());
    let mut s = n.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        components: n.writer.component_keys(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    let set = s.do_snapshot_set().unwrap().clone();
    assert_eq!(set.snapshots.len(), 2);
    // The provider lists the snapshots under the coordinator's set id.
    let listed = n.adapter.query();
    assert!(listed.iter().all(|x| x.set_id == set.id && !x.persistent), "{listed:?}");
    // Writes after the commit do not show in the snapshot.
    write(&n.db, "sg0/mail.edb", b"database v2 (after the snapshot)");
    write(&n.logs, "sg0/E0000000001.log", b"a new generation");
    let db = s.snapshot_view("db").unwrap();
    assert_eq!(
        volume::fs::read_all(db.as_ref(), Path::new("sg0/mail.edb")).unwrap(),
        b"database v1"
    );
    let logs = s.snapshot_view("logs").unwrap();
    let names: Vec<String> =
        logs.read_dir(Path::new("sg0")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["E00.chk", "E00.log"]);
    assert_eq!(
        db.open(Path::new("sg0/mail.edb"), OpenMode::ReadWrite).unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    for c in n.writer.component_keys() {
        s.set_backup_succeeded(&c, true).unwrap();
    }
    s.backup_complete().unwrap();
    s.shutdown();
    assert!(n.adapter.query().is_empty(), "backup snapshots are released at the end");
    assert!(n.db.snapshots().is_empty() && n.logs.snapshots().is_empty());
    let trail: Vec<u32> = n.log.query(&Filter::job(job)).unwrap().iter().map(|e| e.id).collect();
    assert!(trail.contains(&COORD_SNAPSHOT_SET_COMMITTED.id));
}

#[test]
fn a_write_that_does_not_drain_times_out_the_flush_and_hold_and_the_job_aborts_clean() {
    let n = node(CoordinatorConfig { flush_hold_timeout: Duration::from_secs(1), ..config() });
    let mut s = n.coord.backup_session(SnapshotContext::Backup).unwrap();
    let job = s.job();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        components: n.writer.component_keys(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    let err = {
        let _stuck = n.logs.hold_in_flight_write();
        s.do_snapshot_set().unwrap_err()
    };
    // The provider gives up at the hold timeout; should a busy machine delay its answer past
    // the coordinator's own deadline (a quarter later), the coordinator reports the timeout.
    assert!(
        matches!(
            err,
            VssError::Provider { source: vss::ProviderError::FlushHoldTimeout { .. }, .. }
                | VssError::ProviderTimeout { .. }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    drop(s);
    assert!(n.adapter.query().is_empty());
    let phases = n.writer.phases(job);
    assert!(
        phases.contains(&Phase::Thaw) && phases.contains(&Phase::Abort) && !n.writer.is_frozen()
    );
    let trail: Vec<u32> = n.log.query(&Filter::job(job)).unwrap().iter().map(|e| e.id).collect();
    assert!(trail.contains(&PROVIDER_FLUSH_HOLD_TIMED_OUT.id), "{trail:?}");
    // The volumes accept writes again.
    write(&n.logs, "sg0/E00.log", b"log v2");
}

#[test]
fn a_writer_failure_leaves_no_snapshot_and_persistent_sets_stay_until_deleted() {
    let n = node(config());
    n.writer.set(Phase::PostSnapshot, Behavior::Fail(WriterFailure::NonRetryable));
    let mut s = n.coord.backup_session(SnapshotContext::Backup).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        components: n.writer.component_keys(),
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    assert!(s.do_snapshot_set().is_err());
    drop(s);
    assert!(n.adapter.query().is_empty(), "committed snapshots of an aborted job are deleted");

    let mut s = n.coord.backup_session(SnapshotContext::ClientAccessible).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        volumes: vec!["db".into(), "logs".into()],
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    let set = s.do_snapshot_set().unwrap().clone();
    s.shutdown();
    let listed = n.coord.list_snapshots();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|(p, i)| p == volume::provider::PROVIDER_NAME
            && i.persistent
            && i.set_id == set.id)
    );
    for snap in &set.snapshots {
        n.coord.delete_snapshot(snap.snapshot_id).unwrap();
    }
    assert!(n.coord.list_snapshots().is_empty());
}

#[test]
fn shadow_storage_overflow_deletions_reach_the_event_log() {
    let n = node(config());
    let sink: Arc<dyn events::EventSink> = n.log.clone();
    forward_volume_events(&n.db, sink).unwrap();
    n.db.set_shadow_storage_max(Some(1 << 20)).unwrap();
    write(&n.db, "big.bin", &vec![1u8; 2 << 20]);
    let live = n
        .log
        .subscribe(Filter { id: Some(PROVIDER_SNAPSHOT_DELETED_OVERFLOW.id), ..Filter::default() });
    let mut s = n.coord.backup_session(SnapshotContext::ClientAccessible).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState { volumes: vec!["db".into()], ..BackupState::default() })
        .unwrap();
    s.prepare_for_backup().unwrap();
    let snap = s.do_snapshot_set().unwrap().snapshots[0].snapshot_id;
    s.shutdown();
    // Overwriting 2 MiB needs more than the 1 MiB of shadow storage: the snapshot goes.
    write(&n.db, "big.bin", &vec![2u8; 2 << 20]);
    let ev = live.recv_timeout(Duration::from_secs(10)).expect("an overflow event");
    assert_eq!(ev.fields["snapshot"], snap.to_string());
    assert_eq!(ev.fields["volume"], "db");
    assert!(n.coord.list_snapshots().is_empty());
}
