use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use volume::fs::{FileSystem, FsRef, OpenMode};
use volume::mem::MemFs;

use super::*;

const CHUNK: u32 = 4096;

fn small() -> InitOptions {
    InitOptions { chunk_size: CHUNK, zstd_level: 1, ..Default::default() }
}

fn put(fs: &dyn FileSystem, path: &str, data: &[u8]) {
    let f = fs.open(Path::new(path), OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(data, 0).unwrap();
}

fn restore(repo: &Repository, e: &FileEntry) -> Result<Vec<u8>> {
    let mut out = vec![0u8; e.size as usize];
    repo.read_file(e, &mut |off, d| {
        out[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    })?;
    Ok(out)
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    store::load::random_body(len, seed)
}

fn backup(repo: &Repository, src: &dyn FileSystem, names: &[&str]) -> (BackupSet, u64) {
    // Packs of two chunks: stored in the background and waited for (MAX_STORING) while the
    // copy goes on, so that the crash tests cut those paths too.
    let mut w = repo.begin_set().with_pack_target(2 * CHUNK as u64);
    for n in names {
        let f = src.open(Path::new(n), OpenMode::Read).unwrap();
        w.add_file(
            &format!("vol/{n}"),
            crate::repo::FileRole::Database,
            "sg1/db1",
            f.as_ref(),
            &|_| {},
        )
        .unwrap();
    }
    let stored = w.stored_bytes();
    let meta =
        SetMeta { node: "n1".into(), backup_type: vss::BackupType::Full, ..Default::default() };
    (w.publish(meta).unwrap(), stored)
}

#[test]
fn sets_round_trip_across_reopen() {
    let fs = MemFs::new();
    let src = MemFs::new();
    let text: Vec<u8> = b"Subject: hello\r\n".iter().copied().cycle().take(50_000).collect();
    put(&src, "text", &text);
    put(&src, "noise", &noise(3 * CHUNK as usize + 17, 1));
    put(&src, "empty", b"");
    let repo = Repository::init(fs.as_ref(), "repo", small()).unwrap();
    let (set, _) = backup(&repo, &src, &["text", "noise", "empty"]);
    drop(repo);
    let repo = Repository::open(fs.as_ref(), "repo").unwrap();
    let sets = repo.list_sets().unwrap();
    assert_eq!(sets, vec![set.clone()]);
    let loaded = repo.load_set(&set.id.to_string()[..8]).unwrap();
    assert_eq!(loaded, set);
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), text);
    assert_eq!(restore(&repo, &set.files[1]).unwrap(), noise(3 * CHUNK as usize + 17, 1));
    assert_eq!(restore(&repo, &set.files[2]).unwrap(), b"");
    repo.verify_set(&set, &|_| {}).unwrap();
    let stats = repo.stats().unwrap();
    assert!(stats.stored_bytes < stats.raw_bytes, "text compresses: {stats:?}");
}

#[test]
fn unchanged_content_is_stored_once() {
    let fs = MemFs::new();
    let src = MemFs::new();
    let data = noise(16 * CHUNK as usize, 2);
    put(&src, "db", &data);
    let repo = Repository::init(fs.as_ref(), "", small()).unwrap();
    let (_, first) = backup(&repo, &src, &["db"]);
    assert!(first >= data.len() as u64, "noise does not compress");
    let (_, again) = backup(&repo, &src, &["db"]);
    assert_eq!(again, 0, "a repeated full stores nothing new");
    let mut changed = data.clone();
    changed[5 * CHUNK as usize + 3] ^= 1;
    put(&src, "db", &changed);
    let (set, delta) = backup(&repo, &src, &["db"]);
    assert_eq!(delta, CHUNK as u64, "one changed page costs one chunk");
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), changed);
}

#[test]
fn an_abandoned_set_leaves_nothing() {
    let fs = MemFs::new();
    let src = MemFs::new();
    put(&src, "db", &noise(4 * CHUNK as usize, 3));
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    {
        let mut w = repo.begin_set();
        let f = src.open(Path::new("db"), OpenMode::Read).unwrap();
        w.add_file("vol/db", crate::repo::FileRole::Database, "c", f.as_ref(), &|_| {}).unwrap();
    }
    assert!(repo.list_sets().unwrap().is_empty());
    assert!(fs.read_dir(Path::new("r/packs")).unwrap().is_empty(), "the unsealed pack is gone");
}

