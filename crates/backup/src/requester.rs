//! The backup application: one backup of a storage group, from metadata to a published set.
//!
//! The order of a job, and why:
//!
//! 1. gather the writers' metadata and select the storage group's components (every database,
//!    or the ones asked for, and the log component);
//! 2. for an incremental or differential, find its base set in the repository (the last full,
//!    or the last full or incremental) and hand its components document to the coordinator;
//! 3. prepare, and let the coordinator freeze the writers, commit the snapshot set and thaw;
//! 4. copy the files into the repository and **verify what was copied**: every database page
//!    checksum as the page passes through the copy (in the buffer that is hashed and
//!    compressed, [`crate::verify::CopyPageCheck`]), then, read back through the repository
//!    (decompressed and hash-checked), the database headers, every log record checksum, log
//!    generations contiguous, the logs' signature equal to the databases';
//! 5. publish the set — *before* reporting success, so that logs are never truncated for a
//!    backup that does not exist yet;
//! 6. report success (or failure) per component; the writers then stamp headers and truncate
//!    logs (or do neither), and the session shuts down.
//!
//! Any failure reports failure for every component, so nothing is truncated, and the session
//! is shut down (aborting the job) when it is dropped. A job cancelled by its caller
//! ([`Progress::cancelled`], checked between phases, files and chunks, up to publishing)
//! aborts its session instead: the writers get abort, then backup shutdown.

mod components;
mod live_dirs;
mod plan;

pub use components::{FoundComponents, base_for_writer, find_components, selection_state};
pub use live_dirs::{VolumeDir, refuse_repository_in_live_dirs};
use plan::Planned;
pub use plan::glob_match;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{EventSink, catalog as cat};
use serde_json::json;
use store::{InformationStore, StorageGroup, StorageGroupDef};
use uuid::Uuid;
use volume::{File, FsRef, OpenMode};
use vss::{
    BackupComponentsDocument, BackupSession, BackupType, Component, ComponentKey, ComponentType,
    Coordinator, SnapshotContext, WriterMetadata,
};

use crate::error::{RequesterError, Result};
use crate::repo::{
    BackupSet, FileRole, LogRange, RepoError, RepoLocation, Repository, S3Settings, SetMeta,
    SetWriter, StoredFiles,
};
use crate::verify::{CopyPageCheck, DbFile, LogFiles};

/// Reports progress of long work (a terminal bar, log lines, or nothing).
pub trait Progress: Send + Sync {
    /// A new step starts.
    fn step(&self, what: &str);
    /// Bytes done of the step's total.
    fn bytes(&self, done: u64, total: u64);
    /// Files done of the step's total (copied into the repository, or restored).
    fn files(&self, _done: usize, _total: usize) {}
    /// Why the job must stop now, if it must (the node is shutting down, say). Checked between
    /// phases, files and chunks, so that a caller can end a long job cleanly instead of
    /// abandoning it: a backup aborts its session (writers get abort and backup shutdown,
    /// nothing is published or truncated), a restore leaves its target as it was.
    fn cancelled(&self) -> Option<String> {
        None
    }
}

/// The error of a job stopped because [`Progress::cancelled`] said so: the coordinator's own
/// "aborted" error, as the session was aborted for that reason.
pub(crate) fn aborted(reason: String) -> RequesterError {
    RequesterError::Coordinator(vss::VssError::Aborted { reason })
}

/// A snapshot file whose reads fail once the job is cancelled, so that copying a large file
/// stops within a chunk instead of running to its end.
struct Cancellable<'a> {
    file: &'a dyn File,
    progress: &'a dyn Progress,
}

impl std::fmt::Debug for Cancellable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.file.fmt(f)
    }
}

impl File for Cancellable<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        if let Some(reason) = self.progress.cancelled() {
            return Err(std::io::Error::other(reason));
        }
        self.file.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_at(buf, offset)
    }

    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.file.sync()
    }
}

