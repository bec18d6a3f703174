//! `shadowcopy backup` (run, list, verify) and `shadowcopy restore`.
//!
//! The node runs the job and streams its progress; the command shows it (a bar for the bytes
//! copied, restored or hash-checked, the step on the way) and prints a summary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::client::{ClosedMidJob, Endpoint, with_query};
use crate::progress::{self, bytes};

#[derive(Debug, Subcommand)]
pub enum Backup {
    /// Backs up a storage group through a snapshot set into a repository, showing progress
    /// and a summary; the storage group stays mounted and in use throughout.
    #[command(
        after_help = "Examples:\n  shadowcopy backup run --type full --sg SG1 --repo /srv/backups\n  shadowcopy backup run --type incremental --sg SG1 --repo /srv/backups\n  shadowcopy backup run --type full --sg SG1 --db DB2 --repo /srv/backups\n  shadowcopy backup run --type full --sg SG1 --from passive --repo /srv/backups   (in a DAG: the healthiest passive copy)\n  shadowcopy backup run --type incremental --sg SG1 --from c --repo /srv/backups  (node c's copy)"
    )]
    Run {
        /// The kind of backup; an incremental or differential needs an earlier full in the
        /// same repository.
        #[arg(long = "type", value_name = "TYPE", value_enum, default_value = "full")]
        backup_type: BackupType,
        /// The storage group to back up.
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// Repository: a directory on the node (created if missing), or s3://BUCKET/PREFIX (the
        /// node connects with its [s3] configuration and AWS_* environment).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        repo: PathBuf,
        /// Back up only this database of the storage group (repeatable; default: all). Only
        /// the chosen databases are stamped, and no log is truncated unless all are chosen.
        #[arg(long = "db", value_name = "DATABASE")]
        databases: Vec<String>,
        /// In a database availability group, which copy to back up: `passive` (the healthiest
        /// passive copy — lowest copy and replay queues, then activation preference — so the
        /// active carries no backup load), `active`, or a node's name. The backup runs on that
        /// node; the active records it in its database header, and every copy's header shows
        /// it once replayed. Default: the copy on the node asked.
        #[arg(long, value_name = "passive|active|NODE")]
        from: Option<String>,
        /// The repository's password, read from this file (else SHADOWCOPY_PASSWORD). A new
        /// repository is created encrypted under it; without one, unencrypted.
        #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print the final report as JSON on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Lists the backup sets of a repository, oldest first.
    #[command(
        after_help = "Examples:\n  shadowcopy backup list --repo /srv/backups\n  shadowcopy backup list --repo /srv/backups --json"
    )]
    List {
        /// Repository: a directory on the node, or s3://BUCKET/PREFIX (the
        /// node connects with its [s3] configuration and AWS_* environment).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        repo: PathBuf,
        /// The repository's password, read from this file (else SHADOWCOPY_PASSWORD); sent to
        /// the node, which needs it for an encrypted repository.
        #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print the node's JSON answer instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Re-reads every chunk of a set and checks it against the manifest, then checks every
    /// database page and log record in it.
    #[command(after_help = "Example:\n  shadowcopy backup verify --repo /srv/backups 3f2a9c")]
    Verify {
        /// Repository: a directory on the node, or s3://BUCKET/PREFIX (the
        /// node connects with its [s3] configuration and AWS_* environment).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        repo: PathBuf,
        /// Set id or unambiguous prefix (see `backup list`).
        set: String,
        /// The repository's password, read from this file (else SHADOWCOPY_PASSWORD); sent to
        /// the node, which needs it for an encrypted repository.
        #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Print the final report as JSON on stdout (progress stays on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Copies backup sets, with the sets they build on, into another repository (in this
    /// process: no node needed); only chunks the target lacks are stored, and each copy is
    /// verified there.
    Copy(crate::copy_cmd::CopyArgs),
    /// Applies a retention policy: keeps the sets the --keep-* rules choose (per storage
    /// group, with every set a kept one needs to be restored) and removes the others from
    /// the repository, in this process (no node). Their chunks stay until `prune`.
    #[command(
        after_help = "Restic's rules: --keep-last N keeps the N newest sets; --keep-hourly/-daily/-weekly/-monthly/-yearly N keep the newest set of each of the N most recent hours, days, ISO weeks, months or years (in UTC) that hold a set. A set is kept if any rule keeps it. A kept incremental or differential also keeps its full and the sets between.\n\nExamples:\n  shadowcopy backup forget --repo /srv/backups --keep-daily 7 --keep-weekly 4 --dry-run\n  shadowcopy backup forget --repo /srv/backups --sg SG1 --keep-last 3 --keep-monthly 12\n  shadowcopy backup forget --repo /srv/backups --keep-last 10 --json"
    )]
    Forget(crate::forget_cmd::Forget),
    /// Removes the chunks no set uses and repacks mostly unused packs, in this process (no
    /// node), under the repository's exclusive lock.
    #[command(
        after_help = "Examples:\n  shadowcopy backup prune --repo /srv/backups --dry-run\n  shadowcopy backup prune --repo /srv/backups --max-unused 5%"
    )]
    Prune(crate::prune_cmd::PruneArgs),
    /// Removes stale repository locks (of processes that are gone), or every lock with
    /// `--remove-all`, printing what it removed.
    #[command(after_help = "Example:\n  shadowcopy backup unlock --repo /srv/backups")]
    Unlock(crate::prune_cmd::UnlockArgs),
    /// Creates a repository on this machine, encrypted unless told otherwise (runs here, not
    /// on a node).
    #[command(
        after_help = "Examples:\n  shadowcopy backup init --repo /srv/backups --password-file /etc/shadowcopy/repo.pass\n  shadowcopy backup init --repo /srv/backups --insecure-no-encryption"
    )]
    Init(crate::key_cmd::InitArgs),
    /// Adds, lists or removes the passwords of an encrypted repository on this machine.
    #[command(subcommand)]
    Key(crate::key_cmd::KeyCmd),
}

