//! The checkpoint file (`E00.chk`): the oldest log position recovery needs, plus what the
//! instance must know to start recovery (its log signature and the databases attached).
//!
//! The file has two fixed slots written alternately in place, each with a sequence number and
//! a checksum: a reader takes the newer valid slot, so it always sees the old or the new
//! checkpoint, and updating it never needs free space.

use std::path::Path;

use serde::Serialize;

use crate::codec::{Reader, Writer, get_u32};
use crate::error::{EngineError, IoContext, Result};
use crate::logfmt::AttachedDb;
use crate::lsn::{Lsn, hex};

const MAGIC: u32 = 0x4b48_4345; // "ECHK"

/// The decoded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    #[serde(serialize_with = "crate::lsn::ser_hex")]
    pub signature: [u8; 16],
    /// Recovery starts reading the log here.
    pub checkpoint: Lsn,
    /// The databases attached when it was written.
    pub attached: Vec<AttachedDb>,
    /// Next database id to hand out.
    pub next_dbid: u32,
    pub log_file_size: u32,
    pub page_size: u32,
    pub circular_logging: bool,
}

impl Checkpoint {
    /// Generation of the checkpoint position.
    pub fn generation(&self) -> u32 {
        self.checkpoint.generation()
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(MAGIC);
        w.bytes(&self.signature);
        w.u64(self.checkpoint.0);
        w.u32(self.next_dbid);
        w.u32(self.log_file_size);
        w.u32(self.page_size);
        w.u8(self.circular_logging as u8);
        w.u32(self.attached.len() as u32);
        for a in &self.attached {
            w.u32(a.dbid);
            w.str(&a.name);
            w.str(&a.path);
        }
        let mut out = Vec::with_capacity(w.buf.len() + 8);
        out.extend_from_slice(&(w.buf.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&w.buf).to_le_bytes());
        out.extend_from_slice(&w.buf);
        out
    }

    fn decode(data: &[u8]) -> Result<Self, String> {
        if data.len() < 8 {
            return Err("file too short".into());
        }
        let n = get_u32(data, 0) as usize;
        if n + 8 != data.len() {
            return Err(format!("length field {n} does not match file size {}", data.len()));
        }
        if crc32c::crc32c(&data[8..]) != get_u32(data, 4) {
            return Err("checksum mismatch".into());
        }
        let mut r = Reader::new(&data[8..]);
        let f = |_| "truncated".to_string();
        if r.u32().map_err(f)? != MAGIC {
            return Err("not a checkpoint file".into());
        }
        #[allow(clippy::unwrap_used)] // take(16) returned 16 bytes
        let signature: [u8; 16] = r.take(16).map_err(f)?.try_into().unwrap();
        let checkpoint = Lsn(r.u64().map_err(f)?);
        let next_dbid = r.u32().map_err(f)?;
        if next_dbid == u32::MAX {
            // Attaching a database hands out `next_dbid` and counts on: no id would follow.
            return Err(format!("next database id {next_dbid} is past the last usable one"));
        }
        let log_file_size = r.u32().map_err(f)?;
        let page_size = r.u32().map_err(f)?;
        if checkpoint.offset() > log_file_size {
            // Recovery would start reading (and seal the log) past the end of the file.
            return Err(format!(
                "checkpoint {checkpoint} lies past the end of a log file of {log_file_size} bytes"
            ));
        }
        let circular_logging = r.u8().map_err(f)? != 0;
        let count = r.u32().map_err(f)?;
        let mut attached = Vec::new();
        for _ in 0..count {
            attached.push(AttachedDb {
                dbid: r.u32().map_err(f)?,
                name: r.string().map_err(f)?,
                path: r.string().map_err(f)?,
            });
        }
        Ok(Checkpoint {
            signature,
            checkpoint,
            attached,
            next_dbid,
            log_file_size,
            page_size,
            circular_logging,
        })
    }
}

/// Size of one checkpoint slot; the file holds two.
pub const SLOT_SIZE: usize = 4096;

