//! Listing and administration endpoints: writers, providers, shadows, shadow storage, store
//! status, storage group and database creation, mount and dismount, events, metrics.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::metrics::CommitFigures;
use super::{AppState, blocking};
use crate::config::{MaxSize, parse_max_size};
use crate::layout::{CreateError, NewDatabase, NewStorageGroup};

type ApiResult = Result<Json<Value>, ApiError>;

pub async fn not_found() -> ApiError {
    ApiError::not_found("no_such_endpoint", "no such endpoint; see the node's API documentation")
}

pub async fn writers(State(s): State<AppState>) -> ApiResult {
    blocking(&s, |node, _| {
        let list: Vec<Value> = node
            .coordinator()
            .list_writers()
            .into_iter()
            .map(|w| {
                json!({
                    "writer_name": w.writer_name,
                    "writer_id": w.key.writer_id,
                    "instance_name": w.key.instance_name,
                    "state": w.status.state.code(),
                    "state_name": w.status.state.name(),
                    "failure": w.status.failure.map(|f| f.as_str()),
                    "message": w.status.message,
                })
            })
            .collect();
        Ok(Json(json!({ "writers": list })))
    })
    .await
}

pub async fn providers(State(s): State<AppState>) -> ApiResult {
    blocking(&s, |node, _| {
        let list: Vec<Value> = node
            .coordinator()
            .list_providers()
            .into_iter()
            .map(|(id, name)| json!({ "provider_id": id, "name": name, "type": "software" }))
            .collect();
        Ok(Json(json!({ "providers": list, "volumes": node.provider().volumes() })))
    })
    .await
}

pub async fn shadows(State(s): State<AppState>) -> ApiResult {
    blocking(&s, |node, _| Ok(Json(json!({ "shadows": node.provider().query() })))).await
}

#[derive(Debug, Deserialize)]
pub struct ForVolume {
    #[serde(rename = "for")]
    pub for_volume: String,
}

