//! `snapshot-set`: how long a full job holds writes, over the real software provider.
//!
//! A coordinator with one scripted store writer over two copy-on-write volumes (a 64 MiB
//! database on one, its logs on the other) runs full backup jobs; each job's flush-and-hold
//! window and whole `do_snapshot_set` call are measured. Was a test that returned early unless
//! `SHADOWCOPY_STRESS` was set.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use events::{EventLog, LogOptions};
use serde_json::json;
use uuid::Uuid;
use volume::{FileSystem, OpenMode, SoftwareProvider, Volume, VolumeOptions};
use vss::testing::ScriptedWriter;
use vss::{
    BackupSchema, BackupState, Coordinator, CoordinatorConfig, SnapshotContext,
    SoftwareProviderAdapter,
};

use crate::args::{SnapshotSetArgs, median};

const DB_BYTES: usize = 64 << 20;

fn write(v: &Volume, path: &str, data: &[u8]) -> anyhow::Result<()> {
    let p = Path::new(path);
    if let Some(parent) = p.parent() {
        v.create_dir_all(parent)?;
    }
    let f = v.open(p, OpenMode::Create)?;
    f.set_len(0)?;
    f.write_at(data, 0)?;
    f.sync()?;
    Ok(())
}

/// Runs the scenario.
pub fn run(opts: &SnapshotSetArgs) -> anyhow::Result<()> {
    let scratch = opts.scratch.scratch()?;
    let dir = &scratch.path;
    let db = Volume::create(dir.join("db"), VolumeOptions::new("db"))?;
    let logs = Volume::create(dir.join("logs"), VolumeOptions::new("logs"))?;
    write(&db, "sg0/mail.edb", &vec![7u8; DB_BYTES])?;
    write(&logs, "sg0/E00.log", b"log v1")?;
    write(&logs, "sg0/E00.chk", b"checkpoint v1")?;
    let provider = Arc::new(SoftwareProvider::new());
    provider.register(db.clone());
    provider.register(logs.clone());
    let adapter = Arc::new(SoftwareProviderAdapter::new(provider));
    let fs: volume::FsRef = Arc::new(volume::HostFs::new(dir.join("node"))?);
    let log = Arc::new(EventLog::open(fs, "events", "bench", LogOptions::default())?);
    let coord = Coordinator::new("bench", CoordinatorConfig::default(), log);
    coord.register_provider(adapter);
    let md = ScriptedWriter::store_metadata(
        Uuid::new_v4(),
        "store",
        &["sg0"],
        "db",
        "logs",
        BackupSchema::default(),
    );
    let writer = ScriptedWriter::new(md, None);
    coord.register_writer(writer.clone())?;

    let jobs = opts.jobs.max(1);
    let (mut holds, mut sets) = (Vec::new(), Vec::new());
    for _ in 0..jobs {
        let mut s = coord.backup_session(SnapshotContext::Backup)?;
        s.gather_writer_metadata()?;
        s.set_backup_state(BackupState {
            components: writer.component_keys(),
            ..BackupState::default()
        })?;
        s.prepare_for_backup()?;
        let t = Instant::now();
        let hold = s.do_snapshot_set()?.hold;
        sets.push(t.elapsed().as_secs_f64() * 1e3);
        holds.push(hold.as_secs_f64() * 1e3);
        s.backup_complete()?;
        s.shutdown();
    }
    println!(
        "{}",
        json!({
            "scenario": "snapshot-set",
            "jobs": jobs,
            "volumes": 2,
            "db_bytes": DB_BYTES,
            "hold_ms_median": median(holds),
            "do_snapshot_set_ms_median": median(sets),
        })
    );
    Ok(())
}
