//! `seed-throughput`: seeding a passive copy — a database file streamed over the seed endpoints
//! — against `cp` of the file.
//!
//! A file of `--mib` MiB (default 2048) of pseudo-random bytes stands for the database: the
//! active side is a small [`ActiveSource`] serving that file, not a snapshot (taking and holding
//! the seed's snapshot is measured by `snapshot-set`), which the JSON says (`"source": "file"`).
//! Each starting with the page cache dropped:
//!
//! - `cp`: `std::fs::copy` of the file, `File::sync_all`, the directory synced — once before
//!   the seed and once after (the load of a shared machine drifts), the mean is used;
//! - seed: what the passive copy does — `POST /repl/v1/seed/{sg}`, then
//!   `GET /repl/v1/seeds/{id}/0` streamed with [`PeerClient::get_streamed`] into a `.part`
//!   file written as it arrives, synced, renamed into place, the directory synced, and
//!   `DELETE /repl/v1/seeds/{id}` — over mutual TLS on loopback.
//!
//! `ratio_cp` = seed / cp.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use replication::protocol::{self, SeedFile, SeedManifest, StreamInfo};
use replication::source::{ActiveSource, SeedReader, SourceError};
use serde_json::json;
use uuid::Uuid;
use volume::{FsRef, HostFs, OpenMode};

use crate::args::{SeedArgs, median};
use crate::replication_throughput::{Loopback, SG, cp_synced, sync_dir};
use crate::store_setup::{self as setup, MIB};

/// Serves one file as the only database of every seed.
struct FileSource {
    fs: FsRef,
    path: PathBuf,
    len: u64,
}

impl ActiveSource for FileSource {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        Err(SourceError::NotFound(format!("no log stream of {sg} here")))
    }

    fn log_file(&self, sg: &str, _: u32) -> Result<Vec<u8>, SourceError> {
        Err(SourceError::NotFound(format!("no log stream of {sg} here")))
    }

    fn start_seed(&self, sg: &str, _: &str) -> Result<SeedManifest, SourceError> {
        Ok(SeedManifest {
            id: Uuid::new_v4(),
            sg: sg.into(),
            prefix: "E00".into(),
            signature: protocol::hex(&[0; 16]),
            generation: 1,
            log_file_size: 1 << 20,
            page_size: 32 << 10,
            databases: vec![SeedFile { name: "db".into(), size: self.len }],
            snapshot_set: Uuid::nil(),
        })
    }

    fn seed_file(&self, _: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        if index != 0 {
            return Err(SourceError::NotFound(format!("no database {index}")));
        }
        let file = self
            .fs
            .open(&self.path, OpenMode::Read)
            .map_err(|e| SourceError::Internal(format!("{}: {e}", self.path.display())))?;
        Ok(SeedReader { file, len: self.len })
    }

    fn end_seed(&self, _: Uuid) -> Result<(), SourceError> {
        Ok(())
    }

    fn refused(&self, addr: &str, reason: &str) {
        eprintln!("warning: connection from {addr} refused: {reason}");
    }
}

/// Writes `mib` MiB of pseudo-random bytes to `path` and syncs it.
fn make_database(path: &Path, mib: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..mib {
        for w in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            w.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&chunk)?;
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// Runs the scenario.
pub fn run(opts: &SeedArgs) -> anyhow::Result<()> {
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let active = HostFs::new(dir.join("active"))?;
    let passive = HostFs::new(dir.join("passive"))?;
    let pfs: FsRef = Arc::new(passive.clone());
    let db = PathBuf::from("db.edb");
    let mib = opts.mib.max(1);
    let t = Instant::now();
    make_database(&active.host_path(&db)?, mib)?;
    let fill_s = t.elapsed().as_secs_f64();
    let len = mib << 20;

    // cp of the file.
    let mut cache_dropped = setup::drop_caches();
    let src = [active.host_path(&db)?];
    let mut cp_runs = vec![cp_synced(&src, &dir.join("cp"))?];
    sync_dir(dir)?;

    // The seed.
    let source = Arc::new(FileSource { fs: Arc::new(active.clone()), path: db.clone(), len });
    let lo = Loopback::start(&dir.join("pki"), source)?;
    let into = PathBuf::from("db");
    pfs.create_dir_all(&into)?;
    cache_dropped &= setup::drop_caches();
    let t = Instant::now();
    let m: SeedManifest = lo.rt.block_on(lo.client.post_json(&protocol::seed_path(SG)))?;
    for (i, d) in m.databases.iter().enumerate() {
        let path = into.join(format!("{}.edb", d.name));
        let part = PathBuf::from(format!("{}.part", path.display()));
        let f = pfs.open(&part, OpenMode::Create)?;
        f.set_len(0)?;
        let mut off = 0u64;
        let mut sink = |data: &[u8]| -> std::io::Result<()> {
            f.write_at(data, off)?;
            off += data.len() as u64;
            Ok(())
        };
        let got = lo
            .rt
            .block_on(lo.client.get_streamed(&protocol::seed_file_path(m.id, i), &mut sink))?;
        if got != d.size {
            bail!("seed file {} ended after {got} of {} bytes", d.name, d.size);
        }
        f.sync()?;
        drop(f);
        pfs.rename(&part, &path)?;
    }
    pfs.sync_dir(&into)?;
    lo.rt.block_on(lo.client.delete(&protocol::seed_end_path(m.id)))?;
    let seed_s = t.elapsed().as_secs_f64();
    lo.stop()?;

    let seeded = std::fs::metadata(passive.host_path(&into.join("db.edb"))?)?.len();
    if seeded != len {
        bail!("the seeded file has {seeded} bytes of {len}");
    }
    let size = len as f64 / MIB;
    // cp once more, after: the machine's load drifts; the mean of before and after is used.
    cache_dropped &= setup::drop_caches();
    cp_runs.push(cp_synced(&src, &dir.join("cp"))?);
    let cp_s = median(cp_runs.clone());
    let (seed, cp) = (size / seed_s, size / cp_s);
    println!(
        "{}",
        json!({
            "scenario": "seed-throughput",
            "db_mib": size,
            "seed_mib_s": seed,
            "cp_mib_s": cp,
            "ratio_cp": seed / cp,
            "seconds": {"seed": seed_s, "cp": cp_s, "cp_runs": cp_runs},
            "fill_s": fill_s,
            "page_cache_dropped": cache_dropped,
            "source": "file",
            "source_note": "the active serves a plain file, not a snapshot: the seed's snapshot is measured by snapshot-set",
            "transport": "mutual TLS over TCP on 127.0.0.1, HTTP/1.1, 1 MiB chunks",
        })
    );
    Ok(())
}
