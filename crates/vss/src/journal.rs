//! The job journal: a durable record of every job that has something to clean up.
//!
//! A requester that crashes is handled by [`crate::BackupSession`]'s `Drop`; a *node* that
//! crashes (power loss, `kill -9`) runs no destructor. So while a job has prepared writers or
//! holds snapshots, a small record of it is kept on disk (written atomically, durable before
//! the step it covers proceeds). At start-up [`crate::Coordinator::recover_interrupted_jobs`]
//! finds the records of jobs that never ended, releases their non-persistent snapshots (the
//! reference's non-persistent snapshots do not survive a restart either), tells their writers
//! to abort and shut down, and logs event `COORD_INTERRUPTED_JOB_FOUND` for each.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use volume::FsRef;

use crate::error::{SessionPhase, VssError};
use crate::metadata::WriterKey;
use crate::provider::SnapshotContext;

/// One job's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job: Uuid,
    pub context: SnapshotContext,
    /// The last phase reached.
    pub phase: SessionPhase,
    /// When the record was written (unix ms).
    pub recorded_ms: u64,
    pub writers: Vec<WriterKey>,
    pub snapshot_set: Option<Uuid>,
    /// Committed snapshots: (provider name, snapshot id).
    pub snapshots: Vec<(String, Uuid)>,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub struct JobJournal {
    fs: FsRef,
    dir: PathBuf,
}

impl JobJournal {
    /// Uses directory `dir` of `fs` (created, durably, if missing).
    pub fn open(fs: FsRef, dir: impl AsRef<Path>) -> Result<Self, VssError> {
        let dir = dir.as_ref().to_path_buf();
        let err = |op| {
            let path = dir.clone();
            move |source| VssError::Journal { path, op, source }
        };
        fs.create_dir_all(&dir).map_err(err("create directory"))?;
        let mut parent = PathBuf::new();
        for c in dir.components() {
            fs.sync_dir(&parent).map_err(err("sync directory"))?;
            parent.push(c);
        }
        Ok(JobJournal { fs, dir })
    }

    fn path(&self, job: Uuid) -> PathBuf {
        self.dir.join(format!("{job}.job"))
    }

    /// Durably records (or replaces) a job's record.
    pub fn write(&self, record: &JobRecord) -> Result<(), VssError> {
        let path = self.path(record.job);
        let data = serde_json::to_vec_pretty(record).map_err(|e| VssError::Journal {
            path: path.clone(),
            op: "serialize",
            source: e.into(),
        })?;
        volume::fs::write_atomic(self.fs.as_ref(), &path, &data)
            .map_err(|source| VssError::Journal { path, op: "write", source })
    }

    /// Durably forgets a job.
    pub fn remove(&self, job: Uuid) -> Result<(), VssError> {
        let path = self.path(job);
        match self.fs.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(VssError::Journal { path, op: "remove", source }),
        }
        self.fs.sync_dir(&self.dir).map_err(|source| VssError::Journal {
            path: self.dir.clone(),
            op: "sync directory",
            source,
        })
    }

    /// Every recorded job. An unreadable record is reported by name, not skipped.
    pub fn list(&self) -> Result<Vec<JobRecord>, VssError> {
        let entries = self.fs.read_dir(&self.dir).map_err(|source| VssError::Journal {
            path: self.dir.clone(),
            op: "list",
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.into_iter().filter(|e| e.name.ends_with(".job")) {
            let path = self.dir.join(&e.name);
            let data = volume::fs::read_all(self.fs.as_ref(), &path)
                .map_err(|source| VssError::Journal { path: path.clone(), op: "read", source })?;
            let record = serde_json::from_slice(&data).map_err(|e| VssError::Journal {
                path: path.clone(),
                op: "parse",
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?;
            out.push(record);
        }
        Ok(out)
    }
}
