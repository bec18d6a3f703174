//! `admin expose`: a shadow copy mounted read-only through FUSE by a node run by the real
//! binary, read by the tools people point at it (sha256sum, tar, cp) while the live volume
//! keeps changing; writes refused; deletion while a file is open; exposure after a restart.
//!
//! These tests need root and FUSE (/dev/fuse). Without them they fail when CI is set, and skip
//! saying why otherwise. Every mount is unmounted by a guard even when a test fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, MountGuard, Served, config, mounted};

/// Whether the tests can mount; panics in CI when not.
fn fuse_ready() -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        Some("they need root to mount".to_string())
    } else {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .err()
            .map(|e| format!("/dev/fuse cannot be opened ({e}); install fuse3, modprobe fuse"))
    };
    match why {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI must run the expose tests, but {why}")
        }
        Some(why) => {
            eprintln!("skipping the expose tests: {why}");
            false
        }
    }
}

/// Kills a child process by its PID when dropped (a load left running by a failed test).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for `child` to exit, at most `limit`; fails naming `what` otherwise.
fn wait_for(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "{what} did not finish within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the CLI against `served` and waits at most a minute for it to succeed: a command that
/// would hang (a deletion waiting for a reader) fails the test naming `what`.
fn run_within(served: &Served, args: &[&str], what: &str) {
    let mut cli = ChildGuard(
        Command::new(BIN)
            .args(args)
            .env("SHADOWCOPY_NODE", &served.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let status = wait_for(&mut cli.0, Duration::from_secs(60), what);
    assert!(status.success(), "{what}: `shadowcopy {}` failed: {status}", args.join(" "));
}

/// Every file under `root` (the volume's hidden directory left out), relative, sorted.
fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            if rel == ".shadowcopy" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// `sha256sum` of every file under `root`: relative path → digest.
fn sha256sums(root: &Path) -> BTreeMap<String, String> {
    let names = files(root);
    let out = Command::new("sha256sum").args(&names).current_dir(root).output().unwrap();
    assert!(out.status.success(), "sha256sum failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (digest, name) = l.split_once("  ").unwrap();
            (name.to_string(), digest.to_string())
        })
        .collect()
}

/// The ID of the newest shadow copy of `volume`.
fn newest_shadow(served: &Served, volume: &str) -> String {
    let list = served.json(&["admin", "list", "shadows"]);
    list["shadows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["volume_label"] == volume)
        .max_by_key(|s| s["seq"].as_u64().unwrap())
        .map(|s| s["id"].as_str().unwrap().to_string())
        .unwrap()
}

/// Where `admin list shadows --json` says shadow `id` is exposed.
fn exposed_at(served: &Served, id: &str) -> Option<String> {
    let list = served.json(&["admin", "list", "shadows"]);
    let s = list["shadows"].as_array().unwrap().iter().find(|s| s["id"] == id).cloned()?;
    s["exposed_at"].as_str().map(str::to_string)
}

/// Files the snapshot must show as they were: a sparse file, one with its own owner and mode,
/// nested directories.
fn write_test_files(volume: &Path) {
    let extra = volume.join("extra/deep/er");
    std::fs::create_dir_all(&extra).unwrap();
    let sparse = std::fs::File::create(volume.join("extra/sparse.bin")).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
    sparse.set_len(3 << 20).unwrap();
    sparse.sync_all().unwrap();
    let owned = volume.join("extra/owned.txt");
    std::fs::write(&owned, b"owned by someone else\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(volume.join("extra/deep"), std::fs::Permissions::from_mode(0o751))
        .unwrap();
    std::fs::write(extra.join("leaf.txt"), b"a leaf\n").unwrap();
}

#[test]
fn an_exposed_shadow_reads_as_at_snapshot_time_while_the_volume_changes() {
    if !fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &config(dir.path(), ""));
    let logs = dir.path().join("logs");
    served.cli(&["mail", "load", "--sg", "SG1", "--db", "DB1", "--messages", "50"]);
    // A quiet volume while the reference digests are taken and the snapshot committed.
    served.cli(&["store", "dismount", "SG1"]);
    write_test_files(&logs);
    let before = sha256sums(&logs);
    assert!(before.len() >= 5, "{before:?}");
    served.cli(&["admin", "create", "shadow", "--for", "logs"]);
    let id = newest_shadow(&served, "logs");
    served.cli(&["store", "mount", "SG1"]);

    let mnt = dir.path().join("mnt");
    let _guard = MountGuard(mnt.clone());
    let out = served.cli(&["admin", "expose", "--shadow", &id, "--at", mnt.to_str().unwrap()]);
    assert!(out.contains("exposed read-only"), "{out}");
    assert!(mounted(&mnt), "nothing is mounted at {}", mnt.display());
    assert_eq!(exposed_at(&served, &id).as_deref(), mnt.to_str());

    // The live volume keeps changing while the mount is read.
    let mut load = ChildGuard(
        Command::new(BIN)
            .args(["mail", "load", "--sg", "SG1", "--db", "DB1", "--seconds", "20"])
            .env("SHADOWCOPY_NODE", &served.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(120);
    while sha256sums(&logs) == before {
        assert!(Instant::now() < until, "the mail load never changed the live volume");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sha256sums(&mnt), before, "the exposed shadow differs from the snapshot");

    // Owners, permissions, holes.
    let owned = std::fs::metadata(mnt.join("extra/owned.txt")).unwrap();
    assert_eq!((owned.uid(), owned.gid(), owned.mode() & 0o7777), (1234, 5678, 0o640));
    let deep = std::fs::metadata(mnt.join("extra/deep")).unwrap();
    assert!(deep.is_dir());
    assert_eq!(deep.mode() & 0o7777, 0o751);
    let sparse_file = std::fs::File::open(mnt.join("extra/sparse.bin")).unwrap();
    use rustix::fs::{SeekFrom, seek};
    let data = seek(&sparse_file, SeekFrom::Data(0)).unwrap();
    let hole = seek(&sparse_file, SeekFrom::Hole(data)).unwrap();
    assert!(data > 0 && data <= 1 << 20, "first data at {data}");
    assert!(((1 << 20) + 8192..3 << 20).contains(&hole), "hole after the data at {hole}");
    assert!(seek(&sparse_file, SeekFrom::Data(hole)).is_err(), "no data after the last hole");
    let copy = dir.path().join("sparse.copy");
    let cp = Command::new("cp")
        .args(["--sparse=always"])
        .arg(mnt.join("extra/sparse.bin"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let (a, b) =
        (std::fs::read(&copy).unwrap(), std::fs::read(logs.join("extra/sparse.bin")).unwrap());
    assert!(a == b, "cp --sparse=always copied other bytes");
    assert!(std::fs::metadata(&copy).unwrap().blocks() * 512 < 3 << 20, "the copy is not sparse");

    // tar of the whole mount.
    let tar = Command::new("tar")
        .arg("-cf")
        .arg(dir.path().join("shadow.tar"))
        .arg("-C")
        .arg(&mnt)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "tar failed: {}", String::from_utf8_lossy(&tar.stderr));

    // Writes are refused with EROFS.
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(30), "{what}: {e}");
    };
    erofs(
        std::fs::OpenOptions::new().write(true).open(mnt.join("extra/owned.txt")).map(drop),
        "opening for writing",
    );
    erofs(std::fs::write(mnt.join("new.txt"), b"x"), "creating a file");
    erofs(std::fs::create_dir(mnt.join("newdir")), "creating a directory");
    erofs(std::fs::remove_file(mnt.join("extra/owned.txt")), "removing a file");

    let status = wait_for(&mut load.0, Duration::from_secs(300), "the mail load");
    assert!(status.success());
    assert_eq!(sha256sums(&mnt), before, "the exposed shadow changed with the live volume");

    let out = served.cli(&["admin", "unexpose", "--at", mnt.to_str().unwrap()]);
    assert!(out.contains("no longer exposed"), "{out}");
    assert!(!mounted(&mnt), "still mounted after unexpose");
    assert_eq!(exposed_at(&served, &id), None);
    let ids = served.json(&["events", "--source", "provider", "--id", "8111"]);
    assert!(ids.to_string().contains(&id), "no unexpose event: {ids}");
}

#[test]
fn exposure_survives_restarts_and_deleting_with_a_file_open_does_not_hang() {
    if !fuse_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), "");
    let served = Served::start(dir.path(), &text);
    let logs = dir.path().join("logs");
    write_test_files(&logs);
    served.cli(&["admin", "create", "shadow", "--for", "logs"]);
    let id = newest_shadow(&served, "logs");
    let mnt = dir.path().join("mnt");
    let _guard = MountGuard(mnt.clone());
    served.cli(&["admin", "expose", "--shadow", &id, "--at", mnt.to_str().unwrap()]);
    let leaf = mnt.join("extra/deep/er/leaf.txt");
    assert_eq!(std::fs::read(&leaf).unwrap(), b"a leaf\n");

    // A clean stop unmounts; the start after it mounts again.
    assert!(served.terminate().success());
    assert!(!mounted(&mnt), "the node left its mount behind when it stopped");
    let served = Served::start_with(dir.path(), &dir.path().join("node.toml"));
    assert!(mounted(&mnt), "the persistent shadow was not exposed again after a restart");
    assert_eq!(std::fs::read(&leaf).unwrap(), b"a leaf\n");
    assert_eq!(exposed_at(&served, &id).as_deref(), mnt.to_str());

    // A node killed where it stands leaves a dead mount: the next start replaces it.
    served.kill9();
    let served = Served::start_with(dir.path(), &dir.path().join("node.toml"));
    assert!(mounted(&mnt));
    assert_eq!(std::fs::read(&leaf).unwrap(), b"a leaf\n");

    // A file held open does not make the deletion wait.
    let mut held = std::fs::File::open(&leaf).unwrap();
    let mut first = [0u8; 2];
    held.read_exact(&mut first).unwrap();
    run_within(
        &served,
        &["admin", "delete", "shadows", "--shadow", &id],
        "deleting the exposed shadow",
    );
    assert!(!mounted(&mnt), "the deleted shadow is still mounted");
    drop(held);
    assert_eq!(exposed_at(&served, &id), None);
    let list = served.json(&["admin", "list", "shadows"]);
    assert!(!list.to_string().contains(&id), "{list}");

    // Nothing comes back after a restart: the exposure went with the shadow.
    assert!(served.terminate().success());
    let _served = Served::start_with(dir.path(), &dir.path().join("node.toml"));
    assert!(!mounted(&mnt));
}

/// A btrfs volume's exposed shadow copy, deleted by the oldest-first deletion at the shadow-
/// storage limit (here: the limit shrunk below what it holds), is unexposed first — the
/// mount is gone, with the unexpose event naming why — and the deletion does not hang.
#[test]
fn an_exposed_btrfs_shadow_is_unexposed_before_the_storage_limit_deletes_it() {
    if !fuse_ready() {
        return;
    }
    let Some(b) = volume::btrfs::scratch::ScratchBtrfs::for_test("expose on btrfs") else {
        return;
    };
    let dir = b.mount_point().to_path_buf();
    b.subvolume("logs").unwrap();
    b.subvolume("db").unwrap();
    let text = node::sample::Sample { shadow_max: None, ..Default::default() }.toml(&dir);
    let text = text.replace("create = true\n", "create = true\nprovider = \"btrfs\"\n");
    let served = Served::start(&dir, &text);

    // Written by another program, straight into the subvolume: btrfs snapshots it anyway.
    let data = dir.join("logs/other.bin");
    std::fs::write(&data, vec![1u8; 4 << 20]).unwrap();
    served.cli(&["admin", "create", "shadow", "--for", "logs"]);
    let id = newest_shadow(&served, "logs");
    let outside = tempfile::tempdir().unwrap();
    let mnt = outside.path().join("mnt");
    let _guard = MountGuard(mnt.clone());
    served.cli(&["admin", "expose", "--shadow", &id, "--at", mnt.to_str().unwrap()]);
    assert_eq!(std::fs::read(mnt.join("other.bin")).unwrap(), vec![1u8; 4 << 20]);

    // The snapshot alone holds the old 4 MiB now; a 1 MiB limit deletes it.
    std::fs::write(&data, vec![2u8; 4 << 20]).unwrap();
    let mut held = std::fs::File::open(mnt.join("other.bin")).unwrap();
    let mut first = [0u8; 2];
    held.read_exact(&mut first).unwrap();
    let shrink = ["admin", "resize", "shadowstorage", "--for", "logs", "--maxsize", "1MiB"];
    run_within(&served, &shrink, "shrinking the shadow-storage limit");
    drop(held);
    assert!(!mounted(&mnt), "the shadow deleted at the limit is still mounted");
    assert_eq!(exposed_at(&served, &id), None);
    let list = served.json(&["admin", "list", "shadows"]);
    assert!(!list.to_string().contains(&id), "the oldest shadow was not deleted: {list}");
    let overflow = served.json(&["events", "--source", "provider", "--id", "8102"]);
    assert!(overflow.to_string().contains(&id), "no overflow event: {overflow}");
    let unexposed = served.json(&["events", "--source", "provider", "--id", "8111"]);
    assert!(unexposed.to_string().contains(&id), "no unexpose event: {unexposed}");
    assert!(unexposed.to_string().contains("deleted"), "no reason given: {unexposed}");
}
