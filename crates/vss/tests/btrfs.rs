//! The coordinator over the btrfs provider, alone and in a set mixed with the software
//! provider, on a real btrfs (a loop device; needs root: fails under CI without it, else
//! skips saying why).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use events::{EventLog, LogOptions};
use parking_lot::Mutex;
use uuid::Uuid;
use volume::btrfs::scratch::ScratchBtrfs;
use volume::{BtrfsProvider, FileSystem, FsRef, OpenMode, SoftwareProvider, Volume, VolumeOptions};
use vss::{
    BackupState, BtrfsProviderAdapter, CommittedSnapshot, Coordinator, CoordinatorConfig, Provider,
    ProviderError, SnapshotContext, SnapshotInfo, SoftwareProviderAdapter,
};

fn write(v: &Volume, path: &str, data: &[u8]) {
    let f = v.open(Path::new(path), OpenMode::Create).unwrap();
    f.set_len(0).unwrap();
    f.write_at(data, 0).unwrap();
}

fn read(fs: &FsRef, path: &str) -> Vec<u8> {
    volume::fs::read_all(fs.as_ref(), Path::new(path)).unwrap()
}

/// Delegates to a provider and records, whenever the coordinator's nested commit runs inside
/// this provider's hold, whether every volume of the test holds its writes at that moment.
struct Probe {
    inner: Arc<dyn Provider>,
    volumes: Vec<Volume>,
    seen: Mutex<Vec<Vec<bool>>>,
}

impl Provider for Probe {
    fn id(&self) -> Uuid {
        self.inner.id()
    }
    fn name(&self) -> String {
        self.inner.name()
    }
    fn supports(&self, volume: &str) -> bool {
        self.inner.supports(volume)
    }
    fn begin_set(&self, set: Uuid, v: &[String], c: SnapshotContext) -> Result<(), ProviderError> {
        self.inner.begin_set(set, v, c)
    }
    fn commit_set(&self, set: Uuid, t: Duration) -> Result<Vec<CommittedSnapshot>, ProviderError> {
        self.commit_set_within(set, t, &mut || Ok(()))
    }
    fn commit_set_within(
        &self,
        set: Uuid,
        t: Duration,
        within: &mut dyn FnMut() -> Result<(), ProviderError>,
    ) -> Result<Vec<CommittedSnapshot>, ProviderError> {
        self.inner.commit_set_within(set, t, &mut || {
            self.seen.lock().push(self.volumes.iter().map(Volume::writes_held).collect());
            within()
        })
    }
    fn holds_within(&self) -> bool {
        self.inner.holds_within()
    }
    fn abort_set(&self, set: Uuid) -> Result<(), ProviderError> {
        self.inner.abort_set(set)
    }
    fn delete(&self, snapshot: Uuid) -> Result<(), ProviderError> {
        self.inner.delete(snapshot)
    }
    fn query(&self) -> Vec<SnapshotInfo> {
        self.inner.query()
    }
    fn view(&self, snapshot: Uuid) -> Result<FsRef, ProviderError> {
        self.inner.view(snapshot)
    }
}

struct Mixed {
    _b: ScratchBtrfs,
    _tmp: tempfile::TempDir,
    coord: Coordinator,
    /// On btrfs.
    db: Volume,
    /// Software.
    logs: Volume,
    probes: Vec<Arc<Probe>>,
}

fn mixed(test: &str) -> Option<Mixed> {
    let b = ScratchBtrfs::for_test(test)?;
    let tmp = tempfile::tempdir().unwrap();
    let db = Volume::create(b.subvolume("db").unwrap(), VolumeOptions::new("db")).unwrap();
    let logs = Volume::create(tmp.path().join("logs"), VolumeOptions::new("logs")).unwrap();
    let btrfs = Arc::new(BtrfsProvider::new());
    btrfs.register(db.clone()).unwrap();
    let software = Arc::new(SoftwareProvider::new());
    software.register(logs.clone());
    let fs: FsRef = Arc::new(volume::HostFs::new(tmp.path().join("node")).unwrap());
    let log = Arc::new(EventLog::open(fs, "events", "node-1", LogOptions::default()).unwrap());
    let config = CoordinatorConfig {
        event_timeout: Duration::from_secs(10),
        flush_hold_timeout: Duration::from_secs(10),
        ..CoordinatorConfig::default()
    };
    let coord = Coordinator::new("node-1", config, log);
    let vols = vec![db.clone(), logs.clone()];
    let inner: [Arc<dyn Provider>; 2] = [
        Arc::new(BtrfsProviderAdapter::new(btrfs)),
        Arc::new(SoftwareProviderAdapter::new(software)),
    ];
    let probes: Vec<Arc<Probe>> = inner
        .into_iter()
        .map(|p| Arc::new(Probe { inner: p, volumes: vols.clone(), seen: Mutex::new(Vec::new()) }))
        .collect();
    for p in &probes {
        coord.register_provider(p.clone());
    }
    Some(Mixed { _b: b, _tmp: tmp, coord, db, logs, probes })
}

