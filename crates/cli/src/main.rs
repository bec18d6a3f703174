//! `shadowcopy`: the one binary of Shadowcopy.
//!
//! Every verb lives in its own module; this file only parses the command line and dispatches.

mod demo;
mod volume_demo;

use clap::{Parser, Subcommand};

/// Shadowcopy: application-consistent, point-in-time backups of live data on Linux.
#[derive(Debug, Parser)]
#[command(name = "shadowcopy", version, about, long_about = None)]
struct Cli {
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
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::VolumeDemo(args) => volume_demo::run(&args),
    }
}
