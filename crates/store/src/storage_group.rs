//! A storage group: one engine instance (one log stream and checkpoint) and its databases.
//!
//! The storage group owns two pieces of state that backups depend on:
//!
//! - whether it is mounted (an open engine [`Instance`]), and
//! - *backup in progress*: at most one backup job at a time holds the storage group, with its
//!   engine backup session. The state lives only in memory, as in the reference system, but it
//!   belongs to the requester's session: the store writer clears it when that session ends for
//!   any reason (success, failure, abort, or the coordinator's shutdown of a vanished
//!   requester), so it is never left stale. A restart clears it too, since nothing persists it.
//!
//! Administrative actions that change what a backup copies — dismount, removing a database,
//! removing the storage group — are refused while a backup holds it, with the job named.
//!
//! Engine notices are turned into events here, tagged with the job that holds the storage
//! group, so that the engine's steps appear in the job's trail.

use std::path::PathBuf;
use std::sync::Arc;

use ese::{BackupKind, DatabaseSpec, EngineBackup, EngineNotice, Instance, InstanceConfig};
use events::{EventDef, EventSink, catalog as cat};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use uuid::Uuid;
use volume::FsRef;

use crate::error::{Result, StoreError};
use crate::mailbox::MailDb;

/// A volume as the store sees it: its label (for writer metadata) and its file system.
#[derive(Clone)]
pub struct VolumeRef {
    pub label: String,
    pub fs: FsRef,
}

impl std::fmt::Debug for VolumeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

/// One database of a storage group.
#[derive(Debug, Clone)]
pub struct DatabaseDef {
    pub name: String,
    pub volume: VolumeRef,
    /// Path of the `.edb` file on its volume.
    pub path: PathBuf,
}

/// Engine settings of a storage group.
#[derive(Debug, Clone, Copy)]
pub struct EngineTuning {
    pub log_file_size: u32,
    pub page_size: usize,
    pub cache_pages: usize,
}

impl Default for EngineTuning {
    fn default() -> Self {
        Self { log_file_size: 1 << 20, page_size: 32 << 10, cache_pages: 1024 }
    }
}

/// How a storage group is laid out.
#[derive(Debug, Clone)]
pub struct StorageGroupDef {
    pub name: String,
    pub log_volume: VolumeRef,
    pub log_dir: PathBuf,
    /// Holds the checkpoint; on the log volume.
    pub system_dir: PathBuf,
    pub prefix: String,
    pub circular_logging: bool,
    pub databases: Vec<DatabaseDef>,
    pub tuning: EngineTuning,
}

/// How many degraded jobs a storage group remembers for their requesters.
const DEGRADED_KEPT: usize = 16;

/// The backup job holding a storage group.
pub(crate) struct BackupJob {
    pub job: Uuid,
    pub kind: BackupKind,
    /// `None` once the engine session ended or was aborted.
    pub session: Option<EngineBackup>,
    /// A database was dismounted during a full backup: it now counts as a copy.
    pub degraded_to_copy: bool,
    /// Who takes the backup, for a refusal to name: "a backup on this node" or "a surrogate
    /// backup by node b".
    pub by: String,
    /// The passive node taking a surrogate backup (`None`: a backup on this node).
    pub surrogate_for: Option<String>,
}

struct SgState {
    instance: Option<Arc<Instance>>,
    mail: Vec<MailDb>,
    backup: Option<BackupJob>,
}

