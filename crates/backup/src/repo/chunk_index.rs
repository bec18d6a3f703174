//! The in-memory chunk index: where every chunk of the repository is stored, in 48 bytes a
//! chunk.
//!
//! A `HashMap<blake3::Hash, ChunkLoc>` costs well over 64 bytes a chunk (a 32-byte key, a
//! 40-byte location with the pack's 16-byte id in it, and the table's slack), about a gigabyte
//! at 10 million chunks (10 TiB of 1 MiB chunks), which is the complaint restic's users have
//! about its index. Here the packs are numbered once in a small table and every chunk is one
//! fixed-size [`Entry`] (its id and a location packed into 16 bytes) in a sorted `Vec`: no
//! per-entry allocation, no slack once built. Chunk ids are uniformly distributed hashes, so a
//! fan-out table on the leading bits narrows a lookup to a few dozen entries before the binary
//! search.
//!
//! Chunks added since the index was built (the packs a backup of this process seals) go to a
//! second, small sorted `Vec`, merged into the large one when it passes a fraction of it, so
//! that an insert never moves the whole index and the merges cost O(1) amortised per chunk.
//!
//! Every entry of every loaded pack is kept, duplicates included (a chunk two concurrent
//! backups both stored, or one an interrupted prune left in two packs): a pack's entries can
//! then be dropped when a prune removes it, and the other copy is still there.
//!
//! The index also has a file form (see [`ChunkIndex::encode`]): the whole index, sorted, with
//! the packs it covers, which [`super::Repository`] stores as `index/chunks` so that opening a
//! repository of many packs reads one object instead of one `.idx` per pack.

mod file;

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use super::codec::Codec;
use super::pack::ChunkLoc;

/// Fewer entries than this in the recent part are never merged (merging a large index for a
/// handful of entries would be waste).
const RECENT_MIN: usize = 4096;
/// Bits of the packed location given to the high part of an offset, and to each length.
const OFFSET_HI_BITS: u32 = 8;
const LEN_BITS: u32 = 27;
const LEN_MASK: u64 = (1 << LEN_BITS) - 1;
/// The codec field's value meaning "the location is in the odd table" (codecs use 0..=2).
const ODD: u64 = 3;

/// One chunk: its id as four big-endian words (so that comparing words compares the bytes)
/// and its location packed into two words (see [`ChunkIndex::pack_loc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: [u64; 4],
    /// Pack number (high 32 bits) and the low 32 bits of the offset; for an odd location,
    /// its place in the odd table.
    a: u64,
    /// High offset bits, stored length, raw length, codec (or [`ODD`]).
    b: u64,
}

fn key_of(hash: &blake3::Hash) -> [u64; 4] {
    let b = hash.as_bytes();
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_be_bytes(w)
    };
    [word(0), word(1), word(2), word(3)]
}

fn hash_of(key: &[u64; 4]) -> blake3::Hash {
    let mut b = [0u8; 32];
    for (i, w) in key.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_be_bytes());
    }
    blake3::Hash::from_bytes(b)
}

/// The chunk index of a repository (see the module's documentation).
#[derive(Debug, Default)]
pub struct ChunkIndex {
    /// Pack ids by number; a removed pack keeps its number (nothing refers to it).
    packs: Vec<Uuid>,
    numbers: HashMap<Uuid, u32>,
    /// Whether each numbered pack's entries are in the index.
    loaded: Vec<bool>,
    /// The bulk of the entries, sorted by key.
    base: Vec<Entry>,
    /// `fanout[i]` is the first position in `base` whose key's leading `fanout_bits` bits are
    /// at least `i`.
    fanout: Vec<usize>,
    fanout_bits: u32,
    /// Entries added since `base` was last built, sorted by key.
    recent: Vec<Entry>,
    /// Locations too large to pack (only a damaged or hostile index has them: offsets past
    /// 1 TiB, lengths past 128 MiB, which the chunk reader then refuses with the exact
    /// figures), kept whole.
    odd: Vec<ChunkLoc>,
}