#[test]
fn a_crash_at_any_point_leaves_a_whole_set_or_none() {
    let src = MemFs::new();
    put(&src, "a", &noise(5 * CHUNK as usize + 100, 4));
    put(&src, "b", &noise(2 * CHUNK as usize, 5));
    // Count the operations of one clean run, then crash at every one of them.
    let probe = MemFs::new();
    let repo = Repository::init(probe.as_ref(), "r", small()).unwrap();
    let start = probe.op_count();
    backup(&repo, &src, &["a", "b"]);
    let ops = probe.op_count() - start;
    assert!(ops > 5);
    for at in 1..=ops + 1 {
        let fs = MemFs::new();
        let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
        fs.crash_after(at);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            backup(&repo, &src, &["a", "b"]).0
        }));
        drop(repo);
        if fs.crash_pending() {
            fs.clear_faults();
            fs.crash(); // power lost right after the set was published
        }
        let repo = Repository::open(fs.as_ref(), "r").unwrap();
        let sets = repo.list_sets().unwrap();
        match sets.as_slice() {
            [] => {}
            [set] => {
                repo.verify_set(set, &|_| {}).unwrap();
                if let Ok(published) = &outcome {
                    assert_eq!(set, published);
                }
            }
            more => panic!("crash at op {at} left {} sets", more.len()),
        }
        if outcome.is_ok() {
            assert_eq!(sets.len(), 1, "a set reported published survives the crash (op {at})");
        }
    }
}

#[test]
fn a_corrupt_chunk_is_named() {
    let fs = MemFs::new();
    let src = MemFs::new();
    put(&src, "db", &noise(3 * CHUNK as usize, 6));
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    let (set, _) = backup(&repo, &src, &["db"]);
    let second = parse_hash(&set.files[0].chunks[1].hash).unwrap();
    let loc = repo.lookup(&second).unwrap();
    let path = Path::new("r/packs").join(format!("{}.pack", loc.pack));
    let pack = fs.open(&path, OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 1];
    pack.read_exact_at(&mut b, loc.offset + 10).unwrap();
    pack.write_at(&[b[0] ^ b'X'], loc.offset + 10).unwrap();
    let err = repo.verify_set(&set, &|_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RepoError::CorruptChunk { .. }), "{msg}");
    assert!(msg.contains("vol/db") && msg.contains(&set.files[0].chunks[1].hash), "{msg}");
    assert!(restore(&repo, &set.files[0]).is_err());
}

#[test]
fn corrupt_manifest_and_missing_repository_are_reported() {
    let fs = MemFs::new();
    assert!(matches!(
        Repository::open(fs.as_ref(), "nothing").unwrap_err(),
        RepoError::NotARepository { .. }
    ));
    let src = MemFs::new();
    put(&src, "f", b"x");
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    assert!(matches!(
        Repository::init(fs.as_ref(), "r", small()).unwrap_err(),
        RepoError::AlreadyExists { .. }
    ));
    let (set, _) = backup(&repo, &src, &["f"]);
    let path = format!("r/sets/{}.manifest", set.id);
    let f = fs.open(Path::new(&path), OpenMode::ReadWrite).unwrap();
    f.write_at(b"{\"format\":9", 0).unwrap();
    let err = repo.load_set(&set.id.to_string()).unwrap_err();
    assert!(matches!(err, RepoError::CorruptManifest { .. }), "{err}");
    assert!(matches!(repo.load_set("ffff").unwrap_err(), RepoError::SetNotFound(_)));
    assert!(matches!(repo.load_set("../x").unwrap_err(), RepoError::BadSetId(_)));
}

/// Every kind of `compression` setting.
const SETTINGS: [Compression; 4] =
    [Compression::Auto, Compression::Zstd(3), Compression::Lz4, Compression::None];

