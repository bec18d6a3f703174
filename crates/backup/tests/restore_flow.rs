//! Restores of a store that was backed up under continuous load.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backup::repo::FileRole;
use backup::{BackupRequest, Quiet, RequesterError, RestoreRequest, RestoreTarget, Restorer};
use ese::{DatabaseSpec, Instance, InstanceConfig};
use store::MailDb;
use store::load::{LoadConfig, LoadGenerator};
use volume::{FsRef, HostFs, OpenMode};
use vss::BackupType;

fn req(t: BackupType) -> BackupRequest {
    BackupRequest {
        storage_group: "SG1".into(),
        backup_type: t,
        databases: vec![],
        replica: None,
        history_nodes: vec![],
    }
}

fn restorer(n: &common::Node) -> Restorer {
    Restorer::new(
        n.coordinator.clone(),
        n.store.clone(),
        n.requester.repo().clone(),
        n.events.clone(),
    )
}

/// Restores `set` (and its chain) over the original location, rolling forward.
fn restore_original(
    n: &common::Node,
    set: impl ToString,
    allow_overwrite: bool,
) -> backup::Result<backup::RestoreReport> {
    let request = RestoreRequest {
        set: set.to_string(),
        target: RestoreTarget::Original { allow_overwrite },
        roll_forward: true,
    };
    restorer(n).restore(&request, &Quiet)
}

fn wait_for(load: &LoadGenerator, more: u64) {
    let target = load.acknowledged() + more;
    common::wait_until(&format!("the load to acknowledge {target} deliveries"), || {
        load.acknowledged() >= target
    });
}

/// Opens a database restored to an alternate directory, read-only use.
fn open_alternate(fs: FsRef, dir: &Path) -> (Arc<Instance>, MailDb) {
    let mut cfg = InstanceConfig::new(fs.clone(), dir.join("logs"), fs.clone(), dir.to_path_buf());
    let t = common::tuning();
    cfg.log_file_size = t.log_file_size;
    cfg.page_size = t.page_size;
    let inst = Arc::new(
        Instance::open(cfg, vec![DatabaseSpec::new("DB1", fs, dir.join("DB1.edb"))]).unwrap(),
    );
    let mail = MailDb::open(inst.clone(), "DB1").unwrap();
    (inst, mail)
}

/// Records the load's acknowledged count as the backup enters the freeze step and as it
/// starts verifying (after the thaw and the copy).
struct FreezeWindow<'a> {
    load: &'a LoadGenerator,
    seen: std::sync::Mutex<Vec<(String, u64)>>,
}

impl FreezeWindow<'_> {
    fn bounds(&self) -> (u64, u64) {
        let seen = self.seen.lock().unwrap();
        let at = |prefix: &str| {
            seen.iter().find(|(s, _)| s.starts_with(prefix)).map(|(_, n)| *n).unwrap()
        };
        // The upper bound leaves the copy's time for a commit flushed just before the freeze
        // to be seen acknowledged by its thread.
        (at("freezing"), at("verifying"))
    }
}

impl backup::Progress for FreezeWindow<'_> {
    fn step(&self, what: &str) {
        self.seen.lock().unwrap().push((what.to_string(), self.load.acknowledged()));
    }
    fn bytes(&self, _: u64, _: u64) {}
}

/// The acknowledged operation a restored store was cut at: the last acknowledged delivery it
/// holds, or a later deletion it holds too. Checks that the store holds exactly the
/// operations acknowledged up to the cut (every message delivered and not yet deleted then,
/// none deleted by then).
fn cut_of(ledger: &store::load::Ledger, restored: &MailDb) -> u64 {
    let last_delivery = ledger
        .delivered
        .iter()
        .filter(|((mb, id), _)| restored.read(mb, *id).is_ok())
        .map(|(_, d)| d.seq)
        .max()
        .unwrap();
    // Deletions acknowledged after that delivery but before the cut are in the store too.
    let last_deletion = ledger
        .deleted
        .iter()
        .filter(|(k, _)| {
            ledger.delivered[*k].seq <= last_delivery && restored.read(&k.0, k.1).is_err()
        })
        .map(|(_, s)| *s)
        .max()
        .unwrap_or(0);
    let cut = last_delivery.max(last_deletion);
    ledger.verify(restored, cut).unwrap();
    cut
}