impl ChunkIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries held (a chunk stored twice counts twice).
    pub fn entries(&self) -> usize {
        self.base.len() + self.recent.len()
    }

    /// The packs whose entries are in the index.
    pub fn loaded_packs(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.packs.iter().zip(&self.loaded).filter(|(_, l)| **l).map(|(p, _)| *p)
    }

    /// Whether `pack`'s entries are in the index.
    pub fn has_pack(&self, pack: &Uuid) -> bool {
        self.numbers.get(pack).is_some_and(|&n| self.loaded[n as usize])
    }

    /// Where chunk `hash` is stored (any of its copies).
    pub fn get(&self, hash: &blake3::Hash) -> Option<ChunkLoc> {
        let key = key_of(hash);
        let (lo, hi) = self.bucket(&key);
        let slice = &self.base[lo..hi];
        let i = search(slice, &key, self.fanout_bits);
        if let Some(e) = slice.get(i).filter(|e| e.key == key) {
            return Some(self.unpack_loc(e));
        }
        let i = self.recent.partition_point(|e| e.key < key);
        self.recent.get(i).filter(|e| e.key == key).map(|e| self.unpack_loc(e))
    }

    /// Adds every entry of `pack` (its index as stored); a pack already loaded is left as it
    /// is.
    pub fn add_pack(&mut self, pack: Uuid, entries: &[(blake3::Hash, ChunkLoc)]) {
        if self.has_pack(&pack) {
            return;
        }
        let n = self.number(pack);
        self.loaded[n as usize] = true;
        let mut batch: Vec<Entry> = entries.iter().map(|(h, l)| self.entry(h, l)).collect();
        batch.sort_unstable_by_key(|e| e.key);
        if self.recent.len() + batch.len() <= RECENT_MIN.max(self.base.len() / 32) {
            merge_into(&mut self.recent, batch);
        } else {
            let mut recent = std::mem::take(&mut self.recent);
            merge_into(&mut recent, batch);
            merge_into(&mut self.base, recent);
            self.rebuild_fanout();
        }
    }

    /// Adds every pack of `other` that this index lacks, with one merge (what a load of many
    /// pack indexes at once does, built by a [`ChunkIndexBuilder`], rather than a merge per
    /// pack).
    pub fn absorb(&mut self, other: ChunkIndex) {
        if other.packs.is_empty() {
            // Nothing to add (an open that found every pack in the index file): the table is
            // left as it is, not merged, shrunk and fanned out again.
            return;
        }
        if self.packs.is_empty() {
            // Nothing here yet (an open): take the other index as it is.
            *self = other;
            self.merge_recent();
            return;
        }
        let map: Vec<Option<u32>> = other
            .packs
            .iter()
            .zip(&other.loaded)
            .map(|(p, l)| (*l && !self.has_pack(p)).then(|| self.number(*p)))
            .collect();
        for n in map.iter().flatten() {
            self.loaded[*n as usize] = true;
        }
        let mut batch = Vec::with_capacity(other.entries());
        for e in other.base.iter().chain(&other.recent) {
            let loc = other.unpack_loc(e);
            let Some(n) = other.numbers.get(&loc.pack).and_then(|&n| map[n as usize]) else {
                continue;
            };
            let mut packed = self.pack_with(n, &loc);
            packed.key = e.key;
            batch.push(packed);
        }
        batch.sort_unstable_by_key(|e| e.key);
        let mut recent = std::mem::take(&mut self.recent);
        merge_into(&mut recent, batch);
        merge_into(&mut self.base, recent);
        self.base.shrink_to_fit();
        self.rebuild_fanout();
    }

    /// Drops the entries of `packs` (removed from the repository).
    pub fn remove_packs(&mut self, packs: &[Uuid]) {
        let mut gone = HashSet::new();
        for p in packs {
            if let Some(&n) = self.numbers.get(p) {
                self.loaded[n as usize] = false;
                gone.insert(n);
            }
        }
        if gone.is_empty() {
            return;
        }
        let (odd, numbers) = (&self.odd, &self.numbers);
        let keep = |e: &Entry| {
            let pack = if e.b & 3 == ODD {
                numbers.get(&odd[e.a as usize].pack).copied().unwrap_or(u32::MAX)
            } else {
                (e.a >> 32) as u32
            };
            !gone.contains(&pack)
        };
        self.base.retain(keep);
        self.recent.retain(keep);
        self.rebuild_fanout();
    }

    /// Moves the recent entries into the sorted bulk.
    pub fn merge_recent(&mut self) {
        // The fan-out table always matches `base`: with nothing to merge it stands.
        if !self.recent.is_empty() {
            let recent = std::mem::take(&mut self.recent);
            merge_into(&mut self.base, recent);
            self.rebuild_fanout();
        }
    }

    /// Every entry, the main part's and the recent part's, in id order.
    fn in_order(&self) -> impl Iterator<Item = &Entry> {
        let (mut base, mut recent) = (self.base.iter().peekable(), self.recent.iter().peekable());
        std::iter::from_fn(move || match (base.peek(), recent.peek()) {
            (Some(a), Some(b)) if a.key <= b.key => base.next(),
            (_, Some(_)) => recent.next(),
            (Some(_), None) => base.next(),
            (None, None) => None,
        })
    }

    /// Calls `f` once for each distinct chunk, with one of its locations, in id order.
    pub fn for_each_chunk(&self, mut f: impl FnMut(&blake3::Hash, ChunkLoc)) {
        let mut last: Option<[u64; 4]> = None;
        for e in self.in_order() {
            if last != Some(e.key) {
                last = Some(e.key);
                f(&hash_of(&e.key), self.unpack_loc(e));
            }
        }
    }

    /// Bytes of memory the index holds (its tables' capacities), for reports.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.base.capacity() * size_of::<Entry>()
            + self.recent.capacity() * size_of::<Entry>()
            + self.fanout.capacity() * size_of::<usize>()
            + self.packs.capacity() * (size_of::<Uuid>() + 1)
            + self.numbers.capacity() * (size_of::<Uuid>() + size_of::<u32>() + 1)
            + self.odd.capacity() * size_of::<ChunkLoc>()
    }

    /// The number of `pack`, numbering it if new.
    fn number(&mut self, pack: Uuid) -> u32 {
        if let Some(&n) = self.numbers.get(&pack) {
            return n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        self.loaded.push(false);
        self.numbers.insert(pack, n);
        n
    }

    /// The entry of a chunk whose pack is numbered already.
    fn entry(&mut self, hash: &blake3::Hash, loc: &ChunkLoc) -> Entry {
        let n = self.number(loc.pack);
        let mut e = self.pack_with(n, loc);
        e.key = key_of(hash);
        e
    }

    /// Packs a location of pack number `n`: 32 bits of pack number and 40 of offset (1 TiB;
    /// packs are tens of MiB), 27 bits of each length (128 MiB; a chunk is at most 64 MiB)
    /// and 2 of codec. Anything larger goes whole to the odd table.
    fn pack_with(&mut self, n: u32, loc: &ChunkLoc) -> Entry {
        let stored = u64::from(loc.stored_len);
        let raw = u64::from(loc.raw_len);
        let codec = u64::from(loc.codec.to_byte());
        if loc.offset >> (32 + OFFSET_HI_BITS) == 0
            && stored <= LEN_MASK
            && raw <= LEN_MASK
            && codec < ODD
        {
            Entry {
                key: [0; 4],
                a: (u64::from(n) << 32) | (loc.offset & 0xFFFF_FFFF),
                b: ((loc.offset >> 32) << (2 + 2 * LEN_BITS))
                    | (stored << (2 + LEN_BITS))
                    | (raw << 2)
                    | codec,
            }
        } else {
            self.odd.push(*loc);
            Entry { key: [0; 4], a: (self.odd.len() - 1) as u64, b: ODD }
        }
    }

    fn unpack_loc(&self, e: &Entry) -> ChunkLoc {
        if e.b & 3 == ODD {
            return self.odd[e.a as usize];
        }
        let codec = match e.b & 3 {
            0 => Codec::Raw,
            1 => Codec::Zstd,
            _ => Codec::Lz4,
        };
        ChunkLoc {
            pack: self.packs[(e.a >> 32) as usize],
            offset: ((e.b >> (2 + 2 * LEN_BITS)) << 32) | (e.a & 0xFFFF_FFFF),
            stored_len: ((e.b >> (2 + LEN_BITS)) & LEN_MASK) as u32,
            raw_len: ((e.b >> 2) & LEN_MASK) as u32,
            codec,
        }
    }

    /// The range of `base` that can hold `key`.
    fn bucket(&self, key: &[u64; 4]) -> (usize, usize) {
        if self.fanout_bits == 0 || self.fanout.len() < 2 {
            return (0, self.base.len());
        }
        let b = (key[0] >> (64 - self.fanout_bits)) as usize;
        (self.fanout[b], self.fanout[b + 1])
    }

    /// Rebuilds the fan-out table for `base`: about 16 entries a bucket, so that a lookup's
    /// binary search stays within a few cache lines (at 10 M chunks the table is 4 MiB, under
    /// half a byte a chunk).
    fn rebuild_fanout(&mut self) {
        let n = self.base.len();
        let bits = if n < 64 { 0 } else { (n.ilog2() - 4).min(24) };
        self.fanout_bits = bits;
        self.fanout.clear();
        if bits == 0 {
            self.fanout.shrink_to_fit();
            return;
        }
        let buckets = 1usize << bits;
        self.fanout.reserve_exact(buckets + 1);
        let mut pos = 0;
        for b in 0..buckets {
            while pos < n && ((self.base[pos].key[0] >> (64 - bits)) as usize) < b {
                pos += 1;
            }
            self.fanout.push(pos);
        }
        self.fanout.push(n);
    }
}