/// A storage group of the information store.
pub struct StorageGroup {
    /// The layout. Behind a lock because removing a database changes it; handed out as an
    /// `Arc` snapshot so that no caller holds the lock while it works with the layout.
    /// Lock order: `state`, then `def`.
    def: RwLock<Arc<StorageGroupDef>>,
    events: Arc<dyn EventSink>,
    /// The name, fixed for the storage group's life (kept apart from `def` so that it can be
    /// borrowed).
    name: String,
    /// The job holding the storage group, shared with the engine's notice sink.
    current_job: Arc<Mutex<Option<Uuid>>>,
    state: Mutex<SgState>,
    /// The last jobs whose full backup became a copy, newest last, kept after the job
    /// released the storage group so that its requester can still ask (it records the set it
    /// published as a copy).
    degraded: Mutex<std::collections::VecDeque<Uuid>>,
    /// Why the last mount failed, until a mount succeeds: a storage group that cannot mount
    /// stays in the store, dismounted, so that it can be restored, and says why.
    mount_error: Mutex<Option<String>>,
    /// What database copies on other nodes still need (the DAG sets it; see
    /// [`ese::TruncationLimitFn`]). Shared with the engine, asked at each truncation.
    truncation_limit: Arc<Mutex<Option<ese::TruncationLimitFn>>>,
    /// What a durable commit waits for besides its own log (the DAG's synchronous copies),
    /// given to every instance before it takes its first commit.
    commit_gate: Mutex<Option<Arc<dyn ese::CommitGate>>>,
}

impl std::fmt::Debug for StorageGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageGroup").field("name", &self.name).finish()
    }
}

/// The engine's snapshot-backup kind for a coordinator backup type.
pub fn engine_kind(t: vss::BackupType) -> BackupKind {
    match t {
        vss::BackupType::Full | vss::BackupType::Log => BackupKind::Full,
        vss::BackupType::Incremental => BackupKind::Incremental,
        vss::BackupType::Differential => BackupKind::Differential,
        vss::BackupType::Copy => BackupKind::Copy,
    }
}

fn notice_event(n: &EngineNotice) -> (&'static EventDef, serde_json::Value) {
    match n {
        EngineNotice::BackupStarted { prefix, kind, snapshot_instance } => {
            let def = match kind {
                BackupKind::Full => &cat::ENGINE_FULL_BACKUP_STARTING,
                BackupKind::Incremental => &cat::ENGINE_INCREMENTAL_BACKUP_STARTING,
                BackupKind::Differential => &cat::ENGINE_DIFFERENTIAL_BACKUP_STARTING,
                BackupKind::Copy => &cat::ENGINE_COPY_BACKUP_STARTING,
            };
            (def, json!({"instance": prefix, "snapshot_instance": snapshot_instance}))
        }
        EngineNotice::FreezeStarted { prefix, snapshot_instance, rolled_generation } => (
            &cat::ENGINE_FREEZE_STARTED,
            json!({"instance": prefix, "snapshot_instance": snapshot_instance,
                   "generation": ese::logfmt::generation_name(prefix, *rolled_generation)}),
        ),
        EngineNotice::FreezeEnded { prefix, snapshot_instance } => (
            &cat::ENGINE_FREEZE_ENDED,
            json!({"instance": prefix, "snapshot_instance": snapshot_instance}),
        ),
        EngineNotice::FreezeTimedOut { prefix, snapshot_instance, seconds } => (
            &cat::ENGINE_FREEZE_TIMED_OUT,
            json!({"instance": prefix, "snapshot_instance": snapshot_instance,
                   "elapsed_ms": (seconds * 1000.0) as u64}),
        ),
        EngineNotice::LogsTruncated { prefix, low, high, kept_for, .. } => (
            &cat::ENGINE_LOGS_TRUNCATED,
            json!({"instance": prefix, "first": ese::logfmt::generation_name(prefix, *low),
                   "last": ese::logfmt::generation_name(prefix, *high),
                   "kept": kept_for.as_ref().map(|w| format!("; later generations stay: {w}"))
                       .unwrap_or_default()}),
        ),
        EngineNotice::NoTruncation { prefix, reason, .. } => {
            // The event's template already says "no log files can be truncated"; the field
            // holds only why, as for the 225s the writer emits itself.
            let reason = reason.strip_prefix("no log files can be truncated: ").unwrap_or(reason);
            (&cat::ENGINE_NO_LOGS_TRUNCATED, json!({"instance": prefix, "reason": reason}))
        }
        EngineNotice::BackupCompleted { prefix, snapshot_instance, .. } => (
            &cat::ENGINE_BACKUP_COMPLETED,
            json!({"instance": prefix, "snapshot_instance": snapshot_instance}),
        ),
        EngineNotice::BackupAborted { prefix, snapshot_instance } => (
            &cat::ENGINE_BACKUP_ABORTED,
            json!({"instance": prefix, "snapshot_instance": snapshot_instance}),
        ),
        EngineNotice::SurrogateStarted { prefix, snapshot_instance, kind, passive_node } => (
            &cat::ENGINE_SURROGATE_BACKUP_STARTED,
            json!({"instance": prefix, "snapshot_instance": snapshot_instance,
                   "passive_node": passive_node, "backup_type": kind.to_string()}),
        ),
        EngineNotice::SurrogateStamped {
            prefix,
            snapshot_instance,
            kind,
            passive_node,
            time,
            gen_low,
            gen_high,
            generation,
        } => {
            /// Unix seconds as an RFC 3339 UTC time (the header's slot time, as the event
            /// shows it; no calendar crate for one conversion).
            fn rfc3339(secs: u64) -> String {
                let (days, rem) = (secs / 86_400, secs % 86_400);
                // Howard Hinnant's days-to-civil, for days since 1970-01-01.
                let z = days + 719_468;
                let era = z / 146_097;
                let doe = z - era * 146_097;
                let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
                let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
                let mp = (5 * doy + 2) / 153;
                let day = doy - (153 * mp + 2) / 5 + 1;
                let month = if mp < 10 { mp + 3 } else { mp - 9 };
                let year = yoe + era * 400 + u64::from(month <= 2);
                format!(
                    "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
                    rem / 3600,
                    rem % 3600 / 60,
                    rem % 60
                )
            }
            (
                &cat::ENGINE_SURROGATE_BACKUP_DONE,
                json!({"instance": prefix, "snapshot_instance": snapshot_instance,
                       "passive_node": passive_node, "backup_type": kind.to_string(),
                       "time": rfc3339(*time), "unix_time": time,
                       "first": ese::logfmt::generation_name(prefix, *gen_low),
                       "last": ese::logfmt::generation_name(prefix, *gen_high),
                       "generation": ese::logfmt::generation_name(prefix, *generation)}),
            )
        }
    }
}

