//! `backup prune` and `backup unlock` through the real binary: a prune killed at each of its
//! steps leaves every set whole, a prune refuses while a backup holds its lock, and `unlock`
//! removes the lock of a process that is gone.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use backup::repo::prune::{KILL_AT_ENV, KILL_POINTS, PruneReport};
use backup::repo::{BackupSet, FileRole, InitOptions, LockInfo, Repository, SetMeta};
use volume::HostFs;
use volume::fs::{FileSystem, FsRef, OpenMode};

const BIN: &str = env!("CARGO_BIN_EXE_shadowcopy");
const CHUNK: u32 = 4096;

fn noise(len: usize, seed: u64) -> Vec<u8> {
    store::load::random_body(len, seed)
}

fn prune_cmd(repo: &Path, extra: &[&str], kill_at: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["backup", "prune", "--repo"]).arg(repo).args(extra).stdin(Stdio::null());
    match kill_at {
        Some(k) => cmd.env(KILL_AT_ENV, k),
        None => cmd.env_remove(KILL_AT_ENV),
    };
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Backs up the files `names` of `src` (a directory) into `repo` as one set.
fn backup(repo: &Repository, src: &Path, names: &[&str]) -> BackupSet {
    let fs = HostFs::new(src).unwrap();
    let mut w = repo.begin_set();
    for n in names {
        let f = fs.open(Path::new(n), OpenMode::Read).unwrap();
        w.add_file(&format!("vol/{n}"), FileRole::Database, "sg1/db1", f.as_ref(), &|_| {})
            .unwrap();
    }
    w.publish(SetMeta::default()).unwrap()
}

