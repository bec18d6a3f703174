//! Backups, verification and restores (`shadowcopy backup`, `shadowcopy restore`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::BackupSlot;

/// The kinds of backup, as the reference system names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// Databases and logs; truncates the logs it covers.
    #[serde(alias = "Full", alias = "FULL")]
    Full,
    /// Logs since the last full or incremental; truncates them.
    #[serde(alias = "Incremental", alias = "INCREMENTAL")]
    Incremental,
    /// Logs since the last full; truncates nothing.
    #[serde(alias = "Differential", alias = "DIFFERENTIAL")]
    Differential,
    /// Like a full, but out of band: truncates nothing and is no base for later backups.
    #[serde(alias = "Copy", alias = "COPY")]
    Copy,
}

impl BackupType {
    /// The name on the wire and in repositories.
    pub fn name(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Incremental => "incremental",
            BackupType::Differential => "differential",
            BackupType::Copy => "copy",
        }
    }
}

/// `POST /v1/backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupRequest {
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub sg: String,
    /// Repository directory on the node (absolute; created if missing).
    pub repo: String,
    /// Only these databases (default: all).
    #[serde(default)]
    pub databases: Vec<String>,
    /// In a DAG, which copy to back up: `passive` (the healthiest passive copy: lowest copy
    /// and replay queues, then activation preference), `active`, or a node's name. Default:
    /// the copy on the node asked (its passive copy, or its own storage group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The repository's password, if it is encrypted (or to create it encrypted). Sent in the
    /// body, never in a URL, so that it reaches no access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The report of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupReport {
    pub set: SetSummary,
    pub job: Uuid,
    /// Bytes read from the snapshots.
    pub bytes: u64,
    /// Bytes new in the repository.
    pub stored_bytes: u64,
    pub hold_ms: f64,
    pub elapsed_ms: f64,
    pub throughput_bytes_per_second: f64,
    /// Whether the repository is encrypted (a backup into a new repository without a
    /// password makes an unencrypted one, and the client says so).
    #[serde(default)]
    pub encrypted: bool,
}

/// A backup set of a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetSummary {
    pub id: Uuid,
    pub created_unix_ms: u64,
    pub node: String,
    /// `full`, `incremental`, `differential` or `copy`.
    #[serde(rename = "type")]
    pub backup_type: String,
    pub storage_group: String,
    /// The job that made it: the key of its event trail.
    pub job: Option<Uuid>,
    /// The full it builds on (incremental and differential).
    pub base_set: Option<Uuid>,
    pub log_range: Option<LogRange>,
    pub files: u64,
    pub bytes: u64,
}

/// Log generations a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogRange {
    pub low: u32,
    pub high: u32,
}

/// The header that carries a repository's password on a `GET` (`/v1/backup/sets`): a query
/// string would put it in URLs, which are logged; the `POST`s carry it in their body.
pub const REPO_PASSWORD_HEADER: &str = "x-shadowcopy-repo-password";

/// `GET /v1/backup/sets` (the password, if any, in [`REPO_PASSWORD_HEADER`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct RepoQuery {
    /// Repository directory on the node (absolute).
    pub repo: String,
}

/// The answer to [`RepoQuery`], oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetList {
    pub sets: Vec<SetSummary>,
    /// Whether the repository is encrypted (`false` from nodes older than encryption).
    #[serde(default)]
    pub encrypted: bool,
    /// What the repository holds as a whole, for its deduplication (absent from older
    /// nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<RepoFigures>,
    /// The last verification of each set that this node ran since it started (a set not
    /// listed was not verified here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verifications: Vec<SetVerification>,
}

/// A repository's figures: the bytes its sets name, and what their chunks take once
/// deduplicated (raw) and compressed (stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RepoFigures {
    pub sets: u64,
    pub chunks: u64,
    /// The bytes of every file of every set (what the sets would take without
    /// deduplication or compression).
    pub set_bytes: u64,
    /// The bytes of the distinct chunks, before compression.
    pub raw_bytes: u64,
    /// The bytes of the distinct chunks as stored.
    pub stored_bytes: u64,
}

