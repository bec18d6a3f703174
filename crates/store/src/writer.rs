//! The store writer: the information store's side of a backup.
//!
//! Per storage group the metadata holds one *database component* per database file and one
//! *log component* (the transaction logs and the checkpoint), all under the logical path
//! `Shadowcopy Mail\Information Store\<node>\<storage group>`. The writer:
//!
//! - **prepare backup**: claims each selected storage group for the job (*backup in
//!   progress*; a second job is refused with the running job named, event 9607) and prepares
//!   the engine's backup session, which checks the backup type (an incremental or differential
//!   needs a prior full and no circular logging);
//! - **freeze / thaw**: the engine rolls the current log and holds writes in memory, then
//!   releases them;
//! - **backup complete**: only if the requester reported success for every selected component
//!   of a storage group are logs truncated (full and incremental, and only when every
//!   database of the storage group was in the backup) and the headers stamped; otherwise the
//!   engine session is aborted, which stamps and truncates nothing. A successful backup of
//!   any type leaves its step-9 event: 224 (logs deleted) or 225 with the reason nothing was
//!   (differential and copy backups never truncate);
//! - **abort / backup shutdown**: releases whatever the job still holds. Shutdown reaches the
//!   writer whenever the requester's session ends, so backup in progress never goes stale.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use ese::BackupKind;
use events::catalog as cat;
use parking_lot::Mutex;
use serde_json::json;
use uuid::Uuid;
use vss::{
    BackupComponentsDocument, BackupSchema, Component, ComponentKey, ComponentResult,
    ComponentType, FileDescriptor, RestoreMethod, SchemaFeature, Writer, WriterContext,
    WriterError, WriterFailure, WriterIdentity, WriterMetadata,
};

use crate::error::StoreError;
use crate::information_store::InformationStore;
use crate::storage_group::{StorageGroup, engine_kind};

/// The writer class id, shared by the store's and the replication service's writers.
pub const WRITER_ID: Uuid = Uuid::from_u128(0x5c0d_ab1e_7a11_4e5a_9d3b_00e5_e5c0_0001);
/// The writer name, shared by both writers.
pub const WRITER_NAME: &str = "Shadowcopy Mail Writer";
/// The instance name of the store's writer.
pub const STORE_INSTANCE: &str = "Shadowcopy Information Store";
/// The instance name of the replication service's writer.
pub const REPLICATION_INSTANCE: &str = "Shadowcopy Replication Service";
/// Name of the log component of a storage group.
pub const LOG_COMPONENT: &str = "Logs";

/// The logical path of a storage group's components.
pub fn logical_path(node: &str, storage_group: &str) -> String {
    format!("Shadowcopy Mail\\Information Store\\{node}\\{storage_group}")
}

/// What the requester reported for the components under `logical_path`: whether every one of
/// `selected` succeeded (only then is a backup recorded and are logs truncated), and the
/// outcome of each as text for the backup-complete event.
pub fn reported(
    results: &[ComponentResult],
    logical_path: &str,
    selected: &BTreeSet<String>,
) -> (bool, String) {
    let mine: Vec<&ComponentResult> =
        results.iter().filter(|r| r.component.logical_path == logical_path).collect();
    let ok = !mine.is_empty()
        && selected.iter().all(|c| mine.iter().any(|r| &r.component.name == c && r.succeeded));
    let summary: Vec<String> = mine
        .iter()
        .map(|r| {
            format!("{} {}", r.component.name, if r.succeeded { "succeeded" } else { "failed" })
        })
        .collect();
    (ok, summary.join(", "))
}

/// The components document of a set as the store writer restores it: a backup taken through
/// the replication writer (of a passive copy, on any node) names that writer and `Replica`
/// paths; its restore goes through this node's store writer, under the store's own paths.
pub fn restorable_by_store(
    mut document: BackupComponentsDocument,
    node: &str,
) -> BackupComponentsDocument {
    for w in &mut document.writers {
        if w.key.writer_id == WRITER_ID && w.key.instance_name == REPLICATION_INSTANCE {
            w.key.instance_name = STORE_INSTANCE.into();
            for c in &mut w.components {
                c.logical_path = logical_path(node, group_of(&c.logical_path));
            }
        }
    }
    document
}

/// The storage group a logical path of either writer names (its last part).
fn group_of(logical_path: &str) -> &str {
    logical_path.rsplit('\\').next().unwrap_or(logical_path)
}

fn dir_and_name(p: &Path) -> (String, String) {
    let dir = p.parent().map(|d| d.to_string_lossy().into_owned()).unwrap_or_default();
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    (dir, name)
}

