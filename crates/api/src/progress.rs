//! The lines of a long job's progress stream (`Accept: application/x-ndjson`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ErrorDetail;

/// One line of a progress stream: any number of `step`, `files` and `bytes` lines (at most
/// about ten `bytes` a second), then exactly one `done` (with the job's report, the body the
/// same request answers without streaming) or `error`. The response status is 200 once
/// streaming has started, so the outcome is in the last line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressLine<R> {
    /// The job moved on to a new step.
    Step { what: String },
    /// Bytes copied, restored or checked so far, of the step's total.
    Bytes { done: u64, total: u64 },
    /// Files done of the step's total.
    Files { done: u64, total: u64 },
    /// The job ended well: its report.
    Done { report: R },
    /// The job failed.
    Error { error: ErrorDetail },
}
