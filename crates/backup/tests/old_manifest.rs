//! Repositories written before the manifest's backup type and file roles became enums still
//! read: `tests/fixtures/repo-format1` is a full backup of a one-database storage group
//! written by the code of that time (strings in the manifest), kept byte for byte.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use backup::Quiet;
use backup::repo::{FileRole, Repository};
use volume::{FsRef, HostFs};
use vss::BackupType;

fn fixture() -> (tempfile::TempDir, Repository) {
    // A copy, so that nothing a test does can change the committed fixture.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-format1");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&src, &dir.path().join("repo"));
    let fs: FsRef = Arc::new(HostFs::new(dir.path()).unwrap());
    let repo = Repository::open(fs, "repo").unwrap();
    (dir, repo)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_manifest_written_before_the_enums_reads_with_its_type_and_roles() {
    let (_dir, repo) = fixture();
    let sets = repo.list_sets().unwrap();
    assert_eq!(sets.len(), 1, "the fixture holds one set");
    let set = &sets[0];
    assert_eq!(set.id.to_string(), "cfe8c479-ac43-4ec1-9337-2b5da75a3c83");
    assert_eq!(set.backup_type, BackupType::Full);
    assert_eq!(set.storage_group, "SG1");
    let roles: Vec<(&str, FileRole)> =
        set.files.iter().map(|f| (f.path.as_str(), f.role)).collect();
    assert_eq!(
        roles,
        [
            ("db/SG1/DB1.edb", FileRole::Database),
            ("logs/SG1/logs/E0000000001.log", FileRole::Log),
            ("logs/SG1/system/E00.chk", FileRole::Checkpoint),
        ]
    );
    // Loading by prefix goes through the same decoding.
    assert_eq!(repo.load_set("cfe8c479").unwrap(), *set);
    // Every hash, page and log record of the old set still checks out.
    let v = backup::verify_set(&Arc::new(repo), set, &Quiet).unwrap();
    assert_eq!(v.physical.databases, 1);
    assert_eq!((v.physical.first, v.physical.last), (1, 1));
}

#[test]
fn the_enums_write_the_names_the_old_manifests_hold() {
    let (_dir, repo) = fixture();
    let set = repo.load_set("cfe8c479").unwrap();
    let stored = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/repo-format1/sets/cfe8c479-ac43-4ec1-9337-2b5da75a3c83.manifest"),
    )
    .unwrap();
    // Re-encoding the decoded set gives back the stored bytes: every name is the same.
    assert_eq!(String::from_utf8(set.encode()).unwrap(), stored);
}
