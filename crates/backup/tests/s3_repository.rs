//! The repository's behaviour, written once against [`Backend`] and run against a local
//! directory and against a real S3-protocol server (`moto_server` on loopback): backup through
//! `SetWriter`, list, verify, restore, remove, forget, prune, copy between repositories; a set
//! whose pack could not be stored is never published; errors name the object.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/s3_server.rs"]
mod s3_server;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use backup::repo::{
    Backend, BackupSet, FileEntry, FileRole, InitOptions, LocalBackend, ObjectInfo, RepoError,
    RepoLocation, Repository, S3Backend, S3Settings, SetMeta,
};
use s3_server::S3Server;
use volume::fs::{FileSystem, FsRef, OpenMode};
use volume::{HostFs, MemFs};

const CHUNK: u32 = 4096;
const BUCKET: &str = "shadowcopy-test";

fn small() -> InitOptions {
    InitOptions { chunk_size: CHUNK, zstd_level: 1, ..InitOptions::default() }
}

fn settings(server: &S3Server) -> S3Settings {
    S3Settings {
        endpoint: Some(server.endpoint.clone()),
        region: Some(s3_server::REGION.into()),
        access_key_id: Some(s3_server::ACCESS_KEY_ID.into()),
        secret_access_key: Some(s3_server::SECRET_ACCESS_KEY.into()),
        allow_http: Some(true),
    }
}

fn s3_backend(server: &S3Server, prefix: &str) -> Arc<dyn Backend> {
    Arc::new(S3Backend::new(&server.bucket, prefix, &settings(server)).unwrap())
}

fn local_backend(dir: &Path) -> Arc<dyn Backend> {
    let fs: FsRef = Arc::new(HostFs::new(dir).unwrap());
    Arc::new(LocalBackend::new(fs, ""))
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    store::load::random_body(len, seed)
}

fn put(fs: &dyn FileSystem, path: &str, data: &[u8]) {
    let f = fs.open(Path::new(path), OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(data, 0).unwrap();
}

fn restore(repo: &Repository, e: &FileEntry) -> Result<Vec<u8>, RepoError> {
    let mut out = vec![0u8; e.size as usize];
    repo.read_file(e, &mut |off, d| {
        out[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    })?;
    Ok(out)
}

/// Backs up `names` of `src` as one set, with small packs so that several are stored while
/// the copy goes on.
fn backup(repo: &Repository, src: &dyn FileSystem, names: &[&str]) -> Result<BackupSet, RepoError> {
    let mut w = repo.begin_set().with_pack_target(8 * CHUNK as u64);
    for n in names {
        let f = src.open(Path::new(n), OpenMode::Read).unwrap();
        w.add_file(&format!("vol/{n}"), FileRole::Database, "sg1/db1", f.as_ref(), &|_| {})?;
    }
    let meta =
        SetMeta { node: "n1".into(), backup_type: vss::BackupType::Full, ..Default::default() };
    w.publish(meta)
}

/// The object names under `dir`, sorted.
fn names(backend: &dyn Backend, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = backend.list(dir).unwrap().into_iter().map(|o| o.name).collect();
    v.sort();
    v
}

/// Backup, list, reopen, restore, verify, deduplication, removal.
fn sets_round_trip(backend: Arc<dyn Backend>) {
    let at = backend.locate("");
    let src = MemFs::new();
    let text: Vec<u8> = b"Subject: hello\r\n".iter().copied().cycle().take(50_000).collect();
    let data = noise(30 * CHUNK as usize + 17, 1);
    put(&src, "text", &text);
    put(&src, "noise", &data);
    put(&src, "empty", b"");

    let repo = Repository::init_in(backend.clone(), small()).unwrap();
    assert!(matches!(
        Repository::init_in(backend.clone(), small()).unwrap_err(),
        RepoError::AlreadyExists { .. }
    ));
    let set = backup(&repo, &src, &["text", "noise", "empty"]).unwrap();
    let packs = names(backend.as_ref(), "packs");
    let pack_count = packs.iter().filter(|n| n.ends_with(".pack")).count();
    assert!(pack_count >= 3, "{at:?}: several small packs: {packs:?}");
    assert_eq!(pack_count * 2, packs.len(), "{at:?}: every pack has its index: {packs:?}");
    drop(repo);

    let repo = Repository::open_in(backend.clone()).unwrap();
    assert_eq!(repo.list_sets().unwrap(), vec![set.clone()], "{at:?}");
    assert_eq!(repo.load_set(&set.id.to_string()[..8]).unwrap(), set);
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), text);
    assert_eq!(restore(&repo, &set.files[1]).unwrap(), data);
    assert_eq!(restore(&repo, &set.files[2]).unwrap(), b"");
    repo.verify_set(&set, &|_| {}).unwrap();
    let stats = repo.stats().unwrap();
    assert!(stats.stored_bytes < stats.raw_bytes, "{at:?}: text compresses: {stats:?}");

    // The same content again stores nothing new.
    let mut w = repo.begin_set();
    let f = src.open(Path::new("noise"), OpenMode::Read).unwrap();
    w.add_file("vol/noise", FileRole::Database, "sg1/db1", f.as_ref(), &|_| {}).unwrap();
    assert_eq!(w.stored_bytes(), 0, "{at:?}: a repeated full stores nothing new");
    let again = w.publish(SetMeta::default()).unwrap();
    assert_eq!(repo.list_sets().unwrap().len(), 2);

    repo.remove_set(&set.id).unwrap();
    assert_eq!(repo.list_sets().unwrap(), vec![again.clone()], "{at:?}");
    assert!(matches!(repo.remove_set(&set.id).unwrap_err(), RepoError::SetNotFound(_)));
    // Its chunks stay (until a prune): the other set still restores.
    assert_eq!(restore(&repo, &again.files[0]).unwrap(), data);
}

