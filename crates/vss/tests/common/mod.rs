//! A test rig: two host volumes with store-like files, a copying provider, scripted writers,
//! and a coordinator that logs to a real event log.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use events::{Event, EventLog, Filter, LogOptions};
use uuid::Uuid;
use volume::FsRef;
use vss::testing::{Journal, ScriptedWriter, TestProvider};
use vss::{BackupSchema, Coordinator, CoordinatorConfig};

pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub coord: Coordinator,
    pub log: Arc<EventLog>,
    pub provider: Arc<TestProvider>,
    pub writers: Vec<Arc<ScriptedWriter>>,
    pub journal: Journal,
}

/// Deadlines short enough that failure tests (a writer stalling until aborted) end in a few
/// seconds, and generous enough that a healthy writer or provider on two busy CI cores never
/// misses one.
pub fn quick_config() -> CoordinatorConfig {
    CoordinatorConfig {
        event_timeout: Duration::from_secs(2),
        freeze_window: Duration::from_secs(30),
        flush_hold_timeout: Duration::from_secs(10),
        snapshot_set_wait: Duration::from_secs(20),
        ..CoordinatorConfig::default()
    }
}

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// `n` writers; writer i owns storage group `sg{i}` (database on `db`, logs on `logs`).
pub fn rig(n: usize, config: CoordinatorConfig, schema: BackupSchema) -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let (db, logs) = (tmp.path().join("vol-db"), tmp.path().join("vol-logs"));
    for i in 0..n {
        write(&db, &format!("sg{i}/mail{i}.edb"), format!("database {i}").as_bytes());
        write(&logs, &format!("sg{i}/E00.log"), b"current log");
        write(&logs, &format!("sg{i}/E00.chk"), b"checkpoint");
        write(&logs, &format!("sg{i}/E0000000001.log"), b"generation 1");
    }
    let provider = TestProvider::new("test-provider", tmp.path().join("scratch"));
    provider.add_volume("db", Arc::new(volume::HostFs::new(&db).unwrap()));
    provider.add_volume("logs", Arc::new(volume::HostFs::new(&logs).unwrap()));
    let fs: FsRef = Arc::new(volume::HostFs::new(tmp.path().join("node")).unwrap());
    let log = Arc::new(EventLog::open(fs, "events", "node-1", LogOptions::default()).unwrap());
    let coord = Coordinator::new("node-1", config, log.clone());
    coord.register_provider(provider.clone());
    let journal: Journal = Default::default();
    let writer_id = Uuid::new_v4();
    let writers = (0..n)
        .map(|i| {
            let md = ScriptedWriter::store_metadata(
                writer_id,
                &format!("instance-{i}"),
                &[&format!("sg{i}")],
                "db",
                "logs",
                schema.clone(),
            );
            let w = ScriptedWriter::new(md, Some(journal.clone()));
            coord.register_writer(w.clone()).unwrap();
            w
        })
        .collect();
    Rig { tmp, coord, log, provider, writers, journal }
}

impl Rig {
    /// The job's events, oldest first.
    pub fn trail(&self, job: Uuid) -> Vec<Event> {
        self.log.query(&Filter::job(job)).unwrap()
    }

    /// The job's event IDs, oldest first.
    pub fn trail_ids(&self, job: Uuid) -> Vec<u32> {
        self.trail(job).iter().map(|e| e.id).collect()
    }
}
