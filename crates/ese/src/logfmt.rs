//! The transaction log file format.
//!
//! A log generation is a file of fixed size (1 MiB default, 64 KiB–32 MiB), pre-allocated so
//! that appending never grows it. The current generation is `E00.log`; closed generations are
//! `E00` + 8 upper-case hex digits + `.log`. The first [`LOG_HEADER_SIZE`] bytes are the
//! header; records follow back to back:
//!
//! ```text
//! record = len:u32  crc:u32  lsn:u64  kind:u8  payload   (crc = CRC-32C of lsn..end)
//! ```
//!
//! The LSN inside each record is its own position: a stale record left over from an earlier
//! use of the file, or a torn tail, fails either the checksum or the position check and ends
//! the scan. A generation is closed by an end-of-generation record, so a reader of a closed
//! generation knows it saw everything.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backup::BackupKind;
use crate::codec::{Reader, Writer, get_u32};
use crate::dbheader::{BackupSlot, SlotKind};
use crate::lsn::{Lsn, hex};

/// Bytes reserved for the log file header.
pub const LOG_HEADER_SIZE: u32 = 4096;
/// Bytes of a record frame before the payload.
pub const FRAME: usize = 17;
/// Default generation size.
pub const DEFAULT_LOG_FILE_SIZE: u32 = 1024 * 1024;
const MAGIC: u32 = 0x474c_4545; // "EELG"

const KIND_TXN: u8 = 1;
const KIND_ATTACH: u8 = 2;
const KIND_END: u8 = 3;
const KIND_BACKUP_STAMP: u8 = 4;

/// Name of closed generation `generation`.
pub fn generation_name(prefix: &str, generation: u32) -> String {
    format!("{prefix}{generation:08X}.log")
}
/// Name of the current generation.
pub fn current_name(prefix: &str) -> String {
    format!("{prefix}.log")
}
/// Name of the generation being prepared by a roll.
pub fn tmp_name(prefix: &str) -> String {
    format!("{prefix}tmp.log")
}
/// Name of the checkpoint file.
pub fn checkpoint_name(prefix: &str) -> String {
    format!("{prefix}.chk")
}
/// Names of the two reserve logs.
pub fn reserve_names(prefix: &str) -> [String; 2] {
    [format!("{prefix}res00001.jrs"), format!("{prefix}res00002.jrs")]
}
/// The generation named by a closed-generation file name.
pub fn parse_generation_name(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_suffix(".log")?;
    if rest.len() != 8 || !rest.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)) {
        return None;
    }
    u32::from_str_radix(rest, 16).ok()
}

/// A database attached to the instance, as listed in log headers and the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedDb {
    pub dbid: u32,
    pub name: String,
    pub path: String,
}

/// One line per attached database, as log and checkpoint dumps show them.
pub(crate) fn write_attached(
    f: &mut std::fmt::Formatter<'_>,
    attached: &[AttachedDb],
) -> std::fmt::Result {
    for a in attached {
        writeln!(f, "attached db {}:     {} ({})", a.dbid, a.name, a.path)?;
    }
    Ok(())
}

/// The header of a log generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogHeader {
    pub generation: u32,
    #[serde(serialize_with = "crate::lsn::ser_hex")]
    pub signature: [u8; 16],
    /// Creation time of this generation (Unix seconds).
    pub created: u64,
    /// Creation time of the previous generation (0 for the first).
    pub previous_created: u64,
    pub file_size: u32,
    pub attached: Vec<AttachedDb>,
}

