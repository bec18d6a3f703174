//! How the commands that work on a repository directly — in this process, with no node, like
//! restic (`backup forget`, `prune`, `unlock`, `copy`, `init`, `key`) — name and open it.
//!
//! One place, so that every such command takes the same `--repo` and password options and
//! opens a repository the same way.

use std::path::PathBuf;

use anyhow::{Context, Result};
use backup::repo::{RepoLocation, Repository, S3Settings};
use clap::Args;

/// The repository a command works on, and how to unlock it.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// The repository: a directory on this machine, or s3://BUCKET/PREFIX (endpoint, region
    /// and credentials from the AWS_* variables: AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub repo: String,
    /// Read the repository's password from this file (else SHADOWCOPY_PASSWORD, else a prompt
    /// on a terminal).
    #[arg(long, env = "SHADOWCOPY_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

impl RepoArgs {
    /// Where the repository is.
    pub fn location(&self) -> Result<RepoLocation> {
        Ok(RepoLocation::parse(&self.repo)?)
    }

    /// Opens the repository, creating nothing.
    pub fn open(&self) -> Result<Repository> {
        let location = self.location()?;
        Repository::open_location(&location, &S3Settings::default())
            .with_context(|| format!("opening repository {}", self.repo))
    }
}
