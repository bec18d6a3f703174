//! The node: everything a Shadowcopy service runs, wired together in one process.
//!
//! Start-up order, and why:
//!
//! 1. the event log (so that everything after it can report);
//! 2. the volumes, through the copy-on-write filter — opening a volume drops the
//!    non-persistent snapshots a previous run left behind — and their shadow storage, from
//!    the configuration and the changes made at runtime ([`crate::shadow_storage`]);
//! 3. the coordinator with its job journal and the software provider; a job that was running
//!    when the node stopped is recovered: its writers are told to abort, its snapshots are
//!    released, and an event records it as failed (nothing is truncated for it);
//! 4. the information store: each storage group — of the configuration file, and those
//!    created at runtime ([`crate::layout`]) — mounts after soft recovery, and the store
//!    writer registers. A storage group that fails to mount stays dismounted with its error
//!    (store status, an event) and the node starts anyway: restore needs a running node.
//!
//! 5. shadow copies exposed before the restart ([`crate::expose`]) are mounted again.
//!
//! [`Node::shutdown`] unmounts the exposed shadow copies, dismounts every storage group
//! cleanly and syncs the event log.

use std::collections::BTreeMap;
use std::sync::Arc;

use backup::repo::Repository;
use backup::{Requester, Restorer};
use events::{EventLog, EventSink, LogOptions};
use store::{DatabaseDef, EngineTuning, InformationStore, StorageGroupDef, StoreWriter, VolumeRef};
use volume::{BtrfsProvider, FsRef, HostFs, SoftwareProvider, Volume, VolumeOptions};
use vss::BtrfsProviderAdapter;
use vss::software::SoftwareProviderAdapter;
use vss::{Coordinator, CoordinatorConfig};

use crate::config::{Config, StorageGroupConfig, VolumeProvider, parse_size};

/// How often the shadow storage of btrfs volumes is measured against its limit: other
/// programs write to a btrfs volume without the node seeing it, so no write can trigger the
/// check as it does for the software provider.
const BTRFS_STORAGE_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks the btrfs volumes' shadow storage every [`BTRFS_STORAGE_CHECK`] on a thread that
/// ends once the provider is gone (the node stopped).
fn watch_btrfs_shadow_storage(btrfs: &Arc<BtrfsProvider>) {
    if btrfs.volumes().is_empty() {
        return;
    }
    let weak = Arc::downgrade(btrfs);
    let spawned =
        std::thread::Builder::new().name("btrfs-shadow-storage".into()).spawn(move || {
            loop {
                std::thread::sleep(BTRFS_STORAGE_CHECK);
                let Some(p) = weak.upgrade() else { return };
                if let Err(e) = p.check_shadow_storage() {
                    tracing::warn!(error = %e, "checking btrfs shadow storage failed");
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the btrfs shadow-storage check");
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event log: {0}")]
    Events(#[from] events::EventLogError),
    #[error("volume {label}: {source}")]
    Volume {
        label: String,
        #[source]
        source: volume::VolumeError,
    },
    #[error(
        "volume {label}: {path} does not exist; create it, or set `create = true` in its \
         [[volume]] for the node to create it"
    )]
    MissingVolume { label: String, path: std::path::PathBuf },
    #[error(
        "volume {label}: provider = \"btrfs\" but {path} is not a btrfs subvolume; make it one \
         (`btrfs subvolume create {path}`), or set provider = \"software\" or \"auto\" in its \
         [[volume]]"
    )]
    NotBtrfs { label: String, path: std::path::PathBuf },
    #[error("coordinator: {0}")]
    Coordinator(#[from] vss::VssError),
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    #[error("storage group {name}: {source}")]
    Store {
        name: String,
        #[source]
        source: store::StoreError,
    },
}

/// The storage groups the node runs, and what of them was created at runtime.
#[derive(Debug)]
pub(crate) struct Runtime {
    /// The configuration file's storage groups with the created ones merged in.
    pub(crate) layout: Config,
    /// What `<data_dir>/storage_groups.toml` holds.
    pub(crate) created: crate::layout::Created,
}

/// A running node.
pub struct Node {
    config: Config,
    /// Serializes creating storage groups and databases (held while one is created).
    pub(crate) runtime: parking_lot::Mutex<Runtime>,
    events: Arc<EventLog>,
    volumes: BTreeMap<String, Volume>,
    provider: Arc<SoftwareProvider>,
    /// The btrfs provider: the volumes whose `provider` chose btrfs (not registered with the
    /// software provider, so the coordinator picks this one for them).
    btrfs: Arc<BtrfsProvider>,
    coordinator: Coordinator,
    store: Arc<InformationStore>,
    /// Jobs found interrupted at start-up.
    recovered_jobs: Vec<vss::journal::JobRecord>,
    /// Shadow storage changed at runtime ([`crate::shadow_storage`]); held while one is
    /// changed and recorded.
    pub(crate) shadow_state: parking_lot::Mutex<crate::shadow_storage::RuntimeShadowStorage>,
    /// Shadow copies mounted read-only through FUSE (`admin expose`).
    exposures: Arc<crate::expose::Exposures>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.config.node.name).finish()
    }
}

