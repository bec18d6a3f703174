//! The event trail (`GET /v1/events`).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The filters of `GET /v1/events`; every one given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only this job's events: its id, or a unique prefix of it (as set ids are given). A
    /// prefix that matches no job is a 404, one that matches several a 400 naming them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// coordinator, store, engine, replication, provider or requester.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The reference system's event number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// At or after this time (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// At most this many (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The answer of `GET /v1/events`, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// One logged event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that emitted it.
    pub node: String,
    pub source: String,
    pub id: u32,
    /// info, warning or error.
    pub level: String,
    pub job: Option<Uuid>,
    pub message: String,
    /// Structured fields (the message template's and any extra ones).
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}