impl LogHeader {
    /// Encodes into a header block of [`LOG_HEADER_SIZE`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        w.u32(self.generation);
        w.bytes(&self.signature);
        w.u64(self.created);
        w.u64(self.previous_created);
        w.u32(self.file_size);
        w.u32(self.attached.len() as u32);
        for a in &self.attached {
            w.u32(a.dbid);
            w.str(&a.name);
            w.str(&a.path);
        }
        let mut out = vec![0u8; LOG_HEADER_SIZE as usize];
        let n = w.buf.len().min(LOG_HEADER_SIZE as usize - 8);
        out[0..4].copy_from_slice(&(n as u32).to_le_bytes());
        out[4..8].copy_from_slice(&crc32c::crc32c(&w.buf[..n]).to_le_bytes());
        out[8..8 + n].copy_from_slice(&w.buf[..n]);
        out
    }

    /// Decodes a header block; `Err` says why it is unusable.
    pub fn decode(block: &[u8]) -> Result<Self, String> {
        if block.len() < 8 {
            return Err("file shorter than a log header".into());
        }
        let n = get_u32(block, 0) as usize;
        if n == 0 || n > block.len() - 8 {
            return Err("log header length invalid".into());
        }
        let body = &block[8..8 + n];
        if crc32c::crc32c(body) != get_u32(block, 4) {
            return Err("log header checksum mismatch".into());
        }
        let mut r = Reader::new(body);
        let f = |_| "log header truncated".to_string();
        if r.u32().map_err(f)? != MAGIC {
            return Err("not a log file (bad magic)".into());
        }
        let generation = r.u32().map_err(f)?;
        if generation == u32::MAX {
            // The engine would roll to the next generation from here; there is none.
            return Err(format!("generation {generation:#X} is past the last usable one"));
        }
        #[allow(clippy::unwrap_used)] // take(16) returned 16 bytes
        let signature: [u8; 16] = r.take(16).map_err(f)?.try_into().unwrap();
        let created = r.u64().map_err(f)?;
        let previous_created = r.u64().map_err(f)?;
        let file_size = r.u32().map_err(f)?;
        let count = r.u32().map_err(f)?;
        let mut attached = Vec::new();
        for _ in 0..count {
            attached.push(AttachedDb {
                dbid: r.u32().map_err(f)?,
                name: r.string().map_err(f)?,
                path: r.string().map_err(f)?,
            });
        }
        Ok(LogHeader { generation, signature, created, previous_created, file_size, attached })
    }
}

/// The changes of one transaction to one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDelta {
    pub dbid: u32,
    pub pgno: u64,
    /// A full body image (applies to any page state, including a torn one) rather than a diff
    /// against the previous version.
    pub full: bool,
    /// (offset into the page, bytes), offsets are >= the page header size.
    pub ranges: Vec<(u32, Vec<u8>)>,
}

impl PageDelta {
    fn encoded_len(&self) -> usize {
        4 + 8 + 1 + 4 + self.ranges.iter().map(|(_, b)| 8 + b.len()).sum::<usize>()
    }
}

/// A decoded log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Page changes of a transaction. A transaction is one or more chunks, contiguous in the
    /// log; the last has `commit` set. Redo applies a transaction only once it saw its commit.
    Txn { commit: bool, begin: Lsn, pages: Vec<PageDelta> },
    /// A database joined the log stream.
    Attach(AttachedDb),
    /// The generation ends here.
    EndOfGeneration,
    /// A backup recorded in the headers of `databases` (a surrogate backup: taken on a
    /// passive copy on another node). Logged, unlike the stamps of the active's own backups,
    /// so that the log carries it to every copy and every copy's headers show one backup
    /// history; recovery and passive replay apply it to the headers
    /// ([`crate::DbHeader::replay_backup`]).
    BackupStamp { kind: BackupKind, slot: BackupSlot, databases: Vec<String> },
}