/// The store's definition of a configured storage group (its volumes are known: the
/// configuration was checked).
fn group_def(volumes: &BTreeMap<String, Volume>, sg: &StorageGroupConfig) -> StorageGroupDef {
    let fs_of = |label: &str| -> VolumeRef {
        VolumeRef { label: label.into(), fs: Arc::new(volumes[label].clone()) }
    };
    StorageGroupDef {
        name: sg.name.clone(),
        log_volume: fs_of(&sg.log_volume),
        log_dir: sg.log_dir.clone(),
        system_dir: sg.system_dir.clone().unwrap_or_else(|| sg.log_dir.clone()),
        prefix: sg.prefix.clone(),
        circular_logging: sg.circular_logging,
        databases: sg
            .databases
            .iter()
            .map(|d| DatabaseDef {
                name: d.name.clone(),
                volume: fs_of(&d.volume),
                path: d.path.clone(),
            })
            .collect(),
        tuning: EngineTuning::default(),
    }
}

impl Node {
    /// Starts a node from a checked configuration.
    pub fn start(config: Config) -> Result<Node, NodeError> {
        config.validate()?;
        let data_dir = config.node.data_dir.clone();
        let data: FsRef = Arc::new(
            HostFs::new(&data_dir)
                .map_err(|source| NodeError::DataDir { path: data_dir.clone(), source })?,
        );
        let events = Arc::new(EventLog::open(
            data.clone(),
            "events",
            &config.node.name,
            LogOptions::default(),
        )?);
        let sink: Arc<dyn EventSink> = events.clone();

        let provider = Arc::new(SoftwareProvider::new());
        let btrfs = Arc::new(BtrfsProvider::new());
        let mut volumes = BTreeMap::new();
        for v in &config.volumes {
            let mut opts = VolumeOptions::new(v.label.clone());
            if let Some(bs) = v.block_size.as_deref().and_then(parse_size) {
                opts.block_size = bs;
            }
            if !v.create && !v.path.exists() {
                return Err(NodeError::MissingVolume {
                    label: v.label.clone(),
                    path: v.path.clone(),
                });
            }
            let subvolume = volume::btrfs::is_subvolume(&v.path).unwrap_or(false);
            let on_btrfs = match v.provider {
                VolumeProvider::Software => false,
                VolumeProvider::Auto => subvolume,
                VolumeProvider::Btrfs if subvolume => true,
                VolumeProvider::Btrfs => {
                    return Err(NodeError::NotBtrfs {
                        label: v.label.clone(),
                        path: v.path.clone(),
                    });
                }
            };
            let vol = Volume::open_or_create(&v.path, opts)
                .map_err(|source| NodeError::Volume { label: v.label.clone(), source })?;
            let provider_name = if on_btrfs {
                volume::btrfs::PROVIDER_NAME
            } else {
                volume::provider::PROVIDER_NAME
            };
            vss::software::forward_volume_events_of(&vol, sink.clone(), provider_name)
                .map_err(|source| NodeError::DataDir { path: v.path.clone(), source })?;
            if on_btrfs {
                btrfs
                    .register(vol.clone())
                    .map_err(|source| NodeError::Volume { label: v.label.clone(), source })?;
            } else {
                provider.register(vol.clone());
            }
            volumes.insert(v.label.clone(), vol);
        }
        let shadow_state = crate::shadow_storage::apply_at_start(&config, &provider, &btrfs, &sink);
        watch_btrfs_shadow_storage(&btrfs);

        let journal = vss::journal::JobJournal::open(data.clone(), "jobs")?;
        let coordinator = Coordinator::with_journal(
            &config.node.name,
            CoordinatorConfig::default(),
            sink.clone(),
            journal,
        );
        coordinator.register_provider(Arc::new(SoftwareProviderAdapter::new(provider.clone())));
        coordinator.register_provider(Arc::new(BtrfsProviderAdapter::new(btrfs.clone())));
        let recovered_jobs = coordinator.recover_interrupted_jobs()?;

        let created = crate::layout::Created::load(&data_dir)?;
        let layout = created.merge(&config).map_err(|e| crate::layout::LayoutError {
            path: data_dir.join(crate::layout::FILE),
            reason: e.to_string(),
        })?;
        let store = InformationStore::new(&config.node.name, sink.clone());
        for sg in &layout.storage_groups {
            let group = store
                .add_storage_group(group_def(&volumes, sg))
                .map_err(|source| NodeError::Store { name: sg.name.clone(), source })?;
            // A member of a DAG mounts a storage group only once the cluster database names
            // it active at the epoch it last held (crate::dag): mounting before could take
            // mail while another copy is active. A storage group that cannot mount must not
            // stop the node: it stays dismounted with its error (store status, event 9628),
            // so that it can be restored.
            if config.dag.is_some() {
                continue;
            }
            if let Err(e) = group.mount() {
                tracing::error!(storage_group = %sg.name, "not mounted: {e}");
            }
        }
        coordinator.register_writer(StoreWriter::new(store.clone()))?;

        let mut forbidden: Vec<_> = volumes.values().map(|v| v.root().to_path_buf()).collect();
        forbidden.push(data_dir.clone());
        let exposures =
            Arc::new(crate::expose::Exposures::new(data_dir.clone(), sink.clone(), forbidden));
        for vol in volumes.values() {
            // Whatever deletes a snapshot (a request, a backup's release, overflow), an
            // exposed one is unmounted first. Weak: the volume must not keep the mounts alive.
            let weak = Arc::downgrade(&exposures);
            vol.on_before_delete(move |id| {
                if let Some(e) = weak.upgrade() {
                    e.withdraw(id, "the shadow copy is deleted");
                }
            });
        }
        exposures.restore(&coordinator);
        Ok(Node {
            config,
            runtime: parking_lot::Mutex::new(Runtime { layout, created }),
            events,
            volumes,
            provider,
            btrfs,
            coordinator,
            store,
            recovered_jobs,
            shadow_state: parking_lot::Mutex::new(shadow_state),
            exposures,
        })
    }