/// Aborts `session` and fails if the job was cancelled (before the copy starts).
fn stop_if_cancelled(session: &mut BackupSession, progress: &dyn Progress) -> Result<()> {
    match progress.cancelled() {
        Some(reason) => {
            abort_logged(session, &reason);
            Err(aborted(reason))
        }
        None => Ok(()),
    }
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn bytes(&self, _: u64, _: u64) {}
}

/// Wraps a snapshot view before it is read (tests inject faults into the read path here).
pub type ViewFilter = Arc<dyn Fn(&str, FsRef) -> FsRef + Send + Sync>;

/// What to back up.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub storage_group: String,
    pub backup_type: BackupType,
    /// Databases to include; all of the storage group's when empty.
    pub databases: Vec<String>,
    /// Back up this node's *passive copy* of the storage group (the surrogate backup, through
    /// the replication writer) instead of its own files: the copy's layout (where its
    /// databases and logs are). `None`: the store's own storage group.
    pub replica: Option<StorageGroupDef>,
    /// Other nodes whose sets of this storage group count as its history (the members of its
    /// database availability group): a full taken on one copy is the base of an incremental
    /// taken on another.
    pub history_nodes: Vec<String>,
}

impl BackupRequest {
    /// Refuses a request that cannot run on `store` — an unknown storage group or database,
    /// a log-only backup — before anything is created for it (a repository, say).
    pub fn check(&self, store: &InformationStore) -> Result<()> {
        let def = self.layout(store)?;
        if self.backup_type == BackupType::Log {
            return Err(RequesterError::Refused(
                "the store writer offers no log-only backup type; use an incremental".into(),
            ));
        }
        if let Some(d) =
            self.databases.iter().find(|d| !def.databases.iter().any(|x| &x.name == *d))
        {
            return Err(RequesterError::NoSuchDatabase {
                storage_group: self.storage_group.clone(),
                database: d.clone(),
            });
        }
        Ok(())
    }
}

impl BackupRequest {
    /// The layout backed up: the passive copy's, or the store's storage group's (a node that
    /// holds only a copy of a storage group need not define the storage group itself).
    pub fn layout(&self, store: &InformationStore) -> Result<Arc<StorageGroupDef>> {
        match &self.replica {
            Some(copy) => Ok(Arc::new(copy.clone())),
            None => Ok(store.storage_group(&self.storage_group)?.def()),
        }
    }
}

/// The repository in host directory `path` for backup `req` of `store`: opened, or created
/// if there is none — but only once the request is known valid and `path` lies outside the
/// node's `volumes` (see [`refuse_repository_in_live_dirs`]), so that a refused backup
/// leaves no empty repository behind.
pub fn repository_for_backup(
    store: &InformationStore,
    req: &BackupRequest,
    path: &Path,
    volumes: &[VolumeDir],
) -> Result<Repository> {
    repository_for_backup_with(store, req, path, volumes, None)
}

/// [`repository_for_backup`] with the repository's password: an encrypted repository is
/// opened with it, and a new one is created encrypted under it (unencrypted without one).
pub fn repository_for_backup_with(
    store: &InformationStore,
    req: &BackupRequest,
    path: &Path,
    volumes: &[VolumeDir],
    password: Option<&str>,
) -> Result<Repository> {
    let location = RepoLocation::Local(path.to_path_buf());
    repository_for_backup_at(store, req, &location, &S3Settings::default(), volumes, password)
}

