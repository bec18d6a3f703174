//! Errors of the requester.

use crate::repo::RepoError;

/// Why a backup or restore failed. Every message names the storage group, set, file,
/// page or generation concerned.
#[derive(Debug, thiserror::Error)]
pub enum RequesterError {
    #[error("the coordinator refused or failed the job: {0}")]
    Coordinator(#[from] vss::VssError),
    #[error("repository: {0}")]
    Repo(#[from] RepoError),
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("the store writer is not registered with the coordinator")]
    NoStoreWriter,
    #[error("storage group {0:?} is not offered by the store writer")]
    NoSuchStorageGroup(String),
    #[error("database {database:?} is not in storage group {storage_group:?}")]
    NoSuchDatabase { storage_group: String, database: String },
    #[error("snapshot of volume {0:?} is missing from the snapshot set")]
    NoView(String),
    #[error("listing {volume}/{path} in the snapshot: {source}")]
    List {
        volume: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("verification failed, nothing was truncated: {0}")]
    Verify(String),
    #[error("{backup_type} backup of {storage_group} needs a prior full backup in the repository")]
    NoBase { backup_type: String, storage_group: String },
    #[error(
        "backup set {set} was published and verified, but the writers could not complete the backup (no header stamp or log truncation may have happened): {source}"
    )]
    CompleteFailed {
        set: uuid::Uuid,
        #[source]
        source: vss::VssError,
    },
    #[error("backup refused: {0}")]
    Refused(String),
    #[error("restore refused: {0}")]
    RestoreRefused(String),
    #[error("restore failed, the target was left as it was: {0}")]
    RestoreFailed(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of the requester.
pub type Result<T, E = RequesterError> = std::result::Result<T, E>;
