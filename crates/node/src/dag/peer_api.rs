//! The node's own member-to-member routes, served on the replication listener behind the DAG's
//! mutual TLS (the replication protocol proper is [`replication::server`]).

use std::sync::Arc;

use axum::Router;

use super::Dag;

/// The routes, answered from `dag`'s node.
pub fn routes(dag: Arc<Dag>) -> Router {
    let _ = dag;
    Router::new()
}
