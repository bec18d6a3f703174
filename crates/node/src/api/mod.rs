//! The node's HTTP API (JSON over HTTP/1.1, on a Unix socket or, with a token, on TCP).
//!
//! Every endpoint is a thin layer over the node: it parses the request, runs the node's
//! (blocking) call on the blocking pool, and answers JSON, or an [`ApiError`]. Long jobs
//! (backup, restore, mail load) answer when they end, with their report.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | /v1/writers, /v1/providers, /v1/shadows, /v1/shadowstorage | listings |
//! | POST | /v1/shadows | create a persistent shadow of `{for}` |
//! | POST | /v1/shadows/delete | `{for, oldest}` / `{shadow}` / `{for, all}` / `{all}` |
//! | POST | /v1/shadowstorage, /v1/shadowstorage/resize | `{for, on, max_size}` / `{for, max_size}` |
//! | GET | /v1/store | per storage group status |
//! | POST | /v1/store | `{name, log_volume, log_dir?, system_dir?, prefix?, circular_logging?, database: {name, volume, path?}}` |
//! | POST | /v1/store/{sg}/databases | `{name, volume, path?}` |
//! | POST | /v1/store/{sg}/mount, /v1/store/{sg}/dismount | |
//! | POST | /v1/mail/load | `{sg, db, messages?, seconds?}` |
//! | GET | /v1/mail/count?sg=&db= | |
//! | POST | /v1/backup | `{type, sg, repo, databases?}` → report (progress with `Accept: application/x-ndjson`) |
//! | GET | /v1/backup/sets?repo= | |
//! | POST | /v1/backup/verify | `{repo, set}` → report (streams too) |
//! | POST | /v1/restore | `{repo, set, original?, allow_overwrite?, to?, roll_forward}` (streams too) |
//! | GET | /v1/events?job=&source=&id=&since_ms=&limit= | |
//! | GET | /metrics | Prometheus text |

pub mod auth;
pub mod error;
mod handlers;
mod jobs;
pub mod metrics;
pub mod stream;
pub mod tracker;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::{get, post};

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
}

impl AppState {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            metrics: Arc::new(Metrics::default()),
            stopping: Arc::new(AtomicBool::new(false)),
            running: Arc::new(tracker::Tracker::default()),
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

/// The routes (without authentication; the TCP listener adds [`auth::require_token`]).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/writers", get(handlers::writers))
        .route("/v1/providers", get(handlers::providers))
        .route("/v1/shadows", get(handlers::shadows).post(handlers::create_shadow))
        .route("/v1/shadows/delete", post(handlers::delete_shadows))
        .route(
            "/v1/shadowstorage",
            get(handlers::shadow_storage).post(handlers::add_shadow_storage),
        )
        .route("/v1/shadowstorage/resize", post(handlers::resize_shadow_storage))
        .route("/v1/store", get(handlers::store_status).post(handlers::create_storage_group))
        .route("/v1/store/{sg}/databases", post(handlers::add_database))
        .route("/v1/store/{sg}/mount", post(handlers::mount))
        .route("/v1/store/{sg}/dismount", post(handlers::dismount))
        .route("/v1/mail/load", post(jobs::mail_load))
        .route("/v1/mail/count", get(jobs::mail_count))
        .route("/v1/backup", post(jobs::backup))
        .route("/v1/backup/sets", get(jobs::backup_sets))
        .route("/v1/backup/verify", post(jobs::verify))
        .route("/v1/restore", post(jobs::restore))
        .route("/v1/events", get(handlers::events))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .layer(axum::middleware::map_response(error::json_rejections))
        .with_state(state)
}
