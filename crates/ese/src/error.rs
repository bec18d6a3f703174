//! The engine's typed errors. Every message names what is wrong: the file, the page, the
//! generation, the table or the backup state, so an operator can act on it.

use std::io;
use std::path::PathBuf;

/// Result alias of the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// An I/O error on a named file.
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The volume holding `path` is full. The instance refuses new write transactions until it
    /// is shut down; acknowledged commits are safe in the log (reserve logs absorb the rest).
    #[error("storage full while writing {path}: {source}")]
    StorageFull { path: PathBuf, source: io::Error },
    /// The instance stopped accepting writes after a storage-full error.
    #[error("instance {prefix} is out of disk space; shut it down and free space before retrying")]
    DiskFullState { prefix: String },
    /// A page failed its checksum or carries the wrong page number ("read verify failure").
    #[error("read verify failure: {path} page {pgno}: {why}")]
    PageCorrupt { path: PathBuf, pgno: u64, why: String },
    /// A page was never written ("page not initialized").
    #[error("page not initialized: {path} page {pgno}")]
    PageNotInitialized { path: PathBuf, pgno: u64 },
    /// A log file or record is damaged.
    #[error("corrupt log {path} (generation {generation}): {why}")]
    LogCorrupt { path: PathBuf, generation: u32, why: String },
    /// The log writer failed; the instance takes no more commits until it is reopened.
    #[error(
        "log writer of {path} (generation {generation}) failed: {why}; reopen the instance to recover"
    )]
    LogWriterFailed { path: PathBuf, generation: u32, why: String },
    /// A log belongs to another instance.
    #[error("log {path} (generation {generation}) has a foreign log signature")]
    ForeignLog { path: PathBuf, generation: u32 },
    /// A generation is missing from the log stream.
    #[error("log generation {missing:#X} is missing (needed after {after_path})")]
    LogGap { missing: u32, after_path: PathBuf },
    /// A header (database header, log header, checkpoint) is damaged.
    #[error("corrupt header of {path}: {why}")]
    HeaderCorrupt { path: PathBuf, why: String },
    /// A database's header does not match the instance's logs.
    #[error("database {path} does not match the logs: {why}")]
    DatabaseMismatch { path: PathBuf, why: String },
    /// A database name is unknown to the instance.
    #[error("no database named {0:?} is attached")]
    NoSuchDatabase(String),
    /// A database with that name is already attached.
    #[error("a database named {0:?} is already attached")]
    DatabaseExists(String),
    /// Logs reference a database the caller did not provide.
    #[error("the logs need database {name:?} (id {dbid}) but it was not provided")]
    DatabaseMissing { name: String, dbid: u32 },
    /// A table name is unknown.
    #[error("no table named {table:?} in database {db:?}")]
    NoSuchTable { db: String, table: String },
    /// A table with that name exists.
    #[error("table {table:?} already exists in database {db:?}")]
    TableExists { db: String, table: String },
    /// A key or table name is too long.
    #[error("{what} is {len} bytes; the limit is {max}")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The instance files already exist (create) or are missing (open).
    #[error("{0}")]
    InstanceFiles(String),
    /// The instance was shut down.
    #[error("instance {0} is shut down")]
    ShutDown(String),
    /// A backup call arrived in the wrong state.
    #[error("invalid backup sequence: {call} is not allowed in state {state}")]
    InvalidSequence { call: &'static str, state: String },
    /// Another backup of this instance is running.
    #[error("backup in progress: snapshot instance {0} of this storage group has not ended")]
    BackupInProgress(u64),
    /// Incremental or differential asked without a prior full backup.
    #[error("missing full backup: database {0:?} has no previous full backup")]
    MissingFullBackup(String),
    /// The backup type is not allowed in this configuration.
    #[error("backup type {kind} not allowed: {why}")]
    BackupNotAllowed { kind: String, why: String },
    /// The freeze exceeded its timeout and was thawed by the watchdog.
    #[error("freeze of snapshot instance {session} timed out after {secs:.1} s")]
    FreezeTimedOut { session: u64, secs: f64 },
    /// A surrogate backup's stamp names generations the active cannot vouch for.
    #[error("surrogate backup stamp refused: {0}")]
    SurrogateStampRefused(String),
    /// The backup did not copy every generation of its range.
    #[error("truncation refused: {0}")]
    TruncationRefused(String),
    /// A recovery stopped.
    #[error("recovery failed: {0}")]
    Recovery(String),
    /// A thread the engine needs (lazy writer, freeze watchdog) could not be started.
    #[error("cannot start the {what} thread: {source}")]
    ThreadSpawn { what: &'static str, source: io::Error },
    /// A durable commit's records are durable here, but the commit gate (synchronous copies)
    /// did not confirm them replicated: the commit is not acknowledged, though it will be
    /// found after a restart of this instance.
    #[error("commit up to {lsn} is durable locally but not replicated: {why}")]
    NotReplicated { lsn: crate::lsn::Lsn, why: String },
}

impl EngineError {
    /// Wraps an I/O error on `path`, mapping `StorageFull` to its own variant.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            EngineError::StorageFull { path, source }
        } else {
            EngineError::Io { path, source }
        }
    }

    /// Whether this is a storage-full error.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, EngineError::StorageFull { .. } | EngineError::DiskFullState { .. })
    }
}

/// Adds a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| EngineError::io(path, e))
    }
}