/// [`repository_for_backup_with`] at a directory or an `s3://` location (`s3` connects to
/// it). An object store is outside every volume: only a directory is checked against them.
pub fn repository_for_backup_at(
    store: &InformationStore,
    req: &BackupRequest,
    location: &RepoLocation,
    s3: &S3Settings,
    volumes: &[VolumeDir],
    password: Option<&str>,
) -> Result<Repository> {
    req.check(store)?;
    if let RepoLocation::Local(path) = location {
        refuse_repository_in_live_dirs(store, path, volumes)?;
    }
    Ok(Repository::open_or_init_location(location, s3, password)?)
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub set: BackupSet,
    pub job: Uuid,
    /// Bytes read from the snapshots.
    pub bytes: u64,
    /// Bytes new in the repository (after deduplication and compression).
    pub stored_bytes: u64,
    /// How long writes were held while the snapshot set was committed.
    pub hold: Duration,
    /// How long making the snapshot set took (prepare, freeze, commit, thaw, post-snapshot):
    /// the part of the job that involves the writers, of which `hold` is the frozen core.
    pub snapshot: Duration,
    pub elapsed: Duration,
    /// The components document after backup complete.
    pub document: BackupComponentsDocument,
}

/// One job as its phases share it.
struct Job<'a> {
    req: &'a BackupRequest,
    /// The store's storage group (`None`: a backup of a passive copy).
    sg: Option<&'a StorageGroup>,
    /// The layout backed up: the storage group's, or its passive copy's.
    def: Arc<StorageGroupDef>,
    /// The job id (the writer instance id the coordinator gave the session).
    id: Uuid,
    base: Option<&'a BackupSet>,
    progress: &'a dyn Progress,
}

/// What [`Requester::select`] chose: the writer's metadata as handed out for this job, and
/// the storage group's components in it.
struct Selection {
    metadata: WriterMetadata,
    components: Vec<Component>,
    keys: Vec<ComponentKey>,
}

/// The snapshot set a job copies from.
struct Snapshot {
    views: BTreeMap<String, FsRef>,
    /// How long writes were held.
    hold: Duration,
    /// How long making the set took.
    elapsed: Duration,
    id: Uuid,
}

/// A copied and verified set, not yet published.
struct Copied<'r> {
    writer: SetWriter<'r>,
    bytes: u64,
    headers: serde_json::Value,
    log_range: Option<LogRange>,
}

/// A value as JSON for the manifest.
fn to_json<T: serde::Serialize>(value: &T, what: &str) -> Result<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|e| RequesterError::Verify(format!("{what} does not serialise: {e}")))
}

/// Aborts `session` for `reason`; a failure to abort is logged, as the job fails anyway (the
/// session's drop shuts it down).
fn abort_logged(session: &mut BackupSession, reason: &str) {
    if let Err(e) = session.abort(reason) {
        tracing::warn!(job = %session.job(), error = %e, "aborting the cancelled backup session failed");
    }
}

/// The backup application.
pub struct Requester {
    coordinator: Coordinator,
    store: Arc<InformationStore>,
    repo: Arc<Repository>,
    events: Arc<dyn EventSink>,
    view_filter: Option<ViewFilter>,
}

impl Requester {
    /// A requester for the node's coordinator and store, writing to `repo`.
    pub fn new(
        coordinator: Coordinator,
        store: Arc<InformationStore>,
        repo: Arc<Repository>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        Self { coordinator, store, repo, events, view_filter: None }
    }

    /// Wraps every snapshot view with `f` before reading it.
    pub fn with_view_filter(mut self, f: ViewFilter) -> Self {
        self.view_filter = Some(f);
        self
    }

    /// The repository.
    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// The set an incremental or differential builds on: the newest full (differential), or
    /// the newest full or incremental after the newest full (incremental). Copy backups never
    /// count.
    pub fn base_for(&self, storage_group: &str, t: BackupType) -> Result<Option<BackupSet>> {
        self.base_among(storage_group, t, &[])
    }