impl Record {
    /// Encodes the record as a frame at `lsn`.
    pub fn encode(&self, lsn: Lsn) -> Vec<u8> {
        // Sized once: a transaction's record carries kilobytes of page bytes, and the log
        // writer encodes it while other committers wait on the log state.
        let mut w = Writer { buf: Vec::with_capacity(self.encoded_len()) };
        w.u32(0);
        w.u32(0);
        w.u64(lsn.0);
        match self {
            Record::Txn { commit, begin, pages } => {
                w.u8(KIND_TXN);
                w.u8(*commit as u8);
                w.u64(begin.0);
                w.u32(pages.len() as u32);
                for p in pages {
                    w.u32(p.dbid);
                    w.u64(p.pgno);
                    w.u8(p.full as u8);
                    w.u32(p.ranges.len() as u32);
                    for (off, b) in &p.ranges {
                        w.u32(*off);
                        w.lbytes(b);
                    }
                }
            }
            Record::Attach(a) => {
                w.u8(KIND_ATTACH);
                w.u32(a.dbid);
                w.str(&a.name);
                w.str(&a.path);
            }
            Record::EndOfGeneration => w.u8(KIND_END),
            Record::BackupStamp { kind, slot, databases } => {
                w.u8(KIND_BACKUP_STAMP);
                w.u8(kind.code());
                w.u8(slot.kind.code());
                w.u64(slot.time);
                w.u32(slot.gen_low);
                w.u32(slot.gen_high);
                w.u32(databases.len() as u32);
                for d in databases {
                    w.str(d);
                }
            }
        }
        let len = w.buf.len() as u32;
        w.buf[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&w.buf[8..]);
        w.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        w.buf
    }

    /// Size of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        FRAME
            + match self {
                Record::Txn { pages, .. } => {
                    1 + 8 + 4 + pages.iter().map(PageDelta::encoded_len).sum::<usize>()
                }
                Record::Attach(a) => 4 + 8 + a.name.len() + a.path.len(),
                Record::EndOfGeneration => 0,
                Record::BackupStamp { databases, .. } => {
                    1 + 1 + 8 + 4 + 4 + 4 + databases.iter().map(|d| 4 + d.len()).sum::<usize>()
                }
            }
    }

    fn decode_payload(kind: u8, payload: &[u8]) -> Option<Record> {
        let mut r = Reader::new(payload);
        let rec = match kind {
            KIND_TXN => {
                let commit = r.u8().ok()? != 0;
                let begin = Lsn(r.u64().ok()?);
                let n = r.u32().ok()?;
                let mut pages = Vec::with_capacity(n.min(4096) as usize);
                for _ in 0..n {
                    let dbid = r.u32().ok()?;
                    let pgno = r.u64().ok()?;
                    let full = r.u8().ok()? != 0;
                    let nr = r.u32().ok()?;
                    let mut ranges = Vec::with_capacity(nr.min(4096) as usize);
                    for _ in 0..nr {
                        let off = r.u32().ok()?;
                        ranges.push((off, r.lbytes().ok()?.to_vec()));
                    }
                    pages.push(PageDelta { dbid, pgno, full, ranges });
                }
                Record::Txn { commit, begin, pages }
            }
            KIND_ATTACH => Record::Attach(AttachedDb {
                dbid: r.u32().ok()?,
                name: r.string().ok()?,
                path: r.string().ok()?,
            }),
            KIND_END => Record::EndOfGeneration,
            KIND_BACKUP_STAMP => {
                let kind = BackupKind::from_code(r.u8().ok()?)?;
                let slot_kind = SlotKind::from_code(r.u8().ok()?)?;
                let time = r.u64().ok()?;
                let gen_low = r.u32().ok()?;
                let gen_high = r.u32().ok()?;
                let n = r.u32().ok()?;
                let mut databases = Vec::with_capacity(n.min(1024) as usize);
                for _ in 0..n {
                    databases.push(r.string().ok()?);
                }
                Record::BackupStamp {
                    kind,
                    slot: BackupSlot { time, gen_low, gen_high, kind: slot_kind },
                    databases,
                }
            }
            _ => return None,
        };
        (r.pos == payload.len()).then_some(rec)
    }
}

/// How a scan of a generation's records ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanEnd {
    /// An end-of-generation record closed it.
    Closed,
    /// A zeroed area: nothing was written past this point.
    Unwritten,
    /// A record failed its checksum, position or decoding: a torn tail or corruption.
    Damaged(String),
}