/// `create shadow`: a persistent, client-accessible snapshot of one volume.
pub async fn create_shadow(State(s): State<AppState>, Json(req): Json<ForVolume>) -> ApiResult {
    blocking(&s, move |node, metrics| {
        let p = node.provider();
        let opts = volume::CommitOptions { persistent: true, ..Default::default() };
        let set = p.begin_set(opts);
        if let Err(e) = p.add_volume(set, &req.for_volume) {
            let _ = p.abort(set);
            return Err(e.into());
        }
        let started = Instant::now();
        let committed = p.commit(set)?.keep();
        let commit = started.elapsed();
        metrics.record_commit(CommitFigures {
            set: set.to_string(),
            origin: "create_shadow",
            commit_seconds: commit.as_secs_f64(),
            hold_seconds: committed.hold.as_secs_f64(),
        });
        let infos: Vec<_> = committed.snapshots.iter().map(|c| c.info.clone()).collect();
        tracing::info!(set = %set, volume = %req.for_volume, "created a persistent shadow");
        Ok(Json(json!({
            "set_id": set,
            "shadows": infos,
            "hold_ms": committed.hold.as_secs_f64() * 1e3,
            "commit_ms": commit.as_secs_f64() * 1e3,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct DeleteShadows {
    #[serde(rename = "for")]
    pub for_volume: Option<String>,
    #[serde(default)]
    pub oldest: bool,
    pub shadow: Option<Uuid>,
    #[serde(default)]
    pub all: bool,
}

pub async fn delete_shadows(
    State(s): State<AppState>,
    Json(req): Json<DeleteShadows>,
) -> ApiResult {
    blocking(&s, move |node, _| {
        let p = node.provider();
        let deleted: Vec<Uuid> = match (&req.for_volume, req.oldest, req.shadow, req.all) {
            (None, false, Some(id), false) => {
                node.coordinator().delete_snapshot(id)?;
                vec![id]
            }
            (Some(v), true, None, false) => p.delete_oldest(v)?.into_iter().collect(),
            (Some(v), false, None, true) => {
                let before: Vec<Uuid> =
                    p.query().into_iter().filter(|s| &s.volume_label == v).map(|s| s.id).collect();
                p.delete_all(v)?;
                before
            }
            (None, false, None, true) => {
                let mut gone = Vec::new();
                for v in p.volumes() {
                    gone.extend(
                        p.query().into_iter().filter(|s| s.volume == v.guid).map(|s| s.id),
                    );
                    p.delete_all(&v.label)?;
                }
                gone
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of: `for` with `oldest`, `shadow`, `for` with `all`, or `all`",
                ));
            }
        };
        Ok(Json(json!({ "deleted": deleted })))
    })
    .await
}

pub async fn shadow_storage(State(s): State<AppState>) -> ApiResult {
    blocking(&s, |node, _| {
        Ok(Json(json!({ "shadow_storage": node.provider().list_shadow_storage() })))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct StorageRequest {
    #[serde(rename = "for")]
    pub for_volume: String,
    pub on: Option<String>,
    pub max_size: String,
}

fn max_bytes(text: &str) -> Result<Option<u64>, ApiError> {
    match parse_max_size(text) {
        Some(MaxSize::Unbounded) => Ok(None),
        Some(MaxSize::Bytes(b)) => Ok(Some(b)),
        Some(MaxSize::Percent(_)) => Err(ApiError::bad_request(
            "a percentage max size is only accepted in the configuration file; give a size",
        )),
        None => Err(ApiError::bad_request(format!(
            "max size {text:?} is not a size (\"2GiB\") or \"UNBOUNDED\""
        ))),
    }
}

/// A refused change is the volume's answer; a change that could not be recorded is the
/// node's failure.
fn shadow_storage_error(e: crate::shadow_storage::ShadowStorageError) -> ApiError {
    match e {
        crate::shadow_storage::ShadowStorageError::Volume(v) => v.into(),
        persist => ApiError::internal(persist.to_string()),
    }
}

pub async fn add_shadow_storage(
    State(s): State<AppState>,
    Json(req): Json<StorageRequest>,
) -> ApiResult {
    blocking(&s, move |node, _| {
        let on = req.on.clone().ok_or_else(|| ApiError::bad_request("`on` is required"))?;
        node.add_shadow_storage(&req.for_volume, &on, max_bytes(&req.max_size)?)
            .map_err(shadow_storage_error)?;
        Ok(Json(json!({ "shadow_storage": node.provider().list_shadow_storage() })))
    })
    .await
}

pub async fn resize_shadow_storage(
    State(s): State<AppState>,
    Json(req): Json<StorageRequest>,
) -> ApiResult {
    blocking(&s, move |node, _| {
        node.resize_shadow_storage(&req.for_volume, max_bytes(&req.max_size)?)
            .map_err(shadow_storage_error)?;
        Ok(Json(json!({ "shadow_storage": node.provider().list_shadow_storage() })))
    })
    .await
}

/// Per storage group: mounted, log and checkpoint generations, log files on disk, the
/// backup history from each database header, and the job holding it, if any.
pub async fn store_status(State(s): State<AppState>) -> ApiResult {
    blocking(&s, |node, _| {
        let mut groups = Vec::new();
        for g in node.store().storage_groups() {
            let mounted = g.is_mounted();
            let (log, databases) = match g.instance() {
                Ok(inst) => {
                    let log = inst.log_state().ok().map(|l| {
                        json!({
                            "current_generation": l.current_generation,
                            "checkpoint_generation": l.checkpoint_generation,
                            "log_files": l.generations.len(),
                            "lowest_generation": l.generations.first(),
                            "highest_generation": l.generations.last(),
                            "disk_full": l.disk_full,
                        })
                    });
                    let dbs: Vec<Value> = g
                        .def()
                        .databases
                        .iter()
                        .map(|d| match inst.database_header(&d.name) {
                            Ok(h) => json!({
                                "name": d.name,
                                "state": format!("{:?}", h.state),
                                "previous_full": h.previous_full,
                                "previous_incremental": h.previous_incremental,
                                "previous_differential": h.previous_differential,
                                "previous_copy": h.previous_copy,
                            }),
                            Err(e) => json!({ "name": d.name, "error": e.to_string() }),
                        })
                        .collect();
                    (log, dbs)
                }
                Err(_) => (None, Vec::new()),
            };
            groups.push(json!({
                "name": g.name(),
                "mounted": mounted,
                "mount_error": g.mount_error(),
                "log": log,
                "databases": databases,
                "backup_in_progress": g.backup_in_progress(),
            }));
        }
        Ok(Json(json!({ "storage_groups": groups })))
    })
    .await
}

/// The API's answer to a refused or failed creation.
fn create_error(e: CreateError) -> ApiError {
    let message = e.to_string();
    match e {
        CreateError::Exists { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_exists", message)
        }
        CreateError::Collides(_) => ApiError::new(StatusCode::CONFLICT, "collides", message),
        CreateError::Invalid { .. } => ApiError::bad_request(message),
        CreateError::Store(e) => e.into(),
        CreateError::Persist { .. } | CreateError::Io { .. } => ApiError::internal(message),
    }
}

/// Creates a storage group with its first database, mounts it, and records it so that it
/// is mounted at every later start.
pub async fn create_storage_group(
    State(s): State<AppState>,
    Json(req): Json<NewStorageGroup>,
) -> ApiResult {
    blocking(&s, move |node, _| {
        let sg = node.create_storage_group(req).map_err(create_error)?;
        Ok(Json(json!({ "storage_group": sg, "mounted": true })))
    })
    .await
}

/// Creates a database in a mounted storage group (which is dismounted and mounted again
/// with it), and records it so that it is mounted at every later start.
pub async fn add_database(
    State(s): State<AppState>,
    Path(sg): Path<String>,
    Json(req): Json<NewDatabase>,
) -> ApiResult {
    blocking(&s, move |node, _| Ok(Json(node.add_database(&sg, req).map_err(create_error)?))).await
}

pub async fn mount(State(s): State<AppState>, Path(sg): Path<String>) -> ApiResult {
    blocking(&s, move |node, _| {
        node.store().storage_group(&sg)?.mount()?;
        Ok(Json(json!({ "storage_group": sg, "mounted": true })))
    })
    .await
}

pub async fn dismount(State(s): State<AppState>, Path(sg): Path<String>) -> ApiResult {
    blocking(&s, move |node, _| {
        node.store().storage_group(&sg)?.dismount(false)?;
        Ok(Json(json!({ "storage_group": sg, "mounted": false })))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct EventQuery {
    pub job: Option<Uuid>,
    pub source: Option<String>,
    pub id: Option<u32>,
    pub since_ms: Option<u64>,
    pub limit: Option<usize>,
}

pub async fn events(State(s): State<AppState>, Query(q): Query<EventQuery>) -> ApiResult {
    let source = match q.source.as_deref() {
        None => None,
        Some(name) => Some(
            serde_json::from_value::<events::Source>(Value::String(name.to_ascii_lowercase()))
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "unknown event source {name:?} (coordinator, store, engine, replication, provider, requester)"
                    ))
                })?,
        ),
    };
    let filter = events::Filter {
        job: q.job,
        source,
        id: q.id,
        since_ms: q.since_ms,
        limit: q.limit,
        ..Default::default()
    };
    blocking(&s, move |node, _| Ok(Json(json!({ "events": node.events().query(&filter)? })))).await
}

pub async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = blocking(&s, |node, metrics| Ok(metrics.render(node))).await?;
    Ok((StatusCode::OK, [(CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
