//! Helpers shared by the store's integration tests: storage groups on in-memory volumes
//! (so that a test can pull the plug with `MemFs::crash`), message bodies, and a reader that
//! turns a whole mailbox database into plain values to compare with a model.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use events::MemorySink;
use store::mailbox::DEFAULT_FOLDERS;
use store::{
    DatabaseDef, EngineTuning, Headers, InformationStore, MailDb, StorageGroup, StorageGroupDef,
    VolumeRef,
};
use volume::mem::MemFs;

/// Small logs and pages so that a few hundred KiB of mail already spans several log
/// generations and many pages, and a multi-MiB body crosses generation boundaries.
pub fn tuning() -> EngineTuning {
    EngineTuning { log_file_size: 128 << 10, page_size: 8 << 10, cache_pages: 128 }
}

pub fn vol(label: &str, fs: &MemFs) -> VolumeRef {
    VolumeRef { label: label.into(), fs: fs.as_ref() }
}

/// A storage group `name` with its logs on `logs` and database `i` of `databases` on
/// `volumes[i]` (the last volume is reused when there are fewer volumes than databases).
pub fn sg_def(
    name: &str,
    logs: VolumeRef,
    databases: &[&str],
    volumes: &[VolumeRef],
) -> StorageGroupDef {
    StorageGroupDef {
        name: name.into(),
        log_volume: logs,
        log_dir: PathBuf::from(format!("{name}/logs")),
        system_dir: PathBuf::from(format!("{name}/system")),
        prefix: "E00".into(),
        circular_logging: false,
        databases: databases
            .iter()
            .enumerate()
            .map(|(i, db)| DatabaseDef {
                name: (*db).into(),
                volume: volumes[i.min(volumes.len() - 1)].clone(),
                path: PathBuf::from(format!("{name}/{db}.edb")),
            })
            .collect(),
        tuning: tuning(),
    }
}

/// A node's information store with one mounted storage group.
pub struct Rig {
    pub events: Arc<MemorySink>,
    pub store: Arc<InformationStore>,
    pub sg: Arc<StorageGroup>,
}

impl Rig {
    /// Starts the "service": a fresh information store holding `def`, mounted (created on
    /// first mount, soft recovery after a crash).
    pub fn start(def: StorageGroupDef) -> Rig {
        let events = Arc::new(MemorySink::new("node1"));
        let store = InformationStore::new("node1", events.clone());
        let sg = store.add_storage_group(def).unwrap();
        sg.mount().unwrap();
        Rig { events, store, sg }
    }

    pub fn db(&self, name: &str) -> MailDb {
        self.sg.mail(name).unwrap()
    }
}

/// One storage group `SG1` with database `DB1`, logs and database on two volumes of the
/// same in-memory disk (so that a crash hits both at the same instant).
pub fn single(fs: &MemFs) -> StorageGroupDef {
    sg_def("SG1", vol("logs", fs), &["DB1"], &[vol("db", fs)])
}

/// A body of `len` bytes determined by `seed`; cheap enough for multi-MiB bodies.
pub fn body(len: usize, seed: u64) -> Vec<u8> {
    store::load::random_body(len, seed)
}

pub fn headers(mailbox: &str, seed: u64) -> Headers {
    Headers {
        from: format!("sender{}@example.net", seed % 97),
        to: vec![format!("{mailbox}@example.com")],
        subject: format!("message {seed:x}"),
        received_unix_ms: seed >> 20,
    }
}

/// What a message looks like from outside: enough to tell any two contents apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub folder: String,
    pub headers: Headers,
    pub len: usize,
    pub hash: blake3::Hash,
}

impl Stored {
    pub fn new(folder: &str, headers: Headers, body: &[u8]) -> Self {
        Stored { folder: folder.into(), headers, len: body.len(), hash: blake3::hash(body) }
    }
}

/// The visible content of a mailbox database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    pub mailboxes: BTreeSet<String>,
    pub messages: BTreeMap<(String, u64), Stored>,
}

