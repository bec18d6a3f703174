//! Transactions, cursors, large values, readers' snapshots, clean and dirty reopen.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ese::Durability;
use volume::mem::MemFs;

#[test]
fn put_get_delete_commit_rollback_and_reopen() {
    let fs = MemFs::new();
    let inst = create(&fs);
    let mut t = inst.begin_write().unwrap();
    for i in 0..500u64 {
        t.put(DB, T, format!("k{i:05}").as_bytes(), &value(i, 100)).unwrap();
    }
    t.commit(Durability::Durable).unwrap();
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"k00001", b"changed").unwrap();
    assert_eq!(t.get(DB, T, b"k00001").unwrap(), Some(b"changed".to_vec()));
    t.rollback();
    let mut t = inst.begin_write().unwrap();
    assert!(t.delete(DB, T, b"k00002").unwrap());
    assert!(!t.delete(DB, T, b"nope").unwrap());
    t.commit(Durability::Lazy).unwrap();
    let r = inst.begin_read().unwrap();
    assert_eq!(r.get(DB, T, b"k00001").unwrap(), Some(value(1, 100)));
    assert_eq!(r.get(DB, T, b"k00002").unwrap(), None);
    drop(r);
    assert_eq!(all_rows(&inst).len(), 499);
    inst.shutdown().unwrap();
    drop(inst);
    let inst = open(&fs).unwrap();
    assert!(inst.recovery_info().was_clean, "{:?}", inst.recovery_info());
    assert_eq!(all_rows(&inst).len(), 499);
    let h = inst.database_header(DB).unwrap();
    assert_eq!(h.state, ese::DbState::DirtyShutdown);
}

#[test]
fn cursor_moves_both_ways_over_many_leaves() {
    let fs = MemFs::new();
    let inst = create(&fs);
    let mut t = inst.begin_write().unwrap();
    for i in (0..2000u64).step_by(2) {
        t.put(DB, T, &i.to_be_bytes(), &value(i, 40)).unwrap();
    }
    t.commit(Durability::Lazy).unwrap();
    let r = inst.begin_read().unwrap();
    let mut c = r.cursor(DB, T).unwrap();
    assert_eq!(c.seek(&11u64.to_be_bytes()).unwrap().unwrap().0, 12u64.to_be_bytes());
    assert_eq!(c.next().unwrap().unwrap().0, 14u64.to_be_bytes());
    assert_eq!(c.prev().unwrap().unwrap().0, 12u64.to_be_bytes());
    assert_eq!(c.prev().unwrap().unwrap().0, 10u64.to_be_bytes());
    assert_eq!(c.last().unwrap().unwrap().0, 1998u64.to_be_bytes());
    assert!(c.next().unwrap().is_none());
    let mut n = 0u64;
    let mut row = c.first().unwrap();
    while let Some((k, _)) = row {
        assert_eq!(k, (n * 2).to_be_bytes());
        n += 1;
        row = c.next().unwrap();
    }
    assert_eq!(n, 1000);
}

#[test]
fn large_values_span_overflow_pages_and_survive_a_crash() {
    let fs = MemFs::new();
    let inst = create(&fs);
    let big = value(7, 3 * 1024 * 1024 + 17);
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"body", &big).unwrap();
    t.put(DB, T, b"small", b"x").unwrap();
    t.commit(Durability::Durable).unwrap();
    assert_eq!(inst.begin_read().unwrap().get(DB, T, b"body").unwrap(), Some(big.clone()));
    // Replace with a smaller one: the old chain goes to the free list.
    let mut t = inst.begin_write().unwrap();
    t.put(DB, T, b"body", &big[..100_000]).unwrap();
    t.commit(Durability::Durable).unwrap();
    fs.crash();
    drop(inst);
    let inst = open(&fs).unwrap();
    assert!(!inst.recovery_info().was_clean);
    let r = inst.begin_read().unwrap();
    assert_eq!(r.get(DB, T, b"body").unwrap(), Some(big[..100_000].to_vec()));
    assert_eq!(r.get(DB, T, b"small").unwrap(), Some(b"x".to_vec()));
}

#[test]
fn readers_keep_their_snapshot_while_the_writer_commits() {
    let fs = MemFs::new();
    let inst = create(&fs);
    let mut t = inst.begin_write().unwrap();
    for i in 0..300u64 {
        t.put(DB, T, &i.to_be_bytes(), b"old").unwrap();
    }
    t.commit(Durability::Lazy).unwrap();
    let r = inst.begin_read().unwrap();
    for round in 0..5 {
        let mut t = inst.begin_write().unwrap();
        for i in 0..300u64 {
            t.put(DB, T, &i.to_be_bytes(), format!("new{round}").as_bytes()).unwrap();
        }
        t.put(DB, T, &(1000 + round as u64).to_be_bytes(), b"extra").unwrap();
        t.commit(Durability::Lazy).unwrap();
        inst.checkpoint_now().unwrap();
    }
    let mut c = r.cursor(DB, T).unwrap();
    let rows = c.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded, usize::MAX).unwrap();
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|(_, v)| v == b"old"));
    drop(c);
    drop(r);
    let rows = all_rows(&inst);
    assert_eq!(rows.len(), 305);
    assert_eq!(rows[0].1, b"new4");
}

#[test]
fn concurrent_durable_committers_share_flushes() {
    let fs = MemFs::new();
    let inst = std::sync::Arc::new(create(&fs));
    let threads: Vec<_> = (0..8u64)
        .map(|th| {
            let inst = inst.clone();
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let mut t = inst.begin_write().unwrap();
                    t.put(DB, T, &(th * 1000 + i).to_be_bytes(), &value(i, 64)).unwrap();
                    t.commit(Durability::Durable).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    fs.crash();
    drop(inst);
    let inst = open(&fs).unwrap();
    assert_eq!(all_rows(&inst).len(), 400);
}
