//! Backups of a live store through the real coordinator, store writer and engine.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use backup::repo::FileRole;
use backup::{BackupRequest, Quiet, RequesterError};
use store::load::{LoadConfig, LoadGenerator};
use volume::fault::FaultInjector;
use vss::{BackupType, SnapshotContext};

fn req(t: BackupType) -> BackupRequest {
    BackupRequest {
        storage_group: "SG1".into(),
        backup_type: t,
        databases: vec![],
        replica: None,
        history_nodes: vec![],
    }
}

fn load_some(n: &common::Node, deliveries: u64, seed: u64) -> store::load::Ledger {
    let mail = n.store.storage_group("SG1").unwrap().mail("DB1").unwrap();
    let cfg = LoadConfig {
        mailboxes: 4,
        body_min: 2000,
        body_max: 20_000,
        seed,
        max_deliveries: Some(deliveries),
        ..Default::default()
    };
    let load = LoadGenerator::start(mail, cfg).unwrap();
    common::wait_until(&format!("the load to deliver {deliveries} messages"), || load.finished());
    load.stop()
}

fn generations(n: &common::Node) -> Vec<u32> {
    n.store.storage_group("SG1").unwrap().log_state().unwrap().generations
}

#[test]
fn full_backup_stamps_the_header_truncates_logs_and_leaves_a_trail() {
    let n = common::node();
    load_some(&n, 150, 1);
    let before = generations(&n);
    assert!(before.len() > 3, "the load filled several generations: {before:?}");
    let report = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let set = &report.set;
    assert_eq!(set.backup_type, BackupType::Full);
    assert!(set.files.iter().any(|f| f.role == FileRole::Database));
    assert!(set.files.iter().any(|f| f.role == FileRole::Checkpoint));
    let range = set.log_range.unwrap();
    // Logs below min(last copied, checkpoint) are gone; nothing above the copied range was touched.
    let sg = n.store.storage_group("SG1").unwrap();
    let st = sg.log_state().unwrap();
    let limit = range.high.min(st.checkpoint_generation);
    assert!(st.generations.iter().all(|g| *g >= limit), "{st:?} vs {range:?}");
    assert!(before.iter().any(|g| *g < limit), "something was truncated");
    let header = sg.instance().unwrap().database_header("DB1").unwrap();
    let full = header.previous_full.expect("header stamped");
    assert_eq!((full.gen_low, full.gen_high), (range.low, range.high));
    assert!(sg.backup_in_progress().is_none());
    let v = backup::verify_set(n.requester.repo(), set, &Quiet).unwrap();
    assert_eq!(v.physical.databases, 1);
    assert!(v.physical.pages > 0 && v.physical.records > 0, "{v:?}");
    assert_eq!((v.physical.first, v.physical.last), (range.low, range.high));

    // The job's trail, in the reference's order.
    let ids: Vec<u32> = n
        .events
        .events()
        .iter()
        .filter(|e| e.job == Some(report.job))
        .filter(|e| matches!(e.source, events::Source::Store | events::Source::Engine))
        .map(|e| e.id)
        .collect();
    let want = [9606, 2005, 9811, 9608, 2001, 2003, 9620, 9621, 224, 2006];
    let mut it = ids.iter();
    for w in want {
        assert!(it.any(|i| *i == w), "event {w} missing or out of order in {ids:?}");
    }
    assert!(!ids.contains(&2007), "not aborted: {ids:?}");
}