/// Reads everything through the public operations: every mailbox, every folder listing,
/// every message. Checks on the way that listings agree with the messages they list (folder,
/// subject, sender, size, delivery order) and that no message is outside every folder.
pub fn read_contents(db: &MailDb) -> Contents {
    let mut c = Contents::default();
    for mb in db.mailboxes().unwrap() {
        for folder in DEFAULT_FOLDERS {
            let listing = db.list(&mb, folder).unwrap();
            assert!(listing.windows(2).all(|w| w[0].id < w[1].id), "{mb}/{folder} not in order");
            for s in listing {
                let (f, m) = db.read(&mb, s.id).unwrap();
                assert_eq!(f, folder, "message {} of {mb} listed in the wrong folder", s.id);
                assert_eq!(
                    (s.subject.as_str(), s.from.as_str(), s.size),
                    (m.headers.subject.as_str(), m.headers.from.as_str(), m.body.len() as u64)
                );
                c.messages.insert((mb.clone(), s.id), Stored::new(folder, m.headers, &m.body));
            }
        }
        c.mailboxes.insert(mb);
    }
    let digest = db.digest().unwrap();
    assert_eq!(digest.messages, c.messages.len() as u64, "messages outside every folder");
    assert_eq!(digest.mailboxes, c.mailboxes.len() as u64);
    c
}

/// A coordinator with the store writer of `rig` registered and a test provider that can
/// snapshot `volumes` (by copying them into a scratch directory).
pub struct Coord {
    pub coordinator: vss::Coordinator,
    pub scratch: tempfile::TempDir,
}

pub fn coordinator(rig: &Rig, volumes: &[(&str, &MemFs)]) -> Coord {
    let scratch = tempfile::tempdir().unwrap();
    let coordinator =
        vss::Coordinator::new("node1", vss::CoordinatorConfig::default(), rig.events.clone());
    let provider = vss::testing::TestProvider::new("test provider", scratch.path());
    for (label, fs) in volumes {
        provider.add_volume(label, fs.as_ref());
    }
    coordinator.register_provider(provider);
    coordinator.register_writer(store::StoreWriter::new(rig.store.clone())).unwrap();
    Coord { coordinator, scratch }
}

/// A backup job of every component of the store writer, taken up to prepare_backup (the
/// storage groups are then *backup in progress*).
pub fn prepared(
    coord: &Coord,
    kind: vss::BackupType,
) -> (vss::BackupSession, Vec<vss::ComponentKey>) {
    let mut s = coord.coordinator.backup_session(vss::SnapshotContext::Backup).unwrap();
    let writers = s.gather_writer_metadata().unwrap();
    let w = writers
        .iter()
        .find(|w| w.key.instance_name == store::writer::STORE_INSTANCE)
        .expect("the store writer answered identify");
    let components: Vec<vss::ComponentKey> =
        w.metadata.components.iter().map(|c| c.key(&w.key)).collect();
    s.set_backup_state(vss::BackupState {
        backup_type: kind.into(),
        components: components.clone(),
        ..vss::BackupState::default()
    })
    .unwrap();
    s.prepare_for_backup().unwrap();
    (s, components)
}

/// Takes the snapshot, reports every component as `succeeded`, completes and ends the job.
pub fn finish(
    mut s: vss::BackupSession,
    components: &[vss::ComponentKey],
    succeeded: bool,
) -> vss::BackupComponentsDocument {
    s.do_snapshot_set().unwrap();
    for c in components {
        s.set_backup_succeeded(c, succeeded).unwrap();
    }
    s.backup_complete().unwrap();
    s.shutdown()
}

/// The IDs of the store's and the engine's events of `job`, in order.
pub fn trail(rig: &Rig, job: uuid::Uuid) -> Vec<u32> {
    rig.events
        .events()
        .iter()
        .filter(|e| e.job == Some(job))
        .filter(|e| matches!(e.source, events::Source::Store | events::Source::Engine))
        .map(|e| e.id)
        .collect()
}
