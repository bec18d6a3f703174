//! The volume demo: copy-on-write snapshots on two scratch volumes.

use std::path::PathBuf;

/// Options of the volume demo.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the scratch directory instead of removing it at the end.
    #[arg(long)]
    pub keep: bool,
    /// Use this directory instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs the demo.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let _ = args;
    println!("The volume demo arrives with the shadow volume.");
    Ok(())
}
