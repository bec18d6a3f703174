//! `backup-throughput`: a full backup of a mail store against `cp` and `restic backup` of the
//! same files.
//!
//! The store is one storage group on real copy-on-write volumes, its database filled to
//! `--db-mib` MiB (default 4096) of mail with large bodies, with circular logging so the log
//! directory holds only the live generations (a full backup of a 4 GiB database then is a
//! 4 GiB copy, not 8). Each of `--runs` rounds (default 1): the storage group is mounted and
//! Shadowcopy backs it up through the whole path (writers frozen, snapshot committed, files
//! verified and read from the snapshot, hashed, compressed and packed into a fresh
//! repository); then the storage group is dismounted, so its files are stable, and `cp` and
//! `restic backup` (into a fresh restic repository) copy the same files (those of the backup
//! set) from the volumes' host directories to the same disk, in alternating order from round
//! to round. Every run starts with the page cache dropped and ends with `sync`. Rates are the
//! medians over the rounds. With `--phases 1`, the database file's cold read, cold
//! verification and the single-thread hashing and compression rates follow (see
//! `store_setup::phases`). With `--s3 true`, each round also backs up into an encrypted
//! repository on an S3 server on loopback, and restic into the same server.
//!
//! Each round also backs the same files up into one fresh clear repository per `compression`
//! setting other than the default (`zstd:1`, `lz4`, `none`; the default, `auto`, is the main
//! run), in an order that rotates from round to round. One JSON line per setting (`"case":
//! "compression"`) gives its MiB/s, stored MiB, `ratio_cp`, `ratio_restic` and its stored
//! size against zstd's (`stored_vs_zstd`); the last line is the summary, as before.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use backup::repo::{Compression, InitOptions, Repository};
use serde_json::json;
use volume::{FsRef, HostFs};
use vss::BackupType;

use crate::args::{ThroughputArgs, median};
use crate::s3_target::S3Target;
use crate::store_setup::{self as setup, MIB, ResticRepo};

