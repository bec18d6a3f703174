//! The active node's side of a *surrogate backup*: a backup that a passive copy's node takes of
//! its copy, so that the active carries no backup load.
//!
//! The active holds its storage group *backup in progress* for the passive's job (910/210),
//! exactly as for a backup of its own: a second backup, here or on any copy, is refused naming
//! the job and the passive node. At the end the engine records the backup in the database
//! headers as a **logged** change and closes the log holding it (913/213): the copies replay it,
//! so their headers show the same history, and a full taken on one copy is the base of an
//! incremental taken on another. Then the logs the backup covered are truncated as far as the
//! copies allow (224/225). A failed or abandoned job stamps and truncates nothing.
//!
//! The claim's lifetime (the lease the passive renews) is the node's to keep: this module only
//! begins, completes and aborts.

use ese::{BackupKind, EngineNotice};
use events::EventDef;
use events::catalog as cat;
use serde_json::json;
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::storage_group::{StorageGroup, engine_kind};

/// What the active recorded for a surrogate backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurrogateStamped {
    /// The closed generation holding the header update (0: nothing was stamped).
    pub generation: u32,
    /// When (seconds since the Unix epoch).
    pub time: u64,
}

/// The store's own event of a surrogate step the engine just took (910 before 210, 913 before
/// 213), emitted from the engine's notice so that it says only what happened.
pub(crate) fn store_event(
    storage_group: &str,
    n: &EngineNotice,
) -> Option<(&'static EventDef, serde_json::Value)> {
    match n {
        EngineNotice::SurrogateStarted { passive_node, .. } => Some((
            &cat::STORE_SURROGATE_BACKUP_STARTED,
            json!({"passive_node": passive_node, "database": storage_group,
                   "storage_group": storage_group}),
        )),
        EngineNotice::SurrogateStamped { passive_node, .. } => Some((
            &cat::STORE_SURROGATE_BACKUP_DONE,
            json!({"passive_node": passive_node, "database": storage_group,
                   "storage_group": storage_group}),
        )),
        _ => None,
    }
}

impl StorageGroup {
    /// Holds the storage group backup in progress for `passive`'s job `job` (a backup of
    /// type `backup_type` of `databases`, all of them when empty) and prepares the engine's
    /// session, which checks the type (an incremental needs a prior full in the header).
    pub fn begin_surrogate(
        &self,
        job: Uuid,
        backup_type: vss::BackupType,
        databases: &[String],
        passive: &str,
    ) -> Result<u64> {
        let def = self.def();
        if let Some(d) = databases.iter().find(|d| !def.databases.iter().any(|x| &x.name == *d)) {
            return Err(StoreError::NoSuchDatabase {
                storage_group: self.name().to_string(),
                database: d.clone(),
            });
        }
        let limit = (!databases.is_empty() && databases.len() < def.databases.len())
            .then(|| databases.to_vec());
        self.begin_backup(job, engine_kind(backup_type), limit, Some(passive))
    }

