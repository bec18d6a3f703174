//! Storage groups and mail (`shadowcopy store`, `shadowcopy mail`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// `GET /v1/store`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoreStatus {
    pub storage_groups: Vec<StorageGroupStatus>,
}

/// A storage group: mounted, its logs, its databases' backup history, a backup in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StorageGroupStatus {
    pub name: String,
    pub mounted: bool,
    /// Why the storage group failed to mount, while it stays dismounted (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_error: Option<String>,
    /// Absent (null) when the log state cannot be read (not mounted).
    pub log: Option<LogStatus>,
    pub databases: Vec<DatabaseStatus>,
    /// The job holding the storage group for a backup.
    pub backup_in_progress: Option<Uuid>,
    /// In a DAG, this node's passive copy of the storage group: its databases' headers (the
    /// backup history the copy replayed from the active's logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_databases: Vec<DatabaseStatus>,
    /// The storage group's last log truncations on this node (its 224 and 225 events), so
    /// that "why were the logs not truncated?" is answered without reading the event trail.
    /// Absent from older nodes and when this node holds no active copy of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<TruncationStatus>,
    /// In a DAG, the same for this node's passive copy of the storage group (its shipped
    /// logs go once the active truncated them and replay passed them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_truncation: Option<TruncationStatus>,
}

/// The last truncation attempts of one copy of a storage group's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TruncationStatus {
    /// The last attempt, whether it deleted logs (224) or not (225).
    pub last_attempt: Option<TruncationAttempt>,
    /// The last attempt that deleted logs (224).
    pub last_truncated: Option<TruncationAttempt>,
}

/// One truncation attempt, from its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TruncationAttempt {
    /// 224 (logs deleted) or 225 (none deleted).
    pub event_id: u32,
    pub time_ms: u64,
    /// The backup job that asked for it, if any.
    pub job: Option<Uuid>,
    pub truncated: bool,
    /// The first and last generation deleted (224), as log file names.
    pub first: Option<String>,
    pub last: Option<String>,
    /// What limited it: why nothing was deleted (225), or what kept the later generations
    /// (224, a database copy that has not replayed them).
    pub limit: Option<String>,
    /// The event's message, as the event log shows it.
    pub message: String,
}

/// A storage group's log stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogStatus {
    pub current_generation: u32,
    pub checkpoint_generation: u32,
    /// Log generations on disk.
    pub log_files: u64,
    pub lowest_generation: Option<u32>,
    pub highest_generation: Option<u32>,
    /// The instance switched to its reserve logs after a storage-full error.
    pub disk_full: bool,
}

/// A database of a storage group, from its header; `error` instead when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseStatus {
    pub name: String,
    /// The header's state (`CleanShutdown`, `DirtyShutdown`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub previous_full: Option<BackupSlot>,
    #[serde(default)]
    pub previous_incremental: Option<BackupSlot>,
    #[serde(default)]
    pub previous_differential: Option<BackupSlot>,
    #[serde(default)]
    pub previous_copy: Option<BackupSlot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DatabaseStatus {
    /// A database with nothing known yet but its name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: None,
            previous_full: None,
            previous_incremental: None,
            previous_differential: None,
            previous_copy: None,
            error: None,
        }
    }
}

/// One backup recorded in a database header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupSlot {
    /// When the backup ended (seconds since the Unix epoch).
    pub time: u64,
    pub gen_low: u32,
    pub gen_high: u32,
    /// `normal`, `snapshot` or `surrogate`.
    #[schema(value_type = String)]
    pub kind: SlotKind,
}

/// How a backup recorded in a header was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    Normal,
    Snapshot,
    Surrogate,
}

impl SlotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotKind::Normal => "normal",
            SlotKind::Snapshot => "snapshot",
            SlotKind::Surrogate => "surrogate",
        }
    }
}

/// `POST /v1/store`: a storage group with its first database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStorageGroup {
    pub name: String,
    pub log_volume: String,
    /// On the log volume; the storage group's name when absent.
    #[serde(default)]
    pub log_dir: Option<String>,
    /// Holds the checkpoint; the log directory when absent.
    #[serde(default)]
    pub system_dir: Option<String>,
    /// `E00`…`EFF`; the lowest one no storage group of the node uses when absent.
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub circular_logging: bool,
    pub database: CreateDatabase,
}