#[test]
fn full_incremental_differential_under_load_then_disaster_and_restore() {
    let n = common::node();
    let mail = n.store.storage_group("SG1").unwrap().mail("DB1").unwrap();
    let load = LoadGenerator::start(
        mail,
        LoadConfig {
            mailboxes: 5,
            body_min: 500,
            body_max: 30_000,
            seed: 11,
            ..Default::default()
        },
    )
    .unwrap();
    wait_for(&load, 60);
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    wait_for(&load, 60);
    // The acknowledgements counted when the freeze begins and once the snapshot is taken and
    // copied: the incremental's cut lies between them.
    let window = FreezeWindow { load: &load, seen: Default::default() };
    let inc = n.requester.backup(&req(BackupType::Incremental), &window).unwrap();
    let (inc_lo, inc_hi) = window.bounds();
    assert!(inc_lo <= inc_hi);
    wait_for(&load, 60);
    n.requester.backup(&req(BackupType::Differential), &Quiet).unwrap();
    wait_for(&load, 60);
    let ledger = load.stop();
    assert_eq!(ledger.errors, 0, "{:?}", ledger.last_error);

    // Disaster: the database file is lost.
    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(false).unwrap();
    n.db.remove_file(Path::new("SG1/DB1.edb")).unwrap();
    assert!(sg.mount().is_err(), "the store cannot mount without its database");

    // Restore full + incremental to the original location, rolling forward.
    let report = restore_original(&n, inc.set.id, false).unwrap();
    assert_eq!(report.sets.len(), 2, "full + incremental");
    assert!(sg.is_mounted(), "post-restore mounted the storage group");
    // The restore's trail: started (store writer's pre-restore), recovered, done.
    let ids: Vec<u32> = n.events.events().iter().map(|e| e.id).collect();
    let at =
        |id: u32| ids.iter().rposition(|i| *i == id).unwrap_or_else(|| panic!("{id} in {ids:?}"));
    assert!(at(9625) < at(9626), "{ids:?}");
    let mail = sg.mail("DB1").unwrap();
    let checked = ledger.verify(&mail, u64::MAX).unwrap();
    assert!(checked > 100, "every acknowledged message is back ({checked})");

    // Point in time: the incremental alone, without roll-forward, to an alternate location.
    let alt_dir = n.dir.path().join("alternate");
    let alt: FsRef = Arc::new(HostFs::new(&alt_dir).unwrap());
    restorer(&n)
        .restore(
            &RestoreRequest {
                set: inc.set.id.to_string(),
                target: RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("sg1") },
                roll_forward: false,
            },
            &Quiet,
        )
        .unwrap();
    let (_inst, restored) = open_alternate(alt, Path::new("sg1"));
    // The restored store holds exactly a prefix of the acknowledged operations, cut at the
    // incremental's freeze, which happened between inc_lo and inc_hi.
    let cut = cut_of(&ledger, &restored);
    // A delivery acknowledged before the freeze began is in; one acknowledged after the
    // snapshot is out; the cut falls in between.
    assert!((inc_lo..=inc_hi).contains(&cut), "cut {cut} outside the freeze {inc_lo}..={inc_hi}");
    let later = ledger.delivered.iter().filter(|(_, d)| d.seq > cut).count();
    assert!(later > 50, "messages after the freeze exist in the live store only");
}

#[test]
fn a_damaged_backup_is_named_and_the_target_is_left_alone() {
    let n = common::node();
    let mail = n.store.storage_group("SG1").unwrap().mail("DB1").unwrap();
    let load = LoadGenerator::start(
        mail,
        LoadConfig { mailboxes: 2, max_deliveries: Some(80), seed: 12, ..Default::default() },
    )
    .unwrap();
    common::wait_until("the load to deliver 80 messages", || load.finished());
    load.stop();
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    // Damage one chunk of the database file inside its pack.
    let packs: Vec<_> = n
        .repo_fs
        .read_dir(Path::new("packs"))
        .unwrap()
        .into_iter()
        .filter(|e| e.name.ends_with(".pack"))
        .collect();
    let pack =
        n.repo_fs.open(&Path::new("packs").join(&packs[0].name), OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 16];
    pack.read_exact_at(&mut b, 100).unwrap();
    b.iter_mut().for_each(|x| *x ^= 0x5A);
    pack.write_at(&b, 100).unwrap();

    // The first chunk of the first pack is the database file's first chunk.
    let db = full.set.files.iter().find(|f| f.role == FileRole::Database).unwrap();
    let chunk = &db.chunks[0].hash;
    let err = n.requester.repo().verify_set(&full.set, &|_| {}).unwrap_err().to_string();
    assert!(err.contains(chunk.as_str()) && err.contains(&db.path), "{err}");

    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(false).unwrap();
    let before = volume::fs::read_all(n.db.as_ref(), Path::new("SG1/DB1.edb")).unwrap();
    let err = restore_original(&n, &full.set.id.to_string()[..8], false).unwrap_err();
    assert!(matches!(err, RequesterError::Repo(_)), "{err}");
    assert!(err.to_string().contains(chunk.as_str()), "{err}");
    let after = volume::fs::read_all(n.db.as_ref(), Path::new("SG1/DB1.edb")).unwrap();
    assert!(before == after, "the database file was not touched");
    let names: Vec<String> =
        n.db.read_dir(Path::new("SG1")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["DB1.edb"], "no staging left behind");
    sg.mount().unwrap();
}

#[test]
fn a_mounted_storage_group_is_not_overwritten_unless_allowed() {
    let n = common::node();
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let r = restorer(&n);
    let request = |allow| RestoreRequest {
        set: full.set.id.to_string(),
        target: RestoreTarget::Original { allow_overwrite: allow },
        roll_forward: true,
    };
    let err = r.restore(&request(false), &Quiet).unwrap_err();
    assert!(err.to_string().contains("mounted"), "{err}");
    r.restore(&request(true), &Quiet).unwrap();
    assert!(n.store.storage_group("SG1").unwrap().is_mounted());
}

fn loaded(n: &common::Node, deliveries: u64, seed: u64) -> store::load::Ledger {
    let mail = n.store.storage_group("SG1").unwrap().mail("DB1").unwrap();
    let load = LoadGenerator::start(
        mail,
        LoadConfig {
            mailboxes: 3,
            body_min: 2000,
            body_max: 20_000,
            seed,
            max_deliveries: Some(deliveries),
            ..Default::default()
        },
    )
    .unwrap();
    common::wait_until(&format!("the load to deliver {deliveries} messages"), || load.finished());
    load.stop()
}

#[test]
fn a_differential_after_an_incremental_restores_with_the_incrementals_logs() {
    let n = common::node();
    let a = loaded(&n, 60, 21);
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let b = loaded(&n, 60, 22);
    n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();
    let c = loaded(&n, 60, 23);
    let diff = n.requester.backup(&req(BackupType::Differential), &Quiet).unwrap();
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    restorer(&n)
        .restore(
            &RestoreRequest {
                set: diff.set.id.to_string(),
                target: RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("x") },
                roll_forward: false,
            },
            &Quiet,
        )
        .unwrap();
    let (_i, restored) = open_alternate(alt, Path::new("x"));
    for ledger in [&a, &b, &c] {
        ledger.verify(&restored, u64::MAX).unwrap();
    }
}