impl StorageGroup {
    /// A storage group, not yet mounted.
    pub fn new(def: StorageGroupDef, events: Arc<dyn EventSink>) -> Self {
        Self {
            name: def.name.clone(),
            def: RwLock::new(Arc::new(def)),
            events,
            current_job: Arc::default(),
            state: Mutex::new(SgState { instance: None, mail: Vec::new(), backup: None }),
            degraded: Mutex::default(),
            mount_error: Mutex::default(),
            truncation_limit: Arc::default(),
            commit_gate: Mutex::default(),
        }
    }

    /// Makes durable commits wait for `gate` too (the DAG's synchronous copies), now and on
    /// every later mount: a mount installs it before the instance takes a commit.
    pub fn set_commit_gate(&self, gate: Option<Arc<dyn ese::CommitGate>>) {
        let st = self.state.lock();
        *self.commit_gate.lock() = gate.clone();
        if let Some(inst) = &st.instance {
            inst.set_commit_gate(gate);
        }
    }

    /// The layout as it stands (removing a database changes it; a caller keeps the snapshot
    /// it got).
    pub fn def(&self) -> Arc<StorageGroupDef> {
        self.def.read().clone()
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn events(&self) -> &Arc<dyn EventSink> {
        &self.events
    }

    fn engine_config(&self, d: &StorageGroupDef) -> InstanceConfig {
        let mut cfg = InstanceConfig::new(
            d.log_volume.fs.clone(),
            d.log_dir.clone(),
            d.log_volume.fs.clone(),
            d.system_dir.clone(),
        );
        cfg.prefix = d.prefix.clone();
        cfg.circular_logging = d.circular_logging;
        cfg.log_file_size = d.tuning.log_file_size;
        cfg.page_size = d.tuning.page_size;
        cfg.cache_pages = d.tuning.cache_pages;
        let events = self.events.clone();
        let job = self.current_job.clone();
        let sg_name = d.name.clone();
        cfg.notice = Some(Arc::new(move |n: &EngineNotice| {
            // The store's own step of a surrogate backup comes first in its row of the trail
            // (910 then 210; 913 then 213), and only once the engine did it.
            if let Some((def, fields)) = crate::surrogate::store_event(&sg_name, n) {
                events.emit(def, *job.lock(), fields);
            }
            let (def, fields) = notice_event(n);
            events.emit(def, *job.lock(), fields);
        }));
        let limit = self.truncation_limit.clone();
        cfg.truncation_limit = Some(Arc::new(move || {
            let f = limit.lock().clone();
            f.and_then(|f| f())
        }));
        cfg
    }

    /// Sets what database copies on other nodes still need: log truncation after a backup
    /// keeps every generation at or above the limit it returns (`None` clears it).
    pub fn set_truncation_limit(&self, f: Option<ese::TruncationLimitFn>) {
        *self.truncation_limit.lock() = f;
    }

    /// Whether the storage group's logs exist already (so mounting opens rather than creates).
    fn exists(d: &StorageGroupDef) -> Result<bool> {
        let chk = d.system_dir.join(ese::logfmt::checkpoint_name(&d.prefix));
        let cur = d.log_dir.join(format!("{}.log", d.prefix));
        let fs = &d.log_volume.fs;
        let io = |path: &PathBuf| {
            let path = path.clone();
            move |source| StoreError::Io { op: "checking", path, source }
        };
        Ok(fs.exists(&chk).map_err(io(&chk))? || fs.exists(&cur).map_err(io(&cur))?)
    }

    /// Refuses to create a log stream beside a database that exists already: its own logs are
    /// missing, and the error names which generations it needs and where they were looked for.
    fn refuse_orphaned_databases(d: &StorageGroupDef) -> Result<()> {
        for db in &d.databases {
            let present = db.volume.fs.exists(&db.path).map_err(|source| StoreError::Io {
                op: "checking",
                path: db.path.clone(),
                source,
            })?;
            if !present {
                continue;
            }
            let header = db
                .volume
                .fs
                .open(&db.path, volume::OpenMode::Read)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    ese::dbheader::read_header(f.as_ref(), &db.path).map_err(|e| e.to_string())
                });
            let name = |g: u32| ese::logfmt::generation_name(&d.prefix, g);
            let needed = match header {
                Ok(h) if h.state == ese::DbState::CleanShutdown => format!(
                    "the stream it was shut down cleanly in (last generation {:#X}, {})",
                    h.max_required_generation(),
                    name(h.max_required_generation())
                ),
                Ok(h) => format!(
                    "log generations {:#X} to {:#X} ({} to {})",
                    h.min_required_generation(),
                    h.max_required_generation(),
                    name(h.min_required_generation()),
                    name(h.max_required_generation())
                ),
                Err(e) => format!("the logs of its stream (its header cannot be read: {e})"),
            };
            return Err(StoreError::LogsMissing {
                database: format!("{} ({}:{})", db.name, db.volume.label, db.path.display()),
                why: format!(
                    "no {prefix}.chk or {prefix}.log in {}:{}; it needs {needed}. Point the log \
                     volume at its logs, or restore the storage group",
                    d.log_volume.label,
                    d.log_dir.display(),
                    prefix = d.prefix,
                ),
            });
        }
        Ok(())
    }

    /// Refuses a database whose log signature is not the log stream's (the checkpoint's),
    /// naming both. Without a checkpoint the engine's own checks apply.
    fn refuse_foreign_databases(d: &StorageGroupDef) -> Result<()> {
        let chk_path = d.system_dir.join(ese::logfmt::checkpoint_name(&d.prefix));
        let fs = &d.log_volume.fs;
        if !fs.exists(&chk_path).unwrap_or(false) {
            return Ok(());
        }
        let chk = ese::checkpoint::read_checkpoint(fs.as_ref(), &chk_path)?;
        for db in &d.databases {
            if !db.volume.fs.exists(&db.path).unwrap_or(false) {
                continue;
            }
            let f = db.volume.fs.open(&db.path, volume::OpenMode::Read).map_err(|source| {
                StoreError::Io { op: "opening", path: db.path.clone(), source }
            })?;
            let h = ese::dbheader::read_header(f.as_ref(), &db.path)?;
            if h.log_signature != chk.signature {
                return Err(StoreError::SignatureMismatch {
                    database: format!("{} ({}:{})", db.name, db.volume.label, db.path.display()),
                    why: format!(
                        "its log signature is {}, the log stream's ({}:{}) is {}. Point the log \
                         volume at its own logs, or restore the storage group",
                        ese::lsn::hex(&h.log_signature),
                        d.log_volume.label,
                        chk_path.display(),
                        ese::lsn::hex(&chk.signature)
                    ),
                });
            }
        }
        Ok(())
    }

    /// Mounts: opens the engine instance (soft recovery after a crash) or creates it with its
    /// databases on first mount. A failure is kept ([`StorageGroup::mount_error`]) and
    /// reported as an event, until a mount succeeds.
    pub fn mount(&self) -> Result<()> {
        let result = self.mount_instance();
        match &result {
            Ok(()) => *self.mount_error.lock() = None,
            Err(StoreError::AlreadyMounted(_)) => {}
            Err(e) => {
                *self.mount_error.lock() = Some(e.to_string());
                self.events.emit(
                    &cat::STORE_MOUNT_FAILED,
                    None,
                    json!({"storage_group": self.name, "error": e.to_string()}),
                );
            }
        }
        result
    }

    /// Why the last mount failed, while the storage group is dismounted since.
    pub fn mount_error(&self) -> Option<String> {
        if self.is_mounted() { None } else { self.mount_error.lock().clone() }
    }

    /// Mounts the storage group by activating the passive copy its files are (the node made
    /// this definition over the copy's directory): the copy's last logs are replayed and the
    /// instance continues the old active's log stream ([`ese::activate`]). `passive_checkpoint`
    /// is the copy's replay checkpoint. Idempotent: after a crash, call it again (or, once it
    /// succeeded, mount as usual).
    pub fn mount_activated(&self, passive_checkpoint: &std::path::Path) -> Result<ese::Activation> {
        let mut st = self.state.lock();
        if st.instance.is_some() {
            return Err(StoreError::AlreadyMounted(self.name.clone()));
        }
        let def = self.def();
        let cfg = self.engine_config(&def);
        let specs: Vec<DatabaseSpec> = def
            .databases
            .iter()
            .map(|db| DatabaseSpec::new(db.name.clone(), db.volume.fs.clone(), db.path.clone()))
            .collect();
        let passive = ese::PassiveConfig {
            databases: specs.clone(),
            checkpoint_fs: def.log_volume.fs.clone(),
            checkpoint_path: passive_checkpoint.to_path_buf(),
            prefix: def.prefix.clone(),
        };
        let (instance, activation) = ese::activate(&passive, cfg, specs)?;
        let instance = Arc::new(instance);
        let mail = def
            .databases
            .iter()
            .map(|db| MailDb::open(instance.clone(), &db.name))
            .collect::<Result<Vec<_>>>()?;
        instance.set_commit_gate(self.commit_gate.lock().clone());
        st.instance = Some(instance);
        st.mail = mail;
        drop(st);
        *self.mount_error.lock() = None;
        self.events.emit(
            &cat::STORE_MOUNTED,
            None,
            json!({"storage_group": self.name, "recovery": format!(
                "activated a passive copy: replayed to generation {:#X} ({} transactions), new generations from {:#X}",
                activation.last_generation_replayed, activation.transactions, activation.first_generation
            )}),
        );
        Ok(activation)
    }

    fn mount_instance(&self) -> Result<()> {
        let mut st = self.state.lock();
        if st.instance.is_some() {
            return Err(StoreError::AlreadyMounted(self.name.clone()));
        }
        let def = self.def();
        let cfg = self.engine_config(&def);
        let existed = Self::exists(&def)?;
        let instance = if existed {
            Self::refuse_foreign_databases(&def)?;
            let specs = def
                .databases
                .iter()
                .map(|db| DatabaseSpec::new(db.name.clone(), db.volume.fs.clone(), db.path.clone()))
                .collect();
            Instance::open(cfg, specs)?
        } else {
            Self::refuse_orphaned_databases(&def)?;
            for dir in [&def.log_dir, &def.system_dir] {
                def.log_volume.fs.create_dir_all(dir).map_err(|source| StoreError::Io {
                    op: "creating",
                    path: dir.clone(),
                    source,
                })?;
            }
            let inst = Instance::create(cfg)?;
            for db in &def.databases {
                if let Some(parent) = db.path.parent() {
                    db.volume.fs.create_dir_all(parent).map_err(|source| StoreError::Io {
                        op: "creating",
                        path: parent.into(),
                        source,
                    })?;
                }
                inst.create_database(&db.name, db.volume.fs.clone(), &db.path)?;
            }
            inst
        };
        let instance = Arc::new(instance);
        let mail = def
            .databases
            .iter()
            .map(|db| MailDb::open(instance.clone(), &db.name))
            .collect::<Result<Vec<_>>>()?;
        let recovery = if !existed {
            "created".to_string()
        } else {
            let r = instance.recovery_info();
            if r.was_clean {
                "clean shutdown, nothing to replay".to_string()
            } else {
                format!(
                    "soft recovery replayed {} transactions from {} log generations",
                    r.transactions,
                    r.generations.len()
                )
            }
        };
        instance.set_commit_gate(self.commit_gate.lock().clone());
        st.instance = Some(instance);
        st.mail = mail;
        self.events.emit(
            &cat::STORE_MOUNTED,
            None,
            json!({"storage_group": self.name, "recovery": recovery}),
        );
        Ok(())
    }

    /// Dismounts cleanly. Refused while a backup is in progress unless `force`; a forced
    /// dismount during a full backup turns that backup into a copy (no header stamp as a
    /// full, nothing truncated).
    pub fn dismount(&self, force: bool) -> Result<()> {
        let mut st = self.state.lock();
        let Some(instance) = st.instance.clone() else {
            return Err(StoreError::NotMounted(self.name.clone()));
        };
        if let Some(b) = st.backup.as_mut() {
            if !force {
                return Err(StoreError::BackupInProgress {
                    storage_group: self.name.clone(),
                    job: b.job,
                    by: b.by.clone(),
                    action: "dismounting".into(),
                });
            }
            if let Some(mut s) = b.session.take() {
                let _ = s.abort();
            }
            b.degraded_to_copy = true;
            let mut degraded = self.degraded.lock();
            if degraded.len() >= DEGRADED_KEPT {
                degraded.pop_front();
            }
            degraded.push_back(b.job);
            drop(degraded);
            self.events.emit(
                &cat::STORE_BACKUP_DEGRADED_TO_COPY,
                Some(b.job),
                json!({"storage_group": self.name}),
            );
        }
        st.mail.clear();
        st.instance = None;
        drop(st);
        instance.shutdown()?;
        self.events.emit(&cat::STORE_DISMOUNTED, None, json!({"storage_group": self.name}));
        Ok(())
    }

    /// Dismounts cleanly, as `dismount(false)` (refused during a backup, the same event),
    /// and closes the instance's current log generation as it shuts down (see
    /// [`Instance::shutdown_sealed`]): returns the last closed generation G, after which
    /// every commit ever acknowledged is in a closed generation <= G. A switchover ships the
    /// generations up to G to the copy it activates, which then loses nothing.
    pub fn dismount_sealed(&self) -> Result<u32> {
        let mut st = self.state.lock();
        let Some(instance) = st.instance.clone() else {
            return Err(StoreError::NotMounted(self.name.clone()));
        };
        if let Some(b) = st.backup.as_ref() {
            return Err(StoreError::BackupInProgress {
                storage_group: self.name.clone(),
                job: b.job,
                by: b.by.clone(),
                action: "dismounting".into(),
            });
        }
        st.mail.clear();
        st.instance = None;
        drop(st);
        let sealed = instance.shutdown_sealed()?;
        self.events.emit(
            &cat::STORE_DISMOUNTED,
            None,
            json!({"storage_group": self.name, "sealed_generation": sealed}),
        );
        Ok(sealed)
    }

    /// Whether the storage group is mounted.
    pub fn is_mounted(&self) -> bool {
        self.state.lock().instance.is_some()
    }

    /// The engine instance, if mounted.
    pub fn instance(&self) -> Result<Arc<Instance>> {
        self.state.lock().instance.clone().ok_or_else(|| StoreError::NotMounted(self.name.clone()))
    }

    /// Removes database `name` from the storage group: it is no longer mounted with the
    /// storage group nor offered to backups. Returns its definition. The `.edb` file stays
    /// where it is (it can be attached elsewhere or restored from) unless `delete_file`.
    ///
    /// Refused, naming the job, while a backup of the storage group is in progress (even one
    /// whose storage group was dismounted by force: the job may still be copying the file).
    /// Refused while the storage group is mounted: a clean dismount leaves the checkpoint at
    /// the end of the log, so the next mount's recovery needs nothing of the removed
    /// database, whereas detaching from a running instance would leave log records of it
    /// between the checkpoint and the end that a later soft recovery could not replay.
    pub fn remove_database(&self, name: &str, delete_file: bool) -> Result<DatabaseDef> {
        let st = self.state.lock();
        let action = || format!("removing database {name:?}");
        if let Some(b) = &st.backup {
            return Err(StoreError::BackupInProgress {
                storage_group: self.name.clone(),
                job: b.job,
                by: b.by.clone(),
                action: action(),
            });
        }
        if st.instance.is_some() {
            return Err(StoreError::MustBeDismounted {
                storage_group: self.name.clone(),
                action: action(),
            });
        }
        let def = self.def();
        let Some(removed) = def.databases.iter().find(|d| d.name == name).cloned() else {
            return Err(StoreError::NoSuchDatabase {
                storage_group: self.name.clone(),
                database: name.into(),
            });
        };
        if delete_file {
            // First, so that a failure leaves the storage group as it was.
            match removed.volume.fs.remove_file(&removed.path) {
                Ok(()) => {}
                // Never mounted since it was defined: there is no file.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "deleting",
                        path: removed.path.clone(),
                        source,
                    });
                }
            }
            if let Some(parent) = removed.path.parent() {
                removed.volume.fs.sync_dir(parent).map_err(|source| StoreError::Io {
                    op: "syncing",
                    path: parent.into(),
                    source,
                })?;
            }
        }
        let mut next = (*def).clone();
        next.databases.retain(|d| d.name != name);
        *self.def.write() = Arc::new(next);
        drop(st);
        tracing::info!(
            storage_group = %self.name,
            database = name,
            path = %removed.path.display(),
            file_deleted = delete_file,
            "database removed from the storage group"
        );
        Ok(removed)
    }

    /// The mailbox database called `name`.
    pub fn mail(&self, name: &str) -> Result<MailDb> {
        let st = self.state.lock();
        if st.instance.is_none() {
            return Err(StoreError::NotMounted(self.name.clone()));
        }
        st.mail.iter().find(|m| m.name() == name).cloned().ok_or_else(|| {
            StoreError::NoSuchDatabase { storage_group: self.name.clone(), database: name.into() }
        })
    }

    /// Whether `job`'s backup of this storage group counts as a copy because the storage
    /// group was dismounted during it (known for the last few such jobs, after they ended).
    pub fn degraded_to_copy(&self, job: Uuid) -> bool {
        self.degraded.lock().contains(&job)
    }

    /// The job holding the storage group, if any.
    pub fn backup_in_progress(&self) -> Option<Uuid> {
        self.state.lock().backup.as_ref().map(|b| b.job)
    }

    /// The job holding the storage group and who takes it, if any.
    pub fn backup_holder(&self) -> Option<(Uuid, String)> {
        self.state.lock().backup.as_ref().map(|b| (b.job, b.by.clone()))
    }

    /// Claims the storage group for `job` and prepares the engine's backup session. Returns
    /// the engine snapshot instance number.
    ///
    /// `databases` limits the backup to some of the storage group's databases (`None`: all):
    /// only those need a prior full for an incremental or differential, and only those are
    /// stamped at the end.
    ///
    /// `surrogate_for` names the passive node of a surrogate backup (its copy is what is backed
    /// up; this node's engine records it).
    pub(crate) fn begin_backup(
        &self,
        job: Uuid,
        kind: BackupKind,
        databases: Option<Vec<String>>,
        surrogate_for: Option<&str>,
    ) -> Result<u64> {
        let mut st = self.state.lock();
        if let Some(b) = &st.backup {
            return Err(StoreError::BackupInProgress {
                storage_group: self.name.clone(),
                job: b.job,
                by: b.by.clone(),
                action: match surrogate_for {
                    Some(node) => format!("a surrogate backup by node {node}"),
                    None => "another backup".into(),
                },
            });
        }
        let instance =
            st.instance.clone().ok_or_else(|| StoreError::NotMounted(self.name.clone()))?;
        *self.current_job.lock() = Some(job);
        let mut session = match instance.backup_session(kind) {
            Ok(s) => s,
            Err(e) => {
                *self.current_job.lock() = None;
                return Err(e.into());
            }
        };
        if let Some(node) = surrogate_for {
            session.set_surrogate(node);
        }
        let prepared = match databases {
            Some(names) => session.limit_to(names).and_then(|()| session.prepare()),
            None => session.prepare(),
        };
        if let Err(e) = prepared {
            *self.current_job.lock() = None;
            return Err(e.into());
        }
        let n = session.snapshot_instance();
        let by = match surrogate_for {
            Some(node) => format!("a surrogate backup by node {node}"),
            None => "a backup on this node".into(),
        };
        st.backup = Some(BackupJob {
            job,
            kind,
            session: Some(session),
            degraded_to_copy: false,
            by,
            surrogate_for: surrogate_for.map(str::to_string),
        });
        Ok(n)
    }

    /// Runs `f` on the backup job if `job` holds the storage group.
    pub(crate) fn with_backup<T>(
        &self,
        job: Uuid,
        f: impl FnOnce(&mut BackupJob) -> Result<T>,
    ) -> Option<Result<T>> {
        let mut st = self.state.lock();
        match st.backup.as_mut() {
            Some(b) if b.job == job => Some(f(b)),
            _ => None,
        }
    }

    /// Releases the storage group from `job`, aborting an engine session still open (an
    /// abort of an ended or never-started session is a no-op). Harmless if `job` does not
    /// hold it. Returns whether it did.
    pub(crate) fn release(&self, job: Uuid) -> bool {
        let mut st = self.state.lock();
        if st.backup.as_ref().is_none_or(|b| b.job != job) {
            return false;
        }
        // Abort the engine session before giving up the claim, so that the next job never
        // finds the engine still holding this one (the abort is short: thaw and clear).
        let Some(mut b) = st.backup.take() else { return false };
        if let Some(mut s) = b.session.take()
            && let Err(e) = s.abort()
        {
            tracing::warn!(job = %job, error = %e, "aborting the engine backup at release failed");
        }
        let mut current = self.current_job.lock();
        if *current == Some(job) {
            *current = None;
        }
        true
    }

    /// Closes the current log generation of the mounted storage group (see
    /// [`Instance::roll_log`]): a restore rolling forward into another directory copies
    /// closed generations only, never the one being written. Returns the generation closed.
    pub fn roll_log(&self) -> Result<u32> {
        Ok(self.instance()?.roll_log()?)
    }

    /// Every log generation on disk and the checkpoint generation.
    pub fn log_state(&self) -> Result<ese::LogState> {
        Ok(self.instance()?.log_state()?)
    }
}

impl std::fmt::Debug for BackupJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupJob").field("job", &self.job).field("kind", &self.kind).finish()
    }
}