/// Chunk content of three kinds: the store's text, noise, and runs of one byte.
fn content(kind: u8, len: usize, seed: u64) -> Vec<u8> {
    match kind {
        0 => store::load::body(len, seed),
        1 => noise(len, seed),
        _ => vec![(seed % 251) as u8; len],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Any mix of codecs in one pack, clear or encrypted, reads back: each chunk through the
    /// codec its index entry names, after the index is stored and loaded again.
    #[test]
    fn any_codec_mix_round_trips(
        chunks in proptest::collection::vec(
            (0usize..3 * CHUNK as usize, any::<u64>(), 0u8..3, 0usize..3), 1..12),
        encrypted in any::<bool>(),
    ) {
        let fs: FsRef = Arc::new(MemFs::new());
        fs.create_dir_all(Path::new("r/packs")).unwrap();
        let backend = LocalBackend::new(fs, "r");
        let crypto = if encrypted {
            Crypto::Keyed(Arc::new(crypto::MasterKey::generate()))
        } else {
            Crypto::Plain
        };
        let mut compressor = codec::Compressor::new(codec::DEFAULT_ZSTD_LEVEL);
        let mut pack = pack::PackWriter::new(0);
        let mut written = Vec::new();
        for (len, seed, kind, codec) in chunks {
            let data = content(kind, len, seed);
            let codec = [Codec::Raw, Codec::Zstd, Codec::Lz4][codec];
            let (codec, bytes) = match compressor.compress(codec, &data) {
                Some(b) => (codec, b),
                None => (Codec::Raw, data.clone()),
            };
            let id = crypto.chunk_id(&data);
            pack.append(id, &crypto.seal(bytes), data.len() as u32, codec);
            written.push((id, codec, data));
        }
        let pack_id = pack.id;
        pack.seal(&backend, &crypto).unwrap();
        let (_, entries) =
            pack::load_index(&backend, &crypto, &format!("{pack_id}.idx")).unwrap();
        prop_assert_eq!(entries.len(), written.len());
        for ((id, loc), (want_id, codec, data)) in entries.iter().zip(&written) {
            prop_assert_eq!(id, want_id);
            prop_assert_eq!(loc.codec, *codec);
            prop_assert_eq!(&pack::read_chunk(&backend, &crypto, id, loc, "f").unwrap(), data);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_files_round_trip(files in proptest::collection::vec(
        (0usize..5 * CHUNK as usize, any::<u64>(), any::<bool>()), 1..5), setting in 0usize..4) {
        let fs: FsRef = Arc::new(MemFs::new());
        let src = MemFs::new();
        let mut names = Vec::new();
        let mut contents = Vec::new();
        for (i, (len, seed, text)) in files.iter().enumerate() {
            let data = if *text { vec![b'a' + (*seed % 26) as u8; *len] } else { noise(*len, *seed) };
            let name = format!("f{i}");
            put(&src, &name, &data);
            names.push(name);
            contents.push(data);
        }
        let compression = SETTINGS[setting];
        let repo = Repository::init(fs.clone(), "r", InitOptions { compression, ..small() }).unwrap();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (set, _) = backup(&repo, &src, &refs);
        let repo = Repository::open(fs, "r").unwrap();
        for (e, data) in set.files.iter().zip(&contents) {
            prop_assert_eq!(&restore(&repo, e).unwrap(), data);
        }
    }
}

#[test]
fn a_full_repository_disk_fails_the_copy_cleanly() {
    let fs = MemFs::new();
    let src = MemFs::new();
    put(&src, "db", &noise(200 * CHUNK as usize, 13));
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    fs.set_capacity(Some(fs.used_bytes() + 20 * CHUNK as u64));
    // Small packs, so that they are stored (and the storage fills) while the copy goes on.
    let mut w = repo.begin_set().with_pack_target(4 * CHUNK as u64);
    let f = src.open(Path::new("db"), OpenMode::Read).unwrap();
    // Before the fix this blocked forever: the reader waited on a channel nobody drained.
    let err = w
        .add_file("vol/db", crate::repo::FileRole::Database, "c", f.as_ref(), &|_| {})
        .err()
        .or_else(|| w.seal().err())
        .expect("a copy larger than the free space fails");
    assert!(
        err.to_string().contains("storage full") || err.to_string().contains("No space"),
        "{err}"
    );
    drop(w);
    fs.set_capacity(None);
    assert!(repo.list_sets().unwrap().is_empty());
    let (set, _) = backup(&repo, &src, &["db"]);
    repo.verify_set(&set, &|_| {}).unwrap();
}

#[test]
fn a_chunk_check_sees_every_chunk_once_and_its_rejection_stops_the_copy() {
    let fs = MemFs::new();
    let src = MemFs::new();
    let len = 37 * CHUNK as usize + 100;
    let data = noise(len, 21);
    put(&src, "db", &data);
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    let f = src.open(Path::new("db"), OpenMode::Read).unwrap();

    // Accepting: every chunk arrives once, at its offset, with the file's bytes there.
    let seen = parking_lot::Mutex::new(Vec::new());
    let record = |off: u64, chunk: &[u8]| {
        assert_eq!(chunk, &data[off as usize..off as usize + chunk.len()]);
        seen.lock().push((off, chunk.len()));
        Ok(())
    };
    let mut w = repo.begin_set();
    w.add_file_checked(
        "vol/db",
        crate::repo::FileRole::Database,
        "c",
        f.as_ref(),
        None,
        Some(&record),
        &|_| {},
    )
    .unwrap();
    let mut seen = seen.into_inner();
    seen.sort();
    let expected: Vec<(u64, usize)> = (0..len)
        .step_by(CHUNK as usize)
        .map(|o| (o as u64, (len - o).min(CHUNK as usize)))
        .collect();
    assert_eq!(seen, expected);
    drop(w);

    // Rejecting one chunk: the copy fails naming the file and the check's words, and the
    // writer publishes nothing.
    let bad = 9 * CHUNK as u64;
    let reject = |off: u64, _: &[u8]| {
        if off == bad { Err(format!("page {} is damaged", off / 512)) } else { Ok(()) }
    };
    let mut w = repo.begin_set();
    let err = w
        .add_file_checked(
            "vol/db",
            crate::repo::FileRole::Database,
            "c",
            f.as_ref(),
            None,
            Some(&reject),
            &|_| {},
        )
        .unwrap_err();
    match &err {
        RepoError::Rejected { file, why } => {
            assert_eq!(file, "vol/db");
            assert_eq!(why, &format!("page {} is damaged", bad / 512));
        }
        other => panic!("expected a rejection, got {other}"),
    }
    assert!(w.files().is_empty());
    drop(w);
    assert!(repo.list_sets().unwrap().is_empty());
}

#[test]
fn packs_sealed_while_the_copy_goes_on_are_all_indexed_and_durable() {
    let fs = MemFs::new();
    let src = MemFs::new();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}"), noise(40 * CHUNK as usize + i * 7, 30 + i as u64)))
        .collect();
    for (n, d) in &files {
        put(&src, n, d);
    }
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    let mut w = repo.begin_set().with_pack_target(6 * CHUNK as u64);
    for (n, _) in &files {
        let f = src.open(Path::new(n), OpenMode::Read).unwrap();
        w.add_file(&format!("vol/{n}"), crate::repo::FileRole::Database, "c", f.as_ref(), &|_| {})
            .unwrap();
    }
    let meta =
        SetMeta { node: "n1".into(), backup_type: vss::BackupType::Full, ..Default::default() };
    let set = w.publish(meta).unwrap();

    let names: Vec<String> =
        fs.read_dir(Path::new("r/packs")).unwrap().into_iter().map(|e| e.name).collect();
    let packs = names.iter().filter(|n| n.ends_with(".pack")).count();
    let indexes = names.iter().filter(|n| n.ends_with(".idx")).count();
    assert!(packs >= 20, "about one pack per six chunks of 120: {packs}");
    assert_eq!(packs, indexes, "every pack has its index: {names:?}");

    // Only what was synced survives a power loss; every file comes back whole.
    fs.crash();
    let repo = Repository::open(fs.as_ref(), "r").unwrap();
    let set = repo.load_set(&set.id.to_string()).unwrap();
    for ((_, data), entry) in files.iter().zip(&set.files) {
        assert_eq!(&restore(&repo, entry).unwrap(), data);
    }
}

#[test]
fn an_interrupted_store_leaves_a_hidden_temporary_that_remove_incomplete_frees() {
    let fs = MemFs::new();
    let src = MemFs::new();
    put(&src, "db", &noise(6 * CHUNK as usize, 31));
    let repo = Repository::init(fs.as_ref(), "r", small()).unwrap();
    let (set, _) = backup(&repo, &src, &["db"]);
    // What a crash in the middle of storing a pack leaves: its temporary, never listed.
    put(&fs, "r/packs/.0000.pack.tmp", &[7u8; 1000]);
    let listed = repo.backend().list("packs").unwrap();
    assert!(listed.iter().all(|o| !o.name.starts_with('.')), "{listed:?}");
    assert_eq!(repo.backend().remove_incomplete("packs").unwrap(), 1000);
    assert!(!fs.exists(Path::new("r/packs/.0000.pack.tmp")).unwrap());
    assert_eq!(repo.backend().remove_incomplete("packs").unwrap(), 0);
    repo.verify_set(&set, &|_| {}).unwrap();
}

/// The codecs a set's chunks are stored with, by file, in chunk order.
fn codecs(repo: &Repository, e: &FileEntry) -> Vec<Codec> {
    e.chunks.iter().map(|c| repo.lookup(&parse_hash(&c.hash).unwrap()).unwrap().codec).collect()
}

#[test]
fn each_setting_stores_text_with_its_codec_and_noise_raw() {
    let src = MemFs::new();
    let text = store::load::body(6 * CHUNK as usize, 7);
    put(&src, "text", &text);
    put(&src, "noise", &noise(3 * CHUNK as usize, 8));
    for setting in SETTINGS {
        let fs = MemFs::new();
        let opts = InitOptions { compression: setting, ..small() };
        let repo = Repository::init(fs.as_ref(), "r", opts).unwrap();
        let (set, _) = backup(&repo, &src, &["text", "noise"]);
        drop(repo);
        let repo = Repository::open(fs.as_ref(), "r").unwrap();
        assert_eq!(repo.config().compression_setting(), setting);
        let text_codecs = codecs(&repo, &set.files[0]);
        let want_text: &[Codec] = match setting {
            Compression::None => &[Codec::Raw],
            Compression::Lz4 => &[Codec::Lz4],
            Compression::Zstd(_) => &[Codec::Zstd],
            // Which of the two depends on the copy's pace.
            Compression::Auto => &[Codec::Zstd, Codec::Lz4],
        };
        assert!(text_codecs.iter().all(|c| want_text.contains(c)), "{setting}: {text_codecs:?}");
        assert!(codecs(&repo, &set.files[1]).iter().all(|c| *c == Codec::Raw), "{setting}");
        assert_eq!(restore(&repo, &set.files[0]).unwrap(), text, "{setting}");
        assert_eq!(restore(&repo, &set.files[1]).unwrap(), noise(3 * CHUNK as usize, 8));
        for f in &set.files {
            assert!(f.blake3.is_empty(), "no whole-content hash is computed: {f:?}");
            assert!(f.chunks_blake3.is_some(), "{f:?}");
        }
        let stats = repo.stats().unwrap();
        match setting {
            Compression::None => assert_eq!(stats.stored_bytes, stats.raw_bytes),
            _ => assert!(stats.stored_bytes < stats.raw_bytes, "{setting}: {stats:?}"),
        }
    }
}

#[test]
fn a_chunk_list_that_is_not_the_files_is_refused_before_anything_is_read() {
    let fs = MemFs::new();
    let src = MemFs::new();
    put(&src, "a", &noise(3 * CHUNK as usize, 9));
    let repo = Arc::new(Repository::init(fs.as_ref(), "r", small()).unwrap());
    let (set, _) = backup(&repo, &src, &["a"]);
    let good = set.files[0].clone();
    // Two chunks swapped: each still matches its id, but the file is another one.
    let mut swapped = good.clone();
    swapped.chunks.swap(0, 1);
    // A chunk's length changed, and the identity left alone.
    let mut longer = good.clone();
    longer.chunks[2].len += 1;
    longer.size += 1;
    for bad in [swapped, longer] {
        let mut sunk = 0;
        let err = repo
            .read_file(&bad, &mut |_, d| {
                sunk += d.len();
                Ok(())
            })
            .unwrap_err();
        assert!(matches!(err, RepoError::FileHashMismatch { .. }), "{err}");
        assert_eq!(sunk, 0, "nothing reached the sink");
        let stored = open_stored(repo.clone(), bad);
        let mut buf = [0u8; 16];
        let err = stored.read_at(&mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    }
    // A file with no identity at all is a damaged manifest.
    let mut none = good.clone();
    none.chunks_blake3 = None;
    let err = repo.read_file(&none, &mut |_, _| Ok(())).unwrap_err();
    assert!(matches!(err, RepoError::CorruptManifest { .. }), "{err}");
    assert_eq!(restore(&repo, &good).unwrap(), noise(3 * CHUNK as usize, 9));
}

#[test]
fn a_configuration_without_a_compression_setting_means_zstd_at_its_level() {
    let json = r#"{"format":2,"id":"7bc12705-e2be-4107-8ae6-1cc70af64aba","chunk_size":65536,
        "zstd_level":3,"created_unix_ms":1,"encryption":"none"}"#;
    let config: RepoConfig = serde_json::from_str(json).unwrap();
    assert_eq!(config.compression_setting(), Compression::Zstd(3));
    let mut written = config.clone();
    written.compression = Some(Compression::Lz4);
    let text = serde_json::to_string(&written).unwrap();
    assert!(text.contains(r#""compression":"lz4""#), "{text}");
    assert_eq!(serde_json::from_str::<RepoConfig>(&text).unwrap(), written);
    let bad = json.replace(r#""encryption""#, r#""compression":"gzip","encryption""#);
    assert!(serde_json::from_str::<RepoConfig>(&bad).is_err());
}

/// A repository at `repo` of `fs` holding one set of a file of `chunks` incompressible chunks,
/// in packs of two chunks (so `chunks / 2` pack indexes); returns the set and the file.
fn many_packs(fs: &MemFs, chunks: usize, opts: InitOptions) -> (BackupSet, Vec<u8>) {
    let src = MemFs::new();
    let data = noise(chunks * CHUNK as usize, 7);
    put(&src, "db", &data);
    let repo = Repository::init(fs.as_ref(), "repo", opts).unwrap();
    let (set, _) = backup(&repo, &src, &["db"]);
    (set, data)
}

fn idx_names(fs: &MemFs) -> Vec<String> {
    let mut names: Vec<String> = fs
        .read_dir(Path::new("repo/packs"))
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n.ends_with(".idx"))
        .collect();
    names.sort();
    names
}

#[test]
fn an_open_of_many_pack_indexes_writes_the_index_file_and_the_next_open_reads_only_it() {
    let fs = MemFs::new();
    let (set, data) = many_packs(&fs, 150, small());
    assert!(idx_names(&fs).len() >= CONSOLIDATE_AT, "{}", idx_names(&fs).len());
    assert!(!fs.exists(Path::new("repo/index/chunks")).unwrap(), "not before an open");
    let repo = Repository::open(fs.as_ref(), "repo").unwrap();
    assert!(fs.exists(Path::new("repo/index/chunks")).unwrap(), "written by the open");
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), data);
    let stats = repo.stats().unwrap();
    drop(repo);

    // A damaged pack index the file covers is not read any more: the open succeeds...
    let victim = format!("repo/packs/{}", idx_names(&fs)[0]);
    let good = volume::fs::read_all(&fs, Path::new(&victim)).unwrap();
    put(&fs, &victim, b"damaged");
    let repo = Repository::open(fs.as_ref(), "repo").unwrap();
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), data, "every chunk found through the file");
    assert_eq!(repo.stats().unwrap(), stats);
    drop(repo);
    // ...while without the file that index is read, and its damage reported.
    fs.remove_file(Path::new("repo/index/chunks")).unwrap();
    let err = Repository::open(fs.as_ref(), "repo").unwrap_err();
    assert!(matches!(err, RepoError::CorruptIndex { .. }), "{err}");
    put(&fs, &victim, &good);

    // A damaged index file is ignored: every pack index is read instead (and the file
    // rewritten, since the open read many).
    put(&fs, "repo/index/chunks", b"SCCHIDX1 torn");
    let repo = Repository::open(fs.as_ref(), "repo").unwrap();
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), data);
    assert_eq!(repo.stats().unwrap(), stats);
    drop(repo);
    let bytes = volume::fs::read_all(&fs, Path::new("repo/index/chunks")).unwrap();
    assert!(bytes.len() > 150 * 32, "rewritten whole: {} bytes", bytes.len());
}

