//! `prune-cost`: the time and the bytes rewritten by `backup prune` after half of a history
//! of sets is forgotten, against `restic prune` of the same history.
//!
//! The history is one incompressible "database" file of `--mib / 2` MiB backed up `--sets`
//! times, its first quarter rewritten with new content before each set after the first (the
//! pages that change between backups), so that every set holds chunks no other set has. The
//! sets of even rank are then removed (half the history) and the repository pruned, timed
//! from a dropped page cache and ending with `sync`. With `restic` on PATH, the same
//! versions are backed up into a restic repository, the same snapshots forgotten, and
//! `restic prune --max-unused 10%` (Shadowcopy's default) timed the same way. One JSON line
//! per case.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use backup::repo::prune::{PruneOptions, prune};
use backup::repo::{FileRole, InitOptions, Repository, SetMeta};
use serde_json::json;
use volume::fs::OpenMode;
use volume::{FsRef, HostFs};

use crate::args::PruneCostArgs;
use crate::store_setup::{self as setup, MIB};

/// Runs the scenario.
pub fn run(opts: &PruneCostArgs) -> anyhow::Result<()> {
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let sets = opts.sets.max(2);
    let size = (opts.mib.max(8) << 20) / 2;
    let hot = size / 4;
    let src_dir = dir.join("src");
    let src: FsRef = Arc::new(HostFs::new(&src_dir)?);
    let repo_dir = dir.join("repo");
    let fs: FsRef = Arc::new(HostFs::new(&repo_dir)?);
    let repo = Repository::init(fs, "", InitOptions::default())?;
    let restic = setup::restic_version();
    let rrepo_dir = dir.join("restic-repo");
    let rrepo = setup::ResticRepo::dir(&rrepo_dir);
    if restic.is_some() {
        rrepo.run(&["init", "--repository-version", "2"]).map(|_| ())?;
    }
    let mut ids = Vec::new();
    for i in 0..sets {
        let f = src.open(Path::new("db"), OpenMode::Create)?;
        if i == 0 {
            f.write_at(&store::load::random_body(size as usize, 1), 0)?;
        } else {
            f.write_at(&store::load::random_body(hot as usize, 100 + i), 0)?;
        }
        f.sync()?;
        let mut w = repo.begin_set();
        w.add_file("vol/db", FileRole::Database, "sg/db", f.as_ref(), &|_| {})?;
        ids.push(w.publish(SetMeta::default())?.id);
        if restic.is_some() {
            rrepo.run(&["backup", "--host", "bench", &src_dir.display().to_string()])?;
        }
    }
    for id in ids.iter().step_by(2) {
        repo.remove_set(id)?;
    }
    let cache_dropped = setup::drop_caches();
    let t = Instant::now();
    let r = prune(&repo, &PruneOptions::default())?;
    setup::sync();
    let ours = t.elapsed().as_secs_f64();
    let base = json!({
        "scenario": "prune-cost",
        "mib": opts.mib,
        "sets": sets,
        "forgotten": ids.len().div_ceil(2),
        "cache_dropped": cache_dropped,
    });
    let mut line = base.clone();
    line["tool"] = json!("shadowcopy");
    line["seconds"] = json!(ours);
    line["mib_before"] = json!(r.bytes_before as f64 / MIB);
    line["mib_after"] = json!(r.bytes_after as f64 / MIB);
    line["mib_rewritten"] = json!(r.bytes_repacked as f64 / MIB);
    line["packs_removed"] = json!(r.packs_removed);
    line["packs_repacked"] = json!(r.packs_repacked);
    println!("{line}");

    let mut line = base;
    line["tool"] = json!("restic");
    match restic {
        None => line["note"] = json!("restic is not installed (Debian package `restic`)"),
        Some(v) => {
            let out = rrepo.run(&["snapshots", "--json"])?;
            let snaps: Vec<serde_json::Value> = serde_json::from_slice(&out)?;
            let mut snaps: Vec<(String, String)> = snaps
                .iter()
                .filter_map(|s| Some((s["time"].as_str()?.into(), s["id"].as_str()?.into())))
                .collect();
            snaps.sort();
            let mut forget = vec!["forget".to_string()];
            forget.extend(snaps.iter().step_by(2).map(|(_, id)| id.clone()));
            let forget: Vec<&str> = forget.iter().map(String::as_str).collect();
            rrepo.run(&forget)?;
            let before = setup::tree_bytes(&rrepo_dir)?;
            line["cache_dropped"] = json!(setup::drop_caches());
            let t = Instant::now();
            rrepo.run(&["prune", "--max-unused", "10%"])?;
            setup::sync();
            let secs = t.elapsed().as_secs_f64();
            line["restic"] = json!(v);
            line["seconds"] = json!(secs);
            line["mib_before"] = json!(before as f64 / MIB);
            line["mib_after"] = json!(setup::tree_bytes(&rrepo_dir)? as f64 / MIB);
            line["ratio_seconds_shadowcopy_over_restic"] = json!(ours / secs.max(1e-9));
        }
    }
    println!("{line}");
    Ok(())
}
