//! Pack files: chunks appended one after another, with a binary index beside each pack.
//!
//! One file per chunk would cost an fsync and a directory entry per megabyte; packs cost one
//! fsync per pack. A pack is `packs/<uuid>.pack`; its index `packs/<uuid>.idx` lists every
//! chunk in it (hash, offset, stored length, raw length, compressed or not) and ends with the
//! BLAKE3 of the index body, so a damaged index is detected rather than trusted. The index is
//! written (atomically) only after the pack is synced: a pack without an index is an
//! interrupted backup's leftover and is never read.

use std::path::{Path, PathBuf};

use uuid::Uuid;
use volume::fs::{FileRef, FileSystem, OpenMode, write_atomic};

use super::error::{IoContext, RepoError, Result};

const IDX_MAGIC: &[u8; 8] = b"SCPKIDX1";
const ENTRY_LEN: usize = 32 + 8 + 4 + 4 + 1;
/// No chunk is larger than this (chunk sizes are at most a few MiB); a bigger length in an
/// index is damage, not data, and is never allocated.
pub const MAX_CHUNK: u32 = 64 << 20;

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLoc {
    pub pack: Uuid,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub compressed: bool,
}

/// The path of a pack or its index inside the repository root.
pub fn pack_path(root: &Path, pack: Uuid, ext: &str) -> PathBuf {
    root.join("packs").join(format!("{pack}.{ext}"))
}

/// A pack being written by one backup.
pub struct PackWriter {
    pub id: Uuid,
    file: FileRef,
    path: PathBuf,
    pub len: u64,
    entries: Vec<(blake3::Hash, ChunkLoc)>,
}

impl PackWriter {
    /// Starts a new, empty pack.
    pub fn create(fs: &dyn FileSystem, root: &Path) -> Result<Self> {
        let id = Uuid::new_v4();
        let path = pack_path(root, id, "pack");
        let file = fs.open(&path, OpenMode::CreateNew).ctx("creating pack", &path)?;
        Ok(Self { id, file, path, len: 0, entries: Vec::new() })
    }

    /// Appends a chunk's stored bytes.
    pub fn append(
        &mut self,
        hash: blake3::Hash,
        stored: &[u8],
        raw_len: u32,
        compressed: bool,
    ) -> Result<ChunkLoc> {
        self.file.write_at(stored, self.len).ctx("writing pack", &self.path)?;
        let loc = ChunkLoc {
            pack: self.id,
            offset: self.len,
            stored_len: stored.len() as u32,
            raw_len,
            compressed,
        };
        self.len += stored.len() as u64;
        self.entries.push((hash, loc));
        Ok(loc)
    }

    /// Makes the pack durable and writes its index; returns the entries for the shared index.
    pub fn seal(self, fs: &dyn FileSystem, root: &Path) -> Result<Vec<(blake3::Hash, ChunkLoc)>> {
        self.file.sync().ctx("syncing pack", &self.path)?;
        let idx_path = pack_path(root, self.id, "idx");
        write_atomic(fs, &idx_path, &encode_index(self.id, &self.entries))
            .ctx("writing pack index", &idx_path)?;
        Ok(self.entries)
    }

    /// Removes an unsealed pack (a backup that failed before publishing).
    pub fn discard(self, fs: &dyn FileSystem) {
        drop(self.file);
        // Left behind, it is never read (it has no index) and only takes space: log it.
        if let Err(e) = fs.remove_file(&self.path) {
            tracing::warn!(pack = %self.path.display(), error = %e, "removing an unsealed pack failed");
        }
    }
}

/// Encodes a pack index.
pub fn encode_index(pack: Uuid, entries: &[(blake3::Hash, ChunkLoc)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 16 + 8 + entries.len() * ENTRY_LEN + 32);
    out.extend_from_slice(IDX_MAGIC);
    out.extend_from_slice(pack.as_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (hash, loc) in entries {
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(&loc.offset.to_le_bytes());
        out.extend_from_slice(&loc.stored_len.to_le_bytes());
        out.extend_from_slice(&loc.raw_len.to_le_bytes());
        out.push(loc.compressed as u8);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Decodes and checks a pack index.
pub fn decode_index(path: &Path, bytes: &[u8]) -> Result<(Uuid, Vec<(blake3::Hash, ChunkLoc)>)> {
    let corrupt = |why: &str| RepoError::CorruptIndex { path: path.into(), why: why.into() };
    if bytes.len() < 8 + 16 + 8 + 32 || &bytes[..8] != IDX_MAGIC {
        return Err(corrupt("not a pack index (bad magic or too short)"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let pack = Uuid::from_bytes(array(&body[8..24]));
    let count = u64::from_le_bytes(array(&body[24..32])) as usize;
    let rest = &body[32..];
    if count.checked_mul(ENTRY_LEN) != Some(rest.len()) {
        return Err(corrupt("entry count does not match the length"));
    }
    let entries = rest
        .chunks_exact(ENTRY_LEN)
        .map(|e| {
            let hash = blake3::Hash::from_bytes(array(&e[..32]));
            let loc = ChunkLoc {
                pack,
                offset: u64::from_le_bytes(array(&e[32..40])),
                stored_len: u32::from_le_bytes(array(&e[40..44])),
                raw_len: u32::from_le_bytes(array(&e[44..48])),
                compressed: e[48] != 0,
            };
            (hash, loc)
        })
        .collect();
    Ok((pack, entries))
}

/// Reads one chunk, decompresses it and checks it against its hash. `file` names the backed-up
/// file the chunk belongs to, for the error message.
pub fn read_chunk(
    fs: &dyn FileSystem,
    root: &Path,
    hash: &blake3::Hash,
    loc: &ChunkLoc,
    file: &str,
) -> Result<Vec<u8>> {
    let path = pack_path(root, loc.pack, "pack");
    let corrupt = |why: String| RepoError::CorruptChunk {
        hash: hash.to_hex().to_string(),
        file: file.into(),
        pack: path.display().to_string(),
        why,
    };
    if loc.raw_len > MAX_CHUNK || loc.stored_len > MAX_CHUNK {
        return Err(corrupt(format!(
            "implausible length ({} stored, {} raw) in the pack index",
            loc.stored_len, loc.raw_len
        )));
    }
    let f = fs.open(&path, OpenMode::Read).ctx("opening pack", &path)?;
    let mut stored = vec![0u8; loc.stored_len as usize];
    f.read_exact_at(&mut stored, loc.offset).map_err(|e| corrupt(format!("read failed: {e}")))?;
    let raw = if loc.compressed {
        decompress(&stored, loc.raw_len as usize)
            .map_err(|e| corrupt(format!("does not decompress: {e}")))?
    } else {
        stored
    };
    if raw.len() != loc.raw_len as usize {
        return Err(corrupt(format!("{} bytes, expected {}", raw.len(), loc.raw_len)));
    }
    if blake3::hash(&raw) != *hash {
        return Err(corrupt("content does not match its hash".into()));
    }
    Ok(raw)
}

/// Decompresses with this thread's reused context (making one per chunk is measurable).
fn decompress(stored: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let mut d = match c.take() {
            Some(d) => d,
            None => zstd::bulk::Decompressor::new()?,
        };
        let out = d.decompress(stored, capacity);
        *c = Some(d);
        out
    })
}

/// The first `N` bytes of `b` (which the caller has cut to at least that length).
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}
