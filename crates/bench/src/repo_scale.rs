//! `repo-scale`: the backup repository's chunk index at 10 million chunks — memory held per
//! chunk, time to open the repository (load the index) and time to look a chunk up, against
//! the structure it replaced (a `HashMap<blake3::Hash, ChunkLoc>` filled from every pack
//! index) in the same run.
//!
//! The repository is real (`Repository::init`) and its pack indexes are the files a backup
//! writes (`encode_pack_index`), with synthetic chunk ids (BLAKE3 of a counter, uniformly
//! distributed like real ones) and locations (`--chunks-per-pack` chunks a pack, about what
//! 1 MiB chunks compressed into 32 MiB packs give); the packs' data is not written, since
//! nothing here reads a chunk. Each structure is measured in a fresh process (this binary
//! started again with `--measure`), so that what one leaves in the allocator does not count
//! against the other:
//!
//! - `baseline`: the old open — list `packs/`, read every `.idx`, insert into the `HashMap`
//!   (behind a read-write lock, as the repository held it);
//! - `first-open`: `Repository::open_host` with per-pack indexes only: it reads them all into
//!   the compact index and, having read many, writes the index file (included in the time);
//! - `ours`: `Repository::open_host` again, now reading the index file.
//!
//! Where an open's time goes is reported beside it: CPU time (user, system: page faults and
//! copies from the page cache are system time) and the time the process was ready to run but
//! waited for a core (`/proc/self/schedstat`), which on a shared machine can be most of the
//! wall time; the rest is time blocked (on the disk, say).
//!
//! Memory is the growth of the resident set (`VmRSS` of `/proc/self/status`) over the open,
//! divided by the chunks, and the peak (`VmHWM`) likewise. Lookups are timed through
//! `Repository::lookup` and the locked map: hits of chunks drawn at random, and misses.
//! Files are in the page cache (just written): the open times are CPU, not disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use backup::repo::{
    ChunkLoc, Codec, Crypto, InitOptions, LocalBackend, Repository, encode_pack_index,
    load_pack_index,
};
use parking_lot::RwLock;
use serde_json::{Value, json};
use uuid::Uuid;
use volume::{FsRef, HostFs};

use crate::args::RepoScaleArgs;
use crate::cpu::Cpu;

/// The targets.
const TARGET_BYTES_PER_CHUNK: f64 = 64.0;
const TARGET_OPEN_S: f64 = 2.0;

/// Runs the scenario (or, with `--measure`, one of its measurements).
pub fn run(opts: &RepoScaleArgs) -> anyhow::Result<()> {
    if let Some(kind) = &opts.measure {
        let repo = opts.repo.as_deref().context("--measure needs --repo")?;
        println!("{}", measure(kind, repo, opts)?);
        return Ok(());
    }
    let n = opts.chunks.max(1);
    let per = opts.chunks_per_pack.max(1);
    let scratch = opts.scratch.scratch()?;
    let repo_dir = scratch.path.join("repo");
    std::fs::create_dir_all(&repo_dir)?;
    let fs: FsRef = Arc::new(HostFs::new(&repo_dir)?);
    drop(Repository::init(fs, "", InitOptions::default())?);
    let t = Instant::now();
    let packs = write_pack_indexes(&repo_dir, n, per)?;
    let setup_s = t.elapsed().as_secs_f64();

    let baseline = child("baseline", &repo_dir, opts)?;
    let first = child("first-open", &repo_dir, opts)?;
    let ours = child("ours", &repo_dir, opts)?;
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let mut line = json!({
        "scenario": "repo-scale",
        "chunks": n,
        "packs": packs,
        "chunks_per_pack": per,
        "lookups": opts.lookups,
        "memory": "VmRSS growth over the open, fresh process per structure",
        "setup_s": setup_s,
        "index_file_mib": std::fs::metadata(repo_dir.join("index/chunks"))
            .map(|m| m.len() as f64 / (1 << 20) as f64)
            .ok(),
        "first_open_s": f(&first, "open_s"),
        "first_open_peak_bytes_per_chunk": f(&first, "peak_bytes_per_chunk"),
    });
    for (who, v) in [("ours", &ours), ("baseline", &baseline)] {
        for k in [
            "open_s",
            "open_user_s",
            "open_sys_s",
            "open_runq_s",
            "bytes_per_chunk",
            "peak_bytes_per_chunk",
            "hit_ns",
            "miss_ns",
        ] {
            line[format!("{who}_{k}")] = json!(f(v, k));
        }
    }
    for k in ["open_s", "bytes_per_chunk", "hit_ns", "miss_ns"] {
        line[format!("ratio_{k}")] = json!(f(&ours, k) / f(&baseline, k));
    }
    line["target_bytes_per_chunk"] = json!(TARGET_BYTES_PER_CHUNK);
    line["target_open_s"] = json!(TARGET_OPEN_S);
    line["targets_met"] = json!(
        f(&ours, "bytes_per_chunk") <= TARGET_BYTES_PER_CHUNK
            && f(&ours, "open_s") <= TARGET_OPEN_S
    );
    println!("{line}");
    Ok(())
}

/// Chunk `i`'s synthetic id.
fn id(i: u64) -> blake3::Hash {
    blake3::hash(&i.to_le_bytes())
}

