//! The node's own member-to-member routes, served on the replication listener behind the DAG's
//! mutual TLS (the replication protocol proper is [`replication::server`]), and what the node's
//! API asks of the other members through them.
//!
//! `GET /repl/v1/node/events?job=...` answers this node's events of a job: a job's trail can
//! span nodes (a surrogate backup logs on the passive copy's node and on the active's), so
//! `GET /v1/events?job=...` on a member gathers it from every member ([`gather_events`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use replication::client::{ClientError, PeerClient};
use replication::protocol::ReplErrorBody;
use uuid::Uuid;

use super::Dag;
use crate::Node;
use crate::api::error::ApiError;

/// This node's events, as `GET /v1/events` answers them locally.
pub const EVENTS_PATH: &str = "/repl/v1/node/events";

/// How long a member may take to answer for its events: an administrator is waiting, and a
/// member that does not answer in time is named rather than waited for.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// The routes, answered from `dag`'s node.
pub fn routes(dag: Arc<Dag>) -> Router {
    use axum::routing::post;
    Router::new()
        .route(EVENTS_PATH, get(node_events))
        .route(crate::api::backup_from::PEER_BACKUP_PATH, post(node_backup))
        .route(POSITION_PATH, post(node_position))
        .route(KICK_PATH, post(node_kick))
        .route(HANDOVER_PATH, post(node_hand_over))
        .route(TAKE_BACK_PATH, post(node_take_back))
        .route(ACTIVATE_PATH, post(node_activate))
        .route(APPLY_SETTINGS_PATH, post(node_apply_settings))
        .with_state(dag)
}

/// Where this member's copy of a storage group is (the manager chooses and waits on it).
pub const POSITION_PATH: &str = "/repl/v1/node/position";
/// Wakes this member's reconciler (a decision about it was just written).
pub const KICK_PATH: &str = "/repl/v1/node/kick";
/// The active closes its log and dismounts for a switchover.
pub const HANDOVER_PATH: &str = "/repl/v1/node/handover";
/// The switchover failed: the old active takes its storage group back.
pub const TAKE_BACK_PATH: &str = "/repl/v1/node/take-back";
/// A switchover asked of a member that is not the primary active manager, forwarded to it.
pub const ACTIVATE_PATH: &str = "/repl/v1/node/activate";

/// The active applies a storage group's settings now (`copy settings` asked elsewhere).
pub const APPLY_SETTINGS_PATH: &str = "/repl/v1/node/apply-settings";

/// What [`APPLY_SETTINGS_PATH`] did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SettingsApplied {
    /// How many copies the storage group's commits now wait for; `None`: it is not active
    /// and mounted on this member.
    pub sync_copies: Option<u32>,
}

/// One storage group.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SgRef {
    pub sg: String,
}

/// An empty answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ack {}

/// Close the log of `sg` (held under `epoch`) for a switchover to `to`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HandOver {
    pub sg: String,
    pub epoch: u64,
    pub to: String,
}

/// The last generation the old active closed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HandedOver {
    pub generation: u32,
}

/// Where a member's copy of a storage group is now.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CopyPosition {
    pub status: replication::cluster::CopyStatus,
    pub inspected: u32,
    pub replayed: u32,
    /// The active's last closed generation, as the copy last heard.
    pub produced: u32,
    /// The furthest log position durable on the copy in block mode (a raw LSN; 0: none).
    pub durable: u64,
    /// The storage group is active and mounted on this member.
    pub active_here: bool,
}

async fn node_position(
    State(dag): State<Arc<Dag>>,
    Json(req): Json<SgRef>,
) -> Result<Json<CopyPosition>, PeerError> {
    dag.position(&req.sg).map(Json).ok_or_else(|| {
        PeerError(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_copy",
            format!("node {} runs no copy of {}", dag.me(), req.sg),
        ))
    })
}

async fn node_apply_settings(
    State(dag): State<Arc<Dag>>,
    Json(req): Json<SgRef>,
) -> Result<Json<SettingsApplied>, PeerError> {
    let sync_copies = dag.apply_settings(&req.sg).await.map_err(|e| {
        PeerError(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster_unreachable",
            e.to_string(),
        ))
    })?;
    Ok(Json(SettingsApplied { sync_copies }))
}

async fn node_kick(State(dag): State<Arc<Dag>>, Json(_): Json<Ack>) -> Json<Ack> {
    dag.kick.notify_one();
    Json(Ack {})
}

async fn node_hand_over(
    State(dag): State<Arc<Dag>>,
    Json(req): Json<HandOver>,
) -> Result<Json<HandedOver>, PeerError> {
    let current = dag.cluster().active(&req.sg).await.map_err(|e| {
        PeerError(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "etcd_unreachable", e.to_string()))
    })?;
    match current {
        Some(a) if a.node == dag.me() && a.epoch == req.epoch => {}
        other => {
            return Err(PeerError(ApiError::new(
                StatusCode::CONFLICT,
                "not_active",
                format!(
                    "node {} does not hold {} active at epoch {} (the cluster database says {other:?})",
                    dag.me(),
                    req.sg,
                    req.epoch
                ),
            )));
        }
    }
    let d = dag.clone();
    let generation = tokio::task::spawn_blocking(move || d.hand_over(&req.sg, req.epoch, &req.to))
        .await
        .map_err(|e| PeerError(ApiError::internal(e.to_string())))?
        .map_err(|e| PeerError(ApiError::new(StatusCode::CONFLICT, "handover_failed", e)))?;
    Ok(Json(HandedOver { generation }))
}