    /// [`Requester::base_for`], counting the sets that `history_nodes` took as well.
    pub fn base_among(
        &self,
        storage_group: &str,
        t: BackupType,
        history_nodes: &[String],
    ) -> Result<Option<BackupSet>> {
        let ours =
            |node: &str| node == self.store.node() || history_nodes.iter().any(|n| n == node);
        let sets: Vec<BackupSet> = self
            .repo
            .list_sets()?
            .into_iter()
            .filter(|s| s.storage_group == storage_group && ours(&s.node))
            .collect();
        let wanted: &[BackupType] = match t {
            BackupType::Differential => &[BackupType::Full],
            BackupType::Incremental => &[BackupType::Full, BackupType::Incremental],
            _ => return Ok(None),
        };
        Ok(sets.into_iter().rev().find(|s| wanted.contains(&s.backup_type)))
    }

    /// The full (or copy) that `set`'s chain of bases starts from.
    fn chain_start(&self, set: &BackupSet) -> Result<BackupSet> {
        let mut cur = set.clone();
        for _ in 0..10_000 {
            match (cur.backup_type, cur.base_set) {
                (BackupType::Incremental | BackupType::Differential, Some(b)) => {
                    cur = self.repo.load_set(&b.to_string())?;
                }
                _ => return Ok(cur),
            }
        }
        Err(RequesterError::Refused(format!("the base chain of set {} does not end", set.id)))
    }

    /// Runs one backup: each phase below is one method, in the order the module doc explains.
    pub fn backup(&self, req: &BackupRequest, progress: &dyn Progress) -> Result<BackupReport> {
        let started = Instant::now();
        req.check(&self.store)?;
        let def = req.layout(&self.store)?;
        // The store's own storage group (none for a passive copy's backup).
        let sg = match req.replica {
            Some(_) => None,
            None => Some(self.store.storage_group(&req.storage_group)?),
        };
        let base = self.base(req, &def)?;
        progress.step("gathering writer metadata");
        let mut session = self.coordinator.backup_session(SnapshotContext::Backup)?;
        let job =
            Job { req, sg: sg.as_deref(), def, id: session.job(), base: base.as_ref(), progress };
        let selection = self.select(&mut session, &job)?;
        let snap = self.snapshot(&mut session, &job)?;
        let outcome = self
            .copy_and_verify(&job, &selection, &snap)
            .and_then(|copied| self.publish(&job, &selection, &session, copied));
        let (set, bytes, stored_bytes, document) =
            self.report(session, &job, &selection, outcome)?;
        Ok(BackupReport {
            set,
            job: job.id,
            bytes,
            stored_bytes,
            hold: snap.hold,
            snapshot: snap.elapsed,
            elapsed: started.elapsed(),
            document,
        })
    }

    /// The set an incremental or differential builds on (none for a full or copy), after
    /// checking that the chain it continues can hold what the request covers.
    fn base(&self, req: &BackupRequest, def: &StorageGroupDef) -> Result<Option<BackupSet>> {
        if !matches!(req.backup_type, BackupType::Incremental | BackupType::Differential) {
            return Ok(None);
        }
        let Some(base) =
            self.base_among(&req.storage_group, req.backup_type, &req.history_nodes)?
        else {
            return Err(RequesterError::NoBase {
                backup_type: req.backup_type.to_string(),
                storage_group: req.storage_group.clone(),
            });
        };
        // Every database this incremental or differential covers must be in the full its
        // chain starts from, or a restore of the chain would lack the database's file.
        let full = self.chain_start(&base)?;
        let wanted = def
            .databases
            .iter()
            .filter(|d| req.databases.is_empty() || req.databases.contains(&d.name))
            .map(|d| d.name.clone())
            .collect::<Vec<_>>();
        if let Some(missing) = wanted.iter().find(|name| {
            !full.files.iter().any(|f| f.role == FileRole::Database && &f.component == *name)
        }) {
            return Err(RequesterError::NoBase {
                backup_type: format!(
                    "{} (the last full backup, set {}, does not hold database {missing})",
                    req.backup_type, full.id
                ),
                storage_group: req.storage_group.clone(),
            });
        }
        Ok(Some(base))
    }

