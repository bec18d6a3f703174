//! The event catalog and the per-node event log.
//!
//! Every user-visible step of a backup is an event with a source (coordinator, store writer,
//! engine, replication service, provider, requester), a numeric ID taken from the reference
//! system where it has one, a level and a message. [`catalog`] is the one table of every event;
//! [`EventLog`] persists them per node in checksummed, rotated segment files and answers queries
//! by job (the writer instance GUID), source, ID, level and time range, plus live
//! subscriptions. Components emit through the [`EventSink`] trait.

pub mod catalog;
mod event;
mod log;
pub mod record;

pub use catalog::{CATALOG, EventDef, Level, Source};
pub use event::{Event, Filter};
pub use log::{
    EventLog, EventLogError, EventSink, LogOptions, MemorySink, RecoveryReport, SegmentDamage,
};

/// Milliseconds since the Unix epoch: the one wall-clock stamp of the workspace (events,
/// snapshots, messages), here because this crate sits at the bottom of the dependency graph
/// (with `volume`), so every crate stamps alike. A clock set before 1970 reads as 0.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
