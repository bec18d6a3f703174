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

/// `tests/fixtures/repo-format2`: the format-1 fixture's set copied, by the build of that
/// time (`shadowcopy backup copy`), into an encrypted format-2 repository (password below):
/// keyed chunk ids, sealed objects, zstd chunks, whole-content file hashes.
const FORMAT2_PASSWORD: &str = "format two fixture";

fn fixture2() -> (tempfile::TempDir, std::path::PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-format2");
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("repo");
    copy_dir(&src, &at);
    (dir, at)
}

#[test]
fn a_format_2_repository_opens_reads_and_verifies() {
    let (_dir, at) = fixture2();
    let repo = Arc::new(Repository::open_host_with(&at, Some(FORMAT2_PASSWORD)).unwrap());
    assert_eq!(repo.config().format, 2);
    assert!(repo.is_encrypted());
    assert_eq!(repo.config().compression_setting(), backup::repo::Compression::Zstd(1));
    let set = repo.load_set("cfe8c479").unwrap();
    assert!(set.files.iter().all(|f| !f.blake3.is_empty() && f.chunks_blake3.is_none()));
    let v = backup::verify_set(&repo, &set, &Quiet).unwrap();
    assert_eq!(v.physical.databases, 1);
    // Its files are those of the format-1 set, byte for byte.
    let (_d1, old) = fixture();
    for (a, b) in set.files.iter().zip(&old.load_set("cfe8c479").unwrap().files) {
        assert_eq!((&a.path, &a.blake3), (&b.path, &b.blake3));
        assert_eq!(content(&repo, a), content(&old, b), "{}", a.path);
    }
}

fn content(repo: &Repository, f: &backup::repo::FileEntry) -> Vec<u8> {
    let mut out = vec![0u8; f.size as usize];
    repo.read_file(f, &mut |off, d| {
        out[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    })
    .unwrap();
    out
}

/// A set written now into a format-2 repository raises its format (a build that reads only
/// format 2 then refuses the repository rather than its new sets), and both sets read.
#[test]
fn a_new_set_in_a_format_2_repository_raises_its_format_and_both_read() {
    let (_dir, at) = fixture2();
    let repo = Repository::open_host_with(&at, Some(FORMAT2_PASSWORD)).unwrap();
    let old = repo.load_set("cfe8c479").unwrap();
    let mut w = repo.begin_set();
    let data = store::load::body(300_000, 3);
    let mem = volume::MemFs::new();
    let f = mem.as_ref().open(Path::new("f"), volume::OpenMode::Create).unwrap();
    f.write_at(&data, 0).unwrap();
    w.add_file("db/f", FileRole::Database, "c", f.as_ref(), &|_| {}).unwrap();
    let new = w.publish(backup::repo::SetMeta::default()).unwrap();
    drop(repo);
    let repo = Repository::open_host_with(&at, Some(FORMAT2_PASSWORD)).unwrap();
    assert_eq!(repo.config().format, backup::repo::REPO_FORMAT);
    assert_eq!(repo.config().compression_setting(), backup::repo::Compression::Zstd(1));
    assert_eq!(content(&repo, &new.files[0]), data);
    repo.verify_set(&old, &|_| {}).unwrap();
}

/// Copying an old set into a new repository hashes its files whole on the way (their
/// identity is a content hash) and gives the copies chunk-list identities.
#[test]
fn an_old_set_copies_into_a_new_repository() {
    let (_dir, repo) = fixture();
    let from = Arc::new(repo);
    let to_dir = tempfile::tempdir().unwrap();
    let fs: FsRef = Arc::new(HostFs::new(to_dir.path()).unwrap());
    let opts = backup::repo::InitOptions { chunk_size: 64 << 10, ..Default::default() };
    let to = Repository::init(fs, "", opts).unwrap();
    let report = backup::repo::transfer::copy_sets(&from, &to, &[], &|_| {}).unwrap();
    assert_eq!(report.copied.len(), 1);
    let copy = to.load_set("cfe8c479").unwrap();
    let old = from.load_set("cfe8c479").unwrap();
    for (a, b) in old.files.iter().zip(&copy.files) {
        assert!(b.chunks_blake3.is_some() && b.blake3.is_empty(), "{b:?}");
        assert_eq!(content(&from, a), content(&to, b), "{}", a.path);
    }
}
