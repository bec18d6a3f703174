//! The diff area of one snapshot: an append-only log of preserved blocks plus its index.
//!
//! Each record is a 40-byte header (magic, CRC-32C over the rest of the header and the data,
//! file identity, block number, data length) followed by the block's old content, cut at the
//! snapshot's end of file. One file, one append per preserved block: for a persistent snapshot
//! one `fdatasync` makes both the data and its index entry durable before the overwrite that
//! needed them is issued. On reopen the index is rebuilt by scanning the log; the scan stops at
//! the first record that is torn or fails its checksum and truncates the log there (a record
//! whose sync never returned was never followed by its overwrite, so nothing is lost).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};

use crate::file_id::FileId;

const MAGIC: u32 = 0x5344_4946; // "SDIF"
/// Size of a record header in bytes.
pub const HEADER: u64 = 40;

/// Where a preserved block's bytes live inside a diff-area log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Offset of the data (after the header) in the log.
    pub offset: u64,
    /// Bytes preserved (a block cut at the snapshot's end of file may be shorter).
    pub len: u32,
}

/// Outcome of [`DiffArea::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The block was recorded; the log grew by this many bytes.
    Grew(u64),
    /// The snapshot was deleted meanwhile; nothing was written.
    Deleted,
    /// The block was already present; nothing was written.
    Present,
}

#[derive(Debug)]
struct LogState {
    len: u64,
    deleted: bool,
    /// Reused record buffer (header + data), so an append allocates nothing.
    rec: Vec<u8>,
}

/// One snapshot's diff area.
#[derive(Debug)]
pub struct DiffArea {
    path: PathBuf,
    file: fs::File,
    durable: bool,
    state: Mutex<LogState>,
    index: RwLock<HashMap<FileId, HashMap<u64, Slot>>>,
}

