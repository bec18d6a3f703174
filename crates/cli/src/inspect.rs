//! `shadowcopy inspect`: offline dumps and checks of database, log and checkpoint files. No
//! node is needed; the file is read through a host file system rooted at its directory, so a
//! copy restored anywhere can be examined.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde::Serialize;
use volume::{FileSystem, HostFs};

#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Dumps a database header: state, log signature, required logs, backup history.
    #[command(after_help = "Example:\n  shadowcopy inspect header /srv/sc/db/SG1/DB1.edb")]
    Header {
        /// The database file (.edb).
        path: PathBuf,
        /// Print the dump as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dumps a log file: header and every record.
    #[command(after_help = "Example:\n  shadowcopy inspect log /srv/sc/logs/SG1/E00.log")]
    Log {
        /// The log file (E00.log, E0000000001.log, …).
        path: PathBuf,
        /// Print the dump as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dumps a checkpoint file.
    #[command(after_help = "Example:\n  shadowcopy inspect checkpoint /srv/sc/logs/SG1/E00.chk")]
    Checkpoint {
        /// The checkpoint file (E00.chk).
        path: PathBuf,
        /// Print the dump as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checks every page of a database file, or every record of the logs in a directory.
    #[command(
        after_help = "Examples:\n  shadowcopy inspect verify /srv/sc/db/SG1/DB1.edb\n  shadowcopy inspect verify /srv/sc/logs/SG1 --prefix E00"
    )]
    Verify {
        /// A database file, or a log directory.
        path: PathBuf,
        /// Log prefix, when PATH is a directory.
        #[arg(long, default_value = "E00")]
        prefix: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A host file system at `path`'s directory, and the file's name within it.
fn at_parent(path: &Path) -> Result<(Arc<HostFs>, PathBuf)> {
    let abs = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let dir = abs.parent().context("the path has no parent directory")?;
    let name = abs.file_name().context("the path names no file")?;
    let fs = HostFs::new(dir).with_context(|| format!("opening {}", dir.display()))?;
    Ok((Arc::new(fs), PathBuf::from(name)))
}

fn show<T: Serialize + std::fmt::Display>(v: &T, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{v}");
    }
    Ok(())
}

pub fn run(cmd: &Inspect) -> Result<()> {
    match cmd {
        Inspect::Header { path, json } => {
            let (fs, name) = at_parent(path)?;
            show(&ese::inspect::dump_database_header(fs.as_ref(), &name)?, *json)
        }
        Inspect::Log { path, json } => {
            let (fs, name) = at_parent(path)?;
            let dump = ese::inspect::dump_log(fs.as_ref(), &name)?;
            show(&dump, *json)?;
            // The good records are shown; the damage is the command's failure.
            match dump.damage() {
                Some(why) => anyhow::bail!("{why}"),
                None => Ok(()),
            }
        }
        Inspect::Checkpoint { path, json } => {
            let (fs, name) = at_parent(path)?;
            show(&ese::inspect::dump_checkpoint(fs.as_ref(), &name)?, *json)
        }
        Inspect::Verify { path, prefix, json } => {
            if path.is_dir() {
                let fs =
                    HostFs::new(path).with_context(|| format!("opening {}", path.display()))?;
                let r = ese::inspect::verify_logs(
                    &fs as &dyn FileSystem,
                    Path::new(""),
                    prefix,
                    None,
                    None,
                )?;
                show(&r, *json)
            } else {
                let (fs, name) = at_parent(path)?;
                show(&ese::inspect::verify_database(fs.as_ref(), &name)?, *json)
            }
        }
    }
}
