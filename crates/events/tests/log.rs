//! Behaviour of the persistent event log on a host directory.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use events::catalog::*;
use events::{Event, EventLog, EventSink, Filter, Level, LogOptions, Source};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use uuid::Uuid;
use volume::{FsRef, HostFs};

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn host(dir: &Path) -> FsRef {
    Arc::new(HostFs::new(dir).unwrap())
}

fn open(fs: &FsRef, opts: LogOptions) -> EventLog {
    EventLog::open(fs.clone(), "events", "node-a", opts).unwrap()
}

fn segment_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "evlog"))
        .collect();
    v.sort();
    v
}

/// Appends `n` events alternating between two jobs and three kinds.
fn fill(log: &EventLog, n: usize, jobs: [Uuid; 2]) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let def =
                [&STORE_WRITER_ENGAGED, &ENGINE_FREEZE_STARTED, &COORD_WRITER_TIMED_OUT][i % 3];
            log.append(def, Some(jobs[i % 2]), fields(json!({"instance": "E00", "seq": i})))
                .unwrap()
        })
        .collect()
}

#[test]
fn round_trip_through_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = host(tmp.path());
    let jobs = [Uuid::new_v4(), Uuid::new_v4()];
    let written = {
        let log = open(&fs, LogOptions::default());
        fill(&log, 30, jobs)
    };
    let log = open(&fs, LogOptions::default());
    assert_eq!(log.recovery_report().records, 30);
    assert!(log.recovery_report().torn_tail.is_none());
    assert!(log.recovery_report().corruptions.is_empty());
    let read = log.query(&Filter::default()).unwrap();
    assert_eq!(read, written);
    assert_eq!(read[0].node, "node-a");
    assert_eq!(read[0].message, STORE_WRITER_ENGAGED.render(&read[0].fields));
    assert!(read.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
}

#[test]
fn torn_tail_is_cut_and_earlier_records_kept() {
    for cut in [1usize, 5, 13] {
        let tmp = tempfile::tempdir().unwrap();
        let fs = host(tmp.path());
        let written = fill(&open(&fs, LogOptions::default()), 10, [Uuid::new_v4(); 2]);
        let seg = segment_files(tmp.path()).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - cut as u64)
            .unwrap();

        let log = open(&fs, LogOptions::default());
        let report = log.recovery_report().clone();
        assert!(report.torn_tail.is_some(), "cut {cut}");
        assert!(report.corruptions.is_empty());
        assert_eq!(log.query(&Filter::default()).unwrap(), written[..9]);
        // Appending after recovery continues cleanly.
        let e =
            log.append(&COORD_ABORT, None, fields(json!({"writers": 1, "reason": "x"}))).unwrap();
        drop(log);
        let log = open(&fs, LogOptions::default());
        assert!(log.recovery_report().torn_tail.is_none());
        let all = log.query(&Filter::default()).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[9], e);
    }
}

#[test]
fn flipped_byte_in_last_record_is_dropped_never_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = host(tmp.path());
    let written = fill(&open(&fs, LogOptions::default()), 10, [Uuid::new_v4(); 2]);
    let seg = segment_files(tmp.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let log = open(&fs, LogOptions::default());
    assert!(log.recovery_report().torn_tail.is_some());
    assert_eq!(log.query(&Filter::default()).unwrap(), written[..9]);
}

#[test]
fn corruption_in_the_middle_is_reported_and_later_records_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = host(tmp.path());
    let written = fill(&open(&fs, LogOptions::default()), 10, [Uuid::new_v4(); 2]);
    let seg = segment_files(tmp.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    // Find the start of record 4 by re-encoding records 0..4.
    let mut off = 16;
    for e in &written[..4] {
        off += 12 + serde_json::to_vec(e).unwrap().len();
    }
    bytes[off + 20] ^= 0x01; // inside record 4's payload
    std::fs::write(&seg, &bytes).unwrap();

    let log = open(&fs, LogOptions::default());
    let report = log.recovery_report().clone();
    assert!(report.torn_tail.is_none());
    assert_eq!(report.corruptions.len(), 1);
    assert_eq!(report.corruptions[0].damage.offset, off as u64);
    assert!(report.corruptions[0].damage.followed_by_valid);
    let all = log.query(&Filter::default()).unwrap();
    let mut expect: Vec<Event> = written.clone();
    expect.remove(4);
    assert_eq!(all[..9], expect[..]);
    // The corruption itself is an event.
    assert!(all[9].is(&COORD_EVENT_LOG_CORRUPTION));
    assert_eq!(all[9].fields["offset"], json!(off));
    // A flipped length byte is caught by the length checksum, not used to skip ahead.
    bytes[off + 20] ^= 0x01;
    bytes[off] ^= 0x80;
    std::fs::write(&seg, &bytes).unwrap();
    let log = open(&fs, LogOptions::default());
    assert_eq!(log.recovery_report().corruptions.len(), 1);
    assert_eq!(
        log.query(&Filter { source: Some(Source::Store), ..Filter::default() }).unwrap().len(),
        4
    );
}

