//! Crash test: a child process writes through the volume under a persistent and a
//! non-persistent snapshot and is killed with SIGKILL at a chosen point (in the middle of the
//! first-write preservations, or later); the parent reopens the volume and checks that the
//! persistent snapshot is exact, the non-persistent one is gone, and every live block holds a
//! value the writer wrote no earlier than its last sync.
//!
//! Not covered: a SIGKILL leaves the kernel's page cache intact, so this proves ordering and
//! recovery of everything the process issued, not the loss of unsynced data at a power cut.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use volume::fs::read_all;
use volume::{FileSystem, OpenMode, Volume, VolumeOptions};

const BS: u64 = 4096;
const BLOCKS: u64 = 64;
const CHILD_ENV: &str = "SHADOWCOPY_CRASH_CHILD_ROOT";

fn original(b: u64) -> Vec<u8> {
    vec![(b as u8) | 0x80; BS as usize]
}

fn tag(i: u64) -> Vec<u8> {
    (i as u32 + 1).to_le_bytes().repeat(BS as usize / 4)
}

/// Block written by the child's i-th write.
fn block_of(i: u64) -> u64 {
    (i * 37 + i / 64) % BLOCKS
}

/// Child side: runs only when the parent re-executes this test binary.
#[test]
fn crash_child() {
    let Some(root) = std::env::var_os(CHILD_ENV) else { return };
    let v = Volume::open(PathBuf::from(root)).unwrap();
    // A non-persistent snapshot, newer than the persistent one: the writes below preserve into
    // it, and the persistent one reads through it until the restart hands its blocks over.
    let n = v.snapshot(false).unwrap();
    println!("nonpersistent {}", n.id);
    let db = v.open(Path::new("db"), OpenMode::ReadWrite).unwrap();
    // Namespace changes and a truncation the snapshot must not see.
    v.rename(Path::new("keep"), Path::new("kept")).unwrap();
    v.remove_file(Path::new("other")).unwrap();
    db.set_len(16 * BS).unwrap();
    db.set_len(BLOCKS * BS).unwrap();
    db.sync().unwrap();
    v.sync_dir(Path::new("")).unwrap();
    println!("synced -1");
    for i in 0.. {
        db.write_at(&tag(i), block_of(i) * BS).unwrap();
        if i % 4 == 3 {
            db.sync().unwrap();
            println!("synced {i}");
        }
    }
}

/// Runs the child until it reports sync number `after_synced`, then SIGKILLs it. Returns the
/// last sync it reported and the id of the non-persistent snapshot it took.
fn spawn_and_kill(root: &Path, after_synced: i64) -> (i64, uuid::Uuid) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last = i64::MIN;
    let mut nonpersistent = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest prints "test crash_child ... " without a newline before the child's output.
        if let Some(at) = line.find("nonpersistent ") {
            nonpersistent = Some(line[at + 14..].trim().parse().unwrap());
        }
        if let Some(n) = line.strip_prefix("synced ") {
            last = n.trim().parse().unwrap();
            if last >= after_synced {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(last >= after_synced, "child died before reaching {after_synced}");
    (last, nonpersistent.expect("the child reports its snapshot"))
}

fn round(after_synced: i64) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vol");
    let p = {
        let v =
            Volume::create(&root, VolumeOptions { label: "db".into(), block_size: BS }).unwrap();
        let db = v.open(Path::new("db"), OpenMode::Create).unwrap();
        for b in 0..BLOCKS {
            db.write_at(&original(b), b * BS).unwrap();
        }
        db.sync().unwrap();
        for (name, data) in [("keep", &b"keep me"[..]), ("other", b"other file")] {
            v.open(Path::new(name), OpenMode::Create).unwrap().write_at(data, 0).unwrap();
        }
        v.snapshot(true).unwrap()
    };
    let (synced, n) = spawn_and_kill(&root, after_synced);

    let v = Volume::open(&root).unwrap();
    let ids: Vec<_> = v.snapshots().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![p.id], "only the persistent snapshot survives");
    assert!(v.view(n).is_err());
    let view = v.view(p.id).unwrap();
    let db = read_all(&view, Path::new("db")).unwrap();
    let want: Vec<u8> = (0..BLOCKS).flat_map(original).collect();
    assert!(db == want, "persistent snapshot changed (killed after sync {synced})");
    assert_eq!(read_all(&view, Path::new("keep")).unwrap(), b"keep me");
    assert_eq!(read_all(&view, Path::new("other")).unwrap(), b"other file");
    let names: Vec<_> = view.read_dir(Path::new("")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["db", "keep", "other"]);

    // Live: every block holds a write no older than the last sync before the kill.
    let live = read_all(&v, Path::new("db")).unwrap();
    assert_eq!(live.len() as u64, BLOCKS * BS);
    for b in 0..BLOCKS {
        let got = &live[(b * BS) as usize..((b + 1) * BS) as usize];
        let floor = (0..=synced.max(-1)).rev().find(|&i| i >= 0 && block_of(i as u64) == b);
        let base = if b < 16 { original(b) } else { vec![0; BS as usize] };
        let ok = match floor {
            None => got == base || (0..).take(100_000).any(|i| block_of(i) == b && got == tag(i)),
            Some(f) => (f as u64..f as u64 + 100_000).any(|i| block_of(i) == b && got == tag(i)),
        };
        assert!(ok, "live block {b} holds neither a synced nor a later write");
    }
    assert_eq!(read_all(&v, Path::new("kept")).unwrap(), b"keep me");
    assert!(!v.exists(Path::new("other")).unwrap());
}

#[test]
fn persistent_snapshot_survives_kill_9() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    // Killed during the first-write preservations, at their end, and well after.
    for after in [3, 31, 200] {
        round(after);
    }
}