#[test]
fn a_differential_whose_missing_logs_are_in_no_set_is_refused() {
    let n = common::node();
    loaded(&n, 60, 24);
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    loaded(&n, 60, 25);
    let inc = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();
    // The incremental's set is lost from the repository.
    n.repo_fs.remove_file(&Path::new("sets").join(format!("{}.manifest", inc.set.id))).unwrap();
    loaded(&n, 60, 26);
    let before = n.store.storage_group("SG1").unwrap().log_state().unwrap().generations;
    let err = n.requester.backup(&req(BackupType::Differential), &Quiet).unwrap_err();
    assert!(matches!(err, RequesterError::Refused(_)), "{err}");
    assert!(err.to_string().contains("take a full backup"), "{err}");
    let after = n.store.storage_group("SG1").unwrap().log_state().unwrap().generations;
    assert!(before.iter().all(|g| after.contains(g)), "nothing truncated");
}

#[test]
fn a_failed_restore_over_a_mounted_storage_group_mounts_it_again() {
    let n = common::node();
    loaded(&n, 40, 27);
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    // Remove every pack: the restore must fail while reading the backup.
    for e in n.repo_fs.read_dir(Path::new("packs")).unwrap() {
        n.repo_fs.remove_file(&Path::new("packs").join(&e.name)).unwrap();
    }
    let err = restore_original(&n, full.set.id, true).unwrap_err();
    assert!(err.to_string().contains("pack"), "{err}");
    let sg = n.store.storage_group("SG1").unwrap();
    assert!(sg.is_mounted(), "the storage group is left as it was: mounted");
    let names: Vec<String> =
        n.logs.read_dir(Path::new("SG1/logs")).unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.iter().all(|n| !n.starts_with(".restore-")), "{names:?}");
}

#[test]
fn an_alternate_restore_needs_an_empty_directory() {
    let n = common::node();
    loaded(&n, 20, 28);
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    alt.create_dir_all(Path::new("busy")).unwrap();
    alt.open(Path::new("busy/keep.txt"), OpenMode::Create).unwrap().write_at(b"mine", 0).unwrap();
    let request = |dir: &str, roll_forward| RestoreRequest {
        set: full.set.id.to_string(),
        target: RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from(dir) },
        roll_forward,
    };
    let err = restorer(&n).restore(&request("busy", false), &Quiet).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(volume::fs::read_all(alt.as_ref(), Path::new("busy/keep.txt")).unwrap(), b"mine");
    restorer(&n).restore(&request("fresh", false), &Quiet).unwrap();
    let err = restorer(&n).restore(&request("fresh", true), &Quiet).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

/// The database file (and the log directory) of the original location, for comparisons.
fn original_files(n: &common::Node) -> (Vec<u8>, Vec<String>) {
    let db = volume::fs::read_all(n.db.as_ref(), Path::new("SG1/DB1.edb")).unwrap();
    let mut logs: Vec<String> =
        n.logs.read_dir(Path::new("SG1/logs")).unwrap().into_iter().map(|e| e.name).collect();
    logs.sort();
    (db, logs)
}

/// Restores `set` over the dismounted original location, expecting a refusal or failure.
fn restore_fails(n: &common::Node, set: &backup::repo::BackupSet) -> String {
    let sg = n.store.storage_group("SG1").unwrap();
    if sg.is_mounted() {
        sg.dismount(false).unwrap();
    }
    let before = original_files(n);
    let err = restore_original(n, set.id, false).unwrap_err().to_string();
    assert!(original_files(n) == before, "the target is as it was: {err}");
    err
}

#[test]
fn a_set_missing_a_log_generation_is_refused_naming_it() {
    let n = common::node();
    loaded(&n, 80, 31);
    let mut set = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap().set;
    let logs: Vec<_> = set.files.iter().filter(|f| f.role == FileRole::Log).cloned().collect();
    assert!(logs.len() >= 3, "the load filled several generations");
    let gone = logs[1].path.clone();
    set.files.retain(|f| f.path != gone);
    n.requester.repo().rewrite_manifest(&set).unwrap();
    let err = restore_fails(&n, &set);
    let name = Path::new(&gone).file_name().unwrap().to_str().unwrap();
    let generation = backup::verify::log_generation(name).unwrap().1;
    assert!(
        err.contains(&format!("{generation:#X}")) || err.contains(name),
        "names the missing generation {name}: {err}"
    );
    n.store.storage_group("SG1").unwrap().mount().unwrap();
}