#[test]
fn the_index_file_of_an_encrypted_repository_is_sealed_and_reads_back() {
    let fs = MemFs::new();
    let opts = InitOptions {
        password: Some(Password::new("pw")),
        kdf: KdfParams::insecure_fast(),
        ..small()
    };
    let (set, data) = many_packs(&fs, 140, opts);
    let open = || {
        let backend = Arc::new(LocalBackend::new(fs.as_ref(), "repo"));
        Repository::open_in_with(backend, Some("pw")).unwrap()
    };
    drop(open());
    let bytes = volume::fs::read_all(&fs, Path::new("repo/index/chunks")).unwrap();
    assert!(!bytes.starts_with(b"SCCHIDX1"), "sealed, not clear");
    let repo = open();
    assert_eq!(restore(&repo, &set.files[0]).unwrap(), data);
}

/// A chunk in two packs (what an interrupted prune, or two backups storing it at once,
/// leaves), the index file covering both: removing the pack whose copy the index used leaves
/// the other one found, by a new open and by a repository opened before the removal that
/// takes a lock (which re-reads what changed).
#[test]
fn a_chunk_stays_found_when_the_pack_of_one_of_its_two_copies_goes() {
    let fs = MemFs::new();
    let (set, data) = many_packs(&fs, 8, small());
    // Copy every pack under a new id, with its index, as a repack does.
    for name in idx_names(&fs) {
        let stem = name.strip_suffix(".idx").unwrap();
        let old = Uuid::parse_str(stem).unwrap();
        let new = Uuid::new_v4();
        let pack = volume::fs::read_all(&fs, Path::new(&format!("repo/packs/{old}.pack"))).unwrap();
        put(&fs, &format!("repo/packs/{new}.pack"), &pack);
        let backend = LocalBackend::new(fs.as_ref(), "repo");
        let (_, entries) = pack::load_index(&backend, &Crypto::Plain, &name).unwrap();
        let moved: Vec<_> =
            entries.into_iter().map(|(h, l)| (h, ChunkLoc { pack: new, ..l })).collect();
        put(&fs, &format!("repo/packs/{new}.idx"), &pack::encode_index(new, &moved));
    }
    let repo = Repository::open(fs.as_ref(), "repo").unwrap();
    repo.consolidate_index().unwrap();
    let before = Repository::open(fs.as_ref(), "repo").unwrap();
    // Remove, for every chunk, the pack the index finds it in (index first, as prune does).
    let mut used = HashSet::new();
    for c in &set.files[0].chunks {
        used.insert(repo.lookup(&parse_hash(&c.hash).unwrap()).unwrap().pack);
    }
    for p in &used {
        fs.remove_file(Path::new(&format!("repo/packs/{p}.idx"))).unwrap();
        fs.remove_file(Path::new(&format!("repo/packs/{p}.pack"))).unwrap();
    }
    let after = Repository::open(fs.as_ref(), "repo").unwrap();
    assert_eq!(restore(&after, &set.files[0]).unwrap(), data, "a new open");
    drop(before.lock_shared("test").unwrap());
    assert_eq!(restore(&before, &set.files[0]).unwrap(), data, "an open from before");
    for c in &set.files[0].chunks {
        let loc = before.lookup(&parse_hash(&c.hash).unwrap()).unwrap();
        assert!(!used.contains(&loc.pack), "no chunk is found in a removed pack");
    }
}

