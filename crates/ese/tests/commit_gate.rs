//! The commit gate (synchronous copies) and reading the current log generation (block mode):
//! durable commits pass the gate once each, after their local fsync and outside the writer
//! lock (sixteen committers are inside it at once); a gate's refusal fails the commit; the
//! current generation is never read past its durable end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ese::{BackupKind, CommitGate, Durability, EngineError, Lsn};
use parking_lot::{Condvar, Mutex};
use volume::mem::MemFs;

/// How long a test waits for anything before it fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// A gate that reports each call and holds it until the test releases every caller.
struct HoldingGate {
    calls: AtomicUsize,
    entered: Mutex<mpsc::Sender<Lsn>>,
    released: Mutex<bool>,
    cond: Condvar,
}

impl CommitGate for HoldingGate {
    fn replicated(&self, durable_to: Lsn) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.entered.lock().send(durable_to).unwrap();
        let mut r = self.released.lock();
        while !*r {
            if self.cond.wait_for(&mut r, DEADLINE).timed_out() {
                return Err("the test never released the gate".into());
            }
        }
        Ok(())
    }
}

#[test]
fn sixteen_durable_commits_wait_in_the_gate_at_once_after_their_fsync() {
    let fs = MemFs::new();
    let inst = Arc::new(create(&fs));
    let (tx, rx) = mpsc::channel();
    let gate = Arc::new(HoldingGate {
        calls: AtomicUsize::new(0),
        entered: Mutex::new(tx),
        released: Mutex::new(false),
        cond: Condvar::new(),
    });
    inst.set_commit_gate(Some(gate.clone()));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let inst = inst.clone();
            std::thread::spawn(move || {
                let mut t = inst.begin_write().unwrap();
                t.put(DB, T, format!("k{i:02}").as_bytes(), &value(i, 200)).unwrap();
                t.commit(Durability::Durable)
            })
        })
        .collect();
    // All sixteen enter the gate while none has been let through: each released the writer
    // lock before waiting there, or the next could not have committed.
    let mut seen = Vec::new();
    for n in 0..16 {
        let lsn = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("waiting for committer {n} to enter the gate: {e}"));
        seen.push(lsn);
    }
    // Each was durable locally before the gate was asked.
    let g = inst.log_end().generation();
    let read = inst.read_current_log(g, 0, usize::MAX).unwrap();
    for lsn in &seen {
        assert!(*lsn <= read.durable_end, "gate called at {lsn} before durable ({read:?})");
    }
    // The writer lock is free meanwhile, and a lazy commit does not pass the gate.
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"lazy", b"v").unwrap();
    t.commit(Durability::Lazy).unwrap();
    assert_eq!(gate.calls.load(Ordering::SeqCst), 16);

    *gate.released.lock() = true;
    gate.cond.notify_all();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(gate.calls.load(Ordering::SeqCst), 16, "one gate call per durable commit");
    assert_eq!(all_rows(&inst).len(), 17);
    inst.set_commit_gate(None);
    inst.shutdown().unwrap();
}

struct RefusingGate;

impl CommitGate for RefusingGate {
    fn replicated(&self, _durable_to: Lsn) -> Result<(), String> {
        Err("no copy acknowledged".into())
    }
}

#[test]
fn a_refusing_gate_fails_the_commit_which_stays_durable_locally() {
    let fs = MemFs::new();
    let inst = create(&fs);
    inst.set_commit_gate(Some(Arc::new(RefusingGate)));
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"k", b"v").unwrap();
    let err = t.commit(Durability::Durable).unwrap_err();
    assert!(
        matches!(&err, EngineError::NotReplicated { why, .. } if why.contains("no copy")),
        "{err}"
    );
    // Lazy commits do not ask the gate.
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"k2", b"v").unwrap();
    t.commit(Durability::Lazy).unwrap();
    inst.set_commit_gate(None);
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"k3", b"v").unwrap();
    t.commit(Durability::Durable).unwrap();
    inst.shutdown().unwrap();
    drop(inst);
    // The refused commit was durable: a reopen finds it.
    let inst = open(&fs).unwrap();
    let keys: Vec<_> = all_rows(&inst).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec![b"k".to_vec(), b"k2".to_vec(), b"k3".to_vec()]);
    inst.shutdown().unwrap();
}

#[test]
fn the_current_generation_is_read_up_to_its_durable_end_only() {
    let fs = MemFs::new();
    let inst = create(&fs);
    for i in 0..5u64 {
        let mut t = inst.begin_write().unwrap();
        t.put(DB, T, format!("k{i}").as_bytes(), &value(i, 300)).unwrap();
        t.commit(Durability::Durable).unwrap();
    }
    let end = inst.log_end();
    let g = end.generation();
    let read = inst.read_current_log(g, 0, usize::MAX).unwrap();
    assert!(!read.closed);
    assert_eq!(read.durable_end, end, "everything committed durably is readable");
    let file = volume::fs::read_all(&fs, Path::new("logs/E00.log")).unwrap();
    assert_eq!(read.bytes, file[..end.offset() as usize], "an exact prefix of the file");
    // In pieces, from any offset.
    let part = inst.read_current_log(g, 100, 50).unwrap();
    assert_eq!(part.bytes, file[100..150]);

    // Flushes held (a backup's freeze): lazy commits stay in memory and are not read.
    let mut b = inst.backup_session(BackupKind::Copy).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    let g = inst.log_end().generation();
    let before = inst.read_current_log(g, 0, usize::MAX).unwrap();
    for i in 0..5u64 {
        let mut t = inst.begin_write().unwrap();
        t.put(DB, T, format!("f{i}").as_bytes(), &value(i, 300)).unwrap();
        t.commit(Durability::Lazy).unwrap();
    }
    let during = inst.read_current_log(g, 0, usize::MAX).unwrap();
    assert!(inst.log_end() > during.durable_end, "the lazy commits are pending");
    assert_eq!(during, before, "nothing past the durable end is read");
    assert_eq!(during.bytes.len() as u32, during.durable_end.offset());
    // Nobody flushes while frozen: a wait for more ends at its deadline, unchanged.
    let waited = inst.wait_durable_beyond(during.durable_end, Duration::from_millis(10));
    assert_eq!(waited, during.durable_end);
    b.thaw().unwrap();
    b.end().unwrap();
    // Thawed, the flush moves the durable end and wakes a waiter.
    let after = inst.wait_durable_beyond(during.durable_end, DEADLINE);
    assert!(after > during.durable_end, "the durable end never moved past {after}");
    inst.flush_log().unwrap();
    let read = inst.read_current_log(g, 0, usize::MAX).unwrap();
    assert_eq!(read.durable_end, inst.log_end());
    let file = volume::fs::read_all(&fs, Path::new("logs/E00.log")).unwrap();
    assert_eq!(read.bytes, file[..read.durable_end.offset() as usize]);

    // A generation no longer current is reported closed.
    inst.roll_log().unwrap();
    let old = inst.read_current_log(g, 0, usize::MAX).unwrap();
    assert!(old.closed && old.bytes.is_empty(), "{old:?}");
    assert_eq!(old.current, g + 1);
    inst.shutdown().unwrap();
}
