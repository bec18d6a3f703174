//! A small node for the requester's end-to-end tests: two host-directory volumes (logs,
//! databases), a coordinator with the store writer, a storage group with one database, and a
//! repository.

#![allow(dead_code)]
// Test helpers: a failed unwrap is a failed test, with its line (as clippy.toml allows in tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup::Requester;
use backup::repo::{InitOptions, Repository};
use events::MemorySink;
use store::{DatabaseDef, EngineTuning, InformationStore, StorageGroupDef, StoreWriter, VolumeRef};
use volume::{FsRef, HostFs};
use vss::testing::TestProvider;
use vss::{Coordinator, CoordinatorConfig};

pub struct Node {
    pub dir: tempfile::TempDir,
    pub logs: FsRef,
    pub db: FsRef,
    pub events: Arc<MemorySink>,
    pub coordinator: Coordinator,
    pub store: Arc<InformationStore>,
    pub requester: Requester,
    pub repo_fs: FsRef,
    /// The fault injector the database volume goes through, when asked for.
    pub db_faults: Option<volume::fault::FaultInjector>,
    /// The fault injector the log volume goes through, when asked for.
    pub logs_faults: Option<volume::fault::FaultInjector>,
}

pub fn tuning() -> EngineTuning {
    EngineTuning { log_file_size: 128 << 10, page_size: 8 << 10, cache_pages: 256 }
}

pub fn sg_def(logs: &FsRef, db: &FsRef) -> StorageGroupDef {
    StorageGroupDef {
        name: "SG1".into(),
        log_volume: VolumeRef { label: "logs".into(), fs: logs.clone() },
        log_dir: PathBuf::from("SG1/logs"),
        system_dir: PathBuf::from("SG1/system"),
        prefix: "E00".into(),
        circular_logging: false,
        databases: vec![DatabaseDef {
            name: "DB1".into(),
            volume: VolumeRef { label: "db".into(), fs: db.clone() },
            path: PathBuf::from("SG1/DB1.edb"),
        }],
        tuning: tuning(),
    }
}

pub fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    build(dir, &["DB1"], false, repo_options())
}

/// The options of every test node's repository: small chunks, so that a small store makes
/// many of them.
pub fn repo_options() -> InitOptions {
    InitOptions { chunk_size: 64 << 10, zstd_level: 1, ..Default::default() }
}

/// A node whose repository is made with `opts`.
pub fn node_with_repo(opts: InitOptions) -> Node {
    let dir = tempfile::tempdir().unwrap();
    build(dir, &["DB1"], false, opts)
}

/// A node whose storage group has `databases` (all on the database volume; both volumes go
/// through fault injectors).
pub fn node_with(dir: tempfile::TempDir, databases: &[&str]) -> Node {
    build(dir, databases, true, repo_options())
}

/// A node whose volumes are real shadow volumes snapshotted by the software provider (the
/// test provider's copies do not keep file modes, for one).
pub fn node_on_shadow_volumes() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let provider = Arc::new(volume::SoftwareProvider::new());
    let mut fs = Vec::new();
    for label in ["logs", "db"] {
        let root = dir.path().join(format!("vol-{label}"));
        let vol = volume::Volume::create(root, volume::VolumeOptions::new(label)).unwrap();
        provider.register(vol.clone());
        fs.push(Arc::new(vol) as FsRef);
    }
    let (logs, db) = (fs[0].clone(), fs[1].clone());
    let adapter = Arc::new(vss::software::SoftwareProviderAdapter::new(provider));
    assemble(dir, &["DB1"], logs, db, adapter, None, None, repo_options())
}

fn build(dir: tempfile::TempDir, databases: &[&str], faults: bool, opts: InitOptions) -> Node {
    let host_logs: FsRef = Arc::new(HostFs::new(dir.path().join("vol-logs")).unwrap());
    let logs_faults = faults.then(|| volume::fault::FaultInjector::new(host_logs.clone()));
    let logs = logs_faults.as_ref().map_or(host_logs, |f| f.as_ref());
    let host_db: FsRef = Arc::new(HostFs::new(dir.path().join("vol-db")).unwrap());
    let db_faults = faults.then(|| volume::fault::FaultInjector::new(host_db.clone()));
    let db = db_faults.as_ref().map_or(host_db, |f| f.as_ref());
    let provider = TestProvider::new("test provider", dir.path().join("scratch"));
    provider.add_volume("logs", logs.clone());
    provider.add_volume("db", db.clone());
    assemble(dir, databases, logs, db, provider, db_faults, logs_faults, opts)
}

#[allow(clippy::too_many_arguments)] // Each is one part of the node.
fn assemble(
    dir: tempfile::TempDir,
    databases: &[&str],
    logs: FsRef,
    db: FsRef,
    provider: Arc<dyn vss::Provider>,
    db_faults: Option<volume::fault::FaultInjector>,
    logs_faults: Option<volume::fault::FaultInjector>,
    opts: InitOptions,
) -> Node {
    let repo_fs: FsRef = Arc::new(HostFs::new(dir.path().join("repo")).unwrap());
    let events = Arc::new(MemorySink::new("node1"));
    let coordinator = Coordinator::new("node1", CoordinatorConfig::default(), events.clone());
    coordinator.register_provider(provider);
    let store = InformationStore::new("node1", events.clone());
    let mut def = sg_def(&logs, &db);
    def.databases = databases
        .iter()
        .map(|name| DatabaseDef {
            name: name.to_string(),
            volume: VolumeRef { label: "db".into(), fs: db.clone() },
            path: PathBuf::from(format!("SG1/{name}.edb")),
        })
        .collect();
    store.add_storage_group(def).unwrap().mount().unwrap();
    coordinator.register_writer(StoreWriter::new(store.clone())).unwrap();
    let repo = Arc::new(Repository::init(repo_fs.clone(), "", opts).unwrap());
    let requester = Requester::new(coordinator.clone(), store.clone(), repo, events.clone());
    Node { dir, logs, db, events, coordinator, store, requester, repo_fs, db_faults, logs_faults }
}

impl Node {
    /// The node's volumes and their host directories, as the node passes them to
    /// [`backup::repository_for_backup`].
    pub fn volume_dirs(&self) -> Vec<backup::VolumeDir> {
        ["logs", "db"].map(|l| (l.to_string(), self.dir.path().join(format!("vol-{l}")))).to_vec()
    }
}

/// How long any wait in these tests may take before it fails: generous, as CI runs them on
/// two busy cores, and only a hang should reach it.
pub const WAIT: Duration = Duration::from_secs(180);

/// Polls `done` until it holds; fails the test naming `what` it waited for if it does not
/// within [`WAIT`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
