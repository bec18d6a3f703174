//! `restore-throughput`: restoring a full backup to an alternate location against `cp -r` of
//! a plain copy of the same files back to the same disk, and against `restic restore` of the
//! same files.
//!
//! The store and its full backup are made as in `backup-throughput` (`--db-mib`, default
//! 4096), twice: into a clear repository and into an encrypted one (what `backup init`
//! makes; restic always encrypts, so the encrypted restore is the like-for-like figure beside
//! it). The storage group is then dismounted, its files copied aside with `cp` (the
//! baseline's source) and backed up with `restic backup` (untimed). Timed, each from a
//! dropped page cache and ending with `sync`: Shadowcopy's restore of each set into a fresh
//! directory (chunks read from the packs, verified, decompressed, written, then hard recovery
//! of the restored database), `cp -r` of the copy into another fresh directory, and `restic
//! restore latest`; `--runs` rounds (default 3) in rotating order, medians reported. With
//! `--s3 true`, the same encrypted backup and the same restic backup also go to an S3 server
//! on loopback and are restored from it. With `--phases 1`, the restore's read side alone
//! (cold packs read, decompressed and hashed, on one thread as the restore does it) follows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use backup::repo::Repository;
use backup::{RestoreRequest, RestoreTarget};
use node::Node;
use serde_json::json;
use volume::{FsRef, HostFs};
use vss::BackupType;

use crate::args::{ThroughputArgs, median};
use crate::s3_target::S3Target;
use crate::store_setup::{self as setup, MIB, ResticRepo};

/// One timed way of getting the files back.
enum Way {
    /// Shadowcopy's restore of a set from a repository.
    Restore { repo: Arc<Repository>, set: String },
    /// `cp -r` of the plain copy.
    Cp,
    /// `restic restore latest`.
    Restic(ResticRepo),
}

/// What a restore reports besides its time.
#[derive(Default)]
struct RestoreFacts {
    data_mib: f64,
    restored_tree_mib: f64,
    generations: usize,
    steps: serde_json::Value,
    steps_cpu: serde_json::Value,
}