#[test]
fn a_foreign_log_in_a_set_stops_the_restore_naming_it() {
    let n = common::node();
    loaded(&n, 80, 32);
    let set = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap().set;
    // Another storage group instance (its own log signature) with the same generations.
    let other = common::node();
    loaded(&other, 80, 33);
    other.store.storage_group("SG1").unwrap().dismount(false).unwrap();
    let logs: Vec<_> = set.files.iter().filter(|f| f.role == FileRole::Log).collect();
    let swapped = logs[logs.len() / 2];
    let name = Path::new(&swapped.path).file_name().unwrap().to_str().unwrap().to_string();
    let foreign = other.logs.open(&Path::new("SG1/logs").join(&name), OpenMode::Read).unwrap();
    // The set again, with that one generation taken from the other instance.
    let repo = n.requester.repo();
    let mut w = repo.begin_set();
    for f in &set.files {
        if f.path == swapped.path {
            w.add_file(&f.path, f.role, &f.component, foreign.as_ref(), &|_| {}).unwrap();
            continue;
        }
        let mut data = Vec::new();
        repo.read_file(f, &mut |_, d| {
            data.extend_from_slice(d);
            Ok(())
        })
        .unwrap();
        let scratch: FsRef = Arc::new(HostFs::new(n.dir.path().join("scratch-files")).unwrap());
        let p = PathBuf::from(f.path.replace('/', "_"));
        volume::fs::write_atomic(scratch.as_ref(), &p, &data).unwrap();
        let src = scratch.open(&p, OpenMode::Read).unwrap();
        w.add_file(&f.path, f.role, &f.component, src.as_ref(), &|_| {}).unwrap();
    }
    let meta = backup::repo::SetMeta {
        node: set.node.clone(),
        backup_type: BackupType::Full,
        storage_group: "SG1".into(),
        log_range: set.log_range,
        components: set.components.clone(),
        database_headers: set.database_headers.clone(),
        ..Default::default()
    };
    let forged = w.publish(meta).unwrap();
    let err = restore_fails(&n, &forged);
    assert!(err.contains("signature") && err.contains(&name), "names {name}: {err}");
    n.store.storage_group("SG1").unwrap().mount().unwrap();
}

/// A restore over two databases whose second move into place fails puts the first one back:
/// the target is exactly as it was.
#[test]
fn a_restore_that_fails_moving_the_second_database_puts_the_first_back() {
    let dir = tempfile::tempdir().unwrap();
    let n = common::node_with(dir, &["DB1", "DB2"]);
    for db in ["DB1", "DB2"] {
        let mail = n.store.storage_group("SG1").unwrap().mail(db).unwrap();
        mail.create_mailbox("a").unwrap();
        for i in 0..20 {
            let h = store::message::Headers {
                from: "x@example.com".into(),
                to: vec!["a@example.com".into()],
                subject: format!("{db} {i}"),
                received_unix_ms: 0,
            };
            mail.deliver("a", "Inbox", h, &vec![b'm'; 3000], ese::Durability::Durable).unwrap();
        }
    }
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(false).unwrap();
    let read = |p: &str| volume::fs::read_all(n.db.as_ref(), Path::new(p)).unwrap();
    let before = (read("SG1/DB1.edb"), read("SG1/DB2.edb"));
    n.db_faults.as_ref().unwrap().fail_rename_onto("SG1/DB2.edb", volume::fault::FaultKind::Eio);
    let err = restore_original(&n, full.set.id, false).unwrap_err().to_string();
    assert!(err.contains("DB2.edb"), "{err}");
    assert!((read("SG1/DB1.edb"), read("SG1/DB2.edb")) == before, "both databases as they were");
    let mut names: Vec<String> =
        n.db.read_dir(Path::new("SG1")).unwrap().into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(names, ["DB1.edb", "DB2.edb"], "no staging left behind");
    sg.mount().unwrap();
    assert_eq!(sg.mail("DB2").unwrap().list("a", "Inbox").unwrap().len(), 20);
}

/// Cancels the job once it has written some bytes.
#[derive(Default)]
struct CancelOnFirstStep(std::sync::atomic::AtomicBool);

impl backup::Progress for CancelOnFirstStep {
    fn step(&self, what: &str) {
        if what.starts_with("restoring") {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    fn bytes(&self, _: u64, _: u64) {}
    fn cancelled(&self) -> Option<String> {
        self.0
            .load(std::sync::atomic::Ordering::Relaxed)
            .then(|| "the node is shutting down".into())
    }
}

#[test]
fn a_cancelled_restore_leaves_the_target_as_it_was() {
    let n = common::node();
    loaded(&n, 20, 29);
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let request = RestoreRequest {
        set: full.set.id.to_string(),
        target: RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("fresh") },
        roll_forward: false,
    };
    let err = restorer(&n).restore(&request, &CancelOnFirstStep::default()).unwrap_err();
    assert!(err.to_string().contains("shutting down"), "{err}");
    let left = alt.read_dir(Path::new("fresh")).map(|e| e.len()).unwrap_or(0);
    assert_eq!(left, 0, "nothing left in the target");
    assert!(n.events.events().iter().any(|e| e.id == 9627), "the restore is reported failed");
    restorer(&n).restore(&request, &Quiet).unwrap();
}

/// Delivers `n` messages of its own to database `db` of SG1.
fn deliver(node: &common::Node, db: &str, n: usize, tag: &str) {
    let mail = node.store.storage_group("SG1").unwrap().mail(db).unwrap();
    if !mail.mailboxes().unwrap().contains(&"a".to_string()) {
        mail.create_mailbox("a").unwrap();
    }
    for i in 0..n {
        let h = store::message::Headers {
            from: "x@example.com".into(),
            to: vec!["a@example.com".into()],
            subject: format!("{tag} {i}"),
            received_unix_ms: 0,
        };
        mail.deliver("a", "Inbox", h, &vec![b'q'; 6000], ese::Durability::Durable).unwrap();
    }
}

/// Backups of one database of a two-database storage group: only its header is stamped, no
/// log is truncated (the other database still needs them), an incremental of both is
/// refused while the full holds one, and the chain of the one restores it over the original
/// location without touching the other.
#[test]
fn backups_of_chosen_databases_stamp_and_restore_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let n = common::node_with(dir, &["DB1", "DB2"]);
    deliver(&n, "DB1", 40, "one");
    deliver(&n, "DB2", 40, "two");
    let only = |t: BackupType| BackupRequest {
        storage_group: "SG1".into(),
        backup_type: t,
        databases: vec!["DB1".into()],
        replica: None,
        history_nodes: vec![],
    };
    let sg = n.store.storage_group("SG1").unwrap();
    let before = sg.log_state().unwrap().generations;
    let full = n.requester.backup(&only(BackupType::Full), &Quiet).unwrap();
    let dbs: Vec<&str> = full
        .set
        .files
        .iter()
        .filter(|f| f.role == FileRole::Database)
        .map(|f| f.component.as_str())
        .collect();
    assert_eq!(dbs, ["DB1"]);
    let header = |db: &str| sg.instance().unwrap().database_header(db).unwrap();
    assert!(header("DB1").previous_full.is_some(), "DB1 stamped");
    assert!(header("DB2").previous_full.is_none(), "DB2 not stamped");
    let after = sg.log_state().unwrap().generations;
    assert!(before.iter().all(|g| after.contains(g)), "nothing truncated: {before:?} → {after:?}");
    let no_truncation = n.events.events().into_iter().any(|e| {
        e.id == 225
            && e.job == Some(full.job)
            && format!("{:?}", e.fields).contains("not every database")
    });
    assert!(no_truncation, "225 says why nothing was truncated");