/// The outcome of the last verification of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SetVerification {
    pub set: Uuid,
    pub time_ms: u64,
    pub verified: bool,
    /// Why it failed.
    pub error: Option<String>,
}

/// `POST /v1/backup/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyRequest {
    pub repo: String,
    /// Set id or unambiguous prefix.
    pub set: String,
    /// The repository's password, if it is encrypted (or to create it encrypted). Sent in the
    /// body, never in a URL, so that it reaches no access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The report of a verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    pub set: SetSummary,
    pub verified: bool,
    pub report: VerifyFigures,
    pub elapsed_ms: f64,
}

/// What a verification checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyFigures {
    pub files: u64,
    pub bytes: u64,
    /// The header of each database checked.
    pub headers: Vec<DatabaseHeader>,
    pub databases: u64,
    /// Pages whose checksum was verified.
    pub pages: u64,
    /// First and last log generation checked.
    pub first: u32,
    pub last: u32,
    /// Log records whose checksum was verified.
    pub records: u64,
}

/// A database header as stored in a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseHeader {
    pub page_size: u32,
    /// `just_created`, `dirty_shutdown` or `clean_shutdown`.
    pub state: String,
    /// The log signature of its instance (hex).
    pub log_signature: String,
    pub dbid: u32,
    pub name: String,
    pub created: u64,
    pub last_attach: u64,
    pub last_detach: u64,
    /// Log positions (generation in the high 32 bits).
    pub min_required: u64,
    pub max_required: u64,
    pub update_count: u64,
    pub previous_full: Option<BackupSlot>,
    pub previous_incremental: Option<BackupSlot>,
    pub previous_differential: Option<BackupSlot>,
    pub previous_copy: Option<BackupSlot>,
}

/// `POST /v1/restore`: exactly one of `original` or `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreRequest {
    pub repo: String,
    /// Set id or unambiguous prefix; its chain is found automatically.
    pub set: String,
    /// Over the storage group's own files.
    #[serde(default)]
    pub original: bool,
    /// Dismount the storage group if it is mounted (with `original`).
    #[serde(default)]
    pub allow_overwrite: bool,
    /// Into this directory (absolute, on the node).
    #[serde(default)]
    pub to: Option<String>,
    /// Continue through the storage group's later logs, or stop at the backup's point in
    /// time. Default: roll forward at the original location, not at an alternate one.
    #[serde(default)]
    pub roll_forward: Option<bool>,
    /// In a DAG, with `original`: suspend the storage group's passive copies during the
    /// restore and seed them again after it (without it, such a restore is refused, naming
    /// the copies).
    #[serde(default)]
    pub reseed_copies: bool,
    /// The repository's password, if it is encrypted (or to create it encrypted). Sent in the
    /// body, never in a URL, so that it reaches no access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// The report of a restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RestoreReport {
    /// The restore's own job: the key of its event trail (`events --job`).
    pub job: Uuid,
    pub storage_group: String,
    /// The sets restored, the full first.
    pub sets: Vec<Uuid>,
    pub files: u64,
    pub bytes: u64,
    pub generations_replayed: Vec<u32>,
    pub transactions: u64,
    pub pages_written: u64,
    pub databases: Vec<RestoredDatabase>,
    /// Where a point-in-time restore over the original location moved the live logs.
    pub superseded_logs: Option<SupersededLogs>,
    pub elapsed_ms: f64,
}

/// Where a restored database is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoredDatabase {
    pub name: String,
    /// On its volume (original), or on the node (alternate).
    pub path: String,
}

/// The live logs a point-in-time restore moved aside (nothing is deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SupersededLogs {
    /// The log volume's label.
    pub volume: String,
    /// The directory on the log volume.
    pub dir: String,
    /// The same directory on the node.
    pub path: Option<String>,
    pub prefix: String,
    pub first: Option<u32>,
    pub last: Option<u32>,
    /// The files moved, the checkpoint among them.
    pub files: Vec<String>,
}
