//! Long jobs: mail load, backup, verify, restore. Each answers when the job ends, with its
//! report; the job runs on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use backup::repo::{RepoLocation, Repository, S3Settings};
use backup::{BackupRequest, Progress, Quiet, RestoreRequest, RestoreTarget};
use serde::Serialize;
use store::load::{LoadConfig, LoadGenerator};
use volume::{FsRef, HostFs};

use super::backup_from::{self, Place};
use super::error::ApiError;
use super::metrics::{BackupFigures, CommitFigures, Metrics};
use super::{AppState, blocking, convert, stream};
use crate::Node;

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Longest mail load one request may run.
const MAX_LOAD_SECONDS: u64 = 3600;

/// Delivers mail to a database until `messages` were delivered or `seconds` passed.
pub async fn mail_load(
    State(s): State<AppState>,
    Json(req): Json<api::MailLoad>,
) -> ApiResult<api::MailLoaded> {
    if req.messages.is_some() == req.seconds.is_some() {
        return Err(ApiError::bad_request("give exactly one of `messages` or `seconds`"));
    }
    if req.seconds.is_some_and(|s| s > MAX_LOAD_SECONDS) {
        return Err(ApiError::bad_request(format!("`seconds` is at most {MAX_LOAD_SECONDS}")));
    }
    let stopping = s.stopping.clone();
    blocking(&s, move |node, _| {
        let db = node.store().storage_group(&req.sg)?.mail(&req.db)?;
        let cfg = LoadConfig {
            mailboxes: req.mailboxes.unwrap_or(8).max(1),
            seed: req.seed.unwrap_or_else(events::now_ms),
            max_deliveries: req.messages,
            delete_ratio: 0.0,
            ..Default::default()
        };
        let started = Instant::now();
        let load = LoadGenerator::start(db, cfg)?;
        let deadline = req.seconds.map(|s| started + Duration::from_secs(s));
        while !load.finished()
            && deadline.is_none_or(|d| Instant::now() < d)
            && !stopping.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let ledger = load.stop();
        let elapsed = started.elapsed();
        if ledger.errors > 0 && ledger.delivered.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "load_failed",
                ledger.last_error.unwrap_or_else(|| "every delivery failed".into()),
            ));
        }
        Ok(Json(api::MailLoaded {
            storage_group: req.sg,
            database: req.db,
            delivered: ledger.delivered.len() as u64,
            errors: ledger.errors as u64,
            last_error: ledger.last_error,
            elapsed_ms: elapsed.as_secs_f64() * 1e3,
        }))
    })
    .await
}

pub async fn mail_count(
    State(s): State<AppState>,
    Query(q): Query<api::MailCountQuery>,
) -> ApiResult<api::MailCount> {
    let dag = s.dag.clone();
    blocking(&s, move |node, _| {
        let d = if q.copy {
            let Some(dag) = dag else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_a_dag_member",
                    format!("node {} is not a DAG member: it holds no passive copy", node.name()),
                ));
            };
            super::dag::copy_digest(node, &dag, &q.sg, &q.db)?
        } else {
            let sg = node.store().storage_group(&q.sg)?;
            match &q.path {
                None => sg.mail(&q.db)?.digest()?,
                Some(dir) => restored_digest(&sg.def(), &q.db, dir)?,
            }
        };
        Ok(Json(api::MailCount {
            storage_group: q.sg,
            database: q.db,
            path: q.path,
            messages: d.messages,
            mailboxes: d.mailboxes,
            bytes: d.bytes,
            digest: d.digest.to_hex().to_string(),
        }))
    })
    .await
}