    deliver(&n, "DB1", 30, "one more");
    let inc = n.requester.backup(&only(BackupType::Incremental), &Quiet).unwrap();
    assert!(header("DB1").previous_incremental.is_some());
    let err = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap_err().to_string();
    assert!(err.contains("does not hold database DB2"), "{err}");
    deliver(&n, "DB1", 30, "last");

    // Lose DB1; restore its chain over the original location, rolling forward.
    let db2_before = sg.mail("DB2").unwrap().digest().unwrap();
    sg.dismount(false).unwrap();
    n.db.remove_file(Path::new("SG1/DB1.edb")).unwrap();
    restore_original(&n, inc.set.id, false).unwrap();
    assert!(sg.is_mounted());
    assert_eq!(sg.mail("DB1").unwrap().list("a", "Inbox").unwrap().len(), 100, "all of DB1");
    assert_eq!(sg.mail("DB2").unwrap().list("a", "Inbox").unwrap().len(), 40);
    assert!(sg.mail("DB2").unwrap().digest().unwrap() == db2_before, "DB2 as it was");
}

/// Restores `set` (and its chain) to `target`, rolling forward or not.
fn restore_to(
    n: &common::Node,
    set: impl ToString,
    target: RestoreTarget,
    roll_forward: bool,
) -> backup::Result<backup::RestoreReport> {
    let request = RestoreRequest { set: set.to_string(), target, roll_forward };
    restorer(n).restore(&request, &Quiet)
}

const IN_PLACE: RestoreTarget = RestoreTarget::Original { allow_overwrite: false };

/// Files (with their bytes) and directories (`None`) by path.
type Tree = BTreeMap<PathBuf, Option<Vec<u8>>>;

/// Everything under `dir` on `fs`: each file with its bytes, each directory as `None`.
fn tree(fs: &FsRef, dir: &Path) -> Tree {
    let mut out = BTreeMap::new();
    for e in fs.read_dir(dir).unwrap() {
        let p = dir.join(&e.name);
        if e.kind == volume::FileKind::Dir {
            out.insert(p.clone(), None);
            out.extend(tree(fs, &p));
        } else {
            out.insert(p.clone(), Some(volume::fs::read_all(fs.as_ref(), &p).unwrap()));
        }
    }
    out
}

/// The original location byte for byte: databases, logs, checkpoint, and no other file or
/// directory (no staging, no superseded logs).
fn original_tree(n: &common::Node) -> (Tree, Tree) {
    (tree(&n.db, Path::new("SG1")), tree(&n.logs, Path::new("SG1")))
}

/// The generations a set holds.
fn generations(set: &backup::repo::BackupSet) -> Vec<u32> {
    let mut g: Vec<u32> = set
        .files
        .iter()
        .filter(|f| f.role == FileRole::Log)
        .filter_map(|f| {
            let name = Path::new(&f.path).file_name()?.to_str()?;
            backup::verify::log_generation(name).map(|(_, g)| g)
        })
        .collect();
    g.sort_unstable();
    g
}

/// The closed generation files of the live log directory, with their bytes.
fn closed_logs(n: &common::Node) -> BTreeMap<u32, Vec<u8>> {
    let dir = Path::new("SG1/logs");
    ese::logfmt::read_dir_stable(n.logs.as_ref(), dir)
        .unwrap()
        .into_iter()
        .filter_map(|e| ese::logfmt::parse_generation_name("E00", &e.name))
        .map(|g| {
            let p = dir.join(ese::logfmt::generation_name("E00", g));
            (g, volume::fs::read_all(n.logs.as_ref(), &p).unwrap())
        })
        .collect()
}

/// Mail delivered to DB1 of `sg` by four mailboxes, bodies up to 20 kB: the load of the
/// roll-forward tests.
fn mail_load(sg: &store::StorageGroup, seed: u64) -> LoadGenerator {
    let config =
        LoadConfig { mailboxes: 4, body_min: 500, body_max: 20_000, seed, ..Default::default() };
    LoadGenerator::start(sg.mail("DB1").unwrap(), config).unwrap()
}

