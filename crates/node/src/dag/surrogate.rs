//! Both ends of a surrogate backup on a DAG member.
//!
//! - As the **active** copy's node: the claims passive nodes hold on its storage groups for
//!   their backups ([`Claims`]), each a lease the passive renews; a claim not renewed in time
//!   lapses and the storage group's backup in progress is cleared (nothing stamped or
//!   truncated), so a passive killed mid-backup never leaves the state stale.
//! - As a **passive** copy's node: what the replication writer needs of the node's copies
//!   ([`DagReplicas`], a [`ReplicaHost`]).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use events::{EventSink, catalog as cat};
use parking_lot::Mutex;
use replication::client::PeerClient;
use replication::copy::CopyReport;
use replication::protocol::{SurrogateBegin, SurrogateClaim, SurrogateComplete, SurrogateStamp};
use replication::source::SourceError;
use replication::{Replica, ReplicaHost};
use serde_json::json;
use uuid::Uuid;

use super::{Dag, copy_dir};
use crate::Node;

/// How long a claim lasts without renewal. The passive renews every third of it.
pub fn lease() -> Duration {
    std::env::var("SHADOWCOPY_SURROGATE_LEASE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

struct Claim {
    sg: String,
    peer: String,
    deadline: Instant,
    /// The databases the passive's backup covers (all when empty).
    databases: Vec<String>,
}

/// The surrogate claims on this node's storage groups.
#[derive(Default)]
pub struct Claims {
    held: Mutex<HashMap<Uuid, Claim>>,
}

fn store_error(e: store::StoreError) -> SourceError {
    match &e {
        store::StoreError::NoSuchStorageGroup(_) | store::StoreError::NoSuchDatabase { .. } => {
            SourceError::NotFound(e.to_string())
        }
        store::StoreError::NotMounted(_) => SourceError::NotActive(e.to_string()),
        store::StoreError::BackupInProgress { .. } => SourceError::Busy(e.to_string()),
        _ => SourceError::Internal(e.to_string()),
    }
}

impl Claims {
    fn group(node: &Node, sg: &str) -> Result<Arc<store::StorageGroup>, SourceError> {
        let g = node.store().storage_group(sg).map_err(store_error)?;
        if !g.is_mounted() {
            return Err(SourceError::NotActive(format!(
                "storage group {sg} is not mounted on node {}: it holds no active copy",
                node.name()
            )));
        }
        Ok(g)
    }

    fn claim(&self, node: &Node, job: Uuid) -> SurrogateClaim {
        SurrogateClaim { job, node: node.name().to_string(), lease_ms: lease().as_millis() as u64 }
    }

    pub fn begin(
        &self,
        node: &Node,
        sg: &str,
        peer: &str,
        req: SurrogateBegin,
    ) -> Result<SurrogateClaim, SourceError> {
        let g = Self::group(node, sg)?;
        g.begin_surrogate(req.job, req.backup_type, &req.databases, peer).map_err(store_error)?;
        self.held.lock().insert(
            req.job,
            Claim {
                sg: sg.to_string(),
                peer: peer.to_string(),
                deadline: Instant::now() + lease(),
                databases: req.databases,
            },
        );
        Ok(self.claim(node, req.job))
    }

    pub fn renew(
        &self,
        node: &Node,
        sg: &str,
        peer: &str,
        job: Uuid,
    ) -> Result<SurrogateClaim, SourceError> {
        let mut held = self.held.lock();
        match held.get_mut(&job) {
            Some(c) if c.sg == sg && c.peer == peer => {
                c.deadline = Instant::now() + lease();
                Ok(self.claim(node, job))
            }
            _ => Err(SourceError::NotFound(format!(
                "no surrogate backup {job} of storage group {sg} by node {peer} is held on node {}: it ended, or its claim lapsed",
                node.name()
            ))),
        }
    }

    pub fn complete(
        &self,
        node: &Node,
        sg: &str,
        peer: &str,
        req: SurrogateComplete,
    ) -> Result<SurrogateStamp, SourceError> {
        let g = Self::group(node, sg)?;
        // Taken out first: from here on neither the lease nor an abort touches the job.
        let claim = self.held.lock().remove(&req.job);
        let Some(claim) = claim.filter(|_| g.holds_surrogate(req.job, peer)) else {
            return Err(SourceError::NotFound(format!(
                "no surrogate backup {} of storage group {sg} by node {peer} is held on node {}: it ended, or its claim lapsed; nothing was stamped",
                req.job,
                node.name()
            )));
        };
        // Logs are truncated only when the backup held every database of the storage group
        // as this node knows it (the passive's word alone does not count: its copy may predate
        // a database added since).
        let covered = claim.databases.is_empty()
            || g.def().databases.iter().all(|d| claim.databases.contains(&d.name));
        let stamped = g
            .complete_surrogate(
                req.job,
                peer,
                req.succeeded,
                (req.gen_low, req.gen_high),
                req.every_database && covered,
            )
            .map_err(store_error)?;
        Ok(SurrogateStamp { generation: stamped.generation, time: stamped.time })
    }

    pub fn abort(&self, node: &Node, sg: &str, peer: &str, job: Uuid) -> Result<(), SourceError> {
        // Only a claim still held: a job being completed (or completed) is not undone.
        let held = self.held.lock().remove(&job);
        if held.is_some()
            && let Ok(g) = node.store().storage_group(sg)
        {
            g.abort_surrogate(job, peer, "the passive node aborted its backup");
        }
        Ok(())
    }

    /// Releases every claim on `sg` (the storage group stops being active here).
    pub fn abort_all(&self, node: &Node, sg: &str, reason: &str) {
        let gone: Vec<(Uuid, Claim)> = {
            let mut held = self.held.lock();
            let jobs: Vec<Uuid> =
                held.iter().filter(|(_, c)| c.sg == sg).map(|(j, _)| *j).collect();
            jobs.into_iter().filter_map(|j| held.remove(&j).map(|c| (j, c))).collect()
        };
        for (job, c) in gone {
            if let Ok(g) = node.store().storage_group(&c.sg) {
                g.abort_surrogate(job, &c.peer, reason);
            }
        }
    }

    /// Releases every claim whose lease passed (run every tick).
    pub fn expire(&self, node: &Node) {
        let now = Instant::now();
        let lapsed: Vec<(Uuid, Claim)> = {
            let mut held = self.held.lock();
            let gone: Vec<Uuid> =
                held.iter().filter(|(_, c)| c.deadline <= now).map(|(j, _)| *j).collect();
            gone.into_iter().filter_map(|j| held.remove(&j).map(|c| (j, c))).collect()
        };
        for (job, c) in lapsed {
            let Ok(g) = node.store().storage_group(&c.sg) else { continue };
            node.events().emit(
                &cat::STORE_SURROGATE_CLAIM_LAPSED,
                Some(job),
                json!({"storage_group": c.sg, "passive_node": c.peer,
                       "lease_ms": lease().as_millis() as u64}),
            );
            g.abort_surrogate(job, &c.peer, "its claim lapsed");
        }
    }
}

/// This node's passive copies, as the replication writer sees them.
pub struct DagReplicas {
    pub dag: Weak<Dag>,
    pub node: String,
    pub runtime: tokio::runtime::Handle,
    pub events: Arc<dyn EventSink>,
}

impl DagReplicas {
    fn dag(&self) -> Option<Arc<Dag>> {
        self.dag.upgrade()
    }
}

impl ReplicaHost for DagReplicas {
    fn node(&self) -> String {
        self.node.clone()
    }

    fn replicas(&self) -> Vec<Replica> {
        let Some(dag) = self.dag() else { return Vec::new() };
        let volume = dag.node.config().copy_volume().unwrap_or_default().to_string();
        let copies = dag.copies.lock();
        copies
            .iter()
            .filter_map(|(sg, c)| {
                let m = c.seed_manifest()?;
                Some(Replica {
                    sg: sg.clone(),
                    volume: volume.clone(),
                    dir: copy_dir(sg),
                    prefix: m.prefix.clone(),
                    databases: m.databases.iter().map(|d| d.name.clone()).collect(),
                })
            })
            .collect()
    }

    fn active(&self, sg: &str) -> Option<Arc<PeerClient>> {
        self.dag()?.copies.lock().get(sg).and_then(|c| c.desired().active)
    }

    fn hold(&self, sg: &str) -> Option<CopyReport> {
        // The wait for replay to end its batch happens without the lock on the copies, which
        // the reconciler and the API take from async tasks.
        let hold = self.dag()?.copies.lock().get(sg).map(|c| c.backup_hold())?;
        Some(hold.hold())
    }

    fn release(&self, sg: &str) {
        let hold = self.dag().and_then(|d| d.copies.lock().get(sg).map(|c| c.backup_hold()));
        if let Some(hold) = hold {
            hold.release();
        }
    }

    fn report(&self, sg: &str) -> Option<CopyReport> {
        self.dag()?.copies.lock().get(sg).map(|c| c.report())
    }

    fn inbox_generations(&self, sg: &str) -> Vec<u32> {
        let Some(dag) = self.dag() else { return Vec::new() };
        let Some(prefix) =
            dag.copies.lock().get(sg).and_then(|c| c.seed_manifest()).map(|m| m.prefix)
        else {
            return Vec::new();
        };
        let inbox = copy_dir(sg).join("inbox");
        let mut gens: Vec<u32> = dag
            .copy_fs
            .read_dir(&inbox)
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|e| ese::logfmt::parse_generation_name(&prefix, &e.name))
                    .collect()
            })
            .unwrap_or_default();
        gens.sort_unstable();
        gens
    }

    fn runtime(&self) -> tokio::runtime::Handle {
        self.runtime.clone()
    }

    fn events(&self) -> Arc<dyn EventSink> {
        self.events.clone()
    }
}