/// The components of one storage group.
pub fn storage_group_components(node: &str, sg: &StorageGroup) -> Vec<Component> {
    let d = sg.def();
    let lp = logical_path(node, &d.name);
    let mut out: Vec<Component> = d
        .databases
        .iter()
        .map(|db| {
            let (dir, name) = dir_and_name(&db.path);
            Component {
                logical_path: lp.clone(),
                name: db.name.clone(),
                component_type: ComponentType::Database,
                caption: format!("Database {} of storage group {}", db.name, d.name),
                files: vec![FileDescriptor {
                    volume: db.volume.label.clone(),
                    path: dir,
                    filespec: name,
                    recursive: false,
                }],
                selectable: true,
            }
        })
        .collect();
    out.push(Component {
        logical_path: lp,
        name: LOG_COMPONENT.into(),
        component_type: ComponentType::Filegroup,
        caption: format!("Transaction logs and checkpoint of storage group {}", d.name),
        files: vec![
            FileDescriptor {
                volume: d.log_volume.label.clone(),
                path: d.log_dir.to_string_lossy().into_owned(),
                filespec: format!("{}*.log", d.prefix),
                recursive: false,
            },
            FileDescriptor {
                volume: d.log_volume.label.clone(),
                path: d.system_dir.to_string_lossy().into_owned(),
                filespec: ese::logfmt::checkpoint_name(&d.prefix),
                recursive: false,
            },
        ],
        selectable: true,
    });
    out
}

/// What the writer remembers of a job between events.
#[derive(Debug, Default)]
struct JobState {
    /// Storage group → the names of its selected components.
    selected: BTreeMap<String, BTreeSet<String>>,
    /// Storage groups this job claimed.
    claimed: Vec<String>,
}

/// The store writer.
pub struct StoreWriter {
    store: Arc<InformationStore>,
    jobs: Mutex<HashMap<Uuid, JobState>>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter").finish()
    }
}

fn fail(e: StoreError) -> WriterError {
    let failure = match &e {
        StoreError::BackupInProgress { .. }
        | StoreError::Engine(ese::EngineError::BackupInProgress(_)) => WriterFailure::Retryable,
        StoreError::Engine(ese::EngineError::StorageFull { .. }) => WriterFailure::OutOfResources,
        _ => WriterFailure::NonRetryable,
    };
    WriterError::new(failure, e.to_string())
}

impl StoreWriter {
    /// A writer for `store`.
    pub fn new(store: Arc<InformationStore>) -> Arc<Self> {
        Arc::new(Self { store, jobs: Mutex::default() })
    }

    /// Storage group name → selected component names, from the job's component keys.
    fn selection(&self, ctx: &WriterContext) -> BTreeMap<String, BTreeSet<String>> {
        let mut by_path: HashMap<String, String> = HashMap::new();
        for sg in self.store.storage_groups() {
            by_path.insert(logical_path(self.store.node(), sg.name()), sg.name().to_string());
        }
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ComponentKey { logical_path, name, .. } in &ctx.components {
            if let Some(sg) = by_path.get(logical_path) {
                out.entry(sg.clone()).or_default().insert(name.clone());
            }
        }
        out
    }

    fn claimed(&self, job: Uuid) -> Vec<Arc<StorageGroup>> {
        let names = self.jobs.lock().get(&job).map(|j| j.claimed.clone()).unwrap_or_default();
        names.iter().filter_map(|n| self.store.storage_group(n).ok()).collect()
    }

    /// Releases everything `job` holds. Safe to call any number of times.
    fn release_job(&self, job: Uuid) {
        for sg in self.claimed(job) {
            sg.release(job);
        }
        self.jobs.lock().remove(&job);
    }

    /// Finishes one storage group after the requester reported.
    fn complete_group(
        &self,
        job: Uuid,
        sg: &StorageGroup,
        selected: &BTreeSet<String>,
        ok: bool,
    ) -> Result<(), StoreError> {
        let events = sg.events().clone();
        let every_database = sg.def().databases.iter().all(|d| selected.contains(&d.name))
            && selected.contains(LOG_COMPONENT);
        let outcome = sg.with_backup(job, |b| {
            let Some(session) = b.session.as_mut() else {
                // Dismounted during the backup: it already counts as a copy.
                return Ok(());
            };
            if !ok {
                session.abort()?;
                b.session = None;
                return Ok(());
            }
            // Step 9 of the trail: every successful backup says what became of the logs
            // (224 or 225, with the reason) before the engine's 2006, whatever its type.
            let no_truncation = |reason: &str| {
                events.emit(
                    &cat::ENGINE_NO_LOGS_TRUNCATED,
                    Some(job),
                    json!({"instance": sg.def().prefix, "reason": reason}),
                );
            };
            match b.kind {
                BackupKind::Full | BackupKind::Incremental if every_database => {
                    let gens = session.snapshot_generations().to_vec();
                    session.truncate(&gens)?;
                }
                BackupKind::Full | BackupKind::Incremental => {
                    no_truncation("not every database of the storage group was in the backup")
                }
                // The engine's truncate step of a differential records the copied range and
                // reports (225) that differentials keep the logs.
                BackupKind::Differential => {
                    let gens = session.snapshot_generations().to_vec();
                    session.truncate(&gens)?;
                }
                // A copy has no truncate step in the engine (calling it is an invalid
                // sequence, as in the reference), so the writer reports it on its behalf.
                BackupKind::Copy => no_truncation("copy backups do not truncate logs"),
            }
            session.end()?;
            b.session = None;
            Ok(())
        });
        outcome.unwrap_or(Ok(()))
    }
}

