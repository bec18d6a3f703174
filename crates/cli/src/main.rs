//! `shadowcopy`: the one binary of Shadowcopy.
//!
//! `serve` runs a node; every other verb but `inspect` and the demos talks to a running node
//! through its API (`--node`). Every verb lives in its own module; this file only parses the
//! command line and dispatches.

mod admin;
mod backup_cmd;
mod client;
mod demo;
mod events_cmd;
mod inspect;
mod progress;
mod store_cmd;
mod volume_demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use client::{DEFAULT_SOCKET, Endpoint};

/// Shadowcopy: application-consistent, point-in-time backups of live data on Linux.
#[derive(Debug, Parser)]
#[command(name = "shadowcopy", version, long_about = None)]
struct Cli {
    /// The node to talk to: its API socket path, or http://HOST:PORT.
    #[arg(long, global = true, env = "SHADOWCOPY_NODE", default_value = DEFAULT_SOCKET)]
    node: String,
    /// API token, for a node reached over TCP.
    #[arg(long, global = true, env = "SHADOWCOPY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the guided demonstration in a throw-away directory (no configuration needed):
    /// a live mail store backed up (full, then incremental) under load, a disaster, a restore,
    /// and the proof that no message was lost.
    ///
    /// Example: shadowcopy demo --keep
    Demo(demo::Args),
    /// Shows copy-on-write snapshots at work on two scratch volumes.
    ///
    /// Example: shadowcopy volume-demo --keep
    VolumeDemo(volume_demo::Args),
    /// Runs a node from its configuration and serves its API until SIGTERM or SIGINT.
    #[command(after_help = "Example:\n  shadowcopy serve --config /etc/shadowcopy/node.toml")]
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Writers, providers, shadow copies and shadow storage.
    #[command(subcommand)]
    Admin(admin::Admin),
    /// Storage groups: status, mount, dismount.
    #[command(subcommand)]
    Store(store_cmd::Store),
    /// Mail: generate load, count messages.
    #[command(subcommand)]
    Mail(store_cmd::Mail),
    /// Backups: run, list, verify.
    #[command(subcommand)]
    Backup(backup_cmd::Backup),
    /// Restores a backup set.
    Restore(backup_cmd::Restore),
    /// The node's event trail.
    Events(events_cmd::Events),
    /// Offline dumps and checks of database, log and checkpoint files (no node needed).
    #[command(subcommand)]
    Inspect(inspect::Inspect),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWCOPY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let node = || Endpoint::parse(&cli.node, cli.token.clone());
    match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::VolumeDemo(args) => volume_demo::run(args),
        Command::Serve { config } => {
            let cfg = node::Config::load(config)?;
            node::service::run(cfg).context("the node stopped with an error")
        }
        Command::Admin(a) => admin::run(&node(), a),
        Command::Store(s) => store_cmd::run_store(&node(), s),
        Command::Mail(m) => store_cmd::run_mail(&node(), m),
        Command::Backup(b) => backup_cmd::run_backup(&node(), b),
        Command::Restore(r) => backup_cmd::run_restore(&node(), r),
        Command::Events(e) => events_cmd::run(&node(), e),
        Command::Inspect(i) => inspect::run(i),
    }
}
