//! Prune: removing chunks no set references and repacking packs that are mostly unused.
//!
//! Every step leaves a repository in which every published set reads whole, so that a crash
//! (or a kill) between any two of them loses nothing:
//!
//! 1. `read`: every manifest is read (the chunks in use) and every pack index (where they are).
//!    A manifest that does not read stops the prune: chunks only it uses would look unused.
//! 2. `repack`: the used chunks of packs mostly unused are copied, as stored (sealed and
//!    compressed, never opened), into new packs; each new pack is stored before its index.
//!    Until the old ones go, those chunks are in two packs, which the index tolerates.
//! 3. `delete-indexes`: the indexes of the packs that go are removed (and the removal synced)
//!    before any of those packs, so that an index never names a missing pack.
//! 4. `delete-packs`: those packs are removed.
//! 5. `delete-orphans`: packs without an index (interrupted backups' leftovers) are removed.
//!    That is safe only under the exclusive lock, when no backup is storing a pack whose
//!    index is about to follow.
//! 6. The chunk index file (`index/chunks`), if the repository has one or enough packs to
//!    want one, is rewritten to cover what is left. It is a cache that is only trusted for
//!    packs whose `.idx` is listed, so a crash before or during this step loses nothing.
//!
//! All of it runs under the repository's exclusive lock.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::IoContext;
use super::pack::{self, ChunkLoc, pack_key};
use super::{Repository, Result, parse_hash};

/// New packs made by repacking are sealed past this size (as a backup's are).
const PACK_TARGET: u64 = 32 << 20;

/// The environment variable of the crash tests' hook: `SHADOWCOPY_PRUNE_KILL_AT=<step>` (a
/// name of [`KILL_POINTS`], or its 1-based number) makes prune SIGKILL its own process at that
/// point, so that a test can check what every interrupted prune leaves. A test hook only: it
/// does nothing unless set.
pub const KILL_AT_ENV: &str = "SHADOWCOPY_PRUNE_KILL_AT";

/// The points at which [`KILL_AT_ENV`] can stop a prune, in the order a prune passes them (a
/// prune with nothing to do at a step passes its point all the same).
pub const KILL_POINTS: &[&str] = &[
    "read",
    "repack-first-pack",
    "repack-first-index",
    "repacked",
    "first-index-deleted",
    "indexes-deleted",
    "first-pack-deleted",
    "packs-deleted",
    "orphans-deleted",
];

/// Options of `backup prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneOptions {
    /// A pack whose unused share (of its stored bytes) is above this percentage is repacked.
    pub max_unused_percent: f64,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self { max_unused_percent: 10.0, dry_run: false }
    }
}

/// What a prune did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub packs_before: u64,
    pub packs_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of still-used chunks copied into new packs.
    pub bytes_repacked: u64,
    pub chunks_removed: u64,
    pub packs_removed: u64,
    pub dry_run: bool,
    /// Packs whose used chunks were copied into new packs.
    #[serde(default)]
    pub packs_repacked: u64,
    /// Packs without an index (interrupted backups' leftovers) among `packs_removed`.
    #[serde(default)]
    pub orphan_packs_removed: u64,
    /// Chunks the manifests name that no index holds: damage prune cannot repair (`backup
    /// verify` names the sets concerned).
    #[serde(default)]
    pub chunks_missing: u64,
    /// Bytes of temporaries interrupted stores left behind, removed.
    #[serde(default)]
    pub incomplete_bytes_removed: u64,
}

/// Prunes `repo` (holding its exclusive lock for the whole run).
pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport> {
    prune_with_progress(repo, opts, &mut |_| {})
}

