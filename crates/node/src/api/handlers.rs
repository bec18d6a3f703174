//! Listing and administration endpoints: writers, providers, shadows, shadow storage, store
//! status, storage group and database creation, mount and dismount, events, metrics.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use uuid::Uuid;

use super::error::ApiError;
use super::metrics::CommitFigures;
use super::{AppState, blocking, convert};
use crate::layout::{CreateError, NewDatabase, NewStorageGroup};

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn not_found() -> ApiError {
    ApiError::not_found("no_such_endpoint", "no such endpoint; see the node's API documentation")
}

/// The contract of this API, generated from its types and its table of endpoints.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(api::openapi())
}

pub async fn writers(State(s): State<AppState>) -> ApiResult<api::WriterList> {
    blocking(&s, |node, _| {
        let writers = node
            .coordinator()
            .list_writers()
            .into_iter()
            .map(|w| api::Writer {
                writer_name: w.writer_name,
                writer_id: w.key.writer_id,
                instance_name: w.key.instance_name,
                state: w.status.state.code(),
                state_name: w.status.state.name().to_string(),
                failure: w.status.failure.map(|f| f.as_str().to_string()),
                message: w.status.message,
            })
            .collect();
        Ok(Json(api::WriterList { writers }))
    })
    .await
}

pub async fn providers(State(s): State<AppState>) -> ApiResult<api::ProviderList> {
    blocking(&s, |node, _| {
        let providers = node
            .coordinator()
            .list_providers()
            .into_iter()
            .map(|(provider_id, name)| api::Provider {
                provider_id,
                name,
                provider_type: if provider_id == vss::BTRFS_PROVIDER_ID {
                    "btrfs"
                } else {
                    "software"
                }
                .into(),
            })
            .collect();
        let volumes = node
            .provider()
            .volumes()
            .into_iter()
            .chain(node.btrfs_provider().volumes())
            .map(convert::volume_info)
            .collect();
        Ok(Json(api::ProviderList { providers, volumes }))
    })
    .await
}

pub async fn shadows(State(s): State<AppState>) -> ApiResult<api::ShadowList> {
    blocking(&s, |node, _| {
        let shadows = node
            .provider()
            .query()
            .into_iter()
            .chain(node.btrfs_provider().query())
            .map(|info| {
                let exposed = node.exposures().exposed_at(info.id);
                api::Shadow {
                    exposed_at: exposed.map(|p| convert::path(&p)),
                    ..convert::shadow(info)
                }
            })
            .collect();
        Ok(Json(api::ShadowList { shadows }))
    })
    .await
}

/// The API's answer to a refused or failed expose or unexpose.
fn expose_error(e: crate::expose::ExposeError) -> ApiError {
    use crate::expose::ExposeError as E;
    let message = e.to_string();
    match e {
        E::UnknownShadow(_) => ApiError::not_found("no_such_shadow", message),
        E::NotExposed(_) => ApiError::not_found("not_exposed", message),
        E::AlreadyExposed { .. } => ApiError::new(StatusCode::CONFLICT, "already_exposed", message),
        E::BadPath { .. } => ApiError::bad_request(message),
        E::FuseUnavailable(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "fuse_unavailable", message)
        }
        E::Mount { .. } | E::View { .. } => ApiError::internal(message),
    }
}

fn exposure(e: crate::expose::Exposure) -> api::Exposure {
    api::Exposure { shadow: e.shadow, at: convert::path(&e.at), persistent: e.persistent }
}

/// `admin expose`: mounts a shadow copy read-only at a path of the node.
pub async fn expose_shadow(
    State(s): State<AppState>,
    Json(req): Json<api::ExposeShadow>,
) -> ApiResult<api::Exposures> {
    blocking(&s, move |node, _| {
        let e = node
            .exposures()
            .expose(node.coordinator(), req.shadow, std::path::Path::new(&req.at))
            .map_err(expose_error)?;
        Ok(Json(api::Exposures { exposures: vec![exposure(e)] }))
    })
    .await
}