/// Opens the database a restore to `dir` left there (as its own instance: databases in `dir`,
/// logs in `dir/logs`, with the storage group's engine settings), digests its mail and shuts
/// it down cleanly.
fn restored_digest(
    def: &store::StorageGroupDef,
    db: &str,
    dir: &str,
) -> Result<store::ContentDigest, ApiError> {
    let path = PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(ApiError::bad_request(format!("path {dir:?} must be absolute")));
    }
    if !path.join(format!("{db}.edb")).is_file() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_database",
            format!("{dir} holds no {db}.edb (a directory a restore with --to wrote)"),
        ));
    }
    let fs: FsRef = Arc::new(
        HostFs::new(&path).map_err(|e| ApiError::internal(format!("opening {dir}: {e}")))?,
    );
    let mut cfg =
        ese::InstanceConfig::new(fs.clone(), PathBuf::from("logs"), fs.clone(), PathBuf::new());
    cfg.prefix = def.prefix.clone();
    cfg.log_file_size = def.tuning.log_file_size;
    cfg.page_size = def.tuning.page_size;
    cfg.cache_pages = def.tuning.cache_pages;
    let engine = |e: ese::EngineError| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "engine_error", format!("{dir}: {e}"))
    };
    let spec = ese::DatabaseSpec::new(db, fs, format!("{db}.edb"));
    let instance = Arc::new(ese::Instance::open(cfg, vec![spec]).map_err(engine)?);
    let digest = store::MailDb::open(instance.clone(), db).and_then(|m| m.digest());
    instance.shutdown().map_err(engine)?;
    Ok(digest?)
}

/// Where a request's repository is: an absolute directory on the node, or `s3://bucket/prefix`.
fn repo_location(path: &str) -> Result<RepoLocation, ApiError> {
    match RepoLocation::parse(path)? {
        RepoLocation::Local(_) => Ok(RepoLocation::Local(repo_path(path)?)),
        remote => Ok(remote),
    }
}

/// The S3 connection: the configuration's `[s3]` section (its secret read now, so that a
/// rotated key needs no restart), the node's `AWS_*` environment for what it leaves out.
fn s3_settings(node: &Node) -> Result<S3Settings, ApiError> {
    let Some(s3) = &node.config().s3 else { return Ok(S3Settings::default()) };
    let secret_access_key = match &s3.secret_key_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "s3_secret_unreadable",
                        format!("reading s3.secret_key_file {}: {e}", path.display()),
                    )
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok(S3Settings {
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        access_key_id: s3.access_key_id.clone(),
        secret_access_key,
        allow_http: s3.allow_http,
    })
}

fn repo_path(path: &str) -> Result<PathBuf, ApiError> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "repository path {path:?} must be absolute (the node resolves it, not the client)"
        )));
    }
    // The caller's mistake, said as such rather than as the I/O error creating it would give.
    if p.exists() && !p.is_dir() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "repository_not_a_directory",
            format!("repository path {path} is a file, not a directory; give a directory"),
        ));
    }
    Ok(p)
}

/// Opens the repository at `path` (a directory or `s3://…`); `password` unlocks it if it is
/// encrypted.
pub(crate) fn open_repo(
    node: &Node,
    path: &str,
    password: Option<&str>,
) -> Result<Arc<Repository>, ApiError> {
    let location = repo_location(path)?;
    Ok(Arc::new(Repository::open_location(&location, &s3_settings(node)?, password)?))
}

/// The password of the repository at `path`: the request's, else the one the node's
/// configuration names for that path (`[[repository]]`), else none.
pub(crate) fn repo_password(
    node: &Node,
    path: &str,
    given: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if let Some(p) = given {
        return Ok(Some(p.to_string()));
    }
    let Some(r) = node.config().repositories.iter().find(|r| r.path == Path::new(path)) else {
        return Ok(None);
    };
    password_from_file(&r.password_file, path).map(Some)
}

/// The password in `file` (its one line) of the repository at `path`.
pub(crate) fn password_from_file(file: &Path, path: &str) -> Result<String, ApiError> {
    let password = backup::repo::Password::read_file(file).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "repository_password_file",
            format!(
                "reading the password file {} of repository {path} (the node's configuration): {e}",
                file.display()
            ),
        )
    })?;
    Ok(password.as_str().to_string())
}

