//! The node's HTTP API (JSON over HTTP/1.1, on a Unix socket or, with a token, on TCP).
//!
//! Every endpoint is a thin layer over the node: it parses the request, runs the node's
//! (blocking) call on the blocking pool, and answers JSON, or an [`ApiError`]. Long jobs
//! (backup, restore, mail load) answer when they end, with their report.
//!
//! The requests and answers are the types of the [`api`] crate; the routes are its table
//! [`api::ENDPOINTS`] (each mapped to its handler by [`handler`]), which the OpenAPI document
//! served at `GET /v1/openapi.json` is generated from too.

pub mod auth;
pub(crate) mod backup_from;
pub(crate) mod convert;
mod dag;
pub mod error;
mod event_stream;
mod handlers;
pub(crate) mod jobs;
mod mail;
pub mod metrics;
pub mod stream;
pub mod tracker;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{MethodRouter, get, post};

pub(crate) use convert::host_fs_size;
pub use error::ApiError;

use crate::Node;
use metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<Node>,
    pub metrics: Arc<Metrics>,
    /// Set when the service is shutting down: a mail load stops early, and backups and
    /// restores are aborted at their next check ([`backup::Progress::cancelled`]).
    pub stopping: Arc<AtomicBool>,
    /// Calls running on the blocking pool; the service waits for them before dismounting.
    pub running: Arc<tracker::Tracker>,
    /// The node's DAG membership, when its configuration has a `[dag]` section.
    pub dag: Option<Arc<crate::dag::Dag>>,
    /// The node's schedules (none until the service loads them).
    pub schedules: Arc<crate::schedule::Schedules>,
    /// The last verification of each backup set this node ran (since it started), which
    /// `GET /v1/backup/sets` reports: the console shows a set's verify state from it.
    pub verifications:
        Arc<parking_lot::Mutex<std::collections::HashMap<uuid::Uuid, api::SetVerification>>>,
}

impl AppState {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            metrics: Arc::new(Metrics::default()),
            stopping: Arc::new(AtomicBool::new(false)),
            running: Arc::new(tracker::Tracker::default()),
            dag: None,
            schedules: Arc::default(),
            verifications: Arc::default(),
        }
    }
}

/// Runs a blocking node call on the blocking pool, counted in [`AppState::running`] until it
/// returns (even when its client has gone away).
pub(crate) async fn blocking<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Node, &Metrics) -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let node = state.node.clone();
    let metrics = state.metrics.clone();
    let running = state.running.enter();
    tokio::task::spawn_blocking(move || {
        let _running = running;
        f(&node, &metrics)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the job's thread failed: {e}")))?
}

/// The handler of one endpoint of the table. The match is exhaustive, so an endpoint of the
/// contract without a handler does not build; the method comes from the table.
fn handler(e: &api::Endpoint) -> MethodRouter<AppState> {
    use api::Op;
    macro_rules! with_method {
        ($h:expr) => {
            match e.method {
                api::Method::Get => get($h),
                api::Method::Post => post($h),
            }
        };
    }
    match e.op {
        Op::ListWriters => with_method!(handlers::writers),
        Op::ListProviders => with_method!(handlers::providers),
        Op::ListShadows => with_method!(handlers::shadows),
        Op::CreateShadow => with_method!(handlers::create_shadow),
        Op::DeleteShadows => with_method!(handlers::delete_shadows),
        Op::ExposeShadow => with_method!(handlers::expose_shadow),
        Op::UnexposeShadow => with_method!(handlers::unexpose_shadow),
        Op::ListShadowStorage => with_method!(handlers::shadow_storage),
        Op::AddShadowStorage => with_method!(handlers::add_shadow_storage),
        Op::ResizeShadowStorage => with_method!(handlers::resize_shadow_storage),
        Op::StoreStatus => with_method!(handlers::store_status),
        Op::CreateStorageGroup => with_method!(handlers::create_storage_group),
        Op::AddDatabase => with_method!(handlers::add_database),
        Op::Mount => with_method!(handlers::mount),
        Op::Dismount => with_method!(handlers::dismount),
        Op::MailLoad => with_method!(jobs::mail_load),
        Op::MailCount => with_method!(jobs::mail_count),
        Op::Backup => with_method!(jobs::backup),
        Op::BackupSets => with_method!(jobs::backup_sets),
        Op::Verify => with_method!(jobs::verify),
        Op::Restore => with_method!(jobs::restore),
        Op::Events => with_method!(handlers::events),
        Op::Metrics => with_method!(handlers::metrics),
        Op::OpenApi => with_method!(handlers::openapi),
        Op::DagStatus => with_method!(dag::dag_status),
        Op::ListCopies => with_method!(dag::list_copies),
        Op::AddCopy => with_method!(dag::add_copy),
        Op::RemoveCopy => with_method!(dag::remove_copy),
        Op::SuspendCopy => with_method!(dag::suspend_copy),
        Op::ResumeCopy => with_method!(dag::resume_copy),
        Op::ReseedCopy => with_method!(dag::reseed_copy),
        Op::ActivateCopy => with_method!(dag::activate_copy),
        Op::CopySettings => with_method!(dag::copy_settings),
        Op::MailDeliver => with_method!(mail::mail_deliver),
        Op::MailCheck => with_method!(mail::mail_check),
        Op::ListSchedules => with_method!(crate::schedule::list),
        Op::EventStream => with_method!(event_stream::event_stream),
    }
}

/// The routes (without authentication; the TCP listener adds [`auth::require_token`]): one
/// per entry of [`api::ENDPOINTS`].
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for e in api::ENDPOINTS {
        // Two methods on one path merge into one route.
        router = router.route(e.path, handler(e));
    }
    router
        .fallback(handlers::not_found)
        .layer(axum::middleware::map_response(error::json_rejections))
        .with_state(state)
}
