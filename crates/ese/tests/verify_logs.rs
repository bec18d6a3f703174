//! `verify_logs` on the generations a backup copies: every one was closed by the freeze's
//! roll, so each must end with its end-of-generation record; a closed generation whose tail
//! was cut off fails naming the file and generation, even as the last of the range. The
//! current log, still being written, may end in unwritten space.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ese::{BackupKind, Durability, EngineError, Lsn};
use volume::mem::MemFs;
use volume::{FileSystem, OpenMode};

fn fill(inst: &ese::Instance, from: u64, n: u64) {
    for i in from..from + n {
        let mut t = inst.begin_write().unwrap();
        t.put(DB, T, &i.to_be_bytes(), &value(i, 900)).unwrap();
        t.commit(Durability::Durable).unwrap();
    }
}

/// Copies the closed generations a copy backup's snapshot holds into `rlogs` of a new file
/// system, as a backup does; returns it, the generations and the instance's signature.
fn backed_up_logs() -> (MemFs, Vec<u32>, [u8; 16], MemFs) {
    let fs = MemFs::new();
    let inst = create(&fs);
    fill(&inst, 0, 200);
    let mut b = inst.backup_session(BackupKind::Copy).unwrap();
    b.prepare().unwrap();
    b.freeze().unwrap();
    let gens = b.snapshot_generations().to_vec();
    let copy = MemFs::new();
    copy.create_dir_all(Path::new("rlogs")).unwrap();
    for g in &gens {
        let name = ese::logfmt::generation_name("E00", *g);
        let data = volume::fs::read_all(&fs, &Path::new("logs").join(&name)).unwrap();
        let f = copy.open(&Path::new("rlogs").join(&name), OpenMode::Create).unwrap();
        f.write_at(&data, 0).unwrap();
    }
    b.thaw().unwrap();
    b.end().unwrap();
    let sig = inst.signature();
    inst.shutdown().unwrap();
    (copy, gens, sig, fs)
}

fn path_of(g: u32) -> PathBuf {
    Path::new("rlogs").join(ese::logfmt::generation_name("E00", g))
}

/// Offset of the `back`-th record from the end of generation `g` (0: its end record).
fn record_offset(fs: &MemFs, g: u32, back: usize) -> u64 {
    let dump = ese::inspect::dump_log(fs, &path_of(g)).unwrap();
    let r = &dump.records[dump.records.len() - 1 - back];
    let (gen_hex, off_hex) = r.lsn.split_once(':').unwrap();
    let lsn = Lsn::new(
        u32::from_str_radix(gen_hex, 16).unwrap(),
        u32::from_str_radix(off_hex, 16).unwrap(),
    );
    assert_eq!(lsn.generation(), g);
    lsn.offset() as u64
}

/// Zeroes generation `g` from `from` to the end of its file.
fn zero_tail(fs: &MemFs, g: u32, from: u64) {
    let f = fs.open(&path_of(g), OpenMode::ReadWrite).unwrap();
    let len = f.len().unwrap();
    f.write_at(&vec![0u8; (len - from) as usize], from).unwrap();
}

fn assert_names(r: ese::Result<ese::inspect::LogVerify>, g: u32) {
    match r {
        Err(e @ EngineError::LogCorrupt { .. }) => {
            let EngineError::LogCorrupt { path, generation, .. } = &e else { unreachable!() };
            assert_eq!((path, *generation), (&path_of(g), g), "{e}");
            let msg = e.to_string();
            assert!(msg.contains(&ese::logfmt::generation_name("E00", g)), "{msg}");
            assert!(msg.contains("end record"), "{msg}");
        }
        other => panic!("expected a corrupt generation {g:#X}, got {other:?}"),
    }
}

#[test]
fn a_closed_generation_without_its_end_record_fails_even_as_the_last() {
    let (copy, gens, sig, _) = backed_up_logs();
    assert!(gens.len() >= 3, "the load filled several generations: {gens:?}");
    let (lo, hi) = (gens[0], *gens.last().unwrap());
    let dir = Path::new("rlogs");
    let ok = ese::inspect::verify_logs(&copy, dir, "E00", Some((lo, hi)), Some(sig)).unwrap();
    assert_eq!(ok.generations, gens);

    // The last generation's end record zeroed, cleanly at a record boundary: what the scan
    // sees is unwritten space, which only the current log may have.
    zero_tail(&copy, hi, record_offset(&copy, hi, 0));
    assert_names(ese::inspect::verify_logs(&copy, dir, "E00", Some((lo, hi)), Some(sig)), hi);
    assert_names(ese::inspect::verify_logs(&copy, dir, "E00", None, None), hi);
    // A range that stops before it is still fine.
    ese::inspect::verify_logs(&copy, dir, "E00", Some((lo, hi - 1)), Some(sig)).unwrap();

    // Cut further back, from the middle of a commit: reported as well.
    let at = record_offset(&copy, hi, 2) + 9;
    zero_tail(&copy, hi, at);
    assert!(matches!(
        ese::inspect::verify_logs(&copy, dir, "E00", Some((lo, hi)), Some(sig)),
        Err(EngineError::LogCorrupt { generation, .. }) if generation == hi
    ));

    // A generation in the middle of the range cut off at a record boundary: named too.
    let mid = gens[1];
    zero_tail(&copy, mid, record_offset(&copy, mid, 0));
    assert_names(ese::inspect::verify_logs(&copy, dir, "E00", Some((lo, mid)), Some(sig)), mid);
}

/// The current log ends where writing stopped; as the last generation checked it passes,
/// with or without a range, on a running instance's log directory.
#[test]
fn the_current_log_may_end_in_unwritten_space() {
    let fs = MemFs::new();
    let inst = create(&fs);
    fill(&inst, 0, 150);
    let state = inst.log_state().unwrap();
    let current = state.current_generation;
    let dump = ese::inspect::dump_log(&fs, Path::new("logs/E00.log")).unwrap();
    assert_eq!(dump.header.generation, current);
    assert_eq!(dump.end, ese::logfmt::ScanEnd::Unwritten, "the current log is open");
    let dir = Path::new("logs");
    let sig = Some(inst.signature());
    let all = ese::inspect::verify_logs(&fs, dir, "E00", None, sig).unwrap();
    assert_eq!(all.generations.last(), Some(&current));
    let first = state.generations[0];
    let ranged = ese::inspect::verify_logs(&fs, dir, "E00", Some((first, current)), sig).unwrap();
    assert_eq!(ranged.generations, all.generations);
}