#[test]
fn rotation_and_retention_keep_the_newest_records() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = host(tmp.path());
    let opts = LogOptions { segment_max_bytes: 2048, max_segments: 3, sync_every: 0 };
    let log = open(&fs, opts);
    let written = fill(&log, 200, [Uuid::new_v4(); 2]);
    log.sync().unwrap();
    let files = segment_files(tmp.path());
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| std::fs::metadata(f).unwrap().len() <= 2048));
    let kept = log.query(&Filter::default()).unwrap();
    assert!(!kept.is_empty() && kept.len() < 200);
    // What is kept is exactly the newest suffix, in order.
    assert_eq!(kept[..], written[200 - kept.len()..]);
    drop(log);
    let log = open(&fs, opts);
    assert_eq!(log.query(&Filter::default()).unwrap(), kept);
    assert_eq!(log.recovery_report().segments.len(), 3);
}

#[test]
fn queries_by_job_source_id_level_time_and_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = host(tmp.path());
    let log = open(&fs, LogOptions::default());
    let jobs = [Uuid::new_v4(), Uuid::new_v4()];
    let written = fill(&log, 12, jobs);
    let q = |f: Filter| log.query(&f).unwrap();
    let by_job = q(Filter::job(jobs[1]));
    assert_eq!(
        by_job,
        written.iter().filter(|e| e.job == Some(jobs[1])).cloned().collect::<Vec<_>>()
    );
    assert_eq!(q(Filter { source: Some(Source::Engine), ..Filter::default() }).len(), 4);
    assert_eq!(q(Filter { id: Some(9606), ..Filter::default() }).len(), 4);
    let errors = q(Filter { level: Some(Level::Warning), ..Filter::default() });
    assert!(errors.len() == 4 && errors.iter().all(|e| e.id == COORD_WRITER_TIMED_OUT.id));
    let t = written[6].time_ms;
    let since = q(Filter { since_ms: Some(t), ..Filter::default() });
    assert!(since.iter().all(|e| e.time_ms >= t) && since.contains(&written[6]));
    let until = q(Filter { until_ms: Some(t), ..Filter::default() });
    assert!(until.iter().all(|e| e.time_ms < t));
    assert_eq!(since.len() + until.len(), 12);
    let last2 = q(Filter { limit: Some(2), ..Filter::default() });
    assert_eq!(last2, written[10..]);
}

#[test]
fn subscriptions_deliver_live_events_and_dropped_ones_are_pruned() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(&host(tmp.path()), LogOptions::default());
    let job = Uuid::new_v4();
    let mine = log.subscribe(Filter::job(job));
    let all = log.subscribe(Filter::default());
    let dropped = log.subscribe(Filter::default());
    drop(dropped);
    log.emit(
        &COORD_SESSION_STARTED,
        Some(job),
        json!({"job": job.to_string(), "context": "backup"}),
    );
    log.emit(&COORD_SESSION_STARTED, None, json!({"job": "-", "context": "backup"}));
    assert_eq!(log.subscriber_count(), 2);
    let got: Vec<Event> = mine.try_iter().collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].job, Some(job));
    assert_eq!(got[0].message, format!("Backup session {job} started (context backup)."));
    assert_eq!(all.try_iter().count(), 2);
}

#[test]
fn concurrent_emitters_all_land_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let log =
        Arc::new(open(&host(tmp.path()), LogOptions { sync_every: 8, ..LogOptions::default() }));
    let rx = log.subscribe(Filter::default());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    log.emit(&COORD_ABORT, None, json!({"writers": t, "reason": i}));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let stored = log.query(&Filter::default()).unwrap();
    assert_eq!(stored.len(), 200);
    assert!(stored.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    let live: Vec<Event> = rx.try_iter().collect();
    assert_eq!(live, stored, "subscribers see file order");
    for t in 0..4 {
        let seq: Vec<i64> = stored
            .iter()
            .filter(|e| e.fields["writers"] == json!(t))
            .map(|e| e.fields["reason"].as_i64().unwrap())
            .collect();
        assert_eq!(seq, (0..50).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Cutting the newest segment at any length leaves exactly a prefix of the records, and
    /// only the last, cut record is lost.
    #[test]
    fn any_truncation_yields_a_prefix(n in 1usize..12, cut_frac in 0.0f64..1.0) {
        let tmp = tempfile::tempdir().unwrap();
        let fs = host(tmp.path());
        let written = fill(&open(&fs, LogOptions::default()), n, [Uuid::new_v4(); 2]);
        let seg = segment_files(tmp.path()).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        let new_len = (len as f64 * cut_frac) as u64;
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(new_len).unwrap();
        let log = open(&fs, LogOptions::default());
        let read = log.query(&Filter::default()).unwrap();
        prop_assert!(read.len() <= n);
        prop_assert_eq!(&read[..], &written[..read.len()]);
        prop_assert!(log.recovery_report().corruptions.is_empty());
        let complete = written.iter().scan(16u64, |o, e| { *o += 12 + serde_json::to_vec(e).unwrap().len() as u64; Some(*o) }).filter(|&o| o <= new_len).count();
        prop_assert_eq!(read.len(), complete);
    }
}