fn snapshot_both(m: &Mixed) -> (vss::SnapshotSet, vss::BackupSession) {
    let mut s = m.coord.backup_session(SnapshotContext::FileShareBackup).unwrap();
    s.gather_writer_metadata().unwrap();
    s.set_backup_state(BackupState {
        volumes: vec!["db".into(), "logs".into()],
        ..BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    let set = s.do_snapshot_set().unwrap().clone();
    (set, s)
}

#[test]
fn a_set_mixing_btrfs_and_software_is_taken_with_both_volumes_held() {
    let Some(m) = mixed("mixed set") else { return };
    write(&m.db, "db.edb", b"db v1");
    write(&m.logs, "E00.log", b"log v1");
    let (set, s) = snapshot_both(&m);
    assert_eq!(set.snapshots.len(), 2);
    let providers: Vec<&str> = set.snapshots.iter().map(|x| x.provider.as_str()).collect();
    assert!(providers.contains(&volume::btrfs::PROVIDER_NAME), "{providers:?}");
    assert!(providers.contains(&volume::provider::PROVIDER_NAME), "{providers:?}");
    // The provider committed inside the other's hold saw both volumes' writes held.
    let seen: Vec<Vec<bool>> = m.probes.iter().flat_map(|p| p.seen.lock().clone()).collect();
    assert!(seen.contains(&vec![true, true]), "no moment with both volumes held: {seen:?}");
    assert!(!m.db.writes_held() && !m.logs.writes_held(), "writes are released");
    write(&m.db, "db.edb", b"db v2");
    write(&m.logs, "E00.log", b"log v2");
    let view = |v: &str| set.snapshots.iter().find(|x| x.volume == v).unwrap().view.clone();
    assert_eq!(read(&view("db"), "db.edb"), b"db v1");
    assert_eq!(read(&view("logs"), "E00.log"), b"log v1");
    assert_eq!(m.coord.list_snapshots().len(), 2);
    s.shutdown();
    assert!(m.coord.list_snapshots().is_empty(), "both providers released the set");
}

/// A writer keeps writing a counter to the btrfs volume, then the same counter to the software
/// volume (one fixed-width write each, through the node's filter). Every snapshot set must be
/// one instant: the software volume's counter is the btrfs one or one behind it, never further
/// apart.
#[test]
fn a_mixed_set_is_one_point_in_time_under_concurrent_writes() {
    let Some(m) = mixed("mixed set under writes") else { return };
    let put = |v: &Volume, i: u64| {
        let f = v.open(Path::new("n"), OpenMode::Create).unwrap();
        f.write_at(format!("{i:020}").as_bytes(), 0).unwrap();
    };
    put(&m.db, 0);
    put(&m.logs, 0);
    /// Stops the writer and waits for it however the test ends (before the btrfs unmounts).
    struct Writer(Arc<AtomicBool>, Option<std::thread::JoinHandle<u64>>);
    impl Writer {
        fn stop(&mut self) -> u64 {
            self.0.store(true, Ordering::Release);
            self.1.take().map_or(0, |h| h.join().unwrap())
        }
    }
    impl Drop for Writer {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
            if let Some(h) = self.1.take() {
                let _ = h.join();
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = {
        let (db, logs, stop) = (m.db.clone(), m.logs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                put(&db, i);
                put(&logs, i);
                if i == 1 {
                    tx.send(()).unwrap();
                }
            }
            i
        })
    };
    let mut writer = Writer(stop, Some(handle));
    rx.recv_timeout(Duration::from_secs(60)).expect("the writer's first round (waited 60 s)");
    for _ in 0..5 {
        let (set, s) = snapshot_both(&m);
        let n = |v: &str| -> u64 {
            let view = &set.snapshots.iter().find(|x| x.volume == v).unwrap().view;
            String::from_utf8(read(view, "n")).unwrap().parse().unwrap()
        };
        let (db, logs) = (n("db"), n("logs"));
        assert!(logs == db || logs + 1 == db, "not one instant: db {db}, logs {logs}");
        s.shutdown();
    }
    assert!(writer.stop() >= 1);
}