/// The records of one generation file image.
#[derive(Debug, Clone)]
pub struct Scan {
    pub records: Vec<(Lsn, Record)>,
    /// Offset just past the last good record.
    pub end: u32,
    pub how: ScanEnd,
}

/// Scans the records of generation `generation` in `image` (a whole log file).
pub fn scan(generation: u32, image: &[u8], from: u32) -> Scan {
    let mut records = Vec::new();
    let mut off = from.max(LOG_HEADER_SIZE) as usize;
    let how = loop {
        if off + FRAME > image.len() {
            break ScanEnd::Damaged("file ends without an end-of-generation record".into());
        }
        let len = get_u32(image, off) as usize;
        if len == 0 && get_u32(image, off + 4) == 0 {
            break ScanEnd::Unwritten;
        }
        if len < FRAME || off + len > image.len() {
            break ScanEnd::Damaged(format!("record at offset {off} has invalid length {len}"));
        }
        let frame = &image[off..off + len];
        if crc32c::crc32c(&frame[8..]) != get_u32(frame, 4) {
            break ScanEnd::Damaged(format!("record at offset {off} fails its checksum"));
        }
        #[allow(clippy::unwrap_used)] // an 8-byte slice
        let lsn = Lsn(u64::from_le_bytes(frame[8..16].try_into().unwrap()));
        if lsn != Lsn::new(generation, off as u32) {
            break ScanEnd::Damaged(format!("record at offset {off} carries position {lsn}"));
        }
        let Some(rec) = Record::decode_payload(frame[16], &frame[17..]) else {
            break ScanEnd::Damaged(format!("record at offset {off} cannot be decoded"));
        };
        off += len;
        let end = rec == Record::EndOfGeneration;
        records.push((lsn, rec));
        if end {
            break ScanEnd::Closed;
        }
    };
    Scan { records, end: off as u32, how }
}