/// Writes the pack indexes of `n` chunks, `per` a pack; returns the number of packs.
fn write_pack_indexes(repo: &Path, n: u64, per: u64) -> anyhow::Result<u64> {
    let dir = repo.join("packs");
    let mut packs = 0;
    let mut first = 0;
    while first < n {
        let pack = Uuid::from_u128(0x5c00_0000_0000_4000_8000_0000_0000_0000 | u128::from(packs));
        let mut offset = 0u64;
        let entries: Vec<(blake3::Hash, ChunkLoc)> = (first..(first + per).min(n))
            .map(|i| {
                let stored_len = 300_000 + (i * 7919 % 400_000) as u32;
                let loc =
                    ChunkLoc { pack, offset, stored_len, raw_len: 1 << 20, codec: Codec::Zstd };
                offset += u64::from(stored_len);
                (id(i), loc)
            })
            .collect();
        std::fs::write(dir.join(format!("{pack}.idx")), encode_pack_index(pack, &entries))?;
        packs += 1;
        first += per;
    }
    Ok(packs)
}

/// Runs one measurement in a fresh process and returns its figures.
fn child(kind: &str, repo: &Path, opts: &RepoScaleArgs) -> anyhow::Result<Value> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .arg("repo-scale")
        .args(["--measure", kind, "--repo"])
        .arg(repo)
        .args(["--chunks", &opts.chunks.max(1).to_string()])
        .args(["--lookups", &opts.lookups.to_string()])
        .output()
        .with_context(|| format!("running the {kind} measurement"))?;
    if !out.status.success() {
        bail!(
            "the {kind} measurement failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let last = text.lines().last().context("the measurement printed nothing")?;
    Ok(serde_json::from_str(last)?)
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn rss() -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("no {name} in /proc/self/status"))?;
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse()?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Nanoseconds the main thread (which does the open) has spent ready to run but waiting for
/// a core, from `/proc/self/schedstat` (`None` on kernels without scheduler statistics).
fn runq_wait_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    stat.split_whitespace().nth(1)?.parse().ok()
}

/// A structure's lookup, as the repository calls it.
type Lookup = Box<dyn Fn(&blake3::Hash) -> Option<ChunkLoc>>;

/// One structure's figures: open time, memory per chunk, lookup times.
fn measure(kind: &str, repo: &Path, opts: &RepoScaleArgs) -> anyhow::Result<Value> {
    let n = opts.chunks.max(1);
    let (rss0, _) = rss()?;
    let (cpu0, wait0) = (Cpu::now(), runq_wait_ns());
    let t = Instant::now();
    let lookup: Lookup = match kind {
        "baseline" => {
            let map = RwLock::new(open_baseline(repo)?);
            Box::new(move |h| map.read().get(h).copied())
        }
        "first-open" | "ours" => {
            let had_file = repo.join("index/chunks").exists();
            if had_file != (kind == "ours") {
                bail!("{kind}: the index file is {}there", if had_file { "" } else { "not " });
            }
            let r = Repository::open_host(repo)?;
            Box::new(move |h| r.lookup(h))
        }
        other => bail!("no measurement {other:?}"),
    };
    let open_s = t.elapsed().as_secs_f64();
    let cpu = Cpu::since(cpu0);
    let wait = runq_wait_ns().zip(wait0).map(|(b, a)| b.saturating_sub(a) as f64 / 1e9);
    let (rss1, hwm) = rss()?;

    let q = opts.lookups.clamp(1, n);
    // Chunks drawn at random (a multiplicative hash of the draw number), and chunks not in.
    let hits: Vec<blake3::Hash> =
        (0..q).map(|i| id(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n)).collect();
    let misses: Vec<blake3::Hash> = (0..q).map(|i| id(n + i)).collect();
    let t = Instant::now();
    let found = hits.iter().filter(|h| lookup(h).is_some()).count() as u64;
    let hit_ns = t.elapsed().as_nanos() as f64 / q as f64;
    let t = Instant::now();
    let wrong = misses.iter().filter(|h| lookup(h).is_some()).count();
    let miss_ns = t.elapsed().as_nanos() as f64 / q as f64;
    if found != q || wrong != 0 {
        bail!("{kind}: {found} of {q} chunks found, {wrong} found that are not in");
    }
    Ok(json!({
        "kind": kind,
        "open_s": open_s,
        "open_user_s": cpu.user.as_secs_f64(),
        "open_sys_s": cpu.sys.as_secs_f64(),
        "open_runq_s": wait,
        "bytes_per_chunk": rss1.saturating_sub(rss0) as f64 / n as f64,
        "peak_bytes_per_chunk": hwm.saturating_sub(rss0) as f64 / n as f64,
        "hit_ns": hit_ns,
        "miss_ns": miss_ns,
    }))
}

/// The open before the compact index: every pack index read into a `HashMap`, the first
/// copy of a chunk winning.
fn open_baseline(repo: &Path) -> anyhow::Result<HashMap<blake3::Hash, ChunkLoc>> {
    let fs: FsRef = Arc::new(HostFs::new(repo)?);
    let backend = LocalBackend::new(fs, PathBuf::new());
    let mut index = HashMap::new();
    for o in backup::repo::Backend::list(&backend, "packs")? {
        if !o.name.ends_with(".idx") {
            continue;
        }
        let (_, entries) = load_pack_index(&backend, &Crypto::Plain, &o.name)?;
        for (h, l) in entries {
            index.entry(h).or_insert(l);
        }
    }
    Ok(index)
}
