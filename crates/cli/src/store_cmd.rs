//! `shadowcopy store` (status, create, mount, dismount) and `shadowcopy mail` (load, count;
//! send and check are in [`crate::mail_client`]).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::client::{Endpoint, segment, with_query};
use crate::progress::{self, bytes};

#[derive(Debug, Subcommand)]
pub enum Store {
    /// Shows each storage group: mounted, log and checkpoint generations, log files on disk,
    /// the backup history kept in each database header, and a backup in progress.
    #[command(
        after_help = "Examples:\n  shadowcopy store status\n  shadowcopy store status --json"
    )]
    Status {
        /// Print the node's JSON answer instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Creates a storage group (with its first database) or adds a database to one; the node
    /// mounts it and keeps it across restarts.
    #[command(subcommand)]
    Create(Create),
    /// Mounts a storage group (soft recovery runs first if it stopped uncleanly).
    #[command(after_help = "Example:\n  shadowcopy store mount SG1")]
    Mount {
        /// The storage group's name, as in the node's configuration.
        storage_group: String,
    },
    /// Dismounts a storage group cleanly (its databases are flushed and marked clean).
    #[command(after_help = "Example:\n  shadowcopy store dismount SG1")]
    Dismount {
        /// The storage group's name, as in the node's configuration.
        storage_group: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Create {
    /// Creates a storage group with its first database, and mounts it.
    ///
    /// The storage group gets its log stream and checkpoint, and the database its file. The
    /// node records both in its data directory, so they are mounted at every later start. A
    /// name that is taken, a prefix already used in the same directory, a database file
    /// another database uses, or files already on disk are refused.
    #[command(
        visible_alias = "sg",
        after_help = "Examples:\n  shadowcopy store create storage-group SG2 --log-volume logs --database DB1 --database-volume db\n  shadowcopy store create storage-group SG3 --log-volume logs --log-dir logs/SG3 --system-dir SG3 --prefix E03 --circular-logging --database Mail --database-volume db --database-path SG3/Mail.edb"
    )]
    StorageGroup {
        /// The storage group's name.
        name: String,
        /// Volume of the logs and the checkpoint.
        #[arg(long)]
        log_volume: String,
        /// Log directory on the log volume [default: the storage group's name].
        #[arg(long)]
        log_dir: Option<String>,
        /// Directory of the checkpoint on the log volume [default: the log directory].
        #[arg(long)]
        system_dir: Option<String>,
        /// Log file prefix, E00 to EFF [default: the lowest one the node does not use].
        #[arg(long)]
        prefix: Option<String>,
        /// Reuse log files once checkpointed (no incremental or differential backups then).
        #[arg(long)]
        circular_logging: bool,
        /// Name of the first database.
        #[arg(long)]
        database: String,
        /// Volume of the first database.
        #[arg(long)]
        database_volume: String,
        /// Path of the database file on its volume [default: SG/DATABASE.edb].
        #[arg(long)]
        database_path: Option<String>,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Adds a database to a mounted storage group.
    ///
    /// The storage group is dismounted and mounted again with it (a moment in which its
    /// requests fail); a storage group with a backup in progress is refused. The node records
    /// the database in its data directory, so it is mounted at every later start.
    #[command(
        visible_alias = "db",
        after_help = "Example:\n  shadowcopy store create database DB2 --sg SG1 --volume db --path SG1/DB2.edb"
    )]
    Database {
        /// The database's name.
        name: String,
        /// The storage group it belongs to.
        #[arg(long)]
        sg: String,
        /// Volume of the database file.
        #[arg(long)]
        volume: String,
        /// Path of the database file on its volume [default: SG/NAME.edb].
        #[arg(long)]
        path: Option<String>,
        /// Print the node's answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum Mail {
    /// Delivers generated mail to a database: N messages, or for N seconds. Every delivery is
    /// durable (committed to the log) before it counts.
    #[command(
        after_help = "Examples:\n  shadowcopy mail load --sg SG1 --db DB1 --messages 500\n  shadowcopy mail load --sg SG1 --db DB1 --seconds 30"
    )]
    // One of the two, so that a missing choice names both.
    #[command(group = clap::ArgGroup::new("amount").args(["messages", "seconds"]).required(true))]
    Load {
        /// The storage group that holds the database.
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// The database to deliver to.
        #[arg(long, value_name = "DATABASE")]
        db: String,
        /// Deliver this many messages, then stop.
        #[arg(long, value_name = "N")]
        messages: Option<u64>,
        /// Deliver for this many seconds (at most 3600), then stop.
        #[arg(long, value_name = "N")]
        seconds: Option<u64>,
        /// Mailboxes to spread deliveries over.
        #[arg(long, value_name = "N", default_value_t = 8)]
        mailboxes: usize,
    },
    /// Counts the messages of a mounted database, with a digest of their content (equal
    /// digests: the same messages, byte for byte).
    #[command(
        after_help = "Examples:\n  shadowcopy mail count --sg SG1 --db DB1\n  shadowcopy mail count --sg SG1 --db DB1 --json\n  shadowcopy mail count --sg SG1 --db DB1 --path /srv/restored/SG1\n  shadowcopy mail count --sg SG1 --db DB1 --copy    (on a node with a passive copy)"
    )]
    Count {
        /// The storage group that holds the database.
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// The database to count.
        #[arg(long, value_name = "DATABASE")]
        db: String,
        /// Count the copy a `restore --to DIR` left in DIR (on the node) instead of the mounted
        /// database; the storage group gives the engine settings.
        #[arg(long, value_name = "DIR", conflicts_with = "copy")]
        path: Option<PathBuf>,
        /// Count this node's passive copy of the storage group (read-only, as of its last
        /// replayed generation), to compare it with the active's.
        #[arg(long)]
        copy: bool,
        /// Print the node's JSON answer instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// A mail client that follows the active copy: delivers unique messages one at a time per
    /// thread, appends each acknowledged one to FILE as it is acknowledged, and moves to the
    /// next --node when one says the storage group is not active there, cannot be reached or
    /// does not answer in time. Prints what was sent and acknowledged, the nodes used in
    /// order, and the pauses (gaps between acknowledgements, as a switchover or failover
    /// makes).
    #[command(
        after_help = "Examples:\n  shadowcopy mail send --sg SG1 --db DB1 --messages 1000 --acks acks.txt\n  shadowcopy mail send --sg SG1 --db DB1 --seconds 120 --threads 4 --acks acks.txt --node /run/a.sock --node /run/b.sock --json"
    )]
    Send(crate::mail_client::SendArgs),
    /// Checks that every message of an acknowledgements file (written by `mail send`) is
    /// stored byte for byte; fails naming the first missing ones.
    #[command(
        after_help = "Examples:\n  shadowcopy mail check --sg SG1 --db DB1 --acks acks.txt\n  shadowcopy mail check --sg SG1 --db DB1 --acks acks.txt --node /run/a.sock --node /run/b.sock --json"
    )]
    Check(crate::mail_client::CheckArgs),
}

