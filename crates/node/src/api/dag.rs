//! `GET /v1/dag`, `/v1/copies` and the copy verbs: the DAG's state read from (and the
//! administrator's wishes written to) the cluster database, on any member.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use events::EventSink;
use replication::cluster::{CopyRecord, CopyStatus};

use super::{ApiError, AppState};
use crate::dag::{Dag, Seen};

type ApiResult<T> = Result<Json<T>, ApiError>;

fn dag_of(s: &AppState) -> Result<Arc<Dag>, ApiError> {
    s.dag.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_a_dag_member",
            format!(
                "node {} is not a member of a DAG (its configuration has no [dag] section)",
                s.node.name()
            ),
        )
    })
}

fn unreachable(dag: &Dag, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_unreachable",
        format!("the cluster database of DAG {} cannot be reached: {e}", dag.name()),
    )
}

/// Reads everything fresh from etcd.
pub(crate) async fn read_all(dag: &Dag) -> Result<Seen, ApiError> {
    let c = dag.cluster();
    let copies = c.copies(None).await.map_err(|e| unreachable(dag, e))?;
    let states = c.states(None).await.map_err(|e| unreachable(dag, e))?;
    let members = c.members().await.map_err(|e| unreachable(dag, e))?;
    let actives = c.actives().await.map_err(|e| unreachable(dag, e))?;
    Ok(Seen { copies, states, members, actives, loaded: true, reachable: true })
}

pub async fn dag_status(State(s): State<AppState>) -> ApiResult<api::DagStatus> {
    let dag = dag_of(&s)?;
    let (seen, reachable) = match read_all(&dag).await {
        Ok(seen) => (seen, true),
        Err(_) => (dag.seen(), false),
    };
    let mut members: Vec<api::DagMember> = seen
        .members
        .iter()
        .map(|m| api::DagMember {
            node: m.node.clone(),
            replication: Some(m.replication.clone()),
            up: true,
        })
        .collect();
    // Members known from their copies but without a live lease are down.
    for c in &seen.copies {
        if !members.iter().any(|m| m.node == c.node) {
            members.push(api::DagMember { node: c.node.clone(), replication: None, up: false });
        }
    }
    members.sort_by(|a, b| a.node.cmp(&b.node));
    let cfg = s.node.config().dag.clone();
    let primary = if reachable { dag.cluster().primary().await.ok().flatten() } else { None };
    Ok(Json(api::DagStatus {
        dag: dag.name().to_string(),
        node: s.node.name().to_string(),
        etcd: cfg.map(|c| c.etcd).unwrap_or_default(),
        etcd_reachable: reachable,
        members,
        primary_active_manager: primary,
    }))
}

/// The rows of `seen`, for the storage groups asked for.
pub(crate) async fn rows(dag: &Dag, seen: &Seen, sg: Option<&str>) -> Vec<api::CopyRow> {
    let mut out = Vec::new();
    for c in seen.copies.iter().filter(|c| sg.is_none_or(|s| s == c.sg)) {
        let active = seen.actives.iter().find(|(n, _)| n == &c.sg).map(|(_, a)| a.node.clone());
        let produced = dag.cluster().produced(&c.sg).await.ok().flatten().unwrap_or(0);
        let state = seen.states.iter().find(|s| s.sg == c.sg && s.node == c.node);
        let is_active = active.as_deref() == Some(c.node.as_str());
        let status = match state {
            Some(st) => format!("{:?}", st.status),
            None => "Unknown".to_string(),
        };
        let (inspected, replayed) = state
            .map(|s| (s.last_inspected_generation, s.last_replayed_generation))
            .unwrap_or((0, 0));
        let node_up = seen.members.iter().any(|m| m.node == c.node);
        let status = if !node_up && !is_active && state.is_some() {
            format!("{:?}", CopyStatus::Disconnected)
        } else {
            status
        };
        out.push(api::CopyRow {
            sg: c.sg.clone(),
            node: c.node.clone(),
            role: if is_active { "active" } else { "passive" }.into(),
            status,
            copy_queue_length: if is_active { 0 } else { produced.saturating_sub(inspected) },
            replay_queue_length: if is_active { 0 } else { inspected.saturating_sub(replayed) },
            last_inspected_generation: inspected,
            last_replayed_generation: replayed,
            activation_preference: c.preference,
            last_error: state.and_then(|s| s.last_error.clone()),
            suspended: c.suspended.clone(),
            node_up,
            shipping: state.and_then(|s| s.shipping.clone()),
        });
    }
    out
}