/// A crash at every step of writing the index file (and a leftover temporary) leaves a
/// repository that opens with every chunk found; the next prune removes the leftover.
#[test]
fn a_crash_while_writing_the_index_file_loses_no_chunk() {
    let probe = MemFs::new();
    many_packs(&probe, 12, small());
    let repo = Repository::open(probe.as_ref(), "repo").unwrap();
    let start = probe.op_count();
    repo.consolidate_index().unwrap();
    let ops = probe.op_count() - start;
    assert!(ops >= 4, "{ops}");
    for at in 1..=ops + 1 {
        let fs = MemFs::new();
        let (set, data) = many_packs(&fs, 12, small());
        let repo = Repository::open(fs.as_ref(), "repo").unwrap();
        // A stale file first (covering fewer packs), so that a crash leaves the old one.
        repo.consolidate_index().unwrap();
        let src = MemFs::new();
        let more = noise(6 * CHUNK as usize, 8);
        put(&src, "more", &more);
        let (set2, _) = backup(&repo, &src, &["more"]);
        fs.crash_after(at);
        let outcome = repo.consolidate_index();
        drop(repo);
        if fs.crash_pending() {
            fs.clear_faults();
            fs.crash();
        }
        let what = format!("crash at op {at} of {ops} ({outcome:?})");
        let repo = Repository::open(fs.as_ref(), "repo").unwrap();
        assert_eq!(restore(&repo, &set.files[0]).unwrap(), data, "{what}");
        assert_eq!(restore(&repo, &set2.files[0]).unwrap(), more, "{what}");
        let r = prune::prune(&repo, &prune::PruneOptions::default()).unwrap();
        let left = fs
            .read_dir(Path::new("repo/index"))
            .unwrap()
            .into_iter()
            .filter(|e| e.name.starts_with('.'))
            .count();
        assert_eq!(left, 0, "{what}: {r:?}");
        drop(repo);
        let repo = Repository::open(fs.as_ref(), "repo").unwrap();
        assert_eq!(restore(&repo, &set2.files[0]).unwrap(), more, "{what}, pruned");
    }
}

