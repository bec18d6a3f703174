//! How the commands that work on a repository directly — in this process, with no node, like
//! restic (`backup forget`, `prune`, `unlock`, `copy`, `init`, `key`) — name and open it.
//!
//! One place, so that every such command takes the same `--repo` and password options and
//! opens a repository the same way.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use backup::repo::Repository;
use clap::Args;

/// The repository a command works on, and how to unlock it.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// The repository: a directory on this machine.
    #[arg(long, value_name = "DIR")]
    pub repo: String,
    /// Read the repository's password from this file (else SHADOWCOPY_PASSWORD, else a prompt
    /// on a terminal).
    #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl RepoArgs {
    /// Opens the repository, creating nothing.
    pub fn open(&self) -> Result<Repository> {
        Repository::open_host(Path::new(&self.repo))
            .with_context(|| format!("opening repository {}", self.repo))
    }
}
