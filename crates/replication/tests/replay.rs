//! A passive copy fed by an active ese instance: seeded from a frozen copy of the database,
//! generations shipped one by one, replayed, and compared with the active's content at the
//! same generation. Restarts (the replayer dropped without any close) and injected failures
//! in the middle of an apply resume from the passive checkpoint and end identical.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Active, PREFIX, Rows};
use ese::logfmt;
use replication::{InspectError, ReplayError, Replayer};
use volume::fault::{FaultInjector, FaultKind};
use volume::mem::MemFs;
use volume::{FsRef, OpenMode};

fn new_fs() -> FsRef {
    Arc::new(MemFs::new())
}

/// Ships every closed generation of the active not shipped yet; returns the highest.
fn ship_all(a: &Active, passive: &FsRef, shipped: &mut u32) -> u32 {
    for g in a.closed() {
        if g > *shipped {
            a.ship(g, passive);
            *shipped = g;
        }
    }
    *shipped
}

/// The active's rows read through a read transaction (checks the model the tests keep).
fn active_rows(a: &Active) -> Rows {
    let r = a.inst.begin_read().unwrap();
    let mut c = r.cursor(common::DB, common::T).unwrap();
    c.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

fn inbox_generations(fs: &FsRef) -> Vec<u32> {
    let mut v: Vec<u32> = fs
        .read_dir(Path::new("inbox"))
        .unwrap()
        .into_iter()
        .filter_map(|e| logfmt::parse_generation_name(PREFIX, &e.name))
        .collect();
    v.sort();
    v
}

#[test]
fn the_passive_follows_the_active_generation_by_generation() {
    let mut a = Active::new();
    a.write(10);
    let passive = new_fs();
    let seeded = a.seed(&passive);
    let mut shipped = 0;
    ship_all(&a, &passive, &mut shipped);
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    r.catch_up().unwrap();
    assert_eq!(r.replayed_generation(), seeded);
    assert_eq!(common::passive_rows(&passive), a.at[&seeded], "content at the seed's generation");
    for round in 0..5 {
        a.write(25 + round * 10);
        let g = a.roll();
        ship_all(&a, &passive, &mut shipped);
        assert_ne!(common::passive_rows(&passive), a.at[&g], "not replayed yet");
        let reports = r.catch_up().unwrap();
        assert!(reports.iter().all(|x| x.applied));
        assert_eq!(r.replayed_generation(), g);
        assert_eq!(common::passive_rows(&passive), a.at[&g], "content at generation {g:#X}");
        // The inbox keeps only what a later replay still reads.
        assert!(
            inbox_generations(&passive)
                .iter()
                .all(|x| *x >= r.passive().oldest_needed_generation()),
            "{:?}",
            inbox_generations(&passive)
        );
    }
    assert_eq!(active_rows(&a), a.rows);
    // The passive headers still say dirty shutdown with the range a later replay needs.
    for h in r.passive().headers() {
        assert_eq!(h.state, ese::DbState::DirtyShutdown);
        assert_eq!(h.min_required, r.passive().state().replay_from);
    }
}

#[test]
fn a_transaction_spanning_generations_is_applied_once_its_commit_arrives() {
    let mut a = Active::new();
    a.write(5);
    let passive = new_fs();
    let seeded = a.seed(&passive);
    let before = a.rows.clone();
    let mut shipped = 0;
    ship_all(&a, &passive, &mut shipped);
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    r.catch_up().unwrap();
    assert_eq!(r.replayed_generation(), seeded);
    a.write_big(120, 1500);
    let end = a.roll();
    assert!(end >= seeded + 3, "the big transaction should span generations (ended at {end:#X})");
    ship_all(&a, &passive, &mut shipped);
    let mut open_seen = 0;
    while let Some(rep) = r.step().unwrap() {
        let st = r.passive().state();
        if st.replay_from.generation() <= rep.generation {
            // Its commit is still ahead: nothing of it is visible, and the generation where
            // it began stays in the inbox for the next replay.
            open_seen += 1;
            assert_eq!(common::passive_rows(&passive), before, "after {:#X}", rep.generation);
            assert!(inbox_generations(&passive).contains(&st.replay_from.generation()));
            // A restart in the middle resumes from the transaction's begin.
            drop(r);
            r = Replayer::open(common::replayer_config(&passive)).unwrap();
            assert_eq!(r.passive().state(), st);
        }
    }
    assert!(open_seen >= 1, "no generation ended inside the transaction");
    assert_eq!(r.replayed_generation(), end);
    assert_eq!(common::passive_rows(&passive), a.at[&end]);
}

#[test]
fn a_dropped_replayer_resumes_from_its_checkpoint() {
    let mut a = Active::new();
    a.write(5);
    let passive = new_fs();
    a.seed(&passive);
    let mut shipped = 0;
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    a.write(60);
    let mid = a.roll();
    ship_all(&a, &passive, &mut shipped);
    r.catch_up().unwrap();
    assert_eq!(r.replayed_generation(), mid);
    let state = r.passive().state();
    drop(r);
    a.write(60);
    let end = a.roll();
    ship_all(&a, &passive, &mut shipped);
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    assert_eq!(r.passive().state(), state, "the reopened passive starts at its checkpoint");
    r.catch_up().unwrap();
    assert_eq!(r.replayed_generation(), end);
    assert_eq!(common::passive_rows(&passive), a.at[&end]);
    // Reopening again with nothing new applies nothing and changes nothing.
    drop(r);
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    assert!(r.catch_up().unwrap().is_empty());
    assert_eq!(common::passive_rows(&passive), a.at[&end]);
}

/// Copies every file of `from` (recursively) into a new MemFs, all of it durable.
fn clone_mem(from: &FsRef) -> MemFs {
    fn walk(from: &FsRef, to: &FsRef, dir: &Path) {
        for e in from.read_dir(dir).unwrap() {
            let p = dir.join(&e.name);
            if e.kind == volume::FileKind::Dir {
                to.create_dir_all(&p).unwrap();
                walk(from, to, &p);
            } else {
                common::copy(from, &p, to, &p);
            }
        }
        to.sync_dir(dir).unwrap();
    }
    let mem = MemFs::new();
    let to: FsRef = Arc::new(mem.clone());
    walk(from, &to, Path::new(""));
    mem
}

fn clone_fs(from: &FsRef) -> FsRef {
    Arc::new(clone_mem(from))
}

/// A seeded passive (its checkpoint already written) with 40 writes' worth of generations
/// shipped and not yet replayed: the image each fault test starts from, the generation the
/// replay must reach, and the rows the active had there.
fn shipped_backlog() -> (FsRef, u32, common::Rows) {
    let mut a = Active::new();
    a.write(5);
    let base = new_fs();
    a.seed(&base);
    // Open once so the passive checkpoint exists in the base image.
    drop(Replayer::open(common::replayer_config(&base)).unwrap());
    a.write(40);
    let end = a.roll();
    let mut shipped = 0;
    ship_all(&a, &base, &mut shipped);
    let expected = a.at[&end].clone();
    (base, end, expected)
}

#[test]
fn a_failure_at_any_point_of_an_apply_resumes_and_ends_identical() {
    let (base, end, expected) = shipped_backlog();
    let mut n = 1;
    let mut failures = 0;
    loop {
        let inner = clone_fs(&base);
        let fault = FaultInjector::new(inner.clone());
        let mut r = Replayer::open(common::replayer_config(&fault.as_ref())).unwrap();
        fault.fail_after(n, FaultKind::Eio);
        let outcome = r.catch_up();
        drop(r);
        let mut r = Replayer::open(common::replayer_config(&inner)).unwrap();
        r.catch_up().unwrap();
        assert_eq!(r.replayed_generation(), end, "after a failure at operation {n}");
        assert_eq!(common::passive_rows(&inner), expected, "after a failure at operation {n}");
        match outcome {
            Err(ReplayError::Engine(_) | ReplayError::Io { .. } | ReplayError::Inspect(_)) => {
                failures += 1;
            }
            Err(e) => panic!("unexpected error at operation {n}: {e}"),
            Ok(_) => break,
        }
        n += 3;
    }
    assert!(failures > 5, "only {failures} failure points were exercised");
}

#[test]
fn a_power_loss_at_any_point_of_an_apply_resumes_and_ends_identical() {
    power_loss_at_every_other_operation(false);
}

/// Torn writes: without the passive's page journal this fails (a page torn in place whose
/// only log change since the active's checkpoint is partial cannot be rebuilt from the log).
#[test]
fn a_power_loss_tearing_writes_during_an_apply_resumes_and_ends_identical() {
    power_loss_at_every_other_operation(true);
}

fn power_loss_at_every_other_operation(torn: bool) {
    let (base, end, expected) = shipped_backlog();
    let mut n = 1;
    let mut crashes = 0;
    loop {
        let mem = clone_mem(&base);
        let fs: FsRef = Arc::new(mem.clone());
        let mut r = Replayer::open(common::replayer_config(&fs)).unwrap();
        // A power loss: whatever was not synced is gone (or, torn, partly there), and the
        // handles die with it.
        if torn {
            mem.crash_after_torn(n, n);
        } else {
            mem.crash_after(n);
        }
        let outcome = r.catch_up();
        drop(r);
        let crashed = mem.crashes() > 0;
        if !crashed {
            outcome.unwrap();
            break;
        }
        crashes += 1;
        let mut r = Replayer::open(common::replayer_config(&fs)).unwrap();
        r.catch_up().unwrap();
        assert_eq!(r.replayed_generation(), end, "after a power loss at operation {n}");
        assert_eq!(common::passive_rows(&fs), expected, "after a power loss at operation {n}");
        n += 2;
    }
    assert!(crashes > 5, "only {crashes} crash points were exercised");
}

#[test]
fn a_damaged_shipment_stops_the_replayer_until_a_good_copy_arrives() {
    let mut a = Active::new();
    a.write(5);
    let passive = new_fs();
    a.seed(&passive);
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    let mut shipped = 0;
    ship_all(&a, &passive, &mut shipped);
    r.catch_up().unwrap();
    let before = r.passive().state();
    a.write(10);
    let g = a.roll();
    ship_all(&a, &passive, &mut shipped);
    let p = Path::new("inbox").join(logfmt::generation_name(PREFIX, g));
    let f = passive.open(&p, OpenMode::ReadWrite).unwrap();
    f.write_at(&[0xAB], u64::from(logfmt::LOG_HEADER_SIZE) + 30).unwrap();
    drop(f);
    let err = r.catch_up().unwrap_err();
    assert!(
        matches!(&err, ReplayError::Inspect(InspectError::Damaged { generation, .. }) if *generation == g),
        "{err}"
    );
    assert_eq!(r.passive().state(), before, "nothing was applied");
    a.ship(g, &passive);
    r.catch_up().unwrap();
    assert_eq!(r.replayed_generation(), g);
    assert_eq!(common::passive_rows(&passive), a.at[&g]);
}

/// Waits until `what` holds, failing with `waited_for` after a deadline.
fn wait_until(waited_for: &str, mut what: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !what() {
        assert!(Instant::now() < deadline, "timed out waiting for {waited_for}");
        std::thread::yield_now();
    }
}

#[test]
fn the_replayer_thread_applies_what_arrives_in_the_inbox() {
    let mut a = Active::new();
    a.write(5);
    let passive = new_fs();
    a.seed(&passive);
    let handle = Replayer::open(common::replayer_config(&passive))
        .unwrap()
        .spawn(Duration::from_millis(1))
        .unwrap();
    let mut shipped = 0;
    a.write(30);
    let g = a.roll();
    ship_all(&a, &passive, &mut shipped);
    let chk = common::passive_config(&passive).checkpoint_path;
    wait_until(&format!("the passive checkpoint to reach generation {g:#X}"), || {
        ese::replay::read_state(passive.as_ref(), &chk)
            .is_ok_and(|(_, s)| s.replayed_generation == g)
    });
    let r = handle.stop().unwrap();
    assert_eq!(r.replayed_generation(), g);
    assert_eq!(common::passive_rows(&passive), a.at[&g]);
}

mod interleavings {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write(usize),
        Roll,
        ShipOne,
        Step,
        Restart,
        /// A power loss at the n-th file system operation of a replay step (torn or not),
        /// then a restart.
        CrashDuringStep(u64, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1usize..25).prop_map(Op::Write),
            2 => Just(Op::Roll),
            3 => Just(Op::ShipOne),
            3 => Just(Op::Step),
            1 => Just(Op::Restart),
            1 => (1u64..80, any::<bool>()).prop_map(|(n, torn)| Op::CrashDuringStep(n, torn)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Whatever the order of writes, rolls, shipping, replay steps and restarts, the
        /// passive never runs ahead of what was shipped, a restart never loses or repeats
        /// progress, and once everything is shipped and replayed it equals the active.
        #[test]
        fn ship_replay_restart_in_any_order_ends_identical(ops in proptest::collection::vec(op(), 1..40)) {
            let mut a = Active::new();
            a.write(3);
            let mem = MemFs::new();
            let passive: FsRef = Arc::new(mem.clone());
            a.seed(&passive);
            let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
            let mut shipped = 0u32;
            for op in ops {
                match op {
                    Op::Write(n) => a.write(n),
                    Op::Roll => { a.roll(); }
                    Op::ShipOne => {
                        if let Some(g) = a.closed().into_iter().find(|g| *g > shipped) {
                            a.ship(g, &passive);
                            shipped = g;
                        }
                    }
                    Op::Step => {
                        let before = r.replayed_generation();
                        let did = r.step().unwrap();
                        prop_assert_eq!(did.is_some(), before < shipped);
                        prop_assert!(r.replayed_generation() <= shipped.max(before));
                    }
                    Op::Restart => {
                        let state = r.passive().state();
                        drop(r);
                        r = Replayer::open(common::replayer_config(&passive)).unwrap();
                        prop_assert_eq!(r.passive().state(), state);
                    }
                    Op::CrashDuringStep(n, torn) => {
                        let before = r.replayed_generation();
                        let crashes = mem.crashes();
                        if torn {
                            mem.crash_after_torn(n, n);
                        } else {
                            mem.crash_after(n);
                        }
                        let outcome = r.step();
                        if mem.crashes() == crashes {
                            // The step finished before its n-th operation: no crash.
                            mem.clear_faults();
                            outcome.unwrap();
                        }
                        drop(r);
                        r = Replayer::open(common::replayer_config(&passive)).unwrap();
                        let after = r.replayed_generation();
                        prop_assert!(after == before || after == before + 1, "{before:#X} -> {after:#X}");
                    }
                }
            }
            let g = a.roll();
            ship_all(&a, &passive, &mut shipped);
            r.catch_up().unwrap();
            prop_assert_eq!(r.replayed_generation(), g);
            prop_assert_eq!(common::passive_rows(&passive), a.at[&g].clone());
        }
    }
}

mod passive_api {
    use super::*;
    use ese::{EngineError, PassiveReplay};

    fn inbox(g: u32) -> std::path::PathBuf {
        Path::new("inbox").join(logfmt::generation_name(PREFIX, g))
    }

    #[test]
    fn a_clean_database_is_refused_as_a_seed() {
        let mut a = Active::new();
        a.write(3);
        a.inst.shutdown().unwrap();
        let passive = new_fs();
        common::copy(&a.fs, Path::new(common::DB_PATH), &passive, Path::new(common::DB_PATH));
        let err = PassiveReplay::open(common::passive_config(&passive)).unwrap_err();
        assert!(
            matches!(&err, EngineError::DatabaseMismatch { why, .. } if why.contains("clean")),
            "{err}"
        );
    }

    #[test]
    fn apply_refuses_a_gap_and_a_foreign_generation_and_skips_an_applied_one() {
        let mut a = Active::new();
        a.write(3);
        let passive = new_fs();
        let seeded = a.seed(&passive);
        for _ in 0..2 {
            a.write(5);
            a.roll();
        }
        let mut shipped = 0;
        ship_all(&a, &passive, &mut shipped);
        let mut p = PassiveReplay::open(common::passive_config(&passive)).unwrap();
        let start = p.replayed_generation() + 1;
        assert!(start <= seeded);
        let err = p.apply(&passive, &inbox(start + 1)).unwrap_err();
        assert!(matches!(&err, EngineError::LogGap { missing, .. } if *missing == start), "{err}");
        let rep = p.apply(&passive, &inbox(start)).unwrap();
        assert!(rep.applied && rep.generation == start);
        let again = p.apply(&passive, &inbox(start)).unwrap();
        assert!(!again.applied, "an applied generation is skipped");
        assert_eq!(p.replayed_generation(), start);
        // A generation of another stream under the expected name.
        let other = Active::new();
        other.inst.roll_log().unwrap();
        let data = volume::fs::read_all(other.fs.as_ref(), &Active::log_path(1)).unwrap();
        let foreign = Path::new("foreign").join(logfmt::generation_name(PREFIX, start + 1));
        passive.create_dir_all(Path::new("foreign")).unwrap();
        volume::fs::write_atomic(passive.as_ref(), &foreign, &data).unwrap();
        let err = p.apply(&passive, &foreign).unwrap_err();
        assert!(matches!(&err, EngineError::ForeignLog { .. }), "{err}");
        assert_eq!(p.replayed_generation(), start, "nothing applied");
    }
}

/// A reseed that leaves the previous copy's page journal behind (only the checkpoint and the
/// databases replaced) must not let that journal's images reach the new copy: a passive opened
/// without a checkpoint discards any journal beside it. Without that, the second open below
/// finds a valid journal "ahead" of the new checkpoint and writes the old stream's pages over
/// the new seed.
#[test]
fn a_reseeded_passive_never_takes_the_previous_copys_journal() {
    let passive = new_fs();
    // The first copy: stream A, replayed far (its journal ends at a high generation).
    let mut a = Active::new();
    a.write(5);
    a.seed(&passive);
    a.write(60);
    a.roll();
    let mut shipped = 0;
    ship_all(&a, &passive, &mut shipped);
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    r.catch_up().unwrap();
    let old_end = r.replayed_generation();
    drop(r);
    let jrn = Path::new("passive/E00.jrn");
    assert!(passive.exists(jrn).unwrap(), "the first copy left a journal");

    // The reseed, from stream B whose generations are far lower: new database, no checkpoint,
    // an empty inbox — the journal stays where it was.
    passive.remove_file(Path::new("passive/E00.pchk")).unwrap();
    for e in passive.read_dir(Path::new("inbox")).unwrap() {
        passive.remove_file(&Path::new("inbox").join(&e.name)).unwrap();
    }
    let mut b = Active::new();
    b.write(3);
    let seeded = b.seed(&passive);
    assert!(seeded < old_end, "stream B's seed ({seeded:#X}) is below A's end ({old_end:#X})");
    shipped = 0;
    ship_all(&b, &passive, &mut shipped);
    // Opened once (it writes its first checkpoint), then again, as a restarted copy does.
    drop(Replayer::open(common::replayer_config(&passive)).unwrap());
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    r.catch_up().unwrap();
    assert_eq!(r.replayed_generation(), seeded);
    assert!(
        common::passive_rows(&passive) == b.at[&seeded],
        "the new copy does not hold stream B's rows: the old journal reached it"
    );
}

/// Replay admitted only up to a generation (the copier's last durably admitted one) stops
/// there even when later generations are already in the inbox, and takes them once admitted.
#[test]
fn replay_goes_no_further_than_it_is_admitted() {
    let (passive, end, expected) = shipped_backlog();
    let mut r = Replayer::open(common::replayer_config(&passive)).unwrap();
    let start = r.replayed_generation();
    assert!(end > start + 2, "a backlog of several generations");
    let mid = start + 2;
    r.catch_up_until(mid).unwrap();
    assert_eq!(r.replayed_generation(), mid, "replay passed the admitted generation");
    assert!(r.catch_up_until(mid).unwrap().is_empty());
    r.catch_up_until(end).unwrap();
    assert_eq!(r.replayed_generation(), end);
    assert_eq!(common::passive_rows(&passive), expected);
}