/// `POST /v1/store/{sg}/databases`, and the first database of [`CreateStorageGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabase {
    pub name: String,
    pub volume: String,
    /// On its volume; `<storage group>/<name>.edb` when absent.
    #[serde(default)]
    pub path: Option<String>,
}

/// A storage group as the node keeps it (the configuration's `[[storage_group]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StorageGroupConfig {
    pub name: String,
    pub log_volume: String,
    pub log_dir: String,
    pub system_dir: Option<String>,
    pub prefix: String,
    pub circular_logging: bool,
    #[serde(rename = "database")]
    pub databases: Vec<DatabaseConfig>,
}

/// A database as the node keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DatabaseConfig {
    pub name: String,
    pub volume: String,
    pub path: String,
}

/// The answer to [`CreateStorageGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedStorageGroup {
    pub storage_group: StorageGroupConfig,
    pub mounted: bool,
}

/// The answer to [`CreateDatabase`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreatedDatabase {
    pub storage_group: String,
    pub database: DatabaseConfig,
}

/// The answer to mount and dismount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Mounted {
    pub storage_group: String,
    pub mounted: bool,
}

/// `POST /v1/mail/load`: deliver `messages` messages, or for `seconds` (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailLoad {
    pub sg: String,
    pub db: String,
    #[serde(default)]
    pub messages: Option<u64>,
    /// At most 3600.
    #[serde(default)]
    pub seconds: Option<u64>,
    /// Mailboxes to spread deliveries over (8 when absent).
    #[serde(default)]
    pub mailboxes: Option<usize>,
    /// Seed of the generated mail (the time when absent).
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The answer to [`MailLoad`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MailLoaded {
    pub storage_group: String,
    pub database: String,
    pub delivered: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub elapsed_ms: f64,
}

/// `GET /v1/mail/count`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct MailCountQuery {
    pub sg: String,
    pub db: String,
    /// A directory on the node that a restore with `to` wrote, to count instead of the
    /// mounted database (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Count this node's passive copy of the storage group instead (read-only, as of its last
    /// replayed generation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
}

/// The answer to [`MailCountQuery`]: equal digests mean the same messages, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailCount {
    pub storage_group: String,
    pub database: String,
    pub path: Option<String>,
    pub messages: u64,
    pub mailboxes: u64,
    pub bytes: u64,
    /// BLAKE3 of the content, hex.
    pub digest: String,
}

/// The error code of a mail request to a node where the storage group is not active (not
/// mounted here, or only a passive copy of it is): the client should try another node.
pub const NOT_ACTIVE: &str = "not_active";

/// `POST /v1/mail/deliver`: one message into the `Inbox` of `mailbox` (created when it does
/// not exist), answered only once the message is committed durably, so that an answer is an
/// acknowledgement a client may count on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailDeliver {
    pub sg: String,
    pub db: String,
    pub mailbox: String,
    /// The sender (`mail-client@localhost` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default)]
    pub subject: String,
    /// The body, stored as its UTF-8 bytes.
    pub body: String,
}

/// The answer to [`MailDeliver`]: the message is durable on `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailDelivered {
    pub storage_group: String,
    pub database: String,
    pub mailbox: String,
    pub message_id: u64,
    /// The name of the node that committed it.
    pub node: String,
    /// BLAKE3 of the stored body, hex: what [`MailCheck`] compares.
    pub body_hash: String,
}

/// One message a client was told is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailRef {
    pub mailbox: String,
    pub message_id: u64,
    /// BLAKE3 of the body, hex.
    pub body_hash: String,
}

/// `POST /v1/mail/check`: which of these messages are not in the database byte for byte.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailCheck {
    pub sg: String,
    pub db: String,
    pub messages: Vec<MailRef>,
}

/// The answer to [`MailCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailChecked {
    pub checked: u64,
    /// The messages that are absent, or present with another body, in the order asked.
    pub missing: Vec<MailRef>,
    /// The name of the node that answered.
    pub node: String,
}
