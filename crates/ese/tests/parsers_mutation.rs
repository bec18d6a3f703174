//! Mutation tests of the engine's parsers of bytes from disk: log files and their records,
//! the checkpoint, the database header and pages.
//!
//! Valid images come from the real writer (an instance on MemFs with a few generations of
//! logs); each case flips, plants hostile length values, truncates, extends, splices, deletes
//! or inserts bytes, then runs the parser under a guard (no panic, no hang, no allocation
//! beyond a bound). Records, checkpoint slots and header pages are also mutated and *resealed*
//! (checksum recomputed) so that the decoders behind the checksums, and soft recovery, see
//! hostile fields. Errors from the dump functions must name the file.
//!
//! `PROPTEST_CASES=100000 cargo test -p ese --test parsers_mutation` runs a longer campaign.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod mutation;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ese::logfmt::{self, LOG_HEADER_SIZE};
use ese::{checkpoint, inspect, page};
use proptest::prelude::*;
use volume::mem::MemFs;
use volume::{FileSystem, OpenMode};

use mutation::{cases, guarded, in_place, mutate_range, mutated, mutations};

#[global_allocator]
static ALLOC: mutation::Tracking = mutation::Tracking;

/// No parser needs more than this at once for these small images (logs are 64 KiB, pages
/// 4 KiB); a garbage length would ask for far more.
const MAX_ALLOC: usize = 64 << 20;

/// The files of an instance that wrote a few generations, by path, taken after its last
/// durable commit.
fn fixture() -> &'static BTreeMap<PathBuf, Vec<u8>> {
    static F: OnceLock<BTreeMap<PathBuf, Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| {
        let fs = MemFs::new();
        // No lazy writer during the workload: the checkpoint stays at the start, so recovery
        // replays every record (and mutated records are reached).
        let mut cfg = common::config(&fs);
        cfg.lazy_interval = std::time::Duration::from_secs(3600);
        let inst = ese::Instance::create(cfg).unwrap();
        inst.create_database(common::DB, fs.as_ref(), "db/mb1.edb").unwrap();
        let mut t = inst.begin_write().unwrap();
        t.create_table(common::DB, common::T).unwrap();
        t.commit(ese::Durability::Durable).unwrap();
        for i in 0..120u64 {
            let mut t = inst.begin_write().unwrap();
            t.put(common::DB, common::T, &i.to_be_bytes(), &common::value(i, 1500)).unwrap();
            t.commit(ese::Durability::Durable).unwrap();
        }
        let mut files = BTreeMap::new();
        for dir in ["logs", "sys", "db"] {
            for e in fs.read_dir(Path::new(dir)).unwrap() {
                let p = Path::new(dir).join(&e.name);
                files.insert(p.clone(), volume::fs::read_all(&fs, &p).unwrap());
            }
        }
        drop(inst);
        assert!(
            files.keys().filter(|p| p.extension().is_some_and(|e| e == "log")).count() >= 3,
            "the fixture should span several generations: {:?}",
            files.keys().collect::<Vec<_>>()
        );
        files
    })
}

fn logs() -> Vec<PathBuf> {
    fixture()
        .keys()
        .filter(|p| p.starts_with("logs") && p.extension().is_some_and(|e| e == "log"))
        .cloned()
        .collect()
}

/// A MemFs holding the fixture with `path` replaced by `bytes`.
fn fs_with(path: &Path, bytes: &[u8]) -> MemFs {
    let fs = MemFs::new();
    for (p, data) in fixture() {
        fs.create_dir_all(p.parent().unwrap()).unwrap();
        let f = fs.open(p, OpenMode::Create).unwrap();
        f.write_at(if p == path { bytes } else { data }, 0).unwrap();
    }
    fs
}

/// An error of a dump function must name the file it is about.
fn names(err: &ese::EngineError, path: &Path) -> bool {
    err.to_string().contains(&path.display().to_string())
}

