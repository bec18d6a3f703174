//! Restoring into an alternate directory: staged inside it, recovered there (rolling forward
//! through copies of the live logs), then moved into place; the live store is never touched.

use std::path::Path;

use ese::{DatabaseSpec, HardRecovery};
use store::StorageGroup;
use uuid::Uuid;
use volume::FsRef;

use super::{
    Plan, Restored, Restorer, Staged, check_cancelled, check_logs, io_err, live, place,
    recovery_failed, write_entry,
};
use crate::error::{RequesterError, Result};
use crate::requester::Progress;

impl Restorer {
    pub(super) fn restore_alternate(
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
    pub(super) fn recover_alternate(
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
                live::later_live_logs(sg, *g, last, self.repo.crypto())?
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
pub(super) fn refuse_occupied(fs: &FsRef, dir: &Path) -> Result<()> {
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
