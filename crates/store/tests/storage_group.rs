//! A storage group with two databases: one log stream, two database files on their own
//! volumes, independent mail; and the administrative actions a backup in progress refuses.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Rig, coordinator, finish, headers, prepared, sg_def, vol};
use ese::Durability;
use store::StoreError;
use volume::FileSystem;
use volume::mem::MemFs;
use vss::BackupType;

struct Disks {
    logs: MemFs,
    db1: MemFs,
    db2: MemFs,
}

fn disks() -> Disks {
    Disks { logs: MemFs::new(), db1: MemFs::new(), db2: MemFs::new() }
}

fn two_databases(d: &Disks) -> store::StorageGroupDef {
    sg_def("SG1", vol("logs", &d.logs), &["DB1", "DB2"], &[vol("db1", &d.db1), vol("db2", &d.db2)])
}

#[test]
fn two_databases_mount_together_and_keep_their_mail_apart() {
    let d = disks();
    let rig = Rig::start(two_databases(&d));
    // Each database file lives on its own volume; the logs on theirs.
    assert!(d.db1.exists(Path::new("SG1/DB1.edb")).unwrap());
    assert!(!d.db1.exists(Path::new("SG1/DB2.edb")).unwrap());
    assert!(d.db2.exists(Path::new("SG1/DB2.edb")).unwrap());
    assert!(d.logs.exists(Path::new("SG1/logs/E00.log")).unwrap());
    assert!(!d.db1.exists(Path::new("SG1/logs")).unwrap());

    let (db1, db2) = (rig.db("DB1"), rig.db("DB2"));
    db1.create_mailbox("alice").unwrap();
    db2.create_mailbox("alice").unwrap();
    db1.create_mailbox("bob").unwrap();
    let a1 =
        db1.deliver("alice", "Inbox", headers("alice", 1), b"one", Durability::Durable).unwrap();
    let a2 = db2.deliver("alice", "Inbox", headers("alice", 2), b"two", Durability::Lazy).unwrap();
    // Ids are per database: both databases start from the same first id.
    assert_eq!(a1, a2);
    assert_eq!(db1.read("alice", a1).unwrap().1.body, b"one");
    assert_eq!(db2.read("alice", a2).unwrap().1.body, b"two");
    let b1 = db1.deliver("bob", "Inbox", headers("bob", 3), b"three", Durability::Durable).unwrap();
    assert!(matches!(
        db2.deliver("bob", "Inbox", headers("bob", 4), b"x", Durability::Durable),
        Err(StoreError::NoSuchMailbox(_))
    ));
    assert!(matches!(db2.read("bob", b1), Err(StoreError::NoSuchMessage { .. })));
    assert_eq!(db2.mailboxes().unwrap(), ["alice"]);
    db1.move_message("alice", a1, "Deleted Items").unwrap();
    assert_eq!(db2.read("alice", a2).unwrap().0, "Inbox", "a move in DB1 leaves DB2 alone");
    assert!(db2.delete("alice", a2).unwrap());
    assert!(db1.read("alice", a1).is_ok(), "a delete in DB2 leaves DB1 alone");
    assert!(matches!(rig.sg.mail("DB3"), Err(StoreError::NoSuchDatabase { .. })));

    let before = (common::read_contents(&rig.db("DB1")), common::read_contents(&rig.db("DB2")));
    drop((db1, db2));
    rig.sg.dismount(false).unwrap();
    assert!(matches!(rig.sg.mail("DB1"), Err(StoreError::NotMounted(_))));
    rig.sg.mount().unwrap();
    let after = (common::read_contents(&rig.db("DB1")), common::read_contents(&rig.db("DB2")));
    assert_eq!(before, after);
    assert_eq!(after.0.messages.len(), 2);
    assert!(after.1.messages.is_empty());
    // Both databases share the storage group's single log stream.
    let inst = rig.sg.instance().unwrap();
    let mut names = inst.databases();
    names.sort();
    assert_eq!(names, ["DB1", "DB2"]);
}