/// Writes the checkpoint into the slot after the newer one, in place, and syncs it.
///
/// Two alternating slots (each with a sequence number and checksum) instead of a
/// rename-based replacement: updating never allocates space, so the checkpoint can still
/// advance while the volume is full, and a torn write only ever damages the older slot.
pub fn write_checkpoint(fs: &dyn volume::FileSystem, path: &Path, chk: &Checkpoint) -> Result<()> {
    let body = chk.encode();
    if body.len() + 8 > SLOT_SIZE {
        return Err(EngineError::TooLarge {
            what: "checkpoint",
            len: body.len(),
            max: SLOT_SIZE - 8,
        });
    }
    let exists = fs.exists(path).at(path)?;
    let (f, seq) = if exists {
        let f = fs.open(path, volume::OpenMode::ReadWrite).at(path)?;
        let seq = read_slots(f.as_ref(), path).map(|(s, _)| s).unwrap_or(0);
        (f, seq + 1)
    } else {
        let f = fs.open(path, volume::OpenMode::Create).at(path)?;
        f.set_len(2 * SLOT_SIZE as u64).at(path)?;
        (f, 1)
    };
    let mut slot = vec![0u8; SLOT_SIZE];
    slot[0..8].copy_from_slice(&seq.to_le_bytes());
    slot[8..8 + body.len()].copy_from_slice(&body);
    f.write_at(&slot, (seq % 2) * SLOT_SIZE as u64).at(path)?;
    f.sync().at(path)?;
    if !exists {
        let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
        fs.sync_dir(&parent).at(&parent)?;
    }
    Ok(())
}

fn read_slots(f: &dyn volume::File, path: &Path) -> Result<(u64, Checkpoint)> {
    let mut best: Option<(u64, Checkpoint)> = None;
    let mut problems = Vec::new();
    for i in 0..2u64 {
        let mut slot = vec![0u8; SLOT_SIZE];
        if let Err(e) = f.read_exact_at(&mut slot, i * SLOT_SIZE as u64) {
            problems.push(format!("slot {i}: {e}"));
            continue;
        }
        #[allow(clippy::unwrap_used)] // an 8-byte slice
        let seq = u64::from_le_bytes(slot[0..8].try_into().unwrap());
        let n = get_u32(&slot, 8) as usize;
        let body = &slot[8..(8 + 8 + n).min(SLOT_SIZE)];
        match Checkpoint::decode(body) {
            Ok(c) if seq != 0 => {
                if best.as_ref().is_none_or(|(s, _)| seq > *s) {
                    best = Some((seq, c));
                }
            }
            Ok(_) => problems.push(format!("slot {i}: empty")),
            Err(why) => problems.push(format!("slot {i}: {why}")),
        }
    }
    best.ok_or_else(|| EngineError::HeaderCorrupt {
        path: path.to_path_buf(),
        why: problems.join("; "),
    })
}

/// Reads and verifies the checkpoint (the newer valid slot).
pub fn read_checkpoint(fs: &dyn volume::FileSystem, path: &Path) -> Result<Checkpoint> {
    let f = fs.open(path, volume::OpenMode::Read).at(path)?;
    Ok(read_slots(f.as_ref(), path)?.1)
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "checkpoint:        {} (generation {:#X})",
            self.checkpoint,
            self.generation()
        )?;
        writeln!(f, "log signature:     {}", hex(&self.signature))?;
        writeln!(f, "log file size:     {}", self.log_file_size)?;
        writeln!(f, "page size:         {}", self.page_size)?;
        writeln!(f, "circular logging:  {}", self.circular_logging)?;
        crate::logfmt::write_attached(f, &self.attached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volume::FileSystem;

    fn chk(at: u64) -> Checkpoint {
        Checkpoint {
            signature: [7; 16],
            checkpoint: Lsn(at),
            attached: vec![AttachedDb { dbid: 1, name: "db".into(), path: "db/db.edb".into() }],
            next_dbid: 2,
            log_file_size: 1 << 20,
            page_size: 32768,
            circular_logging: false,
        }
    }

    #[test]
    fn alternating_slots_survive_a_torn_update() {
        let fs = volume::mem::MemFs::new();
        let p = Path::new("E00.chk");
        write_checkpoint(&fs, p, &chk(10)).unwrap();
        write_checkpoint(&fs, p, &chk(20)).unwrap();
        assert_eq!(read_checkpoint(&fs, p).unwrap().checkpoint, Lsn(20));
        write_checkpoint(&fs, p, &chk(30)).unwrap();
        // Tear the newest slot (slot 1 holds sequence 3): the previous one is used.
        let f = fs.open(p, volume::OpenMode::ReadWrite).unwrap();
        f.write_at(&[0xff; 40], SLOT_SIZE as u64 + 30).unwrap();
        assert_eq!(read_checkpoint(&fs, p).unwrap().checkpoint, Lsn(20));
        f.write_at(&[0xff; 40], 30).unwrap();
        let err = read_checkpoint(&fs, p).unwrap_err().to_string();
        assert!(err.contains("E00.chk") && err.contains("checksum"), "{err}");
    }
}
