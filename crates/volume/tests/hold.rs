//! Flush-and-hold: a commit that cannot get its barrier in time fails cleanly and writes
//! resume; a commit under concurrent writers yields a point-in-time view that never changes.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use uuid::Uuid;
use volume::fs::read_all;
use volume::{CommitOptions, FileSystem, OpenMode, Volume, VolumeError, VolumeOptions, commit_set};

fn vol(dir: &Path, label: &str) -> Volume {
    Volume::create(dir.join(label), VolumeOptions { label: label.into(), block_size: 4096 })
        .unwrap()
}

/// Polls `cond` until it holds; fails naming `what` if it does not within 30 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out after 30 s waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn commit_times_out_cleanly_and_writes_resume() {
    let dir = tempfile::tempdir().unwrap();
    let a = vol(dir.path(), "a");
    let b = vol(dir.path(), "b");
    for v in [&a, &b] {
        v.open(Path::new("f"), OpenMode::Create).unwrap().write_at(b"before", 0).unwrap();
    }
    // The commit takes the barriers in GUID order: the volume whose write is stuck is the
    // second, so the commit holds the first one while it waits.
    let (first, stuck_vol) =
        if a.guid() < b.guid() { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) };
    let b2 = stuck_vol.clone();
    let held = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let (h2, r2) = (held.clone(), release.clone());
    // A write in flight on the second volume that does not drain until told.
    let stuck = std::thread::spawn(move || {
        let _w = b2.hold_in_flight_write();
        h2.wait();
        r2.wait();
    });
    held.wait();
    let opts = CommitOptions { persistent: true, timeout: Duration::from_secs(1) };
    let commit = {
        let (vols, opts) = (vec![a.clone(), b.clone()], opts.clone());
        std::thread::spawn(move || commit_set(&vols, Uuid::new_v4(), &opts))
    };
    // Another writer on the first volume, arriving while the commit holds it and waits for
    // the second: it must complete once the commit gives up. (Should the commit give up before
    // it is seen holding, the writer simply arrives afterwards: the assertions still hold.)
    wait_until("the commit to hold the first volume (or to give up)", || {
        first.writes_held() || commit.is_finished()
    });
    let first2 = first.clone();
    let late = std::thread::spawn(move || {
        first2.open(Path::new("f"), OpenMode::ReadWrite).unwrap().write_at(b"after!", 0).unwrap();
    });
    let err = commit.join().unwrap().unwrap_err();
    let stuck_label = stuck_vol.label().to_string();
    assert!(
        matches!(err, VolumeError::HoldTimeout { ref volume, .. } if *volume == stuck_label),
        "{err}"
    );
    late.join().unwrap();
    assert!(a.snapshots().is_empty() && b.snapshots().is_empty(), "no half-made set");
    assert_eq!(read_all(&first, Path::new("f")).unwrap(), b"after!");
    for v in [&a, &b] {
        let diff = dir.path().join(format!("{}/.shadowcopy/diff", v.label()));
        assert_eq!(std::fs::read_dir(&diff).unwrap().count(), 1);
        assert_eq!(
            std::fs::read_dir(diff.join(v.guid().to_string())).unwrap().count(),
            0,
            "no diff area left behind on {}",
            v.label()
        );
    }
    release.wait();
    stuck.join().unwrap();
    // With the writer drained, the same commit succeeds.
    let r = commit_set(&[a.clone(), b.clone()], Uuid::new_v4(), &opts).unwrap();
    assert_eq!(r.snapshots.len(), 2);
}

/// Writers rewrite every block of their file with an increasing generation, block by block.
/// A point-in-time copy therefore shows generations g+1 then g along the file; and reading
/// the same snapshot again later, while writers continue, gives the same bytes.
#[test]
fn views_are_point_in_time_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "a");
    const FILES: usize = 3;
    const BLOCKS: u64 = 32;
    for f in 0..FILES {
        let h = v.open(Path::new(&format!("f{f}")), OpenMode::Create).unwrap();
        h.write_at(&vec![0u8; (BLOCKS * 4096) as usize], 0).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Generations each writer has completed: the second read of a view waits for more.
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..FILES).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..FILES)
        .map(|f| {
            let (v, stop, done) = (v.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let h = v.open(Path::new(&format!("f{f}")), OpenMode::ReadWrite).unwrap();
                let mut g = 1u8;
                while !stop.load(Ordering::Relaxed) {
                    for b in 0..BLOCKS {
                        h.write_at(&[g; 4096], b * 4096).unwrap();
                    }
                    g = g.wrapping_add(1).max(1);
                    done[f].fetch_add(1, Ordering::Release);
                }
            })
        })
        .collect();
    for _ in 0..8 {
        let s = v.snapshot(false).unwrap();
        let view = v.view(s.id).unwrap();
        let first: Vec<Vec<u8>> =
            (0..FILES).map(|f| read_all(&view, Path::new(&format!("f{f}"))).unwrap()).collect();
        for data in &first {
            let gens: Vec<u8> = data.chunks(4096).map(|c| c[0]).collect();
            for c in data.chunks(4096) {
                assert!(c.iter().all(|&x| x == c[0]), "torn block in a snapshot");
            }
            let distinct: std::collections::BTreeSet<u8> = gens.iter().copied().collect();
            assert!(distinct.len() <= 2, "more than two generations: {gens:?}");
            let switch = gens.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(switch <= 1, "not a single point in time: {gens:?}");
        }
        // Every writer rewrites its whole file at least once more before the view is read again.
        let seen: Vec<u64> = done.iter().map(|d| d.load(Ordering::Acquire)).collect();
        wait_until("every writer to complete another generation", || {
            done.iter().zip(&seen).all(|(d, s)| d.load(Ordering::Acquire) > *s)
        });
        for (f, data) in first.iter().enumerate() {
            assert_eq!(&read_all(&view, Path::new(&format!("f{f}"))).unwrap(), data);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
}

/// The file table is scanned before the hold and reused only if the volume stayed quiet: a
/// writer that keeps resizing a file (whose content encodes its length) must never produce a
/// snapshot whose recorded size disagrees with its content.
#[test]
fn table_scanned_ahead_is_never_stale() {
    let dir = tempfile::tempdir().unwrap();
    let v = vol(dir.path(), "a");
    v.open(Path::new("sized"), OpenMode::Create).unwrap();
    // Enough files that the scan ahead of the hold takes a while.
    v.create_dir_all(Path::new("many")).unwrap();
    for i in 0..2000 {
        v.open(Path::new(&format!("many/{i}")), OpenMode::CreateNew).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (v, stop) = (v.clone(), stop.clone());
        std::thread::spawn(move || {
            let h = v.open(Path::new("sized"), OpenMode::ReadWrite).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let b = (i % 200) as u8;
                // Stop quietly if the test body failed and removed the directory.
                let step = h.set_len(0).and_then(|_| h.write_at(&vec![b; b as usize * 97 + 1], 0));
                let created = v.open(Path::new(&format!("n{}", i % 50)), OpenMode::Create);
                if step.is_err() || created.is_err() {
                    break;
                }
                i += 1;
            }
        })
    };
    for _ in 0..30 {
        let s = v.snapshot(false).unwrap();
        let data = read_all(&v.view(s.id).unwrap(), Path::new("sized")).unwrap();
        if let Some(&b) = data.first() {
            assert_eq!(data.len(), b as usize * 97 + 1, "size and content from different times");
            assert!(data.iter().all(|&x| x == b));
        }
        v.delete_snapshot(s.id).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}
