//! The manifest of a backup set: everything needed to verify and restore it.
//!
//! A manifest is stored as two lines: the manifest as compact JSON, then the BLAKE3 hash of
//! that line in hex. The hash lets `verify` tell a damaged manifest from a damaged chunk.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use vss::BackupType;

use super::crypto::Crypto;
use super::error::{RepoError, Result};

/// The manifest format this build writes (it reads this and format 1). Format 2 identifies
/// a file by a hash over its chunk list ([`FileEntry::chunks_blake3`]); format 1 by a hash of
/// its whole content ([`FileEntry::blake3`]).
pub const MANIFEST_FORMAT: u32 = 2;

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
    /// BLAKE3 of the whole content, hex: the identity of files in sets written before
    /// [`FileEntry::chunks_blake3`] (proving it took a second hash over every byte, during the
    /// copy and again on every read). Empty, and left out, in newer sets.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub blake3: String,
    pub chunks: Vec<ChunkRef>,
    /// The file's identity in newer sets: [`ChunkListHasher`] over its size and its chunks'
    /// ids and lengths, hex. Every chunk is checked against its id when it is read, so a read
    /// whose chunk list matches this yields exactly the file that was copied, bit for bit,
    /// with each byte hashed once (when its chunk was). Absent in older sets, so that their
    /// manifests re-encode byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_blake3: Option<String>,
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

    /// Checks the chunk list against the file's identity, before anything is read. Returns
    /// whether a reader must also hash the whole content against [`FileEntry::blake3`] (sets
    /// written before chunk-list identities, or a manifest naming both).
    pub fn check_chunk_list(&self) -> Result<bool> {
        let Some(expected) = &self.chunks_blake3 else {
            if self.blake3.is_empty() {
                return Err(RepoError::CorruptManifest {
                    set: self.path.clone(),
                    why: "the file has neither a content hash nor a chunk-list hash".into(),
                });
            }
            return Ok(true);
        };
        let mut h = ChunkListHasher::new();
        for c in &self.chunks {
            let id = blake3::Hash::from_hex(&c.hash).map_err(|_| RepoError::CorruptManifest {
                set: self.path.clone(),
                why: format!("chunk hash {:?} is not a BLAKE3 hash", c.hash),
            })?;
            h.push(&id, c.len);
        }
        let actual = h.finish(self.size);
        if actual != *expected {
            return Err(RepoError::FileHashMismatch {
                file: self.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        Ok(!self.blake3.is_empty())
    }

    /// Whether `data` is this file's content, with each byte hashed once: against the
    /// whole-content hash (older sets), else chunk by chunk against the chunk ids (named by
    /// `crypto`, the repository's).
    pub fn is_content(&self, crypto: &Crypto, data: &[u8]) -> bool {
        if data.len() as u64 != self.size {
            return false;
        }
        if !self.blake3.is_empty() {
            return blake3::hash(data).to_hex().as_str() == self.blake3;
        }
        let mut at = 0usize;
        for c in &self.chunks {
            let Some(piece) = data.get(at..at + c.len as usize) else { return false };
            if crypto.chunk_id(piece).to_hex().as_str() != c.hash {
                return false;
            }
            at += piece.len();
        }
        at == data.len()
    }

    /// Whether `self` and `other`, entries of sets of one repository, hold the same content:
    /// the same chunks (ids name content) in the same order. Holds across sets written before
    /// and after chunk-list identities, whose identities are not comparable.
    pub fn same_content(&self, other: &FileEntry) -> bool {
        self.size == other.size && self.chunks == other.chunks
    }
}

/// Computes a file's chunk-list identity ([`FileEntry::chunks_blake3`]) from its chunks in
/// order: BLAKE3 in key-derivation mode (never equal to a content hash) over each chunk's
/// 32-byte id and length, then the file's size and chunk count. It hashes 36 bytes per chunk
/// (per MiB copied) instead of every byte again.
pub struct ChunkListHasher {
    hasher: blake3::Hasher,
    count: u64,
}

impl Default for ChunkListHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkListHasher {
    const CONTEXT: &'static str = "Shadowcopy 2026-11-30 file identity: chunk ids and lengths";

    pub fn new() -> Self {
        Self { hasher: blake3::Hasher::new_derive_key(Self::CONTEXT), count: 0 }
    }

    /// Adds the next chunk.
    pub fn push(&mut self, id: &blake3::Hash, len: u32) {
        self.hasher.update(id.as_bytes());
        self.hasher.update(&len.to_le_bytes());
        self.count += 1;
    }

    /// The identity of a file of `size` bytes made of the chunks pushed, hex.
    pub fn finish(mut self, size: u64) -> String {
        self.hasher.update(&size.to_le_bytes());
        self.hasher.update(&self.count.to_le_bytes());
        self.hasher.finalize().to_hex().to_string()
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
        if m.format == 0 || m.format > MANIFEST_FORMAT {
            return Err(corrupt(&format!("manifest format {} is not supported", m.format)));
        }
        Ok(m)
    }
}