/// A point-in-time restore over the original location: the live logs and checkpoint are
/// moved, unchanged, into a superseded directory; the store mounts holding exactly what was
/// acknowledged before the backup's freeze, continues the stream after the backup's last
/// generation, refuses an incremental until a new full backup, and keeps new mail across a
/// dismount and mount.
#[test]
fn a_point_in_time_restore_in_place_sets_the_live_logs_aside_and_continues_from_the_backup() {
    let n = common::node();
    // An earlier full: the restored database header records it (the later full's stamp is
    // written after its snapshot).
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let sg = n.store.storage_group("SG1").unwrap();
    let load = mail_load(&sg, 41);
    wait_for(&load, 60);
    let window = FreezeWindow { load: &load, seen: Default::default() };
    let full = n.requester.backup(&req(BackupType::Full), &window).unwrap();
    let (lo, hi) = window.bounds();
    wait_for(&load, 80);
    let ledger = load.stop();
    assert_eq!(ledger.errors, 0, "{:?}", ledger.last_error);
    sg.dismount(false).unwrap();

    let backed_up = generations(&full.set);
    let last = *backed_up.last().unwrap();
    let logs_dir = Path::new("SG1/logs");
    let live: BTreeMap<String, Vec<u8>> = n
        .logs
        .read_dir(logs_dir)
        .unwrap()
        .into_iter()
        .filter(|e| e.name.ends_with(".log"))
        .map(|e| {
            (
                e.name.clone(),
                volume::fs::read_all(n.logs.as_ref(), &logs_dir.join(&e.name)).unwrap(),
            )
        })
        .collect();
    let live_generations: Vec<u32> =
        live.keys().filter_map(|name| ese::logfmt::parse_generation_name("E00", name)).collect();
    assert!(live_generations.iter().any(|g| *g > last), "the stream went on after the backup");
    let checkpoint =
        volume::fs::read_all(n.logs.as_ref(), Path::new("SG1/system/E00.chk")).unwrap();

    let report = restore_to(&n, full.set.id, IN_PLACE, false).unwrap();
    assert!(sg.is_mounted(), "post-restore mounted the storage group");

    // The live stream, set aside unchanged.
    let superseded = report.superseded_logs.clone().expect("the live logs were set aside");
    assert_eq!(superseded.volume, "logs");
    assert_eq!(superseded.dir.parent(), Some(logs_dir));
    let short = &full.set.id.simple().to_string()[..8];
    let dir_name = superseded.dir.file_name().unwrap().to_str().unwrap();
    assert!(dir_name.starts_with(&format!("superseded-{short}-")), "{dir_name}");
    let mut expected = live.clone();
    expected.insert("E00.chk".into(), checkpoint);
    let moved: BTreeMap<String, Vec<u8>> = tree(&n.logs, &superseded.dir)
        .into_iter()
        .map(|(p, b)| (p.file_name().unwrap().to_str().unwrap().to_string(), b.unwrap()))
        .collect();
    assert_eq!(moved.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
    assert!(moved == expected, "every live log and the checkpoint, byte for byte");
    let mut reported = superseded.files.clone();
    reported.sort();
    assert_eq!(reported, expected.keys().cloned().collect::<Vec<_>>());
    let current = *live_generations.last().unwrap() + 1; // E00.log, after a clean dismount
    assert_eq!(superseded.generations, Some((live_generations[0], current)));
    let done = n.events.events().into_iter().rev().find(|e| e.id == 8205).unwrap();
    assert_eq!(done.fields["superseded_logs"], superseded.dir.display().to_string());

    // The stream continues after the backup's last generation, from the restored logs.
    let state = sg.log_state().unwrap();
    assert_eq!(state.current_generation, last + 1);
    assert_eq!(closed_logs(&n).into_keys().collect::<Vec<_>>(), backed_up);

    // Exactly what was acknowledged before the backup's freeze.
    let mail = sg.mail("DB1").unwrap();
    let cut = cut_of(&ledger, &mail);
    assert!((lo..=hi).contains(&cut), "cut {cut} outside the freeze {lo}..={hi}");
    let later = ledger.delivered.values().filter(|d| d.seq > cut).count();
    assert!(later > 20, "messages acknowledged after the freeze are gone ({later})");

    // The repository's sets belong to the superseded stream: an incremental on them is
    // refused until a new full backup.
    let err = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap_err().to_string();
    assert!(err.contains("full backup") && err.contains("DB1"), "{err}");
    deliver(&n, "DB1", 20, "after the restore");
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    deliver(&n, "DB1", 10, "after the new full");
    n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();

    // A clean dismount and mount keeps everything.
    sg.dismount(false).unwrap();
    sg.mount().unwrap();
    let mail = sg.mail("DB1").unwrap();
    assert_eq!(cut_of(&ledger, &mail), cut);
    assert_eq!(mail.list("a", "Inbox").unwrap().len(), 30);
}

/// Rewinding the log stream under a database the set does not hold would leave it with page
/// positions beyond the new stream: refused, naming it, and nothing is touched (the storage
/// group stays mounted if it was).
#[test]
fn a_point_in_time_restore_in_place_needs_every_database_of_the_storage_group() {
    let dir = tempfile::tempdir().unwrap();
    let n = common::node_with(dir, &["DB1", "DB2"]);
    deliver(&n, "DB1", 30, "one");
    deliver(&n, "DB2", 30, "two");
    let only_db1 = BackupRequest {
        storage_group: "SG1".into(),
        backup_type: BackupType::Full,
        databases: vec!["DB1".into()],
        replica: None,
        history_nodes: vec![],
    };
    let full = n.requester.backup(&only_db1, &Quiet).unwrap();
    deliver(&n, "DB1", 10, "one more");
    let sg = n.store.storage_group("SG1").unwrap();

    let overwrite = RestoreTarget::Original { allow_overwrite: true };
    let err = restore_to(&n, full.set.id, overwrite, false).unwrap_err();
    assert!(matches!(err, RequesterError::RestoreRefused(_)), "{err}");
    assert!(err.to_string().contains("does not hold DB2"), "{err}");
    assert!(sg.is_mounted(), "refused before dismounting");

    sg.dismount(false).unwrap();
    let before = original_tree(&n);
    let err = restore_to(&n, full.set.id, IN_PLACE, false).unwrap_err().to_string();
    assert!(err.contains("DB2") && err.contains("point-in-time"), "{err}");
    assert!(original_tree(&n) == before, "the target is as it was");
    sg.mount().unwrap();
    assert_eq!(sg.mail("DB1").unwrap().list("a", "Inbox").unwrap().len(), 40);
}

/// The log swap is part of the all-or-none placement: a failure moving the database into
/// place (after the live logs were set aside) or moving a restored generation into the log
/// directory (after the database was placed) puts every database, log and checkpoint back.
#[test]
fn a_failure_during_the_log_swap_puts_databases_logs_and_checkpoint_back() {
    let dir = tempfile::tempdir().unwrap();
    let n = common::node_with(dir, &["DB1"]);
    deliver(&n, "DB1", 40, "before");
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    deliver(&n, "DB1", 40, "after");
    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(false).unwrap();
    let before = original_tree(&n);
    let eio = volume::fault::FaultKind::Eio;

    n.db_faults.as_ref().unwrap().fail_rename_onto("SG1/DB1.edb", eio);
    let err = restore_to(&n, full.set.id, IN_PLACE, false).unwrap_err().to_string();
    assert!(err.contains("DB1.edb") && err.contains("injected"), "{err}");
    assert!(original_tree(&n) == before, "databases, logs and checkpoint as they were: {err}");

    let last = ese::logfmt::generation_name("E00", *generations(&full.set).last().unwrap());
    n.logs_faults.as_ref().unwrap().fail_rename_onto(format!("SG1/logs/{last}"), eio);
    let err = restore_to(&n, full.set.id, IN_PLACE, false).unwrap_err().to_string();
    assert!(err.contains(&last) && err.contains("injected"), "{err}");
    assert!(original_tree(&n) == before, "databases, logs and checkpoint as they were: {err}");

    sg.mount().unwrap();
    assert_eq!(sg.mail("DB1").unwrap().list("a", "Inbox").unwrap().len(), 80, "nothing lost");
    sg.dismount(false).unwrap();
    restore_to(&n, full.set.id, IN_PLACE, false).unwrap();
    assert_eq!(sg.mail("DB1").unwrap().list("a", "Inbox").unwrap().len(), 40, "point in time");
}

/// Rolling forward into an alternate directory while the store is mounted and under load:
/// every operation acknowledged before the restore started is there, the store keeps taking
/// mail, and its log directory loses and changes no closed generation.
#[test]
fn an_alternate_restore_rolls_forward_through_a_mounted_storage_groups_logs_under_load() {
    let n = common::node();
    let sg = n.store.storage_group("SG1").unwrap();
    let load = mail_load(&sg, 43);
    wait_for(&load, 60);
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    wait_for(&load, 80);
    let live_before = closed_logs(&n);
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let started = load.acknowledged();
    let target = RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("rf") };
    let report = restore_to(&n, full.set.id, target, true).unwrap();
    let returned = load.acknowledged();
    wait_for(&load, 10);
    let ledger = load.stop();
    assert_eq!(ledger.errors, 0, "the store kept taking mail: {:?}", ledger.last_error);

    let live_after = closed_logs(&n);
    for (g, bytes) in &live_before {
        assert!(live_after.get(g) == Some(bytes), "generation {g:#X} kept, unchanged");
    }
    let names: Vec<String> =
        n.logs.read_dir(Path::new("SG1/logs")).unwrap().into_iter().map(|e| e.name).collect();
    assert!(names.iter().all(|n| !n.starts_with(".restore-")), "{names:?}");
    let last = *generations(&full.set).last().unwrap();
    assert!(report.recovery.generations.last().unwrap() > &(last + 1), "rolled forward");
    assert!(report.superseded_logs.is_none());

    let (_inst, restored) = open_alternate(alt, Path::new("rf"));
    let cut = cut_of(&ledger, &restored);
    assert!(
        (started..=returned).contains(&cut),
        "everything acknowledged before the restore started ({started}) is there, cut {cut}"
    );
}

