//! The backup components document: what a backup job selected and how it ended.
//!
//! The requester saves it with the backup set and hands it back at restore (to
//! [`crate::Writer::pre_restore`] / [`crate::Writer::post_restore`]) and to the next
//! incremental or differential job as its base. The JSON form is stable: fields are in a fixed
//! order, writers and components are kept sorted, and `version` says which format it is.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::metadata::{BackupType, ComponentKey, ComponentType, WriterKey};
use crate::provider::SnapshotContext;

/// Current document format.
pub const DOCUMENT_VERSION: u32 = 1;

/// One selected component and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentEntry {
    pub logical_path: String,
    pub name: String,
    pub component_type: ComponentType,
    /// Set by the requester after copying: `Some(true)` backed up and verified, `Some(false)`
    /// failed, `None` not reported (treated as failed at backup complete).
    pub succeeded: Option<bool>,
}

/// One writer of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterEntry {
    pub key: WriterKey,
    pub writer_name: String,
    /// The type this writer was backed up with (full when its schema lacked the requested one).
    pub backup_type: BackupType,
    /// The writer's stamp for this backup (from post_snapshot).
    pub backup_stamp: Option<String>,
    /// The stamp of the base backup this one builds on.
    pub previous_stamp: Option<String>,
    pub components: Vec<ComponentEntry>,
}

impl WriterEntry {
    /// Whether this writer's part may be the base of a later incremental or differential:
    /// a copy backup never is (the reference leaves the history untouched for copies), and
    /// neither is a part that did not fully succeed.
    pub fn counts_as_base(&self) -> bool {
        self.backup_type != BackupType::Copy
            && !self.components.is_empty()
            && self.components.iter().all(|c| c.succeeded == Some(true))
    }
}

/// One snapshot of the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub volume: String,
    pub snapshot_id: Uuid,
    pub provider: String,
}

/// The backup components document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupComponentsDocument {
    pub version: u32,
    /// The job (writer instance GUID).
    pub job: Uuid,
    pub node: String,
    pub context: SnapshotContext,
    /// The type the requester asked for.
    pub backup_type: BackupType,
    pub snapshot_set: Option<Uuid>,
    pub snapshots: Vec<SnapshotRecord>,
    /// The job this one builds on (incremental/differential).
    pub base_job: Option<Uuid>,
    /// Unix ms when the snapshot set was committed.
    pub snapshot_time_ms: Option<u64>,
    /// Whether backup complete was reported (false for an aborted job).
    pub completed: bool,
    pub writers: Vec<WriterEntry>,
}

/// Errors reading a document.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("backup components document: invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "backup components document version {found} is newer than this build understands ({supported})"
    )]
    UnsupportedVersion { found: u32, supported: u32 },
}

impl BackupComponentsDocument {
    /// Sorts writers and components so that equal documents serialize identically.
    pub fn normalize(&mut self) {
        self.writers.sort_by(|a, b| a.key.cmp(&b.key));
        for w in &mut self.writers {
            w.components
                .sort_by(|a, b| (&a.logical_path, &a.name).cmp(&(&b.logical_path, &b.name)));
        }
        self.snapshots.sort_by(|a, b| a.volume.cmp(&b.volume));
    }

    pub fn to_json(&self) -> String {
        let mut d = self.clone();
        d.normalize();
        #[allow(clippy::expect_used)] // plain data with string keys: serializing cannot fail
        let json = serde_json::to_string_pretty(&d).expect("document serializes");
        json
    }

    pub fn from_json(s: &str) -> Result<Self, DocumentError> {
        let d: BackupComponentsDocument = serde_json::from_str(s)?;
        if d.version > DOCUMENT_VERSION {
            return Err(DocumentError::UnsupportedVersion {
                found: d.version,
                supported: DOCUMENT_VERSION,
            });
        }
        Ok(d)
    }

    pub fn writer(&self, key: &WriterKey) -> Option<&WriterEntry> {
        self.writers.iter().find(|w| &w.key == key)
    }

    /// Every selected component.
    pub fn component_keys(&self) -> Vec<ComponentKey> {
        self.writers
            .iter()
            .flat_map(|w| {
                w.components.iter().map(move |c| ComponentKey {
                    writer: w.key.clone(),
                    logical_path: c.logical_path.clone(),
                    name: c.name.clone(),
                })
            })
            .collect()
    }

    /// Whether this backup may be the base of a later `next` backup (incremental or
    /// differential) of writer `key`: it must have completed, and that writer's part must
    /// count as a base (not a copy, fully succeeded).
    pub fn is_base_for(&self, key: &WriterKey) -> bool {
        self.completed && self.writer(key).is_some_and(WriterEntry::counts_as_base)
    }
}
