//! The DAG's shared state in etcd (stub: being written; the types are final).
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("etcd at {endpoints}: {source}")]
    Etcd { endpoints: String, source: etcd_client::Error },
    #[error("etcd key {key}: malformed value: {why}")]
    Malformed { key: String, why: String },
}

/// A member of the DAG, present while its lease is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// host:port of its replication (TLS) listener.
    pub replication: String,
    /// Milliseconds since the epoch when it registered.
    pub since_ms: u64,
}

/// A copy of a storage group on a node, as the administrator asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub sg: String,
    pub node: String,
    pub preference: u32,
    /// Bumped by `copy reseed`: a copy seeds again when this differs from its seed's.
    pub seed_serial: u64,
    /// Set by `copy suspend` (the reason), cleared by `copy resume`.
    pub suspended: Option<String>,
}

/// Which node holds the active copy of a storage group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRecord {
    pub node: String,
    pub epoch: u64,
}

/// A copy's state, as its node reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyStatus {
    Mounted,
    Dismounted,
    Initializing,
    Seeding,
    Healthy,
    Suspended,
    FailedAndSuspended,
    Failed,
    Disconnected,
}

/// What a node reports about its copy of a storage group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    pub sg: String,
    pub node: String,
    pub status: CopyStatus,
    pub last_inspected_generation: u32,
    pub last_replayed_generation: u32,
    /// The oldest generation the copy still reads (its checkpoint's generation).
    pub checkpoint_generation: u32,
    pub last_error: Option<String>,
    pub updated_ms: u64,
}

/// A connection to etcd for one DAG, as one node.
#[derive(Clone)]
pub struct Cluster {
    _p: (),
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// Keeps a member's lease alive until dropped (then the member key goes away with the lease).
#[derive(Debug)]
pub struct MemberLease {
    _p: (),
}

impl Cluster {
    pub async fn connect(_endpoints: &[String], _dag: &str) -> Result<Cluster, ClusterError> {
        unimplemented!()
    }
    pub async fn register_member(
        &self,
        _m: &Member,
        _ttl_s: i64,
    ) -> Result<MemberLease, ClusterError> {
        unimplemented!()
    }
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        unimplemented!()
    }
    pub async fn put_copy(&self, _c: &CopyRecord) -> Result<(), ClusterError> {
        unimplemented!()
    }
    pub async fn remove_copy(&self, _sg: &str, _node: &str) -> Result<bool, ClusterError> {
        unimplemented!()
    }
    pub async fn copies(&self, _sg: Option<&str>) -> Result<Vec<CopyRecord>, ClusterError> {
        unimplemented!()
    }
    pub async fn active(&self, _sg: &str) -> Result<Option<ActiveRecord>, ClusterError> {
        unimplemented!()
    }
    pub async fn actives(&self) -> Result<Vec<(String, ActiveRecord)>, ClusterError> {
        unimplemented!()
    }
    pub async fn set_active_if(
        &self,
        _sg: &str,
        _expected: Option<&ActiveRecord>,
        _new: &ActiveRecord,
    ) -> Result<bool, ClusterError> {
        unimplemented!()
    }
    pub async fn put_state(&self, _s: &CopyState) -> Result<(), ClusterError> {
        unimplemented!()
    }
    pub async fn remove_state(&self, _sg: &str, _node: &str) -> Result<(), ClusterError> {
        unimplemented!()
    }
    pub async fn states(&self, _sg: Option<&str>) -> Result<Vec<CopyState>, ClusterError> {
        unimplemented!()
    }
    pub async fn put_produced(&self, _sg: &str, _generation: u32) -> Result<(), ClusterError> {
        unimplemented!()
    }
    pub async fn produced(&self, _sg: &str) -> Result<Option<u32>, ClusterError> {
        unimplemented!()
    }
}
