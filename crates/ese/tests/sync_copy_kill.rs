//! A synchronous copy at the engine level, with concurrent committers: the active is killed
//! at a random moment and the copy, activated from what it received, holds every commit the
//! active acknowledged.
//!
//! Why: it is the failover of `cli/tests/failover.rs` without the cluster — several
//! committers at once (group commit, the writer lock released before the flush), in-place
//! leaf changes logged as byte ranges, the lazy writer flushing pages and moving the
//! checkpoint, log rolls, and a follower that reads the current generation up to its durable
//! end (block mode) and acknowledges through the commit gate. If the log a copy rebuilds pages
//! from missed anything the active changed, an acknowledged row would be missing or wrong
//! here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{DB, T, value, write_durable};
use ese::{
    CommitGate, DatabaseSpec, Durability, Instance, InstanceConfig, Lsn, PassiveConfig,
    PassiveReplay, logfmt,
};
use parking_lot::{Condvar, Mutex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use volume::mem::MemFs;
use volume::{FileSystem, FsRef};

/// How long anything in this test may take before it fails.
const DEADLINE: Duration = Duration::from_secs(60);
const PREFIX: &str = "E00";
const COMMITTERS: usize = 4;

/// What the follower holds: closed generations are in the copy's inbox; of the current one,
/// the bytes received so far.
struct Follower {
    position: Mutex<Lsn>,
    moved: Condvar,
    /// The active is dead: commits waiting on the gate fail.
    killed: AtomicBool,
}

impl CommitGate for Follower {
    fn replicated(&self, durable_to: Lsn) -> Result<(), String> {
        let mut p = self.position.lock();
        while *p < durable_to {
            if self.killed.load(Ordering::SeqCst) {
                return Err("the active was killed before the copy had the commit".into());
            }
            if self.moved.wait_for(&mut p, DEADLINE).timed_out() {
                return Err(format!("the copy did not reach {durable_to} within {DEADLINE:?}"));
            }
        }
        Ok(())
    }
}

fn passive(copy: &MemFs) -> PassiveConfig {
    let f: FsRef = Arc::new(copy.clone());
    PassiveConfig {
        databases: vec![DatabaseSpec::new(DB, f.clone(), "copy/db/mb1.edb")],
        checkpoint_fs: f,
        checkpoint_path: "copy/E00.pchk".into(),
        prefix: PREFIX.into(),
    }
}

/// Follows the active's current generation into `copy` until `stop`; returns the bytes of
/// the generation it was following when stopped.
fn follow(
    active: &Instance,
    afs: &MemFs,
    copy: &MemFs,
    f: &Follower,
    stop: &AtomicBool,
) -> Vec<u8> {
    let mut generation = active.read_current_log(0, 0, 0).unwrap().current;
    let mut tail: Vec<u8> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let r = active.read_current_log(generation, tail.len() as u64, 1 << 20).unwrap();
        if r.closed {
            // The rest of it from its closed file, then the next generation.
            let name = logfmt::generation_name(PREFIX, generation);
            let data = volume::fs::read_all(afs, &Path::new("logs").join(&name)).unwrap();
            write_durable(copy, &Path::new("copy/inbox").join(&name), &data);
            generation += 1;
            tail.clear();
        } else if r.bytes.is_empty() {
            active.wait_durable_beyond(
                Lsn::new(generation, tail.len() as u32),
                Duration::from_millis(20),
            );
            continue;
        } else {
            tail.extend_from_slice(&r.bytes);
        }
        *f.position.lock() = Lsn::new(generation, tail.len() as u32);
        f.moved.notify_all();
    }
    tail
}

/// One committer's acknowledged rows: every key it inserted, and its counter row's value.
type Acked = BTreeMap<Vec<u8>, Vec<u8>>;

fn committer(inst: &Instance, id: usize, seed: u64, acks: &mpsc::Sender<()>) -> (Acked, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked = Acked::new();
    let mut counter = 0u64;
    for seq in 0u64.. {
        let mut t = match inst.begin_write() {
            Ok(t) => t,
            Err(_) => break,
        };
        let k = format!("m{id}-{seq:06}").into_bytes();
        let len = match rng.random_range(0..10) {
            0 => rng.random_range(1100..6000),
            1 => rng.random_range(950..1010),
            _ => rng.random_range(1..400),
        };
        let v = value(seed ^ seq, len);
        let ops = (|| -> ese::Result<()> {
            t.put(DB, T, &k, &v)?;
            // Scratch rows rewritten at other sizes: entries after them in the leaf move.
            for _ in 0..rng.random_range(0..4) {
                let s = format!("s{}-{:03}", id, rng.random_range(0..40)).into_bytes();
                if rng.random_bool(0.2) {
                    t.delete(DB, T, &s)?;
                } else {
                    t.put(DB, T, &s, &value(rng.random(), rng.random_range(0..300)))?;
                }
            }
            t.put(DB, T, format!("c{id}").as_bytes(), &(seq + 1).to_be_bytes())
        })();
        if ops.is_err() {
            break;
        }
        match t.commit(Durability::Durable) {
            Ok(_) => {
                acked.insert(k, v);
                counter = seq + 1;
                // The test stops listening at the kill.
                let _ = acks.send(());
            }
            Err(_) => break,
        }
    }
    (acked, counter)
}

