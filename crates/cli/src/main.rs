//! `shadowcopy`: the one binary of Shadowcopy.
//!
//! `serve` runs a node; every other verb but `inspect` and the demos talks to a running node
//! through its API (`--node`). `--node` and `--token` stay global options rather than being
//! repeated on each verb that uses them, so that they can come anywhere on the line (and from
//! the environment); their help says which verbs ignore them. Every verb lives in its own module; this file only parses the
//! command line and dispatches.

mod admin;
mod backup_cmd;
mod copy_cmd;
mod dag_cmd;
use cli::client;
mod demo;
mod demo_dag;
mod events_cmd;
mod forget_cmd;
mod generate_cmd;
mod inspect;
mod key_cmd;
mod mail_client;
mod progress;
mod prune_cmd;
mod repo_access;
mod schedule_cmd;
mod store_cmd;
mod volume_demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use client::{DEFAULT_SOCKET, Endpoint};

/// Shadowcopy: application-consistent, point-in-time backups of live data on Linux.
///
/// `serve` runs a node; the other verbs but `inspect`, `demo` and `volume-demo` talk to a
/// running node through its API (see `--node`).
#[derive(Debug, Parser)]
#[command(
    name = "shadowcopy",
    version,
    after_help = "Examples:\n  shadowcopy demo\n  shadowcopy serve --config /etc/shadowcopy/node.toml\n  shadowcopy --node /var/lib/shadowcopy/api.sock admin list writers\n  shadowcopy backup run --type full --sg SG1 --repo /srv/backups"
)]
struct Cli {
    /// The node to talk to: its API socket path, or http://HOST:PORT (ignored by inspect,
    /// demo, volume-demo and serve). `mail send` and `mail check` take it several times: the
    /// nodes of a DAG, tried in turn to find the one where the storage group is active.
    #[arg(
        long,
        global = true,
        env = "SHADOWCOPY_NODE",
        default_value = DEFAULT_SOCKET,
        action = clap::ArgAction::Append,
        help_heading = "Connection to the node"
    )]
    node: Vec<String>,
    /// API token for a node reached over TCP; prefer the environment variable, as arguments
    /// show in `ps` (ignored by inspect, demo, volume-demo and serve).
    #[arg(
        long,
        global = true,
        env = "SHADOWCOPY_TOKEN",
        hide_env_values = true,
        help_heading = "Connection to the node"
    )]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the guided demonstration in a throw-away directory (no configuration needed):
    /// a live mail store backed up (full, then incremental) under load, a disaster, a restore,
    /// and the proof that no message was lost.
    #[command(
        after_help = "Examples:\n  shadowcopy demo\n  shadowcopy demo --keep --messages 1000\n  shadowcopy demo --dag"
    )]
    Demo(demo::Args),
    /// Shows copy-on-write snapshots at work on two scratch volumes (no node needed).
    #[command(after_help = "Examples:\n  shadowcopy volume-demo\n  shadowcopy volume-demo --keep")]
    VolumeDemo(volume_demo::Args),
    /// Runs a node from its configuration and serves its API until SIGTERM or SIGINT.
    #[command(after_help = "Example:\n  shadowcopy serve --config /etc/shadowcopy/node.toml")]
    Serve {
        /// The node's TOML configuration (volumes, shadow storage, storage groups, API).
        #[arg(long)]
        config: PathBuf,
    },
    /// Writers, providers, shadow copies and shadow storage (the reference tool's verbs).
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy admin list writers\n  shadowcopy admin create shadow --for db\n  shadowcopy admin add shadowstorage --for db --on logs --maxsize 2GiB"
    )]
    Admin(admin::Admin),
    /// Storage groups: create (a storage group or a database), status, mount, dismount.
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy store create storage-group SG2 --log-volume logs --database DB1 --database-volume db\n  shadowcopy store status\n  shadowcopy store dismount SG1"
    )]
    Store(store_cmd::Store),
    /// Mail: generate load, count messages, send and check acknowledged mail.
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy mail load --sg SG1 --db DB1 --messages 500\n  shadowcopy mail count --sg SG1 --db DB1\n  shadowcopy mail send --sg SG1 --db DB1 --seconds 60 --acks acks.txt --node /run/a.sock --node /run/b.sock\n  shadowcopy mail check --sg SG1 --db DB1 --acks acks.txt --node /run/a.sock --node /run/b.sock"
    )]
    Mail(store_cmd::Mail),
    /// Backups: run, list, verify; and, in this process on a repository, init, key, copy, forget, prune, unlock.
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy backup run --type full --sg SG1 --repo /srv/backups\n  shadowcopy backup list --repo /srv/backups\n  shadowcopy backup verify --repo /srv/backups 3f2a9c"
    )]
    Backup(backup_cmd::Backup),
    /// Restores a backup set (with the backups it builds on) over the storage group or into a
    /// directory.
    Restore(backup_cmd::Restore),
    /// A database availability group: set one up, list its members.
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy dag init --name DAG1 --nodes a,b,c --dir /srv/dag1 --storage-group SG1\n  shadowcopy dag status"
    )]
    Dag(dag_cmd::Dag),
    /// Database copies on the DAG's members: add, status, suspend, resume, reseed, remove.
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy copy add --sg SG1 --on b\n  shadowcopy copy status --sg SG1\n  shadowcopy copy suspend --sg SG1 --on b --reason \"disk swap\""
    )]
    Copy(dag_cmd::Copy),
    /// The node's event trail, filtered by job, source, event id or time.
    Events(events_cmd::Events),
    /// The backups and prunes the node runs by itself (`[[schedule]]`): next and last runs.
    #[command(subcommand, after_help = "Example:\n  shadowcopy schedule list")]
    Schedule(schedule_cmd::Schedule),
    /// The node's configuration file (no node needed).
    #[command(subcommand, after_help = "Example:\n  shadowcopy config sample > node.toml")]
    Config(ConfigCmd),
    /// Offline dumps and checks of database, log and checkpoint files (no node needed).
    #[command(
        subcommand,
        after_help = "Examples:\n  shadowcopy inspect header /srv/sc/db/SG1/DB1.edb\n  shadowcopy inspect verify /srv/sc/logs/SG1"
    )]
    Inspect(inspect::Inspect),
    /// Man pages and shell completions, for packagers (hidden).
    #[command(subcommand, hide = true)]
    Generate(generate_cmd::Generate),
}