/// Each storage group's active record and settings, for the storage groups asked for.
pub(crate) async fn groups(dag: &Dag, seen: &Seen, sg: Option<&str>) -> Vec<api::GroupRow> {
    let mut out = Vec::new();
    for (name, a) in seen.actives.iter().filter(|(n, _)| sg.is_none_or(|s| s == n)) {
        let settings = dag.cluster().settings(name).await.unwrap_or_default();
        out.push(api::GroupRow {
            sg: name.clone(),
            active: a.node.clone(),
            epoch: a.epoch,
            since_generation: a.since_generation,
            previous: a.previous.clone(),
            mount_dial: settings.mount_dial.to_string(),
            sync_copies: settings.sync_copies,
            sync_policy: settings.sync_policy.to_string(),
        });
    }
    out
}

/// The copy list of the storage groups asked for.
async fn list(dag: &Dag, seen: &Seen, sg: Option<&str>) -> api::CopyList {
    api::CopyList { copies: rows(dag, seen, sg).await, groups: groups(dag, seen, sg).await }
}

/// `copy activate`: a switchover, run by the primary active manager (forwarded to it when it
/// is another member).
pub async fn activate_copy(
    State(s): State<AppState>,
    Json(req): Json<api::CopyActivate>,
) -> ApiResult<api::CopyActivated> {
    let dag = dag_of(&s)?;
    if dag.is_primary() {
        return dag.switchover(&req).await.map(Json);
    }
    let c = dag.cluster();
    let primary = c.primary().await.map_err(|e| unreachable(&dag, e))?;
    let Some(primary) = primary else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_primary_manager",
            format!("DAG {} has no primary active manager right now; try again", dag.name()),
        ));
    };
    let members = c.members().await.map_err(|e| unreachable(&dag, e))?;
    let Some(m) = members.iter().find(|m| m.node == primary) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_primary_manager",
            format!("the primary active manager, {primary}, is not a live member; try again"),
        ));
    };
    let peer = dag.peer(&m.node, &m.replication);
    peer.post_long(crate::dag::peer_api::ACTIVATE_PATH, &req)
        .await
        .map(Json)
        .map_err(|e| super::backup_from::peer_error(&peer, e))
}

/// `copy settings`: a storage group's mount dial and synchronous copies.
pub async fn copy_settings(
    State(s): State<AppState>,
    Json(req): Json<api::CopySettings>,
) -> ApiResult<api::CopyList> {
    let dag = dag_of(&s)?;
    let c = dag.cluster();
    let mut settings = c.settings(&req.sg).await.map_err(|e| unreachable(&dag, e))?;
    if let Some(d) = &req.mount_dial {
        settings.mount_dial = d.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "mount dial {d:?}: expected lossless, good, best or besteffort"
            ))
        })?;
    }
    if let Some(n) = req.sync_copies {
        settings.sync_copies = n;
    }
    if let Some(p) = &req.sync_policy {
        settings.sync_policy = p.parse().map_err(|_| {
            ApiError::bad_request(format!("sync policy {p:?}: expected strict or available"))
        })?;
    }
    c.put_settings(&req.sg, &settings).await.map_err(|e| unreachable(&dag, e))?;
    s.node.events().emit(
        &events::catalog::REPL_COPY_CONFIGURED,
        None,
        serde_json::json!({"sg": req.sg, "node": "(all)",
            "change": format!("mount dial {}, {} synchronous copies ({})",
                settings.mount_dial, settings.sync_copies, settings.sync_policy)}),
    );
    let seen = read_all(&dag).await?;
    apply_on_active(&dag, &seen, &req.sg).await;
    Ok(Json(list(&dag, &seen, Some(&req.sg)).await))
}

