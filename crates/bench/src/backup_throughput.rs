//! `backup-throughput`: a full backup of a mail store against `cp` and `restic backup` of the
//! same files.
//!
//! The store is one storage group on real copy-on-write volumes, its database filled to
//! `--db-mib` MiB (default 4096) of mail with large bodies, with circular logging so the log
//! directory holds only the live generations (a full backup of a 4 GiB database then is a
//! 4 GiB copy, not 8). Shadowcopy backs it up through the whole path: writers frozen,
//! snapshot committed, files read from the snapshot, hashed, compressed and packed into a
//! fresh repository. Then the storage group is dismounted, so its files are stable, and `cp`
//! and `restic backup` copy the same files (those of the backup set) from the volumes' host
//! directories to the same disk. Each of the three starts with the page cache dropped and
//! ends with `sync`. With `--phases 1`, the database file's cold read, cold verification and
//! the single-thread hashing and compression rates follow (see `store_setup::phases`).

use std::time::Instant;

use serde_json::json;
use vss::BackupType;

use crate::args::Opts;
use crate::store_setup::{self as setup, MIB};

/// Runs the scenario.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    let db_mib = opts.num("db-mib", 4096)?;
    let scratch = opts.scratch()?;
    let dir = &scratch.path;
    let node = setup::start(dir, true)?;
    let t = Instant::now();
    setup::fill(&node, db_mib, 1)?;
    let fill_s = t.elapsed().as_secs_f64();
    let repo = setup::repository(&dir.join("repo"))?;

    let cache_dropped = setup::drop_caches();
    let report = setup::backup(&node, &repo, BackupType::Full)?;
    let backup_s = report.elapsed.as_secs_f64();
    let data_mib = report.bytes as f64 / MIB;
    node.store().storage_group(setup::SG)?.dismount(false)?;

    let files: Vec<_> =
        setup::host_files(dir, &report.set).into_iter().filter(|f| f.exists()).collect();
    let mut file_bytes = 0;
    for f in &files {
        file_bytes += std::fs::metadata(f)?.len();
    }
    let file_mib = file_bytes as f64 / MIB;

    let restic = setup::restic_version();
    let restic_mib_s = match &restic {
        Some(_) => {
            let rrepo = dir.join("restic-repo");
            setup::restic_init(&rrepo)?;
            setup::drop_caches();
            let secs = setup::restic_backup(&files, &rrepo)?;
            Some(file_mib / secs)
        }
        None => None,
    };

    setup::drop_caches();
    let cp_s = setup::cp_files(dir, &files, &dir.join("cp"))?;
    let cp_mib_s = file_mib / cp_s;
    let backup_mib_s = data_mib / backup_s;

    let mut out = json!({
        "scenario": "backup-throughput",
        "data_mib": data_mib,
        "files": report.set.files.len(),
        "stored_mib": report.stored_bytes as f64 / MIB,
        "hold_ms": report.hold.as_secs_f64() * 1e3,
        "backup_mib_s": backup_mib_s,
        "cp_mib_s": cp_mib_s,
        "restic_mib_s": restic_mib_s,
        "ratio_cp": backup_mib_s / cp_mib_s,
        "ratio_restic": restic_mib_s.map(|r| backup_mib_s / r),
        "baseline_mib": file_mib,
        "fill_s": fill_s,
        "page_cache_dropped": cache_dropped,
        "baselines_read": "the backup set's files on the volumes' host directories, storage group dismounted after the backup",
        "order": "shadowcopy, restic, cp",
    });
    match restic {
        Some(v) => out["restic"] = json!(v),
        None => out["note"] = json!("restic is not installed (Debian package `restic`)"),
    }
    if opts.num("phases", 0)? != 0 {
        let db = dir.join("db").join(setup::SG).join(format!("{}.edb", setup::DB));
        out["phases"] = setup::phases(&db)?;
    }
    println!("{out}");
    Ok(())
}