    /// The store's definition of a configured storage group.
    pub(crate) fn group_def(&self, sg: &StorageGroupConfig) -> StorageGroupDef {
        group_def(&self.volumes, sg)
    }

    /// The storage groups the node runs: the configuration file's and those created at
    /// runtime, as one configuration.
    pub fn layout(&self) -> Config {
        self.runtime.lock().layout.clone()
    }

    /// The configuration file the node started from (without the storage groups created at
    /// runtime; see [`Node::layout`]).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.config.node.name
    }

    /// The node's event log.
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The information store.
    pub fn store(&self) -> &Arc<InformationStore> {
        &self.store
    }

    /// The software provider (volumes, snapshots, shadow storage).
    pub fn provider(&self) -> &Arc<SoftwareProvider> {
        &self.provider
    }

    /// The btrfs provider (the volumes configured with it, their snapshots and shadow storage).
    pub fn btrfs_provider(&self) -> &Arc<BtrfsProvider> {
        &self.btrfs
    }

    /// The registered volumes, by label.
    pub(crate) fn volume_map(&self) -> &BTreeMap<String, Volume> {
        &self.volumes
    }

    /// The volumes and their host directories: where no repository may go (see
    /// [`backup::refuse_repository_in_live_dirs`]).
    pub fn volume_dirs(&self) -> Vec<backup::VolumeDir> {
        self.volumes.iter().map(|(l, v)| (l.clone(), v.root().to_path_buf())).collect()
    }

    /// A registered volume.
    pub fn volume(&self, label: &str) -> Option<&Volume> {
        self.volumes.get(label)
    }

    /// Jobs that were running when the node last stopped, recovered at start-up.
    pub fn recovered_jobs(&self) -> &[vss::journal::JobRecord] {
        &self.recovered_jobs
    }

    /// A requester writing to `repo`.
    pub fn requester(&self, repo: Arc<Repository>) -> Requester {
        Requester::new(self.coordinator.clone(), self.store.clone(), repo, self.events.clone())
    }

    /// A restorer reading from `repo`.
    pub fn restorer(&self, repo: Arc<Repository>) -> Restorer {
        Restorer::new(self.coordinator.clone(), self.store.clone(), repo, self.events.clone())
    }

    /// The shadow copies exposed through FUSE.
    pub fn exposures(&self) -> &crate::expose::Exposures {
        &self.exposures
    }

    /// Unmounts the exposed shadow copies (they come back at the next start if persistent),
    /// dismounts every storage group cleanly and makes the event log durable.
    pub fn shutdown(&self) -> Vec<String> {
        self.exposures.shutdown();
        let mut problems: Vec<String> =
            self.store.dismount_all().into_iter().map(|(sg, e)| format!("{sg}: {e}")).collect();
        if let Err(e) = self.events.sync() {
            problems.push(format!("event log: {e}"));
        }
        problems
    }
}