/// [`prune`], telling `step` what it starts (`reading manifests`, `repacking 3 packs`, …).
pub fn prune_with_progress(
    repo: &Repository,
    opts: &PruneOptions,
    step: &mut dyn FnMut(&str),
) -> Result<PruneReport> {
    let _lock = repo.lock_exclusive(if opts.dry_run { "prune --dry-run" } else { "prune" })?;
    let backend = repo.backend().as_ref();
    let crypto = repo.crypto();
    let kill_at = std::env::var(KILL_AT_ENV).ok();
    let reached = |point: &str| kill_point(kill_at.as_deref(), point);

    step("reading manifests");
    let mut used: HashSet<blake3::Hash> = HashSet::new();
    for set in repo.list_sets()? {
        for f in &set.files {
            for c in &f.chunks {
                used.insert(parse_hash(&c.hash).ok_or_else(|| {
                    super::RepoError::CorruptManifest {
                        set: set.id.to_string(),
                        why: format!("chunk hash {:?} of {} is not a BLAKE3 hash", c.hash, f.path),
                    }
                })?);
            }
        }
    }

    step("reading pack indexes");
    let listed = backend.list("packs").ctx("listing", backend.locate("packs"))?;
    let mut pack_sizes: BTreeMap<Uuid, u64> = BTreeMap::new();
    let mut index_sizes: BTreeMap<Uuid, u64> = BTreeMap::new();
    for o in &listed {
        let (stem, ext) = o.name.rsplit_once('.').unwrap_or((o.name.as_str(), ""));
        let Ok(id) = Uuid::parse_str(stem) else { continue };
        match ext {
            "pack" => pack_sizes.insert(id, o.size),
            "idx" => index_sizes.insert(id, o.size),
            _ => None,
        };
    }
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        packs_before: pack_sizes.len() as u64,
        bytes_before: pack_sizes.values().chain(index_sizes.values()).sum(),
        ..PruneReport::default()
    };
    // Each used chunk is kept in one pack: the first (in id order) whose index holds it.
    // Further copies count as unused, which is how a prune cleans up the duplicates an
    // interrupted one left.
    let mut kept: HashSet<blake3::Hash> = HashSet::new();
    let mut plans: Vec<PackPlan> = Vec::new();
    for &id in index_sizes.keys() {
        let (_, entries) = pack::load_index(backend, crypto, &format!("{id}.idx"))?;
        let size = pack_sizes.get(&id).copied().unwrap_or(0);
        let mut keep = Vec::new();
        let mut unused_chunks = 0u64;
        for (h, loc) in entries {
            if used.contains(&h) && kept.insert(h) {
                keep.push((h, loc));
            } else {
                unused_chunks += 1;
            }
        }
        plans.push(PackPlan { id, size, keep, unused_chunks });
    }
    report.chunks_missing = used.iter().filter(|h| !kept.contains(h)).count() as u64;
    if report.chunks_missing > 0 {
        tracing::warn!(
            missing = report.chunks_missing,
            "chunks named by sets are in no pack index; `backup verify` names the sets"
        );
    }
    let orphans: Vec<Uuid> =
        pack_sizes.keys().filter(|id| !index_sizes.contains_key(id)).copied().collect();
    let mut doomed: Vec<Uuid> = Vec::new();
    let mut to_copy: Vec<(blake3::Hash, ChunkLoc)> = Vec::new();
    for p in &plans {
        let used_bytes: u64 = p.keep.iter().map(|(_, l)| l.stored_len as u64).sum();
        let unused_share = if p.size == 0 {
            0.0
        } else {
            100.0 * p.size.saturating_sub(used_bytes) as f64 / p.size as f64
        };
        if p.keep.is_empty() {
            doomed.push(p.id);
            report.chunks_removed += p.unused_chunks;
        } else if p.unused_chunks > 0 && unused_share > opts.max_unused_percent {
            doomed.push(p.id);
            report.packs_repacked += 1;
            report.chunks_removed += p.unused_chunks;
            report.bytes_repacked += used_bytes;
            to_copy.extend(p.keep.iter().copied());
        }
    }
    report.packs_removed = (doomed.len() + orphans.len()) as u64;
    report.orphan_packs_removed = orphans.len() as u64;
    reached("read");

    if opts.dry_run {
        let gone: u64 = doomed
            .iter()
            .chain(&orphans)
            .map(|id| {
                pack_sizes.get(id).copied().unwrap_or(0) + index_sizes.get(id).copied().unwrap_or(0)
            })
            .sum();
        let new_packs = report.bytes_repacked.div_ceil(PACK_TARGET);
        report.packs_after = report.packs_before - report.packs_removed + new_packs;
        report.bytes_after = report.bytes_before - gone + report.bytes_repacked;
        return Ok(report);
    }

    step(&format!(
        "repacking {} packs ({} bytes in use)",
        report.packs_repacked, report.bytes_repacked
    ));
    let mut source: Option<(Uuid, Vec<u8>)> = None;
    let mut out = NewPack::default();
    let mut first_pack = true;
    for (h, loc) in &to_copy {
        if source.as_ref().is_none_or(|(id, _)| *id != loc.pack) {
            let key = pack_key(loc.pack, "pack");
            source = Some((loc.pack, backend.get(&key).ctx("reading", backend.locate(&key))?));
        }
        let Some((_, data)) = &source else { continue };
        let start = loc.offset as usize;
        let Some(bytes) = data.get(start..start + loc.stored_len as usize) else {
            return Err(super::RepoError::CorruptChunk {
                hash: h.to_hex().to_string(),
                file: "(prune)".into(),
                pack: backend.locate(&pack_key(loc.pack, "pack")).display().to_string(),
                why: "the index points past the end of the pack".into(),
            });
        };
        out.append(*h, bytes, loc);
        if out.data.len() as u64 >= PACK_TARGET {
            std::mem::take(&mut out).store(repo, &mut first_pack, &reached)?;
        }
    }
    if !out.entries.is_empty() {
        out.store(repo, &mut first_pack, &reached)?;
    }
    reached("repacked");

    step(&format!("removing {} pack indexes", doomed.len()));
    for (i, id) in doomed.iter().enumerate() {
        let key = pack_key(*id, "idx");
        delete(repo, &key)?;
        if i == 0 {
            backend.sync_dir("packs").ctx("syncing", backend.locate("packs"))?;
            reached("first-index-deleted");
        }
    }
    backend.sync_dir("packs").ctx("syncing", backend.locate("packs"))?;
    reached("indexes-deleted");

    step(&format!("removing {} packs", doomed.len()));
    for (i, id) in doomed.iter().enumerate() {
        delete(repo, &pack_key(*id, "pack"))?;
        if i == 0 {
            backend.sync_dir("packs").ctx("syncing", backend.locate("packs"))?;
            reached("first-pack-deleted");
        }
    }
    backend.sync_dir("packs").ctx("syncing", backend.locate("packs"))?;
    reached("packs-deleted");

    step(&format!("removing {} packs without an index", orphans.len()));
    for id in &orphans {
        delete(repo, &pack_key(*id, "pack"))?;
    }
    backend.sync_dir("packs").ctx("syncing", backend.locate("packs"))?;
    // What stores cut short left (hidden temporaries of packs and manifests): no store runs
    // under the exclusive lock, so none of them is on its way.
    for dir in ["packs", "sets", "index"] {
        report.incomplete_bytes_removed +=
            backend.remove_incomplete(dir).ctx("removing leftovers in", backend.locate(dir))?;
    }
    reached("orphans-deleted");

    repo.load_index()?;
    // The index file is rewritten to what is left, so that it stops listing the packs that
    // went (they would be skipped, but read and carried on every open).
    if repo.wants_index_file()?
        && let Err(e) = repo.consolidate_index()
    {
        tracing::warn!(error = %e, "the chunk index file was not rewritten after the prune");
    }
    let after = backend.list("packs").ctx("listing", backend.locate("packs"))?;
    report.packs_after = after.iter().filter(|o| o.name.ends_with(".pack")).count() as u64;
    report.bytes_after = after.iter().map(|o| o.size).sum();
    Ok(report)
}

