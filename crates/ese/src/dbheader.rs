//! The database header (page 0) and its shadow copy (page 1).
//!
//! The header is not logged (except the backup stamp of a surrogate backup, which is also a
//! log record so that it reaches every copy: [`crate::logfmt::Record::BackupStamp`]): it is
//! written in place, page 0 first and synced, then page 1 and
//! synced, with an update counter, so a torn write of one copy always leaves the other intact.
//! Readers take the valid copy with the higher counter.

use std::path::Path;

use serde::Serialize;
use volume::File;

use crate::backup::BackupKind;
use crate::codec::{Reader, Writer, get_u32};
use crate::error::{EngineError, IoContext, Result};
use crate::lsn::Lsn;
use crate::page::{self, HEADER_PGNO, PAGE_HEADER, PageType, SHADOW_HEADER_PGNO};

const MAGIC: u32 = 0x5344_4245; // "EBDS"
const FORMAT: u32 = 1;

/// The state a database was left in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbState {
    /// Created, never attached with logging since.
    JustCreated,
    /// Attached to a running instance, or not shut down cleanly: needs the logs of its
    /// required range to become consistent.
    DirtyShutdown,
    /// Consistent on its own.
    CleanShutdown,
}

impl DbState {
    fn to_u8(self) -> u8 {
        match self {
            DbState::JustCreated => 1,
            DbState::DirtyShutdown => 2,
            DbState::CleanShutdown => 3,
        }
    }
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => DbState::JustCreated,
            2 => DbState::DirtyShutdown,
            3 => DbState::CleanShutdown,
            _ => return None,
        })
    }
}

/// How a backup recorded in a slot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKind {
    /// A streaming (non-snapshot) backup.
    Normal,
    /// A snapshot backup of this database.
    Snapshot,
    /// A snapshot backup taken on a passive copy on behalf of this database.
    Surrogate,
}

impl SlotKind {
    /// The byte that stands for the kind in headers and log records (0 is "no slot").
    pub(crate) fn code(self) -> u8 {
        match self {
            SlotKind::Normal => 1,
            SlotKind::Snapshot => 2,
            SlotKind::Surrogate => 3,
        }
    }
    pub(crate) fn from_code(v: u8) -> Option<Self> {
        Some(match v {
            1 => SlotKind::Normal,
            2 => SlotKind::Snapshot,
            3 => SlotKind::Surrogate,
            _ => return None,
        })
    }
}

/// One backup-history slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackupSlot {
    /// When the backup ended (seconds since the Unix epoch).
    pub time: u64,
    /// Lowest log generation the backup holds.
    pub gen_low: u32,
    /// Highest log generation the backup holds.
    pub gen_high: u32,
    pub kind: SlotKind,
}

/// The decoded database header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbHeader {
    pub page_size: u32,
    pub state: DbState,
    /// The log signature of the instance this database belongs to (hex in JSON).
    #[serde(serialize_with = "crate::lsn::ser_hex")]
    pub log_signature: [u8; 16],
    /// The database's id inside its instance's log stream.
    pub dbid: u32,
    pub name: String,
    pub created: u64,
    pub last_attach: u64,
    pub last_detach: u64,
    /// Oldest log position needed to make the database consistent (0 when clean).
    pub min_required: Lsn,
    /// Newest log position whose changes the file may already contain.
    pub max_required: Lsn,
    /// Bumped on every header write; picks the newer of the two copies.
    pub update_count: u64,
    pub previous_full: Option<BackupSlot>,
    pub previous_incremental: Option<BackupSlot>,
    pub previous_differential: Option<BackupSlot>,
    pub previous_copy: Option<BackupSlot>,
}

impl DbHeader {
    /// Marks the database consistent: clean shutdown, no log generation required to open it.
    /// (Shutdown, detach and hard recovery end this way, as does a reader of a passive copy's
    /// file, which is consistent at a generation boundary.)
    pub fn mark_clean_shutdown(&mut self) {
        self.state = DbState::CleanShutdown;
        self.min_required = Lsn(0);
        self.max_required = Lsn(0);
    }

    /// Records a backup that just ended in the slot its type selects. A full backup starts a
    /// new chain: the incremental and differential slots of the old one are cleared, since
    /// they cannot be restored on top of the new full.
    pub fn record_backup(&mut self, kind: BackupKind, slot: BackupSlot) {
        match kind {
            BackupKind::Full => {
                self.previous_full = Some(slot);
                self.previous_incremental = None;
                self.previous_differential = None;
            }
            BackupKind::Incremental => self.previous_incremental = Some(slot),
            BackupKind::Differential => self.previous_differential = Some(slot),
            BackupKind::Copy => self.previous_copy = Some(slot),
        }
    }

