//! Restore: backup sets back into a storage group, then hard recovery.
//!
//! A restore takes a chain of sets — a full (or copy) alone, a full plus every incremental up
//! to the chosen one, or a full plus one differential — and:
//!
//! 1. checks the chain: every log generation from the lowest to the highest is present, and a
//!    generation held by several sets has the same content in each;
//! 2. writes the database files and the logs into a *staging* directory beside the target,
//!    checking every chunk's and file's hash on the way;
//! 3. runs hard recovery on the staged files: the backed-up logs and, when rolling forward,
//!    the later generations that sets building on the chain's full hold (a later backup
//!    truncated them from the log directory), then the storage group's later logs;
//! 4. only then moves the recovered files into place, all or none.
//!
//! A hash mismatch, a missing generation, a foreign log or a cancellation by the caller
//! ([`Progress::cancelled`], checked between files and chunks) stops the restore before step
//! 4, and a failure during step 4 puts back every file it moved; the staging directory is
//! removed and the target is exactly as it was.
//!
//! Either target may roll forward or stop at the end of the backup (a point in time):
//!
//! - **Original location.** The storage group must be dismounted (the store writer's
//!   pre-restore refuses otherwise) unless the caller allows the restore to dismount it; it
//!   is mounted again at the end. Rolling forward, recovery continues through the logs still
//!   in the log directory (refused if they no longer continue the backup: see below). At a
//!   point in time, mounting would replay those logs, so they are set aside — moved with the
//!   checkpoint into a `superseded-…` directory inside the log directory, never deleted —
//!   and the restored generations take their place with a checkpoint at the end of what
//!   recovery replayed: the stream continues after the backup's last generation. Rewinding
//!   the stream is safe only if every database of the storage group is replaced (a database
//!   left in place holds pages stamped with positions of the superseded logs, and redo skips
//!   a change older than its page), so such a restore must hold every database. The restored databases also forget their backup history: the
//!   repository's sets belong to the superseded stream, so the next incremental or
//!   differential is refused until a new full backup.
//! - **Alternate location.** `<db name>.edb` files and `logs/`, recovered and clean, with a
//!   checkpoint, so that the directory opens as an instance of its own. Rolling forward
//!   copies — reading only — the storage group's later generations into the staging
//!   directory (a mounted storage group first rolls its log, so that every acknowledged
//!   commit is in a closed generation) and recovers through them there: the live store is
//!   neither replayed into nor disturbed, and the directory is self-contained. A generation
//!   missing between the backup's last and the live ones stops the restore naming it.
//!
//! After a point-in-time restore in place, the new stream reuses the generation numbers and
//! signature of the superseded one. Rolling a later backup forward through it would mix two
//! histories, so either target's roll-forward first compares the backup's last generation
//! with the live directory's file of that generation (closed generations never change) and
//! stops, naming it, if they differ.

mod live;
mod place;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ese::{DatabaseSpec, HardRecovery};
use events::{EventSink, catalog as cat};
use serde_json::json;
use store::{InformationStore, StorageGroup, StorageGroupDef};
use uuid::Uuid;
use volume::{FileSystem, FsRef, OpenMode};
use vss::{BackupComponentsDocument, BackupType, ComponentKey, Coordinator};

pub use place::SupersededLogs;

use crate::error::{RequesterError, Result};
use crate::repo::{BackupSet, FileEntry, FileRole, Repository};
use crate::requester::{Progress, aborted};

/// Where to restore.
#[derive(Clone)]
pub enum RestoreTarget {
    /// Over the storage group's own database files (and, at a point in time, its log
    /// stream).
    Original {
        /// Dismount the storage group if it is mounted (the reference's "this database can be
        /// overwritten by a restore").
        allow_overwrite: bool,
    },
    /// Into `dir` on `fs`: `<db name>.edb` files and `logs/`, recovered and clean.
    Alternate { fs: FsRef, dir: PathBuf },
}

impl RestoreTarget {
    /// An alternate location in host directory `path` (absolute), creating nothing now: the
    /// restore creates the directory once the request is known valid, so that a refused
    /// restore (an unknown set, say) leaves no empty directory behind. The file system is
    /// rooted at `path`'s nearest existing ancestor, returned with the target (the host path
    /// of what the restore reports is that root joined with the reported path).
    pub fn host_dir(path: &Path) -> Result<(Self, PathBuf)> {
        let refused =
            |why: &str| RequesterError::RestoreRefused(format!("target {}: {why}", path.display()));
        if !path.is_absolute() {
            return Err(refused("must be an absolute path"));
        }
        if path.file_name().is_none() {
            return Err(refused("names no directory"));
        }
        let root = path
            .ancestors()
            .skip(1)
            .find(|a| a.is_dir())
            .ok_or_else(|| refused("no ancestor of it is a directory"))?;
        let dir = path.strip_prefix(root).map_err(|_| refused("not under its ancestor"))?;
        let fs: FsRef = Arc::new(volume::HostFs::new(root).map_err(io_err("opening", root))?);
        Ok((RestoreTarget::Alternate { fs, dir: dir.to_path_buf() }, root.to_path_buf()))
    }
}

