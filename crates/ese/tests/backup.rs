//! The snapshot-backup session: states, freeze holding writes, watchdog, truncation rules,
//! header slots, notices; hard recovery of a restored copy; disk full.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ese::{BackupKind, Durability, EngineError, EngineNotice, Instance, SessionState, Truncation};
use volume::mem::MemFs;
use volume::{FileSystem, FsRef, OpenMode};

fn with_notices(fs: &MemFs, circular: bool) -> (Instance, Arc<Mutex<Vec<EngineNotice>>>) {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let mut c = config(fs);
    let n2 = notes.clone();
    c.notice = Some(Arc::new(move |n: &EngineNotice| n2.lock().unwrap().push(n.clone())));
    c.circular_logging = circular;
    let inst = Instance::create(c).unwrap();
    inst.create_database(DB, Arc::new(fs.clone()), "db/mb1.edb").unwrap();
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    t.commit(Durability::Durable).unwrap();
    (inst, notes)
}

fn fill(inst: &Instance, from: u64, n: u64) {
    for i in from..from + n {
        let mut t = inst.begin_write().unwrap();
        t.put(DB, T, &i.to_be_bytes(), &value(i, 900)).unwrap();
        t.commit(Durability::Durable).unwrap();
    }
}

/// No lazy writer and a large cache: the checkpoint stays at the start, so a snapshot's
/// database needs every generation (a missing or damaged one is always in its range).
fn without_checkpoints(fs: &MemFs) -> Instance {
    let mut c = config(fs);
    c.lazy_interval = Duration::from_secs(3600);
    c.cache_pages = 100_000;
    let inst = Instance::create(c).unwrap();
    inst.create_database(DB, Arc::new(fs.clone()), "db/mb1.edb").unwrap();
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    t.commit(Durability::Durable).unwrap();
    inst
}

