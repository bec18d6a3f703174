//! Restoring over the storage group's own files: the store writer's pre-restore and
//! post-restore, staging beside each database, hard recovery, and placement all or none.

use std::collections::BTreeMap;
use std::path::Path;

use ese::{DatabaseSpec, HardRecovery};
use store::{StorageGroup, StorageGroupDef};
use uuid::Uuid;
use volume::OpenMode;
use vss::{BackupComponentsDocument, ComponentKey};

use super::{
    Plan, Recovered, Restored, Restorer, Staged, check_cancelled, check_logs, io_err, live, place,
    recovery_failed, write_entry,
};
use crate::error::{RequesterError, Result};
use crate::requester::Progress;

impl Restorer {
    pub(super) fn restore_original(
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
        let document = store::writer::restorable_by_store(document, self.store.node());
        let def = sg.def();
        if plan.roll_forward {
            check_live_logs_continue(&def, plan, self.repo.crypto())?;
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

    pub(super) fn restore_in_place(
        &self,
        sg: &StorageGroup,
        document: BackupComponentsDocument,
        plan: &Plan,
        progress: &dyn Progress,
    ) -> Result<Restored> {
        let mut session = self.coordinator.restore_session_as(plan.job, document);
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
    pub(super) fn recover_in_place<'d>(
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
}

/// A point-in-time restore over the original location rewinds the storage group's log
/// stream; a database the set does not hold would stay in place with pages stamped with
/// positions of the superseded logs, beyond the new stream's, and a later recovery would
/// skip changes to it. Refuses such a restore, naming those databases.
pub(super) fn check_replaces_every_database(def: &StorageGroupDef, plan: &Plan) -> Result<()> {
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
pub(super) fn check_live_logs_continue(
    def: &StorageGroupDef,
    plan: &Plan,
    crypto: &crate::repo::Crypto,
) -> Result<()> {
    match plan.logs.last_key_value() {
        Some((g, last)) => live::check_same_history(
            &def.log_volume.fs,
            &def.log_dir,
            &def.prefix,
            *g,
            last,
            crypto,
        ),
        None => Ok(()),
    }
}

/// Clears the backup history of databases restored at a point in time over the original
/// location: the repository's sets belong to the log stream the restore set aside, and an
/// incremental or differential on top of them would mix two streams under the same
/// generation numbers. With no previous full backup recorded, the engine refuses the next
/// incremental or differential until a new full backup.
pub(super) fn forget_backups(databases: &[DatabaseSpec]) -> Result<()> {
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
