//! What the active copy's node offers its copies: the replication server asks the node through
//! [`ActiveSource`], so that this crate needs no knowledge of how the node runs its storage
//! groups, and the node none of the protocol.

use uuid::Uuid;

use crate::protocol::{
    SeedManifest, StreamInfo, SurrogateBegin, SurrogateClaim, SurrogateComplete, SurrogateStamp,
    TailChunk,
};

/// Why the active could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No such storage group, generation or seed (HTTP 404).
    #[error("{0}")]
    NotFound(String),
    /// This node does not hold the active copy, or it is dismounted (HTTP 409).
    #[error("{0}")]
    NotActive(String),
    /// Try again later: another seed or backup holds the storage group (HTTP 503).
    #[error("{0}")]
    Busy(String),
    /// Anything else (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// A seed file opened for streaming.
pub struct SeedReader {
    pub file: volume::FileRef,
    pub len: u64,
}

/// The active node's side of replication.
pub trait ActiveSource: Send + Sync + 'static {
    /// The storage group's log stream now.
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError>;
    /// The bytes of closed generation `generation`.
    fn log_file(&self, sg: &str, generation: u32) -> Result<Vec<u8>, SourceError>;
    /// Takes a snapshot of the storage group through the coordinator and holds it for `peer`.
    fn start_seed(&self, sg: &str, peer: &str) -> Result<SeedManifest, SourceError>;
    /// Database file `index` of seed `id`, from its snapshot.
    fn seed_file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError>;
    /// Ends seed `id`, releasing its snapshot.
    fn end_seed(&self, id: Uuid) -> Result<(), SourceError>;
    /// Holds `sg` backup in progress for `peer`'s surrogate backup job (events 910/210), under
    /// a lease the peer renews. (A source that takes no surrogate backups keeps the default.)
    fn surrogate_begin(
        &self,
        sg: &str,
        _peer: &str,
        _req: SurrogateBegin,
    ) -> Result<SurrogateClaim, SourceError> {
        Err(no_surrogate(sg))
    }
    /// Extends the lease of `peer`'s job.
    fn surrogate_renew(
        &self,
        sg: &str,
        _peer: &str,
        _job: Uuid,
    ) -> Result<SurrogateClaim, SourceError> {
        Err(no_surrogate(sg))
    }
    /// Ends `peer`'s job: on success stamps the headers as a logged change and rolls the log
    /// (913/213), then truncates what the backup and the copies allow (224/225).
    fn surrogate_complete(
        &self,
        sg: &str,
        _peer: &str,
        _req: SurrogateComplete,
    ) -> Result<SurrogateStamp, SourceError> {
        Err(no_surrogate(sg))
    }
    /// Releases `peer`'s job without stamping or truncating anything.
    fn surrogate_abort(&self, sg: &str, _peer: &str, _job: Uuid) -> Result<(), SourceError> {
        Err(no_surrogate(sg))
    }
    /// Block mode: the current generation `generation` from byte `from` to its durable end,
    /// waiting up to `wait` when there is nothing new. `from` is `peer`'s acknowledgement that
    /// it holds the bytes before it durably (recorded in the storage group's
    /// [`crate::sync::SyncGate`]). See [`crate::tail::serve_tail`]. (A source that offers no
    /// block mode keeps the default: its copies follow closed generations only.)
    fn log_tail(
        &self,
        sg: &str,
        _peer: &str,
        _generation: u32,
        _from: u64,
        _wait: std::time::Duration,
    ) -> Result<TailChunk, SourceError> {
        Err(SourceError::NotFound(format!("storage group {sg} offers no block mode here")))
    }
    /// A connection was refused (a stranger on the port, a foreign certificate).
    fn refused(&self, addr: &str, reason: &str);
}

fn no_surrogate(sg: &str) -> SourceError {
    SourceError::NotActive(format!("this node takes no surrogate backups of storage group {sg}"))
}
