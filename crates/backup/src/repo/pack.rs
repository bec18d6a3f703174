//! Pack files: chunks one after another, with an index beside each pack.
//!
//! One object per chunk would cost a store (an fsync, or a request) per megabyte; packs cost
//! one per pack. A pack is `packs/<uuid>.pack`; its index `packs/<uuid>.idx` lists every chunk
//! in it (id, offset, stored length, raw length, codec: see [`Codec`]) and ends with the BLAKE3 of
//! the index body, so a damaged index is detected rather than trusted. Both pass through the
//! repository's [`Crypto`]. A pack is built in memory and stored whole; its index is stored
//! only after the pack is: a pack without an index is an interrupted backup's leftover and is
//! never read.

use std::path::PathBuf;

use uuid::Uuid;

use super::backend::Backend;
use super::codec::{self, Codec};
use super::crypto::Crypto;
use super::error::{IoContext, RepoError, Result};

const IDX_MAGIC: &[u8; 8] = b"SCPKIDX1";
/// Bytes of one entry of a pack index.
pub const ENTRY_LEN: usize = 32 + 8 + 4 + 4 + 1;
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
    /// How the stored bytes are encoded (under the repository's [`Crypto`]).
    pub codec: Codec,
}

/// The key of a pack (`ext` = `pack`) or its index (`idx`).
pub fn pack_key(pack: Uuid, ext: &str) -> String {
    format!("packs/{pack}.{ext}")
}

/// A pack being filled by one backup.
pub struct PackWriter {
    pub id: Uuid,
    data: Vec<u8>,
    entries: Vec<(blake3::Hash, ChunkLoc)>,
}

impl PackWriter {
    /// Starts a new, empty pack.
    pub fn new(capacity: usize) -> Self {
        Self { id: Uuid::new_v4(), data: Vec::with_capacity(capacity), entries: Vec::new() }
    }

    /// Bytes in the pack so far.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Appends a chunk's stored bytes (already sealed by the repository's [`Crypto`]).
    pub fn append(
        &mut self,
        id: blake3::Hash,
        stored: &[u8],
        raw_len: u32,
        codec: Codec,
    ) -> ChunkLoc {
        let loc = ChunkLoc {
            pack: self.id,
            offset: self.data.len() as u64,
            stored_len: stored.len() as u32,
            raw_len,
            codec,
        };
        self.data.extend_from_slice(stored);
        self.entries.push((id, loc));
        loc
    }

    /// Stores the pack, then its index; returns the entries for the shared index.
    pub fn seal(
        self,
        backend: &dyn Backend,
        crypto: &Crypto,
    ) -> Result<Vec<(blake3::Hash, ChunkLoc)>> {
        let key = pack_key(self.id, "pack");
        backend.put(&key, &self.data).ctx("storing pack", backend.locate(&key))?;
        let idx = pack_key(self.id, "idx");
        let bytes = crypto.seal(encode_index(self.id, &self.entries));
        backend.put(&idx, &bytes).ctx("storing pack index", backend.locate(&idx))?;
        Ok(self.entries)
    }
}

/// Reads and checks the index `name` (`<uuid>.idx`) of a pack.
pub fn load_index(
    backend: &dyn Backend,
    crypto: &Crypto,
    name: &str,
) -> Result<(Uuid, Vec<(blake3::Hash, ChunkLoc)>)> {
    let key = format!("packs/{name}");
    let path = backend.locate(&key);
    let stored = backend.get(&key).ctx("reading", &path)?;
    let bytes = crypto.open(&key, stored)?;
    decode_index(&path, &bytes)
}

/// Encodes a pack index.
pub fn encode_index(pack: Uuid, entries: &[(blake3::Hash, ChunkLoc)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 16 + 8 + entries.len() * ENTRY_LEN + 32);
    out.extend_from_slice(IDX_MAGIC);
    out.extend_from_slice(pack.as_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (hash, loc) in entries {
        out.extend_from_slice(hash.as_bytes());
        encode_loc_in_pack(&mut out, loc);
    }
    append_checksum(&mut out);
    out
}

/// A chunk's place inside its pack as both index forms store it (the per-pack `.idx` and the
/// combined `index/chunks`): offset, stored and raw lengths, codec.
pub(super) fn encode_loc_in_pack(out: &mut Vec<u8>, loc: &ChunkLoc) {
    out.extend_from_slice(&loc.offset.to_le_bytes());
    out.extend_from_slice(&loc.stored_len.to_le_bytes());
    out.extend_from_slice(&loc.raw_len.to_le_bytes());
    out.push(loc.codec.to_byte());
}

/// Ends an index file with the BLAKE3 of everything before it.
pub(super) fn append_checksum(out: &mut Vec<u8>) {
    let sum = blake3::hash(out);
    out.extend_from_slice(sum.as_bytes());
}

/// Decodes and checks a pack index.
pub fn decode_index(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(Uuid, Vec<(blake3::Hash, ChunkLoc)>)> {
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
            let codec = Codec::from_byte(e[48]).ok_or_else(|| {
                corrupt(&format!("chunk {} names codec {}, which this build lacks", hash, e[48]))
            })?;
            let loc = ChunkLoc {
                pack,
                offset: u64::from_le_bytes(array(&e[32..40])),
                stored_len: u32::from_le_bytes(array(&e[40..44])),
                raw_len: u32::from_le_bytes(array(&e[44..48])),
                codec,
            };
            Ok((hash, loc))
        })
        .collect::<Result<_>>()?;
    Ok((pack, entries))
}

