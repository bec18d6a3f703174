//! The database availability group (`shadowcopy dag`, `shadowcopy copy`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/dag`: the DAG this node belongs to and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DagStatus {
    pub dag: String,
    /// The node answering.
    pub node: String,
    pub etcd: Vec<String>,
    /// Whether the cluster database answered this request.
    pub etcd_reachable: bool,
    pub members: Vec<DagMember>,
}

/// A member of the DAG: up while its lease in the cluster database is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DagMember {
    pub node: String,
    /// Its replication listener (host:port), when up.
    pub replication: Option<String>,
    pub up: bool,
}

/// `POST /v1/copies`: adds a passive copy of a storage group on a member, which seeds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopyAdd {
    pub sg: String,
    pub node: String,
    /// Activation preference (1 is the most preferred; default: after the existing copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<u32>,
}

/// `POST /v1/copies/{remove,suspend,resume,reseed}`: one copy, and why (suspend keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopyChange {
    pub sg: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /v1/copies?sg=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct CopyQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg: Option<String>,
}

/// Every copy of the storage groups asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopyList {
    pub copies: Vec<CopyRow>,
}

/// One copy of a storage group, as the reference's copy status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopyRow {
    pub sg: String,
    pub node: String,
    /// `active` or `passive`.
    pub role: String,
    /// `Mounted`, `Dismounted`, `Initializing`, `Seeding`, `Healthy`, `Suspended`,
    /// `FailedAndSuspended`, `Failed` or `Disconnected`; `Unknown` before the copy's node has
    /// reported.
    pub status: String,
    /// Generations the active closed that this copy has not inspected.
    pub copy_queue_length: u32,
    /// Generations inspected and not replayed.
    pub replay_queue_length: u32,
    pub last_inspected_generation: u32,
    pub last_replayed_generation: u32,
    pub activation_preference: u32,
    pub last_error: Option<String>,
    /// Why an administrator suspended it.
    pub suspended: Option<String>,
    /// Whether the copy's node is up (its lease is alive).
    pub node_up: bool,
}