pub fn run_store(node: &Endpoint, cmd: &Store) -> Result<()> {
    match cmd {
        Store::Status { json } => {
            let v: api::StoreStatus = node.get("/v1/store")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&mut std::io::stdout().lock(), &v)?;
            }
        }
        Store::Create(c) => create(node, c)?,
        Store::Mount { storage_group } => {
            let _: api::Mounted = progress::run(&format!("mounting {storage_group}"), || {
                node.post(&format!("/v1/store/{}/mount", segment(storage_group)), &())
            })?;
            println!("Storage group {storage_group} is mounted.");
        }
        Store::Dismount { storage_group } => {
            let _: api::Mounted =
                node.post(&format!("/v1/store/{}/dismount", segment(storage_group)), &())?;
            println!("Storage group {storage_group} is dismounted.");
        }
    }
    Ok(())
}

fn create(node: &Endpoint, cmd: &Create) -> Result<()> {
    match cmd {
        Create::StorageGroup {
            name,
            log_volume,
            log_dir,
            system_dir,
            prefix,
            circular_logging,
            database,
            database_volume,
            database_path,
            json,
        } => {
            let body = api::CreateStorageGroup {
                name: name.clone(),
                log_volume: log_volume.clone(),
                log_dir: log_dir.clone(),
                system_dir: system_dir.clone(),
                prefix: prefix.clone(),
                circular_logging: *circular_logging,
                database: api::CreateDatabase {
                    name: database.clone(),
                    volume: database_volume.clone(),
                    path: database_path.clone(),
                },
            };
            let v: api::CreatedStorageGroup =
                progress::run(&format!("creating storage group {name}"), || {
                    node.post("/v1/store", &body)
                })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            let sg = &v.storage_group;
            println!("Storage group {name} is created and mounted.");
            println!(
                "   Logs:       {}:{} (prefix {}{})",
                sg.log_volume,
                sg.log_dir,
                sg.prefix,
                if sg.circular_logging { ", circular logging" } else { "" }
            );
            println!(
                "   Checkpoint: {}:{}",
                sg.log_volume,
                sg.system_dir.as_deref().unwrap_or("?")
            );
            for d in &sg.databases {
                print_database(d);
            }
        }
        Create::Database { name, sg, volume, path, json } => {
            let body = api::CreateDatabase {
                name: name.clone(),
                volume: volume.clone(),
                path: path.clone(),
            };
            let v: api::CreatedDatabase =
                progress::run(&format!("creating database {sg}/{name}"), || {
                    node.post(&format!("/v1/store/{}/databases", segment(sg)), &body)
                })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            println!("Database {name} is created in storage group {sg}, which is mounted.");
            print_database(&v.database);
        }
    }
    Ok(())
}

