//! Mutation tests of the event log's segment parser: segments written by the real log are
//! flipped, given hostile length values, truncated, extended, spliced, cut and padded, then
//! the log is reopened (recovery) and queried under a guard: no panic, no hang, no allocation
//! beyond a bound. Records are also mutated with both checksums recomputed, so the JSON
//! decoding behind them sees hostile payloads. Damage is reported with its segment and offset.
//!
//! `PROPTEST_CASES=100000 cargo test -p events --test parsers_mutation` runs a longer campaign.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../ese/tests/mutation/mod.rs"]
mod mutation;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use events::catalog::*;
use events::record::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use events::{EventLog, Filter, LogOptions};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;
use volume::mem::MemFs;
use volume::{FileSystem, FsRef, OpenMode};

use mutation::{cases, guarded, in_place, mutate_range, mutated, mutations};

#[global_allocator]
static ALLOC: mutation::Tracking = mutation::Tracking;

/// Segments are 4 KiB here and records at most 1 MiB: nothing needs more than this at once.
const MAX_ALLOC: usize = 16 << 20;

fn options() -> LogOptions {
    LogOptions { segment_max_bytes: 4096, max_segments: 16, sync_every: 1 }
}

/// The segment files of a log that wrote several segments, by path.
fn fixture() -> &'static BTreeMap<PathBuf, Vec<u8>> {
    static F: OnceLock<BTreeMap<PathBuf, Vec<u8>>> = OnceLock::new();
    F.get_or_init(|| {
        let fs = MemFs::new();
        let log = EventLog::open(fs.as_ref(), "events", "node-a", options()).unwrap();
        let job = Uuid::new_v4();
        for i in 0..60 {
            let def = [&STORE_WRITER_ENGAGED, &ENGINE_FREEZE_STARTED, &COORD_ABORT][i % 3];
            let fields = json!({"instance": "E00", "seq": i, "writers": 1, "reason": "x"});
            log.append(def, Some(job), fields.as_object().unwrap().clone()).unwrap();
        }
        drop(log);
        let mut files = BTreeMap::new();
        for e in fs.read_dir(Path::new("events")).unwrap() {
            let p = Path::new("events").join(&e.name);
            files.insert(p.clone(), volume::fs::read_all(&fs, &p).unwrap());
        }
        assert!(files.len() >= 3, "the fixture should span several segments: {files:?}");
        files
    })
}

fn segments() -> Vec<PathBuf> {
    fixture().keys().cloned().collect()
}

/// Opens the log over the fixture with `path` replaced by `bytes`, and queries everything.
/// Returns the damage reported (segment, offset) or the error's text.
fn reopen(path: PathBuf, bytes: Vec<u8>) -> Result<Vec<(u64, u64)>, String> {
    guarded(&format!("EventLog::open with a mutated {}", path.display()), MAX_ALLOC, move || {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("events")).unwrap();
        for (p, data) in fixture() {
            let f = fs.open(p, OpenMode::Create).unwrap();
            f.write_at(if *p == path { &bytes } else { data }, 0).unwrap();
        }
        let fs: FsRef = Arc::new(fs);
        let log = EventLog::open(fs, "events", "node-a", options()).map_err(|e| e.to_string())?;
        log.query(&Filter::default()).map_err(|e| e.to_string())?;
        let r = log.recovery_report();
        Ok(r.corruptions
            .iter()
            .chain(r.torn_tail.iter())
            .map(|d| (d.segment, d.damage.offset))
            .collect())
    })
}

/// Offsets of the records of a valid segment image.
fn record_offsets(img: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN as usize;
    while off + RECORD_HEADER_LEN <= img.len() {
        let len = u32::from_le_bytes(img[off..off + 4].try_into().unwrap()) as usize;
        out.push(off);
        off += RECORD_HEADER_LEN + len;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), ..ProptestConfig::default() })]

    /// A mutated segment: reopening recovers or fails with a typed error; damage is reported
    /// at an offset inside the (mutated) segment.
    #[test]
    fn segments_mutated(which in any::<prop::sample::Index>(), donor in any::<prop::sample::Index>(), ms in mutations()) {
        let all = segments();
        let path = which.get(&all).clone();
        let img = mutated(&fixture()[&path], &ms, &fixture()[donor.get(&all)]);
        let len = img.len() as u64;
        let i = img.clone();
        guarded("record::scan", MAX_ALLOC, move || record::scan(&i, SEGMENT_HEADER_LEN as usize).events.len());
        if let Ok(damage) = reopen(path, img) {
            for (_, offset) in damage {
                prop_assert!(offset <= len, "damage at {offset} past the end ({len})");
            }
        }
    }

    /// A record with its payload mutated and both checksums recomputed: the JSON decoder sees
    /// it, and a hostile length is refused before it is used.
    #[test]
    fn records_resealed(which in any::<prop::sample::Index>(), rec in any::<prop::sample::Index>(), ms in in_place(), plant_len in any::<Option<u32>>()) {
        let all = segments();
        let path = which.get(&all).clone();
        let mut img = fixture()[&path].clone();
        let offs = record_offsets(&img);
        prop_assume!(!offs.is_empty());
        let off = *rec.get(&offs);
        let len = u32::from_le_bytes(img[off..off + 4].try_into().unwrap()) as usize;
        prop_assume!(off + RECORD_HEADER_LEN + len <= img.len());
        mutate_range(&mut img, off + RECORD_HEADER_LEN..off + RECORD_HEADER_LEN + len, &ms);
        if let Some(l) = plant_len {
            img[off..off + 4].copy_from_slice(&l.to_le_bytes());
        }
        let len_bytes: [u8; 4] = img[off..off + 4].try_into().unwrap();
        img[off + 4..off + 8].copy_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
        let end = (off + RECORD_HEADER_LEN + u32::from_le_bytes(len_bytes) as usize).min(img.len());
        let crc = crc32c::crc32c(&img[off + RECORD_HEADER_LEN..end]);
        img[off + 8..off + 12].copy_from_slice(&crc.to_le_bytes());
        let _ = reopen(path, img);
    }
}