#[test]
fn a_backup_in_progress_refuses_dismount_and_removal_until_it_ends() {
    let d = disks();
    let rig = Rig::start(two_databases(&d));
    rig.db("DB1").create_mailbox("alice").unwrap();
    let coord = coordinator(&rig, &[("logs", &d.logs), ("db1", &d.db1), ("db2", &d.db2)]);
    let (mut session, _) = prepared(&coord, BackupType::Full);
    let job = session.job();
    assert_eq!(rig.sg.backup_in_progress(), Some(job));

    let refused = |r: Result<(), StoreError>, action: &str| {
        let e = r.expect_err("refused during the backup");
        assert!(
            matches!(&e, StoreError::BackupInProgress { job: j, .. } if *j == job),
            "{action}: {e}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&job.to_string()) && msg.contains("SG1"), "{msg}");
    };
    refused(rig.sg.dismount(false), "dismount");
    refused(rig.sg.dismount_sealed().map(|_| ()), "sealed dismount");
    refused(rig.store.remove_storage_group("SG1"), "remove the storage group");
    refused(rig.sg.remove_database("DB2", true).map(|_| ()), "remove a database");
    // Refused means untouched: still mounted, still defined, mail still flowing.
    assert!(rig.sg.is_mounted());
    assert!(rig.store.storage_group("SG1").is_ok());
    assert_eq!(rig.sg.def().databases.len(), 2);
    assert!(d.db2.exists(Path::new("SG1/DB2.edb")).unwrap());
    rig.db("DB1")
        .deliver("alice", "Inbox", headers("alice", 1), b"during", Durability::Durable)
        .unwrap();

    session.abort("the test gave up").unwrap();
    session.shutdown();
    assert_eq!(rig.sg.backup_in_progress(), None, "the job's end releases the storage group");
    rig.sg.dismount(false).unwrap();
    rig.store.remove_storage_group("SG1").unwrap();
    assert!(matches!(rig.store.storage_group("SG1"), Err(StoreError::NoSuchStorageGroup(_))));
}

#[test]
fn a_completed_backup_releases_the_storage_group() {
    let d = disks();
    let rig = Rig::start(two_databases(&d));
    let coord = coordinator(&rig, &[("logs", &d.logs), ("db1", &d.db1), ("db2", &d.db2)]);
    let (session, components) = prepared(&coord, BackupType::Full);
    assert!(rig.sg.dismount(false).is_err());
    finish(session, &components, true);
    assert_eq!(rig.sg.backup_in_progress(), None);
    // Both databases' headers carry the full backup.
    let inst = rig.sg.instance().unwrap();
    for db in ["DB1", "DB2"] {
        assert!(inst.database_header(db).unwrap().previous_full.is_some(), "{db}");
    }
    drop(inst);
    rig.sg.dismount(false).unwrap();
}

/// A dismount forced during a backup does not end the job (its requester may still be
/// copying the files), so removing a database stays refused until the job ends.
#[test]
fn removing_a_database_stays_refused_after_a_forced_dismount_until_the_job_ends() {
    let d = disks();
    let rig = Rig::start(two_databases(&d));
    let coord = coordinator(&rig, &[("logs", &d.logs), ("db1", &d.db1), ("db2", &d.db2)]);
    let (mut session, _) = prepared(&coord, BackupType::Full);
    let job = session.job();
    rig.sg.dismount(true).unwrap();
    let e = rig.sg.remove_database("DB2", false).unwrap_err();
    assert!(matches!(&e, StoreError::BackupInProgress { job: j, .. } if *j == job), "{e}");
    assert!(e.to_string().contains("removing database \"DB2\""), "{e}");
    session.abort("the storage group went away").unwrap();
    session.shutdown();
    assert_eq!(rig.sg.backup_in_progress(), None);
    rig.sg.remove_database("DB2", false).unwrap();
}

#[test]
fn a_removed_database_leaves_the_storage_group_and_its_file_stays_unless_asked() {
    let d = disks();
    let rig = Rig::start(two_databases(&d));
    let db1 = rig.db("DB1");
    db1.create_mailbox("alice").unwrap();
    let id =
        db1.deliver("alice", "Inbox", headers("alice", 1), b"kept", Durability::Durable).unwrap();
    rig.db("DB2").create_mailbox("bob").unwrap();
    drop(db1);

    // Only from a dismounted storage group.
    let e = rig.sg.remove_database("DB2", false).unwrap_err();
    assert!(matches!(e, StoreError::MustBeDismounted { .. }), "{e}");
    assert!(e.to_string().contains("dismount"), "{e}");
    assert!(rig.db("DB2").mailboxes().is_ok(), "refused means untouched");
    rig.sg.dismount(false).unwrap();
    assert!(matches!(rig.sg.remove_database("DB9", false), Err(StoreError::NoSuchDatabase { .. })));

    let removed = rig.sg.remove_database("DB2", false).unwrap();
    assert_eq!((removed.name.as_str(), removed.volume.label.as_str()), ("DB2", "db2"));
    assert_eq!(rig.sg.def().databases.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["DB1"]);
    // The file is kept, cleanly shut down, so it can be attached elsewhere.
    let header = ese::inspect::dump_database_header(&d.db2, Path::new("SG1/DB2.edb")).unwrap();
    assert_eq!(header.state, ese::DbState::CleanShutdown);

    rig.sg.mount().unwrap();
    assert_eq!(rig.sg.instance().unwrap().databases(), ["DB1"]);
    assert!(matches!(rig.sg.mail("DB2"), Err(StoreError::NoSuchDatabase { .. })));
    assert_eq!(rig.db("DB1").read("alice", id).unwrap().1.body, b"kept");

    // Backups now cover the one database left: its components are DB1 and the logs, and
    // a full backup of "every database" truncates.
    let coord = coordinator(&rig, &[("logs", &d.logs), ("db1", &d.db1), ("db2", &d.db2)]);
    let (session, components) = prepared(&coord, BackupType::Full);
    let mut names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["DB1", store::writer::LOG_COMPONENT]);
    let job = session.job();
    finish(session, &components, true);
    let trail = common::trail(&rig, job);
    assert!(trail.contains(&2006) && !trail.contains(&2007), "{trail:?}");

    // Soft recovery after a crash needs nothing of the removed database.
    rig.db("DB1")
        .deliver("alice", "Inbox", headers("alice", 2), b"after", Durability::Durable)
        .unwrap();
    for fs in [&d.logs, &d.db1, &d.db2] {
        fs.crash();
    }
    drop(rig);
    let rig = Rig::start(sg_def("SG1", vol("logs", &d.logs), &["DB1"], &[vol("db1", &d.db1)]));
    let mail = common::read_contents(&rig.db("DB1"));
    assert_eq!(mail.messages.len(), 2);

    // Asked to, removal deletes the file too.
    rig.sg.dismount(false).unwrap();
    rig.sg.remove_database("DB1", true).unwrap();
    assert!(!d.db1.exists(Path::new("SG1/DB1.edb")).unwrap());
    assert!(rig.sg.def().databases.is_empty());
}