/// The kinds of backup, as the reference system names them.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackupType {
    /// Databases and logs; truncates the logs it covers.
    Full,
    /// Logs since the last full or incremental; truncates them.
    Incremental,
    /// Logs since the last full; truncates nothing.
    Differential,
    /// Like a full, but out of band: truncates nothing and is no base for later backups.
    Copy,
}

/// Restores a backup set (with its chain) over the storage group or into a directory.
#[derive(Debug, Args)]
#[command(
    after_help = "By default a restore over the original location rolls forward through the logs still in the storage group's log directory, and one with --to stops at the backup's point in time; --roll-forward and --no-roll-forward (alias --point-in-time) choose for either target. A point-in-time restore over the original location moves the live logs and checkpoint into a superseded-… directory inside the log directory (never deleted), needs a set holding every database of the storage group, and makes the next incremental or differential wait for a new full backup.\n\nExamples:\n  shadowcopy restore --repo /srv/backups --set 3f2a9c --to /srv/restored\n  shadowcopy restore --repo /srv/backups --set 3f2a9c --to /srv/restored --roll-forward\n  shadowcopy restore --repo /srv/backups --set 3f2a9c --original --allow-overwrite\n  shadowcopy restore --repo /srv/backups --set 3f2a9c --original --no-roll-forward"
)]
// Exactly one target, so that a missing choice names both.
#[command(group = clap::ArgGroup::new("target").args(["original", "to"]).required(true))]
pub struct Restore {
    /// Repository: a directory on the node, or s3://BUCKET/PREFIX (the
    /// node connects with its [s3] configuration and AWS_* environment).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    repo: PathBuf,
    /// Set id or unambiguous prefix; its full and incrementals are found automatically.
    #[arg(long, value_name = "ID")]
    set: String,
    /// Over the storage group's own database files.
    #[arg(long)]
    original: bool,
    /// With --original: if the storage group is mounted, dismount it and overwrite its
    /// databases (without it, a mounted storage group is refused). It is mounted again when
    /// the restore ends, whether it succeeded or not.
    #[arg(long, requires = "original")]
    allow_overwrite: bool,
    /// Into this directory on the node (created if missing).
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// Continue through the later logs in the storage group's log directory after the
    /// backed-up ones (the default over the original location). With --to they are copied,
    /// read only, from the live store, which may stay mounted.
    #[arg(long, conflicts_with = "no_roll_forward")]
    roll_forward: bool,
    /// Stop at the end of the backup's logs, its point in time (the default with --to). Over
    /// the original location the live logs are moved aside, not replayed.
    #[arg(long, visible_alias = "point-in-time")]
    no_roll_forward: bool,
    /// In a database availability group, with --original: suspend the storage group's passive
    /// copies during the restore and seed them again after it (a restore over the active's
    /// files changes the log stream they replay). Without it such a restore is refused,
    /// naming the copies.
    #[arg(long, requires = "original")]
    reseed_copies: bool,
    /// The repository's password, read from this file (else SHADOWCOPY_PASSWORD); sent to
    /// the node, which needs it for an encrypted repository.
    #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Print the final report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    json: bool,
}

