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
    /// The member that is the primary active manager now (etcd's election), if any.
    #[serde(default)]
    pub primary_active_manager: Option<String>,
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
    /// Per storage group: who is active, under which epoch, and its failover settings.
    #[serde(default)]
    pub groups: Vec<GroupRow>,
}

/// A replicated storage group's active copy and settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupRow {
    pub sg: String,
    /// The node holding the active copy.
    pub active: String,
    /// Grows with every change of active.
    pub epoch: u64,
    /// The first log generation of this epoch (0: not known yet).
    pub since_generation: u32,
    /// The node that was active before this epoch.
    pub previous: Option<String>,
    /// `lossless`, `good` (at most 6 generations lost), `best` (12) or `besteffort`.
    pub mount_dial: String,
    /// Passive copies that must hold a commit durably before it is acknowledged.
    pub sync_copies: u32,
    /// `strict` (wait for them) or `available` (go on with fewer, with an event).
    pub sync_policy: String,
}

/// `POST /v1/copies/activate`: moves the active copy of a storage group to a member
/// (switchover), with nothing lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopyActivate {
    pub sg: String,
    /// The member whose copy becomes active.
    pub node: String,
    /// Activate a copy that is not healthy (or suspended) anyway.
    #[serde(default)]
    pub skip_checks: bool,
}

/// The answer to [`CopyActivate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopyActivated {
    pub sg: String,
    pub from: String,
    pub to: String,
    /// The new epoch.
    pub epoch: u64,
    /// The last generation the old active closed: every one up to it is on the new active.
    pub generation: u32,
    /// How long the storage group took no commits (from the old active's close to the new
    /// active's mount), in milliseconds.
    pub pause_ms: u64,
    /// The primary active manager that ran it.
    pub manager: String,
}

/// `POST /v1/copies/settings`: a storage group's failover settings (unchanged when absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CopySettings {
    pub sg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_dial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_copies: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_policy: Option<String>,
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
    /// Passive: how it receives the log (`block mode`: each write as it happens; `closed
    /// generations`). Active: how commits wait for synchronous copies.
    #[serde(default)]
    pub shipping: Option<String>,
}
