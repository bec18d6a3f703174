//! The file form of the chunk index (`index/chunks`): a header (magic, repository id, pack
//! and entry counts), the pack table, every entry sorted by id, and the BLAKE3 of all that.
//!
//! Reading decodes the file as it arrives, in blocks of whole entries, straight into the
//! index's table, and hashes each block as it passes: at 10 million chunks the file is over
//! 500 MB, and reading it whole first (then decoding from that copy) cost a second buffer as
//! large as the table itself, its page faults and a pass over it, for nothing the checksum
//! needs. Nothing read is trusted before the checksum at the end matches: a mismatch, or any
//! entry that fails its checks on the way, fails the whole read.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;

use uuid::Uuid;

use super::super::codec::Codec;
use super::super::error::{RepoError, Result};
use super::super::pack::{ChunkLoc, append_checksum, encode_loc_in_pack};
use super::{ChunkIndex, Entry};

/// The magic of an index file (format 1 of the file).
const FILE_MAGIC: &[u8; 8] = b"SCCHIDX1";
/// One entry in the file: id, pack number, offset, stored length, raw length, codec.
const FILE_ENTRY_LEN: usize = 32 + 4 + 8 + 4 + 4 + 1;
/// The header: magic, repository id, pack count, entry count.
const HEADER_LEN: usize = 8 + 16 + 8 + 8;
/// The checksum at the end.
const SUM_LEN: usize = 32;
/// Entries read (and hashed) at a time: 3.4 MB, large enough that a read's and a hash
/// update's fixed costs vanish, small enough to stay in the caches between the two.
const BLOCK_ENTRIES: usize = 1 << 16;

impl ChunkIndex {
    /// The file form: every entry of every loaded pack, sorted by id, with the packs it
    /// covers, ending with the BLAKE3 of what precedes it. `repo` is the repository's id, so
    /// that an index file copied from another repository is refused, not trusted.
    pub fn encode(&self, repo: &Uuid) -> Vec<u8> {
        let live: Vec<Uuid> = self.loaded_packs().collect();
        let renumber: HashMap<Uuid, u32> =
            live.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        let entries = self.entries();
        let mut out =
            Vec::with_capacity(HEADER_LEN + live.len() * 16 + entries * FILE_ENTRY_LEN + SUM_LEN);
        out.extend_from_slice(FILE_MAGIC);
        out.extend_from_slice(repo.as_bytes());
        out.extend_from_slice(&(live.len() as u64).to_le_bytes());
        out.extend_from_slice(&(entries as u64).to_le_bytes());
        for p in &live {
            out.extend_from_slice(p.as_bytes());
        }
        for e in self.in_order() {
            let loc = self.unpack_loc(e);
            for w in &e.key {
                out.extend_from_slice(&w.to_be_bytes());
            }
            // Every entry's pack is loaded (removals drop entries), so it has a number.
            out.extend_from_slice(&renumber.get(&loc.pack).copied().unwrap_or(0).to_le_bytes());
            encode_loc_in_pack(&mut out, &loc);
        }
        append_checksum(&mut out);
        out
    }

    /// Reads the file form back from memory (see [`ChunkIndex::read_from`]).
    pub fn decode(path: &Path, repo: &Uuid, bytes: &[u8]) -> Result<Self> {
        Self::read_from(path, repo, bytes.len() as u64, &mut &bytes[..])
    }