/// Runs the scenario.
pub fn run(opts: &ThroughputArgs) -> anyhow::Result<()> {
    let db_mib = opts.db_mib;
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let node = setup::start(dir, true)?;
    setup::fill(&node, db_mib, 1)?;
    let restic = setup::restic_version();
    let s3 = if opts.s3 { Some(S3Target::start()?) } else { None };

    let mut ways: Vec<(&str, Way)> = Vec::new();
    let repo = setup::repository(&dir.join("repo"))?;
    let full = setup::backup(&node, &repo, BackupType::Full)?;
    ways.push(("restore", Way::Restore { repo: repo.clone(), set: full.set.id.to_string() }));
    let enc = setup::encrypted_repository(&dir.join("repo-encrypted"))?;
    let enc_full = setup::backup(&node, &enc, BackupType::Full)?;
    ways.push(("restore_encrypted", Way::Restore { repo: enc, set: enc_full.set.id.to_string() }));
    if let Some(s3) = &s3 {
        let s3_repo = s3.repository("shadowcopy")?;
        let s3_full = setup::backup(&node, &s3_repo, BackupType::Full)?;
        ways.push(("restore_s3", Way::Restore { repo: s3_repo, set: s3_full.set.id.to_string() }));
    }
    node.store().storage_group(setup::SG)?.dismount(false)?;
    let files: Vec<_> =
        setup::host_files(dir, &full.set).into_iter().filter(|f| f.exists()).collect();
    setup::cp_files(dir, &files, &dir.join("copy"))?;
    let copy_mib = setup::tree_bytes(&dir.join("copy"))? as f64 / MIB;
    ways.push(("cp", Way::Cp));
    if restic.is_some() {
        let local = ResticRepo::dir(&dir.join("restic-repo"));
        local.init()?;
        local.backup(&files)?;
        ways.push(("restic", Way::Restic(local)));
        if let Some(s3) = &s3 {
            let remote = ResticRepo::s3(s3.restic_repo("restic"), s3.env());
            remote.init()?;
            remote.backup(&files)?;
            ways.push(("restic_s3", Way::Restic(remote)));
        }
    }

    let runs = opts.runs.max(1);
    let mut rates: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut facts = RestoreFacts::default();
    let mut cache_dropped = true;
    for round in 0..runs {
        // Rotating order: no way always runs first (cold machine) or last (warm one).
        let n = ways.len();
        for i in 0..n {
            let (name, way) = &ways[(i + round as usize) % n];
            let target = dir.join(format!("out-{name}"));
            cache_dropped &= setup::drop_caches();
            let mib_s = match way {
                Way::Cp => copy_mib / setup::cp_tree(&dir.join("copy"), &target)?,
                Way::Restic(r) => copy_mib / r.restore_latest(&target)?,
                Way::Restore { repo, set } => {
                    let (mib_s, f) = restore(&node, repo, set, &target)?;
                    if *name == "restore" {
                        facts = f;
                    }
                    mib_s
                }
            };
            rates.entry(name).or_default().push(mib_s);
            std::fs::remove_dir_all(&target)?;
        }
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

    let rate = |name: &str| rates.get(name).map(|r| median(r.clone()));
    let ratio = |a: &str, b: &str| Some(rate(a)? / rate(b)?);
    let mut out = json!({
        "scenario": "restore-throughput",
        "steps_ms": facts.steps,
        "steps_cpu_ms": facts.steps_cpu,
        "data_mib": facts.data_mib,
        "restored_tree_mib": facts.restored_tree_mib,
        "restore_mib_s": rate("restore"),
        "restore_encrypted_mib_s": rate("restore_encrypted"),
        "cp_mib_s": rate("cp"),
        "restic_mib_s": rate("restic"),
        "ratio_cp": ratio("restore", "cp"),
        "ratio_restic": ratio("restore", "restic"),
        "ratio_restic_encrypted": ratio("restore_encrypted", "restic"),
        "encryption_cost": ratio("restore_encrypted", "restore").map(|r| 1.0 - r),
        "baseline_mib": copy_mib,
        "page_cache_dropped": cache_dropped,
        "read_decompress_verify_mib_s": read_side_mib_s,
        "recovery_generations": facts.generations,
        "runs": rates,
        "restore_includes": "reading packs, decompressing, writing, syncing, hard recovery",
    });
    if s3.is_some() {
        out["s3"] = json!({
            "server": "moto_server on loopback (a Python server in memory: compares the clients, not S3)",
            "restore_mib_s": rate("restore_s3"),
            "restic_mib_s": rate("restic_s3"),
            "ratio_restic": ratio("restore_s3", "restic_s3"),
        });
    }
    match restic {
        Some(v) => out["restic"] = json!(v),
        None => out["note"] = json!("restic is not installed (Debian package `restic`)"),
    }
    println!("{out}");
    Ok(())
}

/// Restores the set `set` from `repo` into `target` (a fresh directory); returns MiB/s and what the
/// restore reported.
fn restore(
    node: &Node,
    repo: &Arc<Repository>,
    set: &str,
    target: &Path,
) -> anyhow::Result<(f64, RestoreFacts)> {
    std::fs::create_dir_all(target)?;
    let target_fs: FsRef = Arc::new(HostFs::new(target)?);
    let t = Instant::now();
    let timer = setup::StepTimer::default();
    let report = node.restorer(repo.clone()).restore(
        &RestoreRequest {
            set: set.to_string(),
            target: RestoreTarget::Alternate { fs: target_fs, dir: PathBuf::from("SG1") },
            roll_forward: false,
        },
        &timer,
    )?;
    let secs = t.elapsed().as_secs_f64();
    let data_mib = report.bytes as f64 / MIB;
    let facts = RestoreFacts {
        data_mib,
        restored_tree_mib: setup::tree_bytes(target)? as f64 / MIB,
        generations: report.recovery.generations.len(),
        steps: timer.finish(),
        steps_cpu: timer.cpu(),
    };
    Ok((data_mib / secs, facts))
}