/// Builds a [`ChunkIndex`] of many packs at once: their entries are appended as they come
/// and sorted once at the end, where adding them one pack at a time would merge again and
/// again.
#[derive(Debug, Default)]
pub struct ChunkIndexBuilder {
    index: ChunkIndex,
}

impl ChunkIndexBuilder {
    /// A builder with room for about `entries` entries (a guess is fine: the room left over
    /// is given back at the end).
    pub fn with_capacity(entries: usize) -> Self {
        let mut index = ChunkIndex::new();
        index.base.reserve_exact(entries);
        Self { index }
    }

    /// Adds every entry of `pack`; a pack added before is left as it is.
    pub fn add_pack(&mut self, pack: Uuid, entries: &[(blake3::Hash, ChunkLoc)]) {
        let index = &mut self.index;
        if index.has_pack(&pack) {
            return;
        }
        let n = index.number(pack);
        index.loaded[n as usize] = true;
        index.base.reserve(entries.len());
        for (h, l) in entries {
            let e = index.entry(h, l);
            index.base.push(e);
        }
    }

    /// The index, sorted.
    pub fn finish(self) -> ChunkIndex {
        let mut index = self.index;
        index.base.sort_unstable_by_key(|e| e.key);
        index.base.shrink_to_fit();
        index.rebuild_fanout();
        index
    }
}

