//! `snapshot-scaling`: snapshot commit time must not depend on how much data a volume holds.
//!
//! Two volumes, each with the same 10,000 small files in 100 directories: one also holds a
//! 1 GiB sparse file, the other a 1 TiB sparse file, each with 1 MiB of data written at a few
//! offsets (the disk never holds a TiB). Commits alternate between the two volumes; each
//! commit's flush-and-hold window is measured and the snapshot deleted again.
//!
//! `*_commit_ms` is the hold (writes held); `*_total_ms` the whole commit call, including the
//! file-table scan done ahead of the hold.
//!
//! It runs for both providers (`provider` key): the software provider on the scratch
//! directory, and the btrfs provider on two subvolumes of a btrfs the bench makes on a loop
//! device (or a line saying it was skipped, without root).

use std::path::Path;

use serde_json::json;
use volume::btrfs::scratch::ScratchBtrfs;
use volume::{
    BtrfsProvider, CommitOptions, FileSystem, OpenMode, Volume, VolumeOptions, commit_set,
};

use crate::args::{SnapshotScalingArgs, median};

fn populate(v: &Volume, files: u64, sparse_len: u64) -> anyhow::Result<()> {
    let small = vec![0x5Au8; 2048];
    for i in 0..files {
        let d = format!("mail/{:03}", i % 100);
        if i < 100 {
            v.create_dir_all(Path::new(&d))?;
        }
        v.open(Path::new(&format!("{d}/{i:05}.eml")), OpenMode::CreateNew)?.write_at(&small, 0)?;
    }
    let f = v.open(Path::new("store.edb"), OpenMode::CreateNew)?;
    f.set_len(sparse_len)?;
    let chunk = vec![0xA5u8; 256 * 1024];
    for k in 0..4u64 {
        f.write_at(&chunk, sparse_len / 4 * k)?;
    }
    f.sync()?;
    Ok(())
}

/// One commit: (hold window ms, whole commit ms including the scan ahead of the hold).
fn commit_ms(v: &Volume, btrfs: Option<&BtrfsProvider>) -> anyhow::Result<(f64, f64)> {
    let t = std::time::Instant::now();
    let set = uuid::Uuid::new_v4();
    let opts = CommitOptions::default();
    let Some(p) = btrfs else {
        let r = commit_set(std::slice::from_ref(v), set, &opts)?;
        let total = t.elapsed().as_secs_f64() * 1e3;
        v.delete_snapshot(r.snapshots[0].id)?;
        return Ok((r.hold.as_secs_f64() * 1e3, total));
    };
    let r = p.commit(&[v.label().to_string()], set, &opts)?;
    let total = t.elapsed().as_secs_f64() * 1e3;
    p.delete_snapshot(r.snapshots[0].id)?;
    Ok((r.hold.as_secs_f64() * 1e3, total))
}

/// Runs the scenario.
pub fn run(opts: &SnapshotScalingArgs) -> anyhow::Result<()> {
    let scratch = opts.scratch.scratch()?;
    let small = Volume::create(scratch.path.join("small"), VolumeOptions::new("small"))?;
    let large = Volume::create(scratch.path.join("large"), VolumeOptions::new("large"))?;
    measure(opts, "software", &small, &large, None)?;
    drop((small, large));
    let b = match ScratchBtrfs::create(1 << 30) {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot make a btrfs on a loop device (needs root): {e}");
            let line = json!({"scenario": "snapshot-scaling", "provider": "btrfs", "skipped": why});
            println!("{line}");
            return Ok(());
        }
    };
    let small = Volume::create(b.subvolume("small")?, VolumeOptions::new("small"))?;
    let large = Volume::create(b.subvolume("large")?, VolumeOptions::new("large"))?;
    let p = BtrfsProvider::new();
    p.register(small.clone())?;
    p.register(large.clone())?;
    measure(opts, "btrfs", &small, &large, Some(&p))?;
    drop((p, small, large));
    drop(b);
    Ok(())
}

fn measure(
    opts: &SnapshotScalingArgs,
    provider: &str,
    small: &Volume,
    large: &Volume,
    btrfs: Option<&BtrfsProvider>,
) -> anyhow::Result<()> {
    let runs = opts.runs.max(5);
    let files = opts.files;
    populate(small, files, 1 << 30)?;
    populate(large, files, 1 << 40)?;
    // Warm the directory caches of both before measuring.
    commit_ms(small, btrfs)?;
    commit_ms(large, btrfs)?;
    let (mut s, mut l, mut st, mut lt) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (h, t) = commit_ms(small, btrfs)?;
        s.push(h);
        st.push(t);
        let (h, t) = commit_ms(large, btrfs)?;
        l.push(h);
        lt.push(t);
    }
    let (sm, lm) = (median(s), median(l));
    let (stm, ltm) = (median(st), median(lt));
    println!(
        "{}",
        json!({
            "scenario": "snapshot-scaling",
            "provider": provider,
            "small_commit_ms": sm,
            "large_commit_ms": lm,
            "ratio": lm / sm,
            "small_total_ms": stm,
            "large_total_ms": ltm,
            "total_ratio": ltm / stm,
            "runs": runs,
            "small_files": files,
            "small_sparse_bytes": 1u64 << 30,
            "large_sparse_bytes": 1u64 << 40,
        })
    );
    Ok(())
}