    /// Records a backup read from the log (a logged stamp that recovery or a passive copy's
    /// replay meets), returning whether the header changed.
    ///
    /// Why not [`Self::record_backup`]: redo may read a stamp more than once (recovery starts
    /// at the checkpoint, a passive at the begin of an open transaction), and backups that
    /// are not logged (those of the active's own snapshots) may have stamped the header after
    /// the logged one. So a stamp never replaces what is newer than it (by last generation,
    /// then time): a slot holding a later backup stays, an incremental or differential older
    /// than the full already recorded belongs to a previous chain and is skipped, and a full
    /// clears only the incremental and differential slots older than itself. Replaying the
    /// stamps of a log in order, once or several times, then ends where the live header did.
    pub fn replay_backup(&mut self, kind: BackupKind, slot: BackupSlot) -> bool {
        let key = |s: &BackupSlot| (s.gen_high, s.time);
        let newer = |cur: &Option<BackupSlot>| cur.as_ref().is_some_and(|c| key(c) > key(&slot));
        let before = self.clone();
        match kind {
            BackupKind::Full => {
                if newer(&self.previous_full) {
                    return false;
                }
                self.previous_full = Some(slot);
                for s in [&mut self.previous_incremental, &mut self.previous_differential] {
                    if s.as_ref().is_some_and(|c| key(c) < key(&slot)) {
                        *s = None;
                    }
                }
            }
            BackupKind::Incremental | BackupKind::Differential => {
                if newer(&self.previous_full) {
                    return false;
                }
                let target = if kind == BackupKind::Incremental {
                    &mut self.previous_incremental
                } else {
                    &mut self.previous_differential
                };
                if newer(target) {
                    return false;
                }
                *target = Some(slot);
            }
            BackupKind::Copy => {
                if newer(&self.previous_copy) {
                    return false;
                }
                self.previous_copy = Some(slot);
            }
        }
        *self != before
    }

    /// Lowest required log generation (0 when none).
    pub fn min_required_generation(&self) -> u32 {
        self.min_required.generation()
    }
    /// Highest required log generation (0 when none).
    pub fn max_required_generation(&self) -> u32 {
        self.max_required.generation()
    }

    fn encode(&self, page_size: usize) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        w.u32(FORMAT);
        w.u32(self.page_size);
        w.u8(self.state.to_u8());
        w.bytes(&self.log_signature);
        w.u32(self.dbid);
        w.str(&self.name);
        w.u64(self.created);
        w.u64(self.last_attach);
        w.u64(self.last_detach);
        w.u64(self.min_required.0);
        w.u64(self.max_required.0);
        w.u64(self.update_count);
        for slot in [
            &self.previous_full,
            &self.previous_incremental,
            &self.previous_differential,
            &self.previous_copy,
        ] {
            match slot {
                None => w.u8(0),
                Some(s) => {
                    w.u8(s.kind.code());
                    w.u64(s.time);
                    w.u32(s.gen_low);
                    w.u32(s.gen_high);
                }
            }
        }
        let mut p = page::new_page(page_size, PageType::Header);
        p[PAGE_HEADER + 1..PAGE_HEADER + 1 + w.buf.len()].copy_from_slice(&w.buf);
        p
    }

    fn decode(body: &[u8]) -> Option<Self> {
        let mut r = Reader::new(body);
        if r.u32().ok()? != MAGIC || r.u32().ok()? != FORMAT {
            return None;
        }
        let page_size = r.u32().ok()?;
        let state = DbState::from_u8(r.u8().ok()?)?;
        let log_signature: [u8; 16] = r.take(16).ok()?.try_into().ok()?;
        let dbid = r.u32().ok()?;
        let name = r.string().ok()?;
        let created = r.u64().ok()?;
        let last_attach = r.u64().ok()?;
        let last_detach = r.u64().ok()?;
        let min_required = Lsn(r.u64().ok()?);
        let max_required = Lsn(r.u64().ok()?);
        let update_count = r.u64().ok()?;
        let mut slots = [None; 4];
        for s in slots.iter_mut() {
            let k = r.u8().ok()?;
            if k != 0 {
                let kind = SlotKind::from_code(k)?;
                *s = Some(BackupSlot {
                    time: r.u64().ok()?,
                    gen_low: r.u32().ok()?,
                    gen_high: r.u32().ok()?,
                    kind,
                });
            }
        }
        Some(DbHeader {
            page_size,
            state,
            log_signature,
            dbid,
            name,
            created,
            last_attach,
            last_detach,
            min_required,
            max_required,
            update_count,
            previous_full: slots[0],
            previous_incremental: slots[1],
            previous_differential: slots[2],
            previous_copy: slots[3],
        })
    }
}

