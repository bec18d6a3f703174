//! `incremental-cost`: what an incremental backup writes to the repository after `--new-mib`
//! MiB (default 256) of new mail, against that amount.
//!
//! A store with non-circular logging (incrementals need the logs) gets `--base-mib` MiB
//! (default 256) of mail and a full backup, which truncates its logs. Then `--new-mib` MiB of
//! new message bodies are delivered and an incremental is taken: it copies the log
//! generations written since. "Written" is the growth of the repository directory on disk
//! (packs, their indexes and the manifest), not a figure the backup reports about itself.
//! `--random-bodies 1` makes the new mail incompressible (attachments that are already
//! compressed), which shows the log volume's own overhead without zstd hiding it.

use serde_json::json;
use vss::BackupType;

use crate::args::IncrementalCostArgs;
use crate::store_setup::{self as setup, MIB};

/// Runs the scenario.
pub fn run(opts: &IncrementalCostArgs) -> anyhow::Result<()> {
    let base_mib = opts.base_mib;
    let new_mib = opts.new_mib;
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let node = setup::start(dir, false)?;
    setup::fill(&node, base_mib, 1)?;
    let repo_dir = dir.join("repo");
    let repo = setup::repository(&repo_dir)?;
    setup::backup(&node, &repo, BackupType::Full)?;
    let before = setup::tree_bytes(&repo_dir)?;

    let bodies = if opts.random_bodies { setup::Bodies::Random } else { setup::Bodies::Text };
    let delivered = setup::fill_with(&node, new_mib, 2, bodies)?;
    let inc = setup::backup(&node, &repo, BackupType::Incremental)?;
    let written = setup::tree_bytes(&repo_dir)? - before;
    let new = delivered as f64 / MIB;
    let written_mib = written as f64 / MIB;
    println!(
        "{}",
        json!({
            "scenario": "incremental-cost",
            "new_mib": new,
            "written_mib": written_mib,
            "ratio": written_mib / new,
            "logs_read_mib": inc.bytes as f64 / MIB,
            "stored_mib": inc.stored_bytes as f64 / MIB,
            "files": inc.set.files.len(),
            "bodies": format!("{bodies:?}").to_lowercase(),
        })
    );
    Ok(())
}