/// The password a `GET` carries in [`api::REPO_PASSWORD_HEADER`].
fn header_password(headers: &HeaderMap) -> Option<String> {
    headers.get(api::REPO_PASSWORD_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A job as [`run_job`] runs it: on the blocking pool, with the node, its metrics and the
/// job's progress sink.
pub(crate) type Job<T> =
    Box<dyn FnOnce(&Node, &Metrics, &dyn Progress) -> Result<T, ApiError> + Send>;

/// Resolves where a backup runs (here, or on the member that holds the copy `from` names)
/// and returns the job that runs it. `POST /v1/backup` runs it for its client, and the
/// node's schedules run it for themselves ([`run_backup`]): one path, the same job, events
/// and metrics either way.
pub(crate) async fn backup_job(
    s: &AppState,
    req: api::BackupRequest,
) -> Result<Job<api::BackupReport>, ApiError> {
    let place = backup_from::resolve(s, &req.sg, req.from.as_deref())
        .await
        .inspect_err(|_| s.metrics.record_backup_failure())?;
    Ok(match place {
        Place::Peer(peer) => {
            let runtime = tokio::runtime::Handle::current();
            Box::new(move |_node, metrics, progress| {
                progress.step(&format!("backing up the copy on node {}", peer.node()));
                let mut forwarded = req.clone();
                forwarded.from = Some(peer.node().to_string());
                runtime
                    .block_on(peer.post_long::<_, api::BackupReport>(
                        backup_from::PEER_BACKUP_PATH,
                        &forwarded,
                    ))
                    .map_err(|e| backup_from::peer_error(&peer, e))
                    .inspect(|_| metrics.record_backup_success(&req.sg))
            })
        }
        Place::Here { copy } => {
            let dag = s.dag.clone();
            Box::new(move |node, metrics, progress| {
                backup_here(node, metrics, dag.as_deref(), &req, copy, progress)
            })
        }
    })
}

pub async fn backup(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<api::BackupRequest>,
) -> Response {
    match backup_job(&s, req).await {
        Ok(job) => run_job(&s, &headers, job).await,
        Err(e) => e.into_response(),
    }
}

/// Runs a backup as `POST /v1/backup` does, for a caller that is not a client (a schedule):
/// counted among the running jobs and aborted when the service shuts down.
pub(crate) async fn run_backup(
    s: &AppState,
    req: api::BackupRequest,
) -> Result<api::BackupReport, ApiError> {
    let job = backup_job(s, req).await?;
    run_quiet(s, job).await
}

/// Runs a backup that another member forwarded here (its `--from` named this node's copy).
pub(crate) async fn backup_for_member(
    s: &AppState,
    req: api::BackupRequest,
) -> Result<api::BackupReport, ApiError> {
    let dag = s.dag.clone();
    let copy = dag.as_ref().is_some_and(|d| d.has_copy(&req.sg));
    let stopping = s.stopping.clone();
    blocking(s, move |node, metrics| {
        let progress = UntilShutdown { inner: &Quiet, stopping: &stopping };
        backup_here(node, metrics, dag.as_deref(), &req, copy, &progress)
    })
    .await
}

/// Runs a backup on this node: of its own storage group, or (`copy`) of its passive copy of it
/// through the replication writer.
pub(crate) fn backup_here(
    node: &Node,
    metrics: &Metrics,
    dag: Option<&crate::dag::Dag>,
    req: &api::BackupRequest,
    copy: bool,
    progress: &dyn Progress,
) -> Result<api::BackupReport, ApiError> {
    let backup_type = convert::backup_type(req.backup_type);
    let replica = match (copy, dag) {
        (true, Some(dag)) => Some(dag.replica_def(&req.sg).ok_or_else(|| {
            metrics.record_backup_failure();
            ApiError::new(
                StatusCode::CONFLICT,
                "copy_not_seeded",
                format!(
                    "the copy of storage group {} on node {} is not seeded yet; wait until `shadowcopy copy status` shows it Healthy",
                    req.sg,
                    node.name()
                ),
            )
        })?),
        _ => None,
    };
    let request = BackupRequest {
        storage_group: req.sg.clone(),
        backup_type,
        databases: req.databases.clone(),
        replica,
        history_nodes: dag.map(|d| d.history_nodes(&req.sg)).unwrap_or_default(),
    };
    // The path and the request are checked before anything is created there.
    let location = repo_location(&req.repo)?;
    let s3 = s3_settings(node)?;
    // A dismounted group is the caller's to mount: said here, before the coordinator would
    // report it as a writer's failure. (A passive copy's own storage group is dismounted.)
    let group = match request.replica {
        Some(_) => None,
        None => Some(node.store().storage_group(&req.sg).inspect_err(|_| {
            metrics.record_backup_failure();
        })?),
    };
    if group.is_some_and(|g| !g.is_mounted()) {
        metrics.record_backup_failure();
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_mounted",
            format!(
                "storage group {} is dismounted; mount it (`shadowcopy store mount {}`) \
                 before backing it up",
                req.sg, req.sg
            ),
        ));
    }
    let vols = node.volume_dirs();
    // The shared lock is held from opening the repository to publishing the set: a prune
    // (exclusive) must not remove chunks this backup reuses while it runs.
    let mut encrypted = false;
    let password = repo_password(node, &req.repo, req.password.as_deref())?;
    let password = password.as_deref();
    let outcome =
        backup::repository_for_backup_at(node.store(), &request, &location, &s3, &vols, password)
            .and_then(|repo| {
                encrypted = repo.is_encrypted();
                let _lock =
                    repo.lock_shared(&format!("{} backup of {}", request.backup_type, req.sg))?;
                node.requester(Arc::new(repo)).backup(&request, progress)
            });
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            metrics.record_backup_failure();
            tracing::warn!(storage_group = %req.sg, error = %e, "backup failed");
            return Err(e.into());
        }
    };
    metrics.record_backup(BackupFigures {
        job: report.job.to_string(),
        storage_group: req.sg.clone(),
        backup_type: report.set.backup_type.to_string(),
        hold_seconds: report.hold.as_secs_f64(),
        elapsed_seconds: report.elapsed.as_secs_f64(),
        bytes: report.bytes,
        stored_bytes: report.stored_bytes,
    });
    if let Some(set) = report.document.snapshot_set {
        metrics.record_commit(CommitFigures {
            set: set.to_string(),
            origin: "backup",
            commit_seconds: report.snapshot.as_secs_f64(),
            hold_seconds: report.hold.as_secs_f64(),
        });
    }
    let secs = report.elapsed.as_secs_f64();
    Ok(api::BackupReport {
        set: convert::set_summary(&report.set),
        job: report.job,
        bytes: report.bytes,
        stored_bytes: report.stored_bytes,
        hold_ms: report.hold.as_secs_f64() * 1e3,
        elapsed_ms: secs * 1e3,
        throughput_bytes_per_second: report.bytes as f64 / secs.max(1e-9),
        encrypted,
    })
}

