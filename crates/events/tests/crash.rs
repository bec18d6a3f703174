//! The event log on the in-memory power-loss file system: what was synced survives a crash,
//! nothing is ever misread, and recovery is repeatable.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use events::catalog::COORD_ABORT;
use events::{Event, EventLog, Filter, LogOptions};
use proptest::prelude::*;
use serde_json::{Map, json};
use volume::FsRef;
use volume::mem::MemFs;

fn append(log: &EventLog, i: usize) -> Result<Event, events::EventLogError> {
    let mut f = Map::new();
    f.insert("writers".into(), json!(i));
    f.insert("reason".into(), json!(format!("record {i} {}", "x".repeat(i % 40))));
    log.append(&COORD_ABORT, None, f)
}

fn open(fs: &MemFs, opts: LogOptions) -> EventLog {
    let r: FsRef = Arc::new(fs.clone());
    EventLog::open(r, "var/events", "node-m", opts).unwrap()
}

/// 64 cases by default; `SHADOWCOPY_STRESS=1` runs 5000.
fn cases() -> u32 {
    if std::env::var_os("SHADOWCOPY_STRESS").is_some() { 5000 } else { 64 }
}

fn seqs(events: &[Event]) -> Vec<usize> {
    events.iter().map(|e| e.fields["writers"].as_u64().unwrap() as usize).collect()
}

#[test]
fn synced_records_survive_a_crash() {
    let fs = MemFs::new();
    let log = open(&fs, LogOptions::default());
    let written: Vec<Event> = (0..25).map(|i| append(&log, i).unwrap()).collect();
    fs.crash();
    assert!(append(&log, 99).is_err(), "handles opened before the crash are dead");
    drop(log);
    let log = open(&fs, LogOptions::default());
    assert_eq!(log.query(&Filter::default()).unwrap(), written);
    assert!(log.recovery_report().corruptions.is_empty());
}

#[test]
fn unsynced_records_are_lost_cleanly_with_batched_sync() {
    let fs = MemFs::new();
    let opts = LogOptions { sync_every: 0, ..LogOptions::default() };
    let log = open(&fs, opts);
    for i in 0..10 {
        append(&log, i).unwrap();
    }
    log.sync().unwrap();
    for i in 10..20 {
        append(&log, i).unwrap();
    }
    fs.crash();
    drop(log);
    let log = open(&fs, opts);
    assert_eq!(seqs(&log.query(&Filter::default()).unwrap()), (0..10).collect::<Vec<_>>());
    // Appends continue after the recovered end.
    append(&log, 10).unwrap();
    log.sync().unwrap();
    drop(log);
    let log = open(&fs, opts);
    assert_eq!(seqs(&log.query(&Filter::default()).unwrap()), (0..11).collect::<Vec<_>>());
}

#[test]
fn relaxed_records_become_durable_with_the_next_synced_one() {
    let fs = MemFs::new();
    let log = open(&fs, LogOptions::default());
    let mut f = Map::new();
    f.insert("writers".into(), json!(0));
    log.append_relaxed(&COORD_ABORT, None, f.clone()).unwrap();
    f.insert("writers".into(), json!(1));
    log.append(&COORD_ABORT, None, f.clone()).unwrap();
    f.insert("writers".into(), json!(2));
    log.append_relaxed(&COORD_ABORT, None, f).unwrap();
    fs.crash();
    drop(log);
    let log = open(&fs, LogOptions::default());
    assert_eq!(
        seqs(&log.query(&Filter::default()).unwrap()),
        [0, 1],
        "the unsynced relaxed tail is lost, in order"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// A torn crash with batched syncs: every synced record survives, every record read back is
    /// one that was written (never garbage), in write order, and a second open agrees.
    #[test]
    fn torn_crash_keeps_synced_records_and_never_misreads(n in 1usize..40, every in 1u32..6, seed: u64) {
        let fs = MemFs::new();
        let opts = LogOptions { sync_every: every, segment_max_bytes: 4096, max_segments: 64 };
        let log = open(&fs, opts);
        for i in 0..n {
            append(&log, i).unwrap();
        }
        fs.crash_torn(seed);
        drop(log);
        let log = open(&fs, opts);
        let got = seqs(&log.query(&Filter { source: Some(events::Source::Coordinator), id: Some(COORD_ABORT.id), ..Filter::default() }).unwrap());
        // At most `every - 1` records are ever unsynced (rotation syncs and restarts the count).
        let synced = n - (every as usize - 1).min(n);
        prop_assert!(got.len() >= synced, "lost synced records: {:?} (synced {})", got, synced);
        prop_assert_eq!(&got[..synced], &(0..synced).collect::<Vec<_>>()[..]);
        prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order or duplicated: {:?}", got);
        prop_assert!(got.iter().all(|&i| i < n));
        let again = open(&fs, opts);
        let got2 = seqs(&again.query(&Filter { id: Some(COORD_ABORT.id), ..Filter::default() }).unwrap());
        prop_assert_eq!(got2, got);
    }

    /// A crash at any mutating operation (including segment creation and retention deletes):
    /// every append that returned Ok (sync_every = 1) is there after recovery.
    #[test]
    fn crash_at_any_operation_keeps_acknowledged_records(n in 1usize..60, crash_at in 1u64..200, torn: bool, seed: u64) {
        let fs = MemFs::new();
        let opts = LogOptions { sync_every: 1, segment_max_bytes: 1024, max_segments: 4 };
        let log = open(&fs, opts);
        if torn { fs.crash_after_torn(crash_at, seed) } else { fs.crash_after(crash_at) }
        let mut acked = Vec::new();
        for i in 0..n {
            match append(&log, i) {
                Ok(_) => acked.push(i),
                Err(_) => break,
            }
        }
        fs.clear_faults();
        drop(log);
        let log = open(&fs, opts);
        let got = seqs(&log.query(&Filter { id: Some(COORD_ABORT.id), ..Filter::default() }).unwrap());
        // Retention may have dropped the oldest segments: what survives is a suffix of the
        // acknowledged records, plus possibly the one in flight.
        let in_flight = acked.len();
        prop_assert!(got.windows(2).all(|w| w[0] + 1 == w[1]), "gap: {:?}", got);
        if let Some(&last) = got.last() {
            prop_assert!(last == in_flight || Some(&last) == acked.last(), "last {} acked {:?}", last, acked.last());
        }
        if let Some(&last_acked) = acked.last() {
            prop_assert!(got.contains(&last_acked), "acknowledged record {} lost: {:?}", last_acked, got);
        }
    }
}
