//! Restore: backup sets back into a storage group, then hard recovery.
//!
//! A restore takes a chain of sets — a full (or copy) alone, a full plus every incremental up
//! to the chosen one, or a full plus one differential — and:
//!
//! 1. checks the chain: every log generation from the lowest to the highest is present, and a
//!    generation held by several sets has the same content in each;
//! 2. writes the database files and the logs into a *staging* directory beside the target,
//!    checking every chunk's and file's hash on the way;
//! 3. runs hard recovery on the staged files: the backed-up logs, then (roll-forward) the
//!    later logs still in the storage group's log directory;
//! 4. only then moves the recovered database files into place.
//!
//! A hash mismatch, a missing generation, a foreign log or a cancellation by the caller
//! ([`Progress::cancelled`], checked between files and chunks) stops the restore before step
//! 4; the staging directory is removed and the target is exactly as it was.
//!
//! To the original location the storage group must be dismounted (the store writer's
//! pre-restore refuses otherwise) unless the caller allows the restore to dismount it; it is
//! mounted again at the end. Mounting replays the logs still on disk, so a restore to the
//! original location always rolls forward; a point-in-time restore goes to an alternate
//! location, where the recovered database is left clean beside the logs it was recovered with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ese::{DatabaseSpec, HardRecovery};
use events::{EventSink, catalog as cat};
use serde_json::json;
use store::{InformationStore, StorageGroup};
use uuid::Uuid;
use volume::{FileSystem, FsRef, OpenMode};
use vss::{BackupComponentsDocument, ComponentKey, Coordinator};

use crate::error::{RequesterError, Result};
use crate::repo::{BackupSet, FileEntry, Repository};
use crate::requester::{Progress, aborted};

/// Where to restore.
#[derive(Clone)]
pub enum RestoreTarget {
    /// Over the storage group's own database files, rolling forward through its logs.
    Original {
        /// Dismount the storage group if it is mounted (the reference's "this database can be
        /// overwritten by a restore").
        allow_overwrite: bool,
    },
    /// Into `dir` on `fs`: `<db name>.edb` files and `logs/`, recovered and clean.
    Alternate { fs: FsRef, dir: PathBuf },
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
    /// Continue through the later logs still in the storage group's log directory.
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
}

/// Restores backup sets.
pub struct Restorer {
    coordinator: Coordinator,
    store: Arc<InformationStore>,
    repo: Arc<Repository>,
    events: Arc<dyn EventSink>,
}

struct Staged {
    fs: FsRef,
    dir: PathBuf,
}

