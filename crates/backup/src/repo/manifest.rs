//! The manifest of a backup set: everything needed to verify and restore it.
//!
//! A manifest is stored as two lines: the manifest as compact JSON, then the BLAKE3 hash of
//! that line in hex. The hash lets `verify` tell a damaged manifest from a damaged chunk.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vss::BackupType;

use super::error::{RepoError, Result};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// What a backed-up file is to its writer. Stored under the same names the manifests have
/// always used (`database`, `log`, `checkpoint`), so repositories written before the enum read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileRole {
    /// A database file: restored into place, its pages checked.
    Database,
    /// A closed log generation: replayed by recovery.
    Log,
    /// The checkpoint file: kept with the logs, never restored over a live one.
    Checkpoint,
}

impl FileRole {
    /// The name the manifest stores.
    pub fn as_str(self) -> &'static str {
        match self {
            FileRole::Database => "database",
            FileRole::Log => "log",
            FileRole::Checkpoint => "checkpoint",
        }
    }
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backed-up file: its logical path, size, hash and the chunks that hold its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Where the file came from: `<volume label>/<path on the volume>`.
    pub path: String,
    /// What the file is to its writer.
    pub role: FileRole,
    /// The component (logical path) the file belongs to.
    pub component: String,
    pub size: u64,
    /// BLAKE3 of the whole content, hex.
    pub blake3: String,
    pub chunks: Vec<ChunkRef>,
    /// Permission bits the file had in the snapshot, so that a restore gives it back the
    /// same access. Absent in manifests written before modes were recorded (a restore then
    /// uses [`volume::fs::DEFAULT_FILE_MODE`]), and left out when unknown so that those
    /// manifests re-encode byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl FileEntry {
    /// The permission bits a restore gives the file: the recorded ones, else owner-only.
    pub fn restore_mode(&self) -> u32 {
        self.mode.unwrap_or(volume::fs::DEFAULT_FILE_MODE) & 0o7777
    }
}

/// One chunk of a file's content, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's uncompressed content, hex.
    pub hash: String,
    /// Uncompressed length.
    pub len: u32,
}

/// A log generation range, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRange {
    pub low: u32,
    pub high: u32,
}

/// The manifest of one backup set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupSet {
    pub format: u32,
    pub id: Uuid,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    pub node: String,
    /// Stored as `full`, `incremental`, `differential` or `copy` (a full that lost its
    /// storage group mid-job is recorded as a copy: it must never be a base).
    pub backup_type: BackupType,
    pub storage_group: String,
    /// The job's writer instance id: the key of its event trail.
    pub job_id: Option<Uuid>,
    /// The set this one builds on (the full of an incremental or differential chain).
    pub base_set: Option<Uuid>,
    /// Log generations the set holds.
    pub log_range: Option<LogRange>,
    /// The writer's metadata document as handed out for this job.
    pub writer_metadata: serde_json::Value,
    /// The backup components document of the job.
    pub components: serde_json::Value,
    /// The database headers as copied.
    pub database_headers: serde_json::Value,
    pub files: Vec<FileEntry>,
}

impl BackupSet {
    /// Total bytes of the files in the set.
    pub fn data_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Encodes the manifest as stored: JSON line + hash line.
    #[allow(clippy::expect_used)] // Plain fields and JSON values with string keys: cannot fail.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a manifest always serialises");
        let hash = blake3::hash(&json).to_hex();
        let mut out = json;
        out.push(b'\n');
        out.extend_from_slice(hash.as_bytes());
        out.push(b'\n');
        out
    }

    /// Decodes a stored manifest, checking its hash and format.
    pub fn decode(set: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |why: &str| RepoError::CorruptManifest { set: set.into(), why: why.into() };
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
        let mut lines = text.lines();
        let json = lines.next().ok_or_else(|| corrupt("empty file"))?;
        let hash = lines.next().ok_or_else(|| corrupt("hash line missing (truncated file?)"))?;
        if blake3::hash(json.as_bytes()).to_hex().as_str() != hash.trim() {
            return Err(corrupt("content does not match its hash"));
        }
        let m: BackupSet =
            serde_json::from_str(json).map_err(|e| corrupt(&format!("invalid JSON: {e}")))?;
        if m.id.to_string() != set {
            return Err(corrupt(&format!(
                "it describes set {}, not the set its file name says",
                m.id
            )));
        }
        if m.format != MANIFEST_FORMAT {
            return Err(corrupt(&format!("manifest format {} is not supported", m.format)));
        }
        Ok(m)
    }
}
