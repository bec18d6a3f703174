//! Schedules: backups and prunes the node runs by itself (`[[schedule]]` in its
//! configuration), at the times of a cron expression.
//!
//! - [`core`]: which runs are due, given the schedules, what each last did and the time (pure;
//!   the tests move time by hand). A run missed while the node was down runs *once* at
//!   start-up, however many of its times passed; a schedule runs one run at a time.
//! - [`clock`]: the injectable clock the driver reads and sleeps on.
//! - [`Schedules`]: the core behind a lock, its state kept in `<data_dir>/schedules.toml`
//!   ([`state`]), and what `GET /v1/schedules` lists.
//! - [`drive`]: the loop that starts due runs (each on its own task) and sleeps until the next
//!   is due; [`run`]: what a run does on the node — a backup goes through the same job as
//!   `POST /v1/backup`, so it is a job with its events like any other.

pub mod clock;
pub mod core;
mod run;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Local, SecondsFormat, Utc};
use events::catalog as cat;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use self::clock::Clock;
use self::core::{Core, Due, Outcome, Spec};
use crate::api::AppState;
use crate::config::{Config, ScheduleConfig, ScheduleZone};

/// What runs a due schedule (the node's jobs; the tests' stand-in).
pub trait Runner: Send + Sync + 'static {
    fn run(
        &self,
        schedule: ScheduleConfig,
        due: Due,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send>>;
}

/// The node's schedules and their states.
pub struct Schedules {
    configs: Vec<ScheduleConfig>,
    core: Mutex<Core>,
    /// Where the states are kept (none: not kept, for a node without schedules).
    data_dir: Option<PathBuf>,
    clock: Arc<dyn Clock>,
}

impl Default for Schedules {
    fn default() -> Self {
        Self::new(&[], None, Default::default(), Arc::new(clock::WallClock))
    }
}

impl Schedules {
    /// The schedules of `config`, with the states kept in its data directory. A state file
    /// that cannot be read is reported and replaced: the schedules start afresh (runs missed
    /// meanwhile are not caught up) rather than the node not starting.
    pub fn load(config: &Config, clock: Arc<dyn Clock>) -> Self {
        let data_dir = config.node.data_dir.clone();
        let kept = if config.schedules.is_empty() {
            Default::default()
        } else {
            state::load(&data_dir).unwrap_or_else(|e| {
                tracing::error!(
                    "{}: {e}; the schedules start afresh",
                    data_dir.join(state::FILE).display()
                );
                Default::default()
            })
        };
        let s = Self::new(&config.schedules, Some(data_dir), kept, clock);
        s.save();
        s
    }