/// One indexed pack and what prune keeps of it.
struct PackPlan {
    id: Uuid,
    size: u64,
    keep: Vec<(blake3::Hash, ChunkLoc)>,
    unused_chunks: u64,
}

/// A pack being filled with repacked chunks.
struct NewPack {
    id: Uuid,
    data: Vec<u8>,
    entries: Vec<(blake3::Hash, ChunkLoc)>,
}

impl Default for NewPack {
    fn default() -> Self {
        Self { id: Uuid::new_v4(), data: Vec::new(), entries: Vec::new() }
    }
}

impl NewPack {
    /// Appends a chunk's stored bytes as they are, keeping how they were stored.
    fn append(&mut self, hash: blake3::Hash, stored: &[u8], old: &ChunkLoc) {
        let loc = ChunkLoc { pack: self.id, offset: self.data.len() as u64, ..*old };
        self.data.extend_from_slice(stored);
        self.entries.push((hash, loc));
    }

    /// Stores the pack, then its index (as [`pack::PackWriter::seal`] does, with the crash
    /// test's points between).
    fn store(self, repo: &Repository, first: &mut bool, reached: &dyn Fn(&str)) -> Result<()> {
        let backend = repo.backend().as_ref();
        let key = pack_key(self.id, "pack");
        backend.put(&key, &self.data).ctx("storing pack", backend.locate(&key))?;
        if *first {
            reached("repack-first-pack");
        }
        let idx = pack_key(self.id, "idx");
        let bytes = repo.crypto().seal(pack::encode_index(self.id, &self.entries));
        backend.put(&idx, &bytes).ctx("storing pack index", backend.locate(&idx))?;
        if *first {
            reached("repack-first-index");
            *first = false;
        }
        Ok(())
    }
}