/// Checks every set in `dir` verifies and restores the bytes its files were made of.
fn check_sets(dir: &Path, originals: &BTreeMap<String, Vec<u8>>, what: &str) -> usize {
    let repo = Repository::open_host(dir).unwrap_or_else(|e| panic!("{what}: opening: {e}"));
    let sets = repo.list_sets().unwrap();
    for set in &sets {
        repo.verify_set(set, &|_| {}).unwrap_or_else(|e| panic!("{what}: set {}: {e}", set.id));
        for f in &set.files {
            let mut out = vec![0u8; f.size as usize];
            repo.read_file(f, &mut |off, d| {
                out[off as usize..off as usize + d.len()].copy_from_slice(d);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{what}: restoring {}: {e}", f.path));
            assert_eq!(&out, &originals[&f.path], "{what}: {} restores its bytes", f.path);
        }
    }
    sets.len()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A repository with garbage of every kind: a set removed whose pack nothing else uses
/// (deleted), a set removed whose pack holds chunks a kept set shares (repacked), and a pack
/// without an index (an interrupted backup's leftover). Returns the files' original bytes by
/// their path in the sets.
fn garbage_repository(dir: &Path, src: &Path) -> BTreeMap<String, Vec<u8>> {
    let files = [
        ("shared", noise(8 * CHUNK as usize, 1)),
        ("dropped", noise(8 * CHUNK as usize, 2)),
        ("kept", noise(3 * CHUNK as usize + 99, 3)),
        ("gone", noise(6 * CHUNK as usize, 4)),
    ];
    let mut originals = BTreeMap::new();
    for (n, data) in &files {
        std::fs::write(src.join(n), data).unwrap();
        originals.insert(format!("vol/{n}"), data.clone());
    }
    let fs: FsRef = Arc::new(HostFs::new(dir).unwrap());
    let repo = Repository::init(
        fs,
        "",
        InitOptions { chunk_size: CHUNK, zstd_level: 1, ..InitOptions::default() },
    )
    .unwrap();
    let first = backup(&repo, src, &["shared", "dropped"]);
    backup(&repo, src, &["shared", "kept"]);
    let gone = backup(&repo, src, &["gone"]);
    backup(&repo, src, &["kept"]);
    repo.remove_set(&first.id).unwrap();
    repo.remove_set(&gone.id).unwrap();
    let leftover = format!("packs/{}.pack", uuid::Uuid::new_v4());
    repo.backend().put(&leftover, &noise(3 * CHUNK as usize, 5)).unwrap();
    originals
}

fn report(o: &Output) -> PruneReport {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

#[test]
fn a_prune_killed_at_any_step_leaves_every_set_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (master, src) = (tmp.path().join("master"), tmp.path().join("src"));
    std::fs::create_dir_all(&src).unwrap();
    let originals = garbage_repository(&master, &src);
    assert_eq!(check_sets(&master, &originals, "before any prune"), 2);

    // A dry run changes nothing and says what a prune would do.
    let before: Vec<_> = std::fs::read_dir(master.join("packs")).unwrap().collect();
    let dry = prune_cmd(&master, &["--dry-run", "--json"], None);
    assert!(dry.status.success(), "{}", text(&dry));
    let dry = report(&dry);
    assert!(dry.dry_run && dry.packs_repacked == 1 && dry.orphan_packs_removed == 1, "{dry:?}");
    assert_eq!(dry.packs_removed, 3, "the removed set's pack, the repacked one, the leftover");
    assert!(dry.bytes_after < dry.bytes_before, "{dry:?}");
    let after: Vec<_> = std::fs::read_dir(master.join("packs")).unwrap().collect();
    assert_eq!(before.len(), after.len(), "a dry run leaves the packs as they were");

    for (i, point) in KILL_POINTS.iter().enumerate() {
        let dir = tmp.path().join(format!("killed-at-{point}"));
        copy_dir(&master, &dir);
        // By name, and (every other one) by number: both select the point.
        let at = if i % 2 == 0 { point.to_string() } else { (i + 1).to_string() };
        let o = prune_cmd(&dir, &[], Some(&at));
        assert_eq!(o.status.signal(), Some(9), "prune killed at {point}: {}", text(&o));
        let what = format!("after a prune killed at {point}");
        assert_eq!(check_sets(&dir, &originals, &what), 2, "{what}");
        // A prune after the crash (past the dead one's lock) finishes the job.
        let o = prune_cmd(&dir, &["--json"], None);
        assert!(o.status.success(), "{what}, prune again: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("stale"), "{}", text(&o));
        let r = report(&o);
        assert!(r.bytes_after <= r.bytes_before, "{what}: {r:?}");
        assert_eq!(check_sets(&dir, &originals, &format!("{what}, pruned again")), 2);
        let o = prune_cmd(&dir, &["--json", "--dry-run"], None);
        let r = report(&o);
        assert_eq!((r.packs_removed, r.packs_repacked), (0, 0), "{what}: nothing left: {r:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    let o = prune_cmd(&master, &["--json"], None);
    assert!(o.status.success(), "{}", text(&o));
    let r = report(&o);
    assert!(r.bytes_before > r.bytes_after, "a full prune reclaims space: {r:?}");
    assert_eq!((r.packs_removed, r.packs_repacked, r.orphan_packs_removed), (3, 1, 1), "{r:?}");
    assert_eq!(check_sets(&master, &originals, "after a full prune"), 2);
    assert!(
        std::fs::read_dir(master.join("locks")).unwrap().next().is_none(),
        "a finished prune leaves no lock"
    );
}

#[test]
fn prune_waits_for_no_backup_and_unlock_removes_a_dead_process_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, src) = (tmp.path().join("repo"), tmp.path().join("src"));
    std::fs::create_dir_all(&src).unwrap();
    let originals = garbage_repository(&dir, &src);
    std::fs::write(src.join("new"), noise(5 * CHUNK as usize, 9)).unwrap();
    let mut originals = originals;
    originals.insert("vol/new".into(), noise(5 * CHUNK as usize, 9));

    // A backup in progress holds its shared lock: prune refuses, naming it.
    let repo = Repository::open_host(&dir).unwrap();
    let lock = repo.lock_shared("backup of SG1").unwrap();
    let set = {
        let fs = HostFs::new(&src).unwrap();
        let mut w = repo.begin_set();
        let f = fs.open(Path::new("new"), OpenMode::Read).unwrap();
        w.add_file("vol/new", FileRole::Database, "sg1/db1", f.as_ref(), &|_| {}).unwrap();
        w.seal().unwrap();
        let o = prune_cmd(&dir, &[], None);
        assert!(!o.status.success(), "prune during a backup: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let pid = std::process::id().to_string();
        assert!(err.contains("locked") && err.contains("backup of SG1"), "{}", text(&o));
        assert!(err.contains(&pid) && err.contains("backup unlock"), "{}", text(&o));
        w.publish(SetMeta::default()).unwrap()
    };
    drop(lock);
    let o = prune_cmd(&dir, &[], None);
    assert!(o.status.success(), "prune after the backup: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Bytes:"), "{}", text(&o));
    let repo = Repository::open_host(&dir).unwrap();
    repo.verify_set(&repo.load_set(&set.id.to_string()).unwrap(), &|_| {}).unwrap();
    assert_eq!(check_sets(&dir, &originals, "after the prune"), 3);

    // The lock of a process that is gone: reported and removed by unlock.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    assert!(child.wait().unwrap().success());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let stale = LockInfo {
        host,
        pid: dead,
        start_ticks: None,
        user: "tester".into(),
        time_unix_ms: events::now_ms(),
        exclusive: true,
        what: "prune".into(),
    };
    let key = format!("locks/{}", uuid::Uuid::new_v4());
    repo.backend().put(&key, &serde_json::to_vec(&stale).unwrap()).unwrap();
    // A live lock (this process's) stays unless --remove-all.
    let live = repo.lock_shared("backup of SG2").unwrap();
    let o = Command::new(BIN).args(["backup", "unlock", "--repo"]).arg(&dir).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("Removed {key}")) && out.contains(&dead.to_string()), "{out}");
    assert!(
        out.contains("is gone") && out.contains("Kept") && out.contains("backup of SG2"),
        "{out}"
    );
    assert!(!repo.backend().exists(&key).unwrap(), "the stale lock is gone");
    assert!(repo.backend().exists(live.key()).unwrap(), "the live lock stays");
    let o = Command::new(BIN)
        .args(["backup", "unlock", "--remove-all", "--repo"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!repo.backend().exists(live.key()).unwrap(), "--remove-all removes live locks");
    drop(live);
}
