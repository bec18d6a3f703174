//! Block mode and synchronous copies, the engine's side: reading the current log generation up
//! to its durable end (so a passive copy can follow it while it is written), waiting for the
//! durable end to move, and the commit gate a durable commit passes once its records are
//! durable locally (so a commit is acknowledged only once enough copies hold it too).
//!
//! The gate is called after the local fsync and outside every engine lock: the writer lock is
//! released before the commit waits for its flush, so the next transaction runs meanwhile and
//! the committers waiting on the gate are as many as group commit lets wait on the fsync.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::instance::Instance;
use crate::lsn::Lsn;

/// What a durable commit waits on after its records are durable locally: typically "enough
/// passive copies acknowledged them durable". Called concurrently by every committer.
pub trait CommitGate: Send + Sync {
    /// Returns once the log up to `durable_to` counts as replicated; an `Err` (the reason)
    /// fails the commit with [`crate::EngineError::NotReplicated`].
    fn replicated(&self, durable_to: Lsn) -> std::result::Result<(), String>;
}

/// Bytes of the current log generation, from [`Instance::read_current_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLogRead {
    /// The file's bytes from the offset asked for, up to the durable end (at most the maximum
    /// asked for); offset 0 starts with the log file header, so successive reads form an
    /// exact byte prefix of the file.
    pub bytes: Vec<u8>,
    /// The durable end: of the generation asked for when it is current, of the log otherwise.
    pub durable_end: Lsn,
    /// The generation asked for is no longer current: fetch the closed file instead.
    pub closed: bool,
    /// The current generation (physically: the file being written).
    pub current: u32,
}

impl Instance {
    /// Reads the current generation's file from `from` up to its durable end (at most `max`
    /// bytes); never bytes that are not yet synced. When `generation` is no longer current,
    /// `closed` is set and no bytes are returned. An offset past the durable end returns no
    /// bytes (the caller compares with `durable_end`).
    pub fn read_current_log(
        &self,
        generation: u32,
        from: u64,
        max: usize,
    ) -> Result<CurrentLogRead> {
        self.inner.check_open()?;
        self.inner.log.read_current(generation, from, max)
    }

    /// Blocks until the durable end of the log passes `lsn` (or moves to another generation
    /// than `lsn`'s), or `timeout` passed; returns the durable end. Woken by the log flusher.
    pub fn wait_durable_beyond(&self, lsn: Lsn, timeout: Duration) -> Lsn {
        self.inner.log.wait_durable_beyond(lsn, timeout)
    }

    /// Installs the commit gate every durable commit passes after its local fsync (`None`
    /// removes it; with none, a commit pays nothing for the feature).
    pub fn set_commit_gate(&self, gate: Option<Arc<dyn CommitGate>>) {
        self.inner.log.set_gate(gate);
    }
}
