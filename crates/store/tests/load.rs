//! The load generator's ledger is the proof tests rely on after a crash or a restore, so it
//! must hold exactly what the store acknowledged: every acknowledged delivery and deletion,
//! nothing that failed, each with its own place in the order of acknowledgement.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Rig, read_contents, single};
use store::load::{LoadConfig, LoadGenerator};
use volume::mem::MemFs;

/// Polls until `done` holds; fails naming `what` if it does not within a minute (a deadline,
/// not a timing assertion: the load normally gets there in well under a second).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out after 60 s waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// (mailbox, id) → body hash of every message the database holds.
fn held(db: &store::MailDb) -> BTreeMap<(String, u64), blake3::Hash> {
    read_contents(db).messages.into_iter().map(|(k, s)| (k, s.hash)).collect()
}

#[test]
fn the_ledger_holds_exactly_the_acknowledged_operations() {
    let fs = MemFs::new();
    let rig = Rig::start(single(&fs));
    let cfg = LoadConfig {
        mailboxes: 3,
        body_min: 50,
        body_max: 6000,
        read_ratio: 0.2,
        delete_ratio: 0.2,
        seed: 11,
        max_deliveries: Some(150),
        ..LoadConfig::default()
    };
    let load = LoadGenerator::start(rig.db("DB1"), cfg).unwrap();
    wait_until("the load to finish its deliveries", || load.finished());
    let ledger = load.stop();
    assert_eq!(ledger.errors, 0, "{:?}", ledger.last_error);
    assert_eq!(ledger.delivered.len(), 150);
    assert!(!ledger.deleted.is_empty() && ledger.reads_checked > 0, "{ledger:?}");

    // Every acknowledgement has its own sequence number, none skipped.
    let mut seqs: Vec<u64> =
        ledger.delivered.values().map(|d| d.seq).chain(ledger.deleted.values().copied()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    for (k, s) in &ledger.deleted {
        assert!(ledger.delivered[k].seq < *s, "{k:?} deleted before it was delivered");
    }

    // The database holds exactly the expected messages, with their bodies.
    let db = rig.db("DB1");
    let want: BTreeMap<(String, u64), blake3::Hash> =
        ledger.expected(u64::MAX).into_iter().map(|(k, d)| (k, d.body_hash)).collect();
    assert_eq!(held(&db), want);
    assert_eq!(ledger.verify(&db, u64::MAX), Ok(want.len() as u64));

    // `verify` at an earlier point expects the messages deleted since: the final database
    // lacks them, and verify says which.
    let (gone, deleted_at) = ledger.deleted.iter().next().map(|(k, s)| (k.clone(), *s)).unwrap();
    let err = ledger.verify(&db, deleted_at - 1).unwrap_err();
    assert!(err.contains("missing"), "{err}");
    // A message lost behind the ledger's back is found and named.
    let (victim, _) = want.iter().next().map(|(k, h)| (k.clone(), *h)).unwrap();
    assert!(db.delete(&victim.0, victim.1).unwrap());
    let err = ledger.verify(&db, u64::MAX).unwrap_err();
    assert!(err.contains(&format!("message {} of {}", victim.1, victim.0)), "{err}");
    assert_ne!(gone, victim);
}

/// A power loss in the middle of the load: afterwards every delivery the ledger holds is
/// there byte for byte; the operations that failed are counted as errors, not acknowledged,
/// and at most the one delivery in flight at the crash is present without an
/// acknowledgement.
#[test]
fn acknowledged_deliveries_survive_a_crash_under_load() {
    let fs = MemFs::new();
    let rig = Rig::start(single(&fs));
    let cfg = LoadConfig {
        mailboxes: 4,
        body_min: 100,
        body_max: 20_000,
        read_ratio: 0.1,
        // Deletions in flight at the crash may or may not happen, which `verify` cannot
        // tell from a lost message; deliveries alone make the check exact.
        delete_ratio: 0.0,
        seed: 5,
        max_deliveries: None,
        ..LoadConfig::default()
    };
    let load = LoadGenerator::start(rig.db("DB1"), cfg).unwrap();
    wait_until("40 acknowledged deliveries", || load.acknowledged() >= 40);
    // The crash fires at the next write of the store (the load's or the lazy writer's).
    fs.crash_after(1);
    wait_until("the load to see an error after the crash", || load.ledger().errors > 0);
    let ledger = load.stop();
    assert!(!fs.crash_pending(), "the crash happened");
    drop(rig);

    let rig = Rig::start(single(&fs));
    let db = rig.db("DB1");
    let n = ledger.delivered.len() as u64;
    assert!(n >= 40);
    assert_eq!(ledger.verify(&db, u64::MAX), Ok(n));
    let on_disk = held(&db);
    let unacknowledged: Vec<_> =
        on_disk.keys().filter(|k| !ledger.delivered.contains_key(*k)).collect();
    assert!(unacknowledged.len() <= 1, "unacknowledged deliveries present: {unacknowledged:?}");
}