/// `admin unexpose`: by shadow copy or by path.
pub async fn unexpose_shadow(
    State(s): State<AppState>,
    Json(req): Json<api::UnexposeShadow>,
) -> ApiResult<api::Exposures> {
    blocking(&s, move |node, _| {
        if req.shadow.is_some() == req.at.is_some() {
            return Err(ApiError::bad_request("give exactly one of `shadow` or `at`"));
        }
        let at = req.at.as_deref().map(std::path::Path::new);
        let e = node.exposures().unexpose(req.shadow, at).map_err(expose_error)?;
        Ok(Json(api::Exposures { exposures: vec![exposure(e)] }))
    })
    .await
}

/// `create shadow`: a persistent, client-accessible snapshot of one volume.
pub async fn create_shadow(
    State(s): State<AppState>,
    Json(req): Json<api::CreateShadow>,
) -> ApiResult<api::CreatedShadow> {
    blocking(&s, move |node, metrics| {
        let p = node.provider();
        let opts = volume::CommitOptions { persistent: true, ..Default::default() };
        if node.btrfs_provider().is_supported(&req.for_volume) {
            return create_btrfs_shadow(node, metrics, &req.for_volume, &opts);
        }
        let set = p.begin_set(opts);
        if let Err(e) = p.add_volume(set, &req.for_volume) {
            if let Err(abort) = p.abort(set) {
                tracing::warn!(set = %set, error = %abort, "aborting the refused shadow set failed");
            }
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
        let shadows =
            committed.snapshots.iter().map(|c| convert::shadow(c.info.clone())).collect();
        tracing::info!(set = %set, volume = %req.for_volume, "created a persistent shadow");
        Ok(Json(api::CreatedShadow {
            set_id: set,
            shadows,
            hold_ms: committed.hold.as_secs_f64() * 1e3,
            commit_ms: commit.as_secs_f64() * 1e3,
        }))
    })
    .await
}

/// `create shadow` of a volume the btrfs provider snapshots.
fn create_btrfs_shadow(
    node: &crate::Node,
    metrics: &super::metrics::Metrics,
    for_volume: &str,
    opts: &volume::CommitOptions,
) -> Result<Json<api::CreatedShadow>, ApiError> {
    let set = Uuid::new_v4();
    let started = Instant::now();
    let r = node.btrfs_provider().commit(&[for_volume.to_string()], set, opts)?;
    let commit = started.elapsed();
    metrics.record_commit(CommitFigures {
        set: set.to_string(),
        origin: "create_shadow",
        commit_seconds: commit.as_secs_f64(),
        hold_seconds: r.hold.as_secs_f64(),
    });
    tracing::info!(set = %set, volume = %for_volume, "created a persistent btrfs shadow");
    Ok(Json(api::CreatedShadow {
        set_id: set,
        shadows: r.snapshots.into_iter().map(convert::shadow).collect(),
        hold_ms: r.hold.as_secs_f64() * 1e3,
        commit_ms: commit.as_secs_f64() * 1e3,
    }))
}

pub async fn delete_shadows(
    State(s): State<AppState>,
    Json(req): Json<api::DeleteShadows>,
) -> ApiResult<api::DeletedShadows> {
    blocking(&s, move |node, _| {
        let p = node.provider();
        let b = node.btrfs_provider();
        // An exposed shadow copy is unexposed before it is deleted. The software provider's
        // volumes do it themselves for every deletion; this covers the btrfs provider's.
        let doomed: Vec<Uuid> = match (&req.for_volume, req.oldest, req.shadow, req.all) {
            (None, false, Some(id), false) => vec![id],
            (Some(v), true, None, false) => p
                .query()
                .into_iter()
                .chain(b.query())
                .filter(|s| &s.volume_label == v)
                .min_by_key(|s| s.seq)
                .map(|s| s.id)
                .into_iter()
                .collect(),
            (v, false, None, true) => p
                .query()
                .into_iter()
                .chain(b.query())
                .filter(|s| v.as_ref().is_none_or(|v| &s.volume_label == v))
                .map(|s| s.id)
                .collect(),
            _ => Vec::new(),
        };
        for id in doomed {
            node.exposures().withdraw(id, "the shadow copy is deleted");
        }
        let deleted: Vec<Uuid> = match (&req.for_volume, req.oldest, req.shadow, req.all) {
            (None, false, Some(id), false) => {
                node.coordinator().delete_snapshot(id)?;
                vec![id]
            }
            (Some(v), true, None, false) if b.is_supported(v) => {
                b.delete_oldest(v)?.into_iter().collect()
            }
            (Some(v), false, None, true) if b.is_supported(v) => {
                let before: Vec<Uuid> =
                    b.query().into_iter().filter(|s| &s.volume_label == v).map(|s| s.id).collect();
                b.delete_all(v)?;
                before
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
                for v in b.volumes() {
                    gone.extend(
                        b.query().into_iter().filter(|s| s.volume == v.guid).map(|s| s.id),
                    );
                    b.delete_all(&v.label)?;
                }
                gone
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of: `for` with `oldest`, `shadow`, `for` with `all`, or `all`",
                ));
            }
        };
        Ok(Json(api::DeletedShadows { deleted }))
    })
    .await
}

