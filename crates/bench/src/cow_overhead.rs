//! `cow-overhead`: what the copy-on-write filter costs a writer.
//!
//! One file (2 GiB by default, `--size-mib`) is overwritten in 16 KiB writes, in sequential
//! and in random order, each pass ending with a sync: first with no snapshot (the baseline),
//! then right after a non-persistent snapshot (every write is a first write: its block is
//! preserved first), then again (every block already preserved: only the bitmap is checked).
//!
//! Each pattern runs twice: syncing once at the end of a pass, and durably, syncing after
//! every 1 MiB written as a database does (`durability` key: `end` or `every_mib`).
//!
//! The same passes run for both providers (`provider` key): the software provider on the
//! scratch directory, and the btrfs provider on a btrfs the bench makes on a loop device
//! (redirect-on-write: a first write copies nothing, btrfs writes it to a new block). Without
//! root (or btrfs-progs) the btrfs run prints a line saying it was skipped.

use std::path::Path;
use std::time::Instant;

use serde_json::json;
use volume::btrfs::scratch::ScratchBtrfs;
use volume::{BtrfsProvider, CommitOptions, FileRef, FileSystem, OpenMode, Volume, VolumeOptions};

use crate::args::CowOverheadArgs;

const BLOCK: usize = 16 * 1024;

fn order(blocks: u64, random: bool) -> Vec<u64> {
    let mut v: Vec<u64> = (0..blocks).collect();
    if random {
        // xorshift64* Fisher–Yates, fixed seed: the same order every run.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in (1..v.len()).rev() {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let j = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    v
}

/// Writes per sync in the durable passes: 1 MiB.
const DURABLE_WRITES: usize = (1 << 20) / BLOCK;

/// How often a pass syncs.
#[derive(Debug, Clone, Copy)]
enum Durability {
    /// Once, at the end.
    End,
    /// After every 1 MiB written.
    EveryMib,
}

impl Durability {
    const BOTH: [Durability; 2] = [Durability::End, Durability::EveryMib];

    fn name(self) -> &'static str {
        match self {
            Durability::End => "end",
            Durability::EveryMib => "every_mib",
        }
    }
}

fn pass(f: &FileRef, order: &[u64], fill: u8, durability: Durability) -> anyhow::Result<f64> {
    let buf = vec![fill; BLOCK];
    let t = Instant::now();
    for (i, &b) in order.iter().enumerate() {
        f.write_at(&buf, b * BLOCK as u64)?;
        if matches!(durability, Durability::EveryMib) && (i + 1) % DURABLE_WRITES == 0 {
            f.sync()?;
        }
    }
    let loop_s = t.elapsed().as_secs_f64();
    f.sync()?;
    let secs = t.elapsed().as_secs_f64();
    if std::env::var_os("SHADOWCOPY_BENCH_DEBUG").is_some() {
        eprintln!("fill {fill}: loop {loop_s:.2}s, total {secs:.2}s");
    }
    Ok((order.len() * BLOCK) as f64 / (1024.0 * 1024.0) / secs)
}

/// Every (pattern, random) with every durability.
fn patterns() -> impl Iterator<Item = ((&'static str, bool), Durability)> {
    [("sequential", false), ("random", true)]
        .into_iter()
        .flat_map(|p| Durability::BOTH.into_iter().map(move |d| (p, d)))
}

/// Runs the scenario.
pub fn run(opts: &CowOverheadArgs) -> anyhow::Result<()> {
    let size_mib = opts.size_mib;
    let blocks = size_mib * 1024 * 1024 / BLOCK as u64;
    let scratch = opts.scratch.scratch()?;
    let v = Volume::create(scratch.path.join("vol"), VolumeOptions::new("cow"))?;
    let f = v.open(Path::new("data.edb"), OpenMode::CreateNew)?;
    pass(&f, &order(blocks, false), 1, Durability::End)?;
    for ((pattern, random), durability) in patterns() {
        let ord = order(blocks, random);
        let base = pass(&f, &ord, 2, durability)?;
        let snap = v.snapshot(false)?;
        let first = pass(&f, &ord, 3, durability)?;
        v.sync_shadow_storage()?;
        let preserved = pass(&f, &ord, 4, durability)?;
        let diff_bytes = v.snapshots()[0].diff_area_bytes;
        v.delete_snapshot(snap.id)?;
        println!(
            "{}",
            json!({
                "scenario": "cow-overhead",
                "provider": "software",
                "pattern": pattern,
                "durability": durability.name(),
                "size_mib": size_mib,
                "base_mib_s": base,
                "first_write_mib_s": first,
                "preserved_mib_s": preserved,
                "first_write_ratio": first / base,
                "preserved_ratio": preserved / base,
                "diff_area_bytes": diff_bytes,
            })
        );
    }
    drop(f);
    drop(v);
    run_btrfs(size_mib, blocks)
}

/// The same passes on a btrfs volume snapshotted by the btrfs provider.
fn run_btrfs(size_mib: u64, blocks: u64) -> anyhow::Result<()> {
    // The snapshot keeps the old copy while the passes write new ones: room for three.
    let b = match ScratchBtrfs::create((size_mib * 3 + 1024) << 20) {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot make a btrfs on a loop device (needs root): {e}");
            println!(
                "{}",
                json!({"scenario": "cow-overhead", "provider": "btrfs", "skipped": why})
            );
            return Ok(());
        }
    };
    let v = Volume::create(b.subvolume("vol")?, VolumeOptions::new("cow"))?;
    let p = BtrfsProvider::new();
    p.register(v.clone())?;
    let f = v.open(Path::new("data.edb"), OpenMode::CreateNew)?;
    pass(&f, &order(blocks, false), 1, Durability::End)?;
    for ((pattern, random), durability) in patterns() {
        let ord = order(blocks, random);
        let base = pass(&f, &ord, 2, durability)?;
        let r = p.commit(&["cow".to_string()], uuid::Uuid::new_v4(), &CommitOptions::default())?;
        let first = pass(&f, &ord, 3, durability)?;
        let preserved = pass(&f, &ord, 4, durability)?;
        p.check_shadow_storage()?;
        let held = p.query().first().map_or(0, |s| s.diff_area_bytes);
        p.delete_snapshot(r.snapshots[0].id)?;
        println!(
            "{}",
            json!({
                "scenario": "cow-overhead",
                "provider": "btrfs",
                "pattern": pattern,
                "durability": durability.name(),
                "size_mib": size_mib,
                "base_mib_s": base,
                "first_write_mib_s": first,
                "preserved_mib_s": preserved,
                "first_write_ratio": first / base,
                "preserved_ratio": preserved / base,
                "diff_area_bytes": held,
            })
        );
    }
    drop(f);
    drop(p);
    drop(v);
    drop(b);
    Ok(())
}
