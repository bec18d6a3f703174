//! Encryption at rest: an encrypted repository round-trips, refuses wrong passwords, detects
//! any damaged object and names it, keeps chunk ids secret per repository, and its keys can be
//! added and retired; format-1 repositories still open.

// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backup::repo::{
    BackupSet, FileEntry, FileRole, InitOptions, KdfParams, Password, RepoError, Repository,
    SetMeta,
};
use volume::fs::{FileSystem, OpenMode};
use volume::{FsRef, HostFs};

const CHUNK: u32 = 4096;
const PASSWORD: &str = "correct horse battery staple";

fn opts(password: Option<&str>) -> InitOptions {
    InitOptions {
        chunk_size: CHUNK,
        zstd_level: 1,
        password: password.map(Password::new),
        kdf: KdfParams::insecure_fast(),
        ..InitOptions::default()
    }
}

/// A temporary directory with a new repository in `repo/`.
fn new_repo(password: Option<&str>) -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let fs: FsRef = Arc::new(HostFs::new(dir.path()).unwrap());
    fs.create_dir_all(Path::new("repo")).unwrap();
    let repo = Repository::init(fs, "repo", opts(password)).unwrap();
    (dir, repo)
}

fn open(dir: &tempfile::TempDir, password: Option<&str>) -> Result<Repository, RepoError> {
    Repository::open_host_with(&dir.path().join("repo"), password)
}

fn text() -> Vec<u8> {
    b"Subject: hello\r\n".iter().copied().cycle().take(50_000).collect()
}

fn noise() -> Vec<u8> {
    store::load::random_body(3 * CHUNK as usize + 17, 1)
}

/// Backs up `files` (name, content) as one set.
fn backup(repo: &Repository, files: &[(&str, Vec<u8>)]) -> BackupSet {
    let src = volume::mem::MemFs::new();
    let mut w = repo.begin_set();
    for (name, data) in files {
        let f = src.open(Path::new(name), OpenMode::Create).unwrap();
        f.write_at(data, 0).unwrap();
        w.add_file(&format!("vol/{name}"), FileRole::Database, "sg1/db1", f.as_ref(), &|_| {})
            .unwrap();
    }
    let meta =
        SetMeta { node: "n1".into(), backup_type: vss::BackupType::Full, ..Default::default() };
    w.publish(meta).unwrap()
}

fn restore(repo: &Repository, e: &FileEntry) -> Result<Vec<u8>, RepoError> {
    let mut out = vec![0u8; e.size as usize];
    repo.read_file(e, &mut |off, d| {
        out[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    })?;
    Ok(out)
}

/// The files of `dir` under the repository ending in `suffix`.
fn objects(dir: &tempfile::TempDir, sub: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path().join("repo").join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn authentication_object(e: RepoError) -> String {
    match e {
        RepoError::Authentication { object } => object,
        other => panic!("expected an authentication failure, got {other:?}"),
    }
}

#[test]
fn an_encrypted_repository_round_trips_and_stores_no_clear_text() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    assert!(repo.is_encrypted());
    let set = backup(&repo, &[("text", text()), ("noise", noise()), ("empty", Vec::new())]);
    drop(repo);

    let repo = open(&dir, Some(PASSWORD)).unwrap();
    assert!(repo.is_encrypted());
    assert_eq!(repo.crypto().name(), "xchacha20-poly1305");
    assert_eq!(repo.list_sets().unwrap(), vec![set.clone()]);
    assert_eq!(repo.load_set(&set.id.to_string()[..8]).unwrap(), set);
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), text());
    assert_eq!(restore(&repo, &set.files[1]).unwrap(), noise());
    assert_eq!(restore(&repo, &set.files[2]).unwrap(), b"");
    repo.verify_set(&set, &|_| {}).unwrap();

    let config = std::fs::read_to_string(dir.path().join("repo/repository.json")).unwrap();
    assert!(config.contains("\"encryption\": \"xchacha20-poly1305\""), "{config}");
    assert!(config.contains("\"format\": 3"), "{config}");
    // Neither the file names (manifests) nor their content (packs) are in clear anywhere.
    for sub in ["packs", "sets", "keys"] {
        for p in objects(&dir, sub, "") {
            let bytes = std::fs::read(&p).unwrap();
            for needle in [&b"Subject: hello"[..], b"vol/text", b"sg1/db1"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds {:?} in clear",
                    p.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
}

#[test]
fn a_wrong_or_missing_password_is_refused_naming_the_repository() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    backup(&repo, &[("text", text())]);
    drop(repo);
    let err = open(&dir, Some("not it")).unwrap_err();
    assert!(matches!(err, RepoError::WrongPassword { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("wrong password") && msg.contains("repo"), "{msg}");
    let err = open(&dir, None).unwrap_err();
    assert!(matches!(err, RepoError::PasswordRequired { .. }), "{err:?}");
    assert!(err.to_string().contains("password is required"), "{err}");
}

#[test]
fn a_flipped_byte_in_a_chunk_is_detected_naming_the_chunk_and_pack() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    let set = backup(&repo, &[("noise", noise())]);
    drop(repo);
    let pack = objects(&dir, "packs", ".pack").remove(0);
    flip_byte(&pack, 100);
    let repo = open(&dir, Some(PASSWORD)).unwrap();
    let object = authentication_object(repo.verify_set(&set, &|_| {}).unwrap_err());
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    assert!(object.starts_with("chunk ") && object.contains(&pack_name), "{object}");
}

#[test]
fn a_flipped_byte_in_a_pack_index_is_detected_naming_the_index() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    backup(&repo, &[("noise", noise())]);
    drop(repo);
    let idx = objects(&dir, "packs", ".idx").remove(0);
    flip_byte(&idx, 30);
    let object = authentication_object(open(&dir, Some(PASSWORD)).unwrap_err());
    let idx_name = idx.file_name().unwrap().to_string_lossy().into_owned();
    assert!(object.contains(&idx_name), "{object}");
}

#[test]
fn a_flipped_byte_in_a_manifest_is_detected_naming_the_set() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    let set = backup(&repo, &[("text", text())]);
    drop(repo);
    flip_byte(&objects(&dir, "sets", ".manifest").remove(0), 40);
    let repo = open(&dir, Some(PASSWORD)).unwrap();
    let object = authentication_object(repo.list_sets().unwrap_err());
    assert!(object.contains("manifest") && object.contains(&set.id.to_string()), "{object}");
}

