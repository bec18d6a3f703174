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

mod alternate;
pub(crate) mod chain;
mod in_place;
mod live;
mod place;
mod write;

pub use chain::generations_held;
use chain::{check_logs, collect_files, later_logs, roll_forward_from_repository};
use write::write_entry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use events::{EventSink, catalog as cat};
use serde_json::json;
use store::InformationStore;
use uuid::Uuid;
use volume::FsRef;
use vss::Coordinator;

pub use place::SupersededLogs;

use crate::error::{RequesterError, Result};
use crate::repo::{BackupSet, FileEntry, Repository};
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
    /// The restore's own job: the key of its event trail (not the backup's job).
    pub job: Uuid,
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
    /// The restore's job, under which its events are filed.
    job: Uuid,
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

/// Fails if the job was cancelled.
fn check_cancelled(progress: &dyn Progress) -> Result<()> {
    progress.cancelled().map_or(Ok(()), |reason| Err(aborted(reason)))
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

    /// Restores `req.set` (and the sets it builds on) as a new job.
    pub fn restore(&self, req: &RestoreRequest, progress: &dyn Progress) -> Result<RestoreReport> {
        self.restore_as(req, Uuid::new_v4(), None, progress)
    }

    /// Restores `req.set` as job `job`: a restore is a job of its own, so its events are
    /// filed under `job`, not under the job of the backup it reads. `target` names the
    /// target in the events when the caller knows it better than [`RestoreTarget`] does (the
    /// whole host path of an alternate directory, which the target holds relative to its
    /// file system).
    pub fn restore_as(
        &self,
        req: &RestoreRequest,
        job: Uuid,
        target: Option<&str>,
        progress: &dyn Progress,
    ) -> Result<RestoreReport> {
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
        let shown = target.map_or_else(|| format!("{:?}", req.target), str::to_string);
        self.events.emit(
            &cat::REQUESTER_RESTORE_STARTED,
            Some(job),
            json!({"storage_group": set.storage_group,
                   "sets": sets.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "),
                   "backup_job": set.job_id.map(|j| j.to_string()),
                   "target": format!("{shown}, {how}"),
                   "roll_forward": req.roll_forward}),
        );
        let plan = Plan {
            job,
            set: &set,
            databases: &databases,
            logs: &logs,
            roll_forward: req.roll_forward,
        };
        let result = match &req.target {
            RestoreTarget::Original { allow_overwrite } => {
                self.restore_original(&sg, &plan, *allow_overwrite, progress)
            }
            RestoreTarget::Alternate { fs, dir } => {
                self.restore_alternate(&sg, &plan, fs, dir, progress)
            }
        };
        self.report_outcome(job, &set, &result);
        let done = result?;
        Ok(RestoreReport {
            job,
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
    fn report_outcome(&self, job: Uuid, set: &BackupSet, result: &Result<Restored>) {
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                return self.events.emit(
                    &cat::STORE_RESTORE_FAILED,
                    Some(job),
                    json!({"storage_group": set.storage_group, "error": e.to_string()}),
                );
            }
        };
        let first = done.recovery.generations.first().copied().unwrap_or(0);
        let last = done.recovery.generations.last().copied().unwrap_or(0);
        self.events.emit(
            &cat::STORE_RESTORE_RECOVERED,
            Some(job),
            json!({"storage_group": set.storage_group, "first": first, "last": last}),
        );
        self.events.emit(
            &cat::REQUESTER_RESTORE_DONE,
            Some(job),
            json!({"storage_group": set.storage_group, "files": done.files, "bytes": done.bytes,
                   "first": first, "last": last,
                   "superseded_logs": done.superseded_logs.as_ref().map(|s| s.dir.display().to_string())}),
        );
    }
}
