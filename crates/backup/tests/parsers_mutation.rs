//! Mutation tests of the repository's parsers: its configuration, set manifests, pack
//! indexes and packs, as written by the real set writer. Each case mutates one file (flips,
//! hostile length values, truncation, extension, splices, deletions, insertions), then opens
//! the repository, lists and loads the sets and verifies every chunk under a guard: no panic,
//! no hang, no allocation beyond a bound. Manifests and indexes are also mutated behind their
//! hashes (the hash recomputed) and manifests given hostile field values, so that what lies
//! behind the checks is exercised too. Errors name the file, set or pack.
//!
//! `PROPTEST_CASES=100000 cargo test -p backup --test parsers_mutation` runs a longer campaign.

// Helpers outside `#[test]` functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../ese/tests/mutation/mod.rs"]
mod mutation;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use backup::repo::{BackupSet, InitOptions, Repository, SetMeta};
use proptest::prelude::*;
use volume::mem::MemFs;
use volume::{FileSystem, OpenMode};

use mutation::{cases, guarded, in_place, mutate_range, mutated, mutations};

#[global_allocator]
static ALLOC: mutation::Tracking = mutation::Tracking;

/// A chunk is at most 64 MiB (`pack::MAX_CHUNK`), stored and raw: reading one may need both.
const MAX_ALLOC: usize = 160 << 20;

/// The files of a repository holding one set of three files, by path, and the set.
fn fixture() -> &'static (BTreeMap<PathBuf, Vec<u8>>, BackupSet) {
    static F: OnceLock<(BTreeMap<PathBuf, Vec<u8>>, BackupSet)> = OnceLock::new();
    F.get_or_init(|| {
        let fs = MemFs::new();
        let src = MemFs::new();
        let text: Vec<u8> = b"Subject: hello\r\n".iter().copied().cycle().take(20_000).collect();
        for (name, data) in [
            ("text", text),
            ("noise", store::load::random_body(3 * 4096 + 17, 1)),
            ("empty", vec![]),
        ] {
            let f = src.open(Path::new(name), OpenMode::Create).unwrap();
            f.write_at(&data, 0).unwrap();
        }
        let repo = Repository::init(
            fs.as_ref(),
            "repo",
            InitOptions { chunk_size: 4096, zstd_level: 1, ..Default::default() },
        )
        .unwrap();
        let mut w = repo.begin_set();
        for name in ["text", "noise", "empty"] {
            let f = src.open(Path::new(name), OpenMode::Read).unwrap();
            w.add_file(
                &format!("vol/{name}"),
                backup::repo::FileRole::Database,
                "sg1/db1",
                f.as_ref(),
                &|_| {},
            )
            .unwrap();
        }
        let set = w.publish(SetMeta { node: "n1".into(), ..Default::default() }).unwrap();
        drop(repo);
        let mut files = BTreeMap::new();
        let mut dirs = vec![PathBuf::from("repo")];
        while let Some(d) = dirs.pop() {
            for e in fs.read_dir(&d).unwrap() {
                let p = d.join(&e.name);
                if e.kind == volume::FileKind::Dir {
                    dirs.push(p);
                } else {
                    files.insert(p.clone(), volume::fs::read_all(&fs, &p).unwrap());
                }
            }
        }
        (files, set)
    })
}

fn files_ending(ext: &str) -> Vec<PathBuf> {
    fixture().0.keys().filter(|p| p.to_string_lossy().ends_with(ext)).cloned().collect()
}

/// Opens the repository with `path` replaced by `bytes`, lists and loads its sets and
/// verifies them. Returns the first error's text, if any.
fn exercise(path: PathBuf, bytes: Vec<u8>) -> Result<(), String> {
    guarded(&format!("repository with a mutated {}", path.display()), MAX_ALLOC, move || {
        let fs = MemFs::new();
        for (p, data) in &fixture().0 {
            fs.create_dir_all(p.parent().unwrap()).unwrap();
            let f = fs.open(p, OpenMode::Create).unwrap();
            f.write_at(if *p == path { &bytes } else { data }, 0).unwrap();
        }
        let repo = Repository::open(fs.as_ref(), "repo").map_err(|e| e.to_string())?;
        let _ = repo.stats();
        let listed = repo.list_sets().map_err(|e| e.to_string());
        let set = repo.load_set(&fixture().1.id.to_string()).map_err(|e| e.to_string())?;
        repo.verify_set(&set, &|_| {}).map_err(|e| e.to_string())?;
        listed.map(drop)
    })
}