impl std::fmt::Debug for RestoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreTarget::Original { allow_overwrite } => {
                write!(f, "the original location (overwrite allowed: {allow_overwrite})")
            }
            RestoreTarget::Alternate { dir, .. } => write!(f, "{}", dir.display()),
        }
    }
}

/// What to restore.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// The set to restore to (id or unambiguous prefix); its chain is found automatically.
    pub set: String,
    pub target: RestoreTarget,
    /// Continue through the later logs in the storage group's log directory after the
    /// backed-up ones; otherwise stop at the end of the backup (a point in time).
    pub roll_forward: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub storage_group: String,
    pub sets: Vec<Uuid>,
    pub files: usize,
    pub bytes: u64,
    pub recovery: ese::HardRecoveryReport,
    /// Where the databases are now (volume-relative paths, or in the alternate directory).
    pub databases: Vec<(String, PathBuf)>,
    /// Where a point-in-time restore over the original location moved the live logs.
    pub superseded_logs: Option<SupersededLogs>,
}

/// Restores backup sets.
pub struct Restorer {
    coordinator: Coordinator,
    store: Arc<InformationStore>,
    repo: Arc<Repository>,
    events: Arc<dyn EventSink>,
}

/// What one restore works from: the chosen set and the files its chain holds.
struct Plan<'a> {
    set: &'a BackupSet,
    databases: &'a [(String, FileEntry)],
    logs: &'a BTreeMap<u32, FileEntry>,
    roll_forward: bool,
}

impl Plan<'_> {
    /// The lowest and highest backed-up generation (the chain holds at least one).
    fn log_range(&self) -> (u32, u32) {
        let lo = self.logs.keys().next().copied().unwrap_or(0);
        (lo, self.logs.keys().next_back().copied().unwrap_or(lo))
    }

    /// The size of the storage group's log files, as backed up.
    fn log_file_size(&self) -> u32 {
        self.logs.values().next().map_or(0, |e| e.size as u32)
    }

    fn total_files(&self) -> usize {
        self.databases.len() + self.logs.len()
    }
}

/// What a restore to either target did.
struct Restored {
    recovery: ese::HardRecoveryReport,
    databases: Vec<(String, PathBuf)>,
    files: usize,
    bytes: u64,
    superseded_logs: Option<SupersededLogs>,
}

/// Staged files, recovered.
struct Recovered {
    recovery: ese::HardRecoveryReport,
    files: usize,
    bytes: u64,
}

struct Staged {
    fs: FsRef,
    dir: PathBuf,
}

impl Staged {
    /// Removes the staging directory and what it holds. A failure is logged, not returned:
    /// this is cleanup after the restore's own outcome, which is the one the caller sees.
    fn remove(&self) {
        let entries = match self.fs.read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "listing a restore's staging directory failed");
                Vec::new()
            }
        };
        for e in entries {
            let path = self.dir.join(&e.name);
            if let Err(e) = self.fs.remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "removing a restore's staged file failed");
            }
        }
        if let Err(e) = self.fs.remove_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing a restore's staging directory failed");
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RequesterError {
    let path = path.display().to_string();
    move |source| RequesterError::Io { op, path, source }
}

fn recovery_failed(e: ese::EngineError) -> RequesterError {
    RequesterError::RestoreFailed(e.to_string())
}

/// Past this many bytes written since the last one, a restore asks for another sync of the
/// file it writes, on a thread of its own (see [`write_entry`]).
const FLUSH_EVERY: u64 = 64 << 20;

/// Writes a backed-up file into `fs` at `path`, durably. Stops between chunks when the job
/// is cancelled (the caller's cleanup removes the partial file with its staging directory).
///
/// The file is synced every [`FLUSH_EVERY`] bytes on a second thread while the chunks keep
/// coming, so that the disk writes the file as it is restored instead of all of it in the
/// final sync (a database of gigabytes would otherwise wait seconds there). A failed sync on
/// that thread fails the restore like the final one: Linux reports a write-back error to
/// one sync only, so it must not be dropped.
fn write_entry(
    repo: &Repository,
    entry: &FileEntry,
    fs: &dyn FileSystem,
    path: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    write_entry_flushing(repo, entry, fs, path, progress, FLUSH_EVERY)
}

