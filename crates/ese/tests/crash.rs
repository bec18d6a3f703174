//! Power-loss tests: random crash points (clean and torn), crash during recovery, and the
//! promise that every acknowledged durable commit survives and nothing uncommitted appears.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use ese::{Durability, Instance};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use volume::mem::MemFs;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn read_all(inst: &Instance) -> Model {
    all_rows(inst).into_iter().collect()
}

/// Runs a random workload until it finishes or an operation fails (the crash). Returns the
/// states recovery may legitimately produce: the last durably acknowledged one, every lazily
/// acknowledged one after it, and the one of the transaction in flight.
fn workload(inst: &Instance, seed: u64, txns: usize) -> (Vec<Model>, bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut candidates = vec![model.clone()];
    for n in 0..txns {
        let mut pending = model.clone();
        let r = (|| -> ese::Result<()> {
            let mut t = inst.begin_write()?;
            for _ in 0..rng.random_range(1..12) {
                let k = format!("k{:04}", rng.random_range(0..300u32)).into_bytes();
                if rng.random_bool(0.2) {
                    t.delete(DB, T, &k)?;
                    pending.remove(&k);
                } else {
                    let len = match rng.random_range(0..20) {
                        0 => rng.random_range(2000..20000),
                        _ => rng.random_range(1..300),
                    };
                    let v = value(rng.random(), len);
                    t.put(DB, T, &k, &v)?;
                    pending.insert(k, v);
                }
            }
            if rng.random_bool(0.1) {
                t.rollback();
                pending = model.clone();
                return Ok(());
            }
            let durable = rng.random_bool(0.7);
            candidates.push(pending.clone());
            t.commit(if durable { Durability::Durable } else { Durability::Lazy })?;
            if durable {
                candidates = vec![pending.clone()];
            }
            if n % 7 == 3 {
                inst.checkpoint_now()?;
            }
            if n % 13 == 5 {
                // A full backup with truncation in the middle of the load.
                let mut b = inst.backup_session(ese::BackupKind::Full)?;
                b.prepare()?;
                b.freeze()?;
                b.thaw()?;
                let gens = b.snapshot_generations().to_vec();
                b.truncate(&gens)?;
                b.end()?;
            }
            Ok(())
        })();
        model = pending;
        if r.is_err() {
            return (candidates, true);
        }
        if candidates.len() > 1 && candidates.last() != Some(&model) {
            candidates.push(model.clone());
        }
    }
    (candidates, false)
}

fn one_crash(point: u64, seed: u64, torn: bool, crash_in_recovery: bool) -> bool {
    let fs = MemFs::new();
    let inst = create(&fs);
    if torn {
        fs.crash_after_torn(point, seed);
    } else {
        fs.crash_after(point);
    }
    let (candidates, crashed) = workload(&inst, seed, 80);
    if !crashed {
        fs.crash();
    }
    drop(inst);
    fs.clear_faults();
    if crash_in_recovery {
        fs.crash_after(1 + seed % 40);
        let r = open(&fs);
        fs.clear_faults();
        if let Ok(inst) = r {
            // Recovery finished before the crash point: crash the running instance now.
            fs.crash();
            drop(inst);
        }
    }
    let inst = open(&fs).unwrap_or_else(|e| {
        panic!("recovery failed (point {point}, seed {seed}, torn {torn}): {e}")
    });
    let got = read_all(&inst);
    if !candidates.contains(&got) {
        let c = candidates.last().unwrap();
        for (k, v) in c {
            if got.get(k) != Some(v) {
                eprintln!(
                    "key {:?}: want len {} got {:?}",
                    String::from_utf8_lossy(k),
                    v.len(),
                    got.get(k).map(|v| v.len())
                );
            }
        }
        for k in got.keys() {
            if !c.contains_key(k) {
                eprintln!("extra key {:?}", String::from_utf8_lossy(k));
            }
        }
        eprintln!("crashed={crashed} recovery={:?}", inst.recovery_info());
    }
    assert!(
        candidates.contains(&got),
        "point {point} seed {seed} torn {torn}: recovered {} rows, candidates have {:?} rows",
        got.len(),
        candidates.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    // The recovered instance keeps working and survives another crash.
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"after", b"recovery").unwrap();
    t.commit(Durability::Durable).unwrap();
    fs.crash();
    drop(inst);
    let inst = open(&fs).unwrap();
    let mut want = got;
    want.insert(b"after".to_vec(), b"recovery".to_vec());
    assert_eq!(read_all(&inst), want);
    crashed
}

fn ops_of_workload(seed: u64) -> u64 {
    let fs = MemFs::new();
    let inst = create(&fs);
    let before = fs.op_count();
    workload(&inst, seed, 80);
    fs.op_count() - before
}

fn crash_points(n: usize, base_seed: u64) {
    let mut rng = StdRng::seed_from_u64(base_seed);
    let total = ops_of_workload(base_seed).max(10);
    let mut crashed = 0;
    for i in 0..n {
        let seed = rng.random();
        let point = rng.random_range(1..total);
        crashed += one_crash(point, seed, i % 2 == 1, i % 5 == 4) as usize;
    }
    // Most points fall inside the workload (the rest crash it after it finished).
    assert!(crashed * 2 >= n, "only {crashed} of {n} runs crashed mid-workload");
    eprintln!("{crashed} of {n} runs crashed mid-workload ({total} operations per workload)");
}

#[test]
fn random_crash_points_lose_no_acknowledged_commit() {
    let stress = std::env::var("SHADOWCOPY_STRESS").is_ok_and(|v| v == "1");
    crash_points(if stress { 3000 } else { 220 }, 0x5eed);
}

#[test]
fn torn_log_tail_is_detected_and_reported() {
    let fs = MemFs::new();
    let inst = create(&fs);
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"a", b"1").unwrap();
    t.commit(Durability::Durable).unwrap();
    drop(inst);
    // Scribble garbage after the last record of the current log, as a torn write would.
    let f = volume::FileSystem::open(
        &fs,
        std::path::Path::new("logs/E00.log"),
        volume::OpenMode::ReadWrite,
    )
    .unwrap();
    let dump = ese::inspect::dump_log(&fs, std::path::Path::new("logs/E00.log")).unwrap();
    let last: ese::Lsn = {
        let s = &dump.records.last().unwrap().lsn;
        let (g, o) = s.split_once(':').unwrap();
        ese::Lsn::new(u32::from_str_radix(g, 16).unwrap(), u32::from_str_radix(o, 16).unwrap())
    };
    f.write_at(&[0xAB; 300], last.offset() as u64 + 8).unwrap();
    f.sync().unwrap();
    drop(f);
    let inst = open(&fs).unwrap();
    assert!(inst.recovery_info().torn_tail.is_some(), "{:?}", inst.recovery_info());
    // The damaged record was the commit of "a": it is not returned as data.
    assert_eq!(inst.begin_read().unwrap().get(DB, T, b"a").unwrap(), None);
}
