//! A live write never fails because of a snapshot: when preserving a block fails (here the
//! shadow storage's file-size limit is hit: `RLIMIT_FSIZE` makes the diff-area append fail with
//! EFBIG), the snapshot is deleted, the failure and the deletion are reported, and the write
//! succeeds. Runs in a child process so the resource limit touches nothing else.

// Test code: a failed unwrap is a failed test, with its line (clippy.toml allows them in
// #[test] functions; this covers the helpers as well).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use volume::fs::read_all;
use volume::{DeleteReason, FileSystem, OpenMode, Volume, VolumeEvent, VolumeOptions};

const CHILD_ENV: &str = "SHADOWCOPY_STORAGE_ERROR_CHILD_DIR";

#[test]
fn storage_error_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let dir = PathBuf::from(dir);
    let v = Volume::create(dir.join("v"), VolumeOptions { label: "v".into(), block_size: 4096 })
        .unwrap();
    let rx = v.subscribe();
    let f = v.open(Path::new("f"), OpenMode::Create).unwrap();
    f.write_at(&[1u8; 160 * 1024], 0).unwrap();
    f.sync().unwrap();
    let s = v.snapshot(false).unwrap();
    // SAFETY: plain libc calls with valid arguments; this process is a dedicated child.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit { rlim_cur: 164_000, rlim_max: libc::RLIM_INFINITY };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    // 40 blocks: the live file stays under the limit, the diff log (4 KiB + a 40-byte header
    // per block) passes it on the 40th block.
    f.write_at(&[2u8; 160 * 1024], 0).unwrap();
    assert_eq!(read_all(&v, Path::new("f")).unwrap(), vec![2u8; 160 * 1024]);
    assert!(v.view(s.id).is_err(), "the snapshot that could not be kept exact is gone");
    let evs: Vec<_> = rx.try_iter().collect();
    assert!(evs.iter().any(
        |e| matches!(e, VolumeEvent::PreservationFailed { snapshot, .. } if *snapshot == s.id)
    ));
    assert!(evs.iter().any(|e| matches!(e, VolumeEvent::SnapshotDeleted {
        snapshot, reason: DeleteReason::PreservationFailed, .. } if *snapshot == s.id)));
    println!("CHILD-OK");
}

#[test]
fn preservation_failure_deletes_the_snapshot_and_the_write_succeeds() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "storage_error_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CHILD-OK"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