    /// Reads the file form, `len` bytes long, from `reader`, checking everything
    /// [`ChunkIndex::encode`] promises: the checksum, the repository, the lengths, pack
    /// numbers, codecs and the order (a lookup's binary search relies on it). `path` names the
    /// file in errors.
    pub fn read_from(path: &Path, repo: &Uuid, len: u64, reader: &mut dyn Read) -> Result<Self> {
        let corrupt = |why: String| RepoError::CorruptIndex { path: path.into(), why };
        let mut fill = |buf: &mut [u8]| {
            reader.read_exact(buf).map_err(|source| match source.kind() {
                io::ErrorKind::UnexpectedEof => corrupt("shorter than its length".into()),
                _ => RepoError::Io { op: "reading", path: path.into(), source },
            })
        };
        if len < (HEADER_LEN + SUM_LEN) as u64 {
            return Err(corrupt("not a chunk index (bad magic or too short)".into()));
        }
        let mut hasher = blake3::Hasher::new();
        let mut header = [0u8; HEADER_LEN];
        fill(&mut header)?;
        hasher.update(&header);
        if &header[..8] != FILE_MAGIC {
            return Err(corrupt("not a chunk index (bad magic or too short)".into()));
        }
        if &header[8..24] != repo.as_bytes() {
            return Err(corrupt("written for another repository".into()));
        }
        let packs = u64::from_le_bytes(array(&header[24..32]));
        let count = u64::from_le_bytes(array(&header[32..40]));
        // Checked against the length before anything is allocated from the counts.
        let expected = packs
            .checked_mul(16)
            .and_then(|p| count.checked_mul(FILE_ENTRY_LEN as u64)?.checked_add(p))
            .and_then(|b| b.checked_add((HEADER_LEN + SUM_LEN) as u64));
        if expected != Some(len) || packs > u64::from(u32::MAX) {
            return Err(corrupt("pack and entry counts do not match the length".into()));
        }
        let (packs, count) = (packs as usize, count as usize);

        let mut index = ChunkIndex::new();
        let mut table = vec![0u8; packs * 16];
        fill(&mut table)?;
        hasher.update(&table);
        for p in table.chunks_exact(16) {
            let id = Uuid::from_bytes(array(p));
            if index.numbers.contains_key(&id) {
                return Err(corrupt(format!("pack {id} is listed twice")));
            }
            let n = index.number(id);
            index.loaded[n as usize] = true;
        }

        index.base.reserve_exact(count);
        let mut block = vec![0u8; BLOCK_ENTRIES.min(count) * FILE_ENTRY_LEN];
        let mut last = [0u64; 4];
        let mut left = count;
        while left > 0 {
            let n = left.min(BLOCK_ENTRIES);
            let bytes = &mut block[..n * FILE_ENTRY_LEN];
            fill(bytes)?;
            hasher.update(bytes);
            for e in bytes.chunks_exact(FILE_ENTRY_LEN) {
                let entry = index.decode_entry(e).map_err(&corrupt)?;
                if entry.key < last {
                    return Err(corrupt("entries are not in order".into()));
                }
                last = entry.key;
                index.base.push(entry);
            }
            left -= n;
        }
        let mut sum = [0u8; SUM_LEN];
        fill(&mut sum)?;
        if hasher.finalize().as_bytes() != &sum {
            return Err(corrupt("checksum mismatch".into()));
        }
        index.rebuild_fanout();
        Ok(index)
    }

    /// One entry of the file, its pack numbered by the file's table (which is this index's
    /// numbering: [`ChunkIndex::read_from`] numbers the table's packs in order). The error is
    /// why it is refused.
    fn decode_entry(&mut self, e: &[u8]) -> std::result::Result<Entry, String> {
        let word = |i: usize| u64::from_be_bytes(array(&e[i * 8..i * 8 + 8]));
        let key = [word(0), word(1), word(2), word(3)];
        let pack = u32::from_le_bytes(array(&e[32..36]));
        let Some(&pack_id) = self.packs.get(pack as usize) else {
            let hash = super::hash_of(&key);
            return Err(format!("chunk {hash} names pack number {pack} of {}", self.packs.len()));
        };
        let Some(codec) = Codec::from_byte(e[52]) else {
            let hash = super::hash_of(&key);
            return Err(format!("chunk {hash} names codec {}, which this build lacks", e[52]));
        };
        let loc = ChunkLoc {
            pack: pack_id,
            offset: u64::from_le_bytes(array(&e[36..44])),
            stored_len: u32::from_le_bytes(array(&e[44..48])),
            raw_len: u32::from_le_bytes(array(&e[48..52])),
            codec,
        };
        let mut entry = self.pack_with(pack, &loc);
        entry.key = key;
        Ok(entry)
    }
}

/// The first `N` bytes of `b` (which the caller has cut to at least that length).
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

#[cfg(test)]
mod tests {
    use super::super::ChunkIndexBuilder;
    use super::*;

