//! `restore-throughput`: restoring a full backup to an alternate location against `cp -r` of
//! a plain copy of the same files back to the same disk.
//!
//! The store and its full backup are made as in `backup-throughput` (`--db-mib`, default
//! 4096). The storage group is then dismounted and its files copied aside with `cp` (the
//! baseline's source, untimed). Timed, each from a dropped page cache and ending with `sync`:
//! Shadowcopy's restore of the set into a fresh directory (chunks read from the packs,
//! verified, decompressed, written, then hard recovery of the restored database), and
//! `cp -r` of the copy into another fresh directory; `--runs` rounds (default 1) in
//! alternating order, medians reported. With `--phases 1`, the restore's read side alone
//! (cold packs read, decompressed and hashed, on one thread as the restore does it) follows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use backup::{RestoreRequest, RestoreTarget};
use serde_json::json;
use volume::{FsRef, HostFs};
use vss::BackupType;

use crate::args::{ThroughputArgs, median};
use crate::store_setup::{self as setup, MIB};

/// Runs the scenario.
pub fn run(opts: &ThroughputArgs) -> anyhow::Result<()> {
    let db_mib = opts.db_mib;
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let node = setup::start(dir, true)?;
    setup::fill(&node, db_mib, 1)?;
    let repo = setup::repository(&dir.join("repo"))?;
    let full = setup::backup(&node, &repo, BackupType::Full)?;
    node.store().storage_group(setup::SG)?.dismount(false)?;
    let files: Vec<_> =
        setup::host_files(dir, &full.set).into_iter().filter(|f| f.exists()).collect();
    setup::cp_files(dir, &files, &dir.join("copy"))?;
    let copy_mib = setup::tree_bytes(&dir.join("copy"))? as f64 / MIB;

    let runs = opts.runs.max(1);
    let target = dir.join("restored");
    let (mut ours, mut cps) = (Vec::new(), Vec::new());
    let (mut restore_mib, mut restored_tree_mib, mut generations) = (0.0, 0.0, 0);
    let mut cache_dropped = true;
    let (mut steps, mut steps_cpu) = (serde_json::Value::Null, serde_json::Value::Null);
    for round in 0..runs {
        let mut order = ["restore", "cp"];
        if round % 2 == 1 {
            order.reverse();
        }
        for what in order {
            cache_dropped &= setup::drop_caches();
            if what == "cp" {
                let secs = setup::cp_tree(&dir.join("copy"), &dir.join("copy-back"))?;
                cps.push(copy_mib / secs);
                continue;
            }
            std::fs::create_dir_all(&target)?;
            let target_fs: FsRef = Arc::new(HostFs::new(&target)?);
            let t = Instant::now();
            let timer = setup::StepTimer::default();
            let report = node.restorer(repo.clone()).restore(
                &RestoreRequest {
                    set: full.set.id.to_string(),
                    target: RestoreTarget::Alternate { fs: target_fs, dir: PathBuf::from("SG1") },
                    roll_forward: false,
                },
                &timer,
            )?;
            let secs = t.elapsed().as_secs_f64();
            (steps, steps_cpu) = (timer.finish(), timer.cpu());
            restore_mib = report.bytes as f64 / MIB;
            generations = report.recovery.generations.len();
            restored_tree_mib = setup::tree_bytes(&target)? as f64 / MIB;
            ours.push(restore_mib / secs);
        }
        std::fs::remove_dir_all(&target)?;
        std::fs::remove_dir_all(dir.join("copy-back"))?;
    }

    // The restore's read side alone, on one thread as the restore does it: packs read cold,
    // chunks decompressed and hashed, nothing written.
    let read_side_mib_s = if opts.phases {
        setup::drop_caches();
        let t = Instant::now();
        repo.verify_set(&full.set, &|_| {})?;
        Some(full.set.data_bytes() as f64 / MIB / t.elapsed().as_secs_f64())
    } else {
        None
    };

    let restore_mib_s = median(ours.clone());
    let cp_mib_s = median(cps.clone());
    println!(
        "{}",
        json!({
            "scenario": "restore-throughput",
            "steps_ms": steps,
            "steps_cpu_ms": steps_cpu,
            "data_mib": restore_mib,
            "restored_tree_mib": restored_tree_mib,
            "restore_mib_s": restore_mib_s,
            "cp_mib_s": cp_mib_s,
            "ratio_cp": restore_mib_s / cp_mib_s,
            "baseline_mib": copy_mib,
            "page_cache_dropped": cache_dropped,
            "read_decompress_verify_mib_s": read_side_mib_s,
            "recovery_generations": generations,
            "runs": {"restore": ours, "cp": cps},
            "restore_includes": "reading packs, decompressing, writing, syncing, hard recovery",
        })
    );
    Ok(())
}
