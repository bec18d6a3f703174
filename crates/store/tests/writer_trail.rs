//! The store writer's event trail through the real coordinator: every backup type that
//! succeeds leaves its step-9 event (224 logs deleted, or 225 and why not) before the
//! engine's 2006, and only full and incremental backups delete logs.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Rig, coordinator, finish, headers, prepared, single};
use ese::Durability;
use events::Event;
use volume::mem::MemFs;
use vss::BackupType;

/// Fills a few log generations (each is 128 KiB in these tests).
fn mail(rig: &Rig, n: u64, seed: u64) {
    let db = rig.db("DB1");
    if db.mailboxes().unwrap().is_empty() {
        db.create_mailbox("alice").unwrap();
    }
    for i in 0..n {
        let body = common::body(20_000, seed + i);
        db.deliver("alice", "Inbox", headers("alice", seed + i), &body, Durability::Durable)
            .unwrap();
    }
}

fn job_events(rig: &Rig, job: uuid::Uuid) -> Vec<Event> {
    rig.events.events().into_iter().filter(|e| e.job == Some(job)).collect()
}

/// Position of the first event `id` in the job's store/engine trail.
fn position(trail: &[u32], id: u32) -> usize {
    trail.iter().position(|i| *i == id).unwrap_or_else(|| panic!("no {id} in {trail:?}"))
}

/// Runs a successful backup of `kind`; returns its trail, its 225 reason if any, and the
/// log generations on disk before and after.
fn backup(
    rig: &Rig,
    coord: &common::Coord,
    kind: BackupType,
) -> (Vec<u32>, Option<String>, Vec<u32>, Vec<u32>) {
    let before = rig.sg.log_state().unwrap().generations;
    let (session, components) = prepared(coord, kind);
    let job = session.job();
    finish(session, &components, true);
    let after = rig.sg.log_state().unwrap().generations;
    let trail = common::trail(rig, job);
    let reason = job_events(rig, job).into_iter().find(|e| e.id == 225).map(|e| {
        assert!(
            e.message.matches("no log files can be truncated").count() == 1,
            "the reason repeats the template: {}",
            e.message
        );
        e.fields["reason"].as_str().unwrap().to_string()
    });
    (trail, reason, before, after)
}

#[test]
fn every_backup_type_leaves_its_step_9_event_before_2006() {
    let fs = MemFs::new();
    let rig = Rig::start(single(&fs));
    let coord = coordinator(&rig, &[("logs", &fs), ("db", &fs)]);

    mail(&rig, 30, 0);
    let (trail, _, before, after) = backup(&rig, &coord, BackupType::Full);
    assert!(position(&trail, 224) < position(&trail, 2006), "{trail:?}");
    assert!(after.first() > before.first(), "the full truncated: {before:?} → {after:?}");

    // Step 9 for the types that never truncate: 225 with the reason, before 2006, and every
    // generation that was there before is still there.
    for (kind, reason) in [
        (BackupType::Differential, "differential backups do not truncate logs"),
        (BackupType::Copy, "copy backups do not truncate logs"),
    ] {
        mail(&rig, 15, 1000);
        let (trail, got, before, after) = backup(&rig, &coord, kind);
        let ok = position(&trail, 225) < position(&trail, 2006);
        assert!(ok, "{kind:?}: {trail:?}");
        assert!(!trail.contains(&224) && !trail.contains(&2007), "{kind:?}: {trail:?}");
        assert_eq!(got.as_deref(), Some(reason), "{kind:?}");
        assert!(before.iter().all(|g| after.contains(g)), "{kind:?} deleted logs");
        // The whole trail, in the reference's order.
        let start = match kind {
            BackupType::Differential => 2010,
            _ => 2009,
        };
        let want = [9606, start, 9811, 9608, 2001, 2003, 9620, 9621, 225, 2006];
        let mut it = trail.iter();
        for w in want {
            assert!(it.any(|i| *i == w), "{kind:?}: {w} missing or out of order in {trail:?}");
        }
    }
    let h = rig.sg.instance().unwrap().database_header("DB1").unwrap();
    assert!(h.previous_full.is_some() && h.previous_differential.is_some());
    assert!(h.previous_copy.is_some());

    // An incremental truncates again (224, or 225 naming why nothing was old enough).
    mail(&rig, 15, 2000);
    let (trail, _, _, _) = backup(&rig, &coord, BackupType::Incremental);
    let step9 = trail.iter().position(|i| *i == 224 || *i == 225).expect("step 9");
    assert!(step9 < position(&trail, 2006), "{trail:?}");
}