/// A dismounted storage group holds its tail in the current log file: rolling forward into
/// an alternate directory takes it too, and the live files are not touched at all.
#[test]
fn an_alternate_restore_rolls_forward_through_a_dismounted_storage_groups_logs() {
    let n = common::node();
    let a = loaded(&n, 40, 44);
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let b = loaded(&n, 60, 45);
    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(false).unwrap();
    let before = original_tree(&n);
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let target = RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("rf") };
    let report = restore_to(&n, full.set.id, target, true).unwrap();
    assert!(original_tree(&n) == before, "the live files are untouched");
    let tail = *closed_logs(&n).keys().last().unwrap() + 1;
    assert_eq!(report.recovery.generations.last(), Some(&tail), "through the current log");
    assert!(alt.exists(Path::new("rf/logs/E00.log")).unwrap());
    let (_inst, restored) = open_alternate(alt, Path::new("rf"));
    for ledger in [&a, &b] {
        ledger.verify(&restored, u64::MAX).unwrap();
    }
}

/// A later full backup truncated the generations after the chosen set's: roll-forward cannot
/// cross the gap, and says which generation is missing; the alternate directory stays empty.
#[test]
fn an_alternate_roll_forward_across_a_gap_names_the_missing_generation() {
    let n = common::node();
    loaded(&n, 40, 46);
    let first = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    loaded(&n, 60, 47);
    n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let missing = *generations(&first.set).last().unwrap() + 1;
    assert!(!closed_logs(&n).contains_key(&missing), "the second full truncated it");
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let target = RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("gap") };
    let err = restore_to(&n, first.set.id, target, true).unwrap_err();
    assert!(matches!(err, RequesterError::RestoreFailed(_)), "{err}");
    let name = ese::logfmt::generation_name("E00", missing);
    assert!(err.to_string().contains(&name), "names {name}: {err}");
    let left = alt.read_dir(Path::new("gap")).map(|e| e.len()).unwrap_or(0);
    assert_eq!(left, 0, "nothing left in the target");
}

