//! Model-based test: random transactions, cursors and reopens against a `BTreeMap`.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;

use common::*;
use ese::Durability;
use proptest::prelude::*;
use volume::mem::MemFs;

#[derive(Debug, Clone)]
enum Op {
    Put(u16, usize),
    Delete(u16),
}

#[derive(Debug, Clone)]
enum Step {
    Txn { ops: Vec<Op>, commit: bool, durable: bool },
    Cursor { from: u16, steps: usize, forward: bool },
    Range { lo: u16, hi: u16 },
    Reopen { crash: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..400, prop_oneof![8 => 0usize..200, 1 => 1000usize..9000]).prop_map(|(k, l)| Op::Put(k, l)),
        1 => (0u16..400).prop_map(Op::Delete),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::collection::vec(op(), 1..30), prop::bool::weighted(0.85), any::<bool>())
            .prop_map(|(ops, commit, durable)| Step::Txn { ops, commit, durable }),
        2 => (0u16..420, 1usize..20, any::<bool>()).prop_map(|(from, steps, forward)| Step::Cursor { from, steps, forward }),
        1 => (0u16..420, 0u16..420).prop_map(|(lo, hi)| Step::Range { lo, hi }),
        1 => any::<bool>().prop_map(|crash| Step::Reopen { crash }),
    ]
}

fn key(k: u16) -> Vec<u8> {
    format!("key{k:05}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if std::env::var("SHADOWCOPY_STRESS").is_ok_and(|v| v == "1") { 600 } else { 48 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_matches_a_btreemap(steps in prop::collection::vec(step(), 1..40)) {
        let fs = MemFs::new();
        let mut inst = create(&fs);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut seq = 0u64;
        for s in steps {
            match s {
                Step::Txn { ops, commit, durable } => {
                    let mut t = inst.begin_write().unwrap();
                    let mut pending = model.clone();
                    for o in ops {
                        match o {
                            Op::Put(k, len) => {
                                seq += 1;
                                let v = value(seq, len);
                                t.put(DB, T, &key(k), &v).unwrap();
                                pending.insert(key(k), v);
                            }
                            Op::Delete(k) => {
                                let existed = t.delete(DB, T, &key(k)).unwrap();
                                prop_assert_eq!(existed, pending.remove(&key(k)).is_some());
                            }
                        }
                    }
                    for k in [0u16, 7, 100, 399] {
                        prop_assert_eq!(t.get(DB, T, &key(k)).unwrap(), pending.get(&key(k)).cloned());
                    }
                    if commit {
                        t.commit(if durable { Durability::Durable } else { Durability::Lazy }).unwrap();
                        model = pending;
                    } else {
                        t.rollback();
                    }
                }
                Step::Cursor { from, steps, forward } => {
                    let r = inst.begin_read().unwrap();
                    let mut c = r.cursor(DB, T).unwrap();
                    let mut got = Vec::new();
                    let mut row = if forward { c.seek(&key(from)).unwrap() } else { c.seek_back(&key(from)).unwrap() };
                    while let Some((k, v)) = row {
                        got.push((k, v));
                        if got.len() >= steps { break; }
                        row = if forward { c.next().unwrap() } else { c.prev().unwrap() };
                    }
                    let want: Vec<_> = if forward {
                        model.range(key(from)..).take(steps).map(|(k, v)| (k.clone(), v.clone())).collect()
                    } else {
                        model.range(..=key(from)).rev().take(steps).map(|(k, v)| (k.clone(), v.clone())).collect()
                    };
                    prop_assert_eq!(got, want);
                }
                Step::Range { lo, hi } => {
                    let r = inst.begin_read().unwrap();
                    let mut c = r.cursor(DB, T).unwrap();
                    let (lo, hi) = (key(lo), key(hi));
                    let got = c.range(Bound::Included(&lo), Bound::Excluded(&hi), usize::MAX).unwrap();
                    let want: Vec<_> = if lo < hi {
                        model.range(lo..hi).map(|(k, v)| (k.clone(), v.clone())).collect()
                    } else { Vec::new() };
                    prop_assert_eq!(got, want);
                }
                Step::Reopen { crash } => {
                    if crash {
                        inst.flush_log().unwrap();
                        fs.crash();
                    } else {
                        inst.shutdown().unwrap();
                    }
                    drop(inst);
                    inst = open(&fs).unwrap();
                    prop_assert_eq!(inst.recovery_info().was_clean, !crash);
                }
            }
        }
        let got: BTreeMap<_, _> = all_rows(&inst).into_iter().collect();
        prop_assert_eq!(got, model);
        // The files pass verification after a clean shutdown.
        inst.shutdown().unwrap();
        ese::inspect::verify_database(&fs, std::path::Path::new("db/mb1.edb")).unwrap();
        ese::inspect::verify_logs(&fs, std::path::Path::new("logs"), "E00", None, Some(inst.signature())).unwrap();
    }
}