/// Has `sg`'s active node apply its settings now rather than at its next reconciler round,
/// so that a commit acknowledged after `copy settings` returns already waits for the
/// synchronous copies it asked for. An active that cannot be asked applies them within a
/// round of reaching the cluster database; that is logged, not failed: the settings are
/// stored.
async fn apply_on_active(dag: &Arc<Dag>, seen: &Seen, sg: &str) {
    let Some((_, rec)) = seen.actives.iter().find(|(n, _)| n == sg) else { return };
    let applied = if rec.node == dag.me() {
        dag.apply_settings(sg).await.map_err(|e| e.to_string())
    } else {
        let Some(m) = seen.members.iter().find(|m| m.node == rec.node) else { return };
        let peer = dag.peer(&m.node, &m.replication);
        let req = crate::dag::peer_api::SgRef { sg: sg.to_string() };
        peer.post_alone::<_, crate::dag::peer_api::SettingsApplied>(
            crate::dag::peer_api::APPLY_SETTINGS_PATH,
            &req,
            APPLY_SETTINGS_TIMEOUT,
        )
        .await
        .map(|a| a.sync_copies)
        .map_err(|e| e.to_string())
    };
    match applied {
        Ok(Some(n)) => {
            tracing::info!(%sg, active = %rec.node, sync_copies = n, "settings applied on the active")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%sg, active = %rec.node, "the active did not confirm the new settings (it applies them at its next round): {e}")
        }
    }
}

/// How long `copy settings` waits for the active to apply them.
const APPLY_SETTINGS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn list_copies(
    State(s): State<AppState>,
    Query(q): Query<api::CopyQuery>,
) -> ApiResult<api::CopyList> {
    let dag = dag_of(&s)?;
    let seen = read_all(&dag).await?;
    if let Some(sg) = &q.sg
        && !seen.copies.iter().any(|c| &c.sg == sg)
    {
        return Err(ApiError::not_found(
            "no_such_storage_group",
            format!("DAG {} has no copy of storage group {sg}", dag.name()),
        ));
    }
    Ok(Json(list(&dag, &seen, q.sg.as_deref()).await))
}

fn conflict(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "copy_conflict", message)
}

pub async fn add_copy(
    State(s): State<AppState>,
    Json(req): Json<api::CopyAdd>,
) -> ApiResult<api::CopyList> {
    let dag = dag_of(&s)?;
    let seen = read_all(&dag).await?;
    let Some((_, active)) = seen.actives.iter().find(|(sg, _)| sg == &req.sg) else {
        return Err(ApiError::not_found(
            "no_such_storage_group",
            format!(
                "no member of DAG {} holds storage group {} active (is its node up?)",
                dag.name(),
                req.sg
            ),
        ));
    };
    if active.node == req.node {
        return Err(conflict(format!(
            "node {} holds the active copy of {}; a passive copy goes on another member",
            req.node, req.sg
        )));
    }
    if !seen.members.iter().any(|m| m.node == req.node) {
        let up: Vec<&str> = seen.members.iter().map(|m| m.node.as_str()).collect();
        return Err(ApiError::not_found(
            "no_such_member",
            format!(
                "node {} is not an up member of DAG {} (up: {})",
                req.node,
                dag.name(),
                up.join(", ")
            ),
        ));
    }
    if seen.copies.iter().any(|c| c.sg == req.sg && c.node == req.node) {
        return Err(conflict(format!("node {} already has a copy of {}", req.node, req.sg)));
    }
    let preference = req.preference.unwrap_or_else(|| {
        seen.copies.iter().filter(|c| c.sg == req.sg).map(|c| c.preference).max().unwrap_or(0) + 1
    });
    let rec = CopyRecord {
        sg: req.sg.clone(),
        node: req.node.clone(),
        preference,
        seed_serial: 1,
        suspended: None,
        resumes: 0,
    };
    dag.cluster().put_copy(&rec).await.map_err(|e| unreachable(&dag, e))?;
    s.node.events().emit(
        &events::catalog::REPL_COPY_CONFIGURED,
        None,
        serde_json::json!({"sg": req.sg, "node": req.node,
                           "change": format!("added with activation preference {preference}; it seeds from node {}", active.node)}),
    );
    let seen = read_all(&dag).await?;
    Ok(Json(list(&dag, &seen, Some(&req.sg)).await))
}

/// What a copy verb changes.
enum Change {
    Remove,
    Suspend,
    Resume,
    Reseed,
}