impl StoreWriter {
    /// The storage groups of this node that a backup document holds components of. A set
    /// taken on another node — a passive copy's, through the replication writer — restores
    /// here too: the storage group is found by its name, the last part of the logical path.
    fn restored_groups(&self, document: &BackupComponentsDocument) -> Vec<Arc<StorageGroup>> {
        let names: BTreeSet<&str> = document
            .writers
            .iter()
            .filter(|w| w.key.writer_id == WRITER_ID)
            .flat_map(|w| w.components.iter().map(|c| group_of(&c.logical_path)))
            .collect();
        self.store.storage_groups().into_iter().filter(|sg| names.contains(sg.name())).collect()
    }
}

impl Writer for StoreWriter {
    fn identity(&self) -> WriterIdentity {
        WriterIdentity {
            writer_id: WRITER_ID,
            writer_name: WRITER_NAME.into(),
            instance_name: STORE_INSTANCE.into(),
        }
    }

    fn identify(&self, ctx: &WriterContext) -> Result<WriterMetadata, WriterError> {
        let components = self
            .store
            .storage_groups()
            .iter()
            .flat_map(|sg| storage_group_components(self.store.node(), sg))
            .collect();
        self.store.events().emit(
            &cat::STORE_WRITER_ENGAGED,
            Some(ctx.job),
            json!({"instance": STORE_INSTANCE, "job": ctx.job.to_string()}),
        );
        Ok(WriterMetadata {
            version: 1,
            writer_id: WRITER_ID,
            writer_name: WRITER_NAME.into(),
            instance_name: STORE_INSTANCE.into(),
            components,
            schema: BackupSchema::with([
                SchemaFeature::Incremental,
                SchemaFeature::Differential,
                SchemaFeature::Copy,
                SchemaFeature::RollForwardRestore,
                SchemaFeature::RestoreWithMove,
                SchemaFeature::NewTarget,
            ]),
            restore_method: RestoreMethod::RestoreIfCanReplace,
        })
    }

    fn prepare_backup(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        let selected = self.selection(ctx);
        self.jobs.lock().insert(ctx.job, JobState { selected: selected.clone(), claimed: vec![] });
        let kind = engine_kind(ctx.backup_type);
        for (name, components) in &selected {
            let claim = self.store.storage_group(name).and_then(|sg| {
                // A backup of some of the databases checks and stamps only those.
                let databases: Vec<String> = sg
                    .def()
                    .databases
                    .iter()
                    .filter(|d| components.contains(&d.name))
                    .map(|d| d.name.clone())
                    .collect();
                let limit = (databases.len() < sg.def().databases.len()).then_some(databases);
                let n = sg.begin_backup(ctx.job, kind, limit, None)?;
                Ok((sg, n))
            });
            match claim {
                Ok((_, n)) => {
                    if let Some(j) = self.jobs.lock().get_mut(&ctx.job) {
                        j.claimed.push(name.clone());
                    }
                    self.store.events().emit(
                        &cat::STORE_BACKUP_IN_PROGRESS,
                        Some(ctx.job),
                        json!({"snapshot_instance": n, "storage_group": name}),
                    );
                }
                Err(e) => {
                    self.store.events().emit(
                        &cat::STORE_PREPARE_BACKUP_FAILED,
                        Some(ctx.job),
                        json!({"storage_group": name, "error": e.to_string()}),
                    );
                    self.release_job(ctx.job);
                    return Err(fail(e));
                }
            }
        }
        Ok(())
    }

    fn prepare_snapshot(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        for sg in self.claimed(ctx.job) {
            self.store.events().emit(
                &cat::STORE_PREPARE_SNAPSHOT,
                Some(ctx.job),
                json!({"storage_group": sg.name()}),
            );
        }
        Ok(())
    }

    fn freeze(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        for sg in self.claimed(ctx.job) {
            let r = sg.with_backup(ctx.job, |b| match b.session.as_mut() {
                Some(s) => s.freeze().map(|_| ()).map_err(StoreError::from),
                None => Ok(()),
            });
            if let Some(Err(e)) = r {
                self.store.events().emit(
                    &cat::STORE_FREEZE_FAILED,
                    Some(ctx.job),
                    json!({"storage_group": sg.name(), "error": e.to_string()}),
                );
                return Err(WriterError::retryable(e.to_string()));
            }
        }
        Ok(())
    }