    /// The schedules `configs`, with the states `kept`, on `clock`.
    pub fn new(
        configs: &[ScheduleConfig],
        data_dir: Option<PathBuf>,
        kept: std::collections::BTreeMap<String, core::RunState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let specs = configs
            .iter()
            .filter_map(|c| {
                // Checked with the configuration; one that does not parse is not run.
                let cron = crate::config::parse_cron(&c.cron)
                    .inspect_err(|e| tracing::error!(schedule = %c.name, "not run: {e}"))
                    .ok()?;
                Some(Spec { name: c.name.clone(), cron, zone: c.timezone })
            })
            .collect();
        let core = Core::new(specs, kept, clock.now_ms());
        Self { configs: configs.to_vec(), core: Mutex::new(core), data_dir, clock }
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// The schedules whose run the node's last stop interrupted.
    pub fn interrupted(&self) -> Vec<String> {
        self.core.lock().interrupted().to_vec()
    }

    fn save(&self) {
        let Some(dir) = &self.data_dir else { return };
        if self.configs.is_empty() {
            return;
        }
        let states = self.core.lock().states().clone();
        if let Err(e) = state::save(dir, &states) {
            tracing::error!("writing {}: {e}", dir.join(state::FILE).display());
        }
    }

    /// The runs due now, marked running (and kept so).
    fn take_due(&self) -> Vec<(Due, ScheduleConfig)> {
        let due = self.core.lock().take_due(self.clock.now_ms());
        if !due.is_empty() {
            self.save();
        }
        due.into_iter()
            .filter_map(|d| {
                let cfg = self.configs.iter().find(|c| c.name == d.name)?.clone();
                Some((d, cfg))
            })
            .collect()
    }

    fn finished(&self, name: &str, outcome: Outcome) {
        self.core.lock().finished(name, outcome, self.clock.now_ms());
        self.save();
    }

    fn next_wake(&self) -> Option<u64> {
        self.core.lock().next_wake()
    }

    /// What `GET /v1/schedules` answers.
    pub fn list(&self) -> api::ScheduleList {
        let core = self.core.lock();
        let schedules = self
            .configs
            .iter()
            .map(|c| {
                let st = core.state(&c.name).cloned().unwrap_or_default();
                let next = core.next_run(&c.name);
                let zone = c.timezone;
                api::ScheduleInfo {
                    name: c.name.clone(),
                    action: c.action,
                    cron: c.cron.clone(),
                    timezone: zone.name().into(),
                    sg: c.sg.clone(),
                    backup_type: c.backup_type,
                    repo: c.repo.to_string_lossy().into_owned(),
                    running: st.running,
                    next_run_unix_ms: next,
                    next_run: next.map(|t| when(t, zone)),
                    last_run_unix_ms: st.last_run_ms,
                    last_run: st.last_run_ms.map(|t| when(t, zone)),
                    last_result: st.last_result,
                    last_error: st.last_error,
                    last_job: st.last_job,
                    last_success_unix_ms: st.last_success_ms,
                }
            })
            .collect();
        api::ScheduleList { schedules }
    }
}

/// A time as people read it: RFC 3339 in the schedule's calendar.
pub fn when(ms: u64, zone: ScheduleZone) -> String {
    let Some(t) = i64::try_from(ms).ok().and_then(DateTime::<Utc>::from_timestamp_millis) else {
        return format!("{ms} ms");
    };
    match zone {
        ScheduleZone::Utc => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        ScheduleZone::Local => t.with_timezone(&Local).to_rfc3339_opts(SecondsFormat::Secs, false),
    }
}

/// Runs the schedules until `stop` turns true (or its sender goes): starts each due run on
/// its own task and sleeps until the next is due or a run ends. A run that panics counts as
/// failed; the loop goes on.
pub async fn drive(
    schedules: Arc<Schedules>,
    runner: Arc<dyn Runner>,
    mut stop: watch::Receiver<bool>,
) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Outcome)>();
    loop {
        if *stop.borrow() {
            return;
        }
        for (due, cfg) in schedules.take_due() {
            let (runner, done) = (runner.clone(), done_tx.clone());
            tokio::spawn(async move {
                let name = due.name.clone();
                let outcome = match tokio::spawn(runner.run(cfg, due)).await {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::error!(schedule = %name, "the run failed: {e}");
                        Outcome::failed(format!("the run failed: {e}"), None)
                    }
                };
                let _ = done.send((name, outcome));
            });
        }
        let sleep: clock::Sleep = match schedules.next_wake() {
            Some(t) => schedules.clock.sleep_until(t),
            None => Box::pin(std::future::pending()),
        };
        tokio::select! {
            _ = sleep => {}
            Some((name, outcome)) = done_rx.recv() => schedules.finished(&name, outcome),
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts the node's schedules (those of `state.schedules`) on the current runtime; they stop
/// when `stop` turns true. Runs interrupted by the last stop are reported first.
pub(crate) fn start(state: &AppState, stop: watch::Receiver<bool>) {
    let schedules = state.schedules.clone();
    if schedules.is_empty() {
        return;
    }
    for c in &schedules.configs {
        state.metrics.register_schedule(&c.name);
    }
    for name in schedules.interrupted() {
        let Some(c) = schedules.configs.iter().find(|c| c.name == name) else { continue };
        state.metrics.record_schedule_run(&name, api::ScheduleResult::Interrupted);
        run::emit(
            state,
            &cat::SCHEDULE_RUN_FAILED,
            None,
            json!({
                "schedule": name, "action": c.action.name(), "what": run::what(c),
                "error": core::INTERRUPTED,
            }),
        );
    }
    let runner: Arc<dyn Runner> = Arc::new(run::NodeRunner(state.clone()));
    tokio::spawn(drive(schedules, runner, stop));
}

/// `GET /v1/schedules`.
pub async fn list(State(s): State<AppState>) -> Json<api::ScheduleList> {
    Json(s.schedules.list())
}

#[cfg(test)]
mod tests;