fn print_database(d: &api::DatabaseConfig) {
    println!("   Database {}: {}:{}", d.name, d.volume, d.path);
}

fn slot(v: Option<api::BackupSlot>) -> String {
    let Some(v) = v else { return "none".into() };
    format!("generations {:#X}-{:#X} at {} ({})", v.gen_low, v.gen_high, v.time, v.kind.as_str())
}

/// A generation that may be unknown, in hex as in the log file names (`0x30`: `E0000000030.log`).
fn generation(g: Option<u32>) -> String {
    g.map_or("none".to_string(), |g| format!("{g:#X}"))
}

/// A database's header state, explained where it would mislead: a mounted database is
/// marked dirty until it is dismounted cleanly, so "DirtyShutdown" is what in use looks like.
fn db_state(state: Option<&str>, mounted: bool) -> String {
    match state {
        Some("DirtyShutdown") if mounted => {
            "DirtyShutdown: in use; a mounted database is marked so until it is dismounted cleanly"
                .into()
        }
        Some(s) => s.to_string(),
        None => "?".into(),
    }
}

/// The status as text, into `out`.
/// The backup slots of a database header.
fn backup_history(out: &mut impl std::io::Write, d: &api::DatabaseStatus) -> std::io::Result<()> {
    writeln!(out, "      Last full backup:         {}", slot(d.previous_full))?;
    writeln!(out, "      Last incremental backup:  {}", slot(d.previous_incremental))?;
    writeln!(out, "      Last differential backup: {}", slot(d.previous_differential))?;
    writeln!(out, "      Last copy backup:         {}", slot(d.previous_copy))
}

