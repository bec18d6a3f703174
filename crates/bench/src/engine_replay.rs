//! `engine-replay`: how fast recovery replays the log.
//!
//! Writes a database's worth of log (1 KiB rows in transactions of 64), keeps a copy of the
//! database file as it was before any of it, then hard-recovers that copy through every
//! generation and reports MiB of log replayed per second.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use ese::{DatabaseSpec, Durability, HardRecovery, Instance, InstanceConfig};
use volume::{FileSystem, FsRef, HostFs, OpenMode};

fn copy(fs: &HostFs, from: &Path, to: &Path) -> Result<()> {
    let data = volume::fs::read_all(fs, from)?;
    let f = fs.open(to, OpenMode::Create)?;
    f.set_len(0)?;
    f.write_at(&data, 0)?;
    f.sync()?;
    Ok(())
}

/// Runs the scenario and prints one JSON line.
pub fn run() -> Result<()> {
    let target_mib: u64 =
        std::env::var("BENCH_LOG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let base = std::env::var("BENCH_DIR").unwrap_or_else(|_| "/work".into());
    let dir = tempfile::Builder::new().prefix("bench-engine-replay-").tempdir_in(base)?;
    let host = HostFs::new(dir.path())?;
    let fs: FsRef = Arc::new(host.clone());
    let inst = Instance::create(InstanceConfig::new(fs.clone(), "logs", fs.clone(), "sys"))?;
    inst.create_database("db", fs.clone(), "db/db.edb")?;
    let mut t = inst.begin_write()?;
    t.create_table("db", "rows")?;
    t.commit(Durability::Durable)?;
    copy(&host, Path::new("db/db.edb"), Path::new("db/restored.edb"))?;
    let value = vec![0x5au8; 1024];
    let mut i = 0u64;
    while (inst.log_state()?.current_generation as u64) < target_mib {
        let mut t = inst.begin_write()?;
        for _ in 0..64 {
            // Spread keys so that pages are revisited, as mail delivery does.
            let k = (i.wrapping_mul(0x9E37_79B9) % 50_000).to_be_bytes();
            t.put("db", "rows", &k, &value)?;
            i += 1;
        }
        t.commit(Durability::Lazy)?;
    }
    inst.shutdown()?;
    let log_bytes: u64 = host
        .read_dir(Path::new("logs"))?
        .iter()
        .filter(|e| e.name.ends_with(".log"))
        .map(|e| e.len)
        .sum();
    let req = HardRecovery {
        databases: vec![DatabaseSpec::new("db", fs.clone(), "db/restored.edb")],
        log_fs: fs.clone(),
        log_dir: "logs".into(),
        prefix: "E00".into(),
        roll_forward: None,
        stop_after_generation: None,
    };
    let start = Instant::now();
    let rep = ese::hard_recover(&req)?;
    let secs = start.elapsed().as_secs_f64();
    let log_mib = log_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{}",
        serde_json::json!({
            "scenario": "engine-replay",
            "log_mib": (log_mib * 10.0).round() / 10.0,
            "generations": rep.generations.len(),
            "transactions": rep.transactions,
            "replay_mib_s": ((log_mib / secs) * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
