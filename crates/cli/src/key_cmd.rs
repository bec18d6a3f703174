//! `shadowcopy backup init` and `shadowcopy backup key add|list|remove`: in this process, on a
//! repository directory of this machine (see [`crate::repo_access`]), with no node.
//!
//! A new repository is encrypted unless `--insecure-no-encryption` says otherwise: a backup
//! is a copy of every mailbox, often kept off site, and its protection cannot be added later
//! without rewriting it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use backup::repo::{Compression, InitOptions, KdfParams, Repository};
use clap::{Args, Subcommand};
use volume::{FsRef, HostFs};

use crate::repo_access::{self, RepoArgs};

/// `backup init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Store everything in clear (anyone who can read the directory can read the mail).
    #[arg(long)]
    pub insecure_no_encryption: bool,
    /// How new chunks are compressed: auto (per chunk, zstd or lz4 as the CPU allows, raw
    /// when a chunk does not compress), zstd[:LEVEL], lz4 or none.
    #[arg(long, value_name = "SETTING", default_value_t = Compression::default())]
    pub compression: Compression,
    /// Print what was created as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `backup key`.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Adds a password: a new key file wrapping the repository's key (opened with an existing
    /// password).
    #[command(
        after_help = "Example:\n  shadowcopy backup key add --repo /srv/backups --password-file old.txt --new-password-file new.txt"
    )]
    Add {
        #[command(flatten)]
        repo: RepoArgs,
        /// Read the new password from this file (else it is asked twice on the terminal).
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
    },
    /// Lists the key files (the one the given password opens is marked).
    List {
        #[command(flatten)]
        repo: RepoArgs,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Removes a key file, so that its password no longer opens the repository. The key the
    /// given password opens, and the last key, are refused.
    Remove {
        #[command(flatten)]
        repo: RepoArgs,
        /// Key id or unambiguous prefix (see `backup key list`).
        id: String,
    },
}

/// Creates a repository.
pub fn run_init(a: &InitArgs) -> Result<()> {
    let path = Path::new(&a.repo.repo);
    let password = if a.insecure_no_encryption {
        None
    } else {
        Some(a.repo.password_or_prompt("password of the new repository")?)
    };
    let fs: FsRef = Arc::new(
        HostFs::new(path).with_context(|| format!("creating directory {}", path.display()))?,
    );
    let opts = InitOptions { password, compression: a.compression, ..Default::default() };
    let repo = Repository::init(fs, "", opts)
        .with_context(|| format!("creating a repository in {}", path.display()))?;
    if a.json {
        let v = serde_json::json!({
            "repository": a.repo.repo,
            "id": repo.config().id,
            "format": repo.config().format,
            "encryption": repo.crypto().name(),
            "compression": repo.config().compression_setting().to_string(),
            "key": repo.key_id(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match repo.key_id() {
        Some(key) => println!(
            "Created encrypted repository {} in {} (key {key}). Keep the password safe: \
             without it the backups cannot be read.",
            repo.config().id,
            a.repo.repo
        ),
        None => println!("Created UNENCRYPTED repository {} in {}.", repo.config().id, a.repo.repo),
    }
    Ok(())
}

/// Runs a `backup key` command.
pub fn run_key(cmd: &KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Add { repo, new_password_file } => {
            let r = repo.open()?;
            let new = match repo_access::password_from_file(new_password_file.as_deref())? {
                Some(p) => p,
                None => repo_access::prompt_new("new password", "--new-password-file")?,
            };
            let id = r
                .add_key(new.as_str(), KdfParams::default())
                .with_context(|| format!("adding a key to {}", repo.repo))?;
            println!("Added key {id} to {}", repo.repo);
        }
        KeyCmd::List { repo, json } => {
            let keys = repo.open()?.list_keys()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(());
            }
            println!("{:<1} {:<36}  {:<13}  {:<12}  host", "", "key", "created (ms)", "user");
            for k in &keys {
                println!(
                    "{:<1} {:<36}  {:<13}  {:<12}  {}",
                    if k.current { "*" } else { "" },
                    k.id.to_string(),
                    k.created_unix_ms,
                    k.user,
                    k.host
                );
            }
        }
        KeyCmd::Remove { repo, id } => {
            let removed = repo.open()?.remove_key(id)?;
            println!("Removed key {removed} from {}", repo.repo);
        }
    }
    Ok(())
}
