//! The replication protocol: HTTP/1.1 over the DAG's mutual TLS, between a passive copy's node
//! (the client) and the active copy's node (the server).
//!
//! Why HTTP: the operations are a handful of request/response exchanges and two byte streams
//! (a closed log generation, a seed file); hyper frames them, and the TLS layer authenticates
//! both ends, so nothing here is hand-made framing. Every body that is not raw file bytes is
//! one of the JSON types below, shared by both ends.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /repl/v1/stream/{sg}` | [`StreamInfo`]: the active's log stream, its last closed generation |
//! | `GET /repl/v1/log/{sg}/{generation}` | the closed generation's file, byte for byte |
//! | `GET /repl/v1/tail/{sg}/{generation}?from=OFF&wait_ms=N` | block mode: the bytes of the *current* generation's file from `OFF` to its durable end (waiting up to `N` ms when there are none), header `x-repl-durable-end` (the durable end, an LSN as a decimal u64) and `x-repl-closed` (`1`: the generation is closed and `OFF` is its file's end; until then a closed generation's remaining bytes come from its closed file, so a copy never acknowledges the next generation without holding all of this one); `from` acknowledges that the caller holds the bytes before it durably (synchronous copies) |
//! | `POST /repl/v1/seed/{sg}` | [`SeedManifest`]: a seed held open on a snapshot of the active |
//! | `GET /repl/v1/seeds/{id}/{index}` | database file `index` of the seed, from the snapshot |
//! | `DELETE /repl/v1/seeds/{id}` | ends the seed (releases its snapshot) |
//! | `POST /repl/v1/surrogate/{sg}/begin` [`SurrogateBegin`] | [`SurrogateClaim`]: backup in progress on the active, for a passive's job |
//! | `POST /repl/v1/surrogate/{sg}/renew` [`SurrogateJob`] | [`SurrogateClaim`]: the claim's lease extended |
//! | `POST /repl/v1/surrogate/{sg}/complete` [`SurrogateComplete`] | [`SurrogateStamp`]: the header stamped as a logged change, and the log holding it closed |
//! | `POST /repl/v1/surrogate/{sg}/abort` [`SurrogateJob`] | [`SurrogateClaim`]: the claim released, nothing stamped or truncated |
//!
//! An error is an HTTP status with a [`ReplErrorBody`].

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The active copy's log stream as its node sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub sg: String,
    /// The log file prefix (`E00`).
    pub prefix: String,
    /// The stream's signature, hex: a copy of another stream must not take these logs.
    pub signature: String,
    /// The last closed generation (the current log's generation minus one).
    pub produced: u32,
    /// The oldest generation still on the active's disk (truncation removed older ones).
    pub oldest: u32,
    /// The node answering: the active.
    pub node: String,
    /// The epoch at which the answering node is active (0: unknown). A copy told of a newer
    /// epoch refuses an active of an older one (a deposed active still running).
    #[serde(default)]
    pub epoch: u64,
}

/// Header of a tail answer: the durable end of the log (an LSN, decimal).
pub const TAIL_DURABLE_END: &str = "x-repl-durable-end";
/// Header of a tail answer: `1` when the generation asked for is closed.
pub const TAIL_CLOSED: &str = "x-repl-closed";

/// A piece of the active's current generation (block mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailChunk {
    /// The file's bytes from the offset asked for (the log header at offset 0).
    pub bytes: Vec<u8>,
    /// The active's durable end ([`ese::Lsn`] as u64).
    pub durable_end: u64,
    /// The generation asked for is closed and the caller holds all of it.
    pub closed: bool,
}

pub fn tail_path(sg: &str, generation: u32, from: u64, wait_ms: u64) -> String {
    format!("/repl/v1/tail/{sg}/{generation}?from={from}&wait_ms={wait_ms}")
}

/// One database file of a seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedFile {
    /// The database's name in the storage group.
    pub name: String,
    /// Bytes.
    pub size: u64,
}

/// A seed the active holds open on a snapshot until the copy ends it (or it times out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedManifest {
    pub id: Uuid,
    pub sg: String,
    pub prefix: String,
    /// The stream's signature, hex.
    pub signature: String,
    /// The generation the snapshot's freeze closed: replay starts from the databases' required
    /// range, within it.
    pub generation: u32,
    /// Log generation size and database page size of the storage group.
    pub log_file_size: u32,
    pub page_size: u32,
    pub databases: Vec<SeedFile>,
    /// The snapshot set the files are read from.
    pub snapshot_set: Uuid,
}

/// A passive node asks the active's store to hold its storage group *backup in progress* for
/// a backup the passive takes of its copy (the surrogate backup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurrogateBegin {
    /// The passive's job: the key of the trail on both nodes.
    pub job: Uuid,
    pub backup_type: vss::BackupType,
    /// The databases the backup covers (all of the storage group's when empty).
    pub databases: Vec<String>,
}

/// One surrogate job of a storage group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurrogateJob {
    pub job: Uuid,
}

/// The active's claim for a surrogate job: it lapses unless renewed within `lease_ms`, so that
/// a passive that died never leaves the storage group backup-in-progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurrogateClaim {
    pub job: Uuid,
    /// The active node.
    pub node: String,
    pub lease_ms: u64,
}

/// The passive reports the end of its backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurrogateComplete {
    pub job: Uuid,
    /// Whether every selected component was backed up: only then is anything stamped.
    pub succeeded: bool,
    /// The log generations the passive's backup copied.
    pub gen_low: u32,
    pub gen_high: u32,
    /// Whether every database of the storage group was in the backup (logs are truncated only
    /// then).
    pub every_database: bool,
}

/// What the active recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurrogateStamp {
    /// The closed generation holding the header update: the passive's header shows the
    /// backup once it replayed it. 0 when nothing was stamped (a failed backup).
    pub generation: u32,
    /// When the header was stamped (seconds since the Unix epoch).
    pub time: u64,
}

pub fn surrogate_path(sg: &str, step: &str) -> String {
    format!("/repl/v1/surrogate/{sg}/{step}")
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplErrorBody {
    pub error: String,
}

pub fn stream_path(sg: &str) -> String {
    format!("/repl/v1/stream/{sg}")
}

pub fn log_path(sg: &str, generation: u32) -> String {
    format!("/repl/v1/log/{sg}/{generation}")
}

pub fn seed_path(sg: &str) -> String {
    format!("/repl/v1/seed/{sg}")
}

pub fn seed_file_path(id: Uuid, index: usize) -> String {
    format!("/repl/v1/seeds/{id}/{index}")
}

pub fn seed_end_path(id: Uuid) -> String {
    format!("/repl/v1/seeds/{id}")
}

/// Hex of a log signature.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