/// Replaces the manifest file with `set` encoded (its hash line recomputed).
fn with_manifest(set: &BackupSet) -> (PathBuf, Vec<u8>) {
    (files_ending(".manifest")[0].clone(), set.encode())
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(600), ..ProptestConfig::default() })]

    /// Any file of the repository mutated: a typed error naming that file (or its set or
    /// pack), or success when the damage does not matter (a pack's unused tail).
    #[test]
    fn repository_files(which in any::<prop::sample::Index>(), donor in any::<prop::sample::Index>(), ms in mutations()) {
        let all: Vec<_> = fixture().0.keys().cloned().collect();
        let path = which.get(&all).clone();
        let img = mutated(&fixture().0[&path], &ms, &fixture().0[donor.get(&all)]);
        if let Err(e) = exercise(path.clone(), img) {
            prop_assert!(e.contains(&stem(&path)) || e.contains("repository.json") && stem(&path) == "repository", "{e}");
        }
    }

    /// A pack index mutated behind its checksum (recomputed): hostile counts, offsets and
    /// lengths reach the chunk reader.
    #[test]
    fn pack_index_resealed(ms in in_place()) {
        let path = files_ending(".idx")[0].clone();
        let mut img = fixture().0[&path].clone();
        let body = img.len() - 32;
        mutate_range(&mut img, 8..body, &ms);
        let sum = blake3::hash(&img[..body]);
        img[body..].copy_from_slice(sum.as_bytes());
        let _ = exercise(path, img);
    }

    /// A manifest mutated behind its hash (recomputed): the JSON decoder sees the damage.
    #[test]
    fn manifest_resealed(ms in in_place()) {
        let path = files_ending(".manifest")[0].clone();
        let orig = &fixture().0[&path];
        let json_len = orig.iter().position(|&b| b == b'\n').unwrap();
        let mut json = orig[..json_len].to_vec();
        let n = json.len();
        mutate_range(&mut json, 0..n, &ms);
        let mut img = json.clone();
        img.push(b'\n');
        img.extend_from_slice(blake3::hash(&json).to_hex().as_bytes());
        img.push(b'\n');
        let _ = exercise(path, img);
    }

    /// A well-formed manifest with hostile values: sizes, chunk lengths and hashes that do
    /// not match the packs. Verification fails with an error naming the file; nothing is
    /// allocated by a claimed size.
    #[test]
    fn manifest_hostile_fields(file in 0usize..3, chunk in any::<prop::sample::Index>(), size in prop_oneof![Just(u64::MAX), Just(0u64), any::<u64>()], len in prop_oneof![Just(u32::MAX), Just(0u32), any::<u32>()], hash in "[0-9a-f]{0,70}", what in 0u8..4) {
        let mut set = fixture().1.clone();
        let f = &mut set.files[file];
        match what {
            0 => f.size = size,
            1 if !f.chunks.is_empty() => { let i = chunk.index(f.chunks.len()); f.chunks[i].len = len }
            2 if !f.chunks.is_empty() => { let i = chunk.index(f.chunks.len()); f.chunks[i].hash = hash }
            _ => f.chunks_blake3 = Some(hash),
        }
        let name = f.path.clone();
        let changed = set != fixture().1;
        let (path, img) = with_manifest(&set);
        match exercise(path, img) {
            Err(e) => prop_assert!(e.contains(&name), "{e}"),
            Ok(()) => prop_assert!(!changed || what == 1, "a hostile manifest verified"),
        }
    }
}
