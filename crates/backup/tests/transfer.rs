//! Copying sets between repositories (`backup copy`): chains travel whole and bases first, only
//! missing chunks are stored, a second copy finds everything there, and a damaged source never
//! yields a set in the target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use backup::repo::transfer::{TransferStep, copy_sets, with_bases};
use backup::repo::{BackupSet, FileEntry, FileRole, InitOptions, RepoError, Repository, SetMeta};
use volume::fs::{FileSystem, FsRef, OpenMode};
use volume::mem::MemFs;
use vss::BackupType;

const CHUNK: u32 = 4096;

fn repo(fs: &FsRef, dir: &str) -> Arc<Repository> {
    let opts = InitOptions { chunk_size: CHUNK, ..InitOptions::default() };
    Arc::new(Repository::init(fs.clone(), dir, opts).unwrap())
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    store::load::random_body(len, seed)
}

/// Writes one set holding `files` (name, content), built on `base`.
fn set(
    repo: &Repository,
    kind: BackupType,
    base: Option<&BackupSet>,
    files: &[(&str, &[u8])],
) -> BackupSet {
    let src = MemFs::new();
    let mut w = repo.begin_set();
    for (name, data) in files {
        let f = src.open(Path::new(name), OpenMode::Create).unwrap();
        f.write_at(data, 0).unwrap();
        let role = if name.ends_with(".log") { FileRole::Log } else { FileRole::Database };
        w.add_file(&format!("vol/{name}"), role, "sg1/db1", f.as_ref(), &|_| {}).unwrap();
    }
    let meta = SetMeta {
        node: "n1".into(),
        backup_type: kind,
        storage_group: "SG1".into(),
        base_set: base.map(|b| b.id),
        ..SetMeta::default()
    };
    w.publish(meta).unwrap()
}