/// `verify` of a stored set does the physical checks too: a set whose hashes are all right
/// but whose database holds a bad page (stored by hand here; the requester refuses to
/// publish one) fails naming the file and page, and so does one missing a log generation.
#[test]
fn verifying_a_stored_set_checks_pages_and_log_generations() {
    let n = common::node();
    load_some(&n, 120, 12);
    let good = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap().set;
    let repo = n.requester.repo();
    let stored = |f: &backup::repo::FileEntry| {
        let mut out = Vec::new();
        repo.read_file(f, &mut |_, d| {
            out.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
        out
    };
    let republish = |skip_log: Option<u32>, corrupt_page: Option<u64>| {
        let scratch = tempfile::tempdir().unwrap();
        let fs = volume::HostFs::new(scratch.path()).unwrap();
        let mut w = repo.begin_set();
        let logs: Vec<_> = good.files.iter().filter(|f| f.role == FileRole::Log).collect();
        for (i, f) in good.files.iter().enumerate() {
            if f.role == FileRole::Log && skip_log.is_some_and(|k| logs[k as usize].path == f.path)
            {
                continue;
            }
            let mut data = stored(f);
            if let (Some(p), FileRole::Database) = (corrupt_page, f.role) {
                let at = (p * common::tuning().page_size as u64 + 100) as usize;
                data[at] ^= 0xff;
            }
            let name = std::path::PathBuf::from(format!("f{i}"));
            volume::fs::write_atomic(&fs, &name, &data).unwrap();
            let src = volume::FileSystem::open(&fs, &name, volume::OpenMode::Read).unwrap();
            w.add_file(&f.path, f.role, &f.component, src.as_ref(), &|_| {}).unwrap();
        }
        let meta = backup::repo::SetMeta {
            backup_type: BackupType::Copy,
            storage_group: "SG1".into(),
            database_headers: good.database_headers.clone(),
            ..Default::default()
        };
        w.publish(meta).unwrap()
    };
    let bad_page = republish(None, Some(3));
    repo.verify_set(&bad_page, &|_| {}).unwrap(); // every hash is right…
    let err = backup::verify_set(repo, &bad_page, &Quiet).unwrap_err().to_string();
    assert!(err.contains("DB1.edb") && err.contains("page 3"), "{err}");
    let logs = good.files.iter().filter(|f| f.role == FileRole::Log).count() as u32;
    assert!(logs >= 3, "the load filled several generations");
    let gap = republish(Some(1), None);
    let err = backup::verify_set(repo, &gap, &Quiet).unwrap_err().to_string();
    let missing = ese::logfmt::generation_name("E00", good.log_range.unwrap().low + 1);
    assert!(err.contains(&missing) || err.contains("generation"), "{err}");
    backup::verify_set(repo, &good, &Quiet).unwrap();
}

#[test]
fn incremental_needs_a_full_and_copies_only_logs() {
    let n = common::node();
    load_some(&n, 40, 2);
    let err = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap_err();
    assert!(matches!(err, RequesterError::NoBase { .. }), "{err}");
    let copy = n.requester.backup(&req(BackupType::Copy), &Quiet).unwrap();
    let err = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap_err();
    assert!(matches!(err, RequesterError::NoBase { .. }), "a copy is no base: {err}");
    let gens_after_copy = generations(&n);
    assert!(
        gens_after_copy.iter().any(|g| *g <= copy.set.log_range.unwrap().low),
        "a copy truncates nothing"
    );
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    load_some(&n, 60, 3);
    let inc = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();
    assert!(inc.set.files.iter().all(|f| f.role == FileRole::Log), "{:?}", inc.set.files);
    assert_eq!(inc.set.base_set, Some(full.set.id));
    assert!(inc.set.log_range.unwrap().high > full.set.log_range.unwrap().high);
    let header =
        n.store.storage_group("SG1").unwrap().instance().unwrap().database_header("DB1").unwrap();
    assert!(header.previous_incremental.is_some());
    let before_diff = generations(&n);
    load_some(&n, 30, 4);
    let diff = n.requester.backup(&req(BackupType::Differential), &Quiet).unwrap();
    assert_eq!(diff.set.base_set, Some(full.set.id));
    let after_diff = generations(&n);
    assert!(before_diff.iter().all(|g| after_diff.contains(g)), "a differential truncates nothing");
}

#[test]
fn a_verification_failure_truncates_nothing_and_stamps_nothing() {
    let n = common::node();
    load_some(&n, 60, 5);
    // A full first, so that the header has history the failed backup must leave alone.
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    load_some(&n, 60, 55);
    n.store.storage_group("SG1").unwrap().instance().unwrap().checkpoint_now().unwrap();
    let before = generations(&n);
    // The backup history (the engine's own log positions move on with the load).
    let header = |n: &common::Node| {
        let sg = n.store.storage_group("SG1").unwrap();
        let h = sg.instance().unwrap().database_header("DB1").unwrap();
        (h.previous_full, h.previous_incremental, h.previous_differential, h.previous_copy)
    };
    let header_before = header(&n);
    // Corrupt page 3 of the database, as read from the snapshot only.
    let page = common::tuning().page_size as u64;
    let requester = backup::Requester::new(
        n.coordinator.clone(),
        n.store.clone(),
        n.requester.repo().clone(),
        n.events.clone(),
    )
    .with_view_filter(Arc::new(move |vol, view| {
        if vol != "db" {
            return view;
        }
        let f = FaultInjector::new(view);
        f.corrupt_reads(Path::new("SG1/DB1.edb"), 3 * page + 100..3 * page + 104);
        f.as_ref()
    }));
    let err = requester.backup(&req(BackupType::Full), &Quiet).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RequesterError::Verify(_)), "{msg}");
    assert!(msg.contains("DB1.edb") && msg.contains("page 3"), "{msg}");
    let after = generations(&n);
    assert!(before.iter().all(|g| after.contains(g)), "no log deleted: {before:?} → {after:?}");
    let sg = n.store.storage_group("SG1").unwrap();
    assert_eq!(header(&n), header_before, "the header's backup history is unchanged");
    assert!(header_before.0.is_some(), "there was history to keep");
    assert!(sg.backup_in_progress().is_none(), "backup in progress cleared");
    assert_eq!(n.requester.repo().list_sets().unwrap().len(), 1, "no second set published");
    assert!(n.events.events().iter().any(|e| e.id == 2007), "engine reports the abort");
    // And the next backup works.
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
}

