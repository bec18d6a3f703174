//! The inspector against real generations written by an ese instance.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Active, PREFIX};
use ese::logfmt::{self, LOG_HEADER_SIZE, LogHeader};
use replication::{InspectError, Inspector};
use volume::mem::MemFs;
use volume::{FsRef, OpenMode};

/// An active that closed a few generations with rows in them, and those generations shipped
/// into an inbox on another file system.
fn shipped() -> (Active, FsRef, Vec<u32>) {
    let mut a = Active::new();
    for _ in 0..3 {
        a.write(20);
        a.roll();
    }
    let inbox: FsRef = Arc::new(MemFs::new());
    let gens = a.closed();
    for g in &gens {
        a.ship(*g, &inbox);
    }
    (a, inbox, gens)
}

fn inbox_path(g: u32) -> PathBuf {
    Path::new("inbox").join(logfmt::generation_name(PREFIX, g))
}

fn inspector_for(a: &Active, next: u32) -> Inspector {
    Inspector::new(PREFIX, a.inst.signature(), next, None)
}

fn patch(fs: &FsRef, path: &Path, at: u64, f: impl FnOnce(&mut [u8])) {
    let file = fs.open(path, OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    f(&mut b);
    file.write_at(&b, at).unwrap();
}

#[test]
fn good_generations_pass_in_sequence() {
    let (a, inbox, gens) = shipped();
    assert!(gens.len() >= 3, "expected several closed generations, got {gens:?}");
    let mut ins = inspector_for(&a, gens[0]);
    for g in &gens {
        let ok = ins.check(inbox.as_ref(), &inbox_path(*g)).unwrap();
        assert_eq!(ok.header.generation, *g);
        assert!(ok.records > 0);
        ins.accept(&ok);
    }
    assert_eq!(ins.next_generation(), gens[gens.len() - 1] + 1);
}

#[test]
fn a_flipped_byte_in_a_record_is_refused() {
    let (a, inbox, gens) = shipped();
    let g = gens[gens.len() - 1];
    // The first record starts right after the header; its payload is a few bytes in.
    patch(&inbox, &inbox_path(g), u64::from(LOG_HEADER_SIZE) + 20, |b| b[0] ^= 0x01);
    let err = inspector_for(&a, g).check(inbox.as_ref(), &inbox_path(g)).unwrap_err();
    assert!(
        matches!(&err, InspectError::Damaged { generation, why, .. } if *generation == g && why.contains("checksum")),
        "{err}"
    );
    assert!(err.to_string().contains(&logfmt::generation_name(PREFIX, g)), "{err}");
}

#[test]
fn a_flipped_byte_in_the_header_is_refused() {
    let (a, inbox, gens) = shipped();
    let g = gens[0];
    patch(&inbox, &inbox_path(g), 12, |b| b[0] ^= 0x80);
    let err = inspector_for(&a, g).check(inbox.as_ref(), &inbox_path(g)).unwrap_err();
    assert!(matches!(&err, InspectError::Header { why, .. } if why.contains("checksum")), "{err}");
}

#[test]
fn a_generation_of_another_stream_is_refused() {
    let (_a, inbox, gens) = shipped();
    let (other, other_inbox, other_gens) = shipped();
    assert_ne!(_a.inst.signature(), other.inst.signature());
    let g = other_gens[0];
    // Put the other stream's generation where this stream's is expected.
    let data = volume::fs::read_all(other_inbox.as_ref(), &inbox_path(g)).unwrap();
    volume::fs::write_atomic(inbox.as_ref(), &inbox_path(g), &data).unwrap();
    let err = Inspector::new(PREFIX, _a.inst.signature(), g, None)
        .check(inbox.as_ref(), &inbox_path(g))
        .unwrap_err();
    assert!(
        matches!(&err, InspectError::ForeignStream { generation, .. } if *generation == g),
        "{err}"
    );
    let _ = gens;
}

#[test]
fn a_gap_is_refused() {
    let (a, inbox, gens) = shipped();
    let mut ins = inspector_for(&a, gens[0]);
    let first = ins.check(inbox.as_ref(), &inbox_path(gens[0])).unwrap();
    ins.accept(&first);
    let skip = gens[2];
    let err = ins.check(inbox.as_ref(), &inbox_path(skip)).unwrap_err();
    assert!(
        matches!(&err, InspectError::OutOfSequence { expected, found, .. } if *expected == gens[1] && *found == skip),
        "{err}"
    );
}

#[test]
fn a_truncated_file_is_refused() {
    let (a, inbox, gens) = shipped();
    let g = gens[1];
    let f = inbox.open(&inbox_path(g), OpenMode::ReadWrite).unwrap();
    let len = f.len().unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let err = inspector_for(&a, g).check(inbox.as_ref(), &inbox_path(g)).unwrap_err();
    assert!(
        matches!(&err, InspectError::Truncated { len: l, expected, .. } if *l == len / 2 && *expected == len),
        "{err}"
    );
    // Cut inside the header: the header itself is unusable.
    let f = inbox.open(&inbox_path(g), OpenMode::ReadWrite).unwrap();
    f.set_len(6).unwrap();
    drop(f);
    let err = inspector_for(&a, g).check(inbox.as_ref(), &inbox_path(g)).unwrap_err();
    assert!(matches!(&err, InspectError::Header { .. }), "{err}");
}

#[test]
fn a_generation_written_after_another_predecessor_is_refused() {
    let (a, inbox, gens) = shipped();
    let mut ins = inspector_for(&a, gens[0]);
    let first = ins.check(inbox.as_ref(), &inbox_path(gens[0])).unwrap();
    ins.accept(&first);
    // Rewrite the next generation's header (valid checksum) claiming another predecessor.
    let p = inbox_path(gens[1]);
    let f = inbox.open(&p, OpenMode::ReadWrite).unwrap();
    let mut block = vec![0u8; LOG_HEADER_SIZE as usize];
    f.read_exact_at(&mut block, 0).unwrap();
    let mut h = LogHeader::decode(&block).unwrap();
    h.previous_created += 7;
    f.write_at(&h.encode(), 0).unwrap();
    drop(f);
    let err = ins.check(inbox.as_ref(), &p).unwrap_err();
    assert!(
        matches!(&err, InspectError::Discontinuous { generation, .. } if *generation == gens[1]),
        "{err}"
    );
}

#[test]
fn a_file_under_another_generation_name_is_refused() {
    let (a, inbox, gens) = shipped();
    let data = volume::fs::read_all(inbox.as_ref(), &inbox_path(gens[0])).unwrap();
    volume::fs::write_atomic(inbox.as_ref(), &inbox_path(gens[1]), &data).unwrap();
    let err = inspector_for(&a, gens[1]).check(inbox.as_ref(), &inbox_path(gens[1])).unwrap_err();
    assert!(
        matches!(&err, InspectError::NameMismatch { named, header, .. } if *named == gens[1] && *header == gens[0]),
        "{err}"
    );
}