/// Why a job stops when the service does.
const SHUTTING_DOWN: &str = "the node is shutting down";

/// A job's progress sink that also tells the job to stop once the service is shutting down,
/// so that a backup or restore is aborted cleanly (through the coordinator) rather than cut
/// off when the process exits.
struct UntilShutdown<'a> {
    inner: &'a dyn Progress,
    stopping: &'a AtomicBool,
}

impl Progress for UntilShutdown<'_> {
    fn step(&self, what: &str) {
        self.inner.step(what);
    }

    fn bytes(&self, done: u64, total: u64) {
        self.inner.bytes(done, total);
    }

    fn files(&self, done: usize, total: usize) {
        self.inner.files(done, total);
    }

    fn cancelled(&self) -> Option<String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Some(SHUTTING_DOWN.into());
        }
        self.inner.cancelled()
    }
}

/// The error of a job that failed while the service was stopping: it was aborted by the
/// shutdown (the job's own error, naming the reason, is the message).
fn aborted_by_shutdown(stopping: &AtomicBool, e: ApiError) -> ApiError {
    if stopping.load(Ordering::Relaxed) {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "aborted_by_shutdown", e.message)
    } else {
        e
    }
}

/// Runs a job on the blocking pool: answering its report when it ends, or, when the client
/// asked for it, streaming its progress and then the report ([`stream`]). The job is counted
/// in [`AppState::running`] and aborted when the service shuts down.
async fn run_job<T, F>(s: &AppState, headers: &HeaderMap, job: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Node, &Metrics, &dyn Progress) -> Result<T, ApiError> + Send + 'static,
{
    if s.stopping.load(Ordering::Relaxed) {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", SHUTTING_DOWN)
            .into_response();
    }
    let stopping = s.stopping.clone();
    if stream::wanted(headers) {
        let (lines, response) = stream::channel();
        let (node, metrics) = (s.node.clone(), s.metrics.clone());
        let running = s.running.enter();
        tokio::task::spawn_blocking(move || {
            let _running = running;
            let progress = UntilShutdown { inner: &lines, stopping: &stopping };
            let outcome = job(&node, &metrics, &progress);
            lines.finish(outcome.map_err(|e| aborted_by_shutdown(&stopping, e)));
        });
        response
    } else {
        match run_quiet(s, job).await {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// Runs a job on the blocking pool without a progress stream and returns its report: the
/// non-streaming half of [`run_job`], counted and aborted the same way.
async fn run_quiet<T, F>(s: &AppState, job: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Node, &Metrics, &dyn Progress) -> Result<T, ApiError> + Send + 'static,
{
    if s.stopping.load(Ordering::Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", SHUTTING_DOWN));
    }
    let stopping = s.stopping.clone();
    let result = blocking(s, {
        let stopping = stopping.clone();
        move |node, metrics| {
            job(node, metrics, &UntilShutdown { inner: &Quiet, stopping: &stopping })
        }
    })
    .await;
    result.map_err(|e| aborted_by_shutdown(&stopping, e))
}

pub async fn backup_sets(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<api::RepoQuery>,
) -> ApiResult<api::SetList> {
    let password = header_password(&headers);
    let verifications = s.verifications.clone();
    blocking(&s, move |node, _| {
        let password = repo_password(node, &q.repo, password.as_deref())?;
        let repo = open_repo(node, &q.repo, password.as_deref())?;
        let sets: Vec<api::SetSummary> =
            repo.list_sets()?.iter().map(convert::set_summary).collect();
        let stats = repo.stats()?;
        let stats = api::RepoFigures {
            sets: stats.sets as u64,
            chunks: stats.chunks as u64,
            set_bytes: sets.iter().map(|s| s.bytes).sum(),
            raw_bytes: stats.raw_bytes,
            stored_bytes: stats.stored_bytes,
        };
        let verifications = {
            let known = verifications.lock();
            sets.iter().filter_map(|s| known.get(&s.id).cloned()).collect()
        };
        Ok(Json(api::SetList {
            sets,
            encrypted: repo.is_encrypted(),
            stats: Some(stats),
            verifications,
        }))
    })
    .await
}

pub async fn verify(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<api::VerifyRequest>,
) -> Response {
    let verifications = s.verifications.clone();
    run_job(&s, &headers, move |node, _, progress| {
        let password = repo_password(node, &req.repo, req.password.as_deref())?;
        let repo = open_repo(node, &req.repo, password.as_deref())?;
        // Shared: a prune must not repack the packs this verification is reading.
        let _lock = repo.lock_shared(&format!("verify of set {}", req.set))?;
        let set = repo.load_set(&req.set)?;
        let started = Instant::now();
        let outcome = backup::verify_set(&repo, &set, progress);
        // Recorded whatever the outcome, but not when the node stopping cut it short (that
        // says nothing of the set).
        if progress.cancelled().is_none() {
            verifications.lock().insert(
                set.id,
                api::SetVerification {
                    set: set.id,
                    time_ms: events::now_ms(),
                    verified: outcome.is_ok(),
                    error: outcome.as_ref().err().map(|e| e.to_string()),
                },
            );
        }
        let report = outcome?;
        Ok(api::VerifyReport {
            set: convert::set_summary(&set),
            verified: true,
            report: convert::via_serde("the verification report", &report)?,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    })
    .await
}

pub async fn restore(
    State(s): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<api::RestoreRequest>,
) -> Response {
    let dag = s.dag.clone();
    let runtime = tokio::runtime::Handle::current();
    run_job(&s, &headers, move |node, metrics, progress| {
        let mut req = req;
        req.password = repo_password(node, &req.repo, req.password.as_deref())?;
        let (target, alternate_root) = restore_target(&req)?;
        // The passive copies replay the log stream that a restore over the storage group's
        // files changes: they are held (suspended) through it and seeded again after it.
        let held = match (&dag, req.original) {
            (Some(dag), true) => {
                let sg = open_repo(node, &req.repo, req.password.as_deref())?
                    .load_set(&req.set)?
                    .storage_group;
                runtime.block_on(super::dag::hold_copies_for_restore(
                    dag,
                    &sg,
                    req.reseed_copies,
                ))?
            }
            _ => None,
        };
        // Released however the restore ends, a panic included (the guard's drop): reseeded
        // after a restore, resumed after a failed one, which left the files as they were.
        let mut release =
            ReleaseCopies { dag: dag.as_deref(), held, runtime: &runtime, restored: false };
        let outcome = restore_job(node, req, target, alternate_root, progress);
        release.restored = outcome.is_ok();
        drop(release);
        match &outcome {
            Ok(report) => metrics.record_restore(report.bytes),
            Err(_) => metrics.record_restore_failure(),
        }
        outcome
    })
    .await
}

/// The passive copies a restore holds, released when it is dropped.
struct ReleaseCopies<'a> {
    dag: Option<&'a crate::dag::Dag>,
    held: Option<super::dag::HeldCopies>,
    runtime: &'a tokio::runtime::Handle,
    restored: bool,
}

impl Drop for ReleaseCopies<'_> {
    fn drop(&mut self) {
        if let (Some(dag), Some(held)) = (self.dag, self.held.take()) {
            self.runtime.block_on(super::dag::release_copies_after_restore(
                dag,
                held,
                self.restored,
            ));
        }
    }
}

fn restore_target(req: &api::RestoreRequest) -> Result<(RestoreTarget, Option<PathBuf>), ApiError> {
    let mut alternate_root: Option<PathBuf> = None;
    let target = match (&req.to, req.original) {
        (Some(dir), false) => {
            let p = PathBuf::from(dir);
            if !p.is_absolute() {
                return Err(ApiError::bad_request(format!("`to` {dir:?} must be absolute")));
            }
            // Nothing is created until the restore knows the request is valid.
            let (target, root) = RestoreTarget::host_dir(&p)?;
            alternate_root = Some(root);
            target
        }
        (None, true) => RestoreTarget::Original { allow_overwrite: req.allow_overwrite },
        _ => return Err(ApiError::bad_request("give exactly one of `original` or `to`")),
    };
    Ok((target, alternate_root))
}

fn restore_job(
    node: &Node,
    req: api::RestoreRequest,
    target: RestoreTarget,
    alternate_root: Option<PathBuf>,
    progress: &dyn Progress,
) -> Result<api::RestoreReport, ApiError> {
    let repo = open_repo(node, &req.repo, req.password.as_deref())?;
    // Shared: a prune must not repack the packs this restore is reading.
    let _lock = repo.lock_shared(&format!("restore of set {}", req.set))?;
    let started = Instant::now();
    // The events name the whole target path, as the client gave it.
    let shown = req.to.clone();
    let report = node.restorer(repo).restore_as(
        &RestoreRequest {
            set: req.set.clone(),
            roll_forward: req.roll_forward.unwrap_or(alternate_root.is_none()),
            target,
        },
        uuid::Uuid::new_v4(),
        shown.as_deref(),
        progress,
    )?;
    Ok(api::RestoreReport {
        job: report.job,
        storage_group: report.storage_group,
        sets: report.sets,
        files: report.files as u64,
        bytes: report.bytes,
        generations_replayed: report.recovery.generations,
        transactions: report.recovery.transactions,
        pages_written: report.recovery.pages_written,
        databases: report
            .databases
            .iter()
            .map(|(n, p)| {
                let path = alternate_root.as_ref().map_or_else(|| p.clone(), |r| r.join(p));
                api::RestoredDatabase { name: n.clone(), path: convert::path(&path) }
            })
            .collect(),
        superseded_logs: report.superseded_logs.as_ref().map(|s| superseded(node, s)),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Where a point-in-time restore over the original location moved the live logs: the
/// directory on its volume and, the volume being a host directory, on the host, so that an
/// administrator can find them.
fn superseded(node: &Node, s: &backup::restore::SupersededLogs) -> api::SupersededLogs {
    let host = node.volume(&s.volume).map(|v| convert::path(&v.root().join(&s.dir)));
    api::SupersededLogs {
        volume: s.volume.clone(),
        dir: convert::path(&s.dir),
        path: host,
        prefix: s.prefix.clone(),
        first: s.generations.map(|(lo, _)| lo),
        last: s.generations.map(|(_, hi)| hi),
        files: s.files.clone(),
    }
}