impl DiffArea {
    /// Creates an empty log at `path`. `durable`: sync every append (persistent snapshots, and
    /// snapshots an older persistent one reads through).
    pub fn create(path: &Path, durable: bool) -> io::Result<Self> {
        let file = fs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Self::with(path, file, durable, 0, HashMap::new()))
    }

    /// Opens an existing log, rebuilding its index and cutting a torn tail.
    pub fn open(path: &Path, durable: bool) -> io::Result<Self> {
        let file = fs::OpenOptions::new().read(true).write(true).open(path)?;
        let file_len = file.metadata()?.len();
        let mut index: HashMap<FileId, HashMap<u64, Slot>> = HashMap::new();
        let mut pos = 0u64;
        let mut header = [0u8; HEADER as usize];
        let mut data = Vec::new();
        while pos + HEADER <= file_len {
            file.read_exact_at(&mut header, pos)?;
            let magic = le_u32(&header, 0);
            let crc = le_u32(&header, 4);
            let dev = le_u64(&header, 8);
            let ino = le_u64(&header, 16);
            let block = le_u64(&header, 24);
            let len = le_u32(&header, 32);
            if magic != MAGIC || pos + HEADER + len as u64 > file_len {
                break;
            }
            data.resize(len as usize, 0);
            file.read_exact_at(&mut data, pos + HEADER)?;
            if crc32c::crc32c_append(crc32c::crc32c(&header[8..]), &data) != crc {
                break;
            }
            index
                .entry(FileId { dev, ino })
                .or_default()
                .entry(block)
                .or_insert(Slot { offset: pos + HEADER, len });
            pos += HEADER + len as u64;
        }
        if pos < file_len {
            tracing::warn!(log = %path.display(), kept = pos, dropped = file_len - pos,
                "diff area: cutting torn tail");
            file.set_len(pos)?;
            file.sync_all()?;
        }
        Ok(Self::with(path, file, durable, pos, index))
    }

    fn with(
        path: &Path,
        file: fs::File,
        durable: bool,
        len: u64,
        index: HashMap<FileId, HashMap<u64, Slot>>,
    ) -> Self {
        DiffArea {
            path: path.to_path_buf(),
            file,
            durable,
            state: Mutex::new(LogState { len, deleted: false, rec: Vec::new() }),
            index: RwLock::new(index),
        }
    }

    /// The log's host path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether appends are synced before they return.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// Bytes the log occupies.
    pub fn bytes(&self) -> u64 {
        self.state.lock().len
    }

    /// Records `data` as the old content of `block` of file `id`. Returns once the record is in
    /// the index (and, if durable, synced): only then may the caller overwrite the block.
    pub fn append(&self, id: FileId, block: u64, data: &[u8]) -> io::Result<Appended> {
        self.append_run(id, block, data, data.len().max(1))
    }

    /// Records the old content of consecutive blocks `first`, `first + 1`, … of file `id`:
    /// `data` cut in `block_size`-byte pieces (the last may be shorter). Blocks already held
    /// are skipped; the others go to the log in one write and, if durable, one sync — a
    /// sequential writer's first writes then cost one append per run instead of one per
    /// block. Returns once every block is in the index: only then may the caller overwrite
    /// them. [`Appended::Present`] when every block was held already.
    pub fn append_run(
        &self,
        id: FileId,
        first: u64,
        data: &[u8],
        block_size: usize,
    ) -> io::Result<Appended> {
        let mut st = self.state.lock();
        if st.deleted {
            return Ok(Appended::Deleted);
        }
        let mut rec = std::mem::take(&mut st.rec);
        rec.clear();
        let mut slots = Vec::new();
        for (i, piece) in data.chunks(block_size).enumerate() {
            let block = first + i as u64;
            if self.lookup(id, block).is_some() {
                continue;
            }
            let header_at = rec.len();
            rec.extend_from_slice(&MAGIC.to_le_bytes());
            rec.extend_from_slice(&[0u8; 4]);
            rec.extend_from_slice(&id.dev.to_le_bytes());
            rec.extend_from_slice(&id.ino.to_le_bytes());
            rec.extend_from_slice(&block.to_le_bytes());
            rec.extend_from_slice(&(piece.len() as u32).to_le_bytes());
            rec.extend_from_slice(&[0u8; 4]);
            let crc = crc32c::crc32c_append(crc32c::crc32c(&rec[header_at + 8..]), piece);
            rec[header_at + 4..header_at + 8].copy_from_slice(&crc.to_le_bytes());
            rec.extend_from_slice(piece);
            let offset = st.len + (header_at as u64) + HEADER;
            slots.push((block, Slot { offset, len: piece.len() as u32 }));
        }
        if slots.is_empty() {
            st.rec = rec;
            return Ok(Appended::Present);
        }
        let at = st.len;
        let rec_len = rec.len() as u64;
        let written = self.file.write_all_at(&rec, at);
        st.rec = rec;
        if let Err(e) = written {
            // Leave no half record behind the recorded length.
            if let Err(cut) = self.file.set_len(at) {
                tracing::warn!(path = %self.path.display(), error = %cut,
                    "could not cut a half-written diff-area record; the next open drops it");
            }
            return Err(e);
        }
        if self.durable {
            self.file.sync_data()?;
        }
        st.len += rec_len;
        let mut index = self.index.write();
        let held = index.entry(id).or_default();
        for (block, slot) in slots {
            held.insert(block, slot);
        }
        Ok(Appended::Grew(rec_len))
    }

    /// Where the old content of `block` of `id` is, if this diff area holds it.
    pub fn lookup(&self, id: FileId, block: u64) -> Option<Slot> {
        self.index.read().get(&id).and_then(|m| m.get(&block)).copied()
    }

    /// Blocks of `id` held here.
    pub fn blocks_of(&self, id: FileId) -> Vec<u64> {
        self.index.read().get(&id).map(|m| m.keys().copied().collect()).unwrap_or_default()
    }

    /// Every record: file, block, slot.
    pub fn entries(&self) -> Vec<(FileId, u64, Slot)> {
        let idx = self.index.read();
        idx.iter().flat_map(|(id, m)| m.iter().map(move |(b, s)| (*id, *b, *s))).collect()
    }

    /// Reads `buf.len()` bytes of a slot starting `skip` bytes into it; bytes past the slot's
    /// end read as zeros.
    pub fn read_slot(&self, slot: Slot, skip: u64, buf: &mut [u8]) -> io::Result<()> {
        let avail = (slot.len as u64).saturating_sub(skip).min(buf.len() as u64) as usize;
        if avail > 0 {
            self.file.read_exact_at(&mut buf[..avail], slot.offset + skip)?;
        }
        buf[avail..].fill(0);
        Ok(())
    }

    /// Marks the area deleted: appends from now on return [`Appended::Deleted`]. Waits for an
    /// append in progress. Returns the bytes the log held. Reads keep working (a reader that
    /// still holds the area reads what it held).
    pub fn mark_deleted(&self) -> u64 {
        let mut st = self.state.lock();
        st.deleted = true;
        st.len
    }

    /// Whether [`DiffArea::mark_deleted`] was called.
    pub fn is_deleted(&self) -> bool {
        self.state.lock().deleted
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The little-endian `u32` at `at` of a record header.
fn le_u32(header: &[u8; HEADER as usize], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&header[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The little-endian `u64` at `at` of a record header.
fn le_u64(header: &[u8; HEADER as usize], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&header[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_round_trip_and_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.log");
        let id = FileId { dev: 1, ino: 2 };
        {
            let d = DiffArea::create(&p, true).unwrap();
            assert_eq!(d.append(id, 3, b"hello").unwrap(), Appended::Grew(45));
            assert_eq!(d.append(id, 3, b"other").unwrap(), Appended::Present);
            d.append(id, 7, &[9u8; 100]).unwrap();
        }
        // A torn third record.
        let f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        use std::io::Write;
        (&f).write_all(&[0x46, 0x49, 0x44, 0x53, 1, 2, 3]).unwrap();
        let d = DiffArea::open(&p, true).unwrap();
        assert_eq!(d.bytes(), 45 + 140);
        let s = d.lookup(id, 3).unwrap();
        let mut buf = [1u8; 8];
        d.read_slot(s, 1, &mut buf).unwrap();
        assert_eq!(&buf, b"ello\0\0\0\0");
        let mut blocks = d.blocks_of(id);
        blocks.sort();
        assert_eq!(blocks, vec![3, 7]);
        assert_eq!(d.mark_deleted(), 185);
        assert_eq!(d.append(id, 9, b"x").unwrap(), Appended::Deleted);
    }
}