/// Steps a lookup walks from its guess before it falls back to a binary search.
const WALK: usize = 8;

/// The first position in `bucket` (a bucket of the fan-out table, whose keys share their
/// leading `bits` bits) whose key is not below `key`: the `partition_point` of `key`.
///
/// Chunk ids are uniformly distributed hashes, so where `key`'s remaining bits fall in the
/// bucket's range predicts its place in the bucket to within a couple of entries: the search
/// starts there and walks, touching one or two adjacent cache lines, where a binary search
/// of the bucket's ~16 entries touches four or five scattered ones (a miss, which has no
/// early exit, paid all of them). Keys that are not spread as hashes (a damaged index) only
/// cost the walk before the binary search takes over.
fn search(bucket: &[Entry], key: &[u64; 4], bits: u32) -> usize {
    let n = bucket.len();
    if n == 0 {
        return 0;
    }
    // `bits` < 64, so the shift keeps the bits below the bucket's number, as a fraction of 2^64.
    let guess = ((u128::from(key[0] << bits) * n as u128) >> 64) as usize;
    let mut i = guess;
    if bucket[i].key < *key {
        // Forward: the answer is past `i`.
        i += 1;
        for _ in 0..WALK {
            if i == n || bucket[i].key >= *key {
                return i;
            }
            i += 1;
        }
        i + bucket[i..].partition_point(|e| e.key < *key)
    } else {
        // Backward: the answer is at `i` or before it.
        for _ in 0..WALK {
            if i == 0 || bucket[i - 1].key < *key {
                return i;
            }
            i -= 1;
        }
        bucket[..i].partition_point(|e| e.key < *key)
    }
}

