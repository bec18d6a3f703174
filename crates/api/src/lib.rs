//! The contract of the node's HTTP API: every request and response body, the query strings,
//! the NDJSON progress lines of long jobs and the error body, as serde types that the node
//! serialises and the `shadowcopy` command deserialises, so that a renamed field fails to
//! compile instead of failing at run time.
//!
//! The crate depends on nothing of the node (no volume, store or backup types): the node
//! converts its domain values into these, and scripts in other languages read the same
//! contract from the OpenAPI document ([`openapi`], served at `GET /v1/openapi.json`), which
//! is generated from these types and from the one table of endpoints ([`ENDPOINTS`]) that the
//! node's router is also built from.
//!
//! The wire format is the one the node answered before these types existed (same field
//! names), so that existing scripts keep working.

mod admin;
mod backup;
mod dag;
mod endpoints;
mod error;
mod events;
mod progress;
mod schedule;
mod size;
mod store;

pub use admin::*;
pub use backup::*;
pub use dag::*;
pub use endpoints::{ENDPOINTS, Endpoint, Method, Op, openapi};
pub use error::*;
pub use events::*;
pub use progress::*;
pub use schedule::*;
pub use size::*;
pub use store::*;

/// The media type of a progress stream (ask for it with `Accept`).
pub const NDJSON: &str = "application/x-ndjson";

/// The media type of `GET /v1/events/stream` (server-sent events, one [`Event`] per `data`).
pub const EVENT_STREAM: &str = "text/event-stream";