    /// Phase 1: gathers the writers' metadata, finds the storage group's components in it
    /// ([`find_components`]) and hands the coordinator the selection (with the base set's
    /// components document for an incremental or differential).
    fn select(&self, session: &mut BackupSession, job: &Job<'_>) -> Result<Selection> {
        let req = job.req;
        let base_doc = job
            .base
            .map(|b| serde_json::from_value::<BackupComponentsDocument>(b.components.clone()))
            .transpose()
            .map_err(|e| RequesterError::Verify(format!("base set's components document: {e}")))?;
        let writers = session.gather_writer_metadata()?;
        stop_if_cancelled(session, job.progress)?;
        let def = job.def.clone();
        let Some(found) = find_components(&writers, &def) else {
            return Err(if writers.iter().all(|w| w.metadata.components.is_empty()) {
                RequesterError::NoStoreWriter
            } else {
                RequesterError::NoSuchStorageGroup(req.storage_group.clone())
            });
        };
        for d in &req.databases {
            if !found.databases.iter().any(|(name, _)| name == d) {
                return Err(RequesterError::NoSuchDatabase {
                    storage_group: req.storage_group.clone(),
                    database: d.clone(),
                });
            }
        }
        let desc = &writers[found.writer];
        let wanted: Vec<&Component> = std::iter::once(found.logs)
            .chain(
                found
                    .databases
                    .iter()
                    .filter(|(name, _)| req.databases.is_empty() || req.databases.contains(name))
                    .map(|(_, c)| *c),
            )
            .collect();
        // In the writer's order (the order files are copied in).
        let components: Vec<Component> = desc
            .metadata
            .components
            .iter()
            .filter(|c| wanted.iter().any(|w| std::ptr::eq(*w, *c)))
            .cloned()
            .collect();
        let keys: Vec<ComponentKey> = components.iter().map(|c| c.key(&desc.key)).collect();
        session.set_backup_state(selection_state(
            &writers,
            &desc.key,
            keys.clone(),
            req.backup_type,
            base_doc.map(|d| base_for_writer(d, &desc.key)),
        ))?;
        Ok(Selection { metadata: desc.metadata.clone(), components, keys })
    }

    /// Phase 2: prepares the writers and lets the coordinator freeze them, commit the
    /// snapshot set and thaw. Returns the snapshot views to copy from.
    fn snapshot(&self, session: &mut BackupSession, job: &Job<'_>) -> Result<Snapshot> {
        stop_if_cancelled(session, job.progress)?;
        job.progress.step("preparing the writers");
        session.prepare_for_backup()?;
        stop_if_cancelled(session, job.progress)?;
        job.progress.step("freezing, snapshotting, thawing");
        let started = Instant::now();
        let set = session.do_snapshot_set()?;
        let elapsed = started.elapsed();
        let views = set
            .snapshots
            .iter()
            .map(|s| {
                let v = match &self.view_filter {
                    Some(f) => f(&s.volume, s.view.clone()),
                    None => s.view.clone(),
                };
                (s.volume.clone(), v)
            })
            .collect();
        Ok(Snapshot { views, hold: set.hold, elapsed, id: set.id })
    }

