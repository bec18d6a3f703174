//! `shadowcopy store` (status, mount, dismount) and `shadowcopy mail` (load, count).

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Endpoint, encode};
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
pub enum Mail {
    /// Delivers generated mail to a database: N messages, or for N seconds. Every delivery is
    /// durable (committed to the log) before it counts.
    #[command(
        after_help = "Examples:\n  shadowcopy mail load --sg SG1 --db DB1 --messages 500\n  shadowcopy mail load --sg SG1 --db DB1 --seconds 30"
    )]
    Load {
        /// The storage group that holds the database.
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// The database to deliver to.
        #[arg(long, value_name = "DATABASE")]
        db: String,
        /// Deliver this many messages, then stop.
        #[arg(
            long,
            value_name = "N",
            conflicts_with = "seconds",
            required_unless_present = "seconds"
        )]
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
        after_help = "Examples:\n  shadowcopy mail count --sg SG1 --db DB1\n  shadowcopy mail count --sg SG1 --db DB1 --json"
    )]
    Count {
        /// The storage group that holds the database.
        #[arg(long, value_name = "STORAGE_GROUP")]
        sg: String,
        /// The database to count.
        #[arg(long, value_name = "DATABASE")]
        db: String,
        /// Print the node's JSON answer instead of the summary.
        #[arg(long)]
        json: bool,
    },
}

pub fn run_store(node: &Endpoint, cmd: &Store) -> Result<()> {
    match cmd {
        Store::Status { json } => {
            let v = node.get("/v1/store")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
        }
        Store::Mount { storage_group } => {
            progress::run(&format!("mounting {storage_group}"), || {
                node.post(&format!("/v1/store/{}/mount", encode(storage_group)), &json!({}))
            })?;
            println!("Storage group {storage_group} is mounted.");
        }
        Store::Dismount { storage_group } => {
            node.post(&format!("/v1/store/{}/dismount", encode(storage_group)), &json!({}))?;
            println!("Storage group {storage_group} is dismounted.");
        }
    }
    Ok(())
}

fn slot(v: &Value) -> String {
    if v.is_null() {
        return "none".into();
    }
    format!(
        "generations {}-{} at {} ({})",
        v["gen_low"],
        v["gen_high"],
        v["time"],
        v["kind"].as_str().unwrap_or("?")
    )
}

fn print_status(v: &Value) {
    for g in v["storage_groups"].as_array().into_iter().flatten() {
        let mounted = g["mounted"].as_bool() == Some(true);
        println!(
            "Storage group {}: {}",
            g["name"].as_str().unwrap_or("?"),
            if mounted { "mounted" } else { "dismounted" }
        );
        if let Some(l) = g.get("log").filter(|l| !l.is_null()) {
            println!("   Log generation:        {}", l["current_generation"]);
            println!("   Checkpoint generation: {}", l["checkpoint_generation"]);
            println!(
                "   Log files on disk:     {} (generations {}-{})",
                l["log_files"], l["lowest_generation"], l["highest_generation"]
            );
        }
        match g["backup_in_progress"].as_str() {
            Some(job) => println!("   Backup in progress:    job {job}"),
            None => println!("   Backup in progress:    no"),
        }
        for d in g["databases"].as_array().into_iter().flatten() {
            println!(
                "   Database {} ({})",
                d["name"].as_str().unwrap_or("?"),
                d["state"].as_str().unwrap_or("?")
            );
            println!("      Last full backup:         {}", slot(&d["previous_full"]));
            println!("      Last incremental backup:  {}", slot(&d["previous_incremental"]));
            println!("      Last differential backup: {}", slot(&d["previous_differential"]));
            println!("      Last copy backup:         {}", slot(&d["previous_copy"]));
        }
        println!();
    }
}

pub fn run_mail(node: &Endpoint, cmd: &Mail) -> Result<()> {
    match cmd {
        Mail::Load { sg, db, messages, seconds, mailboxes } => {
            if messages.is_none() && seconds.is_none() {
                bail!("give --messages N or --seconds N");
            }
            let what = match (messages, seconds) {
                (Some(n), _) => format!("delivering {n} messages to {sg}/{db}"),
                (_, Some(s)) => format!("delivering mail to {sg}/{db} for {s} s"),
                _ => unreachable!("checked above"),
            };
            let v = progress::run(&what, || {
                node.post(
                    "/v1/mail/load",
                    &json!({ "sg": sg, "db": db, "messages": messages, "seconds": seconds, "mailboxes": mailboxes }),
                )
            })?;
            println!(
                "Delivered {} messages to {sg}/{db} in {:.1} s ({} errors).",
                v["delivered"],
                v["elapsed_ms"].as_f64().unwrap_or(0.0) / 1e3,
                v["errors"]
            );
            if let Some(e) = v["last_error"].as_str() {
                println!("Last error: {e}");
            }
        }
        Mail::Count { sg, db, json } => {
            let v = node.get(&format!("/v1/mail/count?sg={}&db={}", encode(sg), encode(db)))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{sg}/{db}: {} messages in {} mailboxes, {} (digest {})",
                    v["messages"],
                    v["mailboxes"],
                    bytes(v["bytes"].as_u64().unwrap_or(0)),
                    v["digest"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}
