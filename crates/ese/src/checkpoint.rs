//! The checkpoint file (`E00.chk`): the oldest log position recovery needs, plus what the
//! instance must know to start recovery (its log signature and the databases attached).
//!
//! It is replaced atomically ([`volume::fs::write_atomic`]: write a temporary, sync, rename,
//! sync the directory), and carries a checksum, so it is always either the old or the new one.

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
        let signature: [u8; 16] = r.take(16).map_err(f)?.try_into().unwrap();
        let checkpoint = Lsn(r.u64().map_err(f)?);
        let next_dbid = r.u32().map_err(f)?;
        let log_file_size = r.u32().map_err(f)?;
        let page_size = r.u32().map_err(f)?;
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

/// Writes the checkpoint atomically.
pub fn write_checkpoint(fs: &dyn volume::FileSystem, path: &Path, chk: &Checkpoint) -> Result<()> {
    volume::fs::write_atomic(fs, path, &chk.encode()).at(path)
}

/// Reads and verifies the checkpoint.
pub fn read_checkpoint(fs: &dyn volume::FileSystem, path: &Path) -> Result<Checkpoint> {
    let data = volume::fs::read_all(fs, path).at(path)?;
    Checkpoint::decode(&data)
        .map_err(|why| EngineError::HeaderCorrupt { path: path.to_path_buf(), why })
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
        for a in &self.attached {
            writeln!(f, "attached db {}:     {} ({})", a.dbid, a.name, a.path)?;
        }
        Ok(())
    }
}