/// Fails every store of a pack after the first `allow` of them.
struct FailingPacks {
    inner: Arc<dyn Backend>,
    allow: usize,
    stored: AtomicUsize,
    /// Panic (a bug in a backend) instead of failing.
    panic: bool,
}

impl Backend for FailingPacks {
    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        if key.ends_with(".pack") && self.stored.fetch_add(1, Ordering::SeqCst) >= self.allow {
            if self.panic {
                panic!("injected: a bug while storing {key}");
            }
            return Err(io::Error::other(format!("injected: storing {key} failed")));
        }
        self.inner.put(key, data)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<ObjectInfo>> {
        self.inner.list(dir)
    }
    fn delete(&self, key: &str) -> io::Result<()> {
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> io::Result<bool> {
        self.inner.exists(key)
    }
    fn locate(&self, key: &str) -> PathBuf {
        self.inner.locate(key)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
}

/// A set is published only after every one of its packs is stored: a failed store fails the
/// backup, naming the pack, and leaves no set behind; the repository still works.
fn a_failed_pack_store_publishes_nothing(backend: Arc<dyn Backend>) {
    let at = backend.locate("");
    let src = MemFs::new();
    put(&src, "db", &noise(40 * CHUNK as usize, 7));
    Repository::init_in(backend.clone(), small()).unwrap();
    let failing: Arc<dyn Backend> = Arc::new(FailingPacks {
        inner: backend.clone(),
        allow: 2,
        stored: AtomicUsize::new(0),
        panic: false,
    });
    let repo = Repository::open_in(failing).unwrap();
    let err = backup(&repo, &src, &["db"]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("injected") && msg.contains(".pack"), "{at:?}: {msg}");
    assert!(msg.contains(&*backend.locate("packs").to_string_lossy()), "{at:?}: {msg}");
    drop(repo);

    // A caller that goes on past the failed store (its error ignored) still cannot publish:
    // the lost pack's chunks are in no stored pack, and a manifest would name them.
    put(&src, "other", &noise(40 * CHUNK as usize, 8));
    let failing: Arc<dyn Backend> = Arc::new(FailingPacks {
        inner: backend.clone(),
        allow: 1,
        stored: AtomicUsize::new(0),
        panic: false,
    });
    let repo = Repository::open_in(failing).unwrap();
    let mut w = repo.begin_set().with_pack_target(8 * CHUNK as u64);
    let f = src.open(Path::new("other"), OpenMode::Read).unwrap();
    let ignored = w.add_file("vol/other", FileRole::Database, "sg1/db1", f.as_ref(), &|_| {}).err();
    let published = w.publish(SetMeta::default());
    assert!(published.is_err(), "{at:?}: published after a failed store ({ignored:?})");
    drop(repo);

    let repo = Repository::open_in(backend.clone()).unwrap();
    assert!(repo.list_sets().unwrap().is_empty(), "{at:?}: no set was published");
    assert!(names(backend.as_ref(), "sets").is_empty(), "{at:?}: no manifest was stored");
    let set = backup(&repo, &src, &["db"]).unwrap();
    repo.verify_set(&set, &|_| {}).unwrap();
}

/// A missing object is NotFound to the caller, and the repository's errors name the object.
fn errors_name_the_object(backend: Arc<dyn Backend>) {
    let err = backend.get("packs/missing.pack").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(!backend.exists("packs/missing.pack").unwrap());
    assert_eq!(backend.delete("packs/missing.pack").unwrap_err().kind(), io::ErrorKind::NotFound);
    assert!(backend.list("nothing-here").unwrap().is_empty());

    let src = MemFs::new();
    put(&src, "db", &noise(10 * CHUNK as usize, 9));
    let repo = Repository::init_in(backend.clone(), small()).unwrap();
    let set = backup(&repo, &src, &["db"]).unwrap();
    let pack = names(backend.as_ref(), "packs").into_iter().find(|n| n.ends_with(".pack")).unwrap();
    let key = format!("packs/{pack}");
    backend.delete(&key).unwrap();
    let msg = repo.verify_set(&set, &|_| {}).unwrap_err().to_string();
    let where_ = backend.locate(&key);
    assert!(msg.contains(&*where_.to_string_lossy()), "{msg} does not name {where_:?}");
}

fn on_both(name: &str, body: fn(Arc<dyn Backend>)) {
    let dir = tempfile::tempdir().unwrap();
    body(local_backend(dir.path()));
    let Some(server) = S3Server::start(BUCKET) else { return };
    body(s3_backend(&server, &format!("{name}/repo")));
}

#[test]
fn sets_round_trip_on_a_directory_and_on_s3() {
    on_both("round-trip", sets_round_trip);
}

#[test]
fn a_failed_pack_store_publishes_nothing_on_a_directory_and_on_s3() {
    on_both("failed-pack", a_failed_pack_store_publishes_nothing);
}

/// A pack store that panics (a bug) ends the copy with its panic, never with a hang: every
/// thread of the copy ends, no set is published, and the repository still works.
#[test]
fn a_panicking_pack_store_ends_the_copy_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let backend = local_backend(dir.path());
    let src = MemFs::new();
    put(&src, "db", &noise(40 * CHUNK as usize, 9));
    Repository::init_in(backend.clone(), small()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (failing_backend, src2) = (backend.clone(), src.clone());
    std::thread::spawn(move || {
        let failing: Arc<dyn Backend> = Arc::new(FailingPacks {
            inner: failing_backend,
            allow: 1,
            stored: AtomicUsize::new(0),
            panic: true,
        });
        let repo = Repository::open_in(failing).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backup(&repo, &src2, &["db"]).map(|_| ())
        }));
        let _ = tx.send(outcome.map_err(|_| "panicked"));
    });
    let outcome = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the copy to end within 120 s after its pack store panicked (it hung)");
    match outcome {
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(msg.contains("panicked") && msg.contains("injected"), "{msg}");
        }
        other => panic!("the copy did not fail with the pack store's panic: {other:?}"),
    }
    let repo = Repository::open_in(backend.clone()).unwrap();
    assert!(repo.list_sets().unwrap().is_empty(), "no set was published");
    let set = backup(&repo, &src, &["db"]).unwrap();
    repo.verify_set(&set, &|_| {}).unwrap();
}

