//! Requests known invalid create nothing (issue 12, item 5): the node opens repositories and
//! restore targets through these calls, so what they leave behind is what a refused command
//! leaves behind.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use backup::repo::{RepoError, Repository};
use backup::{BackupRequest, Quiet, RequesterError, RestoreRequest, RestoreTarget, Restorer};
use vss::BackupType;

/// `backup list --repo /nonexistent`: no directory appears, and the error names the path.
#[test]
fn opening_a_missing_repository_creates_nothing_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nonexistent");
    let err = Repository::open_host(&missing).unwrap_err();
    assert!(
        matches!(&err, RepoError::NotARepository { path } if *path == missing),
        "not a repository, at the path asked for: {err:?}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(!missing.exists(), "opening a missing repository created {}", missing.display());

    // A directory that exists but holds no repository is named too, and left as it was.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = Repository::open_host(&empty).unwrap_err();
    assert!(err.to_string().contains(&empty.display().to_string()), "{err}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing written into it");
}

/// `backup run --sg NOPE --repo /new`: refused before a repository is created; a valid
/// request creates it.
#[test]
fn a_backup_of_an_unknown_storage_group_creates_no_repository() {
    let n = common::node();
    let new = n.dir.path().join("new-repo");
    let vols = n.volume_dirs();
    let req = |sg: &str, databases: Vec<String>| BackupRequest {
        storage_group: sg.into(),
        backup_type: BackupType::Full,
        databases,
        replica: None,
        history_nodes: vec![],
    };
    let err =
        backup::repository_for_backup(&n.store, &req("NOPE", vec![]), &new, &vols).unwrap_err();
    assert!(
        matches!(err, RequesterError::Store(store::StoreError::NoSuchStorageGroup(ref sg)) if sg == "NOPE"),
        "{err:?}"
    );
    assert!(!new.exists(), "a refused backup created {}", new.display());
    let err =
        backup::repository_for_backup(&n.store, &req("SG1", vec!["NODB".into()]), &new, &vols)
            .unwrap_err();
    assert!(matches!(err, RequesterError::NoSuchDatabase { .. }), "{err:?}");
    assert!(!new.exists(), "a refused backup created {}", new.display());

    let repo = backup::repository_for_backup(&n.store, &req("SG1", vec![]), &new, &vols).unwrap();
    assert!(new.join("repository.json").is_file(), "a valid request creates the repository");
    assert_eq!(repo.list_sets().unwrap().len(), 0);
}

/// `restore --set deadbeef --to /x`: refused, and no `/x` is left behind.
#[test]
fn a_restore_of_an_unknown_set_leaves_no_target_directory() {
    let n = common::node();
    let target = n.dir.path().join("x");
    let (to, root) = RestoreTarget::host_dir(&target).unwrap();
    assert_eq!(root, n.dir.path(), "rooted at the nearest existing ancestor");
    assert!(!target.exists(), "making the target created {}", target.display());
    let restorer = Restorer::new(
        n.coordinator.clone(),
        n.store.clone(),
        Arc::new(Repository::open(n.repo_fs.clone(), "").unwrap()),
        n.events.clone(),
    );
    let req = RestoreRequest { set: "deadbeef".into(), target: to, roll_forward: false };
    let err = restorer.restore(&req, &Quiet).unwrap_err();
    assert!(
        matches!(err, RequesterError::Repo(RepoError::SetNotFound(ref s)) if s == "deadbeef"),
        "{err:?}"
    );
    assert!(!target.exists(), "a refused restore left {}", target.display());

    // A target deeper than any existing directory is created whole by a valid restore only.
    let deep = n.dir.path().join("a/b/c");
    let (_, root) = RestoreTarget::host_dir(&deep).unwrap();
    assert_eq!(root, n.dir.path());
    assert!(!n.dir.path().join("a").exists());
    assert!(RestoreTarget::host_dir(std::path::Path::new("relative/x")).is_err());
}

/// Issue 12: a repository inside a live log or database directory (or anywhere on a volume of
/// the node) is refused naming both paths, before anything is created; a path that only
/// looks like it is outside (`..`, a symbolic link) is resolved first.
#[test]
fn a_repository_inside_a_live_directory_is_refused_naming_both_paths() {
    let n = common::node();
    let vols = n.volume_dirs();
    let req = BackupRequest {
        storage_group: "SG1".into(),
        backup_type: BackupType::Full,
        databases: vec![],
        replica: None,
        history_nodes: vec![],
    };
    let root = n.dir.path();
    std::os::unix::fs::symlink(root.join("vol-db"), root.join("db-link")).unwrap();
    let cases = [
        (root.join("vol-logs/SG1/logs/repo"), "log directory of storage group SG1", "SG1/logs"),
        (root.join("vol-logs/SG1/system/repo"), "system directory of storage group SG1", "system"),
        (root.join("vol-db/SG1/repo"), "database directory of DB1", "vol-db/SG1"),
        (root.join("vol-db/backups"), "volume db", "vol-db"),
        (root.join("vol-logs"), "volume logs", "vol-logs"),
        (root.join("elsewhere/../vol-db/r"), "volume db", "vol-db"),
        (root.join("db-link/SG1/r"), "database directory of DB1", "vol-db/SG1"),
    ];
    for (path, what, live) in cases {
        let existed = path.exists();
        let err = backup::repository_for_backup(&n.store, &req, &path, &vols).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RequesterError::Refused(_)), "{path:?}: {text}");
        assert!(text.contains(what) && text.contains(live), "{path:?}: {text}");
        assert!(text.contains(&path.display().to_string()), "names the repository: {text}");
        assert_eq!(path.exists(), existed, "a refused backup created {}", path.display());
    }
    // Beside the volumes is fine.
    backup::repository_for_backup(&n.store, &req, &root.join("vol-logs-backups"), &vols).unwrap();
}