/// Writes the header (bumping its update counter) to page 0, syncs, then to page 1, syncs.
pub fn write_header(file: &dyn File, path: &Path, hdr: &mut DbHeader) -> Result<()> {
    hdr.update_count += 1;
    let ps = hdr.page_size as usize;
    for pgno in [HEADER_PGNO, SHADOW_HEADER_PGNO] {
        let mut p = hdr.encode(ps);
        page::seal(&mut p, pgno, 0);
        file.write_at(&p, pgno * ps as u64).at(path)?;
        file.sync().at(path)?;
    }
    Ok(())
}

/// Reads the newer valid copy of the header.
pub fn read_header(file: &dyn File, path: &Path) -> Result<DbHeader> {
    let mut first = vec![0u8; 4096];
    let n = file.read_at(&mut first, 0).at(path)?;
    let page_size =
        if n >= PAGE_HEADER + 13 { get_u32(&first, PAGE_HEADER + 9) as usize } else { 0 };
    let mut best: Option<DbHeader> = None;
    let mut problems = Vec::new();
    // When copy 0 is torn its page-size field may be garbage: try the field, then every size.
    let mut sizes = vec![page_size];
    sizes.extend([4096usize, 8192, 16384, 32768].iter().filter(|&&s| s != page_size));
    for ps in sizes.into_iter().filter(|s| page::valid_page_size(*s)) {
        for pgno in [HEADER_PGNO, SHADOW_HEADER_PGNO] {
            let mut p = vec![0u8; ps];
            if file.read_exact_at(&mut p, pgno * ps as u64).is_err() {
                continue;
            }
            match page::verify(pgno, &p) {
                Ok(()) => match DbHeader::decode(&p[PAGE_HEADER + 1..]) {
                    Some(h) if h.page_size as usize == ps => {
                        if best.as_ref().is_none_or(|b| h.update_count > b.update_count) {
                            best = Some(h);
                        }
                    }
                    _ => problems.push(format!("copy {pgno}: not a database header")),
                },
                Err(e) => problems.push(format!("copy {pgno}: {e:?}")),
            }
        }
        if best.is_some() {
            break;
        }
    }
    best.ok_or_else(|| EngineError::HeaderCorrupt {
        path: path.to_path_buf(),
        why: if problems.is_empty() {
            "file too short for a database header".into()
        } else {
            problems.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> DbHeader {
        DbHeader {
            page_size: 4096,
            state: DbState::DirtyShutdown,
            log_signature: [0; 16],
            dbid: 1,
            name: "db".into(),
            created: 0,
            last_attach: 0,
            last_detach: 0,
            min_required: Lsn(0),
            max_required: Lsn(0),
            update_count: 0,
            previous_full: None,
            previous_incremental: None,
            previous_differential: None,
            previous_copy: None,
        }
    }

    fn slot(gen_high: u32, time: u64) -> BackupSlot {
        BackupSlot { time, gen_low: 1, gen_high, kind: SlotKind::Surrogate }
    }

    #[test]
    fn replayed_stamps_end_where_the_live_header_did_however_often_they_are_read() {
        let stamps = [
            (BackupKind::Full, slot(5, 10)),
            (BackupKind::Incremental, slot(8, 20)),
            (BackupKind::Copy, slot(9, 25)),
            (BackupKind::Full, slot(12, 30)),
            (BackupKind::Differential, slot(15, 40)),
        ];
        let mut live = header();
        for (k, s) in stamps {
            live.record_backup(k, s);
        }
        for replays in 1..=3 {
            let mut h = header();
            for _ in 0..replays {
                for (k, s) in stamps {
                    h.replay_backup(k, s);
                }
            }
            assert_eq!(h, live, "{replays} replays");
        }
        // Read again from the middle (recovery starting at a later checkpoint).
        let mut h = live.clone();
        for (k, s) in &stamps[1..] {
            assert!(!h.replay_backup(*k, *s), "{k:?} changed an up-to-date header");
        }
        assert_eq!(h, live);
    }

    #[test]
    fn a_replayed_stamp_never_replaces_a_newer_backup() {
        // An unlogged full of the active's own snapshot (gen 20) after the logged ones.
        let mut h = header();
        h.record_backup(BackupKind::Full, slot(20, 50));
        assert!(!h.replay_backup(BackupKind::Full, slot(5, 10)));
        // An incremental older than the full belongs to the previous chain.
        assert!(!h.replay_backup(BackupKind::Incremental, slot(8, 20)));
        assert_eq!(h.previous_incremental, None);
        // A later incremental applies; a full older than it leaves it.
        assert!(h.replay_backup(BackupKind::Incremental, slot(22, 60)));
        assert!(!h.replay_backup(BackupKind::Full, slot(20, 50)));
        assert_eq!(h.previous_incremental, Some(slot(22, 60)));
        assert!(h.replay_backup(BackupKind::Full, slot(25, 70)));
        assert_eq!((h.previous_full, h.previous_incremental), (Some(slot(25, 70)), None));
    }
}
