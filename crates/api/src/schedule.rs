//! The node's schedules (`[[schedule]]` in its configuration; `shadowcopy schedule list`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::BackupType;

/// What a schedule runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleAction {
    /// A backup of a storage group into a repository, then the schedule's retention policy.
    #[default]
    Backup,
    /// A prune of a repository (chunks no set references, mostly unused packs).
    Prune,
}

impl ScheduleAction {
    /// The name in configurations, events and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleAction::Backup => "backup",
            ScheduleAction::Prune => "prune",
        }
    }
}

/// How a scheduled run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleResult {
    Ok,
    Failed,
    /// The node stopped while the run was going on (the job is reported failed at start).
    Interrupted,
}

impl ScheduleResult {
    /// The name in listings and in the `result` label of the runs metric.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleResult::Ok => "ok",
            ScheduleResult::Failed => "failed",
            ScheduleResult::Interrupted => "interrupted",
        }
    }
}

/// `GET /v1/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleInfo>,
}

/// One schedule: its configuration, its last run and its next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleInfo {
    pub name: String,
    pub action: ScheduleAction,
    /// The cron expression as configured (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The calendar the expression is read in: `local` (the node's time zone) or `utc`.
    pub timezone: String,
    /// The storage group a backup schedule backs up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sg: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub backup_type: Option<BackupType>,
    /// The repository directory on the node.
    pub repo: String,
    /// Whether a run of it is going on now.
    pub running: bool,
    /// When it runs next (none while it runs, or when the expression never matches again).
    pub next_run_unix_ms: Option<u64>,
    /// The same, RFC 3339 in the schedule's calendar.
    pub next_run: Option<String>,
    /// When its last run started.
    pub last_run_unix_ms: Option<u64>,
    pub last_run: Option<String>,
    pub last_result: Option<ScheduleResult>,
    /// Why the last run failed.
    pub last_error: Option<String>,
    /// The job of the last backup run (its events: `shadowcopy events --job`).
    pub last_job: Option<Uuid>,
    /// When a run of it last succeeded.
    pub last_success_unix_ms: Option<u64>,
}
