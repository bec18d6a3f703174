//! The node's answers to its copies ([`ActiveSource`]): log streams and closed generations of
//! the storage groups it mounts, and seeds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use events::EventSink;
use replication::protocol::{
    self, SeedManifest, StreamInfo, SurrogateBegin, SurrogateClaim, SurrogateComplete,
    SurrogateStamp, TailChunk,
};
use replication::source::{ActiveSource, SeedReader, SourceError};
use replication::sync::SyncGate;
use uuid::Uuid;

use crate::Node;
use crate::dag::seed::SeedsRef;
use crate::dag::surrogate::Claims;

pub struct NodeSource {
    pub node: Arc<Node>,
    pub seeds: SeedsRef,
    pub claims: Arc<Claims>,
    /// The storage groups whose log this node closed for a switchover, as their stream stood
    /// then: the copies fetch the last generations from here while they are dismounted.
    pub sealed: Arc<parking_lot::Mutex<std::collections::BTreeMap<String, StreamInfo>>>,
    /// The commit gate of each storage group with synchronous copies (filled by the node
    /// when it mounts a storage group as active): block-mode requests acknowledge into it.
    pub gates: Arc<parking_lot::Mutex<BTreeMap<String, Arc<SyncGate>>>>,
    /// The epoch at which this node is active for each storage group (0: unknown), told to
    /// copies so that they refuse a deposed active.
    pub epochs: Arc<parking_lot::Mutex<BTreeMap<String, u64>>>,
}

impl NodeSource {
    fn mounted(&self, sg: &str) -> Result<Arc<store::StorageGroup>, SourceError> {
        let g = self
            .node
            .store()
            .storage_group(sg)
            .map_err(|e| SourceError::NotFound(e.to_string()))?;
        if !g.is_mounted() {
            return Err(SourceError::NotActive(format!(
                "storage group {sg} is not mounted on node {}",
                self.node.name()
            )));
        }
        Ok(g)
    }
}

impl NodeSource {
    /// The stream of `sg` as it was closed for a switchover, while it stays dismounted.
    fn sealed_stream(&self, sg: &str) -> Option<StreamInfo> {
        let info = self.sealed.lock().get(sg).cloned()?;
        let mounted = self.node.store().storage_group(sg).is_ok_and(|g| g.is_mounted());
        (!mounted).then_some(info)
    }
}

impl ActiveSource for NodeSource {
    fn stream(&self, sg: &str) -> Result<StreamInfo, SourceError> {
        if let Some(info) = self.sealed_stream(sg) {
            return Ok(info);
        }
        let g = self.mounted(sg)?;
        let inst = g.instance().map_err(|e| SourceError::NotActive(e.to_string()))?;
        let log = g.log_state().map_err(|e| SourceError::Internal(e.to_string()))?;
        Ok(StreamInfo {
            sg: sg.to_string(),
            prefix: g.def().prefix.clone(),
            signature: protocol::hex(&inst.signature()),
            produced: log.current_generation.saturating_sub(1),
            oldest: log.generations.first().copied().unwrap_or(log.current_generation),
            node: self.node.name().to_string(),
            epoch: self.epochs.lock().get(sg).copied().unwrap_or(0),
        })
    }

    fn log_tail(
        &self,
        sg: &str,
        peer: &str,
        generation: u32,
        from: u64,
        wait: Duration,
    ) -> Result<TailChunk, SourceError> {
        let g = self.mounted(sg)?;
        let inst = g.instance().map_err(|e| SourceError::NotActive(e.to_string()))?;
        let gate = self.gates.lock().get(sg).cloned();
        replication::tail::serve_tail(&inst, gate.as_deref(), peer, generation, from, wait)
    }

    fn log_file(&self, sg: &str, generation: u32) -> Result<Vec<u8>, SourceError> {
        let def = match self.sealed_stream(sg) {
            Some(info) if generation <= info.produced => self
                .node
                .store()
                .storage_group(sg)
                .map_err(|e| SourceError::NotFound(e.to_string()))?
                .def(),
            Some(info) => {
                return Err(SourceError::NotFound(format!(
                    "generation {generation:#X} of {sg} does not exist: its log was closed at {:#X} for a switchover",
                    info.produced
                )));
            }
            None => {
                let g = self.mounted(sg)?;
                let log = g.log_state().map_err(|e| SourceError::Internal(e.to_string()))?;
                if generation >= log.current_generation {
                    return Err(SourceError::NotFound(format!(
                        "generation {generation:#X} of {sg} is not closed yet (current {:#X})",
                        log.current_generation
                    )));
                }
                g.def()
            }
        };
        let path = def.log_dir.join(ese::logfmt::generation_name(&def.prefix, generation));
        volume::fs::read_all(def.log_volume.fs.as_ref(), &path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SourceError::NotFound(format!(
                    "generation {generation:#X} of {sg} is no longer on node {} (truncated)",
                    self.node.name()
                ))
            } else {
                SourceError::Internal(format!("{}: {e}", path.display()))
            }
        })
    }

    fn start_seed(&self, sg: &str, peer: &str) -> Result<SeedManifest, SourceError> {
        self.seeds.start(&self.node, sg, peer)
    }

    fn seed_file(&self, id: Uuid, index: usize) -> Result<SeedReader, SourceError> {
        self.seeds.file(id, index)
    }

    fn end_seed(&self, id: Uuid) -> Result<(), SourceError> {
        self.seeds.end(id)
    }

    fn surrogate_begin(
        &self,
        sg: &str,
        peer: &str,
        req: SurrogateBegin,
    ) -> Result<SurrogateClaim, SourceError> {
        self.claims.begin(&self.node, sg, peer, req)
    }

    fn surrogate_renew(
        &self,
        sg: &str,
        peer: &str,
        job: Uuid,
    ) -> Result<SurrogateClaim, SourceError> {
        self.claims.renew(&self.node, sg, peer, job)
    }

    fn surrogate_complete(
        &self,
        sg: &str,
        peer: &str,
        req: SurrogateComplete,
    ) -> Result<SurrogateStamp, SourceError> {
        self.claims.complete(&self.node, sg, peer, req)
    }

    fn surrogate_abort(&self, sg: &str, peer: &str, job: Uuid) -> Result<(), SourceError> {
        self.claims.abort(&self.node, sg, peer, job)
    }

    fn refused(&self, addr: &str, reason: &str) {
        self.node.events().emit(
            &events::catalog::REPL_PEER_REFUSED,
            None,
            serde_json::json!({"addr": addr, "reason": reason}),
        );
    }
}