pub async fn shadow_storage(State(s): State<AppState>) -> ApiResult<api::ShadowStorageList> {
    blocking(&s, |node, _| Ok(Json(all_shadow_storage(node)))).await
}

/// The shadow storage of every volume, of both providers.
fn all_shadow_storage(node: &crate::Node) -> api::ShadowStorageList {
    let mut all = node.provider().list_shadow_storage();
    all.extend(node.btrfs_provider().list_shadow_storage());
    convert::shadow_storage(all)
}

/// The limit in bytes (`None`: unbounded); a percentage is of the host file system that holds
/// the volume `on` (the storage's volume), as in the configuration file.
fn max_bytes(node: &crate::Node, on: &str, max: api::MaxSize) -> Result<Option<u64>, ApiError> {
    match max {
        api::MaxSize::Unbounded => Ok(None),
        api::MaxSize::Bytes(b) => Ok(Some(b)),
        api::MaxSize::Percent(p) => {
            let root = match node.volume(on) {
                Some(v) => v.root().to_path_buf(),
                None => node.provider().volume(on)?.root().to_path_buf(),
            };
            let total = convert::host_fs_size(&root).map_err(|e| {
                ApiError::internal(format!("finding the size of {}: {e}", root.display()))
            })?;
            Ok(Some(total / 100 * u64::from(p)))
        }
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
    Json(req): Json<api::AddShadowStorage>,
) -> ApiResult<api::ShadowStorageList> {
    blocking(&s, move |node, _| {
        let on = req.on.clone().ok_or_else(|| ApiError::bad_request("`on` is required"))?;
        let max = max_bytes(node, &on, req.max_size)?;
        node.add_shadow_storage(&req.for_volume, &on, max).map_err(shadow_storage_error)?;
        Ok(Json(all_shadow_storage(node)))
    })
    .await
}

pub async fn resize_shadow_storage(
    State(s): State<AppState>,
    Json(req): Json<api::ResizeShadowStorage>,
) -> ApiResult<api::ShadowStorageList> {
    blocking(&s, move |node, _| {
        let p = node.provider();
        let on = match node.btrfs_provider().volume(&req.for_volume) {
            Ok(v) => v.label().to_string(),
            Err(_) => p.volume(&req.for_volume)?.shadow_storage().on_volume.to_string(),
        };
        let max = max_bytes(node, &on, req.max_size)?;
        node.resize_shadow_storage(&req.for_volume, max).map_err(shadow_storage_error)?;
        Ok(Json(all_shadow_storage(node)))
    })
    .await
}

/// Per storage group: mounted, log and checkpoint generations, log files on disk, the
/// backup history from each database header, and the job holding it, if any.
pub async fn store_status(State(s): State<AppState>) -> ApiResult<api::StoreStatus> {
    let dag = s.dag.clone();
    blocking(&s, move |node, _| {
        let truncations = truncation_events(node);
        let mut storage_groups = Vec::new();
        for g in node.store().storage_groups() {
            let mounted = g.is_mounted();
            let (log, databases) = match g.instance() {
                Ok(inst) => {
                    let log = inst.log_state().ok().map(|l| api::LogStatus {
                        current_generation: l.current_generation,
                        checkpoint_generation: l.checkpoint_generation,
                        log_files: l.generations.len() as u64,
                        lowest_generation: l.generations.first().copied(),
                        highest_generation: l.generations.last().copied(),
                        disk_full: l.disk_full,
                    });
                    let dbs = g
                        .def()
                        .databases
                        .iter()
                        .map(|d| {
                            convert::database_status(
                                &d.name,
                                inst.database_header(&d.name).map_err(|e| e.to_string()),
                            )
                        })
                        .collect();
                    (log, dbs)
                }
                Err(_) => (None, Vec::new()),
            };
            storage_groups.push(api::StorageGroupStatus {
                name: g.name().to_string(),
                mounted,
                mount_error: g.mount_error(),
                log,
                databases,
                backup_in_progress: g.backup_in_progress(),
                copy_databases: copy_databases(dag.as_deref(), g.name()),
                truncation: truncation_status(
                    truncations.iter().filter(|e| is_active_truncation(e, &g.def().prefix)),
                ),
                copy_truncation: truncation_status(
                    truncations.iter().filter(|e| is_copy_truncation(e, g.name())),
                ),
            });
        }
        // Passive copies of storage groups this node does not define itself.
        for sg in dag.as_ref().map(|d| d.copy_names()).unwrap_or_default() {
            if storage_groups.iter().any(|g| g.name == sg) {
                continue;
            }
            storage_groups.push(api::StorageGroupStatus {
                name: sg.clone(),
                mounted: false,
                mount_error: None,
                log: None,
                databases: Vec::new(),
                backup_in_progress: None,
                copy_databases: copy_databases(dag.as_deref(), &sg),
                truncation: None,
                copy_truncation: truncation_status(
                    truncations.iter().filter(|e| is_copy_truncation(e, &sg)),
                ),
            });
        }
        Ok(Json(api::StoreStatus { storage_groups }))
    })
    .await
}

/// This node's log truncation events (224 and 225), oldest first. An unreadable event log
/// leaves the status without them rather than failing it.
fn truncation_events(node: &crate::Node) -> Vec<events::Event> {
    let engine = events::Filter { source: Some(events::Source::Engine), ..Default::default() };
    let mut found = node.events().query(&engine).unwrap_or_default();
    found.retain(|e| {
        e.is(&events::catalog::ENGINE_LOGS_TRUNCATED)
            || e.is(&events::catalog::ENGINE_NO_LOGS_TRUNCATED)
    });
    found
}

fn field<'a>(e: &'a events::Event, name: &str) -> Option<&'a str> {
    e.fields.get(name).and_then(|v| v.as_str())
}

