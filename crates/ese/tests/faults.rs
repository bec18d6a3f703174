//! Injected faults: corrupted reads are reported, never returned; an I/O error in the log
//! writer fails the commit and every later one, and recovery afterwards loses nothing
//! acknowledged.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use ese::{DatabaseSpec, Durability, EngineError, Instance};
use volume::fault::{FaultInjector, FaultKind};
use volume::mem::MemFs;

#[test]
fn corrupted_page_reads_are_reported_with_file_and_page() {
    let fs = MemFs::new();
    let inst = create(&fs);
    for i in 0..200u64 {
        let mut t = inst.begin_write().unwrap();
        t.put(DB, T, &i.to_be_bytes(), &value(i, 500)).unwrap();
        t.commit(Durability::Lazy).unwrap();
    }
    inst.shutdown().unwrap();
    drop(inst);
    let faulty = FaultInjector::new(Arc::new(fs.clone()));
    faulty.corrupt_reads("db/mb1.edb", 3 * 4096 + 64..3 * 4096 + 65);
    let f = faulty.as_ref();
    let inst =
        Instance::open(config(&fs), vec![DatabaseSpec::new(DB, f.clone(), "db/mb1.edb")]).unwrap();
    let r = inst.begin_read().unwrap();
    let mut c = r.cursor(DB, T).unwrap();
    let mut result = Ok(());
    let mut row = c.first();
    while let Ok(Some(_)) = row {
        row = c.next();
    }
    if let Err(e) = row {
        result = Err(e);
    }
    match result {
        Err(EngineError::PageCorrupt { path, pgno, .. }) => {
            assert_eq!(path, Path::new("db/mb1.edb"));
            assert_eq!(pgno, 3);
        }
        other => panic!("expected a read verify failure, got {other:?}"),
    }
    let verify = ese::inspect::verify_database(f.as_ref(), Path::new("db/mb1.edb"));
    assert!(matches!(verify, Err(EngineError::PageCorrupt { pgno: 3, .. })), "{verify:?}");
}

#[test]
fn log_write_error_fails_commits_and_recovery_keeps_acknowledged_ones() {
    let fs = MemFs::new();
    let inst = create(&fs);
    let mut acked = 0u64;
    fs.fail_after(40, FaultKind::Eio);
    let mut failed = false;
    for i in 0..200u64 {
        let r = (|| {
            let mut t = inst.begin_write()?;
            t.put(DB, T, &i.to_be_bytes(), &value(i, 300))?;
            t.commit(Durability::Durable)
        })();
        match r {
            Ok(_) => {
                assert!(!failed, "a commit succeeded after the log writer failed");
                acked = i + 1;
            }
            Err(e) => {
                failed = true;
                assert!(e.to_string().contains("E00") || e.to_string().contains("mb1"), "{e}");
            }
        }
    }
    assert!(failed);
    drop(inst);
    fs.clear_faults();
    fs.crash();
    let inst = open(&fs).unwrap();
    let rows = all_rows(&inst);
    assert!(rows.len() as u64 >= acked);
    for i in 0..acked {
        assert_eq!(rows[i as usize], (i.to_be_bytes().to_vec(), value(i, 300)));
    }
}