/// [`write_entry`], syncing every `flush_every` bytes.
fn write_entry_flushing(
    repo: &Repository,
    entry: &FileEntry,
    fs: &dyn FileSystem,
    path: &Path,
    progress: &dyn Progress,
    flush_every: u64,
) -> Result<()> {
    if let Some(reason) = progress.cancelled() {
        return Err(aborted(reason));
    }
    let f = fs.open(path, OpenMode::CreateNew).map_err(io_err("creating", path))?;
    let (kick, kicks) = std::sync::mpsc::sync_channel::<()>(1);
    let (written, flushed) = std::thread::scope(|s| {
        let flusher = std::thread::Builder::new().name("restore-flush".into()).spawn_scoped(
            s,
            || -> std::io::Result<()> {
                for () in kicks {
                    f.sync()?;
                }
                Ok(())
            },
        );
        let mut since_kick = 0u64;
        let written = repo.read_file(entry, &mut |off, data| match progress.cancelled() {
            Some(reason) => Err(std::io::Error::other(reason)),
            None => {
                f.write_at(data, off)?;
                since_kick += data.len() as u64;
                if since_kick >= flush_every {
                    // A sync already asked for and not begun covers these bytes too.
                    let _ = kick.try_send(());
                    since_kick = 0;
                }
                Ok(())
            }
        });
        drop(kick);
        let flushed = match flusher {
            // A panic on the syncing thread is a bug: carry it on here.
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread: the final sync below does all of it.
            Err(_) => Ok(()),
        };
        (written, flushed)
    });
    if let Err(e) = written {
        return Err(progress.cancelled().map_or(e.into(), aborted));
    }
    flushed.map_err(io_err("syncing", path))?;
    f.sync().map_err(io_err("syncing", path))?;
    Ok(())
}

/// Fails if the job was cancelled.
fn check_cancelled(progress: &dyn Progress) -> Result<()> {
    progress.cancelled().map_or(Ok(()), |reason| Err(aborted(reason)))
}