/// Runs the scenario.
pub fn run(opts: &ThroughputArgs) -> anyhow::Result<()> {
    let db_mib = opts.db_mib;
    let runs = opts.runs.max(1);
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let node = setup::start(dir, true)?;
    let t = Instant::now();
    setup::fill(&node, db_mib, 1)?;
    let fill_s = t.elapsed().as_secs_f64();
    let sg = node.store().storage_group(setup::SG)?;
    let restic = setup::restic_version();
    let s3 = if opts.s3 { Some(S3Target::start()?) } else { None };
    let (mut s3_ours, mut s3_restics) = (Vec::new(), Vec::new());

    let (mut ours, mut cps, mut restics) = (Vec::new(), Vec::new(), Vec::new());
    let mut encrypted = Vec::new();
    let default = Compression::default();
    let mut settings: Vec<Compression> =
        [Compression::Zstd(1), Compression::Lz4, Compression::None].into();
    settings.retain(|c| *c != default);
    // Per setting: MiB/s of each round, stored MiB (the default's come from the main run).
    let mut by_setting: Vec<(Compression, Vec<f64>, f64)> =
        settings.iter().map(|c| (*c, Vec::new(), 0.0)).collect();
    by_setting.push((default, Vec::new(), 0.0));
    let (mut data_mib, mut file_mib, mut stored_mib, mut hold_ms, mut files_n) =
        (0.0, 0.0, 0.0, 0.0, 0);
    let (mut steps, mut steps_cpu) = (serde_json::Value::Null, serde_json::Value::Null);
    let mut cache_dropped = true;
    let mut set = None;
    for round in 0..runs {
        if !sg.is_mounted() {
            sg.mount()?;
        }
        // Every setting in turn, the default (the main run, whose report the line gives)
        // among them: which one goes first in a round changes from round to round, so that
        // none always has the first backup after the mount.
        let n = by_setting.len();
        for k in 0..n {
            let i = (k + round as usize) % n;
            if i == n - 1 {
                let repo_dir = dir.join("repo");
                let repo = setup::repository(&repo_dir)?;
                cache_dropped &= setup::drop_caches();
                let (report, s) = setup::backup_timed(&node, &repo, BackupType::Full)?;
                (steps, steps_cpu) = (s.finish(), s.cpu());
                data_mib = report.bytes as f64 / MIB;
                stored_mib = report.stored_bytes as f64 / MIB;
                hold_ms = report.hold.as_secs_f64() * 1e3;
                files_n = report.set.files.len();
                ours.push(data_mib / report.elapsed.as_secs_f64());
                by_setting[i].1.push(data_mib / report.elapsed.as_secs_f64());
                by_setting[i].2 = stored_mib;
                set = Some(report.set);
                continue;
            }
            let at = dir.join(format!("repo-{i}"));
            let repo = repository_with(&at, by_setting[i].0)?;
            setup::drop_caches();
            let (r, _) = setup::backup_timed(&node, &repo, BackupType::Full)?;
            by_setting[i].1.push(r.bytes as f64 / MIB / r.elapsed.as_secs_f64());
            by_setting[i].2 = r.stored_bytes as f64 / MIB;
            drop(repo);
            std::fs::remove_dir_all(&at)?;
        }
        // The same backup into an encrypted repository (what `backup init` makes): restic
        // always encrypts, so this is the like-for-like figure beside it.
        let enc_dir = dir.join("repo-encrypted");
        let enc_repo = setup::encrypted_repository(&enc_dir)?;
        setup::drop_caches();
        let (enc_report, _) = setup::backup_timed(&node, &enc_repo, BackupType::Full)?;
        encrypted.push(enc_report.bytes as f64 / MIB / enc_report.elapsed.as_secs_f64());
        drop(enc_repo);
        if let Some(s3) = &s3 {
            let s3_repo = s3.repository(&format!("shadowcopy-{round}"))?;
            setup::drop_caches();
            let (r, _) = setup::backup_timed(&node, &s3_repo, BackupType::Full)?;
            s3_ours.push(r.bytes as f64 / MIB / r.elapsed.as_secs_f64());
        }
        sg.dismount(false)?;

        let files: Vec<_> =
            setup::host_files(dir, set.as_ref().context("the main run's backup set")?)
                .into_iter()
                .filter(|f| f.exists())
                .collect();
        let mut bytes = 0;
        for f in &files {
            bytes += std::fs::metadata(f)?.len();
        }
        file_mib = bytes as f64 / MIB;
        let mut baselines: Vec<&str> = vec!["cp", "restic"];
        if round % 2 == 1 {
            baselines.reverse();
        }
        for b in baselines {
            match b {
                "cp" => {
                    setup::drop_caches();
                    let secs = setup::cp_files(dir, &files, &dir.join("cp"))?;
                    cps.push(file_mib / secs);
                }
                _ if restic.is_some() => {
                    let rrepo = dir.join("restic-repo");
                    setup::restic_init(&rrepo)?;
                    setup::drop_caches();
                    let secs = setup::restic_backup(&files, &rrepo)?;
                    restics.push(file_mib / secs);
                    if let Some(s3) = &s3 {
                        let remote =
                            ResticRepo::s3(s3.restic_repo(&format!("restic-{round}")), s3.env());
                        remote.init()?;
                        setup::drop_caches();
                        s3_restics.push(file_mib / remote.backup(&files)?);
                    }
                }
                _ => {}
            }
        }
        for d in ["repo", "repo-encrypted", "cp", "restic-repo"] {
            if dir.join(d).exists() {
                std::fs::remove_dir_all(dir.join(d))?;
            }
        }
    }

    let backup_mib_s = median(ours.clone());
    let cp_mib_s = median(cps.clone());
    let restic_mib_s = (!restics.is_empty()).then(|| median(restics.clone()));
    let encrypted_mib_s = median(encrypted.clone());
    let zstd_mib = by_setting
        .iter()
        .find(|(c, _, _)| *c == Compression::Zstd(1))
        .map_or(f64::NAN, |(_, _, stored)| *stored);
    let mut cases = serde_json::Map::new();
    for (c, rates, stored) in &by_setting {
        let mib_s = median(rates.clone());
        let case = json!({
            "scenario": "backup-throughput",
            "case": "compression",
            "setting": c.to_string(),
            "default": *c == default,
            "data_mib": data_mib,
            "backup_mib_s": mib_s,
            "stored_mib": stored,
            "stored_vs_zstd": stored / zstd_mib,
            "cp_mib_s": cp_mib_s,
            "restic_mib_s": restic_mib_s,
            "ratio_cp": mib_s / cp_mib_s,
            "ratio_restic": restic_mib_s.map(|r| mib_s / r),
            "runs": rates,
        });
        println!("{case}");
        cases.insert(c.to_string(), case);
    }
    let mut out = json!({
        "scenario": "backup-throughput",
        "data_mib": data_mib,
        "files": files_n,
        "stored_mib": stored_mib,
        "hold_ms": hold_ms,
        "steps_ms": steps,
        "steps_cpu_ms": steps_cpu,
        "backup_mib_s": backup_mib_s,
        "cp_mib_s": cp_mib_s,
        "restic_mib_s": restic_mib_s,
        "ratio_cp": backup_mib_s / cp_mib_s,
        "ratio_restic": restic_mib_s.map(|r| backup_mib_s / r),
        "encrypted_mib_s": encrypted_mib_s,
        "encryption_cost": 1.0 - encrypted_mib_s / backup_mib_s,
        "ratio_restic_encrypted": restic_mib_s.map(|r| encrypted_mib_s / r),
        "runs": {"backup": ours, "encrypted": encrypted, "cp": cps, "restic": restics},
        "compression": default.to_string(),
        "by_compression": cases.into_iter().map(|(k, v)| (k, json!({
            "backup_mib_s": v["backup_mib_s"],
            "stored_mib": v["stored_mib"],
            "stored_vs_zstd": v["stored_vs_zstd"],
            "ratio_cp": v["ratio_cp"],
        }))).collect::<serde_json::Map<_, _>>(),
        "baseline_mib": file_mib,
        "fill_s": fill_s,
        "page_cache_dropped": cache_dropped,
        "baselines_read": "the backup set's files on the volumes' host directories, storage group dismounted after the backup",
    });
    if s3.is_some() {
        let ours = median(s3_ours.clone());
        let theirs = (!s3_restics.is_empty()).then(|| median(s3_restics.clone()));
        out["s3"] = json!({
            "server": "moto_server on loopback (a Python server in memory: compares the clients, not S3)",
            "backup_mib_s": ours,
            "restic_mib_s": theirs,
            "ratio_restic": theirs.map(|r| ours / r),
            "runs": {"backup": s3_ours, "restic": s3_restics},
        });
    }
    match restic {
        Some(v) => out["restic"] = json!(v),
        None => out["note"] = json!("restic is not installed (Debian package `restic`)"),
    }
    if opts.phases {
        let db = dir.join("db").join(setup::SG).join(format!("{}.edb", setup::DB));
        out["phases"] = setup::phases(&db)?;
    }
    println!("{out}");
    Ok(())
}

/// A fresh clear repository in `dir` with the default options but `compression`.
fn repository_with(dir: &Path, compression: Compression) -> anyhow::Result<Arc<Repository>> {
    std::fs::create_dir_all(dir)?;
    let fs: FsRef = Arc::new(HostFs::new(dir)?);
    Ok(Arc::new(Repository::init(fs, "", InitOptions { compression, ..InitOptions::default() })?))
}