#[test]
fn errors_name_the_object_on_a_directory_and_on_s3() {
    on_both("errors", errors_name_the_object);
}

#[test]
fn s3_locations_open_and_name_their_objects() {
    let Some(server) = S3Server::start(BUCKET) else { return };
    let location = RepoLocation::parse(&server.url("loc/r1")).unwrap();
    let s3 = settings(&server);
    match Repository::open_location(&location, &s3, None).unwrap_err() {
        RepoError::NotARepository { path } => {
            assert_eq!(path, PathBuf::from("s3://shadowcopy-test/loc/r1"))
        }
        other => panic!("expected NotARepository, got {other}"),
    }
    let created = Repository::open_or_init_location(&location, &s3, None).unwrap();
    assert_eq!(created.location(), PathBuf::from("s3://shadowcopy-test/loc/r1"));
    let opened = Repository::open_location(&location, &s3, None).unwrap();
    assert_eq!(opened.config().id, created.config().id);
    // The object store's own errors name the object's URL: a bucket that does not exist.
    let missing = S3Backend::new("no-such-bucket", "p", &s3).unwrap();
    let err = missing.put("sets/x.manifest", b"x").unwrap_err();
    assert!(err.to_string().contains("s3://no-such-bucket/p/sets/x.manifest"), "{err}");
}