/// Reads one chunk, opens and decompresses it and checks it against its id. `file` names the
/// backed-up file the chunk belongs to, for the error message.
pub fn read_chunk(
    backend: &dyn Backend,
    crypto: &Crypto,
    id: &blake3::Hash,
    loc: &ChunkLoc,
    file: &str,
) -> Result<Vec<u8>> {
    let mut chunks = read_run(backend, crypto, &[(*id, *loc)], file)?;
    Ok(chunks.pop().unwrap_or_default())
}

/// Whether `next` lies right after `prev` in the same pack, so that one ranged read of the
/// pack can fetch both.
pub fn follows(prev: &ChunkLoc, next: &ChunkLoc) -> bool {
    prev.pack == next.pack && prev.offset + u64::from(prev.stored_len) == next.offset
}

/// Reads a run of chunks that lie back to back in one pack (see [`follows`]) with one ranged
/// read, then opens, decompresses and checks each against its id, in order. On an object
/// store a request's round trip costs far more than its bytes, so a restore fetches a file's
/// consecutive chunks together, as restic fetches a pack's blobs together. `file` names the
/// backed-up file the chunks belong to, for the error message.
pub fn read_run(
    backend: &dyn Backend,
    crypto: &Crypto,
    run: &[(blake3::Hash, ChunkLoc)],
    file: &str,
) -> Result<Vec<Vec<u8>>> {
    let Some((first_id, first)) = run.first() else { return Ok(Vec::new()) };
    let key = pack_key(first.pack, "pack");
    let path: PathBuf = backend.locate(&key);
    let corrupt = |id: &blake3::Hash, why: String| RepoError::CorruptChunk {
        hash: id.to_hex().to_string(),
        file: file.into(),
        pack: path.display().to_string(),
        why,
    };
    for (i, (id, loc)) in run.iter().enumerate() {
        if loc.raw_len > MAX_CHUNK || loc.stored_len > MAX_CHUNK {
            return Err(corrupt(
                id,
                format!(
                    "implausible length ({} stored, {} raw) in the pack index",
                    loc.stored_len, loc.raw_len
                ),
            ));
        }
        if i > 0 && !follows(&run[i - 1].1, loc) {
            return Err(corrupt(id, "does not follow the previous chunk of its run".into()));
        }
    }
    let total: usize = run.iter().map(|(_, l)| l.stored_len as usize).sum();
    let mut fetched = backend
        .get_range(&key, first.offset, total)
        .map_err(|e| corrupt(first_id, format!("read failed: {e}")))?;
    if fetched.len() != total {
        return Err(corrupt(
            first_id,
            format!("read {} bytes of the pack where its index says {total}", fetched.len()),
        ));
    }
    // Cut from the back, so that each chunk's bytes move out without copying the rest; then
    // check them in file order, so that an error names the first bad chunk.
    let mut pieces: Vec<Vec<u8>> = run
        .iter()
        .rev()
        .map(|(_, loc)| fetched.split_off(fetched.len() - loc.stored_len as usize))
        .collect();
    pieces.reverse();
    let mut out = Vec::with_capacity(run.len());
    for ((id, loc), stored) in run.iter().zip(pieces) {
        let object = format!("chunk {} in {}", id.to_hex(), path.display());
        let stored = crypto.open(&object, stored)?;
        let raw = codec::decompress(loc.codec, stored, loc.raw_len as usize)
            .map_err(|e| corrupt(id, format!("does not decompress ({}): {e}", loc.codec.name())))?;
        if raw.len() != loc.raw_len as usize {
            return Err(corrupt(id, format!("{} bytes, expected {}", raw.len(), loc.raw_len)));
        }
        if crypto.chunk_id(&raw) != *id {
            return Err(corrupt(id, "content does not match its hash".into()));
        }
        out.push(raw);
    }
    Ok(out)
}

/// The first `N` bytes of `b` (which the caller has cut to at least that length).
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}