async fn node_take_back(State(dag): State<Arc<Dag>>, Json(req): Json<SgRef>) -> Json<Ack> {
    dag.take_back(&req.sg);
    Json(Ack {})
}

async fn node_activate(
    State(dag): State<Arc<Dag>>,
    Json(req): Json<api::CopyActivate>,
) -> Result<Json<api::CopyActivated>, PeerError> {
    if !dag.is_primary() {
        return Err(PeerError(ApiError::new(
            StatusCode::CONFLICT,
            "not_primary",
            format!("node {} is no longer the primary active manager", dag.me()),
        )));
    }
    dag.switchover(&req).await.map(Json).map_err(PeerError)
}

/// A backup another member forwarded: `--from` named this node's copy.
async fn node_backup(
    State(dag): State<Arc<Dag>>,
    Json(req): Json<api::BackupRequest>,
) -> Result<Json<api::BackupReport>, PeerError> {
    let Some(app) = dag.app.get().cloned() else {
        return Err(PeerError(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            format!("node {} is still starting", dag.me()),
        )));
    };
    crate::api::jobs::backup_for_member(&app, req).await.map(Json).map_err(PeerError)
}

/// An [`ApiError`] in the replication protocol's error form (the status and the message), so
/// that the asking member's [`PeerClient`] reads it like any other peer error.
struct PeerError(ApiError);

impl IntoResponse for PeerError {
    fn into_response(self) -> Response {
        (self.0.status, Json(ReplErrorBody { error: self.0.message })).into_response()
    }
}

async fn node_events(
    State(dag): State<Arc<Dag>>,
    Query(q): Query<api::EventQuery>,
) -> Result<Json<api::EventList>, PeerError> {
    let node = dag.node.clone();
    let events = tokio::task::spawn_blocking(move || local_events(&node, &q))
        .await
        .map_err(|e| PeerError(ApiError::internal(format!("the events' thread failed: {e}"))))?
        .map_err(PeerError)?;
    Ok(Json(api::EventList { events, unreachable: Vec::new() }))
}

/// The event source `name` names (any case); a 400 naming the sources otherwise.
pub(crate) fn parse_source(name: Option<&str>) -> Result<Option<events::Source>, ApiError> {
    let Some(name) = name else { return Ok(None) };
    serde_json::from_value::<events::Source>(serde_json::Value::String(name.to_ascii_lowercase()))
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "unknown event source {name:?} (coordinator, store, engine, replication, provider, requester)"
            ))
        })
}

/// This node's events matching `q` (a job given by its id or a unique prefix of it, see
/// [`resolve_job`]), oldest first.
pub(crate) fn local_events(node: &Node, q: &api::EventQuery) -> Result<Vec<api::Event>, ApiError> {
    let mut filter = events::Filter {
        source: parse_source(q.source.as_deref())?,
        id: q.id,
        since_ms: q.since_ms,
        limit: q.limit,
        ..Default::default()
    };
    if let Some(job) = &q.job {
        filter.job = Some(resolve_job(node.events(), job)?);
    }
    Ok(node.events().query(&filter)?.into_iter().map(crate::api::convert::event).collect())
}

/// The job a full id or a prefix of one names, as set ids are resolved: a prefix must be
/// hexadecimal and match exactly one job of the trail; an ambiguous one lists the
/// candidates, so that the caller can pick.
pub(crate) fn resolve_job(log: &events::EventLog, given: &str) -> Result<Uuid, ApiError> {
    if let Ok(id) = given.parse::<Uuid>() {
        return Ok(id);
    }
    let prefix = given.replace('-', "").to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_job_id",
            format!("job {given:?} is neither a job id nor a prefix of one (hex digits)"),
        ));
    }
    let mut found: Vec<Uuid> = log
        .query(&events::Filter::default())?
        .into_iter()
        .filter_map(|e| e.job)
        .filter(|j| j.simple().to_string().starts_with(&prefix))
        .collect();
    found.sort();
    found.dedup();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(no_such_job(given, "")),
        many => Err(ambiguous(given, many)),
    }
}

fn no_such_job(given: &str, where_: &str) -> ApiError {
    ApiError::not_found(
        "no_such_job",
        format!("no job in the event trail{where_} has an id starting with {given:?}"),
    )
}

fn ambiguous(given: &str, many: &[Uuid]) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "ambiguous_job_id",
        format!(
            "job prefix {given:?} matches {} jobs: {}; give more digits",
            many.len(),
            many.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", ")
        ),
    )
}

