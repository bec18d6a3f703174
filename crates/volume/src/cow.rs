//! The copy-on-write filter's per-file state and the preservation step on the write path.
//!
//! Every open handle of a file shares one [`FileState`] (keyed by identity). It caches which
//! snapshot is the file's copy-on-write *target* — the newest live snapshot whose table holds
//! the file — and a bitmap of the target's blocks already preserved, so that the common case
//! (no snapshot, or a block already preserved) costs an atomic load, a mutex and a bit test,
//! whatever the number of snapshots. The cache is revalidated when the volume's snapshot
//! epoch changes (a snapshot was created or deleted).

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::diff::{Appended, HEADER};
use crate::file_id::FileId;
use crate::snapshot::Snapshot;
use crate::table::FileEntry;
use crate::volume::VolumeInner;

/// Epoch value that never matches: forces a refresh.
const STALE: u64 = u64::MAX;

/// How far ahead a sequential writer's first writes are preserved: the blocks after the one
/// being written, up to this many bytes, go to the diff area with it (their old content is
/// still the snapshot's, since nothing wrote them yet). At most this much is preserved that
/// the writer may never overwrite, when it stops early.
const RUN_BYTES: u64 = 256 * 1024;

/// A growable bitmap of block numbers.
#[derive(Debug, Default)]
pub struct BlockBits(Vec<u64>);

impl BlockBits {
    /// Whether block `b` is set.
    pub fn get(&self, b: u64) -> bool {
        self.0.get((b / 64) as usize).is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    /// Sets block `b`.
    pub fn set(&mut self, b: u64) {
        let i = (b / 64) as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, 0);
        }
        self.0[i] |= 1 << (b % 64);
    }
}

#[derive(Debug)]
struct CowCache {
    epoch: u64,
    target: Option<(Arc<Snapshot>, Arc<FileEntry>)>,
    preserved: BlockBits,
}

/// Copy-on-write state shared by every handle of one file.
#[derive(Debug)]
pub struct FileState {
    pub id: FileId,
    cache: Mutex<CowCache>,
}

/// Which old bytes a change is about to destroy.
#[derive(Debug, Clone, Copy)]
pub enum Change {
    /// A write of `[start, end)`: every snapshot block it touches that held data.
    Write { start: u64, end: u64 },
    /// A truncation to `len`: every snapshot block holding data at or past `len`.
    Truncate { len: u64 },
}

impl FileState {
    pub fn new(id: FileId) -> Self {
        FileState {
            id,
            cache: Mutex::new(CowCache {
                epoch: STALE,
                target: None,
                preserved: BlockBits::default(),
            }),
        }
    }

    /// Preserves, into the target snapshot's diff area, the old content of every block that
    /// `change` is about to modify and the target still needs. Returns once they are recorded
    /// (and synced, for a durable diff area); the caller then performs the change.
    ///
    /// The caller holds the volume's write barrier (shared), so no snapshot is committed
    /// meanwhile; snapshots may be deleted meanwhile, which the append detects.
    pub fn before_change(
        &self,
        vol: &VolumeInner,
        live: &fs::File,
        change: Change,
    ) -> io::Result<()> {
        let bs = vol.block_size;
        let mut c = self.cache.lock();
        loop {
            self.refresh(vol, &mut c);
            let Some((snap, fe)) = c.target.clone() else { return Ok(()) };
            let blocks: Vec<u64> = match change {
                Change::Write { start, end } => {
                    let end = end.min(fe.len);
                    if start >= end {
                        return Ok(());
                    }
                    (start / bs..=(end - 1) / bs).collect()
                }
                Change::Truncate { len } => fe.extents.blocks_in(len, fe.len, bs),
            };
            let mut retarget = false;
            for b in blocks {
                if c.preserved.get(b) {
                    continue;
                }
                let start = b * bs;
                let end = (start + bs).min(fe.len);
                if !fe.extents.overlaps(start, end) {
                    // A hole at snapshot time reads as zeros from the in-use map. Not marked in
                    // the bitmap: a write far into a sparse file must not grow it to the file's
                    // size, and the extent lookup is a binary search.
                    continue;
                }
                // A sequential writer (the block before is preserved) comes for the next
                // blocks too: they are preserved with this one, in one read and one append.
                let mut last = b;
                if b > 0 && c.preserved.get(b - 1) {
                    let ahead = (RUN_BYTES / bs).max(1);
                    while last + 1 < b + ahead {
                        let (s, e) = ((last + 1) * bs, ((last + 2) * bs).min(fe.len));
                        if s >= e || c.preserved.get(last + 1) || !fe.extents.overlaps(s, e) {
                            break;
                        }
                        last += 1;
                    }
                }
                let end = ((last + 1) * bs).min(fe.len);
                let blocks = last - b + 1;
                let mut buf = vec![0u8; (end - start) as usize];
                read_full(live, &mut buf, start)?;
                vol.make_room(buf.len() as u64 + HEADER * blocks);
                match snap.diff.append_run(self.id, b, &buf, bs as usize) {
                    Ok(Appended::Grew(n)) => {
                        vol.account_growth(n);
                        vol.count_preserved(blocks);
                        (b..=last).for_each(|x| c.preserved.set(x));
                    }
                    Ok(Appended::Present) => (b..=last).for_each(|x| c.preserved.set(x)),
                    Ok(Appended::Deleted) => {
                        retarget = true;
                        break;
                    }
                    Err(e) => {
                        vol.preservation_failed(&snap, &e);
                        retarget = true;
                        break;
                    }
                }
            }
            if !retarget {
                return Ok(());
            }
            c.epoch = STALE;
        }
    }

    fn refresh(&self, vol: &VolumeInner, c: &mut CowCache) {
        let epoch = vol.epoch();
        if c.epoch == epoch {
            return;
        }
        let target = vol.newest_holding(self.id);
        let same = match (&c.target, &target) {
            (Some((a, _)), Some((b, _))) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            c.preserved = BlockBits::default();
            if let Some((s, _)) = &target {
                for b in s.diff.blocks_of(self.id) {
                    c.preserved.set(b);
                }
            }
        }
        c.target = target;
        c.epoch = epoch;
    }
}

/// Reads `buf.len()` bytes at `offset`; bytes past EOF read as zeros.
pub fn read_full(f: &fs::File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}