/// Merges sorted `add` into sorted `into`, in place from the back (the only extra memory is
/// `add`'s room at the end of `into`).
fn merge_into(into: &mut Vec<Entry>, add: Vec<Entry>) {
    if add.is_empty() {
        return;
    }
    if into.is_empty() {
        *into = add;
        return;
    }
    let old = into.len();
    into.resize(old + add.len(), Entry { key: [0; 4], a: 0, b: 0 });
    let (mut i, mut j, mut w) = (old, add.len(), old + add.len());
    while j > 0 {
        w -= 1;
        if i > 0 && into[i - 1].key > add[j - 1].key {
            into[w] = into[i - 1];
            i -= 1;
        } else {
            into[w] = add[j - 1];
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    fn loc(pack: Uuid, i: u64) -> ChunkLoc {
        ChunkLoc {
            pack,
            offset: i * 1000,
            stored_len: (i % 5000) as u32,
            raw_len: 1 << 20,
            codec: Codec::from_byte((i % 3) as u8).unwrap(),
        }
    }

    #[test]
    fn an_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn odd_locations_round_trip_whole() {
        let mut idx = ChunkIndex::new();
        let p = Uuid::new_v4();
        let h = blake3::hash(b"odd");
        let odd = ChunkLoc {
            pack: p,
            offset: u64::MAX,
            stored_len: u32::MAX,
            raw_len: u32::MAX,
            codec: Codec::Zstd,
        };
        let edge = ChunkLoc {
            pack: p,
            offset: (1 << 40) - 1,
            stored_len: LEN_MASK as u32,
            raw_len: LEN_MASK as u32,
            codec: Codec::Lz4,
        };
        let h2 = blake3::hash(b"edge");
        idx.add_pack(p, &[(h, odd), (h2, edge)]);
        assert_eq!(idx.get(&h), Some(odd));
        assert_eq!(idx.get(&h2), Some(edge));
        let repo = Uuid::new_v4();
        let back = ChunkIndex::decode(Path::new("x"), &repo, &idx.encode(&repo)).unwrap();
        assert_eq!(back.get(&h), Some(odd));
        assert_eq!(back.get(&h2), Some(edge));
    }

    #[test]
    fn a_file_of_another_repository_or_damaged_is_refused() {
        let mut idx = ChunkIndex::new();
        let p = Uuid::new_v4();
        idx.add_pack(p, &[(blake3::hash(b"a"), loc(p, 1))]);
        let repo = Uuid::new_v4();
        let bytes = idx.encode(&repo);
        let err = ChunkIndex::decode(Path::new("x"), &Uuid::new_v4(), &bytes).unwrap_err();
        assert!(err.to_string().contains("another repository"), "{err}");
        let mut torn = bytes.clone();
        torn.truncate(bytes.len() - 7);
        assert!(ChunkIndex::decode(Path::new("x"), &repo, &torn).is_err());
    }

    #[test]
    fn a_large_index_finds_every_chunk_and_no_other() {
        let packs: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
        let entries = |p: usize| -> Vec<(blake3::Hash, ChunkLoc)> {
            (0..100u64).map(|i| (id_of(p as u64 * 100 + i), loc(packs[p], i))).collect()
        };
        let mut b = ChunkIndexBuilder::with_capacity(1000);
        for (p, pack) in packs.iter().enumerate().take(400) {
            b.add_pack(*pack, &entries(p));
        }
        let mut idx = b.finish();
        assert!(idx.fanout_bits > 0, "{}", idx.fanout_bits);
        // Enough single packs to pass the recent part's limit and merge.
        for (p, pack) in packs.iter().enumerate().skip(400) {
            idx.add_pack(*pack, &entries(p));
        }
        for n in 0..50_000 {
            let (p, i) = ((n / 100) as usize, n % 100);
            assert_eq!(idx.get(&id_of(n)), Some(loc(packs[p], i)), "chunk {n}");
            assert_eq!(idx.get(&id_of(n + 50_000)), None, "chunk {} is not in", n + 50_000);
        }
        idx.remove_packs(&packs[..250]);
        assert_eq!(idx.entries(), 25_000);
        assert_eq!(idx.get(&id_of(0)), None);
        assert_eq!(idx.get(&id_of(49_999)), Some(loc(packs[499], 99)));
    }

    fn id_of(n: u64) -> blake3::Hash {
        blake3::hash(&n.to_le_bytes())
    }

    /// What the model does: every pack's entries, a chunk found while any pack holding it
    /// is loaded.
    #[derive(Debug, Clone)]
    enum Op {
        /// A pack of chunks `ids` (small numbers, so that packs share chunks).
        Add(Vec<u16>),
        /// Remove the pack added `n` packs ago (modulo the count).
        Remove(usize),
        /// Encode, decode, and go on with what was read.
        Reopen,
        Merge,
        /// Load the packs given as a separate index at once (what an open does).
        Absorb(Vec<Vec<u16>>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop::collection::vec(0u16..600, 0..40).prop_map(Op::Add),
            1 => (0usize..64).prop_map(Op::Remove),
            1 => Just(Op::Reopen),
            1 => Just(Op::Merge),
            1 => prop::collection::vec(prop::collection::vec(0u16..600, 0..300), 0..4)
                .prop_map(Op::Absorb),
        ]
    }

    fn id(n: u16) -> blake3::Hash {
        blake3::hash(&n.to_le_bytes())
    }

    fn entry_of(key: [u64; 4]) -> Entry {
        Entry { key, a: 0, b: 0 }
    }

    proptest! {
        /// The guessing search finds what a binary search finds, whatever the keys: spread
        /// like hashes or bunched (as a damaged index might have them), with duplicates, and
        /// for keys present and absent.
        #[test]
        fn the_search_from_a_guess_is_a_partition_point(
            keys in prop::collection::vec((0u64..4, any::<u64>(), 0u64..3), 0..200),
            bunched in any::<bool>(),
            probes in prop::collection::vec(
                (any::<u64>(), 0u64..3, any::<prop::sample::Index>()),
                1..50,
            ),
            bits in 0u32..25,
        ) {
            // Bunched: four narrow runs of keys, many equal in their first word.
            let word = |hi: u64, lo: u64| if bunched { (hi << 60) | (lo >> 58) } else { lo };
            let table: Vec<Entry> = {
                let mut t: Vec<Entry> =
                    keys.iter().map(|&(hi, lo, w)| entry_of([word(hi, lo), w, 0, 0])).collect();
                t.sort_unstable_by_key(|e| e.key);
                t
            };
            for (lo, w, pick) in probes {
                let absent = [word(lo >> 62, lo), w, 0, 0];
                let mut tries = vec![absent];
                if !table.is_empty() {
                    tries.push(table[pick.index(table.len())].key);
                }
                for key in tries {
                    let want = table.partition_point(|e| e.key < key);
                    prop_assert_eq!(search(&table, &key, bits), want, "{:x?}", key);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The compact index against a `HashMap` model (pack -> its entries): the same chunks
        /// found (at a location the model has for them), the same missing, through adds,
        /// removals, merges, batches built at once and saves and reopens.
        #[test]
        fn the_index_answers_as_a_hash_map_of_every_pack(ops in prop::collection::vec(op(), 1..40)) {
            let repo = Uuid::new_v4();
            let mut idx = ChunkIndex::new();
            let mut model: HashMap<Uuid, Vec<(blake3::Hash, ChunkLoc)>> = HashMap::new();
            let mut order: Vec<Uuid> = Vec::new();
            let mut serial = 0u64;
            let mut make = |ids: &[u16]| {
                let p = Uuid::new_v4();
                let entries: Vec<(blake3::Hash, ChunkLoc)> = ids
                    .iter()
                    .map(|&n| {
                        serial += 1;
                        (id(n), loc(p, serial))
                    })
                    .collect();
                (p, entries)
            };
            for op in ops {
                match op {
                    Op::Add(ids) => {
                        let (p, entries) = make(&ids);
                        idx.add_pack(p, &entries);
                        model.insert(p, entries);
                        order.push(p);
                    }
                    Op::Remove(n) if !order.is_empty() => {
                        let i = order.len() - 1 - n % order.len();
                        let p = order.remove(i);
                        model.remove(&p);
                        idx.remove_packs(&[p]);
                    }
                    Op::Remove(_) => {}
                    Op::Reopen => {
                        idx = ChunkIndex::decode(Path::new("x"), &repo, &idx.encode(&repo)).unwrap();
                    }
                    Op::Merge => idx.merge_recent(),
                    Op::Absorb(packs) => {
                        let mut b = ChunkIndexBuilder::with_capacity(10);
                        for ids in packs {
                            let (p, entries) = make(&ids);
                            b.add_pack(p, &entries);
                            model.insert(p, entries);
                            order.push(p);
                        }
                        idx.absorb(b.finish());
                    }
                }
                let loaded: HashSet<Uuid> = idx.loaded_packs().collect();
                let want: HashSet<Uuid> = model.keys().copied().collect();
                prop_assert_eq!(loaded, want);
                let mut distinct = 0;
                for n in 0..600u16 {
                    let h = id(n);
                    let locs: Vec<ChunkLoc> = model
                        .values()
                        .flat_map(|es| es.iter().filter(|(k, _)| *k == h).map(|(_, l)| *l))
                        .collect();
                    match idx.get(&h) {
                        None => prop_assert!(locs.is_empty(), "chunk {} lost", n),
                        Some(l) => prop_assert!(locs.contains(&l), "chunk {} at {:?}, not one of {:?}", n, l, locs),
                    }
                    distinct += usize::from(!locs.is_empty());
                }
                let mut seen = 0;
                let mut wrong = 0;
                idx.for_each_chunk(|h, l| {
                    seen += 1;
                    wrong += usize::from(!model.values().any(|es| es.contains(&(*h, l))));
                });
                prop_assert_eq!((seen, wrong), (distinct, 0));
                prop_assert_eq!(idx.entries(), model.values().map(Vec::len).sum::<usize>());
            }
        }
    }
}