/// One job's trail from every member of the DAG: this node's events and each other member's
/// (asked in parallel, each for at most [`GATHER_TIMEOUT`]), merged in time order, the other
/// filters of `q` applied to the merged trail. A member that does not answer is named in
/// `unreachable`, and the trail comes back without it.
///
/// `job` is a full id or a prefix. A prefix this node resolves is looked for on the others by
/// the id it resolved to. A prefix this node does not know is sent to the others, which
/// resolve it against their own trails; it must name the same single job on every member that
/// knows it (else it is ambiguous, and the candidates are named).
pub(crate) async fn gather_events(
    dag: Arc<Dag>,
    q: api::EventQuery,
    job: String,
) -> Result<api::EventList, ApiError> {
    // An unknown source is the caller's mistake whatever the members answer.
    parse_source(q.source.as_deref())?;
    let node = dag.node.clone();
    let given = job.clone();
    let local = tokio::task::spawn_blocking(move || match resolve_job(node.events(), &given) {
        Ok(id) => {
            let only_job = api::EventQuery { job: Some(id.to_string()), ..Default::default() };
            local_events(&node, &only_job).map(|events| Some((id, events)))
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    })
    .await
    .map_err(|e| ApiError::internal(format!("the events' thread failed: {e}")))??;

    // Without the job here, `job` is a prefix (a full id always resolves) the others resolve.
    let by_prefix = local.is_none();
    let ask = match &local {
        Some((id, _)) => id.to_string(),
        None => job.clone(),
    };
    let (answers, mut unreachable) = ask_members(&dag, &ask).await;
    let mut trails = Vec::new();
    let mut found: BTreeSet<Uuid> = BTreeSet::new();
    if let Some((id, events)) = local {
        found.insert(id);
        trails.push(events);
    }
    for (member, answer) in answers {
        match answer {
            Ok(list) => {
                found.extend(list.events.iter().filter_map(|e| e.job));
                trails.push(list.events);
            }
            // A member that never logged a job of that prefix.
            Err(e) if by_prefix && e.is_not_found() => {}
            Err(ClientError::Status { status: 400, error, .. }) if by_prefix => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "ambiguous_job_id",
                    format!("on node {member}: {error}"),
                ));
            }
            Err(e) => unreachable.push(format!("{member}: {e}")),
        }
    }
    let found: Vec<Uuid> = found.into_iter().collect();
    match found.as_slice() {
        [] => {
            let mut e = no_such_job(&job, " of any member of the DAG");
            if !unreachable.is_empty() {
                e.message.push_str(&format!(" (unreachable: {})", unreachable.join("; ")));
            }
            return Err(e);
        }
        [_] => {}
        many => return Err(ambiguous(&job, many)),
    }
    Ok(api::EventList { events: api::EventList::merge(trails, &q), unreachable })
}

/// Asks every other member for its events of `job`, in parallel: the answers by node, and
/// the members that could not be asked at all (`node: why`).
async fn ask_members(
    dag: &Dag,
    job: &str,
) -> (Vec<(String, Result<api::EventList, ClientError>)>, Vec<String>) {
    let seen = dag.seen();
    let members = match tokio::time::timeout(GATHER_TIMEOUT, dag.cluster.members()).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::debug!("events of job {job}: the members as last read (etcd: {e})");
            seen.members.clone()
        }
        Err(_) => seen.members.clone(),
    };
    let me = dag.me();
    let addrs: BTreeMap<String, String> =
        members.into_iter().filter(|m| m.node != me).map(|m| (m.node, m.replication)).collect();
    // A node with a copy or an active database whose membership lapsed (it is stopped, or
    // cut from etcd) has a share of the trail nobody can give: it is named, not skipped.
    let lapsed: BTreeSet<String> = seen
        .copies
        .iter()
        .map(|c| c.node.clone())
        .chain(seen.actives.iter().map(|(_, a)| a.node.clone()))
        .filter(|n| n != me && !addrs.contains_key(n))
        .collect();
    let path = format!("{EVENTS_PATH}?job={job}");
    // A client of its own per request: the copies' clients may be busy streaming logs.
    let asked: Vec<_> = addrs
        .into_iter()
        .map(|(node, addr)| {
            let client = PeerClient::new(dag.tls.clone(), node.clone(), addr);
            let path = path.clone();
            let task = tokio::spawn(async move {
                match tokio::time::timeout(GATHER_TIMEOUT, client.get_json(&path)).await {
                    Ok(answer) => answer,
                    Err(_) => Err(ClientError::Unreachable {
                        node: client.node().to_string(),
                        addr: client.addr().to_string(),
                        why: format!("no answer within {} s", GATHER_TIMEOUT.as_secs()),
                    }),
                }
            });
            (node, task)
        })
        .collect();
    let mut answers = Vec::with_capacity(asked.len());
    for (node, task) in asked {
        let answer = task.await.unwrap_or_else(|e| {
            Err(ClientError::BadAnswer {
                node: node.clone(),
                what: path.clone(),
                why: format!("the request's task failed: {e}"),
            })
        });
        answers.push((node, answer));
    }
    let unreachable = lapsed
        .into_iter()
        .map(|n| format!("{n}: not a live member of the DAG (its membership lapsed: stopped?)"))
        .collect();
    (answers, unreachable)
}
