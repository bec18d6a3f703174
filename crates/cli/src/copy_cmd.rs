//! `shadowcopy backup copy`: backup sets copied from one repository to another, with their
//! chains, in this process (no node needed), like restic's `copy`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use backup::repo::transfer::{TransferStep, copy_sets};
use clap::Args;

use crate::progress::bytes;
use crate::repo_access::RepoArgs;

/// Copies backup sets (and every set they build on) into another repository, storing only the
/// chunks it lacks, then verifies each copy there.
#[derive(Debug, Args)]
#[command(
    after_help = "A set keeps its id and time in the target, so running the same copy again copies only what is new. Each repository is unlocked with its own password: --from-password-file (or SHADOWCOPY_FROM_PASSWORD_FILE) for the source, --password-file (or SHADOWCOPY_PASSWORD_FILE / SHADOWCOPY_PASSWORD) for the target.\n\nExamples:\n  shadowcopy backup copy --from /srv/backups --to /mnt/offsite\n  shadowcopy backup copy --from /srv/backups --to /mnt/offsite 3f2a9c 81d0e4"
)]
pub struct CopyArgs {
    /// The repository to copy from.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    from: String,
    /// Read the source repository's password from this file.
    #[arg(long, env = "SHADOWCOPY_FROM_PASSWORD_FILE", value_name = "FILE")]
    from_password_file: Option<PathBuf>,
    /// The repository to copy into (it must exist: `shadowcopy backup init`).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    to: String,
    /// Read the target repository's password from this file.
    #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Sets to copy (ids or unambiguous prefixes); default: every set of the source.
    #[arg(value_name = "SET")]
    sets: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &CopyArgs) -> Result<()> {
    let from = RepoArgs { repo: a.from.clone(), password_file: a.from_password_file.clone() };
    let to = RepoArgs { repo: a.to.clone(), password_file: a.password_file.clone() };
    let source = Arc::new(from.open().context("the source of the copy")?);
    let target = to.open().context("the target of the copy")?;
    let report = copy_sets(&source, &target, &a.sets, &|step| match step {
        TransferStep::Copying { set, index, count, bytes: 0 } => {
            eprintln!(
                "copying set {} ({} of {}, {}) [{}/{}]",
                set.id,
                set.backup_type,
                set.storage_group,
                bytes(set.data_bytes()),
                index + 1,
                count
            );
        }
        TransferStep::Verifying { set } => eprintln!("verifying the copy of {}", set.id),
        TransferStep::Copying { .. } => {}
    })
    .with_context(|| format!("copying from {} to {}", a.from, a.to))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} set(s) copied and verified, {} already in {}",
        report.copied.len(),
        report.present.len(),
        a.to
    );
    println!("   Read:         {}", bytes(report.bytes_read));
    println!("   Stored (new): {}", bytes(report.bytes_stored));
    println!("   Verified:     {}", bytes(report.bytes_verified));
    Ok(())
}