/// Lists a directory, retrying when an entry vanished between the listing and its metadata
/// (the log writer renames files while others list the directory; a host directory listing
/// reports that race as `NotFound`).
pub fn read_dir_stable(
    fs: &dyn volume::FileSystem,
    dir: &Path,
) -> std::io::Result<Vec<volume::DirEntry>> {
    let mut tries = 0;
    loop {
        match fs.read_dir(dir) {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && tries < 20
                    && fs.exists(dir).unwrap_or(false) =>
            {
                tries += 1;
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

/// A log file found in a directory.
#[derive(Debug, Clone)]
pub struct LogFile {
    pub path: PathBuf,
    pub header: LogHeader,
}

/// Lists the generations of `prefix` in `dir`: every closed generation file plus the current
/// one (by its header), sorted by generation. Unreadable headers are errors naming the file.
pub fn list_logs(
    fs: &dyn volume::FileSystem,
    dir: &Path,
    prefix: &str,
) -> crate::Result<Vec<LogFile>> {
    use crate::error::IoContext;
    let mut out: Vec<LogFile> = Vec::new();
    let entries = match read_dir_stable(fs, dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::EngineError::io(dir, e)),
    };
    for e in entries {
        let named = parse_generation_name(prefix, &e.name);
        if named.is_none() && e.name != current_name(prefix) {
            continue;
        }
        let path = dir.join(&e.name);
        let f = fs.open(&path, volume::OpenMode::Read).at(&path)?;
        let mut block = vec![0u8; LOG_HEADER_SIZE as usize];
        let n = f.read_at(&mut block, 0).at(&path)?;
        let header =
            LogHeader::decode(&block[..n]).map_err(|why| crate::EngineError::LogCorrupt {
                path: path.clone(),
                generation: named.unwrap_or(0),
                why,
            })?;
        if let Some(g) = named
            && g != header.generation
        {
            return Err(crate::EngineError::LogCorrupt {
                path,
                generation: g,
                why: format!("header says generation {:#X}", header.generation),
            });
        }
        if out.iter().any(|l| l.header.generation == header.generation) {
            // A crash between the two renames of a roll can leave the current generation
            // under both names; the closed name is authoritative and holds the same bytes.
            continue;
        }
        out.push(LogFile { path, header });
    }
    out.sort_by_key(|l| l.header.generation);
    Ok(out)
}

impl std::fmt::Display for LogHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "generation:        {:#X} ({})", self.generation, self.generation)?;
        writeln!(f, "log signature:     {}", hex(&self.signature))?;
        writeln!(f, "created:           {}", self.created)?;
        writeln!(f, "previous created:  {}", self.previous_created)?;
        writeln!(f, "file size:         {}", self.file_size)?;
        write_attached(f, &self.attached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(generation_name("E00", 0x1a), "E000000001A.log");
        assert_eq!(parse_generation_name("E00", "E000000001A.log"), Some(0x1a));
        assert_eq!(parse_generation_name("E00", "E00.log"), None);
        assert_eq!(parse_generation_name("E00", "E000000001a.log"), None);
        assert_eq!(reserve_names("E00")[1], "E00res00002.jrs");
    }

    #[test]
    fn records_round_trip_and_stop_at_damage() {
        let mut img = vec![0u8; 64 * 1024];
        let recs = vec![
            Record::Attach(AttachedDb { dbid: 1, name: "db".into(), path: "x/db.edb".into() }),
            Record::BackupStamp {
                kind: BackupKind::Incremental,
                slot: BackupSlot { time: 7, gen_low: 2, gen_high: 3, kind: SlotKind::Surrogate },
                databases: vec!["db".into(), "other".into()],
            },
            Record::Txn {
                commit: true,
                begin: Lsn::new(3, 4096),
                pages: vec![PageDelta {
                    dbid: 1,
                    pgno: 5,
                    full: false,
                    ranges: vec![(40, vec![1, 2])],
                }],
            },
        ];
        let mut off = LOG_HEADER_SIZE as usize;
        for r in &recs {
            let b = r.encode(Lsn::new(3, off as u32));
            assert_eq!(b.len(), r.encoded_len());
            img[off..off + b.len()].copy_from_slice(&b);
            off += b.len();
        }
        let s = scan(3, &img, 0);
        assert_eq!(s.how, ScanEnd::Unwritten);
        assert_eq!(s.records.iter().map(|r| r.1.clone()).collect::<Vec<_>>(), recs);
        // Wrong generation: the position check rejects the first record.
        assert!(matches!(scan(4, &img, 0).how, ScanEnd::Damaged(_)));
        img[off - 3] ^= 0xff;
        let s = scan(3, &img, 0);
        assert_eq!(s.records.len(), 2);
        assert!(matches!(s.how, ScanEnd::Damaged(_)));
    }

    #[test]
    fn an_unknown_record_kind_or_backup_type_is_damage() {
        let at = Lsn::new(3, LOG_HEADER_SIZE);
        let stamp = Record::BackupStamp {
            kind: BackupKind::Full,
            slot: BackupSlot { time: 1, gen_low: 1, gen_high: 2, kind: SlotKind::Surrogate },
            databases: vec!["db".into()],
        };
        // Byte 16 is the record kind, byte 17 the stamp's backup type.
        for (at_byte, value) in [(16, 99u8), (17, 9), (18, 0)] {
            let mut b = stamp.encode(at);
            b[at_byte] = value;
            let crc = crc32c::crc32c(&b[8..]);
            b[4..8].copy_from_slice(&crc.to_le_bytes());
            let mut img = vec![0u8; 8192];
            img[LOG_HEADER_SIZE as usize..LOG_HEADER_SIZE as usize + b.len()].copy_from_slice(&b);
            let s = scan(3, &img, 0);
            assert!(s.records.is_empty(), "byte {at_byte} = {value}");
            assert!(
                matches!(&s.how, ScanEnd::Damaged(w) if w.contains("cannot be decoded")),
                "{:?}",
                s.how
            );
        }
    }
}