/// Recomputes the CRC of the record frame at `off` (its length field as it now reads).
fn reseal_record(img: &mut [u8], off: usize) {
    let len = u32::from_le_bytes(img[off..off + 4].try_into().unwrap()) as usize;
    if len >= logfmt::FRAME && off + len <= img.len() {
        let crc = crc32c::crc32c(&img[off + 8..off + len]);
        img[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Soft recovery over the fixture with one file replaced: must return, Ok or a typed error.
fn recover(path: PathBuf, bytes: Vec<u8>) {
    guarded(&format!("soft recovery with a mutated {}", path.display()), MAX_ALLOC, move || {
        let fs = fs_with(&path, &bytes);
        if let Ok(inst) = common::open(&fs) {
            let _ = inst.shutdown();
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1500), ..ProptestConfig::default() })]

    /// A mutated log file: the dump and the verification of the whole stream return.
    #[test]
    fn log_files(which in any::<prop::sample::Index>(), donor in any::<prop::sample::Index>(), ms in mutations()) {
        let all = logs();
        let path = which.get(&all).clone();
        let img = mutated(&fixture()[&path], &ms, &fixture()[donor.get(&all)]);
        let p = path.clone();
        let dump = guarded("dump_log", MAX_ALLOC, move || {
            inspect::dump_log(&fs_with(&p, &img), &p).map_err(|e| e.to_string())
        });
        if let Err(e) = dump {
            prop_assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    /// A mutated log file under log verification and soft recovery.
    #[test]
    fn log_files_in_recovery(which in any::<prop::sample::Index>(), ms in mutations()) {
        let all = logs();
        let path = which.get(&all).clone();
        let img = mutated(&fixture()[&path], &ms, &fixture()[&path]);
        let (p, i) = (path.clone(), img.clone());
        guarded("verify_logs", MAX_ALLOC, move || {
            let _ = inspect::verify_logs(&fs_with(&p, &i), Path::new("logs"), "E00", None, None);
        });
        recover(path, img);
    }

    /// A record whose kind and payload are mutated and whose checksum is recomputed: the
    /// decoder, the dump and soft recovery (redo) see hostile counts, lengths, page numbers
    /// and offsets.
    #[test]
    fn log_records_resealed(which in any::<prop::sample::Index>(), rec in any::<prop::sample::Index>(), ms in in_place()) {
        let all = logs();
        let path = which.get(&all).clone();
        let mut img = fixture()[&path].clone();
        let header = logfmt::LogHeader::decode(&img).unwrap();
        let scan = logfmt::scan(header.generation, &img, 0);
        prop_assume!(!scan.records.is_empty());
        let off = rec.get(&scan.records).0.offset() as usize;
        let len = u32::from_le_bytes(img[off..off + 4].try_into().unwrap()) as usize;
        mutate_range(&mut img, off + 16..off + len, &ms);
        reseal_record(&mut img, off);
        let (p, i) = (path.clone(), img.clone());
        let dump = guarded("dump_log of a resealed record", MAX_ALLOC, move || {
            inspect::dump_log(&fs_with(&p, &i), &p).map_err(|e| e.to_string())
        });
        if let Err(e) = dump {
            prop_assert!(e.contains(&path.display().to_string()), "{e}");
        }
        recover(path, img);
    }

    /// A mutated log header, resealed: the header decoder and recovery see hostile counts.
    #[test]
    fn log_headers_resealed(which in any::<prop::sample::Index>(), ms in in_place()) {
        let all = logs();
        let path = which.get(&all).clone();
        let mut img = fixture()[&path].clone();
        let n = u32::from_le_bytes(img[0..4].try_into().unwrap()) as usize;
        mutate_range(&mut img, 8..8 + n, &ms);
        let crc = crc32c::crc32c(&img[8..8 + n]);
        img[4..8].copy_from_slice(&crc.to_le_bytes());
        let (p, i) = (path.clone(), img.clone());
        guarded("LogHeader::decode", MAX_ALLOC, move || {
            let _ = logfmt::LogHeader::decode(&i[..LOG_HEADER_SIZE as usize]);
            let _ = inspect::dump_log(&fs_with(&p, &i), &p);
        });
        recover(path, img);
    }

    /// A mutated checkpoint file, as is and with the slot's checksum recomputed.
    #[test]
    fn checkpoint_file(ms in mutations(), reseal in any::<bool>(), slot in 0usize..2) {
        let path = PathBuf::from("sys/E00.chk");
        let orig = &fixture()[&path];
        let img = if reseal {
            let mut img = orig.clone();
            let base = slot * checkpoint::SLOT_SIZE;
            let n = u32::from_le_bytes(img[base + 8..base + 12].try_into().unwrap()) as usize;
            prop_assume!(n > 0 && base + 16 + n <= img.len());
            mutate_range(&mut img, base + 16..base + 16 + n, &ms);
            let crc = crc32c::crc32c(&img[base + 16..base + 16 + n]);
            img[base + 12..base + 16].copy_from_slice(&crc.to_le_bytes());
            img
        } else {
            mutated(orig, &ms, orig)
        };
        let (p, i) = (path.clone(), img.clone());
        let r = guarded("dump_checkpoint", MAX_ALLOC, move || {
            inspect::dump_checkpoint(&fs_with(&p, &i), &p).map_err(|e| e.to_string())
        });
        if let Err(e) = r {
            prop_assert!(e.contains("E00.chk"), "{e}");
        }
        recover(path, img);
    }

    /// A mutated database file: header dump, page verification and recovery.
    #[test]
    fn database_file(ms in mutations(), header_only in any::<bool>()) {
        let path = PathBuf::from("db/mb1.edb");
        let orig = &fixture()[&path];
        let img = if header_only {
            // Aim at the two header pages, where the fields are.
            let mut img = orig.clone();
            mutate_range(&mut img, 0..2 * 4096, &ms);
            img
        } else {
            mutated(orig, &ms, orig)
        };
        let (p, i) = (path.clone(), img.clone());
        let (h, v) = guarded("dump_database_header / verify_database", MAX_ALLOC, move || {
            let fs = fs_with(&p, &i);
            (
                inspect::dump_database_header(&fs, &p).err().map(|e| names(&e, &p)),
                inspect::verify_database(&fs, &p).err().map(|e| names(&e, &p)),
            )
        });
        prop_assert!(h.unwrap_or(true) && v.unwrap_or(true), "an error does not name the file");
        recover(path, img);
    }

    /// A header page whose fields are mutated and whose page checksum is recomputed.
    #[test]
    fn database_header_resealed(ms in in_place(), copy in 0u64..2) {
        let path = PathBuf::from("db/mb1.edb");
        let mut img = fixture()[&path].clone();
        let base = copy as usize * 4096;
        mutate_range(&mut img, base + page::PAGE_HEADER..base + 4096, &ms);
        page::seal(&mut img[base..base + 4096], copy, 0);
        let (p, i) = (path.clone(), img.clone());
        let r = guarded("dump_database_header of a resealed page", MAX_ALLOC, move || {
            inspect::dump_database_header(&fs_with(&p, &i), &p).err().map(|e| names(&e, &p))
        });
        prop_assert!(r.unwrap_or(true), "an error does not name the file");
        recover(path, img);
    }
}

/// Scanning arbitrary bytes as a log image never panics (no fixture: pure garbage).
#[test]
fn scan_of_garbage_returns() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for len in [0usize, 1, 16, 4095, 4096, 4113, 8192, 65536] {
        let img: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let i = img.clone();
        guarded("scan of garbage", MAX_ALLOC, move || {
            let _ = logfmt::LogHeader::decode(&i);
            logfmt::scan(1, &i, 0).records.len()
        });
    }
}

/// The first transaction record of the oldest generation, and the log file holding it.
fn first_txn() -> (PathBuf, usize) {
    for path in logs() {
        let img = &fixture()[&path];
        let h = logfmt::LogHeader::decode(img).unwrap();
        for (lsn, rec) in logfmt::scan(h.generation, img, 0).records {
            if matches!(rec, logfmt::Record::Txn { ref pages, .. } if !pages.is_empty()) {
                return (path, lsn.offset() as usize);
            }
        }
    }
    panic!("the fixture holds no transaction record");
}

/// Found by `log_records_resealed`: a record (checksum intact) that changes page 2^40 made
/// redo write there, growing the database file to petabytes (MemFs: an allocation of that
/// size). Recovery now refuses it, naming the log file.
#[test]
fn redo_refuses_a_page_number_past_reach() {
    let (path, off) = first_txn();
    let mut img = fixture()[&path].clone();
    // Frame (17 bytes), commit (1), begin (8), page count (4), dbid (4), then the page number.
    let at = off + logfmt::FRAME + 1 + 8 + 4 + 4;
    img[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    reseal_record(&mut img, off);
    let p = path.clone();
    let err = guarded("recovery over a far page number", MAX_ALLOC, move || {
        common::open(&fs_with(&p, &img)).err().map(|e| e.to_string())
    })
    .expect("recovery refuses the record");
    assert!(err.contains(&path.display().to_string()) && err.contains("1099511627776"), "{err}");
}

/// Found by `checkpoint_file`: a checkpoint position past the end of the log file made
/// recovery seal the log there (growing it by gigabytes). The checkpoint is refused.
#[test]
fn checkpoint_past_the_log_end_is_refused() {
    let path = PathBuf::from("sys/E00.chk");
    let mut img = fixture()[&path].clone();
    for base in [0, checkpoint::SLOT_SIZE] {
        let n = u32::from_le_bytes(img[base + 8..base + 12].try_into().unwrap()) as usize;
        if n == 0 {
            continue;
        }
        // Body: magic (4), signature (16), then the checkpoint position; offset in the low half.
        let at = base + 16 + 4 + 16;
        img[at..at + 4].copy_from_slice(&0x7000_0000u32.to_le_bytes());
        let crc = crc32c::crc32c(&img[base + 16..base + 16 + n]);
        img[base + 12..base + 16].copy_from_slice(&crc.to_le_bytes());
    }
    let err = inspect::dump_checkpoint(&fs_with(&path, &img), &path).unwrap_err().to_string();
    assert!(err.contains("E00.chk") && err.contains("past the end"), "{err}");
}

/// Found by `checkpoint_file` and `log_headers_resealed`: the largest generation number and
/// database id overflowed when recovery counted on from them. Both are refused when read.
#[test]
fn last_generation_and_database_id_are_refused() {
    let path = logs()[0].clone();
    let mut img = fixture()[&path].clone();
    img[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    let n = u32::from_le_bytes(img[0..4].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c(&img[8..8 + n]);
    img[4..8].copy_from_slice(&crc.to_le_bytes());
    let err = logfmt::LogHeader::decode(&img).unwrap_err();
    assert!(err.contains("past the last usable"), "{err}");

    let path = PathBuf::from("sys/E00.chk");
    let mut img = fixture()[&path].clone();
    for base in [0, checkpoint::SLOT_SIZE] {
        let n = u32::from_le_bytes(img[base + 8..base + 12].try_into().unwrap()) as usize;
        if n == 0 {
            continue;
        }
        // Body: magic (4), signature (16), position (8), then the next database id.
        let at = base + 16 + 4 + 16 + 8;
        img[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&img[base + 16..base + 16 + n]);
        img[base + 12..base + 16].copy_from_slice(&crc.to_le_bytes());
    }
    let err = inspect::dump_checkpoint(&fs_with(&path, &img), &path).unwrap_err().to_string();
    assert!(err.contains("next database id"), "{err}");
}