/// The node resolves paths, so relative ones are made absolute here, where the user is.
fn absolute(p: &Path) -> Result<String> {
    // An object store's URL is resolved by the node, not against this directory.
    if let Some(url) = p.to_str().filter(|s| s.starts_with("s3://")) {
        return Ok(url.to_string());
    }
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().context("finding the current directory")?.join(p)
    };
    Ok(abs.to_string_lossy().into_owned())
}

/// The repository password to send to the node, from the non-interactive sources (the node
/// asks for nothing: a job must not wait on a prompt).
fn password(file: Option<&Path>) -> Result<Option<String>> {
    Ok(crate::repo_access::password_from_sources(file)?.map(|p| p.as_str().to_string()))
}

/// Adds to a "closed mid-job" error where this job's outcome can be seen.
fn where_to_look(e: anyhow::Error, hint: impl FnOnce() -> String) -> anyhow::Error {
    if e.downcast_ref::<ClosedMidJob>().is_some() { e.context(hint()) } else { e }
}

fn backup_type(t: BackupType) -> api::BackupType {
    match t {
        BackupType::Full => api::BackupType::Full,
        BackupType::Incremental => api::BackupType::Incremental,
        BackupType::Differential => api::BackupType::Differential,
        BackupType::Copy => api::BackupType::Copy,
    }
}

/// `low-high` in hex as in the log file names (`0x2F-0x30`), or `-` without logs.
fn logs(r: Option<api::LogRange>) -> String {
    r.map_or("-".to_string(), |r| format!("{:#X}-{:#X}", r.low, r.high))
}

pub fn run_backup(node: &Endpoint, cmd: &Backup) -> Result<()> {
    match cmd {
        Backup::Copy(c) => return crate::copy_cmd::run(c),
        Backup::Forget(f) => return crate::forget_cmd::run(f),
        Backup::Prune(a) => crate::prune_cmd::run_prune(a)?,
        Backup::Unlock(a) => crate::prune_cmd::run_unlock(a)?,
        // In this process: no node is contacted.
        Backup::Init(a) => return crate::key_cmd::run_init(a),
        Backup::Key(k) => return crate::key_cmd::run_key(k),
        Backup::Run { backup_type: kind, sg, repo, databases, from, password_file, json } => {
            let kind = backup_type(*kind);
            let t = kind.name();
            let repo = absolute(repo)?;
            let body = api::BackupRequest {
                backup_type: kind,
                sg: sg.clone(),
                repo: repo.clone(),
                databases: databases.clone(),
                from: from.clone(),
                password: password(password_file.as_deref())?,
            };
            let v: api::BackupReport = progress::follow(&format!("{t} backup of {sg}"), |on_event| {
                node.post_streaming("/v1/backup", &body, on_event)
            })
            .map_err(|e| {
                where_to_look(e, || {
                    format!(
                        "the {t} backup of {sg}: `shadowcopy backup list --repo {repo}` shows                          whether its set was published"
                    )
                })
            })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let set = &v.set;
            let clear = if v.encrypted { "" } else { " (UNENCRYPTED repository)" };
            println!("Backup set {} ({t} of {sg}) published in {repo}{clear}", set.id);
            println!("   Job:          {}", v.job);
            println!("   Taken on:     node {}", set.node);
            println!("   Files:        {}", set.files);
            if let Some(r) = set.log_range {
                println!("   Logs:         generations {:#X}-{:#X}", r.low, r.high);
            }
            println!("   Read:         {}", bytes(v.bytes));
            println!("   Stored (new): {}", bytes(v.stored_bytes));
            println!("   Writes held:  {:.1} ms", v.hold_ms);
            println!(
                "   Took:         {:.1} s ({}/s)",
                v.elapsed_ms / 1e3,
                bytes(v.throughput_bytes_per_second as u64)
            );
        }
        Backup::List { repo, password_file, json } => {
            let q = api::RepoQuery { repo: absolute(repo)? };
            let pw = password(password_file.as_deref())?;
            let v: api::SetList =
                node.get_with_password(&with_query("/v1/backup/sets", &q)?, pw.as_deref())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let how = if v.encrypted { "encrypted" } else { "unencrypted" };
            println!("Repository {} ({how})", q.repo);
            println!(
                "{:<36}  {:<12}  {:<8}  {:>6}  {:>10}  logs",
                "set", "type", "sg", "files", "bytes"
            );
            for s in &v.sets {
                println!(
                    "{:<36}  {:<12}  {:<8}  {:>6}  {:>10}  {}",
                    s.id.to_string(),
                    s.backup_type,
                    s.storage_group,
                    s.files.to_string(),
                    bytes(s.bytes),
                    logs(s.log_range),
                );
            }
        }
        Backup::Verify { repo, set, password_file, json } => {
            let body = api::VerifyRequest {
                repo: absolute(repo)?,
                set: set.clone(),
                password: password(password_file.as_deref())?,
            };
            let v: api::VerifyReport =
                progress::follow(&format!("verifying set {set}"), |on_event| {
                    node.post_streaming("/v1/backup/verify", &body, on_event)
                })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let r = &v.report;
            println!(
                "Set {} verified: {} files, {}: every hash; {} database(s), {} page checksums; \
                 log generations {:#X} to {:#X}, {} record checksums ({:.1} s).",
                v.set.id,
                v.set.files,
                bytes(v.set.bytes),
                r.databases,
                r.pages,
                r.first,
                r.last,
                r.records,
                v.elapsed_ms / 1e3
            );
        }
    }
    Ok(())
}

