//! One scheduled run on the node: a backup through the same job as `POST /v1/backup` (then
//! the schedule's retention policy), or a prune; its events and metrics. A run that fails is
//! an event (4152), a metric and the schedule's last result, never a stop of the node.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use api::{ScheduleAction, ScheduleResult};
use events::catalog::{self as cat, EventDef};
use serde_json::{Value, json};
use uuid::Uuid;

use super::core::{Due, MAX_COUNTED, Outcome};
use super::{Runner, when};
use crate::api::{AppState, blocking, jobs};
use crate::config::ScheduleConfig;

/// Runs the schedules on the node whose API state this is.
pub(crate) struct NodeRunner(pub AppState);

impl Runner for NodeRunner {
    fn run(
        &self,
        schedule: ScheduleConfig,
        due: Due,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let s = self.0.clone();
        Box::pin(async move { execute(&s, &schedule, &due).await })
    }
}

/// Appends an event to the node's log; a failure to log is logged, not the run's failure.
pub(crate) fn emit(s: &AppState, def: &EventDef, job: Option<Uuid>, fields: Value) {
    let Value::Object(fields) = fields else { return };
    if let Err(e) = s.node.events().append(def, job, fields) {
        tracing::warn!(event = def.name, "the schedule's event was not logged: {e}");
    }
}

/// What a run does, for its events (after its action): `of storage group SG1 into
/// /srv/backups, full`.
pub(crate) fn what(cfg: &ScheduleConfig) -> String {
    match cfg.action {
        ScheduleAction::Backup => format!(
            "of storage group {} into {}, {}",
            cfg.sg.as_deref().unwrap_or("?"),
            cfg.repo.display(),
            cfg.backup_type.map_or("full", api::BackupType::name)
        ),
        ScheduleAction::Prune => format!("of {}", cfg.repo.display()),
    }
}

/// The runs a catch-up stands for, as its event says it: the count stops at
/// [`MAX_COUNTED`] (a schedule that has not run for years is not counted slot by slot).
fn missed(slots: u64) -> String {
    if slots >= MAX_COUNTED { format!("at least {MAX_COUNTED}") } else { slots.to_string() }
}

/// A run's failure, with the job when the backup got that far.
type Failure = (String, Option<Uuid>);

async fn execute(s: &AppState, cfg: &ScheduleConfig, due: &Due) -> Outcome {
    let what = what(cfg);
    let slot = when(due.slot_ms, cfg.timezone);
    let action = cfg.action.name();
    emit(
        s,
        &cat::SCHEDULE_RUN_STARTED,
        None,
        json!({"schedule": cfg.name, "action": action, "what": what, "slot": slot, "slot_ms": due.slot_ms}),
    );
    if due.caught_up {
        emit(
            s,
            &cat::SCHEDULE_RUN_CAUGHT_UP,
            None,
            json!({
                "schedule": cfg.name, "missed": missed(due.slots), "slots": due.slots,
                "slot": slot, "slot_ms": due.slot_ms,
            }),
        );
    }
    let done = match cfg.action {
        ScheduleAction::Backup => run_backup(s, cfg).await,
        ScheduleAction::Prune => run_prune(s, cfg).await,
    };
    match done {
        Ok((job, detail)) => {
            s.metrics.record_schedule_run(&cfg.name, ScheduleResult::Ok);
            emit(
                s,
                &cat::SCHEDULE_RUN_SUCCEEDED,
                job,
                json!({"schedule": cfg.name, "action": action, "what": what, "detail": detail}),
            );
            Outcome::ok(job)
        }
        Err((error, job)) => {
            s.metrics.record_schedule_run(&cfg.name, ScheduleResult::Failed);
            tracing::warn!(schedule = %cfg.name, "scheduled {action} failed: {error}");
            emit(
                s,
                &cat::SCHEDULE_RUN_FAILED,
                job,
                json!({"schedule": cfg.name, "action": action, "what": what, "error": error}),
            );
            Outcome::failed(error, job)
        }
    }
}

async fn run_backup(s: &AppState, cfg: &ScheduleConfig) -> Result<(Option<Uuid>, String), Failure> {
    let sg = cfg.sg.clone().unwrap_or_default();
    let repo = cfg.repo.to_string_lossy().into_owned();
    // The schedule's own password file, else the node's `[[repository]]` one (the job's).
    let password = cfg
        .password_file
        .as_deref()
        .map(|f| jobs::password_from_file(f, &repo))
        .transpose()
        .map_err(|e| (e.message, None))?;
    let req = api::BackupRequest {
        backup_type: cfg.backup_type.unwrap_or(api::BackupType::Full),
        sg: sg.clone(),
        repo,
        databases: Vec::new(),
        from: cfg.from.clone(),
        password: password.clone(),
    };
    let report = jobs::run_backup(s, req).await.map_err(|e| (e.message, None))?;
    let job = Some(report.job);
    let mut detail =
        format!(": set {}, {} bytes new in the repository", report.set.id, report.stored_bytes);
    if let Some(policy) = cfg.retention.clone() {
        let path: PathBuf = cfg.repo.clone();
        let group = sg.clone();
        let plan = blocking(s, move |node, _| {
            let shown = path.to_string_lossy().into_owned();
            let password = jobs::repo_password(node, &shown, password.as_deref())?;
            let repo = jobs::open_repo(node, &shown, password.as_deref())?;
            Ok(backup::retention::forget(&repo, Some(&group), &policy, false)?)
        })
        .await
        .map_err(|e| {
            (
                format!(
                    "the backup succeeded (set {}), but applying the retention policy failed: {}",
                    report.set.id, e.message
                ),
                job,
            )
        })?;
        let kept = plan.decisions.iter().filter(|d| d.keep).count();
        let forgotten = plan.decisions.len() - kept;
        emit(
            s,
            &cat::SCHEDULE_RETENTION_APPLIED,
            job,
            json!({
                "schedule": cfg.name, "kept": kept, "forgotten": forgotten,
                "storage_group": sg, "repo": cfg.repo.display().to_string(),
            }),
        );
        detail.push_str(&format!("; retention kept {kept} and forgot {forgotten} sets"));
    }
    Ok((job, detail))
}

async fn run_prune(s: &AppState, cfg: &ScheduleConfig) -> Result<(Option<Uuid>, String), Failure> {
    let path = cfg.repo.clone();
    let file = cfg.password_file.clone();
    let report = blocking(s, move |node, _| {
        let shown = path.to_string_lossy().into_owned();
        let password = match file {
            Some(f) => Some(jobs::password_from_file(&f, &shown)?),
            None => jobs::repo_password(node, &shown, None)?,
        };
        let repo = jobs::open_repo(node, &shown, password.as_deref())?;
        Ok(backup::repo::prune::prune(&repo, &backup::repo::prune::PruneOptions::default())?)
    })
    .await
    .map_err(|e| (e.message, None))?;
    Ok((
        None,
        format!(
            ": {} packs and {} chunks removed, {} bytes freed",
            report.packs_removed,
            report.chunks_removed,
            report.bytes_before.saturating_sub(report.bytes_after)
        ),
    ))
}
