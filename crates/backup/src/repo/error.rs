//! Errors of the repository.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading or writing a repository. Every variant names the file,
/// set, chunk or path it is about, so that an administrator can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a Shadowcopy repository (no repository.json)")]
    NotARepository { path: PathBuf },
    #[error("{path} already holds a repository")]
    AlreadyExists { path: PathBuf },
    #[error("repository location {location:?}: {why}")]
    BadLocation { location: String, why: String },
    #[error("repository format {found} is not supported (this build reads format {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },
    #[error("repository configuration {path} is corrupt: {why}")]
    CorruptConfig { path: PathBuf, why: String },
    #[error("pack index {path} is corrupt: {why}")]
    CorruptIndex { path: PathBuf, why: String },
    #[error("manifest of backup set {set} is corrupt: {why}")]
    CorruptManifest { set: String, why: String },
    #[error("no backup set {0} in the repository")]
    SetNotFound(String),
    #[error("the chain of backup set {set} is broken: {why}")]
    BrokenChain { set: String, why: String },
    #[error("backup set id {0:?} is ambiguous or malformed")]
    BadSetId(String),
    #[error("chunk {hash} of {file} is missing from the repository")]
    MissingChunk { hash: String, file: String },
    #[error("chunk {hash} of {file} is corrupt in pack {pack}: {why}")]
    CorruptChunk { hash: String, file: String, pack: String, why: String },
    #[error("{file}: content hash {actual} does not match the manifest's {expected}")]
    FileHashMismatch { file: String, expected: String, actual: String },
    #[error("{file}: {actual} bytes read, the manifest says {expected}")]
    FileSizeMismatch { file: String, expected: u64, actual: u64 },
    #[error(
        "{object} failed authentication: it was changed or damaged after it was written, or it \
         belongs to another repository"
    )]
    Authentication { object: String },
    #[error(
        "repository {path} is locked: {by}. If that process is gone, `shadowcopy backup unlock \
         --repo {path}` removes stale locks (`--remove-all` removes every lock)"
    )]
    Locked { path: PathBuf, by: String },
    #[error("repository {path} is encrypted: a password is required to open it")]
    PasswordRequired { path: PathBuf },
    #[error("repository {path}: wrong password or no key matches")]
    WrongPassword { path: PathBuf },
    #[error("key file {path} is damaged: {why}")]
    CorruptKey { path: PathBuf, why: String },
    #[error("repository {path} is not encrypted: it has no keys")]
    NotEncrypted { path: PathBuf },
    #[error("no key {0} in the repository")]
    KeyNotFound(String),
    #[error("key {id} cannot be removed: {why}")]
    KeyKept { id: String, why: &'static str },
    #[error("key derivation parameters refused: {0}")]
    BadKdf(String),
    #[error("{file}: {why}")]
    Rejected { file: String, why: String },
    #[error("copying {file}: {source}")]
    Source {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("writing restored {file}: {source}")]
    Sink {
        file: String,
        #[source]
        source: io::Error,
    },
}

/// Result alias of the repository.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Attaches an operation and a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| RepoError::Io { op, path: path.into(), source })
    }
}