/// A local backend that reads like an object store: runs of chunks up to `coalesce` bytes per
/// read, and every ranged read counted.
struct Coalescing {
    inner: LocalBackend,
    coalesce: usize,
    reads: std::sync::atomic::AtomicUsize,
}

impl Coalescing {
    fn new(fs: FsRef, coalesce: usize) -> Arc<Self> {
        Arc::new(Self { inner: LocalBackend::new(fs, "r"), coalesce, reads: Default::default() })
    }

    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Backend for Coalescing {
    fn get(&self, key: &str) -> io::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_range(key, offset, len)
    }
    fn put(&self, key: &str, data: &[u8]) -> io::Result<()> {
        self.inner.put(key, data)
    }
    fn list(&self, dir: &str) -> io::Result<Vec<backend::ObjectInfo>> {
        self.inner.list(dir)
    }
    fn delete(&self, key: &str) -> io::Result<()> {
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> io::Result<bool> {
        self.inner.exists(key)
    }
    fn locate(&self, key: &str) -> std::path::PathBuf {
        self.inner.locate(key)
    }
    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn read_ahead(&self) -> usize {
        3
    }
    fn coalesce_bytes(&self) -> usize {
        self.coalesce
    }
}

/// One 16-chunk file of incompressible content in one pack, backed up through `backend`.
fn one_pack_file(backend: Arc<Coalescing>, encrypted: bool) -> (Repository, BackupSet) {
    let src = MemFs::new();
    put(&src, "db", &noise(16 * CHUNK as usize, 21));
    let opts = InitOptions {
        password: encrypted.then(|| Password::new("pw")),
        kdf: KdfParams::insecure_fast(),
        ..small()
    };
    let repo = Repository::init_in(backend, opts).unwrap();
    let mut w = repo.begin_set().with_pack_target(64 << 20);
    let f = src.open(Path::new("db"), OpenMode::Read).unwrap();
    w.add_file("vol/db", crate::repo::FileRole::Database, "sg1/db1", f.as_ref(), &|_| {}).unwrap();
    let meta = SetMeta { node: "n1".into(), ..Default::default() };
    let set = w.publish(meta).unwrap();
    (repo, set)
}

#[test]
fn an_object_store_reads_a_files_consecutive_chunks_together() {
    // (coalesce bytes, encrypted, ranged reads for the 16 chunks). Encrypted chunks carry a
    // nonce and a tag, so only three fit in 4 chunks' worth of bytes.
    let four = 4 * CHUNK as usize;
    for (coalesce, encrypted, reads) in [
        (0, false, 16),
        (four, false, 4),
        (64 << 20, false, 1),
        (four, true, 6),
        (64 << 20, true, 1),
    ] {
        let fs: FsRef = Arc::new(MemFs::new());
        let backend = Coalescing::new(fs, coalesce);
        let (repo, set) = one_pack_file(backend.clone(), encrypted);
        let before = backend.reads();
        let restored = restore(&repo, &set.files[0]).unwrap();
        assert!(restored == noise(16 * CHUNK as usize, 21), "coalesce {coalesce}: content differs");
        assert_eq!(backend.reads() - before, reads, "coalesce {coalesce}, encrypted {encrypted}");
    }
}

#[test]
fn a_corrupt_chunk_inside_a_run_is_named_and_nothing_after_it_is_delivered() {
    let fs: FsRef = Arc::new(MemFs::new());
    let (repo, set) = one_pack_file(Coalescing::new(fs.clone(), 64 << 20), false);
    let chunks = &set.files[0].chunks;
    let sixth = parse_hash(&chunks[5].hash).unwrap();
    let loc = repo.lookup(&sixth).unwrap();
    let path = Path::new("r/packs").join(format!("{}.pack", loc.pack));
    let pack = fs.open(&path, OpenMode::ReadWrite).unwrap();
    let mut b = [0u8; 1];
    pack.read_exact_at(&mut b, loc.offset + 10).unwrap();
    pack.write_at(&[b[0] ^ b'X'], loc.offset + 10).unwrap();
    let mut delivered = 0u64;
    let err = repo
        .read_file(&set.files[0], &mut |_, d| {
            delivered += d.len() as u64;
            Ok(())
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RepoError::CorruptChunk { .. }), "{msg}");
    assert!(msg.contains(&chunks[5].hash), "the error names the sixth chunk: {msg}");
    assert!(delivered <= 5 * CHUNK as u64, "{delivered} bytes delivered past the bad chunk");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn coalesced_reads_restore_what_was_backed_up(files in proptest::collection::vec(
        (0usize..6 * CHUNK as usize, any::<u64>(), any::<bool>()), 1..4),
        coalesce in prop_oneof![Just(0usize), Just(CHUNK as usize), Just(3 * CHUNK as usize), Just(64usize << 20)],
        setting in 0usize..4) {
        let fs: FsRef = Arc::new(MemFs::new());
        let src = MemFs::new();
        let mut names = Vec::new();
        let mut contents = Vec::new();
        for (i, (len, seed, text)) in files.iter().enumerate() {
            // Files that share content, so that dedup breaks some runs across packs.
            let data = if *text { noise(*len, *seed % 3) } else { noise(*len, *seed) };
            let name = format!("f{i}");
            put(&src, &name, &data);
            names.push(name);
            contents.push(data);
        }
        let backend = Coalescing::new(fs, coalesce);
        let opts = InitOptions { compression: SETTINGS[setting], ..small() };
        let repo = Repository::init_in(backend.clone(), opts).unwrap();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (set, _) = backup(&repo, &src, &refs);
        let repo = Repository::open_in(backend.clone()).unwrap();
        let chunks: usize = set.files.iter().map(|f| f.chunks.len()).sum();
        let before = backend.reads();
        for (e, data) in set.files.iter().zip(&contents) {
            prop_assert!(&restore(&repo, e).unwrap() == data, "{} differs", e.path);
        }
        prop_assert!(backend.reads() - before <= chunks);
    }
}
