//! The surrogate backup: a backup taken of a passive copy on another node, recorded on the
//! active as a logged stamp. The active's headers, a passive copy replaying the shipped logs,
//! recovery after a crash that lost the header write, and hard recovery all end with the
//! same backup history; the session's sequence rules and notices.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ese::{
    BackupKind, BackupSlot, DatabaseSpec, Durability, EngineError, EngineNotice, Instance,
    PassiveConfig, PassiveReplay, SessionState, SlotKind,
};
use volume::mem::MemFs;
use volume::{FileSystem, FsRef, OpenMode};

type Notes = Arc<Mutex<Vec<EngineNotice>>>;

/// `lazy`: the lazy writer's interval (an hour: it never writes a header by itself).
fn with_notices(fs: &MemFs, lazy: Duration) -> (Instance, Notes) {
    let notes: Notes = Arc::default();
    let mut c = config(fs);
    c.lazy_interval = lazy;
    let n2 = notes.clone();
    c.notice = Some(Arc::new(move |n: &EngineNotice| n2.lock().unwrap().push(n.clone())));
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

fn copy_file(from: &MemFs, to: &MemFs, src: &Path, dst: &Path) {
    let data = volume::fs::read_all(from, src).unwrap();
    to.create_dir_all(dst.parent().unwrap()).unwrap();
    let f = to.open(dst, OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(&data, 0).unwrap();
    f.sync().unwrap();
}

/// The closed generations in `dir`, ascending.
fn closed(fs: &MemFs, dir: &str) -> Vec<u32> {
    let mut v: Vec<u32> = fs
        .read_dir(Path::new(dir))
        .unwrap()
        .iter()
        .filter_map(|e| ese::logfmt::parse_generation_name("E00", &e.name))
        .collect();
    v.sort_unstable();
    v
}

fn notice_kinds(notes: &Notes) -> Vec<String> {
    notes
        .lock()
        .unwrap()
        .iter()
        .map(|n| serde_json::to_value(n).unwrap()["notice"].as_str().unwrap().to_string())
        .collect()
}

/// A passive copy of the active's database on its own file system, fed by shipping closed
/// generations into `inbox/`.
struct Passive {
    fs: MemFs,
    replay: PassiveReplay,
    shipped: u32,
}

impl Passive {
    fn config(fs: &MemFs) -> PassiveConfig {
        let f: FsRef = Arc::new(fs.clone());
        PassiveConfig {
            databases: vec![DatabaseSpec::new(DB, f.clone(), "db/mb1.edb")],
            checkpoint_fs: f,
            checkpoint_path: "passive/E00.pchk".into(),
            prefix: "E00".into(),
        }
    }

    /// Seeds from a copy of the database taken while a copy backup holds the active frozen.
    fn seed(active_fs: &MemFs, inst: &Instance) -> Passive {
        let fs = MemFs::new();
        let mut b = inst.backup_session(BackupKind::Copy).unwrap();
        b.prepare().unwrap();
        b.freeze().unwrap();
        copy_file(active_fs, &fs, Path::new("db/mb1.edb"), Path::new("db/mb1.edb"));
        b.thaw().unwrap();
        b.end().unwrap();
        let replay = PassiveReplay::open(Self::config(&fs)).unwrap();
        Passive { fs, replay, shipped: 0 }
    }

    /// Ships every closed generation of the active not shipped yet and applies them;
    /// returns the last generation applied.
    fn catch_up(&mut self, active_fs: &MemFs) -> u32 {
        let mut paths: Vec<PathBuf> = Vec::new();
        for g in closed(active_fs, "logs") {
            if g <= self.shipped {
                continue;
            }
            let name = ese::logfmt::generation_name("E00", g);
            let to = Path::new("inbox").join(&name);
            copy_file(active_fs, &self.fs, &Path::new("logs").join(&name), &to);
            self.shipped = g;
            if g > self.replay.replayed_generation() {
                paths.push(to);
            }
        }
        let fs: FsRef = Arc::new(self.fs.clone());
        if !paths.is_empty() {
            let rep = self.replay.apply_batch(&fs, &paths).unwrap();
            assert!(rep.applied);
        }
        self.replay.replayed_generation()
    }

    fn header(&self) -> ese::DbHeader {
        self.replay.headers().remove(0)
    }
}

/// One surrogate backup of `kind` by `node` over the generations the passive holds;
/// returns the slot stamped and the generation holding the record.
fn surrogate(
    inst: &Instance,
    passive: &mut Passive,
    active_fs: &MemFs,
    kind: BackupKind,
    node: &str,
) -> (BackupSlot, u32) {
    let hi = passive.catch_up(active_fs);
    let lo = closed(active_fs, "logs")[0];
    let mut b = inst.backup_session(kind).unwrap();
    b.set_surrogate(node);
    assert_eq!(b.passive_node(), Some(node));
    b.prepare().unwrap();
    assert_eq!(inst.backup_in_progress(), Some(b.snapshot_instance()));
    let g = b.stamp_surrogate(lo, hi).unwrap();
    assert!(g > hi, "the record's generation {g:#X} follows the backup's {hi:#X}");
    assert_eq!(b.current_state(), SessionState::Thawed);
    assert_eq!(b.snapshot_generations(), (lo..=hi).collect::<Vec<_>>().as_slice());
    assert!(
        inst.log_state().unwrap().current_generation > g,
        "the roll closed the generation holding the record"
    );
    // The passive applies the generation holding the record before the logs are truncated.
    assert_eq!(passive.catch_up(active_fs), g);
    if kind != BackupKind::Copy {
        let gens = b.snapshot_generations().to_vec();
        b.truncate(&gens).unwrap();
    }
    b.end().unwrap();
    assert_eq!(inst.backup_in_progress(), None);
    let h = inst.database_header(DB).unwrap();
    let slot = match kind {
        BackupKind::Full => h.previous_full,
        BackupKind::Incremental => h.previous_incremental,
        BackupKind::Differential => h.previous_differential,
        BackupKind::Copy => h.previous_copy,
    }
    .unwrap();
    assert_eq!((slot.kind, slot.gen_low, slot.gen_high), (SlotKind::Surrogate, lo, hi));
    (slot, g)
}

#[test]
fn a_surrogate_stamp_reaches_the_passive_through_the_log() {
    let fs = MemFs::new();
    let (inst, notes) = with_notices(&fs, Duration::from_millis(5));
    fill(&inst, 0, 40);
    let mut passive = Passive::seed(&fs, &inst);
    fill(&inst, 40, 40);
    inst.roll_log().unwrap();
    notes.lock().unwrap().clear();

    // A full taken on node b.
    let (full, g) = surrogate(&inst, &mut passive, &fs, BackupKind::Full, "b");
    let active = inst.database_header(DB).unwrap();
    let on_disk = ese::inspect::dump_database_header(&fs, Path::new("db/mb1.edb")).unwrap();
    assert_eq!(on_disk.previous_full, Some(full), "the active's stamp is on disk");
    let p = passive.header();
    assert_eq!(p.previous_full, Some(full), "the passive shows the same full");
    assert_eq!(p.previous_incremental, active.previous_incremental);
    let kinds = notice_kinds(&notes);
    assert_eq!(kinds.first().map(String::as_str), Some("surrogate_started"));
    assert_eq!(kinds.get(1).map(String::as_str), Some("surrogate_stamped"));
    assert!(
        matches!(kinds.get(2).map(String::as_str), Some("logs_truncated" | "no_truncation")),
        "{kinds:?}"
    );
    assert_eq!(kinds.len(), 3, "no backup_completed for a surrogate backup: {kinds:?}");
    match &notes.lock().unwrap()[..2] {
        [
            EngineNotice::SurrogateStarted {
                passive_node: n1,
                kind: k1,
                snapshot_instance: s1,
                ..
            },
            EngineNotice::SurrogateStamped {
                passive_node: n2,
                kind: k2,
                snapshot_instance: s2,
                time,
                gen_low,
                gen_high,
                generation,
                ..
            },
        ] => {
            assert_eq!((n1.as_str(), n2.as_str()), ("b", "b"));
            assert_eq!((*k1, *k2), (BackupKind::Full, BackupKind::Full));
            assert_eq!(s1, s2);
            assert_eq!(
                (*time, *gen_low, *gen_high, *generation),
                (full.time, full.gen_low, full.gen_high, g)
            );
        }
        other => panic!("{other:?}"),
    }
    // The log dump shows the record.
    let dump = ese::inspect::dump_log(
        &fs,
        &Path::new("logs").join(ese::logfmt::generation_name("E00", g)),
    )
    .unwrap();
    assert!(dump.records.iter().any(|r| r.kind == "backup" && r.detail.contains("full")), "{dump}");

    // An incremental taken on node c on top of it: on both sides.
    fill(&inst, 80, 40);
    inst.roll_log().unwrap();
    let (incr, _) = surrogate(&inst, &mut passive, &fs, BackupKind::Incremental, "c");
    let p = passive.header();
    assert_eq!((p.previous_full, p.previous_incremental), (Some(full), Some(incr)));
    assert_eq!(inst.database_header(DB).unwrap().previous_full, Some(full));

    // A passive reopened (restarted) still shows them.
    let cfg = Passive::config(&passive.fs);
    passive.replay = PassiveReplay::open(cfg).unwrap();
    let p = passive.header();
    assert_eq!((p.previous_full, p.previous_incremental), (Some(full), Some(incr)));

    // A new full clears the incremental and differential slots, on the passive too.
    fill(&inst, 120, 40);
    inst.roll_log().unwrap();
    let (diff, _) = surrogate(&inst, &mut passive, &fs, BackupKind::Differential, "b");
    assert_eq!(passive.header().previous_differential, Some(diff));
    fill(&inst, 160, 20);
    inst.roll_log().unwrap();
    let (full2, _) = surrogate(&inst, &mut passive, &fs, BackupKind::Full, "c");
    assert_ne!(full2, full);
    for (who, h) in [("active", inst.database_header(DB).unwrap()), ("passive", passive.header())] {
        assert_eq!(h.previous_full, Some(full2), "{who}");
        assert_eq!((h.previous_incremental, h.previous_differential), (None, None), "{who}");
    }
    // A copy stamps the copy slot and truncates nothing.
    let (copy, _) = surrogate(&inst, &mut passive, &fs, BackupKind::Copy, "b");
    assert_eq!(passive.header().previous_copy, Some(copy));
    assert_eq!(passive.header().previous_full, Some(full2));
    assert_eq!(all_rows(&inst).len(), 180);
}

#[test]
fn sequence_errors() {
    let fs = MemFs::new();
    let (inst, notes) = with_notices(&fs, Duration::from_secs(3600));
    fill(&inst, 0, 20);
    let g = inst.roll_log().unwrap();
    // Not a surrogate session.
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.prepare().unwrap();
    assert!(matches!(b.stamp_surrogate(1, g), Err(EngineError::InvalidSequence { .. })));
    b.abort().unwrap();
    // Not prepared yet.
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.set_surrogate("b");
    assert!(matches!(b.stamp_surrogate(1, g), Err(EngineError::InvalidSequence { .. })));
    b.prepare().unwrap();
    // A surrogate session never freezes the active.
    assert!(matches!(b.freeze(), Err(EngineError::InvalidSequence { .. })));
    // Generations the active has not closed, or no range at all.
    let current = inst.log_state().unwrap().current_generation;
    assert!(matches!(b.stamp_surrogate(1, current), Err(EngineError::SurrogateStampRefused(_))));
    assert!(matches!(b.stamp_surrogate(g + 1, g), Err(EngineError::SurrogateStampRefused(_))));
    assert!(matches!(b.stamp_surrogate(0, g), Err(EngineError::SurrogateStampRefused(_))));
    assert_eq!(inst.database_header(DB).unwrap().previous_full, None, "refused: nothing stamped");
    b.stamp_surrogate(1, g).unwrap();
    // Stamped once: not again, and end stamps nothing more.
    assert!(matches!(b.stamp_surrogate(1, g), Err(EngineError::InvalidSequence { .. })));
    let stamped = inst.database_header(DB).unwrap();
    b.end().unwrap();
    let after = inst.database_header(DB).unwrap();
    assert_eq!(after.previous_full, stamped.previous_full);
    assert_eq!(after.update_count, stamped.update_count, "end wrote no header");

    // An incremental surrogate needs a full (on a fresh instance).
    let fs2 = MemFs::new();
    let (inst2, _) = with_notices(&fs2, Duration::from_millis(5));
    let mut b = inst2.backup_session(BackupKind::Incremental).unwrap();
    b.set_surrogate("c");
    assert!(matches!(b.prepare(), Err(EngineError::MissingFullBackup(_))));

    // Aborting a surrogate session reports the abort and stamps nothing.
    notes.lock().unwrap().clear();
    let before = inst.database_header(DB).unwrap();
    let mut b = inst.backup_session(BackupKind::Incremental).unwrap();
    b.set_surrogate("c");
    b.prepare().unwrap();
    b.abort().unwrap();
    assert_eq!(notice_kinds(&notes), ["surrogate_started", "backup_aborted"]);
    assert_eq!(inst.database_header(DB).unwrap(), before);
    assert_eq!(inst.backup_in_progress(), None);
}

/// Logs and checkpoint on one file system, the database on another: a crash of the
/// database's file system right at the header write loses it, while the record is durable.
#[test]
fn recovery_applies_a_stamp_whose_header_write_was_lost() {
    let logs = MemFs::new();
    let dbfs = MemFs::new();
    let mut c = config(&logs);
    c.lazy_interval = Duration::from_secs(3600);
    let spec = DatabaseSpec::new(DB, Arc::new(dbfs.clone()), "db/mb1.edb");
    let inst = Instance::create(c.clone()).unwrap();
    inst.create_database(DB, Arc::new(dbfs.clone()), "db/mb1.edb").unwrap();
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    t.commit(Durability::Durable).unwrap();
    fill(&inst, 0, 30);
    let g = inst.roll_log().unwrap();
    inst.checkpoint_now().unwrap();
    let mut b = inst.backup_session(BackupKind::Full).unwrap();
    b.set_surrogate("b");
    b.prepare().unwrap();
    // The next change of the database's file system is the header write: it fails, and the
    // file system is left as a power loss leaves it.
    dbfs.crash_after(1);
    assert!(b.stamp_surrogate(1, g).is_err(), "the header write crashed");
    drop(b);
    drop(inst);
    dbfs.clear_faults();
    let lost = ese::inspect::dump_database_header(&dbfs, Path::new("db/mb1.edb")).unwrap();
    assert_eq!(lost.previous_full, None, "the header write was lost");
    let inst = Instance::open(c, vec![spec]).unwrap();
    let h = inst.database_header(DB).unwrap();
    let slot = h.previous_full.expect("recovery applied the logged stamp");
    assert_eq!((slot.kind, slot.gen_low, slot.gen_high), (SlotKind::Surrogate, 1, g));
    let on_disk = ese::inspect::dump_database_header(&dbfs, Path::new("db/mb1.edb")).unwrap();
    assert_eq!(on_disk.previous_full, Some(slot));
    assert_eq!(all_rows(&inst).len(), 30);
    // Recovered again (a crash of the reopened instance): the stamp is there once.
    fill(&inst, 30, 5);
    drop(inst);
    let inst = open_on(&logs, &dbfs);
    assert_eq!(inst.database_header(DB).unwrap().previous_full, Some(slot));
    inst.shutdown().unwrap();
}

fn open_on(logs: &MemFs, dbfs: &MemFs) -> Instance {
    let mut c = config(logs);
    c.lazy_interval = Duration::from_secs(3600);
    Instance::open(c, vec![DatabaseSpec::new(DB, Arc::new(dbfs.clone()), "db/mb1.edb")]).unwrap()
}

/// A database restored from a snapshot taken before the stamp and rolled forward through the
/// generation holding it comes back with the stamp.
#[test]
fn hard_recovery_applies_the_stamp() {
    let fs = MemFs::new();
    let (inst, _) = with_notices(&fs, Duration::from_millis(5));
    fill(&inst, 0, 40);
    let restore = MemFs::new();
    let mut b = inst.backup_session(BackupKind::Copy).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    copy_file(&fs, &restore, Path::new("db/mb1.edb"), Path::new("restore/mb1.edb"));
    for g in b.snapshot_generations() {
        let name = ese::logfmt::generation_name("E00", *g);
        copy_file(&fs, &restore, &Path::new("logs").join(&name), &Path::new("rlogs").join(&name));
    }
    b.thaw().unwrap();
    b.end().unwrap();
    fill(&inst, 40, 20);
    let hi = inst.roll_log().unwrap();
    let mut s = inst.backup_session(BackupKind::Full).unwrap();
    s.set_surrogate("b");
    s.prepare().unwrap();
    s.stamp_surrogate(1, hi).unwrap();
    s.end().unwrap();
    let slot = inst.database_header(DB).unwrap().previous_full.unwrap();
    inst.shutdown().unwrap();
    let rfs: FsRef = Arc::new(restore.clone());
    let report = ese::hard_recover(&ese::HardRecovery {
        databases: vec![DatabaseSpec::new(DB, rfs.clone(), "restore/mb1.edb")],
        log_fs: rfs,
        log_dir: "rlogs".into(),
        prefix: "E00".into(),
        roll_forward: Some((Arc::new(fs.clone()), "logs".into())),
        stop_after_generation: None,
    })
    .unwrap();
    assert!(report.generations.contains(&(hi + 1)), "{:?}", report.generations);
    let h = ese::inspect::dump_database_header(&restore, Path::new("restore/mb1.edb")).unwrap();
    assert_eq!(h.state, ese::DbState::CleanShutdown);
    assert_eq!(h.previous_full, Some(slot));
}