/// A point-in-time restore over the original location rewinds the storage group's log
/// stream; a database the set does not hold would stay in place with pages stamped with
/// positions of the superseded logs, beyond the new stream's, and a later recovery would
/// skip changes to it. Refuses such a restore, naming those databases.
fn check_replaces_every_database(def: &StorageGroupDef, plan: &Plan) -> Result<()> {
    let missing: Vec<&str> = def
        .databases
        .iter()
        .filter(|d| !plan.databases.iter().any(|(name, _)| *name == d.name))
        .map(|d| d.name.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(RequesterError::RestoreRefused(format!(
        "a point-in-time restore over the original location rewinds the log stream of storage group {}, so it must replace every database of it, and set {} does not hold {} (left in place, {} would keep page positions of the logs the restore sets aside, and a later recovery would skip changes to {}); roll forward, restore to an alternate location, or restore a set of every database",
        def.name,
        plan.set.id,
        missing.join(", "),
        if missing.len() == 1 { "it" } else { "they" },
        if missing.len() == 1 { "it" } else { "them" },
    )))
}

/// Recovery rolling forward in place reads the live logs after the backup's: they must
/// continue the backup's history, not a stream rewound since by a point-in-time restore.
fn check_live_logs_continue(def: &StorageGroupDef, plan: &Plan) -> Result<()> {
    match plan.logs.last_key_value() {
        Some((g, last)) => {
            live::check_same_history(&def.log_volume.fs, &def.log_dir, &def.prefix, *g, last)
        }
        None => Ok(()),
    }
}

/// Clears the backup history of databases restored at a point in time over the original
/// location: the repository's sets belong to the log stream the restore set aside, and an
/// incremental or differential on top of them would mix two streams under the same
/// generation numbers. With no previous full backup recorded, the engine refuses the next
/// incremental or differential until a new full backup.
fn forget_backups(databases: &[DatabaseSpec]) -> Result<()> {
    for db in databases {
        let f = db.fs.open(&db.path, OpenMode::ReadWrite).map_err(io_err("opening", &db.path))?;
        let mut h = ese::dbheader::read_header(f.as_ref(), &db.path).map_err(recovery_failed)?;
        h.previous_full = None;
        h.previous_incremental = None;
        h.previous_differential = None;
        ese::dbheader::write_header(f.as_ref(), &db.path, &mut h).map_err(recovery_failed)?;
    }
    Ok(())
}

impl Restorer {
    /// A restorer for the node's coordinator and store, reading from `repo`.
    pub fn new(
        coordinator: Coordinator,
        store: Arc<InformationStore>,
        repo: Arc<Repository>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        Self { coordinator, store, repo, events }
    }

    /// The sets to restore for `set`, oldest first.
    pub fn chain(&self, set: &BackupSet) -> Result<Vec<BackupSet>> {
        let refuse = |why: String| RequesterError::RestoreRefused(why);
        let mut chain = vec![set.clone()];
        let mut seen = std::collections::HashSet::from([set.id]);
        let mut cur = set.clone();
        while matches!(cur.backup_type, BackupType::Incremental | BackupType::Differential) {
            let base =
                cur.base_set.ok_or_else(|| refuse(format!("set {} names no base set", cur.id)))?;
            if !seen.insert(base) {
                return Err(refuse(format!("the base chain of {} loops through {base}", set.id)));
            }
            let b = self
                .repo
                .load_set(&base.to_string())
                .map_err(|e| refuse(format!("base set {base} of {}: {e}", cur.id)))?;
            if b.storage_group != set.storage_group || b.node != set.node {
                return Err(refuse(format!(
                    "base set {base} is of {}/{}, not {}/{}",
                    b.node, b.storage_group, set.node, set.storage_group
                )));
            }
            let allowed: &[BackupType] = match cur.backup_type {
                BackupType::Differential => &[BackupType::Full],
                _ => &[BackupType::Full, BackupType::Incremental],
            };
            if !allowed.contains(&b.backup_type) {
                return Err(refuse(format!(
                    "{} {} cannot build on a {} backup",
                    cur.backup_type, cur.id, b.backup_type
                )));
            }
            chain.push(b.clone());
            cur = b;
        }
        if !matches!(cur.backup_type, BackupType::Full | BackupType::Copy) {
            return Err(refuse(format!(
                "the chain of {} starts with a {} backup",
                set.id, cur.backup_type
            )));
        }
        chain.reverse();
        Ok(chain)
    }

    /// Restores `req.set` (and the sets it builds on).
    pub fn restore(&self, req: &RestoreRequest, progress: &dyn Progress) -> Result<RestoreReport> {
        check_cancelled(progress)?;
        let set = self.repo.load_set(&req.set)?;
        let sg = self.store.storage_group(&set.storage_group)?;
        let chain = self.chain(&set)?;
        let prefix = sg.def().prefix.clone();
        progress.step("checking the backup chain");
        let later = later_logs(&self.repo, &chain[0])?;
        let (databases, mut logs) = collect_files(&chain, &prefix, &later)?;
        if req.roll_forward {
            roll_forward_from_repository(&mut logs, &later);
        }
        let sets: Vec<Uuid> = chain.iter().map(|s| s.id).collect();
        let how =
            if req.roll_forward { "rolling forward" } else { "to the backup's point in time" };
        self.events.emit(
            &cat::REQUESTER_RESTORE_STARTED,
            set.job_id,
            json!({"storage_group": set.storage_group,
                   "sets": sets.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "),
                   "target": format!("{:?}, {how}", req.target),
                   "roll_forward": req.roll_forward}),
        );
        let plan =
            Plan { set: &set, databases: &databases, logs: &logs, roll_forward: req.roll_forward };
        let result = match &req.target {
            RestoreTarget::Original { allow_overwrite } => {
                self.restore_original(&sg, &plan, *allow_overwrite, progress)
            }
            RestoreTarget::Alternate { fs, dir } => {
                self.restore_alternate(&sg, &plan, fs, dir, progress)
            }
        };
        self.report_outcome(&set, &result);
        let done = result?;
        Ok(RestoreReport {
            storage_group: set.storage_group.clone(),
            sets,
            files: done.files,
            bytes: done.bytes,
            recovery: done.recovery,
            databases: done.databases,
            superseded_logs: done.superseded_logs,
        })
    }

    /// The restore's closing events: recovered and done, or failed.
    fn report_outcome(&self, set: &BackupSet, result: &Result<Restored>) {
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                return self.events.emit(
                    &cat::STORE_RESTORE_FAILED,
                    set.job_id,
                    json!({"storage_group": set.storage_group, "error": e.to_string()}),
                );
            }
        };
        let first = done.recovery.generations.first().copied().unwrap_or(0);
        let last = done.recovery.generations.last().copied().unwrap_or(0);
        self.events.emit(
            &cat::STORE_RESTORE_RECOVERED,
            set.job_id,
            json!({"storage_group": set.storage_group, "first": first, "last": last}),
        );
        self.events.emit(
            &cat::REQUESTER_RESTORE_DONE,
            set.job_id,
            json!({"storage_group": set.storage_group, "files": done.files, "bytes": done.bytes,
                   "first": first, "last": last,
                   "superseded_logs": done.superseded_logs.as_ref().map(|s| s.dir.display().to_string())}),
        );
    }

    fn restore_original(
        &self,
        sg: &StorageGroup,
        plan: &Plan,
        allow_overwrite: bool,
        progress: &dyn Progress,
    ) -> Result<Restored> {
        let document: BackupComponentsDocument =
            serde_json::from_value(plan.set.components.clone()).map_err(|e| {
                RequesterError::RestoreRefused(format!(
                    "components document of {}: {e}",
                    plan.set.id
                ))
            })?;
        let def = sg.def();
        if plan.roll_forward {
            check_live_logs_continue(&def, plan)?;
        } else {
            check_replaces_every_database(&def, plan)?;
        }
        if sg.is_mounted() {
            if !allow_overwrite {
                return Err(RequesterError::RestoreRefused(format!(
                    "storage group {} is mounted; dismount it or allow the restore to overwrite it",
                    sg.name()
                )));
            }
            sg.dismount(false)?;
            // A restore that fails leaves the target as it was: mounted again.
            let result = self.restore_in_place(sg, document, plan, progress);
            if result.is_err()
                && !sg.is_mounted()
                && let Err(e) = sg.mount()
            {
                tracing::warn!(storage_group = %sg.name(), error = %e, "mounting the storage group again after a failed restore failed");
            }
            return result;
        }
        self.restore_in_place(sg, document, plan, progress)
    }

    fn restore_in_place(
        &self,
        sg: &StorageGroup,
        document: BackupComponentsDocument,
        plan: &Plan,
        progress: &dyn Progress,
    ) -> Result<Restored> {
        let mut session = self.coordinator.restore_session(document);
        session.pre_restore()?;
        let def = sg.def().clone();
        let tag = Uuid::new_v4().simple().to_string();
        let log_stage = Staged {
            fs: def.log_volume.fs.clone(),
            dir: def.log_dir.join(format!(".restore-{tag}")),
        };
        let mut db_stages: Vec<(Staged, &store::DatabaseDef)> = Vec::new();
        let recovered =
            self.recover_in_place(&def, &tag, &log_stage, &mut db_stages, plan, progress);
        let result = recovered.and_then(|r| {
            // At a point in time the log stream is swapped too: the live logs set aside, the
            // recovered generations in their place.
            let rewind = (!plan.roll_forward).then(|| place::Rewind {
                def: &def,
                set: plan.set.id,
                staged: &log_stage.dir,
                generations: plan.logs.keys().copied().collect(),
                end: r.recovery.end,
                log_file_size: plan.log_file_size(),
            });
            // All or none: a failure part way puts every database, log and checkpoint back
            // (the cleanup and post-restore below still run).
            let placed = place::place_all(&db_stages, rewind.as_ref())?;
            Ok(Restored {
                recovery: r.recovery,
                databases: placed.databases,
                files: r.files,
                bytes: r.bytes,
                superseded_logs: placed.superseded,
            })
        });
        for (stage, _) in &db_stages {
            stage.remove();
        }
        log_stage.remove();
        let ok = result.is_ok();
        let results: BTreeMap<ComponentKey, bool> = session
            .document()
            .writers
            .iter()
            .flat_map(|w| {
                w.components.iter().map(|c| {
                    let key = ComponentKey {
                        writer: w.key.clone(),
                        logical_path: c.logical_path.clone(),
                        name: c.name.clone(),
                    };
                    (key, ok)
                })
            })
            .collect();
        session.post_restore(&results)?;
        result
    }

    /// Stages the chain's databases (each in a staging directory beside its file, noted in
    /// `db_stages` for the caller's placement and cleanup) and logs (in `log_stage`), checks
    /// them and runs hard recovery, rolling forward through the live logs if asked.
    fn recover_in_place<'d>(
        &self,
        def: &'d StorageGroupDef,
        tag: &str,
        log_stage: &Staged,
        db_stages: &mut Vec<(Staged, &'d store::DatabaseDef)>,
        plan: &Plan,
        progress: &dyn Progress,
    ) -> Result<Recovered> {
        let (mut files, mut bytes) = (0, 0);
        log_stage.fs.create_dir_all(&log_stage.dir).map_err(io_err("creating", &log_stage.dir))?;
        let mut specs = Vec::new();
        for (name, entry) in plan.databases {
            let db = def.databases.iter().find(|d| &d.name == name).ok_or_else(|| {
                RequesterError::RestoreRefused(format!(
                    "database {name} of the backup is not in storage group {}",
                    def.name
                ))
            })?;
            let parent = db.path.parent().map(Path::to_path_buf).unwrap_or_default();
            let stage =
                Staged { fs: db.volume.fs.clone(), dir: parent.join(format!(".restore-{tag}")) };
            stage.fs.create_dir_all(&stage.dir).map_err(io_err("creating", &stage.dir))?;
            let staged = stage.dir.join(db.path.file_name().unwrap_or_default());
            let stage_fs = stage.fs.clone();
            db_stages.push((stage, db));
            progress.step(&format!("restoring database {name}"));
            write_entry(&self.repo, entry, stage_fs.as_ref(), &staged, progress)?;
            files += 1;
            progress.files(files, plan.total_files());
            bytes += entry.size;
            specs.push(DatabaseSpec::new(name.clone(), stage_fs, staged));
        }
        progress.step("restoring log generations");
        for (g, entry) in plan.logs {
            let p = log_stage.dir.join(ese::logfmt::generation_name(&def.prefix, *g));
            write_entry(&self.repo, entry, log_stage.fs.as_ref(), &p, progress)?;
            files += 1;
            progress.files(files, plan.total_files());
            bytes += entry.size;
        }
        check_logs(&log_stage.fs, &log_stage.dir, &def.prefix, plan.log_range(), &specs)?;
        check_cancelled(progress)?;
        progress.step(if plan.roll_forward {
            "hard recovery: replaying the backed-up logs and rolling forward"
        } else {
            "hard recovery: replaying the backed-up logs (point in time)"
        });
        let recovery = ese::hard_recover(&HardRecovery {
            databases: specs.clone(),
            log_fs: log_stage.fs.clone(),
            log_dir: log_stage.dir.clone(),
            prefix: def.prefix.clone(),
            roll_forward: plan
                .roll_forward
                .then(|| (def.log_volume.fs.clone(), def.log_dir.clone())),
            stop_after_generation: None,
        })
        .map_err(recovery_failed)?;
        if !plan.roll_forward {
            forget_backups(&specs)?;
        }
        Ok(Recovered { recovery, files, bytes })
    }

    fn restore_alternate(
        &self,
        sg: &StorageGroup,
        plan: &Plan,
        fs: &FsRef,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Restored> {
        let tag = Uuid::new_v4().simple().to_string();
        let stage = Staged { fs: fs.clone(), dir: dir.join(format!(".restore-{tag}")) };
        let logs_stage = Staged { fs: fs.clone(), dir: stage.dir.join("logs") };
        let existed = fs.exists(dir).map_err(io_err("checking", dir))?;
        let outcome = self.recover_alternate(sg, plan, &stage, &logs_stage, dir, progress);
        logs_stage.remove();
        stage.remove();
        // A failed restore into a directory it created leaves no empty directory behind.
        if outcome.is_err()
            && !existed
            && let Err(e) = fs.remove_dir(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing the failed restore's target directory failed");
        }
        outcome
    }

    /// Stages, checks and recovers into `stage` (logs in `logs_stage`), then moves the result
    /// into `dir`.
    fn recover_alternate(
        &self,
        sg: &StorageGroup,
        plan: &Plan,
        stage: &Staged,
        logs_stage: &Staged,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<Restored> {
        let def = sg.def();
        let fs = &stage.fs;
        refuse_occupied(fs, dir)?;
        let (lo, hi) = plan.log_range();
        let live = match plan.logs.last_key_value() {
            Some((g, last)) if plan.roll_forward => {
                progress.step("rolling the storage group's log and listing its later generations");
                live::later_live_logs(sg, *g, last)?
            }
            _ => Vec::new(),
        };
        fs.create_dir_all(&logs_stage.dir).map_err(io_err("creating", &logs_stage.dir))?;
        let total = plan.total_files() + live.len();
        let (mut files, mut bytes) = (0, 0);
        let mut specs = Vec::new();
        for (name, entry) in plan.databases {
            progress.step(&format!("restoring database {name}"));
            let p = stage.dir.join(format!("{name}.edb"));
            write_entry(&self.repo, entry, fs.as_ref(), &p, progress)?;
            files += 1;
            progress.files(files, total);
            bytes += entry.size;
            specs.push(DatabaseSpec::new(name.clone(), fs.clone(), p));
        }
        progress.step("restoring log generations");
        let mut names = Vec::new();
        for (g, entry) in plan.logs {
            let name = ese::logfmt::generation_name(&def.prefix, *g);
            write_entry(&self.repo, entry, fs.as_ref(), &logs_stage.dir.join(&name), progress)?;
            files += 1;
            progress.files(files, total);
            bytes += entry.size;
            names.push(name);
        }
        if !live.is_empty() {
            progress.step("copying the storage group's later log generations");
        }
        for l in &live {
            let to = logs_stage.dir.join(&l.name);
            bytes += live::copy_live_log(&def.log_volume.fs, l, fs.as_ref(), &to, progress)?;
            files += 1;
            progress.files(files, total);
            names.push(l.name.clone());
        }
        let last = live.last().map_or(hi, |l| l.generation);
        check_logs(fs, &logs_stage.dir, &def.prefix, (lo, last), &specs)?;
        check_cancelled(progress)?;
        progress.step(if live.is_empty() {
            "hard recovery"
        } else {
            "hard recovery: replaying the backed-up and the later logs"
        });
        let recovery = ese::hard_recover(&HardRecovery {
            databases: specs,
            log_fs: fs.clone(),
            log_dir: logs_stage.dir.clone(),
            prefix: def.prefix.clone(),
            roll_forward: None,
            stop_after_generation: None,
        })
        .map_err(recovery_failed)?;
        let stream =
            place::RecoveredStream { end: recovery.end, last, log_file_size: plan.log_file_size() };
        let databases: Vec<String> = plan.databases.iter().map(|(n, _)| n.clone()).collect();
        let placed = place::place_alternate(
            fs,
            &stage.dir,
            dir,
            &def.prefix,
            place::Files { databases: &databases, logs: &names },
            stream,
        )?;
        Ok(Restored { recovery, databases: placed, files, bytes, superseded_logs: None })
    }
}

/// Refuses a restore into a directory that holds anything but a restore's staging.
fn refuse_occupied(fs: &FsRef, dir: &Path) -> Result<()> {
    let occupied = match fs.read_dir(dir) {
        Ok(entries) => entries.iter().any(|e| !e.name.starts_with(".restore-")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    if occupied {
        return Err(RequesterError::RestoreRefused(format!(
            "{} is not empty; restore to an empty or new directory",
            dir.display()
        )));
    }
    Ok(())
}

/// Checks every staged log generation of `range` — records, continuity, and the log
/// signature of the restored databases — before recovery replays any: a foreign or damaged
/// log stops the restore naming its file, even one recovery would not have needed to read.
fn check_logs(
    fs: &FsRef,
    dir: &Path,
    prefix: &str,
    range: (u32, u32),
    databases: &[DatabaseSpec],
) -> Result<()> {
    let signature = match databases.first() {
        Some(db) => Some(
            ese::inspect::dump_database_header(db.fs.as_ref(), &db.path)
                .map_err(recovery_failed)?,
        ),
        None => None,
    }
    .map(|h| h.log_signature);
    ese::inspect::verify_logs(fs.as_ref(), dir, prefix, Some(range), signature)
        .map_err(recovery_failed)?;
    check_chained(fs, dir, prefix)
}

/// Checks that each generation continues the one before it: its header records when the
/// previous generation was created. Generation numbers and the signature alone do not tell
/// two streams apart after a point-in-time restore rewound one (the new stream reuses the
/// numbers), and replaying a mix of them would corrupt the databases. Creation times are in
/// seconds, so streams rolled within the same second pass; what catches a rewound stream for
/// sure, when rolling forward, is comparing the backup's last generation with the live one
/// (see `live::check_same_history`).
fn check_chained(fs: &FsRef, dir: &Path, prefix: &str) -> Result<()> {
    let logs = ese::logfmt::list_logs(fs.as_ref(), dir, prefix).map_err(recovery_failed)?;
    for w in logs.windows(2) {
        let (prev, next) = (&w[0], &w[1]);
        if next.header.previous_created != prev.header.created {
            return Err(RequesterError::RestoreFailed(format!(
                "log generation {} does not continue {}: it follows a generation created at {} (Unix time), and this one was created at {}; the logs come from two different log streams (was a backup restored over the storage group in between?)",
                ese::logfmt::generation_name(prefix, next.header.generation),
                ese::logfmt::generation_name(prefix, prev.header.generation),
                next.header.previous_created,
                prev.header.created
            )));
        }
    }
    Ok(())
}

/// Every log generation held by the sets that build on `full` (incrementals and
/// differentials whose chain of bases leads to it), with the set holding each. Only those
/// continue `full`'s log stream: a set of another chain may hold the same generation numbers
/// of a stream rewound since by a point-in-time restore.
fn later_logs(repo: &Repository, full: &BackupSet) -> Result<BTreeMap<u32, FileEntry>> {
    let sets = repo.list_sets()?;
    let by_id: std::collections::HashMap<Uuid, &BackupSet> =
        sets.iter().map(|s| (s.id, s)).collect();
    let builds_on_full = |s: &BackupSet| {
        let mut cur = s.base_set;
        // Bounded by the number of sets, in case a damaged repository holds a loop.
        for _ in 0..sets.len() {
            match cur {
                Some(id) if id == full.id => return true,
                Some(id) => cur = by_id.get(&id).and_then(|b| b.base_set),
                None => return false,
            }
        }
        false
    };
    let mut out = BTreeMap::new();
    for s in &sets {
        if !matches!(s.backup_type, BackupType::Incremental | BackupType::Differential)
            || !builds_on_full(s)
        {
            continue;
        }
        for f in s.files.iter().filter(|f| f.role == FileRole::Log) {
            let name = Path::new(&f.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((_, g)) = crate::verify::log_generation(name) {
                out.entry(g).or_insert_with(|| f.clone());
            }
        }
    }
    Ok(out)
}

/// Rolling forward starts with the generations after the chain's last that later sets of the
/// same full hold: a later full or incremental truncated them from the log directory, and
/// the live logs continue only after them.
fn roll_forward_from_repository(
    logs: &mut BTreeMap<u32, FileEntry>,
    later: &BTreeMap<u32, FileEntry>,
) {
    let Some(mut next) = logs.keys().next_back().map(|g| g + 1) else { return };
    while let Some(f) = later.get(&next) {
        logs.insert(next, f.clone());
        next += 1;
    }
}

/// The log generations the repository holds after `base` (see [`later_logs`]).
pub fn generations_held(
    repo: &Repository,
    base: &BackupSet,
) -> Result<std::collections::BTreeSet<u32>> {
    Ok(later_logs(repo, base)?.into_keys().collect())
}

/// The database files (from the chain's first set) and every log generation, checked for
/// continuity and for agreement between sets that hold the same generation.
#[allow(clippy::type_complexity)]
fn collect_files(
    chain: &[BackupSet],
    prefix: &str,
    extra: &BTreeMap<u32, FileEntry>,
) -> Result<(Vec<(String, FileEntry)>, BTreeMap<u32, FileEntry>)> {
    let first = &chain[0];
    // A database file's component is named after its database.
    let databases: Vec<(String, FileEntry)> = first
        .files
        .iter()
        .filter(|f| f.role == FileRole::Database)
        .map(|f| (f.component.clone(), f.clone()))
        .collect();
    if databases.is_empty() {
        return Err(RequesterError::RestoreRefused(format!(
            "set {} holds no database file",
            first.id
        )));
    }
    let mut logs: BTreeMap<u32, FileEntry> = BTreeMap::new();
    for s in chain {
        for f in s.files.iter().filter(|f| f.role == FileRole::Log) {
            let name = Path::new(&f.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
            let g = ese::logfmt::parse_generation_name(prefix, name).ok_or_else(|| {
                RequesterError::RestoreRefused(format!(
                    "{} in set {} is not a log generation of {prefix}",
                    f.path, s.id
                ))
            })?;
            if let Some(prev) = logs.get(&g)
                && prev.blake3 != f.blake3
            {
                return Err(RequesterError::RestoreRefused(format!(
                    "log generation {g:#X} differs between sets ({} in one, {} in another)",
                    prev.path, f.path
                )));
            }
            logs.insert(g, f.clone());
        }
    }
    let (Some(&lo), Some(&hi)) = (logs.keys().next(), logs.keys().next_back()) else {
        return Err(RequesterError::RestoreRefused(
            "the backup chain holds no log generation".into(),
        ));
    };
    // Generations a later incremental truncated before a differential was taken live in that
    // incremental's set.
    for g in lo..=hi {
        if let (false, Some(f)) = (logs.contains_key(&g), extra.get(&g)) {
            logs.insert(g, f.clone());
        }
    }
    if let Some(missing) = (lo..=hi).find(|g| !logs.contains_key(g)) {
        return Err(RequesterError::RestoreRefused(format!(
            "log generation {} is missing from the backup chain (it holds {} to {})",
            ese::logfmt::generation_name(prefix, missing),
            ese::logfmt::generation_name(prefix, lo),
            ese::logfmt::generation_name(prefix, hi)
        )));
    }
    Ok((databases, logs))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use volume::FileSystem;
    use volume::fault::{FaultInjector, FaultKind};
    use volume::mem::MemFs;

    use super::write_entry_flushing;
    use crate::repo::{InitOptions, Repository, SetMeta};
    use crate::requester::Quiet;

    /// A sync that fails on the background thread fails the restore, although the final
    /// sync succeeds: the kernel reports a write-back error to one sync only.
    #[test]
    fn a_failed_background_sync_fails_the_restore_of_the_file() {
        let repo_fs = MemFs::new();
        let opts = InitOptions { chunk_size: 4096, zstd_level: 1 };
        let repo = Repository::init(repo_fs.as_ref(), "r", opts).unwrap();
        let src = MemFs::new();
        let data: Vec<u8> = (0..10 * 4096u32).map(|i| (i % 251) as u8).collect();
        let f = src.open(Path::new("db"), volume::OpenMode::Create).unwrap();
        f.write_at(&data, 0).unwrap();
        let mut w = repo.begin_set();
        w.add_file("vol/db", crate::repo::FileRole::Database, "c", f.as_ref(), &|_| {}).unwrap();
        let set = w.publish(SetMeta::default()).unwrap();
        let entry = &set.files[0];

        let target = FaultInjector::new(MemFs::new().as_ref());
        target.fail_sync_of("out", FaultKind::Eio);
        let fs = target.as_ref();
        let err = write_entry_flushing(&repo, entry, fs.as_ref(), Path::new("out"), &Quiet, 4096)
            .unwrap_err()
            .to_string();
        assert!(err.contains("syncing out") && err.contains("injected fault"), "{err}");

        // With the disk healthy the same restore writes every byte.
        write_entry_flushing(&repo, entry, fs.as_ref(), Path::new("out2"), &Quiet, 4096).unwrap();
        assert_eq!(volume::fs::read_all(fs.as_ref(), Path::new("out2")).unwrap(), data);
    }
}