    /// Ends `passive`'s job `job`. On success the engine stamps the headers as a logged change
    /// covering generations `gen_low..=gen_high` (the ones the passive's backup copied) and
    /// closes the log holding it, then truncates: full and incremental backups of every
    /// database delete generations below the backup's last, the checkpoint and what every copy
    /// has replayed; differential and copy backups delete nothing (225 says why). On failure
    /// nothing is stamped or truncated. The claim is released either way.
    pub fn complete_surrogate(
        &self,
        job: Uuid,
        passive: &str,
        succeeded: bool,
        gens: (u32, u32),
        every_database: bool,
    ) -> Result<SurrogateStamped> {
        self.check_surrogate(job, passive)?;
        if !succeeded {
            self.abort_surrogate(job, passive, "the backup application reported failure");
            return Ok(SurrogateStamped { generation: 0, time: 0 });
        }
        self.check_not_behind(job, gens.1)?;
        let events = self.events().clone();
        let prefix = self.def().prefix.clone();
        let outcome = self.with_backup(job, |b| {
            let Some(session) = b.session.as_mut() else {
                return Err(StoreError::Surrogate {
                    storage_group: self.name().to_string(),
                    why: "dismounted during the surrogate backup; nothing was stamped".into(),
                });
            };
            let (low, high) = gens;
            let generation = session.stamp_surrogate(low, high)?;
            let time = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let no_truncation = |reason: &str| {
                events.emit(
                    &cat::ENGINE_NO_LOGS_TRUNCATED,
                    Some(job),
                    json!({"instance": prefix, "reason": reason}),
                );
            };
            let copied: Vec<u32> = if low == 0 { Vec::new() } else { (low..=high).collect() };
            match b.kind {
                BackupKind::Full | BackupKind::Incremental if every_database => {
                    session.truncate(&copied)?;
                }
                BackupKind::Full | BackupKind::Incremental => {
                    no_truncation("not every database of the storage group was in the backup")
                }
                BackupKind::Differential => {
                    session.truncate(&copied)?;
                }
                BackupKind::Copy => no_truncation("copy backups do not truncate logs"),
            }
            session.end()?;
            b.session = None;
            Ok(SurrogateStamped { generation, time })
        });
        self.release(job);
        outcome.unwrap_or_else(|| Err(self.not_holding(job)))
    }

    /// Refuses to record a backup that ends before one the headers already record (a copy far
    /// behind the one backed up before it): the copies replay stamps in log order and keep the
    /// newest, so recording an older one here would make this header's history differ from
    /// theirs. The job is released; nothing is stamped or truncated.
    fn check_not_behind(&self, job: Uuid, gen_high: u32) -> Result<()> {
        let inst = self.instance()?;
        let newest = self
            .def()
            .databases
            .iter()
            .filter_map(|d| inst.database_header(&d.name).ok())
            .flat_map(|h| {
                [h.previous_full, h.previous_incremental, h.previous_differential, h.previous_copy]
            })
            .flatten()
            .map(|slot| slot.gen_high)
            .max();
        match newest {
            Some(newest) if newest > gen_high => {
                let passive = self
                    .with_backup(job, |b| Ok(b.surrogate_for.clone().unwrap_or_default()))
                    .and_then(|r| r.ok())
                    .unwrap_or_default();
                self.abort_surrogate(
                    job,
                    &passive,
                    "the copy backed up is behind the last recorded backup",
                );
                Err(StoreError::Surrogate {
                    storage_group: self.name().to_string(),
                    why: format!(
                        "the backup ends at generation {gen_high:#X}, before the last backup the headers record (to {newest:#X}); it is not recorded — back up a copy that has caught up"
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Releases `passive`'s job `job` without stamping or truncating (a failed or abandoned
    /// backup, or a lapsed claim). Returns whether the job held the storage group.
    pub fn abort_surrogate(&self, job: Uuid, passive: &str, reason: &str) -> bool {
        if self.check_surrogate(job, passive).is_err() {
            return false;
        }
        let released = self.release(job);
        if released {
            self.events().emit(
                &cat::STORE_SURROGATE_BACKUP_ABORTED,
                Some(job),
                json!({"storage_group": self.name(), "passive_node": passive, "reason": reason}),
            );
        }
        released
    }

    /// Whether `job` is `passive`'s surrogate backup holding this storage group.
    pub fn holds_surrogate(&self, job: Uuid, passive: &str) -> bool {
        self.check_surrogate(job, passive).is_ok()
    }

    fn check_surrogate(&self, job: Uuid, passive: &str) -> Result<()> {
        let ok = self
            .with_backup(job, |b| Ok(b.surrogate_for.as_deref() == Some(passive)))
            .and_then(|r| r.ok())
            .unwrap_or(false);
        if ok { Ok(()) } else { Err(self.not_holding(job)) }
    }

    fn not_holding(&self, job: Uuid) -> StoreError {
        StoreError::Surrogate {
            storage_group: self.name().to_string(),
            why: format!("no surrogate backup {job} holds it: the job ended, or its claim lapsed"),
        }
    }
}