    /// Phase 3: copies the selected files out of the snapshot views into a new set of the
    /// repository, checking every database page as it passes, then the rest of the physical
    /// checks read back through the repository.
    fn copy_and_verify<'r>(
        &'r self,
        job: &Job<'_>,
        selection: &Selection,
        snap: &Snapshot,
    ) -> Result<Copied<'r>> {
        let (req, progress, views) = (job.req, job.progress, &snap.views);
        let prefix = job.def.prefix.clone();
        let mut plan = Vec::new();
        for c in &selection.components {
            for fd in &c.files {
                plan.extend(self.plan_files(
                    views,
                    c.name.as_str(),
                    c.component_type,
                    fd,
                    &prefix,
                )?);
            }
        }
        if matches!(req.backup_type, BackupType::Incremental | BackupType::Differential) {
            plan.retain(|p| p.role == FileRole::Log);
        }
        // An incremental or differential must continue its base's log chain. A differential
        // after an incremental finds the generations in between truncated; they are in the
        // repository (in the incrementals), which restore draws on. If the repository does
        // not hold them either, the chain could not be restored: refuse.
        if let (Some(b), Some(first)) = (job.base, plan.iter().filter_map(|p| p.generation).min())
            && let Some(range) = b.log_range
            && first > range.high + 1
        {
            let held = crate::restore::generations_held(&self.repo, b)?;
            if let Some(missing) = (range.high + 1..first).find(|g| !held.contains(g)) {
                return Err(RequesterError::Refused(format!(
                    "log generation {missing:#X}, needed after base set {}, was truncated and is in no backup set of this repository; take a full backup",
                    b.id
                )));
            }
        }
        progress.step("copying files into the repository");
        let total: u64 = plan.iter().map(|p| p.len).sum();
        let mut writer = self.repo.begin_set();
        let mut done_before = 0u64;
        let mut pages_verified = BTreeMap::new();
        progress.files(0, plan.len());
        for (i, p) in plan.iter().enumerate() {
            if let Some(reason) = progress.cancelled() {
                return Err(aborted(reason));
            }
            let view =
                views.get(&p.volume).ok_or_else(|| RequesterError::NoView(p.volume.clone()))?;
            let f = view.open(&p.path, OpenMode::Read).map_err(|source| RequesterError::Io {
                op: "opening in the snapshot",
                path: format!("{}/{}", p.volume, p.path.display()),
                source,
            })?;
            let name = format!("{}/{}", p.volume, p.path.display());
            // The mode as the snapshot saw it, for the restore to give back.
            let mode = view
                .metadata(&p.path)
                .map_err(|source| RequesterError::Io {
                    op: "reading the metadata in the snapshot",
                    path: name.clone(),
                    source,
                })?
                .mode;
            let pages = match p.role {
                FileRole::Database => {
                    CopyPageCheck::new(view.as_ref(), &p.path, self.repo.config().chunk_size)
                        .map_err(|e| self.verify_failed(job.id, name.clone(), e))?
                }
                _ => None,
            };
            let check = pages.as_ref().map(|c| move |off: u64, data: &[u8]| c.check(off, data));
            let base_done = done_before;
            let src = Cancellable { file: f.as_ref(), progress };
            let added = writer.add_file_checked(
                &name,
                p.role,
                &p.component,
                &src,
                Some(mode),
                check.as_ref().map(|c| c as &crate::repo::ChunkCheck),
                &|d| progress.bytes(base_done + d, total),
            );
            match added {
                Err(RepoError::Rejected { file, why }) => {
                    return Err(self.verify_failed(job.id, file, why));
                }
                Err(e) => return Err(progress.cancelled().map_or(e.into(), aborted)),
                Ok(_) => {}
            }
            if let Some(c) = pages {
                pages_verified.insert(p.path.clone(), c.verified());
            }
            done_before += p.len;
            progress.files(i + 1, plan.len());
        }
        // The rest of the physical checks read back through the repository (every chunk
        // decompressed and hash-checked): database headers and lengths, and the logs.
        writer.seal()?;
        if let Some(reason) = progress.cancelled() {
            return Err(aborted(reason));
        }
        // Copied (8200) before verified (8202): the trail follows what happened.
        self.events.emit(
            &cat::REQUESTER_COPY_DONE,
            Some(job.id),
            json!({"files": plan.len(), "bytes": total, "snapshot_set": snap.id.to_string()}),
        );
        progress.step("verifying the stored databases and logs");
        let stored: BTreeMap<String, FsRef> = views
            .keys()
            .map(|v| {
                let fs: FsRef = Arc::new(StoredFiles::new(self.repo.clone(), v, writer.files()));
                (v.clone(), fs)
            })
            .collect();
        let headers = self.verify(
            views,
            &stored,
            &selection.components,
            &plan,
            &pages_verified,
            &prefix,
            job.id,
        )?;
        let gens: Vec<u32> = plan.iter().filter_map(|p| p.generation).collect();
        let log_range = match (gens.iter().min(), gens.iter().max()) {
            (Some(&low), Some(&high)) => Some(LogRange { low, high }),
            _ => None,
        };
        Ok(Copied { writer, bytes: total, headers, log_range })
    }

    /// Phase 4: publishes the verified set — before any writer hears of success, so that
    /// logs are never truncated for a set that does not exist.
    fn publish(
        &self,
        job: &Job<'_>,
        selection: &Selection,
        session: &BackupSession,
        copied: Copied<'_>,
    ) -> Result<(BackupSet, u64, u64)> {
        let (req, total) = (job.req, copied.bytes);
        // The last chance to stop: once published, the set exists and the job completes.
        if let Some(reason) = job.progress.cancelled() {
            return Err(aborted(reason));
        }
        let stored_bytes = copied.writer.stored_bytes();
        // The set's document records what the set is: a completed backup whose selected
        // components all succeeded (it is published only after verification passed).
        let mut document = session.document();
        document.completed = true;
        for w in &mut document.writers {
            for c in &mut w.components {
                c.succeeded = Some(true);
            }
        }
        // A storage group dismounted during a full backup made it a copy: record it so, or
        // an incremental would later take this set for its base.
        let recorded_type = if job.sg.is_some_and(|g| g.degraded_to_copy(job.id))
            && req.backup_type == BackupType::Full
        {
            BackupType::Copy
        } else {
            req.backup_type
        };
        let meta = SetMeta {
            node: self.store.node().into(),
            backup_type: recorded_type,
            storage_group: req.storage_group.clone(),
            job_id: Some(job.id),
            base_set: job.base.map(|b| b.id),
            log_range: copied.log_range,
            writer_metadata: to_json(&selection.metadata, "the writer metadata")?,
            components: to_json(&document, "the components document")?,
            database_headers: copied.headers,
        };
        let published = copied.writer.publish(meta)?;
        self.events.emit(
            &cat::REQUESTER_SET_PUBLISHED,
            Some(job.id),
            json!({"set": published.id.to_string(), "backup_type": published.backup_type,
                   "storage_group": published.storage_group, "files": published.files.len(),
                   "bytes": total, "stored": stored_bytes}),
        );
        Ok((published, total, stored_bytes))
    }

    /// Phase 5: reports success or failure per component and backup complete to the
    /// writers (they stamp headers and truncate logs, or do neither), and shuts the session
    /// down. A cancelled job aborts its session instead: the writers get abort (then backup
    /// shutdown), which ends their backup without a header stamp or a truncation, as for any
    /// job that never reaches backup complete.
    fn report(
        &self,
        mut session: BackupSession,
        job: &Job<'_>,
        selection: &Selection,
        outcome: Result<(BackupSet, u64, u64)>,
    ) -> Result<(BackupSet, u64, u64, BackupComponentsDocument)> {
        let outcome = match (outcome, job.progress.cancelled()) {
            (Err(e), Some(reason)) => {
                abort_logged(&mut session, &reason);
                session.shutdown();
                return Err(e);
            }
            (outcome, _) => outcome,
        };
        // The copy's own error, if any, is the one the caller sees.
        let ok = outcome.is_ok();
        let mut reporting = Ok(());
        for k in &selection.keys {
            if let Err(e) = session.set_backup_succeeded(k, ok) {
                reporting = Err(e);
            }
        }
        job.progress.step("reporting backup complete to the writers");
        let complete = session.backup_complete();
        let document = session.shutdown();
        let (mut set, bytes, stored_bytes) = outcome?;
        // The dismount may also fall between publishing and backup complete.
        if job.req.backup_type == BackupType::Full
            && set.backup_type == BackupType::Full
            && job.sg.is_some_and(|g| g.degraded_to_copy(job.id))
        {
            set.backup_type = BackupType::Copy;
            self.repo.rewrite_manifest(&set)?;
        }
        reporting?;
        if let Err(e) = complete {
            return Err(RequesterError::CompleteFailed { set: set.id, source: e });
        }
        Ok((set, bytes, stored_bytes, document))
    }

    /// A verification failure of `file`: the event, and the error that fails the job.
    fn verify_failed(&self, job: Uuid, file: String, error: String) -> RequesterError {
        self.events.emit(
            &cat::REQUESTER_VERIFY_FAILED,
            Some(job),
            json!({"file": file, "error": error}),
        );
        RequesterError::Verify(error)
    }

    /// The physical-consistency check ([`crate::verify::check`]) of the stored files, for
    /// databases whose pages `pages_verified` does not already count.
    /// Returns the database headers (as JSON) by database.
    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        views: &BTreeMap<String, FsRef>,
        stored: &BTreeMap<String, FsRef>,
        selected: &[Component],
        plan: &[Planned],
        pages_verified: &BTreeMap<PathBuf, u64>,
        prefix: &str,
        job: Uuid,
    ) -> Result<serde_json::Value> {
        let fail = |file: String, e: String| self.verify_failed(job, file, e);
        let mut headers = serde_json::Map::new();
        let mut signature = None;
        let mut copied = Vec::new();
        for c in selected.iter().filter(|c| c.component_type == ComponentType::Database) {
            for fd in &c.files {
                let path = Path::new(&fd.path).join(&fd.filespec);
                if plan.iter().any(|p| p.role == FileRole::Database && p.path == path) {
                    let pages_verified = pages_verified.get(&path).copied();
                    let file = DbFile { volume: fd.volume.clone(), path, pages_verified };
                    copied.push((c.name.clone(), file));
                    continue;
                }
                // A database not copied (an incremental or differential) still lends its
                // header's log signature, read from the snapshot.
                let name = format!("{}/{}", fd.volume, path.display());
                let view = views
                    .get(&fd.volume)
                    .ok_or_else(|| RequesterError::NoView(fd.volume.clone()))?;
                let header = ese::inspect::dump_database_header(view.as_ref(), &path)
                    .map_err(|e| fail(name, e.to_string()))?;
                signature.get_or_insert(header.log_signature);
                headers.insert(c.name.clone(), to_json(&header, "a database header")?);
            }
        }
        // Planned logs always have a generation (that is how they were told from the rest).
        let logs: Vec<(&Planned, u32)> = plan
            .iter()
            .filter(|p| p.role == FileRole::Log)
            .filter_map(|p| Some((p, p.generation?)))
            .collect();
        let logs = match (logs.first(), logs.last()) {
            (Some((f, first)), Some((_, last))) => Some(LogFiles {
                volume: f.volume.clone(),
                dir: f.path.parent().map(Path::to_path_buf).unwrap_or_default(),
                prefix: prefix.to_string(),
                first: *first,
                last: *last,
            }),
            _ => None,
        };
        let files: Vec<DbFile> = copied.iter().map(|(_, f)| f.clone()).collect();
        let checked = crate::verify::check(stored, &files, logs.as_ref(), signature)
            .map_err(|f| fail(f.file, f.error))?;
        for ((name, _), header) in copied.iter().zip(&checked.headers) {
            headers.insert(name.clone(), to_json(header, "a database header")?);
        }
        self.events.emit(
            &cat::REQUESTER_VERIFY_PASSED,
            Some(job),
            json!({"databases": checked.databases, "pages": checked.pages,
                   "first": ese::logfmt::generation_name(prefix, checked.first),
                   "last": ese::logfmt::generation_name(prefix, checked.last)}),
        );
        Ok(serde_json::Value::Object(headers))
    }
}