    /// An index of `packs` packs of `per` chunks each (three of them at odd locations).
    fn sample(packs: u64, per: u64) -> ChunkIndex {
        let mut b = ChunkIndexBuilder::with_capacity((packs * per) as usize);
        for p in 0..packs {
            let pack = Uuid::from_u128(u128::from(p) + 1);
            let entries: Vec<(blake3::Hash, ChunkLoc)> = (0..per)
                .map(|i| {
                    let n = p * per + i;
                    let loc = ChunkLoc {
                        pack,
                        offset: if n % 97 == 5 { u64::MAX - n } else { i * 4096 },
                        stored_len: 1000 + n as u32,
                        raw_len: 1 << 20,
                        codec: Codec::from_byte((n % 3) as u8).unwrap(),
                    };
                    (blake3::hash(&n.to_le_bytes()), loc)
                })
                .collect();
            b.add_pack(pack, &entries);
        }
        b.finish()
    }

    /// What a lookup of every chunk of `sample(packs, per)` (and of some absent) answers.
    fn answers(idx: &ChunkIndex, chunks: u64) -> Vec<Option<ChunkLoc>> {
        (0..chunks + 10).map(|n| idx.get(&blake3::hash(&n.to_le_bytes()))).collect()
    }

    /// A reader that hands out at most a few bytes a call, so that every read of the decoder
    /// is cut short at every possible point of an entry.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Re-seals `bytes` with a correct checksum after a change, as a careless (or hostile)
    /// writer would, so that the checks behind the checksum are reached.
    fn resum(mut bytes: Vec<u8>) -> Vec<u8> {
        bytes.truncate(bytes.len() - SUM_LEN);
        append_checksum(&mut bytes);
        bytes
    }

    fn read(repo: &Uuid, bytes: &[u8]) -> Result<ChunkIndex> {
        ChunkIndex::read_from(Path::new("x"), repo, bytes.len() as u64, &mut Dribble(bytes, 0))
    }

    #[test]
    fn a_file_read_in_pieces_answers_as_the_index_written() {
        let repo = Uuid::new_v4();
        // More than a block of entries, so that blocks follow one another.
        let (packs, per) = (70, 1000);
        let idx = sample(packs, per);
        let bytes = idx.encode(&repo);
        let back = read(&repo, &bytes).unwrap();
        assert_eq!(back.entries(), idx.entries());
        assert_eq!(answers(&back, packs * per), answers(&idx, packs * per));
        assert_eq!(back.loaded_packs().collect::<Vec<_>>(), idx.loaded_packs().collect::<Vec<_>>());
        let empty = ChunkIndex::new().encode(&repo);
        assert_eq!(read(&repo, &empty).unwrap().entries(), 0);
    }

    #[test]
    fn any_damaged_byte_is_refused() {
        let repo = Uuid::new_v4();
        let bytes = sample(3, 5).encode(&repo);
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(read(&repo, &bad).is_err(), "byte {at} of {} changed", bytes.len());
        }
        for len in 0..bytes.len() {
            let torn = &bytes[..len];
            assert!(read(&repo, torn).is_err(), "cut to {len}");
            // A length claimed longer than the reader gives is refused too.
            let short = ChunkIndex::read_from(
                Path::new("x"),
                &repo,
                bytes.len() as u64,
                &mut Dribble(torn, 0),
            );
            assert!(short.is_err(), "{len} of {} bytes given", bytes.len());
        }
    }

    #[test]
    fn what_the_checksum_covers_is_checked_too() {
        let repo = Uuid::new_v4();
        let bytes = sample(2, 4).encode(&repo);
        let entries = HEADER_LEN + 2 * 16;
        let why = |bytes: Vec<u8>| read(&repo, &resum(bytes)).unwrap_err().to_string();

        let mut swapped = bytes.clone();
        let (a, b) = swapped[entries..].split_at_mut(FILE_ENTRY_LEN);
        a.swap_with_slice(&mut b[..FILE_ENTRY_LEN]);
        assert!(why(swapped).contains("not in order"));

        let mut pack = bytes.clone();
        pack[entries + 32..entries + 36].copy_from_slice(&2u32.to_le_bytes());
        assert!(why(pack).contains("pack number 2 of 2"));

        let mut codec = bytes.clone();
        codec[entries + 52] = 9;
        assert!(why(codec).contains("codec 9"));

        let mut twice = bytes.clone();
        twice.copy_within(HEADER_LEN..HEADER_LEN + 16, HEADER_LEN + 16);
        assert!(why(twice).contains("listed twice"));

        // Counts far past the length are refused before anything is allocated from them.
        let mut huge = bytes.clone();
        huge[32..40].copy_from_slice(&(u64::MAX / 64).to_le_bytes());
        assert!(why(huge).contains("do not match the length"));
    }
}