fn print_status(out: &mut impl std::io::Write, v: &api::StoreStatus) -> std::io::Result<()> {
    if v.storage_groups.is_empty() {
        writeln!(
            out,
            "This node has no storage group; create one with `shadowcopy store create storage-group`."
        )?;
        return Ok(());
    }
    for g in &v.storage_groups {
        writeln!(
            out,
            "Storage group {}: {}",
            g.name,
            if g.mounted { "mounted" } else { "dismounted" }
        )?;
        if let Some(e) = &g.mount_error {
            writeln!(out, "   Mount failed:          {e}")?;
        }
        if let Some(l) = &g.log {
            writeln!(out, "   Log generation:        {:#X}", l.current_generation)?;
            writeln!(out, "   Checkpoint generation: {:#X}", l.checkpoint_generation)?;
            writeln!(
                out,
                "   Log files on disk:     {} (generations {} to {})",
                l.log_files,
                generation(l.lowest_generation),
                generation(l.highest_generation)
            )?;
        }
        match g.backup_in_progress {
            Some(job) => writeln!(out, "   Backup in progress:    job {job}")?,
            None => writeln!(out, "   Backup in progress:    no")?,
        }
        for d in &g.databases {
            writeln!(out, "   Database {} ({})", d.name, db_state(d.state.as_deref(), g.mounted))?;
            backup_history(out, d)?;
        }
        // A passive copy's headers hold the history replayed from the active's logs.
        for d in &g.copy_databases {
            match &d.error {
                Some(e) => writeln!(out, "   Passive copy of database {}: {e}", d.name)?,
                None => writeln!(out, "   Passive copy of database {} on this node", d.name)?,
            }
            backup_history(out, d)?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The one node of a verb that talks to one node.
fn only(nodes: &[Endpoint]) -> Result<&Endpoint> {
    match nodes {
        [one] => Ok(one),
        many => bail!(
            "--node is given {} times; only `mail send` and `mail check` take several nodes",
            many.len()
        ),
    }
}

pub fn run_mail(nodes: &[Endpoint], cmd: &Mail) -> Result<()> {
    match cmd {
        Mail::Send(args) => crate::mail_client::send(nodes, args)?,
        Mail::Check(args) => crate::mail_client::check(nodes, args)?,
        Mail::Load { sg, db, messages, seconds, mailboxes } => {
            let node = only(nodes)?;
            let what = match (messages, seconds) {
                (Some(n), _) => format!("delivering {n} messages to {sg}/{db}"),
                (_, Some(s)) => format!("delivering mail to {sg}/{db} for {s} s"),
                _ => bail!("give --messages N or --seconds N"),
            };
            let body = api::MailLoad {
                sg: sg.clone(),
                db: db.clone(),
                messages: *messages,
                seconds: *seconds,
                mailboxes: Some(*mailboxes),
                seed: None,
            };
            let v: api::MailLoaded = progress::run(&what, || node.post("/v1/mail/load", &body))?;
            println!(
                "Delivered {} messages to {sg}/{db} in {:.1} s ({} errors).",
                v.delivered,
                v.elapsed_ms / 1e3,
                v.errors
            );
            if let Some(e) = &v.last_error {
                println!("Last error: {e}");
            }
        }
        Mail::Count { sg, db, path, copy, json } => {
            let node = only(nodes)?;
            let path = path
                .as_ref()
                .map(|p| {
                    std::path::absolute(p)
                        .map(|abs| abs.display().to_string())
                        .with_context(|| format!("resolving {}", p.display()))
                })
                .transpose()?;
            let q = api::MailCountQuery { sg: sg.clone(), db: db.clone(), path, copy: *copy };
            let v: api::MailCount = node.get(&with_query("/v1/mail/count", &q)?)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{sg}/{db}: {} messages in {} mailboxes, {} (digest {})",
                    v.messages,
                    v.mailboxes,
                    bytes(v.bytes),
                    v.digest
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &api::StoreStatus) -> String {
        let mut out = Vec::new();
        print_status(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn no_storage_group_is_said() {
        let t = text(&api::StoreStatus { storage_groups: Vec::new() });
        assert!(t.contains("no storage group"), "{t}");
    }

    #[test]
    fn a_mounted_databases_dirty_state_is_explained() {
        assert!(db_state(Some("DirtyShutdown"), true).contains("in use"));
        assert_eq!(db_state(Some("DirtyShutdown"), false), "DirtyShutdown");
        assert_eq!(generation(Some(0x30)), "0x30");
    }
}