fn copy_file(from: &MemFs, to: &MemFs, src: &Path, dst: &Path) {
    let data = volume::fs::read_all(from, src).unwrap();
    to.create_dir_all(dst.parent().unwrap()).unwrap();
    let f = to.open(dst, OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(&data, 0).unwrap();
}

#[test]
fn full_backup_freezes_truncates_and_stamps_the_header() {
    let fs = MemFs::new();
    let (inst, notes) = with_notices(&fs, false);
    fill(&inst, 0, 200);
    let inst = Arc::new(inst);
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    assert!(matches!(b.thaw(), Err(EngineError::InvalidSequence { .. })));
    b.prepare().unwrap();
    let mut second = inst.backup_session(BackupKind::Copy).unwrap();
    assert!(matches!(second.prepare(), Err(EngineError::BackupInProgress(1))));
    assert!(matches!(inst.detach(DB), Err(EngineError::BackupInProgress(1))));
    let before = inst.log_state().unwrap().current_generation;
    let rolled = b.freeze().unwrap();
    assert_eq!(rolled, before);
    // The snapshot holds only closed generations: E00.log has a header and no records.
    let cur = ese::inspect::dump_log(&fs, Path::new("logs/E00.log")).unwrap();
    assert_eq!(cur.header.generation, rolled + 1);
    assert!(cur.records.is_empty());
    let db_at_freeze = volume::fs::read_all(&fs, Path::new("db/mb1.edb")).unwrap();
    // Transactions go on; a durable commit waits for the thaw.
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"during", b"freeze").unwrap();
    t.commit(Durability::Lazy).unwrap();
    let i2 = inst.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut t = i2.begin_write().unwrap();
        t.put(DB, T, b"durable", b"after thaw").unwrap();
        t.commit(Durability::Durable).unwrap();
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "durable commit finished while frozen"
    );
    for i in 1000..1040u64 {
        let mut t = inst.begin_write().unwrap();
        t.put(DB, T, &i.to_be_bytes(), &value(i, 900)).unwrap();
        t.commit(Durability::Lazy).unwrap();
    }
    inst.checkpoint_now().unwrap(); // held: writes nothing while frozen
    // Nothing reached the files while frozen.
    assert_eq!(volume::fs::read_all(&fs, Path::new("db/mb1.edb")).unwrap(), db_at_freeze);
    assert_eq!(ese::inspect::dump_log(&fs, Path::new("logs/E00.log")).unwrap().records.len(), 0);
    b.thaw().unwrap();
    rx.recv().unwrap();
    waiter.join().unwrap();
    assert_eq!(inst.backup_in_progress(), Some(1), "backup in progress stays set after thaw");
    let copied: Vec<u32> = b.snapshot_generations().to_vec();
    assert_eq!(copied.first(), Some(&1));
    assert_eq!(copied.last(), Some(&rolled));
    match b.truncate(&copied[1..]) {
        Err(EngineError::TruncationRefused(why)) => {
            assert!(why.contains("did not copy generation 0x1"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    let t = b.truncate(&copied).unwrap();
    assert_eq!(t, Truncation::Deleted { low: 1, high: rolled - 1 });
    let st = inst.log_state().unwrap();
    assert_eq!(st.generations.first(), Some(&rolled));
    b.end().unwrap();
    assert_eq!(b.current_state(), SessionState::Ended);
    assert_eq!(inst.backup_in_progress(), None);
    let h = inst.database_header(DB).unwrap();
    let slot = h.previous_full.unwrap();
    assert_eq!((slot.gen_low, slot.gen_high), (1, rolled));
    assert_eq!(slot.kind, ese::SlotKind::Snapshot);
    let on_disk = ese::inspect::dump_database_header(&fs, Path::new("db/mb1.edb")).unwrap();
    assert_eq!(on_disk.previous_full, h.previous_full);
    let kinds: Vec<String> = notes
        .lock()
        .unwrap()
        .iter()
        .map(|n| serde_json::to_value(n).unwrap()["notice"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["backup_started", "freeze_started", "freeze_ended", "logs_truncated", "backup_completed"]
    );
    drop(second);
}

#[test]
fn incremental_needs_a_full_and_a_full_clears_it() {
    let fs = MemFs::new();
    let (inst, notes) = with_notices(&fs, false);
    let mut b = inst.backup_session(BackupKind::Incremental).unwrap();
    assert!(matches!(b.prepare(), Err(EngineError::MissingFullBackup(_))));
    let run = |kind: BackupKind, truncate: bool| {
        fill(&inst, 0, 80);
        let mut b = inst.backup_session(kind).unwrap();
        b.prepare().unwrap();
        b.freeze().unwrap();
        b.thaw().unwrap();
        if truncate {
            let gens = b.snapshot_generations().to_vec();
            b.truncate(&gens).unwrap();
        }
        b.end().unwrap();
        inst.database_header(DB).unwrap()
    };
    let h = run(BackupKind::Full, true);
    assert!(h.previous_full.is_some());
    let h = run(BackupKind::Incremental, true);
    assert!(h.previous_incremental.is_some());
    let h = run(BackupKind::Differential, true);
    assert!(h.previous_differential.is_some());
    assert!(notes.lock().unwrap().iter().any(|n| matches!(n, EngineNotice::NoTruncation { reason, .. } if reason.contains("differential"))));
    let h = run(BackupKind::Copy, false);
    assert!(h.previous_copy.is_some() && h.previous_incremental.is_some());
    let full_before = h.previous_full;
    let h = run(BackupKind::Full, false);
    assert!(h.previous_incremental.is_none() && h.previous_differential.is_none());
    assert_ne!(h.previous_full, full_before);
    // Copy backups never truncate.
    let mut c = inst.backup_session(BackupKind::Copy).unwrap();
    c.prepare().unwrap();
    c.freeze().unwrap();
    c.thaw().unwrap();
    assert!(matches!(c.truncate(&[1]), Err(EngineError::InvalidSequence { .. })));
    c.abort().unwrap();
    assert!(matches!(c.abort(), Err(EngineError::InvalidSequence { .. })));
}

#[test]
fn abort_while_frozen_thaws_and_truncates_nothing() {
    let fs = MemFs::new();
    let (inst, notes) = with_notices(&fs, false);
    fill(&inst, 0, 100);
    let gens_before = inst.log_state().unwrap().generations;
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    b.abort().unwrap();
    fill(&inst, 100, 3); // durable commits go through: thawed
    assert_eq!(inst.backup_in_progress(), None);
    let after = inst.log_state().unwrap().generations;
    assert!(gens_before.iter().all(|g| after.contains(g)));
    assert!(matches!(notes.lock().unwrap().last(), Some(EngineNotice::BackupAborted { .. })));
    assert!(inst.database_header(DB).unwrap().previous_full.is_none());
}

#[test]
fn the_watchdog_thaws_a_forgotten_freeze() {
    let fs = MemFs::new();
    let notes = Arc::new(Mutex::new(Vec::new()));
    let mut c = config(&fs);
    c.freeze_timeout = Duration::from_millis(30);
    let n2 = notes.clone();
    c.notice = Some(Arc::new(move |n: &EngineNotice| n2.lock().unwrap().push(n.clone())));
    let inst = Instance::create(c).unwrap();
    inst.create_database(DB, Arc::new(fs.clone()), "db/mb1.edb").unwrap();
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    // A durable commit waits until the watchdog thaws.
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    t.commit(Durability::Durable).unwrap();
    assert!(notes.lock().unwrap().iter().any(|n| matches!(n, EngineNotice::FreezeTimedOut { .. })));
    assert_eq!(b.current_state(), SessionState::TimedOut);
    assert!(matches!(b.thaw(), Err(EngineError::FreezeTimedOut { .. })));
    assert!(matches!(b.end(), Err(EngineError::InvalidSequence { .. })));
    b.abort().unwrap();
    assert_eq!(inst.backup_in_progress(), None);
}

#[test]
fn circular_logging_deletes_old_logs_and_allows_only_full_and_copy() {
    let fs = MemFs::new();
    let (inst, _) = with_notices(&fs, true);
    fill(&inst, 0, 400);
    inst.checkpoint_now().unwrap();
    let st = inst.log_state().unwrap();
    assert!(st.current_generation > 4);
    assert!(st.generations.len() <= 2, "{st:?}");
    let mut b = inst.backup_session(BackupKind::Incremental).unwrap();
    assert!(matches!(b.prepare(), Err(EngineError::BackupNotAllowed { .. })));
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    b.thaw().unwrap();
    let gens = b.snapshot_generations().to_vec();
    assert!(
        matches!(b.truncate(&gens).unwrap(), Truncation::Nothing { reason } if reason.contains("circular"))
    );
    b.end().unwrap();
}

/// Takes a "snapshot" during the freeze: copies the database, the closed logs and the
/// checkpoint into a restore file system.
fn snapshot_copy(fs: &MemFs, b: &ese::EngineBackup, restore: &MemFs) {
    copy_file(fs, restore, Path::new("db/mb1.edb"), Path::new("restore/mb1.edb"));
    for g in b.snapshot_generations() {
        let name = format!("E00{g:08X}.log");
        copy_file(fs, restore, &Path::new("logs").join(&name), &Path::new("rlogs").join(&name));
    }
}

#[test]
fn hard_recovery_replays_restored_logs_and_rolls_forward() {
    let fs = MemFs::new();
    let inst = without_checkpoints(&fs);
    fill(&inst, 0, 400);
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    let restore = MemFs::new();
    snapshot_copy(&fs, &b, &restore);
    let b_gens = b.snapshot_generations().to_vec();
    b.thaw().unwrap();
    b.end().unwrap();
    fill(&inst, 400, 100);
    inst.shutdown().unwrap();
    let rfs: FsRef = Arc::new(restore.clone());
    let live: FsRef = Arc::new(fs.clone());
    // The copy verifies (pages and logs) before recovery.
    ese::inspect::verify_set(
        &[(&restore, Path::new("restore/mb1.edb"))],
        &restore,
        Path::new("rlogs"),
        "E00",
    )
    .unwrap();
    let backup_copy = volume::fs::read_all(&restore, Path::new("restore/mb1.edb")).unwrap();
    let req = ese::HardRecovery {
        databases: vec![ese::DatabaseSpec::new(DB, rfs.clone(), "restore/mb1.edb")],
        log_fs: rfs.clone(),
        log_dir: "rlogs".into(),
        prefix: "E00".into(),
        roll_forward: None,
        stop_after_generation: None,
    };
    let rep = ese::hard_recover(&req).unwrap();
    assert!(!rep.generations.is_empty());
    let h = ese::inspect::dump_database_header(&restore, Path::new("restore/mb1.edb")).unwrap();
    assert_eq!(h.state, ese::DbState::CleanShutdown);
    let count = |restore: &MemFs| {
        let other = MemFs::new();
        let mut c = config(&other);
        c.prefix = "E01".into();
        let i = Instance::create(c).unwrap();
        i.attach(DB, Arc::new(restore.clone()), "restore/mb1.edb").unwrap();
        let n = all_rows(&i).len();
        i.shutdown().unwrap();
        i.detach(DB).ok();
        n
    };
    assert_eq!(count(&restore), 400);
    // Roll forward through the live logs: everything committed later comes back too.
    let f = restore.open(Path::new("restore/mb1.edb"), OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(&backup_copy, 0).unwrap();
    drop(f);
    let mut req2 = req.clone();
    req2.roll_forward = Some((live.clone(), "logs".into()));
    ese::hard_recover(&req2).unwrap();
    assert_eq!(count(&restore), 500);
    // A gap in the generations stops recovery, naming the generation.
    let f = restore.open(Path::new("restore/mb1.edb"), OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(&backup_copy, 0).unwrap();
    drop(f);
    let min = ese::inspect::dump_database_header(&restore, Path::new("restore/mb1.edb"))
        .unwrap()
        .min_required_generation();
    let last = *b_gens.last().unwrap();
    assert!(min + 1 < last, "required range {min}..{last}");
    let victim = min + 1;
    restore.remove_file(&Path::new("rlogs").join(format!("E00{victim:08X}.log"))).unwrap();
    match ese::hard_recover(&req) {
        Err(EngineError::LogGap { missing, .. }) => assert_eq!(missing, victim),
        other => panic!("{other:?}"),
    }
}

#[test]
fn foreign_and_corrupt_logs_stop_hard_recovery() {
    let fs = MemFs::new();
    let inst = without_checkpoints(&fs);
    fill(&inst, 0, 120);
    let mut b = inst.backup_session(BackupKind::Copy).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    let restore = MemFs::new();
    snapshot_copy(&fs, &b, &restore);
    let last = *b.snapshot_generations().last().unwrap();
    b.thaw().unwrap();
    b.end().unwrap();
    let rfs: FsRef = Arc::new(restore.clone());
    let req = ese::HardRecovery {
        databases: vec![ese::DatabaseSpec::new(DB, rfs.clone(), "restore/mb1.edb")],
        log_fs: rfs.clone(),
        log_dir: "rlogs".into(),
        prefix: "E00".into(),
        roll_forward: None,
        stop_after_generation: None,
    };
    // Flip a byte in the middle of the last generation's records.
    let name = Path::new("rlogs").join(format!("E00{last:08X}.log"));
    let f = restore.open(&name, OpenMode::ReadWrite).unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, 5000).unwrap();
    f.write_at(&[byte[0] ^ 0x40], 5000).unwrap();
    assert!(matches!(
        ese::inspect::verify_logs(&restore, Path::new("rlogs"), "E00", None, None),
        Err(EngineError::LogCorrupt { generation, .. }) if generation == last
    ));
    match ese::hard_recover(&req) {
        Err(EngineError::LogCorrupt { generation, path, .. }) => {
            assert_eq!(generation, last);
            assert_eq!(path, name);
        }
        other => panic!("{other:?}"),
    }
    // A log of another instance with the right name is foreign.
    let other = MemFs::new();
    let oi = create(&other);
    fill(&oi, 0, 60);
    oi.shutdown().unwrap();
    copy_file(&other, &restore, Path::new("logs/E0000000001.log"), &name);
    let f = restore.open(&name, OpenMode::ReadWrite).unwrap();
    // Give it the expected generation number so only the signature differs.
    let dump = ese::inspect::dump_log(&other, Path::new("logs/E0000000001.log")).unwrap();
    let mut h = dump.header.clone();
    h.generation = last;
    f.write_at(&h.encode(), 0).unwrap();
    assert!(
        matches!(ese::hard_recover(&req), Err(EngineError::ForeignLog { generation, .. }) if generation == last)
    );
}

#[test]
fn page_corruption_is_reported_not_returned() {
    let fs = MemFs::new();
    let inst = create(&fs);
    fill(&inst, 0, 50);
    inst.shutdown().unwrap();
    drop(inst);
    let f = fs.open(Path::new("db/mb1.edb"), OpenMode::ReadWrite).unwrap();
    f.write_at(&[0xEE; 16], 4 * 4096 + 100).unwrap();
    drop(f);
    match ese::inspect::verify_database(&fs, Path::new("db/mb1.edb")) {
        Err(EngineError::PageCorrupt { pgno, path, .. }) => {
            assert_eq!(pgno, 4);
            assert_eq!(path, Path::new("db/mb1.edb"));
        }
        other => panic!("{other:?}"),
    }
    let inst = open(&fs).unwrap();
    let r = inst.begin_read().unwrap();
    let mut c = r.cursor(DB, T).unwrap();
    let res = c.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX);
    assert!(matches!(res, Err(EngineError::PageCorrupt { pgno: 4, .. })), "{res:?}");
}

#[test]
fn disk_full_fails_writes_shuts_down_and_recovers_without_loss() {
    let fs = MemFs::new();
    let inst = create(&fs);
    fill(&inst, 0, 20);
    fs.set_capacity(Some(fs.used_bytes() + 40 * 1024));
    let mut acked = 20u64;
    let mut err = None;
    for i in 20..2000u64 {
        let r = (|| {
            let mut t = inst.begin_write()?;
            t.put(DB, T, &i.to_be_bytes(), &value(i, 900))?;
            t.commit(Durability::Durable)
        })();
        match r {
            Ok(_) => acked = i + 1,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let err = err.expect("the volume filled up");
    assert!(err.is_storage_full(), "{err}");
    assert!(inst.log_state().unwrap().disk_full);
    assert!(matches!(inst.begin_write().map(|_| ()), Err(EngineError::DiskFullState { .. })));
    let shut = inst.shutdown();
    shut.expect("a full instance still shuts down cleanly");
    drop(inst);
    let h = ese::inspect::dump_database_header(&fs, Path::new("db/mb1.edb")).unwrap();
    assert_eq!(h.state, ese::DbState::CleanShutdown);
    fs.set_capacity(None);
    let inst = open(&fs).unwrap();
    assert!(inst.recovery_info().was_clean);
    let rows = all_rows(&inst);
    assert!(rows.len() as u64 >= acked, "{} rows, {} acknowledged", rows.len(), acked);
    for i in 0..acked {
        assert_eq!(rows[i as usize].1, value(i, 900));
    }
    fill(&inst, 5000, 10);
}
