//! `shadowcopy backup prune` and `shadowcopy backup unlock`: run in this process on the
//! repository directly (no node), like restic's, since they work on the repository as a whole.

use anyhow::{Context, Result, bail};
use backup::repo::lock;
use backup::repo::prune::{PruneOptions, prune_with_progress};
use clap::Args;

use crate::progress::bytes;
use crate::repo_access::RepoArgs;

/// `backup prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Repack a pack when more than this share of it is unused (`10%`, or `10`). Lower
    /// reclaims more space and rewrites more data.
    #[arg(long, value_name = "PERCENT", default_value = "10%", value_parser = percent)]
    pub max_unused: f64,
    /// Report what prune would remove and rewrite, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

/// `backup unlock`.
#[derive(Debug, Clone, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Remove every lock, not only stale ones: only when you know no backup, prune or forget
    /// is running on the repository from any machine.
    #[arg(long)]
    pub remove_all: bool,
}

fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage (10%, or 10)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s:?} is not between 0% and 100%"));
    }
    Ok(v)
}

pub fn run_prune(a: &PruneArgs) -> Result<()> {
    let repo = a.repo.open()?;
    let opts = PruneOptions { max_unused_percent: a.max_unused, dry_run: a.dry_run };
    let r = prune_with_progress(&repo, &opts, &mut |step| eprintln!("prune: {step}"))
        .with_context(|| format!("pruning repository {}", a.repo.repo))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let would = if r.dry_run { "would be " } else { "" };
    println!(
        "Repository {}{}",
        a.repo.repo,
        if r.dry_run { " (dry run: nothing changed)" } else { "" }
    );
    println!("   Packs:          {} before, {} after", r.packs_before, r.packs_after);
    println!("   Bytes:          {} before, {} after", bytes(r.bytes_before), bytes(r.bytes_after));
    println!(
        "   Removed:        {} packs ({} without an index), {} unused chunks {would}removed",
        r.packs_removed, r.orphan_packs_removed, r.chunks_removed
    );
    println!(
        "   Repacked:       {} packs, {} {would}copied",
        r.packs_repacked,
        bytes(r.bytes_repacked)
    );
    if r.chunks_missing > 0 {
        println!(
            "   WARNING:        {} chunks named by sets are in no pack: run `backup verify`",
            r.chunks_missing
        );
    }
    Ok(())
}

pub fn run_unlock(a: &UnlockArgs) -> Result<()> {
    let repo = a.repo.open()?;
    let removed = lock::remove_locks(repo.backend().as_ref(), a.remove_all)
        .with_context(|| format!("removing locks of repository {}", a.repo.repo))?;
    if removed.is_empty() {
        println!(
            "No {}lock to remove in {}",
            if a.remove_all { "" } else { "stale " },
            a.repo.repo
        );
    }
    for (key, info, why) in &removed {
        println!("Removed {key}: {} ({why})", info.describe());
    }
    let left = lock::read_locks(repo.backend().as_ref())?;
    for (key, info) in &left {
        println!("Kept {key}: {} (its holder may still be working)", info.describe());
    }
    if removed.is_empty() && left.is_empty() {
        return Ok(());
    }
    if !a.remove_all && !left.is_empty() && removed.is_empty() {
        bail!("no stale lock; `--remove-all` removes live ones too, once you know they are not")
    }
    Ok(())
}
