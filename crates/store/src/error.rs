//! Errors of the information store.

use uuid::Uuid;

/// What can go wrong in the store. Messages name the storage group, database, mailbox or job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage group {0:?} does not exist")]
    NoSuchStorageGroup(String),
    #[error("storage group {0:?} already exists")]
    StorageGroupExists(String),
    #[error("database {database:?} is not in storage group {storage_group:?}")]
    NoSuchDatabase { storage_group: String, database: String },
    #[error("storage group {0:?} is not mounted")]
    NotMounted(String),
    #[error("storage group {0:?} is already mounted")]
    AlreadyMounted(String),
    #[error(
        "storage group {storage_group:?} has a backup in progress (job {job}, {by}); {action} is refused until it ends"
    )]
    BackupInProgress { storage_group: String, job: Uuid, by: String, action: String },
    #[error(
        "storage group {storage_group:?} is mounted; dismount it before {action} (a database is detached from a storage group only while its engine instance is shut down)"
    )]
    MustBeDismounted { storage_group: String, action: String },
    #[error("mailbox {0:?} does not exist")]
    NoSuchMailbox(String),
    #[error("mailbox {0:?} already exists")]
    MailboxExists(String),
    #[error("folder {folder:?} does not exist in mailbox {mailbox:?}")]
    NoSuchFolder { mailbox: String, folder: String },
    #[error("message {id} does not exist in mailbox {mailbox:?}")]
    NoSuchMessage { mailbox: String, id: u64 },
    #[error("stored record {what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
    #[error("invalid name {0:?}: names are 1-255 characters without NUL or '/'")]
    BadName(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A database exists but the log stream it belongs to does not (a log volume pointed at
    /// the wrong or an empty directory, logs deleted): creating a new stream beside it would
    /// detach it from its history, so the mount is refused and says what is missing.
    #[error("database {database} exists but its logs are missing: {why}")]
    LogsMissing { database: String, why: String },
    /// A database belongs to another log stream than the storage group's (its log signature
    /// differs from the checkpoint's): attaching it would graft it onto a history it is not
    /// part of.
    #[error("database {database} belongs to another log stream: {why}")]
    SignatureMismatch { database: String, why: String },
    #[error(transparent)]
    Engine(#[from] ese::EngineError),
    /// A surrogate backup's request that does not fit the storage group's state.
    #[error("storage group {storage_group:?}: {why}")]
    Surrogate { storage_group: String, why: String },
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