impl Staged {
    fn remove(&self) {
        if let Ok(entries) = self.fs.read_dir(&self.dir) {
            for e in entries {
                let _ = self.fs.remove_file(&self.dir.join(&e.name));
            }
        }
        let _ = self.fs.remove_dir(&self.dir);
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RequesterError {
    let path = path.display().to_string();
    move |source| RequesterError::Io { op, path, source }
}

/// Writes a backed-up file into `fs` at `path`, durably. Stops between chunks when the job
/// is cancelled (the caller's cleanup removes the partial file with its staging directory).
fn write_entry(
    repo: &Repository,
    entry: &FileEntry,
    fs: &dyn FileSystem,
    path: &Path,
    progress: &dyn Progress,
) -> Result<()> {
    if let Some(reason) = progress.cancelled() {
        return Err(aborted(reason));
    }
    let f = fs.open(path, OpenMode::CreateNew).map_err(io_err("creating", path))?;
    let written = repo.read_file(entry, &mut |off, data| match progress.cancelled() {
        Some(reason) => Err(std::io::Error::other(reason)),
        None => f.write_at(data, off),
    });
    if let Err(e) = written {
        return Err(progress.cancelled().map_or(e.into(), aborted));
    }
    f.sync().map_err(io_err("syncing", path))?;
    Ok(())
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

    /// The sets to restore for `set`, oldest first.
    pub fn chain(&self, set: &BackupSet) -> Result<Vec<BackupSet>> {
        let refuse = |why: String| RequesterError::RestoreRefused(why);
        let mut chain = vec![set.clone()];
        let mut seen = std::collections::HashSet::from([set.id]);
        let mut cur = set.clone();
        while matches!(cur.backup_type.as_str(), "incremental" | "differential") {
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
            let allowed: &[&str] = match cur.backup_type.as_str() {
                "differential" => &["full"],
                _ => &["full", "incremental"],
            };
            if !allowed.contains(&b.backup_type.as_str()) {
                return Err(refuse(format!(
                    "{} {} cannot build on a {} backup",
                    cur.backup_type, cur.id, b.backup_type
                )));
            }
            chain.push(b.clone());
            cur = b;
        }
        if !matches!(cur.backup_type.as_str(), "full" | "copy") {
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
        let extra =
            if chain.len() > 1 { later_logs(&self.repo, &chain[0])? } else { BTreeMap::new() };
        let (databases, logs) = collect_files(&chain, &prefix, &extra)?;
        let sets: Vec<Uuid> = chain.iter().map(|s| s.id).collect();
        self.events.emit(
            &cat::REQUESTER_RESTORE_STARTED,
            set.job_id,
            json!({"storage_group": set.storage_group,
                   "sets": sets.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "),
                   "target": format!("{:?}", req.target)}),
        );
        let result = match &req.target {
            RestoreTarget::Original { allow_overwrite } => {
                if !req.roll_forward {
                    return Err(RequesterError::RestoreRefused(
                        "a restore to the original location replays the logs still on disk when it mounts; restore to an alternate location for a point-in-time copy".into(),
                    ));
                }
                self.restore_original(&sg, &set, &databases, &logs, *allow_overwrite, progress)
            }
            RestoreTarget::Alternate { fs, dir } => {
                if req.roll_forward {
                    return Err(RequesterError::RestoreRefused(
                        "roll-forward reads the storage group's live logs, which belong to the original location; restore there to roll forward".into(),
                    ));
                }
                self.restore_alternate(&sg, &databases, &logs, fs, dir, progress)
            }
        };
        match &result {
            Ok((recovery, placed, files, bytes)) => {
                self.events.emit(
                    &cat::STORE_RESTORE_RECOVERED,
                    set.job_id,
                    json!({"storage_group": set.storage_group,
                           "first": recovery.generations.first().copied().unwrap_or(0),
                           "last": recovery.generations.last().copied().unwrap_or(0)}),
                );
                self.events.emit(
                    &cat::REQUESTER_RESTORE_DONE,
                    set.job_id,
                    json!({"storage_group": set.storage_group, "files": files, "bytes": bytes,
                           "first": recovery.generations.first().copied().unwrap_or(0),
                           "last": recovery.generations.last().copied().unwrap_or(0)}),
                );
                let _ = placed;
            }
            Err(e) => self.events.emit(
                &cat::STORE_RESTORE_FAILED,
                set.job_id,
                json!({"storage_group": set.storage_group, "error": e.to_string()}),
            ),
        }
        let (recovery, databases, files, bytes) = result?;
        Ok(RestoreReport {
            storage_group: set.storage_group.clone(),
            sets,
            files,
            bytes,
            recovery,
            databases,
        })
    }

    #[allow(clippy::type_complexity)]
    fn restore_original(
        &self,
        sg: &StorageGroup,
        set: &BackupSet,
        databases: &[(String, FileEntry)],
        logs: &BTreeMap<u32, FileEntry>,
        allow_overwrite: bool,
        progress: &dyn Progress,
    ) -> Result<(ese::HardRecoveryReport, Vec<(String, PathBuf)>, usize, u64)> {
        let document: BackupComponentsDocument = serde_json::from_value(set.components.clone())
            .map_err(|e| {
                RequesterError::RestoreRefused(format!("components document of {}: {e}", set.id))
            })?;
        if sg.is_mounted() {
            if !allow_overwrite {
                return Err(RequesterError::RestoreRefused(format!(
                    "storage group {} is mounted; dismount it or allow the restore to overwrite it",
                    sg.name()
                )));
            }
            sg.dismount(false)?;
            // A restore that fails leaves the target as it was: mounted again.
            let result = self.restore_in_place(sg, document, databases, logs, progress);
            if result.is_err() && !sg.is_mounted() {
                let _ = sg.mount();
            }
            return result;
        }
        self.restore_in_place(sg, document, databases, logs, progress)
    }

    #[allow(clippy::type_complexity)]
    fn restore_in_place(
        &self,
        sg: &StorageGroup,
        document: BackupComponentsDocument,
        databases: &[(String, FileEntry)],
        logs: &BTreeMap<u32, FileEntry>,
        progress: &dyn Progress,
    ) -> Result<(ese::HardRecoveryReport, Vec<(String, PathBuf)>, usize, u64)> {
        let mut session = self.coordinator.restore_session(document);
        session.pre_restore()?;
        let def = sg.def().clone();
        let tag = Uuid::new_v4().simple().to_string();
        let log_stage = Staged {
            fs: def.log_volume.fs.clone(),
            dir: def.log_dir.join(format!(".restore-{tag}")),
        };
        let mut db_stages: Vec<(Staged, &store::DatabaseDef)> = Vec::new();
        let outcome = (|| -> Result<(ese::HardRecoveryReport, usize, u64)> {
            let mut files = 0;
            let mut bytes = 0;
            log_stage
                .fs
                .create_dir_all(&log_stage.dir)
                .map_err(io_err("creating", &log_stage.dir))?;
            let mut specs = Vec::new();
            for (name, entry) in databases {
                let db = def.databases.iter().find(|d| &d.name == name).ok_or_else(|| {
                    RequesterError::RestoreRefused(format!(
                        "database {name} of the backup is not in storage group {}",
                        def.name
                    ))
                })?;
                let parent = db.path.parent().map(Path::to_path_buf).unwrap_or_default();
                let stage = Staged {
                    fs: db.volume.fs.clone(),
                    dir: parent.join(format!(".restore-{tag}")),
                };
                stage.fs.create_dir_all(&stage.dir).map_err(io_err("creating", &stage.dir))?;
                let staged = stage.dir.join(db.path.file_name().unwrap_or_default());
                let stage_fs = stage.fs.clone();
                db_stages.push((stage, db));
                progress.step(&format!("restoring database {name}"));
                write_entry(&self.repo, entry, stage_fs.as_ref(), &staged, progress)?;
                files += 1;
                progress.files(files, databases.len() + logs.len());
                bytes += entry.size;
                specs.push(DatabaseSpec::new(name.clone(), stage_fs, staged));
            }
            progress.step("restoring log generations");
            for (g, entry) in logs {
                let p = log_stage.dir.join(ese::logfmt::generation_name(&def.prefix, *g));
                write_entry(&self.repo, entry, log_stage.fs.as_ref(), &p, progress)?;
                files += 1;
                progress.files(files, databases.len() + logs.len());
                bytes += entry.size;
            }
            check_logs(&log_stage.fs, &log_stage.dir, &def.prefix, logs, &specs)?;
            check_cancelled(progress)?;
            progress.step("hard recovery: replaying the backed-up logs and rolling forward");
            let report = ese::hard_recover(&HardRecovery {
                databases: specs,
                log_fs: log_stage.fs.clone(),
                log_dir: log_stage.dir.clone(),
                prefix: def.prefix.clone(),
                roll_forward: Some((def.log_volume.fs.clone(), def.log_dir.clone())),
                stop_after_generation: None,
            })
            .map_err(|e| RequesterError::RestoreFailed(e.to_string()))?;
            Ok((report, files, bytes))
        })();
        let result = match outcome {
            Ok((report, files, bytes)) => {
                // Move the recovered databases into place, all or none: each database file
                // there is first set aside in its staging directory, so that a failure part
                // way puts every one back (the cleanup and post-restore below still run).
                let placed = place_all(&db_stages);
                placed.map(|placed| (report, placed, files, bytes))
            }
            Err(e) => Err(e),
        };
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

    #[allow(clippy::type_complexity)]
    fn restore_alternate(
        &self,
        sg: &StorageGroup,
        databases: &[(String, FileEntry)],
        logs: &BTreeMap<u32, FileEntry>,
        fs: &FsRef,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<(ese::HardRecoveryReport, Vec<(String, PathBuf)>, usize, u64)> {
        let def = sg.def().clone();
        let tag = Uuid::new_v4().simple().to_string();
        let stage = Staged { fs: fs.clone(), dir: dir.join(format!(".restore-{tag}")) };
        let outcome =
            (|| -> Result<(ese::HardRecoveryReport, Vec<(String, PathBuf)>, usize, u64)> {
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
                fs.create_dir_all(&stage.dir.join("logs"))
                    .map_err(io_err("creating", &stage.dir))?;
                let (mut files, mut bytes) = (0, 0);
                let mut specs = Vec::new();
                for (name, entry) in databases {
                    progress.step(&format!("restoring database {name}"));
                    let p = stage.dir.join(format!("{name}.edb"));
                    write_entry(&self.repo, entry, fs.as_ref(), &p, progress)?;
                    files += 1;
                    progress.files(files, databases.len() + logs.len());
                    progress.files(files, databases.len() + logs.len());
                    bytes += entry.size;
                    specs.push(DatabaseSpec::new(name.clone(), fs.clone(), p));
                }
                progress.step("restoring log generations");
                for (g, entry) in logs {
                    let p =
                        stage.dir.join("logs").join(ese::logfmt::generation_name(&def.prefix, *g));
                    write_entry(&self.repo, entry, fs.as_ref(), &p, progress)?;
                    files += 1;
                    progress.files(files, databases.len() + logs.len());
                    progress.files(files, databases.len() + logs.len());
                    bytes += entry.size;
                }
                check_logs(fs, &stage.dir.join("logs"), &def.prefix, logs, &specs)?;
                check_cancelled(progress)?;
                progress.step("hard recovery");
                let report = ese::hard_recover(&HardRecovery {
                    databases: specs,
                    log_fs: fs.clone(),
                    log_dir: stage.dir.join("logs"),
                    prefix: def.prefix.clone(),
                    roll_forward: None,
                    stop_after_generation: None,
                })
                .map_err(|e| RequesterError::RestoreFailed(e.to_string()))?;
                // Move the recovered files out of staging.
                fs.create_dir_all(&dir.join("logs")).map_err(io_err("creating", dir))?;
                let mut placed = Vec::new();
                for (name, _) in databases {
                    let from = stage.dir.join(format!("{name}.edb"));
                    let to = dir.join(format!("{name}.edb"));
                    fs.rename(&from, &to).map_err(io_err("moving into place", &to))?;
                    placed.push((name.clone(), to));
                }
                for g in logs.keys() {
                    let n = ese::logfmt::generation_name(&def.prefix, *g);
                    let to = dir.join("logs").join(&n);
                    fs.rename(&stage.dir.join("logs").join(&n), &to)
                        .map_err(io_err("moving into place", &to))?;
                }
                write_recovered_checkpoint(fs, dir, &def.prefix, &placed, logs, &report)?;
                fs.sync_dir(&dir.join("logs")).map_err(io_err("syncing", dir))?;
                fs.sync_dir(dir).map_err(io_err("syncing", dir))?;
                Ok((report, placed, files, bytes))
            })();
        let logs_stage = Staged { fs: fs.clone(), dir: stage.dir.join("logs") };
        logs_stage.remove();
        stage.remove();
        outcome
    }
}

/// Checks every restored log generation — records, continuity, and the log signature of the
/// restored databases — before recovery replays any: a foreign or damaged log stops the
/// restore naming its file, even one recovery would not have needed to read.
fn check_logs(
    fs: &FsRef,
    dir: &Path,
    prefix: &str,
    logs: &BTreeMap<u32, FileEntry>,
    databases: &[DatabaseSpec],
) -> Result<()> {
    let failed = |e: ese::EngineError| RequesterError::RestoreFailed(e.to_string());
    let signature = match databases.first() {
        Some(db) => {
            Some(ese::inspect::dump_database_header(db.fs.as_ref(), &db.path).map_err(failed)?)
        }
        None => None,
    }
    .map(|h| h.log_signature);
    if let (Some(lo), Some(hi)) = (logs.keys().next(), logs.keys().next_back()) {
        ese::inspect::verify_logs(fs.as_ref(), dir, prefix, Some((*lo, *hi)), signature)
            .map_err(failed)?;
    }
    Ok(())
}

/// Moves each staged database over its original file, setting the original aside first (as
/// `<name>.previous` in the staging directory, removed with it); on any failure every
/// original set aside is put back, so the target is as it was.
fn place_all(stages: &[(Staged, &store::DatabaseDef)]) -> Result<Vec<(String, PathBuf)>> {
    let name = |db: &store::DatabaseDef| db.path.file_name().unwrap_or_default().to_owned();
    let aside = |stage: &Staged, db: &store::DatabaseDef| {
        let mut n = name(db);
        n.push(".previous");
        stage.dir.join(n)
    };
    let sync_parent = |db: &store::DatabaseDef| {
        let parent = db.path.parent().map(Path::to_path_buf).unwrap_or_default();
        db.volume.fs.sync_dir(&parent).map_err(io_err("syncing", &parent))
    };
    let mut set_aside = Vec::new();
    let mut placed = Vec::new();
    let outcome = (|| -> Result<()> {
        for (stage, db) in stages {
            match db.volume.fs.metadata(&db.path) {
                Ok(_) => {
                    let to = aside(stage, db);
                    db.volume
                        .fs
                        .rename(&db.path, &to)
                        .map_err(io_err("setting aside", &db.path))?;
                    set_aside.push((stage, *db));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("reading", &db.path)(e)),
            }
        }
        for (stage, db) in stages {
            let staged = stage.dir.join(name(db));
            db.volume
                .fs
                .rename(&staged, &db.path)
                .map_err(io_err("moving into place", &db.path))?;
            sync_parent(db)?;
            placed.push((db.name.clone(), db.path.clone()));
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        // A database placed where there was none before goes away again.
        for (stage, db) in stages {
            let had_one = set_aside.iter().any(|(_, d)| std::ptr::eq(*d, *db));
            if !had_one && placed.iter().any(|(n, _)| *n == db.name) {
                let _ = db.volume.fs.rename(&db.path, &stage.dir.join(name(db)));
            }
        }
        for (stage, db) in set_aside {
            let _ = db.volume.fs.rename(&aside(stage, db), &db.path);
            let _ = sync_parent(db);
        }
        return Err(e);
    }
    Ok(placed)
}

/// Writes `E00.chk` beside databases recovered to an alternate location, pointing at the end
/// of what hard recovery replayed, so that the directory opens as an instance of its own
/// (databases in `dir`, logs in `dir/logs`) with nothing left to redo.
fn write_recovered_checkpoint(
    fs: &FsRef,
    dir: &Path,
    prefix: &str,
    placed: &[(String, PathBuf)],
    logs: &BTreeMap<u32, FileEntry>,
    report: &ese::HardRecoveryReport,
) -> Result<()> {
    let failed = |e: ese::EngineError| RequesterError::RestoreFailed(e.to_string());
    let mut attached = Vec::new();
    let mut signature = None;
    let mut page_size = 0;
    for (name, path) in placed {
        let h = ese::inspect::dump_database_header(fs.as_ref(), path).map_err(failed)?;
        signature.get_or_insert(h.log_signature);
        page_size = h.page_size;
        attached.push(ese::logfmt::AttachedDb {
            dbid: h.dbid,
            name: name.clone(),
            path: path.display().to_string(),
        });
    }
    let log_file_size = logs.values().next().map_or(0, |e| e.size as u32);
    let chk = ese::checkpoint::Checkpoint {
        signature: signature.unwrap_or_default(),
        checkpoint: report.end,
        next_dbid: attached.iter().map(|a| a.dbid).max().unwrap_or(0) + 1,
        attached,
        log_file_size,
        page_size,
        circular_logging: false,
    };
    let path = dir.join(ese::logfmt::checkpoint_name(prefix));
    ese::checkpoint::write_checkpoint(fs.as_ref(), &path, &chk).map_err(failed)
}

/// Every log generation held by the sets of `full`'s storage group and node that were taken
/// after it (incrementals and differentials), with the set holding each.
fn later_logs(repo: &Repository, full: &BackupSet) -> Result<BTreeMap<u32, FileEntry>> {
    let mut out = BTreeMap::new();
    for s in repo.list_sets()? {
        if s.storage_group != full.storage_group
            || s.node != full.node
            || s.created_unix_ms < full.created_unix_ms
            || !matches!(s.backup_type.as_str(), "incremental" | "differential")
        {
            continue;
        }
        for f in s.files.iter().filter(|f| f.role == "log") {
            let name = Path::new(&f.path).file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some((_, g)) = crate::verify::log_generation(name) {
                out.entry(g).or_insert_with(|| f.clone());
            }
        }
    }
    Ok(out)
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
        .filter(|f| f.role == "database")
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
        for f in s.files.iter().filter(|f| f.role == "log") {
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