fn one_kill(seed: u64) {
    let afs = MemFs::new();
    let mut cfg: InstanceConfig = common::config(&afs);
    cfg.cache_pages = 40;
    let inst = Arc::new(Instance::create(cfg).unwrap());
    inst.create_database(DB, Arc::new(afs.clone()), "db/mb1.edb").unwrap();
    let mut t = inst.begin_write().unwrap();
    t.create_table(DB, T).unwrap();
    for i in 0..50u64 {
        t.put(DB, T, format!("p{i:03}").as_bytes(), &value(i, 200)).unwrap();
    }
    t.commit(Durability::Durable).unwrap();
    // The copy: seeded from a snapshot, then following the current generation.
    let copy = MemFs::new();
    {
        let mut b = inst.backup_session(ese::BackupKind::Copy).unwrap();
        b.prepare().unwrap();
        b.freeze().unwrap();
        let db = volume::fs::read_all(&afs, Path::new("db/mb1.edb")).unwrap();
        b.thaw().unwrap();
        b.end().unwrap();
        write_durable(&copy, Path::new("copy/db/mb1.edb"), &db);
        PassiveReplay::open(passive(&copy)).unwrap();
        // Generations closed before the follower starts are shipped as a copier would.
        for e in afs.read_dir(Path::new("logs")).unwrap() {
            if logfmt::parse_generation_name(PREFIX, &e.name).is_some() {
                let data = volume::fs::read_all(&afs, &Path::new("logs").join(&e.name)).unwrap();
                write_durable(&copy, &Path::new("copy/inbox").join(&e.name), &data);
            }
        }
    }
    let f = Arc::new(Follower {
        position: Mutex::new(Lsn(0)),
        moved: Condvar::new(),
        killed: AtomicBool::new(false),
    });
    inst.set_commit_gate(Some(f.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let follower = {
        let (inst, afs, copy, f, stop) =
            (inst.clone(), afs.clone(), copy.clone(), f.clone(), stop.clone());
        std::thread::spawn(move || follow(&inst, &afs, &copy, &f, &stop))
    };
    // The committers report each acknowledgement; the kill comes after a random number.
    let (tx, rx) = mpsc::channel::<()>();
    let committers: Vec<_> = (0..COMMITTERS)
        .map(|id| {
            let (inst, tx) = (inst.clone(), tx.clone());
            std::thread::spawn(move || committer(&inst, id, seed * 31 + id as u64, &tx))
        })
        .collect();
    drop(tx);
    let kill_after = StdRng::seed_from_u64(seed).random_range(10..600);
    for n in 0..kill_after {
        rx.recv_timeout(DEADLINE).unwrap_or_else(|e| {
            panic!("seed {seed}: acknowledgement {n} of {kill_after} did not come: {e}")
        });
    }
    drop(rx);
    // Kill: the copy stops receiving, commits it does not hold fail in the gate, and what it
    // has is all a failover gets.
    stop.store(true, Ordering::SeqCst);
    let tail = follower.join().unwrap();
    f.killed.store(true, Ordering::SeqCst);
    {
        let _p = f.position.lock();
        f.moved.notify_all();
    }
    let results: Vec<(Acked, u64)> = committers.into_iter().map(|c| c.join().unwrap()).collect();
    let generation = f.position.lock().generation();
    drop(inst);
    if !tail.is_empty() {
        write_durable(&copy, Path::new("copy/inbox/E00.log"), &tail);
    }
    let fsref: FsRef = Arc::new(copy.clone());
    let mut ccfg = InstanceConfig::new(fsref.clone(), "copy/inbox", fsref.clone(), "copy");
    ccfg.log_file_size = 64 * 1024;
    ccfg.page_size = 4096;
    ccfg.cache_pages = 64;
    let pcfg = passive(&copy);
    let (b, act) = ese::activate(&pcfg, ccfg, pcfg.databases.clone())
        .unwrap_or_else(|e| panic!("seed {seed}: activation failed: {e}"));
    let r = b.begin_read().unwrap();
    let mut total = 0;
    for (id, (acked, counter)) in results.iter().enumerate() {
        total += acked.len();
        for (k, v) in acked {
            let got = r.get(DB, T, k).unwrap();
            assert!(
                got.as_ref() == Some(v),
                "seed {seed}: acknowledged row {} is {} on the activated copy ({act:?}, followed \
                 to generation {generation})",
                String::from_utf8_lossy(k),
                match &got {
                    None => "missing".to_string(),
                    Some(g) => format!("{} bytes, not the {} acknowledged", g.len(), v.len()),
                }
            );
        }
        let c = r.get(DB, T, format!("c{id}").as_bytes()).unwrap();
        let c = c.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
        assert!(
            c >= *counter,
            "seed {seed}: committer {id}'s counter is {c}, {counter} acknowledged"
        );
    }
    assert!(
        total >= kill_after,
        "seed {seed}: {total} acknowledged, the kill came after {kill_after}"
    );
}

#[test]
fn killing_the_active_with_a_synchronous_copy_loses_no_acknowledged_commit() {
    let runs =
        std::env::var("SHADOWCOPY_SYNC_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(12u64);
    for seed in 0..runs {
        one_kill(seed);
    }
}
