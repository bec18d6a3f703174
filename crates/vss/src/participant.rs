//! A writer as the coordinator holds it: registered (with the state its last job left it in)
//! and taking part in one job (its selection, backup type, and state in that job).

use std::sync::Arc;

use parking_lot::Mutex;
use uuid::Uuid;

use crate::metadata::{BackupType, ComponentKey, WriterKey, WriterMetadata};
use crate::provider::SnapshotContext;
use crate::writer::{
    Writer, WriterContext, WriterFailure, WriterIdentity, WriterState, WriterStatus,
};

/// A registered writer and the state it was left in by its last job (what a writer listing
/// shows).
pub(crate) struct RegisteredWriter {
    pub writer: Arc<dyn Writer>,
    pub identity: WriterIdentity,
    pub last: Mutex<WriterStatus>,
}

/// A writer taking part in one job.
pub(crate) struct Participant {
    pub reg: Arc<RegisteredWriter>,
    pub metadata: WriterMetadata,
    pub components: Vec<ComponentKey>,
    pub backup_type: BackupType,
    pub previous_stamp: Option<String>,
    pub status: Mutex<WriterStatus>,
}

impl Participant {
    pub fn new(reg: Arc<RegisteredWriter>, metadata: WriterMetadata) -> Self {
        Participant {
            reg,
            metadata,
            components: Vec::new(),
            backup_type: BackupType::Full,
            previous_stamp: None,
            status: Mutex::new(WriterStatus::default()),
        }
    }

    pub fn key(&self) -> WriterKey {
        self.reg.identity.key()
    }

    pub fn ctx(&self, job: &JobRef) -> WriterContext {
        WriterContext {
            job: job.job,
            backup_type: self.backup_type,
            components: self.components.clone(),
            context: job.context,
            snapshot_set: job.set,
            previous_stamp: self.previous_stamp.clone(),
        }
    }

    pub fn status(&self) -> WriterStatus {
        self.status.lock().clone()
    }

    /// Moves to `state` unless the writer already failed in this job (failures are sticky:
    /// the first one is what the listing must show).
    pub fn advance(&self, state: WriterState) {
        let mut s = self.status.lock();
        if !s.state.is_failed() {
            s.state = state;
            *self.reg.last.lock() = s.clone();
        }
    }

    /// Records a failure unless an earlier one is already recorded.
    pub fn fail(&self, state: WriterState, failure: WriterFailure, message: &str) {
        let mut s = self.status.lock();
        if !s.state.is_failed() {
            *s = WriterStatus { state, failure: Some(failure), message: Some(message.to_string()) };
            *self.reg.last.lock() = s.clone();
        }
    }
}

/// The job-wide part of a writer context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobRef {
    pub job: Uuid,
    pub context: SnapshotContext,
    pub set: Option<Uuid>,
}

/// Metadata standing in for a writer that could not be (or need not be) identified.
pub(crate) fn placeholder_metadata(identity: &WriterIdentity) -> WriterMetadata {
    WriterMetadata {
        version: crate::metadata::WRITER_METADATA_VERSION,
        writer_id: identity.writer_id,
        writer_name: identity.writer_name.clone(),
        instance_name: identity.instance_name.clone(),
        components: Vec::new(),
        schema: Default::default(),
        restore_method: crate::metadata::RestoreMethod::Custom,
    }
}
