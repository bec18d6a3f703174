//! `expose-read`: sequential read of a large file through a shadow copy exposed over FUSE
//! (`admin expose`) vs the same file read directly from the live volume's backing file.
//!
//! One file (1 GiB by default, `--size-mib`) is written through a shadow volume and snapshotted;
//! the snapshot view is mounted with the node's own FUSE file system (the code `admin expose`
//! runs) and the file read start to end in 1 MiB reads, once with the host's page cache
//! emptied of the file (cold: the disk under both) and once with the backing file cached
//! (warm: what FUSE itself costs). Before each pass the pages of the file read are dropped
//! (`POSIX_FADV_DONTNEED`), so the exposed pass never reads FUSE's own cache. Needs root and
//! /dev/fuse.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use volume::{FileSystem, OpenMode, Volume, VolumeOptions};

use crate::args::ExposeReadArgs;

const CHUNK: usize = 1 << 20;

/// Drops the cached pages of `path` (clean: the file was synced).
fn evict(path: &Path) -> anyhow::Result<()> {
    let f = std::fs::File::open(path)?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// Reads `path` start to end in 1 MiB reads; MiB/s and the bytes read.
fn read_through(path: &Path) -> anyhow::Result<(f64, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let t = Instant::now();
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok((total as f64 / (1024.0 * 1024.0) / secs, total))
}

/// Runs the scenario.
pub fn run(opts: &ExposeReadArgs) -> anyhow::Result<()> {
    let size = opts.size_mib << 20;
    let scratch = opts.scratch.scratch()?;
    let root = scratch.path.join("vol");
    let v = Volume::create(&root, VolumeOptions::new("expose"))?;
    let f = v.open(Path::new("big.bin"), OpenMode::CreateNew)?;
    let mut chunk = vec![0u8; CHUNK];
    for i in 0..size / CHUNK as u64 {
        // Not zeros, not one repeated chunk: every MiB differs.
        chunk.iter_mut().enumerate().for_each(|(j, b)| *b = (i as usize * 31 + j / 4096) as u8);
        f.write_at(&chunk, i * CHUNK as u64)?;
    }
    f.sync()?;
    drop(f);
    let snap = v.snapshot(false)?;
    let view: volume::FsRef = Arc::new(v.view(snap.id)?);
    let mnt = scratch.path.join("mnt");
    std::fs::create_dir_all(&mnt)?;
    let mount = node::expose::mount_view(snap.id, view, &mnt)?;
    let result = (|| -> anyhow::Result<serde_json::Value> {
        let direct = root.join("big.bin");
        let exposed = mnt.join("big.bin");
        evict(&direct)?;
        let (direct_cold, n1) = read_through(&direct)?;
        evict(&direct)?;
        evict(&exposed)?;
        let (exposed_cold, n2) = read_through(&exposed)?;
        let (direct_warm, n3) = read_through(&direct)?;
        evict(&exposed)?;
        let (exposed_warm, n4) = read_through(&exposed)?;
        anyhow::ensure!([n1, n2, n3, n4].iter().all(|&n| n == size), "short reads");
        Ok(json!({
            "scenario": "expose-read",
            "size_mib": opts.size_mib,
            "direct_mib_s": direct_cold,
            "exposed_mib_s": exposed_cold,
            "ratio": exposed_cold / direct_cold,
            "direct_warm_mib_s": direct_warm,
            "exposed_warm_mib_s": exposed_warm,
            "warm_ratio": exposed_warm / direct_warm,
        }))
    })();
    mount.unmount(true);
    println!("{}", result?);
    Ok(())
}