fn content(repo: &Repository, e: &FileEntry) -> Vec<u8> {
    let mut out = vec![0u8; e.size as usize];
    repo.read_file(e, &mut |off, d| {
        out[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn a_chain_travels_whole_bases_first_and_a_second_copy_stores_nothing() {
    let fs: FsRef = MemFs::new().as_ref();
    let (r1, r2) = (repo(&fs, "r1"), repo(&fs, "r2"));
    let db = noise(40 * CHUNK as usize, 1);
    let full = set(&r1, BackupType::Full, None, &[("db.edb", &db), ("E00001.log", b"one")]);
    let inc1 = set(&r1, BackupType::Incremental, Some(&full), &[("E00002.log", &noise(9000, 2))]);
    let inc2 = set(&r1, BackupType::Incremental, Some(&inc1), &[("E00003.log", &noise(9000, 3))]);
    let other = set(&r1, BackupType::Full, None, &[("x.edb", &noise(5000, 4))]);

    let plan: Vec<_> = with_bases(&r1, &[inc2.id.to_string()[..8].to_string()])
        .unwrap()
        .0
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(plan, vec![full.id, inc1.id, inc2.id], "the chain of inc2, bases first");

    let steps = std::sync::Mutex::new(Vec::new());
    let report = copy_sets(&r1, &r2, &[inc2.id.to_string()], &|s| {
        if let TransferStep::Verifying { set } = s {
            steps.lock().unwrap().push(set.id);
        }
    })
    .unwrap();
    assert_eq!(report.copied, vec![full.id, inc1.id, inc2.id]);
    assert_eq!(*steps.lock().unwrap(), report.copied, "each copy verified, in order");
    assert!(report.present.is_empty());
    let in_r2 = r2.list_sets().unwrap();
    assert_eq!(in_r2.len(), 3, "the unrelated set stayed behind: {:?}", other.id);
    for original in [&full, &inc1, &inc2] {
        let copy = r2.load_set(&original.id.to_string()).unwrap();
        assert_eq!(copy.created_unix_ms, original.created_unix_ms);
        assert_eq!(copy.base_set, original.base_set);
        assert_eq!(copy.backup_type, original.backup_type);
        assert_eq!(copy.files.len(), original.files.len());
        for (a, b) in original.files.iter().zip(&copy.files) {
            assert_eq!(a.size, b.size);
            assert_eq!(content(&r1, a), content(&r2, b), "{}", a.path);
        }
    }

    // Again, with everything: the chain is there; only the other full is new.
    let again = copy_sets(&r1, &r2, &[], &|_| {}).unwrap();
    assert_eq!(again.copied, vec![other.id]);
    assert_eq!(again.present.len(), 3);
    let third = copy_sets(&r1, &r2, &[], &|_| {}).unwrap();
    assert!(third.copied.is_empty());
    assert_eq!(third.present.len(), 4);
    assert_eq!(third.bytes_read, 0, "sets already there are not read again");
}

#[test]
fn bases_go_first_even_when_a_base_has_a_later_time() {
    let fs: FsRef = MemFs::new().as_ref();
    let (r1, r2) = (repo(&fs, "r1"), repo(&fs, "r2"));
    let mut full = set(&r1, BackupType::Full, None, &[("db.edb", b"full")]);
    let inc = set(&r1, BackupType::Incremental, Some(&full), &[("E2.log", b"inc")]);
    // A clock set back between the two: the base now looks younger than what builds on it.
    full.created_unix_ms = inc.created_unix_ms + 60_000;
    r1.rewrite_manifest(&full).unwrap();
    let order: Vec<_> = with_bases(&r1, &[]).unwrap().0.into_iter().map(|s| s.id).collect();
    assert_eq!(order, vec![full.id, inc.id]);
    let report = copy_sets(&r1, &r2, &[inc.id.to_string()], &|_| {}).unwrap();
    assert_eq!(report.copied, vec![full.id, inc.id]);
}

#[test]
fn an_orphan_is_left_out_of_an_all_sets_copy_with_the_reason() {
    let fs: FsRef = MemFs::new().as_ref();
    let (r1, r2) = (repo(&fs, "r1"), repo(&fs, "r2"));
    let full = set(&r1, BackupType::Full, None, &[("db.edb", b"full")]);
    let inc = set(&r1, BackupType::Incremental, Some(&full), &[("E2.log", b"inc")]);
    let other = set(&r1, BackupType::Full, None, &[("x.edb", b"other")]);
    r1.remove_set(&full.id).unwrap();
    let report = copy_sets(&r1, &r2, &[], &|_| {}).unwrap();
    assert_eq!(report.copied, vec![other.id], "the unrelated full still travels");
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert!(
        report.skipped[0].contains(&inc.id.to_string())
            && report.skipped[0].contains(&full.id.to_string()),
        "{:?}",
        report.skipped
    );
}

#[test]
fn only_chunks_the_target_lacks_are_stored() {
    let fs: FsRef = MemFs::new().as_ref();
    let (r1, r2) = (repo(&fs, "r1"), repo(&fs, "r2"));
    let db = noise(64 * CHUNK as usize, 7);
    let mut changed = db.clone();
    changed[3 * CHUNK as usize] ^= 0xff;
    // The target already holds most of the content, through a backup of its own.
    set(&r2, BackupType::Full, None, &[("db.edb", &db)]);
    let s = set(&r1, BackupType::Full, None, &[("db.edb", &changed)]);
    let report = copy_sets(&r1, &r2, &[s.id.to_string()], &|_| {}).unwrap();
    assert_eq!(report.bytes_read, changed.len() as u64);
    assert!(
        report.bytes_stored <= 2 * CHUNK as u64,
        "one changed chunk, {} bytes stored",
        report.bytes_stored
    );
    let copy = r2.load_set(&s.id.to_string()).unwrap();
    assert_eq!(content(&r2, &copy.files[0]), changed);
}

#[test]
fn a_damaged_source_chunk_is_named_and_no_set_appears_in_the_target() {
    let mem = MemFs::new();
    let fs: FsRef = mem.as_ref();
    let (r1, r2) = (repo(&fs, "r1"), repo(&fs, "r2"));
    let s = set(&r1, BackupType::Full, None, &[("db.edb", &noise(8 * CHUNK as usize, 9))]);
    let pack = mem
        .read_dir(Path::new("r1/packs"))
        .unwrap()
        .into_iter()
        .find(|e| e.name.ends_with(".pack"))
        .unwrap();
    let f = mem.open(&Path::new("r1/packs").join(&pack.name), OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 100).unwrap();
    f.write_at(&[b[0] ^ 1], 100).unwrap();

    let err = copy_sets(&r1, &r2, &[], &|_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("vol/db.edb"), "the error names the file: {msg}");
    assert!(
        !matches!(err, RepoError::SetNotFound(_)),
        "a damaged chunk is not a missing set: {msg}"
    );
    assert!(r2.list_sets().unwrap().is_empty(), "no set of a failed copy: {:?}", s.id);
}

#[test]
fn a_missing_base_is_an_error_naming_it() {
    let fs: FsRef = MemFs::new().as_ref();
    let (r1, r2) = (repo(&fs, "r1"), repo(&fs, "r2"));
    let full = set(&r1, BackupType::Full, None, &[("db.edb", b"full")]);
    let inc = set(&r1, BackupType::Incremental, Some(&full), &[("E1.log", b"inc")]);
    r1.remove_set(&full.id).unwrap();
    let err = copy_sets(&r1, &r2, &[inc.id.to_string()], &|_| {}).unwrap_err();
    assert!(err.to_string().contains(&full.id.to_string()), "{err}");
    assert!(r2.list_sets().unwrap().is_empty());
}