/// A truncation of the logs of the instance `prefix` itself (the copy's events name their
/// storage group in `sg`; the instance's own do not).
fn is_active_truncation(e: &events::Event, prefix: &str) -> bool {
    field(e, "instance") == Some(prefix) && !e.fields.contains_key("sg")
}

/// A truncation of this node's passive copy of `sg`.
fn is_copy_truncation(e: &events::Event, sg: &str) -> bool {
    field(e, "sg") == Some(sg)
}

/// The last attempt and the last deletion among `events` (oldest first).
fn truncation_status<'a>(
    events: impl DoubleEndedIterator<Item = &'a events::Event>,
) -> Option<api::TruncationStatus> {
    let mut status = api::TruncationStatus::default();
    for e in events.rev() {
        let truncated = e.is(&events::catalog::ENGINE_LOGS_TRUNCATED);
        if status.last_attempt.is_none() {
            status.last_attempt = Some(truncation_attempt(e, truncated));
        }
        if truncated {
            status.last_truncated = Some(truncation_attempt(e, truncated));
            break;
        }
    }
    status.last_attempt.is_some().then_some(status)
}

fn truncation_attempt(e: &events::Event, truncated: bool) -> api::TruncationAttempt {
    let limit = if truncated {
        // "; later generations stay: <why>" or " of this node's copy of …".
        field(e, "kept")
            .map(|k| k.trim_start_matches("; later generations stay: ").trim().to_string())
            .filter(|k| !k.is_empty())
    } else {
        field(e, "reason").map(str::to_string)
    };
    api::TruncationAttempt {
        event_id: e.id,
        time_ms: e.time_ms,
        job: e.job,
        truncated,
        first: truncated.then(|| field(e, "first").map(str::to_string)).flatten(),
        last: truncated.then(|| field(e, "last").map(str::to_string)).flatten(),
        limit,
        message: e.message.clone(),
    }
}