/// Removes an object; one already gone is fine (a prune run twice over a crash).
fn delete(repo: &Repository, key: &str) -> Result<()> {
    let backend = repo.backend();
    match backend.delete(key) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(super::RepoError::Io { op: "removing", path: backend.locate(key), source: e })
        }
        _ => Ok(()),
    }
}

/// The crash tests' hook (see [`KILL_AT_ENV`]): kills this process, as a power loss or an
/// OOM kill would, when `want` names `point`.
fn kill_point(want: Option<&str>, point: &str) {
    let Some(want) = want else { return };
    let n = KILL_POINTS.iter().position(|p| *p == point).map(|i| i + 1);
    if want == point || want.parse::<usize>().ok() == n && n.is_some() {
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        // SIGKILL to oneself is delivered before kill returns; should it not be, still
        // never go on past the point the test asked to stop at.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use volume::fs::{FileSystem, OpenMode};
    use volume::mem::MemFs;

    use super::*;
    use crate::repo::{BackupSet, FileRole, InitOptions, SetMeta, lock};

    const CHUNK: u32 = 4096;

    /// A repository at `r` of `fs` with a deleted set's pack, a pack to repack and an
    /// unindexed leftover; returns the files' bytes by path.
    fn garbage(fs: &MemFs) -> BTreeMap<String, Vec<u8>> {
        let src = MemFs::new();
        let mut originals = BTreeMap::new();
        for (i, n) in ["shared", "dropped", "kept", "gone"].iter().enumerate() {
            let data = store::load::random_body(4 * CHUNK as usize + i * 7, i as u64);
            let f = src.open(Path::new(n), OpenMode::Create).unwrap();
            f.write_at(&data, 0).unwrap();
            originals.insert(format!("vol/{n}"), data);
        }
        let repo = Repository::init(
            fs.as_ref(),
            "r",
            InitOptions { chunk_size: CHUNK, zstd_level: 1, ..InitOptions::default() },
        )
        .unwrap();
        let backup = |names: &[&str]| -> BackupSet {
            let mut w = repo.begin_set();
            for n in names {
                let f = src.open(Path::new(n), OpenMode::Read).unwrap();
                w.add_file(&format!("vol/{n}"), FileRole::Database, "sg", f.as_ref(), &|_| {})
                    .unwrap();
            }
            w.publish(SetMeta::default()).unwrap()
        };
        let first = backup(&["shared", "dropped"]);
        backup(&["shared", "kept"]);
        let gone = backup(&["gone"]);
        repo.remove_set(&first.id).unwrap();
        repo.remove_set(&gone.id).unwrap();
        let leftover = format!("packs/{}.pack", Uuid::new_v4());
        repo.backend().put(&leftover, b"an interrupted backup's pack").unwrap();
        originals
    }

    fn check(fs: &MemFs, originals: &BTreeMap<String, Vec<u8>>, what: &str) -> Repository {
        let repo = Repository::open(fs.as_ref(), "r").unwrap();
        let sets = repo.list_sets().unwrap();
        assert_eq!(sets.len(), 1, "{what}");
        for f in &sets[0].files {
            let mut out = vec![0u8; f.size as usize];
            repo.read_file(f, &mut |off, d| {
                out[off as usize..off as usize + d.len()].copy_from_slice(d);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{what}: {}: {e}", f.path));
            assert_eq!(out, originals[&f.path], "{what}: {}", f.path);
        }
        repo
    }

    #[test]
    fn prune_reclaims_and_a_second_finds_nothing() {
        let fs = MemFs::new();
        let originals = garbage(&fs);
        let repo = Repository::open(fs.as_ref(), "r").unwrap();
        let dry = prune(&repo, &PruneOptions { dry_run: true, ..Default::default() }).unwrap();
        let r = prune(&repo, &PruneOptions::default()).unwrap();
        assert_eq!((r.packs_removed, r.packs_repacked, r.orphan_packs_removed), (3, 1, 1), "{r:?}");
        assert!(r.bytes_after < r.bytes_before, "{r:?}");
        assert_eq!(
            (dry.packs_removed, dry.packs_repacked, dry.bytes_repacked),
            (r.packs_removed, r.packs_repacked, r.bytes_repacked),
            "a dry run reports what the prune does"
        );
        // The in-memory index was reloaded: the repository reads on without reopening.
        let set = &repo.list_sets().unwrap()[0];
        repo.verify_set(set, &|_| {}).unwrap();
        check(&fs, &originals, "after a prune");
        let again = prune(&repo, &PruneOptions::default()).unwrap();
        assert_eq!((again.packs_removed, again.packs_repacked), (0, 0), "{again:?}");
    }

    #[test]
    fn a_prune_refuses_while_a_backup_holds_its_lock() {
        let fs = MemFs::new();
        garbage(&fs);
        let repo = Repository::open(fs.as_ref(), "r").unwrap();
        let held = repo.lock_shared("backup of SG1").unwrap();
        let err = prune(&repo, &PruneOptions::default()).unwrap_err();
        assert!(matches!(err, crate::repo::RepoError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("backup of SG1"), "{err}");
        // A second backup shares the lock.
        drop(repo.lock_shared("backup of SG2").unwrap());
        drop(held);
        prune(&repo, &PruneOptions::default()).unwrap();
        assert!(lock::read_locks(repo.backend().as_ref()).unwrap().is_empty(), "locks removed");
    }

    #[test]
    fn a_crash_at_any_point_of_a_prune_leaves_every_set_whole() {
        let probe = MemFs::new();
        garbage(&probe);
        let repo = Repository::open(probe.as_ref(), "r").unwrap();
        let start = probe.op_count();
        prune(&repo, &PruneOptions::default()).unwrap();
        let ops = probe.op_count() - start;
        assert!(ops > 10, "{ops}");
        for at in 1..=ops + 1 {
            let fs = MemFs::new();
            let originals = garbage(&fs);
            let repo = Repository::open(fs.as_ref(), "r").unwrap();
            fs.crash_after(at);
            let outcome = prune(&repo, &PruneOptions::default());
            drop(repo);
            if fs.crash_pending() {
                fs.clear_faults();
                fs.crash();
            }
            let what = format!("crash at op {at} of {ops} ({outcome:?})");
            let repo = check(&fs, &originals, &what);
            // The crashed prune's lock names this (live) process: an administrator's
            // `unlock --remove-all`, then a prune that finishes the job.
            lock::remove_locks(repo.backend().as_ref(), true).unwrap();
            let r = prune(&repo, &PruneOptions::default()).unwrap();
            check(&fs, &originals, &format!("{what}, pruned again"));
            let again = prune(&repo, &PruneOptions::default()).unwrap();
            assert_eq!((again.packs_removed, again.packs_repacked), (0, 0), "{what}: {r:?}");
        }
    }
}