#[test]
fn a_second_backup_of_the_same_storage_group_is_refused_naming_the_job() {
    let n = common::node();
    load_some(&n, 10, 6);
    let first = job_in_copy_phase(&n, BackupType::Full); // the first job is now copying
    let job = first.job();
    let err = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap_err();
    assert!(err.to_string().contains(&job.to_string()), "{err}");
    assert!(n.events.events().iter().any(|e| e.id == 9607));
    drop(first); // the requester vanished: its session's end clears backup in progress
    assert!(n.store.storage_group("SG1").unwrap().backup_in_progress().is_none());
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
}

/// Every component a writer offers.
fn component_keys(w: &vss::WriterDescription) -> Vec<vss::ComponentKey> {
    w.metadata
        .components
        .iter()
        .map(|c| vss::ComponentKey {
            writer: w.key.clone(),
            logical_path: c.logical_path.clone(),
            name: c.name.clone(),
        })
        .collect()
}

/// Drives a job by hand through the coordinator up to the copy phase.
fn job_in_copy_phase(n: &common::Node, t: BackupType) -> vss::BackupSession {
    let mut s = n.coordinator.backup_session(SnapshotContext::Backup).unwrap();
    let writers = s.gather_writer_metadata().unwrap();
    let keys = component_keys(&writers[0]);
    s.set_backup_state(vss::BackupState {
        backup_type: vss::BackupTypeChoice(t),
        components: keys,
        ..Default::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    s.do_snapshot_set().unwrap();
    s
}

#[test]
fn administrative_actions_wait_for_the_backup() {
    let n = common::node();
    load_some(&n, 10, 7);
    let s = job_in_copy_phase(&n, BackupType::Full);
    let sg = n.store.storage_group("SG1").unwrap();
    let err = sg.dismount(false).unwrap_err().to_string();
    assert!(err.contains("backup in progress") && err.contains(&s.job().to_string()), "{err}");
    let err = n.store.remove_storage_group("SG1").unwrap_err().to_string();
    assert!(err.contains(&s.job().to_string()), "{err}");
    assert!(sg.is_mounted());
    drop(s);
    sg.dismount(false).unwrap();
}

#[test]
fn a_dismount_during_a_full_backup_makes_it_a_copy() {
    let n = common::node();
    load_some(&n, 120, 8);
    let before = generations(&n);
    let mut s = job_in_copy_phase(&n, BackupType::Full);
    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(true).unwrap();
    let w = &s.writers()[0];
    for k in &component_keys(w) {
        s.set_backup_succeeded(k, true).unwrap();
    }
    s.backup_complete().unwrap();
    s.shutdown();
    assert!(n.events.events().iter().any(|e| e.id == 9622), "the degradation is reported");
    sg.mount().unwrap();
    let after = generations(&n);
    assert!(before.iter().all(|g| after.contains(g)), "nothing truncated: {before:?} → {after:?}");
    let h = sg.instance().unwrap().database_header("DB1").unwrap();
    assert!(h.previous_full.is_none(), "no full stamped");
}

#[test]
fn a_full_backup_whose_storage_group_was_dismounted_is_recorded_as_a_copy() {
    let n = common::node();
    load_some(&n, 60, 9);
    let before = generations(&n);
    // The storage group is dismounted while the requester copies from the snapshot.
    let store = n.store.clone();
    let requester = backup::Requester::new(
        n.coordinator.clone(),
        n.store.clone(),
        n.requester.repo().clone(),
        n.events.clone(),
    )
    .with_view_filter(Arc::new(move |_, view| {
        let sg = store.storage_group("SG1").unwrap();
        if sg.is_mounted() {
            sg.dismount(true).unwrap();
        }
        view
    }));
    let report = requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    assert_eq!(report.set.backup_type, BackupType::Copy, "the report says what the set is");
    let stored = n.requester.repo().load_set(&report.set.id.to_string()).unwrap();
    assert_eq!(stored.backup_type, BackupType::Copy, "so does the manifest");
    assert!(
        n.requester.base_for("SG1", BackupType::Incremental).unwrap().is_none(),
        "a copy is no base for an incremental"
    );
    let sg = n.store.storage_group("SG1").unwrap();
    sg.mount().unwrap();
    let after = generations(&n);
    assert!(before.iter().all(|g| after.contains(g)), "nothing truncated: {before:?} → {after:?}");
    let h = sg.instance().unwrap().database_header("DB1").unwrap();
    assert!(h.previous_full.is_none() && h.previous_copy.is_none(), "nothing stamped");
    let err = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap_err();
    assert!(matches!(err, RequesterError::NoBase { .. }), "{err}");
}

#[test]
fn log_files_left_by_each_backup_type_are_exactly_those_the_rules_leave() {
    let n = common::node();
    let sg = n.store.storage_group("SG1").unwrap();
    let state = || sg.log_state().unwrap();
    load_some(&n, 80, 9);
    // A copy deletes nothing.
    let before = state().generations;
    let copy = n.requester.backup(&req(BackupType::Copy), &Quiet).unwrap();
    let after = state().generations;
    assert!(before.iter().all(|g| after.contains(g)));
    // A full deletes exactly the generations below min(last copied, checkpoint).
    load_some(&n, 80, 10);
    let before = state().generations;
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let st = state();
    let high = full.set.log_range.unwrap().high;
    let limit = high.min(st.checkpoint_generation);
    let expected: Vec<u32> = before.iter().copied().filter(|g| *g >= limit).collect();
    let kept: Vec<u32> = st.generations.iter().copied().filter(|g| before.contains(g)).collect();
    assert_eq!(
        kept, expected,
        "checkpoint {:#X}, copied up to {high:#X}",
        st.checkpoint_generation
    );
    assert!(copy.set.log_range.unwrap().low < limit, "the copy's old logs went with the full");
    // An incremental does the same from its own range.
    load_some(&n, 80, 11);
    let before = state().generations;
    let inc = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();
    let st = state();
    let limit = inc.set.log_range.unwrap().high.min(st.checkpoint_generation);
    let expected: Vec<u32> = before.iter().copied().filter(|g| *g >= limit).collect();
    let kept: Vec<u32> = st.generations.iter().copied().filter(|g| before.contains(g)).collect();
    assert_eq!(kept, expected);
    // A differential deletes nothing.
    load_some(&n, 80, 12);
    let before = state().generations;
    n.requester.backup(&req(BackupType::Differential), &Quiet).unwrap();
    let after = state().generations;
    assert!(before.iter().all(|g| after.contains(g)));
}

#[test]
fn circular_logging_refuses_incremental_and_differential() {
    let dir = tempfile::tempdir().unwrap();
    let logs: volume::FsRef = Arc::new(volume::HostFs::new(dir.path().join("l")).unwrap());
    let db: volume::FsRef = Arc::new(volume::HostFs::new(dir.path().join("d")).unwrap());
    let events = Arc::new(events::MemorySink::new("n"));
    let store = store::InformationStore::new("n", events.clone());
    let mut def = common::sg_def(&logs, &db);
    def.circular_logging = true;
    let sg = store.add_storage_group(def).unwrap();
    sg.mount().unwrap();
    let coordinator = vss::Coordinator::new("n", vss::CoordinatorConfig::default(), events.clone());
    let provider = vss::testing::TestProvider::new("t", dir.path().join("scratch"));
    provider.add_volume("logs", logs);
    provider.add_volume("db", db);
    coordinator.register_provider(provider);
    coordinator.register_writer(store::StoreWriter::new(store.clone())).unwrap();
    let repo_fs: volume::FsRef = Arc::new(volume::HostFs::new(dir.path().join("r")).unwrap());
    let repo = Arc::new(backup::repo::Repository::open_or_init(repo_fs, "").unwrap());
    let requester = backup::Requester::new(coordinator, store.clone(), repo, events.clone());
    requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    for t in [BackupType::Incremental, BackupType::Differential] {
        let err = requester.backup(&req(t), &Quiet).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("circular"), "{err}");
    }
    assert!(sg.backup_in_progress().is_none());
}

/// Cancels the job once it has copied some bytes (as a node does at shutdown).
#[derive(Default)]
struct CancelAfterBytes(std::sync::atomic::AtomicBool);

impl backup::Progress for CancelAfterBytes {
    fn step(&self, _: &str) {}
    fn bytes(&self, _: u64, _: u64) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    fn cancelled(&self) -> Option<String> {
        self.0
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| "the node is shutting down".into())
    }
}