async fn change(s: AppState, req: api::CopyChange, what: Change) -> ApiResult<api::CopyList> {
    let dag = dag_of(&s)?;
    let seen = read_all(&dag).await?;
    let Some(mut rec) = seen.copies.iter().find(|c| c.sg == req.sg && c.node == req.node).cloned()
    else {
        return Err(ApiError::not_found(
            "no_such_copy",
            format!("DAG {} has no copy of {} on node {}", dag.name(), req.sg, req.node),
        ));
    };
    let is_active = seen.actives.iter().any(|(sg, a)| sg == &req.sg && a.node == req.node);
    if is_active {
        return Err(conflict(format!(
            "the copy of {} on {} is the active copy; this verb is for passive copies",
            req.sg, req.node
        )));
    }
    let text = match what {
        Change::Remove => {
            dag.cluster()
                .remove_copy(&req.sg, &req.node)
                .await
                .map_err(|e| unreachable(&dag, e))?;
            "removed (its node deletes its files)".to_string()
        }
        Change::Suspend => {
            let reason =
                req.reason.clone().unwrap_or_else(|| "suspended by an administrator".into());
            rec.suspended = Some(reason.clone());
            dag.cluster().put_copy(&rec).await.map_err(|e| unreachable(&dag, e))?;
            format!("suspended ({reason})")
        }
        Change::Resume => {
            rec.suspended = None;
            // A resume also clears a failure: the copy's node sees the resume count change
            // (a failed copy has no suspension of the administrator's to clear).
            rec.resumes += 1;
            dag.cluster().put_copy(&rec).await.map_err(|e| unreachable(&dag, e))?;
            "resumed".to_string()
        }
        Change::Reseed => {
            rec.suspended = None;
            rec.seed_serial += 1;
            dag.cluster().put_copy(&rec).await.map_err(|e| unreachable(&dag, e))?;
            "to be seeded again".to_string()
        }
    };
    s.node.events().emit(
        &events::catalog::REPL_COPY_CONFIGURED,
        None,
        serde_json::json!({"sg": req.sg, "node": req.node, "change": text}),
    );
    let seen = read_all(&dag).await?;
    Ok(Json(list(&dag, &seen, Some(&req.sg)).await))
}

pub async fn remove_copy(
    State(s): State<AppState>,
    Json(req): Json<api::CopyChange>,
) -> ApiResult<api::CopyList> {
    change(s, req, Change::Remove).await
}

pub async fn suspend_copy(
    State(s): State<AppState>,
    Json(req): Json<api::CopyChange>,
) -> ApiResult<api::CopyList> {
    change(s, req, Change::Suspend).await
}

pub async fn resume_copy(
    State(s): State<AppState>,
    Json(req): Json<api::CopyChange>,
) -> ApiResult<api::CopyList> {
    change(s, req, Change::Resume).await
}

pub async fn reseed_copy(
    State(s): State<AppState>,
    Json(req): Json<api::CopyChange>,
) -> ApiResult<api::CopyList> {
    change(s, req, Change::Reseed).await
}

/// Counts and digests the mail of this node's passive copy of `sg`, as of its last replayed
/// generation, without touching the copy: its database file is copied (replay held off) to a
/// scratch directory under the data directory, marked consistent there (a passive copy is
/// consistent at a generation boundary: replay applies committed transactions only), and
/// opened by a scratch instance.
pub(crate) fn copy_digest(
    node: &crate::Node,
    dag: &Dag,
    sg: &str,
    db: &str,
) -> Result<store::ContentDigest, ApiError> {
    use volume::{FsRef, HostFs, OpenMode};
    let scratch_dir =
        node.config().node.data_dir.join("tmp").join(format!("count-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch_dir)
        .map_err(|e| ApiError::internal(format!("{}: {e}", scratch_dir.display())))?;
    let result = (|| {
        let scratch: FsRef =
            Arc::new(HostFs::new(&scratch_dir).map_err(|e| ApiError::internal(e.to_string()))?);
        let name = std::path::PathBuf::from(format!("{db}.edb"));
        let copied = dag.with_copy(sg, |fs, dbdir, manifest| {
            let Some(m) = manifest else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "copy_not_seeded",
                    format!("the copy of {sg} on node {} is not seeded yet", node.name()),
                ));
            };
            if !m.databases.iter().any(|d| d.name == db) {
                return Err(ApiError::not_found(
                    "no_such_database",
                    format!("the copy of {sg} has no database {db}"),
                ));
            }
            let io = |e: std::io::Error| ApiError::internal(format!("copying {db}: {e}"));
            let src = fs.open(&dbdir.join(&name), OpenMode::Read).map_err(io)?;
            let dst = scratch.open(&name, OpenMode::Create).map_err(io)?;
            let len = src.len().map_err(io)?;
            let mut off = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            while off < len {
                let n = (len - off).min(buf.len() as u64) as usize;
                src.read_exact_at(&mut buf[..n], off).map_err(io)?;
                dst.write_at(&buf[..n], off).map_err(io)?;
                off += n as u64;
            }
            Ok(m.clone())
        });
        let manifest = copied.ok_or_else(|| {
            ApiError::not_found(
                "no_such_copy",
                format!("node {} has no passive copy of {sg}", node.name()),
            )
        })??;
        let engine = |e: ese::EngineError| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "engine_error",
                format!("copy of {sg}: {e}"),
            )
        };
        {
            let f = scratch
                .open(&name, OpenMode::ReadWrite)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let mut h = ese::dbheader::read_header(f.as_ref(), &name).map_err(engine)?;
            h.mark_clean_shutdown();
            ese::dbheader::write_header(f.as_ref(), &name, &mut h).map_err(engine)?;
        }
        let mut cfg = ese::InstanceConfig::new(
            scratch.clone(),
            std::path::PathBuf::from("logs"),
            scratch.clone(),
            std::path::PathBuf::new(),
        );
        cfg.prefix = manifest.prefix.clone();
        cfg.log_file_size = manifest.log_file_size;
        cfg.page_size = manifest.page_size as usize;
        cfg.cache_pages = 256;
        let instance = Arc::new(ese::Instance::create(cfg).map_err(engine)?);
        instance.attach(db, scratch.clone(), &name).map_err(engine)?;
        let digest = store::MailDb::open(instance.clone(), db).and_then(|m| m.digest());
        instance.shutdown().map_err(engine)?;
        Ok(digest?)
    })();
    let _ = std::fs::remove_dir_all(&scratch_dir);
    result
}