/// An incremental after the chosen full truncated the generations that follow it from the log
/// directory: rolling the full forward takes them from the incremental's set, then continues
/// through the live logs, at either target.
#[test]
fn a_roll_forward_takes_the_generations_a_later_incremental_truncated_from_the_repository() {
    let n = common::node();
    let a = loaded(&n, 40, 50);
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let b = loaded(&n, 60, 51);
    let sg = n.store.storage_group("SG1").unwrap();
    // Everything delivered so far is in the database file: the incremental may truncate every
    // generation it backs up.
    sg.instance().unwrap().checkpoint_now().unwrap();
    let inc = n.requester.backup(&req(BackupType::Incremental), &Quiet).unwrap();
    let c = loaded(&n, 30, 52);
    let after = *generations(&full.set).last().unwrap() + 1;
    assert!(!closed_logs(&n).contains_key(&after), "the incremental truncated {after:#X}");
    assert!(generations(&inc.set).contains(&after), "the incremental holds {after:#X}");

    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let target = RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("rf") };
    let report = restore_to(&n, full.set.id, target, true).unwrap();
    assert!(report.recovery.generations.contains(&after), "{:?}", report.recovery);
    let (_inst, restored) = open_alternate(alt, Path::new("rf"));
    for ledger in [&a, &b, &c] {
        ledger.verify(&restored, u64::MAX).unwrap();
    }

    sg.dismount(false).unwrap();
    restore_to(&n, full.set.id, IN_PLACE, true).unwrap();
    let live = sg.mail("DB1").unwrap();
    for ledger in [&a, &b, &c] {
        ledger.verify(&live, u64::MAX).unwrap();
    }
}

/// After a point-in-time restore over the original location, the new log stream reuses the
/// generation numbers (and signature) of the superseded one: rolling a later backup forward
/// through it would mix two histories, so it is refused, naming the generation that differs.
#[test]
fn an_alternate_roll_forward_refuses_a_log_stream_rewound_since_the_backup() {
    let n = common::node();
    loaded(&n, 40, 48);
    let first = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    loaded(&n, 40, 49);
    let second = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    n.store.storage_group("SG1").unwrap().dismount(false).unwrap();
    restore_to(&n, first.set.id, IN_PLACE, false).unwrap();
    // The new stream runs past the second full's last generation.
    let last = *generations(&second.set).last().unwrap();
    common::wait_until(&format!("the new stream to close generation {:#X}", last + 1), || {
        closed_logs(&n).contains_key(&(last + 1)) || {
            deliver(&n, "DB1", 10, "new stream");
            false
        }
    });
    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let target = RestoreTarget::Alternate { fs: alt.clone(), dir: PathBuf::from("mixed") };
    let err = restore_to(&n, second.set.id, target, true).unwrap_err();
    let name = ese::logfmt::generation_name("E00", last);
    assert!(err.to_string().contains(&name) && err.to_string().contains("rewound"), "{err}");
    let left = alt.read_dir(Path::new("mixed")).map(|e| e.len()).unwrap_or(0);
    assert_eq!(left, 0, "nothing left in the target");

    // Over the original location too: recovery would roll through the new stream.
    let sg = n.store.storage_group("SG1").unwrap();
    sg.dismount(false).unwrap();
    let before = original_tree(&n);
    let err = restore_to(&n, second.set.id, IN_PLACE, true).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("rewound"), "{err}");
    assert!(original_tree(&n) == before, "the target is as it was");
    sg.mount().unwrap();
}

/// Every `.edb` file under `dir` on the host, with its permission bits.
fn edb_modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            out.extend(edb_modes(&e.path()));
        } else if e.path().extension().is_some_and(|x| x == "edb") {
            out.push((e.path(), m.permissions().mode() & 0o7777));
        }
    }
    out
}

/// A backup records each file's mode as the snapshot saw it, and a restore (alternate and in
/// place) gives the file back that mode, not the mode the file happens to be created with.
#[test]
fn a_restore_gives_files_the_mode_recorded_in_the_backup() {
    let n = common::node_on_shadow_volumes();
    loaded(&n, 10, 41);
    n.db.set_mode(Path::new("SG1/DB1.edb"), 0o640).unwrap();
    let full = n.requester.backup(&req(BackupType::Full), &Quiet).unwrap();
    let db = full.set.files.iter().find(|f| f.role == FileRole::Database).unwrap();
    assert_eq!(db.mode, Some(0o640), "the manifest records the database's mode");
    assert!(full.set.files.iter().all(|f| f.mode.is_some()), "every file's mode is recorded");

    let alt: FsRef = Arc::new(HostFs::new(n.dir.path().join("alt")).unwrap());
    let request = RestoreRequest {
        set: full.set.id.to_string(),
        target: RestoreTarget::Alternate { fs: alt, dir: PathBuf::from("fresh") },
        roll_forward: false,
    };
    restorer(&n).restore(&request, &Quiet).unwrap();
    let restored = edb_modes(&n.dir.path().join("alt/fresh"));
    assert_eq!(restored.len(), 1, "one database restored: {restored:?}");
    assert_eq!(restored[0].1, 0o640, "{restored:?}");

    // In place: the live file's mode changed since the backup; the restore puts it back.
    n.db.set_mode(Path::new("SG1/DB1.edb"), 0o600).unwrap();
    n.store.storage_group("SG1").unwrap().dismount(false).unwrap();
    restore_original(&n, full.set.id, false).unwrap();
    assert_eq!(n.db.metadata(Path::new("SG1/DB1.edb")).unwrap().mode, 0o640);
}
