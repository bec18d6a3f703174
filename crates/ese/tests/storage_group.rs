//! A storage group with logs on one volume and two databases on another; readers running
//! against a busy writer always see a consistent state.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::value;
use ese::{DatabaseSpec, Durability, Instance, InstanceConfig};
use volume::FsRef;
use volume::mem::MemFs;

fn cfg(logs: &MemFs) -> InstanceConfig {
    let l: FsRef = Arc::new(logs.clone());
    let mut c = InstanceConfig::new(l.clone(), "E01/logs", l, "E01/sys");
    c.prefix = "E01".into();
    c.log_file_size = 128 * 1024;
    c.page_size = 8192;
    c.cache_pages = 32;
    c.lazy_interval = Duration::from_millis(2);
    c
}

fn specs(dbs: &MemFs) -> Vec<DatabaseSpec> {
    let d: FsRef = Arc::new(dbs.clone());
    vec![DatabaseSpec::new("a", d.clone(), "a/a.edb"), DatabaseSpec::new("b", d, "b/b.edb")]
}

#[test]
fn logs_and_databases_on_different_volumes_recover_together() {
    let (logs, dbs) = (MemFs::new(), MemFs::new());
    let inst = Instance::create(cfg(&logs)).unwrap();
    for s in specs(&dbs) {
        inst.create_database(&s.name, s.fs.clone(), &s.path).unwrap();
    }
    let mut t = inst.begin_write().unwrap();
    t.create_table("a", "t").unwrap();
    t.create_table("b", "t").unwrap();
    t.commit(Durability::Durable).unwrap();
    for i in 0..300u64 {
        let mut t = inst.begin_write().unwrap();
        // One transaction spans both databases: both rows or neither.
        t.put("a", "t", &i.to_be_bytes(), &value(i, 700)).unwrap();
        t.put("b", "t", &i.to_be_bytes(), &value(i + 1, 300)).unwrap();
        t.commit(if i % 3 == 0 { Durability::Durable } else { Durability::Lazy }).unwrap();
    }
    inst.flush_log().unwrap();
    // Power loss on both volumes.
    logs.crash();
    dbs.crash();
    drop(inst);
    let inst = Instance::open(cfg(&logs), specs(&dbs)).unwrap();
    assert!(!inst.recovery_info().was_clean);
    let r = inst.begin_read().unwrap();
    for i in 0..300u64 {
        assert_eq!(r.get("a", "t", &i.to_be_bytes()).unwrap(), Some(value(i, 700)));
        assert_eq!(r.get("b", "t", &i.to_be_bytes()).unwrap(), Some(value(i + 1, 300)));
    }
    drop(r);
    // Opening without one of the databases the logs need is refused, naming it.
    inst.shutdown().unwrap();
    drop(inst);
    let inst = Instance::open(cfg(&logs), specs(&dbs)).unwrap();
    let mut t = inst.begin_write().unwrap();
    t.put("b", "t", b"x", b"y").unwrap();
    t.commit(Durability::Durable).unwrap();
    logs.crash();
    dbs.crash();
    drop(inst);
    let only_a = specs(&dbs).into_iter().take(1).collect();
    match Instance::open(cfg(&logs), only_a) {
        Err(ese::EngineError::DatabaseMissing { name, .. }) => assert_eq!(name, "b"),
        other => panic!("{other:?}"),
    }
    let inst = Instance::open(cfg(&logs), specs(&dbs)).unwrap();
    assert_eq!(inst.begin_read().unwrap().get("b", "t", b"x").unwrap(), Some(b"y".to_vec()));
    assert_eq!(inst.databases(), vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn readers_always_see_a_consistent_state() {
    let (logs, dbs) = (MemFs::new(), MemFs::new());
    let inst = Arc::new(Instance::create(cfg(&logs)).unwrap());
    let s = &specs(&dbs)[0];
    inst.create_database("a", s.fs.clone(), &s.path).unwrap();
    // 50 accounts of 100 each; transfers keep the total at 5000.
    let mut t = inst.begin_write().unwrap();
    t.create_table("a", "acct").unwrap();
    for i in 0..50u32 {
        t.put("a", "acct", &i.to_be_bytes(), &100i64.to_le_bytes()).unwrap();
    }
    t.commit(Durability::Durable).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (inst, stop) = (inst.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut checks = 0;
                while !stop.load(Ordering::Relaxed) || checks < 20 {
                    let r = inst.begin_read().unwrap();
                    let mut c = r.cursor("a", "acct").unwrap();
                    let mut total = 0i64;
                    let mut n = 0;
                    let mut row = c.first().unwrap();
                    while let Some((_, v)) = row {
                        total += i64::from_le_bytes(v[..8].try_into().unwrap());
                        n += 1;
                        row = c.next().unwrap();
                    }
                    assert_eq!((n, total), (50, 5000));
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for i in 0..400u32 {
        let (from, to) = ((i * 7) % 50, (i * 13 + 1) % 50);
        if from == to {
            continue;
        }
        let mut t = inst.begin_write().unwrap();
        let get = |t: &ese::WriteTxn, k: u32| {
            let v = t.get("a", "acct", &k.to_be_bytes()).unwrap().unwrap();
            i64::from_le_bytes(v[..8].try_into().unwrap())
        };
        let (a, b) = (get(&t, from), get(&t, to));
        // Pad values so pages split and move while readers traverse them.
        let pad = |x: i64| {
            let mut v = x.to_le_bytes().to_vec();
            v.extend(std::iter::repeat_n(0u8, (i as usize % 5) * 200));
            v
        };
        t.put("a", "acct", &from.to_be_bytes(), &pad(a - 3)).unwrap();
        t.put("a", "acct", &to.to_be_bytes(), &pad(b + 3)).unwrap();
        t.commit(Durability::Lazy).unwrap();
        if i % 50 == 0 {
            inst.checkpoint_now().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 20);
    }
}