#[test]
fn a_sealed_dismount_leaves_every_commit_in_closed_generations() {
    let d = disks();
    let rig = Rig::start(two_databases(&d));
    let db1 = rig.db("DB1");
    db1.create_mailbox("alice").unwrap();
    db1.deliver("alice", "Inbox", headers("alice", 1), b"last", Durability::Durable).unwrap();
    drop(db1);
    let g = rig.sg.dismount_sealed().unwrap();
    assert!(!rig.sg.is_mounted());
    assert!(matches!(rig.sg.dismount_sealed(), Err(StoreError::NotMounted(_))));
    // G is closed under its own name, and the current log (G+1) holds no record.
    let logs = Path::new("SG1/logs");
    assert!(d.logs.exists(&logs.join(ese::logfmt::generation_name("E00", g))).unwrap());
    let cur = volume::fs::read_all(&d.logs, &logs.join("E00.log")).unwrap();
    let h = ese::logfmt::LogHeader::decode(&cur[..4096]).unwrap();
    assert_eq!(h.generation, g + 1);
    let scan = ese::logfmt::scan(g + 1, &cur, 0);
    assert!(scan.records.is_empty(), "{:?}", scan.how);
    rig.sg.mount().unwrap();
    let c = common::read_contents(&rig.db("DB1"));
    assert_eq!(c.messages.len(), 1);
}

/// Counts the durable commits it was asked about.
#[derive(Default)]
struct CountingGate(std::sync::atomic::AtomicU64);

impl ese::CommitGate for CountingGate {
    fn replicated(&self, _durable_to: ese::Lsn) -> Result<(), String> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn a_commit_gate_set_before_mounting_holds_the_first_commit_and_every_remount() {
    let fs = MemFs::new();
    let events = std::sync::Arc::new(events::MemorySink::new("node1"));
    let store = store::InformationStore::new("node1", events);
    let sg = store.add_storage_group(common::single(&fs)).unwrap();
    let gate = std::sync::Arc::new(CountingGate::default());
    sg.set_commit_gate(Some(gate.clone()));
    let count = || gate.0.load(std::sync::atomic::Ordering::SeqCst);
    for round in 0..2u64 {
        sg.mount().unwrap();
        let db = sg.mail("DB1").unwrap();
        if round == 0 {
            db.create_mailbox("alice").unwrap();
        }
        let before = count();
        db.deliver("alice", "Inbox", headers("alice", round), b"hello", Durability::Durable)
            .unwrap();
        assert!(count() > before, "round {round}: the commit did not wait for the gate");
        sg.dismount(false).unwrap();
    }
}