    fn thaw(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        let mut first_error = None;
        for sg in self.claimed(ctx.job) {
            let r = sg.with_backup(ctx.job, |b| match b.session.as_mut() {
                Some(s) if s.current_state() == ese::SessionState::Frozen => {
                    s.thaw().map(|_| true).map_err(StoreError::from)
                }
                // The engine's watchdog thawed already: the freeze window was exceeded.
                Some(s) if s.current_state() == ese::SessionState::TimedOut => Ok(false),
                _ => Ok(true),
            });
            match r {
                Some(Err(e)) => {
                    first_error.get_or_insert(WriterError::retryable(e.to_string()));
                }
                Some(Ok(false)) => {
                    first_error.get_or_insert(WriterError::new(
                        WriterFailure::Timeout,
                        format!("storage group {}: the engine's freeze watchdog thawed it before the snapshot finished", sg.name()),
                    ));
                }
                _ => self.store.events().emit(
                    &cat::STORE_THAW_ACKNOWLEDGED,
                    Some(ctx.job),
                    json!({"storage_group": sg.name()}),
                ),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn post_snapshot(&self, ctx: &WriterContext) -> Result<Option<String>, WriterError> {
        // The stamp records, per storage group, the engine job and the generations the
        // snapshot holds: a later job's requester reads it from the components document.
        let mut stamp = serde_json::Map::new();
        for sg in self.claimed(ctx.job) {
            if let Some(Ok(v)) = sg.with_backup(ctx.job, |b| {
                Ok(b.session.as_ref().map(|s| {
                    json!({"snapshot_instance": s.snapshot_instance(),
                           "generations": s.snapshot_generations()})
                }))
            }) && let Some(v) = v
            {
                stamp.insert(sg.name().to_string(), v);
            }
        }
        Ok(Some(serde_json::Value::Object(stamp).to_string()))
    }

    fn backup_complete(
        &self,
        ctx: &WriterContext,
        results: &[ComponentResult],
    ) -> Result<(), WriterError> {
        let selected =
            self.jobs.lock().get(&ctx.job).map(|j| j.selected.clone()).unwrap_or_default();
        let mut first_error = None;
        for sg in self.claimed(ctx.job) {
            let comps = selected.get(sg.name()).cloned().unwrap_or_default();
            let lp = logical_path(self.store.node(), sg.name());
            let (ok, summary) = reported(results, &lp, &comps);
            self.store.events().emit(
                &cat::STORE_BACKUP_COMPLETE_REPORTED,
                Some(ctx.job),
                json!({"storage_group": sg.name(), "components": summary, "success": ok}),
            );
            if let Err(e) = self.complete_group(ctx.job, &sg, &comps, ok) {
                first_error.get_or_insert(format!("storage group {}: {e}", sg.name()));
            }
            sg.release(ctx.job);
        }
        self.jobs.lock().remove(&ctx.job);
        match first_error {
            Some(e) => Err(WriterError::non_retryable(e)),
            None => Ok(()),
        }
    }

    fn backup_shutdown(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.release_job(ctx.job);
        Ok(())
    }

    fn abort(&self, ctx: &WriterContext) -> Result<(), WriterError> {
        self.release_job(ctx.job);
        Ok(())
    }

    /// Restoring over a storage group's files needs it dismounted; a mounted one is refused
    /// so that a restore never overwrites live databases.
    fn pre_restore(
        &self,
        ctx: &WriterContext,
        document: &BackupComponentsDocument,
    ) -> Result<(), WriterError> {
        for sg in self.restored_groups(document) {
            if sg.is_mounted() {
                return Err(WriterError::non_retryable(format!(
                    "storage group {} is mounted; dismount it before restoring over its files",
                    sg.name()
                )));
            }
            self.store.events().emit(
                &cat::STORE_RESTORE_STARTED,
                Some(ctx.job),
                json!({"storage_group": sg.name(), "target": "the original location"}),
            );
        }
        Ok(())
    }

    /// After the requester restored the files and ran hard recovery, mount the storage
    /// groups whose components all succeeded.
    fn post_restore(
        &self,
        _ctx: &WriterContext,
        document: &BackupComponentsDocument,
        results: &[ComponentResult],
    ) -> Result<(), WriterError> {
        for sg in self.restored_groups(document) {
            let mine: Vec<_> = results
                .iter()
                .filter(|r| group_of(&r.component.logical_path) == sg.name())
                .collect();
            if mine.is_empty() || !mine.iter().all(|r| r.succeeded) || sg.is_mounted() {
                continue;
            }
            sg.mount().map_err(fail)?;
        }
        Ok(())
    }
}
