//! `shadowcopy backup forget`: applies a retention policy to a repository, in this process
//! (no node), like restic's `forget`. Only manifests are removed; `prune` frees the chunks.

use anyhow::{Result, bail};
use backup::retention::{self, ForgetPlan, RetentionPolicy};
use clap::Args;

use crate::repo_access::RepoArgs;

/// The options of `backup forget`.
#[derive(Debug, Args)]
pub struct Forget {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only the sets of this storage group (default: every group, each on its own).
    #[arg(long, value_name = "STORAGE_GROUP")]
    pub sg: Option<String>,
    /// Keep the N newest sets.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest set of each of the N most recent hours (UTC) holding one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest set of each of the N most recent days (UTC) holding one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest set of each of the N most recent ISO weeks (Monday to Sunday, UTC)
    /// holding one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest set of each of the N most recent months (UTC) holding one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest set of each of the N most recent years (UTC) holding one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Show what would be forgotten and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `backup forget`.
pub fn run(cmd: &Forget) -> Result<()> {
    let policy = RetentionPolicy {
        keep_last: cmd.keep_last,
        keep_hourly: cmd.keep_hourly,
        keep_daily: cmd.keep_daily,
        keep_weekly: cmd.keep_weekly,
        keep_monthly: cmd.keep_monthly,
        keep_yearly: cmd.keep_yearly,
    };
    // A policy without a rule keeps everything; asked of `forget`, it is a mistake.
    if policy.is_empty() {
        bail!("give at least one --keep-* rule (a value above 0); nothing was forgotten");
    }
    let repo = cmd.repo.open()?;
    let plan = retention::forget(&repo, cmd.sg.as_deref(), &policy, cmd.dry_run)?;
    if cmd.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print_table(&plan, cmd.dry_run);
    }
    Ok(())
}

fn print_table(plan: &ForgetPlan, dry_run: bool) {
    let gone = if dry_run { "would be forgotten" } else { "forgotten" };
    let forget_word = if dry_run { "forget" } else { "forgotten" };
    println!(
        "{:<8}  {:<19}  {:<12}  {:<12}  {:<9}  REASONS",
        "SET", "TIME (UTC)", "SG", "TYPE", "DECISION"
    );
    for d in &plan.decisions {
        println!(
            "{:<8}  {:<19}  {:<12}  {:<12}  {:<9}  {}",
            retention::id_prefix(&d.set),
            retention::utc_display(d.created_unix_ms),
            d.storage_group,
            d.backup_type,
            if d.keep { "keep" } else { forget_word },
            d.reasons.join(", ")
        );
    }
    let kept = plan.decisions.iter().filter(|d| d.keep).count();
    let forgotten = plan.decisions.len() - kept;
    println!("{kept} kept, {forgotten} {gone}");
}