/// Restores the default action of SIGPIPE, so that a verb writing into a closed pipe
/// (`shadowcopy events | head -1`) ends quietly as Unix tools do, instead of `println!`
/// panicking on the EPIPE the ignored signal turns into (the Rust runtime ignores SIGPIPE).
/// `serve` keeps it ignored: a client closing its connection must not kill the node.
fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler and touches no memory; called once at
    // the start of main, before any thread is spawned.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Prints a commented configuration with every key: a starting point for node.toml.
    Sample,
}

/// Runs the command. Errors are printed as one line, `Error: what: why: …`, whatever
/// RUST_BACKTRACE says: a user's mistake is not a crash, and a 25-frame trace hides the
/// sentence that names it.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let serve = matches!(cli.command, Command::Serve { .. });
    // `serve` says when it is ready and when it stops (node::service at info level); the
    // other verbs only warn.
    let default_filter = if serve { "warn,node::service=info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWCOPY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !serve {
        default_sigpipe();
    }
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let nodes: Vec<Endpoint> =
        cli.node.iter().map(|n| Endpoint::parse(n, cli.token.clone())).collect();
    let node = || -> anyhow::Result<Endpoint> {
        match nodes.as_slice() {
            [one] => Ok(one.clone()),
            many => anyhow::bail!(
                "--node is given {} times; only `mail send` and `mail check` take several nodes",
                many.len()
            ),
        }
    };
    match &cli.command {
        Command::Demo(args) => demo::run(args),
        Command::VolumeDemo(args) => volume_demo::run(args),
        Command::Serve { config } => {
            let cfg = node::Config::load(config)?;
            node::service::run(cfg).context("the node stopped with an error")
        }
        Command::Admin(a) => admin::run(&node()?, a),
        Command::Store(s) => store_cmd::run_store(&node()?, s),
        Command::Mail(m) => store_cmd::run_mail(&nodes, m),
        // Verbs that work on a repository in this process need no node.
        Command::Backup(backup_cmd::Backup::Copy(c)) => copy_cmd::run(c),
        Command::Backup(backup_cmd::Backup::Forget(f)) => forget_cmd::run(f),
        Command::Backup(backup_cmd::Backup::Prune(a)) => prune_cmd::run_prune(a),
        Command::Backup(backup_cmd::Backup::Unlock(a)) => prune_cmd::run_unlock(a),
        Command::Backup(backup_cmd::Backup::Init(a)) => key_cmd::run_init(a),
        Command::Backup(backup_cmd::Backup::Key(k)) => key_cmd::run_key(k),
        Command::Backup(b) => backup_cmd::run_backup(&node()?, b),
        Command::Restore(r) => backup_cmd::run_restore(&node()?, r),
        Command::Dag(d) => dag_cmd::run_dag(&node()?, d),
        Command::Copy(c) => dag_cmd::run_copy(&node()?, c),
        Command::Events(e) => events_cmd::run(&node()?, e),
        Command::Schedule(c) => schedule_cmd::run(&node()?, c),
        Command::Inspect(i) => inspect::run(i),
        Command::Generate(g) => generate_cmd::run(Cli::command(), g),
        Command::Config(ConfigCmd::Sample) => {
            print!("{}", node::config::SAMPLE);
            Ok(())
        }
    }
}