/// The database headers of this node's passive copy of `sg`, if it has one.
fn copy_databases(dag: Option<&crate::dag::Dag>, sg: &str) -> Vec<api::DatabaseStatus> {
    dag.and_then(|d| d.copy_headers(sg))
        .unwrap_or_default()
        .into_iter()
        .map(|(name, h)| convert::database_status(&name, h))
        .collect()
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
    Json(req): Json<api::CreateStorageGroup>,
) -> ApiResult<api::CreatedStorageGroup> {
    blocking(&s, move |node, _| {
        let req = NewStorageGroup {
            name: req.name,
            log_volume: req.log_volume,
            log_dir: req.log_dir.map(Into::into),
            system_dir: req.system_dir.map(Into::into),
            prefix: req.prefix,
            circular_logging: req.circular_logging,
            database: new_database(req.database),
        };
        let sg = node.create_storage_group(req).map_err(create_error)?;
        Ok(Json(api::CreatedStorageGroup {
            storage_group: convert::via_serde("the storage group created", &sg)?,
            mounted: true,
        }))
    })
    .await
}

fn new_database(d: api::CreateDatabase) -> NewDatabase {
    NewDatabase { name: d.name, volume: d.volume, path: d.path.map(Into::into) }
}

/// Creates a database in a mounted storage group (which is dismounted and mounted again
/// with it), and records it so that it is mounted at every later start.
pub async fn add_database(
    State(s): State<AppState>,
    Path(sg): Path<String>,
    Json(req): Json<api::CreateDatabase>,
) -> ApiResult<api::CreatedDatabase> {
    blocking(&s, move |node, _| {
        let created = node.add_database(&sg, new_database(req)).map_err(create_error)?;
        Ok(Json(convert::via_serde("the database created", &created)?))
    })
    .await
}

pub async fn mount(State(s): State<AppState>, Path(sg): Path<String>) -> ApiResult<api::Mounted> {
    if let Some(dag) = &s.dag {
        dag.may_mount(&sg).await?;
    }
    blocking(&s, move |node, _| {
        node.store().storage_group(&sg)?.mount()?;
        Ok(Json(api::Mounted { storage_group: sg, mounted: true }))
    })
    .await
}

pub async fn dismount(
    State(s): State<AppState>,
    Path(sg): Path<String>,
) -> ApiResult<api::Mounted> {
    blocking(&s, move |node, _| {
        node.store().storage_group(&sg)?.dismount(false)?;
        Ok(Json(api::Mounted { storage_group: sg, mounted: false }))
    })
    .await
}

/// The events of this node; with a job on a DAG member, the job's trail gathered from every
/// member (a surrogate backup logs on two nodes), see [`crate::dag::peer_api::gather_events`].
pub async fn events(
    State(s): State<AppState>,
    Query(q): Query<api::EventQuery>,
) -> ApiResult<api::EventList> {
    if let (Some(dag), Some(job)) = (s.dag.clone(), q.job.clone()) {
        return crate::dag::peer_api::gather_events(dag, q, job).await.map(Json);
    }
    blocking(&s, move |node, _| {
        let events = crate::dag::peer_api::local_events(node, &q)?;
        Ok(Json(api::EventList { events, unreachable: Vec::new() }))
    })
    .await
}

pub async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let dag = s.dag.clone();
    let text = blocking(&s, move |node, metrics| {
        let mut text = metrics.render(node);
        if let Some(dag) = dag {
            text.push_str(&super::metrics::copy_metrics(&dag, node.name()));
        }
        Ok(text)
    })
    .await?;
    Ok((StatusCode::OK, [(CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
