//! How the commands that work on a repository directly — in this process, with no node, like
//! restic (`backup forget`, `prune`, `unlock`, `copy`, `init`, `key`) — name and open it.
//!
//! One place, so that every such command takes the same `--repo` and password options and
//! opens a repository the same way.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use backup::repo::{Password, RepoError, RepoLocation, Repository, S3Settings};
use clap::Args;

/// The environment variable holding a repository's password itself (the file is safer: the
/// environment of a process can be read by its user's other processes).
pub const PASSWORD_ENV: &str = "SHADOWCOPY_PASSWORD";

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
    /// Where the repository is: a directory, or `s3://bucket/prefix` (reached with the
    /// `AWS_*` variables).
    pub fn location(&self) -> Result<RepoLocation> {
        Ok(RepoLocation::parse(&self.repo)?)
    }

    /// Opens the repository, creating nothing. An encrypted repository takes the password
    /// from `--password-file`, `SHADOWCOPY_PASSWORD_FILE` or `SHADOWCOPY_PASSWORD`, else
    /// asks on the terminal; a clear one asks for nothing.
    pub fn open(&self) -> Result<Repository> {
        let location = self.location()?;
        let s3 = S3Settings::default();
        let given = password_from_sources(self.password_file.as_deref())?;
        let opened =
            match Repository::open_location(&location, &s3, given.as_ref().map(Password::as_str)) {
                Err(RepoError::PasswordRequired { .. }) if given.is_none() => {
                    let p = prompt(&format!("Password of repository {}: ", self.repo))?;
                    Repository::open_location(&location, &s3, Some(p.as_str()))
                }
                other => other,
            };
        opened.with_context(|| format!("opening repository {}", self.repo))
    }

    /// The password from the sources, else the terminal (for creating a repository).
    pub fn password_or_prompt(&self, what: &str) -> Result<Password> {
        match password_from_sources(self.password_file.as_deref())? {
            Some(p) => Ok(p),
            None => {
                prompt_new(what, "--password-file, SHADOWCOPY_PASSWORD_FILE or SHADOWCOPY_PASSWORD")
            }
        }
    }
}

/// The password from `file` (its trailing newline stripped), else from
/// `SHADOWCOPY_PASSWORD`; `None` if neither is given. Never prompts: the node's commands use
/// this, and so does a script.
pub fn password_from_sources(file: Option<&Path>) -> Result<Option<Password>> {
    if let Some(p) = password_from_file(file)? {
        return Ok(Some(p));
    }
    match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => Ok(Some(Password::new(p))),
        _ => Ok(None),
    }
}

/// The password in `file`, its trailing newline stripped; `None` without a file.
pub fn password_from_file(file: Option<&Path>) -> Result<Option<Password>> {
    if let Some(file) = file {
        let p = Password::read_file(file)
            .with_context(|| format!("reading the password file {}", file.display()))?;
        if p.as_str().is_empty() {
            bail!("the password file {} is empty", file.display());
        }
        return Ok(Some(p));
    }
    Ok(None)
}

/// Asks for a password on the terminal; a clear error where there is none.
fn prompt(question: &str) -> Result<Password> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "the repository is encrypted and no password was given: use --password-file, \
             SHADOWCOPY_PASSWORD_FILE or SHADOWCOPY_PASSWORD (no terminal to ask on)"
        );
    }
    let p = Password::new(rpassword::prompt_password(question).context("reading a password")?);
    if p.as_str().is_empty() {
        bail!("an empty password is not a password");
    }
    Ok(p)
}

/// Asks for a new password twice on the terminal (a typo would lock the repository).
/// `sources` names where it could have come from instead, for the error without a terminal.
pub fn prompt_new(what: &str, sources: &str) -> Result<Password> {
    if !std::io::stdin().is_terminal() {
        bail!("no {what} given and no terminal to ask on: use {sources}");
    }
    let first = prompt(&format!("Enter the {what}: "))?;
    let again = prompt(&format!("Enter the {what} again: "))?;
    if first.as_str() != again.as_str() {
        bail!("the two passwords differ");
    }
    Ok(first)
}