pub fn run_restore(node: &Endpoint, r: &Restore) -> Result<()> {
    let to = r.to.as_deref().map(absolute).transpose()?;
    let body = api::RestoreRequest {
        repo: absolute(&r.repo)?,
        set: r.set.clone(),
        original: r.original,
        allow_overwrite: r.allow_overwrite,
        to,
        roll_forward: roll_forward_choice(r),
        reseed_copies: r.reseed_copies,
        password: password(r.password_file.as_deref())?,
    };
    let v: api::RestoreReport = progress::follow(&format!("restoring set {}", r.set), |on_event| {
        node.post_streaming("/v1/restore", &body, on_event)
    })
    .map_err(|e| {
        where_to_look(e, || {
            format!(
                "the restore of set {}: the node's events (`shadowcopy events --source requester`) \
                 say whether it ended; a restore that did not end left the target as it was or \
                 in its staging directory",
                r.set
            )
        })
    })?;
    if r.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let sets: Vec<String> = v.sets.iter().map(ToString::to_string).collect();
    println!("Restored {} from {} set(s): {}", v.storage_group, sets.len(), sets.join(", "));
    println!("   Job: {} (`shadowcopy events --job {}`)", v.job, short(v.job));
    println!("   Files: {}, {}", v.files, bytes(v.bytes));
    println!(
        "   Recovery: {} log generations, {} transactions, {} pages written",
        v.generations_replayed.len(),
        v.transactions,
        v.pages_written
    );
    for d in &v.databases {
        println!("   Database {} at {}", d.name, d.path);
    }
    if let Some(s) = &v.superseded_logs {
        println!("   {}", superseded_line(s));
    }
    println!("   Took {:.1} s", v.elapsed_ms / 1e3);
    Ok(())
}

/// The first eight hex digits of an id: a prefix `events --job` accepts.
fn short(id: uuid::Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}

/// The node's default (`None`) unless a flag chose.
fn roll_forward_choice(r: &Restore) -> Option<bool> {
    match (r.roll_forward, r.no_roll_forward) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    }
}

/// Tells the administrator where a point-in-time restore over the original location moved
/// the live logs (nothing was deleted).
fn superseded_line(s: &api::SupersededLogs) -> String {
    let dir = s.path.as_deref().unwrap_or(&s.dir);
    let files = s.files.len();
    match (s.first, s.last) {
        (Some(first), Some(last)) => format!(
            "Superseded logs: the live logs from generation {first:#X} to {last:#X} and the checkpoint ({files} files) were moved to {dir}"
        ),
        _ => format!("Superseded logs: {files} files were moved to {dir}"),
    }
}
