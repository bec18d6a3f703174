//! One logged event and the filter that selects events.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::catalog::{EventDef, Level, Source};

/// One event as stored in the log and delivered to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time of emission, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that emitted it.
    pub node: String,
    pub source: Source,
    pub id: u32,
    pub level: Level,
    /// The job (writer instance GUID) the event belongs to, if any.
    pub job: Option<Uuid>,
    /// The catalog template rendered with `fields`.
    pub message: String,
    /// Structured fields (the template's and any extra ones).
    pub fields: Map<String, Value>,
}

impl Event {
    /// Whether this event is an instance of `def`.
    pub fn is(&self, def: &EventDef) -> bool {
        self.source == def.source && self.id == def.id
    }
}

/// Selects events. Every set field must match; `None` matches anything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub job: Option<Uuid>,
    pub source: Option<Source>,
    pub id: Option<u32>,
    /// Minimum severity: `Some(Warning)` selects warnings and errors.
    pub level: Option<Level>,
    /// Inclusive lower bound on `time_ms`.
    pub since_ms: Option<u64>,
    /// Exclusive upper bound on `time_ms`.
    pub until_ms: Option<u64>,
    /// Keep only the newest `limit` matches.
    pub limit: Option<usize>,
}

impl Filter {
    /// Everything of one job.
    pub fn job(job: Uuid) -> Self {
        Filter { job: Some(job), ..Filter::default() }
    }

    /// Whether `e` matches (ignores `limit`).
    pub fn matches(&self, e: &Event) -> bool {
        self.job.is_none_or(|j| e.job == Some(j))
            && self.source.is_none_or(|s| e.source == s)
            && self.id.is_none_or(|i| e.id == i)
            && self.level.is_none_or(|l| e.level >= l)
            && self.since_ms.is_none_or(|t| e.time_ms >= t)
            && self.until_ms.is_none_or(|t| e.time_ms < t)
    }
}