/// Retention, prune and a copy between two repositories of the same kind, encrypted: forget
/// keeps the two newest sets, prune frees the forgotten ones' packs, and the copy (re-keyed
/// under the target's key) reads back whole.
fn forget_prune_and_copy(from: Arc<dyn Backend>, to: Arc<dyn Backend>) {
    use backup::repo::prune::{PruneOptions, prune};
    use backup::repo::transfer::copy_sets;
    use backup::repo::{KdfParams, Password};
    use backup::retention::{RetentionPolicy, forget};

    let encrypted = |pw: &str| InitOptions {
        password: Some(Password::new(pw)),
        kdf: KdfParams::insecure_fast(),
        ..small()
    };
    let repo = Arc::new(Repository::init_in(from, encrypted("one")).unwrap());
    let src = MemFs::new();
    let shared = noise(8 * CHUNK as usize, 40);
    let mut sets = Vec::new();
    for i in 0..4u64 {
        put(&src, "shared", &shared);
        put(&src, "own", &noise(24 * CHUNK as usize, 41 + i));
        sets.push(backup(&repo, &src, &["shared", "own"]).unwrap());
    }
    let policy = RetentionPolicy { keep_last: Some(2), ..RetentionPolicy::default() };
    let plan = forget(&repo, None, &policy, false).unwrap();
    let kept: Vec<_> = plan.decisions.iter().filter(|d| d.keep).map(|d| d.set).collect();
    assert_eq!(kept, vec![sets[2].id, sets[3].id], "{plan:?}");
    assert_eq!(repo.list_sets().unwrap().len(), 2);

    let report = prune(&repo, &PruneOptions::default()).unwrap();
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert!(report.packs_removed > 0, "{report:?}");
    for set in &sets[2..] {
        repo.verify_set(set, &|_| {}).unwrap();
    }

    let target = Repository::init_in(to, encrypted("two")).unwrap();
    let copied = copy_sets(&repo, &target, &[], &|_| {}).unwrap();
    assert_eq!(copied.copied, vec![sets[2].id, sets[3].id]);
    for set in &sets[2..] {
        let copy = target.load_set(&set.id.to_string()).unwrap();
        for (a, b) in set.files.iter().zip(&copy.files) {
            assert_eq!(restore(&repo, a).unwrap(), restore(&target, b).unwrap(), "{}", a.path);
        }
    }
}

#[test]
fn forget_prune_and_copy_on_directories_and_on_s3() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    forget_prune_and_copy(local_backend(d1.path()), local_backend(d2.path()));
    let Some(server) = S3Server::start(BUCKET) else { return };
    forget_prune_and_copy(s3_backend(&server, "fpc/from"), s3_backend(&server, "fpc/to"));
}