#[test]
fn a_flipped_byte_in_a_key_file_is_detected_naming_the_key_file() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    drop(repo);
    let key = objects(&dir, "keys", "").remove(0);
    let len = std::fs::metadata(&key).unwrap().len() as usize;
    // Anywhere in the file: in a field, in the wrapped key, in the JSON's punctuation.
    for at in [len / 4, len / 2, len - 10] {
        let saved = std::fs::read(&key).unwrap();
        flip_byte(&key, at);
        match open(&dir, Some(PASSWORD)).unwrap_err() {
            RepoError::CorruptKey { path, .. } => {
                assert!(key.ends_with(&path), "byte {at}: {} names another file", path.display())
            }
            other => panic!("byte {at}: expected a damaged key file, got {other:?}"),
        }
        std::fs::write(&key, saved).unwrap();
    }
    open(&dir, Some(PASSWORD)).unwrap();
}

#[test]
fn two_encrypted_repositories_name_the_same_chunk_differently() {
    let (_d1, one) = new_repo(Some(PASSWORD));
    let (_d2, two) = new_repo(Some(PASSWORD));
    let (_d3, clear) = new_repo(None);
    let ids = |repo: &Repository| -> Vec<String> {
        backup(repo, &[("noise", noise())]).files[0].chunks.iter().map(|c| c.hash.clone()).collect()
    };
    let (a, b, c) = (ids(&one), ids(&two), ids(&clear));
    assert_eq!(a.len(), 4);
    for i in 0..a.len() {
        assert_ne!(a[i], b[i], "chunk {i}: the same id in two encrypted repositories");
        assert_ne!(a[i], c[i], "chunk {i}: an encrypted id equals the plain hash");
    }
    assert!(!clear.is_encrypted());
    assert_eq!(clear.crypto().name(), "none");
}

#[test]
fn keys_are_added_listed_and_retired() {
    let (dir, repo) = new_repo(Some(PASSWORD));
    let set = backup(&repo, &[("text", text())]);
    let first = repo.key_id().unwrap();
    let second = repo.add_key("second password", KdfParams::insecure_fast()).unwrap();
    let keys = repo.list_keys().unwrap();
    assert_eq!(
        keys.iter().map(|k| (k.id, k.current)).collect::<Vec<_>>(),
        [(first, true), (second, false)]
    );
    // The key in use cannot go.
    let err = repo.remove_key(&first.to_string()).unwrap_err();
    assert!(matches!(err, RepoError::KeyKept { .. }), "{err:?}");
    drop(repo);

    let repo = open(&dir, Some("second password")).unwrap();
    assert_eq!(repo.key_id(), Some(second));
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), text());
    assert_eq!(repo.remove_key(&first.to_string()[..8]).unwrap(), first);
    // The last key cannot go.
    let err = repo.remove_key(&second.to_string()).unwrap_err();
    assert!(matches!(err, RepoError::KeyKept { .. }), "{err:?}");
    let err = repo.remove_key("ffffffff").unwrap_err();
    assert!(matches!(err, RepoError::KeyNotFound(_)), "{err:?}");
    drop(repo);

    let err = open(&dir, Some(PASSWORD)).unwrap_err();
    assert!(
        matches!(err, RepoError::WrongPassword { .. }),
        "the old password still opens: {err:?}"
    );
    open(&dir, Some("second password")).unwrap();
}

#[test]
fn a_clear_repository_opens_without_a_password_and_has_no_keys() {
    let (dir, repo) = new_repo(None);
    let set = backup(&repo, &[("text", text())]);
    drop(repo);
    let repo = open(&dir, None).unwrap();
    assert!(!repo.is_encrypted());
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), text());
    assert!(matches!(repo.list_keys().unwrap_err(), RepoError::NotEncrypted { .. }));
    let config = std::fs::read_to_string(dir.path().join("repo/repository.json")).unwrap();
    assert!(config.contains("\"encryption\": \"none\""), "{config}");
}

#[test]
fn the_format_1_fixture_opens_unencrypted_and_verifies() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-format1");
    // Opening reads only; a password is ignored for a clear repository.
    let repo = Repository::open_host_with(&fixture, Some(PASSWORD)).unwrap();
    assert_eq!(repo.config().format, 1);
    assert!(!repo.is_encrypted());
    let sets = repo.list_sets().unwrap();
    assert_eq!(sets.len(), 1);
    repo.verify_set(&sets[0], &|_| {}).unwrap();
}