#[test]
fn a_cancelled_backup_aborts_its_session_and_publishes_and_truncates_nothing() {
    let n = common::node();
    load_some(&n, 80, 8);
    let before = generations(&n);
    let err = n.requester.backup(&req(BackupType::Full), &CancelAfterBytes::default()).unwrap_err();
    assert!(
        matches!(&err, RequesterError::Coordinator(vss::VssError::Aborted { reason }) if reason.contains("shutting down")),
        "{err}"
    );
    assert!(n.requester.repo().list_sets().unwrap().is_empty(), "no set published");
    let after = generations(&n);
    assert!(before.iter().all(|g| after.contains(g)), "no log deleted: {before:?} → {after:?}");
    let sg = n.store.storage_group("SG1").unwrap();
    assert!(sg.backup_in_progress().is_none(), "backup in progress cleared");
    let h = sg.instance().unwrap().database_header("DB1").unwrap();
    assert!(h.previous_full.is_none(), "no header stamp");
    // The writers were told: abort (with the reason), the engine's abort, then shutdown; never
    // backup complete.
    let all = n.events.events();
    let abort = all.iter().find(|e| e.id == 8012).expect("abort issued");
    assert!(abort.message.contains("shutting down"), "{}", abort.message);
    assert!(all.iter().any(|e| e.id == 2007), "the engine reports the abort");
    assert!(all.iter().any(|e| e.id == 8011), "the session shut down");
    assert!(!all.iter().any(|e| e.id == 8010 || e.id == 9621), "no backup complete");
    // The next backup works.
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
}
