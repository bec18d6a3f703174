//! Which copy a backup takes, in a DAG (`backup run --from passive|active|NODE`), and running
//! it on the member that holds that copy.
//!
//! A backup reads its files from a snapshot on the node that holds them, so a backup of a copy
//! on another member runs on that member: this node forwards the request over the DAG's mutual
//! TLS and waits for the report (the job, its events and its set are the other member's).

use std::sync::Arc;

use axum::http::StatusCode;
use replication::client::{ClientError, PeerClient};

use super::AppState;
use super::error::ApiError;
use crate::dag::Dag;

/// The path of the forwarded backup on a member's replication listener.
pub const PEER_BACKUP_PATH: &str = "/repl/v1/node/backup";

/// Where a backup runs.
pub enum Place {
    /// On this node: its own storage group (`copy` false) or its passive copy of it.
    Here { copy: bool },
    /// On another member.
    Peer(Arc<PeerClient>),
}

fn no_copy(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "no_such_copy", message)
}

/// Resolves `from` for a backup of `sg`.
pub async fn resolve(s: &AppState, sg: &str, from: Option<&str>) -> Result<Place, ApiError> {
    let here_is_copy = |dag: &Dag| dag.has_copy(sg);
    let Some(dag) = s.dag.clone() else {
        return match from {
            None | Some("active") => Ok(Place::Here { copy: false }),
            Some(f) if f == s.node.name() => Ok(Place::Here { copy: false }),
            Some(f) => Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_a_dag_member",
                format!(
                    "--from {f}: node {} is not a member of a DAG, so it backs up only its own storage groups",
                    s.node.name()
                ),
            )),
        };
    };
    let Some(from) = from else {
        return Ok(Place::Here { copy: here_is_copy(&dag) });
    };
    let seen = super::dag::read_all(&dag).await?;
    let rows = super::dag::rows(&dag, &seen, Some(sg)).await;
    let target = match from {
        "active" => {
            let Some((_, a)) = seen.actives.iter().find(|(s, _)| s == sg) else {
                return Err(no_copy(format!(
                    "storage group {sg} has no active copy in DAG {}",
                    dag.name()
                )));
            };
            a.node.clone()
        }
        "passive" => {
            let mut passives: Vec<&api::CopyRow> = rows
                .iter()
                .filter(|r| r.role == "passive" && r.status == "Healthy" && r.node_up)
                .collect();
            passives.sort_by_key(|r| {
                (r.copy_queue_length, r.replay_queue_length, r.activation_preference)
            });
            let Some(best) = passives.first() else {
                let seen: Vec<String> = rows
                    .iter()
                    .filter(|r| r.role == "passive")
                    .map(|r| format!("{} ({})", r.node, r.status))
                    .collect();
                return Err(no_copy(format!(
                    "storage group {sg} has no healthy passive copy to back up{}",
                    if seen.is_empty() { String::new() } else { format!(": {}", seen.join(", ")) }
                )));
            };
            best.node.clone()
        }
        node => {
            if !rows.iter().any(|r| r.node == node) {
                return Err(no_copy(format!(
                    "node {node} holds no copy of storage group {sg} in DAG {}",
                    dag.name()
                )));
            }
            node.to_string()
        }
    };
    if target == s.node.name() {
        return Ok(Place::Here { copy: here_is_copy(&dag) });
    }
    let Some(member) = seen.members.iter().find(|m| m.node == target) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "member_down",
            format!(
                "node {target}, which holds the copy asked for, is not up in DAG {}",
                dag.name()
            ),
        ));
    };
    Ok(Place::Peer(dag.peer(&member.node, &member.replication)))
}

/// The error a forwarded call came back with, as this node's API error.
pub fn peer_error(peer: &PeerClient, e: ClientError) -> ApiError {
    match e {
        ClientError::Status { status, error, .. } => ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            "failed_on_member",
            format!("on node {}: {error}", peer.node()),
        ),
        e => ApiError::new(StatusCode::BAD_GATEWAY, "member_unreachable", e.to_string()),
    }
}