/// The passive copies a restore over a storage group's files holds: the storage group and
/// their nodes.
pub(crate) struct HeldCopies {
    sg: String,
    nodes: Vec<String>,
}

/// Before a restore over the files of `sg`: its passive copies (if any) are suspended, when
/// `allowed`; without it the restore is refused, naming them.
pub(crate) async fn hold_copies_for_restore(
    dag: &Dag,
    sg: &str,
    allowed: bool,
) -> Result<Option<HeldCopies>, ApiError> {
    let seen = read_all(dag).await?;
    let active = seen.actives.iter().find(|(s, _)| s == sg).map(|(_, a)| a.node.clone());
    let passives: Vec<_> = seen
        .copies
        .iter()
        .filter(|c| c.sg == sg && Some(&c.node) != active.as_ref())
        .cloned()
        .collect();
    if passives.is_empty() {
        return Ok(None);
    }
    let nodes: Vec<String> = passives.iter().map(|c| c.node.clone()).collect();
    if !allowed {
        return Err(conflict(format!(
            "storage group {sg} has passive copies on {}: a restore over its files changes the log stream they replay; pass --reseed-copies to suspend them during the restore and seed them again after it, or restore to another directory (--to)",
            nodes.join(", ")
        )));
    }
    let mut suspended = Vec::new();
    for mut rec in passives {
        rec.suspended = Some("a restore over the active copy's files is running".into());
        if let Err(e) = dag.cluster().put_copy(&rec).await {
            // All or none: the copies suspended so far are resumed.
            release_copies_after_restore(
                dag,
                HeldCopies { sg: sg.to_string(), nodes: suspended },
                false,
            )
            .await;
            return Err(unreachable(dag, e));
        }
        suspended.push(rec.node.clone());
    }
    Ok(Some(HeldCopies { sg: sg.to_string(), nodes }))
}

/// After the restore: the held copies are seeded again (the restored databases are a new
/// start for them) or, if the restore failed and left the files as they were, resumed.
pub(crate) async fn release_copies_after_restore(dag: &Dag, held: HeldCopies, restored: bool) {
    let seen = match read_all(dag).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(sg = %held.sg, error = %e.message,
                "the copies held for the restore could not be released; resume or reseed them with `shadowcopy copy`");
            return;
        }
    };
    for node in &held.nodes {
        let Some(mut rec) =
            seen.copies.iter().find(|c| c.sg == held.sg && &c.node == node).cloned()
        else {
            continue;
        };
        rec.suspended = None;
        if restored {
            rec.seed_serial += 1;
        } else {
            rec.resumes += 1;
        }
        if let Err(e) = dag.cluster().put_copy(&rec).await {
            tracing::error!(sg = %held.sg, %node, error = %e,
                "releasing a copy held for the restore failed; resume or reseed it with `shadowcopy copy`");
        }
    }
}
